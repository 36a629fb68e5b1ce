//! The admin API's errors and the one place they become HTTP responses:
//! `{"error": "..."}` with 400, 404, 409, 500 or (SmartLead's refusal of
//! an undo) 502, never internal detail.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::audit::AuditError;
use crate::guard::history::HistoryError;
use crate::identity::keys::KeyError;
use crate::identity::manage::KeyActionError;
use crate::restore::{RunError, SourceError, UndoError};
use crate::snapshot::store::{PartKind, StoreError};

/// Why an admin API request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A query or path parameter that does not parse or is out of range.
    #[error("bad parameter `{name}`: expected {expected}")]
    BadParameter {
        name: String,
        expected: &'static str,
    },
    /// The same query parameter given twice.
    #[error("parameter `{name}` given more than once")]
    RepeatedParameter { name: String },
    /// A query parameter this endpoint does not know.
    #[error("unknown parameter `{name}` (known: {known})")]
    UnknownParameter { name: String, known: String },
    #[error("the query string is not valid: {source}")]
    Query {
        #[source]
        source: axum::extract::rejection::QueryRejection,
    },
    #[error("campaign {campaign_id} has no operations and no audit records")]
    UnknownCampaign { campaign_id: i64 },
    #[error("unknown part kind `{kind}` (known: {known})")]
    UnknownPartKind { kind: String, known: String },
    /// The export task of a part download ended without a result.
    #[error("snapshot {snapshot_id}: the export of part {kind} stopped without a result")]
    ExportAborted { snapshot_id: i64, kind: PartKind },
    #[error("cannot read the audit trail")]
    Audit {
        #[source]
        source: sqlx::Error,
    },
    /// A request body that is not the endpoint's JSON (unknown fields too).
    #[error("the request body is not valid: {source}")]
    Body {
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Key(#[from] KeyActionError),
    /// The key action is done; its audit record is what failed.
    #[error("the key action was done but its audit record could not be written")]
    KeyAudit {
        #[source]
        source: AuditError,
    },
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A restore request that asks for something that does not go together.
    #[error("{0}")]
    RestoreRequest(String),
    /// No SmartLead key the gateway holds to restore with.
    #[error("{0}")]
    RestoreKey(String),
    #[error("restore {id} is running in this gateway; follow it at /v1/restores/{id}")]
    RestoreRunning { id: i64 },
    #[error(transparent)]
    Restore(#[from] RunError),
    #[error(transparent)]
    Source(SourceError),
    #[error(transparent)]
    Undo(UndoError),
    #[error("cannot read the restores")]
    RestoreDb {
        #[source]
        source: sqlx::Error,
    },
}

impl ApiError {
    pub fn restore_db(source: sqlx::Error) -> ApiError {
        ApiError::RestoreDb { source }
    }

    pub fn bad(name: &str, expected: &'static str) -> ApiError {
        ApiError::BadParameter {
            name: name.to_string(),
            expected,
        }
    }

    /// The status, and whether the message may be shown to the client (it
    /// may not when it is about the gateway's own failure).
    fn classify(&self) -> (StatusCode, bool) {
        match self {
            ApiError::BadParameter { .. }
            | ApiError::RepeatedParameter { .. }
            | ApiError::UnknownParameter { .. }
            | ApiError::Query { .. }
            | ApiError::Body { .. }
            | ApiError::RestoreRequest(_) => (StatusCode::BAD_REQUEST, true),
            ApiError::RestoreKey(_) | ApiError::RestoreRunning { .. } => {
                (StatusCode::CONFLICT, true)
            }
            ApiError::RestoreDb { .. } => (StatusCode::INTERNAL_SERVER_ERROR, false),
            ApiError::Restore(err) => match err {
                RunError::NoSuchRestore { .. } => (StatusCode::NOT_FOUND, true),
                RunError::Done { .. } => (StatusCode::CONFLICT, true),
                RunError::Source(err) => source(err),
                RunError::Db(_) | RunError::Stopped { .. } => {
                    (StatusCode::INTERNAL_SERVER_ERROR, false)
                }
            },
            ApiError::Source(err) => source(err),
            ApiError::Undo(err) => match err {
                UndoError::Store(err) => store(err),
                UndoError::Source(err) => source(err),
                UndoError::NotComplete { .. }
                | UndoError::CannotUndo { .. }
                | UndoError::BadTarget { .. }
                | UndoError::NoSuchWebhook { .. }
                | UndoError::NotArchived { .. }
                | UndoError::NoAccountLeft { .. } => (StatusCode::CONFLICT, true),
                // SmartLead's answer, or why it could not be reached.
                UndoError::Call(_) => (StatusCode::BAD_GATEWAY, true),
            },
            ApiError::UnknownCampaign { .. } | ApiError::UnknownPartKind { .. } => {
                (StatusCode::NOT_FOUND, true)
            }
            ApiError::Audit { .. }
            | ApiError::KeyAudit { .. }
            | ApiError::History(_)
            | ApiError::ExportAborted { .. } => (StatusCode::INTERNAL_SERVER_ERROR, false),
            ApiError::Key(err) => match err {
                KeyActionError::UnknownAccount { .. }
                | KeyActionError::NoAccount
                | KeyActionError::AmbiguousAccount { .. }
                | KeyActionError::BadExpiry { .. }
                | KeyActionError::ExpiryPast { .. }
                | KeyActionError::BadGrace { .. }
                | KeyActionError::BadRate(_)
                | KeyActionError::Store(KeyError::BadName(_)) => (StatusCode::BAD_REQUEST, true),
                KeyActionError::Store(KeyError::NotFound(_)) => (StatusCode::NOT_FOUND, true),
                KeyActionError::Store(KeyError::NameTaken(_) | KeyError::TooManyRotations(_)) => {
                    (StatusCode::CONFLICT, true)
                }
                KeyActionError::Store(KeyError::Random | KeyError::Db(_)) => {
                    (StatusCode::INTERNAL_SERVER_ERROR, false)
                }
            },
            ApiError::Store(err) => store(err),
        }
    }
}

fn store(err: &StoreError) -> (StatusCode, bool) {
    match err {
        StoreError::NotFound { .. } | StoreError::NoSuchPart { .. } => {
            (StatusCode::NOT_FOUND, true)
        }
        StoreError::Incomplete { .. } => (StatusCode::CONFLICT, true),
        StoreError::Db(_)
        | StoreError::NotInProgress { .. }
        | StoreError::UnknownPart { .. }
        | StoreError::PartReset { .. }
        | StoreError::Compress { .. }
        | StoreError::Decompress { .. }
        | StoreError::MissingChunk { .. }
        | StoreError::ChecksumMismatch { .. }
        | StoreError::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, false),
    }
}

/// A snapshot that cannot be restored is the caller's to know about; a
/// temporary file that cannot be written is the gateway's problem.
fn source(err: &SourceError) -> (StatusCode, bool) {
    match err {
        SourceError::Store(err) => store(err),
        SourceError::NotComplete { .. }
        | SourceError::NotACampaign { .. }
        | SourceError::BadPart { .. }
        | SourceError::Csv { .. } => (StatusCode::CONFLICT, true),
        SourceError::TempFile { .. } => (StatusCode::INTERNAL_SERVER_ERROR, false),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, public) = self.classify();
        let message = if public {
            self.to_string()
        } else {
            tracing::error!(error = %chain(&self), "admin API request failed");
            "internal error; see the gateway log".to_string()
        };
        (
            status,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            serde_json::json!({ "error": message }).to_string(),
        )
            .into_response()
    }
}

/// `error: cause: cause`, so the log keeps every layer.
fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
