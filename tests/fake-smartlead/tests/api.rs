//! The fake's REST surface: authentication, error shapes, campaigns, leads,
//! sub-resources, as a SmartLead client would see them.

mod common;

use common::{api, request, KEY};
use fake_smartlead::{start, FakeConfig};
use serde_json::{json, Value};

#[tokio::test]
async fn a_missing_or_wrong_api_key_gets_401_invalid_api_key() {
    let h = start(FakeConfig::default()).await.unwrap();
    for target in [
        "/api/v1/campaigns",
        "/api/v1/campaigns?api_key=nope",
        "/api/v1/campaigns/101/leads-export?api_key=",
    ] {
        let r = request(&h, "GET", target, &[], b"").await;
        assert_eq!(r.status, 401, "{target}");
        assert_eq!(r.json(), json!({"message": "Invalid API Key"}));
        assert_eq!(
            r.header("content-type"),
            Some("application/json; charset=utf-8")
        );
    }
    // The key is percent-decoded like any query value.
    let r = request(
        &h,
        "GET",
        "/api/v1/campaigns?api_key=sl%5Ftest%5Fkey",
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    h.shutdown().await;
}

#[tokio::test]
async fn unknown_routes_and_campaigns_get_smartleads_404_shapes() {
    let h = start(FakeConfig::default()).await.unwrap();
    let r = api(&h, "GET", "/nope", "").await;
    assert_eq!(
        (r.status, r.json()),
        (404, json!({"error": "Resource not found"}))
    );
    let r = api(&h, "GET", "/campaigns/101/top-level-analytics", "").await;
    assert_eq!(
        (r.status, r.json()),
        (404, json!({"error": "Resource not found"}))
    );
    for path in [
        "/campaigns/999",
        "/campaigns/999/leads-export",
        "/campaigns/999/leads",
    ] {
        let r = api(&h, "GET", path, "").await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(
            r.json(),
            json!({"error": "Campaign not found - Invalid campaign_id."})
        );
    }
    let r = api(&h, "GET", "/campaigns/abc", "").await;
    assert_eq!(
        (r.status, r.json()),
        (422, json!({"error": "Invalid parameters provided"}))
    );
}

#[tokio::test]
async fn campaigns_list_is_a_bare_array_id_descending_and_filters_by_client() {
    let h = start(FakeConfig::default()).await.unwrap();
    for path in ["/campaigns", "/campaigns/"] {
        let r = api(&h, "GET", path, "").await;
        assert_eq!(r.status, 200);
        let ids: Vec<u64> = r
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_u64().unwrap())
            .collect();
        assert_eq!(ids, vec![103, 102, 101]);
    }
    let r = api(&h, "GET", "/campaigns?client_id=7", "").await;
    let list = r.json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "Partners EU");
    assert_eq!(
        api(&h, "GET", "/campaigns?client_id=x", "").await.status,
        422
    );
}

#[tokio::test]
async fn a_campaign_is_a_bare_object_with_the_documented_fields() {
    let h = start(FakeConfig::default()).await.unwrap();
    let r = api(&h, "GET", "/campaigns/101", "").await;
    assert_eq!(r.status, 200);
    let c = r.json();
    for field in [
        "id",
        "user_id",
        "created_at",
        "updated_at",
        "status",
        "name",
        "track_settings",
        "scheduler_cron_value",
        "min_time_btwn_emails",
        "max_leads_per_day",
        "stop_lead_settings",
        "schedule_start_time",
        "enable_ai_esp_matching",
        "send_as_plain_text",
        "follow_up_percentage",
        "unsubscribe_text",
        "parent_campaign_id",
        "client_id",
    ] {
        assert!(c.get(field).is_some(), "missing {field}");
    }
    assert_eq!(
        (c["id"].clone(), c["status"].clone(), c["name"].clone()),
        (json!(101), json!("ACTIVE"), json!("Cold Outreach Q1"))
    );
    assert!(c.get("tags").is_none());
    assert_eq!(
        api(&h, "GET", "/campaigns/101?include_tags=true", "")
            .await
            .json()["tags"],
        json!([])
    );
    assert_eq!(h.campaign(101), Some(c));
    let len: usize = r.header("content-length").unwrap().parse().unwrap();
    assert_eq!(len, r.body.len());
}

