//! `safedelete restore --dry-run`: the plan of a campaign restore, worked
//! out from a real snapshot taken by a real gateway in front of the fake
//! SmartLead, printed by the real binary, with no call made; real restores
//! against the fake's write endpoints; and the smaller undos (a lead, a
//! webhook, sender accounts, an archived campaign).

mod common;

use std::process::Output;

use bytes::Bytes;
use std::collections::BTreeMap;

use common::{send, Extra, Gateway, KEY};
use fake_smartlead::{FakeConfig, FakeHandle, Fault, FaultRule};
use http::Request;
use http_body_util::Full;

const BIN: &str = env!("CARGO_BIN_EXE_safedelete");

/// The fake with 1,000 leads in campaign 101 (every 50th unsubscribed), a
/// gateway that allows deletes, and campaign 101 deleted through it.
async fn deleted_campaign() -> (FakeHandle, Gateway, i64) {
    let fake = fake_smartlead::start(FakeConfig::with_leads(1000))
        .await
        .unwrap();
    let gw = Gateway::start_with(
        &fake.url(),
        Extra {
            tables: "[policy]\ndefault = \"allow\"\n",
            ..Extra::default()
        },
    )
    .await;
    let snapshot = delete(&gw, &format!("/api/v1/campaigns/101?api_key={KEY}")).await;
    (fake, gw, snapshot)
}

/// Sends a DELETE the policy allows; returns the snapshot it took.
async fn delete(gw: &Gateway, target: &str) -> i64 {
    let req = Request::delete(gw.url(target))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = send(req).await;
    assert_eq!(r.header("x-safedelete-action"), Some("allowed"), "{target}");
    r.header("x-safedelete-snapshot-id")
        .expect("an allowed delete names its snapshot")
        .parse()
        .unwrap()
}

fn restore(gw: &Gateway, args: &[&str]) -> Output {
    command(gw, args)
        .env_remove("SMARTLEAD_API_KEY")
        .output()
        .unwrap()
}

