//! The bypass watch against the fake SmartLead over real sockets: a campaign
//! deleted straight on SmartLead (behind the gateway's back) is reported in
//! the audit trail, `/metrics` and `history`; one deleted through the
//! gateway is not; the first listing is a baseline; `interval = "0s"` never
//! lists; a failed listing reports nothing; a delete made while the gateway
//! was stopped is found at its start.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use fake_smartlead::FakeHandle;
use http::Request;
use http_body_util::Full;
use safedelete::config::{Config, NoEnv};
use safedelete::server::{self, Listeners};

const BIN: &str = env!("CARGO_BIN_EXE_safedelete");

/// A key file holding the fake's key, and the `[[smartlead.accounts]]` and
/// `[bypass]` tables that use it.
fn account_tables(dir: &Path, interval: &str, more: &str) -> String {
    let key_file = dir.join("smartlead.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    format!(
        "[[smartlead.accounts]]\nname = \"default\"\napi_key_file = {:?}\n\n\
         [bypass]\ninterval = \"{interval}\"\n\n{more}\n",
        key_file.display().to_string()
    )
}

/// How many campaign listings reached the fake.
fn listings(fake: &FakeHandle) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path() == "/api/v1/campaigns")
        .count()
}

/// Waits until the fake has seen `n` listings (a generous 20 s).
async fn wait_for_listings(fake: &FakeHandle, n: usize) {
    for _ in 0..400 {
        if listings(fake) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} campaign listings after 20s");
}

/// A DELETE of the campaign straight on the fake: what the SmartLead UI or a
/// tool holding the key does.
async fn delete_on_smartlead(fake: &FakeHandle, campaign_id: u64) {
    let reply = send(
        Request::delete(format!(
            "{}/api/v1/campaigns/{campaign_id}?api_key={KEY}",
            fake.url()
        ))
        .body(Full::<Bytes>::default())
        .unwrap(),
    )
    .await;
    assert!(reply.status.is_success(), "{:?}", reply.status);
    assert!(fake.campaign(campaign_id).is_none());
}

/// A DELETE of the campaign through the gateway.
async fn delete_through(gw_proxy: &str, campaign_id: u64) -> Reply {
    send(
        Request::delete(format!(
            "{gw_proxy}/api/v1/campaigns/{campaign_id}?api_key={KEY}"
        ))
        .body(Full::<Bytes>::default())
        .unwrap(),
    )
    .await
}

#[derive(Debug, sqlx::FromRow)]
struct BypassRow {
    method: String,
    path: String,
    campaign_id: Option<i64>,
    target: Option<String>,
    account: Option<String>,
    snapshot_id: Option<i64>,
    upstream_status: Option<i64>,
    detail: Option<String>,
}

