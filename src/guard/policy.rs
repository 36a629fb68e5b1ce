//! The policy: the `[policy]` config table validated into an immutable
//! [`Policy`], and [`evaluate`], the pure function (no I/O) that decides what
//! happens to a guarded operation (one of the [operations](super::operations)
//! table's entries).
//!
//! Each rule covers a set of operations (`campaign.delete` when it names
//! none). For a call, the rules that cover its operation are walked in order
//! and the first matching `enforce` rule decides; matching `shadow` rules met
//! on the way are recorded, not enforced; when none decides, the operation's
//! default does. Every decision names the policy [revision](Policy::revision),
//! a SHA-256 of the canonical policy, so an audit row says which policy made it.
//!
//! `validate` turns the raw table into a [`Policy`] (every error names its
//! key); `explain` walks the rules for people (`safedelete policy explain`).

mod explain;
mod validate;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::operations::{MatchField, Op};

pub use super::operations::Action;
pub use explain::explain;
pub use validate::{CAMPAIGN_STATUSES, LEAD_STATUSES};

/// The raw `[policy]` table, as written in the config file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// The `campaign.delete` default: `allow`, `archive` or `deny`; `archive`
    /// when absent.
    pub default: Option<String>,
    /// `[policy.defaults]`: operation name → action, the default of every
    /// other operation (the table's built-in one when absent).
    #[serde(default)]
    pub defaults: BTreeMap<String, String>,
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
    /// The operations the rule covers: names, or globs over them (`*` any run
    /// of characters, `?` one); `["campaign.delete"]` when absent.
    pub operations: Option<Vec<String>>,
    /// `required` (default) or `off`; ignored for `deny`, and for operations
    /// that capture nothing.
    pub snapshot: Option<String>,
    /// Must be `true` on an `allow` rule with `snapshot = "off"` (the target
    /// is destroyed with no copy of its data); refused anywhere else.
    pub allow_without_snapshot: Option<bool>,
    /// Stop the campaign before deleting it; only valid for an `allow` rule
    /// covering exactly `campaign.delete`.
    pub stop_first: Option<bool>,
    pub campaign_ids: Option<Vec<u64>>,
    /// Glob on the campaign name: `*` any run of characters, `?` one, case-insensitive.
    pub campaign_name: Option<String>,
    /// Campaign statuses ([`CAMPAIGN_STATUSES`]), case-insensitive.
    pub statuses: Option<Vec<String>>,
    pub client_ids: Option<Vec<u64>>,
    /// Glob on the lead's email, case-insensitive.
    pub lead_email: Option<String>,
    /// The lead's status in the campaign ([`LEAD_STATUSES`]), case-insensitive.
    pub lead_statuses: Option<Vec<String>>,
    /// Glob on an email-account address, case-insensitive.
    pub email_account: Option<String>,
    /// Actor labels from `[[actors]]` (`unknown` for unlisted keys), case-sensitive.
    pub actors: Option<Vec<String>>,
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

/// Whether the target's data is captured before acting on it.
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
    /// The operations it covers, in table order, deduplicated, never empty;
    /// `[campaign.delete]` when the rule names none.
    pub operations: Vec<Op>,
    /// Always `Required` for `deny` rules and for rules whose operations
    /// capture nothing, where it has no effect.
    pub snapshot: SnapshotMode,
    /// The author confirmed that this `allow` rule destroys without a
    /// snapshot; true only when `action` is allow and `snapshot` is off.
    pub allow_without_snapshot: bool,
    pub stop_first: bool,
    pub campaign_ids: Option<Vec<u64>>,
    /// The glob as written; matched case-insensitively.
    pub campaign_name: Option<String>,
    pub statuses: Option<Vec<String>>,
    pub client_ids: Option<Vec<u64>>,
    /// The glob as written; matched case-insensitively.
    pub lead_email: Option<String>,
    /// Upper-cased.
    pub lead_statuses: Option<Vec<String>>,
    /// The glob as written; matched case-insensitively.
    pub email_account: Option<String>,
    pub actors: Option<Vec<String>>,
}

/// The actor label of a key that no `[[actors]]` entry lists.
pub const UNKNOWN_ACTOR: &str = "unknown";

