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

/// A TCP relay in front of the test server that a test can cut and put
/// back, to take the database away from a running gateway.
pub struct Relay {
    pub addr: std::net::SocketAddr,
    target: std::net::SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Relay {
    /// A relay to the server of `db`.
    pub async fn start(db: &Database) -> Relay {
        let url = url::Url::parse(&db.url).unwrap();
        let host = url.host_str().unwrap().to_string();
        let port = url.port().unwrap_or(5432);
        let target = tokio::net::lookup_host((host.as_str(), port))
            .await
            .unwrap()
            .next()
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        Relay {
            addr,
            target,
            task: Some(tokio::spawn(relay(listener, target))),
        }
    }

    /// `db`'s URL through the relay.
    pub fn url(&self, db: &Database) -> String {
        let mut url = url::Url::parse(&db.url).unwrap();
        url.set_port(Some(self.addr.port())).unwrap();
        url.to_string()
    }

    /// Closes the listener and every relayed connection.
    pub fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Listens again on the same address.
    pub async fn restore(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.task = Some(tokio::spawn(relay(listener, self.target)));
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
    }
}

/// Relays each connection to `target`; aborting it drops every connection.
async fn relay(listener: tokio::net::TcpListener, target: std::net::SocketAddr) {
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((mut client, _)) = listener.accept().await {
        connections.spawn(async move {
            if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
        });
    }
}

/// A PostgreSQL server behind TLS, as a managed database is: answers the
/// client's SSLRequest with `S`, completes the handshake with `config`'s
/// certificate, and relays the connection inside to the test server. A
/// client that does not ask for TLS is dropped, so a test knows TLS was
/// used.
pub struct TlsRelay {
    pub addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TlsRelay {
    pub async fn start(db: &Database, config: std::sync::Arc<rustls::ServerConfig>) -> TlsRelay {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let relay = Relay::start(db).await;
        let target = relay.target;
        drop(relay);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                connections.spawn(async move {
                    // SSLRequest: length 8, code 80877103.
                    let mut request = [0u8; 8];
                    if client.read_exact(&mut request).await.is_err()
                        || request != [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]
                    {
                        return;
                    }
                    if client.write_all(b"S").await.is_err() {
                        return;
                    }
                    let Ok(mut tls) = acceptor.accept(client).await else {
                        return;
                    };
                    if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
                    }
                });
            }
        });
        TlsRelay { addr, task }
    }

    /// `db`'s URL through the relay, by the name `host`.
    pub fn url(&self, db: &Database, host: &str) -> String {
        let mut url = url::Url::parse(&db.url).unwrap();
        url.set_host(Some(host)).unwrap();
        url.set_port(Some(self.addr.port())).unwrap();
        url.to_string()
    }
}

impl Drop for TlsRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
