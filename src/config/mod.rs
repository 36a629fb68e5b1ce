//! Configuration: the TOML file (`file`), environment overrides (`env`), and the
//! validated, immutable [`Config`] the gateway runs with; `render` lists its
//! settings for `check-config` and for the reload diff, `suggest` finds the
//! closest known word for "did you mean" messages.
//!
//! Loading never creates files and never exits the process: every problem comes
//! back as a [`ConfigError`] that names the key and what is wrong with it.

mod env;
mod file;
mod identity;
mod render;
pub(crate) mod suggest;

use crate::db::{Location, PoolSettings};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::guard::policy::{Policy, UNKNOWN_ACTOR};

use env::var;
pub use env::{unknown_variables, Env, NoEnv, ProcessEnv, UnknownVariable};
use file::FileConfig;
pub use identity::{
    Account, Bypass, Identity, IdentityMode, KeySource, Rate, SmartLead, DEFAULT_ACCOUNT,
    GATEWAY_KEY_PREFIX,
};
pub use render::RELOADED;

/// Where `serve` looks for a config file when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "config/safedelete.toml";
/// The proxy listener's address when nothing else is configured.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);
/// SmartLead's API host, the upstream when nothing else is configured.
pub const DEFAULT_UPSTREAM: &str = "https://server.smartlead.ai";

/// Query parameters that are always redacted, whatever the config says.
const ALWAYS_REDACTED: &[&str] = &["api_key"];

/// A problem with the configuration, naming the key (or environment variable).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("config file {path} has no settings (it is empty or holds only comments); refusing it rather than falling back to the built-in defaults")]
    EmptyFile { path: PathBuf },
    #[error("no config file to reload: the gateway started without one, on the built-in defaults; restart it with --config FILE")]
    NoFileToReload,
    #[error("{key}: {problem}")]
    Invalid { key: String, problem: String },
    #[error(transparent)]
    Policy(#[from] crate::guard::policy::PolicyError),
    #[error("{key}: cannot read {path}: {source}")]
    File {
        key: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// A secret string whose `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from, if any.
    pub source: Option<PathBuf>,
    pub listen: SocketAddr,
    pub listen_tls: Option<ListenTls>,
    /// The forward-proxy listener, when `[forward_proxy] enabled = true`.
    pub forward_proxy: Option<ForwardProxy>,
    pub shutdown_grace: Duration,
    /// A client connection that sends no complete request head within this
    /// (idle keep-alive included) is closed.
    pub request_head_timeout: Duration,
    /// The longest pause inside a request or response body before the
    /// transfer is abandoned.
    pub body_idle_timeout: Duration,
    /// Threads serving the proxy listener, each with its own runtime and
    /// upstream pool; 0 means one per CPU.
    pub workers: usize,
    /// Client connections served at once on the proxy listener; more wait in
    /// the listen backlog. Resolved from the open-files limit when not set.
    pub max_connections: usize,
    /// The largest request head (request line and headers) a client may
    /// send; a larger one is answered 431.
    pub max_request_head_bytes: usize,
    pub upstream: Upstream,
    pub database: Database,
    pub audit: Audit,
    pub admin: Admin,
    pub log: Log,
    /// The deletion policy and the actors it can name.
    pub policy: GuardPolicy,
    pub guard: GuardSettings,
    pub identity: Identity,
    pub smartlead: SmartLead,
    pub bypass: Bypass,
}

/// The parts of the config that SIGHUP reloads together.
#[derive(Debug, Clone)]
pub struct GuardPolicy {
    pub policy: Policy,
    pub actors: Vec<Actor>,
}

impl GuardPolicy {
    /// Pairs a policy with the actors it may name; a rule naming an actor
    /// that `actors` does not define is refused. With gateway keys, rules
    /// name keys, which live in the database: they are not checked here.
    pub fn new(
        policy: Policy,
        actors: Vec<Actor>,
        mode: IdentityMode,
    ) -> Result<GuardPolicy, ConfigError> {
        if mode == IdentityMode::Passthrough {
            let names: Vec<&str> = actors.iter().map(|a| a.name.as_str()).collect();
            policy.check_actors(&names)?;
        }
        Ok(GuardPolicy { policy, actors })
    }

    /// The label of the key with this SHA-256 (full hex), or `unknown`.
    pub fn actor_label(&self, key_sha256: Option<&str>) -> &str {
        key_sha256
            .and_then(|k| self.actors.iter().find(|a| a.key_sha256 == k))
            .map(|a| a.name.as_str())
            .unwrap_or(UNKNOWN_ACTOR)
    }
}

/// A known key, by the SHA-256 of its value (lower-case hex).
#[derive(Debug, Clone)]
pub struct Actor {
    pub name: String,
    pub key_sha256: String,
}

/// How the guard acts.
#[derive(Debug, Clone)]
pub struct GuardSettings {
    pub snapshot_budget: Duration,
    /// The longest a client waits for its answer while the snapshot is
    /// captured; never more than `snapshot_budget`.
    pub answer_within: Duration,
    /// A complete snapshot younger than this is used by a retry of the same
    /// delete (if the campaign did not change) instead of capturing again.
    /// Zero: never reuse.
    pub reuse_snapshot_within: Duration,
    pub archive_attempts: Vec<ArchiveAttempt>,
}

/// One way of archiving a campaign: `METHOD /campaigns/{id}/status {"status": STATUS}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveAttempt {
    pub method: http::Method,
    pub status: String,
}

