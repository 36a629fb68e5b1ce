//! Why the guard refused: one error type with one exhaustive mapping to the
//! status the client gets, the audit `error_kind`, the state the operation
//! ends in, and the message (what happened, and that nothing was deleted).
//! The pipeline names the case; this module says what it means.

use std::time::Duration;

use http::StatusCode;

use super::capture::CaptureError;
use super::ledger::State;
use crate::audit::ErrorKind;
use crate::snapshot::fetch::FetchError;

/// A guarded delete the gateway answers itself, without acting.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("another deletion of {target} is in progress; retry shortly. Nothing was deleted by this request.")]
    InFlight { target: String },
    #[error("the gateway cannot write its database, so it cannot protect this deletion. Nothing was deleted.")]
    CannotClaim,
    #[error("could not read {target} from SmartLead ({source}). Nothing was deleted.")]
    FactsUnreadable {
        target: String,
        #[source]
        source: FetchError,
    },
    #[error("reading {target} from SmartLead failed ({status}). Nothing was deleted.")]
    FactsStatus { target: String, status: StatusCode },
    #[error("the {target} could not be read completely. Nothing was deleted.")]
    FactsIncomplete { target: String },
    #[error("SmartLead's answer for {target} is not JSON. Nothing was deleted.")]
    FactsNotJson { target: String },
    #[error("SmartLead's answer for {target} lacks a field that deny rule `{rule}` checks, so the policy cannot be applied. Nothing was deleted.")]
    FactMissing { target: String, rule: String },
    #[error("cannot start a snapshot ({source}). Nothing was deleted.")]
    SnapshotStart {
        #[source]
        source: crate::snapshot::store::StoreError,
    },
    #[error("could not capture {target} before deleting it: {source}. Nothing was deleted.")]
    Capture {
        target: String,
        #[source]
        source: CaptureError,
    },
    #[error("the snapshot of {target} is not complete after {} (snapshot {snapshot_id} is still being captured, within guard.snapshot_budget). Nothing was deleted, and this request will not delete anything: retry the same delete to use the snapshot once it is complete.", humantime::format_duration(*waited))]
    SnapshotPending {
        target: String,
        snapshot_id: i64,
        waited: Duration,
    },
    #[error("the capture of {target} this retry waited for failed ({why}). Nothing was deleted.")]
    JoinedCaptureFailed { target: String, why: String },
    #[error("snapshot {snapshot_id} is no longer complete, so the gateway will not act. Nothing was deleted.")]
    SnapshotGone { snapshot_id: i64 },
    #[error("the gateway cannot write its database, so it will not act on this deletion. Nothing was deleted.")]
    CannotAct,
    #[error("the policy says archive, but every archive attempt failed ({attempts}). Nothing was deleted.")]
    ArchiveFailed { attempts: String },
    #[error("stopping the campaign before deleting it failed ({why}). Nothing was deleted.")]
    StopFailed { why: String },
    #[error("the policy says pause, but pausing failed ({why}). Nothing was changed.")]
    PauseFailed { why: String },
    #[error("could not connect to SmartLead to forward the call. Nothing was deleted.")]
    DeleteConnect,
    #[error("the connection to SmartLead failed during the delete; it may or may not have been applied (the snapshot is complete)")]
    DeleteReset,
    #[error("SmartLead did not answer the delete in time; it may or may not have been applied (the snapshot is complete)")]
    DeleteTimeout,
}

