//! The guard pipeline for `DELETE /api/v1/campaigns/{id}`, one function per
//! phase, in the order that is the product: identify the actor, claim the
//! campaign (single flight), read the facts, decide, snapshot, act, record.
//! It runs as its own task, so a client that hangs up cannot stop it halfway.
//! The client waits at most `guard.answer_within`: a snapshot not complete by
//! then is refused with 503 `snapshot_pending` and captured on in the
//! background ([`super::capture`]), where a retry joins it; a retry after it
//! completed uses it while it is recent and the campaign has not changed.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::capture::{self, Job};
use super::error::GuardError;
use super::operations::{self, BeginError, DecisionRow, NewOperation, State};
use super::policy::{self, Action, Decision, Facts};
use crate::audit::{AuditRecord, ErrorKind, OperationKind};
use crate::proxy::client::RequestBody;
use crate::proxy::ProxyState;
use crate::snapshot::fetch::Source;
use crate::snapshot::store::{self, PartKind};

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
            if let Err(e) = operations::fail_by_request(
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
    record.operation = OperationKind::DeleteCampaign;
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
        kind: OperationKind::DeleteCampaign.as_str(),
        campaign_id: input.campaign_id,
        request_id: &run.record.request_id,
        actor_fingerprint: run.record.actor_fingerprint.as_deref(),
        actor_label: &actor,
    };
    // One more claim when the campaign was freed between our claim and our
    // look at the running captures.
    let mut claim_again = true;
    loop {
        match operations::begin(&state.pool, &new).await {
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
            campaign_id: input.campaign_id,
            name: facts.name.as_deref(),
            status: facts.status.as_deref(),
            client_id: facts.client_id,
            actor: &actor,
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
        Action::Deny => run.deny().await,
    }
}

