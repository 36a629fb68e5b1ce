//! `safedelete audit`: the trail read back (filtered, as a table, JSON lines
//! or CSV), exported whole, and checked against its hash chain.

use std::io::Write;
use std::path::PathBuf;

use tokio::io::AsyncWriteExt;

use crate::audit::chain::{self, Checkpoint};
use crate::audit::event::COLUMNS;
use crate::audit::query::{self, Filter, Page, StoredEvent};
use crate::audit::OperationKind;
use crate::config::{Config, ProcessEnv};
use crate::db;

use super::output::{ExportError, Sink};
use super::timestamp::parse_time;
use super::{CliError, ConfigArg};

/// Records per query when exporting: memory stays bounded by one page.
const EXPORT_PAGE: u32 = 1000;

/// `safedelete audit [filters] | export | verify | checkpoint`
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: Option<AuditCommand>,
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// How many records to show.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// One JSON object per line instead of a table.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// CSV (a header row, then one row per record) instead of a table.
    #[arg(long)]
    pub csv: bool,
}

/// Which records to show; every option narrows.
#[derive(Debug, clap::Args)]
pub struct FilterArgs {
    /// Only records about this campaign.
    #[arg(long, value_name = "ID")]
    pub campaign: Option<i64>,
    /// An actor label or a key fingerprint.
    #[arg(long, value_name = "A")]
    pub actor: Option<String>,
    /// The guard's action: allowed, archived, paused, denied, refused (or
    /// the policy's allow, archive, pause, deny).
    #[arg(long, value_name = "A", value_parser = parse_action)]
    pub action: Option<String>,
    /// HTTP method, e.g. DELETE.
    #[arg(long, value_name = "M")]
    pub method: Option<String>,
    /// Status returned to the client.
    #[arg(long, value_name = "N")]
    pub status: Option<i64>,
    /// Records at or after T: RFC 3339, or an age such as 30m, 24h, 7d.
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub since: Option<String>,
    /// Records before T: RFC 3339, or an age such as 30m, 24h, 7d.
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub until: Option<String>,
}

