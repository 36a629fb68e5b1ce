//! Looking after stored snapshots: re-verifying every chunk, pinning, and
//! pruning old snapshots without ever losing the last copy of a campaign
//! that was really deleted.

use crate::db::Pool;

use super::{export_part, PartKind, StoreError};

/// Why one part failed verification.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Missing or undecodable chunk, checksum mismatch, database error.
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "snapshot {snapshot_id}: part {kind} holds {actual} chunk rows, its record says {expected}"
    )]
    ChunkCount {
        snapshot_id: i64,
        kind: PartKind,
        expected: i64,
        actual: i64,
    },
    #[error("snapshot {snapshot_id}: part {kind} decompresses to {actual} bytes, its record says {expected}")]
    ByteCount {
        snapshot_id: i64,
        kind: PartKind,
        expected: i64,
        actual: u64,
    },
    #[error("snapshot {snapshot_id}: part {kind:?} is of no known kind")]
    UnknownKind { snapshot_id: i64, kind: String },
}

/// How one part of a snapshot fared in [`verify_snapshot`].
#[derive(Debug)]
pub struct PartCheck {
    pub snapshot_id: i64,
    /// As stored in `snapshot_parts.kind`.
    pub kind: String,
    pub outcome: PartOutcome,
}

/// The verdict on one part.
#[derive(Debug)]
pub enum PartOutcome {
    /// Every chunk read, decompressed and hashed to the stored SHA-256.
    Ok {
        bytes: u64,
        chunks: i64,
    },
    Failed(VerifyError),
    /// Not `complete` (failed or unfinished capture): nothing to verify.
    Skipped {
        state: String,
    },
}

/// Re-reads every chunk of every complete part of `snapshot_id`,
/// decompresses it and checks sizes and SHA-256, one part at a time (memory
/// stays O(chunk)). Only a database error reaching the snapshot itself is an
/// `Err`; a damaged part is a [`PartOutcome::Failed`].
pub async fn verify_snapshot(pool: &Pool, snapshot_id: i64) -> Result<Vec<PartCheck>, StoreError> {
    let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM snapshots WHERE id = $1")
        .bind(snapshot_id)
        .fetch_optional(pool)
        .await?;
    if exists.is_none() {
        return Err(StoreError::NotFound { snapshot_id });
    }
    let parts: Vec<(i64, String, String, i64, i64)> = sqlx::query_as(
        "SELECT id, kind, state, byte_count, chunk_count FROM snapshot_parts \
         WHERE snapshot_id = $1 ORDER BY id",
    )
    .bind(snapshot_id)
    .fetch_all(pool)
    .await?;
    let (snapshot_state, expected): (String, String) =
        sqlx::query_as("SELECT state, parts FROM snapshots WHERE id = $1")
            .bind(snapshot_id)
            .fetch_one(pool)
            .await?;
    let mut checks = Vec::with_capacity(parts.len());
    // A complete snapshot has every part, each complete: a missing or
    // relabelled part is damage, not something to skip.
    if snapshot_state == "complete" {
        for kind in super::expected_parts(&expected) {
            match parts.iter().find(|p| p.1 == kind.as_str()) {
                None => checks.push(PartCheck {
                    snapshot_id,
                    kind: kind.as_str().to_string(),
                    outcome: PartOutcome::Failed(VerifyError::Store(StoreError::NoSuchPart {
                        snapshot_id,
                        kind,
                    })),
                }),
                Some(p) if p.2 != "complete" => checks.push(PartCheck {
                    snapshot_id,
                    kind: kind.as_str().to_string(),
                    outcome: PartOutcome::Failed(VerifyError::Store(StoreError::Incomplete {
                        snapshot_id,
                        kind,
                        state: p.2.clone(),
                    })),
                }),
                Some(_) => {}
            }
        }
    }
    for (part_id, kind, state, byte_count, chunk_count) in parts {
        if state != "complete" && snapshot_state == "complete" {
            continue; // reported above
        }
        let outcome = if state != "complete" {
            PartOutcome::Skipped { state }
        } else {
            match verify_part(pool, snapshot_id, part_id, &kind, byte_count, chunk_count).await {
                Ok(bytes) => PartOutcome::Ok {
                    bytes,
                    chunks: chunk_count,
                },
                Err(err) => PartOutcome::Failed(err),
            }
        };
        checks.push(PartCheck {
            snapshot_id,
            kind,
            outcome,
        });
    }
    Ok(checks)
}

