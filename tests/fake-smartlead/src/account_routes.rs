//! Handlers for the account-wide routes of [`crate::account`]: sender email
//! accounts, lead lists, global webhooks, client API keys, the domain block list,
//! and the destructive calls the fake only acknowledges (tag mappings, CRM lead
//! tags). Reached from [`crate::routes`] with every path segment and the store
//! locked; anything unmatched is the generic 404.

use std::collections::BTreeMap;

use http::Method;
use serde_json::{json, Value};

use crate::account::AccountWide;
use crate::body::json_response;
use crate::routes::{invalid, missing, not_found, ok, Call, Response};
use crate::state::Store;

/// Largest `limit` on `GET /email-accounts` and `GET /lead-list/{id}/leads`.
const MAX_PAGE: u64 = 100;

/// Dispatches the whole path (the segments after `/api/v1`).
pub fn route(store: &mut Store, segments: &[&str], call: &Call) -> Response {
    let get = call.is_get();
    let delete = call.method == Method::DELETE;
    let a = &mut store.account;
    match segments {
        ["email-accounts"] if get => list_accounts(a, call),
        ["email-accounts", "tag-mapping"] if delete => acknowledge(call),
        ["email-accounts", id] if get => by_id(id, |id| {
            found(a.email_accounts.get(&id), "Email account", Value::clone)
        }),
        ["email-accounts", id] if delete => by_id(id, |id| delete_account(store, id)),
        ["lead-list", id] if get => by_id(id, |id| {
            found(a.lead_lists.get(&id), "Lead list", |l| l.summary())
        }),
        ["lead-list", id, "leads"] if get => by_id(id, |id| list_leads(a, id, call)),
        ["lead-list", id] if delete => by_id(id, |id| {
            removed(a.lead_lists.remove(&id).is_some(), "Lead list")
        }),
        ["webhook"] if get => all(&a.webhooks),
        ["webhook", "delete"] if delete => delete_webhook(a, call),
        ["client", "api-key"] if get => all(&a.api_keys),
        ["client", "api-key", id] if delete => by_id(id, |id| {
            removed(a.api_keys.remove(&id).is_some(), "API key")
        }),
        ["leads", "get-domain-block-list"] if get => all(&a.block_list),
        ["leads", "delete-domain-block-list"] if delete => delete_block(a, call),
        ["crm", "leads", "tags", id] if delete => by_id(id, |_| ok()),
        _ => not_found(),
    }
}

/// Runs `f` with `id` parsed as a number, 422 if it is not one.
fn by_id(id: &str, f: impl FnOnce(u64) -> Response) -> Response {
    match id.parse() {
        Ok(id) => f(id),
        Err(_) => invalid(),
    }
}

/// 200 with `show(object)`, or 404 `{"error":"<what> not found"}`.
fn found<T>(object: Option<&T>, what: &str, show: impl FnOnce(&T) -> Value) -> Response {
    match object {
        Some(o) => json_response(200, &show(o)),
        None => missing(what),
    }
}

/// `{"ok":true}` if something was removed, 404 `{"error":"<what> not found"}` if not.
fn removed(done: bool, what: &str) -> Response {
    if done {
        ok()
    } else {
        missing(what)
    }
}

/// The bare array of every object of one kind, in id order.
fn all(objects: &BTreeMap<u64, Value>) -> Response {
    json_response(200, &Value::Array(objects.values().cloned().collect()))
}

/// `{"ok":true}` for any JSON body (an empty body reads as `{}`), 422 otherwise.
fn acknowledge(call: &Call) -> Response {
    match call.json() {
        Some(_) => ok(),
        None => invalid(),
    }
}

fn list_accounts(a: &AccountWide, call: &Call) -> Response {
    let Some((offset, limit)) = call.page(MAX_PAGE) else {
        return invalid();
    };
    let page: Vec<Value> = a
        .email_accounts
        .values()
        .skip(offset)
        .take(limit)
        .cloned()
        .collect();
    json_response(200, &Value::Array(page))
}

/// Deletes the account and detaches it from every campaign.
fn delete_account(store: &mut Store, id: u64) -> Response {
    if store.account.email_accounts.remove(&id).is_none() {
        return missing("Email account");
    }
    for c in store.campaigns.values_mut() {
        c.email_account_ids.retain(|&a| a != id);
    }
    ok()
}

fn list_leads(a: &AccountWide, id: u64, call: &Call) -> Response {
    let Some(list) = a.lead_lists.get(&id) else {
        return missing("Lead list");
    };
    let Some((offset, limit)) = call.page(MAX_PAGE) else {
        return invalid();
    };
    let data: Vec<Value> = list
        .leads
        .iter()
        .skip(offset)
        .take(limit)
        .cloned()
        .collect();
    json_response(
        200,
        &json!({"total_leads": list.leads.len().to_string(), "offset": offset, "limit": limit, "data": data}),
    )
}

/// `DELETE /webhook/delete` with `{"id":N}`.
fn delete_webhook(a: &mut AccountWide, call: &Call) -> Response {
    match call.json().as_ref().and_then(|b| b.get("id")?.as_u64()) {
        Some(id) => removed(a.webhooks.remove(&id).is_some(), "Webhook"),
        None => invalid(),
    }
}

/// `DELETE /leads/delete-domain-block-list?id=N`.
fn delete_block(a: &mut AccountWide, call: &Call) -> Response {
    match call.query.get("id").and_then(|v| v.parse::<u64>().ok()) {
        Some(id) => removed(a.block_list.remove(&id).is_some(), "Block list entry"),
        None => invalid(),
    }
}
