//! The audit record as stored, its columns defined once. The table's column
//! list, the writer's insert, the queries, the CSV export and the hash
//! chain's canonical encoding all come from [`StoredEvent`]'s one field list,
//! so adding a field cannot change one of them and not the others.

use std::fmt;

use serde::Serialize;

use super::{format_time, AuditRecord};

/// One field's value: how the chain encodes it and SQLite stores it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Int(Option<i64>),
    Text(Option<&'a str>),
    Float(f64),
}

impl<'a> From<&'a i64> for Value<'a> {
    fn from(v: &'a i64) -> Self {
        Value::Int(Some(*v))
    }
}

impl<'a> From<&'a Option<i64>> for Value<'a> {
    fn from(v: &'a Option<i64>) -> Self {
        Value::Int(*v)
    }
}

impl<'a> From<&'a String> for Value<'a> {
    fn from(v: &'a String) -> Self {
        Value::Text(Some(v))
    }
}

impl<'a> From<&'a Option<String>> for Value<'a> {
    fn from(v: &'a Option<String>) -> Self {
        Value::Text(v.as_deref())
    }
}

impl<'a> From<&'a f64> for Value<'a> {
    fn from(v: &'a f64) -> Self {
        Value::Float(*v)
    }
}

/// As a CSV cell: empty for null.
impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(Some(v)) => write!(f, "{v}"),
            Value::Text(Some(v)) => f.write_str(v),
            Value::Float(v) => write!(f, "{v}"),
            Value::Int(None) | Value::Text(None) => Ok(()),
        }
    }
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Value::Int(v) => v.to_sql(),
            Value::Text(v) => v.to_sql(),
            Value::Float(v) => v.to_sql(),
        }
    }
}

/// Declares [`StoredEvent`] and, from the same list, its column names and
/// values in order.
macro_rules! stored_event {
    ($( $(#[doc = $doc:literal])* $name:ident: $ty:ty, )*) => {
        /// One audit record as stored, columns in table and chain order.
        #[derive(Debug, Clone, Default, Serialize, sqlx::FromRow)]
        pub struct StoredEvent {
            $( $(#[doc = $doc])* pub $name: $ty, )*
        }

        /// Every column of `audit_events`, in order.
        pub const COLUMNS: &[&str] = &[$(stringify!($name)),*];

        impl StoredEvent {
            /// Every column's value, in [`COLUMNS`] order.
            pub fn values(&self) -> Vec<Value<'_>> {
                vec![$(Value::from(&self.$name)),*]
            }
        }
    };
}

stored_event! {
    id: i64,
    time: String,
    request_id: String,
    method: String,
    path: String,
    query: Option<String>,
    actor_fingerprint: Option<String>,
    actor_label: Option<String>,
    client_addr: Option<String>,
    user_agent: Option<String>,
    operation: String,
    campaign_id: Option<i64>,
    action: Option<String>,
    would_action: Option<String>,
    rule: Option<String>,
    policy_revision: Option<String>,
    snapshot_id: Option<i64>,
    upstream_status: Option<i64>,
    status: i64,
    bytes_in: i64,
    bytes_out: i64,
    duration_ms: f64,
    error_kind: Option<String>,
    /// A note for people: what a gap record lost, where an operation
    /// stopped. Hashed only when present (or when `target` is), so records
    /// from before it existed still verify.
    detail: Option<String>,
    /// What a guarded operation acted on (`campaign:5/lead:7`); hashed only
    /// when present (or when `account` is).
    target: Option<String>,
    /// The SmartLead account the request was sent for (gateway keys); the
    /// last hashed field, hashed only when present.
    account: Option<String>,
    /// The previous record's `hash` (the chain's links come last and are
    /// not hashed themselves).
    prev_hash: Option<String>,
    hash: Option<String>,
}

/// The chain's links (`prev_hash`, `hash`) end the column list.
pub const CHAIN_LINKS: usize = 2;

/// The hashed fields added after the chain existed (`detail`, `target`,
/// `account`): absent ones at the end of the record are left out of its
/// encoding, so older records still verify.
pub const OPTIONAL_TAIL: usize = 3;

impl StoredEvent {
    /// The values the chain hashes: every column but the links.
    pub fn hashed_values(&self) -> Vec<Value<'_>> {
        let mut values = self.values();
        values.truncate(values.len() - CHAIN_LINKS);
        values
    }

    /// A record as the writer stores it, before its id and links are known.
    /// Takes the record's strings rather than copying them.
    pub fn from_record(r: &mut AuditRecord) -> StoredEvent {
        let take = std::mem::take::<String>;
        StoredEvent {
            id: 0,
            time: format_time(r.time),
            request_id: take(&mut r.request_id),
            method: take(&mut r.method),
            path: take(&mut r.path),
            query: r.query.take(),
            actor_fingerprint: r.actor_fingerprint.take(),
            actor_label: r.actor_label.take(),
            client_addr: r.client_addr.take(),
            user_agent: r.user_agent.take(),
            operation: r.operation.as_str().to_string(),
            campaign_id: r.campaign_id,
            action: r.action.map(str::to_string),
            would_action: r.would_action.take(),
            rule: r.rule.take(),
            policy_revision: r.policy_revision.take(),
            snapshot_id: r.snapshot_id,
            upstream_status: r.upstream_status.map(i64::from),
            status: i64::from(r.status),
            bytes_in: r.bytes_in as i64,
            bytes_out: r.bytes_out as i64,
            duration_ms: r.duration.as_micros() as f64 / 1000.0,
            error_kind: r.error_kind.map(|e| e.as_str().to_string()),
            detail: r.detail.take(),
            target: r.target.take(),
            account: r.account.take(),
            prev_hash: None,
            hash: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{ErrorKind, OperationKind};

    #[test]
    fn every_field_of_a_record_reaches_its_column() {
        let mut r = AuditRecord::empty(OperationKind::Guarded("campaign.delete"));
        r.request_id = "rid".into();
        r.method = "DELETE".into();
        r.path = "/api/v1/campaigns/7".into();
        r.query = Some("api_key=[REDACTED]".into());
        r.campaign_id = Some(7);
        r.action = Some("denied");
        r.status = 403;
        r.bytes_out = 12;
        r.error_kind = Some(ErrorKind::PolicyDenied);
        r.detail = Some("note".into());
        r.target = Some("campaign:7".into());
        let e = StoredEvent::from_record(&mut r);
        let values = e.values();
        assert_eq!(values.len(), COLUMNS.len());
        let at = |name: &str| values[COLUMNS.iter().position(|c| *c == name).unwrap()];
        assert_eq!(at("operation"), Value::Text(Some("campaign.delete")));
        assert_eq!(at("target"), Value::Text(Some("campaign:7")));
        assert_eq!(at("campaign_id"), Value::Int(Some(7)));
        assert_eq!(at("action"), Value::Text(Some("denied")));
        assert_eq!(at("status"), Value::Int(Some(403)));
        assert_eq!(at("bytes_out"), Value::Int(Some(12)));
        assert_eq!(at("error_kind"), Value::Text(Some("policy_denied")));
        assert_eq!(at("detail"), Value::Text(Some("note")));
        assert_eq!(at("hash"), Value::Text(None));
        assert_eq!(e.hashed_values().len(), COLUMNS.len() - CHAIN_LINKS);
        assert_eq!(COLUMNS[COLUMNS.len() - 5], "detail");
        assert_eq!(COLUMNS[COLUMNS.len() - 4], "target");
        assert_eq!(COLUMNS[COLUMNS.len() - 3], "account");
    }
}
