//! Audit records: one per request. Passthrough records go through a bounded
//! queue to a batch writer ([`writer`]); secrets are redacted before a record
//! exists ([`redact`]); operators read them back with [`query`].

pub mod body_key;
pub mod chain;
pub mod event;
pub mod query;
pub mod redact;
pub mod writer;

use std::time::{Duration, SystemTime};

pub use writer::{AuditError, AuditSink, AuditWriter};

/// What kind of operation a request was, as stored in `audit_events.operation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationKind {
    Passthrough,
    /// A guarded operation, by its stable name (`campaign.delete`, ...).
    Guarded(&'static str),
    /// Not a request: records were lost here (the `detail` says how many,
    /// when and why).
    AuditGap,
    /// Not a request: a campaign disappeared from the account's listing
    /// without a delete through the gateway (the bypass watch).
    BypassDetected,
    /// Not a request: a gateway key was created, revoked or rotated
    /// (`key.create`, `key.revoke`, `key.rotate`).
    Key(&'static str),
    /// A call `safedelete restore` sent to SmartLead.
    Restore,
}

impl OperationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Passthrough => "passthrough",
            OperationKind::Guarded(name) => name,
            OperationKind::AuditGap => "audit_gap",
            OperationKind::BypassDetected => "bypass_detected",
            OperationKind::Key(name) => name,
            OperationKind::Restore => "restore",
        }
    }
}

/// What records written before every destructive call was guarded call a
/// campaign delete (`campaign.delete` since).
pub const LEGACY_CAMPAIGN_DELETE: &str = "delete_campaign";

/// Why a request did not complete normally, as stored in `audit_events.error_kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    UpstreamConnectFailed,
    UpstreamConnectTimeout,
    UpstreamTimeout,
    UpstreamReset,
    UpstreamBodyError,
    UpstreamBodyTimeout,
    ClientAborted,
    ClientBodyTimeout,
    BadRequest,
    ShuttingDown,
    PolicyDenied,
    SnapshotFailed,
    /// The snapshot was not complete within `guard.answer_within`; it goes
    /// on in the background and nothing was done for this request.
    SnapshotPending,
    FactsFailed,
    ArchiveFailed,
    Conflict,
    StorageFailed,
    /// The response body waited longer than `body_idle_timeout` for the
    /// client to read it.
    ClientStalled,
    /// Audit records were lost (a gap record).
    AuditLost,
    /// Refused because the audit trail cannot be written
    /// (`audit.on_failure = "refuse"`).
    AuditUnavailable,
    /// The gateway stopped before the operation finished.
    Interrupted,
    /// No usable gateway key (`identity.mode = "gateway_keys"`).
    Unauthorized,
    /// Over the key's or the account's rate limit.
    RateLimited,
    /// The request had already passed through this gateway (its `Via`).
    LoopDetected,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::UpstreamConnectFailed => "upstream_connect_failed",
            ErrorKind::UpstreamConnectTimeout => "upstream_connect_timeout",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::UpstreamReset => "upstream_reset",
            ErrorKind::UpstreamBodyError => "upstream_body_error",
            ErrorKind::UpstreamBodyTimeout => "upstream_body_timeout",
            ErrorKind::ClientAborted => "client_aborted",
            ErrorKind::ClientBodyTimeout => "client_body_timeout",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::ShuttingDown => "shutting_down",
            ErrorKind::PolicyDenied => "policy_denied",
            ErrorKind::SnapshotFailed => "snapshot_failed",
            ErrorKind::SnapshotPending => "snapshot_pending",
            ErrorKind::FactsFailed => "facts_failed",
            ErrorKind::ArchiveFailed => "archive_failed",
            ErrorKind::Conflict => "operation_in_progress",
            ErrorKind::StorageFailed => "storage_failed",
            ErrorKind::ClientStalled => "client_stalled",
            ErrorKind::AuditLost => "audit_lost",
            ErrorKind::AuditUnavailable => "audit_unavailable",
            ErrorKind::Interrupted => "interrupted",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::LoopDetected => "loop_detected",
        }
    }
}

