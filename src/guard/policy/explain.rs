//! [`explain`]: [`evaluate`] told for people, rule by rule
//! (`safedelete policy explain`).

use std::fmt::Write as _;

use super::{evaluate, Action, Facts, MatchField, Mode, Op, Policy, Rule};

/// How `explain` shows an allow rule that skips the snapshot.
const NO_SNAPSHOT: &str = "allow WITHOUT a snapshot (allow_without_snapshot = true)";

/// A human-readable account of [`evaluate`]: each rule and whether it
/// applies to the operation and matches (naming the first failing field),
/// the decision, the shadow outcomes and the revision. For any operation but
/// `campaign.delete` the first line names it.
pub fn explain(policy: &Policy, facts: &Facts<'_>) -> String {
    let op = facts.operation;
    let decision = evaluate(policy, facts);
    let mut out = String::new();
    if op != Op::CampaignDelete {
        let _ = writeln!(out, "operation: {op}");
    }
    let mut reached = true;
    for (i, rule) in policy.rules.iter().enumerate() {
        let action = if rule.allow_without_snapshot {
            NO_SNAPSHOT
        } else {
            rule.action.as_str()
        };
        let _ = write!(
            out,
            "rule {} `{}` ({action}, {}): ",
            i + 1,
            rule.name,
            rule.mode.as_str()
        );
        if !reached {
            out.push_str("(not reached)\n");
            continue;
        }
        if !rule.applies_to(op) {
            let _ = writeln!(out, "does not apply to {op}");
            continue;
        }
        let mut matched = Vec::new();
        let mut failed = None;
        for field in MatchField::ALL {
            match rule.field_matches(field, facts) {
                None => {}
                Some(true) => matched.push(rule.describe(field, facts, true)),
                Some(false) => {
                    failed = Some(rule.describe(field, facts, false));
                    break;
                }
            }
        }
        match &failed {
            Some(why) => {
                let _ = writeln!(out, "does not match — {why}");
            }
            None if matched.is_empty() && op == Op::CampaignDelete => {
                out.push_str("matches — no match fields, so every campaign\n")
            }
            None if matched.is_empty() => {
                let _ = writeln!(out, "matches — no match fields, so every {op}");
            }
            None => {
                let _ = writeln!(out, "matches — {}", matched.join("; "));
            }
        }
        if failed.is_none() && rule.mode == Mode::Enforce {
            reached = false;
        }
    }
    match &decision.rule {
        Some(name) => {
            let _ = writeln!(out, "decision: {} by rule `{name}`", decision.action);
            if decision.action == Action::Allow && !decision.snapshot_required && op.captures() {
                let what = if op == Op::CampaignDelete {
                    "the campaign's data is not captured before it is deleted".to_string()
                } else {
                    format!("what {op} destroys is not captured before the call is forwarded")
                };
                let _ = writeln!(out, "warning: {NO_SNAPSHOT}: {what}");
            }
        }
        None if op == Op::CampaignDelete => {
            let _ = writeln!(out, "decision: {} by the default", decision.action);
        }
        None => {
            let _ = writeln!(out, "decision: {} by the default for {op}", decision.action);
        }
    }
    for w in &decision.would {
        let _ = writeln!(out, "shadow: rule `{}` would {}", w.rule, w.action);
    }
    let _ = writeln!(out, "policy revision: {}", policy.revision);
    out
}

impl Rule {
    /// Why `field` matched (`ok`) or did not.
    fn describe(&self, field: MatchField, facts: &Facts<'_>, ok: bool) -> String {
        let verb = if ok { "in" } else { "not in" };
        let list = |l: &Option<Vec<String>>| l.as_deref().unwrap_or_default().join(", ");
        let nums = |l: &Option<Vec<u64>>| {
            l.as_deref()
                .unwrap_or_default()
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let glob = |g: &Option<String>| g.clone().unwrap_or_default();
        match field {
            MatchField::CampaignIds => match facts.campaign_id {
                None => format!(
                    "campaign_id unknown, so not in [{}]",
                    nums(&self.campaign_ids)
                ),
                Some(id) => format!("campaign_id {id} {verb} [{}]", nums(&self.campaign_ids)),
            },
            MatchField::CampaignName => {
                let glob = glob(&self.campaign_name);
                match facts.name {
                    None => format!("campaign has no name, so it cannot match {glob:?}"),
                    Some(n) if ok => format!("name {n:?} matches {glob:?}"),
                    Some(n) => format!("name {n:?} does not match {glob:?}"),
                }
            }
            MatchField::Statuses => match facts.status {
                None => format!("status unknown, so not in [{}]", list(&self.statuses)),
                Some(s) => format!("status {s} {verb} [{}]", list(&self.statuses)),
            },
            MatchField::ClientIds => match facts.client_id {
                None => format!(
                    "campaign has no client_id, so not in [{}]",
                    nums(&self.client_ids)
                ),
                Some(c) => format!("client_id {c} {verb} [{}]", nums(&self.client_ids)),
            },
            MatchField::LeadEmail => {
                let glob = glob(&self.lead_email);
                match facts.lead_email {
                    None => format!("lead email unknown, so it cannot match {glob:?}"),
                    Some(e) if ok => format!("lead email {e:?} matches {glob:?}"),
                    Some(e) => format!("lead email {e:?} does not match {glob:?}"),
                }
            }
            MatchField::LeadStatuses => match facts.lead_status {
                None => format!(
                    "lead status unknown, so not in [{}]",
                    list(&self.lead_statuses)
                ),
                Some(s) => format!("lead status {s} {verb} [{}]", list(&self.lead_statuses)),
            },
            MatchField::EmailAccount => {
                let glob = glob(&self.email_account);
                let matching = facts
                    .email_accounts
                    .iter()
                    .find(|a| crate::guard::glob::matches(&glob, a));
                match (facts.email_accounts, matching) {
                    ([], _) => format!("no email account known, so none can match {glob:?}"),
                    (_, Some(a)) => format!("email account {a:?} matches {glob:?}"),
                    ([a], None) => format!("email account {a:?} does not match {glob:?}"),
                    (all, None) => format!(
                        "none of the email accounts {} matches {glob:?}",
                        all.iter()
                            .map(|a| format!("{a:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }
            }
            MatchField::Actors => {
                format!("actor {} {verb} [{}]", facts.actor, list(&self.actors))
            }
        }
    }
}
