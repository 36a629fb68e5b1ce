//! `[policy]` as written → [`Policy`]: every word checked against the
//! operations table, every list sorted and deduplicated, and every problem an
//! error naming its key, so a typo can never leave a rule silently dead.

use std::collections::{BTreeMap, HashSet};

use super::{
    rule_key, Action, MatchField, Mode, Op, Policy, PolicyError, PolicyFile, Rule, RuleFile,
    SnapshotMode,
};
use crate::config::suggest;
use crate::guard::operations::name_matches;

/// The campaign statuses a rule may name: the values SmartLead returns when a
/// campaign is read (reference/smartlead-api.md §1.2), plus `ARCHIVED`, which
/// the gateway itself sets when it archives instead of deleting.
pub const CAMPAIGN_STATUSES: &[&str] = &[
    "DRAFTED",
    "ACTIVE",
    "PAUSED",
    "STOPPED",
    "COMPLETED",
    "ARCHIVED",
];

/// The statuses of a lead in a campaign a rule may name, as SmartLead
/// reports them (`lead_status` in a lead's campaigns).
pub const LEAD_STATUSES: &[&str] = &[
    "STARTED",
    "INPROGRESS",
    "COMPLETED",
    "PAUSED",
    "STOPPED",
    "BLOCKED",
];

const MODES: &[(&str, Mode)] = &[("enforce", Mode::Enforce), ("shadow", Mode::Shadow)];
const SNAPSHOTS: &[(&str, SnapshotMode)] = &[
    ("required", SnapshotMode::Required),
    ("off", SnapshotMode::Off),
];

impl Policy {
    /// Validates the raw table. Error keys index rules from 0, as in
    /// `policy.rules[2] ("foo").action`.
    pub fn from_file(file: &PolicyFile) -> Result<Policy, PolicyError> {
        let default = match &file.default {
            Some(v) => action_for("policy.default", v, &[Op::CampaignDelete])?,
            None => Op::CampaignDelete.spec().default,
        };
        let defaults = defaults_from_file(&file.defaults, default)?;
        let mut seen = HashSet::new();
        let mut rules = Vec::with_capacity(file.rules.len());
        for (i, raw) in file.rules.iter().enumerate() {
            if raw.name.trim().is_empty() {
                return Err(PolicyError::invalid(
                    format!("policy.rules[{i}].name"),
                    "must not be empty",
                ));
            }
            let key = |field: &str| rule_key(i, &raw.name, field);
            if !seen.insert(raw.name.as_str()) {
                return Err(PolicyError::invalid(
                    key("name"),
                    "is used by an earlier rule; rule names must be unique",
                ));
            }
            rules.push(rule_from_file(raw, key)?);
        }
        Ok(Policy::with_defaults(default, defaults, rules))
    }
}

/// `[policy.defaults]`, keeping only the entries that differ from the
/// built-in default (an explicit built-in means nothing new, so it does not
/// change the revision either).
fn defaults_from_file(
    raw: &BTreeMap<String, String>,
    campaign_default: Action,
) -> Result<BTreeMap<Op, Action>, PolicyError> {
    let mut defaults = BTreeMap::new();
    for (name, value) in raw {
        let key = format!("policy.defaults.{name:?}");
        let Some(op) = Op::from_name(name) else {
            return Err(PolicyError::invalid(key, unknown_operation(name)));
        };
        if op == Op::CampaignDelete {
            // Two places for one setting would have to be kept in step.
            return Err(PolicyError::invalid(
                key,
                format!(
                    "the campaign.delete default is [policy] default (now {campaign_default}); \
                     set default = {value:?} under [policy] and remove this key"
                ),
            ));
        }
        let action = action_for(&key, value, &[op])?;
        if action != op.spec().default {
            defaults.insert(op, action);
        }
    }
    Ok(defaults)
}

/// `"x" is not an operation; did you mean ...? (operations: ...)`.
fn unknown_operation(name: &str) -> String {
    let names: Vec<&str> = Op::all().map(Op::name).collect();
    let hint = match suggest::closest(name, &names, 3) {
        Some(near) => format!("; did you mean {near:?}?"),
        None => String::new(),
    };
    format!(
        "{name:?} is not an operation{hint} (operations: {})",
        names.join(", ")
    )
}

