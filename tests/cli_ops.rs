//! The operator commands as the real binary runs them, on a database filled
//! by real traffic: `history`, `audit` filters and export, and `snapshots
//! show | export (all parts) | verify | pin | unpin | prune`.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bytes::Bytes;
use common::process::{stderr, stdout};
use common::*;
use http::Request;
use http_body_util::Full;
use safedelete::config::{Config, NoEnv};
use safedelete::server::{self, Listeners, RunSummary};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const BIN: &str = env!("CARGO_BIN_EXE_safedelete");

fn safedelete(args: &[&str], config: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A gateway on a config file of our own, so two gateways with different
/// policies can run one after the other on the same database.
struct Running {
    proxy: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<RunSummary>,
}

impl Running {
    async fn start(config: &Path) -> Running {
        let config = Config::load(Some(config), &NoEnv).expect("test config is valid");
        let listeners = Listeners::bind(&config).await.unwrap();
        let proxy = listeners.proxy_addr();
        let admin = listeners.admin_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server::run(config, listeners, async {
                let _ = stopped.await;
            })
            .await
            .expect("gateway runs")
        });
        // Ready once the database is open and migrated.
        for _ in 0..200 {
            let ready = client()
                .request(
                    Request::get(format!("http://{admin}/readyz"))
                        .body(Full::default())
                        .unwrap(),
                )
                .await;
            if matches!(ready, Ok(r) if r.status() == 200) {
                return Running { proxy, stop, task };
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the gateway did not become ready");
    }

    fn url(&self, target: &str) -> String {
        format!("http://{}{}", self.proxy, target)
    }

    async fn delete(&self, campaign: u64) -> Reply {
        send(
            Request::delete(self.url(&format!("/api/v1/campaigns/{campaign}?api_key={KEY}")))
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await
    }

    /// Graceful stop: the audit trail is flushed and the database closed.
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("gateway task");
    }
}

fn snapshot_id(reply: &Reply) -> i64 {
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply
        .header("x-safedelete-snapshot-id")
        .expect("a guarded delete names its snapshot")
        .parse()
        .unwrap()
}

/// First 16 hex characters of SHA-256(key), as the gateway fingerprints keys.
fn fingerprint() -> String {
    format!("{:x}", Sha256::digest(KEY.as_bytes()))[..16].to_string()
}

/// A database after real traffic: gateway A (default `archive`) served four
/// reads and archived campaigns 101, 102, 103 and 104; then gateway B
/// (default `allow`) on the same database deleted 101 for real.
struct World {
    dir: tempfile::TempDir,
    db: PathBuf,
    /// For the CLI (and gateway A).
    config: PathBuf,
    /// Snapshots of the archives of 101, 102, 103, 104, then of the delete of 101.
    archived: [i64; 4],
    deleted_101: i64,
    /// Campaign 101's leads export, as SmartLead sent it before the delete.
    leads_101: Vec<u8>,
}

/// Audit records World's traffic leaves: 4 reads and 5 guarded deletes.
const WORLD_RECORDS: usize = 9;

impl World {
    async fn build() -> World {
        let mut seeds = fake_smartlead::CampaignSeed::defaults();
        seeds.push(fake_smartlead::CampaignSeed {
            id: 104,
            name: "Autumn".into(),
            status: "ACTIVE".into(),
            client_id: None,
            leads: 3,
        });
        let fake = fake_smartlead::start(fake_smartlead::FakeConfig {
            campaigns: seeds,
            ..fake_smartlead::FakeConfig::default()
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("data").join("safedelete.db");
        let actors = format!(
            "[[actors]]\nname = \"ops-bot\"\nkey_sha256 = \"{:x}\"\n",
            Sha256::digest(KEY.as_bytes())
        );
        let config = dir.path().join("archive.toml");
        let archive = Extra {
            tables: &actors,
            ..Extra::default()
        };
        std::fs::write(&config, config_text(&fake.url(), &db, archive)).unwrap();
        let allow_config = dir.path().join("allow.toml");
        let allow_tables = format!("{actors}\n[policy]\ndefault = \"allow\"\n");
        let allow = Extra {
            tables: &allow_tables,
            ..Extra::default()
        };
        std::fs::write(&allow_config, config_text(&fake.url(), &db, allow)).unwrap();

        let a = Running::start(&config).await;
        let key = format!("api_key={KEY}");
        assert_eq!(
            get(&a.url(&format!("/api/v1/campaigns/101?{key}")))
                .await
                .status,
            200
        );
        let odd_agent = send(
            Request::get(a.url(&format!("/api/v1/campaigns/101?{key}")))
                .header("user-agent", "tester, \"quoted\"")
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await;
        assert_eq!(odd_agent.status, 200);
        assert_eq!(
            get(&a.url(&format!("/api/v1/campaigns/102?{key}")))
                .await
                .status,
            200
        );
        assert_eq!(
            get(&a.url(&format!("/api/v1/campaigns/999?{key}")))
                .await
                .status,
            404
        );
        let mut archived = [0; 4];
        for (slot, campaign) in archived.iter_mut().zip([101, 102, 103, 104]) {
            let reply = a.delete(campaign).await;
            assert_eq!(reply.header("x-safedelete-action"), Some("archived"));
            *slot = snapshot_id(&reply);
        }
        a.stop().await;
        let leads_101 = fake.expected_leads_csv(101);

        let b = Running::start(&allow_config).await;
        let reply = b.delete(101).await;
        assert_eq!(reply.header("x-safedelete-action"), Some("allowed"));
        let deleted_101 = snapshot_id(&reply);
        b.stop().await;

        World {
            dir,
            db,
            config,
            archived,
            deleted_101,
            leads_101,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        safedelete(args, &self.config)
    }

    async fn sql(&self, statement: &str) -> u64 {
        let pool = safedelete::db::open_existing(&self.db).await.unwrap();
        let done = sqlx::query(statement).execute(&pool).await.unwrap();
        pool.close().await;
        done.rows_affected()
    }

    async fn count(&self, query: &str) -> i64 {
        let pool = safedelete::db::open_existing(&self.db).await.unwrap();
        let n = sqlx::query_scalar(query).fetch_one(&pool).await.unwrap();
        pool.close().await;
        n
    }
}

#[tokio::test]
async fn history_tells_an_archive_then_a_real_delete_in_order() {
    let w = World::build().await;
    let [s101, ..] = w.archived;

    let text = stdout(&w.run(&["history", "--campaign", "101"]));
    let archive = text.find("archive by the default").expect(&text);
    let allow = text.find("allow by the default").expect(&text);
    assert!(archive < allow, "operations out of order:\n{text}");
    assert!(
        text.contains("campaign 101: 2 guarded operations"),
        "{text}"
    );
    assert!(text.contains("ops-bot"), "{text}");
    assert!(text.contains(&fingerprint()), "{text}");
    assert!(text.contains("status change to archived"), "{text}");
    assert!(text.contains("DELETE (SmartLead answered 200)"), "{text}");
    assert!(
        text.contains(&format!("snapshot:  {s101} complete, 6/6")),
        "{text}"
    );
    assert!(
        text.contains(&format!("snapshot:  {} complete, 6/6", w.deleted_101)),
        "{text}"
    );
    assert!(text.contains("leads_csv"), "{text}");
    assert!(
        text.contains("2 passthrough requests touched it (first "),
        "{text}"
    );

    let json = stdout(&w.run(&["history", "--campaign", "101", "--json"]));
    let h: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(h["campaign_id"], 101);
    assert_eq!(h["passthrough_requests"], 2);
    let ops = h["operations"].as_array().unwrap();
    assert_eq!(ops.len(), 2, "{h}");
    assert_eq!(ops[0]["action"], "archive");
    assert_eq!(ops[0]["state"], "done");
    assert_eq!(ops[0]["snapshot_id"], s101);
    assert_eq!(ops[1]["action"], "allow");
    assert_eq!(ops[1]["state"], "done");
    assert_eq!(ops[1]["snapshot_id"], w.deleted_101);
    assert_eq!(ops[1]["snapshot"]["parts"].as_array().unwrap().len(), 6);

    let unknown = w.run(&["history", "--campaign", "4242"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        stderr(&unknown).contains("no record of campaign 4242"),
        "{}",
        stderr(&unknown)
    );
}

#[tokio::test]
async fn audit_filters_narrow_the_trail_and_csv_quotes_what_it_must() {
    let w = World::build().await;
    let all = |extra: &[&str]| {
        let mut args = vec!["audit", "--json", "--limit", "1000"];
        args.extend_from_slice(extra);
        json_lines(&stdout(&w.run(&args)))
    };
    assert_eq!(all(&[]).len(), WORLD_RECORDS);

    let c101 = all(&["--campaign", "101"]);
    assert_eq!(c101.len(), 4, "two reads, an archive and a delete");
    assert!(c101.iter().all(|e| e["campaign_id"] == 101));
    // Newest first.
    assert_eq!(c101[0]["action"], "allowed");

    let deletes = all(&["--method", "delete"]);
    assert_eq!(deletes.len(), 5);
    assert!(deletes.iter().all(|e| e["method"] == "DELETE"));
    assert_eq!(all(&["--action", "archived"]).len(), 4);
    assert_eq!(all(&["--action", "allowed", "--campaign", "101"]).len(), 1);
    assert_eq!(all(&["--action", "allowed", "--campaign", "102"]).len(), 0);
    assert_eq!(
        all(&["--actor", "ops-bot"]).len(),
        5,
        "guarded records carry the label"
    );
    assert_eq!(all(&["--actor", &fingerprint()]).len(), WORLD_RECORDS);
    let missing = all(&["--status", "404"]);
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0]["path"], "/api/v1/campaigns/999");

    assert_eq!(all(&["--since", "1h"]).len(), WORLD_RECORDS);
    assert_eq!(all(&["--until", "1h"]).len(), 0);
    assert_eq!(all(&["--since", "2999-01-01T00:00:00Z"]).len(), 0);
    assert_eq!(
        all(&["--since", "2000-01-01T01:00:00+01:00", "--until", "30m"]).len(),
        0
    );
    assert_eq!(
        all(&["--until", "2999-01-01T00:00:00Z"]).len(),
        WORLD_RECORDS
    );
    let two = json_lines(&stdout(&w.run(&["audit", "--json", "--limit", "2"])));
    assert_eq!(two.len(), 2);

    let bad = w.run(&["audit", "--since", "yesterday"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("RFC 3339"), "{}", stderr(&bad));

    let csv = stdout(&w.run(&["audit", "--csv", "--campaign", "101"]));
    let rows: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(rows.len(), 1 + 4, "{csv}");
    assert!(rows[0].starts_with("id,time,request_id,method,path,query,"));
    assert!(
        csv.contains(",\"tester, \"\"quoted\"\"\","),
        "user agent not quoted per RFC 4180:\n{csv}"
    );
    assert!(csv.contains("api_key=[REDACTED]"), "{csv}");
    assert!(!csv.contains(KEY), "{csv}");

    // The table is still the default.
    let table = stdout(&w.run(&["audit", "--method", "DELETE"]));
    assert!(table.lines().next().unwrap().contains("METHOD"));
    assert_eq!(table.lines().count(), 1 + 5);

    // What the guard did is a column: the word, or `-` for plain traffic.
    let table = stdout(&w.run(&["audit", "--campaign", "101"]));
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    let at = header
        .iter()
        .position(|c| *c == "ACTION")
        .expect("an ACTION column");
    let actions: Vec<&str> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(at).unwrap())
        .collect();
    assert_eq!(actions, vec!["allowed", "archived", "-", "-"], "{table}");
    // The policy's words find the same records; a typo lists the words.
    assert_eq!(all(&["--action", "archive"]).len(), 4);
    assert_eq!(all(&["--action", "Allow", "--campaign", "101"]).len(), 1);
    let typo = w.run(&["audit", "--action", "archve"]);
    assert!(!typo.status.success());
    assert!(
        stderr(&typo).contains("allowed, archived, paused, denied, refused"),
        "{}",
        stderr(&typo)
    );
}

#[tokio::test]
async fn audit_export_streams_every_record_oldest_first_across_pages() {
    let fake = fake_smartlead::start(fake_smartlead::FakeConfig::default())
        .await
        .unwrap();
    let mut gw = Gateway::start(&fake.url()).await;
    // More than one export page (1000 records): 5 clients, 241 reads each.
    const CLIENTS: usize = 5;
    const N: usize = CLIENTS * 241;
    let url = gw.url(&format!("/api/v1/campaigns/101?api_key={KEY}"));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let url = url.clone();
        tasks.spawn(async move {
            for _ in 0..N / CLIENTS {
                assert_eq!(get(&url).await.status, 200);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    gw.stop().await;
    let config = gw.dir.path().join("cli.toml");
    std::fs::write(
        &config,
        config_text_for(&fake.url(), &database_toml(&gw.store), Extra::default()),
    )
    .unwrap();

    let jsonl = gw.dir.path().join("trail.jsonl");
    stdout(&safedelete(
        &[
            "audit",
            "export",
            "--format",
            "jsonl",
            "-o",
            jsonl.to_str().unwrap(),
        ],
        &config,
    ));
    let records = json_lines(&std::fs::read_to_string(&jsonl).unwrap());
    assert_eq!(records.len(), N);
    let ids: Vec<i64> = records.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "not oldest first");
    assert!(!gw.dir.path().join("trail.jsonl.partial").exists());

    let csv = gw.dir.path().join("trail.csv");
    stdout(&safedelete(
        &[
            "audit",
            "export",
            "--format",
            "csv",
            "-o",
            csv.to_str().unwrap(),
        ],
        &config,
    ));
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.split("\r\n").filter(|l| !l.is_empty()).count(), N + 1);
    assert!(text.starts_with("id,time,"));

    // An unwritable target fails naming it, leaving nothing behind.
    let nowhere = gw.dir.path().join("missing-dir").join("trail.jsonl");
    let out = safedelete(
        &["audit", "export", "-o", nowhere.to_str().unwrap()],
        &config,
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot export the audit trail to")
            && stderr(&out).contains("trail.jsonl"),
        "{}",
        stderr(&out)
    );

    // `-o -` is stdout.
    let out = stdout(&safedelete(&["audit", "export", "-o", "-"], &config));
    assert_eq!(out.lines().count(), N);
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["id"], ids[0]);
}

#[tokio::test]
async fn snapshots_show_details_parts_and_counts_leads() {
    let w = World::build().await;
    let [s101, _, s103, _] = w.archived;

    let text = stdout(&w.run(&["snapshots", "show", &s101.to_string()]));
    assert!(
        text.contains(&format!("snapshot {s101}  campaign.delete of campaign:101")),
        "{text}"
    );
    assert!(text.contains("state:      complete"), "{text}");
    assert!(text.contains("pinned:     no"), "{text}");
    assert!(text.contains("leads:      25"), "{text}");
    for kind in [
        "campaign",
        "leads_csv",
        "sequences",
        "email_accounts",
        "webhooks",
        "analytics",
    ] {
        assert!(text.contains(&format!("    {kind}\n")), "{kind}: {text}");
    }
    assert!(text.contains("content type:  text/csv"), "{text}");
    assert!(text.contains("content type:  application/json"), "{text}");
    let leads_bytes = w.leads_101.len();
    assert!(
        text.contains(&format!("bytes:         {leads_bytes}\n")),
        "{text}"
    );
    let sha_lines = text.lines().filter(|l| l.contains("sha256:")).count();
    assert_eq!(sha_lines, 6);
    assert!(text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("sha256:"))
        .all(|h| h.trim().len() == 64));

    let json = stdout(&w.run(&["snapshots", "show", &s103.to_string(), "--json"]));
    let s: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(s["campaign_id"], 103);
    assert_eq!(s["leads"], 0, "an empty campaign's export is its header");
    assert_eq!(s["pinned"], false);

    let table = stdout(&w.run(&["snapshots", "list"]));
    let header = table.lines().next().unwrap();
    assert!(
        header.contains("LEADS") && header.contains("PINNED"),
        "{header}"
    );
    let row = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&s101.to_string()))
        .unwrap();
    // The lead count, counted while the export was captured.
    let leads_101 = w.leads_101.iter().filter(|b| **b == b'\n').count() - 1;
    assert!(
        row.split_whitespace().any(|c| c == leads_101.to_string()),
        "{row}"
    );
    let _ = leads_bytes;
    let complete = stdout(&w.run(&["snapshots", "list", "--state", "complete", "--json"]));
    assert!(complete.lines().count() >= 4, "{complete}");
    let failed = stdout(&w.run(&["snapshots", "list", "--state", "failed"]));
    assert_eq!(failed.lines().count(), 1, "only the header: {failed}");

    let missing = w.run(&["snapshots", "show", "9999"]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("snapshot 9999 does not exist"));
}

#[tokio::test]
async fn snapshots_export_without_a_part_writes_every_part_into_a_directory() {
    let w = World::build().await;
    let s101 = w.archived[0].to_string();
    let dir = w.dir.path().join("restore").join("101");
    // A trailing slash (or an existing directory) asks for every part.
    let dir_arg = format!("{}/", dir.display());
    let out = stdout(&w.run(&["snapshots", "export", &s101, "-o", &dir_arg]));
    assert_eq!(out.lines().count(), 6, "{out}");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "campaign-101-analytics.json",
            "campaign-101-campaign.json",
            "campaign-101-email-accounts.json",
            "campaign-101-leads.csv",
            "campaign-101-sequences.json",
            "campaign-101-webhooks.json",
        ]
    );
    assert!(std::fs::read(dir.join("campaign-101-leads.csv")).unwrap() == w.leads_101);
    let campaign: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("campaign-101-campaign.json")).unwrap())
            .unwrap();
    assert_eq!(campaign["id"], 101);

    // Into an existing directory, every part again.
    let again = stdout(&w.run(&["snapshots", "export", &s101, "-o", dir.to_str().unwrap()]));
    assert_eq!(again.lines().count(), 6, "{again}");

    // A file path without --part is the leads CSV (DESIGN §7's `-o FILE`).
    let file = w.dir.path().join("leads.csv");
    let out = w.run(&["snapshots", "export", &s101, "-o", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::read(&file).unwrap() == w.leads_101);
}

