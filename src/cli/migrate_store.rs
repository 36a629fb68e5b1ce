//! `safedelete migrate-store --from PATH_OR_URL --to URL`: copies a store
//! (the SQLite file a single gateway used) into an empty one (the
//! PostgreSQL database several gateways will share), verifies the copy,
//! and says so. Stop the gateway first: the copy is of a store at rest.

use std::time::{Duration, Instant};

use crate::db::Location;
use crate::migrate_store;

use super::CliError;

#[derive(Debug, clap::Args)]
pub struct MigrateStoreArgs {
    /// The store to copy: a SQLite file (path or sqlite://PATH) or a
    /// postgres:// URL. Opened read-only.
    #[arg(long, value_name = "PATH_OR_URL")]
    pub from: String,
    /// The store to copy into: empty, or holding an unfinished copy of the
    /// same source (resumed).
    #[arg(long, value_name = "URL")]
    pub to: String,
}

fn location(flag: &'static str, value: &str) -> Result<Location, CliError> {
    value.parse().map_err(|e| CliError::StoreArg {
        flag,
        problem: format!("{e}"),
    })
}

pub async fn run(args: MigrateStoreArgs) -> Result<(), CliError> {
    let from = location("--from", &args.from)?;
    let to = location("--to", &args.to)?;
    eprintln!("copying {from} to {to}");
    // A long copy says where it is every few seconds.
    let mut last = Instant::now();
    let mut progress = |table: &'static str, rows: i64| {
        if last.elapsed() >= Duration::from_secs(2) {
            eprintln!("  {table}: {rows} rows so far");
            last = Instant::now();
        }
    };
    let copied = migrate_store::copy(&from, &to, &mut progress).await?;
    if copied.resumed {
        println!("Resumed the unfinished copy of {from}.");
    }
    println!("{copied}");
    println!(
        "Copied {from} to {to} and verified it. Point every gateway at it \
         ([database] url, or SAFEDELETE_DATABASE) and start them."
    );
    Ok(())
}
