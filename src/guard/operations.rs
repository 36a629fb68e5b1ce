//! THE table of guarded operations: every SmartLead call that destroys
//! something, with its stable name, routes, the facts the policy may decide
//! on, its capture plan (the reads that record what the call would destroy)
//! and its safer alternatives. Adding a guarded operation is one entry in
//! [`SPECS`], its capture plan and its tests; classification, policy
//! validation, the pipeline, snapshots and the README's table all read it.

use std::fmt;

use serde::Serialize;

use crate::snapshot::store::PartKind;

/// A guarded operation, by its stable name ([`Op::name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    CampaignDelete,
    CampaignStop,
    CampaignLeadDelete,
    CampaignLeadUnsubscribe,
    LeadUnsubscribe,
    LeadDelete,
    CampaignWebhookDelete,
    CampaignEmailAccountsRemove,
    EmailAccountDelete,
    LeadListDelete,
    WebhookDelete,
    ClientApiKeyDelete,
    DomainBlockDelete,
    UnknownDelete,
}

/// What happens to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Capture, then forward the call.
    Allow,
    /// Capture, then archive the campaign instead of deleting it.
    Archive,
    /// Capture, then pause instead (the campaign, or the lead in it).
    Pause,
    /// Refuse with 403.
    Deny,
}

impl Action {
    /// Every action, in the order they are listed to people.
    pub const ALL: [Action; 4] = [Action::Allow, Action::Archive, Action::Pause, Action::Deny];

    /// The config spelling: `allow`, `archive`, `pause` or `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Archive => "archive",
            Action::Pause => "pause",
            Action::Deny => "deny",
        }
    }

    /// What the gateway did, as `x-safedelete-action` and the audit `action`
    /// say it: `allowed`, `archived`, `paused`, `denied`.
    pub fn done(self) -> &'static str {
        match self {
            Action::Allow => "allowed",
            Action::Archive => "archived",
            Action::Pause => "paused",
            Action::Deny => "denied",
        }
    }

    /// Whether the action changes the target instead of forwarding the call.
    pub fn is_alternative(self) -> bool {
        matches!(self, Action::Archive | Action::Pause)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rule field that matches on a fact of the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchField {
    CampaignIds,
    CampaignName,
    Statuses,
    ClientIds,
    LeadEmail,
    LeadStatuses,
    EmailAccount,
    /// Applies to every operation.
    Actors,
}

impl MatchField {
    pub const ALL: [MatchField; 8] = [
        MatchField::CampaignIds,
        MatchField::CampaignName,
        MatchField::Statuses,
        MatchField::ClientIds,
        MatchField::LeadEmail,
        MatchField::LeadStatuses,
        MatchField::EmailAccount,
        MatchField::Actors,
    ];

    /// The rule key.
    pub fn key(self) -> &'static str {
        match self {
            MatchField::CampaignIds => "campaign_ids",
            MatchField::CampaignName => "campaign_name",
            MatchField::Statuses => "statuses",
            MatchField::ClientIds => "client_ids",
            MatchField::LeadEmail => "lead_email",
            MatchField::LeadStatuses => "lead_statuses",
            MatchField::EmailAccount => "email_account",
            MatchField::Actors => "actors",
        }
    }
}

/// A SmartLead read the facts phase makes before deciding; what it read is
/// also the first parts of the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactRead {
    /// `GET /campaigns/{id}`: name, status, client, `updated_at`.
    Campaign,
    /// `GET /leads/{lead_id}`: the lead's email.
    Lead,
    /// `GET /leads/{lead_id}/campaigns`: the lead's status in each campaign.
    LeadCampaigns,
    /// `GET /campaigns/{id}/email-accounts`: the addresses being removed.
    CampaignEmailAccounts,
    /// `GET /email-accounts/{id}`: the account's address.
    EmailAccount,
}

impl FactRead {
    /// Its route under `/api/v1`, a template like the capture steps'.
    pub fn path(self) -> &'static str {
        match self {
            FactRead::Campaign => "/campaigns/{campaign}",
            FactRead::Lead => "/leads/{lead}",
            FactRead::LeadCampaigns => "/leads/{lead}/campaigns",
            FactRead::CampaignEmailAccounts => "/campaigns/{campaign}/email-accounts",
            FactRead::EmailAccount => "/email-accounts/{id}",
        }
    }

    /// The snapshot part the read is stored as.
    pub fn part(self) -> PartKind {
        match self {
            FactRead::Campaign => PartKind::Campaign,
            FactRead::Lead => PartKind::Lead,
            FactRead::LeadCampaigns => PartKind::LeadCampaigns,
            FactRead::CampaignEmailAccounts => PartKind::EmailAccounts,
            FactRead::EmailAccount => PartKind::EmailAccount,
        }
    }
}

