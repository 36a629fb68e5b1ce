//! The one SQLite pool: opened with explicit pragmas (WAL, `synchronous=FULL`,
//! a busy timeout) and migrated with the migrations embedded in the binary;
//! [`open`] for the gateway, [`open_existing`] for the operator commands that
//! write. Commands that only read use [`open_read_only`]: no write, no
//! migration, so they also work on a read-only copy of the database.
//!
//! `access` keeps the files private (directory 0700, database 0600) and
//! explains a permission failure by the path, owner and mode in the way;
//! `schema` checks a read-only database has the binary's migrations.

mod access;
mod schema;

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::migrate::MigrateError;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

pub use access::{exposed_mode, Blocked, Owner};
pub use schema::Mismatch;

/// A problem opening or migrating the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot create the database directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the database file {path}: {source}")]
    CreateFile {
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
    /// SQLite was refused a file: `blocked` names it, its owner and mode
    /// (boxed: it is rare, and would otherwise double every `Result` here).
    #[error(
        "cannot open the database {path}: permission denied on {blocked}; run safedelete \
         as {} (`sudo -u {} safedelete ...`), or give this user access to it (`chown`, \
         or `chmod` for a shared group)",
        .blocked.owner.login(), .blocked.owner.login()
    )]
    Denied {
        path: PathBuf,
        blocked: Box<Blocked>,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot migrate the database {path}: {source}")]
    Migrate {
        path: PathBuf,
        #[source]
        source: MigrateError,
    },
    #[error("cannot read the database {path}: {mismatch}")]
    Schema { path: PathBuf, mismatch: Mismatch },
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

/// Opens (creating it 0600 and its directory 0700 if needed) and migrates
/// the database the gateway writes to; warns when an existing database is
/// readable by other users.
pub async fn open(path: &Path) -> Result<SqlitePool, DbError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        access::create_private_dir(dir).map_err(|source| DbError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    match access::create_private_file(path) {
        // SQLite, refused the same way, then says by whom.
        Err(err) if err.kind() == ErrorKind::PermissionDenied => {}
        Err(source) => {
            return Err(DbError::CreateFile {
                path: path.to_path_buf(),
                source,
            })
        }
        Ok(()) => warn_if_exposed(path),
    }
    connect(path, true).await
}

fn warn_if_exposed(path: &Path) {
    if let Some(mode) = access::exposed_mode(path) {
        let path = path.display();
        tracing::warn!(
            path = %path,
            mode = %format_args!("{mode:04o}"),
            "the database {path} has mode {mode:04o}: other users can read it, and its \
             snapshots hold every lead's personal data; fix it with `chmod 600 {path}`"
        );
    }
}

/// Opens an existing database for the operator commands that write (`snapshots
/// pin | unpin | prune`); a missing file is an error rather than a new empty
/// database.
pub async fn open_existing(path: &Path) -> Result<SqlitePool, DbError> {
    require_file(path)?;
    connect(path, false).await
}

/// Opens an existing database read-only for the commands that only read
/// (`audit`, `history`, `snapshots list | show | export | verify`): nothing is
/// written or migrated, and a schema other than the binary's is refused with
/// what to run.
///
/// A read-only copy (in a directory this user may not write, with no `-wal`
/// or `-shm` beside it) is opened as immutable: SQLite needs a `-shm` to read
/// a WAL database and cannot create one there. That is only safe while
/// nobody writes the file, which holds here: a gateway keeps a `-wal` beside
/// the database for as long as it has it open.
pub async fn open_read_only(path: &Path) -> Result<SqlitePool, DbError> {
    require_file(path)?;
    let (pool, applied) = match read(path, false).await {
        Ok(read) => read,
        Err(err) if is_access_error(&err) && !has_wal_files(path) => read(path, true)
            .await
            .map_err(|source| open_error(path, source, false))?,
        Err(source) => return Err(open_error(path, source, false)),
    };
    let known: BTreeSet<i64> = MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| m.version)
        .collect();
    if let Some(mismatch) = schema::compare(&applied, &known) {
        pool.close().await;
        return Err(DbError::Schema {
            path: path.to_path_buf(),
            mismatch,
        });
    }
    Ok(pool)
}

/// A read-only pool and the migrations the database records (its first read).
async fn read(path: &Path, immutable: bool) -> Result<(SqlitePool, Vec<(i64, bool)>), sqlx::Error> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .immutable(immutable)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await?;
    match schema::applied(&pool).await {
        Ok(applied) => Ok((pool, applied)),
        Err(err) => {
            pool.close().await;
            Err(err)
        }
    }
}

fn has_wal_files(path: &Path) -> bool {
    ["-wal", "-shm"]
        .iter()
        .any(|suffix| access::sibling(path, suffix).exists())
}

/// A missing file is [`DbError::Missing`]; anything else (a file this user
/// may not see, say) is left for SQLite to report, explained.
fn require_file(path: &Path) -> Result<(), DbError> {
    let missing = || DbError::Missing {
        path: path.to_path_buf(),
    };
    match std::fs::metadata(path) {
        Err(err) if err.kind() == ErrorKind::NotFound => Err(missing()),
        Ok(meta) if !meta.is_file() => Err(missing()),
        _ => Ok(()),
    }
}

async fn connect(path: &Path, create: bool) -> Result<SqlitePool, DbError> {
    migrate(path, create).await?;
    SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options(path, false))
        .await
        .map_err(|source| open_error(path, source, true))
}

