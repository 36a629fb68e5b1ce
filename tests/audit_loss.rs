//! Audit loss is never silent: with the database's disk really full (a small
//! tmpfs), `/readyz` says why, lost records become a gap record in the chain
//! once space returns, and `audit.on_failure = "refuse"` stops traffic that
//! could not be recorded. Mounting needs root (as in CI); elsewhere these
//! tests say so and do nothing.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use safedelete::config::Config;
use safedelete::server::{self, Listeners};

const BIN: &str = env!("CARGO_BIN_EXE_safedelete");

/// A small tmpfs, unmounted when dropped.
struct SmallDisk {
    mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` when this process may not mount (not root).
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("disk");
        std::fs::create_dir(&mount).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("cannot mount a tmpfs here (needs root): skipping");
            return None;
        }
        Some(SmallDisk { mount, _dir: dir })
    }

    /// Writes a file until the disk is full; returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.mount.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 16 * 1024];
        loop {
            if f.write_all(&block).and_then(|_| f.flush()).is_err() {
                break;
            }
        }
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

/// A gateway whose database lives on `disk`, with its config file beside it.
struct DiskGateway {
    proxy: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    config: PathBuf,
    db: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl DiskGateway {
    async fn start(disk: &SmallDisk, upstream: &str, extra: Extra<'_>) -> DiskGateway {
        let dir = tempfile::tempdir().unwrap();
        let db = disk.mount.join("data").join("safedelete.db");
        let config = dir.path().join("safedelete.toml");
        std::fs::write(&config, config_text(upstream, &db, extra)).unwrap();
        let loaded = Config::load(Some(&config), &safedelete::config::NoEnv).unwrap();
        let listeners = Listeners::bind(&loaded).await.unwrap();
        let (proxy, admin) = (listeners.proxy_addr(), listeners.admin_addr());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server::run(loaded, listeners, async {
                let _ = rx.await;
            })
            .await
            .expect("gateway runs");
        });
        let gw = DiskGateway {
            proxy,
            admin,
            config,
            db,
            stop: Some(tx),
            task: Some(task),
            _dir: dir,
        };
        assert!(
            gw.wait_ready(true).await,
            "the gateway did not become ready"
        );
        gw
    }

    fn url(&self, target: &str) -> String {
        format!("http://{}{}", self.proxy, target)
    }

    async fn readyz(&self) -> Reply {
        get(&format!("http://{}/readyz", self.admin)).await
    }

    /// Waits up to 15 s for `/readyz` to say ready (or not).
    async fn wait_ready(&self, ready: bool) -> bool {
        for _ in 0..300 {
            let r = get(&format!("http://{}/readyz", self.admin)).await;
            if (r.status == 200) == ready {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("gateway stops")
                .unwrap();
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

async fn gap_rows(db: &Path) -> Vec<(i64, String)> {
    let pool = safedelete::db::open_existing(db).await.unwrap();
    let rows = sqlx::query_as(
        "SELECT id, detail FROM audit_events WHERE operation = 'audit_gap' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows
}

/// The number at the start of a gap record's detail.
fn lost_in(detail: &str) -> usize {
    detail.split_whitespace().next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_shows_in_readyz_and_leaves_a_gap_record_once_space_returns() {
    let Some(disk) = SmallDisk::mount("4m") else {
        return;
    };
    let up = fake_smartlead::start(fake_smartlead::FakeConfig::default())
        .await
        .unwrap();
    let mut gw = DiskGateway::start(&disk, &up.url(), Extra::default()).await;
    let read = gw.url("/api/v1/campaigns/101?api_key=sl_test_key");
    for _ in 0..5 {
        assert_eq!(get(&read).await.status, 200);
    }
    assert_eq!(gw.readyz().await.status, 200);

    let filler = disk.fill();
    // Traffic still flows (audit.on_failure = "forward", the default)...
    for _ in 0..200 {
        assert_eq!(get(&read).await.status, 200);
    }
    // ...but readiness says the trail cannot be written, and why.
    assert!(
        gw.wait_ready(false).await,
        "readyz stayed 200 with the disk full"
    );
    let not_ready = gw.readyz().await;
    assert_eq!(not_ready.status, 503);
    let reason = not_ready.json()["reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains("audit trail cannot be written") && reason.contains("full"),
        "{reason}"
    );

    std::fs::remove_file(filler).unwrap();
    assert!(gw.wait_ready(true).await, "readyz did not recover");
    gw.stop().await;

    // Every request is accounted for: recorded, or counted in a gap record.
    let gaps = gap_rows(&gw.db).await;
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let detail = &gaps[0].1;
    assert!(
        detail.contains("audit records lost between") && detail.contains("full"),
        "{detail}"
    );
    let recorded = audit_rows(&gw.db)
        .await
        .iter()
        .filter(|r| r.operation == "passthrough")
        .count();
    assert!(lost_in(detail) >= 1);
    assert_eq!(recorded + lost_in(detail), 205, "{detail}");

    // People see the gap where they look, and the chain still verifies.
    let verify = gw.cli(&["audit", "verify"]);
    assert!(verify.starts_with("OK: "), "{verify}");
    assert!(verify.contains("1 gap record"), "{verify}");
    assert!(verify.contains(detail.as_str()), "{verify}");
    let table = gw.cli(&["audit", "--limit", "1000"]);
    assert!(
        table.contains("audit_lost") && table.contains(detail.as_str()),
        "{table}"
    );
    let history = gw.cli(&["history", "--campaign", "101"]);
    assert!(
        history.contains("audit records were lost 1 time"),
        "{history}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_on_failure_refuse_nothing_is_forwarded_while_the_trail_cannot_be_written() {
    let Some(disk) = SmallDisk::mount("4m") else {
        return;
    };
    let up = fake_smartlead::start(fake_smartlead::FakeConfig::default())
        .await
        .unwrap();
    let mut gw = DiskGateway::start(
        &disk,
        &up.url(),
        Extra {
            tables: "[audit]\non_failure = \"refuse\"\n",
            ..Extra::default()
        },
    )
    .await;
    let read = gw.url("/api/v1/campaigns/101?api_key=sl_test_key");
    assert_eq!(get(&read).await.status, 200);

    let filler = disk.fill();
    // The first requests after the disk fills are forwarded until a write
    // fails; from then on every request is refused.
    let mut refused = None;
    for _ in 0..400 {
        let reply = get(&read).await;
        if reply.status == 503 {
            refused = Some(reply);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let refused = refused.expect("no request was refused with the disk full");
    assert_eq!(refused.json()["error_kind"], "audit_unavailable");
    assert!(refused.header("retry-after").is_some());
    let before = up.requests().len();
    for _ in 0..20 {
        assert_eq!(get(&read).await.status, 503);
    }
    assert_eq!(
        up.requests().len(),
        before,
        "a refused request reached SmartLead"
    );

    std::fs::remove_file(filler).unwrap();
    assert!(gw.wait_ready(true).await, "readyz did not recover");
    assert_eq!(get(&read).await.status, 200);
    gw.stop().await;
    let gaps = gap_rows(&gw.db).await;
    assert_eq!(gaps.len(), 1, "{gaps:?}");
}
