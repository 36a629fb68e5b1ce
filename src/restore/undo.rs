//! The smaller undos, each one SmartLead call: a deleted lead re-added to its
//! campaign, a deleted webhook re-created, removed sender accounts
//! re-attached (those that still exist), all from the snapshot taken before;
//! and an archived campaign set back to `PAUSED`. `--dry-run` shows the call
//! and sends nothing.

use crate::db::Pool;
use http::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::audit::{Audit, Subject};
use super::call::{CallError, Caller};
use super::plan::webhook_body;
use super::replay::add_leads_body;
use super::source::{self, SourceError, CAMPAIGN_OPERATIONS, LEAD_FIELDS};
use crate::snapshot::store::{self, PartKind, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum UndoError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("snapshot {snapshot_id} is {state}, not complete; only a complete snapshot can be undone (`safedelete snapshots show {snapshot_id}`)")]
    NotComplete { snapshot_id: i64, state: String },
    #[error("snapshot {snapshot_id} was taken for {operation}, which the SmartLead API cannot undo; `safedelete snapshots export {snapshot_id}` gives its data back")]
    CannotUndo { snapshot_id: i64, operation: String },
    #[error("snapshot {snapshot_id}: its target {target:?} does not name the {wanted}")]
    BadTarget {
        snapshot_id: i64,
        target: String,
        wanted: &'static str,
    },
    #[error("snapshot {snapshot_id}: webhook {webhook_id} is not among the webhooks captured from campaign {campaign_id}")]
    NoSuchWebhook {
        snapshot_id: i64,
        campaign_id: i64,
        webhook_id: i64,
    },
    #[error("campaign {campaign_id} is {status}, not ARCHIVED; --unarchive only sets an archived campaign back to PAUSED")]
    NotArchived { campaign_id: i64, status: String },
    #[error("none of the sender accounts removed from campaign {campaign_id} exists any more ({}); nothing was re-attached", ids(.missing))]
    NoAccountLeft { campaign_id: i64, missing: Vec<i64> },
    #[error(transparent)]
    Call(#[from] CallError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Lead,
    Webhook,
    EmailAccounts,
    Unarchive,
}

/// One undo: the call it makes, and what it puts back.
#[derive(Debug, serde::Serialize)]
pub struct Undo {
    pub kind: Kind,
    pub snapshot_id: Option<i64>,
    /// The operation undone (`campaign.lead.delete`, ...; `campaign.archive`
    /// for `--unarchive`).
    pub operation: String,
    pub campaign_id: i64,
    pub what: String,
    pub method: &'static str,
    pub path: String,
    pub body: Value,
}

/// What an undo did.
#[derive(Debug, serde::Serialize)]
pub struct Done {
    pub summary: String,
    /// Sender accounts left out because SmartLead no longer has them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_accounts: Vec<i64>,
    pub answer: Value,
}

/// The undo of a snapshot's operation; `None` for a campaign snapshot,
/// which a full restore rebuilds instead.
pub async fn from_snapshot(pool: &Pool, snapshot_id: i64) -> Result<Option<Undo>, UndoError> {
    let snapshot = store::get_snapshot(pool, snapshot_id).await?;
    let operation = snapshot.operation.clone();
    if CAMPAIGN_OPERATIONS.contains(&operation.as_str()) {
        return Ok(None);
    }
    let kind = match operation.as_str() {
        "campaign.lead.delete" => Kind::Lead,
        "campaign.webhook.delete" => Kind::Webhook,
        "campaign.email_accounts.remove" => Kind::EmailAccounts,
        _ => {
            return Err(UndoError::CannotUndo {
                snapshot_id,
                operation,
            })
        }
    };
    if snapshot.state != "complete" {
        return Err(UndoError::NotComplete {
            snapshot_id,
            state: snapshot.state,
        });
    }
    let target = snapshot.target.clone();
    let bad_target = |wanted| UndoError::BadTarget {
        snapshot_id,
        target: target.clone(),
        wanted,
    };
    let campaign_id = snapshot
        .campaign_id
        .or_else(|| target_field(&target, "campaign"))
        .ok_or_else(|| bad_target("campaign"))?;
    let (what, path, body) = match kind {
        Kind::Lead => {
            let lead = lead_object(source::json_part(pool, snapshot_id, PartKind::Lead).await?)
                .ok_or_else(|| no_lead(snapshot_id))?;
            let lead = lead_json(&lead).ok_or_else(|| no_lead(snapshot_id))?;
            (
                format!("re-add lead {} to campaign {campaign_id}", lead["email"]),
                format!("/campaigns/{campaign_id}/leads"),
                add_leads_body(vec![lead]),
            )
        }
        Kind::Webhook => {
            let webhook_id = target_field(&target, "webhook")
                .or(snapshot.target_id)
                .ok_or_else(|| bad_target("webhook"))?;
            let hooks = source::array_part(pool, snapshot_id, PartKind::Webhooks).await?;
            let hook = hooks
                .iter()
                .find(|w| id_of(w.get("id")) == Some(webhook_id))
                .ok_or(UndoError::NoSuchWebhook {
                    snapshot_id,
                    campaign_id,
                    webhook_id,
                })?;
            let body = webhook_body(hook);
            (
                format!(
                    "re-create webhook {webhook_id} {} in campaign {campaign_id}",
                    body["name"]
                ),
                format!("/campaigns/{campaign_id}/webhooks"),
                body,
            )
        }
        Kind::EmailAccounts => {
            let ids: Vec<i64> = target
                .split('/')
                .find_map(|p| p.strip_prefix("email_accounts:"))
                .map(|list| list.split(',').filter_map(|i| i.parse().ok()).collect())
                .unwrap_or_default();
            if ids.is_empty() {
                return Err(bad_target("sender accounts"));
            }
            (
                format!(
                    "re-attach sender account(s) {} to campaign {campaign_id}, those that still exist",
                    self::ids(&ids)
                ),
                format!("/campaigns/{campaign_id}/email-accounts"),
                json!({ "email_account_ids": ids }),
            )
        }
        // Not a snapshot's operation: `--unarchive` is built by [`Undo::unarchive`].
        Kind::Unarchive => {
            return Err(UndoError::CannotUndo {
                snapshot_id,
                operation,
            })
        }
    };
    Ok(Some(Undo {
        kind,
        snapshot_id: Some(snapshot_id),
        operation,
        campaign_id,
        what,
        method: "POST",
        path,
        body,
    }))
}

