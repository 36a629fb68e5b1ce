//! `safedelete snapshots export`: snapshot parts written out, decompressed
//! and checksum-verified, to stdout, a file, or every part into a directory;
//! files 0600 and created directories 0700, since parts hold leads' personal
//! data.

use std::path::{Path, PathBuf};

use crate::db::Pool;

use crate::snapshot::store::{self, PartKind};

use super::output::{ExportError, Sink};
use super::CliError;

/// One part to `path`, or streamed to stdout. A file only ever appears
/// complete and verified; on stdout the bytes go out as they are verified
/// chunk by chunk, so a checksum failure can only be reported after the fact.
pub async fn export_one(
    pool: &Pool,
    snapshot_id: i64,
    kind: PartKind,
    path: Option<&Path>,
) -> Result<(), CliError> {
    match path {
        Some(path) => export_to_file(pool, snapshot_id, kind, path).await,
        None => {
            let mut sink = Sink::create(None)
                .await
                .map_err(|source| CliError::ExportFile {
                    snapshot_id,
                    kind,
                    path: PathBuf::from("stdout"),
                    source,
                })?;
            store::export_part(pool, snapshot_id, kind, sink.file())
                .await
                .map_err(|source| CliError::ExportStdout {
                    snapshot_id,
                    kind,
                    source,
                })?;
            Ok(())
        }
    }
}

async fn export_to_file(
    pool: &Pool,
    snapshot_id: i64,
    kind: PartKind,
    path: &Path,
) -> Result<(), CliError> {
    let written = async {
        let mut sink = Sink::create(Some(path)).await?;
        match store::export_part(pool, snapshot_id, kind, sink.file()).await {
            Ok(_) => sink.commit().await,
            Err(err) => {
                sink.abandon().await;
                Err(ExportError::Store(err))
            }
        }
    };
    written.await.map_err(|source| CliError::ExportFile {
        snapshot_id,
        kind,
        path: path.to_path_buf(),
        source,
    })
}

/// Mode of directories `export` creates (existing ones are left as they are).
const EXPORT_DIR_MODE: u32 = 0o700;

/// Every complete part into `dir` (created 0700 if missing), each under
/// [`PartKind::file_name`] and each through its own temporary file, 0600;
/// parts that are not complete are named on stderr and skipped.
pub async fn export_all(pool: &Pool, snapshot_id: i64, dir: &Path) -> Result<(), CliError> {
    if dir.is_file() {
        return Err(CliError::ExportDirIsFile {
            path: dir.to_path_buf(),
        });
    }
    let snapshot = store::get_snapshot(pool, snapshot_id)
        .await
        .map_err(CliError::Snapshots)?;
    tokio::fs::DirBuilder::new()
        .recursive(true)
        .mode(EXPORT_DIR_MODE)
        .create(dir)
        .await
        .map_err(|source| CliError::ExportDir {
            path: dir.to_path_buf(),
            source,
        })?;
    for part in &snapshot.parts {
        let Some(kind) = PartKind::parse(&part.kind) else {
            eprintln!("skipped part {:?}: unknown kind", part.kind);
            continue;
        };
        if part.state != "complete" {
            eprintln!("skipped part {kind}: {}", part.state);
            continue;
        }
        let path = dir.join(kind.file_name(&snapshot.file_stem()));
        export_to_file(pool, snapshot_id, kind, &path).await?;
        println!("{}  {} bytes", path.display(), part.bytes);
    }
    Ok(())
}