impl From<FilterArgs> for Filter {
    fn from(a: FilterArgs) -> Filter {
        Filter {
            campaign_id: a.campaign,
            actor: a.actor,
            action: a.action,
            method: a.method,
            status: a.status,
            since: a.since,
            until: a.until,
        }
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Write the whole trail, oldest first, to a file or stdout.
    Export {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, value_enum, default_value_t = Format::Jsonl)]
        format: Format,
        /// Write here (replaced only once the export is complete); `-` or
        /// none for stdout.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Walk the hash chain and report the first record that was modified,
    /// deleted or inserted; exits non-zero if there is one.
    Verify {
        #[command(flatten)]
        config: ConfigArg,
        /// A checkpoint kept earlier (`safedelete audit checkpoint`): also
        /// prove the trail still reaches it unchanged.
        #[arg(long, value_name = "ID:HASH")]
        checkpoint: Option<Checkpoint>,
    },
    /// Print the newest record's `ID:HASH`, to keep somewhere else.
    Checkpoint {
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// `audit export --format`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// RFC 4180 CSV with a header row.
    Csv,
}

/// `--action`: the trail's words or the policy's, stored as the trail's.
fn parse_action(input: &str) -> Result<String, String> {
    crate::audit::query::parse_action(input).map(str::to_string)
}

/// Runs an `audit` command.
pub async fn run(args: AuditArgs) -> Result<(), CliError> {
    match args.command {
        None => {
            let format = match (args.json, args.csv) {
                (true, _) => Some(Format::Jsonl),
                (_, true) => Some(Format::Csv),
                _ => None,
            };
            list(&args.config, args.filter.into(), args.limit, format).await
        }
        Some(AuditCommand::Export {
            config,
            format,
            output,
        }) => {
            let output = output.filter(|p| p.as_os_str() != "-");
            let pool = open(&config).await?;
            let exported = export(&pool, format, output.as_deref()).await;
            pool.close().await;
            exported.map_err(|source| match output {
                Some(path) => CliError::AuditExportFile { path, source },
                None => CliError::AuditExportStdout(source),
            })
        }
        Some(AuditCommand::Verify { config, checkpoint }) => {
            let pool = open(&config).await?;
            let report = chain::verify(&pool, checkpoint.as_ref()).await;
            pool.close().await;
            let report = report?;
            if let Some(problem) = report.problem {
                return Err(CliError::AuditTampered {
                    problem: problem.to_string(),
                    records: report.records,
                });
            }
            let mut out = std::io::stdout().lock();
            write!(out, "OK: {} chained records verified", report.records)?;
            if report.unchained > 0 {
                write!(
                    out,
                    " ({} older records predate the chain and were skipped)",
                    report.unchained
                )?;
            }
            writeln!(out)?;
            // The chain is intact, but it also says where records were lost.
            if !report.gaps.is_empty() {
                writeln!(
                    out,
                    "{} gap record{} (audit records lost, recorded when writing resumed):",
                    report.gaps.len(),
                    if report.gaps.len() == 1 { "" } else { "s" }
                )?;
                for (id, detail) in &report.gaps {
                    writeln!(out, "  #{id}: {detail}")?;
                }
            }
            if let Some(cp) = checkpoint {
                writeln!(out, "checkpoint {cp} is intact")?;
            }
            if let Some(head) = report.head {
                writeln!(out, "newest: {head}")?;
            }
            Ok(())
        }
        Some(AuditCommand::Checkpoint { config }) => {
            // Never certify a chain that does not verify.
            let pool = open(&config).await?;
            let report = chain::verify(&pool, None).await;
            pool.close().await;
            let report = report?;
            if let Some(problem) = report.problem {
                return Err(CliError::AuditTampered {
                    problem: problem.to_string(),
                    records: report.records,
                });
            }
            match report.head {
                Some(cp) => {
                    println!("{cp}");
                    Ok(())
                }
                None => Err(CliError::NoChain),
            }
        }
    }
}

/// Every `audit` command only reads, so each works on a read-only copy.
async fn open(arg: &ConfigArg) -> Result<crate::db::Pool, CliError> {
    let config = Config::load(arg.config.as_deref(), &ProcessEnv)?;
    Ok(db::open_read_only(&config.database.store).await?)
}

async fn list(
    arg: &ConfigArg,
    filter: Filter,
    limit: u32,
    format: Option<Format>,
) -> Result<(), CliError> {
    let pool = open(arg).await?;
    let events = query::list(&pool, &filter, Page::NewestFirst { before: None }, limit).await;
    pool.close().await;
    let events = events?;
    let mut out = std::io::stdout().lock();
    match format {
        Some(Format::Jsonl) => {
            for e in &events {
                write_json_line(&mut out, e)?;
            }
        }
        Some(Format::Csv) => {
            write_csv_header(&mut out)?;
            for e in &events {
                write_csv_row(&mut out, e)?;
            }
        }
        None => write_table(&mut out, &events)?,
    }
    out.flush()?;
    Ok(())
}

/// Streams the whole trail, oldest first, one page at a time.
async fn export(
    pool: &crate::db::Pool,
    format: Format,
    path: Option<&std::path::Path>,
) -> Result<(), ExportError> {
    let mut sink = Sink::create(path).await?;
    match write_pages(pool, format, &mut sink).await {
        Ok(()) => sink.commit().await,
        Err(err) => {
            sink.abandon().await;
            Err(err)
        }
    }
}

async fn write_pages(
    pool: &crate::db::Pool,
    format: Format,
    sink: &mut Sink,
) -> Result<(), ExportError> {
    let write_error = |sink: &Sink, source| ExportError::Write {
        path: sink.written_path(),
        source,
    };
    let mut buf = Vec::new();
    if let Format::Csv = format {
        write_csv_header(&mut buf).map_err(|e| write_error(sink, e))?;
    }
    let filter = Filter::default();
    let mut after = None;
    loop {
        let page = query::list(pool, &filter, Page::OldestFirst { after }, EXPORT_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for e in &page {
            match format {
                Format::Jsonl => write_json_line(&mut buf, e),
                Format::Csv => write_csv_row(&mut buf, e),
            }
            .map_err(|e| write_error(sink, e))?;
        }
        let written = sink.file().write_all(&buf).await;
        written.map_err(|e| write_error(sink, e))?;
        buf.clear();
    }
    if !buf.is_empty() {
        let written = sink.file().write_all(&buf).await;
        written.map_err(|e| write_error(sink, e))?;
    }
    Ok(())
}

fn write_json_line(out: &mut impl Write, e: &StoredEvent) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, e).map_err(std::io::Error::other)?;
    out.write_all(b"\n")
}