impl Undo {
    /// `--unarchive CAMPAIGN_ID`.
    pub fn unarchive(campaign_id: i64) -> Undo {
        Undo {
            kind: Kind::Unarchive,
            snapshot_id: None,
            operation: "campaign.archive".into(),
            campaign_id,
            what: format!("set campaign {campaign_id} back to PAUSED, if it is ARCHIVED"),
            method: "POST",
            path: format!("/campaigns/{campaign_id}/status"),
            body: json!({ "status": "PAUSED" }),
        }
    }

    /// The undo and its call, for people.
    pub fn render(&self) -> String {
        let head = match self.snapshot_id {
            Some(id) => format!(
                "Undo of snapshot {id} ({} in campaign {})",
                self.operation, self.campaign_id
            ),
            None => format!("Unarchive of campaign {}", self.campaign_id),
        };
        let mut out = format!(
            "{head}: {}\n  {} {}  {}\n",
            self.what, self.method, self.path, self.body
        );
        match self.kind {
            Kind::EmailAccounts => out.push_str(
                "  (each account is first looked up with GET /email-accounts/{id}; those SmartLead no longer has are left out)\n",
            ),
            Kind::Unarchive => out.push_str(&format!(
                "  (after GET /campaigns/{} shows it ARCHIVED)\n",
                self.campaign_id
            )),
            Kind::Lead | Kind::Webhook => {}
        }
        out
    }

