//! The store: one pool of connections, to an embedded SQLite file or to a
//! PostgreSQL database several gateways share ([`Location`]). Both are
//! reached through sqlx's `Any` driver, so the guard, audit, snapshot, key
//! and restore code run the same SQL on either ([`Pool`]); where the two
//! dialects differ, [`Backend`] says which one a pool talks to.
//!
//! [`open`] is for the gateway, [`open_existing`] for the operator commands
//! that write; both migrate, with the migrations of the store's kind
//! embedded in the binary, and refuse a schema newer than the binary's.
//! Commands that only read use [`open_read_only`]: no write, no migration,
//! so they also work on a read-only copy of a SQLite file.
//!
//! `sqlite` and `postgres` open each kind; `access` keeps SQLite files
//! private (directory 0700, database 0600) and explains a permission failure
//! by the path, owner and mode in the way; `schema` compares the migrations a
//! database records with the binary's.

mod access;
mod flag;
mod location;
mod postgres;
mod schema;
mod sqlite;
mod statement;
#[cfg(test)]
pub mod testing;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};

pub use access::{exposed_mode, Blocked, Owner};
pub use flag::Flag;
pub use location::{BadLocation, Location, PostgresUrl};
pub use schema::Mismatch;
pub use statement::Statement;

/// A pool of connections to the store, whichever kind it is.
pub type Pool = sqlx::AnyPool;

/// The kind of database a pool talks to, for the few statements whose SQL
/// differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of(pool: &Pool) -> Backend {
        match pool.connect_options().database_url.scheme() {
            "postgres" | "postgresql" => Backend::Postgres,
            _ => Backend::Sqlite,
        }
    }
}

/// How many connections a pool keeps and how long it waits for one
/// (`[database]` settings; SQLite uses at most four, its one writer at a
/// time makes more pointless).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    pub max_connections: u32,
    /// How long a query waits for a connection (including connecting)
    /// before it fails: a guarded call is then refused, not held.
    pub acquire_timeout: Duration,
    /// A connection unused for this long is closed.
    pub idle_timeout: Duration,
    /// PostgreSQL cancels a statement that runs longer.
    pub statement_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> PoolSettings {
        PoolSettings {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(600),
            statement_timeout: Duration::from_secs(60),
        }
    }
}

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
    #[error("cannot open the database {store}: {source}")]
    Open {
        store: Location,
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
    #[error("cannot migrate the database {store}: {source}")]
    Migrate {
        store: Location,
        #[source]
        source: MigrateError,
    },
    #[error("cannot use the database {store}: {mismatch}")]
    Schema { store: Location, mismatch: Mismatch },
}

/// The variable naming the PostgreSQL server the store's tests create
/// databases on (`.ci/run` sets it); the gateway ignores it.
pub const TEST_POSTGRES_URL: &str = "SAFEDELETE_TEST_POSTGRES_URL";

/// `sqlite` or `postgres`: the store the integration tests' in-process
/// gateways use (`.ci/run` runs the store-heavy suites with each); the
/// gateway ignores it.
pub const TEST_STORE: &str = "SAFEDELETE_TEST_STORE";

/// How long a SQLite connection waits for another writer's lock before
/// failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The migrations of a store's kind.
pub fn migrator(backend: Backend) -> &'static Migrator {
    match backend {
        Backend::Sqlite => &sqlite::MIGRATOR,
        Backend::Postgres => &postgres::MIGRATOR,
    }
}

/// Opens and migrates the store the gateway writes to. A SQLite file is
/// created (0600, its directory 0700) if needed, and a warning names an
/// existing one that other users can read.
pub async fn open(store: impl Into<Location>) -> Result<Pool, DbError> {
    open_with(&store.into(), &PoolSettings::default()).await
}

/// [`open`] with the `[database]` pool settings.
pub async fn open_with(store: &Location, settings: &PoolSettings) -> Result<Pool, DbError> {
    match store {
        Location::Sqlite(path) => sqlite::open(path, settings).await,
        Location::Postgres(url) => postgres::open(url, settings).await,
    }
}

