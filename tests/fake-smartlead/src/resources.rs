//! Handlers for a campaign's sub-resources: sequences, sender email accounts
//! (attached by id; the objects are account-wide), webhooks, analytics and
//! statistics. Reached from [`crate::routes`] with the campaign already looked
//! up and the store locked.

use http::Method;
use serde_json::{json, Value};

use crate::account::AccountWide;
use crate::body::json_response;
use crate::routes::{invalid, missing, not_found, ok, Call, Response};
use crate::sequence;
use crate::settings::{only_keys, reject};
use crate::state::{Campaign, USER_ID};

/// Largest `limit` on `GET /campaigns/{id}/statistics`.
const MAX_STATS_PAGE: u64 = 1000;

/// Dispatches `tail` (the path after `/campaigns/{id}`).
pub fn route(c: &mut Campaign, accounts: &mut AccountWide, tail: &[&str], call: &Call) -> Response {
    let get = call.method == Method::GET || call.method == Method::HEAD;
    let m = call.method;
    match tail {
        ["sequences"] if get => json_response(200, &Value::Array(c.sequences.clone())),
        ["sequences"] if m == Method::POST => sequence::save(c, call),
        ["email-accounts"] if get => {
            json_response(200, &Value::Array(accounts.attached(&c.email_account_ids)))
        }
        ["email-accounts"] if m == Method::POST => attach_accounts(c, accounts, call),
        ["email-accounts"] if m == Method::DELETE => detach_accounts(c, call),
        ["webhooks"] if get => json_response(200, &Value::Array(c.webhooks.clone())),
        ["webhooks"] if m == Method::POST => upsert_webhook(c, call),
        ["webhooks"] if m == Method::DELETE => {
            match call
                .json()
                .as_ref()
                .and_then(|b| b.get("id"))
                .and_then(Value::as_u64)
            {
                Some(id) => delete_webhook(c, id),
                None => invalid(),
            }
        }
        ["webhooks", id] if m == Method::DELETE => match id.parse() {
            Ok(id) => delete_webhook(c, id),
            Err(_) => invalid(),
        },
        ["analytics"] if get => analytics(c),
        ["statistics"] if get => statistics(c, call),
        _ => not_found(),
    }
}

/// The `email_account_ids` of the body, `None` unless it is an array of
/// non-negative integers.
fn account_ids(call: &Call) -> Option<Vec<u64>> {
    call.json()
        .as_ref()
        .and_then(|b| b.get("email_account_ids"))
        .and_then(Value::as_array)
        .and_then(|a| a.iter().map(Value::as_u64).collect())
}

/// Attaches existing account-wide sender accounts, in the order given (ids
/// already attached stay where they are). An id the account does not have
/// attaches nothing at all: the fake answers 422 naming the unknown ids, so
/// a restore sees that a sender account is gone. What SmartLead itself does
/// with an unknown id is not recorded anywhere (unverified).
fn attach_accounts(c: &mut Campaign, accounts: &AccountWide, call: &Call) -> Response {
    let Some(ids) = account_ids(call) else {
        return invalid();
    };
    let unknown: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|id| !accounts.email_accounts.contains_key(id))
        .collect();
    if !unknown.is_empty() {
        return json_response(
            422,
            &json!({"error": "Email account not found - Invalid email_account_id.", "invalid_email_account_ids": unknown}),
        );
    }
    for id in ids {
        if !c.email_account_ids.contains(&id) {
            c.email_account_ids.push(id);
        }
    }
    c.touch();
    ok()
}

/// Detaches accounts from this campaign only; they stay in the store.
fn detach_accounts(c: &mut Campaign, call: &Call) -> Response {
    match account_ids(call) {
        Some(ids) if !ids.contains(&0) => {
            c.email_account_ids.retain(|id| !ids.contains(id));
            ok()
        }
        _ => invalid(),
    }
}

