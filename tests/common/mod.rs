//! Shared test support: a real gateway on 127.0.0.1:0 in this process, a real
//! SQLite file in a temp dir, an HTTP client, and raw-socket helpers.
#![allow(dead_code)]

pub mod postgres;
pub mod process;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use safedelete::config::Config;
use safedelete::db::Location;
use safedelete::server::{self, Listeners, RunSummary};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const KEY: &str = "sl_test_key";

/// A gateway running in this process.
pub struct Gateway {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    /// Where its SQLite file is (or would be: see `store`).
    pub db_path: PathBuf,
    /// Its store: the SQLite file, or a new PostgreSQL database when
    /// `SAFEDELETE_TEST_STORE=postgres` (see [`TestStore`]).
    pub store: Location,
    /// The PostgreSQL database, dropped with the gateway.
    _database: Option<postgres::Database>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<RunSummary>>,
}

impl Gateway {
    /// A gateway in front of `upstream` with the default config.
    pub async fn start(upstream: &str) -> Gateway {
        Gateway::start_with(upstream, Extra::default()).await
    }

    /// A gateway with extra config.
    pub async fn start_with(upstream: &str, extra: Extra<'_>) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let db_path = dir.path().join("data").join("safedelete.db");
        let database = match TestStore::from_env() {
            TestStore::Sqlite => None,
            TestStore::Postgres => Some(postgres::database().await.unwrap_or_else(|| {
                panic!("SAFEDELETE_TEST_STORE=postgres needs {}", postgres::VAR)
            })),
        };
        let store = match &database {
            Some(db) => db.url.parse().unwrap(),
            None => Location::Sqlite(db_path.clone()),
        };
        let config_path = dir.path().join("safedelete.toml");
        std::fs::write(
            &config_path,
            config_text_for(upstream, &database_toml(&store), extra),
        )
        .unwrap();
        let config = Config::load(Some(&config_path), &safedelete::config::NoEnv)
            .expect("test config is valid");
        let listeners = Listeners::bind(&config).await.unwrap();
        let proxy = listeners.proxy_addr();
        let admin = listeners.admin_addr();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server::run(config, listeners, async {
                let _ = stop_rx.await;
            })
            .await
            .expect("gateway runs")
        });
        let gw = Gateway {
            proxy,
            admin,
            dir,
            db_path,
            store,
            _database: database,
            stop: Some(stop_tx),
            task: Some(task),
        };
        // Ready once the database is open and migrated: no test races it.
        for _ in 0..200 {
            let ready = client()
                .request(
                    Request::get(gw.admin_url("/readyz"))
                        .body(Full::default())
                        .unwrap(),
                )
                .await;
            if matches!(ready, Ok(r) if r.status() == StatusCode::OK) {
                return gw;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the gateway did not become ready");
    }

    pub fn url(&self, target: &str) -> String {
        format!("http://{}{}", self.proxy, target)
    }

    /// The store as `SAFEDELETE_DATABASE` names it for a command.
    pub fn database_env(&self) -> String {
        match &self.store {
            Location::Sqlite(path) => path.display().to_string(),
            Location::Postgres(url) => url.expose().to_string(),
        }
    }

    pub fn admin_url(&self, target: &str) -> String {
        format!("http://{}{}", self.admin, target)
    }

    /// Signals shutdown without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts down gracefully and waits (audit flushed, database closed). The
    /// temp dir, and so the database, lives on until `self` is dropped.
    pub async fn stop(&mut self) -> RunSummary {
        self.begin_shutdown();
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("gateway stops in time")
            .expect("gateway task")
    }

    /// Waits for the audit writer to commit at least `n` rows.
    pub async fn wait_for_audit_rows(&self, n: i64) -> Vec<AuditRow> {
        for _ in 0..200 {
            let rows = audit_rows(&self.store).await;
            if rows.len() as i64 >= n {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("fewer than {n} audit rows after 5s");
    }
}

/// Which kind of store the in-process gateways of a test run use:
/// `SAFEDELETE_TEST_STORE` is `sqlite` (the default) or `postgres` (a new
/// database on the server `SAFEDELETE_TEST_POSTGRES_URL` names, per
/// gateway). `.ci/run` runs the store-heavy suites once with each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestStore {
    Sqlite,
    Postgres,
}

pub const TEST_STORE_VAR: &str = safedelete::db::TEST_STORE;

impl TestStore {
    pub fn from_env() -> TestStore {
        match std::env::var(TEST_STORE_VAR).as_deref() {
            Err(_) | Ok("sqlite") => TestStore::Sqlite,
            Ok("postgres") => TestStore::Postgres,
            Ok(other) => panic!("{TEST_STORE_VAR}={other:?}: use sqlite or postgres"),
        }
    }
}

/// The `[database]` table's body for `store`.
pub fn database_toml(store: &Location) -> String {
    match store {
        Location::Sqlite(path) => format!("path = {:?}", path.display().to_string()),
        Location::Postgres(url) => format!("url = {:?}", url.expose()),
    }
}

/// Extra config for a test gateway: top-level keys, keys of `[upstream]`,
/// and whole extra tables.
#[derive(Default, Clone, Copy)]
pub struct Extra<'a> {
    pub top: &'a str,
    pub upstream: &'a str,
    pub admin: &'a str,
    pub tables: &'a str,
}