/// TLS on the proxy listener: its certificates, files already read and
/// parsed. The first is `[listen_tls]`'s own, served to clients that send
/// no name; the others are `[[listen_tls.certificates]]`. Each is served to
/// the clients that ask for one of its names (SNI).
#[derive(Clone, Debug)]
pub struct ListenTls {
    pub identities: Vec<TlsIdentity>,
}

/// One certificate chain and its key.
#[derive(Clone)]
pub struct TlsIdentity {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub certs: Vec<CertificateDer<'static>>,
    pub key: std::sync::Arc<PrivateKeyDer<'static>>,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

/// `[forward_proxy]`: a listener for `HTTPS_PROXY`. A `CONNECT` to a name of
/// the `[listen_tls]` certificate is answered with that certificate and its
/// requests take the gateway's usual path; other hosts are refused, or
/// tunnelled unchanged with `allow_other_hosts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardProxy {
    pub listen: SocketAddr,
    pub allow_other_hosts: bool,
}

/// `[database]`: where the store is and how many connections to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Database {
    pub store: Location,
    pub pool: PoolSettings,
}

/// The SmartLead origin and how to talk to it.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub scheme: Scheme,
    pub authority: Authority,
    /// Where connections go instead of what the host resolves to (TLS is
    /// still verified against the host's name), in the order tried.
    pub connect_to: Vec<SocketAddr>,
    pub ca_file: Option<PathBuf>,
    pub extra_roots: Vec<CertificateDer<'static>>,
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle_per_host: usize,
}

impl Upstream {
    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }
    /// The origin as a URL, for logs and `check-config`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }
}

#[derive(Debug, Clone)]
pub struct Audit {
    /// Whether passthrough requests are recorded. Guarded requests (campaign
    /// deletes) are always recorded, whatever this says.
    pub passthrough: bool,
    /// Query parameter names (compared case-insensitively) whose values are never stored or logged.
    pub redact_params: Vec<String>,
    pub queue_capacity: usize,
    pub batch_max: usize,
    /// What happens to requests while records cannot be written.
    pub on_failure: OnAuditFailure,
}

/// `audit.on_failure`: what the gateway does while the audit trail cannot be
/// written (disk full, database unwritable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnAuditFailure {
    /// Keep forwarding; the lost records become a gap record (default).
    Forward,
    /// Refuse every request with 503 until records can be written again.
    Refuse,
}

impl OnAuditFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            OnAuditFailure::Forward => "forward",
            OnAuditFailure::Refuse => "refuse",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub listen: SocketAddr,
    pub token: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct Log {
    pub format: LogFormat,
    pub filter: LogFilter,
}

/// A tracing filter (`info`, `safedelete=debug,info`) that was checked when
/// the config was loaded, so installing it cannot fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFilter(String);