impl GuardError {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            GuardError::InFlight { .. } => StatusCode::CONFLICT,
            GuardError::CannotClaim
            | GuardError::SnapshotStart { .. }
            | GuardError::SnapshotPending { .. }
            | GuardError::SnapshotGone { .. }
            | GuardError::CannotAct => StatusCode::SERVICE_UNAVAILABLE,
            GuardError::Capture { source, .. } if source.is_storage() => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            GuardError::FactsUnreadable { .. }
            | GuardError::FactsStatus { .. }
            | GuardError::FactsIncomplete { .. }
            | GuardError::FactsNotJson { .. }
            | GuardError::FactMissing { .. }
            | GuardError::Capture { .. }
            | GuardError::JoinedCaptureFailed { .. }
            | GuardError::ArchiveFailed { .. }
            | GuardError::StopFailed { .. }
            | GuardError::PauseFailed { .. }
            | GuardError::DeleteConnect
            | GuardError::DeleteReset => StatusCode::BAD_GATEWAY,
            GuardError::DeleteTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// What the audit record says went wrong.
    pub fn kind(&self) -> ErrorKind {
        match self {
            GuardError::InFlight { .. } => ErrorKind::Conflict,
            GuardError::CannotClaim
            | GuardError::SnapshotStart { .. }
            | GuardError::SnapshotGone { .. }
            | GuardError::CannotAct => ErrorKind::StorageFailed,
            GuardError::FactsUnreadable { .. }
            | GuardError::FactsStatus { .. }
            | GuardError::FactsIncomplete { .. }
            | GuardError::FactsNotJson { .. }
            | GuardError::FactMissing { .. } => ErrorKind::FactsFailed,
            GuardError::Capture { source, .. } if source.is_storage() => ErrorKind::StorageFailed,
            GuardError::Capture { .. } | GuardError::JoinedCaptureFailed { .. } => {
                ErrorKind::SnapshotFailed
            }
            GuardError::SnapshotPending { .. } => ErrorKind::SnapshotPending,
            GuardError::ArchiveFailed { .. } | GuardError::PauseFailed { .. } => {
                ErrorKind::ArchiveFailed
            }
            GuardError::StopFailed { .. } | GuardError::DeleteReset => ErrorKind::UpstreamReset,
            GuardError::DeleteConnect => ErrorKind::UpstreamConnectFailed,
            GuardError::DeleteTimeout => ErrorKind::UpstreamTimeout,
        }
    }

    /// The state the operation ends in.
    pub fn state(&self) -> State {
        match self {
            GuardError::InFlight { .. } => State::Denied,
            GuardError::CannotClaim => State::Interrupted,
            GuardError::FactsUnreadable { .. }
            | GuardError::FactsStatus { .. }
            | GuardError::FactsIncomplete { .. }
            | GuardError::FactsNotJson { .. }
            | GuardError::FactMissing { .. }
            | GuardError::ArchiveFailed { .. }
            | GuardError::StopFailed { .. }
            | GuardError::PauseFailed { .. }
            | GuardError::DeleteConnect
            | GuardError::DeleteReset
            | GuardError::DeleteTimeout => State::UpstreamFailed,
            GuardError::SnapshotStart { .. }
            | GuardError::Capture { .. }
            | GuardError::JoinedCaptureFailed { .. }
            | GuardError::SnapshotGone { .. }
            | GuardError::CannotAct => State::SnapshotFailed,
            GuardError::SnapshotPending { .. } => State::SnapshotPending,
        }
    }

    /// The operation is left to a background capture, which ends it.
    pub fn leaves_operation(&self) -> bool {
        matches!(self, GuardError::SnapshotPending { .. })
    }

    /// The client should retry the same delete shortly.
    pub fn retry_later(&self) -> bool {
        matches!(
            self,
            GuardError::InFlight { .. } | GuardError::SnapshotPending { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_says_nothing_was_deleted_or_that_the_snapshot_is_complete() {
        let cases = [
            GuardError::InFlight {
                target: "campaign 7".into(),
            },
            GuardError::CannotClaim,
            GuardError::FactsStatus {
                target: "campaign 7".into(),
                status: StatusCode::INTERNAL_SERVER_ERROR,
            },
            GuardError::FactMissing {
                target: "campaign 7".into(),
                rule: "r".into(),
            },
            GuardError::SnapshotPending {
                target: "campaign 7".into(),
                snapshot_id: 3,
                waited: Duration::from_secs(30),
            },
            GuardError::JoinedCaptureFailed {
                target: "campaign 7".into(),
                why: "x".into(),
            },
            GuardError::SnapshotGone { snapshot_id: 3 },
            GuardError::CannotAct,
            GuardError::ArchiveFailed {
                attempts: "PATCH ARCHIVED -> 500".into(),
            },
            GuardError::StopFailed { why: "500".into() },
            GuardError::PauseFailed { why: "500".into() },
            GuardError::DeleteConnect,
            GuardError::DeleteReset,
            GuardError::DeleteTimeout,
        ];
        for e in cases {
            let text = e.to_string();
            assert!(
                text.contains("Nothing was deleted")
                    || text.contains("Nothing was changed")
                    || text.contains("snapshot is complete"),
                "{text}"
            );
            assert!(e.status().is_client_error() || e.status().is_server_error());
        }
        let pending = GuardError::SnapshotPending {
            target: "campaign 7".into(),
            snapshot_id: 3,
            waited: Duration::from_secs(30),
        };
        assert!(pending.to_string().contains("not complete after 30s"));
        assert!(pending.leaves_operation() && pending.retry_later());
        assert_eq!(pending.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
