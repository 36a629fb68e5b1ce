//! The deletion policy: the `[policy]` config table validated into an immutable
//! [`Policy`], and [`evaluate`], the pure function (no I/O) that decides what
//! happens to a campaign someone asked to delete.
//!
//! Rules are walked in order and the first matching `enforce` rule decides;
//! matching `shadow` rules met on the way are recorded, not enforced. Every
//! decision names the policy [revision](Policy::revision), a SHA-256 of the
//! canonical policy, so an audit row says which policy made it.

use std::collections::HashSet;
use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

/// The raw `[policy]` table, as written in the config file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// `allow`, `archive` or `deny`; `archive` when absent.
    pub default: Option<String>,
    /// The ordered `[[policy.rules]]`.
    #[serde(default)]
    pub rules: Vec<RuleFile>,
}

/// One raw `[[policy.rules]]` entry.
///
/// `name` is the rule's own name; the campaign-name glob is `campaign_name`
/// (not `name`, which would clash). Absent match fields are not checked;
/// present ones must all match (AND), and a list matches when any element does.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    pub name: String,
    pub action: String,
    /// `enforce` (default) or `shadow`.
    pub mode: Option<String>,
    /// `required` (default) or `off`; ignored for `deny`.
    pub snapshot: Option<String>,
    /// Must be `true` on an `allow` rule with `snapshot = "off"` (the campaign
    /// is deleted with no copy of its data); refused anywhere else.
    pub allow_without_snapshot: Option<bool>,
    /// Stop the campaign before deleting it; only valid for `allow`.
    pub stop_first: Option<bool>,
    pub campaign_ids: Option<Vec<u64>>,
    /// Glob on the campaign name: `*` any run of characters, `?` one, case-insensitive.
    pub campaign_name: Option<String>,
    /// Campaign statuses ([`CAMPAIGN_STATUSES`]), case-insensitive.
    pub statuses: Option<Vec<String>>,
    pub client_ids: Option<Vec<u64>>,
    /// Actor labels from `[[actors]]` (`unknown` for unlisted keys), case-sensitive.
    pub actors: Option<Vec<String>>,
}

/// What happens to the campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Snapshot, then forward the delete.
    Allow,
    /// Snapshot, then archive the campaign instead of deleting it.
    Archive,
    /// Refuse with 403.
    Deny,
}

