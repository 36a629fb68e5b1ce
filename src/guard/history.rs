//! The story of one campaign through the gateway: every guarded operation in
//! time order (who, what the policy decided, the snapshot, what was sent to
//! SmartLead, how it ended) and how many passthrough requests touched it.

use serde::Serialize;
use sqlx::SqlitePool;

use crate::snapshot::store::{self, SnapshotInfo, StoreError};

/// One guarded operation, as operators read it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct OperationView {
    pub id: i64,
    pub kind: String,
    pub created_at: String,
    pub updated_at: String,
    pub state: String,
    pub request_id: String,
    pub actor_label: Option<String>,
    pub actor_fingerprint: Option<String>,
    /// The policy's decision: allow, archive, deny.
    pub action: Option<String>,
    pub rule: Option<String>,
    pub would_action: Option<String>,
    pub policy_revision: Option<String>,
    pub upstream_status: Option<i64>,
    pub error: Option<String>,
    pub snapshot_id: Option<i64>,
    /// What reached SmartLead that changed something, in words.
    #[sqlx(skip)]
    pub sent_upstream: String,
    #[sqlx(skip)]
    pub snapshot: Option<SnapshotInfo>,
}

/// A campaign's history.
#[derive(Debug, Clone, Serialize)]
pub struct History {
    pub campaign_id: i64,
    pub operations: Vec<OperationView>,
    /// Non-guarded requests about this campaign (reads, updates, ...).
    pub passthrough_requests: i64,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    /// Gap records of the trail: records were lost there, and some may have
    /// been about this campaign.
    pub audit_gaps: Vec<AuditGap>,
}

/// Where the audit trail says records were lost.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditGap {
    pub audit_id: i64,
    pub time: String,
    pub detail: Option<String>,
}

/// Reading a history failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot read the history of campaign {campaign_id}")]
    Db {
        campaign_id: i64,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot read a snapshot of campaign {campaign_id}")]
    Snapshot {
        campaign_id: i64,
        #[source]
        source: StoreError,
    },
}

/// Everything the gateway knows about `campaign_id`, oldest first.
pub async fn campaign(pool: &SqlitePool, campaign_id: i64) -> Result<History, HistoryError> {
    let db = |source| HistoryError::Db {
        campaign_id,
        source,
    };
    let mut operations = sqlx::query_as::<_, OperationView>(
        "SELECT id, kind, created_at, updated_at, state, request_id, actor_label, \
         actor_fingerprint, action, rule, would_action, policy_revision, upstream_status, \
         error, snapshot_id FROM operations WHERE campaign_id = ? ORDER BY id",
    )
    .bind(campaign_id)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    for op in &mut operations {
        op.sent_upstream = sent_upstream(op);
        if let Some(id) = op.snapshot_id {
            // A pruned snapshot is simply no longer there.
            op.snapshot = match store::get_snapshot(pool, id).await {
                Ok(info) => Some(info),
                Err(StoreError::NotFound { .. }) => None,
                Err(source) => {
                    return Err(HistoryError::Snapshot {
                        campaign_id,
                        source,
                    })
                }
            };
        }
    }
    let (passthrough_requests, first_seen, last_seen): (i64, Option<String>, Option<String>) =
        sqlx::query_as(
            "SELECT COUNT(*) FILTER (WHERE operation = 'passthrough'), MIN(time), MAX(time) \
             FROM audit_events WHERE campaign_id = ?",
        )
        .bind(campaign_id)
        .fetch_one(pool)
        .await
        .map_err(db)?;
    let audit_gaps = sqlx::query_as::<_, AuditGap>(
        "SELECT id AS audit_id, time, detail FROM audit_events \
         WHERE operation = 'audit_gap' ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .map_err(db)?;
    Ok(History {
        campaign_id,
        operations,
        passthrough_requests,
        first_seen,
        last_seen,
        audit_gaps,
    })
}

/// What the operation sent to SmartLead that changes things.
fn sent_upstream(op: &OperationView) -> String {
    let status = op
        .upstream_status
        .map(|s| format!(" (SmartLead answered {s})"))
        .unwrap_or_default();
    let stopped = if op
        .error
        .as_deref()
        .is_some_and(|e| e.contains("stopping the campaign"))
    {
        "STOPPED status change refused; "
    } else {
        ""
    };
    match (op.action.as_deref(), op.state.as_str()) {
        (Some("archive"), "done") => format!("status change to archived{status}"),
        (Some("allow"), "done") => format!("DELETE{status}"),
        (Some("allow"), "upstream_failed") if op.upstream_status.is_some() => {
            format!("DELETE{status}")
        }
        (Some("allow"), "upstream_failed")
            if op
                .error
                .as_deref()
                .is_some_and(|e| e.contains("may or may not")) =>
        {
            "DELETE sent, outcome unknown (the connection failed or timed out)".to_string()
        }
        (Some("archive"), "upstream_failed") => {
            format!("archive attempts, none accepted{status}")
        }
        (_, "acting") => "in progress (or the gateway stopped while acting)".to_string(),
        (_, "received" | "deciding" | "snapshotting") => "nothing yet (in progress)".to_string(),
        (_, "interrupted") => {
            "unknown: interrupted (check SmartLead; the snapshot, if complete, holds the data)"
                .to_string()
        }
        _ => format!("{stopped}nothing"),
    }
}
