//! The environment as an injected source, so tests never touch the process
//! environment.

use std::collections::HashMap;

/// Somewhere `SAFEDELETE_*` overrides come from.
pub trait Env {
    fn get(&self, key: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

impl Env for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).cloned()
    }
}

/// No overrides at all.
pub struct NoEnv;

impl Env for NoEnv {
    fn get(&self, _key: &str) -> Option<String> {
        None
    }
}