/// Applies the embedded migrations on a connection of its own with foreign
/// keys off: a migration that rebuilds a table (SQLite's way to change a
/// column) must drop the old one while other tables still reference it.
/// SQLite can only switch foreign keys outside a transaction, and each
/// migration runs in one, hence the connection. Afterwards every reference
/// is checked: a migration that broke one is refused.
async fn migrate(path: &Path, create: bool) -> Result<(), DbError> {
    // A pool of one: the migrator's futures over a bare connection are not
    // `Send` for every lifetime, which a spawned gateway needs.
    let conn = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options(path, create).foreign_keys(false))
        .await
        .map_err(|source| open_error(path, source, true))?;
    let migrated = MIGRATOR.run(&conn).await;
    let broken: Result<Vec<(String,)>, _> = match &migrated {
        Ok(()) => {
            sqlx::query_as("SELECT \"table\" FROM pragma_foreign_key_check")
                .fetch_all(&conn)
                .await
        }
        Err(_) => Ok(Vec::new()),
    };
    conn.close().await;
    match (migrated, broken) {
        (Ok(()), Ok(broken)) if broken.is_empty() => Ok(()),
        (Ok(()), Ok(broken)) => Err(DbError::Migrate {
            path: path.to_path_buf(),
            source: MigrateError::Execute(sqlx::Error::Protocol(format!(
                "the migrated database has {} broken reference(s), first in table {}",
                broken.len(),
                broken[0].0
            ))),
        }),
        (Ok(()), Err(source)) => Err(open_error(path, source, true)),
        (Err(err), _) => {
            Err(match err {
                // Migrating is the first write: a read-only file fails here.
                MigrateError::Execute(source) if is_access_error(&source) => {
                    open_error(path, source, true)
                }
                source => DbError::Migrate {
                    path: path.to_path_buf(),
                    source,
                },
            })
        }
    }
}

/// [`DbError::Denied`] naming the file in the way when SQLite failed for
/// lack of permission, else [`DbError::Open`].
fn open_error(path: &Path, source: sqlx::Error, write: bool) -> DbError {
    let blocked = is_access_error(&source)
        .then(|| access::find_blocked(path, write))
        .flatten()
        .map(Box::new);
    match blocked {
        Some(blocked) => DbError::Denied {
            path: path.to_path_buf(),
            blocked,
            source,
        },
        None => DbError::Open {
            path: path.to_path_buf(),
            source,
        },
    }
}

/// SQLite's "cannot open" (14), "read-only" (8) and "permission" (3) codes,
/// extended codes included, or an I/O permission error.
fn is_access_error(err: &sqlx::Error) -> bool {
    const SQLITE_PERM: i32 = 3;
    const SQLITE_READONLY: i32 = 8;
    const SQLITE_CANTOPEN: i32 = 14;
    match err {
        sqlx::Error::Io(io) => io.kind() == ErrorKind::PermissionDenied,
        sqlx::Error::Database(db) => {
            let primary = db
                .code()
                .and_then(|c| c.parse::<i32>().ok())
                .map(|c| c & 0xff);
            matches!(
                primary,
                Some(SQLITE_PERM | SQLITE_READONLY | SQLITE_CANTOPEN)
            )
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{chain, AuditRecord, AuditWriter, OperationKind};

    /// Migrations convert a database that already holds a trail, and the
    /// chain still verifies: a trail written before migration 13 (the
    /// partial audit indexes) is migrated, verified, and its campaign
    /// lookups use the new index.
    #[tokio::test]
    async fn a_trail_written_before_the_partial_indexes_verifies_after_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("safedelete.db");
        let before = sqlx::migrate::Migrator {
            migrations: std::borrow::Cow::Owned(
                MIGRATOR
                    .migrations
                    .iter()
                    .filter(|m| m.version < 13)
                    .cloned()
                    .collect(),
            ),
            ignore_missing: false,
            locking: true,
            no_tx: false,
        };
        let conn = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options(&path, true).foreign_keys(false))
            .await
            .unwrap();
        before.run(&conn).await.unwrap();
        conn.close().await;

        let metrics = std::sync::Arc::new(crate::metrics::Metrics::default());
        let (sink, writer) = AuditWriter::spawn(&path, 1024, 64, metrics).unwrap();
        for i in 0..200 {
            let mut r = AuditRecord::empty(OperationKind::Passthrough);
            r.path = format!("/api/v1/campaigns/{}", i % 7);
            r.campaign_id = Some(i % 7);
            r.actor_label = (i % 3 == 0).then(|| "alice".to_string());
            sink.submit(r);
        }
        assert_eq!(writer.close().await, 200);

        let pool = open(&path).await.unwrap();
        let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert!(versions.contains(&13), "{versions:?}");
        let report = chain::verify(&pool, None).await.unwrap();
        assert!(report.problem.is_none(), "{:?}", report.problem);
        assert_eq!(report.records, 200);
        let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(
            "EXPLAIN QUERY PLAN SELECT id FROM audit_events WHERE campaign_id = 3 ORDER BY id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert!(
            plan.iter()
                .any(|(.., d)| d.contains("audit_events_campaign")),
            "{plan:?}"
        );
        let in_campaign: i64 =
            sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE campaign_id = 3")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(in_campaign, 29);
        pool.close().await;
    }
}
