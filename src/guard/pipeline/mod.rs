//! The guard pipeline for `DELETE /api/v1/campaigns/{id}`, in the order that
//! is the product: identify the actor, claim the campaign (single flight),
//! read the facts ([`facts`]), decide, snapshot ([`snapshot`]), act
//! ([`act`]), record ([`record`]); one file a phase.
//! It runs as its own task, so a client that hangs up cannot stop it halfway.
//! The client waits at most `guard.answer_within`: a snapshot not complete by
//! then is refused with 503 `snapshot_pending` and captured on in the
//! background ([`super::capture`]), where a retry joins it; a retry after it
//! completed uses it while it is recent and the campaign has not changed.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;

mod act;
mod facts;
mod record;
mod snapshot;

use super::capture::{self, Job};
use super::error::GuardError;
use super::ledger::{self, BeginError, DecisionRow, NewOperation, State};
use super::operations::Op;
use super::policy::{self, Action, Decision, Facts};
use crate::audit::{AuditRecord, ErrorKind, OperationKind};
use crate::proxy::client::RequestBody;
use crate::proxy::ProxyState;
use crate::snapshot::fetch::Source;
use crate::snapshot::store::{self, PartKind};
use facts::{CampaignFacts, FactsOutcome};

/// The most of a campaign object the gateway reads into memory.
const FACTS_MAX_BYTES: usize = 4 * 1024 * 1024;

/// `Retry-After` on a 409 (in flight elsewhere) or 503 (snapshot pending):
/// soon, since a retry on this gateway joins the running capture.
const RETRY_AFTER_SECS: &str = "5";

pub static X_SAFEDELETE_ACTION: HeaderName = HeaderName::from_static("x-safedelete-action");
pub static X_SAFEDELETE_AUDIT_ID: HeaderName = HeaderName::from_static("x-safedelete-audit-id");
pub static X_SAFEDELETE_SNAPSHOT_ID: HeaderName =
    HeaderName::from_static("x-safedelete-snapshot-id");

/// A guarded request, cleaned and pointed at the upstream.
pub struct GuardInput {
    pub campaign_id: u64,
    /// The client's DELETE, ready to forward if the policy allows it.
    pub parts: http::request::Parts,
    /// The `api_key` as the client sent it, for the guard's own reads.
    pub api_key_raw: Option<String>,
    /// Full SHA-256 hex of the key, to find the actor.
    pub api_key_sha256: Option<String>,
    pub user_agent: Option<HeaderValue>,
    /// The request's audit record so far (redacted).
    pub record: AuditRecord,
}

/// What the client gets back. The body is whole: its length is part of the
/// audit record, which is written (and chained) before the answer leaves.
pub struct GuardResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// What the guard did: `allowed`, `archived`, `denied` or `refused`.
    pub action: &'static str,
}

/// Runs the pipeline in its own task and waits for its answer.
pub async fn run(state: Arc<ProxyState>, input: GuardInput) -> GuardResponse {
    let request_id = input.record.request_id.clone();
    let guard = state.guard_tasks.enter();
    let task = state.background.spawn({
        let state = state.clone();
        async move {
            let resp = pipeline(state, input).await;
            drop(guard);
            resp
        }
    });
    match task.await {
        Ok(resp) => resp,
        Err(err) => {
            tracing::error!(error = %err, "guard pipeline task failed");
            // Never leave the campaign claimed by a pipeline that is gone.
            if let Err(e) = ledger::fail_by_request(
                &state.pool,
                &request_id,
                "internal error in the deletion guard",
            )
            .await
            {
                tracing::error!(error = %e, "cannot close the failed operation");
            }
            let body = json!({
                "ok": false, "success": false,
                "error": "safedelete: internal error in the deletion guard; nothing was deleted",
                "error_kind": "internal",
            });
            GuardResponse {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                headers: json_headers("refused"),
                body: Bytes::from(body.to_string()),
                action: "refused",
            }
        }
    }
}