fn rule_from_file(raw: &RuleFile, key: impl Fn(&str) -> String) -> Result<Rule, PolicyError> {
    let operations = operations(&key("operations"), raw.operations.as_deref())?;
    check_fields_apply(raw, &operations, &key)?;
    let action = action_for(&key("action"), &raw.action, &operations)?;
    let mode = match &raw.mode {
        Some(v) => choose(key("mode"), v, "a mode", MODES)?,
        None => Mode::Enforce,
    };
    let snapshot = match &raw.snapshot {
        Some(v) => choose(key("snapshot"), v, "a snapshot mode", SNAPSHOTS)?,
        None => SnapshotMode::Required,
    };
    let stop_first = raw.stop_first.unwrap_or(false);
    if stop_first && action != Action::Allow {
        return Err(PolicyError::invalid(
            key("stop_first"),
            format!("only applies to allow rules (this rule's action is {action}); remove it"),
        ));
    }
    if stop_first && operations != [Op::CampaignDelete] {
        return Err(PolicyError::invalid(
            key("stop_first"),
            format!(
                "only applies to rules whose operations are exactly campaign.delete (this rule \
                 covers {}); remove it, or give campaign.delete a rule of its own",
                names(&operations)
            ),
        ));
    }
    // Deny captures nothing, and neither do some operations, so there the
    // snapshot setting (and its confirmation) is accepted and normalised away.
    let captures = operations.iter().any(|op| op.captures());
    let snapshot = if action == Action::Deny || !captures {
        SnapshotMode::Required
    } else {
        snapshot
    };
    let destroys_without_copy = action == Action::Allow && snapshot == SnapshotMode::Off;
    let allow_without_snapshot = match raw.allow_without_snapshot {
        _ if action == Action::Allow && !captures => false,
        Some(true) if destroys_without_copy => true,
        _ if destroys_without_copy => {
            let what = if operations == [Op::CampaignDelete] {
                "deletes the campaign with no copy of its data".to_string()
            } else {
                format!(
                    "forwards {} with no copy of what is destroyed",
                    names(&operations)
                )
            };
            return Err(PolicyError::invalid(
                key("snapshot"),
                format!(
                    "\"off\" on an allow rule {what}; \
                     if that is really wanted, add allow_without_snapshot = true to the rule, \
                     otherwise remove snapshot = \"off\""
                ),
            ));
        }
        None => false,
        Some(_) => {
            return Err(PolicyError::invalid(
                key("allow_without_snapshot"),
                format!(
                    "only applies to an allow rule with snapshot = \"off\" ({}); remove it",
                    if action == Action::Allow {
                        "this rule takes a snapshot".to_string()
                    } else {
                        format!("this rule's action is {action}")
                    }
                ),
            ))
        }
    };
    let strings = |field: &str, list: &Option<Vec<String>>, upper: bool| {
        list.as_ref()
            .map(|l| {
                if l.iter().any(|s| s.trim().is_empty()) {
                    return Err(PolicyError::invalid(
                        key(field),
                        "entries must not be empty",
                    ));
                }
                let l = l.iter().map(|s| {
                    if upper {
                        s.to_ascii_uppercase()
                    } else {
                        s.clone()
                    }
                });
                non_empty(&key(field), l.collect())
            })
            .transpose()
    };
    let statuses = strings("statuses", &raw.statuses, true)?;
    // A misspelt status would leave the rule silently dead.
    known_words(
        &key("statuses"),
        raw.statuses.as_deref(),
        CAMPAIGN_STATUSES,
        "a SmartLead campaign status",
    )?;
    let lead_statuses = strings("lead_statuses", &raw.lead_statuses, true)?;
    known_words(
        &key("lead_statuses"),
        raw.lead_statuses.as_deref(),
        LEAD_STATUSES,
        "a SmartLead lead status",
    )?;
    let glob = |field: &str, value: &Option<String>, any: &str| match value {
        Some(g) if g.is_empty() => Err(PolicyError::invalid(
            key(field),
            format!("must not be empty (use \"*\" for any {any}, or remove the key)"),
        )),
        other => Ok(other.clone()),
    };
    Ok(Rule {
        name: raw.name.clone(),
        action,
        mode,
        operations,
        snapshot,
        allow_without_snapshot,
        stop_first,
        campaign_ids: raw
            .campaign_ids
            .clone()
            .map(|l| non_empty(&key("campaign_ids"), l))
            .transpose()?,
        campaign_name: glob("campaign_name", &raw.campaign_name, "name")?,
        statuses,
        client_ids: raw
            .client_ids
            .clone()
            .map(|l| non_empty(&key("client_ids"), l))
            .transpose()?,
        lead_email: glob("lead_email", &raw.lead_email, "email")?,
        lead_statuses,
        email_account: glob("email_account", &raw.email_account, "address")?,
        actors: strings("actors", &raw.actors, false)?,
    })
}

/// The operations a rule's `operations` globs cover, in table order;
/// `[campaign.delete]` when the key is absent.
fn operations(key: &str, globs: Option<&[String]>) -> Result<Vec<Op>, PolicyError> {
    let Some(globs) = globs else {
        return Ok(vec![Op::CampaignDelete]);
    };
    if globs.iter().any(|g| g.trim().is_empty()) {
        return Err(PolicyError::invalid(key, "entries must not be empty"));
    }
    let mut ops = Vec::new();
    for glob in globs {
        let before = ops.len();
        ops.extend(Op::all().filter(|op| name_matches(glob, op.name())));
        if ops.len() == before {
            return Err(PolicyError::invalid(
                key,
                unknown_operation(glob).replacen("is not an operation", "matches no operation", 1),
            ));
        }
    }
    non_empty(key, ops)
}

