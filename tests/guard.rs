//! The deletion guard end to end: a real gateway, the fake SmartLead (which
//! records what reached it), a real SQLite file. What matters is what reached
//! SmartLead and in which order, what the client got, and what was stored.

mod common;

use std::time::Duration;

use common::*;
use fake_smartlead::{FakeHandle, Fault, FaultRule, RecordedRequest};
use http::Request;
use http_body_util::Full;

const DELETE_101: &str = "/api/v1/campaigns/101?api_key=sl_test_key";

async fn fake(leads: usize) -> FakeHandle {
    fake_smartlead::start(fake_smartlead::FakeConfig::with_leads(leads))
        .await
        .unwrap()
}

async fn delete(gw: &Gateway, target: &str) -> Reply {
    send(
        Request::delete(gw.url(target))
            .body(Full::default())
            .unwrap(),
    )
    .await
}

/// Requests that change or destroy something on SmartLead.
fn destructive(r: &RecordedRequest) -> bool {
    r.method == "DELETE"
        || (r.path().ends_with("/status") && (r.method == "POST" || r.method == "PATCH"))
}

fn destructive_calls(up: &FakeHandle) -> Vec<RecordedRequest> {
    up.requests().into_iter().filter(destructive).collect()
}

/// How many leads exports reached SmartLead.
fn export_requests(up: &FakeHandle) -> usize {
    up.requests()
        .iter()
        .filter(|r| r.path().ends_with("/leads-export"))
        .count()
}

fn index_of(up: &FakeHandle, pred: impl Fn(&RecordedRequest) -> bool) -> Option<usize> {
    up.requests().iter().position(pred)
}

const PART_ROUTES: [&str; 5] = [
    "/leads-export",
    "/sequences",
    "/email-accounts",
    "/webhooks",
    "/analytics",
];

#[derive(Debug, sqlx::FromRow)]
struct OperationRow {
    state: String,
    action: Option<String>,
    rule: Option<String>,
    policy_revision: Option<String>,
    snapshot_id: Option<i64>,
    error: Option<String>,
    actor_label: Option<String>,
}

async fn operations(gw: &Gateway) -> Vec<OperationRow> {
    let pool = safedelete::db::open_existing(&gw.store).await.unwrap();
    let rows = sqlx::query_as::<_, OperationRow>(
        "SELECT state, action, rule, policy_revision, snapshot_id, error, actor_label FROM operations ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows
}

async fn snapshot_state(gw: &Gateway, id: i64) -> (String, Vec<(String, String)>) {
    let pool = safedelete::db::open_existing(&gw.store).await.unwrap();
    let info = safedelete::snapshot::store::get_snapshot(&pool, id)
        .await
        .unwrap();
    pool.close().await;
    (
        info.state,
        info.parts.into_iter().map(|p| (p.kind, p.state)).collect(),
    )
}

async fn export_leads(gw: &Gateway, id: i64) -> Vec<u8> {
    let pool = safedelete::db::open_existing(&gw.store).await.unwrap();
    let mut out = Vec::new();
    safedelete::snapshot::store::export_part(
        &pool,
        id,
        safedelete::snapshot::store::PartKind::LeadsCsv,
        &mut out,
    )
    .await
    .unwrap();
    pool.close().await;
    out
}

#[tokio::test]
async fn by_default_a_delete_is_archived_after_the_data_is_captured() {
    let up = fake(1_500).await;
    let expected_csv = up.expected_leads_csv(101);
    let gw = Gateway::start(&up.url()).await;
    let reply = delete(&gw, DELETE_101).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let body = reply.json();
    assert_eq!(body["success"], true);
    assert_eq!(body["ok"], true);
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("archived instead of deleted"));
    assert_eq!(reply.header("x-safedelete-action"), Some("archived"));
    let snapshot_id: i64 = reply
        .header("x-safedelete-snapshot-id")
        .unwrap()
        .parse()
        .unwrap();
    assert!(reply.header("x-safedelete-audit-id").is_some());

    // Nothing was deleted; the campaign is archived.
    assert!(up.requests().iter().all(|r| r.method != "DELETE"));
    assert_eq!(up.campaign(101).unwrap()["status"], "ARCHIVED");
    let calls = destructive_calls(&up);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].method, "PATCH");
    assert_eq!(&calls[0].body[..], br#"{"status":"ARCHIVED"}"#);
    // Every part was read before the archive.
    let archive_at = index_of(&up, destructive).unwrap();
    for route in PART_ROUTES {
        let at = index_of(&up, |r| r.method == "GET" && r.path().ends_with(route))
            .unwrap_or_else(|| panic!("{route} was never read"));
        assert!(at < archive_at, "{route} read after the archive");
    }
    let (state, parts) = snapshot_state(&gw, snapshot_id).await;
    assert_eq!(state, "complete");
    assert_eq!(parts.len(), 6);
    assert!(parts.iter().all(|(_, s)| s == "complete"));
    assert!(
        export_leads(&gw, snapshot_id).await == expected_csv,
        "the stored export differs from what SmartLead served"
    );

    let ops = operations(&gw).await;
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].state, "done");
    assert_eq!(ops[0].action.as_deref(), Some("archive"));
    assert_eq!(ops[0].rule, None);
    assert_eq!(ops[0].policy_revision.as_ref().unwrap().len(), 64);
    assert_eq!(ops[0].snapshot_id, Some(snapshot_id));
    assert_eq!(ops[0].actor_label.as_deref(), Some("unknown"));
    let rows = gw.wait_for_audit_rows(1).await;
    let row = rows.iter().find(|r| r.method == "DELETE").unwrap();
    assert_eq!(row.operation, "campaign.delete");
    assert_eq!(row.status, 200);
    assert_eq!(row.campaign_id, Some(101));
}

