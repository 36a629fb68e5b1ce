//! Every operation in the guard's table, end to end: a real gateway, the
//! fake SmartLead (which records what reached it and in which order), a real
//! SQLite file. For each operation: the capture's reads reach SmartLead
//! before the destructive call, which is then forwarded once; a deny rule
//! keeps every destructive call away; a failed capture refuses the call; the
//! safer alternative is used where there is one; and a spelling trick is
//! refused before anything reaches SmartLead.

mod common;

use common::process;
use common::*;
use fake_smartlead::{FakeHandle, Fault, FaultRule, RecordedRequest};
use http::{Method, Request};
use http_body_util::Full;
use serde_json::Value;

/// A lead of campaign 101 with a sent history and a reply.
const LEAD: u64 = 1010000006;

/// One row of the table under test.
struct Case {
    op: &'static str,
    method: Method,
    /// Without the key (added here).
    path: &'static str,
    body: Option<&'static str>,
    /// Paths (without query) the capture reads, each before the destructive call.
    reads: &'static [&'static str],
    /// The snapshot's parts when complete.
    parts: &'static [&'static str],
    /// A spelling of the same call that must be refused with 400.
    trick: (Method, &'static str, Option<&'static str>),
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            op: "campaign.delete",
            method: Method::DELETE,
            path: "/api/v1/campaigns/101",
            body: None,
            reads: &[
                "/api/v1/campaigns/101",
                "/api/v1/campaigns/101/leads-export",
                "/api/v1/campaigns/101/analytics",
            ],
            parts: &[
                "campaign",
                "leads_csv",
                "sequences",
                "email_accounts",
                "webhooks",
                "analytics",
            ],
            trick: (Method::DELETE, "/api/v1/campaigns/0101", None),
        },
        Case {
            op: "campaign.stop",
            method: Method::POST,
            path: "/api/v1/campaigns/101/status",
            body: Some(r#"{"status":"STOPPED"}"#),
            reads: &[
                "/api/v1/campaigns/101",
                "/api/v1/campaigns/101/leads-export",
            ],
            parts: &[
                "campaign",
                "leads_csv",
                "sequences",
                "email_accounts",
                "webhooks",
                "analytics",
            ],
            trick: (
                Method::PATCH,
                "/api/v1/campaigns/101/status/",
                Some(r#"{"status":"stop"}"#),
            ),
        },
        Case {
            op: "campaign.lead.delete",
            method: Method::DELETE,
            path: "/api/v1/campaigns/101/leads/1010000006",
            body: None,
            reads: &[
                "/api/v1/campaigns/101",
                "/api/v1/leads/1010000006",
                "/api/v1/leads/1010000006/campaigns",
                "/api/v1/campaigns/101/leads/1010000006/message-history",
            ],
            parts: &["campaign", "lead", "lead_campaigns", "message_history"],
            trick: (
                Method::DELETE,
                "/api/v1/campaigns/101/leads/01010000006",
                None,
            ),
        },
        Case {
            op: "campaign.lead.unsubscribe",
            method: Method::POST,
            path: "/api/v1/campaigns/101/leads/1010000006/unsubscribe",
            body: None,
            reads: &[
                "/api/v1/leads/1010000006",
                "/api/v1/campaigns/101/leads/1010000006/message-history",
            ],
            parts: &["campaign", "lead", "lead_campaigns", "message_history"],
            trick: (
                Method::POST,
                "/API/v1/campaigns/101/leads/1010000006/unsubscribe",
                None,
            ),
        },
        Case {
            op: "lead.unsubscribe",
            method: Method::POST,
            path: "/api/v1/leads/1010000006/unsubscribe",
            body: None,
            reads: &[
                "/api/v1/leads/1010000006",
                "/api/v1/leads/1010000006/campaigns",
            ],
            parts: &["lead", "lead_campaigns"],
            trick: (Method::POST, "/api/v1/leads/1010000006/unsubscribe/", None),
        },
        Case {
            op: "lead.delete",
            method: Method::DELETE,
            path: "/api/v1/leads/1010000006",
            body: None,
            reads: &[
                "/api/v1/leads/1010000006",
                "/api/v1/leads/1010000006/campaigns",
            ],
            parts: &["lead", "lead_campaigns"],
            trick: (Method::DELETE, "/api/v1//leads/1010000006", None),
        },
        Case {
            op: "campaign.webhook.delete",
            method: Method::DELETE,
            path: "/api/v1/campaigns/101/webhooks",
            body: Some(r#"{"id":10101}"#),
            reads: &["/api/v1/campaigns/101", "/api/v1/campaigns/101/webhooks"],
            parts: &["campaign", "webhooks"],
            trick: (
                Method::DELETE,
                "/api/v1/campaigns/101/webhooks",
                Some(r#"{"id":"10101x"}"#),
            ),
        },
        Case {
            op: "campaign.email_accounts.remove",
            method: Method::DELETE,
            path: "/api/v1/campaigns/101/email-accounts",
            body: Some(r#"{"email_account_ids":[9001]}"#),
            reads: &[
                "/api/v1/campaigns/101",
                "/api/v1/campaigns/101/email-accounts",
            ],
            parts: &["campaign", "email_accounts"],
            trick: (
                Method::DELETE,
                "/api/v1/campaigns/101/email-accounts",
                Some(r#"{"email_account_ids":[]}"#),
            ),
        },
        Case {
            op: "email_account.delete",
            method: Method::DELETE,
            path: "/api/v1/email-accounts/9001",
            body: None,
            reads: &[
                "/api/v1/email-accounts/9001",
                "/api/v1/campaigns",
                "/api/v1/campaigns/102/email-accounts",
            ],
            parts: &["email_account", "account_campaigns"],
            trick: (Method::DELETE, "/api/v1/Email-Accounts/9001", None),
        },
        Case {
            op: "lead_list.delete",
            method: Method::DELETE,
            path: "/api/v1/lead-list/501",
            body: None,
            reads: &["/api/v1/lead-list/501", "/api/v1/lead-list/501/leads"],
            parts: &["lead_list", "lead_list_leads"],
            trick: (Method::DELETE, "/api/v1/lead-list/501/", None),
        },
        Case {
            op: "webhook.delete",
            method: Method::DELETE,
            path: "/api/v1/webhook/delete",
            body: Some(r#"{"id":9101}"#),
            reads: &["/api/v1/webhook"],
            parts: &["global_webhooks"],
            trick: (Method::DELETE, "/api/v1/webhook/delete", Some("id=9101")),
        },
        Case {
            op: "client_api_key.delete",
            method: Method::DELETE,
            path: "/api/v1/client/api-key/301",
            body: None,
            reads: &["/api/v1/client/api-key"],
            parts: &["client_api_keys"],
            trick: (Method::DELETE, "/api/v1/client/api-key/301;x=1", None),
        },
        Case {
            op: "domain_block.delete",
            method: Method::DELETE,
            path: "/api/v1/leads/delete-domain-block-list?id=701",
            body: None,
            reads: &["/api/v1/leads/get-domain-block-list"],
            parts: &["domain_block_list"],
            trick: (
                Method::DELETE,
                "/api/v1/leads/delete-domain-block-list?id=701&id=702",
                None,
            ),
        },
    ]
}

fn with_key(path: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}api_key={KEY}")
}

async fn call(gw: &Gateway, method: &Method, path: &str, body: Option<&str>) -> Reply {
    let mut req = Request::builder()
        .method(method.clone())
        .uri(gw.url(&with_key(path)));
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let body = Full::from(body.unwrap_or_default().to_string());
    send(req.body(body).unwrap()).await
}

/// The call as it reached the fake: same method and path.
fn is_the_call(case: &Case, r: &RecordedRequest) -> bool {
    let path = case.path.split('?').next().unwrap();
    r.method == case.method.as_str() && r.path() == path
}

/// Runs the `safedelete` command on the gateway's database; fails the test
/// when it fails.
fn cli(gw: &Gateway, args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_safedelete"))
        .args(args)
        .env("SAFEDELETE_DATABASE", gw.database_env())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

async fn fake() -> FakeHandle {
    fake_smartlead::start(fake_smartlead::FakeConfig::with_leads(20))
        .await
        .unwrap()
}

/// The snapshot's operation, target and part kinds, read from the database.
async fn snapshot(gw: &Gateway, id: i64) -> (String, String, String, Vec<String>) {
    let pool = safedelete::db::open_existing(&gw.store).await.unwrap();
    let (op, target, state): (String, String, String) =
        sqlx::query_as("SELECT operation, target, state FROM snapshots WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    // As `snapshots show` lists them.
    let parts: Vec<String> = safedelete::snapshot::store::get_snapshot(&pool, id)
        .await
        .unwrap()
        .parts
        .into_iter()
        .filter(|p| p.state == "complete")
        .map(|p| p.kind)
        .collect();
    pool.close().await;
    (op, target, state, parts)
}

/// The operation and action of the last audit record.
async fn last_audit(gw: &Gateway) -> (String, Option<String>, Option<String>) {
    let pool = safedelete::db::open_existing(&gw.store).await.unwrap();
    let row = sqlx::query_as(
        "SELECT operation, action, target FROM audit_events WHERE operation <> 'passthrough' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    row
}

#[tokio::test]
async fn every_operation_is_captured_before_it_is_forwarded_once() {
    for case in cases() {
        let up = fake().await;
        let mut gw = Gateway::start(&up.url()).await;
        let r = call(&gw, &case.method, case.path, case.body).await;
        let expected_action = if case.op == "campaign.delete" {
            "archived"
        } else {
            "allowed"
        };
        assert_eq!(
            r.status,
            200,
            "{}: {}",
            case.op,
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(
            r.header("x-safedelete-action"),
            Some(expected_action),
            "{}",
            case.op
        );
        let snapshot_id: i64 = r
            .header("x-safedelete-snapshot-id")
            .unwrap_or_else(|| panic!("{}: no snapshot id", case.op))
            .parse()
            .unwrap();
        let requests = up.requests();
        if case.op != "campaign.delete" {
            let calls: Vec<usize> = requests
                .iter()
                .enumerate()
                .filter(|(_, r)| is_the_call(&case, r))
                .map(|(i, _)| i)
                .collect();
            assert_eq!(calls.len(), 1, "{}: forwarded exactly once", case.op);
            for read in case.reads {
                let at = requests
                    .iter()
                    .position(|r| r.method == "GET" && r.path() == *read)
                    .unwrap_or_else(|| panic!("{}: {read} was not read", case.op));
                assert!(at < calls[0], "{}: {read} read after the call", case.op);
            }
            if let Some(body) = case.body {
                assert_eq!(
                    requests[calls[0]].body,
                    body.as_bytes(),
                    "{}: body forwarded",
                    case.op
                );
            }
        }
        let (op, target, state, parts) = snapshot(&gw, snapshot_id).await;
        assert_eq!(op, case.op);
        assert_eq!(state, "complete", "{}", case.op);
        // Captured at once, listed in the part kinds' order.
        assert_eq!(parts, case.parts, "{}", case.op);
        assert!(!target.is_empty());
        let (audit_op, action, audit_target) = last_audit(&gw).await;
        assert_eq!(audit_op, case.op);
        assert_eq!(action.as_deref(), Some(expected_action));
        assert_eq!(audit_target.as_deref(), Some(target.as_str()));
        let series = format!(
            "safedelete_guarded_total{{operation=\"{}\",action=\"{expected_action}\"}}",
            case.op
        );
        assert_eq!(metric(&gw, &series).await, 1.0, "{series}");
        gw.stop().await;
    }
}

#[tokio::test]
async fn a_deny_rule_keeps_every_operation_from_reaching_smartlead() {
    let tables = "[policy]\ndefault = \"deny\"\n[[policy.rules]]\nname = \"nothing-destroyed\"\naction = \"deny\"\noperations = [\"*\"]\n";
    for case in cases() {
        let up = fake().await;
        let mut gw = Gateway::start_with(
            &up.url(),
            Extra {
                tables,
                ..Extra::default()
            },
        )
        .await;
        let r = call(&gw, &case.method, case.path, case.body).await;
        assert_eq!(
            r.status,
            403,
            "{}: {}",
            case.op,
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.header("x-safedelete-action"), Some("denied"));
        assert!(r.header("x-safedelete-audit-id").is_some());
        assert!(
            !up.requests().iter().any(|r| r.method != "GET"),
            "{}: something other than a read reached SmartLead",
            case.op
        );
        assert_eq!(r.json()["safedelete"]["rule"], "nothing-destroyed");
        assert_eq!(r.json()["safedelete"]["operation"], case.op);
        gw.stop().await;
    }
    // Deletes the table does not know are covered by `*` too.
    let up = fake().await;
    let mut gw = Gateway::start_with(
        &up.url(),
        Extra {
            tables,
            ..Extra::default()
        },
    )
    .await;
    let r = call(&gw, &Method::DELETE, "/api/v1/crm/leads/tags/5", None).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["safedelete"]["operation"], "unknown.delete");
    assert!(up.requests().is_empty(), "nothing reached SmartLead");
    gw.stop().await;
}

#[tokio::test]
async fn a_failed_capture_refuses_every_operation() {
    for case in cases() {
        let up = fake().await;
        let mut gw = Gateway::start(&up.url()).await;
        // The last read of the plan keeps failing.
        let last = *case.reads.last().unwrap();
        up.fault(FaultRule {
            method: Some("GET".into()),
            path: last.to_string(),
            times: None,
            fault: Fault {
                status: Some(403),
                ..Fault::default()
            },
        });
        let r = call(&gw, &case.method, case.path, case.body).await;
        assert_eq!(
            r.status,
            502,
            "{}: {}",
            case.op,
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.header("x-safedelete-action"), Some("refused"));
        assert!(
            !up.requests().iter().any(|r| r.method != "GET"),
            "{}: something other than a read reached SmartLead",
            case.op
        );
        gw.stop().await;
    }
}

#[tokio::test]
async fn a_spelling_trick_is_refused_before_anything_reaches_smartlead() {
    let up = fake().await;
    let mut gw = Gateway::start(&up.url()).await;
    for case in cases() {
        up.clear_requests();
        let (method, path, body) = &case.trick;
        let r = call(&gw, method, path, *body).await;
        assert_eq!(
            r.status,
            400,
            "{}: {path}: {}",
            case.op,
            String::from_utf8_lossy(&r.body)
        );
        assert!(
            up.requests().is_empty(),
            "{}: {path} reached SmartLead",
            case.op
        );
        let (op, action, _) = last_audit(&gw).await;
        assert_eq!(op, case.op, "{path}");
        assert_eq!(action.as_deref(), Some("refused"));
        let series = format!(
            "safedelete_guarded_total{{operation=\"{}\",action=\"refused\"}}",
            case.op
        );
        assert_eq!(metric(&gw, &series).await, 1.0, "{series}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn pause_is_used_instead_of_a_stop_or_a_lead_delete() {
    let tables = "[[policy.rules]]\nname = \"pause-instead\"\naction = \"pause\"\noperations = [\"campaign.stop\", \"campaign.lead.delete\"]\n";
    let up = fake().await;
    let mut gw = Gateway::start_with(
        &up.url(),
        Extra {
            tables,
            ..Extra::default()
        },
    )
    .await;

    let r = call(
        &gw,
        &Method::POST,
        "/api/v1/campaigns/101/status",
        Some(r#"{"status":"STOPPED"}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-safedelete-action"), Some("paused"));
    assert_eq!(up.campaign(101).unwrap()["status"], "PAUSED");
    let stops: Vec<Value> = up
        .requests()
        .iter()
        .filter(|r| r.path().ends_with("/status"))
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(stops, vec![serde_json::json!({"status": "PAUSED"})]);

    let r = call(
        &gw,
        &Method::DELETE,
        "/api/v1/campaigns/101/leads/1010000006",
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-safedelete-action"), Some("paused"));
    assert_eq!(up.lead_status(101, LEAD).as_deref(), Some("PAUSED"));
    assert!(up.lead(LEAD).is_some(), "the lead still exists");
    assert!(!up.requests().iter().any(|r| r.method == "DELETE"));
    gw.stop().await;
}

#[tokio::test]
async fn a_status_change_that_is_not_a_stop_passes_through_unguarded() {
    let up = fake().await;
    let mut gw = Gateway::start(&up.url()).await;
    let r = call(
        &gw,
        &Method::POST,
        "/api/v1/campaigns/101/status/",
        Some(r#"{"status":"PAUSED"}"#),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-safedelete-action"), None);
    assert_eq!(up.campaign(101).unwrap()["status"], "PAUSED");
    // A body that cannot be read as JSON could hide a stop: refused.
    let r = call(
        &gw,
        &Method::POST,
        "/api/v1/campaigns/101/status",
        Some("{status: STOPPED"),
    )
    .await;
    assert_eq!(r.status, 400);
    gw.stop().await;
}

#[tokio::test]
async fn client_keys_are_redacted_before_their_listing_is_stored() {
    let up = fake().await;
    let mut gw = Gateway::start(&up.url()).await;
    let r = call(&gw, &Method::DELETE, "/api/v1/client/api-key/301", None).await;
    assert_eq!(r.status, 200);
    assert!(up.client_api_key(301).is_none());
    gw.stop().await;
    let bytes = stored_bytes(&gw.store).await;
    for key in ["clk_live_A_0123456789abcdef", "clk_live_B_fedcba9876543210"] {
        assert!(
            !process::contains(&bytes, key.as_bytes()),
            "{key} is in the database"
        );
    }
    // The listing itself is there, with the key replaced.
    let out = cli(
        &gw,
        &["snapshots", "export", "1", "--part", "client_api_keys"],
    );
    let listing: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(listing[0]["name"], "Client A");
    assert_eq!(listing[0]["api_key"], "[REDACTED]");
}

#[tokio::test]
async fn an_unknown_delete_is_forwarded_and_recorded_uncaptured() {
    let up = fake().await;
    let mut gw = Gateway::start(&up.url()).await;
    let body = r#"{"email_account_ids":[1011],"tag_ids":[3]}"#;
    let r = call(
        &gw,
        &Method::DELETE,
        "/api/v1/email-accounts/tag-mapping",
        Some(body),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-safedelete-action"), Some("allowed"));
    assert!(r.header("x-safedelete-snapshot-id").is_none());
    let forwarded = up
        .requests()
        .into_iter()
        .find(|r| r.method == "DELETE")
        .expect("forwarded");
    assert_eq!(forwarded.body, body.as_bytes());
    let (op, action, target) = last_audit(&gw).await;
    assert_eq!(op, "unknown.delete");
    assert_eq!(action.as_deref(), Some("allowed"));
    assert_eq!(
        target.as_deref(),
        Some("path:/api/v1/email-accounts/tag-mapping")
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_account_capture_lists_every_campaign_that_uses_it() {
    let up = fake().await;
    let mut gw = Gateway::start(&up.url()).await;
    let r = call(&gw, &Method::DELETE, "/api/v1/email-accounts/9001", None).await;
    assert_eq!(r.status, 200);
    let id = r.header("x-safedelete-snapshot-id").unwrap().to_string();
    gw.stop().await;
    let out = cli(
        &gw,
        &["snapshots", "export", &id, "--part", "account_campaigns"],
    );
    let campaigns: Value = serde_json::from_slice(&out).unwrap();
    let ids: Vec<u64> = campaigns
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![102, 101]);
    // History by account and by lead.
    let out = cli(&gw, &["history", "--email-account", "9001"]);
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("email account 9001: 1 guarded operation"),
        "{text}"
    );
    assert!(
        text.contains("email_account.delete of email_account:9001"),
        "{text}"
    );
}