pub fn config_text(upstream: &str, db_path: &Path, extra: Extra<'_>) -> String {
    config_text_for(
        upstream,
        &format!("path = {:?}", db_path.display().to_string()),
        extra,
    )
}

/// [`config_text`] with `database` as the `[database]` table's body
/// (`url = "postgres://..."`).
pub fn config_text_for(upstream: &str, database: &str, extra: Extra<'_>) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\n{grace}{top}\n\
         [upstream]\nurl = \"{upstream}\"\n{upstream_extra}\n\
         [database]\n{database}\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n{admin}\n{tables}\n",
        admin = extra.admin,
        grace = if extra.top.contains("shutdown_grace") {
            ""
        } else {
            "shutdown_grace = \"5s\"\n"
        },
        top = extra.top,
        upstream_extra = extra.upstream,
        tables = extra.tables,
    )
}

/// One audit row, as the tests read it straight from SQLite.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub request_id: String,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub actor_fingerprint: Option<String>,
    pub client_addr: Option<String>,
    pub user_agent: Option<String>,
    pub operation: String,
    pub campaign_id: Option<i64>,
    pub action: Option<String>,
    pub upstream_status: Option<i64>,
    pub status: i64,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub duration_ms: f64,
    pub error_kind: Option<String>,
}

pub async fn audit_rows(store: impl Into<Location>) -> Vec<AuditRow> {
    let db = store.into();
    if db.sqlite_path().is_some_and(|p| !p.exists()) {
        return Vec::new();
    }
    let pool = safedelete::db::open_existing(db).await.unwrap();
    let rows = sqlx::query_as::<_, AuditRow>(
        "SELECT id, request_id, method, path, query, actor_fingerprint, client_addr, user_agent, \
         operation, campaign_id, action, upstream_status, status, bytes_in, bytes_out, duration_ms, error_kind \
         FROM audit_events ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows
}

/// Everything the store holds, as bytes to search: the SQLite file (and
/// its WAL), or every row of every table as PostgreSQL prints it.
pub async fn stored_bytes(store: &Location) -> Vec<u8> {
    match store {
        Location::Sqlite(path) => {
            let mut bytes = std::fs::read(path).unwrap();
            if let Ok(wal) = std::fs::read(format!("{}-wal", path.display())) {
                bytes.extend(wal);
            }
            bytes
        }
        Location::Postgres(_) => {
            let pool = safedelete::db::open_existing(store).await.unwrap();
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT CAST(tablename AS TEXT) FROM pg_catalog.pg_tables WHERE schemaname = current_schema()",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            let mut bytes = Vec::new();
            for table in tables {
                let rows: Vec<String> =
                    sqlx::query_scalar(&format!("SELECT CAST(t AS TEXT) FROM {table} t"))
                        .fetch_all(&pool)
                        .await
                        .unwrap();
                for row in rows {
                    bytes.extend(row.into_bytes());
                }
            }
            pool.close().await;
            bytes
        }
    }
}

/// A plain HTTP/1.1 client (no pool reuse surprises: one per call site is fine).
pub fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// The collected parts of a response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn collect(resp: Response<hyper::body::Incoming>) -> Reply {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn send(req: Request<Full<Bytes>>) -> Reply {
    let resp = client().request(req).await.expect("request");
    collect(resp).await
}

