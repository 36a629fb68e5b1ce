//! Request dispatch for `/api/v1`: authentication by `api_key` (see
//! [`crate::auth`]), path matching on
//! percent-decoded segments (one trailing slash ignored, as Express does), and the
//! handlers for campaigns themselves and their leads. Sub-resources live in
//! [`crate::resources`], per-lead routes in [`crate::lead_routes`] and the
//! account-wide ones in [`crate::account_routes`].

use std::sync::{Mutex, MutexGuard};

use http::Method;
use serde_json::{json, Value};

use crate::auth::{self, KeyPlace};
use crate::body::{json_response, FakeBody};
use crate::query::{percent_decode, Query};
use crate::state::{Campaign, Store};
use crate::FakeConfig;
use crate::{account_routes, csv, lead_routes, lead_upload, resources, settings};

/// A response as the handlers build it.
pub type Response = http::Response<FakeBody>;

/// Largest `limit` on `GET /campaigns/{id}/leads`.
const MAX_LEADS_PAGE: u64 = 100;

/// The API behind the fake: the keys it accepts and its campaign store.
pub struct Api {
    api_keys: Vec<String>,
    store: Mutex<Store>,
}

/// What a handler gets to see of a request.
pub struct Call<'a> {
    pub method: &'a Method,
    pub query: Query,
    pub body: &'a [u8],
}

impl Call<'_> {
    /// GET or HEAD.
    pub fn is_get(&self) -> bool {
        self.method == Method::GET || self.method == Method::HEAD
    }

    /// The body as a JSON value; an empty body reads as `{}`.
    pub fn json(&self) -> Option<Value> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Some(json!({}));
        }
        serde_json::from_slice(self.body).ok()
    }

    /// A query parameter parsed as a number, `default` when absent, `None` when bad.
    pub fn number(&self, name: &str, default: u64) -> Option<u64> {
        match self.query.get(name) {
            None | Some("") => Some(default),
            Some(v) => v.parse().ok(),
        }
    }

    /// `offset` (default 0) and `limit` (default and most `max`, at least 1);
    /// `None` when either is bad.
    pub fn page(&self, max: u64) -> Option<(usize, usize)> {
        let offset = self.number("offset", 0)?;
        let limit = self
            .number("limit", max)
            .filter(|l| (1..=max).contains(l))?;
        Some((
            usize::try_from(offset).unwrap_or(usize::MAX),
            usize::try_from(limit).unwrap_or(usize::MAX),
        ))
    }
}

impl Api {
    /// An API seeded from `config`.
    pub fn new(config: &FakeConfig) -> Self {
        Self {
            api_keys: std::iter::once(&config.api_key)
                .chain(&config.extra_api_keys)
                .cloned()
                .collect(),
            store: Mutex::new(Store::new(&config.campaigns)),
        }
    }

    /// Whether `key` is one of the keys this fake accepts.
    pub fn accepts(&self, key: &str) -> bool {
        self.api_keys.iter().any(|k| k == key)
    }

