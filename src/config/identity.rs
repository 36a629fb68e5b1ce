//! The settings of who may call and with which SmartLead key: `[identity]`
//! (passthrough or gateway keys, the default per-key rate limit),
//! `[smartlead]` (the accounts whose keys the gateway holds, the
//! account-wide rate limit) and `[bypass]` (the watch for deletes made
//! behind the gateway's back).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::env::{var, Env};
use super::file::{FileAccount, FileBypass, FileIdentity, FileSmartLead};
use super::{duration, ConfigError, Secret};

/// What every gateway key starts with (`crate::identity::KEY_PREFIX`), so a
/// gateway key configured as a SmartLead key by mistake is caught here.
pub const GATEWAY_KEY_PREFIX: &str = "sdg_";

/// The name of the account `SAFEDELETE_SMARTLEAD_API_KEY` defines.
pub const DEFAULT_ACCOUNT: &str = "default";

/// `[identity]`: who callers are.
#[derive(Debug, Clone)]
pub struct Identity {
    pub mode: IdentityMode,
    /// The limit of every gateway key that has none of its own.
    pub rate_limit: Option<Rate>,
}

/// `identity.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityMode {
    /// SmartLead keys pass through; actors come from `[[actors]]` fingerprints.
    Passthrough,
    /// Only gateway keys are accepted; the gateway swaps in the account's key.
    GatewayKeys,
}

impl IdentityMode {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityMode::Passthrough => "passthrough",
            IdentityMode::GatewayKeys => "gateway_keys",
        }
    }
}

/// `[smartlead]`: the accounts whose keys the gateway holds, and how much of
/// SmartLead's rate limit the gateway lets them use.
#[derive(Debug, Clone)]
pub struct SmartLead {
    pub accounts: Vec<Account>,
    /// `smartlead.rate_limit`: every account's limit unless it sets its own.
    pub rate_limit: Option<Rate>,
    /// The longest a request is held to keep an account under its limit;
    /// one that would wait longer is answered 429 at once.
    pub max_wait: Duration,
    /// Requests held at once per account; more are answered 429.
    pub max_queue: usize,
}

impl SmartLead {
    pub fn account(&self, name: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.name == name)
    }

    /// The account keys are handed to when none is named: `default` if it
    /// exists, else the only account.
    pub fn default_account(&self) -> Option<&Account> {
        self.account(DEFAULT_ACCOUNT)
            .or(match self.accounts.as_slice() {
                [only] => Some(only),
                _ => None,
            })
    }

    pub fn names(&self) -> Vec<&str> {
        self.accounts.iter().map(|a| a.name.as_str()).collect()
    }
}

/// A SmartLead account: its name and the key the gateway sends for it.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub api_key: Secret,
    /// Where the key came from, for `check-config` (never the key).
    pub source: KeySource,
    /// Requests this account may send to SmartLead, all gateway keys together.
    pub rate_limit: Option<Rate>,
}

/// Where an account's key is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Env(String),
    File(PathBuf),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Env(name) => write!(f, "environment variable {name}"),
            KeySource::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

/// `[bypass]`: how often the account's campaigns are listed to find deletes
/// that did not go through the gateway.
#[derive(Debug, Clone)]
pub struct Bypass {
    /// Zero: off.
    pub interval: Duration,
}

/// A rate: `count` requests per `per` (`"30/min"`, `"10/2s"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    /// The most requests a rate may allow per period.
    const MAX_COUNT: u32 = 100_000;
    const EXAMPLE: &'static str =
        "write it as requests per period, for example \"30/min\", \"10/2s\" or \"1000/hour\"";

    pub fn parse(key: &str, text: &str) -> Result<Rate, ConfigError> {
        let bad =
            |problem: String| ConfigError::invalid(key, format!("{problem}; {}", Rate::EXAMPLE));
        let (count, period) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| bad(format!("{text:?} is not a rate")))?;
        let count: u32 = count.trim().parse().map_err(|_| {
            bad(format!(
                "{:?} is not a whole number of requests",
                count.trim()
            ))
        })?;
        if !(1..=Rate::MAX_COUNT).contains(&count) {
            return Err(bad(format!(
                "{count} requests is outside 1 to {}",
                Rate::MAX_COUNT
            )));
        }
        let period = period.trim();
        let digits = period.bytes().take_while(u8::is_ascii_digit).count();
        let (times, unit) = period.split_at(digits);
        let times: u64 = match times {
            "" => 1,
            t => t
                .parse()
                .map_err(|_| bad(format!("{period:?} is not a period")))?,
        };
        let unit = match unit.trim() {
            "s" | "sec" | "second" | "seconds" => 1,
            "m" | "min" | "minute" | "minutes" => 60,
            "h" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            other => {
                return Err(bad(format!(
                    "{other:?} is not a unit of time (s, min, hour or day)"
                )))
            }
        };
        let per = Duration::from_secs(times * unit);
        if per.is_zero() || per > Duration::from_secs(86_400) {
            return Err(bad(format!("{period:?} is not between 1 second and 1 day")));
        }
        Ok(Rate { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.per.as_secs();
        let (n, unit) = match secs {
            s if s % 86_400 == 0 => (s / 86_400, "day"),
            s if s % 3600 == 0 => (s / 3600, "hour"),
            s if s % 60 == 0 => (s / 60, "min"),
            s => (s, "s"),
        };
        match n {
            1 => write!(f, "{}/{unit}", self.count),
            n => write!(f, "{}/{n}{unit}", self.count),
        }
    }
}