/// One read of a capture plan: which part, from which route (a template
/// over `{campaign}`, `{lead}` and `{id}`), and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub part: PartKind,
    pub path: &'static str,
    pub how: How,
}

/// How a capture step reads its part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// One GET, streamed into the part as it is.
    Stream,
    /// One GET of a small JSON document whose secret fields (`api_key`,
    /// `token`, `password`, ...) are replaced before it is stored.
    Redacted,
    /// `offset`/`limit` pages of `{"data":[..]}`, stored as one JSON array.
    Paged,
    /// The campaigns whose sender accounts include `{id}`: SmartLead has no
    /// call for it, so every campaign's `/email-accounts` is read.
    AccountCampaigns,
}

/// The method a route is called with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Delete,
    Post,
    /// `POST` or `PATCH` (the status route takes both).
    PostOrPatch,
}

/// A path segment of a route pattern under `/api/v1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg {
    Lit(&'static str),
    /// The campaign id.
    Campaign,
    /// The lead id.
    Lead,
    /// The id of the object itself (webhook, account, list, key, entry).
    Id,
}

/// Where an id that is not in the path comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carried {
    Nothing,
    /// `{"id": N}` in the JSON body.
    BodyId,
    /// `{"email_account_ids": [..]}` in the JSON body.
    BodyEmailAccountIds,
    /// `{"status": ..}` in the JSON body, guarded only when it means stop.
    BodyStopStatus,
    /// `?id=N` in the query.
    QueryId,
}

impl Carried {
    /// Whether the body must be read before the request can be classified.
    pub fn needs_body(self) -> bool {
        matches!(
            self,
            Carried::BodyId | Carried::BodyEmailAccountIds | Carried::BodyStopStatus
        )
    }
}

/// One route of an operation.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub verb: Verb,
    pub path: &'static [Seg],
    pub carried: Carried,
}

/// One operation's entry in the table.
#[derive(Debug)]
pub struct Spec {
    pub op: Op,
    /// The stable name, used in policy, audit, snapshots, metrics and the README.
    pub name: &'static str,
    /// What it does, for people (`delete a lead from a campaign`).
    pub act: &'static str,
    /// What it destroys, for people.
    pub destroys: &'static str,
    pub routes: &'static [Route],
    /// The facts read before deciding (also the snapshot's first parts).
    pub facts: &'static [FactRead],
    /// The rest of the capture plan, after the facts.
    pub capture: &'static [Step],
    /// The safer actions besides allow and deny.
    pub alternatives: &'static [Action],
    /// The rule fields that can match it (besides `actors`).
    pub fields: &'static [MatchField],
    /// The built-in default action.
    pub default: Action,
}

use Carried::*;
use MatchField::*;
use Seg::{Campaign as C, Id, Lead as L, Lit};

const CAMPAIGN_FIELDS: &[MatchField] = &[CampaignIds, CampaignName, Statuses, ClientIds];
const CAMPAIGN_LEAD_FIELDS: &[MatchField] = &[
    CampaignIds,
    CampaignName,
    Statuses,
    ClientIds,
    LeadEmail,
    LeadStatuses,
];
const CAMPAIGN_PARTS: &[Step] = &[
    step(PartKind::LeadsCsv, "/campaigns/{campaign}/leads-export"),
    step(PartKind::Sequences, "/campaigns/{campaign}/sequences"),
    step(
        PartKind::EmailAccounts,
        "/campaigns/{campaign}/email-accounts",
    ),
    step(PartKind::Webhooks, "/campaigns/{campaign}/webhooks"),
    step(PartKind::Analytics, "/campaigns/{campaign}/analytics"),
];

/// What the policy and the snapshot know of a lead: the lead and the
/// campaigns it is in (its status in each).
const LEAD_FACTS: &[FactRead] = &[FactRead::Lead, FactRead::LeadCampaigns];
/// The same, with the campaign it is being removed from.
const CAMPAIGN_LEAD_FACTS: &[FactRead] =
    &[FactRead::Campaign, FactRead::Lead, FactRead::LeadCampaigns];
/// A lead's messages in the campaign it is being removed from.
const MESSAGE_HISTORY: &[Step] = &[step(
    PartKind::MessageHistory,
    "/campaigns/{campaign}/leads/{lead}/message-history",
)];

const fn step(part: PartKind, path: &'static str) -> Step {
    Step {
        part,
        path,
        how: How::Stream,
    }
}