impl LogFilter {
    /// The level names a bare directive may be.
    const LEVELS: &'static [&'static str] = &["trace", "debug", "info", "warn", "error", "off"];

    /// Refuses what `EnvFilter` refuses, and the mistakes it accepts but
    /// reads as a module name, which silences every other log line: a
    /// misspelt level (`inf`) or a space in a bare directive (`warn, info`).
    fn parse(key: &str, value: &str) -> Result<LogFilter, ConfigError> {
        let bad = |problem: String| {
            ConfigError::invalid(
                key,
                format!(
                    "{problem}; write a level such as \"info\", or per-module directives \
                     such as \"safedelete=debug,info\""
                ),
            )
        };
        if value.trim().is_empty() {
            return Err(bad("is empty, which would silence every log line".into()));
        }
        if let Err(err) = tracing_subscriber::EnvFilter::try_new(value) {
            return Err(bad(format!("{value:?} is not a log filter ({err})")));
        }
        for directive in value.split(',') {
            if directive.is_empty() || directive.contains(['=', '[']) {
                continue;
            }
            let word = directive.trim().to_ascii_lowercase();
            if directive.contains(char::is_whitespace) {
                return Err(bad(format!(
                    "{value:?} has a space in {directive:?}, which would be read as a module name \
                     and silence every other log line"
                )));
            }
            if Self::LEVELS.contains(&word.as_str()) {
                continue;
            }
            if let Some(level) = suggest::closest(&word, Self::LEVELS, 2) {
                return Err(bad(format!(
                    "{directive:?} would be read as a module name, not a level \
                     (did you mean {level:?}?)"
                )));
            }
        }
        Ok(LogFilter(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Config {
    /// Loads the config: `path` if given, else [`DEFAULT_CONFIG_PATH`] if it exists,
    /// else the built-in defaults; then applies `SAFEDELETE_*` overrides from `env`.
    pub fn load(path: Option<&Path>, env: &dyn Env) -> Result<Config, ConfigError> {
        let path = match path {
            Some(p) => p,
            None => match Path::new(DEFAULT_CONFIG_PATH) {
                p if p.is_file() => p,
                _ => return Config::from_file(FileConfig::default(), env),
            },
        };
        Config::from_text(path, &read_file(path)?, env)
    }

    /// Loads the file this config came from again, for SIGHUP. A missing
    /// file, one with no settings at all (empty, or only comments) and having
    /// started without a file are refused, not read as "the built-in
    /// defaults", which would quietly replace every policy rule.
    pub fn reload(&self, env: &dyn Env) -> Result<Config, ConfigError> {
        let path = self.source.as_deref().ok_or(ConfigError::NoFileToReload)?;
        let text = read_file(path)?;
        if toml::from_str::<toml::Table>(&text).is_ok_and(|t| t.is_empty()) {
            return Err(ConfigError::EmptyFile {
                path: path.to_path_buf(),
            });
        }
        Config::from_text(path, &text, env)
    }

    fn from_text(path: &Path, text: &str, env: &dyn Env) -> Result<Config, ConfigError> {
        let file = Self::parse(text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        let mut config = Config::from_file(file, env)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    fn parse(text: &str) -> Result<FileConfig, toml::de::Error> {
        toml::from_str(text)
    }

    /// Validates a parsed file, with environment overrides applied on top.
    fn from_file(file: FileConfig, env: &dyn Env) -> Result<Config, ConfigError> {
        let listen = pick(env, var::LISTEN, file.listen, "listen")?
            .map(|(key, v)| parse_addr(&key, &v))
            .transpose()?
            .unwrap_or(DEFAULT_LISTEN);
        let admin_listen = pick(env, var::ADMIN_LISTEN, file.admin.listen, "admin.listen")?
            .map(|(key, v)| parse_addr(&key, &v))
            .transpose()?
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8081)));
        let upstream_url = pick(env, var::UPSTREAM, file.upstream.url, "upstream.url")?
            .unwrap_or_else(|| ("upstream.url".into(), DEFAULT_UPSTREAM.into()));
        let (scheme, authority) = parse_upstream(&upstream_url.0, &upstream_url.1)?;
        let database = database(env, file.database)?;
        let token = match env.get(var::ADMIN_TOKEN) {
            Some(v) => Some(v),
            None => file.admin.token,
        };
        let token = match token {
            Some(t) if t.trim().is_empty() => None,
            Some(t) if t.len() < 16 => {
                return Err(ConfigError::invalid(
                    "admin.token",
                    "must be at least 16 characters (or leave it unset)",
                ))
            }
            other => other.map(Secret::new),
        };

        if token.is_none() && !admin_listen.ip().is_loopback() {
            return Err(ConfigError::invalid(
                "admin.listen",
                format!(
                    "{admin_listen} is reachable from other hosts; set admin.token (or {}) or listen on 127.0.0.1",
                    var::ADMIN_TOKEN
                ),
            ));
        }

        let ca_file = file.upstream.ca_file;
        let extra_roots = match &ca_file {
            Some(path) => {
                let certs = read_certs("upstream.ca_file", path)?;
                if certs.is_empty() {
                    return Err(ConfigError::invalid(
                        "upstream.ca_file",
                        format!("{} holds no PEM certificate", path.display()),
                    ));
                }
                certs
            }
            None => Vec::new(),
        };

        let listen_tls = match file.listen_tls {
            None => None,
            Some(tls) => Some(load_listen_tls(tls)?),
        };
        let forward_proxy = forward_proxy(file.forward_proxy, listen_tls.is_some(), listen)?;

        let connect_timeout = positive(
            "upstream.connect_timeout",
            file.upstream.connect_timeout,
            Duration::from_secs(5),
        )?;
        let first_byte_timeout = positive(
            "upstream.first_byte_timeout",
            file.upstream.first_byte_timeout,
            Duration::from_secs(120),
        )?;
        let idle_timeout = positive(
            "upstream.idle_timeout",
            file.upstream.idle_timeout,
            Duration::from_secs(30),
        )?;
        let max_idle_per_host = file.upstream.max_idle_per_host.unwrap_or(256);
        let connect_to = connect_to(file.upstream.connect_to)?;

        let mut redact_params: Vec<String> =
            ALWAYS_REDACTED.iter().map(|s| s.to_string()).collect();
        for p in file.audit.redact_params.unwrap_or_default() {
            if crate::audit::redact::normalize_name(&p).is_empty() {
                return Err(ConfigError::invalid(
                    "audit.redact_params",
                    format!("`{p}` has no letters or digits; names are compared by their letters and digits (for example \"client_token\")"),
                ));
            }
            if !redact_params.iter().any(|q| q.eq_ignore_ascii_case(&p)) {
                redact_params.push(p);
            }
        }
        let queue_capacity = file.audit.queue_capacity.unwrap_or(65_536);
        if !(1..=1_000_000).contains(&queue_capacity) {
            return Err(ConfigError::invalid(
                "audit.queue_capacity",
                "must be between 1 and 1000000",
            ));
        }
        let batch_max = file.audit.batch_max.unwrap_or(1_000);
        if !(1..=10_000).contains(&batch_max) {
            return Err(ConfigError::invalid(
                "audit.batch_max",
                "must be between 1 and 10000",
            ));
        }
        let workers = file.workers.unwrap_or(0);
        if workers > 1024 {
            return Err(ConfigError::invalid(
                "workers",
                "must be between 0 (one per CPU) and 1024",
            ));
        }
        let max_connections = match file.max_connections {
            None | Some(0) => default_max_connections(),
            Some(n) if n <= MAX_CONNECTIONS_CEILING => n,
            Some(_) => {
                return Err(ConfigError::invalid(
                    "max_connections",
                    format!("must be between 1 and {MAX_CONNECTIONS_CEILING} (or 0 for one sized from the open-files limit)"),
                ))
            }
        };
        let max_request_head_bytes = file.max_request_head_bytes.unwrap_or(64 * 1024);
        if !(8 * 1024..=1024 * 1024).contains(&max_request_head_bytes) {
            return Err(ConfigError::invalid(
                "max_request_head_bytes",
                "must be between 8192 and 1048576 (for example 65536)",
            ));
        }
        let shutdown_grace = duration(
            "shutdown_grace",
            file.shutdown_grace,
            Duration::from_secs(30),
        )?;
        let request_head_timeout = positive(
            "request_head_timeout",
            file.request_head_timeout,
            Duration::from_secs(30),
        )?;
        let body_idle_timeout = positive(
            "body_idle_timeout",
            file.body_idle_timeout,
            Duration::from_secs(60),
        )?;

        let format = match pick(env, var::LOG_FORMAT, file.log.format, "log.format")? {
            None => LogFormat::Pretty,
            Some((_, v)) if v.eq_ignore_ascii_case("pretty") => LogFormat::Pretty,
            Some((_, v)) if v.eq_ignore_ascii_case("json") => LogFormat::Json,
            Some((key, v)) => {
                return Err(ConfigError::invalid(
                    key,
                    format!("`{v}` is not a log format (use \"json\" or \"pretty\")"),
                ))
            }
        };
        let filter = match pick(env, var::LOG, file.log.filter, "log.filter")? {
            Some((key, v)) => LogFilter::parse(&key, &v)?,
            None => LogFilter("info".into()),
        };

        let policy = match &file.policy {
            Some(p) => Policy::from_file(p)?,
            None => Policy::builtin(),
        };
        let actors = load_actors(file.actors)?;
        let identity = identity::load_identity(env, file.identity)?;
        let smartlead = identity::load_smartlead(env, file.smartlead, identity.mode)?;
        let bypass = identity::load_bypass(file.bypass)?;
        let policy = GuardPolicy::new(policy, actors, identity.mode)?;
        let guard = load_guard(file.guard)?;

        Ok(Config {
            source: None,
            listen,
            listen_tls,
            forward_proxy,
            shutdown_grace,
            request_head_timeout,
            body_idle_timeout,
            workers,
            max_connections,
            max_request_head_bytes,
            upstream: Upstream {
                scheme,
                authority,
                connect_to,
                ca_file,
                extra_roots,
                connect_timeout,
                first_byte_timeout,
                idle_timeout,
                max_idle_per_host,
            },
            database,
            audit: Audit {
                passthrough: file.audit.passthrough.unwrap_or(true),
                on_failure: match file.audit.on_failure.as_deref() {
                    None | Some("forward") => OnAuditFailure::Forward,
                    Some("refuse") => OnAuditFailure::Refuse,
                    Some(other) => {
                        return Err(ConfigError::invalid(
                            "audit.on_failure",
                            format!("`{other}` is not \"forward\" (keep forwarding and record the gap) or \"refuse\" (answer 503 while records cannot be written)"),
                        ))
                    }
                },
                redact_params,
                queue_capacity,
                batch_max,
            },
            admin: Admin {
                listen: admin_listen,
                token,
            },
            log: Log { format, filter },
            policy,
            guard,
            identity,
            smartlead,
            bypass,
        })
    }
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn load_actors(actors: Vec<file::FileActor>) -> Result<Vec<Actor>, ConfigError> {
    let mut out: Vec<Actor> = Vec::new();
    for (i, a) in actors.into_iter().enumerate() {
        let key = format!("actors[{i}]");
        if a.name.trim().is_empty() || a.name == UNKNOWN_ACTOR {
            return Err(ConfigError::invalid(
                format!("{key}.name"),
                format!("must be a non-empty label other than `{UNKNOWN_ACTOR}`"),
            ));
        }
        let sha = a.key_sha256.trim().to_ascii_lowercase();
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ConfigError::invalid(
                format!("{key}.key_sha256"),
                "must be the 64 hex characters of the key's SHA-256 (`printf %s \"$KEY\" | sha256sum`)",
            ));
        }
        if out.iter().any(|o| o.key_sha256 == sha) {
            return Err(ConfigError::invalid(
                format!("{key}.key_sha256"),
                "the same key is listed twice",
            ));
        }
        out.push(Actor {
            name: a.name,
            key_sha256: sha,
        });
    }
    Ok(out)
}

fn load_guard(g: file::FileGuard) -> Result<GuardSettings, ConfigError> {
    let snapshot_budget = positive(
        "guard.snapshot_budget",
        g.snapshot_budget,
        Duration::from_secs(300),
    )?;
    // Most HTTP clients give up after 30-60 s; a budget shorter than that
    // bounds the wait by itself.
    let answer_within = positive(
        "guard.answer_within",
        g.answer_within,
        Duration::from_secs(30).min(snapshot_budget),
    )?;
    if answer_within > snapshot_budget {
        return Err(ConfigError::invalid(
            "guard.answer_within",
            format!(
                "{} is longer than guard.snapshot_budget ({}); a client cannot wait for a capture longer than the capture may take: shorten guard.answer_within or lengthen guard.snapshot_budget",
                humantime::format_duration(answer_within),
                humantime::format_duration(snapshot_budget)
            ),
        ));
    }
    let reuse_snapshot_within = duration(
        "guard.reuse_snapshot_within",
        g.reuse_snapshot_within,
        Duration::from_secs(15 * 60),
    )?;
    let attempts = g
        .archive_attempts
        .unwrap_or_else(|| vec!["PATCH ARCHIVED".into(), "POST ARCHIVED".into()]);
    if attempts.is_empty() {
        return Err(ConfigError::invalid(
            "guard.archive_attempts",
            "needs at least one entry like \"POST ARCHIVED\"",
        ));
    }
    let mut archive_attempts = Vec::new();
    for (i, a) in attempts.iter().enumerate() {
        let key = format!("guard.archive_attempts[{i}]");
        let mut words = a.split_whitespace();
        let (method, status) = match (words.next(), words.next(), words.next()) {
            (Some(m), Some(s), None) => (m.to_ascii_uppercase(), s.to_ascii_uppercase()),
            _ => {
                return Err(ConfigError::invalid(
                    key,
                    format!("`{a}` is not \"METHOD STATUS\" (for example \"POST ARCHIVED\")"),
                ))
            }
        };
        let method = match method.as_str() {
            "POST" => http::Method::POST,
            "PATCH" => http::Method::PATCH,
            "PUT" => http::Method::PUT,
            _ => {
                return Err(ConfigError::invalid(
                    key,
                    format!("`{method}` is not POST, PATCH or PUT"),
                ))
            }
        };
        if !matches!(status.as_str(), "ARCHIVED" | "PAUSED" | "STOPPED") {
            return Err(ConfigError::invalid(
                key,
                format!("`{status}` is not ARCHIVED, PAUSED or STOPPED"),
            ));
        }
        archive_attempts.push(ArchiveAttempt { method, status });
    }
    Ok(GuardSettings {
        snapshot_budget,
        answer_within,
        reuse_snapshot_within,
        archive_attempts,
    })
}

/// The most proxy connections `max_connections` may allow.
const MAX_CONNECTIONS_CEILING: usize = 1_000_000;
/// File descriptors kept for everything but proxied connections: the admin
/// listener, the database, logs.
const RESERVED_FDS: usize = 256;

/// Whether `max_connections` could use up the file descriptors the admin
/// listener and the database need (when set by hand past the default).
pub fn connections_exceed_open_files(max_connections: usize) -> Option<usize> {
    let open_files = open_files_limit()?;
    (max_connections.saturating_mul(2) + RESERVED_FDS > open_files).then_some(open_files)
}

/// A connection limit this process can really serve: each proxied
/// connection may hold two descriptors (client and SmartLead), and some are
/// kept back so the admin listener and the database still work when the
/// proxy is full. At most 4096 (heads of 64 KiB each stay within 256 MiB).
fn default_max_connections() -> usize {
    let open_files = open_files_limit().unwrap_or(1024);
    (open_files.saturating_sub(RESERVED_FDS) / 2).clamp(16, 4096)
}

/// The soft limit on open files (`/proc/self/limits`), where there is one.
pub fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The environment variable wins over the file key; returns which one was used.
fn pick(
    env: &dyn Env,
    var: &str,
    file_value: Option<String>,
    key: &str,
) -> Result<Option<(String, String)>, ConfigError> {
    Ok(match env.get(var) {
        Some(v) => Some((var.to_string(), v)),
        None => file_value.map(|v| (key.to_string(), v)),
    })
}

fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.trim().parse().map_err(|_| {
        ConfigError::invalid(
            key,
            format!("`{value}` is not an IP address and port (for example 127.0.0.1:8080)"),
        )
    })
}

