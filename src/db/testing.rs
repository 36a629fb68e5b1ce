//! Stores for tests: a SQLite file in a temporary directory, or a fresh
//! PostgreSQL database on the server `SAFEDELETE_TEST_POSTGRES_URL` names
//! (created for the test, dropped after it). Without that variable the
//! PostgreSQL half of a [`store_tests!`] test says it is skipped and passes,
//! so `cargo test` works on a machine with no PostgreSQL.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

use super::{Location, Pool, PostgresUrl};

/// The variable naming the test server (any database on it: tests create
/// their own).
pub const POSTGRES_URL_VAR: &str = super::TEST_POSTGRES_URL;

pub struct TestStore {
    pub location: Location,
    _dir: Option<tempfile::TempDir>,
    /// The server's maintenance database, to drop ours from.
    admin: Option<PostgresUrl>,
}

impl TestStore {
    pub fn sqlite() -> TestStore {
        let dir = tempfile::tempdir().expect("a temporary directory");
        TestStore {
            location: Location::Sqlite(dir.path().join("safedelete.db")),
            _dir: Some(dir),
            admin: None,
        }
    }

    /// A new, empty database, or `None` (said on stderr) without a server.
    pub async fn postgres() -> Option<TestStore> {
        let Ok(url) = std::env::var(POSTGRES_URL_VAR) else {
            // Straight to stderr: the test harness would hide an `eprintln!`.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "skipped: {POSTGRES_URL_VAR} is not set, so the PostgreSQL store is not tested"
            );
            return None;
        };
        let Ok(Location::Postgres(server)) = url.parse::<Location>() else {
            panic!("{POSTGRES_URL_VAR}={url} is not a postgres:// URL with a database");
        };
        let name = format!(
            "safedelete_test_{}_{:016x}",
            std::process::id(),
            fastrand::u64(..)
        );
        let admin = server.with_database("postgres");
        let mut conn = PgConnectOptions::from_str(admin.expose())
            .expect("the test server's URL")
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL server {admin}: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        let _ = conn.close().await;
        Some(TestStore {
            location: Location::Postgres(server.with_database(&name)),
            _dir: None,
            admin: Some(admin),
        })
    }

    /// The store opened and migrated, as a gateway opens it.
    pub async fn open(&self) -> Pool {
        super::open(&self.location)
            .await
            .unwrap_or_else(|e| panic!("open the test store {}: {e}", self.location))
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        let (Some(admin), Location::Postgres(url)) = (&self.admin, &self.location) else {
            return;
        };
        let (admin, name) = (admin.clone(), url.database().to_string());
        // Dropped from a thread of its own: this may run inside a runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime
                .block_on(async {
                    let mut conn = PgConnectOptions::from_str(admin.expose())?
                        .connect()
                        .await?;
                    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await?;
                    conn.close().await
                })
                .map_err(std::io::Error::other)
        })
        .join();
    }
}

/// Tests that run once on each kind of store: `async fn name(pool) { ... }`
/// becomes `name::sqlite` and `name::postgres`, each with its own new store
/// opened as `pool`; `async fn name(pool, store)` also names the
/// [`TestStore`].
macro_rules! store_tests {
    ($( $(#[doc = $doc:literal])* async fn $name:ident($pool:ident $(, $store:ident)?) $body:block )*) => { $(
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let store = $crate::db::testing::TestStore::sqlite();
                #[allow(unused_variables)]
                let $pool = store.open().await;
                $( let $store = &store; )?
                $body
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(store) = $crate::db::testing::TestStore::postgres().await else {
                    return;
                };
                #[allow(unused_variables)]
                let $pool = store.open().await;
                $( let $store = &store; )?
                $body
            }
        }
    )* };
}
pub(crate) use store_tests;