const fn route(verb: Verb, path: &'static [Seg], carried: Carried) -> Route {
    Route {
        verb,
        path,
        carried,
    }
}

/// The table. Order matters only for listing (the README follows it).
pub static SPECS: [Spec; 14] = [
    Spec {
        op: Op::CampaignDelete,
        act: "delete a campaign",
        name: "campaign.delete",
        destroys: "a campaign with its leads, sequences, stats and webhooks",
        routes: &[route(Verb::Delete, &[Lit("campaigns"), C], Nothing)],
        facts: &[FactRead::Campaign],
        capture: CAMPAIGN_PARTS,
        alternatives: &[Action::Archive],
        fields: CAMPAIGN_FIELDS,
        default: Action::Archive,
    },
    Spec {
        op: Op::CampaignStop,
        act: "stop a campaign",
        name: "campaign.stop",
        destroys: "a campaign's ability to send (STOPPED cannot be undone)",
        routes: &[route(
            Verb::PostOrPatch,
            &[Lit("campaigns"), C, Lit("status")],
            BodyStopStatus,
        )],
        facts: &[FactRead::Campaign],
        capture: CAMPAIGN_PARTS,
        alternatives: &[Action::Pause],
        fields: CAMPAIGN_FIELDS,
        default: Action::Allow,
    },
    Spec {
        op: Op::CampaignLeadDelete,
        act: "delete a lead from a campaign",
        name: "campaign.lead.delete",
        destroys: "a lead from a campaign (and from the account when in no other campaign)",
        routes: &[route(
            Verb::Delete,
            &[Lit("campaigns"), C, Lit("leads"), L],
            Nothing,
        )],
        facts: CAMPAIGN_LEAD_FACTS,
        capture: MESSAGE_HISTORY,
        alternatives: &[Action::Pause],
        fields: CAMPAIGN_LEAD_FIELDS,
        default: Action::Allow,
    },
    Spec {
        op: Op::CampaignLeadUnsubscribe,
        act: "unsubscribe a lead from a campaign",
        name: "campaign.lead.unsubscribe",
        destroys: "a lead's place in a campaign's sending",
        routes: &[route(
            Verb::Post,
            &[Lit("campaigns"), C, Lit("leads"), L, Lit("unsubscribe")],
            Nothing,
        )],
        facts: CAMPAIGN_LEAD_FACTS,
        capture: MESSAGE_HISTORY,
        alternatives: &[],
        fields: CAMPAIGN_LEAD_FIELDS,
        default: Action::Allow,
    },
    Spec {
        op: Op::LeadUnsubscribe,
        act: "unsubscribe a lead from every campaign",
        name: "lead.unsubscribe",
        destroys: "a lead's place in every campaign's sending",
        routes: &[route(
            Verb::Post,
            &[Lit("leads"), L, Lit("unsubscribe")],
            Nothing,
        )],
        facts: LEAD_FACTS,
        capture: &[],
        alternatives: &[],
        fields: &[LeadEmail],
        default: Action::Allow,
    },
    Spec {
        op: Op::LeadDelete,
        act: "delete a lead",
        name: "lead.delete",
        destroys: "a lead, from every campaign",
        routes: &[route(Verb::Delete, &[Lit("leads"), L], Nothing)],
        facts: LEAD_FACTS,
        capture: &[],
        alternatives: &[],
        fields: &[LeadEmail],
        default: Action::Allow,
    },
    Spec {
        op: Op::CampaignWebhookDelete,
        act: "delete a campaign webhook",
        name: "campaign.webhook.delete",
        destroys: "a campaign webhook",
        routes: &[
            route(
                Verb::Delete,
                &[Lit("campaigns"), C, Lit("webhooks")],
                BodyId,
            ),
            route(
                Verb::Delete,
                &[Lit("campaigns"), C, Lit("webhooks"), Id],
                Nothing,
            ),
        ],
        facts: &[FactRead::Campaign],
        capture: &[step(PartKind::Webhooks, "/campaigns/{campaign}/webhooks")],
        alternatives: &[],
        fields: CAMPAIGN_FIELDS,
        default: Action::Allow,
    },
    Spec {
        op: Op::CampaignEmailAccountsRemove,
        act: "remove email accounts from a campaign",
        name: "campaign.email_accounts.remove",
        destroys: "sender accounts from a campaign",
        routes: &[route(
            Verb::Delete,
            &[Lit("campaigns"), C, Lit("email-accounts")],
            BodyEmailAccountIds,
        )],
        facts: &[FactRead::Campaign, FactRead::CampaignEmailAccounts],
        capture: &[],
        alternatives: &[],
        fields: &[CampaignIds, CampaignName, Statuses, ClientIds, EmailAccount],
        default: Action::Allow,
    },
    Spec {
        op: Op::EmailAccountDelete,
        act: "delete an email account",
        name: "email_account.delete",
        destroys: "a mailbox, from every campaign (its in-progress leads stop)",
        routes: &[route(Verb::Delete, &[Lit("email-accounts"), Id], Nothing)],
        facts: &[FactRead::EmailAccount],
        capture: &[Step {
            part: PartKind::AccountCampaigns,
            path: "/campaigns",
            how: How::AccountCampaigns,
        }],
        alternatives: &[],
        fields: &[EmailAccount],
        default: Action::Allow,
    },
    Spec {
        op: Op::LeadListDelete,
        act: "delete a lead list",
        name: "lead_list.delete",
        destroys: "a lead list",
        routes: &[route(Verb::Delete, &[Lit("lead-list"), Id], Nothing)],
        facts: &[],
        capture: &[
            step(PartKind::LeadList, "/lead-list/{id}"),
            Step {
                part: PartKind::LeadListLeads,
                path: "/lead-list/{id}/leads",
                how: How::Paged,
            },
        ],
        alternatives: &[],
        fields: &[],
        default: Action::Allow,
    },
    Spec {
        op: Op::WebhookDelete,
        act: "delete a webhook",
        name: "webhook.delete",
        destroys: "a global webhook",
        routes: &[route(
            Verb::Delete,
            &[Lit("webhook"), Lit("delete")],
            BodyId,
        )],
        facts: &[],
        capture: &[step(PartKind::GlobalWebhooks, "/webhook")],
        alternatives: &[],
        fields: &[],
        default: Action::Allow,
    },
    Spec {
        op: Op::ClientApiKeyDelete,
        act: "delete a client API key",
        name: "client_api_key.delete",
        destroys: "a client's API key",
        routes: &[route(
            Verb::Delete,
            &[Lit("client"), Lit("api-key"), Id],
            Nothing,
        )],
        facts: &[],
        capture: &[Step {
            part: PartKind::ClientApiKeys,
            path: "/client/api-key",
            how: How::Redacted,
        }],
        alternatives: &[],
        fields: &[],
        default: Action::Allow,
    },
    Spec {
        op: Op::DomainBlockDelete,
        act: "delete a block-list entry",
        name: "domain_block.delete",
        destroys: "a block-list entry (mail to it is no longer blocked)",
        routes: &[route(
            Verb::Delete,
            &[Lit("leads"), Lit("delete-domain-block-list")],
            QueryId,
        )],
        facts: &[],
        capture: &[step(
            PartKind::DomainBlockList,
            "/leads/get-domain-block-list",
        )],
        alternatives: &[],
        fields: &[],
        default: Action::Allow,
    },
    Spec {
        op: Op::UnknownDelete,
        act: "delete something",
        name: "unknown.delete",
        destroys: "whatever the route deletes (not captured)",
        // Known routes that would otherwise read as another operation's
        // (`email-accounts/tag-mapping` as an account id); any other DELETE
        // under /api/ is unknown.delete too.
        routes: &[
            route(
                Verb::Delete,
                &[Lit("email-accounts"), Lit("tag-mapping")],
                Nothing,
            ),
            route(
                Verb::Delete,
                &[Lit("email-accounts"), Lit("unsuspend"), Id],
                Nothing,
            ),
        ],
        facts: &[],
        capture: &[],
        alternatives: &[],
        fields: &[],
        default: Action::Allow,
    },
];