impl Action {
    /// The config spelling: `allow`, `archive` or `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Archive => "archive",
            Action::Deny => "deny",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a rule decides (`enforce`) or is only recorded (`shadow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Shadow,
}

impl Mode {
    /// The config spelling: `enforce` or `shadow`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
        }
    }
}

/// Whether the campaign's data is captured before acting on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotMode {
    Required,
    Off,
}

/// A validated rule. List matchers are sorted and deduplicated, statuses upper-cased.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub action: Action,
    pub mode: Mode,
    /// Always `Required` for `deny` rules, where it has no effect.
    pub snapshot: SnapshotMode,
    /// The author confirmed that this `allow` rule deletes without a
    /// snapshot; true exactly when `action` is allow and `snapshot` is off.
    pub allow_without_snapshot: bool,
    pub stop_first: bool,
    pub campaign_ids: Option<Vec<u64>>,
    /// The glob as written; matched case-insensitively.
    pub campaign_name: Option<String>,
    pub statuses: Option<Vec<String>>,
    pub client_ids: Option<Vec<u64>>,
    pub actors: Option<Vec<String>>,
}

/// The actor label of a key that no `[[actors]]` entry lists.
pub const UNKNOWN_ACTOR: &str = "unknown";

/// The validated, immutable policy.
#[derive(Debug, Clone)]
pub struct Policy {
    default: Action,
    rules: Vec<Rule>,
    revision: String,
}

/// A problem with the `[policy]` table, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{key}: {problem}")]
    Invalid { key: String, problem: String },
}

impl PolicyError {
    fn invalid(key: impl Into<String>, problem: impl Into<String>) -> Self {
        PolicyError::Invalid {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

impl Policy {
    /// Validates the raw table. Error keys index rules from 0, as in
    /// `policy.rules[2] ("foo").action`.
    pub fn from_file(file: &PolicyFile) -> Result<Policy, PolicyError> {
        let default = match &file.default {
            Some(v) => choose("policy.default".into(), v, "an action", ACTIONS)?,
            None => Action::Archive,
        };
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
        Ok(Policy::new(default, rules))
    }

    /// Checks that every actor a rule names is `unknown` or one of `defined`
    /// (the `[[actors]]` names): a misspelt label would leave the rule dead,
    /// matching nobody.
    pub fn check_actors(&self, defined: &[&str]) -> Result<(), PolicyError> {
        for (i, rule) in self.rules.iter().enumerate() {
            let Some(bad) = rule
                .actors
                .iter()
                .flatten()
                .find(|a| *a != UNKNOWN_ACTOR && !defined.contains(&a.as_str()))
            else {
                continue;
            };
            let mut names = defined.to_vec();
            names.sort_unstable();
            names.dedup();
            let listed = if names.is_empty() {
                "no [[actors]] are defined".to_string()
            } else {
                format!("[[actors]] defines {}", names.join(", "))
            };
            return Err(PolicyError::invalid(
                rule_key(i, &rule.name, "actors"),
                format!(
                    "{bad:?} is not an actor: name one from [[actors]] or \"{UNKNOWN_ACTOR}\" \
                     (keys not listed there); {listed}"
                ),
            ));
        }
        Ok(())
    }

    /// The policy when the config has none: archive everything.
    pub fn builtin() -> Policy {
        Policy::new(Action::Archive, Vec::new())
    }

    fn new(default: Action, rules: Vec<Rule>) -> Policy {
        let revision = crate::digest::sha256_hex(&canonical(default, &rules));
        Policy {
            default,
            rules,
            revision,
        }
    }

    /// SHA-256 (lower-case hex) of the canonical encoding: compact JSON of the
    /// validated policy with defaults filled in, rule order kept and match
    /// lists sorted and deduplicated, so comments, whitespace and key order in
    /// the TOML do not change it but any change in behaviour or rule names does.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// The action when no enforce rule matches.
    pub fn default_action(&self) -> Action {
        self.default
    }

    /// The rules, in evaluation order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

/// The config key of a rule's field, as in `policy.rules[2] ("foo").action`.
fn rule_key(index: usize, name: &str, field: &str) -> String {
    format!("policy.rules[{index}] ({name:?}).{field}")
}

fn rule_from_file(raw: &RuleFile, key: impl Fn(&str) -> String) -> Result<Rule, PolicyError> {
    let action = choose(key("action"), &raw.action, "an action", ACTIONS)?;
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
    // Deny captures nothing, so its snapshot setting is normalised away.
    let snapshot = if action == Action::Deny {
        SnapshotMode::Required
    } else {
        snapshot
    };
    let destroys_without_copy = action == Action::Allow && snapshot == SnapshotMode::Off;
    let allow_without_snapshot = match raw.allow_without_snapshot {
        Some(true) if destroys_without_copy => true,
        _ if destroys_without_copy => {
            return Err(PolicyError::invalid(
                key("snapshot"),
                "\"off\" on an allow rule deletes the campaign with no copy of its data; \
                 if that is really wanted, add allow_without_snapshot = true to the rule, \
                 otherwise remove snapshot = \"off\"",
            ))
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
    if let Some(bad) = raw
        .statuses
        .iter()
        .flatten()
        .find(|s| !CAMPAIGN_STATUSES.iter().any(|c| c.eq_ignore_ascii_case(s)))
    {
        return Err(PolicyError::invalid(
            key("statuses"),
            format!(
                "{bad:?} is not a SmartLead campaign status (use {}, in any case)",
                one_of(CAMPAIGN_STATUSES)
            ),
        ));
    }
    let campaign_name = match &raw.campaign_name {
        Some(g) if g.is_empty() => {
            return Err(PolicyError::invalid(
                key("campaign_name"),
                "must not be empty (use \"*\" for any name, or remove the key)",
            ))
        }
        other => other.clone(),
    };
    Ok(Rule {
        name: raw.name.clone(),
        action,
        mode,
        snapshot,
        allow_without_snapshot,
        stop_first,
        campaign_ids: raw
            .campaign_ids
            .clone()
            .map(|l| non_empty(&key("campaign_ids"), l))
            .transpose()?,
        campaign_name,
        statuses,
        client_ids: raw
            .client_ids
            .clone()
            .map(|l| non_empty(&key("client_ids"), l))
            .transpose()?,
        actors: strings("actors", &raw.actors, false)?,
    })
}

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

const ACTIONS: &[(&str, Action)] = &[
    ("allow", Action::Allow),
    ("archive", Action::Archive),
    ("deny", Action::Deny),
];
const MODES: &[(&str, Mode)] = &[("enforce", Mode::Enforce), ("shadow", Mode::Shadow)];
const SNAPSHOTS: &[(&str, SnapshotMode)] = &[
    ("required", SnapshotMode::Required),
    ("off", SnapshotMode::Off),
];

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

/// The canonical encoding hashed into the revision: compact JSON of
/// `{"format":"safedelete-policy/1","default":..,"rules":[..]}` with every rule's
/// fields in a fixed order, defaults filled in, rule order kept, match lists
/// sorted and deduplicated, statuses upper-cased and the name glob lower-cased
/// (both match case-insensitively). Comments, whitespace and key order in the
/// TOML therefore do not change it; any change in behaviour or rule names does.
///
/// `allow_without_snapshot` is left out: a valid rule has it exactly when it
/// is an allow rule with `snapshot = "off"`, which `action` and `snapshot`
/// already encode, so policies written before the key existed keep their
/// revision once the key is added.
fn canonical(default: Action, rules: &[Rule]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Canon<'a> {
        format: &'static str,
        default: Action,
        rules: Vec<CanonRule<'a>>,
    }
    #[derive(Serialize)]
    struct CanonRule<'a> {
        name: &'a str,
        action: Action,
        mode: &'static str,
        snapshot: bool,
        stop_first: bool,
        campaign_ids: Option<&'a [u64]>,
        campaign_name: Option<String>,
        statuses: Option<&'a [String]>,
        client_ids: Option<&'a [u64]>,
        actors: Option<&'a [String]>,
    }
    let canon = Canon {
        format: "safedelete-policy/1",
        default,
        rules: rules
            .iter()
            .map(|r| CanonRule {
                name: &r.name,
                action: r.action,
                mode: r.mode.as_str(),
                snapshot: r.snapshot == SnapshotMode::Required,
                stop_first: r.stop_first,
                campaign_ids: r.campaign_ids.as_deref(),
                campaign_name: r.campaign_name.as_ref().map(|g| g.to_lowercase()),
                statuses: r.statuses.as_deref(),
                client_ids: r.client_ids.as_deref(),
                actors: r.actors.as_deref(),
            })
            .collect(),
    };
    serde_json::to_vec(&canon).expect("plain structs of strings and numbers always serialize")
}

/// Facts the decision needs. A fact that is `None` never matches a rule that
/// checks that field.
#[derive(Debug, Clone, Default)]
pub struct Facts<'a> {
    pub campaign_id: u64,
    pub name: Option<&'a str>,
    pub status: Option<&'a str>,
    pub client_id: Option<u64>,
    /// The actor label (`unknown` when the key is not listed).
    pub actor: &'a str,
}

/// What the policy decided, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub action: Action,
    /// The deciding rule; `None` when the default decided.
    pub rule: Option<String>,
    /// False for `deny`, and when the deciding rule says `snapshot = "off"`.
    pub snapshot_required: bool,
    /// Stop the campaign before forwarding the delete (allow rules only).
    pub stop_first: bool,
    /// Matching shadow rules met before the decision, in order.
    pub would: Vec<ShadowOutcome>,
    /// The [`Policy::revision`] that decided.
    pub revision: String,
}

/// What a shadow rule would have done had it been enforced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShadowOutcome {
    pub rule: String,
    pub action: Action,
}

impl Decision {
    /// The shadow outcomes as `rule=action, rule2=action`, for the audit
    /// `would_action` column; `None` when no shadow rule matched.
    pub fn would_action(&self) -> Option<String> {
        if self.would.is_empty() {
            return None;
        }
        let parts: Vec<String> = self
            .would
            .iter()
            .map(|w| format!("{}={}", w.rule, w.action))
            .collect();
        Some(parts.join(", "))
    }
}

/// Decides: walks the rules in order, records matching shadow rules, and stops
/// at the first matching enforce rule (first match wins, so shadow rules after
/// it are not evaluated). When none matches, the default decides.
pub fn evaluate(policy: &Policy, facts: &Facts<'_>) -> Decision {
    let mut would = Vec::new();
    for rule in &policy.rules {
        if !rule.matches(facts) {
            continue;
        }
        if rule.mode == Mode::Shadow {
            would.push(ShadowOutcome {
                rule: rule.name.clone(),
                action: rule.action,
            });
            continue;
        }
        return Decision {
            action: rule.action,
            rule: Some(rule.name.clone()),
            snapshot_required: rule.action != Action::Deny
                && rule.snapshot == SnapshotMode::Required,
            stop_first: rule.stop_first,
            would,
            revision: policy.revision.clone(),
        };
    }
    Decision {
        action: policy.default,
        rule: None,
        snapshot_required: policy.default != Action::Deny,
        stop_first: false,
        would,
        revision: policy.revision.clone(),
    }
}

/// A human-readable account of [`evaluate`]: each rule and whether it matched
/// (naming the first failing field), the decision, the shadow outcomes and the
/// revision.
pub fn explain(policy: &Policy, facts: &Facts<'_>) -> String {
    let decision = evaluate(policy, facts);
    let mut out = String::new();
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
        let mut matched = Vec::new();
        let mut failed = None;
        for field in FIELDS {
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
            None if matched.is_empty() => {
                out.push_str("matches — no match fields, so every campaign\n")
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
            if decision.action == Action::Allow && !decision.snapshot_required {
                let _ = writeln!(
                    out,
                    "warning: {NO_SNAPSHOT}: the campaign's data is not captured before it is deleted"
                );
            }
        }
        None => {
            let _ = writeln!(out, "decision: {} by the default", decision.action);
        }
    }
    for w in &decision.would {
        let _ = writeln!(out, "shadow: rule `{}` would {}", w.rule, w.action);
    }
    let _ = writeln!(out, "policy revision: {}", policy.revision);
    out
}

/// How `explain` shows an allow rule that skips the snapshot.
const NO_SNAPSHOT: &str = "allow WITHOUT a snapshot (allow_without_snapshot = true)";

#[derive(Clone, Copy)]
enum Field {
    CampaignId,
    Name,
    Status,
    ClientId,
    Actor,
}

const FIELDS: [Field; 5] = [
    Field::CampaignId,
    Field::Name,
    Field::Status,
    Field::ClientId,
    Field::Actor,
];

impl Rule {
    fn matches(&self, facts: &Facts<'_>) -> bool {
        FIELDS
            .iter()
            .all(|&f| self.field_matches(f, facts) != Some(false))
    }

    /// `None` when the rule does not check `field`.
    fn field_matches(&self, field: Field, facts: &Facts<'_>) -> Option<bool> {
        Some(match field {
            Field::CampaignId => self
                .campaign_ids
                .as_ref()?
                .binary_search(&facts.campaign_id)
                .is_ok(),
            Field::Name => {
                let glob = self.campaign_name.as_ref()?;
                facts.name.is_some_and(|n| crate::guard::glob::matches(glob, n))
            }
            Field::Status => {
                let list = self.statuses.as_ref()?;
                facts
                    .status
                    .is_some_and(|s| list.iter().any(|l| l.eq_ignore_ascii_case(s)))
            }
            Field::ClientId => {
                let list = self.client_ids.as_ref()?;
                facts
                    .client_id
                    .is_some_and(|c| list.binary_search(&c).is_ok())
            }
            Field::Actor => self.actors.as_ref()?.iter().any(|a| a == facts.actor),
        })
    }

    fn describe(&self, field: Field, facts: &Facts<'_>, ok: bool) -> String {
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
        match field {
            Field::CampaignId => format!(
                "campaign_id {} {verb} [{}]",
                facts.campaign_id,
                nums(&self.campaign_ids)
            ),
            Field::Name => {
                let glob = self.campaign_name.as_deref().unwrap_or_default();
                match facts.name {
                    None => format!("campaign has no name, so it cannot match {glob:?}"),
                    Some(n) if ok => format!("name {n:?} matches {glob:?}"),
                    Some(n) => format!("name {n:?} does not match {glob:?}"),
                }
            }
            Field::Status => match facts.status {
                None => format!("status unknown, so not in [{}]", list(&self.statuses)),
                Some(s) => format!("status {s} {verb} [{}]", list(&self.statuses)),
            },
            Field::ClientId => match facts.client_id {
                None => format!(
                    "campaign has no client_id, so not in [{}]",
                    nums(&self.client_ids)
                ),
                Some(c) => format!("client_id {c} {verb} [{}]", nums(&self.client_ids)),
            },
            Field::Actor => format!("actor {} {verb} [{}]", facts.actor, list(&self.actors)),
        }
    }
}

#[cfg(test)]
mod tests;
