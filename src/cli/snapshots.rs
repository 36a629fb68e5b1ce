//! `safedelete snapshots ...`: reading back what the guard captured (list,
//! show, export) from the same database `serve` writes; verify, pin and
//! prune live in [`super::upkeep`], writing parts out in [`super::extract`].

use std::io::Write as _;
use std::path::PathBuf;

use crate::db::Pool;
use clap::builder::{PossibleValuesParser, TypedValueParser};

use crate::config::{Config, ProcessEnv};
use crate::db;
use crate::guard::operations::Op;
use crate::snapshot::store::{self, PartKind, SnapshotFilter, SnapshotInfo};

use super::extract::{export_all, export_one};
use super::timestamp::{parse_age, Age};
use super::{upkeep, CliError, ConfigArg};

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
        /// Only snapshots taken for this operation (`campaign.delete`,
        /// `campaign.lead.delete`, ...).
        #[arg(long, value_name = "NAME", value_parser = operation_name())]
        operation: Option<String>,
        /// Only snapshots of this lead, email account, list or other object
        /// (its own id).
        #[arg(long, value_name = "ID")]
        target_id: Option<i64>,
        /// Only snapshots in this state (complete, failed, incomplete, in_progress).
        #[arg(long)]
        state: Option<String>,
        /// How many snapshots to show.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// One JSON object per snapshot (with its parts) per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One snapshot in detail: its parts (content type, sizes, chunks,
    /// SHA-256, state), whether it is pinned, and how many leads it holds.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(value_name = "ID")]
        id: i64,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write parts of a snapshot, decompressed and checksum-verified: one
    /// part (`--part`, default leads_csv) to a file or stdout, or, with `-o
    /// DIR` and no `--part`, every complete part into DIR.
    Export {
        #[command(flatten)]
        config: ConfigArg,
        /// The snapshot id (`x-safedelete-snapshot-id`, or `snapshots list`).
        #[arg(value_name = "ID")]
        id: i64,
        /// Which part.
        #[arg(long, value_name = "PART", value_parser = part_kind())]
        part: Option<PartKind>,
        /// With `--part`: the file to write (replaced only once the whole
        /// part has been verified). Without: the directory to export every
        /// part into (created if missing).
        #[arg(long, short = 'o', value_name = "FILE|DIR")]
        output: Option<PathBuf>,
    },
    /// Re-read and check every chunk of every complete part, of one snapshot
    /// or of all; exits non-zero if any part fails.
    Verify {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(value_name = "ID")]
        id: Option<i64>,
    },
    /// Keep a snapshot whatever its age: `prune` never removes it.
    Pin {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(value_name = "ID")]
        id: i64,
    },
    /// Let `prune` remove a snapshot again once it is old enough.
    Unpin {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(value_name = "ID")]
        id: i64,
    },
    /// Remove snapshots older than an age, except pinned ones and the newest
    /// complete snapshot of each campaign that was really deleted.
    Prune {
        #[command(flatten)]
        config: ConfigArg,
        /// e.g. 90d, 12w, 720h.
        #[arg(long, value_name = "AGE", value_parser = parse_age)]
        older_than: Age,
        /// List what would be removed, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Accepts exactly the stored part names, so a typo is refused by clap with
/// the list of valid names (and shell completion knows them).
/// Operation names from the table.
fn operation_name() -> PossibleValuesParser {
    PossibleValuesParser::new(Op::all().map(Op::name))
}

fn part_kind() -> impl TypedValueParser<Value = PartKind> {
    PossibleValuesParser::new(PartKind::ALL.iter().map(|k| k.as_str())).map(|name| {
        PartKind::parse(&name).expect("the parser only passes names taken from PartKind::ALL")
    })
}

/// Runs a `snapshots` command.
pub async fn run(command: SnapshotsCommand) -> Result<(), CliError> {
    let (config, action) = split(command);
    let pool = open(config, action.writes()).await?;
    let result = run_on(&pool, action).await;
    pool.close().await;
    result
}

/// A command without its config, run on an open pool.
enum Action {
    List {
        campaign: Option<i64>,
        operation: Option<String>,
        target_id: Option<i64>,
        state: Option<String>,
        limit: u32,
        json: bool,
    },
    Show {
        id: i64,
        json: bool,
    },
    Export {
        id: i64,
        part: Option<PartKind>,
        output: Option<PathBuf>,
    },
    Verify {
        id: Option<i64>,
    },
    Pin {
        id: i64,
        pinned: bool,
    },
    Prune {
        older_than: Age,
        dry_run: bool,
    },
}

impl Action {
    /// Pin, unpin and prune change the database; the rest only read it, so
    /// they open it read-only and work on a read-only copy too.
    fn writes(&self) -> bool {
        matches!(
            self,
            Action::Pin { .. } | Action::Prune { dry_run: false, .. }
        )
    }
}

fn split(command: SnapshotsCommand) -> (ConfigArg, Action) {
    use SnapshotsCommand as C;
    match command {
        C::List {
            config,
            campaign,
            operation,
            target_id,
            state,
            limit,
            json,
        } => (
            config,
            Action::List {
                campaign,
                operation,
                target_id,
                state,
                limit,
                json,
            },
        ),
        C::Show { config, id, json } => (config, Action::Show { id, json }),
        C::Export {
            config,
            id,
            part,
            output,
        } => (config, Action::Export { id, part, output }),
        C::Verify { config, id } => (config, Action::Verify { id }),
        C::Pin { config, id } => (config, Action::Pin { id, pinned: true }),
        C::Unpin { config, id } => (config, Action::Pin { id, pinned: false }),
        C::Prune {
            config,
            older_than,
            dry_run,
        } => (
            config,
            Action::Prune {
                older_than,
                dry_run,
            },
        ),
    }
}

async fn run_on(pool: &Pool, action: Action) -> Result<(), CliError> {
    match action {
        Action::List {
            campaign,
            operation,
            target_id,
            state,
            limit,
            json,
        } => {
            let filter = SnapshotFilter {
                campaign_id: campaign,
                state: state.as_deref(),
                operation: operation.as_deref(),
                target_id,
            };
            list(pool, &filter, limit, json).await
        }
        Action::Show { id, json } => show(pool, id, json).await,
        Action::Export {
            id,
            part: Some(part),
            output,
        } => export_one(pool, id, part, output.as_deref()).await,
        // Every part when -o names a directory (existing, or written with a
        // trailing slash); otherwise the leads CSV to that file, as before.
        Action::Export {
            id,
            part: None,
            output: Some(out),
        } if out.is_dir() || out.as_os_str().to_string_lossy().ends_with('/') => {
            export_all(pool, id, &out).await
        }
        Action::Export {
            id,
            part: None,
            output: Some(file),
        } => export_one(pool, id, PartKind::LeadsCsv, Some(&file)).await,
        // The leads are what people come back for.
        Action::Export {
            id,
            part: None,
            output: None,
        } => export_one(pool, id, PartKind::LeadsCsv, None).await,
        Action::Verify { id } => upkeep::verify(pool, id).await,
        Action::Pin { id, pinned } => upkeep::pin(pool, id, pinned).await,
        Action::Prune {
            older_than,
            dry_run,
        } => upkeep::prune(pool, older_than, dry_run).await,
    }
}

async fn open(arg: ConfigArg, writes: bool) -> Result<Pool, CliError> {
    let config = Config::load(arg.config.as_deref(), &ProcessEnv)?;
    let pool = if writes {
        db::open_existing(&config.database.store).await?
    } else {
        db::open_read_only(&config.database.store).await?
    };
    Ok(pool)
}

async fn list(
    pool: &Pool,
    filter: &SnapshotFilter<'_>,
    limit: u32,
    json: bool,
) -> Result<(), CliError> {
    let snapshots = store::list_snapshots_where(pool, filter, limit)
        .await
        .map_err(CliError::Snapshots)?;
    let mut out = std::io::stdout().lock();
    if json {
        for s in &snapshots {
            let line = serde_json::to_string(s).map_err(std::io::Error::other)?;
            writeln!(out, "{line}")?;
        }
    } else {
        write_table(&mut out, &snapshots)?;
    }
    out.flush()?;
    Ok(())
}

fn write_table(out: &mut impl std::io::Write, snapshots: &[SnapshotInfo]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:>7}  {:<24}  {:<28}  {:<11}  {:<24}  {:>5}  {:>12}  {:>12}  {:>9}  PINNED",
        "ID", "OPERATION", "TARGET", "STATE", "CREATED", "PARTS", "BYTES", "STORED", "LEADS"
    )?;
    for s in snapshots {
        let complete = s.parts.iter().filter(|p| p.state == "complete").count();
        let bytes: i64 = s.parts.iter().map(|p| p.bytes).sum();
        let stored: i64 = s.parts.iter().map(|p| p.stored_bytes).sum();
        let leads = s.leads.map_or("-".to_string(), |n| n.to_string());
        writeln!(
            out,
            "{:>7}  {:<24}  {:<28}  {:<11}  {:<24}  {:>5}  {:>12}  {:>12}  {:>9}  {}",
            s.id,
            s.operation,
            s.target,
            s.state,
            s.created_at,
            format!("{complete}/{}", s.parts.len()),
            bytes,
            stored,
            leads,
            if s.pinned { "yes" } else { "no" }
        )?;
    }
    Ok(())
}