fn parse_upstream(key: &str, value: &str) -> Result<(Scheme, Authority), ConfigError> {
    let uri: http::Uri = value.trim().parse().map_err(|_| {
        ConfigError::invalid(
            key,
            format!("`{value}` is not a URL (for example https://server.smartlead.ai)"),
        )
    })?;
    let scheme = match uri.scheme() {
        Some(s) if *s == Scheme::HTTP || *s == Scheme::HTTPS => s.clone(),
        _ => {
            return Err(ConfigError::invalid(
                key,
                format!("`{value}` must start with http:// or https://"),
            ))
        }
    };
    let authority = match uri.authority() {
        Some(a) if !a.host().is_empty() => a.clone(),
        _ => return Err(ConfigError::invalid(key, format!("`{value}` has no host"))),
    };
    if authority.as_str().contains('@') {
        return Err(ConfigError::invalid(
            key,
            "credentials in the upstream URL are not supported",
        ));
    }
    let path_ok = uri
        .path_and_query()
        .map(|pq| pq.as_str() == "/" || pq.as_str().is_empty())
        .unwrap_or(true);
    if !path_ok {
        return Err(ConfigError::invalid(
            key,
            format!(
                "`{value}` must be an origin without a path or query (clients send /api/v1/...), for example https://server.smartlead.ai"
            ),
        ));
    }
    Ok((scheme, authority))
}

