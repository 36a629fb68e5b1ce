//! `/v1/restores`: restores started, resumed and followed over the admin
//! API, as `safedelete restore` does on the command line. A dry run answers
//! with the plan and sends nothing; a real restore is run by the gateway in
//! the background (202 and where to follow it), with the key of a SmartLead
//! account the gateway holds, taking turns with the account's traffic. Its
//! calls are audited as done by the `admin token`. The smaller undos (a
//! snapshot of a lead, a webhook or sender accounts, and `unarchive`) are one
//! call each and are answered when done.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::api::{self, RawParams};
use super::error::ApiError;
use super::params::parse_id;
use super::AdminState;
use crate::audit::format_time;
use crate::identity::AccountKey;
use crate::restore::audit::Trail;
use crate::restore::call::Caller;
use crate::restore::ledger::{self, Progress, RestoreRow};
use crate::restore::replay::{Audit, Event};
use crate::restore::undo::Done;
use crate::restore::{self, run, LeadChoice, Plan, Undo};

/// Who the audit trail and the restore's record say ran it.
const OPERATOR: &str = "admin token";

/// `POST /v1/restores`: one of `snapshot_id`, `resume` or `unarchive`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    /// The snapshot to restore (or, for a smaller delete, to undo).
    pub snapshot_id: Option<i64>,
    /// A restore to continue where it stopped.
    pub resume: Option<i64>,
    /// An archived campaign to set back to PAUSED.
    pub unarchive: Option<i64>,
    /// The plan only; nothing is sent.
    #[serde(default)]
    pub dry_run: bool,
    /// The new campaign's name (default: the original's).
    pub name: Option<String>,
    /// `sendable` (default) or `all`.
    pub leads: Option<LeadChoice>,
    /// The SmartLead account whose key is used (default: `default`, or the
    /// only one).
    pub account: Option<String>,
}

/// What the body asks for.
enum Asked {
    Snapshot(i64),
    Resume(i64),
    Unarchive(i64),
}

impl StartBody {
    fn asked(&self) -> Result<Asked, ApiError> {
        let bad = |why: &str| Err(ApiError::RestoreRequest(why.to_string()));
        let asked = match (self.snapshot_id, self.resume, self.unarchive) {
            (Some(id), None, None) => Asked::Snapshot(id),
            (None, Some(id), None) => Asked::Resume(id),
            (None, None, Some(id)) => Asked::Unarchive(id),
            _ => return bad("give exactly one of `snapshot_id`, `resume` and `unarchive`"),
        };
        let id = match asked {
            Asked::Snapshot(id) | Asked::Resume(id) | Asked::Unarchive(id) => id,
        };
        if id <= 0 {
            return bad("ids are positive integers");
        }
        let campaign_only = [
            ("name", self.name.is_some()),
            ("leads", self.leads.is_some()),
        ];
        let given = campaign_only.iter().find(|(_, g)| *g).map(|(f, _)| *f);
        match (&asked, given) {
            (Asked::Resume(_), Some(field)) => {
                return bad(&format!(
                    "`{field}` does not apply to `resume`: a resumed restore keeps the name and leads it started with"
                ))
            }
            (Asked::Unarchive(_), Some(field)) => {
                return bad(&format!(
                    "`{field}` does not apply to `unarchive`, which only sets the campaign back to PAUSED"
                ))
            }
            (Asked::Resume(_), None) if self.dry_run => {
                return bad("`dry_run` needs a `snapshot_id` (a resumed restore has no plan of its own to show)")
            }
            _ => {}
        }
        if matches!(&self.name, Some(n) if n.trim().is_empty()) {
            return bad("`name` must not be empty (leave it out to keep the original's name)");
        }
        Ok(asked)
    }
}

/// The answer to `POST /v1/restores`: what was started (and where to follow
/// it), the plan of a dry run, or an undo and what it did.
#[derive(Default, Serialize)]
struct Answer<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    plan: Option<&'a Plan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    undo: Option<&'a Undo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    done: Option<&'a Done>,
}

/// The restores this gateway is running now, and what each is waiting for.
#[derive(Default)]
pub struct Running {
    live: Mutex<HashMap<i64, Option<Waiting>>>,
}

/// A wait for SmartLead's rate limit (or the account's, in the gateway).
#[derive(Debug, Clone, Serialize)]
pub struct Waiting {
    pub seconds: f64,
    pub why: String,
    pub since: String,
}

/// A restore this gateway runs; it stops counting as running when dropped.
struct Claim {
    running: Arc<Running>,
    id: i64,
}