#[tokio::test]
async fn allow_stores_every_part_before_the_one_delete_and_relays_smartlead() {
    let up = fake(500).await;
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            tables: "[policy]\ndefault = \"allow\"\n",
            ..Extra::default()
        },
    )
    .await;
    let reply = delete(&gw, DELETE_101).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json(),
        serde_json::json!({"ok": true}),
        "SmartLead's own answer"
    );
    assert_eq!(reply.header("x-safedelete-action"), Some("allowed"));
    let snapshot_id: i64 = reply
        .header("x-safedelete-snapshot-id")
        .unwrap()
        .parse()
        .unwrap();
    let deletes: Vec<_> = up
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .collect();
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].target, DELETE_101);
    let delete_at = index_of(&up, |r| r.method == "DELETE").unwrap();
    for route in PART_ROUTES {
        let at = index_of(&up, |r| r.method == "GET" && r.path().ends_with(route)).unwrap();
        assert!(at < delete_at, "{route} read after the delete");
    }
    assert!(
        up.campaign(101).is_none(),
        "the campaign was really deleted"
    );
    let (state, _) = snapshot_state(&gw, snapshot_id).await;
    assert_eq!(state, "complete");
    assert_eq!(operations(&gw).await[0].state, "done");
}

#[tokio::test]
async fn deny_answers_403_naming_the_rule_and_touches_nothing() {
    let up = fake(50).await;
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            tables: "[[policy.rules]]\nname = \"protect-q1\"\naction = \"deny\"\ncampaign_ids = [101]\n",
            ..Extra::default()
        },
    )
    .await;
    let reply = delete(&gw, DELETE_101).await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.header("x-safedelete-action"), Some("denied"));
    let body = reply.json();
    assert_eq!(body["success"], false);
    assert!(
        body["error"].as_str().unwrap().contains("protect-q1"),
        "{body}"
    );
    assert!(destructive_calls(&up).is_empty());
    assert!(up.campaign(101).is_some());
    let ops = operations(&gw).await;
    assert_eq!(ops[0].state, "denied");
    assert_eq!(ops[0].rule.as_deref(), Some("protect-q1"));
    // Campaign 102 falls to the default (archive).
    let other = delete(&gw, "/api/v1/campaigns/102?api_key=sl_test_key").await;
    assert_eq!(other.header("x-safedelete-action"), Some("archived"));
}

/// Runs one failure case: the client gets a 5xx that says nothing was
/// deleted, nothing destructive reached SmartLead, and the operation records
/// the failure.
async fn fails_closed(gw: &Gateway, up: &FakeHandle, expected_state: &str) -> serde_json::Value {
    let reply = delete(gw, DELETE_101).await;
    assert!(
        reply.status.is_server_error(),
        "{}: {:?}",
        reply.status,
        reply.body
    );
    assert_eq!(reply.header("x-safedelete-action"), Some("refused"));
    let body = reply.json();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Nothing was deleted"),
        "{body}"
    );
    assert!(
        destructive_calls(up).is_empty(),
        "{:?}",
        destructive_calls(up)
    );
    assert!(up.campaign(101).is_some());
    let ops = operations(gw).await;
    assert_eq!(ops.last().unwrap().state, expected_state, "{ops:?}");
    assert!(ops.last().unwrap().error.is_some());
    if let Some(id) = ops.last().unwrap().snapshot_id {
        let (state, _) = snapshot_state(gw, id).await;
        assert_ne!(state, "complete");
    }
    body
}

fn fault(path: &str, fault: Fault) -> FaultRule {
    FaultRule {
        method: Some("GET".into()),
        path: path.into(),
        times: None,
        fault,
    }
}

async fn guarded_gateway(up: &FakeHandle, budget: &str) -> Gateway {
    let tables = format!("[guard]\nsnapshot_budget = \"{budget}\"\n");
    Gateway::start_with(
        &up.url(),
        Extra {
            tables: Box::leak(tables.into_boxed_str()),
            ..Extra::default()
        },
    )
    .await
}

#[tokio::test]
async fn a_failing_campaign_read_fails_closed() {
    let up = fake(20).await;
    up.fault(fault(
        "/api/v1/campaigns/101",
        Fault {
            status: Some(500),
            ..Fault::default()
        },
    ));
    let gw = guarded_gateway(&up, "3s").await;
    let body = fails_closed(&gw, &up, "upstream_failed").await;
    assert_eq!(body["error_kind"], "facts_failed");
}