/// The store and its pool: `SAFEDELETE_DATABASE` over `[database] url` or
/// `path` (one of the two), then the pool settings.
fn database(env: &dyn Env, file: file::FileDatabase) -> Result<Database, ConfigError> {
    let file::FileDatabase {
        path,
        url,
        pool_size,
        acquire_timeout,
        idle_timeout,
        statement_timeout,
    } = file;
    let store = match (env.get(var::DATABASE), url, path) {
        (Some(v), ..) => location(var::DATABASE, &v)?,
        (None, Some(_), Some(_)) => {
            return Err(ConfigError::invalid(
                "database.url",
                "and database.path are both set; keep one (url takes a path, sqlite://PATH \
                 or postgres://...)",
            ))
        }
        (None, Some(url), None) => location("database.url", &url)?,
        (None, None, Some(path)) if path.as_os_str().is_empty() => {
            return Err(ConfigError::invalid("database.path", "must not be empty"))
        }
        (None, None, Some(path)) => Location::Sqlite(path),
        (None, None, None) => Location::Sqlite(PathBuf::from("data/safedelete.db")),
    };
    let defaults = PoolSettings::default();
    let max_connections = match pool_size {
        None => defaults.max_connections,
        Some(n @ 1..=1000) => n as u32,
        Some(n) => {
            return Err(ConfigError::invalid(
                "database.pool_size",
                format!(
                    "{n} is out of range; give the most connections a gateway opens, 1 to 1000"
                ),
            ))
        }
    };
    let pool = PoolSettings {
        max_connections,
        acquire_timeout: positive(
            "database.acquire_timeout",
            acquire_timeout,
            defaults.acquire_timeout,
        )?,
        idle_timeout: positive("database.idle_timeout", idle_timeout, defaults.idle_timeout)?,
        statement_timeout: positive(
            "database.statement_timeout",
            statement_timeout,
            defaults.statement_timeout,
        )?,
    };
    Ok(Database { store, pool })
}