/// Opens an existing store for the operator commands that write (`snapshots
/// pin | unpin | prune`, `keys`); a missing SQLite file is an error rather
/// than a new empty database.
pub async fn open_existing(store: impl Into<Location>) -> Result<Pool, DbError> {
    let settings = PoolSettings::default();
    match store.into() {
        Location::Sqlite(path) => sqlite::open_existing(&path, &settings).await,
        Location::Postgres(url) => postgres::open(&url, &settings).await,
    }
}

/// Opens an existing store read-only for the commands that only read
/// (`audit`, `history`, `snapshots list | show | export | verify`): nothing is
/// written or migrated, and a schema other than the binary's is refused with
/// what to run.
pub async fn open_read_only(store: impl Into<Location>) -> Result<Pool, DbError> {
    let store = store.into();
    let (pool, applied) = match &store {
        Location::Sqlite(path) => sqlite::open_read_only(path).await?,
        Location::Postgres(url) => postgres::open_read_only(url, &PoolSettings::default()).await?,
    };
    if let Some(mismatch) = schema::compare(&applied, &known(migrator(Backend::of(&pool)))) {
        pool.close().await;
        return Err(DbError::Schema { store, mismatch });
    }
    Ok(pool)
}

fn known(migrator: &Migrator) -> BTreeSet<i64> {
    migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| m.version)
        .collect()
}

/// Whether the store answers a trivial query within `within` (`/readyz`).
pub async fn ping(pool: &Pool, within: Duration) -> Result<(), String> {
    let query = sqlx::query_scalar::<_, i64>("SELECT 1").fetch_one(pool);
    match tokio::time::timeout(within, query).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(within)
        )),
    }
}

/// Applies `migrator`'s migrations, after refusing a database that a newer
/// binary migrated (sqlx would only say a migration is missing).
async fn run_migrations(migrator: &Migrator, pool: &Pool, store: &Location) -> Result<(), DbError> {
    let applied = schema::applied(pool)
        .await
        .map_err(|source| DbError::Open {
            store: store.clone(),
            source,
        })?;
    if let Some(mismatch) = schema::newer(&applied, &known(migrator)) {
        return Err(DbError::Schema {
            store: store.clone(),
            mismatch,
        });
    }
    migrator.run(pool).await.map_err(|source| DbError::Migrate {
        store: store.clone(),
        source,
    })
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
                sqlite::MIGRATOR
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
        let conn = sqlite::migration_pool(&path, true).await.unwrap();
        before.run(&conn).await.unwrap();
        conn.close().await;

        let metrics = std::sync::Arc::new(crate::metrics::Metrics::default());
        let (sink, writer) =
            AuditWriter::spawn(&Location::Sqlite(path.clone()), 1024, 64, metrics).unwrap();
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

    crate::db::testing::store_tests! {
        /// A store that a newer binary migrated is refused, by the gateway
        /// and by the read-only commands alike, naming the unknown version.
        async fn a_schema_newer_than_the_binary_is_refused(pool, store) {
            sqlx::query(
                "INSERT INTO _sqlx_migrations \
                 (version, description, success, checksum, execution_time) \
                 VALUES (9999, 'from the future', TRUE, $1, 0)",
            )
            .bind(vec![0_u8; 48])
            .execute(&pool)
            .await
            .unwrap();
            pool.close().await;
            for opened in [open(&store.location).await, open_read_only(&store.location).await] {
                let err = opened.expect_err("refused");
                assert!(
                    matches!(err, DbError::Schema { mismatch: Mismatch::Newer { unknown: 9999 }, .. }),
                    "{err}"
                );
                assert!(err.to_string().contains("a newer safedelete migrated it"), "{err}");
            }
        }

        /// Opening twice (a second gateway, a restart) applies nothing twice.
        async fn opening_a_migrated_store_again_changes_nothing(pool, store) {
            let before: Vec<(i64, bool)> = schema::applied(&pool).await.unwrap();
            let again = open(&store.location).await.unwrap();
            assert_eq!(schema::applied(&again).await.unwrap(), before);
            assert_eq!(before.last().map(|v| v.0), known(migrator(Backend::of(&pool))).last().copied());
        }
    }
}
