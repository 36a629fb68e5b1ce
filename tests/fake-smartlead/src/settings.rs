//! A campaign's configurable fields (the part of the reference §1.2 object that
//! `POST /campaigns/{id}/settings` and `POST /campaigns/{id}/schedule` write),
//! their defaults, and the two write handlers with SmartLead's Joi-style
//! validation errors.
//!
//! Request shapes, where the sources disagree:
//! - **settings**: the legacy docs (helpcenter article 125, "Update Campaign
//!   General Settings") and bcharleson/smartlead-cli `campaigns update-settings`
//!   send a flat object of `track_settings` (array), `stop_lead_settings`,
//!   `unsubscribe_text`, `send_as_plain_text`, `follow_up_percentage` (0–100),
//!   `client_id` and `enable_ai_esp_matching`. The current docs' page
//!   (update-settings.mdx) shows `track_settings` as an object and lists other
//!   fields that no client sends; the fake rejects those.
//!   `track_settings` values are accepted in both spellings seen in the wild
//!   (`DONT_TRACK_EMAIL_OPEN`, legacy docs; `DONT_EMAIL_OPEN`, bcharleson and
//!   the campaign object) and stored in the read spelling (assumption).
//! - **schedule**: the legacy docs ("Update Campaign Schedule"), the
//!   jonathan-politzki MCP server and instill-ai's component send a flat
//!   `timezone`, `days_of_the_week` (0 = Sunday), `start_hour`/`end_hour`
//!   (`"HH:MM"`), `min_time_btw_emails`, `max_new_leads_per_day`,
//!   `schedule_start_time` (ISO or null). The current docs' page wraps a
//!   similar object in `"schedule"` with `days`; no client sends that, so the
//!   fake rejects it (`"schedule" is not allowed`).
//!
//! Both write only the fields given (a partial update) and answer `{"ok":true}`.
//! Validation failures answer 422 (D lists 422 as "Request validation failed.
//! Check parameter types, required fields, and value constraints") with
//! `{"error":"\"<field>\" is not allowed"}` and the like: the message wording
//! is observed (OBS2), the status and the envelope are not.

use serde_json::{json, Map, Value};

use crate::body::json_response;
use crate::routes::Response;

/// The settings keys `POST /campaigns/{id}/settings` accepts.
const SETTINGS_KEYS: [&str; 7] = [
    "track_settings",
    "stop_lead_settings",
    "unsubscribe_text",
    "send_as_plain_text",
    "follow_up_percentage",
    "client_id",
    "enable_ai_esp_matching",
];

/// The schedule keys `POST /campaigns/{id}/schedule` accepts.
const SCHEDULE_KEYS: [&str; 7] = [
    "timezone",
    "days_of_the_week",
    "start_hour",
    "end_hour",
    "min_time_btw_emails",
    "max_new_leads_per_day",
    "schedule_start_time",
];

/// `stop_lead_settings` values from the legacy docs, the current docs and the
/// campaign object.
const STOP_LEAD_VALUES: [&str; 5] = [
    "REPLY_TO_AN_EMAIL",
    "CLICK_ON_A_LINK",
    "OPEN_AN_EMAIL",
    "OPENED_EMAIL",
    "CLICKED_LINK",
];

/// The fields of a seeded campaign (reference §1.2 example).
pub fn seeded() -> Map<String, Value> {
    object(json!({
        "track_settings": ["DONT_EMAIL_OPEN", "DONT_LINK_CLICK"],
        "scheduler_cron_value": {"tz": "America/New_York", "days": [1, 2, 3, 4, 5], "endHour": "19:00", "startHour": "09:00"},
        "min_time_btwn_emails": 24,
        "max_leads_per_day": 100,
        "stop_lead_settings": "REPLY_TO_AN_EMAIL",
        "schedule_start_time": Value::Null,
        "enable_ai_esp_matching": true,
        "send_as_plain_text": false,
        "follow_up_percentage": 20,
        "unsubscribe_text": "",
    }))
}

