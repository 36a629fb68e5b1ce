//! The write API a restore replays (create, settings, schedule, sequences,
//! webhooks, sender accounts, leads, status) and the faults it must survive:
//! shapes, limits, and that every write shows on the read routes.

mod common;

use common::{api, Resp};
use fake_smartlead::{faults, start, FakeConfig, FakeHandle, FaultRule};
use serde_json::{json, Value};

async fn post(h: &FakeHandle, path: &str, body: Value) -> Resp {
    api(h, "POST", path, &body.to_string()).await
}

async fn create(h: &FakeHandle, name: &str) -> u64 {
    let r = post(h, "/campaigns/create", json!({"name": name})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["id"].as_u64().unwrap()
}

fn joi(r: &Resp, message: &str) {
    assert_eq!((r.status, r.json()), (422, json!({"error": message})));
}

#[tokio::test]
async fn a_created_campaign_is_empty_drafted_and_readable_everywhere() {
    let h = start(FakeConfig::default()).await.unwrap();
    let r = post(&h, "/campaigns/create", json!({"client_id": 7})).await;
    let body = r.json();
    assert_eq!(
        (body["ok"].clone(), body["name"].clone()),
        (json!(true), json!("Untitled Campaign"))
    );
    assert!(body["created_at"].as_str().unwrap().ends_with('Z'));
    let id = body["id"].as_u64().unwrap();

    let c = api(&h, "GET", &format!("/campaigns/{id}"), "").await.json();
    for key in [
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
        assert!(c.get(key).is_some(), "{key}");
    }
    assert_eq!(
        (c["status"].clone(), c["client_id"].clone()),
        (json!("DRAFTED"), json!(7))
    );
    for sub in ["sequences", "webhooks", "email-accounts"] {
        let r = api(&h, "GET", &format!("/campaigns/{id}/{sub}"), "").await;
        assert_eq!((r.status, r.json()), (200, json!([])), "{sub}");
    }
    let leads = api(&h, "GET", &format!("/campaigns/{id}/leads"), "")
        .await
        .json();
    assert_eq!(
        (leads["total_leads"].clone(), leads["data"].clone()),
        (json!("0"), json!([]))
    );
    let csv = api(&h, "GET", &format!("/campaigns/{id}/leads-export"), "")
        .await
        .text();
    assert_eq!(csv.lines().count(), 1);
    assert!(csv.starts_with("\"id\",\"campaign_lead_map_id\""));
    let state = h.campaign_state(id).unwrap();
    assert!(state.sequences.is_empty() && state.webhooks.is_empty() && state.leads.is_empty());
    assert!(state.email_account_ids.is_empty());
}

#[tokio::test]
async fn settings_and_schedule_land_on_the_campaign_object() {
    let h = start(FakeConfig::default()).await.unwrap();
    let id = create(&h, "Restored").await;
    let path = format!("/campaigns/{id}/settings");
    let r = post(
        &h,
        &path,
        json!({
            "track_settings": ["DONT_TRACK_EMAIL_OPEN", "DONT_LINK_CLICK"],
            "stop_lead_settings": "CLICK_ON_A_LINK", "unsubscribe_text": "Bye",
            "send_as_plain_text": true, "follow_up_percentage": 40, "client_id": 22,
            "enable_ai_esp_matching": true,
        }),
    )
    .await;
    assert_eq!((r.status, r.json()), (200, json!({"ok": true})));
    let r = post(
        &h,
        &format!("/campaigns/{id}/schedule"),
        json!({
            "timezone": "Europe/London", "days_of_the_week": [1, 3, 5], "start_hour": "08:30",
            "end_hour": "17:00", "min_time_btw_emails": 15, "max_new_leads_per_day": 250,
            "schedule_start_time": "2026-01-05T09:00:00.000Z",
        }),
    )
    .await;
    assert_eq!((r.status, r.json()), (200, json!({"ok": true})));

    let c = api(&h, "GET", &format!("/campaigns/{id}"), "").await.json();
    assert_eq!(
        c["track_settings"],
        json!(["DONT_EMAIL_OPEN", "DONT_LINK_CLICK"])
    );
    assert_eq!(c["stop_lead_settings"], "CLICK_ON_A_LINK");
    assert_eq!(c["unsubscribe_text"], "Bye");
    assert_eq!(
        (
            c["send_as_plain_text"].clone(),
            c["enable_ai_esp_matching"].clone()
        ),
        (json!(true), json!(true))
    );
    assert_eq!(
        (c["follow_up_percentage"].clone(), c["client_id"].clone()),
        (json!(40), json!(22))
    );
    assert_eq!(
        c["scheduler_cron_value"],
        json!({"tz": "Europe/London", "days": [1, 3, 5], "startHour": "08:30", "endHour": "17:00"})
    );
    assert_eq!(
        (
            c["min_time_btwn_emails"].clone(),
            c["max_leads_per_day"].clone()
        ),
        (json!(15), json!(250))
    );
    assert_eq!(c["schedule_start_time"], "2026-01-05T09:00:00.000Z");
    assert_eq!(
        c["status"], "DRAFTED",
        "configuring never starts a campaign"
    );

    // A partial write changes only what it names.
    post(
        &h,
        &format!("/campaigns/{id}/schedule"),
        json!({"end_hour": "18:00"}),
    )
    .await;
    let c = h.campaign(id).unwrap();
    assert_eq!(c["scheduler_cron_value"]["endHour"], "18:00");
    assert_eq!(c["scheduler_cron_value"]["tz"], "Europe/London");
}

#[tokio::test]
async fn settings_and_schedule_reject_unknown_fields_and_bad_values_without_changing_anything() {
    let h = start(FakeConfig::default()).await.unwrap();
    let before = h.campaign(103).unwrap();
    joi(
        &post(
            &h,
            "/campaigns/103/settings",
            json!({"unsubscribe_text": "x", "name": "y"}),
        )
        .await,
        "\"name\" is not allowed",
    );
    joi(
        &post(
            &h,
            "/campaigns/103/settings",
            json!({"follow_up_percentage": 101}),
        )
        .await,
        "\"follow_up_percentage\" must be less than or equal to 100",
    );
    joi(
        &post(
            &h,
            "/campaigns/103/settings",
            json!({"track_settings": "DONT_TRACK_EMAIL_OPEN"}),
        )
        .await,
        "\"track_settings\" must be an array",
    );
    // The current docs' wrapped shape is not what clients send.
    joi(
        &post(
            &h,
            "/campaigns/103/schedule",
            json!({"schedule": {"timezone": "UTC"}}),
        )
        .await,
        "\"schedule\" is not allowed",
    );
    joi(
        &post(
            &h,
            "/campaigns/103/schedule",
            json!({"days_of_the_week": [7]}),
        )
        .await,
        "\"days_of_the_week\" must be an array of numbers 0-6",
    );
    joi(
        &post(&h, "/campaigns/103/schedule", json!({"start_hour": "9am"})).await,
        "\"start_hour\" must be in HH:MM format",
    );
    assert_eq!(h.campaign(103).unwrap(), before);
    assert_eq!(
        post(&h, "/campaigns/999/schedule", json!({})).await.status,
        404
    );
}

#[tokio::test]
async fn sequences_create_update_and_keep_variants_and_delays() {
    let h = start(FakeConfig::default()).await.unwrap();
    let id = create(&h, "Seq").await;
    let path = format!("/campaigns/{id}/sequences");
    let r = post(&h, &path, json!({"sequences": [
        {"id": null, "seq_number": 2, "subject": "", "email_body": "<p>bump</p>", "seq_delay_details": {"delayInDays": 3}},
        {"id": null, "seq_number": 1, "seq_delay_details": {"delay_in_days": 0},
         "variant_distribution_type": "MANUAL_EQUAL",
         "seq_variants": [
            {"variant_label": "A", "subject": "Hi {{first_name}}", "email_body": "<p>A</p>", "variant_distribution_percentage": 50},
            {"variant_label": "B", "subject": "Hey", "email_body": "<p>B</p>", "variant_distribution_percentage": 50},
         ]},
    ]})).await;
    assert_eq!((r.status, r.json()), (200, json!({"ok": true, "data": []})));
    let seqs = api(&h, "GET", &path, "").await.json();
    assert_eq!(seqs.as_array().unwrap().len(), 2);
    assert_eq!(
        (seqs[0]["seq_number"].clone(), seqs[1]["seq_number"].clone()),
        (json!(1), json!(2))
    );
    assert_eq!(seqs[1]["seq_delay_details"], json!({"delay_in_days": 3}));
    assert_eq!(seqs[1]["sequence_variants"], Value::Null);
    assert_eq!(seqs[0]["email_campaign_id"], json!(id));
    let variants = seqs[0]["sequence_variants"].as_array().unwrap();
    assert_eq!(
        (
            variants[1]["variant_label"].clone(),
            variants[1]["subject"].clone()
        ),
        (json!("B"), json!("Hey"))
    );
    assert_eq!(variants[0]["variant_distribution_percentage"], 50);
    assert!(
        seqs[0].get("seq_variants").is_none(),
        "reads use sequence_variants"
    );

    // Update step 1 by id (one variant kept by id, one new), drop step 2.
    let (step, keep) = (seqs[0]["id"].clone(), variants[0]["id"].clone());
    let r = post(
        &h,
        &path,
        json!({"sequences": [
            {"id": step, "seq_number": 1, "seq_delay_details": {"delay_in_days": 1},
             "seq_variants": [
                {"id": keep, "variant_label": "A", "subject": "New A", "email_body": "<p>A2</p>"},
                {"variant_label": "C", "subject": "C", "email_body": "<p>C</p>"},
             ]},
        ]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let state = h.campaign_state(id).unwrap();
    assert_eq!(state.sequences.len(), 1);
    assert_eq!(state.sequences[0]["id"], step);
    let v = &state.sequences[0]["sequence_variants"];
    assert_eq!(
        (v[0]["id"].clone(), v[0]["subject"].clone()),
        (keep, json!("New A"))
    );
    assert_eq!(v[1]["variant_label"], "C");
}

#[tokio::test]
async fn sequences_refuse_active_campaigns_unknown_ids_and_read_side_keys() {
    let h = start(FakeConfig::default()).await.unwrap();
    let step = json!({"id": null, "seq_number": 1, "subject": "s", "email_body": "b", "seq_delay_details": {"delay_in_days": 0}});
    let r = post(&h, "/campaigns/101/sequences", json!({"sequences": [step]})).await;
    assert_eq!(r.status, 422);
    assert!(r.json()["error"].as_str().unwrap().contains("ACTIVE"));
    let mut old = step.clone();
    old["id"] = json!(999_999);
    joi(
        &post(&h, "/campaigns/103/sequences", json!({"sequences": [old]})).await,
        "\"sequences[0].id\" must be the id of a step of this campaign",
    );
    let mut read_shape = step.clone();
    read_shape["sequence_variants"] = json!([]);
    joi(
        &post(
            &h,
            "/campaigns/103/sequences",
            json!({"sequences": [read_shape]}),
        )
        .await,
        "\"sequences[0].sequence_variants\" is not allowed",
    );
    joi(
        &post(
            &h,
            "/campaigns/103/sequences",
            json!({"sequences": [step, step]}),
        )
        .await,
        "\"sequences[1].seq_number\" contains a duplicate value",
    );
    let mut no_delay = step.clone();
    no_delay
        .as_object_mut()
        .unwrap()
        .remove("seq_delay_details");
    joi(
        &post(
            &h,
            "/campaigns/103/sequences",
            json!({"sequences": [no_delay]}),
        )
        .await,
        "\"sequences[0].seq_delay_details\" is required",
    );
    assert_eq!(
        h.campaign_state(103).unwrap().sequences.len(),
        2,
        "nothing changed"
    );
}

#[tokio::test]
async fn webhooks_upsert_and_email_accounts_attach_only_known_accounts() {
    let h = start(FakeConfig::default()).await.unwrap();
    let id = create(&h, "Hooks").await;
    let path = format!("/campaigns/{id}/webhooks");
    let hook = json!({"id": null, "name": "n", "webhook_url": "https://h.example/1", "event_types": ["EMAIL_REPLY"], "categories": ["Interested"]});
    assert_eq!(
        post(&h, &path, hook.clone()).await.json(),
        json!({"ok": true})
    );
    let listed = api(&h, "GET", &path, "").await.json();
    let hook_id = listed[0]["id"].clone();
    let mut changed = hook.clone();
    changed["id"] = hook_id.clone();
    changed["webhook_url"] = json!("https://h.example/2");
    assert_eq!(post(&h, &path, changed).await.status, 200);
    let listed = api(&h, "GET", &path, "").await.json();
    assert_eq!(
        listed,
        json!([{"id": hook_id, "name": "n", "webhook_url": "https://h.example/2", "event_types": ["EMAIL_REPLY"], "categories": ["Interested"]}])
    );
    let mut unknown = hook.clone();
    unknown["id"] = json!(12_345);
    assert_eq!(post(&h, &path, unknown).await.status, 404);
    let mut extra = hook;
    extra["secret"] = json!("x");
    joi(&post(&h, &path, extra).await, "\"secret\" is not allowed");

    let accounts = format!("/campaigns/{id}/email-accounts");
    let r = post(&h, &accounts, json!({"email_account_ids": [1011, 424_242]})).await;
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["invalid_email_account_ids"], json!([424_242]));
    assert_eq!(
        h.campaign_email_account_ids(id),
        Some(vec![]),
        "nothing attached"
    );
    let r = post(&h, &accounts, json!({"email_account_ids": [9001, 1011]})).await;
    assert_eq!((r.status, r.json()), (200, json!({"ok": true})));
    post(&h, &accounts, json!({"email_account_ids": [1011]})).await;
    let listed = api(&h, "GET", &accounts, "").await.json();
    let ids: Vec<u64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![9001, 1011]);
}

#[tokio::test]
async fn leads_are_capped_deduplicated_filtered_and_shown_with_custom_fields() {
    // Campaign 101's generated lead 49 is born unsubscribed.
    let h = start(FakeConfig::with_leads(100)).await.unwrap();
    let id = create(&h, "Leads").await;
    let path = format!("/campaigns/{id}/leads");
    let too_many: Vec<Value> = (0..401)
        .map(|i| json!({"email": format!("n{i}@x.com")}))
        .collect();
    let r = post(&h, &path, json!({"lead_list": too_many})).await;
    assert_eq!(
        (r.status, r.json()),
        (
            422,
            json!({"error": "lead_list cannot exceed 400 leads per request", "provided_count": 401, "max_allowed": 400})
        )
    );
    h.unsubscribe_email("gone@x.com");
    let r = post(&h, &path, json!({"lead_list": [
        {"email": "ann@x.com", "first_name": "Ann", "custom_fields": {"job_title": "CEO", "tier": "1"}},
        {"email": "ANN@x.com"},
        {"email": "gone@x.com"},
        {"email": "someone@competitor.example"},
        {"email": "lead49@example101.com"},
        {"email": "not-an-email"},
    ], "settings": {"ignore_global_block_list": false, "ignore_unsubscribe_list": false}})).await;
    assert_eq!(
        r.json(),
        json!({
            "ok": true, "upload_count": 1, "total_leads": 1, "block_count": 1, "duplicate_count": 1,
            "invalid_email_count": 1, "invalid_emails": ["not-an-email"], "already_added_to_campaign": 0,
            "unsubscribed_leads": ["gone@x.com", "lead49@example101.com"], "is_lead_limit_exhausted": false,
            "lead_import_stopped_count": 0, "bounce_count": 0,
        })
    );
    let r = post(
        &h,
        &path,
        json!({"lead_list": [{"email": "Ann@X.com"}, {"email": "gone@x.com"}],
        "settings": {"ignore_unsubscribe_list": true}}),
    )
    .await;
    let out = r.json();
    assert_eq!(
        (
            out["already_added_to_campaign"].clone(),
            out["upload_count"].clone()
        ),
        (json!(1), json!(1))
    );
    joi(
        &post(
            &h,
            &path,
            json!({"lead_list": [], "settings": {"update": true}}),
        )
        .await,
        "\"settings.update\" is not allowed",
    );
    joi(
        &post(
            &h,
            &path,
            json!({"lead_list": [{"email": "a@b.com", "id": 5}]}),
        )
        .await,
        "\"lead_list[0].id\" is not allowed",
    );

    let state = h.campaign_state(id).unwrap();
    let emails: Vec<&str> = state
        .leads
        .iter()
        .map(|l| l["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, ["ann@x.com", "gone@x.com"]);
    assert_eq!(
        state.leads[0]["custom_fields"],
        json!({"job_title": "CEO", "tier": "1"})
    );
    let page = api(&h, "GET", &path, "").await.json();
    assert_eq!(page["total_leads"], "2");
    assert_eq!(page["data"][0]["lead"]["first_name"], "Ann");
    let csv = api(&h, "GET", &format!("/campaigns/{id}/leads-export"), "")
        .await
        .text();
    assert_eq!(csv.lines().count(), 3);
    assert!(csv.contains(r#""{""job_title"":""CEO"",""tier"":""1""}""#));
}

#[tokio::test]
async fn a_hundred_thousand_leads_upload_in_250_calls() {
    let h = start(FakeConfig::default()).await.unwrap();
    let id = create(&h, "Big").await;
    let path = format!("/campaigns/{id}/leads");
    let started = std::time::Instant::now();
    for call in 0..250 {
        let batch: Vec<Value> = (0..400)
            .map(|i| json!({"email": format!("p{}@big.example.com", call * 400 + i), "custom_fields": {"n": i}}))
            .collect();
        let r = post(&h, &path, json!({"lead_list": batch})).await;
        assert_eq!(r.json()["upload_count"], 400, "call {call}");
    }
    // A replayed batch is recognised lead by lead.
    let again: Vec<Value> = (0..400)
        .map(|i| json!({"email": format!("p{i}@big.example.com")}))
        .collect();
    assert_eq!(
        post(&h, &path, json!({"lead_list": again})).await.json()["already_added_to_campaign"],
        400
    );
    assert_eq!(h.lead_count(id), Some(100_000));
    let last = api(&h, "GET", &format!("{path}?offset=99990&limit=100"), "")
        .await
        .json();
    assert_eq!(last["data"].as_array().unwrap().len(), 10);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(h.write_count("POST /api/v1/campaigns/{id}/leads"), 251);
}

#[tokio::test]
async fn drafted_stays_drafted_and_paused_unarchives() {
    let h = start(FakeConfig::default()).await.unwrap();
    let id = create(&h, "Status").await;
    post(
        &h,
        &format!("/campaigns/{id}/settings"),
        json!({"unsubscribe_text": "x"}),
    )
    .await;
    post(
        &h,
        &format!("/campaigns/{id}/leads"),
        json!({"lead_list": [{"email": "a@b.com"}]}),
    )
    .await;
    assert_eq!(h.campaign(id).unwrap()["status"], "DRAFTED");
    for (write, read) in [
        ("ARCHIVED", "ARCHIVED"),
        ("PAUSED", "PAUSED"),
        ("START", "ACTIVE"),
    ] {
        let r = post(
            &h,
            &format!("/campaigns/{id}/status"),
            json!({"status": write}),
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(h.campaign(id).unwrap()["status"], read);
    }
}

#[tokio::test]
async fn every_nth_write_is_rate_limited_and_not_carried_out() {
    let config = FakeConfig {
        faults: vec![faults::rate_limit_every(2, true, 3)],
        ..FakeConfig::default()
    };
    let h = start(config).await.unwrap();
    let first = post(&h, "/campaigns/create", json!({"name": "one"})).await;
    assert_eq!(first.status, 200);
    assert_eq!(
        api(&h, "GET", "/campaigns", "").await.status,
        200,
        "reads are not counted"
    );
    let second = post(&h, "/campaigns/create", json!({"name": "two"})).await;
    assert_eq!(second.status, 429);
    assert_eq!(second.header("retry-after"), Some("3"));
    assert_eq!(second.json()["error"]["code"], "RATE_LIMIT_EXCEEDED");
    assert_eq!(
        h.campaign_ids(),
        vec![101, 102, 103, 1000],
        "the refused create made nothing"
    );
    assert_eq!(h.write_count("POST /api/v1/campaigns/create"), 2);
}

#[tokio::test]
async fn failing_after_n_calls_lasts_until_the_faults_are_cleared() {
    let h = start(FakeConfig::default()).await.unwrap();
    let (rule, trigger) = faults::fail_after(1);
    h.fault_triggered(rule, trigger);
    assert_eq!(api(&h, "GET", "/campaigns/101", "").await.status, 200);
    for _ in 0..3 {
        let r = post(
            &h,
            "/campaigns/103/settings",
            json!({"unsubscribe_text": "x"}),
        )
        .await;
        assert_eq!(r.status, 500);
    }
    assert_eq!(h.campaign(103).unwrap()["unsubscribe_text"], "");
    h.clear_faults();
    assert_eq!(
        post(
            &h,
            "/campaigns/103/settings",
            json!({"unsubscribe_text": "x"})
        )
        .await
        .status,
        200
    );

    // A write that took effect although the caller saw a 500.
    h.fault(FaultRule {
        method: Some("POST".into()),
        path: "/api/v1/campaigns/*/leads".into(),
        times: Some(1),
        fault: fake_smartlead::Fault {
            status: Some(500),
            apply_write: true,
            ..Default::default()
        },
    });
    let r = post(
        &h,
        "/campaigns/103/leads",
        json!({"lead_list": [{"email": "x@y.com"}]}),
    )
    .await;
    assert_eq!(r.status, 500);
    let retry = post(
        &h,
        "/campaigns/103/leads",
        json!({"lead_list": [{"email": "x@y.com"}]}),
    )
    .await;
    assert_eq!(retry.json()["already_added_to_campaign"], 1);
    let calls = h.write_calls();
    assert_eq!(calls.get("POST /api/v1/campaigns/{id}/settings"), Some(&4));
}
