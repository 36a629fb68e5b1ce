//! The shared store: a PostgreSQL database several gateways use at once.
//! Migrations run under sqlx's advisory lock, so gateways that start
//! together migrate once; the schema is the SQLite one in PostgreSQL's
//! types (`BIGINT`, `BYTEA`, text compared byte by byte).

use std::str::FromStr;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, Connection, Executor};

use super::{schema, DbError, Location, Pool, PoolSettings, PostgresUrl};

pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

fn location(url: &PostgresUrl) -> Location {
    Location::Postgres(url.clone())
}

async fn connect(
    url: &PostgresUrl,
    settings: &PoolSettings,
    read_only: bool,
) -> Result<Pool, DbError> {
    sqlx::any::install_default_drivers();
    let options = AnyConnectOptions::from_str(url.expose()).map_err(|source| DbError::Open {
        store: location(url),
        source,
    })?;
    // One connection first, on its own: a pool retries a refused connection
    // until it times out, and would hide why (refused, no such database,
    // password, TLS).
    let first = AnyConnection::connect_with(&options)
        .await
        .map_err(|source| DbError::Open {
            store: location(url),
            source,
        })?;
    let _ = first.close().await;
    let statement_timeout = settings.statement_timeout.as_millis();
    AnyPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .idle_timeout(settings.idle_timeout)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                conn.execute(format!("SET statement_timeout = {statement_timeout}").as_str())
                    .await?;
                if read_only {
                    conn.execute("SET default_transaction_read_only = on")
                        .await?;
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await
        .map_err(|source| DbError::Open {
            store: location(url),
            source,
        })
}

/// Connects and migrates (under the migrator's lock, so gateways starting
/// together migrate once).
pub(super) async fn open(url: &PostgresUrl, settings: &PoolSettings) -> Result<Pool, DbError> {
    let pool = connect(url, settings, false).await?;
    if let Err(err) = super::run_migrations(&MIGRATOR, &pool, &location(url)).await {
        pool.close().await;
        return Err(err);
    }
    Ok(pool)
}

/// Connects read-only (every transaction is); returns the migrations the
/// database records.
pub(super) async fn open_read_only(
    url: &PostgresUrl,
    settings: &PoolSettings,
) -> Result<(Pool, Vec<(i64, bool)>), DbError> {
    let pool = connect(url, settings, true).await?;
    match schema::applied(&pool).await {
        Ok(applied) => Ok((pool, applied)),
        Err(source) => {
            pool.close().await;
            Err(DbError::Open {
                store: location(url),
                source,
            })
        }
    }
}
