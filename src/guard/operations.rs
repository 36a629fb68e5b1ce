//! The `operations` table: one durable row per guarded request, written
//! before anything destructive leaves the gateway, and moved through its
//! states as the pipeline runs. A unique index on unfinished rows gives
//! single flight per campaign across threads and processes.

use std::time::SystemTime;

use sqlx::SqlitePool;

use crate::audit::format_time;

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
            State::UpstreamFailed => "upstream_failed",
            State::Interrupted => "interrupted",
        }
    }
}

/// Starting an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BeginError {
    #[error("another deletion of campaign {campaign_id} is in progress")]
    InFlight { campaign_id: u64 },
    #[error("cannot record the operation: {0}")]
    Db(#[source] sqlx::Error),
}

/// Who asked, for the operation row.
pub struct NewOperation<'a> {
    pub kind: &'static str,
    pub campaign_id: u64,
    pub request_id: &'a str,
    pub actor_fingerprint: Option<&'a str>,
    pub actor_label: &'a str,
}

fn now() -> String {
    format_time(SystemTime::now())
}

/// Inserts the durable intent (`received`). Fails with `InFlight` when an
/// unfinished operation for the same campaign exists.
pub async fn begin(pool: &SqlitePool, op: &NewOperation<'_>) -> Result<i64, BeginError> {
    let now = now();
    let result = sqlx::query(
        "INSERT INTO operations (kind, campaign_id, state, request_id, actor_fingerprint, \
         actor_label, created_at, updated_at) VALUES (?, ?, 'received', ?, ?, ?, ?, ?)",
    )
    .bind(op.kind)
    .bind(op.campaign_id as i64)
    .bind(op.request_id)
    .bind(op.actor_fingerprint)
    .bind(op.actor_label)
    .bind(&now)
    .bind(&now)
    .execute(pool)
    .await;
    match result {
        Ok(done) => Ok(done.last_insert_rowid()),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(BeginError::InFlight {
            campaign_id: op.campaign_id,
        }),
        Err(e) => Err(BeginError::Db(e)),
    }
}

/// Moves an operation to `state`.
pub async fn set_state(pool: &SqlitePool, id: i64, state: State) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE operations SET state = ?, updated_at = ? WHERE id = ?")
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

pub async fn record_decision(
    pool: &SqlitePool,
    id: i64,
    d: &DecisionRow<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE operations SET action = ?, would_action = ?, rule = ?, policy_revision = ?, \
         updated_at = ? WHERE id = ?",
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

pub async fn set_snapshot(pool: &SqlitePool, id: i64, snapshot_id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE operations SET snapshot_id = ?, updated_at = ? WHERE id = ?")
        .bind(snapshot_id)
        .bind(now())
        .bind(id)
        .execute(pool)
        .await
        .map(|_| ())
}

/// Ends an operation in a final state.
pub async fn finish(
    pool: &SqlitePool,
    id: i64,
    state: State,
    upstream_status: Option<u16>,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE operations SET state = ?, upstream_status = ?, error = ?, updated_at = ? WHERE id = ?",
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

/// At start-up: operations a crash left unfinished become `interrupted`.
pub async fn mark_interrupted(pool: &SqlitePool) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "UPDATE operations SET state = 'interrupted', \
         error = COALESCE(error, 'interrupted: the gateway stopped before this operation finished'), \
         updated_at = ? WHERE state IN ('received', 'deciding', 'snapshotting', 'acting')",
    )
    .bind(now())
    .execute(pool)
    .await
    .map(|r| r.rows_affected())
}
