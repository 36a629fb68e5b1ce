//! The per-lead and account-wide routes, destructive ones above all: each read
//! shape, each delete or change seen afterwards through the reads, the CSV and
//! the handle's accessors, and the 401/404/422 answers.

mod common;

use common::{api, fields, request, Resp};
use fake_smartlead::{start, FakeConfig, FakeHandle};
use serde_json::{json, Value};

/// Lead index 5 of campaign 101: two steps sent, one reply, status STARTED.
const REPLIED: u64 = 1_010_000_006;

fn answer(r: &Resp) -> (u16, Value) {
    (r.status, r.json())
}

fn lead_not_found() -> (u16, Value) {
    (404, json!({"error": "Lead not found"}))
}

fn invalid() -> (u16, Value) {
    (422, json!({"error": "Invalid parameters provided"}))
}

/// The `data` entry of campaign `campaign`'s leads list for `lead_id`.
async fn list_entry(h: &FakeHandle, campaign: u64, lead_id: u64) -> Option<Value> {
    let page = api(h, "GET", &format!("/campaigns/{campaign}/leads"), "")
        .await
        .json();
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["lead"]["id"] == json!(lead_id))
        .cloned()
}

/// The export row of `lead_id` in campaign `campaign`, as fields.
async fn csv_row(h: &FakeHandle, campaign: u64, lead_id: u64) -> Option<Vec<String>> {
    let r = api(h, "GET", &format!("/campaigns/{campaign}/leads-export"), "").await;
    assert_eq!(r.body, h.expected_leads_csv(campaign));
    let prefix = format!("\"{lead_id}\",");
    r.text()
        .lines()
        .find(|l| l.starts_with(&prefix))
        .map(fields)
}

#[tokio::test]
async fn every_new_route_needs_the_api_key() {
    let h = start(FakeConfig::default()).await.unwrap();
    for (method, path) in [
        ("GET", "/leads/1010000001"),
        ("GET", "/leads/1010000001/campaigns"),
        ("DELETE", "/leads/1010000001"),
        ("POST", "/leads/1010000001/unsubscribe"),
        ("GET", "/campaigns/101/leads/1010000001/message-history"),
        ("POST", "/campaigns/101/leads/1010000001/pause"),
        ("GET", "/email-accounts"),
        ("DELETE", "/email-accounts/9001"),
        ("DELETE", "/email-accounts/tag-mapping"),
        ("GET", "/lead-list/501"),
        ("DELETE", "/lead-list/501"),
        ("GET", "/webhook"),
        ("DELETE", "/webhook/delete"),
        ("GET", "/client/api-key"),
        ("DELETE", "/client/api-key/301"),
        ("GET", "/leads/get-domain-block-list"),
        ("DELETE", "/leads/delete-domain-block-list?id=701"),
        ("DELETE", "/crm/leads/tags/5"),
    ] {
        let sep = if path.contains('?') { '&' } else { '?' };
        for target in [
            format!("/api/v1{path}"),
            format!("/api/v1{path}{sep}api_key=wrong"),
        ] {
            let r = request(&h, method, &target, &[], b"").await;
            assert_eq!(
                answer(&r),
                (401, json!({"message": "Invalid API Key"})),
                "{method} {target}"
            );
        }
    }
    // Nothing was changed by the refused calls.
    assert!(h.lead(1_010_000_001).is_some());
    assert!(h.email_account(9001).is_some() && h.lead_list(501).is_some());
    assert!(h.client_api_key(301).is_some() && h.domain_block(701).is_some());
}

