//! Phase: capture the campaign's data, or use a recent snapshot of the
//! unchanged campaign; the client is answered within `guard.answer_within`.

use http::header::HeaderValue;

use super::*;

impl Run {
    /// Phase: capture every part; the snapshot is complete only when all are
    /// stored. A recent complete snapshot of the same campaign version is
    /// used instead. The capture runs in its own task: if it is not complete
    /// by `answer_by`, the client is refused (503 `snapshot_pending`) and it
    /// goes on in the background, leaving this operation to end there.
    pub(super) async fn snapshot(
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
    pub(super) async fn reusable(&self, facts: &CampaignFacts) -> Option<i64> {
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
    pub(super) async fn use_snapshot(&mut self, id: i64) {
        self.snapshot_id = Some(id);
        self.record.snapshot_id = Some(id);
        if let Some(op) = self.operation_id {
            let _ = ledger::set_snapshot(&self.state.pool, op, id).await;
        }
    }
}