async fn verify_part(
    pool: &Pool,
    snapshot_id: i64,
    part_id: i64,
    kind: &str,
    byte_count: i64,
    chunk_count: i64,
) -> Result<u64, VerifyError> {
    let kind = PartKind::parse(kind).ok_or_else(|| VerifyError::UnknownKind {
        snapshot_id,
        kind: kind.to_string(),
    })?;
    // `export_part` reads chunks 0..chunk_count; rows beyond that would
    // otherwise go unnoticed.
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM snapshot_chunks WHERE part_id = $1")
        .bind(part_id)
        .fetch_one(pool)
        .await
        .map_err(StoreError::from)?;
    if rows != chunk_count {
        return Err(VerifyError::ChunkCount {
            snapshot_id,
            kind,
            expected: chunk_count,
            actual: rows,
        });
    }
    let bytes = export_part(pool, snapshot_id, kind, &mut tokio::io::sink()).await?;
    if i64::try_from(bytes).ok() != Some(byte_count) {
        return Err(VerifyError::ByteCount {
            snapshot_id,
            kind,
            expected: byte_count,
            actual: bytes,
        });
    }
    Ok(bytes)
}

/// Every snapshot id, oldest first (for verifying them all).
pub async fn all_snapshot_ids(pool: &Pool) -> Result<Vec<i64>, StoreError> {
    Ok(sqlx::query_scalar("SELECT id FROM snapshots ORDER BY id")
        .fetch_all(pool)
        .await?)
}

/// Whether `snapshot_id` is pinned.
pub async fn is_pinned(pool: &Pool, snapshot_id: i64) -> Result<bool, StoreError> {
    let pinned: Option<crate::db::Flag> =
        sqlx::query_scalar("SELECT pinned FROM snapshots WHERE id = $1")
            .bind(snapshot_id)
            .fetch_optional(pool)
            .await?;
    pinned
        .map(bool::from)
        .ok_or(StoreError::NotFound { snapshot_id })
}

/// Pins (pruning never removes it) or unpins a snapshot. Returns whether
/// the flag changed.
pub async fn set_pinned(pool: &Pool, snapshot_id: i64, pinned: bool) -> Result<bool, StoreError> {
    let was = is_pinned(pool, snapshot_id).await?;
    let done = sqlx::query("UPDATE snapshots SET pinned = $1 WHERE id = $2")
        .bind(i64::from(pinned))
        .bind(snapshot_id)
        .execute(pool)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound { snapshot_id });
    }
    Ok(was != pinned)
}

/// A snapshot that pruning removes (or, in a dry run, would remove).
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct PruneCandidate {
    pub id: i64,
    pub campaign_id: Option<i64>,
    pub target: String,
    pub state: String,
    pub created_at: String,
    pub parts: i64,
    pub chunks: i64,
    /// Compressed bytes freed.
    pub stored_bytes: i64,
}