#[tokio::test]
async fn snapshots_verify_names_the_damaged_snapshot_and_part() {
    let w = World::build().await;
    let [_, s102, s103, _] = w.archived;

    let ok = stdout(&w.run(&["snapshots", "verify"]));
    assert_eq!(
        ok.lines().filter(|l| l.contains(": OK")).count(),
        5 * 6,
        "{ok}"
    );
    assert!(!ok.contains("FAILED"), "{ok}");

    // An undecodable chunk in 102's leads, and a one-byte change in 103's
    // campaign object that only the checksum can see.
    let changed = w
        .sql(&format!(
            "UPDATE snapshot_chunks SET data = X'00' WHERE seq = 0 AND part_id = \
             (SELECT id FROM snapshot_parts WHERE snapshot_id = {s102} AND kind = 'leads_csv')"
        ))
        .await;
    assert_eq!(changed, 1);
    let pool = safedelete::db::open_existing(&w.db).await.unwrap();
    let (part_id, data): (i64, Vec<u8>) = sqlx::query_as(
        "SELECT c.part_id, c.data FROM snapshot_chunks c JOIN snapshot_parts p ON p.id = c.part_id \
         WHERE p.snapshot_id = $1 AND p.kind = 'campaign' AND c.seq = 0",
    )
    .bind(s103)
    .fetch_one(&pool)
    .await
    .unwrap();
    let mut raw = zstd::bulk::decompress(&data, 1 << 20).unwrap();
    raw[1] ^= 0x01;
    sqlx::query("UPDATE snapshot_chunks SET data = $1 WHERE part_id = $2 AND seq = 0")
        .bind(zstd::bulk::compress(&raw, 3).unwrap())
        .bind(part_id)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let one = w.run(&["snapshots", "verify", &s102.to_string()]);
    assert!(!one.status.success(), "a damaged snapshot verified");
    let text = String::from_utf8(one.stdout.clone()).unwrap();
    assert!(
        text.contains(&format!("snapshot {s102} part leads_csv: FAILED")),
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.contains(": OK")).count(),
        5,
        "{text}"
    );
    assert!(
        stderr(&one).contains("1 of 6 snapshot parts failed"),
        "{}",
        stderr(&one)
    );

    let every = w.run(&["snapshots", "verify"]);
    assert!(!every.status.success());
    let text = String::from_utf8(every.stdout.clone()).unwrap();
    let failed: Vec<&str> = text.lines().filter(|l| l.contains("FAILED")).collect();
    assert_eq!(failed.len(), 2, "{text}");
    assert!(failed[0].starts_with(&format!("snapshot {s102} part leads_csv")));
    assert!(
        failed[1].starts_with(&format!("snapshot {s103} part campaign"))
            && failed[1].contains("checksum"),
        "{text}"
    );
    assert!(stderr(&every).contains("2 of 30"), "{}", stderr(&every));

    let missing = w.run(&["snapshots", "verify", "9999"]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("snapshot 9999 does not exist"));

    // A part removed from a complete snapshot is damage too, not a skip.
    let s104 = w.archived[3];
    w.sql(&format!(
        "DELETE FROM snapshot_chunks WHERE part_id IN \
         (SELECT id FROM snapshot_parts WHERE snapshot_id = {s104} AND kind = 'webhooks')"
    ))
    .await;
    w.sql(&format!(
        "DELETE FROM snapshot_parts WHERE snapshot_id = {s104} AND kind = 'webhooks'"
    ))
    .await;
    let gone = w.run(&["snapshots", "verify", &s104.to_string()]);
    assert!(!gone.status.success(), "a snapshot missing a part verified");
    let text = String::from_utf8(gone.stdout.clone()).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("snapshot {s104} part webhooks"))
                && l.contains("FAILED")),
        "{text}"
    );
}

