//! Replaying a plan: each call sent (paced by [`Caller`]), recorded as a
//! step once SmartLead accepted it, skipped when a resumed restore finds it
//! done. Leads go in batches counted from the start of the export, so a
//! resumed restore sends the same batches again only where one was not
//! recorded; SmartLead does not add a lead twice to one campaign.

use crate::db::Pool;
use http::Method;
use serde_json::{json, Map, Value};

pub use super::audit::Audit;
use super::audit::Subject;
use super::call::{CallError, Caller};
use super::ledger;
use super::plan::{Call, LeftOut, Plan, LEADS_PER_CALL};
use super::source::{Captured, Lead, LeadReader, SourceError};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("the restore's record: {0}")]
    Db(#[from] sqlx::Error),
    #[error("SmartLead created the campaign but its answer has no id: {0}")]
    NoId(String),
}

/// What the restore tells as it goes.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Step { step: String, detail: String },
    Skipped { step: String },
    Leads { sent: u64, total: u64 },
}

/// Runs every step not yet done.
pub async fn replay(
    pool: &Pool,
    restore_id: i64,
    plan: &Plan,
    captured: &Captured,
    caller: &Caller,
    audit: &Audit<'_>,
    progress: &mut (dyn FnMut(Event) + Send),
) -> Result<i64, ReplayError> {
    let r = Replay {
        pool,
        restore_id,
        plan,
        caller,
        audit,
    };
    let new_id = r.create(progress).await?;
    let path_of = |call: &Call| call.path.replace("{new}", &new_id.to_string());
    let mut webhook = 0;
    for call in &plan.calls {
        let step = match call.path.rsplit('/').next().unwrap_or("") {
            "create" | "leads" | "email-accounts" => continue,
            "webhooks" => {
                webhook += 1;
                format!("webhook:{webhook}")
            }
            other => other.to_string(),
        };
        if ledger::done(pool, restore_id, &step).await?.is_some() {
            progress(Event::Skipped { step });
            continue;
        }
        let answer = r
            .send(
                &step,
                Method::POST,
                &path_of(call),
                call.body.as_ref(),
                new_id,
            )
            .await?;
        ledger::record(pool, restore_id, &step, &answer, None).await?;
        progress(Event::Step {
            step,
            detail: call.what.clone(),
        });
    }
    r.email_accounts(new_id, progress).await?;
    r.leads(new_id, captured, progress).await?;
    Ok(new_id)
}

struct Replay<'a> {
    pool: &'a Pool,
    restore_id: i64,
    plan: &'a Plan,
    caller: &'a Caller,
    audit: &'a Audit<'a>,
}

