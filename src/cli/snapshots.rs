//! `safedelete snapshots list` and `safedelete snapshots export`: reading back
//! what the guard captured, from the same database `serve` writes.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::builder::{PossibleValuesParser, TypedValueParser};
use sqlx::SqlitePool;

use crate::config::{Config, ProcessEnv};
use crate::db;
use crate::snapshot::store::{self, PartKind, SnapshotInfo, StoreError};

use super::{CliError, ConfigArg};

/// `safedelete snapshots ...`
#[derive(Debug, clap::Subcommand)]
pub enum SnapshotsCommand {
    /// List snapshots, newest first.
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this campaign's snapshots.
        #[arg(long, value_name = "ID")]
        campaign: Option<i64>,
        /// How many snapshots to show.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// One JSON object per snapshot (with its parts) per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write one part of a snapshot, decompressed and checksum-verified, to a
    /// file or stdout.
    Export {
        #[command(flatten)]
        config: ConfigArg,
        /// The snapshot id (`x-safedelete-snapshot-id`, or `snapshots list`).
        #[arg(value_name = "ID")]
        id: i64,
        /// Which part.
        #[arg(long, value_name = "PART", default_value = "leads_csv", value_parser = part_kind())]
        part: PartKind,
        /// Write here (replaced only once the whole part has been verified)
        /// instead of stdout.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// Why exporting to a file failed; the file itself is never touched then.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot create {}", .path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot flush {} to disk", .path.display())]
    Sync {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot rename {} to {}", .from.display(), .to.display())]
    Rename {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Accepts exactly the stored part names, so a typo is refused by clap with
/// the list of valid names (and shell completion knows them).
fn part_kind() -> impl TypedValueParser<Value = PartKind> {
    PossibleValuesParser::new(PartKind::ALL.map(PartKind::as_str)).map(|name| {
        PartKind::parse(&name).expect("the parser only passes names taken from PartKind::ALL")
    })
}

/// Runs a `snapshots` command.
pub async fn run(command: SnapshotsCommand) -> Result<(), CliError> {
    match command {
        SnapshotsCommand::List {
            config,
            campaign,
            limit,
            json,
        } => {
            let pool = open(&config).await?;
            let snapshots = store::list_snapshots(&pool, campaign, limit).await;
            pool.close().await;
            list(&snapshots.map_err(CliError::Snapshots)?, json)
        }
        SnapshotsCommand::Export {
            config,
            id,
            part,
            output,
        } => {
            let pool = open(&config).await?;
            let exported = match &output {
                Some(path) => export_to_file(&pool, id, part, path).await,
                None => export_to_stdout(&pool, id, part).await,
            };
            pool.close().await;
            exported
        }
    }
}

async fn open(arg: &ConfigArg) -> Result<SqlitePool, CliError> {
    let config = Config::load(arg.config.as_deref(), &ProcessEnv)?;
    Ok(db::open_existing(&config.database).await?)
}

fn list(snapshots: &[SnapshotInfo], json: bool) -> Result<(), CliError> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if json {
        for s in snapshots {
            let line = serde_json::to_string(s).map_err(std::io::Error::other)?;
            writeln!(out, "{line}")?;
        }
    } else {
        write_table(&mut out, snapshots)?;
    }
    Ok(())
}

fn write_table(out: &mut impl std::io::Write, snapshots: &[SnapshotInfo]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:>7}  {:>10}  {:<11}  {:<24}  {:>5}  {:>12}  {:>12}",
        "ID", "CAMPAIGN", "STATE", "CREATED", "PARTS", "BYTES", "STORED"
    )?;
    for s in snapshots {
        let complete = s.parts.iter().filter(|p| p.state == "complete").count();
        let bytes: i64 = s.parts.iter().map(|p| p.bytes).sum();
        let stored: i64 = s.parts.iter().map(|p| p.stored_bytes).sum();
        writeln!(
            out,
            "{:>7}  {:>10}  {:<11}  {:<24}  {:>5}  {:>12}  {:>12}",
            s.id,
            s.campaign_id,
            s.state,
            s.created_at,
            format!("{complete}/{}", s.parts.len()),
            bytes,
            stored
        )?;
    }
    Ok(())
}

/// Exports into `FILE.partial` beside `path`, then renames it over `path`, so
/// `path` only ever holds a complete, verified part; on any failure the
/// temporary file is removed and `path` is left as it was.
async fn export_to_file(
    pool: &SqlitePool,
    snapshot_id: i64,
    kind: PartKind,
    path: &Path,
) -> Result<(), CliError> {
    let temp = partial_path(path);
    let result = write_verified(pool, snapshot_id, kind, &temp, path).await;
    if result.is_err() {
        // Best effort: the export error is what the operator needs to see.
        let _ = tokio::fs::remove_file(&temp).await;
    }
    result.map_err(|source| CliError::ExportFile {
        snapshot_id,
        kind,
        path: path.to_path_buf(),
        source,
    })
}

async fn write_verified(
    pool: &SqlitePool,
    snapshot_id: i64,
    kind: PartKind,
    temp: &Path,
    path: &Path,
) -> Result<(), ExportError> {
    let mut file = tokio::fs::File::create(temp)
        .await
        .map_err(|source| ExportError::Create {
            path: temp.to_path_buf(),
            source,
        })?;
    store::export_part(pool, snapshot_id, kind, &mut file).await?;
    // On disk before the rename, so a crash cannot leave `path` short.
    file.sync_all().await.map_err(|source| ExportError::Sync {
        path: temp.to_path_buf(),
        source,
    })?;
    drop(file);
    tokio::fs::rename(temp, path)
        .await
        .map_err(|source| ExportError::Rename {
            from: temp.to_path_buf(),
            to: path.to_path_buf(),
            source,
        })
}

/// `FILE.partial`, in the same directory so the final rename stays on one
/// filesystem (and so is atomic).
fn partial_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".partial");
    PathBuf::from(name)
}

/// Streams straight to stdout: bytes go out as they are verified chunk by
/// chunk, so a checksum failure can only be reported after the fact.
async fn export_to_stdout(
    pool: &SqlitePool,
    snapshot_id: i64,
    kind: PartKind,
) -> Result<(), CliError> {
    let mut stdout = async_stdout()?;
    store::export_part(pool, snapshot_id, kind, &mut stdout)
        .await
        .map_err(|source| CliError::ExportStdout {
            snapshot_id,
            kind,
            source,
        })?;
    Ok(())
}

/// Stdout as an async file: a duplicate of descriptor 1, written from tokio's
/// blocking pool (the crate does not enable tokio's `io-std`). Nothing else
/// writes to stdout during an export, so std's buffer is never interleaved.
fn async_stdout() -> std::io::Result<tokio::fs::File> {
    use std::os::fd::AsFd;
    let fd = std::io::stdout().as_fd().try_clone_to_owned()?;
    Ok(tokio::fs::File::from_std(std::fs::File::from(fd)))
}
