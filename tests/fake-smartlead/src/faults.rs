//! Programmed failures. A test adds [`FaultRule`]s to a running fake (or lists
//! them in [`crate::FakeConfig::faults`]); each request takes the first rule
//! that matches it (method, path glob, and its [`Trigger`]'s writes-only) and
//! fires on it (the trigger's `after`/`every` and the rule's `times` allow
//! it), and the rule's
//! [`Fault`] bends the response: a substitute status, a delay before the head,
//! slow 16 KiB chunks, a connection cut after N body bytes, extra (even
//! hop-by-hop) headers.
//!
//! Every rule counts the requests it matches, whether or not it fires, so
//! "every 10th write" and "everything after the 50th call" mean calls as the
//! fake received them. A [`Trigger`] beside a rule says which of its matches
//! it fires on; [`rate_limit_every`] and [`fail_after`] build the two a
//! restore test needs: SmartLead's
//! 429 with `Retry-After`, and a persistent 500 that lasts until the test
//! calls [`crate::FakeHandle::clear_faults`] (the "recovery").

use std::io;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use serde_json::json;

use crate::body::{json_response, ByteStream, FakeBody};

/// Largest body chunk sent while a `chunk_delay` is in force.
const SLOW_CHUNK: usize = 16 * 1024;
/// Pause before cutting a connection, so hyper flushes the bytes already written.
const FLUSH_GRACE: Duration = Duration::from_millis(30);

/// Which requests a fault applies to, and how often.
#[derive(Clone, Debug, Default)]
pub struct FaultRule {
    /// Method to match (case-insensitive); `None` matches any.
    pub method: Option<String>,
    /// Glob on the path (no query): `*` matches within one segment, `**` matches
    /// any number of segments, e.g. `/api/v1/campaigns/*/leads-export`.
    pub path: String,
    /// Apply to the first N matching requests only; `None` means forever.
    pub times: Option<usize>,
    /// What to do to the response.
    pub fault: Fault,
}

/// When a [`FaultRule`] fires among the requests it matches (the default:
/// on every one). Kept beside the rule rather than in it so that existing
/// `FaultRule { .. }` literals stay valid.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trigger {
    /// Match only writes (POST, PUT, PATCH, DELETE).
    pub writes_only: bool,
    /// Let the first N matching requests through untouched.
    pub after: Option<usize>,
    /// Fire only on every Nth matching request (the Nth, 2Nth, ...; counted
    /// over all matching requests, `after` included).
    pub every: Option<usize>,
}

/// SmartLead's rate limit on every `n`th call (every `n`th write with
/// `writes_only`): 429, `Retry-After: retry_after` and the §2 body. The call
/// is not carried out.
pub fn rate_limit_every(n: usize, writes_only: bool, retry_after: u64) -> (FaultRule, Trigger) {
    let rule = FaultRule {
        path: "**".into(),
        fault: Fault {
            status: Some(429),
            retry_after: Some(retry_after),
            ..Fault::default()
        },
        ..FaultRule::default()
    };
    let trigger = Trigger {
        writes_only,
        every: Some(n.max(1)),
        ..Trigger::default()
    };
    (rule, trigger)
}

/// Every call after the first `n` fails with 500 (not carried out) until the
/// faults are cleared: a SmartLead outage, or a crash mid-restore.
pub fn fail_after(n: usize) -> (FaultRule, Trigger) {
    let rule = FaultRule {
        path: "**".into(),
        fault: Fault {
            status: Some(500),
            ..Fault::default()
        },
        ..FaultRule::default()
    };
    let trigger = Trigger {
        after: Some(n),
        ..Trigger::default()
    };
    (rule, trigger)
}

/// How a matching request's response is bent.
#[derive(Clone, Debug, Default)]
pub struct Fault {
    /// Answer with this status (and SmartLead's error body for it) instead of
    /// running the real handler.
    pub status: Option<u16>,
    /// Seconds, sent as `Retry-After` (and used in the 429 body).
    pub retry_after: Option<u64>,
    /// Wait this long before sending the response head.
    pub delay: Option<Duration>,
    /// Wait this long between body chunks of at most 16 KiB.
    pub chunk_delay: Option<Duration>,
    /// Send this many body bytes, then abort the connection.
    pub drop_after_bytes: Option<usize>,
    /// Extra response headers, appended in order (names may repeat).
    pub headers: Vec<(String, String)>,
    /// Read the request, then close the connection without any response (a
    /// server that died mid-request).
    pub drop_before_response: bool,
    /// With `status`: the error body also repeats the request, as
    /// `"request": "GET /api/v1/...?api_key=..."` (the target as received,
    /// key included), like the SmartLead errors that echo the URL they
    /// failed on. The reference records no such body; it is here so that a
    /// test can show the gateway masks a key SmartLead sends back.
    pub echo_request: bool,
    /// With `status`: carry the call out first, then answer with `status`
    /// anyway (a write that took effect although the client saw it fail, so
    /// a retry must not apply it twice).
    pub apply_write: bool,
}

