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

use super::ledger::{self, State};
use crate::proxy::ProxyState;
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
    pub state: Arc<ProxyState>,
    pub campaign_id: u64,
    pub snapshot_id: i64,
    /// The `api_key` exactly as the client sent it (still encoded).
    pub api_key_raw: Option<String>,
    pub user_agent: Option<HeaderValue>,
    /// The campaign object the facts phase read.
    pub campaign: Bytes,
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

/// Captures running in the background on this gateway, by campaign.
#[derive(Default)]
pub struct Captures {
    running: Mutex<HashMap<u64, Running>>,
}

impl Captures {
    /// The background capture of `campaign_id`, if one runs here.
    pub fn get(&self, campaign_id: u64) -> Option<Running> {
        self.lock().get(&campaign_id).cloned()
    }

    /// Forgets a capture whose task is gone without saying how it ended.
    pub fn forget(&self, campaign_id: u64, snapshot_id: i64) {
        let mut running = self.lock();
        if running
            .get(&campaign_id)
            .is_some_and(|r| r.snapshot_id == snapshot_id)
        {
            running.remove(&campaign_id);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Running>> {
        // Inserts and removes cannot leave the map half-updated.
        crate::sync::lock(&self.running)
    }

    /// Hands a capture whose client was answered to the background: listed
    /// for joiners until it ends; then its operation ends `snapshot_pending`
    /// (releasing the claim), and only then are joiners woken. `keep` (the
    /// operation's heartbeat) lives until then.
    pub fn continue_in_background(
        self: &Arc<Self>,
        state: Arc<ProxyState>,
        campaign_id: u64,
        snapshot_id: i64,
        operation_id: Option<i64>,
        handle: JoinHandle<Result<(), CaptureError>>,
        keep: impl Send + 'static,
    ) {
        let (tx, rx) = watch::channel(None);
        self.lock().insert(
            campaign_id,
            Running {
                snapshot_id,
                settled: rx,
            },
        );
        let captures = self.clone();
        let guard = state.guard_tasks.enter();
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
                    tracing::info!(campaign_id, snapshot_id, "background snapshot complete")
                }
                Err(e) => {
                    tracing::warn!(campaign_id, snapshot_id, error = %e, "background snapshot failed")
                }
            }
            if let Some(id) = operation_id {
                ledger::finish_retrying(&state.pool, id, State::SnapshotPending, None, Some(&error))
                    .await;
            }
            drop(keep);
            captures.forget(campaign_id, snapshot_id);
            let _ = tx.send(Some(outcome.map_err(|e| e.to_string())));
            drop(guard);
        });
    }
}

/// Starts capturing every part of the campaign into `job.snapshot_id`, on
/// the main runtime, counted as a guard task so shutdown waits for it.
pub fn spawn(job: Job) -> JoinHandle<Result<(), CaptureError>> {
    let guard = job.state.guard_tasks.enter();
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
    state: &ProxyState,
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

/// Captures every part; the snapshot is complete only when all are stored.
/// Settles the snapshot row either way.
async fn capture(job: &Job) -> Result<(), CaptureError> {
    let state = &job.state;
    let id = job.snapshot_id;
    let source = Source {
        state,
        pool: &state.pool,
        campaign_id: job.campaign_id,
        api_key_raw: job.api_key_raw.as_deref(),
        user_agent: job.user_agent.clone(),
        deadline: tokio::time::Instant::now() + state.guard.snapshot_budget,
        budget: state.guard.snapshot_budget,
    };
    let parts = async {
        source
            .store_bytes(id, PartKind::Campaign, Some("application/json"), &job.campaign)
            .await?;
        for kind in [
            PartKind::LeadsCsv,
            PartKind::Sequences,
            PartKind::EmailAccounts,
            PartKind::Webhooks,
            PartKind::Analytics,
        ] {
            let part = source.capture(id, kind).await?;
            tracing::info!(campaign_id = job.campaign_id, snapshot_id = id, %kind, bytes = part.bytes, "snapshot part stored");
        }
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
