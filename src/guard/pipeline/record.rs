//! Recording: the operation's state, the decision, and the request's
//! audit record with the answer built from it, refusals included.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::StatusCode;
use serde_json::{json, Value};

use super::*;

impl Run {
    pub(super) async fn set_state(&self, state: State) {
        if let Some(id) = self.operation_id {
            if let Err(err) = ledger::set_state(&self.state.pool, id, state).await {
                tracing::error!(error = %err, operation_id = id, "cannot update operation state");
            }
        }
    }

    pub(super) async fn try_set_state(&self, state: State) -> Result<(), sqlx::Error> {
        match self.operation_id {
            Some(id) => ledger::set_state(&self.state.pool, id, state).await,
            None => Ok(()),
        }
    }

    /// Ends the operation (retried: an unfinished row keeps the campaign claimed).
    pub(super) async fn finish_operation(
        &self,
        state: State,
        upstream_status: Option<u16>,
        error: Option<&str>,
    ) {
        let Some(id) = self.operation_id else { return };
        ledger::finish_retrying(&self.state.pool, id, state, upstream_status, error).await;
    }

    pub(super) async fn record_decision(&self, d: &Decision) {
        let Some(id) = self.operation_id else { return };
        let would = d.would_action();
        let row = DecisionRow {
            action: d.action.as_str(),
            would_action: would.as_deref(),
            rule: d.rule.as_deref(),
            policy_revision: &d.revision,
        };
        if let Err(err) = ledger::record_decision(&self.state.pool, id, &row).await {
            tracing::error!(error = %err, operation_id = id, "cannot record the decision");
        }
    }

    pub(super) async fn refuse(mut self, r: Refusal) -> GuardResponse {
        let e = &r.error;
        let text = e.to_string();
        if !e.leaves_operation() {
            self.finish_operation(e.state(), r.upstream_status, Some(&text))
                .await;
        }
        if r.upstream_status.is_some() {
            self.record.upstream_status = r.upstream_status;
        }
        let kind = e.kind();
        tracing::warn!(operation = self.op.name(), target = %self.key, error_kind = kind.as_str(), message = %text, "guarded call refused");
        let message = format!("safedelete: {text}");
        let mut resp = self
            .answer(e.status(), "refused", Some(kind), |extra| {
                json!({"ok": false, "success": false, "error": message, "error_kind": kind.as_str(), "message": message, "safedelete": extra})
            })
            .await;
        if r.error.retry_later() {
            resp.headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        if r.error.leaves_operation() {
            // This request has its record: should the gateway stop before the
            // background capture ends, start-up must not write a second one.
            if let (Some(op), Some(audit_id)) = (self.operation_id, self.audit_id) {
                if let Err(err) = ledger::set_audit_id(&self.state.pool, op, audit_id).await {
                    tracing::warn!(error = %err, operation_id = op, "cannot link the operation to its audit record");
                }
            }
        }
        resp
    }

    pub(super) fn rule_label(&self) -> String {
        match self.decision.as_ref().and_then(|d| d.rule.as_deref()) {
            Some(rule) => format!("rule `{rule}`"),
            None => "default".to_string(),
        }
    }

    /// Records and builds a JSON answer with the `safedelete` block.
    pub(super) async fn answer(
        &mut self,
        status: StatusCode,
        action: &'static str,
        error: Option<ErrorKind>,
        body: impl FnOnce(Value) -> Value,
    ) -> GuardResponse {
        self.record.status = status.as_u16();
        let d = self.decision.as_ref();
        // The audit id is in the `x-safedelete-audit-id` header: the body
        // is complete before the record (which counts its bytes) is written.
        let extra = json!({
            "action": action,
            "operation": self.op.name(),
            "target": self.key,
            "campaign_id": self.target.campaign_id,
            "rule": d.and_then(|d| d.rule.clone()),
            "would_action": d.and_then(|d| d.would_action()),
            "policy_revision": d.map(|d| d.revision.clone()),
            "operation_id": self.operation_id,
            "snapshot_id": self.snapshot_id,
        });
        let body = Bytes::from(body(extra).to_string());
        self.record.bytes_out = body.len() as u64;
        let audit_id = self.write_audit(action, error).await;
        let mut headers = json_headers(action);
        add_guard_headers(&mut headers, action, audit_id, self.snapshot_id);
        GuardResponse {
            status,
            headers,
            body,
            action,
        }
    }

    /// Writes this request's audit record now, durably, and returns its id.
    pub(super) async fn write_audit(
        &mut self,
        action: &'static str,
        error: Option<ErrorKind>,
    ) -> Option<i64> {
        let r = &mut self.record;
        r.action = Some(action);
        if error.is_some() {
            r.error_kind = error;
        }
        if let Some(d) = &self.decision {
            r.rule = d.rule.clone();
            r.would_action = d.would_action();
            r.policy_revision = Some(d.revision.clone());
        }
        r.snapshot_id = self.snapshot_id;
        r.duration = self.started.elapsed();
        match self.state.audit.write_durable(r.clone()).await {
            Ok(id) => {
                self.audit_id = Some(id);
                Some(id)
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot write the audit record of a guarded request");
                None
            }
        }
    }
}
