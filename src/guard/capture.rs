//! Snapshot captures that may outlive the request that started them. A
//! client waits at most `guard.answer_within` for its answer; a capture still
//! running then goes on in the background (within `guard.snapshot_budget`),
//! listed here by campaign, so that a retry of the same delete on this
//! gateway joins it instead of getting 409. The request that was answered
//! never acts: when its capture ends, its operation ends `snapshot_pending`,
//! and the snapshot's own state says whether the data is complete.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::HeaderValue;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle};

use serde_json::Value;

use super::classify::Target;
use super::ledger::{self, State};
use super::operations::{How, Op};
use crate::guard::context::GuardContext;
use crate::snapshot::fetch::{FetchError, Source};
use crate::snapshot::store::{self, PartKind, StoreError};

/// Why a capture did not produce a complete snapshot.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("could not complete the snapshot: {0}")]
    Complete(#[source] StoreError),
    #[error("the capture task failed: {0}")]
    Task(#[source] JoinError),
}

impl CaptureError {
    /// True when the database, not SmartLead, failed.
    pub fn is_storage(&self) -> bool {
        match self {
            CaptureError::Fetch(e) => e.is_storage(),
            CaptureError::Complete(_) => true,
            CaptureError::Task(_) => false,
        }
    }
}

/// What a capture needs, owned, so it can run on after its request is answered.
pub struct Job {
    pub state: Arc<GuardContext>,
    pub op: Op,
    pub target: Target,
    /// The target's key, for logs.
    pub key: String,
    pub snapshot_id: i64,
    /// The `api_key` exactly as the client sent it (still encoded).
    pub api_key_raw: Option<String>,
    /// The account's rate limit (gateway keys).
    pub pace: Option<crate::upstream::Pace>,
    pub user_agent: Option<HeaderValue>,
    /// What the facts phase read: each part, its content type and bytes.
    pub facts: Vec<(PartKind, Option<String>, Bytes)>,
}

/// How a background capture ended: `Ok` with a complete snapshot, or why not.
pub type Settled = Result<(), String>;

/// A running capture, as a retry sees it.
#[derive(Clone)]
pub struct Running {
    pub snapshot_id: i64,
    settled: watch::Receiver<Option<Settled>>,
}

impl Running {
    /// Resolves once the capture has ended and its operation released the
    /// campaign, with how it ended.
    pub async fn settled(mut self) -> Settled {
        match self.settled.wait_for(Option::is_some).await {
            Ok(done) => done.clone().unwrap_or(Ok(())),
            // The task that would have said is gone (it panicked).
            Err(_) => Err("the background capture stopped before it ended".to_string()),
        }
    }
}

/// Captures running in the background on this gateway, by target key.
#[derive(Default)]
pub struct Captures {
    running: Mutex<HashMap<String, Running>>,
}

impl Captures {
    /// The background capture of the target `key`, if one runs here.
    pub fn get(&self, key: &str) -> Option<Running> {
        self.lock().get(key).cloned()
    }

    /// Forgets a capture whose task is gone without saying how it ended.
    pub fn forget(&self, key: &str, snapshot_id: i64) {
        let mut running = self.lock();
        if running
            .get(key)
            .is_some_and(|r| r.snapshot_id == snapshot_id)
        {
            running.remove(key);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        // Inserts and removes cannot leave the map half-updated.
        crate::sync::lock(&self.running)
    }

    /// Hands a capture whose client was answered to the background: listed
    /// for joiners until it ends; then its operation ends `snapshot_pending`
    /// (releasing the claim), and only then are joiners woken. `keep` (the
    /// operation's heartbeat) lives until then.
    pub fn continue_in_background(
        self: &Arc<Self>,
        state: Arc<GuardContext>,
        key: String,
        snapshot_id: i64,
        operation_id: Option<i64>,
        handle: JoinHandle<Result<(), CaptureError>>,
        keep: impl Send + 'static,
    ) {
        let (tx, rx) = watch::channel(None);
        self.lock().insert(
            key.clone(),
            Running {
                snapshot_id,
                settled: rx,
            },
        );
        let captures = self.clone();
        let guard = state.tasks.enter();
        let background = state.background.clone();
        background.spawn(async move {
            let outcome = outcome(handle.await, &state, snapshot_id).await;
            let error = match &outcome {
                Ok(()) => format!(
                    "answered 503 snapshot_pending before the capture ended; snapshot {snapshot_id} then completed"
                ),
                Err(e) => format!(
                    "answered 503 snapshot_pending before the capture ended; the capture then failed: {e}"
                ),
            };
            match &outcome {
                Ok(()) => {
                    tracing::info!(target = %key, snapshot_id, "background snapshot complete")
                }
                Err(e) => {
                    tracing::warn!(target = %key, snapshot_id, error = %e, "background snapshot failed")
                }
            }
            if let Some(id) = operation_id {
                ledger::finish_retrying(&state.pool, id, State::SnapshotPending, None, Some(&error))
                    .await;
            }
            drop(keep);
            captures.forget(&key, snapshot_id);
            let _ = tx.send(Some(outcome.map_err(|e| e.to_string())));
            drop(guard);
        });
    }
}

/// Starts capturing every part of the campaign into `job.snapshot_id`, on
/// the main runtime, counted as a guard task so shutdown waits for it.
pub fn spawn(job: Job) -> JoinHandle<Result<(), CaptureError>> {
    let guard = job.state.tasks.enter();
    let background = job.state.background.clone();
    background.spawn(async move {
        let result = capture(&job).await;
        drop(guard);
        result
    })
}

/// What a finished capture task means for its snapshot. A task that died
/// leaves its snapshot `in_progress`: mark it failed, never complete.
pub async fn outcome(
    joined: Result<Result<(), CaptureError>, JoinError>,
    state: &GuardContext,
    snapshot_id: i64,
) -> Result<(), CaptureError> {
    match joined {
        Ok(result) => result,
        Err(err) => {
            let err = CaptureError::Task(err);
            let _ = store::fail_snapshot(&state.pool, snapshot_id, &err.to_string()).await;
            Err(err)
        }
    }
}

/// Captures every part of the plan; the snapshot is complete only when all
/// are stored. Settles the snapshot row either way.
async fn capture(job: &Job) -> Result<(), CaptureError> {
    let state = &job.state;
    let id = job.snapshot_id;
    let source = Source {
        upstream: &state.upstream,
        pool: &state.pool,
        target: &job.key,
        api_key_raw: job.api_key_raw.as_deref(),
        pace: job.pace.as_ref(),
        user_agent: job.user_agent.clone(),
        deadline: tokio::time::Instant::now() + state.settings.snapshot_budget,
        budget: state.settings.snapshot_budget,
    };
    let parts = async {
        for (kind, content_type, bytes) in &job.facts {
            let bytes = without_secrets(bytes);
            source
                .store_bytes(id, *kind, content_type.as_deref(), &bytes)
                .await?;
        }
        // Every part is read at once: the small ones while the export
        // streams, so a capture takes about as long as its largest part. The
        // first failure ends the capture (the other parts are dropped and
        // settled with the snapshot).
        let steps = job.op.spec().capture.iter().map(|step| {
            let source = &source;
            async move {
                let path = job.target.render(step.path);
                let bytes = match step.how {
                    How::Stream => source.capture(id, step.part, &path).await?.bytes,
                    How::Redacted => redacted(source, id, step.part, &path).await?,
                    How::Paged => paged(source, id, step.part, &path).await?,
                    How::AccountCampaigns => {
                        let account = job.target.id.unwrap_or_default();
                        account_campaigns(source, id, step.part, account).await?
                    }
                };
                tracing::info!(target = %job.key, snapshot_id = id, kind = %step.part, bytes, "snapshot part stored");
                Ok::<(), FetchError>(())
            }
        });
        futures_util::future::try_join_all(steps).await?;
        Ok::<(), FetchError>(())
    }
    .await;
    if let Err(err) = parts {
        let _ = store::fail_snapshot(&state.pool, id, &err.to_string()).await;
        return Err(err.into());
    }
    if let Err(err) = store::complete_snapshot(&state.pool, id).await {
        let _ = store::fail_snapshot(&state.pool, id, &err.to_string()).await;
        return Err(CaptureError::Complete(err));
    }
    Ok(())
}

/// The most of one JSON answer a capture step reads into memory.
const JSON_MAX_BYTES: usize = 16 * 1024 * 1024;

/// GETs a JSON answer whole; anything but 2xx JSON is an error.
async fn json(source: &Source<'_>, kind: PartKind, path: &str) -> Result<Value, FetchError> {
    let whole = source.get_whole(kind, path, JSON_MAX_BYTES).await?;
    if !whole.status.is_success() {
        return Err(FetchError::Status {
            kind,
            status: whole.status,
        });
    }
    serde_json::from_slice(&whole.body).map_err(|_| FetchError::NotJson { kind })
}

/// A JSON answer as stored: as SmartLead sent it, unless it holds a field
/// whose name says it is a secret (an account's `smtp_password`, a key),
/// which is replaced first.
fn without_secrets(bytes: &Bytes) -> std::borrow::Cow<'_, [u8]> {
    let Ok(mut value) = serde_json::from_slice::<Value>(bytes) else {
        return std::borrow::Cow::Borrowed(bytes);
    };
    let sent = value.clone();
    crate::audit::redact::redact_json_secrets(&mut value);
    if value == sent {
        return std::borrow::Cow::Borrowed(bytes);
    }
    std::borrow::Cow::Owned(serde_json::to_vec(&value).expect("a JSON value always serializes"))
}

/// Stores a JSON document the capture built as the `kind` part.
async fn store_json(
    source: &Source<'_>,
    id: i64,
    kind: PartKind,
    value: &impl serde::Serialize,
) -> Result<u64, FetchError> {
    let bytes = serde_json::to_vec(value).expect("a JSON value always serializes");
    let stored = source
        .store_bytes(id, kind, Some("application/json"), &bytes)
        .await?;
    Ok(stored.bytes)
}

/// One GET whose secret fields are replaced before it is stored.
async fn redacted(
    source: &Source<'_>,
    id: i64,
    kind: PartKind,
    path: &str,
) -> Result<u64, FetchError> {
    let mut value = json(source, kind, path).await?;
    crate::audit::redact::redact_json_secrets(&mut value);
    store_json(source, id, kind, &value).await
}

/// Page size of paged reads (SmartLead's largest).
const PAGE: usize = 100;

/// Every `offset`/`limit` page of `{"data": [..]}`, stored as one JSON array.
async fn paged(
    source: &Source<'_>,
    id: i64,
    kind: PartKind,
    path: &str,
) -> Result<u64, FetchError> {
    let mut items = Vec::new();
    let mut offset = 0usize;
    loop {
        let page = json(
            source,
            kind,
            &format!("{path}?offset={offset}&limit={PAGE}"),
        )
        .await?;
        let data = match page {
            Value::Array(a) => a,
            mut other => match other.get_mut("data").map(Value::take) {
                Some(Value::Array(a)) => a,
                _ => return Err(FetchError::NotJson { kind }),
            },
        };
        let n = data.len();
        items.extend(data);
        if n < PAGE {
            break;
        }
        offset += n;
    }
    store_json(source, id, kind, &items).await
}

/// The campaigns whose sender accounts include `account`: SmartLead has no
/// call for it, so every campaign's `/email-accounts` is read.
async fn account_campaigns(
    source: &Source<'_>,
    id: i64,
    kind: PartKind,
    account: u64,
) -> Result<u64, FetchError> {
    let campaigns = json(source, kind, "/campaigns").await?;
    let mut using = Vec::new();
    for campaign in campaigns.as_array().map_or(&[][..], Vec::as_slice) {
        let Some(campaign_id) = campaign.get("id").and_then(Value::as_u64) else {
            continue;
        };
        let accounts = json(
            source,
            kind,
            &format!("/campaigns/{campaign_id}/email-accounts"),
        )
        .await?;
        let uses = accounts.as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x.get("id").and_then(Value::as_u64) == Some(account))
        });
        if uses {
            using.push(serde_json::json!({
                "id": campaign_id,
                "name": campaign.get("name"),
                "status": campaign.get("status"),
            }));
        }
    }
    store_json(source, id, kind, &using).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fact_answers_are_stored_as_sent_unless_they_hold_a_secret() {
        let plain = Bytes::from_static(br#"{"id": 9,  "from_email": "a@b.example"}"#);
        assert_eq!(&*without_secrets(&plain), &plain[..]);
        let account = Bytes::from_static(
            br#"{"id":9,"smtp_password":"hunter2","imap":{"password":"p"},"tags":[{"api_key":"k"}]}"#,
        );
        let stored = String::from_utf8(without_secrets(&account).into_owned()).unwrap();
        for secret in ["hunter2", "\"p\"", "\"k\""] {
            assert!(!stored.contains(secret), "{stored}");
        }
        assert!(
            stored.contains(r#""smtp_password":"[REDACTED]""#),
            "{stored}"
        );
        let csv = Bytes::from_static(b"id,password\n1,x\n");
        assert_eq!(&*without_secrets(&csv), &csv[..]);
    }
}
