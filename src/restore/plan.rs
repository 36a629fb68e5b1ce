//! What a restore will do, worked out from the snapshot alone: every call,
//! with its body where it is small, and the leads counted (restored, or left
//! out and why). `--dry-run` prints this and makes no call.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::source::{Captured, Lead, LeadReader, SourceError};

/// Leads per add-leads call. Sources disagree on SmartLead's limit (400 in
/// the API docs, 350 on the rate-limit page, 100 in a legacy doc): 350
/// keeps within both current documents.
pub const LEADS_PER_CALL: usize = 350;

/// The rate SmartLead documents for an account, for the time estimate.
const REQUESTS_PER_MINUTE: u64 = 60;

/// Which leads come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LeadChoice {
    /// Everyone who may be emailed: not unsubscribed, bounced or blocked.
    Sendable,
    /// Every lead of the export.
    All,
}

impl LeadChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            LeadChoice::Sendable => "sendable",
            LeadChoice::All => "all",
        }
    }

    /// As recorded with a restore; anything but `all` is `sendable`, the
    /// choice that never emails someone who opted out.
    pub fn from_recorded(s: &str) -> LeadChoice {
        if s == "all" {
            LeadChoice::All
        } else {
            LeadChoice::Sendable
        }
    }
}

/// Why a lead is left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeftOut {
    /// No email address: SmartLead cannot take the lead.
    NoEmail,
    Unsubscribed,
    Bounced,
    Blocked,
}

impl LeftOut {
    pub fn as_str(self) -> &'static str {
        match self {
            LeftOut::NoEmail => "no email address",
            LeftOut::Unsubscribed => "unsubscribed",
            LeftOut::Bounced => "bounced",
            LeftOut::Blocked => "blocked",
        }
    }

    /// Why `lead` stays out under `choice`, if it does.
    pub fn of(lead: &Lead, choice: LeadChoice) -> Option<LeftOut> {
        if lead.email.is_empty() {
            return Some(LeftOut::NoEmail);
        }
        if choice == LeadChoice::All {
            return None;
        }
        if lead.is_unsubscribed {
            Some(LeftOut::Unsubscribed)
        } else if lead.category.to_ascii_lowercase().contains("bounce") {
            Some(LeftOut::Bounced)
        } else if lead.status.eq_ignore_ascii_case("BLOCKED") {
            Some(LeftOut::Blocked)
        } else {
            None
        }
    }
}

/// One call of the plan.
#[derive(Debug, Clone, Serialize)]
pub struct Call {
    pub method: &'static str,
    /// Under `/api/v1`; `{new}` is the new campaign's id.
    pub path: String,
    /// How many times (the leads call repeats per batch).
    pub times: u64,
    /// For people: what it carries.
    pub what: String,
    /// Its body, when it does not depend on the leads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

/// The leads of the export, counted.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LeadCount {
    pub total: u64,
    pub restored: u64,
    pub left_out: BTreeMap<LeftOut, u64>,
}

/// A restore, worked out.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub snapshot_id: i64,
    pub operation: String,
    pub original_id: Option<i64>,
    pub original_name: Option<String>,
    /// The new campaign's name.
    pub name: String,
    pub leads_choice: LeadChoice,
    pub calls: Vec<Call>,
    pub leads: LeadCount,
    /// The captured sender accounts (attached if they still exist).
    pub email_account_ids: Vec<i64>,
    /// What no restore brings back.
    pub not_restorable: &'static [&'static str],
}

/// What the API cannot bring back, said in every plan and report.
pub const NOT_RESTORABLE: &[&str] = &[
    "message history (sent emails and replies)",
    "opens, clicks and replies",
    "the leads' statuses and categories in the campaign (every lead starts again)",
    "the campaign's own id, creation date and analytics",
];