    /// The store, even if a handler once panicked while holding it.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers one request; `target` is the raw request target.
    pub fn handle(&self, method: &Method, target: &str, body: &[u8]) -> Response {
        let (path, raw_query) = target.split_once('?').unwrap_or((target, ""));
        let path = strip_authority(path);
        let Some(rest) = path
            .strip_prefix("/api/v1")
            .filter(|r| r.is_empty() || r.starts_with('/'))
        else {
            return not_found();
        };
        let query = Query::parse(raw_query);
        let unkeyed;
        let body = match auth::presented(method, &query, body) {
            Some((key, place)) if self.accepts(&key) => match place {
                KeyPlace::Query => body,
                KeyPlace::Body => {
                    unkeyed = auth::without_body_key(body);
                    &unkeyed[..]
                }
            },
            _ => return json_response(401, &json!({"message": "Invalid API Key"})),
        };
        let call = Call {
            method,
            query,
            body,
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let segments: Vec<String> = rest
            .split('/')
            .skip(1)
            .map(|s| percent_decode(s, false))
            .collect();
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        match segments.as_slice() {
            ["campaigns"] if call.is_get() => self.list(&call),
            ["campaigns", "create"] if method == Method::POST => self.create(&call),
            ["campaigns", "create-subsequence"] if method == Method::POST => ok(),
            ["campaigns", id, tail @ ..] => match id.parse::<u64>() {
                Ok(id) => self.campaign_route(id, tail, &call),
                Err(_) => invalid(),
            },
            // These two must win over `/leads/{lead_id}`.
            ["leads", "get-domain-block-list" | "delete-domain-block-list"] => {
                account_routes::route(&mut self.store(), &segments, &call)
            }
            ["leads", tail @ ..] => lead_routes::route(&mut self.store(), tail, &call),
            _ => account_routes::route(&mut self.store(), &segments, &call),
        }
    }

    fn list(&self, call: &Call) -> Response {
        let client = match call.query.get("client_id") {
            None | Some("") => None,
            Some(v) => match v.parse::<u64>() {
                Ok(id) => Some(id),
                Err(_) => return invalid(),
            },
        };
        let tags = call.query.get("include_tags") == Some("true");
        let store = self.store();
        let list: Vec<Value> = store
            .campaigns
            .values()
            .rev()
            .filter(|c| client.is_none() || c.client_id == client)
            .map(|c| c.to_json(tags))
            .collect();
        json_response(200, &Value::Array(list))
    }

    fn create(&self, call: &Call) -> Response {
        let Some(Value::Object(body)) = call.json() else {
            return invalid();
        };
        if body.keys().any(|k| k != "name" && k != "client_id") {
            return invalid();
        }
        let name = match body.get("name") {
            None | Some(Value::Null) => "Untitled Campaign".to_owned(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return invalid(),
        };
        let client_id = match body.get("client_id") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(id) => Some(id),
                None => return invalid(),
            },
        };
        let mut store = self.store();
        let c = store.create_campaign(name, client_id);
        json_response(
            200,
            &json!({"ok": true, "id": c.id, "name": c.name, "created_at": c.created_at}),
        )
    }

    fn campaign_route(&self, id: u64, tail: &[&str], call: &Call) -> Response {
        let mut guard = self.store();
        let store = &mut *guard;
        let Some(c) = store.campaigns.get_mut(&id) else {
            return campaign_not_found();
        };
        let m = call.method;
        let get = call.is_get();
        match tail {
            [] if get => json_response(
                200,
                &c.to_json(call.query.get("include_tags") == Some("true")),
            ),
            [] if m == Method::DELETE => {
                store.campaigns.remove(&id);
                ok()
            }
            // The legacy "update campaign schedule" route.
            [] if m == Method::POST => ok(),
            ["status"] if m == Method::POST || m == Method::PATCH => set_status(c, call),
            ["leads-export"] if get => export(c),
            ["leads"] if get => list_leads(c, call),
            ["leads"] if m == Method::POST => lead_upload::add_leads(c, &store.account, call),
            ["leads", lead_id] if m == Method::DELETE => match lead_id.parse() {
                Ok(lead_id) if c.remove_lead(lead_id) => {
                    json_response(200, &json!({"ok": true, "message": "success"}))
                }
                Ok(_) => not_found(),
                Err(_) => invalid(),
            },
            ["leads", _] if m == Method::POST => ok(),
            ["leads", lead_id, "message-history"] if get => {
                lead_routes::message_history(c, &store.account, lead_id)
            }
            ["leads", lead_id, action @ ("pause" | "resume" | "unsubscribe")]
                if m == Method::POST =>
            {
                lead_routes::campaign_action(c, lead_id, action)
            }
            ["leads", _, "category"] if m == Method::POST => ok(),
            ["settings"] if m == Method::POST => {
                match settings::apply_settings(&mut c.fields, &mut c.client_id, call.json()) {
                    Ok(()) => written(c),
                    Err(r) => r.into(),
                }
            }
            ["schedule"] if m == Method::POST => {
                match settings::apply_schedule(&mut c.fields, call.json()) {
                    Ok(()) => written(c),
                    Err(r) => r.into(),
                }
            }
            _ => resources::route(c, &mut store.account, tail, call),
        }
    }