impl Spec {
    /// What the call does, for refusals: `delete a campaign`.
    pub fn destroys_verb(&self) -> &'static str {
        self.act
    }

    /// Its routes as people write them, e.g. `DELETE /api/v1/campaigns/{id}`.
    pub fn canonical_form(&self) -> String {
        let forms: Vec<String> = self
            .routes
            .iter()
            .map(|r| {
                let method = match r.verb {
                    Verb::Delete => "DELETE",
                    Verb::Post => "POST",
                    Verb::PostOrPatch => "POST",
                };
                let placeholders = r.path.iter().filter(|s| !matches!(s, Seg::Lit(_))).count();
                let segs: Vec<&str> = r
                    .path
                    .iter()
                    .map(|s| match s {
                        Seg::Lit(l) => l,
                        Seg::Campaign if placeholders == 1 => "{id}",
                        Seg::Campaign => "{campaign_id}",
                        Seg::Lead => "{lead_id}",
                        Seg::Id => "{id}",
                    })
                    .collect();
                let query = if r.carried == Carried::QueryId {
                    "?id={id}"
                } else {
                    ""
                };
                format!("`{method} /api/v1/{}{query}`", segs.join("/"))
            })
            .collect();
        forms.join(" or ")
    }

    /// What its JSON body must hold, for refusals.
    pub fn body_form(&self) -> &'static str {
        match self
            .routes
            .iter()
            .map(|r| r.carried)
            .find(|c| *c != Carried::Nothing)
        {
            Some(Carried::BodyId) => "`{\"id\": N}` with N a positive integer",
            Some(Carried::BodyEmailAccountIds) => {
                "`{\"email_account_ids\": [N, ...]}` with positive integers"
            }
            Some(Carried::BodyStopStatus) => "`{\"status\": \"...\"}`",
            Some(Carried::QueryId) => "`?id=N` once, with N a positive integer",
            _ => "no body",
        }
    }
}

