//! Phase: capture what the call would destroy (the operation's capture
//! plan), or use a recent snapshot of the unchanged campaign; the client is
//! answered within `guard.answer_within`.

use http::header::HeaderValue;

use super::*;
use crate::snapshot::store::NewSnapshot;

impl Run {
    /// Phase: capture every part of the plan; the snapshot is complete only
    /// when all are stored. A recent complete snapshot of the same campaign
    /// version is used instead. The capture runs in its own task: if it is
    /// not complete by `answer_by`, the client is refused (503
    /// `snapshot_pending`) and it goes on in the background, leaving this
    /// operation to end there.
    pub(super) async fn snapshot(
        &mut self,
        known: &Known,
        api_key_raw: Option<String>,
        pace: Option<crate::upstream::Pace>,
        user_agent: Option<HeaderValue>,
    ) -> Result<(), Refusal> {
        self.set_state(State::Snapshotting).await;
        let pool = &self.state.pool;
        if let Some(id) = self.reusable(known).await {
            tracing::info!(
                target = %self.key,
                snapshot_id = id,
                "using a recent snapshot of the unchanged campaign"
            );
            self.use_snapshot(id).await;
            return Ok(());
        }
        let parts = self.op.parts();
        let new = NewSnapshot {
            operation_id: self.operation_id,
            operation: self.op.name(),
            campaign_id: self.target.campaign_id.map(|c| c as i64),
            target: &self.key,
            target_id: self.target.object_id().map(|c| c as i64),
            parts: &parts,
        };
        let id = store::create_snapshot(pool, &new)
            .await
            .map_err(|source| GuardError::SnapshotStart { source })?;
        if let Some(version) = &known.updated_at {
            // Without it the snapshot is never reused: no harm beyond a new capture.
            if let Err(err) = store::set_campaign_version(pool, id, version).await {
                tracing::warn!(error = %err, snapshot_id = id, "cannot record the campaign version");
            }
        }
        self.use_snapshot(id).await;
        let mut task = capture::spawn(Job {
            state: self.state.clone(),
            op: self.op,
            target: self.target.clone(),
            key: self.key.clone(),
            snapshot_id: id,
            api_key_raw,
            pace,
            user_agent,
            facts: known
                .reads
                .iter()
                .map(|(read, whole)| (read.part(), whole.content_type.clone(), whole.body.clone()))
                .collect(),
        });
        let guard = &self.state.settings;
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
                    self.key.clone(),
                    id,
                    self.operation_id,
                    task,
                    self.heartbeat.take(),
                );
                let waited = self.state.settings.answer_within;
                return Err(GuardError::SnapshotPending {
                    target: self.what.clone(),
                    snapshot_id: id,
                    waited,
                }
                .into());
            }
        };
        match capture::outcome(joined, &self.state, id).await {
            Ok(()) => Ok(()),
            Err(source) => Err(GuardError::Capture {
                target: self.what.clone(),
                source,
            }
            .into()),
        }
    }

    /// A complete snapshot for this operation and target taken within
    /// `guard.reuse_snapshot_within` whose campaign `updated_at` is the one
    /// just read. None when SmartLead gave no `updated_at`: then the guard
    /// cannot tell the campaign did not change. Only whole-campaign
    /// snapshots are reused (a lead's data has no version to compare).
    pub(super) async fn reusable(&self, known: &Known) -> Option<i64> {
        let within = self.state.settings.reuse_snapshot_within;
        let version = known.updated_at.as_deref()?;
        if within.is_zero() || self.op.parts() != PartKind::CAMPAIGN {
            return None;
        }
        let since = crate::audit::format_time(std::time::SystemTime::now().checked_sub(within)?);
        let found =
            store::find_reusable(&self.state.pool, self.op.name(), &self.key, version, &since)
                .await;
        match found {
            Ok(found) => found,
            Err(err) => {
                tracing::warn!(error = %err, "cannot look for a reusable snapshot; capturing again");
                None
            }
        }
    }

    /// Makes `id` this operation's snapshot (record, operation row, headers).
    pub(super) async fn use_snapshot(&mut self, id: i64) {
        self.snapshot_id = Some(id);
        self.record.snapshot_id = Some(id);
        if let Some(op) = self.operation_id {
            let _ = ledger::set_snapshot(&self.state.pool, op, id).await;
        }
    }
}
