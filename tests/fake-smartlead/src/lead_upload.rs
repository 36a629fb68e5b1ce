//! `POST /campaigns/{id}/leads` (reference §1.7): at most 400 leads a call,
//! Joi-style rejection of unknown keys, de-duplication within the call and
//! against the campaign, the account's block and unsubscribe lists, and the
//! response shape real clients read.
//!
//! Every check is O(1) per lead (the campaign keeps an email index, the
//! unsubscribe list is a set, the block list is a handful of entries), so a
//! 100,000-lead restore in 250 calls costs the same per call at the end as at
//! the start.
//!
//! The `settings` flags: `ignore_global_block_list` and
//! `ignore_unsubscribe_list` let blocked and unsubscribed emails in (the
//! fake's reading of "ignore the list"; the legacy docs' wording, "true
//! ignores leads ... that are part of your block list", can be read the other
//! way). `ignore_community_bounce_list`, `ignore_duplicate_leads_in_other_campaign`,
//! `ignore_duplicate_leads_in_same_campaign` and `ignore_invalid_emails`
//! (the last two from PYCLI) are accepted and have no effect: the fake has no
//! bounce list, and leads are campaign-scoped.

use std::collections::HashSet;

use serde_json::{json, Map, Value};

use crate::account::AccountWide;
use crate::body::json_response;
use crate::lead::Lead;
use crate::routes::{Call, Response};
use crate::settings::{only_keys, reject, rejected, Rejection};
use crate::state::Campaign;

/// Most leads one call may carry (D add-to-campaign.mdx; reference §1.7).
pub const MAX_LEADS_PER_ADD: usize = 400;

/// The keys a `lead_list` entry may have (D).
const LEAD_KEYS: [&str; 10] = [
    "email",
    "first_name",
    "last_name",
    "phone_number",
    "company_name",
    "website",
    "location",
    "linkedin_profile",
    "company_url",
    "custom_fields",
];

/// The keys `settings` may have (D, plus PYCLI's last two).
const SETTINGS_KEYS: [&str; 6] = [
    "ignore_global_block_list",
    "ignore_unsubscribe_list",
    "ignore_community_bounce_list",
    "ignore_duplicate_leads_in_other_campaign",
    "ignore_duplicate_leads_in_same_campaign",
    "ignore_invalid_emails",
];

/// What happened to one upload, in the response's terms.
#[derive(Default)]
struct Outcome {
    added: usize,
    blocked: usize,
    duplicates: usize,
    already: usize,
    invalid: Vec<Value>,
    unsubscribed: Vec<Value>,
}

/// Handles the upload.
pub fn add_leads(c: &mut Campaign, account: &AccountWide, call: &Call) -> Response {
    let Some(Value::Object(body)) = call.json() else {
        return reject("value", "must be of type object");
    };
    if let Err(r) = only_keys(&body, &["lead_list", "settings"], "") {
        return r.into();
    }
    let Some(list) = body.get("lead_list").and_then(Value::as_array) else {
        return reject("lead_list", "is required");
    };
    if list.len() > MAX_LEADS_PER_ADD {
        return json_response(
            422,
            &json!({"error": "lead_list cannot exceed 400 leads per request", "provided_count": list.len(), "max_allowed": MAX_LEADS_PER_ADD}),
        );
    }
    let flags = match flags(body.get("settings")) {
        Ok(f) => f,
        Err(r) => return r.into(),
    };
    let mut entries: Vec<(&Map<String, Value>, &str)> = Vec::with_capacity(list.len());
    for (i, entry) in list.iter().enumerate() {
        let Some(o) = entry.as_object() else {
            return reject(&format!("lead_list[{i}]"), "must be of type object");
        };
        if let Err(r) = only_keys(o, &LEAD_KEYS, &format!("lead_list[{i}].")) {
            return r.into();
        }
        match o.get("email").and_then(Value::as_str) {
            Some(email) if !email.is_empty() => entries.push((o, email)),
            _ => return reject(&format!("lead_list[{i}].email"), "is required"),
        }
        if o.get("custom_fields")
            .is_some_and(|v| !v.is_object() && !v.is_null())
        {
            return reject(
                &format!("lead_list[{i}].custom_fields"),
                "must be of type object",
            );
        }
    }
    let mut seen: HashSet<String> = HashSet::with_capacity(entries.len());
    let mut out = Outcome::default();
    for (entry, email) in entries {
        let key = email.to_ascii_lowercase();
        if !valid_email(email) {
            out.invalid.push(Value::from(email));
        } else if !seen.insert(key.clone()) {
            out.duplicates += 1;
        } else if c.has_email(&key) {
            out.already += 1;
        } else if !flags.ignore_block_list && account.is_blocked(&key) {
            out.blocked += 1;
        } else if !flags.ignore_unsubscribe_list && account.is_unsubscribed(&key) {
            out.unsubscribed.push(Value::from(email));
        } else {
            c.add_lead(|cid, index| Lead::from_upload(cid, index, entry, email));
            out.added += 1;
        }
    }
    if out.added > 0 {
        c.touch();
    }
    json_response(
        200,
        &json!({
            "ok": true, "upload_count": out.added, "total_leads": out.added,
            "block_count": out.blocked, "duplicate_count": out.duplicates,
            "invalid_email_count": out.invalid.len(), "invalid_emails": out.invalid,
            "already_added_to_campaign": out.already, "unsubscribed_leads": out.unsubscribed,
            "is_lead_limit_exhausted": false, "lead_import_stopped_count": 0, "bounce_count": 0,
        }),
    )
}

/// The `settings` flags that change what is added.
struct Flags {
    ignore_block_list: bool,
    ignore_unsubscribe_list: bool,
}

fn flags(settings: Option<&Value>) -> Result<Flags, Rejection> {
    let mut f = Flags {
        ignore_block_list: false,
        ignore_unsubscribe_list: false,
    };
    let s = match settings {
        None | Some(Value::Null) => return Ok(f),
        Some(Value::Object(s)) => s,
        Some(_) => return Err(rejected("settings", "must be of type object")),
    };
    only_keys(s, &SETTINGS_KEYS, "settings.")?;
    for (key, value) in s {
        let Some(on) = value.as_bool() else {
            return Err(rejected(&format!("settings.{key}"), "must be a boolean"));
        };
        match key.as_str() {
            "ignore_global_block_list" => f.ignore_block_list = on,
            "ignore_unsubscribe_list" => f.ignore_unsubscribe_list = on,
            _ => {}
        }
    }
    Ok(f)
}

fn valid_email(email: &str) -> bool {
    email.split_once('@').is_some_and(|(user, domain)| {
        !user.is_empty() && domain.contains('.') && !domain.contains('@')
    })
}
