//! The `operations` table: one durable row per guarded request, written
//! before anything destructive leaves the gateway, and moved through its
//! states as the pipeline runs. A unique index on unfinished rows gives
//! single flight per target across threads and processes.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use crate::db::Pool;

use crate::audit::format_time;

/// How often a running operation refreshes its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// An unfinished operation whose heartbeat is older than this has lost its
/// gateway (on another host, where liveness cannot be checked directly).
pub const STALE_AFTER: Duration = Duration::from_secs(60);

/// This gateway process: `host:pid:instance`.
pub fn owner() -> &'static str {
    static OWNER: OnceLock<String> = OnceLock::new();
    OWNER.get_or_init(|| {
        format!(
            "{}:{}:{:016x}",
            hostname(),
            std::process::id(),
            fastrand::u64(..)
        )
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Whether the gateway that owns an operation is certainly gone.
fn owner_is_gone(owned_by: Option<&str>, heartbeat_at: Option<&str>, stale_before: &str) -> bool {
    let Some(owned_by) = owned_by else {
        return true;
    };
    if heartbeat_at.is_none_or(|h| h < stale_before) {
        return true;
    }
    let mut parts = owned_by.splitn(3, ':');
    let (Some(host), Some(pid), Some(instance)) = (parts.next(), parts.next(), parts.next()) else {
        return true;
    };
    if host != hostname() {
        return false;
    }
    let me = owner();
    if owned_by == me {
        return false;
    }
    let my_pid = std::process::id().to_string();
    if pid == my_pid && !me.ends_with(instance) {
        // Our pid, another instance: an earlier process that had this pid.
        return true;
    }
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Where an operation is in the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Received,
    Deciding,
    Snapshotting,
    Acting,
    Done,
    Denied,
    /// SmartLead said the campaign does not exist (or the key is wrong).
    NotFound,
    SnapshotFailed,
    /// The client was answered 503 before the snapshot was complete; the
    /// capture went on without it and has ended (the snapshot's own state
    /// says how). Nothing was done to the campaign for this request.
    SnapshotPending,
    UpstreamFailed,
    Interrupted,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Received => "received",
            State::Deciding => "deciding",
            State::Snapshotting => "snapshotting",
            State::Acting => "acting",
            State::Done => "done",
            State::Denied => "denied",
            State::NotFound => "not_found",
            State::SnapshotFailed => "snapshot_failed",
            State::SnapshotPending => "snapshot_pending",
            State::UpstreamFailed => "upstream_failed",
            State::Interrupted => "interrupted",
        }
    }
}

/// Starting an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BeginError {
    #[error("another operation on the same target is in progress")]
    InFlight,
    #[error("cannot record the operation: {0}")]
    Db(#[source] sqlx::Error),
    #[error("cannot take over a stale operation: {0}")]
    Recover(#[from] RecoverError),
}

/// Who asked, for the operation row.
pub struct NewOperation<'a> {
    /// The operation's stable name.
    pub kind: &'static str,
    pub campaign_id: Option<u64>,
    /// The target's key, claimed for single flight.
    pub target: &'a str,
    /// The target object's own id (lead, account, ...), for history.
    pub target_id: Option<u64>,
    pub request_id: &'a str,
    pub actor_fingerprint: Option<&'a str>,
    pub actor_label: &'a str,
}

fn now() -> String {
    format_time(SystemTime::now())
}

/// Inserts the durable intent (`received`). Fails with `InFlight` when an
/// unfinished operation for the same campaign exists.
pub async fn begin(pool: &Pool, op: &NewOperation<'_>) -> Result<i64, BeginError> {
    let now = now();
    let mut recovered = false;
    loop {
        let result = sqlx::query_scalar(
            "INSERT INTO operations (kind, campaign_id, target, target_id, state, request_id, \
             actor_fingerprint, actor_label, created_at, updated_at, owner, heartbeat_at) \
             VALUES ($1, $2, $3, $4, 'received', $5, $6, $7, $8, $9, $10, $11) RETURNING id",
        )
        .bind(op.kind)
        .bind(op.campaign_id.map(|c| c as i64))
        .bind(op.target)
        .bind(op.target_id.map(|c| c as i64))
        .bind(op.request_id)
        .bind(op.actor_fingerprint)
        .bind(op.actor_label)
        .bind(&now)
        .bind(&now)
        .bind(owner())
        .bind(&now)
        .fetch_one(pool)
        .await;
        match result {
            Ok(id) => return Ok(id),
            // The claim may belong to a gateway that died without a restart
            // here: take it over once if so, else it is really in flight.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() && !recovered => {
                recovered = true;
                recover_stale(pool).await?;
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(BeginError::InFlight)
            }
            Err(e) => return Err(BeginError::Db(e)),
        }
    }
}