    /// The current campaign object, `None` if there is no such campaign.
    pub fn campaign(&self, id: u64) -> Option<Value> {
        self.store().campaigns.get(&id).map(|c| c.to_json(false))
    }

    /// The bytes the export would serve right now (empty if there is no campaign).
    pub fn expected_csv(&self, id: u64) -> Vec<u8> {
        let leads = self.store().campaigns.get(&id).map(|c| c.leads.clone());
        leads.map(csv::expected_csv).unwrap_or_default()
    }
}

/// Turns an absolute-form target's path (`http://host/api/...`) into `/api/...`.
fn strip_authority(path: &str) -> &str {
    match path.split_once("://") {
        Some((_, after)) if !path.starts_with('/') => after.find('/').map_or("/", |i| &after[i..]),
        _ => path,
    }
}

/// Marks `c` changed and answers `{"ok":true}`.
fn written(c: &mut Campaign) -> Response {
    c.touch();
    ok()
}

fn set_status(c: &mut Campaign, call: &Call) -> Response {
    let body = call.json();
    let status = match body
        .as_ref()
        .and_then(|v| v.get("status"))
        .and_then(Value::as_str)
    {
        Some("START") => "ACTIVE",
        Some(s @ ("PAUSED" | "STOPPED" | "ARCHIVED")) => s,
        _ => return invalid(),
    };
    c.status = status.to_owned();
    c.touch();
    ok()
}

fn export(c: &Campaign) -> Response {
    let mut response = http::Response::new(FakeBody::streaming(csv::stream_csv(c.leads.clone())));
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/csv"),
    );
    let disposition = format!("attachment; filename=sl_campaign_{}_leads.csv", c.id);
    if let Ok(v) = http::HeaderValue::from_str(&disposition) {
        headers.insert(http::header::CONTENT_DISPOSITION, v);
    }
    response
}

fn list_leads(c: &Campaign, call: &Call) -> Response {
    let (Some(offset), Some(limit)) = (
        call.number("offset", 0),
        call.number("limit", MAX_LEADS_PAGE),
    ) else {
        return invalid();
    };
    if !(1..=MAX_LEADS_PAGE).contains(&limit) {
        return invalid();
    }
    let status = call.query.get("status").filter(|s| !s.is_empty());
    if status
        .is_some_and(|s| !["STARTED", "INPROGRESS", "COMPLETED", "PAUSED", "STOPPED"].contains(&s))
    {
        return invalid();
    }
    let leads = &c.leads;
    let matches =
        |i: &usize| status.is_none_or(|s| leads.light(*i).is_some_and(|(st, _, _)| st == s));
    let total = match status {
        None => leads.len(),
        Some(_) => leads.live_indices(0).filter(matches).count(),
    };
    let offset = usize::try_from(offset).unwrap_or(usize::MAX);
    let data: Vec<Value> = leads
        .live_indices(0)
        .filter(matches)
        .skip(offset)
        .take(limit as usize)
        .filter_map(|i| leads.get(i))
        .map(|l| l.to_list_entry())
        .collect();
    json_response(
        200,
        &json!({"total_leads": total.to_string(), "offset": offset, "limit": limit, "data": data}),
    )
}

/// `{"ok":true}`.
pub fn ok() -> Response {
    json_response(200, &json!({"ok": true}))
}

/// 404 for a route (or object) that does not exist.
pub fn not_found() -> Response {
    json_response(404, &json!({"error": "Resource not found"}))
}

/// 404 for an unknown or deleted campaign.
pub fn campaign_not_found() -> Response {
    json_response(
        404,
        &json!({"error": "Campaign not found - Invalid campaign_id."}),
    )
}

/// 404 `{"error":"<what> not found"}` for an unknown object of a kind the routes
/// name ("Lead", "Email account", "Lead list", "Webhook", "API key", ...).
pub fn missing(what: &str) -> Response {
    json_response(404, &json!({"error": format!("{what} not found")}))
}

/// 422 for bad ids or parameters.
pub fn invalid() -> Response {
    json_response(422, &json!({"error": "Invalid parameters provided"}))
}