fn location(key: &str, written: &str) -> Result<Location, ConfigError> {
    written.parse().map_err(|e| {
        // The URL's password stays out of the message: it is shown redacted.
        let shown = match written.parse::<url::Url>() {
            Ok(mut u) if u.password().is_some() => {
                let _ = u.set_password(Some("REDACTED"));
                u.to_string()
            }
            _ => written.to_string(),
        };
        ConfigError::invalid(key, format!("`{shown}` {e}"))
    })
}

/// A duration key: `value` as written, or `default` when absent.
fn duration(
    key: &str,
    value: Option<file::RawDuration>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let written = match value {
        None => return Ok(default),
        Some(toml::Value::String(s)) => match humantime::parse_duration(s.trim()) {
            Ok(d) => return Ok(d),
            Err(_) => format!("{s:?}"),
        },
        Some(other) => other.to_string(),
    };
    Err(ConfigError::invalid(
        key,
        format!("{written} is not a duration; write it with a unit, for example \"30s\" or \"5m\""),
    ))
}

/// A duration key that must not be zero.
fn positive(
    key: &str,
    value: Option<file::RawDuration>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match duration(key, value, default)? {
        d if d.is_zero() => Err(ConfigError::invalid(
            key,
            "must be greater than zero (for example \"30s\")",
        )),
        d => Ok(d),
    }
}

