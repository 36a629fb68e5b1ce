//! A fresh PostgreSQL database for one test, on the server
//! `SAFEDELETE_TEST_POSTGRES_URL` names (`.ci/run` sets it to the local
//! one), dropped when the test ends. Without the variable, `database()`
//! says the test is skipped and returns `None`.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

pub const VAR: &str = "SAFEDELETE_TEST_POSTGRES_URL";

pub struct Database {
    /// `postgres://.../safedelete_test_...`, for `[database] url`.
    pub url: String,
    admin: String,
    name: String,
}

/// The server URL with another database name.
fn with_database(url: &str, name: &str) -> String {
    let mut url = url::Url::parse(url).expect("a postgres:// URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

pub async fn database() -> Option<Database> {
    let Ok(server) = std::env::var(VAR) else {
        // Straight to stderr: the test harness would hide an `eprintln!`.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "skipped: {VAR} is not set, so this PostgreSQL test did not run"
        );
        return None;
    };
    let name = format!(
        "safedelete_test_{}_{:016x}",
        std::process::id(),
        fastrand::u64(..)
    );
    let admin = with_database(&server, "postgres");
    let mut conn = PgConnectOptions::from_str(&admin)
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL server: {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
    Some(Database {
        url: with_database(&server, &name),
        admin,
        name,
    })
}

impl Drop for Database {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // A thread of its own: this may run inside the test's runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut conn = PgConnectOptions::from_str(&admin)?.connect().await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await?;
                conn.close().await
            })
        })
        .join();
    }
}
