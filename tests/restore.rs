//! `safedelete restore --dry-run`: the plan of a campaign restore, worked
//! out from a real snapshot taken by a real gateway in front of the fake
//! SmartLead, printed by the real binary, with no call made.

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
    let lead = delete(
        &gw,
        &format!("/api/v1/campaigns/102/leads/1020000001?api_key={KEY}"),
    )
    .await;
    let before = fake.requests().len();

    let out = restore(&gw, &[&lead.to_string(), "--dry-run"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("was taken for campaign.lead.delete"), "{err}");
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
    let url = format!("{}/api/v1{path}?api_key={KEY}", fake.url());
    common::get(&url).await.json()
}

/// The campaigns the fake has with this name.
async fn named(fake: &FakeHandle, name: &str) -> Vec<i64> {
    get_json(fake, "/campaigns")
        .await
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == name)
        .map(|c| c["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_rebuilds_the_campaign_as_a_draft_with_its_sendable_leads() {
    let fake = fake_smartlead::start(FakeConfig::with_leads(1000))
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
        stdout.contains("980 added by SmartLead of 980 sent"),
        "{stdout}"
    );
    assert!(stdout.contains("20   left out: unsubscribed"), "{stdout}");
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
    assert_eq!(sendable.len(), 980);
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
    // the accounts, the accounts, three batches of leads.
    assert_eq!(restore_calls, 9 + ids(&accounts).len(), "{trail}");
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
    let pool = safedelete::db::open_existing(&gw.db_path).await.unwrap();
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