impl Plan {
    /// Works out the plan; reads the leads export once to count.
    pub fn new(
        captured: &Captured,
        name: Option<&str>,
        leads_choice: LeadChoice,
    ) -> Result<Plan, SourceError> {
        let c = &captured.campaign;
        let original_name = c.get("name").and_then(Value::as_str).map(str::to_string);
        let name = name
            .map(str::to_string)
            .or_else(|| original_name.clone())
            .unwrap_or_else(|| format!("Restored from snapshot {}", captured.snapshot.id));
        let mut leads = LeadCount::default();
        for lead in LeadReader::open(captured)? {
            let lead = lead?;
            leads.total += 1;
            match LeftOut::of(&lead, leads_choice) {
                Some(reason) => *leads.left_out.entry(reason).or_default() += 1,
                None => leads.restored += 1,
            }
        }
        let email_account_ids: Vec<i64> = captured
            .email_accounts
            .iter()
            .filter_map(|a| a.get("id").and_then(Value::as_i64))
            .collect();
        let mut calls = vec![Call {
            method: "POST",
            path: "/campaigns/create".into(),
            times: 1,
            what: format!("the campaign {name:?}, which SmartLead creates as a draft"),
            body: Some(create_body(&name, c)),
        }];
        let settings = settings_body(c);
        calls.push(Call {
            method: "POST",
            path: "/campaigns/{new}/settings".into(),
            times: 1,
            what: format!("settings: {}", keys(&settings)),
            body: Some(Value::Object(settings)),
        });
        if let Some(schedule) = schedule_body(c) {
            calls.push(Call {
                method: "POST",
                path: "/campaigns/{new}/schedule".into(),
                times: 1,
                what: format!("schedule: {}", describe_schedule(&schedule)),
                body: Some(Value::Object(schedule)),
            });
        }
        if !captured.sequences.is_empty() {
            let body = sequences_body(&captured.sequences);
            let variants: usize = body["sequences"]
                .as_array()
                .map(|s| {
                    s.iter()
                        .map(|step| step["seq_variants"].as_array().map_or(0, Vec::len))
                        .sum()
                })
                .unwrap_or(0);
            calls.push(Call {
                method: "POST",
                path: "/campaigns/{new}/sequences".into(),
                times: 1,
                what: format!(
                    "{} step(s) with their delays, {variants} variant(s)",
                    captured.sequences.len()
                ),
                body: Some(body),
            });
        }
        for webhook in &captured.webhooks {
            let body = webhook_body(webhook);
            calls.push(Call {
                method: "POST",
                path: "/campaigns/{new}/webhooks".into(),
                times: 1,
                what: format!("webhook {:?}", body["name"].as_str().unwrap_or("(unnamed)")),
                body: Some(body),
            });
        }
        if !email_account_ids.is_empty() {
            calls.push(Call {
                method: "POST",
                path: "/campaigns/{new}/email-accounts".into(),
                times: 1,
                what: format!(
                    "{} sender account(s), those that still exist",
                    email_account_ids.len()
                ),
                body: Some(json!({ "email_account_ids": email_account_ids })),
            });
        }
        if leads.restored > 0 {
            let batches = leads.restored.div_ceil(LEADS_PER_CALL as u64);
            calls.push(Call {
                method: "POST",
                path: "/campaigns/{new}/leads".into(),
                times: batches,
                what: format!(
                    "{} of {} leads with their custom fields, at most {LEADS_PER_CALL} a call",
                    thousands(leads.restored),
                    thousands(leads.total)
                ),
                body: None,
            });
        }
        Ok(Plan {
            snapshot_id: captured.snapshot.id,
            operation: captured.snapshot.operation.clone(),
            original_id: captured.snapshot.campaign_id,
            original_name,
            name,
            leads_choice,
            calls,
            leads,
            email_account_ids,
            not_restorable: NOT_RESTORABLE,
        })
    }

    /// Every call the restore makes (one per batch of leads).
    pub fn total_calls(&self) -> u64 {
        self.calls.iter().map(|c| c.times).sum()
    }

