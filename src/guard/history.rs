//! The story of one campaign, lead or email account through the gateway:
//! every guarded operation on it in time order (who, what the policy
//! decided, the snapshot, what was sent to SmartLead, how it ended), how
//! many passthrough requests touched it, and whether the bypass watch saw
//! it deleted outside the gateway.

use crate::db::Pool;
use serde::Serialize;

use super::operations::{Op, Seg, Verb};
use crate::audit::OperationKind;
use crate::snapshot::store::{self, SnapshotInfo, StoreError};

/// One guarded operation, as operators read it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct OperationView {
    pub id: i64,
    /// The operation's name (`campaign.delete`, `campaign.lead.delete`, ...).
    pub kind: String,
    /// What it acted on (`campaign:5/lead:7`).
    pub target: String,
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

/// Whose history: a campaign, a lead or an email account, by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "subject", content = "id", rename_all = "snake_case")]
pub enum Subject {
    Campaign(i64),
    Lead(i64),
    EmailAccount(i64),
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Campaign(id) => write!(f, "campaign {id}"),
            Subject::Lead(id) => write!(f, "lead {id}"),
            Subject::EmailAccount(id) => write!(f, "email account {id}"),
        }
    }
}

/// A campaign's (lead's, email account's) history.
#[derive(Debug, Clone, Serialize)]
pub struct History {
    #[serde(flatten)]
    pub subject: Subject,
    /// The campaign, for a campaign's history.
    pub campaign_id: Option<i64>,
    pub operations: Vec<OperationView>,
    /// Non-guarded requests about this campaign (reads, updates, ...).
    pub passthrough_requests: i64,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    /// Gap records of the trail: records were lost there, and some may have
    /// been about this campaign.
    pub audit_gaps: Vec<AuditGap>,
    /// The bypass watch saw the campaign disappear without a delete through
    /// the gateway.
    pub bypasses: Vec<Bypass>,
    /// `safedelete restore` rebuilt it from a snapshot, as a new campaign.
    pub restores: Vec<Restored>,
}

/// A restore of the campaign from one of its snapshots.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Restored {
    pub restore_id: i64,
    pub snapshot_id: i64,
    /// `running`, `done` or `failed` (resumable).
    pub state: String,
    pub new_campaign_id: Option<i64>,
    pub name: String,
    pub operator: String,
    pub created_at: String,
}

/// A delete made outside the gateway, as the bypass watch recorded it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Bypass {
    pub audit_id: i64,
    /// When the watch noticed.
    pub time: String,
    pub account: Option<String>,
    /// The campaign's newest snapshot when it disappeared.
    pub snapshot_id: Option<i64>,
    /// The campaign's last known name and status, and the window.
    pub detail: Option<String>,
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
    #[error("cannot read the history of {subject}")]
    Db {
        subject: Subject,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot read a snapshot of {subject}")]
    Snapshot {
        subject: Subject,
        #[source]
        source: StoreError,
    },
}

/// Which operations are about the subject: a campaign's by its column; a
/// lead's by the target object id of the operations whose routes name a
/// lead (from the table); an account's by its deletion's id, and the
/// removals from campaigns that named it (the list in
/// `campaign:5/email_accounts:1,2`, read as `,campaign:5,1,2,`).
fn operations_of() -> String {
    let lead_ops: Vec<String> = Op::all()
        .filter(|op| op.spec().routes.iter().any(|r| r.path.contains(&Seg::Lead)))
        .map(|op| format!("'{}'", op.name()))
        .collect();
    format!(
        "($1 = 'campaign' AND campaign_id = $2) \
         OR ($1 = 'lead' AND target_id = $2 AND kind IN ({})) \
         OR ($1 = 'email_account' AND ((kind = '{}' AND target_id = $2) \
             OR (kind = '{}' AND ',' || replace(target, '/email_accounts:', ',') || ',' \
                 LIKE '%,' || CAST($2 AS TEXT) || ',%')))",
        lead_ops.join(", "),
        Op::EmailAccountDelete.name(),
        Op::CampaignEmailAccountsRemove.name(),
    )
}