#[tokio::test]
async fn a_lead_reads_account_wide_with_its_campaign() {
    let h = start(FakeConfig::default()).await.unwrap();
    let id = h.first_lead_id(101).unwrap();
    assert_eq!(id, 1_010_000_001);
    for path in [format!("/leads/{id}"), format!("/leads/{id}/")] {
        let r = api(&h, "GET", &path, "").await;
        assert_eq!(r.status, 200);
        let body = r.json();
        assert_eq!(
            (body["ok"].clone(), body["message"].clone()),
            (json!(true), json!("Lead details fetched successfully"))
        );
        let lead = &body["data"][0];
        assert_eq!(body["data"].as_array().unwrap().len(), 1);
        let mut keys: Vec<&str> = lead
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "company_name",
                "company_url",
                "created_at",
                "custom_fields",
                "email",
                "first_name",
                "id",
                "is_unsubscribed",
                "last_name",
                "linkedin_profile",
                "location",
                "phone_number",
                "unsubscribed_client_id_map",
                "website",
            ]
        );
        // The same values as the campaign's leads list.
        let entry = list_entry(&h, 101, id).await.unwrap();
        for (k, v) in entry["lead"].as_object().unwrap() {
            assert_eq!(&lead[k], v, "{k}");
        }
        assert_eq!(lead["created_at"], entry["created_at"]);
        assert_eq!(lead["email"], "lead0@example101.com");
        assert_eq!(h.lead(id).as_ref(), Some(lead));
    }

    let r = api(&h, "GET", &format!("/leads/{REPLIED}/campaigns"), "").await;
    assert_eq!(
        answer(&r),
        (
            200,
            json!([{"id": 101, "name": "Cold Outreach Q1", "status": "ACTIVE",
                    "lead_status": "STARTED", "campaign_lead_map_id": 900_000_000_000u64 + REPLIED}])
        )
    );
    let r = api(&h, "GET", "/leads/1020000001/campaigns", "").await;
    assert_eq!(r.json()[0]["id"], 102);

    for path in [
        "/leads/1010000026",
        "/leads/1030000001",
        "/leads/999",
        "/leads/0",
    ] {
        assert_eq!(
            answer(&api(&h, "GET", path, "").await),
            lead_not_found(),
            "{path}"
        );
        let campaigns = format!("{path}/campaigns");
        assert_eq!(
            answer(&api(&h, "GET", &campaigns, "").await),
            lead_not_found()
        );
    }
    for path in ["/leads/abc", "/leads/abc/campaigns", "/leads/-1"] {
        assert_eq!(answer(&api(&h, "GET", path, "").await), invalid(), "{path}");
    }
    assert_eq!(h.lead(1_030_000_001), None);
    assert_eq!(h.first_lead_id(103), None);
    assert_eq!(h.first_lead_id(999), None);
}