    /// The plan for people.
    pub fn render(&self) -> String {
        let mut out = format!(
            "Restore of snapshot {} ({} of campaign {} {:?}) as a new campaign {:?}, created as a draft: a restore never starts sending.\n\n",
            self.snapshot_id,
            self.operation,
            self.original_id.map_or("?".to_string(), |i| i.to_string()),
            self.original_name.as_deref().unwrap_or("(no name)"),
            self.name,
        );
        out.push_str("Calls to SmartLead, in order:\n");
        for call in &self.calls {
            out.push_str(&format!(
                "  {:>5} x {:<5} {:<34} {}\n",
                thousands(call.times),
                call.method,
                call.path,
                call.what
            ));
        }
        let total = self.total_calls();
        out.push_str(&format!(
            "  {} call(s) in all; at SmartLead's documented {REQUESTS_PER_MINUTE} requests a minute, about {}.\n",
            thousands(total),
            minutes(total)
        ));
        out.push_str(&format!(
            "\nLeads: {} of {} restored",
            thousands(self.leads.restored),
            thousands(self.leads.total)
        ));
        let left: u64 = self.leads.left_out.values().sum();
        if left == 0 {
            out.push_str(", none left out.\n");
        } else {
            out.push_str(&format!(
                ", {} left out (--leads {}):\n",
                thousands(left),
                match self.leads_choice {
                    LeadChoice::Sendable => "sendable",
                    LeadChoice::All => "all",
                }
            ));
            for (reason, n) in &self.leads.left_out {
                out.push_str(&format!("  {:<18} {:>9}\n", reason.as_str(), thousands(*n)));
            }
        }
        out.push_str("\nNo restore brings back:\n");
        for what in self.not_restorable {
            out.push_str(&format!("  - {what}\n"));
        }
        out
    }
}

/// `POST /campaigns/create` takes only the name and the client.
fn create_body(name: &str, c: &Map<String, Value>) -> Value {
    let mut body = json!({ "name": name });
    if let Some(client) = c.get("client_id").filter(|v| !v.is_null()) {
        body["client_id"] = client.clone();
    }
    body
}

/// The settings endpoint's fields, from the campaign object.
const SETTINGS: &[&str] = &[
    "track_settings",
    "stop_lead_settings",
    "unsubscribe_text",
    "send_as_plain_text",
    "follow_up_percentage",
    "enable_ai_esp_matching",
];

fn settings_body(c: &Map<String, Value>) -> Map<String, Value> {
    SETTINGS
        .iter()
        .filter_map(|k| {
            c.get(*k)
                .filter(|v| !v.is_null())
                .map(|v| (k.to_string(), v.clone()))
        })
        .collect()
}

/// The schedule endpoint's fields, from the campaign object's
/// `scheduler_cron_value` and limits; none when it has no schedule.
fn schedule_body(c: &Map<String, Value>) -> Option<Map<String, Value>> {
    let cron = c.get("scheduler_cron_value")?.as_object()?;
    let mut body = Map::new();
    let mut put = |key: &str, value: Option<&Value>| {
        if let Some(v) = value.filter(|v| !v.is_null()) {
            body.insert(key.to_string(), v.clone());
        }
    };
    put("timezone", cron.get("tz"));
    put("days_of_the_week", cron.get("days"));
    put("start_hour", cron.get("startHour"));
    put("end_hour", cron.get("endHour"));
    put("min_time_btw_emails", c.get("min_time_btwn_emails"));
    put("max_new_leads_per_day", c.get("max_leads_per_day"));
    put("schedule_start_time", c.get("schedule_start_time"));
    Some(body)
}

fn describe_schedule(s: &Map<String, Value>) -> String {
    let text = |k: &str| {
        s.get(k)
            .map(|v| v.to_string().trim_matches('"').to_string())
    };
    let mut parts = Vec::new();
    if let Some(tz) = text("timezone") {
        parts.push(tz);
    }
    if let Some(days) = text("days_of_the_week") {
        parts.push(format!("days {days}"));
    }
    if let (Some(a), Some(b)) = (text("start_hour"), text("end_hour")) {
        parts.push(format!("{a}-{b}"));
    }
    if let Some(n) = text("max_new_leads_per_day") {
        parts.push(format!("{n} new leads a day"));
    }
    parts.join(", ")
}