/// Everything the gateway knows about `campaign_id`, oldest first.
pub async fn campaign(pool: &Pool, campaign_id: i64) -> Result<History, HistoryError> {
    of(pool, Subject::Campaign(campaign_id)).await
}

/// Everything the gateway knows about the subject, oldest first.
pub async fn of(pool: &Pool, subject: Subject) -> Result<History, HistoryError> {
    let db = |source| HistoryError::Db { subject, source };
    let (what, id) = match subject {
        Subject::Campaign(id) => ("campaign", id),
        Subject::Lead(id) => ("lead", id),
        Subject::EmailAccount(id) => ("email_account", id),
    };
    let mut operations = sqlx::query_as::<_, OperationView>(&format!(
        "SELECT id, kind, target, created_at, updated_at, state, request_id, actor_label, \
         actor_fingerprint, action, rule, would_action, policy_revision, upstream_status, \
         error, snapshot_id FROM operations WHERE {} ORDER BY id",
        operations_of()
    ))
    .bind(what)
    .bind(id)
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
                Err(source) => return Err(HistoryError::Snapshot { subject, source }),
            };
        }
    }
    // Passthrough requests name campaigns only (by their path).
    let campaign_id = match subject {
        Subject::Campaign(id) => Some(id),
        _ => None,
    };
    let (passthrough_requests, first_seen, last_seen): (i64, Option<String>, Option<String>) =
        match campaign_id {
            Some(id) => sqlx::query_as(
                "SELECT COUNT(*) FILTER (WHERE operation = 'passthrough'), MIN(time), MAX(time) \
                 FROM audit_events WHERE campaign_id = $1",
            )
            .bind(id)
            .fetch_one(pool)
            .await
            .map_err(db)?,
            None => (
                0,
                operations.first().map(|o| o.created_at.clone()),
                operations.last().map(|o| o.updated_at.clone()),
            ),
        };
    let audit_gaps = sqlx::query_as::<_, AuditGap>(
        "SELECT id AS audit_id, time, detail FROM audit_events \
         WHERE operation = 'audit_gap' ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .map_err(db)?;
    let bypasses = match campaign_id {
        Some(id) => sqlx::query_as::<_, Bypass>(
            "SELECT id AS audit_id, time, account, snapshot_id, detail FROM audit_events \
             WHERE operation = $1 AND campaign_id = $2 ORDER BY id",
        )
        .bind(OperationKind::BypassDetected.as_str())
        .bind(id)
        .fetch_all(pool)
        .await
        .map_err(db)?,
        None => Vec::new(),
    };
    let restores = match campaign_id {
        Some(id) => sqlx::query_as::<_, Restored>(
            "SELECT r.id AS restore_id, r.snapshot_id, r.state, r.new_campaign_id, r.name, \
             r.operator, r.created_at FROM restores r JOIN snapshots s ON s.id = r.snapshot_id \
             WHERE s.campaign_id = $1 ORDER BY r.id",
        )
        .bind(id)
        .fetch_all(pool)
        .await
        .map_err(db)?,
        None => Vec::new(),
    };
    Ok(History {
        subject,
        campaign_id,
        operations,
        passthrough_requests,
        first_seen,
        last_seen,
        audit_gaps,
        bypasses,
        restores,
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
    // The call forwarded: DELETE, or the POST of a stop or unsubscribe.
    let call = match Op::from_name(&op.kind)
        .and_then(|o| o.spec().routes.first())
        .map(|r| r.verb)
    {
        Some(Verb::Post) => "POST",
        Some(Verb::PostOrPatch) => "STOPPED status change",
        _ => "DELETE",
    };
    match (op.action.as_deref(), op.state.as_str()) {
        (Some("archive"), "done") => format!("status change to archived{status}"),
        (Some("pause"), "done") => format!("pause instead{status}"),
        (Some("allow"), "done") => format!("{call}{status}"),
        (Some("allow"), "upstream_failed") if op.upstream_status.is_some() => {
            format!("{call}{status}")
        }
        (Some("allow"), "upstream_failed")
            if op
                .error
                .as_deref()
                .is_some_and(|e| e.contains("may or may not")) =>
        {
            format!("{call} sent, outcome unknown (the connection failed or timed out)")
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