/// Which snapshots may go, as a condition on `snapshots s` with `?1` the
/// cutoff. Both the listing and every delete use it, so a dry run shows
/// exactly what a real prune removes, and a snapshot pinned (or a campaign
/// deleted) between the two is still spared.
///
/// Kept whatever their age:
/// - pinned snapshots;
/// - snapshots still being captured (`in_progress`);
/// - the newest complete snapshot of every target (campaign, lead, account,
///   ...) the gateway let be destroyed (`allow`), when the call went
///   through, may have, or is about to (every state but `denied`/
///   `not_found`/`snapshot_failed`/`snapshot_pending`): it may be the only
///   copy of that data left anywhere;
/// - the snapshot of any operation that has not finished yet.
const PRUNABLE: &str = "s.created_at < $1 AND s.pinned = 0 AND s.state <> 'in_progress' \
     AND s.id NOT IN (SELECT MAX(k.id) FROM snapshots k WHERE k.state = 'complete' \
       AND k.target IN (SELECT o.target FROM operations o WHERE o.action = 'allow' \
         AND o.state NOT IN ('denied', 'not_found', 'snapshot_failed', 'snapshot_pending')) \
       GROUP BY k.target) \
     AND s.id NOT IN (SELECT o.snapshot_id FROM operations o WHERE o.snapshot_id IS NOT NULL \
       AND o.state IN ('received', 'deciding', 'snapshotting', 'acting'))";

/// The snapshots created before `cutoff` (stored time form) that
/// [`prune`] would remove, oldest first.
pub async fn prune_candidates(
    pool: &Pool,
    cutoff: &str,
) -> Result<Vec<PruneCandidate>, StoreError> {
    Ok(sqlx::query_as(&format!(
        "SELECT s.id, s.campaign_id, s.target, s.state, s.created_at, \
         (SELECT COUNT(*) FROM snapshot_parts p WHERE p.snapshot_id = s.id) AS parts, \
         (SELECT CAST(COALESCE(SUM(p.chunk_count), 0) AS BIGINT) FROM snapshot_parts p WHERE p.snapshot_id = s.id) AS chunks, \
         (SELECT CAST(COALESCE(SUM(p.stored_bytes), 0) AS BIGINT) FROM snapshot_parts p WHERE p.snapshot_id = s.id) AS stored_bytes \
         FROM snapshots s WHERE {PRUNABLE} ORDER BY s.id"
    ))
    .bind(cutoff)
    .fetch_all(pool)
    .await?)
}

/// Removes the snapshots [`prune_candidates`] selects (chunks, parts, then
/// the snapshot row), one short transaction per snapshot so the gateway is
/// never held off the database for long. Each snapshot is re-checked against
/// the same condition inside its transaction; one that no longer qualifies
/// (pinned meanwhile, say) is left alone. Returns what was removed.
pub async fn prune(pool: &Pool, cutoff: &str) -> Result<Vec<PruneCandidate>, StoreError> {
    let mut removed = Vec::new();
    for candidate in prune_candidates(pool, cutoff).await? {
        if prune_one(pool, cutoff, candidate.id).await? {
            removed.push(candidate);
        }
    }
    Ok(removed)
}

async fn prune_one(pool: &Pool, cutoff: &str, snapshot_id: i64) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    // A write first: from here the transaction holds the write lock, so the
    // condition cannot change before the commit.
    let still = sqlx::query(&format!(
        "UPDATE snapshots AS s SET pinned = pinned WHERE s.id = $2 AND {PRUNABLE}"
    ))
    .bind(cutoff)
    .bind(snapshot_id)
    .execute(&mut *tx)
    .await?;
    if still.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query(
        "DELETE FROM snapshot_chunks WHERE part_id IN \
         (SELECT id FROM snapshot_parts WHERE snapshot_id = $1)",
    )
    .bind(snapshot_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM snapshot_parts WHERE snapshot_id = $1")
        .bind(snapshot_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM snapshots WHERE id = $1")
        .bind(snapshot_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

/// How many leads a snapshot's (complete, verified) leads CSV holds: its
/// records minus the header row. Reads the whole part, chunk by chunk.
pub async fn leads_in(pool: &Pool, snapshot_id: i64) -> Result<u64, StoreError> {
    let mut rows = crate::snapshot::csv_rows::CsvRows::default();
    export_part(pool, snapshot_id, PartKind::LeadsCsv, &mut rows).await?;
    Ok(rows.data_rows())
}