fn rate(key: &str, text: Option<String>) -> Result<Option<Rate>, ConfigError> {
    text.map(|t| Rate::parse(key, &t)).transpose()
}

pub(super) fn load_identity(env: &dyn Env, file: FileIdentity) -> Result<Identity, ConfigError> {
    let (key, mode) = match env.get(var::IDENTITY_MODE) {
        Some(v) => (var::IDENTITY_MODE.to_string(), Some(v)),
        None => ("identity.mode".to_string(), file.mode),
    };
    let mode = match mode.as_deref().map(str::trim) {
        None | Some("passthrough") => IdentityMode::Passthrough,
        Some("gateway_keys") => IdentityMode::GatewayKeys,
        Some(other) => {
            return Err(ConfigError::invalid(
                key,
                format!(
                    "`{other}` is not \"passthrough\" (callers send SmartLead keys) or \
                     \"gateway_keys\" (callers send keys from `safedelete keys create`)"
                ),
            ))
        }
    };
    Ok(Identity {
        mode,
        rate_limit: rate("identity.rate_limit", file.rate_limit)?,
    })
}

pub(super) fn load_smartlead(
    env: &dyn Env,
    file: FileSmartLead,
    mode: IdentityMode,
) -> Result<SmartLead, ConfigError> {
    let shared_limit = rate("smartlead.rate_limit", file.rate_limit)?;
    let max_wait = duration("smartlead.max_wait", file.max_wait, Duration::from_secs(10))?;
    if max_wait > Duration::from_secs(300) {
        return Err(ConfigError::invalid(
            "smartlead.max_wait",
            "must be at most 5 minutes (clients give up long before); for example \"10s\"",
        ));
    }
    let max_queue = file.max_queue.unwrap_or(1_000);
    if !(1..=100_000).contains(&max_queue) {
        return Err(ConfigError::invalid(
            "smartlead.max_queue",
            "must be between 1 and 100000 (for example 1000)",
        ));
    }
    let mut accounts = Vec::new();
    if let Some(value) = env.get(var::SMARTLEAD_API_KEY) {
        let key = check_key(var::SMARTLEAD_API_KEY, &value)?;
        accounts.push(Account {
            name: DEFAULT_ACCOUNT.to_string(),
            api_key: key,
            source: KeySource::Env(var::SMARTLEAD_API_KEY.to_string()),
            rate_limit: shared_limit,
        });
    }
    for (i, a) in file.accounts.into_iter().enumerate() {
        let account = load_account(env, i, a, shared_limit)?;
        if accounts.iter().any(|o: &Account| o.name == account.name) {
            let also = if account.name == DEFAULT_ACCOUNT {
                format!(" (SAFEDELETE_SMARTLEAD_API_KEY defines `{DEFAULT_ACCOUNT}`)")
            } else {
                String::new()
            };
            return Err(ConfigError::invalid(
                format!("smartlead.accounts[{i}].name"),
                format!(
                    "`{}` is defined twice{also}; give each account its own name",
                    account.name
                ),
            ));
        }
        if accounts.iter().any(|o| o.api_key == account.api_key) {
            return Err(ConfigError::invalid(
                format!("smartlead.accounts[{i}]"),
                "holds the same SmartLead key as an account before it; one account per key",
            ));
        }
        accounts.push(account);
    }
    if mode == IdentityMode::GatewayKeys && accounts.is_empty() {
        return Err(ConfigError::invalid(
            "identity.mode",
            format!(
                "\"gateway_keys\" needs the SmartLead key the gateway sends for its callers: set {} \
                 (the `{DEFAULT_ACCOUNT}` account) or add a [[smartlead.accounts]] entry with \
                 api_key_env or api_key_file",
                var::SMARTLEAD_API_KEY
            ),
        ));
    }
    Ok(SmartLead {
        accounts,
        rate_limit: shared_limit,
        max_wait,
        max_queue,
    })
}

