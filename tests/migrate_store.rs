//! `safedelete migrate-store` from a SQLite store a gateway wrote (a
//! 50,000-lead snapshot and 100,000 audit records) into a PostgreSQL
//! database: copied, verified, resumable after a kill, and refused into a
//! store that is not empty. Skipped (saying so) without
//! `SAFEDELETE_TEST_POSTGRES_URL`.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;

use common::process::*;
use common::*;
use fake_smartlead::FakeConfig;
use http::Request;
use http_body_util::Full;
use safedelete::audit::{AuditRecord, AuditWriter, OperationKind};
use safedelete::db::Location;

const AUDIT_RECORDS: usize = 100_000;

fn migrate(from: &str, to: &str) -> std::process::Output {
    Command::new(BIN)
        .args(["migrate-store", "--from", from, "--to", to])
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_store_moves_to_postgres_verified_and_resumably() {
    let Some(db) = postgres::database().await else {
        return;
    };
    // A gateway captures a 50,000-lead campaign into SQLite.
    let up = fake_smartlead::start(FakeConfig::with_leads(50_000))
        .await
        .unwrap();
    let mut gw = Gateway::start(&up.url()).await;
    let reply = send(
        Request::delete(gw.url(&format!("/api/v1/campaigns/101?api_key={KEY}")))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    gw.stop().await;
    let sqlite = gw.db_path.clone();
    // And 100,000 more audit records, chained by the writer.
    let store = Location::Sqlite(sqlite.clone());
    let metrics = Arc::new(safedelete::metrics::Metrics::default());
    let (sink, writer) = AuditWriter::spawn(&store, 200_000, 1_000, metrics).unwrap();
    for i in 0..AUDIT_RECORDS {
        let mut r = AuditRecord::empty(OperationKind::Passthrough);
        r.path = format!("/api/v1/campaigns/{}", i % 500);
        r.campaign_id = Some((i % 500) as i64);
        sink.submit(r);
    }
    assert_eq!(writer.close().await, AUDIT_RECORDS as u64);
    let from = sqlite.display().to_string();
    let source = stdout(
        &Command::new(BIN)
            .args(["audit", "verify"])
            .env("SAFEDELETE_DATABASE", &from)
            .output()
            .unwrap(),
    );
    let head = source
        .lines()
        .find_map(|l| l.strip_prefix("newest: "))
        .unwrap()
        .to_string();

    // Killed part-way through the audit trail...
    let mut first = Command::new(BIN)
        .args(["migrate-store", "--from", &from, "--to", &db.url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let target_store: Location = db.url.parse().unwrap();
    let mut partial = 0i64;
    for _ in 0..600 {
        // The schema is there once the copy has started.
        if let Ok(target) = safedelete::db::open_read_only(&target_store).await {
            partial = sqlx::query_scalar("SELECT COUNT(*) FROM audit_events")
                .fetch_one(&target)
                .await
                .unwrap_or(0);
            target.close().await;
        }
        if partial > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let target = safedelete::db::open_existing(&target_store).await.unwrap();
    let partial: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_events")
        .fetch_one(&target)
        .await
        .unwrap();
    assert!(
        partial > 0 && partial < AUDIT_RECORDS as i64 + 1,
        "{partial} copied before the kill"
    );
    let chunks: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM snapshot_chunks")
        .fetch_one(&target)
        .await
        .unwrap();
    assert!(chunks > 0, "the snapshot was copied before the audit trail");

    // ...and run again: it resumes, finishes and verifies.
    let out = migrate(&from, &db.url);
    let said = stdout(&out);
    assert!(said.contains("Resumed the unfinished copy"), "{said}");
    let records = AUDIT_RECORDS + 1;
    assert!(
        said.contains(&format!(
            "audit chain: {records} records verified, newest {head}"
        )),
        "{said}"
    );
    assert!(
        said.contains("complete parts verified byte for byte"),
        "{said}"
    );
    let copied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_events")
        .fetch_one(&target)
        .await
        .unwrap();
    assert_eq!(copied, records as i64);

    // The copy is a store: the commands read it, and its snapshot exports
    // the same leads as the source's.
    let verified = stdout(
        &Command::new(BIN)
            .args(["audit", "verify"])
            .env("SAFEDELETE_DATABASE", &db.url)
            .output()
            .unwrap(),
    );
    assert!(verified.contains(&format!("newest: {head}")), "{verified}");
    let export = |database: &str| {
        let out = Command::new(BIN)
            .args(["snapshots", "export", "1", "--part", "leads_csv"])
            .env("SAFEDELETE_DATABASE", database)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        out.stdout
    };
    let leads = export(&db.url);
    assert_eq!(leads, export(&from));
    assert_eq!(leads.iter().filter(|&&b| b == b'\n').count(), 50_001);
    // New rows get new ids after the copied ones.
    let next: i64 = sqlx::query_scalar(
        "INSERT INTO restores (snapshot_id, name, leads_choice, state, operator, created_at, updated_at) \
         VALUES (1, 'n', 'all', 'done', 't', 'x', 'x') RETURNING id",
    )
    .fetch_one(&target)
    .await
    .unwrap();
    assert_eq!(next, 1);
    let next: i64 = sqlx::query_scalar(
        "INSERT INTO snapshots (operation, target, parts, state, created_at) \
         VALUES ('campaign.delete', 'campaign:9', '', 'failed', 'x') RETURNING id",
    )
    .fetch_one(&target)
    .await
    .unwrap();
    assert_eq!(next, 2, "the identity continues after the copied ids");
    target.close().await;

    // A store that is not empty is refused.
    let again = migrate(&from, &db.url);
    assert!(!again.status.success());
    let err = stderr(&again);
    assert!(
        err.contains("is not empty") && err.contains("only writes into an empty store"),
        "{err}"
    );
}
