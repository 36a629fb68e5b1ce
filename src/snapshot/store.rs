//! Snapshot storage: parts of a campaign's data streamed into SQLite as
//! zstd-compressed chunks of at most [`CHUNK_SIZE`] raw bytes, each part
//! checksummed with SHA-256, and read back (verified) chunk by chunk.
//!
//! No HTTP here: the caller fetches the data and feeds the bytes in. This file
//! holds the vocabulary and a snapshot's life (create, complete, fail,
//! interrupted); `writer` stores a part, `reader` lists and exports.

use std::fmt;
use std::time::SystemTime;

use sqlx::{Any, Transaction};

use crate::db::Pool;

use crate::audit::format_time;

mod manage;
mod reader;
#[cfg(test)]
mod tests;
mod writer;

pub use manage::*;
pub use reader::{
    export_part, get_snapshot, list_snapshots, list_snapshots_where, PartInfo, SnapshotFilter,
    SnapshotInfo,
};
pub use writer::{PartSummary, PartWriter};

/// Raw bytes per chunk row. Also the bound on memory per part being written
/// or read, and the decompression capacity of one chunk.
pub const CHUNK_SIZE: usize = 1024 * 1024;

/// The error text of snapshots left `in_progress` by a gateway that stopped.
const INTERRUPTED: &str = "interrupted: the gateway stopped while capturing";

/// Declares the part kinds once: variant, stored name, exported file stem.
macro_rules! part_kinds {
    ($($variant:ident => $name:literal, $stem:literal;)+) => {
        /// What a snapshot part holds. Which parts a snapshot needs is its
        /// operation's capture plan (`guard::operations`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum PartKind {
            $($variant,)+
        }

        impl PartKind {
            /// Every part kind there is.
            pub const ALL: &'static [PartKind] = &[$(PartKind::$variant,)+];

            /// The name stored in `snapshot_parts.kind`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(PartKind::$variant => $name,)+
                }
            }

            /// The file name an exported part gets after its target, e.g.
            /// `leads.csv` in `campaign-101-leads.csv`.
            fn stem(self) -> &'static str {
                match self {
                    $(PartKind::$variant => $stem,)+
                }
            }
        }
    };
}

part_kinds! {
    Campaign => "campaign", "campaign.json";
    LeadsCsv => "leads_csv", "leads.csv";
    Sequences => "sequences", "sequences.json";
    EmailAccounts => "email_accounts", "email-accounts.json";
    Webhooks => "webhooks", "webhooks.json";
    Analytics => "analytics", "analytics.json";
    Lead => "lead", "lead.json";
    LeadCampaigns => "lead_campaigns", "lead-campaigns.json";
    MessageHistory => "message_history", "message-history.json";
    EmailAccount => "email_account", "email-account.json";
    AccountCampaigns => "account_campaigns", "account-campaigns.json";
    LeadList => "lead_list", "lead-list.json";
    LeadListLeads => "lead_list_leads", "lead-list-leads.json";
    GlobalWebhooks => "global_webhooks", "global-webhooks.json";
    ClientApiKeys => "client_api_keys", "client-api-keys.json";
    DomainBlockList => "domain_block_list", "domain-block-list.json";
}

impl PartKind {
    /// The six parts of a campaign snapshot, in capture order.
    pub const CAMPAIGN: [PartKind; 6] = [
        PartKind::Campaign,
        PartKind::LeadsCsv,
        PartKind::Sequences,
        PartKind::EmailAccounts,
        PartKind::Webhooks,
        PartKind::Analytics,
    ];

    /// The inverse of [`PartKind::as_str`].
    pub fn parse(s: &str) -> Option<PartKind> {
        PartKind::ALL.iter().copied().find(|k| k.as_str() == s)
    }

    /// The file name an exported part gets, e.g. `campaign-101-leads.csv`
    /// (`target` is the snapshot's target, `campaign-101` or `lead-7`).
    pub fn file_name(self, target: &str) -> String {
        format!("{target}-{}", self.stem())
    }
}

