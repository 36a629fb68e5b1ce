//! Phase: read the campaign (`GET /campaigns/{id}`) with the caller's key,
//! the facts the policy decides on.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use serde_json::Value;

use super::*;

/// What the campaign read told us.
pub(super) struct CampaignFacts {
    pub(super) raw: Bytes,
    pub(super) name: Option<String>,
    pub(super) status: Option<String>,
    pub(super) client_id: Option<u64>,
    /// `client_id` was present (a number, or null for no client).
    pub(super) client_id_known: bool,
    /// When SmartLead last changed the campaign: a snapshot of the same
    /// `updated_at` holds the same campaign.
    pub(super) updated_at: Option<String>,
}

impl CampaignFacts {
    /// The enforced deny rule that needs a fact SmartLead did not give: the
    /// guard cannot tell whether it applies, so it must not guess "no".
    pub(super) fn unknowable_deny<'p>(&self, policy: &'p policy::Policy) -> Option<&'p str> {
        policy
            .rules()
            .iter()
            .filter(|r| r.action == Action::Deny && r.mode == policy::Mode::Enforce)
            .find(|r| {
                (r.campaign_name.is_some() && self.name.is_none())
                    || (r.statuses.is_some() && self.status.is_none())
                    || (r.client_ids.is_some() && !self.client_id_known)
            })
            .map(|r| r.name.as_str())
    }
}

pub(super) enum FactsOutcome {
    Read(CampaignFacts),
    Relay(GuardResponse),
}

impl Run {
    /// Phase: read the campaign (`GET /campaigns/{id}`) with the caller's key.
    pub(super) async fn facts(&mut self, source: &Source<'_>) -> Result<FactsOutcome, Refusal> {
        self.set_state(State::Deciding).await;
        let campaign_id = self.campaign_id;
        let resp = source
            .send_retrying(PartKind::Campaign, Method::GET, "", None)
            .await
            .map_err(|source| GuardError::FactsUnreadable {
                campaign_id,
                source,
            })?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND || status == StatusCode::UNAUTHORIZED {
            let (parts, body) = resp.into_parts();
            let bytes = read_limited(body).await.unwrap_or_default();
            self.record.upstream_status = Some(status.as_u16());
            let mut headers = HeaderMap::new();
            if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
                headers.insert(header::CONTENT_TYPE, ct.clone());
            }
            headers.insert(
                X_SAFEDELETE_ACTION.clone(),
                HeaderValue::from_static("refused"),
            );
            return Ok(FactsOutcome::Relay(GuardResponse {
                status,
                headers,
                body: bytes,
                action: "refused",
            }));
        }
        if !status.is_success() {
            return Err(Refusal {
                error: GuardError::FactsStatus {
                    campaign_id,
                    status,
                },
                upstream_status: Some(status.as_u16()),
            });
        }
        let raw = read_limited(resp.into_body())
            .await
            .map_err(|_| GuardError::FactsIncomplete { campaign_id })?;
        let value: Value =
            serde_json::from_slice(&raw).map_err(|_| GuardError::FactsNotJson { campaign_id })?;
        // Some SmartLead pages wrap objects in {"data": {...}}.
        let object = match value.get("data") {
            Some(d) if d.is_object() && value.get("id").is_none() => d.clone(),
            _ => value,
        };
        let client_id = match object.get("client_id") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        Ok(FactsOutcome::Read(CampaignFacts {
            name: object
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_string),
            status: object
                .get("status")
                .and_then(Value::as_str)
                .map(str::to_string),
            client_id,
            updated_at: object
                .get("updated_at")
                .and_then(Value::as_str)
                .map(str::to_string),
            // Present as a number, or null for a campaign without a client.
            client_id_known: client_id.is_some()
                || matches!(object.get("client_id"), Some(Value::Null)),
            raw,
        }))
    }
}