/// The fields of a campaign just made by `POST /campaigns/create`: nothing
/// scheduled or tracked-off yet. The values are the fake's choice (no source
/// shows a fresh campaign); they differ from [`seeded`] so that a restore
/// that forgets a write shows up in a field-by-field comparison.
pub fn fresh() -> Map<String, Value> {
    object(json!({
        "track_settings": [],
        "scheduler_cron_value": Value::Null,
        "min_time_btwn_emails": 10,
        "max_leads_per_day": 20,
        "stop_lead_settings": "REPLY_TO_AN_EMAIL",
        "schedule_start_time": Value::Null,
        "enable_ai_esp_matching": false,
        "send_as_plain_text": false,
        "follow_up_percentage": 100,
        "unsubscribe_text": "",
    }))
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// A Joi-style validation failure: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    path: String,
    problem: String,
}

impl From<Rejection> for Response {
    /// 422 `{"error":"\"<path>\" <problem>"}`.
    fn from(r: Rejection) -> Self {
        json_response(
            422,
            &json!({"error": format!("\"{}\" {}", r.path, r.problem)}),
        )
    }
}

/// The [`Rejection`] of field `path`.
pub fn rejected(path: &str, problem: &str) -> Rejection {
    Rejection {
        path: path.to_owned(),
        problem: problem.to_owned(),
    }
}

/// [`rejected`] as a response.
pub fn reject(path: &str, problem: &str) -> Response {
    rejected(path, problem).into()
}

/// The body as an object, or the rejection Joi gives for anything else.
pub fn body_object(body: Option<Value>) -> Result<Map<String, Value>, Rejection> {
    match body {
        Some(Value::Object(m)) => Ok(m),
        _ => Err(rejected("value", "must be of type object")),
    }
}

/// Fails on the first key of `body` not in `allowed` (prefixed by `path`).
pub fn only_keys(body: &Map<String, Value>, allowed: &[&str], path: &str) -> Result<(), Rejection> {
    match body.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(rejected(&format!("{path}{k}"), "is not allowed")),
        None => Ok(()),
    }
}

/// Applies a settings body to `fields` (and `client_id`); nothing changes on error.
pub fn apply_settings(
    fields: &mut Map<String, Value>,
    client_id: &mut Option<u64>,
    body: Option<Value>,
) -> Result<(), Rejection> {
    let body = body_object(body)?;
    only_keys(&body, &SETTINGS_KEYS, "")?;
    let mut next = fields.clone();
    let mut next_client = *client_id;
    for (key, value) in &body {
        let stored = match key.as_str() {
            "track_settings" => track_settings(value)?,
            "stop_lead_settings" => match value.as_str() {
                Some(s) if STOP_LEAD_VALUES.contains(&s) => json!(s),
                _ => {
                    return Err(rejected(
                        key,
                        "must be one of [REPLY_TO_AN_EMAIL, CLICK_ON_A_LINK, OPEN_AN_EMAIL]",
                    ))
                }
            },
            "unsubscribe_text" => string(key, value)?,
            "send_as_plain_text" | "enable_ai_esp_matching" => boolean(key, value)?,
            "follow_up_percentage" => match value.as_u64() {
                Some(n) if n <= 100 => json!(n),
                _ => return Err(rejected(key, "must be less than or equal to 100")),
            },
            "client_id" => {
                next_client = match value {
                    Value::Null => None,
                    v => Some(
                        v.as_u64()
                            .ok_or_else(|| rejected(key, "must be a number"))?,
                    ),
                };
                continue;
            }
            _ => unreachable!("only_keys let through an unknown key"),
        };
        next.insert(key.clone(), stored);
    }
    *fields = next;
    *client_id = next_client;
    Ok(())
}

fn track_settings(value: &Value) -> Result<Value, Rejection> {
    let Some(items) = value.as_array() else {
        return Err(rejected("track_settings", "must be an array"));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let read = match item.as_str() {
            Some("DONT_TRACK_EMAIL_OPEN" | "DONT_EMAIL_OPEN") => "DONT_EMAIL_OPEN",
            Some("DONT_TRACK_LINK_CLICK" | "DONT_LINK_CLICK") => "DONT_LINK_CLICK",
            Some("DONT_TRACK_REPLY_TO_AN_EMAIL" | "DONT_REPLY_TO_AN_EMAIL") => {
                "DONT_REPLY_TO_AN_EMAIL"
            }
            _ => {
                return Err(rejected(
                    &format!("track_settings[{i}]"),
                    "must be one of [DONT_TRACK_EMAIL_OPEN, DONT_TRACK_LINK_CLICK, DONT_TRACK_REPLY_TO_AN_EMAIL]",
                ))
            }
        };
        if !out.contains(&read) {
            out.push(read);
        }
    }
    Ok(json!(out))
}

