//! The one place where failures become HTTP responses. Bodies use SmartLead's
//! error shape (`{"error": "..."}`) so clients parse them as they would a
//! SmartLead error, and never carry internal detail or the request target.

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode};

use crate::audit::ErrorKind;
use crate::metrics::UpstreamError;

/// Why the gateway answered itself instead of relaying SmartLead's answer.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("upstream {upstream}: connect failed: {source}")]
    UpstreamConnect {
        upstream: String,
        #[source]
        source: crate::proxy::client::ClientError,
    },
    /// An `https://` upstream that answered plain HTTP: a configuration
    /// mistake the operator can fix, so the answer says how.
    #[error("upstream {upstream}: {source}")]
    UpstreamPlainHttp {
        upstream: String,
        #[source]
        source: crate::proxy::client::ClientError,
    },
    #[error("upstream {upstream}: connect timed out after {after:?}")]
    UpstreamConnectTimeout { upstream: String, after: Duration },
    #[error("upstream {upstream}: no response within {after:?}")]
    UpstreamTimeout { upstream: String, after: Duration },
    #[error("upstream {upstream}: connection failed mid-request: {source}")]
    UpstreamReset {
        upstream: String,
        #[source]
        source: crate::proxy::client::ClientError,
    },
    #[error("upstream {upstream}: stopped reading the request body for {after:?}")]
    UpstreamStalledReading { upstream: String, after: Duration },
    #[error("client went away while sending the request body")]
    ClientAborted,
    #[error("client paused its request body for more than {after:?}")]
    ClientBodyTimeout { after: Duration },
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("refused: the audit trail cannot be written ({0}) and audit.on_failure is \"refuse\"")]
    AuditUnavailable(String),
    #[error("refused: {0}")]
    Refused(#[from] crate::guard::classify::ClassifyError),
    /// No usable gateway key (`identity.mode = "gateway_keys"`).
    #[error("{0}")]
    Unauthorized(#[from] crate::identity::Unauthorized),
    /// Over a gateway key's limit, or the account's queue is full.
    #[error("rate limited ({limit})")]
    RateLimited {
        /// `this gateway key's limit (30/min)`, `the SmartLead account's limit (60/min)`.
        limit: String,
        retry_after: Duration,
    },
    #[error("{0}")]
    KeyInBody(#[from] crate::identity::swap::BodySwapError),
    /// The request carries this gateway's own `Via`: it came back.
    #[error("loop: the request had already passed through this gateway")]
    Loop,
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::UpstreamConnect { .. }
            | ProxyError::UpstreamPlainHttp { .. }
            | ProxyError::UpstreamReset { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamConnectTimeout { .. }
            | ProxyError::UpstreamTimeout { .. }
            | ProxyError::UpstreamStalledReading { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::ClientAborted
            | ProxyError::BadRequest(_)
            | ProxyError::Refused(_)
            | ProxyError::KeyInBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::ClientBodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ProxyError::AuditUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Loop => StatusCode::LOOP_DETECTED,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            ProxyError::UpstreamConnect { .. } | ProxyError::UpstreamPlainHttp { .. } => {
                ErrorKind::UpstreamConnectFailed
            }
            ProxyError::UpstreamConnectTimeout { .. } => ErrorKind::UpstreamConnectTimeout,
            ProxyError::UpstreamTimeout { .. } | ProxyError::UpstreamStalledReading { .. } => {
                ErrorKind::UpstreamTimeout
            }
            ProxyError::UpstreamReset { .. } => ErrorKind::UpstreamReset,
            ProxyError::ClientAborted => ErrorKind::ClientAborted,
            ProxyError::ClientBodyTimeout { .. } => ErrorKind::ClientBodyTimeout,
            ProxyError::BadRequest(_) | ProxyError::Refused(_) | ProxyError::KeyInBody(_) => {
                ErrorKind::BadRequest
            }
            ProxyError::AuditUnavailable(_) => ErrorKind::AuditUnavailable,
            ProxyError::Unauthorized(_) => ErrorKind::Unauthorized,
            ProxyError::RateLimited { .. } => ErrorKind::RateLimited,
            ProxyError::Loop => ErrorKind::LoopDetected,
        }
    }

    /// The metric this failure counts towards, if it is the upstream's.
    pub fn upstream_metric(&self) -> Option<UpstreamError> {
        match self {
            ProxyError::UpstreamConnect { .. } | ProxyError::UpstreamPlainHttp { .. } => {
                Some(UpstreamError::Connect)
            }
            ProxyError::UpstreamConnectTimeout { .. } => Some(UpstreamError::ConnectTimeout),
            ProxyError::UpstreamTimeout { .. } | ProxyError::UpstreamStalledReading { .. } => {
                Some(UpstreamError::Timeout)
            }
            ProxyError::UpstreamReset { .. } => Some(UpstreamError::Reset),
            ProxyError::ClientAborted
            | ProxyError::ClientBodyTimeout { .. }
            | ProxyError::BadRequest(_)
            | ProxyError::Refused(_)
            | ProxyError::AuditUnavailable(_)
            | ProxyError::Unauthorized(_)
            | ProxyError::RateLimited { .. }
            | ProxyError::KeyInBody(_)
            | ProxyError::Loop => None,
        }
    }

    fn public_message(&self) -> std::borrow::Cow<'static, str> {
        match self {
            ProxyError::Refused(reason) => format!("safedelete: {reason}").into(),
            ProxyError::Unauthorized(why) => why.to_string().into(),
            ProxyError::KeyInBody(why) => why.to_string().into(),
            ProxyError::RateLimited { limit, retry_after } => format!(
                "safedelete: too many requests for {limit}; nothing was sent to SmartLead. Retry after {} seconds.",
                retry_secs(*retry_after)
            )
            .into(),
            _ => self.static_message().into(),
        }
    }

    fn static_message(&self) -> &'static str {
        match self {
            ProxyError::UpstreamConnect { .. } => {
                "safedelete: could not connect to SmartLead; the request was not sent"
            }
            ProxyError::UpstreamPlainHttp { .. } => {
                "safedelete: the upstream answered plain HTTP to a TLS handshake; use http:// in upstream.url, or check the port; the request was not sent"
            }
            ProxyError::UpstreamConnectTimeout { .. } => {
                "safedelete: connecting to SmartLead timed out; the request was not sent"
            }
            ProxyError::UpstreamTimeout { .. } => {
                "safedelete: SmartLead did not answer in time; the request may or may not have been applied"
            }
            ProxyError::UpstreamReset { .. } => {
                "safedelete: the connection to SmartLead failed before it answered"
            }
            ProxyError::UpstreamStalledReading { .. } => {
                "safedelete: SmartLead stopped reading the request; it may or may not have been applied"
            }
            ProxyError::ClientAborted => "safedelete: the request body was cut off",
            ProxyError::ClientBodyTimeout { .. } => {
                "safedelete: the request body stalled and was not delivered to SmartLead"
            }
            ProxyError::BadRequest(msg) => msg,
            ProxyError::Refused(_) => "safedelete: refused",
            ProxyError::Unauthorized(_) => "safedelete: unauthorized",
            ProxyError::RateLimited { .. } => "safedelete: too many requests",
            ProxyError::KeyInBody(_) => "safedelete: the key in the body cannot be replaced",
            ProxyError::Loop => {
                "safedelete: this request had already passed through this gateway (its Via header), so SmartLead's address leads back to the gateway; it was not forwarded again. Set [upstream] connect_to to SmartLead's real address, or fix the hosts entry"
            }
            ProxyError::AuditUnavailable(_) => {
                "safedelete: the audit trail cannot be written, and this gateway refuses requests it cannot record (audit.on_failure = \"refuse\"); nothing was sent to SmartLead. Retry later."
            }
        }
    }

    /// The response the client gets: status, JSON body in SmartLead's shape
    /// for the status (`{"message"}` for 401, `{"error": {"code": ...}}` for
    /// 429, `{"error"}` otherwise), request id.
    pub fn to_response<B: From<bytes::Bytes>>(&self, request_id: &HeaderValue) -> Response<B> {
        let message = self.public_message();
        let request_id_text = request_id.to_str().unwrap_or("");
        let body = match self {
            ProxyError::Unauthorized(_) => serde_json::json!({
                "message": message,
                "error_kind": self.kind().as_str(),
                "request_id": request_id_text,
            }),
            ProxyError::RateLimited { retry_after, .. } => serde_json::json!({
                "error": {
                    "code": "RATE_LIMIT_EXCEEDED",
                    "message": message,
                    "retry_after": retry_secs(*retry_after),
                },
                "message": message,
                "error_kind": self.kind().as_str(),
                "request_id": request_id_text,
            }),
            _ => serde_json::json!({
                "error": message,
                "error_kind": self.kind().as_str(),
                "request_id": request_id_text,
            }),
        };
        let bytes = bytes::Bytes::from(body.to_string());
        let mut resp = Response::new(B::from(bytes));
        *resp.status_mut() = self.status();
        let headers = resp.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        headers.insert(super::headers::X_REQUEST_ID.clone(), request_id.clone());
        if matches!(self, ProxyError::AuditUnavailable(_)) {
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        if let ProxyError::RateLimited { retry_after, .. } = self {
            headers.insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(retry_secs(*retry_after)),
            );
        }
        if matches!(self, ProxyError::Refused(_)) {
            headers.insert(
                crate::guard::pipeline::X_SAFEDELETE_ACTION.clone(),
                HeaderValue::from_static("refused"),
            );
        }
        resp
    }
}

/// Whole seconds to wait, rounded up and at least one.
fn retry_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.is_zero()))
}
