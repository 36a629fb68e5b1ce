//! The effective configuration as one list of settings: `check-config`
//! prints it (secrets masked) and a reload compares two of them, so a setting
//! added here is both shown and reported when it changes.

use std::path::Path;
use std::time::Duration;

use super::{Config, LogFormat, Secret};
use crate::db::Location;
use crate::guard::operations::Op;
use crate::guard::policy::Policy;

/// The settings a SIGHUP applies to the running gateway; every other change
/// needs a restart.
pub const RELOADED: &[&str] = &["policy", "actors"];

/// One setting of the effective configuration.
struct Setting<'a> {
    /// The TOML table it is printed under (`""` for the top level).
    table: &'static str,
    /// The name a reload reports: `upstream.url`, `admin.token`, `policy`.
    key: &'static str,
    value: Value<'a>,
}

enum Value<'a> {
    /// A TOML value, printed as it is.
    Toml(String),
    /// Printed as `"***"`, compared by its real value.
    Secret(&'a Secret),
    /// Not a key of the file: printed as comment lines, compared by `identity`.
    Note { lines: String, identity: String },
    /// An optional setting that is not set: printed as nothing. Listed all
    /// the same, so every config has the same keys in the same order.
    Unset,
}

impl Value<'_> {
    fn identity(&self) -> Option<&str> {
        match self {
            Value::Toml(v) => Some(v),
            Value::Secret(s) => Some(s.expose()),
            Value::Note { identity, .. } => Some(identity),
            Value::Unset => None,
        }
    }
}

/// The policy as `check-config` shows it: the summary line, then only what
/// differs from the built-ins (per-operation defaults, and the operations of
/// rules that cover more than `campaign.delete`), so a policy written before
/// those existed prints as it always did.
fn policy_lines(policy: &Policy) -> String {
    let mut lines = format!(
        "# policy: default {}, {} rule(s), revision {}\n",
        policy.default_action().as_str(),
        policy.rules().len(),
        policy.revision()
    );
    for (op, action) in policy.defaults() {
        lines.push_str(&format!("# policy default: {op} {action}\n"));
    }
    for rule in policy.rules() {
        if rule.operations != [Op::CampaignDelete] {
            let names: Vec<&str> = rule.operations.iter().map(|op| op.name()).collect();
            lines.push_str(&format!(
                "# policy rule: {} (operations {})\n",
                rule.name,
                names.join(", ")
            ));
        }
    }
    lines
}

