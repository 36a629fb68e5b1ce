//! The operator commands as the real binary runs them: `policy explain`
//! against the config's policy, and `snapshots list` / `snapshots export`
//! reading back what a real gateway captured.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bytes::Bytes;
use common::process::{stderr, stdout};
use common::*;
use http::Request;
use http_body_util::Full;

const BIN: &str = env!("CARGO_BIN_EXE_safedelete");

fn safedelete(args: &[&str], config: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

const POLICY: &str = r#"
[policy]
default = "archive"

[[policy.rules]]
name = "protect-flagship"
action = "deny"
campaign_ids = [101]
"#;

fn policy_config(dir: &Path, tables: &str) -> PathBuf {
    let path = dir.join("safedelete.toml");
    let db = dir.join("data").join("safedelete.db");
    let extra = Extra {
        tables,
        ..Extra::default()
    };
    std::fs::write(&path, config_text("http://127.0.0.1:9", &db, extra)).unwrap();
    path
}

#[test]
fn policy_explain_names_the_deciding_rule_or_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let config = policy_config(dir.path(), POLICY);

    let denied = stdout(&safedelete(
        &["policy", "explain", "--campaign-id", "101"],
        &config,
    ));
    assert!(
        denied.contains("`protect-flagship`") && denied.contains("matches"),
        "{denied}"
    );
    assert!(
        denied.contains("decision: deny by rule `protect-flagship`"),
        "{denied}"
    );
    assert!(denied.contains("policy revision: "), "{denied}");

    let archived = stdout(&safedelete(
        &[
            "policy",
            "explain",
            "--campaign-id",
            "102",
            "--name",
            "Spring promo",
            "--status",
            "ACTIVE",
        ],
        &config,
    ));
    assert!(archived.contains("does not match"), "{archived}");
    assert!(
        archived.contains("decision: archive by the default"),
        "{archived}"
    );
    // Explaining is offline: no database was created along the way.
    assert!(!dir.path().join("data").exists());
}

#[test]
fn policy_explain_refuses_an_invalid_policy_naming_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let config = policy_config(
        dir.path(),
        "[policy]\n\n[[policy.rules]]\nname = \"oops\"\naction = \"delete\"\n",
    );
    let out = safedelete(&["policy", "explain", "--campaign-id", "101"], &config);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(stderr(&out).contains("policy.rules[0]"), "{}", stderr(&out));
}

#[test]
fn policy_explain_takes_an_operation_and_its_facts() {
    let dir = tempfile::tempdir().unwrap();
    let config = policy_config(
        dir.path(),
        &format!(
            "{POLICY}\n[[policy.rules]]\nname = \"vip-leads\"\naction = \"pause\"\n\
             operations = [\"campaign.lead.delete\"]\nlead_email = \"*@y.com\"\n"
        ),
    );
    let paused = stdout(&safedelete(
        &[
            "policy",
            "explain",
            "--operation",
            "campaign.lead.delete",
            "--lead-email",
            "x@y.com",
        ],
        &config,
    ));
    assert!(
        paused.starts_with("operation: campaign.lead.delete\n"),
        "{paused}"
    );
    assert!(
        paused
            .contains("`protect-flagship` (deny, enforce): does not apply to campaign.lead.delete"),
        "{paused}"
    );
    assert!(
        paused.contains("decision: pause by rule `vip-leads`"),
        "{paused}"
    );
    let allowed = stdout(&safedelete(
        &[
            "policy",
            "explain",
            "--operation",
            "campaign.lead.delete",
            "--lead-email",
            "x@z.com",
        ],
        &config,
    ));
    assert!(
        allowed.contains("decision: allow by the default for campaign.lead.delete"),
        "{allowed}"
    );

    // A fact the operation cannot have, and an operation that does not exist.
    let out = safedelete(&["policy", "explain", "--lead-email", "x@y.com"], &config);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--lead-email does not apply to campaign.delete"),
        "{}",
        stderr(&out)
    );
    let out = safedelete(
        &["policy", "explain", "--operation", "lead.remove"],
        &config,
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("lead.delete") && stderr(&out).contains("unknown.delete"),
        "{}",
        stderr(&out)
    );
}