impl Op {
    /// Every operation, in table order.
    pub fn all() -> impl Iterator<Item = Op> {
        SPECS.iter().map(|s| s.op)
    }

    /// This operation's table entry.
    pub fn spec(self) -> &'static Spec {
        // The table is in enum order (checked by a test).
        &SPECS[self as usize]
    }

    /// The stable name, e.g. `campaign.lead.delete`.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The operation with this stable name.
    pub fn from_name(name: &str) -> Option<Op> {
        SPECS.iter().find(|s| s.name == name).map(|s| s.op)
    }

    /// Every action a rule may give it: allow, deny and its alternatives.
    pub fn actions(self) -> Vec<Action> {
        let mut all = vec![Action::Allow];
        all.extend_from_slice(self.spec().alternatives);
        all.push(Action::Deny);
        all
    }

    /// Whether a rule with `field` can match it.
    pub fn has_field(self, field: MatchField) -> bool {
        field == MatchField::Actors || self.spec().fields.contains(&field)
    }

    /// Whether the operation captures anything before acting.
    pub fn captures(self) -> bool {
        let s = self.spec();
        !s.facts.is_empty() || !s.capture.is_empty()
    }

    /// Every part a complete snapshot of it holds, in capture order.
    pub fn parts(self) -> Vec<PartKind> {
        let s = self.spec();
        let mut parts: Vec<PartKind> = s.facts.iter().map(|f| f.part()).collect();
        for step in s.capture {
            if !parts.contains(&step.part) {
                parts.push(step.part);
            }
        }
        parts
    }

    /// Whether a body sent with it is forwarded: routes that carry their
    /// target in it, and unknown deletes (whose bodies the gateway cannot
    /// judge). Others take none, and none is forwarded.
    pub fn forwards_body(self) -> bool {
        self == Op::UnknownDelete || self.spec().routes.iter().any(|r| r.carried.needs_body())
    }

    /// The call that pauses instead (path template under `/api/v1` and JSON
    /// body), for operations whose alternative is `pause`.
    pub fn pause_call(self) -> Option<(&'static str, Option<&'static str>)> {
        match self {
            Op::CampaignStop => Some((
                "/campaigns/{campaign}/status",
                Some(r#"{"status":"PAUSED"}"#),
            )),
            Op::CampaignLeadDelete => Some(("/campaigns/{campaign}/leads/{lead}/pause", None)),
            _ => None,
        }
    }

    /// Whether it is about a campaign (its target names one).
    pub fn has_campaign(self) -> bool {
        self.spec()
            .routes
            .iter()
            .any(|r| r.path.contains(&Seg::Campaign))
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Glob match on operation names: `*` any run of characters, `?` one.
pub fn name_matches(glob: &str, name: &str) -> bool {
    crate::guard::glob::matches(glob, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_enum_order_and_names_are_unique() {
        for (i, spec) in SPECS.iter().enumerate() {
            assert_eq!(spec.op as usize, i, "{}", spec.name);
            assert_eq!(Op::from_name(spec.name), Some(spec.op));
        }
    }

    #[test]
    fn every_operation_that_captures_has_parts_and_defaults_are_its_actions() {
        for op in Op::all() {
            assert!(op.actions().contains(&op.spec().default), "{op}");
            assert_eq!(op.captures(), !op.parts().is_empty(), "{op}");
        }
        assert!(!Op::UnknownDelete.captures());
        // What the trail stores and what `audit --action` reads agree.
        for action in Action::ALL {
            let pair = (action.done(), action.as_str());
            assert!(crate::audit::query::ACTIONS.contains(&pair), "{pair:?}");
        }
        assert_eq!(Op::CampaignDelete.parts(), PartKind::CAMPAIGN.to_vec());
    }
}