#[tokio::test]
async fn message_history_has_one_sent_entry_per_step_and_the_reply() {
    let h = start(FakeConfig::default()).await.unwrap();
    let path = format!("/campaigns/101/leads/{REPLIED}/message-history");
    let r = api(&h, "GET", &path, "").await;
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(body["from"], "alice1011@sender.example.com");
    assert_eq!(body["to"], "lead5@example101.com");
    let history = body["history"].as_array().unwrap();
    let kinds: Vec<&str> = history
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["SENT", "SENT", "REPLY"]);
    for (n, entry) in history.iter().enumerate() {
        for key in [
            "message_id",
            "stats_id",
            "time",
            "email_body",
            "subject",
            "email_seq_number",
        ] {
            assert!(entry[key].is_string(), "{n} {key}: {entry}");
        }
        let id = entry["message_id"].as_str().unwrap();
        assert!(
            id.starts_with('<') && id.ends_with("@mail.example.com>"),
            "{id}"
        );
        assert!(entry["time"].as_str().unwrap().ends_with(".000Z"));
    }
    assert_eq!(history[0]["email_seq_number"], "1");
    assert_eq!(history[1]["email_seq_number"], "2");
    assert_eq!(history[0]["email_body"], "<p>Step 1 for campaign 101</p>");
    assert_eq!(history[0]["subject"], "Hello First5");
    // Deterministic: the same bytes every time.
    assert_eq!(api(&h, "GET", &path, "").await.body, r.body);

    // Lead 0: nothing sent, no reply.
    let r = api(
        &h,
        "GET",
        "/campaigns/101/leads/1010000001/message-history",
        "",
    )
    .await;
    assert_eq!(r.json()["history"], json!([]));
    // Lead 1: one step, one reply.
    let r = api(
        &h,
        "GET",
        "/campaigns/101/leads/1010000002/message-history",
        "",
    )
    .await;
    assert_eq!(r.json()["history"].as_array().unwrap().len(), 2);

    // Not in that campaign, gone, or never there.
    let wrong = format!("/campaigns/102/leads/{REPLIED}/message-history");
    assert_eq!(answer(&api(&h, "GET", &wrong, "").await), lead_not_found());
    api(&h, "DELETE", &format!("/campaigns/101/leads/{REPLIED}"), "").await;
    assert_eq!(answer(&api(&h, "GET", &path, "").await), lead_not_found());
    let bad = "/campaigns/101/leads/x/message-history";
    assert_eq!(answer(&api(&h, "GET", bad, "").await), invalid());
    let r = api(&h, "GET", "/campaigns/999/leads/1/message-history", "").await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn pause_and_resume_change_the_lead_status_everywhere() {
    let h = start(FakeConfig::default()).await.unwrap();
    let id = h.first_lead_id(101).unwrap();
    assert_eq!(h.lead_status(101, id).as_deref(), Some("STARTED"));
    let paused_before = api(&h, "GET", "/campaigns/101/leads?status=PAUSED", "")
        .await
        .json()["total_leads"]
        .clone();
    assert_eq!(paused_before, "5");

    let r = api(&h, "POST", &format!("/campaigns/101/leads/{id}/pause"), "").await;
    assert_eq!(
        answer(&r),
        (200, json!({"ok": true, "data": "Lead paused successfully"}))
    );
    assert_eq!(h.lead_status(101, id).as_deref(), Some("PAUSED"));
    assert_eq!(list_entry(&h, 101, id).await.unwrap()["status"], "PAUSED");
    assert_eq!(csv_row(&h, 101, id).await.unwrap()[2], "PAUSED");
    let campaigns = api(&h, "GET", &format!("/leads/{id}/campaigns"), "")
        .await
        .json();
    assert_eq!(campaigns[0]["lead_status"], "PAUSED");
    let paused = api(&h, "GET", "/campaigns/101/leads?status=PAUSED", "")
        .await
        .json();
    assert_eq!(paused["total_leads"], "6");

    let r = api(&h, "POST", &format!("/campaigns/101/leads/{id}/resume"), "").await;
    assert_eq!(
        answer(&r),
        (
            200,
            json!({"ok": true, "data": "Lead resumed successfully"})
        )
    );
    assert_eq!(h.lead_status(101, id).as_deref(), Some("INPROGRESS"));
    assert_eq!(csv_row(&h, 101, id).await.unwrap()[2], "INPROGRESS");
    // Other leads are untouched.
    assert_eq!(h.lead_status(101, id + 1).as_deref(), Some("INPROGRESS"));
    assert_eq!(h.lead_status(101, id + 2).as_deref(), Some("COMPLETED"));

    for action in ["pause", "resume", "unsubscribe"] {
        for lead in ["1020000001", "1010000026", "5"] {
            let path = format!("/campaigns/101/leads/{lead}/{action}");
            assert_eq!(
                answer(&api(&h, "POST", &path, "").await),
                lead_not_found(),
                "{path}"
            );
        }
        let path = format!("/campaigns/101/leads/x1/{action}");
        assert_eq!(
            answer(&api(&h, "POST", &path, "").await),
            invalid(),
            "{path}"
        );
    }
    assert_eq!(
        h.lead_status(102, 1_020_000_001).as_deref(),
        Some("STARTED")
    );
    assert_eq!(h.lead_status(102, id), None);
    // The category route still just answers.
    let r = api(
        &h,
        "POST",
        &format!("/campaigns/101/leads/{id}/category"),
        "{}",
    )
    .await;
    assert_eq!(answer(&r), (200, json!({"ok": true})));
}