pub async fn get(url: &str) -> Reply {
    send(Request::get(url).body(Full::default()).unwrap()).await
}

/// A read of the fake SmartLead's own state at `path` (under `/api/v1`), with
/// the test key, waiting out the fake's rate limit when it has one.
pub async fn fake_read(fake_url: &str, path: &str) -> Reply {
    let sep = if path.contains('?') { '&' } else { '?' };
    let url = format!("{fake_url}/api/v1{path}{sep}api_key={KEY}");
    loop {
        let r = get(&url).await;
        if r.status != StatusCode::TOO_MANY_REQUESTS {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The ids of the fake's campaigns with this name.
pub async fn campaigns_named(fake_url: &str, name: &str) -> Vec<i64> {
    fake_read(fake_url, "/campaigns")
        .await
        .json()
        .as_array()
        .expect("the fake lists campaigns as an array")
        .iter()
        .filter(|c| c["name"] == name)
        .map(|c| c["id"].as_i64().expect("a campaign id"))
        .collect()
}

/// Writes raw bytes to `addr` and reads until the server closes or 5 s pass.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes raw bytes and waits up to `within` for the server to answer and
/// close; `None` if it neither answered nor closed in time (a hang).
pub async fn raw_closes_within(addr: SocketAddr, bytes: &[u8], within: Duration) -> Option<String> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    match tokio::time::timeout(within, s.read_to_end(&mut out)).await {
        Ok(_) => Some(String::from_utf8_lossy(&out).into_owned()),
        Err(_) => None,
    }
}

/// A metric's value from the admin listener's `/metrics`.
pub async fn metric(gw: &Gateway, name: &str) -> f64 {
    let text = get(&gw.admin_url("/metrics")).await;
    let text = String::from_utf8_lossy(&text.body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// An address on which nothing listens.
pub async fn closed_port() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

/// A throwaway CA and a `localhost` certificate it signed, made with rcgen.
pub struct TestPki {
    pub ca_pem: String,
    pub ca_der: rustls::pki_types::CertificateDer<'static>,
    pub leaf_pem: String,
    pub leaf_der: rustls::pki_types::CertificateDer<'static>,
    pub leaf_key_pem: String,
    pub leaf_key_der: Vec<u8>,
}

impl TestPki {
    pub fn new() -> TestPki {
        TestPki::for_names(&["localhost", "127.0.0.1"])
    }

    /// A CA and a leaf certificate for `names` only.
    pub fn for_names(names: &[&str]) -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "safedelete test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        TestPki {
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().clone(),
            leaf_pem: leaf.pem(),
            leaf_der: leaf.der().clone(),
            leaf_key_pem: leaf_key.serialize_pem(),
            leaf_key_der: leaf_key.serialize_der(),
        }
    }

    fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
        std::sync::Arc::new(rustls::crypto::ring::default_provider())
    }

    /// A server config presenting the `localhost` certificate.
    pub fn server_config(&self) -> std::sync::Arc<rustls::ServerConfig> {
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(self.leaf_key_der.clone().into());
        let mut config = rustls::ServerConfig::builder_with_provider(Self::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![self.leaf_der.clone()], key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        std::sync::Arc::new(config)
    }

    /// An HTTPS client that trusts only this CA.
    pub fn client(
        &self,
    ) -> Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    > {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let tls = rustls::ClientConfig::builder_with_provider(Self::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        Client::builder(TokioExecutor::new()).build(https)
    }

    /// Writes the PEM files into `dir`: (ca, cert, key).
    pub fn write(&self, dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let ca = dir.join("ca.pem");
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&ca, &self.ca_pem).unwrap();
        std::fs::write(&cert, &self.leaf_pem).unwrap();
        std::fs::write(&key, &self.leaf_key_pem).unwrap();
        (ca, cert, key)
    }
}