#[tokio::test]
async fn pin_and_unpin_flip_the_flag_that_show_and_list_report() {
    let w = World::build().await;
    let id = w.archived[1].to_string();
    let shows_pinned = |yes: bool| {
        let text = stdout(&w.run(&["snapshots", "show", &id]));
        text.contains(if yes {
            "pinned:     yes"
        } else {
            "pinned:     no"
        })
    };

    assert!(stdout(&w.run(&["snapshots", "pin", &id])).contains("is now pinned"));
    assert!(shows_pinned(true));
    assert!(stdout(&w.run(&["snapshots", "pin", &id])).contains("already pinned"));
    let listed = json_lines(&stdout(&w.run(&["snapshots", "list", "--json"])));
    let pinned: Vec<i64> = listed
        .iter()
        .filter(|s| s["pinned"] == true)
        .map(|s| s["id"].as_i64().unwrap())
        .collect();
    assert_eq!(pinned, [w.archived[1]]);

    assert!(stdout(&w.run(&["snapshots", "unpin", &id])).contains("is now not pinned"));
    assert!(shows_pinned(false));

    let missing = w.run(&["snapshots", "pin", "9999"]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("snapshot 9999 does not exist"));
}

/// The snapshot ids a prune run printed, from its `VERB snapshot N ...` lines.
fn pruned(text: &str, verb: &str) -> BTreeSet<i64> {
    text.lines()
        .filter_map(|l| l.strip_prefix(&format!("{verb} snapshot ")))
        .map(|rest| rest.split_whitespace().next().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test]
async fn prune_spares_pinned_recent_and_last_copies_of_deleted_campaigns() {
    let w = World::build().await;
    let [s101, s102, s103, s104] = w.archived;
    let s101_deleted = w.deleted_101;

    // Everything but 104's snapshot is old; 102's is pinned.
    let aged = w
        .sql(&format!(
            "UPDATE snapshots SET created_at = '2020-01-01T00:00:00.000Z' WHERE id <> {s104}"
        ))
        .await;
    assert_eq!(aged, 4);
    stdout(&w.run(&["snapshots", "pin", &s102.to_string()]));

    let dry = stdout(&w.run(&["snapshots", "prune", "--older-than", "90d", "--dry-run"]));
    let would = pruned(&dry, "would remove");
    // 101's archive snapshot goes; its delete snapshot is the last copy of a
    // campaign SmartLead no longer has.
    assert_eq!(would, BTreeSet::from([s101, s103]), "{dry}");
    assert_eq!(w.count("SELECT COUNT(*) FROM snapshots").await, 5);

    let real = stdout(&w.run(&["snapshots", "prune", "--older-than", "90d"]));
    assert_eq!(pruned(&real, "removed"), would, "{real}");
    let left: BTreeSet<i64> = json_lines(&stdout(&w.run(&["snapshots", "list", "--json"])))
        .iter()
        .map(|s| s["id"].as_i64().unwrap())
        .collect();
    assert_eq!(left, BTreeSet::from([s102, s104, s101_deleted]));
    assert_eq!(
        w.count(&format!(
            "SELECT COUNT(*) FROM snapshot_parts WHERE snapshot_id IN ({s101}, {s103})"
        ))
        .await,
        0
    );
    assert_eq!(
        w.count("SELECT COUNT(*) FROM snapshot_chunks WHERE part_id NOT IN (SELECT id FROM snapshot_parts)")
            .await,
        0,
        "orphaned chunks"
    );
    // What is left is whole.
    stdout(&w.run(&["snapshots", "verify"]));
    // The story of a campaign outlives its pruned snapshot.
    let story = stdout(&w.run(&["history", "--campaign", "101"]));
    assert!(story.contains("no longer stored"), "{story}");

    // Nothing more to do, until 102 is unpinned.
    let again = stdout(&w.run(&["snapshots", "prune", "--older-than", "90d"]));
    assert!(pruned(&again, "removed").is_empty(), "{again}");
    stdout(&w.run(&["snapshots", "unpin", &s102.to_string()]));
    let after_unpin = stdout(&w.run(&["snapshots", "prune", "--older-than", "90d"]));
    assert_eq!(pruned(&after_unpin, "removed"), BTreeSet::from([s102]));
    let left: BTreeSet<i64> = json_lines(&stdout(&w.run(&["snapshots", "list", "--json"])))
        .iter()
        .map(|s| s["id"].as_i64().unwrap())
        .collect();
    assert_eq!(left, BTreeSet::from([s104, s101_deleted]));

    let bad = w.run(&["snapshots", "prune", "--older-than", "soon"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("90d"), "{}", stderr(&bad));
}

#[tokio::test]
async fn audit_verify_passes_a_clean_trail_and_names_a_modified_record() {
    let w = World::build().await;

    let checkpoint = stdout(&w.run(&["audit", "checkpoint"]));
    let checkpoint = checkpoint.trim();
    let (id, hash) = checkpoint.split_once(':').expect(checkpoint);
    assert_eq!(id, WORLD_RECORDS.to_string());
    assert_eq!(hash.len(), 64);

    let ok = stdout(&w.run(&["audit", "verify"]));
    assert!(
        ok.contains(&format!("{WORLD_RECORDS} chained records verified")),
        "{ok}"
    );
    let ok = stdout(&w.run(&["audit", "verify", "--checkpoint", checkpoint]));
    assert!(ok.contains("is intact"), "{ok}");

    let bad = w.run(&["audit", "verify", "--checkpoint", "nonsense"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("ID:HASH"), "{}", stderr(&bad));

    // Someone hides the archive of 102. Passthrough records go through the
    // batch writer, so the archive's id is looked up rather than assumed.
    let archive_102 = w
        .count("SELECT id FROM audit_events WHERE campaign_id = 102 AND action = 'archived'")
        .await;
    let changed = w
        .sql(&format!(
            "UPDATE audit_events SET action = 'allowed' WHERE id = {archive_102}"
        ))
        .await;
    assert_eq!(changed, 1);
    let tampered = w.run(&["audit", "verify"]);
    assert!(!tampered.status.success(), "a modified trail verified");
    assert!(
        stderr(&tampered).contains(&format!("record {archive_102} was modified")),
        "{}",
        stderr(&tampered)
    );

    // Dropping the newest records keeps the chain consistent; only the
    // checkpoint kept elsewhere can tell.
    w.sql(&format!(
        "UPDATE audit_events SET action = 'archived' WHERE id = {archive_102}"
    ))
    .await;
    w.sql(&format!(
        "DELETE FROM audit_events WHERE id = {WORLD_RECORDS}"
    ))
    .await;
    stdout(&w.run(&["audit", "verify"]));
    let truncated = w.run(&["audit", "verify", "--checkpoint", checkpoint]);
    assert!(!truncated.status.success());
    assert!(
        stderr(&truncated).contains("no longer in the trail"),
        "{}",
        stderr(&truncated)
    );
}