impl Running {
    /// Claims `id`, unless this gateway runs it already.
    fn claim(self: &Arc<Self>, id: i64) -> Option<Claim> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if live.contains_key(&id) {
            return None;
        }
        live.insert(id, None);
        Some(Claim {
            running: self.clone(),
            id,
        })
    }

    /// `Some(waiting)` while this gateway runs `id`.
    fn get(&self, id: i64) -> Option<Option<Waiting>> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.get(&id).cloned()
    }

    fn waiting(&self, id: i64, waiting: Option<Waiting>) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = live.get_mut(&id) {
            *slot = waiting;
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut live = self.running.live.lock().unwrap_or_else(|p| p.into_inner());
        live.remove(&self.id);
    }
}

/// A restore as `GET /v1/restores/{id}` shows it.
#[derive(Debug, Serialize)]
pub struct Shown {
    #[serde(flatten)]
    pub restore: RestoreRow,
    /// Whether this gateway is running it now.
    pub active: bool,
    pub progress: Progress,
    /// What it waits for, while it waits.
    pub waiting: Option<Waiting>,
    /// Once done: what came back and what did not.
    pub report: Option<Box<RawValue>>,
}

async fn shown(state: &AdminState, id: i64) -> Result<Shown, ApiError> {
    let pool = &state.pool;
    let restore = ledger::get(pool, id)
        .await
        .map_err(ApiError::restore_db)?
        .ok_or(run::RunError::NoSuchRestore { id })?;
    let progress = ledger::progress(pool, id)
        .await
        .map_err(ApiError::restore_db)?;
    let report = ledger::report(pool, id)
        .await
        .map_err(ApiError::restore_db)?
        .and_then(|text| RawValue::from_string(text).ok());
    let live = state.restores.get(id);
    Ok(Shown {
        restore,
        active: live.is_some(),
        progress,
        waiting: live.flatten(),
        report,
    })
}

