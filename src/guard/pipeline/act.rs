//! Phase: act as the policy decided (archive or pause instead, forward the
//! call, after stopping the campaign when asked, deny), or relay SmartLead's
//! 404.

use bytes::Bytes;
use http::header;
use http::{Method, Request, StatusCode};
use serde_json::json;

use super::*;

impl Run {
    /// Phase: archive instead of deleting, trying each configured way in order.
    pub(super) async fn archive(mut self, source: &Source<'_>) -> GuardResponse {
        let mut failures = Vec::new();
        for attempt in &self.state.settings.archive_attempts {
            let body = Bytes::from(json!({ "status": attempt.status }).to_string());
            let path = self.target.render("/campaigns/{campaign}/status");
            let sent = source
                .send_retrying(
                    PartKind::Campaign,
                    attempt.method.clone(),
                    &path,
                    Some(body),
                )
                .await;
            match sent {
                Ok(resp) if resp.status().is_success() => {
                    let status = resp.status().as_u16();
                    self.record.upstream_status = Some(status);
                    self.finish_operation(State::Done, Some(status), None).await;
                    let message = format!(
                        "Campaign archived instead of deleted (policy {})",
                        self.rule_label()
                    );
                    return self
                        .answer(StatusCode::OK, "archived", None, |extra| {
                            json!({"ok": true, "success": true, "message": message, "safedelete": extra})
                        })
                        .await;
                }
                Ok(resp) => {
                    self.record.upstream_status = Some(resp.status().as_u16());
                    failures.push(format!(
                        "{} {} -> {}",
                        attempt.method,
                        attempt.status,
                        resp.status()
                    ));
                }
                Err(e) => failures.push(format!("{} {} -> {e}", attempt.method, attempt.status)),
            }
        }
        let refusal = Refusal {
            error: GuardError::ArchiveFailed {
                attempts: failures.join("; "),
            },
            upstream_status: self.record.upstream_status,
        };
        self.refuse(refusal).await
    }

    /// Phase: pause instead (the campaign, or the lead in the campaign).
    pub(super) async fn pause(mut self, source: &Source<'_>) -> GuardResponse {
        let Some((template, body)) = self.op.pause_call() else {
            let why = format!("{} has no pause", self.op);
            return self.refuse(GuardError::PauseFailed { why }.into()).await;
        };
        let path = self.target.render(template);
        let body = body.map(|b| Bytes::from_static(b.as_bytes()));
        let sent = source
            .send_retrying(PartKind::Campaign, Method::POST, &path, body)
            .await;
        let why = match sent {
            Ok(resp) if resp.status().is_success() => {
                let status = resp.status().as_u16();
                self.record.upstream_status = Some(status);
                self.finish_operation(State::Done, Some(status), None).await;
                let message = format!(
                    "{} paused instead of {} (policy {})",
                    capitalised(&self.what),
                    match self.op {
                        Op::CampaignStop => "stopped",
                        _ => "deleted",
                    },
                    self.rule_label()
                );
                return self
                    .answer(StatusCode::OK, "paused", None, |extra| {
                        json!({"ok": true, "success": true, "message": message, "safedelete": extra})
                    })
                    .await;
            }
            Ok(resp) => {
                self.record.upstream_status = Some(resp.status().as_u16());
                format!("POST {} -> {}", template, resp.status())
            }
            Err(e) => format!("POST {template} -> {e}"),
        };
        let refusal = Refusal {
            error: GuardError::PauseFailed { why },
            upstream_status: self.record.upstream_status,
        };
        self.refuse(refusal).await
    }

    /// Phase: forward the client's call (optionally stopping the campaign
    /// first), with its body when the route takes one.
    pub(super) async fn allow(
        mut self,
        source: &Source<'_>,
        mut parts: http::request::Parts,
        body: Bytes,
        stop_first: bool,
    ) -> GuardResponse {
        if stop_first {
            let body = Bytes::from(r#"{"status":"STOPPED"}"#);
            let path = self.target.render("/campaigns/{campaign}/status");
            let sent = source
                .send_retrying(PartKind::Campaign, Method::POST, &path, Some(body))
                .await;
            let stopped = match sent {
                Ok(resp) if resp.status().is_success() => Ok(()),
                Ok(resp) => Err(resp.status().to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(why) = stopped {
                return self.refuse(GuardError::StopFailed { why }.into()).await;
            }
        }
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.remove(header::TRANSFER_ENCODING);
        let body = if body.is_empty() {
            RequestBody::Empty
        } else {
            RequestBody::Full(Some(body))
        };
        let req = Request::from_parts(parts, body);
        let state = self.state.clone();
        let sent = tokio::time::timeout(
            state.upstream.first_byte_timeout,
            state.upstream.client.request(req),
        )
        .await;
        match sent {
            Ok(Ok(resp)) => {
                let status = resp.status();
                self.record.upstream_status = Some(status.as_u16());
                let final_state = if status.is_success() {
                    State::Done
                } else {
                    State::UpstreamFailed
                };
                self.finish_operation(final_state, Some(status.as_u16()), None)
                    .await;
                let (mut parts, body) = resp.into_parts();
                crate::upstream::headers::strip_hop_by_hop(&mut parts.headers);
                // SmartLead's answer to a delete is small: read it whole so
                // the record says what the client got.
                let body = match read_limited(body).await {
                    Ok(bytes) => bytes,
                    Err(()) => {
                        self.record.error_kind = Some(ErrorKind::UpstreamBodyError);
                        parts.headers.remove(header::CONTENT_LENGTH);
                        Bytes::new()
                    }
                };
                self.record.status = status.as_u16();
                self.record.bytes_out = body.len() as u64;
                let audit_id = self.write_audit("allowed", None).await;
                add_guard_headers(&mut parts.headers, "allowed", audit_id, self.snapshot_id);
                GuardResponse {
                    status,
                    headers: parts.headers,
                    body,
                    action: "allowed",
                }
            }
            Ok(Err(err)) if err.is_connect() => self.refuse(GuardError::DeleteConnect.into()).await,
            Ok(Err(_)) => self.refuse(GuardError::DeleteReset.into()).await,
            Err(_) => self.refuse(GuardError::DeleteTimeout.into()).await,
        }
    }

    pub(super) async fn deny(mut self) -> GuardResponse {
        self.finish_operation(State::Denied, None, None).await;
        self.record.error_kind = Some(ErrorKind::PolicyDenied);
        let rule = self.rule_label();
        let message = match self.op {
            Op::CampaignDelete => format!(
                "Deleting {} is denied by policy {rule}. Nothing was deleted.",
                self.what
            ),
            op => format!(
                "{} ({op}) on {} is denied by policy {rule}. Nothing was changed.",
                capitalised(op.spec().act),
                self.what
            ),
        };
        self.answer(StatusCode::FORBIDDEN, "denied", Some(ErrorKind::PolicyDenied), |extra| {
            json!({"ok": false, "success": false, "error": message, "message": message, "safedelete": extra})
        })
        .await
    }

    pub(super) async fn relay_not_found(mut self, mut resp: GuardResponse) -> GuardResponse {
        self.finish_operation(State::NotFound, Some(resp.status.as_u16()), None)
            .await;
        self.record.status = resp.status.as_u16();
        self.record.bytes_out = resp.body.len() as u64;
        let audit_id = self.write_audit("refused", None).await;
        add_guard_headers(&mut resp.headers, "refused", audit_id, None);
        resp
    }
}

/// `text` with its first letter in capitals.
fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