async fn bypass_rows(db: &Path) -> Vec<BypassRow> {
    let pool = safedelete::db::open_existing(db).await.unwrap();
    let rows = sqlx::query_as::<_, BypassRow>(
        "SELECT method, path, campaign_id, target, account, snapshot_id, upstream_status, detail \
         FROM audit_events WHERE operation = 'bypass_detected' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows
}

/// Waits for `n` bypass records (a generous 20 s).
async fn wait_for_bypass_rows(db: &Path, n: usize) -> Vec<BypassRow> {
    for _ in 0..400 {
        let rows = bypass_rows(db).await;
        if rows.len() >= n {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} bypass records after 20s");
}

async fn metrics_text(gw: &Gateway) -> String {
    String::from_utf8_lossy(&get(&gw.admin_url("/metrics")).await.body).into_owned()
}

fn run_cli(args: &[&str], config: &Path) -> String {
    let out = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn a_campaign_deleted_on_smartlead_is_reported_with_its_name_status_and_snapshot() {
    let fake = fake_smartlead::start(fake_smartlead::FakeConfig::default())
        .await
        .unwrap();
    let keys = tempfile::tempdir().unwrap();
    let tables = account_tables(keys.path(), "1s", "");
    let mut gw = Gateway::start_with(
        &fake.url(),
        Extra {
            tables: &tables,
            ..Extra::default()
        },
    )
    .await;

    // The policy's default archives a delete: campaign 101 gets a snapshot
    // and stays in SmartLead as ARCHIVED.
    let archived = delete_through(&gw.url(""), 101).await;
    assert_eq!(archived.header("x-safedelete-action"), Some("archived"));
    let snapshot_id: i64 = archived
        .header("x-safedelete-snapshot-id")
        .expect("a snapshot was taken")
        .parse()
        .unwrap();
    // A listing after the archive knows it as ARCHIVED; an archive is no
    // disappearance.
    let seen = listings(&fake);
    wait_for_listings(&fake, seen + 2).await;
    assert!(bypass_rows(&gw.db_path).await.is_empty());

    // Then someone deletes it, and campaign 103, in the SmartLead UI.
    delete_on_smartlead(&fake, 101).await;
    delete_on_smartlead(&fake, 103).await;
    let rows = wait_for_bypass_rows(&gw.db_path, 2).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let r101 = rows.iter().find(|r| r.campaign_id == Some(101)).unwrap();
    let r103 = rows.iter().find(|r| r.campaign_id == Some(103)).unwrap();
    for r in [r101, r103] {
        assert_eq!(r.method, "WATCH");
        assert_eq!(r.path, "/api/v1/campaigns");
        assert_eq!(r.account.as_deref(), Some("default"));
        assert_eq!(r.upstream_status, Some(200));
        assert_eq!(
            r.target.as_deref(),
            Some(format!("campaign:{}", r.campaign_id.unwrap()).as_str())
        );
    }
    let d101 = r101.detail.as_deref().unwrap();
    assert!(
        d101.starts_with("campaign 101 \"Cold Outreach Q1\" (status ARCHIVED) disappeared from account default between "),
        "{d101}"
    );
    assert!(
        d101.ends_with(&format!(
            "without a delete through the gateway; last snapshot {snapshot_id}"
        )),
        "{d101}"
    );
    assert_eq!(r101.snapshot_id, Some(snapshot_id));
    let d103 = r103.detail.as_deref().unwrap();
    assert!(
        d103.starts_with("campaign 103 \"Old Drafts\" (status DRAFTED)"),
        "{d103}"
    );
    assert!(d103.ends_with("; no snapshot"), "{d103}");
    assert_eq!(r103.snapshot_id, None);
    // The key never reaches the trail.
    assert!(!d101.contains(KEY) && !d103.contains(KEY));

    assert_eq!(
        metric(&gw, "safedelete_bypass_detected_total{account=\"default\"}").await,
        2.0
    );
    // Reported once: later listings do not repeat it.
    let seen = listings(&fake);
    wait_for_listings(&fake, seen + 2).await;
    assert_eq!(bypass_rows(&gw.db_path).await.len(), 2);

    let config = gw.dir.path().join("safedelete.toml");
    let story = run_cli(&["history", "--campaign", "101"], &config);
    assert!(
        story.contains("deleted outside the gateway (bypass detected)"),
        "{story}"
    );
    assert!(story.contains(d101), "{story}");
    assert!(
        story.contains(&format!("snapshot:  {snapshot_id} (its data:")),
        "{story}"
    );
    let story = run_cli(&["history", "--campaign", "103"], &config);
    assert!(
        story.contains("campaign 103: 0 guarded operations; deleted outside the gateway"),
        "{story}"
    );
    assert!(story.contains("snapshot:  none"), "{story}");
    let audit = run_cli(&["audit", "--campaign", "103"], &config);
    assert!(
        audit
            .lines()
            .any(|l| l.contains("WATCH") && l.contains(d103)),
        "{audit}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_campaign_deleted_through_the_gateway_is_not_reported() {
    let fake = fake_smartlead::start(fake_smartlead::FakeConfig::default())
        .await
        .unwrap();
    let keys = tempfile::tempdir().unwrap();
    let tables = account_tables(keys.path(), "1s", "[policy]\ndefault = \"allow\"\n");
    let mut gw = Gateway::start_with(
        &fake.url(),
        Extra {
            tables: &tables,
            ..Extra::default()
        },
    )
    .await;
    wait_for_listings(&fake, 1).await;
    // Wait for the baseline to be stored, so both deletes fall after it.
    let seen = listings(&fake);
    wait_for_listings(&fake, seen + 1).await;

    let allowed = delete_through(&gw.url(""), 102).await;
    assert_eq!(allowed.header("x-safedelete-action"), Some("allowed"));
    assert!(fake.campaign(102).is_none());
    delete_on_smartlead(&fake, 103).await;

    let rows = wait_for_bypass_rows(&gw.db_path, 1).await;
    let seen = listings(&fake);
    wait_for_listings(&fake, seen + 2).await;
    let rows_after = bypass_rows(&gw.db_path).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows_after.len(), 1, "{rows_after:?}");
    assert_eq!(rows_after[0].campaign_id, Some(103));
    assert_eq!(
        metric(&gw, "safedelete_bypass_detected_total{account=\"default\"}").await,
        1.0
    );
    gw.stop().await;
}

#[tokio::test]
async fn with_the_interval_at_zero_no_listing_reaches_smartlead() {
    let fake = fake_smartlead::start(fake_smartlead::FakeConfig::default())
        .await
        .unwrap();
    let keys = tempfile::tempdir().unwrap();
    let tables = account_tables(keys.path(), "0s", "");
    let mut gw = Gateway::start_with(
        &fake.url(),
        Extra {
            tables: &tables,
            ..Extra::default()
        },
    )
    .await;
    delete_on_smartlead(&fake, 103).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(listings(&fake), 0);
    assert!(bypass_rows(&gw.db_path).await.is_empty());
    assert!(!metrics_text(&gw)
        .await
        .contains("safedelete_bypass_detected_total{"));
    gw.stop().await;
}

#[tokio::test]
async fn the_first_listing_is_a_baseline_even_for_a_campaign_the_gateway_knew() {
    let fake = fake_smartlead::start(fake_smartlead::FakeConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("data").join("safedelete.db");
    let config_path = dir.path().join("safedelete.toml");
    let write_config = |interval: &str| {
        let tables = account_tables(dir.path(), interval, "");
        let extra = Extra {
            tables: &tables,
            ..Extra::default()
        };
        std::fs::write(&config_path, config_text(&fake.url(), &db_path, extra)).unwrap();
    };

    // Without the watch, the gateway learns of campaign 103 from traffic.
    write_config("0s");
    let run = start_at(&config_path).await;
    let read = get(&format!(
        "http://{}/api/v1/campaigns/103?api_key={KEY}",
        run.proxy
    ))
    .await;
    assert_eq!(read.status, 200);
    run.stop().await;

    // It is deleted; the watch's first listing is only a baseline.
    delete_on_smartlead(&fake, 103).await;
    write_config("1s");
    let run = start_at(&config_path).await;
    wait_for_listings(&fake, 3).await;
    assert!(bypass_rows(&db_path).await.is_empty());
    let pool = safedelete::db::open_existing(&db_path).await.unwrap();
    let stored: Vec<i64> = sqlx::query_scalar(
        "SELECT campaign_id FROM bypass_campaigns WHERE account = 'default' ORDER BY campaign_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert_eq!(stored, vec![101, 102]);
    run.stop().await;
}

/// A gateway on a config file and database that outlive it.
struct Run {
    proxy: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn start_at(config_path: &Path) -> Run {
    let config = Config::load(Some(config_path), &NoEnv).expect("test config is valid");
    let listeners = Listeners::bind(&config).await.unwrap();
    let proxy = listeners.proxy_addr();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server::run(config, listeners, async {
            let _ = stop_rx.await;
        })
        .await
        .expect("gateway runs");
    });
    Run { proxy, stop, task }
}

impl Run {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("gateway stops in time")
            .unwrap();
    }
}

#[tokio::test]
async fn a_delete_made_while_the_gateway_was_stopped_is_found_at_its_next_start() {
    let fake = fake_smartlead::start(fake_smartlead::FakeConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db_path: PathBuf = dir.path().join("data").join("safedelete.db");
    let config_path = dir.path().join("safedelete.toml");
    let tables = account_tables(dir.path(), "1s", "");
    std::fs::write(
        &config_path,
        config_text(
            &fake.url(),
            &db_path,
            Extra {
                tables: &tables,
                ..Extra::default()
            },
        ),
    )
    .unwrap();

    let run = start_at(&config_path).await;
    wait_for_listings(&fake, 2).await;
    run.stop().await;

    delete_on_smartlead(&fake, 102).await;
    let run = start_at(&config_path).await;
    let rows = wait_for_bypass_rows(&db_path, 1).await;
    assert_eq!(rows[0].campaign_id, Some(102));
    let detail = rows[0].detail.as_deref().unwrap();
    assert!(
        detail.starts_with("campaign 102 \"Partners EU\" (status PAUSED)"),
        "{detail}"
    );
    run.stop().await;
}

#[tokio::test]
async fn a_failed_listing_reports_nothing_and_the_next_good_one_compares_with_the_last_good_one() {
    let fake = fake_smartlead::start(fake_smartlead::FakeConfig::default())
        .await
        .unwrap();
    let keys = tempfile::tempdir().unwrap();
    let tables = account_tables(keys.path(), "1s", "");
    let mut gw = Gateway::start_with(
        &fake.url(),
        Extra {
            tables: &tables,
            ..Extra::default()
        },
    )
    .await;
    wait_for_listings(&fake, 2).await;

    // SmartLead fails the listing (a 500, then a 401): that is no empty
    // account, and no campaign is reported.
    for status in [500, 401] {
        fake.fault(fake_smartlead::FaultRule {
            method: Some("GET".into()),
            path: "/api/v1/campaigns".into(),
            times: Some(2),
            fault: fake_smartlead::Fault {
                status: Some(status),
                ..Default::default()
            },
        });
    }
    delete_on_smartlead(&fake, 103).await;
    let seen = listings(&fake);
    wait_for_listings(&fake, seen + 4).await;
    assert!(bypass_rows(&gw.db_path).await.is_empty());

    // The first good listing after them finds the delete.
    let rows = wait_for_bypass_rows(&gw.db_path, 1).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].campaign_id, Some(103));
    gw.stop().await;
}
