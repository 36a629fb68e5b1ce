//! Tamper evidence on a trail written by real traffic: editing, deleting or
//! inserting a record with SQL is caught, and a checkpoint catches truncation.

mod common;

use common::*;
use http::Request;
use http_body_util::Full;
use safedelete::audit::chain::{self, Checkpoint, Problem};

async fn trail() -> (fake_smartlead::FakeHandle, Gateway) {
    let up = fake_smartlead::start(fake_smartlead::FakeConfig::with_leads(50))
        .await
        .unwrap();
    let mut gw = Gateway::start(&up.url()).await;
    for i in 0..12 {
        get(&gw.url(&format!(
            "/api/v1/campaigns/10{}?api_key=sl_test_key",
            i % 3 + 1
        )))
        .await;
    }
    let r = send(
        Request::delete(gw.url("/api/v1/campaigns/102?api_key=sl_test_key"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.header("x-safedelete-action"), Some("archived"));
    for _ in 0..5 {
        get(&gw.url("/api/v1/campaigns?api_key=sl_test_key")).await;
    }
    gw.stop().await;
    (up, gw)
}

async fn verify(gw: &Gateway, cp: Option<&Checkpoint>) -> chain::VerifyReport {
    let pool = safedelete::db::open_existing(&gw.store).await.unwrap();
    let report = chain::verify(&pool, cp).await.unwrap();
    pool.close().await;
    report
}

async fn sql(gw: &Gateway, statement: &str) {
    let pool = safedelete::db::open_existing(&gw.store).await.unwrap();
    sqlx::query(statement).execute(&pool).await.unwrap();
    pool.close().await;
}

#[tokio::test]
async fn an_untouched_trail_verifies() {
    let (_up, gw) = trail().await;
    let report = verify(&gw, None).await;
    assert_eq!(report.problem, None);
    assert_eq!(report.records, 18);
    let head = report.head.unwrap();
    assert_eq!(head.id, 18);
    let pool = safedelete::db::open_existing(&gw.store).await.unwrap();
    assert_eq!(chain::checkpoint(&pool).await.unwrap(), Some(head.clone()));
    pool.close().await;
    assert_eq!(verify(&gw, Some(&head)).await.problem, None);
    let parsed: Checkpoint = head.to_string().parse().unwrap();
    assert_eq!(parsed, head);
}

#[tokio::test]
async fn an_edited_record_is_named() {
    let (_up, gw) = trail().await;
    sql(&gw, "UPDATE audit_events SET status = 404 WHERE id = 7").await;
    sql(
        &gw,
        "UPDATE audit_events SET action = 'allowed' WHERE operation = 'delete_campaign'",
    )
    .await;
    assert_eq!(
        verify(&gw, None).await.problem,
        Some(Problem::Modified { id: 7 })
    );
}

#[tokio::test]
async fn a_deleted_record_is_named() {
    let (_up, gw) = trail().await;
    sql(&gw, "DELETE FROM audit_events WHERE id = 9").await;
    assert_eq!(
        verify(&gw, None).await.problem,
        Some(Problem::Deleted {
            after: 8,
            before: 10
        })
    );
}

#[tokio::test]
async fn an_inserted_record_is_named() {
    let (_up, gw) = trail().await;
    // A forged record slipped in as the newest, copying a real one's fields.
    sql(
        &gw,
        "INSERT INTO audit_events (id, time, request_id, method, path, query, operation, status, \
         bytes_in, bytes_out, duration_ms, prev_hash, hash) \
         SELECT 19, time, 'forged', method, path, query, operation, status, bytes_in, bytes_out, \
         duration_ms, prev_hash, hash FROM audit_events WHERE id = 18",
    )
    .await;
    let problem = verify(&gw, None).await.problem;
    assert!(
        matches!(
            problem,
            Some(Problem::Modified { id: 19 }) | Some(Problem::Inserted { id: 19 })
        ),
        "{problem:?}"
    );
}

#[tokio::test]
async fn truncation_is_caught_by_a_checkpoint() {
    let (_up, gw) = trail().await;
    let head = verify(&gw, None).await.head.unwrap();
    sql(&gw, "DELETE FROM audit_events WHERE id > 15").await;
    // The shorter chain is still internally consistent...
    assert_eq!(verify(&gw, None).await.problem, None);
    // ...but it no longer reaches the checkpoint the operator kept.
    assert_eq!(
        verify(&gw, Some(&head)).await.problem,
        Some(Problem::CheckpointMissing { checkpoint: head })
    );
}

#[tokio::test]
async fn a_rewritten_tail_is_caught_by_a_checkpoint() {
    let (_up, gw) = trail().await;
    let head = verify(&gw, None).await.head.unwrap();
    sql(&gw, "UPDATE audit_events SET hash = 'x' WHERE id = 18").await;
    let problem = verify(&gw, Some(&head)).await.problem;
    assert!(
        matches!(problem, Some(Problem::Modified { id: 18 })),
        "{problem:?}"
    );
}

#[tokio::test]
async fn writers_keep_one_chain_after_a_restart() {
    let (up, gw) = trail().await;
    // A second gateway on the same database extends the same chain.
    let dir = gw.dir.path().to_path_buf();
    let config_path = dir.join("second.toml");
    std::fs::write(
        &config_path,
        config_text_for(&up.url(), &database_toml(&gw.store), Extra::default()),
    )
    .unwrap();
    let config =
        safedelete::config::Config::load(Some(&config_path), &safedelete::config::NoEnv).unwrap();
    let listeners = safedelete::server::Listeners::bind(&config).await.unwrap();
    let addr = listeners.proxy_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(safedelete::server::run(config, listeners, async {
        let _ = rx.await;
    }));
    for _ in 0..3 {
        let _ = client()
            .request(
                Request::get(format!(
                    "http://{addr}/api/v1/campaigns?api_key=sl_test_key"
                ))
                .body(Full::default())
                .unwrap(),
            )
            .await;
    }
    let _ = tx.send(());
    task.await.unwrap().unwrap();
    let report = verify(&gw, None).await;
    assert_eq!(report.problem, None);
    assert_eq!(report.records, 21);
}

#[tokio::test]
async fn hashes_set_to_null_are_caught() {
    let (_up, gw) = trail().await;
    sql(
        &gw,
        "UPDATE audit_events SET hash = NULL, prev_hash = NULL, status = 999",
    )
    .await;
    assert_eq!(
        verify(&gw, None).await.problem,
        Some(Problem::Inserted { id: 1 })
    );
}

#[tokio::test]
async fn a_record_forged_before_the_first_is_caught() {
    let (_up, gw) = trail().await;
    sql(
        &gw,
        "INSERT INTO audit_events (id, time, request_id, method, path, operation, status, \
         bytes_in, bytes_out, duration_ms) \
         VALUES (0, '2020-01-01T00:00:00.000Z', 'forged', 'DELETE', '/api/v1/campaigns/1', \
         'delete_campaign', 200, 0, 0, 1.0)",
    )
    .await;
    assert_eq!(
        verify(&gw, None).await.problem,
        Some(Problem::Inserted { id: 0 })
    );
}

#[tokio::test]
async fn a_record_inserted_in_the_middle_is_caught() {
    let (_up, gw) = trail().await;
    // Make room by shifting the tail, then slip a forged copy into the gap.
    sql(&gw, "UPDATE audit_events SET id = id + 100 WHERE id > 10").await;
    sql(
        &gw,
        "INSERT INTO audit_events (id, time, request_id, method, path, operation, status, \
         bytes_in, bytes_out, duration_ms, prev_hash, hash) \
         SELECT 11, time, 'forged', method, path, operation, status, bytes_in, bytes_out, \
         duration_ms, hash, hash FROM audit_events WHERE id = 10",
    )
    .await;
    let problem = verify(&gw, None).await.problem;
    assert!(
        matches!(
            problem,
            Some(Problem::Modified { id: 11 }) | Some(Problem::Inserted { id: 11 })
        ),
        "{problem:?}"
    );
}
