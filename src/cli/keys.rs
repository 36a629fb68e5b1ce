//! `safedelete keys create | list | revoke | rotate`: the gateway keys people
//! and tools hold instead of the SmartLead key, managed in the database every
//! gateway sharing it reads (so a revoke is in force everywhere within a
//! second). A key is printed once, when made; each action is audited under
//! the OS user's name.

use std::io::Write as _;
use std::time::SystemTime;

use crate::db::{Location, Pool};

use crate::audit::{writer, AuditRecord};
use crate::config::{Config, IdentityMode, ProcessEnv};
use crate::db;
use crate::identity::manage::{self, Accounts, CreateRequest, Listed, Shown, Via};

use super::{CliError, ConfigArg};

/// `safedelete keys ...`
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Make a key for one person or tool; it is printed once, here.
    Create {
        #[command(flatten)]
        config: ConfigArg,
        /// Who holds it: what the audit trail and policy rules call them.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// The SmartLead account it sends for (default: `default`, or the only one).
        #[arg(long, value_name = "NAME")]
        account: Option<String>,
        /// When it stops working: an age such as 90d or 12h, or an RFC 3339 time.
        #[arg(long, value_name = "AGE|TIME")]
        expires: Option<String>,
        /// Requests it may send, e.g. 30/min (default: identity.rate_limit).
        #[arg(long, value_name = "RATE")]
        rate_limit: Option<String>,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Every key (never the key itself): its account, dates and state.
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// A JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop every valid key of NAME, including any still in a rotation's
    /// grace period.
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// A new key for NAME (printed once); the old one keeps working for the
    /// grace period, so the holder can switch without an outage.
    Rotate {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(value_name = "NAME")]
        name: String,
        /// How long the old key keeps working, e.g. 24h, 30m, 0s.
        #[arg(long, value_name = "DURATION", default_value = "24h")]
        grace: String,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `keys` command.
pub async fn run(command: KeysCommand) -> Result<(), CliError> {
    let config_arg = match &command {
        KeysCommand::Create { config, .. }
        | KeysCommand::List { config, .. }
        | KeysCommand::Revoke { config, .. }
        | KeysCommand::Rotate { config, .. } => config,
    };
    let config = Config::load(config_arg.config.as_deref(), &ProcessEnv)?;
    // Created and migrated if need be, so keys can be made before the
    // gateway first runs.
    let pool = db::open_with(&config.database.store, &config.database.pool).await?;
    let result = run_on(&pool, &config, command).await;
    pool.close().await;
    result
}

async fn run_on(pool: &Pool, config: &Config, command: KeysCommand) -> Result<(), CliError> {
    let via = |path: &str| Via {
        method: "CLI".to_string(),
        path: path.to_string(),
        actor: os_user(),
    };
    let mut out = std::io::stdout().lock();
    match command {
        KeysCommand::Create {
            name,
            account,
            expires,
            rate_limit,
            json,
            ..
        } => {
            let names: Vec<String> = config
                .smartlead
                .names()
                .into_iter()
                .map(String::from)
                .collect();
            let accounts = Accounts {
                names: &names,
                default: config.smartlead.default_account().map(|a| a.name.as_str()),
            };
            let request = CreateRequest {
                name: &name,
                account: account.as_deref(),
                expires: expires.as_deref(),
                rate_limit: rate_limit.as_deref(),
                rate_key: "--rate-limit",
            };
            let (created, record) =
                manage::create(pool, &accounts, request, &via("keys create")).await?;
            audit(&config.database.store, record, "created", &name).await?;
            let row = &created.row;
            if json {
                writeln!(out, "{}", to_json(&Shown::created(&created))?)?;
            } else {
                writeln!(
                    out,
                    "Created gateway key {:?} for SmartLead account {:?} ({}; {}).",
                    row.name,
                    row.account,
                    row.expires_at
                        .as_deref()
                        .map_or("never expires".to_string(), |e| format!("expires {e}")),
                    rate_shown(row.rate_limit.as_deref(), config.identity.rate_limit),
                )?;
                writeln!(
                    out,
                    "The key is shown only now; hand it to {} and store it in their tool where the SmartLead key went:",
                    row.name
                )?;
                writeln!(out, "{}", created.key.expose())?;
            }
            passthrough_note(config);
        }
        KeysCommand::List { json, .. } => {
            let keys = manage::listed(pool, SystemTime::now())
                .await
                .map_err(manage::KeyActionError::from)?;
            if json {
                writeln!(out, "{}", to_json(&keys)?)?;
            } else if keys.is_empty() {
                writeln!(
                    out,
                    "no gateway keys yet; create one with safedelete keys create --name NAME"
                )?;
            } else {
                write_table(&mut out, &keys, config.identity.rate_limit)?;
            }
        }
        KeysCommand::Revoke { name, .. } => {
            let (revoked, record) = manage::revoke(pool, &name, &via("keys revoke")).await?;
            audit(&config.database.store, record, "revoked", &name).await?;
            writeln!(
                out,
                "Revoked {revoked} key{} named {name:?}; {} working within a second on every gateway sharing this database.",
                if revoked == 1 { "" } else { "s" },
                if revoked == 1 { "it stops" } else { "they stop" },
            )?;
        }
        KeysCommand::Rotate {
            name, grace, json, ..
        } => {
            let grace = manage::parse_grace(&grace)?;
            let (rotated, record) = manage::rotate(pool, &name, grace, &via("keys rotate")).await?;
            audit(&config.database.store, record, "rotated", &name).await?;
            let row = &rotated.new.row;
            if json {
                writeln!(out, "{}", to_json(&Shown::rotated(&rotated))?)?;
            } else {
                writeln!(
                    out,
                    "Rotated gateway key {:?} (SmartLead account {:?}); the old key keeps working until {}.",
                    row.name, row.account, rotated.old_valid_until
                )?;
                writeln!(
                    out,
                    "The new key is shown only now; hand it to {} and replace the old one in their tool:",
                    row.name
                )?;
                writeln!(out, "{}", rotated.new.key.expose())?;
            }
            passthrough_note(config);
        }
    }
    out.flush()?;
    Ok(())
}

/// Appends the action's record to the trail; the action itself is done by then.
async fn audit(
    store: &Location,
    record: AuditRecord,
    done: &'static str,
    name: &str,
) -> Result<(), CliError> {
    writer::append(store, record)
        .await
        .map(drop)
        .map_err(|source| CliError::KeyAudit {
            done,
            name: name.to_string(),
            source,
        })
}

/// Keys made while the gateway still passes SmartLead keys through do
/// nothing yet; say so rather than let someone wonder why.
fn passthrough_note(config: &Config) {
    if config.identity.mode == IdentityMode::Passthrough {
        eprintln!(
            "note: identity.mode is \"passthrough\": gateways accept gateway keys only once it is \"gateway_keys\""
        );
    }
}

fn to_json(value: &impl serde::Serialize) -> std::io::Result<String> {
    serde_json::to_string(value).map_err(std::io::Error::other)
}

/// Who is running the command, for `created_by` and the audit trail.
pub(super) fn os_user() -> String {
    use std::os::unix::fs::MetadataExt;
    match std::env::var("USER") {
        Ok(user) if !user.trim().is_empty() => user,
        // The owner of /proc/self is this process's user.
        _ => std::fs::metadata("/proc/self")
            .map(|m| format!("uid {}", m.uid()))
            .unwrap_or_else(|_| "unknown user".to_string()),
    }
}

/// A key's rate limit as people read it: its own, or the default in force.
fn rate_shown(own: Option<&str>, default: Option<crate::config::Rate>) -> String {
    match (own, default) {
        (Some(r), _) => format!("rate limit {r}"),
        (None, Some(d)) => format!("rate limit {d}, the identity.rate_limit default"),
        (None, None) => "no rate limit".to_string(),
    }
}

fn write_table(
    out: &mut impl std::io::Write,
    keys: &[Listed],
    default_rate: Option<crate::config::Rate>,
) -> std::io::Result<()> {
    const HEADERS: [&str; 7] = [
        "NAME",
        "ACCOUNT",
        "CREATED",
        "LAST USED",
        "EXPIRES",
        "STATE",
        "RATE LIMIT",
    ];
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
    let rows: Vec<[String; 7]> = keys
        .iter()
        .map(|k| {
            [
                k.row.name.clone(),
                k.row.account.clone(),
                k.row.created_at.clone(),
                dash(&k.row.last_used_at),
                dash(&k.row.expires_at),
                k.state.to_string(),
                match (&k.row.rate_limit, default_rate) {
                    (Some(r), _) => r.clone(),
                    (None, Some(d)) => format!("{d} (default)"),
                    (None, None) => "-".to_string(),
                },
            ]
        })
        .collect();
    let mut widths = HEADERS.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut dyn std::io::Write, cells: &[&str]| -> std::io::Result<()> {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        writeln!(out, "{}", padded.join("  ").trim_end())
    };
    line(out, &HEADERS)?;
    for row in &rows {
        line(out, &row.each_ref().map(String::as_str))?;
    }
    Ok(())
}
