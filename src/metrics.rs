//! Prometheus metrics kept in plain atomics, so recording costs the hot path a
//! few relaxed increments and no lock; rendered as text on `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use std::collections::BTreeMap;

use http::Method;

const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "OTHER",
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// All the gateway's counters.
#[derive(Default)]
pub struct Metrics {
    requests: [[AtomicU64; 5]; 8],
    upstream_latency: Histogram,
    /// Audit records dropped (queue full, writer stopped, or a batch that failed).
    pub audit_dropped: AtomicU64,
    /// Audit records committed.
    pub audit_written: AtomicU64,
    /// Upstream connections open now.
    pub upstream_connections: AtomicI64,
    /// Client connections being served now (each holds one of
    /// `max_connections`' slots).
    pub client_connections: AtomicI64,
    /// Upstream connections opened since start.
    pub upstream_connects: AtomicU64,
    /// Upstream failures by kind: connect, connect timeout, timeout, reset, body.
    pub upstream_errors: [AtomicU64; 5],
    /// Requests being handled now.
    pub in_flight: AtomicI64,
    /// Guarded calls by operation name and what the guard did (rare next to
    /// passthrough traffic, so a lock is fine).
    guarded: std::sync::Mutex<std::collections::BTreeMap<(&'static str, &'static str), u64>>,
    /// Gateway keys, rate limits and the bypass watch (rare, or per key).
    identity: std::sync::Mutex<IdentityMetrics>,
    /// Gateway keys accepted now.
    gateway_keys: AtomicI64,
    /// When the proxy listener's certificate expires (Unix seconds; 0: no TLS).
    pub tls_cert_not_after: AtomicI64,
}

#[derive(Default)]
struct IdentityMetrics {
    /// 429s the gateway gave, by scope (`key`, `account`) and name.
    rate_limited: BTreeMap<(&'static str, String), u64>,
    /// Requests held to keep an account under its limit, by account.
    held_total: BTreeMap<String, u64>,
    /// Requests held now, by account.
    held_now: BTreeMap<String, usize>,
    /// 401s by reason.
    unauthorized: BTreeMap<&'static str, u64>,
    /// Campaigns that disappeared without a delete through the gateway.
    bypass_detected: BTreeMap<String, u64>,
}

#[derive(Default)]
struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

/// Index into [`Metrics::upstream_errors`].
#[derive(Debug, Clone, Copy)]
pub enum UpstreamError {
    Connect = 0,
    ConnectTimeout = 1,
    Timeout = 2,
    Reset = 3,
    Body = 4,
}

const UPSTREAM_ERROR_NAMES: [&str; 5] = ["connect", "connect_timeout", "timeout", "reset", "body"];

impl Metrics {
    /// Counts a guarded call: its operation's name and what the guard did
    /// (`allowed`, `archived`, `paused`, `denied`, `refused`).
    pub fn record_guarded(&self, operation: &'static str, action: &'static str) {
        *crate::sync::lock(&self.guarded)
            .entry((operation, action))
            .or_default() += 1;
    }

    /// Counts a 429 the gateway gave itself (`scope` is `key` or `account`).
    pub fn record_rate_limited(&self, scope: &'static str, name: &str) {
        *crate::sync::lock(&self.identity)
            .rate_limited
            .entry((scope, name.to_string()))
            .or_default() += 1;
    }

    /// Counts a request held to keep `account` under its limit.
    pub fn record_account_held(&self, account: &str) {
        *crate::sync::lock(&self.identity)
            .held_total
            .entry(account.to_string())
            .or_default() += 1;
    }

    /// How many requests for `account` are held now.
    pub fn set_account_held(&self, account: &str, held: usize) {
        crate::sync::lock(&self.identity)
            .held_now
            .insert(account.to_string(), held);
    }

    /// Counts a 401 by why (`no_key`, `smartlead_key`, `unknown`, ...).
    pub fn record_unauthorized(&self, reason: &'static str) {
        *crate::sync::lock(&self.identity)
            .unauthorized
            .entry(reason)
            .or_default() += 1;
    }

