//! `/v1/restores` on the admin API: a campaign deleted through a real
//! gateway in front of the fake SmartLead, restored by the gateway itself
//! (dry run, real run followed to its report, resume after SmartLead kept
//! failing), with the account's key and within the account's rate limit;
//! the smaller undos; and requests that do not go together refused.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{audit_rows, send, Extra, Gateway, Reply, KEY};
use fake_smartlead::{FakeConfig, FakeHandle, Fault, FaultRule, RateLimit};
use http::Request;
use http_body_util::Full;
use serde_json::{json, Value};

const TOKEN: &str = "admin-token-0123456789";

/// The fake, and a gateway in front of it that allows deletes, holds the
/// SmartLead key as the account `default` (in the returned dir) with
/// `smartlead` settings, and guards its admin API with [`TOKEN`].
async fn setup(fake: FakeConfig, smartlead: &str) -> (FakeHandle, tempfile::TempDir, Gateway) {
    let fake = fake_smartlead::start(fake).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&fake, dir.path(), smartlead).await;
    (fake, dir, gw)
}

async fn gateway(fake: &FakeHandle, dir: &std::path::Path, smartlead: &str) -> Gateway {
    let key_file = dir.join("smartlead.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let tables = format!(
        "[policy]\ndefault = \"allow\"\n\n[bypass]\ninterval = \"0s\"\n\n\
         [smartlead]\n{smartlead}\n\
         [[smartlead.accounts]]\nname = \"default\"\napi_key_file = {:?}\n",
        key_file.display().to_string()
    );
    Gateway::start_with(
        &fake.url(),
        Extra {
            admin: &format!("token = \"{TOKEN}\"\n"),
            tables: Box::leak(tables.into_boxed_str()),
            ..Extra::default()
        },
    )
    .await
}

async fn delete(gw: &Gateway, target: &str) -> i64 {
    let req = Request::delete(gw.url(target))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = send(req).await;
    assert_eq!(r.header("x-safedelete-action"), Some("allowed"), "{target}");
    r.header("x-safedelete-snapshot-id")
        .unwrap()
        .parse()
        .unwrap()
}

async fn post(gw: &Gateway, body: Value, token: Option<&str>) -> Reply {
    let mut req =
        Request::post(gw.admin_url("/v1/restores")).header("content-type", "application/json");
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    send(req.body(Full::new(Bytes::from(body.to_string()))).unwrap()).await
}

async fn get(gw: &Gateway, target: &str) -> Reply {
    send(
        Request::get(gw.admin_url(target))
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Full::default())
            .unwrap(),
    )
    .await
}