impl fmt::Display for PartKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A problem storing or reading back a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("snapshot database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("snapshot {snapshot_id} does not exist")]
    NotFound { snapshot_id: i64 },
    #[error("snapshot {snapshot_id} is {state}, not in_progress")]
    NotInProgress { snapshot_id: i64, state: String },
    #[error("snapshot {snapshot_id} has no {kind} part")]
    NoSuchPart { snapshot_id: i64, kind: PartKind },
    /// `state` is the part's state, or `missing`.
    #[error("snapshot {snapshot_id}: part {kind} is {state}, not complete")]
    Incomplete {
        snapshot_id: i64,
        kind: PartKind,
        state: String,
    },
    #[error("snapshot {snapshot_id}: unknown part kind {kind:?} is {state}")]
    UnknownPart {
        snapshot_id: i64,
        kind: String,
        state: String,
    },
    #[error("snapshot {snapshot_id}: part {kind} was reset or failed while being written")]
    PartReset { snapshot_id: i64, kind: PartKind },
    #[error("snapshot {snapshot_id}: cannot compress part {kind}: {source}")]
    Compress {
        snapshot_id: i64,
        kind: PartKind,
        #[source]
        source: std::io::Error,
    },
    #[error("snapshot {snapshot_id}: cannot decompress chunk {seq} of part {kind}: {source}")]
    Decompress {
        snapshot_id: i64,
        kind: PartKind,
        seq: i64,
        #[source]
        source: std::io::Error,
    },
    #[error("snapshot {snapshot_id}: chunk {seq} of part {kind} is missing")]
    MissingChunk {
        snapshot_id: i64,
        kind: PartKind,
        seq: i64,
    },
    #[error(
        "snapshot {snapshot_id}: part {kind} fails its checksum \
         (stored sha256 {expected}, data hashes to {actual})"
    )]
    ChecksumMismatch {
        snapshot_id: i64,
        kind: PartKind,
        expected: String,
        actual: String,
    },
    #[error("snapshot {snapshot_id}: cannot write part {kind}: {source}")]
    Io {
        snapshot_id: i64,
        kind: PartKind,
        #[source]
        source: std::io::Error,
    },
}

/// What a new snapshot is of.
#[derive(Debug, Clone)]
pub struct NewSnapshot<'a> {
    pub operation_id: Option<i64>,
    /// The operation's stable name.
    pub operation: &'a str,
    pub campaign_id: Option<i64>,
    /// The target's key (`campaign:5/lead:7`).
    pub target: &'a str,
    pub target_id: Option<i64>,
    /// Every part a complete snapshot holds (the operation's capture plan).
    pub parts: &'a [PartKind],
}

/// Starts a snapshot (state `in_progress`) and returns its id.
pub async fn create_snapshot(pool: &Pool, new: &NewSnapshot<'_>) -> Result<i64, StoreError> {
    let parts: Vec<&str> = new.parts.iter().map(|k| k.as_str()).collect();
    let id = sqlx::query_scalar(
        "INSERT INTO snapshots (operation_id, operation, campaign_id, target, target_id, parts, \
         state, created_at) VALUES ($1, $2, $3, $4, $5, $6, 'in_progress', $7) RETURNING id",
    )
    .bind(new.operation_id)
    .bind(new.operation)
    .bind(new.campaign_id)
    .bind(new.target)
    .bind(new.target_id)
    .bind(parts.join(","))
    .bind(format_time(SystemTime::now()))
    .fetch_one(pool)
    .await?;
    Ok(id)
}

/// The part kinds a snapshot row says it holds when complete (unknown
/// names are skipped: a newer gateway's parts).
pub fn expected_parts(parts: &str) -> Vec<PartKind> {
    parts.split(',').filter_map(PartKind::parse).collect()
}

/// Records which version of the campaign (SmartLead's `updated_at`) a
/// snapshot holds, so a later retry can tell whether it is still current.
pub async fn set_campaign_version(
    pool: &Pool,
    snapshot_id: i64,
    updated_at: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE snapshots SET campaign_updated_at = $1 WHERE id = $2")
        .bind(updated_at)
        .bind(snapshot_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// The newest `complete` snapshot for `operation` of `target` created at or
/// after `since` (stored time form) that holds the campaign as of
/// `updated_at`: the data a new capture would read again, if the campaign
/// did not change.
pub async fn find_reusable(
    pool: &Pool,
    operation: &str,
    target: &str,
    updated_at: &str,
    since: &str,
) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM snapshots WHERE operation = $1 AND target = $2 AND state = 'complete' \
         AND campaign_updated_at = $3 AND created_at >= $4 ORDER BY id DESC LIMIT 1",
    )
    .bind(operation)
    .bind(target)
    .bind(updated_at)
    .bind(since)
    .fetch_optional(pool)
    .await?)
}