/// A config file shipped in `config/`, by its path in the repository.
fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(name)
}

/// `safedelete ARGS --config FILE` with no `SAFEDELETE_*` variable set, run in a
/// scratch directory so nothing it might create lands in the repository.
fn safedelete_clean(args: &[&str], config: &Path) -> Output {
    let scratch = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.current_dir(scratch.path())
        .args(args)
        .arg("--config")
        .arg(config);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SAFEDELETE_") {
            cmd.env_remove(name);
        }
    }
    cmd.output().unwrap()
}

#[test]
fn the_shipped_configs_pass_check_config() {
    for name in [
        "safedelete.example.toml",
        "worked-example.toml",
        "worked-example-leads.toml",
    ] {
        let out = safedelete_clean(&["check-config"], &shipped(name));
        let text = stdout(&out);
        assert!(text.contains("# effective configuration"), "{name}: {text}");
        assert!(stderr(&out).is_empty(), "{name}: {}", stderr(&out));
    }
}

#[test]
fn the_worked_example_is_the_one_the_readme_shows_and_decides_as_it_says() {
    let config = shipped("worked-example.toml");
    let readme = include_str!("../README.md");
    let section = &readme[readme
        .find("### A worked example")
        .expect("README has the worked example")..];
    let block = section
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the worked example has a toml block");
    assert!(block.contains("[[policy.rules]]"), "{block}");
    let file = std::fs::read_to_string(&config).unwrap();
    assert!(
        file.contains(block),
        "config/worked-example.toml no longer holds the README's worked example:\n{block}"
    );

    let explained = stdout(&safedelete_clean(
        &[
            "policy",
            "explain",
            "--campaign-id",
            "103",
            "--name",
            "Old Drafts",
            "--status",
            "DRAFTED",
            "--actor",
            "ops-lead",
        ],
        &config,
    ));
    assert!(
        explained.contains("decision: allow by rule `ops-lead-cleans-old-drafts`"),
        "{explained}"
    );
    let denied = stdout(&safedelete_clean(
        &["policy", "explain", "--campaign-id", "102"],
        &config,
    ));
    assert!(
        denied.contains("decision: deny by rule `protect-key-accounts`"),
        "{denied}"
    );
    // The README's policy explain output shows this revision.
    assert!(readme.contains(
        explained
            .lines()
            .find(|l| l.starts_with("policy revision: "))
            .unwrap()
    ));
}

#[test]
fn the_leads_worked_example_is_the_one_the_readme_shows_and_decides_as_it_says() {
    let config = shipped("worked-example-leads.toml");
    let readme = include_str!("../README.md");
    let section = &readme[readme
        .find("### A second worked example")
        .expect("README has the second worked example")..];
    let block = section
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the second worked example has a toml block");
    assert!(block.contains("[[policy.rules]]"), "{block}");
    let file = std::fs::read_to_string(&config).unwrap();
    assert!(
        file.contains(block),
        "config/worked-example-leads.toml no longer holds the README's second worked example:\n{block}"
    );

    let paused = stdout(&safedelete_clean(
        &[
            "policy",
            "explain",
            "--operation",
            "campaign.lead.delete",
            "--lead-email",
            "lead5@example101.com",
        ],
        &config,
    ));
    assert!(
        paused.contains("decision: pause by rule `pause-instead-of-removing-leads`"),
        "{paused}"
    );
    let denied = stdout(&safedelete_clean(
        &[
            "policy",
            "explain",
            "--operation",
            "email_account.delete",
            "--email-account",
            "shared@outreach.example.com",
        ],
        &config,
    ));
    assert!(
        denied.contains("decision: deny by rule `keep-shared-senders`"),
        "{denied}"
    );
    // The README's policy explain output shows this revision.
    assert!(readme.contains(
        paused
            .lines()
            .find(|l| l.starts_with("policy revision: "))
            .unwrap()
    ));
}

/// A gateway that archived campaign 101 (3000 leads), stopped; its snapshot id
/// and a config file pointing at its database.
struct Captured {
    fake: fake_smartlead::FakeHandle,
    gw: Gateway,
    config: PathBuf,
    snapshot_id: i64,
}