fn load_account(
    env: &dyn Env,
    i: usize,
    a: FileAccount,
    shared_limit: Option<Rate>,
) -> Result<Account, ConfigError> {
    let at = |field: &str| format!("smartlead.accounts[{i}].{field}");
    let name = a.name.unwrap_or_default();
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !name_ok {
        return Err(ConfigError::invalid(
            at("name"),
            "must be 1 to 64 letters, digits, `-`, `_` or `.` (for example \"client-a\")",
        ));
    }
    let (api_key, source) = match (a.api_key_env, a.api_key_file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(
                at("api_key_env"),
                "give api_key_env or api_key_file, not both",
            ))
        }
        (None, None) => {
            return Err(ConfigError::invalid(
                at("api_key_env"),
                "is required (or api_key_file): the name of the environment variable that \
                 holds this account's SmartLead key; the key itself never goes in the file",
            ))
        }
        (Some(var_name), None) => {
            let value = env.get(&var_name).ok_or_else(|| {
                ConfigError::invalid(
                    at("api_key_env"),
                    format!("environment variable {var_name} is not set; export it with the account's SmartLead key"),
                )
            })?;
            (
                check_key(&at("api_key_env"), &value)?,
                KeySource::Env(var_name),
            )
        }
        (None, Some(path)) => (
            read_key_file(&at("api_key_file"), &path)?,
            KeySource::File(path),
        ),
    };
    Ok(Account {
        name,
        api_key,
        source,
        rate_limit: rate(&at("rate_limit"), a.rate_limit)?.or(shared_limit),
    })
}

/// A SmartLead key as configured: no surrounding space, nothing a URL or a
/// header could not carry, and not a gateway key by mistake.
fn check_key(key: &str, value: &str) -> Result<Secret, ConfigError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ConfigError::invalid(
            key,
            "is empty; it must hold the SmartLead API key",
        ));
    }
    if value.starts_with(GATEWAY_KEY_PREFIX) {
        return Err(ConfigError::invalid(
            key,
            "holds a gateway key (sdg_...), not a SmartLead key; use the key from SmartLead's settings",
        ));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) || value.len() > 512 {
        return Err(ConfigError::invalid(
            key,
            "does not look like a SmartLead API key (printable characters without spaces, at most 512)",
        ));
    }
    Ok(Secret::new(value))
}

fn read_key_file(key: &str, path: &Path) -> Result<Secret, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::File {
        key: key.to_string(),
        path: path.to_path_buf(),
        source,
    })?;
    if let Some(mode) = crate::db::exposed_mode(path) {
        tracing::warn!(
            path = %path.display(),
            mode = %format_args!("{mode:04o}"),
            "{key}: {} holds a SmartLead key and other users can read it; fix it with `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    check_key(key, &text)
}

pub(super) fn load_bypass(file: FileBypass) -> Result<Bypass, ConfigError> {
    let interval = duration(
        "bypass.interval",
        file.interval,
        Duration::from_secs(15 * 60),
    )?;
    if !interval.is_zero() && interval < Duration::from_secs(1) {
        return Err(ConfigError::invalid(
            "bypass.interval",
            "must be at least 1s, or \"0s\" to turn the bypass watch off",
        ));
    }
    Ok(Bypass { interval })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_as_written_and_print_back() {
        let r = Rate::parse("k", "30/min").unwrap();
        assert_eq!((r.count, r.per), (30, Duration::from_secs(60)));
        assert_eq!(r.to_string(), "30/min");
        let r = Rate::parse("k", "10/2s").unwrap();
        assert_eq!((r.count, r.per), (10, Duration::from_secs(2)));
        assert_eq!(r.to_string(), "10/2s");
        assert_eq!(
            Rate::parse("k", "1000 / hour").unwrap().to_string(),
            "1000/hour"
        );
    }

    #[test]
    fn a_bad_rate_names_the_key_and_shows_how_to_write_one() {
        for bad in ["30", "30/fortnight", "0/min", "x/min", "30/0s", "30/2days"] {
            let err = Rate::parse("identity.rate_limit", bad)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("identity.rate_limit: "), "{bad}: {err}");
            assert!(err.contains("\"30/min\""), "{bad}: {err}");
        }
    }
}
