//! The one SQLite pool: opened with explicit pragmas (WAL, `synchronous=FULL`,
//! a busy timeout) and migrated with the migrations embedded in the binary.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

/// A problem opening or migrating the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot create the database directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no database at {path} (has `safedelete serve` run with this config?)")]
    Missing { path: PathBuf },
    #[error("cannot open the database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot migrate the database {path}: {source}")]
    Migrate {
        path: PathBuf,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
}

/// How long a connection waits for another writer's lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

fn options(path: &Path, create: bool) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(create)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true)
}

/// Opens (creating it and its directory if needed) and migrates the database
/// the gateway writes to.
pub async fn open(path: &Path) -> Result<SqlitePool, DbError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| DbError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    connect(path, true).await
}

/// Opens an existing database for the operator commands (`audit`, ...); a
/// missing file is an error rather than a new empty database.
pub async fn open_existing(path: &Path) -> Result<SqlitePool, DbError> {
    if !path.is_file() {
        return Err(DbError::Missing {
            path: path.to_path_buf(),
        });
    }
    connect(path, false).await
}

async fn connect(path: &Path, create: bool) -> Result<SqlitePool, DbError> {
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options(path, create))
        .await
        .map_err(|source| DbError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    MIGRATOR
        .run(&pool)
        .await
        .map_err(|source| DbError::Migrate {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(pool)
}