/// `GET /v1/restores/{id}`
pub async fn get(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<Shown>, ApiError> {
    let id = parse_id("id", &id)?;
    Ok(Json(shown(&state, id).await?))
}

/// `GET /v1/restores?limit=N`: the newest first.
pub async fn list(
    State(state): State<AdminState>,
    raw: RawParams,
) -> Result<Json<Vec<RestoreRow>>, ApiError> {
    let params = api::params(raw, &["limit"])?;
    let rows = ledger::list(&state.pool, params.limit()?)
        .await
        .map_err(ApiError::restore_db)?;
    Ok(Json(rows))
}

/// `POST /v1/restores`
pub async fn start(State(state): State<AdminState>, bytes: Bytes) -> Result<Response, ApiError> {
    let body: StartBody =
        serde_json::from_slice(&bytes).map_err(|source| ApiError::Body { source })?;
    match body.asked()? {
        Asked::Unarchive(campaign_id) => undo(&state, &body, Undo::unarchive(campaign_id)).await,
        Asked::Snapshot(snapshot_id) => {
            match restore::undo::from_snapshot(&state.pool, snapshot_id)
                .await
                .map_err(ApiError::Undo)?
            {
                Some(plan) => undo(&state, &body, plan).await,
                None => campaign(state, &body, snapshot_id).await,
            }
        }
        Asked::Resume(id) => {
            let account = account(&state, body.account.as_deref())?;
            let claim = state
                .restores
                .claim(id)
                .ok_or(ApiError::RestoreRunning { id })?;
            let job = run::reopen(&state.pool, id).await?;
            Ok(launch(state, job, account, claim).await)
        }
    }
}

/// A smaller delete undone (or a campaign unarchived) in the request.
async fn undo(state: &AdminState, body: &StartBody, undo: Undo) -> Result<Response, ApiError> {
    if body.name.is_some() || body.leads.is_some() {
        return Err(ApiError::RestoreRequest(
            "`name` and `leads` do not apply here: this snapshot is undone by one call that re-creates what was deleted".into(),
        ));
    }
    if body.dry_run {
        return Ok(Json(Answer {
            dry_run: true,
            undo: Some(&undo),
            ..Answer::default()
        })
        .into_response());
    }
    let account = account(state, body.account.as_deref())?;
    let caller = caller(state, &account, None);
    let audit = Audit {
        trail: Trail::Writer(&state.audit),
        operator: OPERATOR,
        account: Some(&account.name),
    };
    let done = undo.run(&caller, &audit).await.map_err(ApiError::Undo)?;
    Ok(Json(Answer {
        undo: Some(&undo),
        done: Some(&done),
        ..Answer::default()
    })
    .into_response())
}

/// A campaign snapshot: its plan for a dry run, else a new restore started.
async fn campaign(
    state: AdminState,
    body: &StartBody,
    snapshot_id: i64,
) -> Result<Response, ApiError> {
    let captured = restore::source::read(&state.pool, snapshot_id)
        .await
        .map_err(ApiError::Source)?;
    let name = body.name.as_deref().map(str::trim).map(str::to_string);
    let choice = body.leads.unwrap_or(LeadChoice::Sendable);
    let (captured, plan) = run::plan(captured, name, choice)
        .await
        .map_err(ApiError::Source)?;
    if body.dry_run {
        return Ok(Json(Answer {
            dry_run: true,
            plan: Some(&plan),
            ..Answer::default()
        })
        .into_response());
    }
    let account = account(&state, body.account.as_deref())?;
    let job = run::start(&state.pool, captured, plan, OPERATOR).await?;
    // A new id: no one runs it yet.
    let claim = state
        .restores
        .claim(job.id)
        .ok_or(ApiError::RestoreRunning { id: job.id })?;
    Ok(launch(state, job, account, claim).await)
}

/// Runs the restore in the background; answers 202 with where to follow it.
async fn launch(
    state: AdminState,
    job: run::Job,
    account: Arc<AccountKey>,
    claim: Claim,
) -> Response {
    let id = job.id;
    let location = format!("/v1/restores/{id}");
    let answer = Json(Answer {
        id: Some(id),
        state: Some("running"),
        location: Some(&location),
        plan: Some(&job.plan),
        ..Answer::default()
    })
    .into_response();
    let task = state.clone();
    tokio::spawn(async move {
        let claim = claim;
        let running = claim.running.clone();
        let caller = caller(&task, &account, Some((running.clone(), id)));
        let audit = Audit {
            trail: Trail::Writer(&task.audit),
            operator: OPERATOR,
            account: Some(&account.name),
        };
        // Any progress means the last wait is over.
        let mut progress = |event: Event| {
            tracing::debug!(restore = id, ?event, "restore progress");
            running.waiting(id, None);
        };
        match run::execute(&task.pool, &job, &caller, &audit, &mut progress).await {
            Ok(report) => tracing::info!(
                restore = id,
                new_campaign_id = report.new_campaign_id,
                leads_added = report.leads.added,
                "restore done"
            ),
            Err(err) => tracing::warn!(restore = id, error = %err, "restore stopped"),
        }
        drop(claim);
    });
    (StatusCode::ACCEPTED, [(header::LOCATION, location)], answer).into_response()
}

/// The account whose key the restore sends: the one named, else `default`
/// (or the only one).
fn account(state: &AdminState, name: Option<&str>) -> Result<Arc<AccountKey>, ApiError> {
    let accounts = state.identities.accounts();
    if accounts.is_empty() {
        return Err(ApiError::RestoreKey(
            "the gateway holds no SmartLead key to restore with: set SAFEDELETE_SMARTLEAD_API_KEY \
             (or add [[smartlead.accounts]]), or run `safedelete restore` with --api-key-env"
                .into(),
        ));
    }
    let found = match name {
        Some(name) => state.identities.account(name),
        None => state
            .default_account
            .as_deref()
            .and_then(|n| state.identities.account(n)),
    };
    found.cloned().ok_or_else(|| {
        let names: Vec<&str> = accounts.iter().map(|a| a.name.as_str()).collect();
        ApiError::RestoreRequest(match name {
            Some(name) => format!(
                "no SmartLead account {name:?}; the gateway holds: {}",
                names.join(", ")
            ),
            None => format!(
                "name the SmartLead account to restore with in `account` (the gateway holds: {})",
                names.join(", ")
            ),
        })
    })
}

/// What the restore sends with: the gateway's upstream client, the
/// account's key and its limiter; waits are shown on the restore.
fn caller(
    state: &AdminState,
    account: &Arc<AccountKey>,
    live: Option<(Arc<Running>, i64)>,
) -> Caller {
    Caller {
        upstream: state.upstream.clone(),
        key_query: account.api_key_query.clone(),
        on_wait: Box::new(move |wait: Duration, why: &str| {
            tracing::info!(seconds = wait.as_secs_f64(), why, "restore waits");
            if let Some((running, id)) = &live {
                running.waiting(
                    *id,
                    Some(Waiting {
                        seconds: wait.as_secs_f64(),
                        why: why.to_string(),
                        since: format_time(SystemTime::now()),
                    }),
                );
            }
        }),
        pace: account.pace(),
    }
}
