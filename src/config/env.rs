//! The environment as an injected source, so tests never touch the process
//! environment, and the one list of `SAFEDELETE_*` variables.

use std::collections::HashMap;
use std::fmt;

use super::suggest;

/// Every `SAFEDELETE_*` variable, each name written once.
pub mod var {
    pub const LISTEN: &str = "SAFEDELETE_LISTEN";
    pub const ADMIN_LISTEN: &str = "SAFEDELETE_ADMIN_LISTEN";
    pub const UPSTREAM: &str = "SAFEDELETE_UPSTREAM";
    pub const DATABASE: &str = "SAFEDELETE_DATABASE";
    pub const ADMIN_TOKEN: &str = "SAFEDELETE_ADMIN_TOKEN";
    pub const LOG: &str = "SAFEDELETE_LOG";
    pub const LOG_FORMAT: &str = "SAFEDELETE_LOG_FORMAT";
    /// The SmartLead key of the account named `default`.
    pub const SMARTLEAD_API_KEY: &str = "SAFEDELETE_SMARTLEAD_API_KEY";
    pub const IDENTITY_MODE: &str = "SAFEDELETE_IDENTITY_MODE";
    /// The binary `bench/instructions.sh` measures; the gateway ignores it,
    /// but it is in the environment of gateways that script starts.
    pub const BENCH_BIN: &str = "SAFEDELETE_BIN";
    /// The `smartlead` client the tests run through a gateway (`.ci/run`
    /// sets it); the gateway ignores it, but it is in CI's environment.
    pub const TEST_SMARTLEAD_CLI: &str = "SAFEDELETE_TEST_SMARTLEAD_CLI";
    /// SmartLead's own CLI (`dist/index.js`), which the tests run through
    /// a gateway by name (`.ci/run` builds it); the gateway ignores it.
    pub const TEST_SMARTLEAD_OFFICIAL_CLI: &str = "SAFEDELETE_TEST_SMARTLEAD_OFFICIAL_CLI";
    /// The PostgreSQL server the store's tests create databases on
    /// (`.ci/run` sets it); the gateway ignores it.
    pub const TEST_POSTGRES_URL: &str = crate::db::TEST_POSTGRES_URL;
    pub const TEST_STORE: &str = crate::db::TEST_STORE;

    /// What [`super::unknown_variables`] compares against.
    pub const KNOWN: &[&str] = &[
        LISTEN,
        ADMIN_LISTEN,
        UPSTREAM,
        DATABASE,
        ADMIN_TOKEN,
        LOG,
        LOG_FORMAT,
        SMARTLEAD_API_KEY,
        IDENTITY_MODE,
        BENCH_BIN,
        TEST_SMARTLEAD_CLI,
        TEST_SMARTLEAD_OFFICIAL_CLI,
        TEST_POSTGRES_URL,
        TEST_STORE,
    ];

    /// Names with this prefix are ours: an unknown one is probably a typo.
    pub const PREFIX: &str = "SAFEDELETE_";
}

/// Somewhere `SAFEDELETE_*` overrides come from.
pub trait Env {
    fn get(&self, key: &str) -> Option<String>;
    /// The names of every variable set (never their values).
    fn names(&self) -> Vec<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }

    fn names(&self) -> Vec<String> {
        std::env::vars_os()
            .map(|(name, _value)| name.to_string_lossy().into_owned())
            .collect()
    }
}

impl Env for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).cloned()
    }

    fn names(&self) -> Vec<String> {
        self.keys().cloned().collect()
    }
}

/// No overrides at all.
pub struct NoEnv;

impl Env for NoEnv {
    fn get(&self, _key: &str) -> Option<String> {
        None
    }

    fn names(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A `SAFEDELETE_*` variable the gateway does not read: it is ignored, which
/// for a misspelt override means the setting silently keeps its old value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownVariable {
    pub name: String,
    /// The known name it is closest to, if any is near.
    pub closest: Option<&'static str>,
}

impl fmt::Display for UnknownVariable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "environment variable {} is not one safedelete reads, so it is ignored",
            self.name
        )?;
        match self.closest {
            Some(known) => write!(f, "; did you mean {known}?"),
            None => write!(f, " (known: {})", var::KNOWN.join(", ")),
        }
    }
}

/// The `SAFEDELETE_*` variables set in `env` that no code reads, by name.
pub fn unknown_variables(env: &dyn Env) -> Vec<UnknownVariable> {
    let mut unknown: Vec<UnknownVariable> = env
        .names()
        .into_iter()
        .filter(|n| n.starts_with(var::PREFIX) && !var::KNOWN.contains(&n.as_str()))
        .map(|name| UnknownVariable {
            closest: suggest::closest(&name, var::KNOWN, 3),
            name,
        })
        .collect();
    unknown.sort_by(|a, b| a.name.cmp(&b.name));
    unknown
}
