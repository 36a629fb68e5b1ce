//! Who a request is from, as SmartLead sees it: the `api_key` query
//! parameter, or (for POST, PATCH and PUT without one in the query) an
//! `api_key` at the top of a JSON body; and SmartLead's per-key rate limit
//! ([`RateLimit`]), which a test can switch on to show that nothing in front of
//! the fake ever makes it answer 429.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::Value;

use crate::query::Query;

/// Where a request's key was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyPlace {
    /// The `api_key` query parameter (percent-decoded).
    Query,
    /// `api_key` at the top of a JSON object body.
    Body,
}

/// The key a request carries and where, `None` when it carries none. The
/// query wins: a body key is only looked at when the query has no `api_key`.
pub fn presented(method: &Method, query: &Query, body: &[u8]) -> Option<(String, KeyPlace)> {
    if let Some(key) = query.get("api_key") {
        return Some((key.to_owned(), KeyPlace::Query));
    }
    if !takes_body_key(method) {
        return None;
    }
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    match map.get("api_key") {
        Some(Value::String(key)) => Some((key.clone(), KeyPlace::Body)),
        _ => None,
    }
}

/// Methods whose JSON body SmartLead reads a key from.
fn takes_body_key(method: &Method) -> bool {
    method == Method::POST || method == Method::PATCH || method == Method::PUT
}

/// The body a handler sees once the key has been taken out of it: the same
/// JSON object without its top-level `api_key` (handlers that accept only
/// some fields would otherwise refuse it).
pub fn without_body_key(body: &[u8]) -> Vec<u8> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(mut map)) => {
            map.remove("api_key");
            Value::Object(map).to_string().into_bytes()
        }
        _ => body.to_vec(),
    }
}

/// SmartLead's rate limit: at most `requests` per `per`, counted per key over
/// a sliding window (the strictest reading of "N requests every M seconds").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: usize,
    pub per: Duration,
}

/// The per-key windows of answered requests.
#[derive(Debug)]
pub struct Limiter {
    limit: RateLimit,
    answered: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Limiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            answered: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a request by `key` arriving `at`; `Err(retry_after_secs)` when
    /// the key already had `requests` answered within the last `per` (the
    /// refused request does not count).
    pub fn check(&self, key: &str, at: Instant) -> Result<(), u64> {
        let mut answered = self.answered.lock().unwrap_or_else(|e| e.into_inner());
        let times = answered.entry(key.to_owned()).or_default();
        while times
            .front()
            .is_some_and(|t| at.saturating_duration_since(*t) >= self.limit.per)
        {
            times.pop_front();
        }
        if times.len() >= self.limit.requests {
            let oldest = times.front().copied().unwrap_or(at);
            let wait = (oldest + self.limit.per).saturating_duration_since(at);
            return Err(wait.as_secs_f64().ceil().max(1.0) as u64);
        }
        times.push_back(at);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_key_wins_and_a_body_key_counts_only_on_writes() {
        let body = br#"{"api_key":"from_body","name":"x"}"#;
        let q = Query::parse("api_key=from%5Fquery");
        assert_eq!(
            presented(&Method::POST, &q, body),
            Some(("from_query".into(), KeyPlace::Query))
        );
        let none = Query::parse("offset=0");
        assert_eq!(
            presented(&Method::POST, &none, body),
            Some(("from_body".into(), KeyPlace::Body))
        );
        assert_eq!(presented(&Method::GET, &none, body), None);
        assert_eq!(presented(&Method::DELETE, &none, body), None);
        assert_eq!(presented(&Method::PATCH, &none, br#"{"api_key":7}"#), None);
        assert_eq!(presented(&Method::PUT, &none, b"[1]"), None);
        assert_eq!(without_body_key(body), br#"{"name":"x"}"#.to_vec());
    }

    #[test]
    fn the_window_slides_per_key() {
        let l = Limiter::new(RateLimit {
            requests: 2,
            per: Duration::from_secs(2),
        });
        let t0 = Instant::now();
        assert_eq!(l.check("a", t0), Ok(()));
        assert_eq!(l.check("a", t0 + Duration::from_millis(500)), Ok(()));
        assert_eq!(l.check("a", t0 + Duration::from_millis(900)), Err(2));
        assert_eq!(l.check("b", t0 + Duration::from_millis(900)), Ok(()));
        assert_eq!(l.check("a", t0 + Duration::from_millis(1500)), Err(1));
        assert_eq!(l.check("a", t0 + Duration::from_secs(2)), Ok(()));
    }
}