/// Refreshes an operation's heartbeat until dropped.
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Heartbeat {
    fn start(pool: sqlx::SqlitePool, id: i64) -> Self {
        Heartbeat(tokio::spawn(async move {
            loop {
                tokio::time::sleep(operations::HEARTBEAT_EVERY).await;
                if let Err(err) = operations::heartbeat(&pool, id).await {
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

/// What the campaign read told us.
struct CampaignFacts {
    raw: Bytes,
    name: Option<String>,
    status: Option<String>,
    client_id: Option<u64>,
    /// `client_id` was present (a number, or null for no client).
    client_id_known: bool,
    /// When SmartLead last changed the campaign: a snapshot of the same
    /// `updated_at` holds the same campaign.
    updated_at: Option<String>,
}

impl CampaignFacts {
    /// The enforced deny rule that needs a fact SmartLead did not give: the
    /// guard cannot tell whether it applies, so it must not guess "no".
    fn unknowable_deny<'p>(&self, policy: &'p policy::Policy) -> Option<&'p str> {
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

enum FactsOutcome {
    Read(CampaignFacts),
    Relay(GuardResponse),
}

impl Run {
    async fn set_state(&self, state: State) {
        if let Some(id) = self.operation_id {
            if let Err(err) = operations::set_state(&self.state.pool, id, state).await {
                tracing::error!(error = %err, operation_id = id, "cannot update operation state");
            }
        }
    }

    async fn try_set_state(&self, state: State) -> Result<(), sqlx::Error> {
        match self.operation_id {
            Some(id) => operations::set_state(&self.state.pool, id, state).await,
            None => Ok(()),
        }
    }

    /// Ends the operation (retried: an unfinished row keeps the campaign claimed).
    async fn finish_operation(
        &self,
        state: State,
        upstream_status: Option<u16>,
        error: Option<&str>,
    ) {
        let Some(id) = self.operation_id else { return };
        operations::finish_retrying(&self.state.pool, id, state, upstream_status, error).await;
    }

    async fn record_decision(&self, d: &Decision) {
        let Some(id) = self.operation_id else { return };
        let would = d.would_action();
        let row = DecisionRow {
            action: d.action.as_str(),
            would_action: would.as_deref(),
            rule: d.rule.as_deref(),
            policy_revision: &d.revision,
        };
        if let Err(err) = operations::record_decision(&self.state.pool, id, &row).await {
            tracing::error!(error = %err, operation_id = id, "cannot record the decision");
        }
    }

    /// Phase: read the campaign (`GET /campaigns/{id}`) with the caller's key.
    async fn facts(&mut self, source: &Source<'_>) -> Result<FactsOutcome, Refusal> {
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

    /// Phase: capture every part; the snapshot is complete only when all are
    /// stored. A recent complete snapshot of the same campaign version is
    /// used instead. The capture runs in its own task: if it is not complete
    /// by `answer_by`, the client is refused (503 `snapshot_pending`) and it
    /// goes on in the background, leaving this operation to end there.
    async fn snapshot(
        &mut self,
        facts: &CampaignFacts,
        api_key_raw: Option<String>,
        user_agent: Option<HeaderValue>,
    ) -> Result<(), Refusal> {
        self.set_state(State::Snapshotting).await;
        let pool = &self.state.pool;
        if let Some(id) = self.reusable(facts).await {
            tracing::info!(
                campaign_id = self.campaign_id,
                snapshot_id = id,
                "using a recent snapshot of the unchanged campaign"
            );
            self.use_snapshot(id).await;
            return Ok(());
        }
        let id = store::create_snapshot(pool, self.operation_id, self.campaign_id as i64)
            .await
            .map_err(|source| GuardError::SnapshotStart { source })?;
        if let Some(version) = &facts.updated_at {
            // Without it the snapshot is never reused: no harm beyond a new capture.
            if let Err(err) = store::set_campaign_version(pool, id, version).await {
                tracing::warn!(error = %err, snapshot_id = id, "cannot record the campaign version");
            }
        }
        self.use_snapshot(id).await;
        let mut task = capture::spawn(Job {
            state: self.state.clone(),
            campaign_id: self.campaign_id,
            snapshot_id: id,
            api_key_raw,
            user_agent,
            campaign: facts.raw.clone(),
        });
        let guard = &self.state.guard;
        // A capture that cannot outlast the wait (answer_within is the whole
        // budget) is simply waited for: the client then gets its verdict.
        let wait = if guard.answer_within >= guard.snapshot_budget {
            Ok((&mut task).await)
        } else {
            tokio::time::timeout_at(self.answer_by, &mut task).await
        };
        let joined = match wait {
            Ok(joined) => joined,
            Err(_) => {
                self.state.captures.continue_in_background(
                    self.state.clone(),
                    self.campaign_id,
                    id,
                    self.operation_id,
                    task,
                    self.heartbeat.take(),
                );
                let waited = self.state.guard.answer_within;
                return Err(GuardError::SnapshotPending {
                    campaign_id: self.campaign_id,
                    snapshot_id: id,
                    waited,
                }
                .into());
            }
        };
        match capture::outcome(joined, &self.state, id).await {
            Ok(()) => Ok(()),
            Err(source) => Err(GuardError::Capture {
                campaign_id: self.campaign_id,
                source,
            }
            .into()),
        }
    }

    /// A complete snapshot of this campaign taken within
    /// `guard.reuse_snapshot_within` whose campaign `updated_at` is the one
    /// just read. None when SmartLead gave no `updated_at`: then the guard
    /// cannot tell the campaign did not change.
    async fn reusable(&self, facts: &CampaignFacts) -> Option<i64> {
        let within = self.state.guard.reuse_snapshot_within;
        let version = facts.updated_at.as_deref()?;
        if within.is_zero() {
            return None;
        }
        let since = crate::audit::format_time(std::time::SystemTime::now().checked_sub(within)?);
        match store::find_reusable(&self.state.pool, self.campaign_id as i64, version, &since).await
        {
            Ok(found) => found,
            Err(err) => {
                tracing::warn!(error = %err, "cannot look for a reusable snapshot; capturing again");
                None
            }
        }
    }

    /// Makes `id` this operation's snapshot (record, operation row, headers).
    async fn use_snapshot(&mut self, id: i64) {
        self.snapshot_id = Some(id);
        self.record.snapshot_id = Some(id);
        if let Some(op) = self.operation_id {
            let _ = operations::set_snapshot(&self.state.pool, op, id).await;
        }
    }

    /// Phase: archive instead of deleting, trying each configured way in order.
    async fn archive(mut self, source: &Source<'_>) -> GuardResponse {
        let mut failures = Vec::new();
        for attempt in &self.state.guard.archive_attempts {
            let body = Bytes::from(json!({ "status": attempt.status }).to_string());
            let sent = source
                .send_retrying(
                    PartKind::Campaign,
                    attempt.method.clone(),
                    "/status",
                    Some(body),
                )
                .await;
            match sent {
                Ok(resp) if resp.status().is_success() => {
                    let status = resp.status().as_u16();
                    self.record.upstream_status = Some(status);
                    self.finish_operation(State::Done, Some(status), None).await;
                    let message = format!(
                        "Campaign archived instead of deleted (policy {})",
                        self.rule_label()
                    );
                    return self
                        .answer(StatusCode::OK, "archived", None, |extra| {
                            json!({"ok": true, "success": true, "message": message, "safedelete": extra})
                        })
                        .await;
                }
                Ok(resp) => {
                    self.record.upstream_status = Some(resp.status().as_u16());
                    failures.push(format!(
                        "{} {} -> {}",
                        attempt.method,
                        attempt.status,
                        resp.status()
                    ));
                }
                Err(e) => failures.push(format!("{} {} -> {e}", attempt.method, attempt.status)),
            }
        }
        let refusal = Refusal {
            error: GuardError::ArchiveFailed {
                attempts: failures.join("; "),
            },
            upstream_status: self.record.upstream_status,
        };
        self.refuse(refusal).await
    }

    /// Phase: forward the client's DELETE (optionally stopping the campaign first).
    async fn allow(
        mut self,
        source: &Source<'_>,
        mut parts: http::request::Parts,
        stop_first: bool,
    ) -> GuardResponse {
        if stop_first {
            let body = Bytes::from(r#"{"status":"STOPPED"}"#);
            let sent = source
                .send_retrying(PartKind::Campaign, Method::POST, "/status", Some(body))
                .await;
            let stopped = match sent {
                Ok(resp) if resp.status().is_success() => Ok(()),
                Ok(resp) => Err(resp.status().to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(why) = stopped {
                return self.refuse(GuardError::StopFailed { why }.into()).await;
            }
        }
        parts.headers.remove(header::CONTENT_LENGTH);
        let req = Request::from_parts(parts, RequestBody::Empty);
        let state = self.state.clone();
        let sent = tokio::time::timeout(state.first_byte_timeout, state.client.request(req)).await;
        match sent {
            Ok(Ok(resp)) => {
                let status = resp.status();
                self.record.upstream_status = Some(status.as_u16());
                let final_state = if status.is_success() {
                    State::Done
                } else {
                    State::UpstreamFailed
                };
                self.finish_operation(final_state, Some(status.as_u16()), None)
                    .await;
                let (mut parts, body) = resp.into_parts();
                crate::proxy::headers::strip_hop_by_hop(&mut parts.headers);
                // SmartLead's answer to a delete is small: read it whole so
                // the record says what the client got.
                let body = match read_limited(body).await {
                    Ok(bytes) => bytes,
                    Err(()) => {
                        self.record.error_kind = Some(ErrorKind::UpstreamBodyError);
                        parts.headers.remove(header::CONTENT_LENGTH);
                        Bytes::new()
                    }
                };
                self.record.status = status.as_u16();
                self.record.bytes_out = body.len() as u64;
                let audit_id = self.write_audit("allowed", None).await;
                add_guard_headers(&mut parts.headers, "allowed", audit_id, self.snapshot_id);
                GuardResponse {
                    status,
                    headers: parts.headers,
                    body,
                    action: "allowed",
                }
            }
            Ok(Err(err)) if err.is_connect() => self.refuse(GuardError::DeleteConnect.into()).await,
            Ok(Err(_)) => self.refuse(GuardError::DeleteReset.into()).await,
            Err(_) => self.refuse(GuardError::DeleteTimeout.into()).await,
        }
    }

    async fn deny(mut self) -> GuardResponse {
        self.finish_operation(State::Denied, None, None).await;
        self.record.error_kind = Some(ErrorKind::PolicyDenied);
        let rule = self.rule_label();
        let message = format!(
            "Deleting campaign {} is denied by policy {rule}. Nothing was deleted.",
            self.campaign_id
        );
        self.answer(StatusCode::FORBIDDEN, "denied", Some(ErrorKind::PolicyDenied), |extra| {
            json!({"ok": false, "success": false, "error": message, "message": message, "safedelete": extra})
        })
        .await
    }

    async fn refuse(mut self, r: Refusal) -> GuardResponse {
        let e = &r.error;
        let text = e.to_string();
        if !e.leaves_operation() {
            self.finish_operation(e.state(), r.upstream_status, Some(&text))
                .await;
        }
        if r.upstream_status.is_some() {
            self.record.upstream_status = r.upstream_status;
        }
        let kind = e.kind();
        tracing::warn!(campaign_id = self.campaign_id, error_kind = kind.as_str(), message = %text, "guarded delete refused");
        let message = format!("safedelete: {text}");
        let mut resp = self
            .answer(e.status(), "refused", Some(kind), |extra| {
                json!({"ok": false, "success": false, "error": message, "error_kind": kind.as_str(), "message": message, "safedelete": extra})
            })
            .await;
        if r.error.retry_later() {
            resp.headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        if r.error.leaves_operation() {
            // This request has its record: should the gateway stop before the
            // background capture ends, start-up must not write a second one.
            if let (Some(op), Some(audit_id)) = (self.operation_id, self.audit_id) {
                if let Err(err) = operations::set_audit_id(&self.state.pool, op, audit_id).await {
                    tracing::warn!(error = %err, operation_id = op, "cannot link the operation to its audit record");
                }
            }
        }
        resp
    }

    async fn relay_not_found(mut self, mut resp: GuardResponse) -> GuardResponse {
        self.finish_operation(State::NotFound, Some(resp.status.as_u16()), None)
            .await;
        self.record.status = resp.status.as_u16();
        self.record.bytes_out = resp.body.len() as u64;
        let audit_id = self.write_audit("refused", None).await;
        add_guard_headers(&mut resp.headers, "refused", audit_id, None);
        resp
    }

    fn rule_label(&self) -> String {
        match self.decision.as_ref().and_then(|d| d.rule.as_deref()) {
            Some(rule) => format!("rule `{rule}`"),
            None => "default".to_string(),
        }
    }

    /// Records and builds a JSON answer with the `safedelete` block.
    async fn answer(
        &mut self,
        status: StatusCode,
        action: &'static str,
        error: Option<ErrorKind>,
        body: impl FnOnce(Value) -> Value,
    ) -> GuardResponse {
        self.record.status = status.as_u16();
        let d = self.decision.as_ref();
        // The audit id is in the `x-safedelete-audit-id` header: the body
        // is complete before the record (which counts its bytes) is written.
        let extra = json!({
            "action": action,
            "campaign_id": self.campaign_id,
            "rule": d.and_then(|d| d.rule.clone()),
            "would_action": d.and_then(|d| d.would_action()),
            "policy_revision": d.map(|d| d.revision.clone()),
            "operation_id": self.operation_id,
            "snapshot_id": self.snapshot_id,
        });
        let body = Bytes::from(body(extra).to_string());
        self.record.bytes_out = body.len() as u64;
        let audit_id = self.write_audit(action, error).await;
        let mut headers = json_headers(action);
        add_guard_headers(&mut headers, action, audit_id, self.snapshot_id);
        GuardResponse {
            status,
            headers,
            body,
            action,
        }
    }

    /// Writes this request's audit record now, durably, and returns its id.
    async fn write_audit(&mut self, action: &'static str, error: Option<ErrorKind>) -> Option<i64> {
        let r = &mut self.record;
        r.action = Some(action);
        if error.is_some() {
            r.error_kind = error;
        }
        if let Some(d) = &self.decision {
            r.rule = d.rule.clone();
            r.would_action = d.would_action();
            r.policy_revision = Some(d.revision.clone());
        }
        r.snapshot_id = self.snapshot_id;
        r.duration = self.started.elapsed();
        match self.state.audit.write_durable(r.clone()).await {
            Ok(id) => {
                self.audit_id = Some(id);
                Some(id)
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot write the audit record of a guarded request");
                None
            }
        }
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