impl Config {
    fn settings(&self) -> Vec<Setting<'_>> {
        let s = |v: &str| Value::Toml(toml::Value::String(v.to_string()).to_string());
        let d = |v: Duration| s(&humantime::format_duration(v).to_string());
        let p = |v: &Path| s(&v.display().to_string());
        let n = |v: usize| Value::Toml(v.to_string());
        let set = |table, key, value| Setting { table, key, value };
        let mut out = vec![
            set("", "listen", s(&self.listen.to_string())),
            set("", "shutdown_grace", d(self.shutdown_grace)),
            set("", "request_head_timeout", d(self.request_head_timeout)),
            set("", "body_idle_timeout", d(self.body_idle_timeout)),
            set("", "workers", n(self.workers)),
            set("", "max_connections", n(self.max_connections)),
            set("", "max_request_head_bytes", n(self.max_request_head_bytes)),
        ];
        let tls = self.listen_tls.as_ref();
        let u = &self.upstream;
        out.extend([
            set(
                "listen_tls",
                "listen_tls.cert_file",
                tls.map_or(Value::Unset, |t| p(&t.identities[0].cert_file)),
            ),
            set(
                "listen_tls",
                "listen_tls.key_file",
                tls.map_or(Value::Unset, |t| p(&t.identities[0].key_file)),
            ),
            set(
                "listen_tls",
                "listen_tls.certificates",
                match tls.map(|t| &t.identities[1..]) {
                    Some(more) if !more.is_empty() => {
                        let pair = |i: &crate::config::TlsIdentity| {
                            let mut table = toml::map::Map::new();
                            for (key, path) in
                                [("cert_file", &i.cert_file), ("key_file", &i.key_file)]
                            {
                                table.insert(
                                    key.into(),
                                    toml::Value::String(path.display().to_string()),
                                );
                            }
                            toml::Value::Table(table)
                        };
                        Value::Toml(toml::Value::Array(more.iter().map(pair).collect()).to_string())
                    }
                    _ => Value::Unset,
                },
            ),
            set(
                "forward_proxy",
                "forward_proxy.enabled",
                Value::Toml(self.forward_proxy.is_some().to_string()),
            ),
            set(
                "forward_proxy",
                "forward_proxy.listen",
                self.forward_proxy
                    .map_or(Value::Unset, |f| s(&f.listen.to_string())),
            ),
            set(
                "forward_proxy",
                "forward_proxy.allow_other_hosts",
                self.forward_proxy.map_or(Value::Unset, |f| {
                    Value::Toml(f.allow_other_hosts.to_string())
                }),
            ),
            set("upstream", "upstream.url", s(&u.url())),
            set(
                "upstream",
                "upstream.connect_to",
                if u.connect_to.is_empty() {
                    Value::Unset
                } else {
                    Value::Toml(
                        toml::Value::Array(
                            u.connect_to
                                .iter()
                                .map(|a| toml::Value::String(a.to_string()))
                                .collect(),
                        )
                        .to_string(),
                    )
                },
            ),
            set(
                "upstream",
                "upstream.ca_file",
                u.ca_file.as_deref().map_or(Value::Unset, p),
            ),
            set("upstream", "upstream.connect_timeout", d(u.connect_timeout)),
            set(
                "upstream",
                "upstream.first_byte_timeout",
                d(u.first_byte_timeout),
            ),
            set("upstream", "upstream.idle_timeout", d(u.idle_timeout)),
            set(
                "upstream",
                "upstream.max_idle_per_host",
                n(u.max_idle_per_host),
            ),
            set(
                "database",
                "database.path",
                self.database.store.sqlite_path().map_or(Value::Unset, p),
            ),
            set(
                "database",
                "database.url",
                match &self.database.store {
                    // Shown without its password.
                    Location::Postgres(url) => s(&url.to_string()),
                    Location::Sqlite(_) => Value::Unset,
                },
            ),
            set(
                "database",
                "database.pool_size",
                n(self.database.pool.max_connections as usize),
            ),
            set(
                "database",
                "database.acquire_timeout",
                d(self.database.pool.acquire_timeout),
            ),
            set(
                "database",
                "database.idle_timeout",
                d(self.database.pool.idle_timeout),
            ),
            set(
                "database",
                "database.statement_timeout",
                d(self.database.pool.statement_timeout),
            ),
        ]);
        let a = &self.audit;
        let params: Vec<String> = a
            .redact_params
            .iter()
            .map(|v| toml::Value::String(v.clone()).to_string())
            .collect();
        out.extend([
            set(
                "audit",
                "audit.passthrough",
                Value::Toml(a.passthrough.to_string()),
            ),
            set(
                "audit",
                "audit.redact_params",
                Value::Toml(format!("[{}]", params.join(", "))),
            ),
            set("audit", "audit.queue_capacity", n(a.queue_capacity)),
            set("audit", "audit.batch_max", n(a.batch_max)),
            set("audit", "audit.on_failure", s(a.on_failure.as_str())),
            set("admin", "admin.listen", s(&self.admin.listen.to_string())),
            set(
                "admin",
                "admin.token",
                self.admin
                    .token
                    .as_ref()
                    .map_or(Value::Unset, Value::Secret),
            ),
        ]);
        let attempts: Vec<String> = self
            .guard
            .archive_attempts
            .iter()
            .map(|a| toml::Value::String(format!("{} {}", a.method, a.status)).to_string())
            .collect();
        let policy = &self.policy.policy;
        let actors = &self.policy.actors;
        out.extend([
            set(
                "guard",
                "guard.snapshot_budget",
                d(self.guard.snapshot_budget),
            ),
            set("guard", "guard.answer_within", d(self.guard.answer_within)),
            set(
                "guard",
                "guard.reuse_snapshot_within",
                d(self.guard.reuse_snapshot_within),
            ),
            set(
                "guard",
                "guard.archive_attempts",
                Value::Toml(format!("[{}]", attempts.join(", "))),
            ),
            set(
                "guard",
                "policy",
                Value::Note {
                    lines: policy_lines(policy),
                    identity: policy.revision().to_string(),
                },
            ),
            set(
                "guard",
                "actors",
                Value::Note {
                    lines: actors
                        .iter()
                        .map(|a| {
                            format!(
                                "# actor: {} (key sha256 {}…)\n",
                                a.name,
                                &a.key_sha256[..12]
                            )
                        })
                        .collect(),
                    identity: actors
                        .iter()
                        .map(|a| format!("{}={}\n", a.name, a.key_sha256))
                        .collect(),
                },
            ),
        ]);
        let id = &self.identity;
        let sl = &self.smartlead;
        let rate = |r: Option<super::Rate>| r.map_or(Value::Unset, |r| s(&r.to_string()));
        out.extend([
            set("identity", "identity.mode", s(id.mode.as_str())),
            set("identity", "identity.rate_limit", rate(id.rate_limit)),
            set("smartlead", "smartlead.rate_limit", rate(sl.rate_limit)),
            set("smartlead", "smartlead.max_wait", d(sl.max_wait)),
            set("smartlead", "smartlead.max_queue", n(sl.max_queue)),
            set(
                "smartlead",
                "smartlead.accounts",
                Value::Note {
                    lines: sl
                        .accounts
                        .iter()
                        .map(|a| {
                            let limit = a.rate_limit.map_or_else(
                                || "no rate limit".to_string(),
                                |r| format!("rate limit {r}"),
                            );
                            format!("# account: {} (key from {}, {limit})\n", a.name, a.source)
                        })
                        .collect(),
                    identity: sl
                        .accounts
                        .iter()
                        .map(|a| {
                            format!(
                                "{}={}={:?}={}\n",
                                a.name,
                                a.source,
                                a.rate_limit,
                                crate::audit::redact::key_sha256(a.api_key.expose())
                            )
                        })
                        .collect(),
                },
            ),
            set("bypass", "bypass.interval", d(self.bypass.interval)),
        ]);
        let format = match self.log.format {
            LogFormat::Pretty => "pretty",
            LogFormat::Json => "json",
        };
        out.extend([
            set("log", "log.format", s(format)),
            set("log", "log.filter", s(self.log.filter.as_str())),
        ]);
        out
    }

    /// The effective configuration as TOML, secrets masked (`check-config`).
    pub fn render_masked(&self) -> String {
        let source = self
            .source
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "built-in defaults".into());
        let mut out =
            format!("# effective configuration (from {source} and SAFEDELETE_* variables)\n");
        let mut table = "";
        for setting in self.settings() {
            if matches!(setting.value, Value::Unset) {
                continue;
            }
            if setting.table != table {
                table = setting.table;
                out.push_str(&format!("\n[{table}]\n"));
            }
            let name = setting.key.rsplit('.').next().unwrap_or(setting.key);
            match &setting.value {
                Value::Toml(v) => out.push_str(&format!("{name} = {v}\n")),
                Value::Secret(_) => out.push_str(&format!("{name} = \"***\"\n")),
                Value::Note { lines, .. } => out.push_str(lines),
                Value::Unset => {}
            }
        }
        out
    }

    /// The settings whose effective value differs in `other`, by key, in
    /// the order `check-config` prints them (secrets compared, never shown).
    pub fn changed_keys(&self, other: &Config) -> Vec<&'static str> {
        self.settings()
            .iter()
            .zip(other.settings().iter())
            .filter(|(mine, theirs)| {
                debug_assert_eq!(mine.key, theirs.key, "every config lists the same keys");
                mine.value.identity() != theirs.value.identity()
            })
            .map(|(mine, _)| mine.key)
            .collect()
    }
}