    /// Makes the undo's call (after its checks), each call audited.
    pub async fn run(&self, caller: &Caller, audit: &Audit<'_>) -> Result<Done, UndoError> {
        let subject = match self.snapshot_id {
            Some(id) => Subject {
                campaign_id: Some(self.campaign_id),
                snapshot_id: Some(id),
                target: format!("undo:snapshot:{id}"),
                what: format!("undo of snapshot {id} ({})", self.operation),
            },
            None => Subject {
                campaign_id: Some(self.campaign_id),
                snapshot_id: None,
                target: format!("unarchive:campaign:{}", self.campaign_id),
                what: format!("unarchive of campaign {}", self.campaign_id),
            },
        };
        let send = |step: &'static str, method: Method, path: String, body: Option<Value>| {
            let subject = &subject;
            async move {
                audit
                    .send(caller, subject, step, method, &path, body.as_ref())
                    .await
            }
        };
        let c = self.campaign_id;
        let mut body = self.body.clone();
        let mut missing = Vec::new();
        match self.kind {
            Kind::Unarchive => {
                let campaign =
                    send("read status", Method::GET, format!("/campaigns/{c}"), None).await?;
                let status = campaign
                    .get("status")
                    .and_then(Value::as_str)
                    .unwrap_or("without a status");
                if status != "ARCHIVED" {
                    return Err(UndoError::NotArchived {
                        campaign_id: c,
                        status: status.to_string(),
                    });
                }
            }
            Kind::EmailAccounts => {
                let mut existing = Vec::new();
                let wanted: Vec<i64> = self.body["email_account_ids"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_i64).collect())
                    .unwrap_or_default();
                for id in wanted {
                    let path = format!("/email-accounts/{id}");
                    match send("check account", Method::GET, path, None).await {
                        Ok(_) => existing.push(id),
                        Err(CallError::Refused { status, .. })
                            if status == StatusCode::NOT_FOUND =>
                        {
                            missing.push(id)
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                if existing.is_empty() {
                    return Err(UndoError::NoAccountLeft {
                        campaign_id: c,
                        missing,
                    });
                }
                body = json!({ "email_account_ids": existing });
            }
            Kind::Lead | Kind::Webhook => {}
        }
        let step = match self.kind {
            Kind::Lead => "re-add lead",
            Kind::Webhook => "re-create webhook",
            Kind::EmailAccounts => "re-attach accounts",
            Kind::Unarchive => "pause",
        };
        let answer = send(step, Method::POST, self.path.clone(), Some(body.clone())).await?;
        let summary = match self.kind {
            Kind::Lead => format!(
                "lead {} sent back to campaign {c} (SmartLead keeps its block, unsubscribe and bounce lists in force)",
                body["lead_list"][0]["email"]
            ),
            Kind::Webhook => format!("webhook {} is back in campaign {c}", body["name"]),
            Kind::EmailAccounts => {
                let attached = body["email_account_ids"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_i64).collect::<Vec<_>>())
                    .unwrap_or_default();
                let mut s = format!(
                    "sender account(s) {} re-attached to campaign {c}",
                    ids(&attached)
                );
                if !missing.is_empty() {
                    s.push_str(&format!("; no longer exist, left out: {}", ids(&missing)));
                }
                s
            }
            Kind::Unarchive => format!("campaign {c} is PAUSED again (it was ARCHIVED)"),
        };
        Ok(Done {
            summary,
            missing_accounts: missing,
            answer,
        })
    }
}

fn no_lead(snapshot_id: i64) -> UndoError {
    source::bad(snapshot_id, PartKind::Lead, "no lead with an email".into()).into()
}

/// `campaign:5/lead:7` -> 5 for `campaign`.
fn target_field(target: &str, name: &str) -> Option<i64> {
    target
        .split('/')
        .find_map(|p| p.strip_prefix(name)?.strip_prefix(':')?.parse().ok())
}

fn id_of(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The lead of `GET /leads/{id}`: `{"data": [lead]}`, `[lead]` or the lead.
fn lead_object(part: Value) -> Option<Map<String, Value>> {
    let first = |v: Value| match v {
        Value::Array(items) => items.into_iter().next(),
        other => Some(other),
    };
    let lead = match part {
        Value::Object(mut m) if !m.contains_key("email") => first(m.remove("data")?)?,
        other => first(other)?,
    };
    match lead {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// The lead as the add-leads call takes it: email, names and the other
/// add-leads fields that have a value, and its custom fields.
fn lead_json(lead: &Map<String, Value>) -> Option<Value> {
    let email = lead.get("email")?.as_str()?.trim();
    if email.is_empty() {
        return None;
    }
    let mut m = Map::new();
    m.insert("email".into(), Value::from(email));
    for field in LEAD_FIELDS {
        if let Some(Value::String(v)) = lead.get(*field) {
            if !v.is_empty() {
                m.insert((*field).into(), Value::from(v.clone()));
            }
        }
    }
    if let Some(Value::Object(custom)) = lead.get("custom_fields") {
        if !custom.is_empty() {
            m.insert("custom_fields".into(), Value::Object(custom.clone()));
        }
    }
    Some(Value::Object(m))
}

fn ids(ids: &[i64]) -> String {
    ids.iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lead_is_read_from_any_of_smartleads_envelopes() {
        let lead = json!({"email": "a@x", "first_name": "Ann", "last_name": "", "custom_fields": {"k": "v"}, "id": 7});
        for part in [
            json!({"ok": true, "data": [lead.clone()]}),
            json!([lead.clone()]),
            lead.clone(),
        ] {
            let sent = lead_json(&lead_object(part).unwrap()).unwrap();
            assert_eq!(
                sent,
                json!({"email": "a@x", "first_name": "Ann", "custom_fields": {"k": "v"}})
            );
        }
        assert!(lead_object(json!({"ok": true, "data": []})).is_none());
        assert!(lead_json(json!({"email": " "}).as_object().unwrap()).is_none());
    }

    #[test]
    fn targets_name_the_campaign_and_the_object() {
        let t = "campaign:101/webhook:10101";
        assert_eq!(target_field(t, "campaign"), Some(101));
        assert_eq!(target_field(t, "webhook"), Some(10101));
        assert_eq!(target_field(t, "lead"), None);
    }
}
