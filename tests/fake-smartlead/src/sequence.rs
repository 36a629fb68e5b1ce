//! `POST /campaigns/{id}/sequences`: validates the steps and replaces the
//! campaign's sequence with them.
//!
//! The request shape (reference §1.5; D update-sequences.mdx; the legacy
//! docs' "Save Campaign Sequence" example, quoted in client code): each step
//! is `{"id": null | N, "seq_number", "subject", "email_body",
//! "seq_delay_details": {"delay_in_days"}, "seq_variants": [...]}`, optionally
//! with the A/B keys `variant_distribution_type`,
//! `lead_distribution_percentage`, `winning_metric_property`. A variant is
//! `{"id"?, "variant_label", "subject", "email_body",
//! "variant_distribution_percentage"?}`. bcharleson/smartlead-cli reports that
//! the validator allows only these step keys, so anything else (including the
//! read-side name `sequence_variants`) is rejected Joi-style. `delayInDays`
//! is accepted for `delay_in_days` (bcharleson sees it in read output).
//!
//! `id: null` creates a step and a number updates one; a number that is not a
//! step of this campaign is refused (the fake's choice: the live behaviour is
//! unknown). Steps left out are dropped. SmartLead refuses the write while
//! the campaign is ACTIVE (D); the fake answers 422.
//!
//! What GET then shows is the observed read shape: `sequence_variants`
//! (null for a step without variants), `seq_delay_details` as
//! `{"delay_in_days": N}`, steps in `seq_number` order.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::body::json_response;
use crate::routes::{Call, Response};
use crate::settings::{only_keys, reject, rejected, Rejection};
use crate::state::{now, Campaign};

const STEP_KEYS: [&str; 9] = [
    "id",
    "seq_number",
    "subject",
    "email_body",
    "seq_delay_details",
    "seq_variants",
    "variant_distribution_type",
    "lead_distribution_percentage",
    "winning_metric_property",
];

const VARIANT_KEYS: [&str; 5] = [
    "id",
    "variant_label",
    "subject",
    "email_body",
    "variant_distribution_percentage",
];

/// Most days a step may wait (D: "Configure delays between emails (0-365 days)").
const MAX_DELAY_DAYS: u64 = 365;

/// Handles the write.
pub fn save(c: &mut Campaign, call: &Call) -> Response {
    if c.status == "ACTIVE" {
        return json_response(
            422,
            &json!({"error": "Cannot modify sequences while the campaign is ACTIVE. Pause the campaign first."}),
        );
    }
    let Some(Value::Object(body)) = call.json() else {
        return reject("value", "must be of type object");
    };
    if let Err(r) = only_keys(&body, &["sequences"], "") {
        return r.into();
    }
    let Some(steps) = body.get("sequences").and_then(Value::as_array) else {
        return reject("sequences", "is required");
    };
    let mut stored = Vec::with_capacity(steps.len());
    let mut numbers = BTreeSet::new();
    for (i, step) in steps.iter().enumerate() {
        match read_step(c, step, &format!("sequences[{i}]")) {
            Ok(s) if numbers.insert(s["seq_number"].as_u64()) => stored.push(s),
            Ok(_) => {
                return reject(
                    &format!("sequences[{i}].seq_number"),
                    "contains a duplicate value",
                )
            }
            Err(r) => return r.into(),
        }
    }
    stored.sort_by_key(|s| s["seq_number"].as_u64());
    c.sequences = stored;
    c.touch();
    json_response(200, &json!({"ok": true, "data": []}))
}