/// Polls the restore until it is no longer running here.
async fn settled(gw: &Gateway, id: i64) -> Value {
    for _ in 0..600 {
        let shown = get(gw, &format!("/v1/restores/{id}")).await.json();
        if shown["active"] == false && shown["state"] != "running" {
            return shown;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("restore {id} still running after 30 s");
}

async fn named(fake: &FakeHandle, name: &str) -> Vec<i64> {
    common::campaigns_named(&fake.url(), name).await
}

async fn lead_count(fake: &FakeHandle, campaign: i64) -> usize {
    let body = common::fake_read(&fake.url(), &format!("/campaigns/{campaign}/leads-export"))
        .await
        .body;
    csv::Reader::from_reader(body.as_ref()).records().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_restores_a_campaign_within_the_accounts_limit_and_reports_it() {
    let fake = FakeConfig {
        rate_limit: Some(RateLimit {
            requests: 4,
            per: Duration::from_secs(1),
        }),
        ..FakeConfig::with_leads(1000)
    };
    let (fake, _dir, gw) = setup(fake, "rate_limit = \"4/1s\"\n").await;
    let accounts = common::fake_read(&fake.url(), "/campaigns/101/email-accounts")
        .await
        .json()
        .as_array()
        .unwrap()
        .len() as i64;
    let snapshot = delete(&gw, &format!("/api/v1/campaigns/101?api_key={KEY}")).await;

    let refused = post(&gw, json!({ "snapshot_id": snapshot }), None).await;
    assert_eq!(refused.status, 401, "the admin token guards restores");

    let before = fake.requests().len();
    let dry = post(
        &gw,
        json!({ "snapshot_id": snapshot, "dry_run": true }),
        Some(TOKEN),
    )
    .await;
    assert_eq!(dry.status, 200, "{:?}", dry.body);
    let plan = &dry.json()["plan"];
    assert_eq!(plan["leads"]["total"], 1000);
    assert_eq!(plan["leads"]["restored"], 980);
    assert_eq!(plan["leads"]["left_out"]["unsubscribed"], 20);
    assert_eq!(plan["calls"][0]["path"], "/campaigns/create");
    assert_eq!(fake.requests().len(), before, "a dry run makes no call");
    assert_eq!(get(&gw, "/v1/restores").await.json(), json!([]));

    // The fake's window is clear of the capture's calls.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let limited_before = fake.rate_limited();
    let started = post(&gw, json!({ "snapshot_id": snapshot }), Some(TOKEN)).await;
    assert_eq!(started.status, 202, "{:?}", started.body);
    assert_eq!(started.header("location"), Some("/v1/restores/1"));
    let answer = started.json();
    assert_eq!(answer["id"], 1);
    assert_eq!(answer["plan"]["leads"]["restored"], 980);

    let shown = settled(&gw, 1).await;
    let limited_after = fake.rate_limited();
    assert_eq!(shown["state"], "done", "{shown}");
    assert_eq!(shown["operator"], "admin token");
    assert_eq!(shown["snapshot_id"], snapshot);
    assert_eq!(shown["leads_total"], 980);
    assert_eq!(shown["progress"]["leads_sent"], 980);
    assert_eq!(shown["progress"]["lead_batches_done"], 3);
    assert_eq!(shown["progress"]["steps_done"], shown["calls_total"]);
    let report = &shown["report"];
    assert_eq!(report["leads"]["added"], 980, "{report}");
    assert_eq!(report["leads"]["left_out"]["unsubscribed"], 20);
    assert_eq!(report["original_id"], 101);
    assert_eq!(report["sequences"]["restored"], 2);
    assert!(report["not_restorable"][0]
        .as_str()
        .unwrap()
        .contains("message history"));

    let new = named(&fake, "Cold Outreach Q1").await;
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(shown["new_campaign_id"], new[0]);
    assert_eq!(lead_count(&fake, new[0]).await, 980);
    assert_eq!(
        limited_after, limited_before,
        "the restore took turns in the account's limit: SmartLead never answered 429"
    );

    // Audited as the admin token's, with the account, never the key.
    let pool = safedelete::db::open_existing(&gw.store).await.unwrap();
    let rows: Vec<(String, Option<String>, Option<String>, String)> = sqlx::query_as(
        "SELECT actor_label, account, target, coalesce(query, '') FROM audit_events \
         WHERE operation = 'restore' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    // Every call of the plan, and a check that each sender account exists.
    assert_eq!(
        rows.len() as i64,
        shown["calls_total"].as_i64().unwrap() + accounts
    );
    for (actor, account, target, query) in &rows {
        assert_eq!(actor, "admin token");
        assert_eq!(account.as_deref(), Some("default"));
        assert_eq!(target.as_deref(), Some("restore:1"));
        assert!(!query.contains(KEY));
    }

    let listed = get(&gw, "/v1/restores").await.json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["state"], "done");
    let again = post(&gw, json!({ "resume": 1 }), Some(TOKEN)).await;
    assert_eq!(again.status, 409);
    assert_eq!(again.json()["error"], "restore 1 is done already");
    let missing = get(&gw, "/v1/restores/7").await;
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"]
        .as_str()
        .unwrap()
        .contains("no restore 7"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_that_stopped_is_resumed_over_the_api_without_a_second_campaign() {
    let (fake, _dir, gw) = setup(FakeConfig::with_leads(1000), "").await;
    let snapshot = delete(&gw, &format!("/api/v1/campaigns/101?api_key={KEY}")).await;
    fake.fault(FaultRule {
        method: Some("POST".into()),
        path: "/api/v1/campaigns/*/leads".into(),
        times: None,
        fault: Fault {
            status: Some(500),
            ..Fault::default()
        },
    });
    let started = post(
        &gw,
        json!({ "snapshot_id": snapshot, "name": "Back again" }),
        Some(TOKEN),
    )
    .await;
    assert_eq!(started.status, 202, "{:?}", started.body);
    let shown = settled(&gw, 1).await;
    assert_eq!(shown["state"], "failed", "{shown}");
    assert!(shown["error"].as_str().unwrap().contains("500"), "{shown}");
    assert_eq!(shown["progress"]["leads_sent"], 0);
    assert!(shown["report"].is_null());

    fake.clear_faults();
    let resumed = post(&gw, json!({ "resume": 1 }), Some(TOKEN)).await;
    assert_eq!(resumed.status, 202, "{:?}", resumed.body);
    let shown = settled(&gw, 1).await;
    assert_eq!(shown["state"], "done", "{shown}");
    assert!(shown["error"].is_null());
    let new = named(&fake, "Back again").await;
    assert_eq!(new.len(), 1, "one campaign: {new:?}");
    assert_eq!(lead_count(&fake, new[0]).await, 980);
    assert_eq!(shown["report"]["leads"]["added"], 980);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_lead_is_undone_over_the_api() {
    let (fake, _dir, gw) = setup(FakeConfig::with_leads(1000), "").await;
    let leads = lead_count(&fake, 102).await;
    let snapshot = delete(
        &gw,
        &format!("/api/v1/campaigns/102/leads/1020000001?api_key={KEY}"),
    )
    .await;
    assert_eq!(lead_count(&fake, 102).await, leads - 1);

    let before = fake.requests().len();
    let dry = post(
        &gw,
        json!({ "snapshot_id": snapshot, "dry_run": true }),
        Some(TOKEN),
    )
    .await;
    assert_eq!(dry.status, 200, "{:?}", dry.body);
    assert_eq!(dry.json()["undo"]["kind"], "lead");
    assert_eq!(fake.requests().len(), before);

    let done = post(&gw, json!({ "snapshot_id": snapshot }), Some(TOKEN)).await;
    assert_eq!(done.status, 200, "{:?}", done.body);
    assert!(done.json()["done"]["summary"].is_string());
    assert_eq!(lead_count(&fake, 102).await, leads, "the lead is back");

    // Not archived: SmartLead's state is told, nothing is changed.
    let not_archived = post(&gw, json!({ "unarchive": 101 }), Some(TOKEN)).await;
    assert_eq!(not_archived.status, 409, "{:?}", not_archived.body);
    assert!(not_archived.json()["error"]
        .as_str()
        .unwrap()
        .contains("not ARCHIVED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_requests_that_do_not_go_together_are_refused_naming_the_field() {
    let (fake, _dir, gw) = setup(FakeConfig::with_leads(100), "").await;
    let snapshot = delete(&gw, &format!("/api/v1/campaigns/101?api_key={KEY}")).await;
    let before = fake.requests().len();
    for (body, status, says) in [
        (
            json!({ "snapshot": snapshot }),
            400,
            "unknown field `snapshot`",
        ),
        (
            json!({}),
            400,
            "exactly one of `snapshot_id`, `resume` and `unarchive`",
        ),
        (
            json!({ "snapshot_id": snapshot, "resume": 1 }),
            400,
            "exactly one of",
        ),
        (
            json!({ "resume": 1, "name": "x" }),
            400,
            "`name` does not apply to `resume`",
        ),
        (
            json!({ "resume": 1, "dry_run": true }),
            400,
            "`dry_run` needs a `snapshot_id`",
        ),
        (
            json!({ "unarchive": 101, "leads": "all" }),
            400,
            "`leads` does not apply to `unarchive`",
        ),
        (
            json!({ "snapshot_id": snapshot, "name": "  " }),
            400,
            "`name` must not be empty",
        ),
        (
            json!({ "snapshot_id": snapshot, "leads": "some" }),
            400,
            "unknown variant `some`",
        ),
        (json!({ "snapshot_id": -3 }), 400, "positive"),
        (
            json!({ "snapshot_id": 999 }),
            404,
            "snapshot 999 does not exist",
        ),
        (
            json!({ "snapshot_id": snapshot, "account": "other" }),
            400,
            "no SmartLead account \"other\"",
        ),
        (json!({ "resume": 5 }), 404, "no restore 5"),
    ] {
        let r = post(&gw, body.clone(), Some(TOKEN)).await;
        assert_eq!(r.status, status, "{body}: {:?}", r.body);
        let error = r.json()["error"].as_str().unwrap().to_string();
        assert!(error.contains(says), "{body}: {error}");
    }
    assert_eq!(fake.requests().len(), before, "nothing was sent");
    assert!(audit_rows(&gw.store)
        .await
        .iter()
        .all(|r| r.operation != "restore"));

    // A gateway that holds no SmartLead key says how to give it one.
    let keyless = Gateway::start_with(
        &fake.url(),
        Extra {
            tables: "[policy]\ndefault = \"allow\"\n",
            ..Extra::default()
        },
    )
    .await;
    let snapshot = delete(&keyless, &format!("/api/v1/campaigns/102?api_key={KEY}")).await;
    let dry = post(
        &keyless,
        json!({ "snapshot_id": snapshot, "dry_run": true }),
        None,
    )
    .await;
    assert_eq!(dry.status, 200, "a dry run needs no key: {:?}", dry.body);
    let r = post(&keyless, json!({ "snapshot_id": snapshot }), None).await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("set SAFEDELETE_SMARTLEAD_API_KEY"));
}