#[tokio::test]
async fn unsubscribing_in_a_campaign_shows_in_the_list_csv_lead_and_analytics() {
    let h = start(FakeConfig::default()).await.unwrap();
    let id = h.first_lead_id(101).unwrap();
    assert_eq!(h.lead_unsubscribed(101, id), Some(false));
    let before = api(&h, "GET", "/campaigns/101/analytics", "").await.json();
    assert_eq!(before["unsubscribed_count"], "0");

    let r = api(
        &h,
        "POST",
        &format!("/campaigns/101/leads/{id}/unsubscribe"),
        "",
    )
    .await;
    assert_eq!(
        answer(&r),
        (
            200,
            json!({"ok": true, "data": "Lead unsubscribed successfully"})
        )
    );
    assert_eq!(h.lead_unsubscribed(101, id), Some(true));
    let entry = list_entry(&h, 101, id).await.unwrap();
    assert_eq!(entry["lead"]["is_unsubscribed"], true);
    assert_eq!(entry["status"], "STARTED", "unsubscribing keeps the status");
    assert_eq!(csv_row(&h, 101, id).await.unwrap()[16], "true");
    assert_eq!(h.lead(id).unwrap()["is_unsubscribed"], true);
    let after = api(&h, "GET", "/campaigns/101/analytics", "").await.json();
    assert_eq!(after["unsubscribed_count"], "1");
    assert_eq!(h.lead_unsubscribed(101, id + 1), Some(false));
    // Twice is fine.
    let r = api(
        &h,
        "POST",
        &format!("/campaigns/101/leads/{id}/unsubscribe"),
        "",
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn unsubscribing_a_lead_account_wide_reaches_its_campaign() {
    let h = start(FakeConfig::default()).await.unwrap();
    let id = h.first_lead_id(102).unwrap();
    let r = api(&h, "POST", &format!("/leads/{id}/unsubscribe"), "").await;
    assert_eq!(answer(&r), (200, json!({"ok": true})));
    assert_eq!(h.lead_unsubscribed(102, id), Some(true));
    assert_eq!(
        list_entry(&h, 102, id).await.unwrap()["lead"]["is_unsubscribed"],
        true
    );
    let lead = api(&h, "GET", &format!("/leads/{id}"), "").await.json();
    assert_eq!(lead["data"][0]["is_unsubscribed"], true);
    assert_eq!(csv_row(&h, 102, id).await.unwrap()[16], "true");

    let r = api(&h, "POST", "/leads/1020000099/unsubscribe", "").await;
    assert_eq!(answer(&r), lead_not_found());
    let r = api(&h, "POST", "/leads/nope/unsubscribe", "").await;
    assert_eq!(answer(&r), invalid());
}

#[tokio::test]
async fn deleting_a_lead_account_wide_removes_it_from_its_campaign() {
    let h = start(FakeConfig::default()).await.unwrap();
    let id = h.first_lead_id(101).unwrap();
    let r = api(&h, "DELETE", &format!("/leads/{id}"), "").await;
    assert_eq!(answer(&r), (200, json!({"ok": true})));
    assert_eq!(h.lead(id), None);
    assert_eq!(h.lead_status(101, id), None);
    assert_eq!(h.lead_unsubscribed(101, id), None);
    assert_eq!(h.first_lead_id(101), Some(id + 1));
    let page = api(&h, "GET", "/campaigns/101/leads", "").await.json();
    assert_eq!(page["total_leads"], "24");
    assert!(list_entry(&h, 101, id).await.is_none());
    assert!(csv_row(&h, 101, id).await.is_none());
    for (method, path) in [
        ("GET", format!("/leads/{id}")),
        ("GET", format!("/leads/{id}/campaigns")),
        ("DELETE", format!("/leads/{id}")),
        ("POST", format!("/leads/{id}/unsubscribe")),
        ("POST", format!("/campaigns/101/leads/{id}/pause")),
    ] {
        assert_eq!(
            answer(&api(&h, method, &path, "").await),
            lead_not_found(),
            "{path}"
        );
    }
    // The campaign route keeps its own 404 shape.
    let r = api(&h, "DELETE", &format!("/campaigns/101/leads/{id}"), "").await;
    assert_eq!(answer(&r), (404, json!({"error": "Resource not found"})));
    assert_eq!(
        answer(&api(&h, "DELETE", "/leads/xyz", "").await),
        invalid()
    );
    // A campaign delete of a lead shows in the account-wide read too.
    let next = id + 1;
    let r = api(&h, "DELETE", &format!("/campaigns/101/leads/{next}"), "").await;
    assert_eq!(r.status, 200);
    let r = api(&h, "GET", &format!("/leads/{next}"), "").await;
    assert_eq!(answer(&r), lead_not_found());
    // Unknown routes under /leads stay 404.
    let r = api(&h, "PATCH", &format!("/leads/{}", id + 2), "").await;
    assert_eq!(answer(&r), (404, json!({"error": "Resource not found"})));
    let r = api(&h, "GET", "/leads", "").await;
    assert_eq!(answer(&r), (404, json!({"error": "Resource not found"})));
}

#[tokio::test]
async fn email_accounts_are_account_wide_and_one_is_shared() {
    let h = start(FakeConfig::default()).await.unwrap();
    assert_eq!(
        h.campaign_email_account_ids(101),
        Some(vec![1011, 1012, 9001])
    );
    assert_eq!(
        h.campaign_email_account_ids(102),
        Some(vec![1021, 1022, 9001])
    );
    assert_eq!(h.campaign_email_account_ids(103), Some(vec![1031, 1032]));
    assert_eq!(h.campaign_email_account_ids(999), None);

    // A campaign's own accounts keep their full shape.
    let own = api(&h, "GET", "/campaigns/103/email-accounts", "")
        .await
        .json();
    assert_eq!(
        own[0],
        json!({
            "id": 1031, "from_name": "Alice Sender", "from_email": "alice1031@sender.example.com",
            "username": "alice1031@sender.example.com", "user_id": 196_026, "type": "SMTP",
            "smtp_host": "smtp.sender.example.com", "smtp_port": 587, "message_per_day": 40,
            "daily_sent_count": 0, "is_smtp_success": true, "is_imap_success": true,
        })
    );
    assert_eq!(own[1]["from_email"], "bob1032@sender.example.com");

    let all = api(&h, "GET", "/email-accounts", "").await.json();
    let ids: Vec<u64> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1011, 1012, 1021, 1022, 1031, 1032, 9001]);
    let slash = api(&h, "GET", "/email-accounts/", "").await.json();
    assert_eq!(slash, all);
    let page = api(&h, "GET", "/email-accounts?offset=5&limit=100", "")
        .await
        .json();
    assert_eq!(page, json!([all[5].clone(), all[6].clone()]));
    let page = api(&h, "GET", "/email-accounts?offset=1&limit=2", "")
        .await
        .json();
    assert_eq!(page, json!([all[1].clone(), all[2].clone()]));
    for bad in ["limit=101", "limit=0", "limit=x", "offset=-1"] {
        let r = api(&h, "GET", &format!("/email-accounts?{bad}"), "").await;
        assert_eq!(answer(&r), invalid(), "{bad}");
    }

    let shared = api(&h, "GET", "/email-accounts/9001", "").await;
    assert_eq!(shared.status, 200);
    let shared = shared.json();
    assert_eq!(shared["from_email"], "shared@outreach.example.com");
    assert_eq!(shared, all[6]);
    assert_eq!(h.email_account(9001), Some(shared.clone()));
    for campaign in [101, 102] {
        let list = api(
            &h,
            "GET",
            &format!("/campaigns/{campaign}/email-accounts"),
            "",
        )
        .await
        .json();
        assert_eq!(list[2], shared, "{campaign}");
    }
    let r = api(&h, "GET", "/email-accounts/4242", "").await;
    assert_eq!(
        answer(&r),
        (404, json!({"error": "Email account not found"}))
    );
    assert_eq!(
        answer(&api(&h, "GET", "/email-accounts/x", "").await),
        invalid()
    );
}