#[tokio::test]
async fn head_answers_like_get_without_a_body() {
    let h = start(FakeConfig::default()).await.unwrap();
    let get = api(&h, "GET", "/campaigns/101", "").await;
    let head = api(&h, "HEAD", "/campaigns/101", "").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), get.header("content-length"));
    let export = api(&h, "HEAD", "/campaigns/101/leads-export", "").await;
    assert_eq!(export.status, 200);
    assert_eq!(export.header("content-type"), Some("text/csv"));
    // The connection must still be usable: nothing was sent after the head.
    assert_eq!(api(&h, "GET", "/campaigns/102", "").await.status, 200);
}

#[tokio::test]
async fn status_changes_by_post_and_patch_and_rejects_bad_values() {
    let h = start(FakeConfig::default()).await.unwrap();
    let r = api(&h, "POST", "/campaigns/102/status", r#"{"status":"START"}"#).await;
    assert_eq!((r.status, r.json()), (200, json!({"ok": true})));
    assert_eq!(h.campaign(102).unwrap()["status"], "ACTIVE");
    let r = api(
        &h,
        "PATCH",
        "/campaigns/102/status",
        r#"{"status":"ARCHIVED"}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(h.campaign(102).unwrap()["status"], "ARCHIVED");
    for bad in [
        r#"{"status":"ACTIVE"}"#,
        r#"{"status":"archived"}"#,
        "not json",
        "{}",
    ] {
        let r = api(&h, "POST", "/campaigns/102/status", bad).await;
        assert_eq!(
            (r.status, r.json()),
            (422, json!({"error": "Invalid parameters provided"})),
            "{bad}"
        );
    }
    assert_eq!(h.campaign(102).unwrap()["status"], "ARCHIVED");
}

#[tokio::test]
async fn a_deleted_campaign_is_gone_from_every_route() {
    let h = start(FakeConfig::default()).await.unwrap();
    let r = api(&h, "DELETE", "/campaigns/101", "").await;
    assert_eq!((r.status, r.json()), (200, json!({"ok": true})));
    assert_eq!(h.campaign(101), None);
    for path in [
        "/campaigns/101",
        "/campaigns/101/leads-export",
        "/campaigns/101/leads",
        "/campaigns/101/sequences",
    ] {
        let r = api(&h, "GET", path, "").await;
        assert_eq!(
            (r.status, r.json()),
            (
                404,
                json!({"error": "Campaign not found - Invalid campaign_id."})
            ),
            "{path}"
        );
    }
    assert_eq!(api(&h, "DELETE", "/campaigns/101", "").await.status, 404);
    let ids: Vec<Value> = api(&h, "GET", "/campaigns", "")
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!(103), json!(102)]);
}

#[tokio::test]
async fn create_makes_a_drafted_campaign_and_rejects_unknown_fields() {
    let h = start(FakeConfig::default()).await.unwrap();
    let r = api(
        &h,
        "POST",
        "/campaigns/create",
        r#"{"name":"New one","client_id":7}"#,
    )
    .await;
    let body = r.json();
    assert_eq!(
        (r.status, body["ok"].clone(), body["id"].clone()),
        (200, json!(true), json!(1000))
    );
    let c = h.campaign(1000).unwrap();
    assert_eq!(
        (
            c["status"].clone(),
            c["client_id"].clone(),
            c["name"].clone()
        ),
        (json!("DRAFTED"), json!(7), json!("New one"))
    );
    let r = api(&h, "POST", "/campaigns/create", "").await;
    assert_eq!(
        (r.json()["id"].clone(), r.json()["name"].clone()),
        (json!(1001), json!("Untitled Campaign"))
    );
    assert_eq!(
        api(
            &h,
            "POST",
            "/campaigns/create",
            r#"{"name":"x","status":"ACTIVE"}"#
        )
        .await
        .status,
        422
    );
}