#[tokio::test]
async fn an_export_that_keeps_failing_fails_closed() {
    let up = fake(20).await;
    up.fault(fault(
        "/api/v1/campaigns/101/leads-export",
        Fault {
            status: Some(500),
            ..Fault::default()
        },
    ));
    // A budget far longer than the test: the same 500 three times in a row
    // is not worth waiting for.
    let gw = guarded_gateway(&up, "60s").await;
    let started = std::time::Instant::now();
    let body = fails_closed(&gw, &up, "snapshot_failed").await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "refused after {:?}, not at once",
        started.elapsed()
    );
    assert_eq!(body["error_kind"], "snapshot_failed");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("leads_csv") && message.contains("500") && message.contains("3 times"),
        "{message}"
    );
    assert_eq!(export_requests(&up), 3, "tried three times, no more");
}

#[tokio::test]
async fn a_part_smartlead_refuses_with_403_or_404_is_refused_at_once() {
    for (route, status) in [("/sequences", 403), ("/leads-export", 404)] {
        let up = fake(20).await;
        up.fault(fault(
            &format!("/api/v1/campaigns/101{route}"),
            Fault {
                status: Some(status),
                ..Fault::default()
            },
        ));
        let gw = guarded_gateway(&up, "60s").await;
        let started = std::time::Instant::now();
        let body = fails_closed(&gw, &up, "snapshot_failed").await;
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(body["error_kind"], "snapshot_failed");
        let message = body["message"].as_str().unwrap();
        let part = route.trim_start_matches('/').replace('-', "_");
        let part = if part == "leads_export" {
            "leads_csv".to_string()
        } else {
            part
        };
        assert!(
            message.contains(&part) && message.contains(&status.to_string()),
            "{message}"
        );
        let tries = up
            .requests()
            .iter()
            .filter(|r| r.path().ends_with(route))
            .count();
        assert_eq!(tries, 1, "{status} on {route} is not retried");
    }
}

#[tokio::test]
async fn a_rate_limit_beyond_the_budget_fails_closed() {
    let up = fake(20).await;
    up.fault(fault(
        "/api/v1/campaigns/101/leads-export",
        Fault {
            status: Some(429),
            retry_after: Some(30),
            ..Fault::default()
        },
    ));
    let gw = guarded_gateway(&up, "2s").await;
    let started = std::time::Instant::now();
    fails_closed(&gw, &up, "snapshot_failed").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a Retry-After past the budget gives up at once"
    );
}

#[tokio::test]
async fn a_short_rate_limit_is_waited_out() {
    let up = fake(20).await;
    up.fault(FaultRule {
        times: Some(1),
        ..fault(
            "/api/v1/campaigns/101/leads-export",
            Fault {
                status: Some(429),
                retry_after: Some(1),
                ..Fault::default()
            },
        )
    });
    let gw = guarded_gateway(&up, "10s").await;
    let started = std::time::Instant::now();
    let reply = delete(&gw, DELETE_101).await;
    assert_eq!(reply.status, 200);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was not honoured"
    );
}

#[tokio::test]
async fn an_export_dropped_mid_body_fails_closed() {
    let up = fake(3_000).await;
    up.fault(fault(
        "/api/v1/campaigns/101/leads-export",
        Fault {
            drop_after_bytes: Some(20_000),
            ..Fault::default()
        },
    ));
    let gw = guarded_gateway(&up, "2s").await;
    fails_closed(&gw, &up, "snapshot_failed").await;
}