    /// Counts a campaign deleted behind the gateway's back.
    pub fn record_bypass(&self, account: &str) {
        *crate::sync::lock(&self.identity)
            .bypass_detected
            .entry(account.to_string())
            .or_default() += 1;
    }

    pub fn set_gateway_keys(&self, valid: usize) {
        self.gateway_keys.store(valid as i64, Ordering::Relaxed);
    }

    /// Counts a finished request by method and status class.
    pub fn record_request(&self, method: &Method, status: u16) {
        let m = match *method {
            Method::GET => 0,
            Method::POST => 1,
            Method::PUT => 2,
            Method::PATCH => 3,
            Method::DELETE => 4,
            Method::HEAD => 5,
            Method::OPTIONS => 6,
            _ => 7,
        };
        let class = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            _ => 4,
        };
        self.requests[m][class].fetch_add(1, Ordering::Relaxed);
    }

    /// Time from sending a request upstream to its response head.
    pub fn record_upstream_latency(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.upstream_latency.counts[i].fetch_add(1, Ordering::Relaxed);
        self.upstream_latency
            .sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn record_upstream_error(&self, kind: UpstreamError) {
        self.upstream_errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn render_identity(&self, out: &mut String) {
        gauge(
            out,
            "safedelete_gateway_keys",
            "Gateway keys accepted now (neither revoked nor expired).",
            self.gateway_keys.load(Ordering::Relaxed),
        );
        let m = crate::sync::lock(&self.identity);
        out.push_str("# HELP safedelete_unauthorized_total Requests refused for their key (gateway_keys mode), by reason.\n");
        out.push_str("# TYPE safedelete_unauthorized_total counter\n");
        for (reason, n) in &m.unauthorized {
            let _ = writeln!(
                out,
                "safedelete_unauthorized_total{{reason=\"{reason}\"}} {n}"
            );
        }
        out.push_str("# HELP safedelete_rate_limited_total Requests the gateway answered 429, by limit (a gateway key's, or the account's).\n");
        out.push_str("# TYPE safedelete_rate_limited_total counter\n");
        for ((scope, name), n) in &m.rate_limited {
            let _ = writeln!(
                out,
                "safedelete_rate_limited_total{{scope=\"{scope}\",name=\"{}\"}} {n}",
                label(name)
            );
        }
        out.push_str("# HELP safedelete_account_held_total Requests held briefly to keep a SmartLead account under its rate limit.\n");
        out.push_str("# TYPE safedelete_account_held_total counter\n");
        for (account, n) in &m.held_total {
            let _ = writeln!(
                out,
                "safedelete_account_held_total{{account=\"{}\"}} {n}",
                label(account)
            );
        }
        out.push_str("# HELP safedelete_account_held Requests held now for a SmartLead account's rate limit.\n");
        out.push_str("# TYPE safedelete_account_held gauge\n");
        for (account, n) in &m.held_now {
            let _ = writeln!(
                out,
                "safedelete_account_held{{account=\"{}\"}} {n}",
                label(account)
            );
        }
        out.push_str("# HELP safedelete_bypass_detected_total Campaigns that disappeared without a delete through the gateway.\n");
        out.push_str("# TYPE safedelete_bypass_detected_total counter\n");
        for (account, n) in &m.bypass_detected {
            let _ = writeln!(
                out,
                "safedelete_bypass_detected_total{{account=\"{}\"}} {n}",
                label(account)
            );
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self, audit_queue_depth: usize) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP safedelete_requests_total Requests answered by the proxy, by method and status class.\n");
        out.push_str("# TYPE safedelete_requests_total counter\n");
        for (m, method) in METHODS.iter().enumerate() {
            for (c, class) in CLASSES.iter().enumerate() {
                let n = self.requests[m][c].load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "safedelete_requests_total{{method=\"{method}\",status_class=\"{class}\"}} {n}"
                    );
                }
            }
        }
        out.push_str("# HELP safedelete_requests_in_flight Requests being handled now.\n");
        out.push_str("# TYPE safedelete_requests_in_flight gauge\n");
        let _ = writeln!(
            out,
            "safedelete_requests_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );

        out.push_str("# HELP safedelete_upstream_latency_seconds Time from sending a request to SmartLead to its response head.\n");
        out.push_str("# TYPE safedelete_upstream_latency_seconds histogram\n");
        let mut cumulative = 0u64;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.upstream_latency.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "safedelete_upstream_latency_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.upstream_latency.counts[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "safedelete_upstream_latency_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.upstream_latency.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "safedelete_upstream_latency_seconds_sum {sum}");
        let _ = writeln!(
            out,
            "safedelete_upstream_latency_seconds_count {cumulative}"
        );

        out.push_str("# HELP safedelete_guarded_total Guarded calls by operation and by what the guard did.\n");
        out.push_str("# TYPE safedelete_guarded_total counter\n");
        for ((operation, action), n) in crate::sync::lock(&self.guarded).iter() {
            let _ = writeln!(
                out,
                "safedelete_guarded_total{{operation=\"{operation}\",action=\"{action}\"}} {n}"
            );
        }

        self.render_identity(&mut out);

        out.push_str("# HELP safedelete_upstream_errors_total Upstream failures by kind.\n");
        out.push_str("# TYPE safedelete_upstream_errors_total counter\n");
        for (i, name) in UPSTREAM_ERROR_NAMES.iter().enumerate() {
            let _ = writeln!(
                out,
                "safedelete_upstream_errors_total{{kind=\"{name}\"}} {}",
                self.upstream_errors[i].load(Ordering::Relaxed)
            );
        }
        gauge(
            &mut out,
            "safedelete_client_connections",
            "Client connections being served now (at most max_connections).",
            self.client_connections.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "safedelete_upstream_connections",
            "Upstream connections open now.",
            self.upstream_connections.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "safedelete_upstream_connects_total",
            "Upstream connections opened.",
            self.upstream_connects.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "safedelete_audit_queue_depth",
            "Audit records waiting for the batch writer.",
            audit_queue_depth as i64,
        );
        counter(
            &mut out,
            "safedelete_audit_dropped_total",
            "Audit records that could not be queued or written.",
            self.audit_dropped.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "safedelete_log_lines_dropped_total",
            "Log lines dropped because the log writer could not keep up.",
            crate::logging::dropped_lines() as u64,
        );
        counter(
            &mut out,
            "safedelete_audit_written_total",
            "Audit records committed to the database.",
            self.audit_written.load(Ordering::Relaxed),
        );
        let not_after = self.tls_cert_not_after.load(Ordering::Relaxed);
        if not_after > 0 {
            gauge(
                &mut out,
                "safedelete_tls_cert_expiry_timestamp_seconds",
                "When the proxy listener's certificate expires (Unix time); `safedelete tls renew` re-issues it.",
                not_after,
            );
        }
        out
    }
}