/// Refreshes a running operation's heartbeat.
pub async fn heartbeat(pool: &Pool, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE operations SET heartbeat_at = $1 WHERE id = $2")
        .bind(now())
        .bind(id)
        .execute(pool)
        .await
        .map(|_| ())
}

/// Marks unfinished operations whose gateway is gone as `interrupted`, and
/// their unfinished snapshots `incomplete` (never complete). Operations that
/// a live gateway runs are left alone. Returns (operations, snapshots).
pub async fn recover_stale(pool: &Pool) -> Result<(u64, u64), RecoverError> {
    let stale_before = format_time(SystemTime::now() - STALE_AFTER);
    let unfinished: Vec<(i64, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT id, owner, heartbeat_at FROM operations \
         WHERE state IN ('received', 'deciding', 'snapshotting', 'acting')",
    )
    .fetch_all(pool)
    .await?;
    let mut operations = 0;
    for (id, owner, heartbeat_at) in unfinished {
        if owner_is_gone(owner.as_deref(), heartbeat_at.as_deref(), &stale_before) {
            operations += sqlx::query(
                "UPDATE operations SET state = 'interrupted', \
                 error = COALESCE(error, 'interrupted in state ' || state || ': the gateway stopped before this operation finished'), \
                 updated_at = $1 WHERE id = $2 AND state IN ('received', 'deciding', 'snapshotting', 'acting')",
            )
            .bind(now())
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected();
        }
    }
    let snapshots = crate::snapshot::store::mark_interrupted(pool).await?;
    Ok((operations, snapshots))
}

/// An interrupted operation whose audit record is still to be written.
#[derive(Debug, sqlx::FromRow)]
pub struct Interrupted {
    pub id: i64,
    pub kind: String,
    pub campaign_id: Option<i64>,
    pub target: String,
    pub request_id: String,
    pub actor_fingerprint: Option<String>,
    pub actor_label: Option<String>,
    pub rule: Option<String>,
    pub policy_revision: Option<String>,
    pub snapshot_id: Option<i64>,
    pub error: Option<String>,
    pub created_at: String,
}

/// Interrupted operations without an audit record yet (their request never
/// got to write one: the gateway stopped first).
pub async fn unrecorded_interrupted(pool: &Pool) -> Result<Vec<Interrupted>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, kind, campaign_id, target, request_id, actor_fingerprint, actor_label, rule, \
         policy_revision, snapshot_id, error, created_at FROM operations \
         WHERE state = 'interrupted' AND audit_id IS NULL ORDER BY id",
    )
    .fetch_all(pool)
    .await
}

/// Claims an interrupted operation's record for this gateway (`audit_id`
/// 0 until it is written); false when another gateway has it.
pub async fn claim_unrecorded(pool: &Pool, id: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE operations SET audit_id = 0 WHERE id = $1 AND audit_id IS NULL")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives up a claim whose record could not be written.
pub async fn unclaim_unrecorded(pool: &Pool, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE operations SET audit_id = NULL WHERE id = $1 AND audit_id = 0")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Links an operation to the audit record that tells its end.
pub async fn set_audit_id(pool: &Pool, id: i64, audit_id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE operations SET audit_id = $1 WHERE id = $2")
        .bind(audit_id)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Recovering unfinished operations failed.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("cannot recover unfinished operations")]
    Operations(#[from] sqlx::Error),
    #[error("cannot settle their snapshots")]
    Snapshots(#[from] crate::snapshot::store::StoreError),
}

/// Moves an operation to `state`.
pub async fn set_state(pool: &Pool, id: i64, state: State) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE operations SET state = $1, updated_at = $2 WHERE id = $3")
        .bind(state.as_str())
        .bind(now())
        .bind(id)
        .execute(pool)
        .await
        .map(|_| ())
}

/// The policy's decision, recorded before acting on it.
pub struct DecisionRow<'a> {
    pub action: &'a str,
    pub would_action: Option<&'a str>,
    pub rule: Option<&'a str>,
    pub policy_revision: &'a str,
}

pub async fn record_decision(pool: &Pool, id: i64, d: &DecisionRow<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE operations SET action = $1, would_action = $2, rule = $3, policy_revision = $4, \
         updated_at = $5 WHERE id = $6",
    )
    .bind(d.action)
    .bind(d.would_action)
    .bind(d.rule)
    .bind(d.policy_revision)
    .bind(now())
    .bind(id)
    .execute(pool)
    .await
    .map(|_| ())
}

