//! The guard pipeline for every operation in the table
//! ([`super::operations`]), in the order that is the product: identify the
//! actor, claim the target (single flight), read the facts ([`facts`]),
//! decide, snapshot ([`snapshot`]), act ([`act`]), record ([`record`]); one
//! file a phase.
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
use super::classify::Target;
use super::error::GuardError;
use super::ledger::{self, BeginError, DecisionRow, NewOperation, State};
use super::operations::{Action, Op};
use super::policy::{self, Decision};
use crate::audit::{AuditRecord, ErrorKind, OperationKind};
use crate::guard::context::GuardContext;
use crate::snapshot::fetch::Source;
use crate::snapshot::store::{self, PartKind};
use crate::upstream::client::RequestBody;
use facts::{FactsOutcome, Known};

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
    pub op: Op,
    pub target: Target,
    /// The client's call, ready to forward if the policy allows it.
    pub parts: http::request::Parts,
    /// Its body, read whole (empty for routes that take none).
    pub body: Bytes,
    /// The `api_key` as the client sent it, for the guard's own reads.
    pub api_key_raw: Option<String>,
    /// Full SHA-256 hex of the key, to find the actor.
    pub api_key_sha256: Option<String>,
    /// The actor when the caller is already known (a gateway key's name).
    pub actor: Option<String>,
    /// The account's rate limit, for the guard's own requests.
    pub pace: Option<crate::upstream::Pace>,
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
    /// What the guard did: `allowed`, `archived`, `paused`, `denied` or `refused`.
    pub action: &'static str,
}

/// Runs the pipeline in its own task and waits for its answer.
pub async fn run(state: Arc<GuardContext>, input: GuardInput) -> GuardResponse {
    let request_id = input.record.request_id.clone();
    let guard = state.tasks.enter();
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
            // Never leave the target claimed by a pipeline that is gone.
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
    state: Arc<GuardContext>,
    op: Op,
    target: Target,
    /// The target's key (`campaign:5/lead:7`): claimed, recorded, joined on.
    key: String,
    /// The target for people (`lead 7 of campaign 5`).
    what: String,
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

async fn pipeline(state: Arc<GuardContext>, input: GuardInput) -> GuardResponse {
    let guard_policy = state.policy();
    let actor = match &input.actor {
        Some(name) => name.clone(),
        None => guard_policy
            .actor_label(input.api_key_sha256.as_deref())
            .to_string(),
    };
    let op = input.op;
    let key = input.target.key(op);
    let mut record = input.record;
    record.operation = OperationKind::Guarded(op.name());
    record.campaign_id = input.target.campaign_id.map(|c| c as i64);
    record.target = Some(key.clone());
    record.actor_label = Some(actor.clone());
    let mut run = Run {
        state: state.clone(),
        op,
        what: input.target.describe(op),
        target: input.target,
        key,
        operation_id: None,
        snapshot_id: None,
        decision: None,
        record,
        started: Instant::now(),
        answer_by: tokio::time::Instant::now() + state.settings.answer_within,
        heartbeat: None,
        audit_id: None,
    };
    if let Err(refusal) = run.claim(&actor).await {
        return run.refuse(refusal).await;
    }

    let claimed_key = run.key.clone();
    let source = Source {
        upstream: &state.upstream,
        pool: &state.pool,
        target: &claimed_key,
        api_key_raw: input.api_key_raw.as_deref(),
        pace: input.pace.as_ref(),
        user_agent: input.user_agent.clone(),
        deadline: tokio::time::Instant::now() + state.settings.snapshot_budget,
        budget: state.settings.snapshot_budget,
    };

    let known = match run.facts(&source).await {
        Ok(FactsOutcome::Read(known)) => known,
        Ok(FactsOutcome::Relay(resp)) => return run.relay_not_found(resp).await,
        Err(refusal) => return run.refuse(refusal).await,
    };
    let facts = known.policy_facts(op, run.target.campaign_id, &actor);
    if let Some(rule) = guard_policy.policy.unknowable_deny(&facts) {
        let refusal = GuardError::FactMissing {
            target: run.what.clone(),
            rule: rule.to_string(),
        };
        return run.refuse(refusal.into()).await;
    }
    let decision = policy::evaluate(&guard_policy.policy, &facts);
    run.record_decision(&decision).await;
    run.decision = Some(decision.clone());
    if decision.action == Action::Deny {
        return run.deny().await;
    }

    if decision.snapshot_required {
        let key = input.api_key_raw.clone();
        let snapshot = run.snapshot(&known, key, input.pace.clone(), input.user_agent.clone());
        if let Err(refusal) = snapshot.await {
            return run.refuse(refusal).await;
        }
    }

    // The act phase gets its own time, whatever the snapshot used.
    let act = Source {
        deadline: tokio::time::Instant::now() + state.upstream.first_byte_timeout,
        budget: state.upstream.first_byte_timeout,
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
        Action::Pause => run.pause(&act).await,
        Action::Allow => {
            run.allow(&act, input.parts, input.body, decision.stop_first)
                .await
        }
        Action::Deny => run.deny().await,
    }
}

impl Run {
    /// Phase: single flight, the durable intent before anything else. A
    /// capture still running for the target (its client already answered)
    /// is joined: waited for, then claimed again.
    async fn claim(&mut self, actor: &str) -> Result<(), Refusal> {
        let state = self.state.clone();
        let new = NewOperation {
            kind: self.op.name(),
            campaign_id: self.target.campaign_id,
            target: &self.key,
            target_id: self.target.object_id(),
            request_id: &self.record.request_id,
            actor_fingerprint: self.record.actor_fingerprint.as_deref(),
            actor_label: actor,
        };
        // One more claim when the target was freed between our claim and our
        // look at the running captures.
        let mut claim_again = true;
        loop {
            match ledger::begin(&state.pool, &new).await {
                Ok(id) => {
                    self.operation_id = Some(id);
                    self.heartbeat = Some(Heartbeat::start(state.pool.clone(), id));
                    return Ok(());
                }
                Err(BeginError::InFlight) => {
                    if let Some(running) = state.captures.get(&self.key) {
                        let snapshot_id = running.snapshot_id;
                        match tokio::time::timeout_at(self.answer_by, running.settled()).await {
                            Ok(Ok(())) if tokio::time::Instant::now() < self.answer_by => continue,
                            Ok(Ok(())) => {}
                            Ok(Err(why)) => {
                                state.captures.forget(&self.key, snapshot_id);
                                self.snapshot_id = Some(snapshot_id);
                                let target = self.what.clone();
                                return Err(GuardError::JoinedCaptureFailed { target, why }.into());
                            }
                            Err(_) => {}
                        }
                        self.snapshot_id = Some(snapshot_id);
                        return Err(GuardError::SnapshotPending {
                            target: self.what.clone(),
                            snapshot_id,
                            waited: state.settings.answer_within,
                        }
                        .into());
                    }
                    if std::mem::take(&mut claim_again) {
                        continue;
                    }
                    return Err(GuardError::InFlight {
                        target: self.what.clone(),
                    }
                    .into());
                }
                Err(err @ (BeginError::Db(_) | BeginError::Recover(_))) => {
                    tracing::error!(error = %err, "cannot record a guarded operation");
                    return Err(GuardError::CannotClaim.into());
                }
            }
        }
    }
}

/// Refreshes an operation's heartbeat until dropped.
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Heartbeat {
    fn start(pool: crate::db::Pool, id: i64) -> Self {
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