#[tokio::test]
async fn an_export_slower_than_the_budget_fails_closed() {
    let up = fake(3_000).await;
    up.fault(fault(
        "/api/v1/campaigns/101/leads-export",
        Fault {
            chunk_delay: Some(Duration::from_millis(300)),
            ..Fault::default()
        },
    ));
    let gw = guarded_gateway(&up, "1500ms").await;
    let started = std::time::Instant::now();
    fails_closed(&gw, &up, "snapshot_failed").await;
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn a_database_that_refuses_writes_fails_closed() {
    let up = fake(200).await;
    let gw = guarded_gateway(&up, "5s").await;
    // A real write failure inside the database: every chunk insert is refused.
    let pool = safedelete::db::open_existing(&gw.store).await.unwrap();
    let refuse: &[&str] = match safedelete::db::Backend::of(&pool) {
        safedelete::db::Backend::Sqlite => &[
            "CREATE TRIGGER refuse_chunks BEFORE INSERT ON snapshot_chunks \
             BEGIN SELECT RAISE(ABORT, 'disk full'); END",
        ],
        safedelete::db::Backend::Postgres => &[
            "CREATE FUNCTION refuse_chunks() RETURNS trigger LANGUAGE plpgsql \
             AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$",
            "CREATE TRIGGER refuse_chunks BEFORE INSERT ON snapshot_chunks \
             FOR EACH ROW EXECUTE FUNCTION refuse_chunks()",
        ],
    };
    for statement in refuse {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    pool.close().await;
    let body = fails_closed(&gw, &up, "snapshot_failed").await;
    assert_eq!(body["error_kind"], "storage_failed");
}

#[tokio::test]
async fn when_every_archive_attempt_fails_nothing_is_deleted() {
    let up = fake(20).await;
    up.fault(FaultRule {
        method: None,
        path: "/api/v1/campaigns/101/status".into(),
        times: None,
        fault: Fault {
            status: Some(500),
            ..Fault::default()
        },
    });
    let gw = guarded_gateway(&up, "5s").await;
    let reply = delete(&gw, DELETE_101).await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.json()["error_kind"], "archive_failed");
    assert!(reply.json()["message"]
        .as_str()
        .unwrap()
        .contains("Nothing was deleted"));
    // Both attempts were made (each retried), in order; nothing was deleted.
    let mut attempts: Vec<String> = up
        .requests()
        .iter()
        .filter(|r| r.path().ends_with("/status"))
        .map(|r| r.method.clone())
        .collect();
    assert_eq!(attempts.len(), 6, "{attempts:?}");
    attempts.dedup();
    assert_eq!(attempts, vec!["PATCH", "POST"]);
    assert!(up.requests().iter().all(|r| r.method != "DELETE"));
    assert_eq!(operations(&gw).await[0].state, "upstream_failed");
    // The snapshot is complete even though the archive failed.
    let id = operations(&gw).await[0].snapshot_id.unwrap();
    assert_eq!(snapshot_state(&gw, id).await.0, "complete");
}

#[tokio::test]
async fn a_missing_campaign_is_relayed_as_smartlead_said() {
    let up = fake(20).await;
    let gw = Gateway::start(&up.url()).await;
    let reply = delete(&gw, "/api/v1/campaigns/424242?api_key=sl_test_key").await;
    assert_eq!(reply.status, 404);
    assert_eq!(
        reply.json()["error"],
        "Campaign not found - Invalid campaign_id."
    );
    let wrong_key = delete(&gw, "/api/v1/campaigns/101?api_key=nope").await;
    assert_eq!(wrong_key.status, 401);
    assert_eq!(wrong_key.json()["message"], "Invalid API Key");
    assert!(destructive_calls(&up).is_empty());
    assert_eq!(operations(&gw).await[0].state, "not_found");
}

#[tokio::test]
async fn twenty_concurrent_deletes_make_one_destructive_call() {
    let up = fake(500).await;
    up.fault(fault(
        "/api/v1/campaigns/101/leads-export",
        Fault {
            delay: Some(Duration::from_millis(800)),
            ..Fault::default()
        },
    ));
    let gw = Gateway::start(&up.url()).await;
    let url = gw.url(DELETE_101);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            send(Request::delete(url).body(Full::default()).unwrap()).await
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        let reply = t.await.unwrap();
        if reply.status == 409 {
            assert!(reply.header("retry-after").is_some());
            assert_eq!(reply.header("x-safedelete-action"), Some("refused"));
        }
        statuses.push(reply.status.as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        19,
        "{statuses:?}"
    );
    assert_eq!(destructive_calls(&up).len(), 1);
    assert_eq!(
        up.requests()
            .iter()
            .filter(|r| r.path().ends_with("/leads-export"))
            .count(),
        1
    );
}

#[tokio::test]
async fn shadow_rules_are_recorded_but_not_enforced() {
    let up = fake(20).await;
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            tables: "[[policy.rules]]\nname = \"would-deny-active\"\naction = \"deny\"\nmode = \"shadow\"\nstatuses = [\"ACTIVE\"]\n",
            ..Extra::default()
        },
    )
    .await;
    let reply = delete(&gw, DELETE_101).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-safedelete-action"), Some("archived"));
    assert_eq!(
        reply.json()["safedelete"]["would_action"],
        "would-deny-active=deny"
    );
    let rows = gw.wait_for_audit_rows(1).await;
    assert!(rows.iter().any(|r| r.method == "DELETE"));
}

#[tokio::test]
async fn actors_are_labelled_from_the_config() {
    use sha2::{Digest, Sha256};
    let up = fake(20).await;
    let sha: String = Sha256::digest(b"sl_test_key")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let tables = format!(
        "[[actors]]\nname = \"alice\"\nkey_sha256 = \"{sha}\"\n\n\
         [[policy.rules]]\nname = \"alice-may-delete\"\naction = \"allow\"\nactors = [\"alice\"]\n"
    );
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            tables: &tables,
            ..Extra::default()
        },
    )
    .await;
    let reply = delete(&gw, DELETE_101).await;
    assert_eq!(reply.header("x-safedelete-action"), Some("allowed"));
    let ops = operations(&gw).await;
    assert_eq!(ops[0].actor_label.as_deref(), Some("alice"));
    assert_eq!(ops[0].rule.as_deref(), Some("alice-may-delete"));
}

#[tokio::test]
async fn allow_with_stop_first_stops_the_campaign_before_deleting_it() {
    let up = fake(20).await;
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            tables: "[[policy.rules]]\nname = \"stop-then-delete\"\naction = \"allow\"\nstop_first = true\n",
            ..Extra::default()
        },
    )
    .await;
    let reply = delete(&gw, DELETE_101).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-safedelete-action"), Some("allowed"));
    let calls = destructive_calls(&up);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].method, "POST");
    assert_eq!(&calls[0].body[..], br#"{"status":"STOPPED"}"#);
    assert_eq!(calls[1].method, "DELETE");
}