#[tokio::test]
async fn leads_pages_enforce_limits_and_match_the_campaign() {
    let h = start(FakeConfig::with_leads(250)).await.unwrap();
    let r = api(&h, "GET", "/campaigns/101/leads", "").await;
    let page = r.json();
    assert_eq!(
        (
            page["total_leads"].clone(),
            page["offset"].clone(),
            page["limit"].clone()
        ),
        (json!("250"), json!(0), json!(100))
    );
    assert_eq!(page["data"].as_array().unwrap().len(), 100);
    let first = &page["data"][0];
    assert_eq!(first["lead"]["email"], "lead0@example101.com");
    assert!(first["lead"]["custom_fields"].is_object());
    let last = api(&h, "GET", "/campaigns/101/leads?offset=200&limit=100", "")
        .await
        .json();
    assert_eq!(last["data"].as_array().unwrap().len(), 50);
    assert_eq!(last["data"][49]["lead"]["email"], "lead249@example101.com");
    for bad in [
        "limit=0",
        "limit=101",
        "offset=-1",
        "limit=abc",
        "status=WEIRD",
    ] {
        let r = api(&h, "GET", &format!("/campaigns/101/leads?{bad}"), "").await;
        assert_eq!(
            (r.status, r.json()),
            (422, json!({"error": "Invalid parameters provided"})),
            "{bad}"
        );
    }
    let started = api(
        &h,
        "GET",
        "/campaigns/101/leads?status=STARTED&limit=100",
        "",
    )
    .await
    .json();
    assert_eq!(started["total_leads"], "50");
}

