//! `safedelete restore SNAPSHOT_ID`: rebuild a deleted (or stopped) campaign
//! from its snapshot as a new campaign. `--dry-run` prints the plan (every
//! call, the leads restored and left out by reason) and makes no call.

use std::io::Write;

use crate::config::{Config, ProcessEnv};
use crate::db;
use crate::restore::{self, LeadChoice, Plan};

use super::{CliError, ConfigArg};

/// `safedelete restore`
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The snapshot to restore (`safedelete snapshots list`).
    #[arg(value_name = "SNAPSHOT_ID")]
    pub snapshot_id: i64,
    /// Print the plan (every call, with counts) and make no call.
    #[arg(long)]
    pub dry_run: bool,
    /// The new campaign's name (default: the original's).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Which leads come back: `sendable` leaves out those who unsubscribed,
    /// bounced or were blocked, so a restore never emails someone who opted out.
    #[arg(long, value_enum, default_value = "sendable")]
    pub leads: LeadChoice,
    /// The plan as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Runs `restore`.
pub async fn run(args: RestoreArgs) -> Result<(), CliError> {
    let config = Config::load(args.config.config.as_deref(), &ProcessEnv)?;
    if !args.dry_run {
        return Err(CliError::RestoreNotYet);
    }
    let pool = db::open_read_only(&config.database).await?;
    let captured = restore::source::read(&pool, args.snapshot_id).await;
    pool.close().await;
    let captured = captured?;
    let name = args
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    if args.name.is_some() && name.is_none() {
        return Err(CliError::RestoreName);
    }
    let plan = Plan::new(&captured, name, args.leads)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string(&plan).map_err(std::io::Error::other)?
        )?;
    } else {
        write!(out, "{}", plan.render())?;
        writeln!(out, "\nDry run: nothing was sent to SmartLead.")?;
    }
    Ok(())
}