#[tokio::test]
async fn snapshot_off_skips_the_capture() {
    let up = fake(20).await;
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            tables: "[[policy.rules]]\nname = \"drafts-go\"\naction = \"allow\"\nsnapshot = \"off\"\nallow_without_snapshot = true\nstatuses = [\"DRAFTED\"]\n",
            ..Extra::default()
        },
    )
    .await;
    let reply = delete(&gw, "/api/v1/campaigns/103?api_key=sl_test_key").await;
    assert_eq!(reply.header("x-safedelete-action"), Some("allowed"));
    assert!(reply.header("x-safedelete-snapshot-id").is_none());
    assert!(up
        .requests()
        .iter()
        .all(|r| !r.path().ends_with("/leads-export")));
    assert!(up.campaign(103).is_none());
}

#[tokio::test]
async fn the_archive_attempts_are_configurable() {
    let up = fake(20).await;
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            tables: "[guard]\narchive_attempts = [\"POST PAUSED\"]\n",
            ..Extra::default()
        },
    )
    .await;
    let reply = delete(&gw, DELETE_101).await;
    assert_eq!(reply.status, 200);
    let calls = destructive_calls(&up);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].method, "POST");
    assert_eq!(&calls[0].body[..], br#"{"status":"PAUSED"}"#);
    assert_eq!(up.campaign(101).unwrap()["status"], "PAUSED");
}

#[tokio::test]
async fn a_client_that_hangs_up_does_not_stop_the_operation() {
    let up = fake(500).await;
    up.fault(fault(
        "/api/v1/campaigns/101/leads-export",
        Fault {
            delay: Some(Duration::from_millis(500)),
            ..Fault::default()
        },
    ));
    let gw = Gateway::start(&up.url()).await;
    let impatient = tokio::time::timeout(Duration::from_millis(150), delete(&gw, DELETE_101)).await;
    assert!(impatient.is_err());
    for _ in 0..100 {
        if operations(&gw).await.first().map(|o| o.state.as_str()) == Some("done") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ops = operations(&gw).await;
    assert_eq!(ops[0].state, "done", "{ops:?}");
    assert_eq!(up.campaign(101).unwrap()["status"], "ARCHIVED");
    let rows = gw.wait_for_audit_rows(1).await;
    assert_eq!(rows.iter().filter(|r| r.method == "DELETE").count(), 1);
}

/// Under an `allow` policy a spelling that slipped through the guard would
/// really delete; each must be refused with 400 and reach nothing.
async fn spelling_is_refused(path: &str) {
    let up = fake(20).await;
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            tables: "[policy]\ndefault = \"allow\"\n",
            ..Extra::default()
        },
    )
    .await;
    let reply = raw(
        gw.proxy,
        format!(
            "DELETE {path}?api_key=sl_test_key HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{path}: {reply}");
    assert!(
        reply
            .to_ascii_lowercase()
            .contains("x-safedelete-action: refused"),
        "{reply}"
    );
    assert!(
        up.requests().is_empty(),
        "{path} reached SmartLead: {:?}",
        up.requests()
    );
    assert!(up.campaign(101).is_some());
    // Recorded as the campaign delete it is, with the id it would reach.
    let audit_id: i64 = reply
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-safedelete-audit-id: ")
                .map(str::to_string)
        })
        .unwrap_or_else(|| panic!("{path}: no audit id in {reply}"))
        .trim()
        .parse()
        .unwrap();
    let rows = gw.wait_for_audit_rows(1).await;
    let row = rows.iter().find(|r| r.id == audit_id).unwrap();
    assert_eq!(row.operation, "campaign.delete", "{path}");
    assert_eq!(row.action.as_deref(), Some("refused"), "{path}");
    assert_eq!(row.campaign_id, Some(101), "{path}");
    assert_eq!(row.status, 400);
}

macro_rules! spelling_tests {
    ($($name:ident: $path:expr,)*) => {$(
        #[tokio::test]
        async fn $name() {
            spelling_is_refused($path).await;
        }
    )*};
}

spelling_tests! {
    spelling_with_a_trailing_slash_is_refused: "/api/v1/campaigns/101/",
    spelling_in_upper_case_is_refused: "/API/v1/campaigns/101",
    spelling_percent_encoded_is_refused: "/api/v1/campaigns/%31%30%31",
    spelling_with_a_double_slash_is_refused: "/api/v1//campaigns/101",
    spelling_with_a_dot_dot_segment_is_refused: "/api/v1/x/../campaigns/101",
    spelling_with_a_leading_zero_is_refused: "/api/v1/campaigns/0101",
    spelling_with_a_matrix_parameter_is_refused: "/api/v1/campaigns/101;x=1",
    spelling_with_a_dot_segment_is_refused: "/api/v1/./campaigns/101",
    spelling_with_trailing_garbage_is_refused: "/api/v1/campaigns/101abc",
}