/// Marks a snapshot `complete`, but only if every part its row expects is
/// present and every part row is `complete`; otherwise nothing changes and the
/// first missing or unfinished part is named in [`StoreError::Incomplete`].
pub async fn complete_snapshot(pool: &Pool, snapshot_id: i64) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    // Write first: the transaction then holds the write lock, so no part can
    // change between the check below and the commit.
    let done = sqlx::query(
        "UPDATE snapshots SET state = 'complete', completed_at = $1 \
         WHERE id = $2 AND state = 'in_progress'",
    )
    .bind(format_time(SystemTime::now()))
    .bind(snapshot_id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(not_in_progress(&mut tx, snapshot_id).await);
    }
    let parts: Vec<(String, String)> =
        sqlx::query_as("SELECT kind, state FROM snapshot_parts WHERE snapshot_id = $1")
            .bind(snapshot_id)
            .fetch_all(&mut *tx)
            .await?;
    let expected: String = sqlx::query_scalar("SELECT parts FROM snapshots WHERE id = $1")
        .bind(snapshot_id)
        .fetch_one(&mut *tx)
        .await?;
    for kind in expected_parts(&expected) {
        let state = parts
            .iter()
            .find(|(k, _)| k == kind.as_str())
            .map(|(_, s)| s);
        match state {
            Some(s) if s == "complete" => {}
            other => {
                return Err(StoreError::Incomplete {
                    snapshot_id,
                    kind,
                    state: other.map_or("missing", |s| s.as_str()).to_string(),
                })
            }
        }
    }
    if let Some((kind, state)) = parts.into_iter().find(|(_, s)| s != "complete") {
        return Err(StoreError::UnknownPart {
            snapshot_id,
            kind,
            state,
        });
    }
    tx.commit().await?;
    Ok(())
}

/// Marks an `in_progress` snapshot `failed` with `error` (for people; never a
/// secret), and its unfinished parts `failed`.
pub async fn fail_snapshot(pool: &Pool, snapshot_id: i64, error: &str) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query(
        "UPDATE snapshots SET state = 'failed', error = $1 WHERE id = $2 AND state = 'in_progress'",
    )
    .bind(error)
    .bind(snapshot_id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(not_in_progress(&mut tx, snapshot_id).await);
    }
    sqlx::query(
        "UPDATE snapshot_parts SET state = 'failed' \
         WHERE snapshot_id = $1 AND state = 'in_progress'",
    )
    .bind(snapshot_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Snapshots still `in_progress` whose operation was interrupted (or that
/// have none) were being captured by a gateway that stopped: they become
/// `incomplete` and their unfinished parts `failed`, never complete. Captures
/// that a live gateway is running are left alone. Returns how many changed.
pub async fn mark_interrupted(pool: &Pool) -> Result<u64, StoreError> {
    const ORPHANED: &str = "state = 'in_progress' AND (operation_id IS NULL OR operation_id IN \
         (SELECT id FROM operations WHERE state = 'interrupted'))";
    let mut tx = pool.begin().await?;
    sqlx::query(&format!(
        "UPDATE snapshot_parts SET state = 'failed' WHERE state = 'in_progress' \
         AND snapshot_id IN (SELECT id FROM snapshots WHERE {ORPHANED})"
    ))
    .execute(&mut *tx)
    .await?;
    let done = sqlx::query(&format!(
        "UPDATE snapshots SET state = 'incomplete', error = $1 WHERE {ORPHANED}"
    ))
    .bind(INTERRUPTED)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(done.rows_affected())
}

/// The error for a snapshot an update did not match: it is missing, or not
/// `in_progress`.
async fn not_in_progress(tx: &mut Transaction<'_, Any>, snapshot_id: i64) -> StoreError {
    let state: Result<Option<String>, _> =
        sqlx::query_scalar("SELECT state FROM snapshots WHERE id = $1")
            .bind(snapshot_id)
            .fetch_optional(&mut **tx)
            .await;
    match state {
        Ok(Some(state)) => StoreError::NotInProgress { snapshot_id, state },
        Ok(None) => StoreError::NotFound { snapshot_id },
        Err(err) => err.into(),
    }
}
