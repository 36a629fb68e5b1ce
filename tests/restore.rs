//! `safedelete restore --dry-run`: the plan of a campaign restore, worked
//! out from a real snapshot taken by a real gateway in front of the fake
//! SmartLead, printed by the real binary, with no call made.

mod common;

use std::process::Output;

use bytes::Bytes;
use common::{send, Extra, Gateway, KEY};
use fake_smartlead::{FakeConfig, FakeHandle};
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
    std::process::Command::new(BIN)
        .arg("restore")
        .args(args)
        .arg("--config")
        .arg(gw.dir.path().join("safedelete.toml"))
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
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

#[tokio::test]
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

#[tokio::test]
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

    // Only plans so far: a real run says so and changes nothing.
    let out = restore(&gw, &[&campaign.to_string()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--dry-run"),
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