/// One request as the audit trail remembers it. Built by the proxy with the
/// query already redacted; never holds the `api_key`.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub time: SystemTime,
    pub request_id: String,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub actor_fingerprint: Option<String>,
    pub actor_label: Option<String>,
    pub client_addr: Option<String>,
    pub user_agent: Option<String>,
    pub operation: OperationKind,
    pub campaign_id: Option<i64>,
    /// What the guard did: allowed, archived, paused, denied, refused.
    pub action: Option<&'static str>,
    pub would_action: Option<String>,
    pub rule: Option<String>,
    pub policy_revision: Option<String>,
    pub snapshot_id: Option<i64>,
    pub upstream_status: Option<u16>,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration: Duration,
    pub error_kind: Option<ErrorKind>,
    /// A note for people (gap and interrupted-operation records).
    pub detail: Option<String>,
    /// What a guarded operation acted on (`campaign:5/lead:7`).
    pub target: Option<String>,
    /// The SmartLead account the request was sent for (gateway keys).
    pub account: Option<String>,
}

impl AuditRecord {
    /// A record with nothing filled in yet.
    pub fn empty(operation: OperationKind) -> AuditRecord {
        AuditRecord {
            time: SystemTime::now(),
            request_id: String::new(),
            method: String::new(),
            path: String::new(),
            query: None,
            actor_fingerprint: None,
            actor_label: None,
            client_addr: None,
            user_agent: None,
            operation,
            campaign_id: None,
            action: None,
            would_action: None,
            rule: None,
            policy_revision: None,
            snapshot_id: None,
            upstream_status: None,
            status: 0,
            bytes_in: 0,
            bytes_out: 0,
            duration: Duration::ZERO,
            error_kind: None,
            detail: None,
            target: None,
            account: None,
        }
    }
}

/// RFC 3339 in UTC with milliseconds, the one time format of the trail.
/// Computed from the Unix time directly (the audit writer formats one per
/// record); times before 1970 or after 9999 take the `time` crate's path.
pub fn format_time(t: SystemTime) -> String {
    let Ok(since) = t.duration_since(SystemTime::UNIX_EPOCH) else {
        return format_time_slow(time::OffsetDateTime::from(t));
    };
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    if year > 9999 {
        return format_time_slow(time::OffsetDateTime::from(t));
    }
    let of_day = secs % 86_400;
    let mut out = [0u8; 24];
    let mut put = |at: usize, value: u64, digits: usize| {
        let mut v = value;
        for i in (0..digits).rev() {
            out[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year, 4);
    put(5, month, 2);
    put(8, day, 2);
    put(11, of_day / 3600, 2);
    put(14, of_day / 60 % 60, 2);
    put(17, of_day % 60, 2);
    put(20, u64::from(since.subsec_millis()), 3);
    for (at, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (23, b'Z'),
    ] {
        out[at] = c;
    }
    out.iter().map(|&b| b as char).collect()
}

/// Year, month and day of the proleptic Gregorian calendar for a count of
/// days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

fn format_time_slow(t: time::OffsetDateTime) -> String {
    t.format(&time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_time_writes_the_same_text_as_the_time_crate() {
        let mut rng = fastrand::Rng::with_seed(7);
        let samples = (0..10_000)
            .map(|_| Duration::from_millis(rng.u64(..253_402_300_799_000)))
            .chain([Duration::ZERO, Duration::from_nanos(1_999_999)]);
        for since_epoch in samples {
            let t = SystemTime::UNIX_EPOCH + since_epoch;
            let want = format_time_slow(time::OffsetDateTime::from(t));
            assert_eq!(format_time(t), want, "{since_epoch:?}");
        }
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_160_000_123);
        assert_eq!(format_time(t), "2025-11-26T12:26:40.123Z");
        // The last second of every 97th day from 1970 to 2400 (month ends and
        // leap days among them), and of 100 days in a row in 2000.
        let days = (0..157_000u64).filter(|d| d % 97 == 0 || (10_950..11_050).contains(d));
        for day in days {
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(day * 86_400 + 86_399);
            let want = format_time_slow(time::OffsetDateTime::from(t));
            assert_eq!(format_time(t), want, "day {day}");
        }
        let before = SystemTime::UNIX_EPOCH - Duration::from_millis(1);
        assert_eq!(format_time(before), "1969-12-31T23:59:59.999Z");
    }
}
