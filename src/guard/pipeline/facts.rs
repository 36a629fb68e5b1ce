//! Phase: read what the policy decides on, with the caller's key: the
//! operation's fact reads from the table (the campaign, the lead and its
//! campaigns, the email accounts). What they return is kept whole: it
//! becomes the snapshot's first parts.

use http::header::{self, HeaderMap, HeaderValue};
use http::StatusCode;
use serde_json::Value;

use super::*;
use crate::guard::operations::FactRead;
use crate::snapshot::fetch::Whole;

/// What the fact reads told us.
#[derive(Default)]
pub(super) struct Known {
    /// Each read's answer as SmartLead gave it, in table order.
    pub(super) reads: Vec<(FactRead, Whole)>,
    pub(super) name: Option<String>,
    pub(super) status: Option<String>,
    pub(super) client_id: Option<u64>,
    /// `client_id` was present (a number, or null for no client).
    pub(super) client_id_known: bool,
    /// When SmartLead last changed the campaign: a snapshot of the same
    /// `updated_at` holds the same campaign.
    pub(super) updated_at: Option<String>,
    pub(super) lead_email: Option<String>,
    pub(super) lead_status: Option<String>,
    pub(super) email_accounts: Vec<String>,
}

impl Known {
    /// The facts as the policy sees them.
    pub(super) fn policy_facts<'a>(
        &'a self,
        op: Op,
        campaign_id: Option<u64>,
        actor: &'a str,
    ) -> policy::Facts<'a> {
        policy::Facts {
            operation: op,
            campaign_id,
            name: self.name.as_deref(),
            status: self.status.as_deref(),
            client_id: self.client_id,
            client_id_known: self.client_id_known,
            lead_email: self.lead_email.as_deref(),
            lead_status: self.lead_status.as_deref(),
            email_accounts: &self.email_accounts,
            actor,
        }
    }
}

pub(super) enum FactsOutcome {
    Read(Known),
    Relay(GuardResponse),
}

/// Some SmartLead pages wrap objects in `{"data": {...}}` or `{"data": [{...}]}`.
fn unwrap_data(value: Value) -> Value {
    match value.get("data") {
        Some(Value::Object(_)) if value.get("id").is_none() => value["data"].clone(),
        Some(Value::Array(a)) if value.get("id").is_none() => match a.first() {
            Some(first) if first.is_object() && a.len() == 1 => first.clone(),
            _ => Value::Array(a.clone()),
        },
        _ => value,
    }
}

/// A list that may come bare or as `{"data": [...]}`.
fn list(value: &Value) -> &[Value] {
    match value {
        Value::Array(a) => a,
        other => other
            .get("data")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice),
    }
}

fn id_of(v: &Value) -> Option<u64> {
    match v.get("id")? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn text(v: &Value, field: &str) -> Option<String> {
    v.get(field).and_then(Value::as_str).map(str::to_string)
}

impl Run {
    /// Phase: make the operation's fact reads. SmartLead's 404 or 401 on one
    /// is relayed as it is (nothing to protect, or the wrong key).
    pub(super) async fn facts(&mut self, source: &Source<'_>) -> Result<FactsOutcome, Refusal> {
        self.set_state(State::Deciding).await;
        let mut known = Known::default();
        for &read in self.op.spec().facts {
            let path = self.target.render(read.path());
            let target = self.what.clone();
            let whole = source
                .get_whole(read.part(), &path, FACTS_MAX_BYTES)
                .await
                .map_err(|source| match source {
                    crate::snapshot::fetch::FetchError::TooLarge { .. } => {
                        GuardError::FactsIncomplete {
                            target: target.clone(),
                        }
                    }
                    source => GuardError::FactsUnreadable {
                        target: target.clone(),
                        source,
                    },
                })?;
            let status = whole.status;
            if status == StatusCode::NOT_FOUND || status == StatusCode::UNAUTHORIZED {
                self.record.upstream_status = Some(status.as_u16());
                let mut headers = HeaderMap::new();
                if let Some(ct) = whole
                    .content_type
                    .as_deref()
                    .and_then(|c| HeaderValue::from_str(c).ok())
                {
                    headers.insert(header::CONTENT_TYPE, ct);
                }
                headers.insert(
                    X_SAFEDELETE_ACTION.clone(),
                    HeaderValue::from_static("refused"),
                );
                return Ok(FactsOutcome::Relay(GuardResponse {
                    status,
                    headers,
                    body: whole.body,
                    action: "refused",
                }));
            }
            if !status.is_success() {
                return Err(Refusal {
                    error: GuardError::FactsStatus { target, status },
                    upstream_status: Some(status.as_u16()),
                });
            }
            let value: Value = serde_json::from_slice(&whole.body)
                .map_err(|_| GuardError::FactsNotJson { target })?;
            self.read_fact(read, value, &mut known);
            known.reads.push((read, whole));
        }
        Ok(FactsOutcome::Read(known))
    }

    /// Takes what the policy needs from one read.
    fn read_fact(&self, read: FactRead, value: Value, known: &mut Known) {
        match read {
            FactRead::Campaign => {
                let object = unwrap_data(value);
                let client_id = match object.get("client_id") {
                    Some(Value::Number(n)) => n.as_u64(),
                    Some(Value::String(s)) => s.trim().parse().ok(),
                    _ => None,
                };
                known.name = text(&object, "name");
                known.status = text(&object, "status");
                known.updated_at = text(&object, "updated_at");
                known.client_id = client_id;
                // Present as a number, or null for a campaign without a client.
                known.client_id_known =
                    client_id.is_some() || matches!(object.get("client_id"), Some(Value::Null));
            }
            FactRead::Lead => {
                let object = unwrap_data(value);
                known.lead_email = text(&object, "email");
            }
            FactRead::LeadCampaigns => {
                let campaign = self.target.campaign_id;
                known.lead_status = list(&value)
                    .iter()
                    .find(|c| campaign.is_some() && id_of(c) == campaign)
                    .and_then(|c| text(c, "lead_status"));
            }
            FactRead::CampaignEmailAccounts => {
                known.email_accounts = list(&value)
                    .iter()
                    .filter(|a| id_of(a).is_some_and(|id| self.target.ids.contains(&id)))
                    .filter_map(|a| text(a, "from_email"))
                    .collect();
            }
            FactRead::EmailAccount => {
                let object = unwrap_data(value);
                known.email_accounts = text(&object, "from_email").into_iter().collect();
            }
        }
    }
}