/// Creates (`id` null or absent: a fresh id) or replaces (`id` of one of this
/// campaign's webhooks) a webhook; an unknown id is 404 (the fake's choice).
fn upsert_webhook(c: &mut Campaign, call: &Call) -> Response {
    let Some(Value::Object(body)) = call.json() else {
        return invalid();
    };
    if let Err(r) = only_keys(
        &body,
        &["id", "name", "webhook_url", "event_types", "categories"],
        "",
    ) {
        return r.into();
    }
    for key in ["event_types", "categories"] {
        let ok = match body.get(key) {
            None | Some(Value::Null) => true,
            Some(Value::Array(items)) => items.iter().all(Value::is_string),
            Some(_) => false,
        };
        if !ok {
            return reject(key, "must be an array of strings");
        }
    }
    let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
    let list = |k: &str| {
        body.get(k)
            .filter(|v| v.is_array())
            .cloned()
            .unwrap_or_else(|| json!([]))
    };
    let Some(url) = text("webhook_url") else {
        return invalid();
    };
    let id = match body.get("id") {
        None | Some(Value::Null) => c.next_id(),
        Some(v) => match v.as_u64() {
            Some(id) if c.webhooks.iter().any(|w| w["id"] == json!(id)) => id,
            Some(_) => return missing("Webhook"),
            None => return invalid(),
        },
    };
    let hook = json!({
        "id": id,
        "name": text("name").unwrap_or_default(),
        "webhook_url": url,
        "event_types": list("event_types"),
        "categories": list("categories"),
    });
    match c.webhooks.iter_mut().find(|w| w["id"] == json!(id)) {
        Some(existing) => *existing = hook,
        None => c.webhooks.push(hook),
    }
    c.touch();
    ok()
}

fn delete_webhook(c: &mut Campaign, id: u64) -> Response {
    let before = c.webhooks.len();
    c.webhooks.retain(|w| w["id"] != json!(id));
    if c.webhooks.len() == before {
        return not_found();
    }
    ok()
}

fn analytics(c: &Campaign) -> Response {
    let t = c.leads.totals();
    json_response(
        200,
        &json!({
            "id": c.id,
            "user_id": USER_ID,
            "created_at": c.created_at,
            "status": c.status,
            "name": c.name,
            "sent_count": t.sent.to_string(),
            "open_count": t.opens.to_string(),
            "click_count": t.clicks.to_string(),
            "reply_count": t.replies.to_string(),
            "block_count": "0",
            "total_count": t.leads.to_string(),
            "drafted_count": "0",
            "bounce_count": "0",
            "unsubscribed_count": t.unsubscribed.to_string(),
            "sequence_count": c.sequences.len().to_string(),
            "unique_sent_count": t.unique_sent.to_string(),
            "unique_open_count": t.unique_opens.to_string(),
            "unique_click_count": t.unique_clicks.to_string(),
            "tags": [],
            "client_id": c.client_id,
            "client_name": c.client_id.map(|id| format!("Client {id}")),
            "client_email": c.client_id.map(|id| format!("client{id}@example.com")),
            "parent_campaign_id": Value::Null,
            "campaign_lead_stats": {"total": t.leads, "interested": t.interested},
        }),
    )
}

fn statistics(c: &Campaign, call: &Call) -> Response {
    let (Some(offset), Some(limit)) = (call.number("offset", 0), call.number("limit", 100)) else {
        return invalid();
    };
    if !(1..=MAX_STATS_PAGE).contains(&limit) {
        return invalid();
    }
    let leads = &c.leads;
    let first_step = c.sequences.first();
    let step_id = first_step
        .and_then(|s| s.get("id"))
        .cloned()
        .unwrap_or(Value::Null);
    let subject = first_step
        .and_then(|s| s.get("subject"))
        .cloned()
        .unwrap_or(Value::Null);
    let data: Vec<Value> = leads
        .live_indices(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(limit as usize)
        .filter_map(|i| leads.get(i))
        .map(|l| {
            let opened = l.counts.open_count > 0;
            json!({
                "stats_id": l.campaign_lead_map_id,
                "lead_name": format!("{} {}", l.first_name, l.last_name),
                "lead_email": l.email,
                "lead_category": if l.category.is_empty() { Value::Null } else { json!(l.category) },
                "sequence_number": 1,
                "email_campaign_seq_id": step_id,
                "seq_variant_id": Value::Null,
                "email_subject": subject,
                "email_message": "",
                "sent_time": l.created_at,
                "open_time": if opened { json!(l.created_at) } else { Value::Null },
                "click_time": if l.counts.click_count > 0 { json!(l.created_at) } else { Value::Null },
                "reply_time": if l.counts.reply_count > 0 { json!(l.created_at) } else { Value::Null },
                "open_count": l.counts.open_count,
                "click_count": l.counts.click_count,
                "is_unsubscribed": l.counts.is_unsubscribed,
                "is_bounced": false,
                "ignore_reply": false,
            })
        })
        .collect();
    json_response(
        200,
        &json!({"total_stats": leads.len().to_string(), "data": data, "offset": offset, "limit": limit}),
    )
}
