//! The configuration file as written by people: raw serde structs, every field
//! optional, unknown keys refused. `Config::from_file` turns this into the
//! validated value the rest of the gateway uses.

use std::path::PathBuf;

use serde::Deserialize;

/// A duration as written (`"30s"`, `"5m"`, `"250ms"`), or whatever else was
/// written there: validation parses it, so a mistake gets an error that names
/// the key and shows a valid example instead of a TOML type error.
pub type RawDuration = toml::Value;

/// The whole TOML document.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address of the proxy listener.
    pub listen: Option<String>,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_grace: Option<RawDuration>,
    /// How long a client connection may take to send a request head,
    /// including time idle on keep-alive.
    pub request_head_timeout: Option<RawDuration>,
    /// The longest pause allowed inside a body, in either direction.
    pub body_idle_timeout: Option<RawDuration>,
    pub listen_tls: Option<FileListenTls>,
    /// A forward-proxy listener (`HTTPS_PROXY`) for tools that cannot change
    /// their base URL.
    pub forward_proxy: Option<FileForwardProxy>,
    /// Threads serving the proxy listener; 0 means one per CPU.
    pub workers: Option<usize>,
    /// Client connections served at once; 0 sizes it from the open-files limit.
    pub max_connections: Option<usize>,
    /// The largest request head accepted (bytes); beyond it, 431.
    pub max_request_head_bytes: Option<usize>,
    #[serde(default)]
    pub upstream: FileUpstream,
    #[serde(default)]
    pub database: FileDatabase,
    #[serde(default)]
    pub audit: FileAudit,
    #[serde(default)]
    pub admin: FileAdmin,
    #[serde(default)]
    pub log: FileLog,
    /// Known keys: a label for each, by the SHA-256 of the key.
    #[serde(default)]
    pub actors: Vec<FileActor>,
    /// The deletion policy (validated by `guard::policy`).
    pub policy: Option<crate::guard::policy::PolicyFile>,
    #[serde(default)]
    pub guard: FileGuard,
    #[serde(default)]
    pub identity: FileIdentity,
    #[serde(default)]
    pub smartlead: FileSmartLead,
    #[serde(default)]
    pub bypass: FileBypass,
}

/// `[identity]`: passthrough or gateway keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileIdentity {
    pub mode: Option<String>,
    /// The default limit of every gateway key (`"30/min"`).
    pub rate_limit: Option<String>,
}

/// `[smartlead]`: the accounts whose keys the gateway holds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSmartLead {
    /// What each account may send to SmartLead, all its callers together.
    pub rate_limit: Option<String>,
    pub max_wait: Option<RawDuration>,
    pub max_queue: Option<usize>,
    #[serde(default)]
    pub accounts: Vec<FileAccount>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAccount {
    pub name: Option<String>,
    /// The environment variable holding the key (never the key itself).
    pub api_key_env: Option<String>,
    /// A file holding the key.
    pub api_key_file: Option<PathBuf>,
    pub rate_limit: Option<String>,
}

/// `[bypass]`: the watch for deletes made behind the gateway's back.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBypass {
    pub interval: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileActor {
    pub name: String,
    pub key_sha256: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileGuard {
    /// Total time a snapshot may take, retries and backoff included.
    pub snapshot_budget: Option<RawDuration>,
    /// How long a client waits for the snapshot before it gets 503
    /// `snapshot_pending` (the capture goes on in the background).
    pub answer_within: Option<RawDuration>,
    /// How old a complete snapshot may be and still be used by a retry.
    pub reuse_snapshot_within: Option<RawDuration>,
    /// How a delete is turned into an archive: "METHOD STATUS" entries tried in order.
    pub archive_attempts: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileListenTls {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// More certificates on the same listener, chosen by the name the
    /// client asks for (SNI).
    pub certificates: Option<Vec<FileTlsPair>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTlsPair {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileForwardProxy {
    pub enabled: Option<bool>,
    pub listen: Option<String>,
    pub allow_other_hosts: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUpstream {
    pub url: Option<String>,
    /// Where to connect instead of what the URL's host resolves to: "IP:PORT"
    /// or a list of them.
    pub connect_to: Option<OneOrMany>,
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Option<RawDuration>,
    pub first_byte_timeout: Option<RawDuration>,
    pub idle_timeout: Option<RawDuration>,
    pub max_idle_per_host: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDatabase {
    /// A SQLite file (as `url = "sqlite://PATH"`).
    pub path: Option<PathBuf>,
    /// A path, `sqlite://PATH` or `postgres://...` (see `db::Location`).
    pub url: Option<String>,
    pub pool_size: Option<i64>,
    pub acquire_timeout: Option<RawDuration>,
    pub idle_timeout: Option<RawDuration>,
    pub statement_timeout: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAudit {
    /// Record passthrough requests too (guarded requests always are).
    pub passthrough: Option<bool>,
    /// `forward` or `refuse`: what to do while records cannot be written.
    pub on_failure: Option<String>,
    pub redact_params: Option<Vec<String>>,
    pub queue_capacity: Option<usize>,
    pub batch_max: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    pub listen: Option<String>,
    pub token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLog {
    pub format: Option<String>,
    pub filter: Option<String>,
}

/// A setting that takes one value or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}