pub async fn set_snapshot(pool: &Pool, id: i64, snapshot_id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE operations SET snapshot_id = $1, updated_at = $2 WHERE id = $3")
        .bind(snapshot_id)
        .bind(now())
        .bind(id)
        .execute(pool)
        .await
        .map(|_| ())
}

/// Ends an operation in a final state.
pub async fn finish(
    pool: &Pool,
    id: i64,
    state: State,
    upstream_status: Option<u16>,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE operations SET state = $1, upstream_status = $2, error = $3, updated_at = $4 WHERE id = $5",
    )
    .bind(state.as_str())
    .bind(upstream_status.map(i64::from))
    .bind(error)
    .bind(now())
    .bind(id)
    .execute(pool)
    .await
    .map(|_| ())
}

/// [`finish`], retried with backoff: an unfinished row keeps the campaign
/// claimed (409) until it is recovered.
pub async fn finish_retrying(
    pool: &Pool,
    id: i64,
    state: State,
    upstream_status: Option<u16>,
    error: Option<&str>,
) {
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=5 {
        match finish(pool, id, state, upstream_status, error).await {
            Ok(()) => return,
            Err(err) => {
                tracing::error!(error = %err, operation_id = id, attempt, "cannot finish operation");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}

/// Closes the unfinished operation of a request whose pipeline died.
pub async fn fail_by_request(
    pool: &Pool,
    request_id: &str,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE operations SET state = 'interrupted', \
         error = $1 || ' (interrupted in state ' || state || ')', updated_at = $2 \
         WHERE request_id = $3 AND state IN ('received', 'deciding', 'snapshotting', 'acting')",
    )
    .bind(error)
    .bind(now())
    .bind(request_id)
    .execute(pool)
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delete_of(campaign: u64, request_id: &str) -> NewOperation<'_> {
        NewOperation {
            kind: "campaign.delete",
            campaign_id: Some(campaign),
            target: "campaign:7",
            target_id: None,
            request_id,
            actor_fingerprint: None,
            actor_label: "alice",
        }
    }

    crate::db::testing::store_tests! {
        /// Two gateways (two pools) claim the same target at the same
        /// moment: the database lets exactly one have it, the other is told
        /// it is in flight; once the first finishes, the target is free.
        async fn one_claim_per_target_across_gateways(pool, store) {
            let other = store.open().await;
            for round in 0..20 {
                let (first, second) = (delete_of(7, "a"), delete_of(7, "b"));
                let (a, b) = tokio::join!(begin(&pool, &first), begin(&other, &second));
                let won: Vec<i64> = [&a, &b].iter().filter_map(|r| r.as_ref().ok().copied()).collect();
                assert_eq!(won.len(), 1, "round {round}: {a:?} {b:?}");
                let lost = if a.is_ok() { b } else { a };
                assert!(matches!(lost, Err(BeginError::InFlight)), "{lost:?}");
                set_state(&pool, won[0], State::Done).await.unwrap();
            }
            let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM operations")
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(rows, 20);
        }

        /// A gateway on another host cannot be looked up: its operations
        /// are taken over once its heartbeat is older than `STALE_AFTER`,
        /// and not before.
        async fn another_hosts_operation_is_taken_over_once_its_heartbeat_is_stale(pool) {
            let now = SystemTime::now();
            let fresh = format_time(now);
            let stale = format_time(now - STALE_AFTER - Duration::from_secs(5));
            for (target, heartbeat) in [("campaign:1", &fresh), ("campaign:2", &stale)] {
                sqlx::query(
                    "INSERT INTO operations (kind, target, state, request_id, created_at, \
                     updated_at, owner, heartbeat_at) VALUES ('campaign.delete', $1, \
                     'snapshotting', 'r', $2, $2, 'elsewhere.example:4242:00000000deadbeef', $3)",
                )
                .bind(target)
                .bind(&fresh)
                .bind(heartbeat)
                .execute(&pool)
                .await
                .unwrap();
            }
            let (operations, _) = recover_stale(&pool).await.unwrap();
            assert_eq!(operations, 1);
            let states: Vec<(String, String)> =
                sqlx::query_as("SELECT target, state FROM operations ORDER BY target")
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            let states: Vec<(&str, &str)> =
                states.iter().map(|(t, s)| (t.as_str(), s.as_str())).collect();
            assert_eq!(
                states,
                [("campaign:1", "snapshotting"), ("campaign:2", "interrupted")]
            );
        }
    }
}
