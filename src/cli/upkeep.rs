//! `safedelete snapshots verify | pin | unpin | prune`: looking after the
//! stored snapshots. The database work is in `snapshot::store::manage`; this
//! file prints it.

use crate::db::Pool;

use crate::snapshot::store::{self, PartOutcome};

use super::timestamp::{ago, Age};
use super::CliError;

/// Verifies one snapshot or all, one line per part; any failure makes the
/// command fail after every part has been checked.
pub async fn verify(pool: &Pool, id: Option<i64>) -> Result<(), CliError> {
    let ids = match id {
        Some(id) => vec![id],
        None => store::all_snapshot_ids(pool)
            .await
            .map_err(CliError::Snapshots)?,
    };
    let (mut checked, mut failed) = (0usize, 0usize);
    for id in ids {
        let checks = store::verify_snapshot(pool, id)
            .await
            .map_err(CliError::Snapshots)?;
        for c in checks {
            let prefix = format!("snapshot {} part {}", c.snapshot_id, c.kind);
            match c.outcome {
                PartOutcome::Ok { bytes, chunks } => {
                    checked += 1;
                    println!("{prefix}: OK ({bytes} bytes in {chunks} chunks)");
                }
                PartOutcome::Failed(err) => {
                    checked += 1;
                    failed += 1;
                    println!("{prefix}: FAILED: {err}");
                }
                PartOutcome::Skipped { state } => {
                    println!("{prefix}: skipped ({state}, nothing to verify)");
                }
            }
        }
    }
    if failed > 0 {
        return Err(CliError::SnapshotsDamaged { failed, checked });
    }
    Ok(())
}

/// Pins or unpins a snapshot.
pub async fn pin(pool: &Pool, id: i64, pinned: bool) -> Result<(), CliError> {
    let changed = store::set_pinned(pool, id, pinned)
        .await
        .map_err(CliError::Snapshots)?;
    let state = if pinned { "pinned" } else { "not pinned" };
    if changed {
        println!("snapshot {id} is now {state}");
    } else {
        println!("snapshot {id} was already {state}");
    }
    Ok(())
}

/// Lists (dry run) or removes the snapshots older than `older_than` that
/// may go; both use the same selection.
pub async fn prune(pool: &Pool, older_than: Age, dry_run: bool) -> Result<(), CliError> {
    let cutoff = ago(older_than.0);
    let selected = if dry_run {
        store::prune_candidates(pool, &cutoff).await
    } else {
        store::prune(pool, &cutoff).await
    }
    .map_err(CliError::Snapshots)?;
    let verb = if dry_run { "would remove" } else { "removed" };
    for s in &selected {
        println!(
            "{verb} snapshot {} ({}, {}, created {}, {} parts, {} stored bytes)",
            s.id, s.target, s.state, s.created_at, s.parts, s.stored_bytes
        );
    }
    let freed: i64 = selected.iter().map(|s| s.stored_bytes).sum();
    println!(
        "{verb} {} snapshot{} created before {cutoff} ({freed} stored bytes); \
         pinned snapshots and the last copy of each deleted campaign are kept",
        selected.len(),
        if selected.len() == 1 { "" } else { "s" }
    );
    Ok(())
}