#[tokio::test]
async fn a_campaign_id_beyond_i64_is_refused_not_wrapped() {
    let up = fake(20).await;
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            tables: "[policy]\ndefault = \"allow\"\n",
            ..Extra::default()
        },
    )
    .await;
    let reply = delete(
        &gw,
        "/api/v1/campaigns/9223372036854775808?api_key=sl_test_key",
    )
    .await;
    assert_eq!(reply.status, 400, "{:?}", reply.body);
    assert!(reply.json()["error"]
        .as_str()
        .unwrap()
        .contains("out of range"));
    assert!(up.requests().is_empty());
    let rows = gw.wait_for_audit_rows(1).await;
    assert_eq!(rows[0].action.as_deref(), Some("refused"));
    assert!(
        rows.iter().all(|r| r.campaign_id.is_none_or(|c| c > 0)),
        "{rows:?}"
    );
    assert!(operations(&gw).await.is_empty());
}

#[tokio::test]
async fn guarded_records_store_the_bytes_the_client_got() {
    let up = fake(20).await;
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            tables: "[policy]\ndefault = \"archive\"\n\
                     [[policy.rules]]\nname = \"keep-102\"\naction = \"deny\"\ncampaign_ids = [102]\n\
                     [[policy.rules]]\nname = \"drop-103\"\naction = \"allow\"\ncampaign_ids = [103]\n",
            ..Extra::default()
        },
    )
    .await;
    let mut replies = Vec::new();
    for (id, action) in [
        (101, "archived"),
        (102, "denied"),
        (103, "allowed"),
        (999, "refused"),
    ] {
        let reply = delete(&gw, &format!("/api/v1/campaigns/{id}?api_key=sl_test_key")).await;
        assert_eq!(reply.header("x-safedelete-action"), Some(action), "{id}");
        replies.push(reply);
    }
    let rows = gw.wait_for_audit_rows(4).await;
    for reply in &replies {
        let id: i64 = reply
            .header("x-safedelete-audit-id")
            .unwrap()
            .parse()
            .unwrap();
        let row = rows.iter().find(|r| r.id == id).unwrap();
        assert!(!reply.body.is_empty());
        assert_eq!(row.bytes_out, reply.body.len() as i64, "{row:?}");
        assert_eq!(row.action.as_deref(), reply.header("x-safedelete-action"));
    }
}

#[tokio::test]
async fn a_lower_case_delete_method_is_refused() {
    let up = fake(20).await;
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            tables: "[policy]\ndefault = \"allow\"\n",
            ..Extra::default()
        },
    )
    .await;
    let reply = raw(
        gw.proxy,
        b"delete /api/v1/campaigns/101?api_key=sl_test_key HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(up.requests().is_empty());
}

async fn override_is_refused(build: impl FnOnce(&Gateway) -> Request<Full<bytes::Bytes>>) {
    let up = fake(20).await;
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            tables: "[policy]\ndefault = \"allow\"\n",
            ..Extra::default()
        },
    )
    .await;
    let reply = send(build(&gw)).await;
    assert_eq!(reply.status, 400, "{:?}", reply.body);
    assert!(up.requests().is_empty(), "{:?}", up.requests());
}

#[tokio::test]
async fn x_http_method_override_is_refused() {
    override_is_refused(|gw| {
        Request::post(gw.url(DELETE_101))
            .header("x-http-method-override", "DELETE")
            .body(Full::default())
            .unwrap()
    })
    .await;
}

#[tokio::test]
async fn x_method_override_is_refused() {
    override_is_refused(|gw| {
        Request::post(gw.url(DELETE_101))
            .header("x-method-override", "DELETE")
            .body(Full::default())
            .unwrap()
    })
    .await;
}

#[tokio::test]
async fn a_method_query_parameter_is_refused() {
    for q in ["&_method=DELETE", "&%5Fmethod=delete", "&_method[]=DELETE"] {
        override_is_refused(|gw| {
            Request::post(gw.url(&format!("{DELETE_101}{q}")))
                .body(Full::default())
                .unwrap()
        })
        .await;
    }
}

#[tokio::test]
async fn a_form_body_on_the_campaign_route_is_refused() {
    override_is_refused(|gw| {
        Request::post(gw.url(DELETE_101))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(bytes::Bytes::from_static(b"_method=DELETE")))
            .unwrap()
    })
    .await;
}

#[tokio::test]
async fn a_missing_fact_that_a_deny_rule_needs_fails_closed() {
    let up = fake(20).await;
    // SmartLead's answer without a status: the deny rule cannot be checked.
    up.fault(FaultRule {
        method: Some("GET".into()),
        path: "/api/v1/campaigns/101".into(),
        times: None,
        fault: Fault {
            status: Some(200),
            ..Fault::default()
        },
    });
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            tables: "[policy]\ndefault = \"allow\"\n\n[[policy.rules]]\nname = \"keep-active\"\naction = \"deny\"\nstatuses = [\"ACTIVE\"]\n",
            ..Extra::default()
        },
    )
    .await;
    let reply = delete(&gw, DELETE_101).await;
    assert_eq!(reply.status, 502, "{:?}", reply.body);
    assert!(reply.json()["message"]
        .as_str()
        .unwrap()
        .contains("keep-active"));
    assert!(destructive_calls(&up).is_empty());
}

