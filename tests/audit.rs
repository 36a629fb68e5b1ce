//! Every request leaves one audit row with the key redacted; the admin
//! listener reports health, readiness and metrics; shutdown drains in-flight
//! requests and flushes the trail.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use fake_smartlead::{Fault, FaultRule};
use http::Request;
use http_body_util::Full;

const DISTINCT_KEY: &str = "sl_test_key";

async fn fake() -> fake_smartlead::FakeHandle {
    fake_smartlead::start(fake_smartlead::FakeConfig::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn every_request_leaves_one_audit_row_with_the_key_redacted() {
    let up = fake().await;
    let gw = Gateway::start(&up.url()).await;
    let a = send(
        Request::get(gw.url("/api/v1/campaigns/101/leads?offset=0&api_key=sl_test_key&limit=10"))
            .header("user-agent", "audit-test/1.0")
            .header("x-request-id", "req-audit-1")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 200);
    let b = send(
        Request::post(gw.url("/api/v1/campaigns/create?api_key=sl_test_key"))
            .body(Full::new(Bytes::from_static(br#"{"name":"Audit me"}"#)))
            .unwrap(),
    )
    .await;
    assert_eq!(b.status, 200);
    let c = get(&gw.url("/api/v1/campaigns/999?api_key=wrong-key")).await;
    assert_eq!(c.status, 401);
    let mut gw = gw;
    gw.stop().await;
    let rows = audit_rows(&gw.store).await;
    assert_eq!(rows.len(), 3);

    let r = &rows[0];
    assert_eq!(r.request_id, "req-audit-1");
    assert_eq!(r.method, "GET");
    assert_eq!(r.path, "/api/v1/campaigns/101/leads");
    assert_eq!(
        r.query.as_deref(),
        Some("offset=0&api_key=[REDACTED]&limit=10")
    );
    assert_eq!(
        r.actor_fingerprint.as_deref(),
        Some(safedelete::audit::redact::fingerprint(DISTINCT_KEY).as_str())
    );
    assert_eq!(r.user_agent.as_deref(), Some("audit-test/1.0"));
    assert_eq!(r.client_addr.as_deref(), Some("127.0.0.1"));
    assert_eq!(r.operation, "passthrough");
    assert_eq!(r.campaign_id, Some(101));
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_status, Some(200));
    assert_eq!(r.bytes_out as usize, a.body.len());
    assert!(r.duration_ms > 0.0);
    assert_eq!(r.error_kind, None);

    let r = &rows[1];
    assert_eq!(r.method, "POST");
    assert_eq!(r.bytes_in, br#"{"name":"Audit me"}"#.len() as i64);
    assert_eq!(r.campaign_id, None);

    let r = &rows[2];
    assert_eq!(r.status, 401);
    assert_eq!(r.upstream_status, Some(401));
    assert_ne!(rows[0].actor_fingerprint, r.actor_fingerprint);
}

#[tokio::test]
async fn each_request_on_one_connection_is_fingerprinted_by_its_own_key() {
    let up = fake().await;
    let gw = Gateway::start(&up.url()).await;
    let stream = tokio::net::TcpStream::connect(gw.proxy).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let keys = [DISTINCT_KEY, "another_key_42", DISTINCT_KEY];
    for key in keys {
        sender.ready().await.unwrap();
        let req = Request::get(format!("/api/v1/campaigns/101?api_key={key}"))
            .header("host", gw.proxy.to_string())
            .body(Full::<Bytes>::default())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        // Read the body so the connection is free for the next request.
        http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap();
    }
    let mut gw = gw;
    gw.stop().await;
    let rows = audit_rows(&gw.store).await;
    let got: Vec<_> = rows.iter().map(|r| r.actor_fingerprint.clone()).collect();
    let want: Vec<_> = keys
        .iter()
        .map(|k| Some(safedelete::audit::redact::fingerprint(k)))
        .collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn admin_reports_health_readiness_and_metrics() {
    let up = fake().await;
    // One worker, so one upstream pool: the connection count below is exact.
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            top: "workers = 1",
            ..Extra::default()
        },
    )
    .await;
    let health = get(&gw.admin_url("/healthz")).await;
    assert_eq!(health.status, 200);
    let ready = get(&gw.admin_url("/readyz")).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["status"], "ready");

    for _ in 0..3 {
        get(&gw.url("/api/v1/campaigns?api_key=sl_test_key")).await;
    }
    get(&gw.url("/api/v1/campaigns/424242?api_key=sl_test_key")).await;
    send(
        // Outside /api/, so a plain forwarded DELETE, not a guarded one.
        Request::delete(gw.url("/v2/things/1?api_key=sl_test_key"))
            .body(Full::new(Bytes::from_static(br#"{"id":987654}"#)))
            .unwrap(),
    )
    .await;
    gw.wait_for_audit_rows(5).await;
    let metrics = get(&gw.admin_url("/metrics")).await;
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    assert!(
        text.contains("safedelete_requests_total{method=\"GET\",status_class=\"2xx\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("safedelete_requests_total{method=\"GET\",status_class=\"4xx\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("safedelete_requests_total{method=\"DELETE\",status_class=\"4xx\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("safedelete_upstream_latency_seconds_count 5"),
        "{text}"
    );
    assert!(
        text.contains("safedelete_upstream_connections 1"),
        "keep-alive pool: {text}"
    );
    assert!(text.contains("safedelete_audit_queue_depth 0"), "{text}");
    assert!(text.contains("safedelete_audit_dropped_total 0"), "{text}");
    assert!(text.contains("safedelete_audit_written_total 5"), "{text}");
    assert!(!text.contains(DISTINCT_KEY));
}

#[tokio::test]
async fn shutdown_finishes_a_request_in_flight_and_flushes_the_trail() {
    let up = fake_smartlead::start(fake_smartlead::FakeConfig::with_leads(400))
        .await
        .unwrap();
    up.fault(FaultRule {
        method: Some("GET".into()),
        path: "/api/v1/campaigns/*/leads-export".into(),
        times: None,
        fault: Fault {
            delay: Some(Duration::from_millis(300)),
            chunk_delay: Some(Duration::from_millis(30)),
            ..Fault::default()
        },
    });
    let mut gw = Gateway::start(&up.url()).await;
    let url = gw.url("/api/v1/campaigns/101/leads-export?api_key=sl_test_key");
    let in_flight = tokio::spawn(async move { get(&url).await });
    // Wait until the request reached SmartLead, then ask the gateway to stop.
    for _ in 0..100 {
        if !up.requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gw.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // No new connections once shutdown began.
    let refused = tokio::net::TcpStream::connect(gw.proxy).await;
    assert!(
        refused.is_err(),
        "the listener still accepts after shutdown began"
    );
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, up.expected_leads_csv(101));
    let db = gw.store.clone();
    let summary = gw.stop().await;
    assert_eq!(summary.connections_cut, 0);
    let rows = audit_rows(&db).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, 200);
    assert_eq!(rows[0].bytes_out as usize, reply.body.len());
    assert_eq!(rows[0].error_kind, None);
}

#[tokio::test]
async fn readiness_fails_while_draining() {
    let up = fake().await;
    up.fault(FaultRule {
        method: None,
        path: "/api/v1/campaigns".into(),
        times: None,
        fault: Fault {
            delay: Some(Duration::from_millis(800)),
            ..Fault::default()
        },
    });
    let mut gw = Gateway::start(&up.url()).await;
    let url = gw.url("/api/v1/campaigns?api_key=sl_test_key");
    let in_flight = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // An admin connection opened before shutdown can still ask.
    let admin = gw.admin_url("/readyz");
    gw.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ready = tokio::time::timeout(Duration::from_secs(2), async {
        client()
            .request(Request::get(admin).body(Full::default()).unwrap())
            .await
    })
    .await;
    let resp = ready
        .expect("the admin listener answers while draining")
        .expect("admin request");
    assert_eq!(resp.status(), 503);
    assert_eq!(in_flight.await.unwrap().status, 200);
    gw.stop().await;
}

#[tokio::test]
async fn connections_left_when_the_grace_period_ends_are_cut_and_recorded() {
    let up = fake_smartlead::start(fake_smartlead::FakeConfig::with_leads(400))
        .await
        .unwrap();
    up.fault(FaultRule {
        method: Some("GET".into()),
        path: "/api/v1/campaigns/*/leads-export".into(),
        times: None,
        fault: Fault {
            chunk_delay: Some(Duration::from_millis(500)),
            ..Fault::default()
        },
    });
    let mut gw = Gateway::start_with(
        &up.url(),
        Extra {
            top: "shutdown_grace = \"300ms\"\n",
            ..Extra::default()
        },
    )
    .await;
    let resp = client()
        .request(
            Request::get(gw.url("/api/v1/campaigns/101/leads-export?api_key=sl_test_key"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let download = tokio::spawn(http_body_util::BodyExt::collect(resp.into_body()));
    let summary = gw.stop().await;
    assert_eq!(summary.connections_cut, 1);
    assert!(
        download.await.unwrap().is_err(),
        "the cut download must not look complete"
    );
    let rows = audit_rows(&gw.store).await;
    assert_eq!(rows.len(), 1, "the cut request was not recorded");
    assert_eq!(rows[0].error_kind.as_deref(), Some("shutting_down"));
}

#[tokio::test]
async fn a_full_audit_queue_drops_records_without_slowing_traffic() {
    let up = fake().await;
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            tables: "[audit]\nqueue_capacity = 2\nbatch_max = 1\n",
            ..Extra::default()
        },
    )
    .await;
    get(&gw.url("/api/v1/campaigns?api_key=sl_test_key")).await;
    gw.wait_for_audit_rows(1).await;
    // Hold the database's write lock (PostgreSQL: the chain's) so the
    // writer blocks.
    let pool = safedelete::db::open_existing(&gw.store).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    match safedelete::db::Backend::of(&pool) {
        safedelete::db::Backend::Sqlite => {
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut *conn)
                .await
                .unwrap();
        }
        safedelete::db::Backend::Postgres => {
            sqlx::query("BEGIN").execute(&mut *conn).await.unwrap();
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(safedelete::audit::writer::CHAIN_LOCK)
                .execute(&mut *conn)
                .await
                .unwrap();
        }
    }
    let started = std::time::Instant::now();
    for _ in 0..20 {
        let r = get(&gw.url("/api/v1/campaigns?api_key=sl_test_key")).await;
        assert_eq!(r.status, 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "traffic waited for the audit writer"
    );
    let dropped = metric(&gw, "safedelete_audit_dropped_total").await;
    assert!(dropped >= 15.0, "dropped {dropped}");
    sqlx::query("ROLLBACK").execute(&mut *conn).await.unwrap();
    drop(conn);
    pool.close().await;
    // What was queued is written once the lock is gone: every request is
    // either in the trail or counted as dropped.
    // either in the trail or counted as dropped, and the trail says so.
    let mut accounted = 0.0;
    let mut rows = Vec::new();
    for _ in 0..200 {
        rows = audit_rows(&gw.store).await;
        let requests = rows.iter().filter(|r| r.operation != "audit_gap").count();
        accounted = requests as f64 + dropped;
        if accounted >= 21.0 && rows.iter().any(|r| r.operation == "audit_gap") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(accounted, 21.0);
    let gap = rows.iter().find(|r| r.operation == "audit_gap").unwrap();
    assert_eq!(gap.error_kind.as_deref(), Some("audit_lost"));
    let pool = safedelete::db::open_existing(&gw.store).await.unwrap();
    let detail: String = sqlx::query_scalar("SELECT detail FROM audit_events WHERE id = $1")
        .bind(gap.id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        detail.starts_with(&format!("{dropped} audit records lost between "))
            && detail.ends_with("the audit queue was full"),
        "{detail}"
    );
}

#[tokio::test]
async fn the_admin_token_guards_metrics_but_not_health() {
    let up = fake().await;
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            admin: "token = \"admin-token-0123456789\"\n",
            ..Extra::default()
        },
    )
    .await;
    assert_eq!(get(&gw.admin_url("/healthz")).await.status, 200);
    assert_eq!(get(&gw.admin_url("/readyz")).await.status, 200);
    assert_eq!(get(&gw.admin_url("/metrics")).await.status, 401);
    let wrong = send(
        Request::get(gw.admin_url("/metrics"))
            .header("authorization", "Bearer admin-token-0123456788")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(wrong.status, 401);
    let right = send(
        Request::get(gw.admin_url("/metrics"))
            .header("authorization", "Bearer admin-token-0123456789")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(right.status, 200);
    assert!(String::from_utf8_lossy(&right.body).contains("safedelete_requests_in_flight"));
    // The scheme is case-insensitive (RFC 7235).
    let lower = send(
        Request::get(gw.admin_url("/metrics"))
            .header("authorization", "bearer admin-token-0123456789")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(lower.status, 200);
}

#[tokio::test]
async fn with_passthrough_off_only_guarded_requests_are_recorded() {
    let up = fake().await;
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            tables: "[audit]\npassthrough = false\n",
            ..Extra::default()
        },
    )
    .await;
    for _ in 0..3 {
        let r = get(&gw.url("/api/v1/campaigns/101?api_key=sl_test_key")).await;
        assert_eq!(r.status, 200);
    }
    let deleted = send(
        Request::delete(gw.url("/api/v1/campaigns/102?api_key=sl_test_key"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(deleted.header("x-safedelete-action"), Some("archived"));
    let mut gw = gw;
    let summary = gw.stop().await;
    let rows = audit_rows(&gw.store).await;
    assert_eq!(rows.len(), 1, "only the guarded delete: {rows:?}");
    assert_eq!(rows[0].method, "DELETE");
    assert_eq!(rows[0].operation, "campaign.delete");
    assert_eq!(rows[0].campaign_id, Some(102));
    assert_eq!(summary.audit_records_written, 1);
}
