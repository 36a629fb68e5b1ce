//! SmartLead's own CLI (`@smartlead/cli`, vendored in
//! `tests/clients/smartlead-official-cli`), which hard-codes
//! `https://server.smartlead.ai/api/v1`, through the gateway unchanged: the
//! CA of `safedelete tls init` given to it as that command prints
//! (`NODE_EXTRA_CA_CERTS`), and SmartLead's name leading to the gateway (a
//! hosts entry; here `tests/clients/hosts-entry.cjs`, which does the same
//! for one process, on a test port). Runs when
//! `SAFEDELETE_TEST_SMARTLEAD_OFFICIAL_CLI` names the built `dist/index.js`
//! (`.ci/run` builds it); skipped with a message otherwise.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::process::*;
use common::*;

const VAR: &str = "SAFEDELETE_TEST_SMARTLEAD_OFFICIAL_CLI";

fn cli() -> Option<PathBuf> {
    let Some(path) = std::env::var_os(VAR) else {
        eprintln!(
            "skipped: set {VAR} to the built dist/index.js of tests/clients/smartlead-official-cli \
             (see its VENDORED.md; .ci/run does it) to run SmartLead's own CLI through the gateway"
        );
        return None;
    };
    Some(PathBuf::from(path))
}

fn hook() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/hosts-entry.cjs")
}

/// `smartlead ARGS...` with SmartLead's name leading to `gateway`.
fn smartlead(
    cli: &Path,
    gateway: std::net::SocketAddr,
    ca: Option<&Path>,
    args: &[&str],
) -> Output {
    let mut command = Command::new("node");
    command
        .arg("--require")
        .arg(hook())
        .arg(cli)
        .args(args)
        .env("SMARTLEAD_API_KEY", "sl_test_key")
        .env("SAFEDELETE_TEST_GATEWAY", gateway.to_string())
        .env("HOME", cli.parent().unwrap())
        .env_remove("NODE_EXTRA_CA_CERTS");
    if let Some(ca) = ca {
        command.env("NODE_EXTRA_CA_CERTS", ca);
    }
    command.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smartlead_s_own_cli_lists_reads_and_deletes_through_the_gateway() {
    let Some(cli) = cli() else {
        return;
    };
    let up = fake_smartlead::start(fake_smartlead::FakeConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (config, db) = write_config(dir.path(), &up.url(), Extra::default());
    let out = Command::new(BIN)
        .args(["tls", "init", "--dir", "tls", "--config", "safedelete.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let printed = stdout(&out);
    let ca = printed
        .lines()
        .find_map(|l| {
            l.split_once("export NODE_EXTRA_CA_CERTS=")
                .map(|(_, v)| PathBuf::from(v))
        })
        .unwrap_or_else(|| panic!("no NODE_EXTRA_CA_CERTS in {printed}"));
    let mut command = Command::new(BIN);
    command.current_dir(dir.path());
    let gw = Proc::start_with(command, &config, "info");

    // Without the CA the tool fails: it never goes around the gateway.
    let out = smartlead(
        &cli,
        gw.proxy,
        None,
        &["campaigns", "list", "--format", "json"],
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("\"id\""));
    assert!(up.requests().is_empty());

    let out = smartlead(
        &cli,
        gw.proxy,
        Some(&ca),
        &["campaigns", "list", "--format", "json"],
    );
    let listed: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(
        listed.as_array().unwrap().iter().any(|c| c["id"] == 101),
        "{listed}"
    );
    let out = smartlead(
        &cli,
        gw.proxy,
        Some(&ca),
        &["campaigns", "get", "--id", "101", "--format", "json"],
    );
    let campaign: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(campaign["name"], "Cold Outreach Q1");

    // The delete is guarded: archived (the default policy), captured first.
    let out = smartlead(
        &cli,
        gw.proxy,
        Some(&ca),
        &["campaigns", "delete", "--id", "101", "--confirm"],
    );
    let answer: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(answer["safedelete"]["action"], "archived", "{answer}");
    assert!(answer["safedelete"]["snapshot_id"].is_number(), "{answer}");
    assert!(!up.requests().iter().any(|r| r.method == "DELETE"));
    let now = fake_read(&up.url(), "/campaigns/101").await;
    assert_eq!(now.json()["status"], "ARCHIVED");

    // And the trail has the tool's calls, over https.
    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = audit_rows(db.as_path()).await;
        if rows.iter().any(|r| r.method == "DELETE") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delete = rows.iter().find(|r| r.method == "DELETE").unwrap();
    assert_eq!(delete.action.as_deref(), Some("archived"));
    assert!(rows
        .iter()
        .any(|r| r.method == "GET" && r.path == "/api/v1/campaigns/101"));
}