#[tokio::test]
async fn archiving_waits_out_a_rate_limit_and_has_its_own_time() {
    let up = fake(3_000).await;
    // The export uses most of the snapshot budget...
    up.fault(fault(
        "/api/v1/campaigns/101/leads-export",
        Fault {
            delay: Some(Duration::from_millis(1200)),
            ..Fault::default()
        },
    ));
    // ...and the first archive attempt is rate limited.
    up.fault(FaultRule {
        method: Some("PATCH".into()),
        path: "/api/v1/campaigns/101/status".into(),
        times: Some(1),
        fault: Fault {
            status: Some(429),
            retry_after: Some(1),
            ..Fault::default()
        },
    });
    let gw = guarded_gateway(&up, "2s").await;
    let reply = delete(&gw, DELETE_101).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.header("x-safedelete-action"), Some("archived"));
    let patches = up
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path().ends_with("/status"))
        .count();
    assert_eq!(patches, 2, "the rate-limited PATCH is retried, not skipped");
    assert!(up.requests().iter().all(|r| r.method != "DELETE"));
}

/// A gateway whose clients wait at most `answer_within` for a capture that
/// may take up to `budget`.
async fn answering_gateway(up: &FakeHandle, answer_within: &str, budget: &str) -> Gateway {
    let tables =
        format!("[guard]\nanswer_within = \"{answer_within}\"\nsnapshot_budget = \"{budget}\"\n");
    Gateway::start_with(
        &up.url(),
        Extra {
            tables: Box::leak(tables.into_boxed_str()),
            ..Extra::default()
        },
    )
    .await
}

/// The leads export answers only after `delay`, once.
fn slow_export_once(up: &FakeHandle, delay: Duration) {
    up.fault(FaultRule {
        times: Some(1),
        ..fault(
            "/api/v1/campaigns/101/leads-export",
            Fault {
                delay: Some(delay),
                ..Fault::default()
            },
        )
    });
}

/// Waits (up to 10 s) until the last operation is in `state`.
async fn wait_for_operation_state(gw: &Gateway, state: &str) -> Vec<OperationRow> {
    for _ in 0..400 {
        let ops = operations(gw).await;
        if ops.last().is_some_and(|o| o.state == state) {
            return ops;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "the last operation never reached {state}: {:?}",
        operations(gw).await
    );
}

/// Checks a 503 snapshot_pending answer and returns its snapshot id.
fn assert_pending(reply: &Reply) -> i64 {
    assert_eq!(reply.status, 503, "{:?}", reply.body);
    assert_eq!(reply.header("x-safedelete-action"), Some("refused"));
    assert!(reply.header("retry-after").is_some(), "{:?}", reply.headers);
    let body = reply.json();
    assert_eq!(body["error_kind"], "snapshot_pending", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("Nothing was deleted"), "{message}");
    assert!(message.contains("retry the same delete"), "{message}");
    reply
        .header("x-safedelete-snapshot-id")
        .expect("the pending snapshot is named")
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_capture_longer_than_answer_within_is_refused_with_503_and_completes_in_the_background() {
    let up = fake(200).await;
    slow_export_once(&up, Duration::from_millis(2_500));
    let gw = answering_gateway(&up, "1s", "5s").await;
    let started = std::time::Instant::now();
    let reply = delete(&gw, DELETE_101).await;
    let elapsed = started.elapsed();
    let snapshot_id = assert_pending(&reply);
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_millis(1_900),
        "answered after {elapsed:?}"
    );
    // The capture goes on, and the operation ends without acting.
    let ops = wait_for_operation_state(&gw, "snapshot_pending").await;
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].snapshot_id, Some(snapshot_id));
    assert!(
        ops[0].error.as_deref().unwrap().contains("completed"),
        "{ops:?}"
    );
    let (state, parts) = snapshot_state(&gw, snapshot_id).await;
    assert_eq!(state, "complete", "{parts:?}");
    assert_eq!(
        export_leads(&gw, snapshot_id).await,
        up.expected_leads_csv(101)
    );
    assert!(
        destructive_calls(&up).is_empty(),
        "{:?}",
        destructive_calls(&up)
    );
    assert_eq!(up.campaign(101).unwrap()["status"], "ACTIVE");
    let audit = gw.wait_for_audit_rows(1).await;
    let record = audit.last().unwrap();
    assert_eq!(record.action.as_deref(), Some("refused"));
    assert_eq!(record.error_kind.as_deref(), Some("snapshot_pending"));
    assert_eq!(record.status, 503);
}

#[tokio::test]
async fn a_retry_while_the_capture_runs_joins_it_and_archives_with_that_snapshot() {
    let up = fake(200).await;
    slow_export_once(&up, Duration::from_secs(3));
    let gw = answering_gateway(&up, "2s", "10s").await;
    let first = assert_pending(&delete(&gw, DELETE_101).await);
    // Sent at once: the capture still has about a second to go.
    let retry = delete(&gw, DELETE_101).await;
    assert_eq!(retry.status, 200, "{:?}", retry.body);
    assert_eq!(retry.header("x-safedelete-action"), Some("archived"));
    assert_eq!(
        retry.header("x-safedelete-snapshot-id"),
        Some(first.to_string().as_str())
    );
    assert_eq!(export_requests(&up), 1, "the retry captured again");
    let ops = operations(&gw).await;
    let states: Vec<&str> = ops.iter().map(|o| o.state.as_str()).collect();
    assert_eq!(states, ["snapshot_pending", "done"]);
    assert_eq!(ops[1].snapshot_id, Some(first));
    let archived: Vec<String> = destructive_calls(&up)
        .iter()
        .map(|r| r.method.clone())
        .collect();
    assert_eq!(archived, ["PATCH"], "exactly one archive, by the retry");
    assert_eq!(up.campaign(101).unwrap()["status"], "ARCHIVED");
}

