//! Handlers for single leads: the account-wide `/leads/{lead_id}` routes (read,
//! campaigns, unsubscribe everywhere, delete everywhere) and the per-campaign
//! lead actions (`pause`, `resume`, `unsubscribe`, `message-history`).
//!
//! Lead ids are campaign-scoped ([`crate::lead::lead_id`]), so a lead sits in
//! exactly one campaign and "every campaign" means that one. Changes land in the
//! campaign's [`crate::state::LeadSet`], so the leads list, the CSV export and
//! the analytics see them too.

use http::Method;
use serde_json::{json, Value};

use crate::account::AccountWide;
use crate::body::json_response;
use crate::lead::{self, Lead};
use crate::routes::{invalid, missing, not_found, ok, Call, Response};
use crate::state::{Campaign, Store};

/// `from` of a message history when the campaign has no sender account attached.
const FALLBACK_SENDER: &str = "noreply@sender.example.com";
/// 2025-01-02T00:00:00Z, the day generated leads' first emails go out.
const FIRST_SEND: u64 = 1_735_776_000;
/// Days between sequence steps in the message history.
const STEP_DAYS: u64 = 3;

/// Dispatches `tail` (the path after `/leads`).
pub fn route(store: &mut Store, tail: &[&str], call: &Call) -> Response {
    let [id, rest @ ..] = tail else {
        return not_found();
    };
    let Ok(lead_id) = id.parse::<u64>() else {
        return invalid();
    };
    let m = call.method;
    match rest {
        [] if call.is_get() => get_lead(store, lead_id),
        [] if m == Method::DELETE => delete_everywhere(store, lead_id),
        ["campaigns"] if call.is_get() => lead_campaigns(store, lead_id),
        ["unsubscribe"] if m == Method::POST => unsubscribe_everywhere(store, lead_id),
        _ => not_found(),
    }
}

fn get_lead(store: &Store, lead_id: u64) -> Response {
    match store.lead_campaign(lead_id).and_then(|c| c.lead(lead_id)) {
        Some(l) => json_response(
            200,
            &json!({"ok": true, "message": "Lead details fetched successfully", "data": [l.to_lead_object()]}),
        ),
        None => lead_not_found(),
    }
}

fn lead_campaigns(store: &Store, lead_id: u64) -> Response {
    let Some((c, l)) = store
        .lead_campaign(lead_id)
        .and_then(|c| Some((c, c.lead(lead_id)?)))
    else {
        return lead_not_found();
    };
    json_response(
        200,
        &json!([{
            "id": c.id, "name": c.name, "status": c.status,
            "lead_status": l.status, "campaign_lead_map_id": l.campaign_lead_map_id,
        }]),
    )
}

fn unsubscribe_everywhere(store: &mut Store, lead_id: u64) -> Response {
    let email = store.lead_campaign_mut(lead_id).and_then(|c| {
        c.unsubscribe_lead(lead_id);
        c.lead(lead_id).map(|l| l.email)
    });
    if let Some(email) = email {
        // Account-wide: the email stays on the unsubscribe list for good.
        store.account.unsubscribe(&email);
        ok()
    } else {
        lead_not_found()
    }
}

fn delete_everywhere(store: &mut Store, lead_id: u64) -> Response {
    let done = store
        .lead_campaign_mut(lead_id)
        .is_some_and(|c| c.remove_lead(lead_id));
    if done {
        ok()
    } else {
        lead_not_found()
    }
}

/// `POST /campaigns/{id}/leads/{lead_id}/{pause|resume|unsubscribe}`.
pub fn campaign_action(c: &mut Campaign, lead_id: &str, action: &str) -> Response {
    let Ok(lead_id) = lead_id.parse() else {
        return invalid();
    };
    let (done, message) = match action {
        "pause" => (c.set_lead_status(lead_id, "PAUSED"), "Lead paused"),
        "resume" => (c.set_lead_status(lead_id, "INPROGRESS"), "Lead resumed"),
        _ => (c.unsubscribe_lead(lead_id), "Lead unsubscribed"),
    };
    if !done {
        return lead_not_found();
    }
    json_response(
        200,
        &json!({"ok": true, "data": format!("{message} successfully")}),
    )
}

/// `GET /campaigns/{id}/leads/{lead_id}/message-history`: one SENT entry per
/// step sent (`last_email_sequence_sent`), then one REPLY if the lead replied.
/// `from` is the campaign's first attached sender account.
pub fn message_history(c: &Campaign, accounts: &AccountWide, lead_id: &str) -> Response {
    let Ok(lead_id) = lead_id.parse() else {
        return invalid();
    };
    let Some(l) = c.lead(lead_id) else {
        return lead_not_found();
    };
    let sender = c
        .email_account_ids
        .iter()
        .find_map(|id| accounts.email_accounts.get(id)?.get("from_email")?.as_str())
        .unwrap_or(FALLBACK_SENDER);
    let sent = l.counts.last_email_sequence_sent;
    let mut history: Vec<Value> = (1..=sent).map(|n| sent_entry(c.id, &l, n)).collect();
    if l.counts.reply_count > 0 {
        history.push(reply_entry(c.id, &l, sent.max(1)));
    }
    json_response(
        200,
        &json!({"history": history, "from": sender, "to": l.email}),
    )
}

/// When step `n` (1-based) went out to `l` of campaign `campaign_id`, in Unix
/// seconds.
fn sent_at(campaign_id: u64, l: &Lead, n: u64) -> u64 {
    let index = l.id.saturating_sub(lead::lead_id(campaign_id, 0));
    FIRST_SEND + index + (n - 1) * STEP_DAYS * 86_400
}

fn sent_entry(campaign_id: u64, l: &Lead, n: u64) -> Value {
    let subject = if n == 1 {
        format!("Hello {}", l.first_name)
    } else {
        format!("Re: Hello {}", l.first_name)
    };
    json!({
        "type": "SENT",
        "message_id": format!("<{}.{n}.{campaign_id}@mail.example.com>", l.id),
        "stats_id": stats_id(campaign_id, l, n),
        "time": lead::timestamp(sent_at(campaign_id, l, n)),
        "email_body": format!("<p>Step {n} for campaign {campaign_id}</p>"),
        "subject": subject,
        "email_seq_number": n.to_string(),
    })
}

fn reply_entry(campaign_id: u64, l: &Lead, n: u64) -> Value {
    json!({
        "type": "REPLY",
        "message_id": format!("<reply.{}.{campaign_id}@mail.example.com>", l.id),
        "stats_id": stats_id(campaign_id, l, n),
        "time": lead::timestamp(sent_at(campaign_id, l, n) + 7_200),
        "email_body": format!("<p>Thanks, {} here. Tell me more.</p>", l.first_name),
        "subject": format!("Re: Hello {}", l.first_name),
        "email_seq_number": n.to_string(),
    })
}

/// A deterministic UUID-shaped stats id for step `n` of lead `l`.
fn stats_id(campaign_id: u64, l: &Lead, n: u64) -> String {
    format!("{campaign_id:08x}-{n:04x}-4000-8000-{:012x}", l.id)
}

/// 404 `{"error":"Lead not found"}`.
fn lead_not_found() -> Response {
    missing("Lead")
}
