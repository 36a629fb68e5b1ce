//! `safedelete restore SNAPSHOT_ID`: rebuild a deleted (or stopped) campaign
//! from its snapshot as a new campaign, through SmartLead's API. `--dry-run`
//! prints the plan (every call, the leads restored and left out by reason)
//! and makes no call; `--resume RESTORE_ID` continues a restore that stopped.
//! A snapshot of a smaller delete (a lead, a webhook, sender accounts) is
//! undone in place instead, and `--unarchive CAMPAIGN_ID` pauses an archived
//! campaign again.

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use crate::config::{Config, IdentityMode, ProcessEnv};
use crate::db;
use crate::metrics::Metrics;
use crate::restore::audit::Trail;
use crate::restore::call::Caller;
use crate::restore::replay::{Audit, Event};
use crate::restore::{self, run, LeadChoice, Plan, Undo};
use crate::upstream::{client, Upstream};

use super::{CliError, ConfigArg};

/// `safedelete restore`
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The snapshot to restore (`safedelete snapshots list`).
    #[arg(
        value_name = "SNAPSHOT_ID",
        required_unless_present_any = ["resume", "unarchive"],
        conflicts_with_all = ["resume", "unarchive"]
    )]
    pub snapshot_id: Option<i64>,
    /// Set the ARCHIVED campaign CAMPAIGN_ID back to PAUSED (what the
    /// gateway does to a campaign delete by default).
    #[arg(long, value_name = "CAMPAIGN_ID", conflicts_with = "resume")]
    pub unarchive: Option<i64>,
    /// Continue the restore RESTORE_ID where it stopped.
    #[arg(long, value_name = "RESTORE_ID")]
    pub resume: Option<i64>,
    /// Print the plan (every call, with counts) and make no call.
    #[arg(long)]
    pub dry_run: bool,
    /// The new campaign's name (default: the original's).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Which leads come back: `sendable` leaves out those who unsubscribed,
    /// bounced or were blocked, so a restore never emails someone who opted out.
    /// (Default: sendable.)
    #[arg(long, value_enum)]
    pub leads: Option<LeadChoice>,
    /// Machine-readable output: the plan, then one JSON event per line.
    #[arg(long)]
    pub json: bool,
    /// Do not ask before the first write.
    #[arg(long)]
    pub yes: bool,
    /// The environment variable holding the SmartLead key (in passthrough
    /// mode; with gateway keys the account's key is used).
    #[arg(long, value_name = "VAR", default_value = "SMARTLEAD_API_KEY")]
    pub api_key_env: String,
    /// The account whose key is used (gateway keys; default: `default`).
    #[arg(long, value_name = "NAME")]
    pub account: Option<String>,
}

/// Runs `restore`.
pub async fn run(args: RestoreArgs) -> Result<(), CliError> {
    let config = Config::load(args.config.config.as_deref(), &ProcessEnv)?;
    let name = args
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    if args.name.is_some() && name.is_none() {
        return Err(CliError::RestoreName);
    }
    // What only a campaign restore takes.
    let campaign_only = [
        ("--name", args.name.is_some()),
        ("--leads", args.leads.is_some()),
    ];
    let given = campaign_only
        .iter()
        .find(|(_, given)| *given)
        .map(|(flag, _)| *flag);
    if let (Some(flag), Some(_)) = (given, args.resume) {
        return Err(CliError::RestoreOption {
            flag,
            why: "a resumed restore keeps the name and leads it started with",
        });
    }
    if let Some(campaign_id) = args.unarchive {
        if let Some(flag) = given {
            return Err(CliError::RestoreOption {
                flag,
                why: "--unarchive only sets the campaign back to PAUSED",
            });
        }
        return undo(&config, &args, Undo::unarchive(campaign_id)).await;
    }
    if let (Some(snapshot_id), None) = (args.snapshot_id, args.resume) {
        let pool = db::open_read_only(&config.database.store).await?;
        let found = restore::undo::from_snapshot(&pool, snapshot_id).await;
        pool.close().await;
        if let Some(plan) = found? {
            if let Some(flag) = given {
                return Err(CliError::RestoreOption {
                    flag,
                    why: "this snapshot is undone by one call that re-creates what was deleted",
                });
            }
            return undo(&config, &args, plan).await;
        }
    }
    if args.dry_run {
        let snapshot_id = args.snapshot_id.ok_or(CliError::RestoreResumeDryRun)?;
        let pool = db::open_read_only(&config.database.store).await?;
        let captured = restore::source::read(&pool, snapshot_id).await;
        pool.close().await;
        let plan = Plan::new(&captured?, name, leads(&args))?;
        let mut out = std::io::stdout().lock();
        if args.json {
            writeln!(out, "{}", json(&plan)?)?;
        } else {
            write!(out, "{}", plan.render())?;
            writeln!(out, "\nDry run: nothing was sent to SmartLead.")?;
        }
        return Ok(());
    }
    let (key_query, account) = key(&config, &args)?;
    let pool = db::open_with(&config.database.store, &config.database.pool).await?;
    let result = real_run(&config, &pool, &args, name, key_query, account).await;
    pool.close().await;
    result
}