#[tokio::test]
async fn a_retry_that_joined_a_capture_which_then_failed_is_told_so() {
    let up = fake(200).await;
    // The export is refused (403, which waiting will not change) after 3 s:
    // the capture outlives the first answer (2 s) and fails a second before
    // the retry's own 2 s are up.
    up.fault(fault(
        "/api/v1/campaigns/101/leads-export",
        Fault {
            status: Some(403),
            delay: Some(Duration::from_secs(3)),
            ..Fault::default()
        },
    ));
    let gw = answering_gateway(&up, "2s", "20s").await;
    let first = assert_pending(&delete(&gw, DELETE_101).await);
    let retry = delete(&gw, DELETE_101).await;
    assert_eq!(retry.status, 502, "{:?}", retry.body);
    let body = retry.json();
    assert_eq!(body["error_kind"], "snapshot_failed");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("waited for failed"),
        "{body}"
    );
    assert_eq!(
        retry.header("x-safedelete-snapshot-id"),
        Some(first.to_string().as_str())
    );
    assert_eq!(
        export_requests(&up),
        1,
        "the retry started no capture of its own"
    );
    assert!(destructive_calls(&up).is_empty());
}

#[tokio::test]
async fn a_retry_that_waits_out_its_own_answer_within_is_refused_too() {
    let up = fake(200).await;
    slow_export_once(&up, Duration::from_secs(4));
    let gw = answering_gateway(&up, "1s", "10s").await;
    let first = assert_pending(&delete(&gw, DELETE_101).await);
    let started = std::time::Instant::now();
    let retry = delete(&gw, DELETE_101).await;
    assert!(started.elapsed() < Duration::from_millis(1_900));
    assert_eq!(
        assert_pending(&retry),
        first,
        "the retry names the capture it waited for"
    );
    assert_eq!(export_requests(&up), 1);
    wait_for_operation_state(&gw, "snapshot_pending").await;
    assert!(destructive_calls(&up).is_empty());
}

#[tokio::test]
async fn a_retry_after_the_capture_completed_uses_that_snapshot() {
    let up = fake(200).await;
    slow_export_once(&up, Duration::from_millis(1_500));
    let gw = answering_gateway(&up, "1s", "5s").await;
    let first = assert_pending(&delete(&gw, DELETE_101).await);
    wait_for_operation_state(&gw, "snapshot_pending").await;
    let retry = delete(&gw, DELETE_101).await;
    assert_eq!(retry.status, 200, "{:?}", retry.body);
    assert_eq!(retry.header("x-safedelete-action"), Some("archived"));
    assert_eq!(
        retry.header("x-safedelete-snapshot-id"),
        Some(first.to_string().as_str())
    );
    assert_eq!(
        export_requests(&up),
        1,
        "the complete snapshot was captured again"
    );
    assert_eq!(operations(&gw).await[1].snapshot_id, Some(first));
    let pool = safedelete::db::open_existing(&gw.store).await.unwrap();
    let recorded: Option<i64> =
        sqlx::query_scalar("SELECT snapshot_id FROM audit_events WHERE action = 'archived'")
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    assert_eq!(
        recorded,
        Some(first),
        "the audit record names the reused snapshot"
    );
}

#[tokio::test]
async fn a_retry_after_the_campaign_changed_captures_again() {
    let up = fake(200).await;
    slow_export_once(&up, Duration::from_millis(1_500));
    let gw = answering_gateway(&up, "1s", "5s").await;
    let first = assert_pending(&delete(&gw, DELETE_101).await);
    wait_for_operation_state(&gw, "snapshot_pending").await;
    let before = up.campaign(101).unwrap()["updated_at"].clone();
    // Someone changes the campaign behind the gateway's back.
    let paused = send(
        Request::post(format!(
            "{}/api/v1/campaigns/101/status?api_key={KEY}",
            up.url()
        ))
        .header("content-type", "application/json")
        .body(Full::from(r#"{"status":"PAUSED"}"#))
        .unwrap(),
    )
    .await;
    assert_eq!(paused.status, 200);
    assert_ne!(up.campaign(101).unwrap()["updated_at"], before);
    let retry = delete(&gw, DELETE_101).await;
    assert_eq!(retry.status, 200, "{:?}", retry.body);
    let second: i64 = retry
        .header("x-safedelete-snapshot-id")
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(second, first, "a snapshot of the old campaign was used");
    assert_eq!(export_requests(&up), 2);
    assert_eq!(snapshot_state(&gw, second).await.0, "complete");
}