async fn capture_campaign_101() -> Captured {
    let fake = fake_smartlead::start(fake_smartlead::FakeConfig::with_leads(3000))
        .await
        .unwrap();
    let mut gw = Gateway::start(&fake.url()).await;
    let reply = send(
        Request::delete(gw.url("/api/v1/campaigns/101?api_key=sl_test_key"))
            .body(Full::<Bytes>::default())
            .unwrap(),
    )
    .await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let snapshot_id: i64 = reply
        .header("x-safedelete-snapshot-id")
        .expect("an archived delete names its snapshot")
        .parse()
        .unwrap();
    gw.stop().await;
    let config = gw.dir.path().join("cli.toml");
    std::fs::write(
        &config,
        config_text(&fake.url(), &gw.db_path, Extra::default()),
    )
    .unwrap();
    Captured {
        fake,
        gw,
        config,
        snapshot_id,
    }
}

#[tokio::test]
async fn snapshots_list_shows_the_complete_snapshot_with_its_parts() {
    let c = capture_campaign_101().await;

    let json = stdout(&safedelete(&["snapshots", "list", "--json"], &c.config));
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{json}");
    let s = &lines[0];
    assert_eq!(s["id"], c.snapshot_id);
    assert_eq!(s["campaign_id"], 101);
    assert_eq!(s["state"], "complete");
    let parts = s["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 6, "{s}");
    assert!(parts.iter().all(|p| p["state"] == "complete"), "{s}");
    let leads = parts.iter().find(|p| p["kind"] == "leads_csv").unwrap();
    assert_eq!(
        leads["bytes"].as_u64().unwrap(),
        c.fake.expected_leads_csv(101).len() as u64
    );

    let other = stdout(&safedelete(
        &["snapshots", "list", "--json", "--campaign", "102"],
        &c.config,
    ));
    assert!(other.is_empty(), "{other}");

    let table = stdout(&safedelete(&["snapshots", "list"], &c.config));
    let mut rows = table.lines();
    let header = rows.next().unwrap();
    for column in [
        "ID",
        "OPERATION",
        "TARGET",
        "STATE",
        "CREATED",
        "PARTS",
        "BYTES",
        "STORED",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let row: Vec<&str> = rows.next().unwrap().split_whitespace().collect();
    assert_eq!(row[0], c.snapshot_id.to_string());
    assert_eq!(&row[1..4], ["campaign.delete", "campaign:101", "complete"]);
    assert_eq!(row[5], "6/6");
    assert!(rows.next().is_none(), "{table}");
}

#[tokio::test]
async fn snapshots_export_gives_back_the_exact_leads_csv() {
    let c = capture_campaign_101().await;
    let id = c.snapshot_id.to_string();
    let expected = c.fake.expected_leads_csv(101);
    assert!(expected.len() > 100_000, "3000 leads make a sizeable CSV");

    let file = c.gw.dir.path().join("leads.csv");
    let out = safedelete(
        &[
            "snapshots",
            "export",
            &id,
            "--part",
            "leads_csv",
            "-o",
            file.to_str().unwrap(),
        ],
        &c.config,
    );
    stdout(&out);
    assert!(std::fs::read(&file).unwrap() == expected);
    assert!(!c.gw.dir.path().join("leads.csv.partial").exists());

    // leads_csv is the default part; without -o it streams to stdout.
    let out = safedelete(&["snapshots", "export", &id], &c.config);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout == expected);

    let campaign = safedelete(
        &["snapshots", "export", &id, "--part", "campaign"],
        &c.config,
    );
    let campaign: serde_json::Value = serde_json::from_slice(&campaign.stdout).unwrap();
    assert_eq!(campaign["id"], 101);
}

#[tokio::test]
async fn a_corrupt_chunk_fails_the_export_and_leaves_no_file() {
    let c = capture_campaign_101().await;
    let id = c.snapshot_id.to_string();
    let pool = safedelete::db::open_existing(&c.gw.db_path).await.unwrap();
    let changed = sqlx::query(
        "UPDATE snapshot_chunks SET data = X'00' WHERE seq = 0 AND part_id = \
         (SELECT id FROM snapshot_parts WHERE snapshot_id = ? AND kind = 'leads_csv')",
    )
    .bind(c.snapshot_id)
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(changed.rows_affected(), 1);
    pool.close().await;

    let file = c.gw.dir.path().join("leads.csv");
    let out = safedelete(
        &[
            "snapshots",
            "export",
            &id,
            "--part",
            "leads_csv",
            "-o",
            file.to_str().unwrap(),
        ],
        &c.config,
    );
    assert!(!out.status.success(), "a corrupt part was exported");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("snapshot {id}")) && err.contains("leads_csv"),
        "{err}"
    );
    assert!(!file.exists(), "the corrupt export left {}", file.display());
    assert!(!c.gw.dir.path().join("leads.csv.partial").exists());

    let out = safedelete(&["snapshots", "export", &id], &c.config);
    assert!(!out.status.success(), "a corrupt part streamed with exit 0");
    let err = stderr(&out);
    assert!(err.contains("leads_csv") && err.contains("stdout"), "{err}");

    // Other parts are unaffected.
    let out = safedelete(
        &["snapshots", "export", &id, "--part", "sequences"],
        &c.config,
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test]
async fn snapshots_export_refuses_an_unknown_part_listing_the_names() {
    let c = capture_campaign_101().await;
    let id = c.snapshot_id.to_string();
    let file = c.gw.dir.path().join("leads.csv");
    let out = safedelete(
        &[
            "snapshots",
            "export",
            &id,
            "--part",
            "leads",
            "-o",
            file.to_str().unwrap(),
        ],
        &c.config,
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    for name in [
        "campaign",
        "leads_csv",
        "sequences",
        "email_accounts",
        "webhooks",
        "analytics",
    ] {
        assert!(err.contains(name), "{err}");
    }
    assert!(!file.exists());

    let out = safedelete(&["snapshots", "export", "9999"], &c.config);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("snapshot 9999 does not exist"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn a_tampered_chunk_fails_its_checksum_and_leaves_no_file() {
    let c = capture_campaign_101().await;
    let id = c.snapshot_id.to_string();
    let pool = safedelete::db::open_existing(&c.gw.db_path).await.unwrap();
    let (part_id, data): (i64, Vec<u8>) = sqlx::query_as(
        "SELECT c.part_id, c.data FROM snapshot_chunks c JOIN snapshot_parts p ON p.id = c.part_id \
         WHERE p.snapshot_id = ? AND p.kind = 'leads_csv' AND c.seq = 0",
    )
    .bind(c.snapshot_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    // Still a valid zstd frame of the same length, one byte changed: only the
    // checksum can tell.
    let mut raw = zstd::bulk::decompress(&data, 1 << 20).unwrap();
    raw[0] ^= 0x20;
    let tampered = zstd::bulk::compress(&raw, 3).unwrap();
    sqlx::query("UPDATE snapshot_chunks SET data = ? WHERE part_id = ? AND seq = 0")
        .bind(tampered)
        .bind(part_id)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let file = c.gw.dir.path().join("leads.csv");
    std::fs::write(&file, b"the previous export").unwrap();
    let out = safedelete(
        &[
            "snapshots",
            "export",
            &id,
            "--part",
            "leads_csv",
            "-o",
            file.to_str().unwrap(),
        ],
        &c.config,
    );
    assert!(!out.status.success(), "a tampered part was exported");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("snapshot {id}"))
            && err.contains("leads_csv")
            && err.contains("checksum"),
        "{err}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"the previous export");
    assert!(!c.gw.dir.path().join("leads.csv.partial").exists());

    // To stdout every byte has gone out before the checksum is known: the
    // exit status and stderr are the only signal.
    let out = safedelete(&["snapshots", "export", &id], &c.config);
    assert!(
        !out.status.success(),
        "a tampered part streamed with exit 0"
    );
    assert_eq!(out.stdout.len(), c.fake.expected_leads_csv(101).len());
    assert!(stderr(&out).contains("checksum"), "{}", stderr(&out));
}
