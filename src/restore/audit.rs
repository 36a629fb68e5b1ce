//! Every SmartLead call a restore or an undo makes, written to the audit
//! trail as a `restore` operation, whatever SmartLead answered: straight
//! into the database file from the command line, through the gateway's
//! audit writer when the admin API runs the restore.

use http::Method;
use serde_json::Value;

use super::call::{CallError, Caller};
use crate::audit::{AuditRecord, AuditSink, OperationKind};
use crate::db::Location;

/// Where the records go.
pub enum Trail<'a> {
    /// The store, appended to directly (the command line).
    File(&'a Location),
    /// The running gateway's audit writer (the admin API).
    Writer(&'a AuditSink),
}

/// Who and where, for the audit records of the calls.
pub struct Audit<'a> {
    pub trail: Trail<'a>,
    pub operator: &'a str,
    pub account: Option<&'a str>,
}

/// What the calls of one restore or undo are about.
pub struct Subject {
    pub campaign_id: Option<i64>,
    pub snapshot_id: Option<i64>,
    /// The record's target, e.g. `restore:3` or `undo:snapshot:7`.
    pub target: String,
    /// The start of each record's detail, e.g. `restore 3 of snapshot 7`.
    pub what: String,
}

impl Audit<'_> {
    /// Sends one call and audits it; `step` names it in the record's detail.
    pub async fn send(
        &self,
        caller: &Caller,
        subject: &Subject,
        step: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        let started = std::time::Instant::now();
        let result = caller.send(method.clone(), path, body).await;
        let mut r = AuditRecord::empty(OperationKind::Restore);
        r.method = method.to_string();
        r.path = format!("/api/v1{path}");
        r.query = Some("api_key=[REDACTED]".into());
        r.actor_label = Some(self.operator.to_string());
        r.account = self.account.map(str::to_string);
        r.campaign_id = subject.campaign_id;
        r.target = Some(subject.target.clone());
        r.snapshot_id = subject.snapshot_id;
        r.duration = started.elapsed();
        match &result {
            Ok(answer) => {
                r.status = answer.status.as_u16();
                r.upstream_status = Some(answer.status.as_u16());
                r.detail = Some(format!("{}: {step}", subject.what));
            }
            Err(e) => {
                r.status = match e {
                    CallError::Refused { status, .. } => status.as_u16(),
                    CallError::Failed { .. } => 502,
                };
                r.detail = Some(format!("{}: {step} failed: {e}", subject.what));
            }
        }
        let written = match &self.trail {
            Trail::File(database) => crate::audit::writer::append(database, r)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Trail::Writer(sink) => sink
                .write_durable(r)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot write the audit record of a restore call");
        }
        result.map(|answer| answer.body)
    }
}
