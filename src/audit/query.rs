//! Reading the audit trail back, for `safedelete audit` and the admin API.

use serde::Serialize;
use sqlx::SqlitePool;

/// One stored audit record.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StoredEvent {
    pub id: i64,
    pub time: String,
    pub request_id: String,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub actor_fingerprint: Option<String>,
    pub actor_label: Option<String>,
    pub client_addr: Option<String>,
    pub user_agent: Option<String>,
    pub operation: String,
    pub campaign_id: Option<i64>,
    pub action: Option<String>,
    pub would_action: Option<String>,
    pub rule: Option<String>,
    pub policy_revision: Option<String>,
    pub snapshot_id: Option<i64>,
    pub upstream_status: Option<i64>,
    pub status: i64,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub duration_ms: f64,
    pub error_kind: Option<String>,
}

/// The most recent `limit` records, newest first.
pub async fn recent(pool: &SqlitePool, limit: u32) -> Result<Vec<StoredEvent>, sqlx::Error> {
    sqlx::query_as::<_, StoredEvent>(
        "SELECT id, time, request_id, method, path, query, actor_fingerprint, actor_label, \
         client_addr, user_agent, operation, campaign_id, action, would_action, rule, \
         policy_revision, snapshot_id, upstream_status, status, bytes_in, \
         bytes_out, duration_ms, error_kind \
         FROM audit_events ORDER BY id DESC LIMIT ?",
    )
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
}