async fn real_run(
    config: &Config,
    pool: &crate::db::Pool,
    args: &RestoreArgs,
    name: Option<&str>,
    key_query: String,
    account: Option<String>,
) -> Result<(), CliError> {
    let operator = super::keys::os_user();
    let job = match args.resume {
        Some(id) => run::reopen(pool, id).await?,
        None => {
            let snapshot_id = args.snapshot_id.ok_or(CliError::RestoreResumeDryRun)?;
            let captured = restore::source::read(pool, snapshot_id).await?;
            let (captured, plan) =
                run::plan(captured, name.map(str::to_string), leads(args)).await?;
            let mut out = std::io::stdout().lock();
            if args.json {
                writeln!(out, "{}", json(&plan)?)?;
            } else {
                write!(out, "{}", plan.render())?;
            }
            drop(out);
            confirm(args)?;
            run::start(pool, captured, plan, &operator).await?
        }
    };
    let (restore_id, plan) = (job.id, &job.plan);
    let json_out = args.json;
    let caller = caller(config, key_query, json_out)?;
    if !json_out {
        println!("\nRestore {restore_id}:");
    }
    let audit = Audit {
        trail: Trail::File(&config.database.store),
        operator: &operator,
        account: account.as_deref(),
    };
    // On a terminal, a bar for the leads with their rate and ETA; elsewhere
    // plain lines (or JSON events).
    let bar = (!json_out && std::io::stdout().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(plan.leads.restored);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "  leads    {bar:40} {human_pos}/{human_len} {per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut progress = |event: Event| {
        if json_out {
            if let Ok(line) = serde_json::to_string(&event) {
                println!("{line}");
            }
            return;
        }
        let line = match event {
            Event::Step { step, detail } => format!("  done     {step:<16} {detail}"),
            Event::Skipped { step } => format!("  skipped  {step:<16} (done before)"),
            Event::Leads { sent, total } => match &bar {
                Some(bar) => {
                    bar.set_position(sent);
                    return;
                }
                None => format!(
                    "  leads    {} of {}",
                    restore::plan::thousands(sent),
                    restore::plan::thousands(total)
                ),
            },
        };
        match &bar {
            Some(bar) => bar.println(line),
            None => println!("{line}"),
        }
    };
    let outcome = run::execute(pool, &job, &caller, &audit, &mut progress).await;
    if let Some(bar) = &bar {
        bar.finish();
    }
    let report = outcome?;
    let mut out = std::io::stdout().lock();
    if json_out {
        writeln!(out, "{}", json(&report)?)?;
    } else {
        write!(out, "\n{}", report.render())?;
    }
    Ok(())
}

/// Undoes a smaller delete (or unarchives): shows the call, asks, makes it.
async fn undo(config: &Config, args: &RestoreArgs, undo: Undo) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    if args.dry_run {
        if args.json {
            writeln!(out, "{}", json(&undo)?)?;
        } else {
            write!(out, "{}", undo.render())?;
            writeln!(out, "\nDry run: nothing was sent to SmartLead.")?;
        }
        return Ok(());
    }
    drop(out);
    let (key_query, account) = key(config, args)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", json(&undo)?)?;
    } else {
        write!(out, "{}", undo.render())?;
    }
    drop(out);
    confirm(args)?;
    let caller = caller(config, key_query, args.json)?;
    let operator = super::keys::os_user();
    let audit = Audit {
        trail: Trail::File(&config.database.store),
        operator: &operator,
        account: account.as_deref(),
    };
    let done = undo.run(&caller, &audit).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", json(&done)?)?;
    } else {
        writeln!(out, "\nDone: {}", done.summary)?;
    }
    Ok(())
}

/// What a restore or an undo sends with, telling each wait.
fn caller(config: &Config, key_query: String, json_out: bool) -> Result<Caller, CliError> {
    let metrics = Arc::new(Metrics::default());
    let upstream_client = client::build(&config.upstream, metrics)
        .map_err(|e| CliError::RestoreSetup(e.to_string()))?;
    Ok(Caller {
        upstream: Upstream::new(config, upstream_client),
        key_query,
        on_wait: Box::new(move |wait, why| {
            let secs = wait.as_secs_f64();
            if json_out {
                println!(
                    "{}",
                    serde_json::json!({"event": "wait", "seconds": secs, "why": why})
                );
            } else {
                println!("waiting {secs:.1} s: {why}");
            }
        }),
        pace: None,
    })
}

/// The key a restore sends: the account's with gateway keys, else the
/// caller's from `--api-key-env`.
fn key(config: &Config, args: &RestoreArgs) -> Result<(String, Option<String>), CliError> {
    let encode = |k: &str| {
        percent_encoding::utf8_percent_encode(k, crate::identity::swap::QUERY_VALUE).to_string()
    };
    if config.identity.mode == IdentityMode::GatewayKeys || args.account.is_some() {
        let account = match &args.account {
            Some(name) => config.smartlead.account(name),
            None => config.smartlead.default_account(),
        }
        .ok_or_else(|| {
            CliError::RestoreKey(format!(
                "no SmartLead account {}; the config defines: {}",
                args.account.as_deref().unwrap_or("default"),
                config.smartlead.names().join(", ")
            ))
        })?;
        return Ok((encode(account.api_key.expose()), Some(account.name.clone())));
    }
    match std::env::var(&args.api_key_env) {
        Ok(k) if !k.trim().is_empty() => Ok((encode(k.trim()), None)),
        _ => Err(CliError::RestoreKey(format!(
            "set {} to the SmartLead key to restore with (or name another variable with --api-key-env)",
            args.api_key_env
        ))),
    }
}

/// Asks before the first write, unless `--yes`.
fn confirm(args: &RestoreArgs) -> Result<(), CliError> {
    if args.yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::RestoreConfirm);
    }
    print!("\nStart this restore? [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(CliError::RestoreDeclined)
    }
}

/// Which leads a campaign restore takes (`--leads`, default `sendable`).
fn leads(args: &RestoreArgs) -> LeadChoice {
    args.leads.unwrap_or(LeadChoice::Sendable)
}

fn json(value: &impl serde::Serialize) -> std::io::Result<String> {
    serde_json::to_string(value).map_err(std::io::Error::other)
}
