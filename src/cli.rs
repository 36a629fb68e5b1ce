//! The command line: `serve`, `check-config`, `health`, `audit`, `history`,
//! `keys`, `policy` and `snapshots`, all resolving the config (and so the database)
//! the same way.
//!
//! This file holds the command table, [`CliError`] and the gateway-facing
//! commands; the submodules hold the operator commands (`extract` is
//! `snapshots export`, `upkeep` is `snapshots verify/pin/prune`; `output` and
//! `timestamp` are shared).

mod audit;
mod extract;
mod history;
mod keys;
mod migrate_store;
mod output;
mod policy;
mod restore;
mod snapshots;
mod timestamp;
mod tls;
mod upkeep;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{unknown_variables, Config, ConfigError, ProcessEnv};
use crate::db::DbError;
use crate::guard::history::HistoryError;
use crate::server::{self, Listeners, ServeError};
use crate::snapshot::store::{PartKind, StoreError};

pub use audit::{AuditArgs, AuditCommand};
pub use history::HistoryArgs;
pub use keys::KeysCommand;
pub use output::ExportError;
pub use policy::PolicyCommand;
pub use restore::RestoreArgs;
pub use snapshots::SnapshotsCommand;
pub use tls::{TlsCliError, TlsCommand};

/// safedelete: a drop-in gateway for the SmartLead API that captures campaign
/// data before anything is deleted, and audits every request.
#[derive(Debug, Parser)]
#[command(name = "safedelete", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve(ConfigArg),
    /// Validate the config and print the effective settings, secrets masked.
    CheckConfig(ConfigArg),
    /// Ask a running gateway's admin listener whether it is ready; exits 0 if
    /// so (for container health checks).
    Health {
        #[command(flatten)]
        config: ConfigArg,
        /// Admin base URL (default: from the config's admin.listen).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
    /// List audit records, newest first, filtered; or export the whole
    /// trail, verify its hash chain, print a checkpoint.
    Audit(AuditArgs),
    /// Everything the gateway did about one campaign, oldest first.
    History(HistoryArgs),
    /// Rebuild a deleted campaign from its snapshot as a new campaign
    /// (`--dry-run`: the plan, every call, no call made).
    Restore(RestoreArgs),
    /// Create, list, revoke and rotate the gateway keys people and tools
    /// hold instead of the SmartLead key.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Ask the configured deletion policy what it would decide, offline.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// List, show, export, verify, pin and prune the campaign snapshots the
    /// gateway captured.
    Snapshots {
        #[command(subcommand)]
        command: SnapshotsCommand,
    },
    /// Copy a store (a SQLite file) into an empty one (a PostgreSQL
    /// database several gateways share), verified; resumable.
    MigrateStore(migrate_store::MigrateStoreArgs),
    /// A private CA and certificate for tools that cannot change their base URL.
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
}