/// Applies a schedule body to `fields`; nothing changes on error.
pub fn apply_schedule(
    fields: &mut Map<String, Value>,
    body: Option<Value>,
) -> Result<(), Rejection> {
    let body = body_object(body)?;
    only_keys(&body, &SCHEDULE_KEYS, "")?;
    let mut cron = match fields.get("scheduler_cron_value") {
        Some(Value::Object(m)) => m.clone(),
        _ => object(json!({"tz": null, "days": null, "endHour": null, "startHour": null})),
    };
    let mut next = fields.clone();
    for (key, value) in &body {
        match key.as_str() {
            "timezone" => {
                let tz = value.as_str().filter(|s| s.contains('/') || *s == "UTC");
                let tz = tz.ok_or_else(|| rejected(key, "must be a valid IANA timezone"))?;
                cron.insert("tz".into(), json!(tz));
            }
            "days_of_the_week" => {
                let days: Option<Vec<u64>> = value
                    .as_array()
                    .and_then(|a| a.iter().map(|d| d.as_u64().filter(|d| *d <= 6)).collect());
                let days = days.ok_or_else(|| rejected(key, "must be an array of numbers 0-6"))?;
                cron.insert("days".into(), json!(days));
            }
            "start_hour" | "end_hour" => {
                let hour = value.as_str().filter(|s| is_hh_mm(s));
                let hour = hour.ok_or_else(|| rejected(key, "must be in HH:MM format"))?;
                let name = if key == "start_hour" {
                    "startHour"
                } else {
                    "endHour"
                };
                cron.insert(name.into(), json!(hour));
            }
            "min_time_btw_emails" => {
                let n = value
                    .as_u64()
                    .ok_or_else(|| rejected(key, "must be a number"))?;
                next.insert("min_time_btwn_emails".into(), json!(n));
            }
            "max_new_leads_per_day" => {
                let n = value
                    .as_u64()
                    .ok_or_else(|| rejected(key, "must be a number"))?;
                next.insert("max_leads_per_day".into(), json!(n));
            }
            "schedule_start_time" => match value {
                Value::Null => {
                    next.insert(key.clone(), Value::Null);
                }
                Value::String(s) if s.len() >= 10 && s.as_bytes()[4] == b'-' => {
                    next.insert(key.clone(), json!(s));
                }
                _ => return Err(rejected(key, "must be a valid ISO 8601 date")),
            },
            _ => unreachable!("only_keys let through an unknown key"),
        }
    }
    if body.keys().any(|k| {
        matches!(
            k.as_str(),
            "timezone" | "days_of_the_week" | "start_hour" | "end_hour"
        )
    }) {
        next.insert("scheduler_cron_value".into(), Value::Object(cron));
    }
    *fields = next;
    Ok(())
}

fn is_hh_mm(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 5
        && b[2] == b':'
        && s[..2].parse::<u8>().is_ok_and(|h| h < 24)
        && s[3..].parse::<u8>().is_ok_and(|m| m < 60)
}

fn string(key: &str, value: &Value) -> Result<Value, Rejection> {
    match value {
        Value::String(_) => Ok(value.clone()),
        _ => Err(rejected(key, "must be a string")),
    }
}

fn boolean(key: &str, value: &Value) -> Result<Value, Rejection> {
    match value {
        Value::Bool(_) => Ok(value.clone()),
        _ => Err(rejected(key, "must be a boolean")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_are_hh_mm() {
        assert!(is_hh_mm("09:00") && is_hh_mm("23:59"));
        assert!(!is_hh_mm("24:00") && !is_hh_mm("9:00") && !is_hh_mm("09:60"));
    }

    #[test]
    fn a_rejected_write_changes_nothing() {
        let mut fields = fresh();
        let mut client = None;
        let body = json!({"unsubscribe_text": "bye", "follow_up_percentage": 101});
        assert!(apply_settings(&mut fields, &mut client, Some(body)).is_err());
        assert_eq!(fields, fresh());
    }
}