fn gauge(out: &mut String, name: &str, help: &str, value: i64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

/// A label value escaped for the exposition format.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_method_and_class() {
        let m = Metrics::default();
        m.record_request(&Method::GET, 200);
        m.record_request(&Method::GET, 204);
        m.record_request(&Method::from_bytes(b"PURGE").unwrap(), 502);
        let text = m.render(3);
        assert!(text.contains("safedelete_requests_total{method=\"GET\",status_class=\"2xx\"} 2"));
        assert!(text.contains("safedelete_requests_total{method=\"OTHER\",status_class=\"5xx\"} 1"));
        assert!(text.contains("safedelete_audit_queue_depth 3"));
    }

    #[test]
    fn the_latency_histogram_is_cumulative() {
        let m = Metrics::default();
        m.record_upstream_latency(Duration::from_micros(500));
        m.record_upstream_latency(Duration::from_millis(20));
        m.record_upstream_latency(Duration::from_secs(100));
        let text = m.render(0);
        assert!(text.contains("safedelete_upstream_latency_seconds_bucket{le=\"0.001\"} 1"));
        assert!(text.contains("safedelete_upstream_latency_seconds_bucket{le=\"0.025\"} 2"));
        assert!(text.contains("safedelete_upstream_latency_seconds_bucket{le=\"30\"} 2"));
        assert!(text.contains("safedelete_upstream_latency_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("safedelete_upstream_latency_seconds_count 3"));
    }
}