#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// Config file (default: config/safedelete.toml if present, else built-in defaults).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// A command that failed; `main` prints it with its chain of causes (so no
/// message here repeats its source) and exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Tls(#[from] TlsCliError),
    #[error(transparent)]
    MigrateStore(#[from] crate::migrate_store::CopyError),
    #[error("{flag} {problem}")]
    StoreArg { flag: &'static str, problem: String },
    #[error("cannot read the audit trail")]
    Query(#[from] sqlx::Error),
    #[error("cannot write output")]
    Output(#[from] std::io::Error),
    #[error("gateway at {url} is not ready")]
    NotReady {
        url: String,
        #[source]
        source: HealthError,
    },
    #[error("cannot read the snapshots")]
    Snapshots(#[source] StoreError),
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error("no record of {subject}")]
    UnknownSubject {
        subject: crate::guard::history::Subject,
    },
    /// The target file is left as it was (the export went to a temporary file).
    #[error("cannot export the audit trail to {} (left unchanged)", .path.display())]
    AuditExportFile {
        path: PathBuf,
        #[source]
        source: ExportError,
    },
    #[error("export of the audit trail failed; discard what was written to stdout")]
    AuditExportStdout(#[source] ExportError),
    #[error("the audit trail fails verification after {records} good records: {problem}")]
    AuditTampered { problem: String, records: u64 },
    #[error("the audit trail has no chained records yet")]
    NoChain,
    #[error("{failed} of {checked} snapshot parts failed verification")]
    SnapshotsDamaged { failed: usize, checked: usize },
    #[error("{} is a file: name a --part to export one part to a file, or give a directory to export every part", .path.display())]
    ExportDirIsFile { path: PathBuf },
    #[error("cannot create the export directory {}", .path.display())]
    ExportDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `path` is left as it was: the export went to a temporary file that is
    /// removed again.
    #[error("cannot export part {kind} of snapshot {snapshot_id} to {} (left unchanged)", .path.display())]
    ExportFile {
        snapshot_id: i64,
        kind: PartKind,
        path: PathBuf,
        #[source]
        source: ExportError,
    },
    /// Bytes already written to stdout cannot be taken back, so the message
    /// says to discard them.
    #[error("export of part {kind} of snapshot {snapshot_id} failed; discard what was written to stdout")]
    ExportStdout {
        snapshot_id: i64,
        kind: PartKind,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    Key(#[from] crate::identity::manage::KeyActionError),
    #[error(transparent)]
    RestoreSource(#[from] crate::restore::SourceError),
    #[error(transparent)]
    Undo(#[from] crate::restore::UndoError),
    #[error("--name must not be empty (leave it out to keep the original's name)")]
    RestoreName,
    #[error("{flag} does not apply here: {why}")]
    RestoreOption {
        flag: &'static str,
        why: &'static str,
    },
    #[error("--dry-run needs a SNAPSHOT_ID (a resumed restore has no plan of its own to show)")]
    RestoreResumeDryRun,
    #[error(transparent)]
    Restore(#[from] crate::restore::RunError),
    #[error("cannot restore: {0}")]
    RestoreKey(String),
    #[error("cannot restore: {0}")]
    RestoreSetup(String),
    #[error("not started: standard input is not a terminal to ask on; add --yes to restore without asking")]
    RestoreConfirm,
    #[error("not started; nothing was sent to SmartLead")]
    RestoreDeclined,
    /// The key action is done and stays done; only its record is missing.
    #[error("{done} gateway key {name:?}, but could not write the audit record of it")]
    KeyAudit {
        done: &'static str,
        name: String,
        #[source]
        source: crate::audit::writer::WriteError,
    },
    /// `policy explain` was given a fact the operation cannot have.
    #[error("{flag} does not apply to {operation} (its facts: {facts})")]
    FactDoesNotApply {
        flag: &'static str,
        operation: crate::guard::operations::Op,
        /// The fact flags it does take.
        facts: String,
    },
}

/// Why `safedelete health` found the gateway not ready.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("not a URL")]
    BadUrl(#[source] http::uri::InvalidUri),
    #[error("no answer within 5s")]
    Timeout,
    #[error("request failed")]
    Request(#[source] hyper_util::client::legacy::Error),
    #[error("answered {0}")]
    Status(http::StatusCode),
}

/// Runs one command to completion.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(arg) => serve(arg).await,
        Command::CheckConfig(arg) => {
            let config = Config::load(arg.config.as_deref(), &ProcessEnv)?;
            for unknown in unknown_variables(&ProcessEnv) {
                eprintln!("safedelete: warning: {unknown}");
            }
            print!("{}", config.render_masked());
            Ok(())
        }
        Command::Audit(args) => audit::run(args).await,
        Command::History(args) => history::run(args).await,
        Command::Health { config, url } => health(config, url).await,
        Command::Keys { command } => keys::run(command).await,
        Command::Restore(args) => restore::run(args).await,
        Command::Policy { command } => policy::run(command),
        Command::Snapshots { command } => snapshots::run(command).await,
        Command::MigrateStore(args) => migrate_store::run(args).await,
        Command::Tls { command } => tls::run(command),
    }
}

async fn health(arg: ConfigArg, url: Option<String>) -> Result<(), CliError> {
    use http_body_util::Empty;
    let base = match url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let config = Config::load(arg.config.as_deref(), &ProcessEnv)?;
            let mut addr = config.admin.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{addr}")
        }
    };
    let url = format!("{base}/readyz");
    let not_ready = |source: HealthError| CliError::NotReady {
        url: url.clone(),
        source,
    };
    let uri: http::Uri = url.parse().map_err(|e| not_ready(HealthError::BadUrl(e)))?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let request = client.get(uri);
    match tokio::time::timeout(std::time::Duration::from_secs(5), request).await {
        Err(_) => Err(not_ready(HealthError::Timeout)),
        Ok(Err(err)) => Err(not_ready(HealthError::Request(err))),
        Ok(Ok(resp)) if resp.status().is_success() => {
            println!("ready");
            Ok(())
        }
        Ok(Ok(resp)) => Err(not_ready(HealthError::Status(resp.status()))),
    }
}

async fn serve(arg: ConfigArg) -> Result<(), CliError> {
    let config = Config::load(arg.config.as_deref(), &ProcessEnv)?;
    let _log_guard = crate::logging::init(&config.log);
    for unknown in unknown_variables(&ProcessEnv) {
        tracing::warn!(variable = %unknown.name, "{unknown}");
    }
    let listeners = Listeners::bind(&config).await?;
    let summary = server::run(config, listeners, shutdown_signal()).await;
    if let Err(err) = &summary {
        tracing::error!(error = %err, "safedelete failed");
    }
    summary?;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
                _ = int.recv() => tracing::info!(signal = "SIGINT", "shutdown requested"),
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await
        }
    }
}