#[tokio::test]
async fn adding_leads_caps_at_400_and_reports_the_real_shape() {
    let h = start(FakeConfig::default()).await.unwrap();
    let big: Vec<Value> = (0..401)
        .map(|i| json!({"email": format!("n{i}@x.com")}))
        .collect();
    let r = api(
        &h,
        "POST",
        "/campaigns/103/leads",
        &json!({"lead_list": big}).to_string(),
    )
    .await;
    assert_eq!(r.status, 422);
    assert_eq!(
        r.json(),
        json!({"error": "lead_list cannot exceed 400 leads per request", "provided_count": 401, "max_allowed": 400})
    );
    let body = json!({"lead_list": [
        {"email": "a@x.com", "first_name": "A", "custom_fields": {"k": "v"}},
        {"email": "bad-email"},
        {"email": "a@x.com"},
        {"email": "lead0@example103.com"},
    ], "settings": {"ignore_global_block_list": false}});
    let r = api(&h, "POST", "/campaigns/103/leads", &body.to_string()).await;
    let out = r.json();
    assert_eq!(out["ok"], true);
    assert_eq!(
        (out["upload_count"].clone(), out["total_leads"].clone()),
        (json!(2), json!(2))
    );
    assert_eq!(
        (
            out["invalid_email_count"].clone(),
            out["duplicate_count"].clone()
        ),
        (json!(1), json!(1))
    );
    let again = api(
        &h,
        "POST",
        "/campaigns/103/leads",
        r#"{"lead_list":[{"email":"A@x.com"}]}"#,
    )
    .await
    .json();
    assert_eq!(again["already_added_to_campaign"], 1);
    let csv = String::from_utf8(h.expected_leads_csv(103)).unwrap();
    assert_eq!(csv.lines().count(), 3);
    assert!(csv.contains(r#""a@x.com""#) && csv.contains(r#""{""k"":""v""}""#));
    assert_eq!(
        api(
            &h,
            "POST",
            "/campaigns/103/leads",
            r#"{"lead_list":[{"first_name":"no email"}]}"#
        )
        .await
        .status,
        422
    );
}

#[tokio::test]
async fn webhooks_upsert_and_delete_by_json_body() {
    let h = start(FakeConfig::default()).await.unwrap();
    let hooks = api(&h, "GET", "/campaigns/101/webhooks", "").await.json();
    let id = hooks[0]["id"].as_u64().unwrap();
    for key in ["id", "name", "webhook_url", "event_types", "categories"] {
        assert!(hooks[0].get(key).is_some(), "{key}");
    }
    let new = r#"{"id":null,"name":"n","webhook_url":"https://h.example/x","event_types":["LEAD_UNSUBSCRIBED"],"categories":[]}"#;
    assert_eq!(
        api(&h, "POST", "/campaigns/101/webhooks", new).await.json(),
        json!({"ok": true})
    );
    assert_eq!(
        api(&h, "GET", "/campaigns/101/webhooks", "")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let r = api(
        &h,
        "DELETE",
        "/campaigns/101/webhooks",
        &format!(r#"{{"id":{id}}}"#),
    )
    .await;
    assert_eq!((r.status, r.json()), (200, json!({"ok": true})));
    let left = api(&h, "GET", "/campaigns/101/webhooks", "").await.json();
    assert_eq!(left.as_array().unwrap().len(), 1);
    assert_ne!(left[0]["id"], json!(id));
    let r = api(
        &h,
        "DELETE",
        "/campaigns/101/webhooks",
        &format!(r#"{{"id":{id}}}"#),
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (404, json!({"error": "Resource not found"}))
    );
}

#[tokio::test]
async fn sequences_accounts_analytics_and_statistics_have_client_shapes() {
    let h = start(FakeConfig::default()).await.unwrap();
    let seqs = api(&h, "GET", "/campaigns/101/sequences", "").await.json();
    assert_eq!(seqs.as_array().unwrap().len(), 2);
    assert!(seqs[0]["sequence_variants"].is_array());
    // SmartLead refuses sequence edits while a campaign is ACTIVE (101 is);
    // 102 is PAUSED.
    let save = r#"{"sequences":[{"id":null,"seq_number":1,"subject":"Hi","email_body":"<p>x</p>","seq_delay_details":{"delay_in_days":0}}]}"#;
    assert_eq!(
        api(&h, "POST", "/campaigns/102/sequences", save)
            .await
            .json(),
        json!({"ok": true, "data": []})
    );
    let seqs = api(&h, "GET", "/campaigns/102/sequences", "").await.json();
    assert_eq!(
        (seqs.as_array().unwrap().len(), seqs[0]["subject"].clone()),
        (1, json!("Hi"))
    );

    let accounts = api(&h, "GET", "/campaigns/101/email-accounts", "")
        .await
        .json();
    let first = accounts[0]["id"].as_u64().unwrap();
    assert!(accounts[0]["from_email"].is_string());
    let body = format!(r#"{{"email_account_ids":[{first}]}}"#);
    assert_eq!(
        api(&h, "DELETE", "/campaigns/101/email-accounts", &body)
            .await
            .json(),
        json!({"ok": true})
    );
    // Campaign 101 also holds the shared account 9001, which stays attached.
    assert_eq!(
        api(&h, "GET", "/campaigns/101/email-accounts", "")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let a = api(&h, "GET", "/campaigns/101/analytics", "").await.json();
    assert_eq!(
        (a["id"].clone(), a["total_count"].clone()),
        (json!(101), json!("25"))
    );
    assert!(a["sent_count"].is_string());
    assert_eq!(a["campaign_lead_stats"]["total"], 25);
    assert_eq!(a["campaign_lead_stats"]["interested"], 9);

    let s = api(
        &h,
        "GET",
        "/campaigns/101/statistics?offset=20&limit=1000",
        "",
    )
    .await
    .json();
    assert_eq!(
        (
            s["total_stats"].clone(),
            s["data"].as_array().unwrap().len()
        ),
        (json!("25"), 5)
    );
    assert!(s["data"][0].get("lead_email").is_some());
    assert_eq!(
        api(&h, "GET", "/campaigns/101/statistics?limit=1001", "")
            .await
            .status,
        422
    );
    let _ = KEY;
}
