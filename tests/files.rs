//! Files only the gateway's user can read: exports and the directories
//! created for them are private.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bytes::Bytes;
use common::*;
use fake_smartlead::FakeHandle;
use http::Request;
use http_body_util::Full;

const BIN: &str = env!("CARGO_BIN_EXE_safedelete");

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `safedelete ARGS --config CONFIG`, as this user.
fn run(args: &[&str], config: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// A gateway (default policy `archive`) that archived campaign 101, so the
/// database holds a snapshot; stopped, so the database is closed.
struct Archived {
    gw: Gateway,
    fake: FakeHandle,
    snapshot_id: i64,
}

impl Archived {
    async fn build() -> Archived {
        let fake = fake_smartlead::start(fake_smartlead::FakeConfig::default())
            .await
            .unwrap();
        let mut gw = Gateway::start(&fake.url()).await;
        let reply = send(
            Request::delete(gw.url(&format!("/api/v1/campaigns/101?api_key={KEY}")))
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await;
        assert_eq!(reply.header("x-safedelete-action"), Some("archived"));
        let snapshot_id = reply
            .header("x-safedelete-snapshot-id")
            .expect("an archive takes a snapshot")
            .parse()
            .unwrap();
        gw.stop().await;
        Archived {
            gw,
            fake,
            snapshot_id,
        }
    }

    fn config(&self) -> PathBuf {
        self.gw.dir.path().join("safedelete.toml")
    }
}

#[tokio::test]
async fn snapshot_and_audit_exports_are_0600_in_directories_created_0700() {
    let a = Archived::build().await;
    let out = a.gw.dir.path();
    let id = a.snapshot_id.to_string();
    let leads = out.join("leads.csv");
    // A `.partial` left behind by a crash, readable by all: not inherited.
    let stale = out.join("leads.csv.partial");
    std::fs::write(&stale, b"stale").unwrap();
    set_mode(&stale, 0o644);
    stdout(&run(
        &["snapshots", "export", &id, "-o", leads.to_str().unwrap()],
        &a.config(),
    ));
    assert_eq!(
        std::fs::read(&leads).unwrap(),
        a.fake.expected_leads_csv(101)
    );
    assert_eq!(mode(&leads), 0o600);

    let campaign = out.join("campaign.json");
    stdout(&run(
        &[
            "snapshots",
            "export",
            &id,
            "--part",
            "campaign",
            "-o",
            campaign.to_str().unwrap(),
        ],
        &a.config(),
    ));
    assert_eq!(mode(&campaign), 0o600);

    let parts = out.join("exports").join("101");
    let listing = stdout(&run(
        &[
            "snapshots",
            "export",
            &id,
            "-o",
            &format!("{}/", parts.display()),
        ],
        &a.config(),
    ));
    assert_eq!(mode(&parts), 0o700);
    assert_eq!(mode(parts.parent().unwrap()), 0o700);
    let files: Vec<_> = std::fs::read_dir(&parts).unwrap().collect();
    assert_eq!(files.len(), 6, "{listing}");
    for file in files {
        let path = file.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }

    let trail = out.join("audit.jsonl");
    stdout(&run(
        &["audit", "export", "-o", trail.to_str().unwrap()],
        &a.config(),
    ));
    assert_eq!(mode(&trail), 0o600);
}