fn read_pem(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::File {
        key: key.to_string(),
        path: path.to_path_buf(),
        source,
    })
}

fn read_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let pem = read_pem(key, path)?;
    rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| ConfigError::File {
            key: key.to_string(),
            path: path.to_path_buf(),
            source,
        })
}

/// `[forward_proxy]`: on only with `enabled = true`, and then only with the
/// `[listen_tls]` certificate it answers `CONNECT`s with.
fn forward_proxy(
    file: Option<file::FileForwardProxy>,
    has_tls: bool,
    listen: SocketAddr,
) -> Result<Option<ForwardProxy>, ConfigError> {
    let Some(file) = file else {
        return Ok(None);
    };
    if file.enabled != Some(true) {
        let set = [
            ("forward_proxy.listen", file.listen.is_some()),
            (
                "forward_proxy.allow_other_hosts",
                file.allow_other_hosts.is_some(),
            ),
        ];
        if let Some((key, _)) = set.iter().find(|(_, set)| *set) {
            return Err(ConfigError::invalid(
                *key,
                "is set but forward_proxy.enabled is not true; set enabled = true, or remove the key",
            ));
        }
        return Ok(None);
    }
    if !has_tls {
        return Err(ConfigError::invalid(
            "forward_proxy.enabled",
            "needs [listen_tls]: a CONNECT to server.smartlead.ai is answered with its certificate; `safedelete tls init` makes one",
        ));
    }
    let proxy_listen = match file.listen {
        Some(value) => parse_addr("forward_proxy.listen", &value)?,
        None => SocketAddr::from(([127, 0, 0, 1], 3128)),
    };
    if proxy_listen == listen && proxy_listen.port() != 0 {
        return Err(ConfigError::invalid(
            "forward_proxy.listen",
            format!("{proxy_listen} is the proxy listener's address (listen); give the forward proxy its own port, for example 127.0.0.1:3128"),
        ));
    }
    Ok(Some(ForwardProxy {
        listen: proxy_listen,
        allow_other_hosts: file.allow_other_hosts.unwrap_or(false),
    }))
}

