//! Reading back: snapshot listings, and parts streamed out chunk by chunk
//! with their checksum verified.

use crate::db::Pool;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::{PartKind, StoreError, CHUNK_SIZE};

/// A snapshot and its parts, as read back.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct SnapshotInfo {
    pub id: i64,
    pub operation_id: Option<i64>,
    /// The operation it was taken for (`campaign.delete`, ...).
    pub operation: String,
    pub campaign_id: Option<i64>,
    /// What it is of (`campaign:5`, `campaign:5/lead:7`, `email_account:9`).
    pub target: String,
    /// The target object's own id (lead, account, ...).
    pub target_id: Option<i64>,
    /// `in_progress`, `complete`, `failed` or `incomplete`.
    pub state: String,
    pub created_at: String,
    pub completed_at: Option<String>,
    pub error: Option<String>,
    /// Pinned snapshots are never pruned.
    #[sqlx(try_from = "crate::db::Flag")]
    pub pinned: bool,
    /// Leads in the captured export, when it was counted.
    pub leads: Option<i64>,
    /// In the order they were first captured.
    #[sqlx(skip)]
    pub parts: Vec<PartInfo>,
}

impl SnapshotInfo {
    /// The start of its exported files' names: `campaign-5`, `campaign-5-lead-7`.
    pub fn file_stem(&self) -> String {
        self.target.replace([':', '/'], "-")
    }
}

/// One part of a snapshot, as read back.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct PartInfo {
    pub kind: String,
    pub content_type: Option<String>,
    pub upstream_status: Option<i64>,
    /// `in_progress`, `complete` or `failed`.
    pub state: String,
    pub bytes: i64,
    pub stored_bytes: i64,
    pub chunks: i64,
    pub sha256: Option<String>,
}

const SNAPSHOT_COLUMNS: &str =
    "SELECT id, operation_id, operation, campaign_id, target, target_id, state, created_at, completed_at, error, \
     pinned != 0 AS pinned, \
     (SELECT p.rows FROM snapshot_parts p WHERE p.snapshot_id = snapshots.id \
      AND p.kind = 'leads_csv' AND p.state = 'complete') AS leads FROM snapshots";

/// Snapshots, newest first, of one campaign or of all, with their parts.
pub async fn list_snapshots(
    pool: &Pool,
    campaign_id: Option<i64>,
    limit: u32,
) -> Result<Vec<SnapshotInfo>, StoreError> {
    let filter = SnapshotFilter {
        campaign_id,
        ..SnapshotFilter::default()
    };
    list_snapshots_where(pool, &filter, limit).await
}

/// Which snapshots a listing shows; absent fields do not filter.
#[derive(Debug, Default, Clone)]
pub struct SnapshotFilter<'a> {
    pub campaign_id: Option<i64>,
    pub state: Option<&'a str>,
    /// An operation name.
    pub operation: Option<&'a str>,
    /// The target object's own id (a lead, an email account, ...).
    pub target_id: Option<i64>,
}

/// Like [`list_snapshots`], filtered.
pub async fn list_snapshots_where(
    pool: &Pool,
    filter: &SnapshotFilter<'_>,
    limit: u32,
) -> Result<Vec<SnapshotInfo>, StoreError> {
    let mut snapshots: Vec<SnapshotInfo> = sqlx::query_as(&format!(
        "{SNAPSHOT_COLUMNS} WHERE ($1 IS NULL OR campaign_id = $1) AND ($3 IS NULL OR state = $3) \
         AND ($4 IS NULL OR operation = $4) AND ($5 IS NULL OR target_id = $5) \
         ORDER BY id DESC LIMIT $2"
    ))
    .bind(filter.campaign_id)
    .bind(i64::from(limit))
    .bind(filter.state)
    .bind(filter.operation)
    .bind(filter.target_id)
    .fetch_all(pool)
    .await?;
    for snapshot in &mut snapshots {
        snapshot.parts = parts_of(pool, snapshot.id).await?;
    }
    Ok(snapshots)
}