struct Armed {
    rule: FaultRule,
    trigger: Trigger,
    remaining: Option<usize>,
    /// Requests matched so far.
    seen: usize,
}

impl Armed {
    fn matches(&self, method: &str, path: &str) -> bool {
        self.rule
            .method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && (!self.trigger.writes_only || is_write(method))
            && glob_match(&self.rule.path, path)
    }

    /// Counts one matching request; whether the rule fires on it.
    fn count(&mut self) -> bool {
        self.seen += 1;
        self.remaining != Some(0)
            && self.trigger.after.is_none_or(|n| self.seen > n)
            && self
                .trigger
                .every
                .is_none_or(|n| self.seen.is_multiple_of(n.max(1)))
    }
}

/// Whether `method` changes something (POST, PUT, PATCH, DELETE).
pub fn is_write(method: &str) -> bool {
    ["POST", "PUT", "PATCH", "DELETE"]
        .iter()
        .any(|m| m.eq_ignore_ascii_case(method))
}

/// The rules currently in force, in the order they were added.
#[derive(Default)]
pub struct FaultTable {
    rules: Mutex<Vec<Armed>>,
}

impl FaultTable {
    /// Adds a rule after the existing ones.
    pub fn add(&self, rule: FaultRule) {
        self.add_triggered(rule, Trigger::default());
    }

    /// Adds a rule that fires as `trigger` says, after the existing ones.
    pub fn add_triggered(&self, rule: FaultRule, trigger: Trigger) {
        let remaining = rule.times;
        self.lock().push(Armed {
            rule,
            trigger,
            remaining,
            seen: 0,
        });
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// The fault for this request, if a rule fires on it; every matching rule
    /// counts the request, the one that fires uses up one of its `times`.
    pub fn take(&self, method: &str, path: &str) -> Option<Fault> {
        let mut rules = self.lock();
        let mut fired: Option<&mut Armed> = None;
        for armed in rules.iter_mut().filter(|a| a.matches(method, path)) {
            if armed.count() && fired.is_none() {
                fired = Some(armed);
            }
        }
        let armed = fired?;
        if let Some(n) = armed.remaining.as_mut() {
            *n -= 1;
        }
        Some(armed.rule.fault.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Armed>> {
        // A panic while holding this lock cannot leave the Vec half-updated.
        self.rules.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Matches `path` against a glob of `/`-separated segments.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let pat: Vec<&str> = pattern.split('/').collect();
    let segs: Vec<&str> = path.split('/').collect();
    match_segments(&pat, &segs)
}

fn match_segments(pat: &[&str], segs: &[&str]) -> bool {
    match pat.split_first() {
        None => segs.is_empty(),
        Some((&"**", rest)) => (0..=segs.len()).any(|k| match_segments(rest, &segs[k..])),
        Some((p, rest)) => match segs.split_first() {
            Some((s, srest)) => {
                match_within(p.as_bytes(), s.as_bytes()) && match_segments(rest, srest)
            }
            None => false,
        },
    }
}

/// `*` within one segment matches any run of characters.
fn match_within(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|k| match_within(rest, &s[k..])),
        Some((c, rest)) => s.first() == Some(c) && match_within(rest, &s[1..]),
    }
}

/// The response SmartLead would give with `status` (reference §2–§3).
pub fn status_response(status: u16, retry_after: Option<u64>) -> http::Response<FakeBody> {
    respond_with(status, status_body(status, retry_after))
}

/// [`status_response`], its JSON body also repeating `method` and `target`
/// (see [`Fault::echo_request`]).
pub fn echo_response(
    status: u16,
    retry_after: Option<u64>,
    method: &str,
    target: &str,
) -> http::Response<FakeBody> {
    let body = status_body(status, retry_after).map(|mut v| {
        if let Some(o) = v.as_object_mut() {
            o.insert("request".into(), format!("{method} {target}").into());
        }
        v
    });
    respond_with(status, body)
}

fn status_body(status: u16, retry_after: Option<u64>) -> Option<serde_json::Value> {
    match status {
        204 | 304 => None,
        401 => Some(json!({"message": "Invalid API Key"})),
        404 => Some(json!({"error": "Resource not found"})),
        422 => Some(json!({"error": "Invalid parameters provided"})),
        429 => {
            let secs = retry_after.unwrap_or(30);
            Some(json!({"error": {
                "code": "RATE_LIMIT_EXCEEDED",
                "message": format!("Too many requests. Please retry after {secs} seconds."),
                "retry_after": secs,
            }}))
        }
        502 | 503 => Some(json!({"error": "Service unavailable"})),
        200..=299 => Some(json!({"ok": true})),
        _ => Some(json!({"error": "Internal server error"})),
    }
}

fn respond_with(status: u16, body: Option<serde_json::Value>) -> http::Response<FakeBody> {
    match body {
        Some(v) => json_response(status, &v),
        None => {
            let mut response = http::Response::new(FakeBody::empty());
            *response.status_mut() = http::StatusCode::from_u16(status)
                .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
            response
        }
    }
}

/// Applies a fault's headers and body bending to an already built response.
pub fn bend(fault: &Fault, mut response: http::Response<FakeBody>) -> http::Response<FakeBody> {
    let headers = response.headers_mut();
    if let Some(secs) = fault.retry_after {
        headers.insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
    }
    for (name, value) in &fault.headers {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.trim().as_bytes()),
            http::HeaderValue::from_str(value.trim()),
        ) {
            headers.append(n, v);
        }
    }
    if fault.chunk_delay.is_none() && fault.drop_after_bytes.is_none() {
        return response;
    }
    let (parts, body) = response.into_parts();
    let (mut stream, len) = body.into_parts();
    if let Some(delay) = fault.chunk_delay {
        stream = slow(stream, delay);
    }
    if let Some(n) = fault.drop_after_bytes {
        stream = cut(stream, n);
    }
    http::Response::from_parts(parts, FakeBody::from_parts(stream, len))
}

