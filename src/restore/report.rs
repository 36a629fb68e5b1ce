//! The end of a restore: what came back and what did not, side by side with
//! the snapshot, read from the steps the restore recorded (so a resumed
//! restore reports all of it), and what no restore brings back.

use std::collections::BTreeMap;

use crate::db::Pool;
use serde::Serialize;
use serde_json::Value;

use super::ledger;
use super::plan::{thousands, LeftOut, Plan, NOT_RESTORABLE};

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub restore_id: i64,
    pub snapshot_id: i64,
    pub original_id: Option<i64>,
    pub new_campaign_id: Option<i64>,
    pub name: String,
    pub settings: bool,
    pub schedule: bool,
    pub sequences: Side,
    pub webhooks: Side,
    pub email_accounts: Accounts,
    pub leads: Leads,
    pub not_restorable: &'static [&'static str],
}

/// In the snapshot, and restored.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Side {
    pub captured: u64,
    pub restored: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Accounts {
    pub captured: u64,
    pub attached: Vec<i64>,
    /// Deleted since the snapshot: nothing to attach.
    pub missing: Vec<i64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Leads {
    pub captured: u64,
    pub sent: u64,
    /// What SmartLead says it added (`upload_count`).
    pub added: u64,
    pub left_out: BTreeMap<LeftOut, u64>,
    /// Sent but not added, by SmartLead's reason (`duplicate_count`,
    /// `invalid_email_count`, ...).
    pub refused: BTreeMap<String, u64>,
}

/// SmartLead's add-leads counters that mean "sent but not added".
const REFUSALS: &[&str] = &[
    "duplicate_count",
    "already_added_to_campaign",
    "invalid_email_count",
    "block_count",
    "bounce_count",
    "lead_import_stopped_count",
];

impl Report {
    pub async fn read(pool: &Pool, restore_id: i64, plan: &Plan) -> Result<Report, sqlx::Error> {
        let row = ledger::get(pool, restore_id).await?;
        let steps = ledger::steps(pool, restore_id).await?;
        let done = |name: &str| steps.iter().any(|(s, _)| s == name);
        let count = |path_end: &str| {
            plan.calls
                .iter()
                .filter(|c| c.path.ends_with(path_end))
                .count() as u64
        };
        let captured_steps = plan
            .calls
            .iter()
            .find(|c| c.path.ends_with("/sequences"))
            .and_then(|c| c.body.as_ref())
            .and_then(|b| b["sequences"].as_array().map(|a| a.len() as u64))
            .unwrap_or(0);
        let mut leads = Leads {
            captured: plan.leads.total,
            left_out: plan.leads.left_out.clone(),
            ..Leads::default()
        };
        let mut email_accounts = Accounts {
            captured: plan.email_account_ids.len() as u64,
            ..Accounts::default()
        };
        for (step, result) in &steps {
            if step.starts_with("leads:") {
                let n = |k: &str| result.get(k).and_then(as_count).unwrap_or(0);
                leads.sent += n("sent");
                leads.added += n("upload_count");
                for k in REFUSALS {
                    let v = n(k);
                    if v > 0 {
                        *leads.refused.entry(k.to_string()).or_default() += v;
                    }
                }
            } else if step == "email_accounts" {
                let ids = |k: &str| {
                    result[k]
                        .as_array()
                        .map(|a| a.iter().filter_map(Value::as_i64).collect())
                        .unwrap_or_default()
                };
                email_accounts.attached = ids("attached");
                email_accounts.missing = ids("missing");
            }
        }
        Ok(Report {
            restore_id,
            snapshot_id: plan.snapshot_id,
            original_id: plan.original_id,
            new_campaign_id: row.and_then(|r| r.new_campaign_id),
            name: plan.name.clone(),
            settings: done("settings"),
            schedule: done("schedule"),
            sequences: Side {
                captured: captured_steps,
                restored: if done("sequences") { captured_steps } else { 0 },
            },
            webhooks: Side {
                captured: count("/webhooks"),
                restored: steps
                    .iter()
                    .filter(|(s, _)| s.starts_with("webhook:"))
                    .count() as u64,
            },
            email_accounts,
            leads,
            not_restorable: NOT_RESTORABLE,
        })
    }

    pub fn render(&self) -> String {
        let yes = |b: bool| if b { "restored" } else { "not restored" };
        let id = |i: Option<i64>| i.map_or("?".to_string(), |i| i.to_string());
        let mut out = format!(
            "Restore {} of snapshot {}: campaign {} is back as campaign {} {:?}, a draft: start it in SmartLead when you are ready.\n\n",
            self.restore_id,
            self.snapshot_id,
            id(self.original_id),
            id(self.new_campaign_id),
            self.name
        );
        out.push_str(&format!(
            "  {:<16} {:>12}   {}\n",
            "", "snapshot", "restored"
        ));
        out.push_str(&format!(
            "  {:<16} {:>12}   {}\n",
            "settings",
            "captured",
            yes(self.settings)
        ));
        out.push_str(&format!(
            "  {:<16} {:>12}   {}\n",
            "schedule",
            "captured",
            yes(self.schedule)
        ));
        out.push_str(&format!(
            "  {:<16} {:>12}   {}\n",
            "sequence steps", self.sequences.captured, self.sequences.restored
        ));
        out.push_str(&format!(
            "  {:<16} {:>12}   {}\n",
            "webhooks", self.webhooks.captured, self.webhooks.restored
        ));
        let missing = if self.email_accounts.missing.is_empty() {
            String::new()
        } else {
            format!(
                " ({} no longer exist: {})",
                self.email_accounts.missing.len(),
                self.email_accounts
                    .missing
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        out.push_str(&format!(
            "  {:<16} {:>12}   {}{missing}\n",
            "email accounts",
            self.email_accounts.captured,
            self.email_accounts.attached.len()
        ));
        let l = &self.leads;
        out.push_str(&format!(
            "  {:<16} {:>12}   {} added by SmartLead of {} sent\n",
            "leads",
            thousands(l.captured),
            thousands(l.added),
            thousands(l.sent)
        ));
        for (reason, n) in &l.left_out {
            out.push_str(&format!(
                "  {:<16} {:>12}   left out: {}\n",
                "",
                thousands(*n),
                reason.as_str()
            ));
        }
        for (reason, n) in &l.refused {
            out.push_str(&format!(
                "  {:<16} {:>12}   refused by SmartLead: {reason}\n",
                "",
                thousands(*n)
            ));
        }
        out.push_str(&format!(
            "\nIds: campaign {} -> {}.\n",
            id(self.original_id),
            id(self.new_campaign_id)
        ));
        out.push_str("\nNo restore brings back:\n");
        for what in self.not_restorable {
            out.push_str(&format!("  - {what}\n"));
        }
        out
    }
}

/// A counter SmartLead may send as a number or a string.
fn as_count(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str()?.parse().ok())
}