#[tokio::test]
async fn deleting_an_email_account_detaches_it_from_every_campaign() {
    let h = start(FakeConfig::default()).await.unwrap();
    let r = api(&h, "DELETE", "/email-accounts/9001", "").await;
    assert_eq!(answer(&r), (200, json!({"ok": true})));
    assert_eq!(h.email_account(9001), None);
    assert_eq!(h.campaign_email_account_ids(101), Some(vec![1011, 1012]));
    assert_eq!(h.campaign_email_account_ids(102), Some(vec![1021, 1022]));
    let list = api(&h, "GET", "/campaigns/102/email-accounts", "")
        .await
        .json();
    assert_eq!(list.as_array().unwrap().len(), 2);
    let r = api(&h, "GET", "/email-accounts/9001", "").await;
    assert_eq!(
        answer(&r),
        (404, json!({"error": "Email account not found"}))
    );
    let r = api(&h, "DELETE", "/email-accounts/9001", "").await;
    assert_eq!(
        answer(&r),
        (404, json!({"error": "Email account not found"}))
    );
    assert_eq!(
        answer(&api(&h, "DELETE", "/email-accounts/x", "").await),
        invalid()
    );
    let all = api(&h, "GET", "/email-accounts", "").await.json();
    assert_eq!(all.as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn detaching_from_a_campaign_keeps_the_account_and_the_other_campaign() {
    let h = start(FakeConfig::default()).await.unwrap();
    let body = r#"{"email_account_ids":[9001, 1012]}"#;
    let r = api(&h, "DELETE", "/campaigns/101/email-accounts", body).await;
    assert_eq!(answer(&r), (200, json!({"ok": true})));
    assert_eq!(h.campaign_email_account_ids(101), Some(vec![1011]));
    assert_eq!(
        h.campaign_email_account_ids(102),
        Some(vec![1021, 1022, 9001])
    );
    assert!(h.email_account(9001).is_some() && h.email_account(1012).is_some());
    let r = api(&h, "GET", "/email-accounts/1012", "").await;
    assert_eq!(r.status, 200);
    for bad in [
        "",
        "{}",
        "not json",
        r#"{"email_account_ids":9001}"#,
        r#"{"email_account_ids":[0]}"#,
        r#"{"email_account_ids":[-1]}"#,
        r#"{"email_account_ids":["1011"]}"#,
        r#"{"email_account_ids":[1011, 1.5]}"#,
    ] {
        let r = api(&h, "DELETE", "/campaigns/101/email-accounts", bad).await;
        assert_eq!(answer(&r), invalid(), "{bad}");
    }
    assert_eq!(h.campaign_email_account_ids(101), Some(vec![1011]));
    // Attaching a known account reuses the stored object.
    let r = api(
        &h,
        "POST",
        "/campaigns/103/email-accounts",
        r#"{"email_account_ids":[9001]}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    let list = api(&h, "GET", "/campaigns/103/email-accounts", "")
        .await
        .json();
    assert_eq!(list[2], h.email_account(9001).unwrap());

    let r = api(
        &h,
        "DELETE",
        "/email-accounts/tag-mapping",
        r#"{"email_account_ids":[1011],"tag_ids":[3]}"#,
    )
    .await;
    assert_eq!(answer(&r), (200, json!({"ok": true})));
    let r = api(&h, "DELETE", "/email-accounts/tag-mapping", "not json").await;
    assert_eq!(answer(&r), invalid());
}

#[tokio::test]
async fn lead_lists_read_page_and_delete() {
    let h = start(FakeConfig::default()).await.unwrap();
    let r = api(&h, "GET", "/lead-list/501", "").await;
    let list = r.json();
    assert_eq!(r.status, 200);
    assert_eq!(
        (
            list["id"].clone(),
            list["name"].clone(),
            list["lead_count"].clone()
        ),
        (json!(501), json!("Imported March"), json!(3))
    );
    assert!(list["created_at"].is_string());
    assert_eq!(h.lead_list(501), Some(list));

    let page = api(&h, "GET", "/lead-list/501/leads", "").await.json();
    assert_eq!(
        (
            page["total_leads"].clone(),
            page["offset"].clone(),
            page["limit"].clone()
        ),
        (json!("3"), json!(0), json!(100))
    );
    let emails: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["email"].as_str().unwrap())
        .collect();
    assert_eq!(
        emails,
        [
            "ann@list.example.com",
            "ben@list.example.com",
            "cy@list.example.com"
        ]
    );
    let ids: Vec<u64> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [50101, 50102, 50103]);
    for key in ["id", "email", "first_name", "last_name", "company_name"] {
        assert!(page["data"][0].get(key).is_some(), "{key}");
    }
    let page = api(&h, "GET", "/lead-list/501/leads?offset=2&limit=1", "")
        .await
        .json();
    assert_eq!(
        (
            page["total_leads"].clone(),
            page["offset"].clone(),
            page["limit"].clone()
        ),
        (json!("3"), json!(2), json!(1))
    );
    assert_eq!(page["data"][0]["id"], 50103);
    for bad in ["limit=101", "limit=0", "offset=x"] {
        let r = api(&h, "GET", &format!("/lead-list/501/leads?{bad}"), "").await;
        assert_eq!(answer(&r), invalid(), "{bad}");
    }

    let gone = (404, json!({"error": "Lead list not found"}));
    for path in ["/lead-list/502", "/lead-list/502/leads"] {
        assert_eq!(answer(&api(&h, "GET", path, "").await), gone, "{path}");
    }
    assert_eq!(answer(&api(&h, "GET", "/lead-list/x", "").await), invalid());
    let r = api(&h, "DELETE", "/lead-list/501", "").await;
    assert_eq!(answer(&r), (200, json!({"ok": true})));
    assert_eq!(h.lead_list(501), None);
    for path in ["/lead-list/501", "/lead-list/501/leads"] {
        assert_eq!(answer(&api(&h, "GET", path, "").await), gone, "{path}");
    }
    assert_eq!(answer(&api(&h, "DELETE", "/lead-list/501", "").await), gone);
}

#[tokio::test]
async fn global_webhooks_list_and_delete_by_body() {
    let h = start(FakeConfig::default()).await.unwrap();
    let hook = json!({"id": 9101, "name": "All replies", "webhook_url": "https://hooks.example.com/smartlead/all", "event_types": ["EMAIL_REPLY"], "categories": []});
    assert_eq!(
        answer(&api(&h, "GET", "/webhook", "").await),
        (200, json!([hook.clone()]))
    );
    assert_eq!(h.global_webhook(9101), Some(hook));
    // Campaign webhooks are a different thing.
    assert_eq!(h.campaign_webhook_ids(101), Some(vec![10101]));
    assert_eq!(h.campaign_webhook_ids(999), None);

    for bad in ["", "{}", r#"{"id":"9101"}"#, r#"{"id":-3}"#, "nope"] {
        let r = api(&h, "DELETE", "/webhook/delete", bad).await;
        assert_eq!(answer(&r), invalid(), "{bad}");
    }
    let r = api(&h, "DELETE", "/webhook/delete", r#"{"id":10101}"#).await;
    assert_eq!(answer(&r), (404, json!({"error": "Webhook not found"})));
    assert_eq!(h.campaign_webhook_ids(101), Some(vec![10101]));
    let r = api(&h, "DELETE", "/webhook/delete", r#"{"id":9101}"#).await;
    assert_eq!(answer(&r), (200, json!({"ok": true})));
    assert_eq!(h.global_webhook(9101), None);
    assert_eq!(
        answer(&api(&h, "GET", "/webhook", "").await),
        (200, json!([]))
    );
    let r = api(&h, "DELETE", "/webhook/delete", r#"{"id":9101}"#).await;
    assert_eq!(answer(&r), (404, json!({"error": "Webhook not found"})));
    // The campaign webhook delete is unchanged, and visible through the handle.
    let r = api(&h, "DELETE", "/campaigns/101/webhooks", r#"{"id":10101}"#).await;
    assert_eq!(r.status, 200);
    assert_eq!(h.campaign_webhook_ids(101), Some(vec![]));
}

#[tokio::test]
async fn client_api_keys_are_listed_with_their_keys_and_revoked_by_id() {
    let h = start(FakeConfig::default()).await.unwrap();
    let list = api(&h, "GET", "/client/api-key", "").await.json();
    let keys: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["api_key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["clk_live_A_0123456789abcdef", "clk_live_B_fedcba9876543210"]
    );
    assert_eq!(
        (
            list[0]["id"].clone(),
            list[0]["name"].clone(),
            list[0]["client_id"].clone(),
            list[0]["status"].clone()
        ),
        (json!(301), json!("Client A"), json!(11), json!("active"))
    );
    assert_eq!(
        (list[1]["id"].clone(), list[1]["client_id"].clone()),
        (json!(302), json!(12))
    );
    assert!(list[1]["created_at"].is_string());
    assert_eq!(h.client_api_key(302), Some(list[1].clone()));

    let r = api(&h, "DELETE", "/client/api-key/301", "").await;
    assert_eq!(answer(&r), (200, json!({"ok": true})));
    assert_eq!(h.client_api_key(301), None);
    let list = api(&h, "GET", "/client/api-key", "").await.json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let r = api(&h, "DELETE", "/client/api-key/301", "").await;
    assert_eq!(answer(&r), (404, json!({"error": "API key not found"})));
    assert_eq!(
        answer(&api(&h, "DELETE", "/client/api-key/x", "").await),
        invalid()
    );
}

#[tokio::test]
async fn the_domain_block_list_wins_over_lead_ids_and_deletes_by_query() {
    let h = start(FakeConfig::default()).await.unwrap();
    let r = api(&h, "GET", "/leads/get-domain-block-list", "").await;
    assert_eq!(r.status, 200);
    let list = r.json();
    let domains: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["domain"].as_str().unwrap())
        .collect();
    assert_eq!(domains, ["competitor.example", "blocked@person.example"]);
    assert_eq!(
        (list[0]["id"].clone(), list[0]["client_id"].clone()),
        (json!(701), Value::Null)
    );
    assert_eq!(h.domain_block(702), Some(list[1].clone()));

    for bad in ["", "?id=", "?id=abc", "?other=701"] {
        let r = api(
            &h,
            "DELETE",
            &format!("/leads/delete-domain-block-list{bad}"),
            "",
        )
        .await;
        assert_eq!(answer(&r), invalid(), "{bad}");
    }
    let r = api(&h, "DELETE", "/leads/delete-domain-block-list?id=701", "").await;
    assert_eq!(answer(&r), (200, json!({"ok": true})));
    assert_eq!(h.domain_block(701), None);
    let list = api(&h, "GET", "/leads/get-domain-block-list/", "")
        .await
        .json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let r = api(&h, "DELETE", "/leads/delete-domain-block-list?id=701", "").await;
    assert_eq!(
        answer(&r),
        (404, json!({"error": "Block list entry not found"}))
    );
    // Other methods on these names are unknown routes, not lead ids.
    let r = api(&h, "GET", "/leads/delete-domain-block-list", "").await;
    assert_eq!(answer(&r), (404, json!({"error": "Resource not found"})));
}

#[tokio::test]
async fn crm_tag_deletes_are_acknowledged_and_other_paths_stay_404() {
    let h = start(FakeConfig::default()).await.unwrap();
    let r = api(&h, "DELETE", "/crm/leads/tags/77", "").await;
    assert_eq!(answer(&r), (200, json!({"ok": true})));
    let not_found = (404, json!({"error": "Resource not found"}));
    for (method, path) in [
        ("GET", "/crm/leads/tags/77"),
        ("GET", "/lead-list"),
        ("POST", "/webhook"),
        ("GET", "/client"),
        ("PUT", "/email-accounts/9001"),
        ("GET", "/email-accounts/9001/extra"),
    ] {
        assert_eq!(
            answer(&api(&h, method, path, "").await),
            not_found,
            "{method} {path}"
        );
    }
}