impl Replay<'_> {
    /// The new campaign: created once. A restore stopped between SmartLead
    /// creating it and the record of it finds it again by its name.
    async fn create(&self, progress: &mut (dyn FnMut(Event) + Send)) -> Result<i64, ReplayError> {
        if let Some(done) = ledger::done(self.pool, self.restore_id, "create").await? {
            if let Some(id) = done.get("id").and_then(Value::as_i64) {
                progress(Event::Skipped {
                    step: "create".into(),
                });
                return Ok(id);
            }
        }
        let attempted = ledger::done(self.pool, self.restore_id, "create:attempt").await?;
        if attempted.is_some() {
            if let Some(id) = self.find_created().await? {
                ledger::record(
                    self.pool,
                    self.restore_id,
                    "create",
                    &json!({ "id": id }),
                    Some(id),
                )
                .await?;
                return Ok(id);
            }
        } else {
            ledger::record(
                self.pool,
                self.restore_id,
                "create:attempt",
                &Value::Null,
                None,
            )
            .await?;
        }
        let call = &self.plan.calls[0];
        let answer = self
            .send("create", Method::POST, &call.path, call.body.as_ref(), 0)
            .await?;
        let id = answer
            .get("id")
            .and_then(Value::as_i64)
            .ok_or_else(|| ReplayError::NoId(answer.to_string()))?;
        ledger::record(self.pool, self.restore_id, "create", &answer, Some(id)).await?;
        progress(Event::Step {
            step: "create".into(),
            detail: format!("campaign {id} {:?}, a draft", self.plan.name),
        });
        Ok(id)
    }

    /// The newest campaign with the plan's name that is not the original.
    async fn find_created(&self) -> Result<Option<i64>, ReplayError> {
        let list = self
            .caller
            .send(Method::GET, "/campaigns", None)
            .await?
            .body;
        let items = list.as_array().cloned().unwrap_or_default();
        Ok(items
            .iter()
            .filter(|c| c.get("name").and_then(Value::as_str) == Some(self.plan.name.as_str()))
            .filter_map(|c| c.get("id").and_then(Value::as_i64))
            .filter(|id| Some(*id) != self.plan.original_id)
            .max())
    }

    /// The captured sender accounts that still exist, attached; the others
    /// recorded as missing.
    async fn email_accounts(
        &self,
        new_id: i64,
        progress: &mut (dyn FnMut(Event) + Send),
    ) -> Result<(), ReplayError> {
        let step = "email_accounts";
        if self.plan.email_account_ids.is_empty() {
            return Ok(());
        }
        if ledger::done(self.pool, self.restore_id, step)
            .await?
            .is_some()
        {
            progress(Event::Skipped { step: step.into() });
            return Ok(());
        }
        let mut existing = Vec::new();
        let mut missing = Vec::new();
        for id in &self.plan.email_account_ids {
            let path = format!("/email-accounts/{id}");
            match self.send(step, Method::GET, &path, None, new_id).await {
                Ok(_) => existing.push(*id),
                Err(CallError::Refused { status, .. }) if status == http::StatusCode::NOT_FOUND => {
                    missing.push(*id)
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut result = json!({ "attached": existing, "missing": missing });
        if !existing.is_empty() {
            let body = json!({ "email_account_ids": existing });
            let path = format!("/campaigns/{new_id}/email-accounts");
            let answer = self
                .send(step, Method::POST, &path, Some(&body), new_id)
                .await?;
            result["answer"] = answer;
        }
        ledger::record(self.pool, self.restore_id, step, &result, None).await?;
        progress(Event::Step {
            step: step.into(),
            detail: format!(
                "{} sender account(s) attached, {} no longer exist",
                existing.len(),
                missing.len()
            ),
        });
        Ok(())
    }

    /// The leads, in batches of [`LEADS_PER_CALL`], each recorded.
    async fn leads(
        &self,
        new_id: i64,
        captured: &Captured,
        progress: &mut (dyn FnMut(Event) + Send),
    ) -> Result<(), ReplayError> {
        let total = self.plan.leads.restored;
        let path = format!("/campaigns/{new_id}/leads");
        let mut batch: Vec<Value> = Vec::with_capacity(LEADS_PER_CALL);
        let mut number = 0u64;
        let mut sent = 0u64;
        let mut reader = LeadReader::open(captured)?;
        loop {
            let next = reader.next().transpose()?;
            if let Some(lead) = &next {
                if LeftOut::of(lead, self.plan.leads_choice).is_none() {
                    batch.push(lead_json(lead));
                }
            }
            let full = batch.len() == LEADS_PER_CALL || (next.is_none() && !batch.is_empty());
            if full {
                number += 1;
                let step = format!("leads:{number}");
                let count = batch.len() as u64;
                if ledger::done(self.pool, self.restore_id, &step)
                    .await?
                    .is_none()
                {
                    let body = add_leads_body(std::mem::take(&mut batch));
                    let answer = self
                        .send(&step, Method::POST, &path, Some(&body), new_id)
                        .await?;
                    let mut result = answer;
                    result["sent"] = json!(count);
                    ledger::record(self.pool, self.restore_id, &step, &result, None).await?;
                }
                batch.clear();
                sent += count;
                progress(Event::Leads { sent, total });
            }
            if next.is_none() {
                return Ok(());
            }
        }
    }

    /// Sends one call and audits it, whatever SmartLead answered.
    async fn send(
        &self,
        step: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        new_id: i64,
    ) -> Result<Value, CallError> {
        let new = if new_id > 0 {
            format!(" into campaign {new_id}")
        } else {
            String::new()
        };
        let subject = Subject {
            campaign_id: self.plan.original_id,
            snapshot_id: Some(self.plan.snapshot_id),
            target: format!("restore:{}", self.restore_id),
            what: format!(
                "restore {} of snapshot {}{new}",
                self.restore_id, self.plan.snapshot_id
            ),
        };
        self.audit
            .send(self.caller, &subject, step, method, path, body)
            .await
    }
}

/// The add-leads call's body: the leads, and settings that keep SmartLead's
/// block, unsubscribe and bounce lists in force.
pub(super) fn add_leads_body(leads: Vec<Value>) -> Value {
    json!({
        "lead_list": leads,
        "settings": {
            "ignore_global_block_list": false,
            "ignore_unsubscribe_list": false,
            "ignore_community_bounce_list": false,
            "ignore_duplicate_leads_in_other_campaign": true,
        },
    })
}

/// A lead as the add-leads call takes it.
pub(super) fn lead_json(lead: &Lead) -> Value {
    let mut m = Map::new();
    m.insert("email".into(), Value::from(lead.email.clone()));
    for (k, v) in &lead.fields {
        m.insert((*k).into(), Value::from(v.clone()));
    }
    if !lead.custom_fields.is_empty() {
        m.insert(
            "custom_fields".into(),
            Value::Object(lead.custom_fields.clone()),
        );
    }
    Value::Object(m)
}