/// The validated, immutable policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The `campaign.delete` default (`[policy] default`).
    default: Action,
    /// `[policy.defaults]` entries that differ from the built-in default.
    defaults: BTreeMap<Op, Action>,
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

    /// The policy when the config has none: every operation's built-in
    /// default (archive campaign deletes, allow the rest after capture).
    pub fn builtin() -> Policy {
        Policy::new(Op::CampaignDelete.spec().default, Vec::new())
    }

    fn new(default: Action, rules: Vec<Rule>) -> Policy {
        Policy::with_defaults(default, BTreeMap::new(), rules)
    }

    fn with_defaults(default: Action, defaults: BTreeMap<Op, Action>, rules: Vec<Rule>) -> Policy {
        let revision = crate::digest::sha256_hex(&canonical(default, &defaults, &rules));
        Policy {
            default,
            defaults,
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

    /// The `campaign.delete` action when no enforce rule matches
    /// (`[policy] default`); [`Policy::default_for`] for any operation.
    pub fn default_action(&self) -> Action {
        self.default
    }

    /// The action for `op` when no enforce rule matches: `[policy] default`
    /// for `campaign.delete`, `[policy.defaults]` or the table's built-in
    /// default for the others.
    pub fn default_for(&self, op: Op) -> Action {
        if op == Op::CampaignDelete {
            return self.default;
        }
        self.defaults.get(&op).copied().unwrap_or(op.spec().default)
    }

    /// The `[policy.defaults]` entries that differ from the built-in
    /// defaults, in table order (never `campaign.delete`: see
    /// [`Policy::default_action`]).
    pub fn defaults(&self) -> &BTreeMap<Op, Action> {
        &self.defaults
    }

    /// The rules, in evaluation order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The first enforced deny rule covering the operation that checks a
    /// fact the upstream did not give: the guard cannot tell whether it
    /// applies, so it must not guess "no" (the caller refuses instead).
    pub fn unknowable_deny(&self, facts: &Facts<'_>) -> Option<&str> {
        self.rules
            .iter()
            .filter(|r| {
                r.action == Action::Deny && r.mode == Mode::Enforce && r.applies_to(facts.operation)
            })
            .find(|r| {
                MatchField::ALL
                    .iter()
                    .any(|&f| r.checks(f) && !facts.knows(f))
            })
            .map(|r| r.name.as_str())
    }
}

/// The config key of a rule's field, as in `policy.rules[2] ("foo").action`.
fn rule_key(index: usize, name: &str, field: &str) -> String {
    format!("policy.rules[{index}] ({name:?}).{field}")
}

/// The canonical encoding hashed into the revision: compact JSON of
/// `{"format":"safedelete-policy/1","default":..,"rules":[..]}` with every rule's
/// fields in a fixed order, defaults filled in, rule order kept, match lists
/// sorted and deduplicated, statuses upper-cased and globs lower-cased (they
/// match case-insensitively). Comments, whitespace and key order in the TOML
/// therefore do not change it; any change in behaviour or rule names does.
///
/// Keys added after the first format are left out when they say nothing new,
/// so every policy written before them keeps its revision: `defaults` when
/// no operation's default differs from the built-in one, a rule's
/// `operations` when it is `[campaign.delete]` (globs are expanded, so only
/// the operations covered count), and the lead and email-account match
/// fields when absent.
///
/// `allow_without_snapshot` is left out too: a valid rule has it exactly when
/// it is an allow rule with `snapshot = "off"`, which `action` and `snapshot`
/// already encode, so policies written before the key existed keep their
/// revision once the key is added.
fn canonical(default: Action, defaults: &BTreeMap<Op, Action>, rules: &[Rule]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Canon<'a> {
        format: &'static str,
        default: Action,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        defaults: BTreeMap<&'static str, Action>,
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
        #[serde(skip_serializing_if = "Option::is_none")]
        operations: Option<Vec<&'static str>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        lead_email: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        lead_statuses: Option<&'a [String]>,
        #[serde(skip_serializing_if = "Option::is_none")]
        email_account: Option<String>,
    }
    let canon = Canon {
        format: "safedelete-policy/1",
        default,
        defaults: defaults.iter().map(|(op, a)| (op.name(), *a)).collect(),
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
                operations: (r.operations != [Op::CampaignDelete])
                    .then(|| r.operations.iter().map(|op| op.name()).collect()),
                lead_email: r.lead_email.as_ref().map(|g| g.to_lowercase()),
                lead_statuses: r.lead_statuses.as_deref(),
                email_account: r.email_account.as_ref().map(|g| g.to_lowercase()),
            })
            .collect(),
    };
    serde_json::to_vec(&canon).expect("plain structs of strings and numbers always serialize")
}

/// Facts the decision needs. A fact that is `None` (or, for
/// `email_accounts`, empty) never matches a rule that checks that field.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub operation: Op,
    pub campaign_id: Option<u64>,
    /// The campaign's name.
    pub name: Option<&'a str>,
    /// The campaign's status.
    pub status: Option<&'a str>,
    pub client_id: Option<u64>,
    /// The campaign read said which client the campaign belongs to (a
    /// number, or null for none). Implied when `client_id` is `Some`.
    pub client_id_known: bool,
    pub lead_email: Option<&'a str>,
    /// The lead's status in the campaign.
    pub lead_status: Option<&'a str>,
    /// The addresses of the email accounts concerned (the account deleted,
    /// or those removed from a campaign); a glob matches when any does.
    pub email_accounts: &'a [String],
    /// The actor label (`unknown` when the key is not listed).
    pub actor: &'a str,
}