async fn show(pool: &Pool, id: i64, json: bool) -> Result<(), CliError> {
    let s = store::get_snapshot(pool, id)
        .await
        .map_err(CliError::Snapshots)?;
    let pinned = store::is_pinned(pool, id)
        .await
        .map_err(CliError::Snapshots)?;
    // Counting means reading the whole part; a damaged one is reported, not fatal.
    let leads_complete = s
        .parts
        .iter()
        .any(|p| p.kind == PartKind::LeadsCsv.as_str() && p.state == "complete");
    let leads = if leads_complete {
        Some(store::leads_in(pool, id).await)
    } else {
        None
    };
    let mut out = std::io::stdout().lock();
    if json {
        let mut value = serde_json::to_value(&s).map_err(std::io::Error::other)?;
        value["leads"] = match &leads {
            Some(Ok(n)) => (*n).into(),
            _ => serde_json::Value::Null,
        };
        writeln!(out, "{value}")?;
        out.flush()?;
        return Ok(());
    }
    writeln!(out, "snapshot {}  {} of {}", s.id, s.operation, s.target)?;
    writeln!(out, "  state:      {}", s.state)?;
    writeln!(out, "  pinned:     {}", if pinned { "yes" } else { "no" })?;
    writeln!(out, "  created:    {}", s.created_at)?;
    if let Some(done) = &s.completed_at {
        writeln!(out, "  completed:  {done}")?;
    }
    if let Some(op) = s.operation_id {
        writeln!(out, "  operation:  {op}")?;
    }
    if let Some(error) = &s.error {
        writeln!(out, "  error:      {error}")?;
    }
    match leads {
        Some(Ok(n)) => writeln!(out, "  leads:      {n}")?,
        Some(Err(err)) => writeln!(out, "  leads:      unreadable ({err})")?,
        None => writeln!(out, "  leads:      - (no complete leads_csv part)")?,
    }
    writeln!(out, "  parts:")?;
    for p in &s.parts {
        writeln!(out, "    {}", p.kind)?;
        writeln!(out, "      state:         {}", p.state)?;
        writeln!(
            out,
            "      content type:  {}",
            p.content_type.as_deref().unwrap_or("-")
        )?;
        if let Some(status) = p.upstream_status {
            writeln!(out, "      upstream:      {status}")?;
        }
        writeln!(out, "      bytes:         {}", p.bytes)?;
        writeln!(out, "      stored bytes:  {}", p.stored_bytes)?;
        writeln!(out, "      chunks:        {}", p.chunks)?;
        writeln!(
            out,
            "      sha256:        {}",
            p.sha256.as_deref().unwrap_or("-")
        )?;
    }
    out.flush()?;
    Ok(())
}