/// Everything the phases share.
struct Run {
    state: Arc<ProxyState>,
    campaign_id: u64,
    operation_id: Option<i64>,
    snapshot_id: Option<i64>,
    decision: Option<Decision>,
    record: AuditRecord,
    started: Instant,
    /// When the client must have its answer (`guard.answer_within`).
    answer_by: tokio::time::Instant,
    /// Keeps the claim fresh while the operation runs.
    heartbeat: Option<Heartbeat>,
    /// This request's audit record, once written.
    audit_id: Option<i64>,
}

/// A refusal: why (one [`GuardError`]), and what SmartLead answered, if
/// the refusal follows an answer of its.
struct Refusal {
    error: GuardError,
    upstream_status: Option<u16>,
}

impl From<GuardError> for Refusal {
    fn from(error: GuardError) -> Self {
        Refusal {
            error,
            upstream_status: None,
        }
    }
}

async fn pipeline(state: Arc<ProxyState>, input: GuardInput) -> GuardResponse {
    let guard_policy = state.policy();
    let actor = guard_policy
        .actor_label(input.api_key_sha256.as_deref())
        .to_string();
    let mut record = input.record;
    record.operation = OperationKind::Guarded(crate::guard::operations::Op::CampaignDelete.name());
    record.campaign_id = Some(input.campaign_id as i64);
    record.actor_label = Some(actor.clone());
    let mut run = Run {
        state: state.clone(),
        campaign_id: input.campaign_id,
        operation_id: None,
        snapshot_id: None,
        decision: None,
        record,
        started: Instant::now(),
        answer_by: tokio::time::Instant::now() + state.guard.answer_within,
        heartbeat: None,
        audit_id: None,
    };

    // Single flight: the durable intent, before anything else.
    let new = NewOperation {
        kind: OperationKind::Guarded(crate::guard::operations::Op::CampaignDelete.name()).as_str(),
        campaign_id: input.campaign_id,
        request_id: &run.record.request_id,
        actor_fingerprint: run.record.actor_fingerprint.as_deref(),
        actor_label: &actor,
    };
    // One more claim when the campaign was freed between our claim and our
    // look at the running captures.
    let mut claim_again = true;
    loop {
        match ledger::begin(&state.pool, &new).await {
            Ok(id) => {
                run.operation_id = Some(id);
                run.heartbeat = Some(Heartbeat::start(state.pool.clone(), id));
                break;
            }
            Err(BeginError::InFlight { campaign_id }) => {
                // A capture whose client was already answered holds the
                // claim: join it (wait for it to end), then claim again.
                if let Some(running) = state.captures.get(campaign_id) {
                    let snapshot_id = running.snapshot_id;
                    match tokio::time::timeout_at(run.answer_by, running.settled()).await {
                        Ok(Ok(())) if tokio::time::Instant::now() < run.answer_by => continue,
                        Ok(Ok(())) => {}
                        Ok(Err(why)) => {
                            state.captures.forget(campaign_id, snapshot_id);
                            run.snapshot_id = Some(snapshot_id);
                            let refusal = GuardError::JoinedCaptureFailed { campaign_id, why };
                            return run.refuse(refusal.into()).await;
                        }
                        Err(_) => {}
                    }
                    run.snapshot_id = Some(snapshot_id);
                    let waited = state.guard.answer_within;
                    return run
                        .refuse(
                            GuardError::SnapshotPending {
                                campaign_id,
                                snapshot_id,
                                waited,
                            }
                            .into(),
                        )
                        .await;
                }
                if std::mem::take(&mut claim_again) {
                    continue;
                }
                return run
                    .refuse(GuardError::InFlight { campaign_id }.into())
                    .await;
            }
            Err(err @ (BeginError::Db(_) | BeginError::Recover(_))) => {
                tracing::error!(error = %err, "cannot record a guarded operation");
                return run.refuse(GuardError::CannotClaim.into()).await;
            }
        }
    }

    let source = Source {
        state: &state,
        pool: &state.pool,
        campaign_id: input.campaign_id,
        api_key_raw: input.api_key_raw.as_deref(),
        user_agent: input.user_agent.clone(),
        deadline: tokio::time::Instant::now() + state.guard.snapshot_budget,
        budget: state.guard.snapshot_budget,
    };

    let facts = match run.facts(&source).await {
        Ok(FactsOutcome::Read(facts)) => facts,
        Ok(FactsOutcome::Relay(resp)) => return run.relay_not_found(resp).await,
        Err(refusal) => return run.refuse(refusal).await,
    };

    if let Some(rule) = facts.unknowable_deny(&guard_policy.policy) {
        let refusal = GuardError::FactMissing {
            campaign_id: input.campaign_id,
            rule: rule.to_string(),
        };
        return run.refuse(refusal.into()).await;
    }
    let decision = policy::evaluate(
        &guard_policy.policy,
        &Facts {
            campaign_id: Some(input.campaign_id),
            name: facts.name.as_deref(),
            status: facts.status.as_deref(),
            client_id: facts.client_id,
            client_id_known: facts.client_id_known,
            ..Facts::new(Op::CampaignDelete, &actor)
        },
    );
    run.record_decision(&decision).await;
    run.decision = Some(decision.clone());
    if decision.action == Action::Deny {
        return run.deny().await;
    }

    if decision.snapshot_required {
        let key = input.api_key_raw.clone();
        if let Err(refusal) = run.snapshot(&facts, key, input.user_agent.clone()).await {
            return run.refuse(refusal).await;
        }
    }

    // The act phase gets its own time, whatever the snapshot used.
    let act = Source {
        deadline: tokio::time::Instant::now() + state.first_byte_timeout,
        budget: state.first_byte_timeout,
        ..source
    };
    // The snapshot must still be there, complete, at the moment of acting.
    if let Some(id) = run.snapshot_id {
        let intact =
            matches!(store::get_snapshot(&state.pool, id).await, Ok(s) if s.state == "complete");
        if !intact {
            let refusal = GuardError::SnapshotGone { snapshot_id: id };
            return run.refuse(refusal.into()).await;
        }
    }
    if let Err(err) = run.try_set_state(State::Acting).await {
        tracing::error!(error = %err, "cannot record the acting state");
        return run.refuse(GuardError::CannotAct.into()).await;
    }
    match decision.action {
        Action::Archive => run.archive(&act).await,
        Action::Allow => run.allow(&act, input.parts, decision.stop_first).await,
        // campaign.delete has no pause (policy validation refuses it): refuse
        // rather than guess.
        Action::Deny | Action::Pause => run.deny().await,
    }
}