fn write_csv_header(out: &mut impl Write) -> std::io::Result<()> {
    write_csv_record(out, COLUMNS.iter().map(|c| c.to_string()))
}

/// Every column of the record, in table order; absent values are empty.
fn write_csv_row(out: &mut impl Write, e: &StoredEvent) -> std::io::Result<()> {
    write_csv_record(out, e.values().into_iter().map(|v| v.to_string()))
}

/// One RFC 4180 record: fields holding a comma, quote or line break are
/// quoted with inner quotes doubled; records end in CRLF.
fn write_csv_record(
    out: &mut impl Write,
    fields: impl Iterator<Item = String>,
) -> std::io::Result<()> {
    for (i, field) in fields.enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        // A cell a spreadsheet would run as a formula (paths and user agents
        // come from clients) is defused with a leading apostrophe.
        let field = if field.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            format!("'{field}")
        } else {
            field
        };
        if field.contains([',', '"', '\r', '\n']) {
            write!(out, "\"{}\"", field.replace('"', "\"\""))?;
        } else {
            out.write_all(field.as_bytes())?;
        }
    }
    out.write_all(b"\r\n")
}

fn write_table(out: &mut impl Write, events: &[StoredEvent]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:>7}  {:<24}  {:<7}  {:>6}  {:<8}  {:>9}  {:<16}  {:<23}  TARGET",
        "ID", "TIME", "METHOD", "STATUS", "ACTION", "MS", "ACTOR", "ERROR"
    )?;
    for e in events {
        let mut target = match &e.query {
            Some(q) => format!("{}?{}", e.path, q),
            None => e.path.clone(),
        };
        if let Some(detail) = &e.detail {
            // A gap record has no target; its detail is the point.
            target = if e.operation == OperationKind::AuditGap.as_str() {
                detail.clone()
            } else {
                format!("{target} ({detail})")
            };
        }
        writeln!(
            out,
            "{:>7}  {:<24}  {:<7}  {:>6}  {:<8}  {:>9.1}  {:<16}  {:<23}  {}",
            e.id,
            e.time,
            e.method,
            e.status,
            e.action.as_deref().unwrap_or("-"),
            e.duration_ms,
            actor(e),
            e.error_kind.as_deref().unwrap_or("-"),
            target
        )?;
    }
    Ok(())
}

/// Who, for the table: the key's name or `[[actors]]` label when there is
/// one, else the key's fingerprint.
fn actor(e: &StoredEvent) -> &str {
    match e.actor_label.as_deref() {
        Some(label) if label != crate::guard::policy::UNKNOWN_ACTOR => label,
        _ => e.actor_fingerprint.as_deref().unwrap_or("-"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_they_must_be() {
        let mut out = Vec::new();
        let fields = ["plain", "a,b", "say \"hi\"", "two\nlines", ""];
        write_csv_record(&mut out, fields.iter().map(|f| f.to_string())).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",\r\n"
        );
    }

    #[test]
    fn audit_with_flags_and_no_subcommand_still_parses() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([
            "safedelete",
            "audit",
            "--json",
            "--limit",
            "3",
            "--config",
            "f.toml",
        ])
        .unwrap();
        let crate::cli::Command::Audit(args) = cli.command else {
            panic!("not audit")
        };
        assert!(args.json && args.command.is_none() && args.limit == 3);
        assert!(args.config.config.is_some());

        let cli = crate::cli::Cli::try_parse_from([
            "safedelete",
            "audit",
            "export",
            "--format",
            "csv",
            "-o",
            "-",
            "--config",
            "f.toml",
        ])
        .unwrap();
        let crate::cli::Command::Audit(args) = cli.command else {
            panic!("not audit")
        };
        assert!(matches!(args.command, Some(AuditCommand::Export { .. })));
    }
}