/// `upstream.connect_to`: IP addresses with ports, at least one.
fn connect_to(value: Option<file::OneOrMany>) -> Result<Vec<SocketAddr>, ConfigError> {
    const KEY: &str = "upstream.connect_to";
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let entries = value.into_vec();
    if entries.is_empty() {
        return Err(ConfigError::invalid(
            KEY,
            "is an empty list; give SmartLead's address as \"IP:443\", or leave the key out to connect where the upstream's host resolves",
        ));
    }
    entries
        .iter()
        .map(|entry| {
            entry.trim().parse::<SocketAddr>().map_err(|_| {
                ConfigError::invalid(
                    KEY,
                    format!("`{entry}` is not an IP address and port (for example \"104.18.20.30:443\"; IPv6 as \"[2606:4700::1]:443\"); a host name would be resolved through the same hosts file that points it at this gateway"),
                )
            })
        })
        .collect()
}

fn load_listen_tls(tls: file::FileListenTls) -> Result<ListenTls, ConfigError> {
    let mut identities = vec![load_tls_identity(
        "listen_tls",
        tls.cert_file,
        tls.key_file,
    )?];
    for (i, pair) in tls.certificates.unwrap_or_default().into_iter().enumerate() {
        identities.push(load_tls_identity(
            &format!("listen_tls.certificates[{i}]"),
            pair.cert_file,
            pair.key_file,
        )?);
    }
    Ok(ListenTls { identities })
}

/// A certificate chain and its key from the files at `at.cert_file` and
/// `at.key_file`.
fn load_tls_identity(
    at: &str,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
) -> Result<TlsIdentity, ConfigError> {
    let cert_key = format!("{at}.cert_file");
    let key_key = format!("{at}.key_file");
    let (cert_file, key_file) = match (cert_file, key_file) {
        (Some(c), Some(k)) => (c, k),
        (None, _) => {
            return Err(ConfigError::invalid(
                cert_key,
                format!("is required when [{at}] is present"),
            ))
        }
        (_, None) => {
            return Err(ConfigError::invalid(
                key_key,
                format!("is required when [{at}] is present"),
            ))
        }
    };
    let certs = read_certs(&cert_key, &cert_file)?;
    if certs.is_empty() {
        return Err(ConfigError::invalid(
            cert_key,
            format!("{} holds no PEM certificate", cert_file.display()),
        ));
    }
    let pem = read_pem(&key_key, &key_file)?;
    let key = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|source| ConfigError::File {
            key: key_key.clone(),
            path: key_file.clone(),
            source,
        })?
        .ok_or_else(|| {
            ConfigError::invalid(
                key_key.clone(),
                format!("{} holds no PEM private key", key_file.display()),
            )
        })?;
    Ok(TlsIdentity {
        cert_file,
        key_file,
        certs,
        key: std::sync::Arc::new(key),
    })
}

#[cfg(test)]
mod tests;