/// `restore` with the SmartLead key in `SMARTLEAD_API_KEY`, as a person runs it.
fn restore_with_key(gw: &Gateway, args: &[&str]) -> Output {
    command(gw, args)
        .env("SMARTLEAD_API_KEY", KEY)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn command(gw: &Gateway, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(BIN);
    c.arg("restore")
        .args(args)
        .arg("--config")
        .arg(gw.dir.path().join("safedelete.toml"));
    c
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_prints_every_call_and_the_leads_left_out_and_sends_nothing() {
    let (fake, gw, snapshot) = deleted_campaign().await;
    let before = fake.requests().len();

    let out = restore(&gw, &[&snapshot.to_string(), "--dry-run"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.starts_with(&format!(
            "Restore of snapshot {snapshot} (campaign.delete of campaign 101 \"Cold Outreach Q1\") \
             as a new campaign \"Cold Outreach Q1\", created as a draft"
        )),
        "{stdout}"
    );
    for call in [
        "1 x POST  /campaigns/create ",
        "1 x POST  /campaigns/{new}/settings ",
        "1 x POST  /campaigns/{new}/schedule ",
        "1 x POST  /campaigns/{new}/sequences         2 step(s) with their delays, 2 variant(s)",
        "1 x POST  /campaigns/{new}/email-accounts ",
        // 980 leads at 350 a call.
        "3 x POST  /campaigns/{new}/leads             980 of 1,000 leads with their custom fields",
    ] {
        assert!(stdout.contains(call), "{call:?} missing from:\n{stdout}");
    }
    assert!(
        stdout.contains("Leads: 980 of 1,000 restored, 20 left out (--leads sendable):\n  unsubscribed              20\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("No restore brings back:\n  - message history"),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("Dry run: nothing was sent to SmartLead.\n"),
        "{stdout}"
    );
    assert_eq!(fake.requests().len(), before, "a dry run makes no call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_as_json_takes_every_lead_and_a_new_name_when_asked() {
    let (fake, gw, snapshot) = deleted_campaign().await;
    let before = fake.requests().len();
    let out = restore(
        &gw,
        &[
            &snapshot.to_string(),
            "--dry-run",
            "--json",
            "--leads",
            "all",
            "--name",
            "Cold Outreach Q1 (restored)",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["original_id"], 101);
    assert_eq!(plan["leads"]["total"], 1000);
    assert_eq!(plan["leads"]["restored"], 1000);
    assert_eq!(plan["calls"][0]["path"], "/campaigns/create");
    assert_eq!(
        plan["calls"][0]["body"]["name"],
        "Cold Outreach Q1 (restored)"
    );
    let schedule = plan["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"] == "/campaigns/{new}/schedule")
        .unwrap();
    assert_eq!(schedule["body"]["timezone"], "America/New_York");
    let leads = plan["calls"].as_array().unwrap().last().unwrap();
    assert_eq!(leads["times"], 3, "1,000 leads at 350 a call");
    assert_eq!(fake.requests().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_be_restored_is_refused_saying_why_and_nothing_is_sent() {
    let (fake, gw, campaign) = deleted_campaign().await;
    // A lead deleted from every campaign: no API call brings it back.
    let lead = delete(&gw, &format!("/api/v1/leads/1020000001?api_key={KEY}")).await;
    let before = fake.requests().len();

    let out = restore(&gw, &[&lead.to_string(), "--dry-run"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("was taken for lead.delete"), "{err}");
    assert!(err.contains("the SmartLead API cannot undo"), "{err}");
    assert!(
        err.contains(&format!("safedelete snapshots export {lead}")),
        "{err}"
    );

    let out = restore(&gw, &["999", "--dry-run"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("snapshot 999 does not exist"),
        "{}",
        text(&out.stderr)
    );

    // A real run that cannot ask (no terminal) and was not told --yes.
    let out = restore_with_key(&gw, &[&campaign.to_string()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("add --yes"),
        "{}",
        text(&out.stderr)
    );
    // Without a key to send.
    let out = restore(&gw, &[&campaign.to_string(), "--yes"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("set SMARTLEAD_API_KEY"),
        "{}",
        text(&out.stderr)
    );

    let out = restore(
        &gw,
        &[&campaign.to_string(), "--dry-run", "--leads", "some"],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("sendable"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(fake.requests().len(), before);
}

/// A campaign's leads as the fake exports them: email -> custom fields,
/// and whether unsubscribed.
async fn leads_of(fake: &FakeHandle, campaign: i64) -> BTreeMap<String, (String, bool)> {
    let url = format!(
        "{}/api/v1/campaigns/{campaign}/leads-export?api_key={KEY}",
        fake.url()
    );
    let csv_text = common::get(&url).await.body;
    let mut reader = csv::Reader::from_reader(csv_text.as_ref());
    let headers = reader.headers().unwrap().clone();
    let at = |n: &str| headers.iter().position(|h| h == n).unwrap();
    let (email, custom, unsub) = (at("email"), at("custom_fields"), at("is_unsubscribed"));
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (
                r[email].to_string(),
                (r[custom].to_string(), &r[unsub] == "true"),
            )
        })
        .collect()
}

async fn get_json(fake: &FakeHandle, path: &str) -> serde_json::Value {
    common::fake_read(&fake.url(), path).await.json()
}

async fn named(fake: &FakeHandle, name: &str) -> Vec<i64> {
    common::campaigns_named(&fake.url(), name).await
}

/// A 10,000-lead campaign deleted through the gateway and restored, compared
/// with the original field by field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_rebuilds_the_campaign_as_a_draft_with_its_sendable_leads() {
    let fake = fake_smartlead::start(FakeConfig::with_leads(10_000))
        .await
        .unwrap();
    let original = leads_of(&fake, 101).await;
    let original_campaign = get_json(&fake, "/campaigns/101").await;
    let sequences = get_json(&fake, "/campaigns/101/sequences").await;
    let webhooks = get_json(&fake, "/campaigns/101/webhooks").await;
    let accounts = get_json(&fake, "/campaigns/101/email-accounts").await;
    let gw = Gateway::start_with(
        &fake.url(),
        Extra {
            tables: "[policy]\ndefault = \"allow\"\n",
            ..Extra::default()
        },
    )
    .await;
    let snapshot = delete(&gw, &format!("/api/v1/campaigns/101?api_key={KEY}")).await;

    let out = restore_with_key(&gw, &[&snapshot.to_string(), "--yes"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", text(&out.stderr));
    let new = named(&fake, "Cold Outreach Q1").await;
    assert_eq!(new.len(), 1, "one new campaign: {new:?}");
    let new = new[0];
    assert!(
        stdout.contains(&format!(
            "campaign 101 is back as campaign {new} \"Cold Outreach Q1\", a draft"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("9,800 added by SmartLead of 9,800 sent"),
        "{stdout}"
    );
    assert!(stdout.contains("200   left out: unsubscribed"), "{stdout}");
    assert!(stdout.contains("No restore brings back:"), "{stdout}");

    let campaign = get_json(&fake, &format!("/campaigns/{new}")).await;
    assert_eq!(
        campaign["status"], "DRAFTED",
        "a restore never starts sending"
    );
    for field in [
        "track_settings",
        "stop_lead_settings",
        "unsubscribe_text",
        "send_as_plain_text",
        "follow_up_percentage",
        "enable_ai_esp_matching",
        "scheduler_cron_value",
        "min_time_btwn_emails",
        "max_leads_per_day",
        "schedule_start_time",
        "client_id",
    ] {
        assert_eq!(campaign[field], original_campaign[field], "{field}");
    }
    let sendable: BTreeMap<_, _> = original
        .iter()
        .filter(|(_, (_, unsubscribed))| !unsubscribed)
        .map(|(email, (custom, _))| (email.clone(), custom.clone()))
        .collect();
    assert_eq!(sendable.len(), 9_800);
    let restored: BTreeMap<_, _> = leads_of(&fake, new)
        .await
        .into_iter()
        .map(|(email, (custom, _))| (email, custom))
        .collect();
    assert_eq!(
        restored, sendable,
        "every sendable lead, with its custom fields"
    );
    let steps = |v: &serde_json::Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["seq_number"].clone(),
                    s["subject"].clone(),
                    s["email_body"].clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    let new_sequences = get_json(&fake, &format!("/campaigns/{new}/sequences")).await;
    assert_eq!(steps(&new_sequences), steps(&sequences));
    let hooks = |v: &serde_json::Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|w| {
                (
                    w["name"].clone(),
                    w["webhook_url"].clone(),
                    w["event_types"].clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    let new_webhooks = get_json(&fake, &format!("/campaigns/{new}/webhooks")).await;
    assert_eq!(hooks(&new_webhooks), hooks(&webhooks));
    let ids = |v: &serde_json::Value| {
        let mut ids: Vec<i64> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_i64().unwrap())
            .collect();
        ids.sort();
        ids
    };
    let new_accounts = get_json(&fake, &format!("/campaigns/{new}/email-accounts")).await;
    assert_eq!(ids(&new_accounts), ids(&accounts));

    // The old campaign's history tells where it went.
    let history = std::process::Command::new(BIN)
        .args(["history", "--campaign", "101", "--config"])
        .arg(gw.dir.path().join("safedelete.toml"))
        .output()
        .unwrap();
    let history = text(&history.stdout);
    assert!(
        history.contains(&format!(
            ": snapshot {snapshot} restored as campaign {new} \"Cold Outreach Q1\" (done)"
        )),
        "{history}"
    );

    // Every call audited as the restore's, never with the key.
    let audit = std::process::Command::new(BIN)
        .args(["audit", "--json", "--limit", "100", "--config"])
        .arg(gw.dir.path().join("safedelete.toml"))
        .output()
        .unwrap();
    let trail = text(&audit.stdout);
    let restore_calls = trail
        .lines()
        .filter(|l| l.contains("\"operation\":\"restore\""))
        .count();
    // create, settings, schedule, sequences, a webhook, a check of each of
    // the accounts, the accounts, 28 batches of 350 leads.
    assert_eq!(restore_calls, 6 + 28 + ids(&accounts).len(), "{trail}");
    assert!(!trail.contains(KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_restore_resumes_without_a_second_campaign_or_a_lead_twice() {
    let (fake, gw, snapshot) = deleted_campaign().await;
    // SmartLead keeps failing the leads.
    fake.fault(FaultRule {
        method: Some("POST".into()),
        path: "/api/v1/campaigns/*/leads".into(),
        times: None,
        fault: Fault {
            status: Some(500),
            ..Fault::default()
        },
    });
    let out = restore_with_key(&gw, &[&snapshot.to_string(), "--yes"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("restore 1 stopped"), "{err}");
    assert!(err.contains("safedelete restore --resume 1"), "{err}");

    fake.clear_faults();
    let out = restore_with_key(&gw, &["--resume", "1"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", text(&out.stderr));
    assert!(stdout.contains("skipped  create"), "{stdout}");
    assert!(
        stdout.contains("980 added by SmartLead of 980 sent"),
        "{stdout}"
    );
    let new = named(&fake, "Cold Outreach Q1").await;
    assert_eq!(new.len(), 1, "one campaign: {new:?}");
    assert_eq!(leads_of(&fake, new[0]).await.len(), 980);

    // A crash after SmartLead took a batch but before it was recorded: the
    // batch goes again, and SmartLead adds no lead twice.
    let pool = safedelete::db::open_existing(&gw.store).await.unwrap();
    sqlx::query("DELETE FROM restore_steps WHERE restore_id = 1 AND step = 'leads:3'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE restores SET state = 'failed' WHERE id = 1")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let out = restore_with_key(&gw, &["--resume", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(named(&fake, "Cold Outreach Q1").await.len(), 1);
    assert_eq!(leads_of(&fake, new[0]).await.len(), 980, "no lead twice");
    let out = restore_with_key(&gw, &["--resume", "1"]);
    assert!(
        text(&out.stderr).contains("restore 1 is done already"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smartleads_429s_are_waited_out_and_the_restore_goes_on() {
    let (fake, gw, snapshot) = deleted_campaign().await;
    fake.fault(FaultRule {
        method: Some("POST".into()),
        path: "/api/v1/campaigns/*/leads".into(),
        times: Some(2),
        fault: Fault {
            status: Some(429),
            retry_after: Some(1),
            ..Fault::default()
        },
    });
    let out = restore_with_key(&gw, &[&snapshot.to_string(), "--yes"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", text(&out.stderr));
    assert_eq!(
        stdout
            .matches("waiting 1.0 s: SmartLead's rate limit (429)")
            .count(),
        2,
        "{stdout}"
    );
    let new = named(&fake, "Cold Outreach Q1").await;
    assert_eq!(leads_of(&fake, new[0]).await.len(), 980);
}

/// The fake with 1,000 leads in campaign 101 and a gateway that allows deletes.
async fn allowing() -> (FakeHandle, Gateway) {
    let fake = fake_smartlead::start(FakeConfig::with_leads(1000))
        .await
        .unwrap();
    let gw = Gateway::start_with(
        &fake.url(),
        Extra {
            tables: "[policy]\ndefault = \"allow\"\n",
            ..Extra::default()
        },
    )
    .await;
    (fake, gw)
}

/// Sends a DELETE with a JSON body the policy allows; returns its snapshot.
async fn delete_with_body(gw: &Gateway, target: &str, body: serde_json::Value) -> i64 {
    let req = Request::delete(gw.url(target))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let r = send(req).await;
    assert_eq!(r.header("x-safedelete-action"), Some("allowed"), "{target}");
    r.header("x-safedelete-snapshot-id")
        .expect("an allowed delete names its snapshot")
        .parse()
        .unwrap()
}

/// The audit records of the restore operation, as JSON lines.
fn restore_records(gw: &Gateway) -> Vec<serde_json::Value> {
    let audit = std::process::Command::new(BIN)
        .args(["audit", "--json", "--limit", "100", "--config"])
        .arg(gw.dir.path().join("safedelete.toml"))
        .output()
        .unwrap();
    text(&audit.stdout)
        .lines()
        .filter(|l| l.contains("\"operation\":\"restore\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_lead_is_added_back_to_its_campaign_with_its_custom_fields() {
    let (fake, gw) = allowing().await;
    let lead = get_json(&fake, "/leads/1020000001").await["data"][0].clone();
    let email = lead["email"].as_str().unwrap().to_string();
    let before = leads_of(&fake, 102).await;
    let snapshot = delete(
        &gw,
        &format!("/api/v1/campaigns/102/leads/1020000001?api_key={KEY}"),
    )
    .await;
    assert!(!leads_of(&fake, 102).await.contains_key(&email));

    let requests = fake.requests().len();
    let out = restore(&gw, &[&snapshot.to_string(), "--dry-run"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("POST /campaigns/102/leads") && stdout.contains(&email),
        "{stdout}"
    );
    assert!(stdout.contains("Dry run: nothing was sent"), "{stdout}");
    assert_eq!(fake.requests().len(), requests, "a dry run sends nothing");

    let out = restore_with_key(&gw, &[&snapshot.to_string(), "--yes"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", text(&out.stderr));
    assert!(stdout.contains("sent back to campaign 102"), "{stdout}");
    let after = leads_of(&fake, 102).await;
    assert_eq!(
        after.get(&email),
        before.get(&email),
        "back, custom fields and all"
    );
    let records = restore_records(&gw);
    assert_eq!(records.len(), 1, "{records:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_webhook_is_created_again() {
    let (fake, gw) = allowing().await;
    let hooks = get_json(&fake, "/campaigns/101/webhooks").await;
    let hook = hooks[0].clone();
    let snapshot = delete_with_body(
        &gw,
        &format!("/api/v1/campaigns/101/webhooks?api_key={KEY}"),
        serde_json::json!({ "id": hook["id"] }),
    )
    .await;
    assert_eq!(
        get_json(&fake, "/campaigns/101/webhooks").await,
        serde_json::json!([])
    );

    let requests = fake.requests().len();
    let out = restore(&gw, &[&snapshot.to_string(), "--dry-run", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["path"], "/campaigns/101/webhooks");
    assert_eq!(plan["body"]["id"], serde_json::Value::Null);
    assert_eq!(fake.requests().len(), requests, "a dry run sends nothing");

    let out = restore_with_key(&gw, &[&snapshot.to_string(), "--yes"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", text(&out.stderr));
    let now = get_json(&fake, "/campaigns/101/webhooks").await;
    assert_eq!(now.as_array().unwrap().len(), 1, "{now}");
    for field in ["name", "webhook_url", "event_types", "categories"] {
        assert_eq!(now[0][field], hook[field], "{field}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_sender_accounts_are_attached_again_except_those_gone() {
    let (fake, gw) = allowing().await;
    let snapshot = delete_with_body(
        &gw,
        &format!("/api/v1/campaigns/101/email-accounts?api_key={KEY}"),
        serde_json::json!({ "email_account_ids": [1011, 1012] }),
    )
    .await;
    let attached = |v: serde_json::Value| {
        let mut ids: Vec<i64> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_i64().unwrap())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        attached(get_json(&fake, "/campaigns/101/email-accounts").await),
        [9001]
    );
    // Account 1012 is deleted from SmartLead meanwhile.
    let gone = Request::delete(format!(
        "{}/api/v1/email-accounts/1012?api_key={KEY}",
        fake.url()
    ))
    .body(Full::new(Bytes::new()))
    .unwrap();
    assert_eq!(send(gone).await.status, 200);

    let requests = fake.requests().len();
    let out = restore(&gw, &[&snapshot.to_string(), "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .contains("POST /campaigns/101/email-accounts  {\"email_account_ids\":[1011,1012]}"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(fake.requests().len(), requests, "a dry run sends nothing");

    let out = restore_with_key(&gw, &[&snapshot.to_string(), "--yes", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let done: serde_json::Value =
        serde_json::from_str(text(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(
        done["missing_accounts"],
        serde_json::json!([1012]),
        "{done}"
    );
    assert_eq!(
        attached(get_json(&fake, "/campaigns/101/email-accounts").await),
        [1011, 9001]
    );
    // Two look-ups and the attach, each audited.
    assert_eq!(restore_records(&gw).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unarchive_pauses_an_archived_campaign_and_refuses_any_other() {
    let fake = fake_smartlead::start(FakeConfig::with_leads(10))
        .await
        .unwrap();
    // The default policy archives a campaign delete.
    let gw = Gateway::start(&fake.url()).await;
    let req = Request::delete(gw.url(&format!("/api/v1/campaigns/101?api_key={KEY}")))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        send(req).await.header("x-safedelete-action"),
        Some("archived")
    );
    assert_eq!(
        get_json(&fake, "/campaigns/101").await["status"],
        "ARCHIVED"
    );

    let requests = fake.requests().len();
    let out = restore(&gw, &["--unarchive", "101", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("POST /campaigns/101/status  {\"status\":\"PAUSED\"}"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(fake.requests().len(), requests, "a dry run sends nothing");

    // No terminal to ask on and no --yes: nothing sent.
    let out = restore_with_key(&gw, &["--unarchive", "101"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("add --yes"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(fake.requests().len(), requests);

    let out = restore_with_key(&gw, &["--unarchive", "101", "--yes"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("campaign 101 is PAUSED again"));
    assert_eq!(get_json(&fake, "/campaigns/101").await["status"], "PAUSED");

    // Campaign 102 was never archived.
    let status = get_json(&fake, "/campaigns/102").await["status"].clone();
    let out = restore_with_key(&gw, &["--unarchive", "102", "--yes"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!(
            "campaign 102 is {}, not ARCHIVED",
            status.as_str().unwrap()
        )),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(get_json(&fake, "/campaigns/102").await["status"], status);
    let records = restore_records(&gw);
    // Read and pause 101, read 102.
    assert_eq!(records.len(), 3, "{records:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_of_a_campaign_restore_are_refused_where_they_do_not_apply() {
    let (fake, gw, campaign) = deleted_campaign().await;
    let lead = delete(
        &gw,
        &format!("/api/v1/campaigns/102/leads/1020000001?api_key={KEY}"),
    )
    .await;
    let before = fake.requests().len();
    for (args, says) in [
        (
            vec![
                lead.to_string(),
                "--name".into(),
                "x".into(),
                "--yes".into(),
            ],
            "--name does not apply here",
        ),
        (
            vec![
                lead.to_string(),
                "--leads".into(),
                "all".into(),
                "--yes".into(),
            ],
            "--leads does not apply here",
        ),
        (
            vec![
                "--unarchive".into(),
                "101".into(),
                "--name".into(),
                "x".into(),
            ],
            "--name does not apply here",
        ),
        (
            vec![
                "--resume".into(),
                "1".into(),
                "--leads".into(),
                "all".into(),
            ],
            "--leads does not apply here",
        ),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = restore_with_key(&gw, &args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let _ = campaign;
    assert_eq!(fake.requests().len(), before, "nothing was sent");
}

/// On a terminal the leads get a progress bar with their rate and ETA
/// (run under `script`, which gives the command a pseudo-terminal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_the_leads_have_a_progress_bar_with_rate_and_eta() {
    if !std::path::Path::new("/usr/bin/script").exists() {
        println!("skipped: /usr/bin/script (util-linux) is needed to give the restore a terminal");
        return;
    }
    let (fake, gw, snapshot) = deleted_campaign().await;
    let command = format!(
        "{BIN} restore {snapshot} --yes --config {}",
        gw.dir.path().join("safedelete.toml").display()
    );
    let out = std::process::Command::new("/usr/bin/script")
        .args(["-qec", &command, "/dev/null"])
        .env("SMARTLEAD_API_KEY", KEY)
        .output()
        .unwrap();
    let screen = text(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(screen.contains("980/980"), "{screen}");
    assert!(screen.contains("ETA"), "{screen}");
    assert!(
        !screen.contains("  leads    350 of 980"),
        "lines are for pipes: {screen}"
    );
    let new = named(&fake, "Cold Outreach Q1").await;
    assert_eq!(leads_of(&fake, new[0]).await.len(), 980);
}