/// Refreshes an operation's heartbeat until dropped.
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Heartbeat {
    fn start(pool: sqlx::SqlitePool, id: i64) -> Self {
        Heartbeat(tokio::spawn(async move {
            loop {
                tokio::time::sleep(ledger::HEARTBEAT_EVERY).await;
                if let Err(err) = ledger::heartbeat(&pool, id).await {
                    tracing::warn!(error = %err, operation_id = id, "cannot refresh the operation heartbeat");
                }
            }
        }))
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn json_headers(action: &'static str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    h.insert(
        X_SAFEDELETE_ACTION.clone(),
        HeaderValue::from_static(action),
    );
    h
}

fn add_guard_headers(
    h: &mut HeaderMap,
    action: &'static str,
    audit_id: Option<i64>,
    snapshot_id: Option<i64>,
) {
    h.insert(
        X_SAFEDELETE_ACTION.clone(),
        HeaderValue::from_static(action),
    );
    if let Some(id) = audit_id {
        h.insert(X_SAFEDELETE_AUDIT_ID.clone(), HeaderValue::from(id));
    }
    if let Some(id) = snapshot_id {
        h.insert(X_SAFEDELETE_SNAPSHOT_ID.clone(), HeaderValue::from(id));
    }
}

/// Reads a small body whole, refusing one over [`FACTS_MAX_BYTES`].
async fn read_limited(body: Incoming) -> Result<Bytes, ()> {
    let limited = http_body_util::Limited::new(body, FACTS_MAX_BYTES);
    limited
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|_| ())
}