/// One snapshot with its parts.
pub async fn get_snapshot(pool: &Pool, snapshot_id: i64) -> Result<SnapshotInfo, StoreError> {
    let mut snapshot: SnapshotInfo = sqlx::query_as(&format!("{SNAPSHOT_COLUMNS} WHERE id = $1"))
        .bind(snapshot_id)
        .fetch_optional(pool)
        .await?
        .ok_or(StoreError::NotFound { snapshot_id })?;
    snapshot.parts = parts_of(pool, snapshot_id).await?;
    Ok(snapshot)
}

async fn parts_of(pool: &Pool, snapshot_id: i64) -> Result<Vec<PartInfo>, StoreError> {
    let mut parts: Vec<PartInfo> = sqlx::query_as(
        "SELECT kind, content_type, upstream_status, state, byte_count AS bytes, stored_bytes, \
         chunk_count AS chunks, sha256 FROM snapshot_parts WHERE snapshot_id = $1 ORDER BY id",
    )
    .bind(snapshot_id)
    .fetch_all(pool)
    .await?;
    // Parts are captured at once, so their ids follow whichever answered
    // first: they are listed in the one order of the part kinds.
    parts.sort_by_key(|p| {
        PartKind::ALL
            .iter()
            .position(|k| k.as_str() == p.kind)
            .unwrap_or(usize::MAX)
    });
    Ok(parts)
}

/// Writes a complete part's original bytes to `out` and returns how many.
///
/// Chunks are read and decompressed one at a time, so memory stays
/// O([`CHUNK_SIZE`]) whatever the part's size. The bytes are hashed as they
/// go and only checked against the stored SHA-256 at the end: on
/// [`StoreError::ChecksumMismatch`] (or any other error) the bytes already
/// written to `out` are untrustworthy and must be discarded, so write to a
/// temporary file and rename it only on success. Parts that are not
/// `complete` are refused with [`StoreError::Incomplete`].
pub async fn export_part<W: AsyncWrite + Unpin>(
    pool: &Pool,
    snapshot_id: i64,
    kind: PartKind,
    out: &mut W,
) -> Result<u64, StoreError> {
    let part: Option<(i64, String, Option<String>, i64)> = sqlx::query_as(
        "SELECT id, state, sha256, chunk_count FROM snapshot_parts \
         WHERE snapshot_id = $1 AND kind = $2",
    )
    .bind(snapshot_id)
    .bind(kind.as_str())
    .fetch_optional(pool)
    .await?;
    let Some((part_id, state, sha256, chunk_count)) = part else {
        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM snapshots WHERE id = $1")
            .bind(snapshot_id)
            .fetch_optional(pool)
            .await?;
        return Err(match exists {
            Some(_) => StoreError::NoSuchPart { snapshot_id, kind },
            None => StoreError::NotFound { snapshot_id },
        });
    };
    let expected = match sha256 {
        Some(sha) if state == "complete" => sha,
        _ => {
            return Err(StoreError::Incomplete {
                snapshot_id,
                kind,
                state,
            })
        }
    };

    let io_error = |source| StoreError::Io {
        snapshot_id,
        kind,
        source,
    };
    let mut hasher = crate::digest::sha256_stream();
    let mut written = 0u64;
    for seq in 0..chunk_count {
        let data: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT data FROM snapshot_chunks WHERE part_id = $1 AND seq = $2")
                .bind(part_id)
                .bind(seq)
                .fetch_optional(pool)
                .await?;
        let data = data.ok_or(StoreError::MissingChunk {
            snapshot_id,
            kind,
            seq,
        })?;
        let raw =
            zstd::bulk::decompress(&data, CHUNK_SIZE).map_err(|source| StoreError::Decompress {
                snapshot_id,
                kind,
                seq,
                source,
            })?;
        hasher.update(&raw);
        out.write_all(&raw).await.map_err(io_error)?;
        written += raw.len() as u64;
    }
    out.flush().await.map_err(io_error)?;

    let actual = crate::digest::hex(hasher.finish().as_ref());
    if actual != expected {
        return Err(StoreError::ChecksumMismatch {
            snapshot_id,
            kind,
            expected,
            actual,
        });
    }
    Ok(written)
}