/// One step in its stored (read) shape, with ids given to new steps and variants.
fn read_step(c: &mut Campaign, step: &Value, path: &str) -> Result<Value, Rejection> {
    let Some(o) = step.as_object() else {
        return Err(rejected(path, "must be of type object"));
    };
    only_keys(o, &STEP_KEYS, &format!("{path}."))?;
    let existing = match o.get("id") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let found = v
                .as_u64()
                .and_then(|id| c.sequences.iter().find(|s| s["id"].as_u64() == Some(id)));
            match found {
                Some(s) => Some(s.clone()),
                None => {
                    return Err(rejected(
                        &format!("{path}.id"),
                        "must be the id of a step of this campaign",
                    ))
                }
            }
        }
    };
    let seq_number = o
        .get("seq_number")
        .and_then(Value::as_u64)
        .filter(|n| *n >= 1)
        .ok_or_else(|| {
            rejected(
                &format!("{path}.seq_number"),
                "must be a number greater than or equal to 1",
            )
        })?;
    let subject = text(o, "subject", path)?;
    let email_body = text(o, "email_body", path)?;
    let delay = delay_days(
        o.get("seq_delay_details"),
        &format!("{path}.seq_delay_details"),
    )?;
    let variants = match o.get("seq_variants") {
        None | Some(Value::Null) => None,
        Some(Value::Array(list)) if !list.is_empty() => {
            let old = existing.as_ref().map(|s| &s["sequence_variants"]);
            let mut out = Vec::with_capacity(list.len());
            for (k, v) in list.iter().enumerate() {
                out.push(read_variant(
                    c,
                    v,
                    old,
                    &format!("{path}.seq_variants[{k}]"),
                )?);
            }
            Some(out)
        }
        Some(_) => {
            return Err(rejected(
                &format!("{path}.seq_variants"),
                "must be a non-empty array",
            ))
        }
    };
    if email_body.is_none() && variants.is_none() {
        return Err(rejected(&format!("{path}.email_body"), "is required"));
    }
    let stamp = now();
    let (id, created_at) = match &existing {
        Some(s) => (s["id"].clone(), s["created_at"].clone()),
        None => (json!(c.next_id()), json!(stamp)),
    };
    Ok(json!({
        "id": id,
        "created_at": created_at,
        "updated_at": stamp,
        "email_campaign_id": c.id,
        "seq_number": seq_number,
        "subject": subject.unwrap_or_default(),
        "email_body": email_body.unwrap_or_default(),
        "seq_delay_details": {"delay_in_days": delay},
        "sequence_variants": variants,
    }))
}

fn read_variant(
    c: &mut Campaign,
    v: &Value,
    old: Option<&Value>,
    path: &str,
) -> Result<Value, Rejection> {
    let Some(o) = v.as_object() else {
        return Err(rejected(path, "must be of type object"));
    };
    only_keys(o, &VARIANT_KEYS, &format!("{path}."))?;
    let id = match o.get("id") {
        None | Some(Value::Null) => json!(c.next_id()),
        Some(id) => {
            let known = old
                .and_then(Value::as_array)
                .is_some_and(|vs| vs.iter().any(|x| x["id"] == *id));
            if !known {
                return Err(rejected(
                    &format!("{path}.id"),
                    "must be the id of a variant of this step",
                ));
            }
            id.clone()
        }
    };
    let label = match o.get("variant_label") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(rejected(&format!("{path}.variant_label"), "is required")),
    };
    let share = match o.get("variant_distribution_percentage") {
        None | Some(Value::Null) => Value::Null,
        Some(p) => match p.as_u64() {
            Some(n) if n <= 100 => json!(n),
            _ => {
                return Err(rejected(
                    &format!("{path}.variant_distribution_percentage"),
                    "must be less than or equal to 100",
                ))
            }
        },
    };
    Ok(json!({
        "id": id,
        "variant_label": label,
        "subject": text(o, "subject", path)?.unwrap_or_default(),
        "email_body": text(o, "email_body", path)?.unwrap_or_default(),
        "variant_distribution_percentage": share,
    }))
}

/// An optional string field; `null` reads as absent.
fn text(o: &Map<String, Value>, key: &str, path: &str) -> Result<Option<String>, Rejection> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(rejected(&format!("{path}.{key}"), "must be a string")),
    }
}

fn delay_days(details: Option<&Value>, path: &str) -> Result<u64, Rejection> {
    let Some(Value::Object(d)) = details else {
        return Err(rejected(path, "is required"));
    };
    only_keys(d, &["delay_in_days", "delayInDays"], &format!("{path}."))?;
    d.get("delay_in_days")
        .or_else(|| d.get("delayInDays"))
        .and_then(Value::as_u64)
        .filter(|n| *n <= MAX_DELAY_DAYS)
        .ok_or_else(|| {
            rejected(
                &format!("{path}.delay_in_days"),
                "must be a number from 0 to 365",
            )
        })
}