/// Re-chunks into pieces of at most 16 KiB with `delay` between them.
fn slow(inner: ByteStream, delay: Duration) -> ByteStream {
    let state = (inner, Bytes::new(), true);
    Box::pin(stream::unfold(
        state,
        move |(mut inner, mut pending, first)| async move {
            while pending.is_empty() {
                match inner.next().await? {
                    Ok(bytes) => pending = bytes,
                    Err(e) => return Some((Err(e), (inner, pending, first))),
                }
            }
            if !first {
                tokio::time::sleep(delay).await;
            }
            let piece = pending.split_to(pending.len().min(SLOW_CHUNK));
            Some((Ok(piece), (inner, pending, false)))
        },
    ))
}

/// Passes `limit` bytes through, then fails (which makes hyper abort the connection).
fn cut(inner: ByteStream, limit: usize) -> ByteStream {
    let state = (Some(inner), limit);
    Box::pin(stream::unfold(state, |(inner, left)| async move {
        let mut inner = inner?;
        if left > 0 {
            if let Some(item) = inner.next().await {
                let mut bytes = match item {
                    Ok(bytes) => bytes,
                    Err(e) => return Some((Err(e), (None, 0))),
                };
                bytes.truncate(left);
                let left = left - bytes.len();
                return Some((Ok(bytes), (Some(inner), left)));
            }
        }
        tokio::time::sleep(FLUSH_GRACE).await;
        let err = io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "fault: connection dropped",
        );
        Some((Err(err), (None, 0)))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_segments() {
        assert!(glob_match(
            "/api/v1/campaigns/*/leads-export",
            "/api/v1/campaigns/101/leads-export"
        ));
        assert!(!glob_match(
            "/api/v1/campaigns/*/leads-export",
            "/api/v1/campaigns/1/2/leads-export"
        ));
        assert!(glob_match("/api/v1/**", "/api/v1/campaigns/101/leads"));
        assert!(glob_match("**", "/anything/at/all"));
        assert!(glob_match("/api/v1/campaigns/1*", "/api/v1/campaigns/101"));
        assert!(!glob_match("/api/v1/campaigns", "/api/v1/campaigns/"));
    }

    #[test]
    fn times_run_out_and_later_rules_apply() {
        let table = FaultTable::default();
        let rule = |status, times| FaultRule {
            path: "/x".into(),
            times,
            fault: Fault {
                status: Some(status),
                ..Fault::default()
            },
            ..FaultRule::default()
        };
        table.add(rule(429, Some(1)));
        table.add(rule(500, None));
        assert_eq!(table.take("GET", "/x").and_then(|f| f.status), Some(429));
        assert_eq!(table.take("GET", "/x").and_then(|f| f.status), Some(500));
        assert!(table.take("GET", "/y").is_none());
    }

    #[test]
    fn every_nth_write_and_everything_after_n() {
        let table = FaultTable::default();
        let (rule, trigger) = rate_limit_every(3, true, 2);
        table.add_triggered(rule, trigger);
        let statuses: Vec<Option<u16>> = ["POST", "GET", "POST", "DELETE", "POST", "POST", "PUT"]
            .iter()
            .map(|m| table.take(m, "/api/v1/x").and_then(|f| f.status))
            .collect();
        assert_eq!(
            statuses,
            [None, None, None, Some(429), None, None, Some(429)]
        );

        let table = FaultTable::default();
        let (rule, trigger) = fail_after(2);
        table.add_triggered(rule, trigger);
        let statuses: Vec<Option<u16>> = (0..4)
            .map(|_| table.take("GET", "/api/v1/x").and_then(|f| f.status))
            .collect();
        assert_eq!(statuses, [None, None, Some(500), Some(500)]);
        table.clear();
        assert!(table.take("GET", "/api/v1/x").is_none());
    }
}