impl<'a> Facts<'a> {
    /// The operation and the actor, every other fact unknown.
    pub fn new(operation: Op, actor: &'a str) -> Facts<'a> {
        Facts {
            operation,
            campaign_id: None,
            name: None,
            status: None,
            client_id: None,
            client_id_known: false,
            lead_email: None,
            lead_status: None,
            email_accounts: &[],
            actor,
        }
    }

    /// Whether the fact a rule's `field` checks is known.
    pub fn knows(&self, field: MatchField) -> bool {
        match field {
            MatchField::CampaignIds => self.campaign_id.is_some(),
            MatchField::CampaignName => self.name.is_some(),
            MatchField::Statuses => self.status.is_some(),
            MatchField::ClientIds => self.client_id_known || self.client_id.is_some(),
            MatchField::LeadEmail => self.lead_email.is_some(),
            MatchField::LeadStatuses => self.lead_status.is_some(),
            MatchField::EmailAccount => !self.email_accounts.is_empty(),
            MatchField::Actors => true,
        }
    }
}

/// What the policy decided, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub action: Action,
    /// The deciding rule; `None` when the default decided.
    pub rule: Option<String>,
    /// False for `deny`, for operations that capture nothing, and when the
    /// deciding rule says `snapshot = "off"`.
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

/// Decides: walks the rules that cover the operation in order, records
/// matching shadow rules, and stops at the first matching enforce rule (first
/// match wins, so shadow rules after it are not evaluated). When none
/// matches, the operation's default decides.
pub fn evaluate(policy: &Policy, facts: &Facts<'_>) -> Decision {
    let op = facts.operation;
    let mut would = Vec::new();
    for rule in policy.rules.iter().filter(|r| r.applies_to(op)) {
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
                && op.captures()
                && rule.snapshot == SnapshotMode::Required,
            stop_first: rule.stop_first,
            would,
            revision: policy.revision.clone(),
        };
    }
    let action = policy.default_for(op);
    Decision {
        action,
        rule: None,
        snapshot_required: action != Action::Deny && op.captures(),
        stop_first: false,
        would,
        revision: policy.revision.clone(),
    }
}

impl Rule {
    /// Whether the rule covers `op` (is considered for it at all).
    pub fn applies_to(&self, op: Op) -> bool {
        self.operations.binary_search(&op).is_ok()
    }

    /// Whether the rule has the match field `field`.
    pub fn checks(&self, field: MatchField) -> bool {
        match field {
            MatchField::CampaignIds => self.campaign_ids.is_some(),
            MatchField::CampaignName => self.campaign_name.is_some(),
            MatchField::Statuses => self.statuses.is_some(),
            MatchField::ClientIds => self.client_ids.is_some(),
            MatchField::LeadEmail => self.lead_email.is_some(),
            MatchField::LeadStatuses => self.lead_statuses.is_some(),
            MatchField::EmailAccount => self.email_account.is_some(),
            MatchField::Actors => self.actors.is_some(),
        }
    }

    /// Whether every match field matches (the operation is not checked).
    fn matches(&self, facts: &Facts<'_>) -> bool {
        MatchField::ALL
            .iter()
            .all(|&f| self.field_matches(f, facts) != Some(false))
    }

    /// `None` when the rule does not check `field`.
    fn field_matches(&self, field: MatchField, facts: &Facts<'_>) -> Option<bool> {
        use crate::guard::glob::matches as glob;
        let in_list = |list: &Option<Vec<String>>, fact: Option<&str>| {
            let list = list.as_ref()?;
            Some(fact.is_some_and(|s| list.iter().any(|l| l.eq_ignore_ascii_case(s))))
        };
        let in_ids = |list: &Option<Vec<u64>>, fact: Option<u64>| {
            let list = list.as_ref()?;
            Some(fact.is_some_and(|c| list.binary_search(&c).is_ok()))
        };
        match field {
            MatchField::CampaignIds => in_ids(&self.campaign_ids, facts.campaign_id),
            MatchField::CampaignName => {
                let g = self.campaign_name.as_ref()?;
                Some(facts.name.is_some_and(|n| glob(g, n)))
            }
            MatchField::Statuses => in_list(&self.statuses, facts.status),
            MatchField::ClientIds => in_ids(&self.client_ids, facts.client_id),
            MatchField::LeadEmail => {
                let g = self.lead_email.as_ref()?;
                Some(facts.lead_email.is_some_and(|e| glob(g, e)))
            }
            MatchField::LeadStatuses => in_list(&self.lead_statuses, facts.lead_status),
            MatchField::EmailAccount => {
                let g = self.email_account.as_ref()?;
                Some(facts.email_accounts.iter().any(|a| glob(g, a)))
            }
            MatchField::Actors => Some(self.actors.as_ref()?.iter().any(|a| a == facts.actor)),
        }
    }
}

#[cfg(test)]
mod tests;