/// Every match field the rule has must mean something for every operation
/// it covers: one that cannot would make the rule silently dead there.
fn check_fields_apply(
    raw: &RuleFile,
    operations: &[Op],
    key: &impl Fn(&str) -> String,
) -> Result<(), PolicyError> {
    let present = |field: MatchField| match field {
        MatchField::CampaignIds => raw.campaign_ids.is_some(),
        MatchField::CampaignName => raw.campaign_name.is_some(),
        MatchField::Statuses => raw.statuses.is_some(),
        MatchField::ClientIds => raw.client_ids.is_some(),
        MatchField::LeadEmail => raw.lead_email.is_some(),
        MatchField::LeadStatuses => raw.lead_statuses.is_some(),
        MatchField::EmailAccount => raw.email_account.is_some(),
        MatchField::Actors => raw.actors.is_some(),
    };
    for field in MatchField::ALL.into_iter().filter(|&f| present(f)) {
        let Some(op) = operations.iter().find(|op| !op.has_field(field)) else {
            continue;
        };
        let why = match field {
            MatchField::LeadEmail => "it has no lead",
            MatchField::LeadStatuses if op.has_field(MatchField::LeadEmail) => {
                "its lead is not in one campaign, so it has no lead status"
            }
            MatchField::LeadStatuses => "it has no lead",
            MatchField::EmailAccount => "it names no email account",
            _ => "it is not about a campaign",
        };
        let applies: Vec<Op> = Op::all().filter(|o| o.has_field(field)).collect();
        return Err(PolicyError::invalid(
            key(field.key()),
            format!(
                "cannot apply to {op} ({why}); {} applies to {}: narrow the rule's operations, \
                 or split the rule",
                field.key(),
                names(&applies)
            ),
        ));
    }
    Ok(())
}

/// Reads an action word, case-insensitively, and checks that every one of
/// `ops` has it. The errors list the actions that would do.
fn action_for(key: &str, value: &str, ops: &[Op]) -> Result<Action, PolicyError> {
    let words = |actions: &mut dyn Iterator<Item = Action>| {
        let words: Vec<&str> = actions.map(Action::as_str).collect();
        one_of(&words)
    };
    let Some(action) = Action::ALL
        .into_iter()
        .find(|a| a.as_str().eq_ignore_ascii_case(value))
    else {
        let mut common = Action::ALL
            .into_iter()
            .filter(|a| ops.iter().all(|op| op.actions().contains(a)));
        let problem = format!("{value:?} is not an action (use {})", words(&mut common));
        return Err(PolicyError::invalid(key, problem));
    };
    if let Some(op) = ops.iter().find(|op| !op.actions().contains(&action)) {
        let problem = format!(
            "{value:?} is not an action of {op} (use {})",
            words(&mut op.actions().into_iter())
        );
        return Err(PolicyError::invalid(key, problem));
    }
    Ok(action)
}

/// Refuses any entry of `list` that is not one of `valid` (in any case).
fn known_words(
    key: &str,
    list: Option<&[String]>,
    valid: &[&str],
    what: &str,
) -> Result<(), PolicyError> {
    match list
        .unwrap_or_default()
        .iter()
        .find(|s| !valid.iter().any(|v| v.eq_ignore_ascii_case(s)))
    {
        Some(bad) => Err(PolicyError::invalid(
            key,
            format!("{bad:?} is not {what} (use {}, in any case)", one_of(valid)),
        )),
        None => Ok(()),
    }
}

/// Reads a config word, case-insensitively; the error lists the choices.
fn choose<T: Copy>(
    key: String,
    value: &str,
    what: &str,
    choices: &[(&str, T)],
) -> Result<T, PolicyError> {
    if let Some(&(_, v)) = choices.iter().find(|(w, _)| w.eq_ignore_ascii_case(value)) {
        return Ok(v);
    }
    let words: Vec<&str> = choices.iter().map(|&(w, _)| w).collect();
    let problem = format!("{value:?} is not {what} (use {})", one_of(&words));
    Err(PolicyError::invalid(key, problem))
}

/// `a, b or c`.
fn one_of(words: &[&str]) -> String {
    let (last, rest) = words.split_last().expect("every choice table is non-empty");
    if rest.is_empty() {
        return last.to_string();
    }
    format!("{} or {last}", rest.join(", "))
}

/// Operation names, `a, b and c`.
fn names(ops: &[Op]) -> String {
    let names: Vec<&str> = ops.iter().map(|op| op.name()).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

/// Sorts and dedupes a match list; an empty one would match nothing, which is
/// never what the author meant.
fn non_empty<T: Ord>(key: &str, mut list: Vec<T>) -> Result<Vec<T>, PolicyError> {
    if list.is_empty() {
        return Err(PolicyError::invalid(
            key,
            "is empty, so the rule could never match; list at least one value or remove the key",
        ));
    }
    list.sort();
    list.dedup();
    Ok(list)
}