/// The captured steps as the sequences endpoint takes them: new steps
/// (`id: null`) with their delays and variants.
fn sequences_body(steps: &[Value]) -> Value {
    let steps: Vec<Value> = steps
        .iter()
        .map(|s| {
            let variants: Vec<Value> = s
                .get("sequence_variants")
                .or_else(|| s.get("seq_variants"))
                .and_then(Value::as_array)
                .map(|vs| {
                    vs.iter()
                        .map(|v| {
                            json!({
                                "variant_label": v.get("variant_label"),
                                "subject": v.get("subject"),
                                "email_body": v.get("email_body"),
                                "variant_distribution_percentage": v.get("variant_distribution_percentage"),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "id": null,
                "seq_number": s.get("seq_number"),
                "subject": s.get("subject"),
                "email_body": s.get("email_body"),
                "seq_delay_details": s.get("seq_delay_details"),
                "seq_variants": variants,
            })
        })
        .collect();
    json!({ "sequences": steps })
}

/// A captured webhook as the upsert takes it: a new one (`id: null`).
pub(super) fn webhook_body(w: &Value) -> Value {
    json!({
        "id": null,
        "name": w.get("name"),
        "webhook_url": w.get("webhook_url"),
        "event_types": w.get("event_types"),
        "categories": w.get("categories"),
    })
}

fn keys(m: &Map<String, Value>) -> String {
    if m.is_empty() {
        return "none captured".into();
    }
    m.keys().cloned().collect::<Vec<_>>().join(", ")
}

/// `48,211`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// How long `calls` take at the documented rate, in words.
fn minutes(calls: u64) -> String {
    let mins = calls.div_ceil(REQUESTS_PER_MINUTE);
    match mins {
        0 | 1 => "a minute".to_string(),
        m if m < 120 => format!("{m} minutes"),
        m => format!("{:.1} hours", m as f64 / 60.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lead(email: &str, status: &str, category: &str, unsubscribed: bool) -> Lead {
        Lead {
            email: email.into(),
            fields: Vec::new(),
            custom_fields: Map::new(),
            status: status.into(),
            category: category.into(),
            is_unsubscribed: unsubscribed,
        }
    }

    #[test]
    fn sendable_leaves_out_whoever_must_not_be_emailed_again() {
        let s = LeadChoice::Sendable;
        assert_eq!(LeftOut::of(&lead("a@x", "STARTED", "", false), s), None);
        assert_eq!(
            LeftOut::of(&lead("a@x", "COMPLETED", "", true), s),
            Some(LeftOut::Unsubscribed)
        );
        assert_eq!(
            LeftOut::of(
                &lead("a@x", "STOPPED", "Sender Originated Bounce", false),
                s
            ),
            Some(LeftOut::Bounced)
        );
        assert_eq!(
            LeftOut::of(&lead("a@x", "BLOCKED", "", false), s),
            Some(LeftOut::Blocked)
        );
        assert_eq!(
            LeftOut::of(&lead("", "STARTED", "", false), s),
            Some(LeftOut::NoEmail)
        );
        assert_eq!(
            LeftOut::of(&lead("a@x", "BLOCKED", "", true), LeadChoice::All),
            None
        );
    }

    #[test]
    fn the_schedule_is_read_from_the_campaign_object() {
        let c: Map<String, Value> = serde_json::from_value(json!({
            "scheduler_cron_value": {"tz": "America/New_York", "days": [1,2,3,4,5], "startHour": "09:00", "endHour": "19:00"},
            "min_time_btwn_emails": 24, "max_leads_per_day": 100, "schedule_start_time": null,
        }))
        .unwrap();
        let s = schedule_body(&c).unwrap();
        assert_eq!(s["timezone"], "America/New_York");
        assert_eq!(s["days_of_the_week"], json!([1, 2, 3, 4, 5]));
        assert_eq!(s["min_time_btw_emails"], 24);
        assert_eq!(s["max_new_leads_per_day"], 100);
        assert!(!s.contains_key("schedule_start_time"));
        assert_eq!(
            describe_schedule(&s),
            "America/New_York, days [1,2,3,4,5], 09:00-19:00, 100 new leads a day"
        );
    }

    #[test]
    fn counts_read_like_people_write_them() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(48_211), "48,211");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(minutes(1_433), "24 minutes");
        assert_eq!(minutes(14_000), "3.9 hours");
    }
}
