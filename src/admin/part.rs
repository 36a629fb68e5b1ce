//! `GET /v1/snapshots/{id}/parts/{kind}`: a stored part streamed back
//! decompressed, never whole in memory, and never as a clean short file.
//!
//! [`export_part`] writes into one end of an in-memory pipe from its own
//! task while the response body reads the other end. The part's checksum is
//! only known to be right once the last byte has been written, so the task
//! reports its result through a oneshot *before* closing the pipe, and the
//! body turns end-of-data into an error unless the export succeeded: hyper
//! then cuts the chunked response without its final chunk, and the client
//! sees a broken transfer.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::DuplexStream;
use tokio::sync::oneshot;
use tokio_util::io::ReaderStream;

use super::error::ApiError;
use super::params::parse_id;
use super::AdminState;
use crate::snapshot::store::{self, export_part, PartKind, StoreError};

/// Bytes buffered between the export task and the response body.
const PIPE_CAPACITY: usize = 64 * 1024;

/// `GET /v1/snapshots/{id}/parts/{kind}`
pub async fn part(
    State(state): State<AdminState>,
    Path((id, kind)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let snapshot_id = parse_id("id", &id)?;
    let kind = PartKind::parse(&kind).ok_or_else(|| ApiError::UnknownPartKind {
        kind,
        known: PartKind::ALL
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    let stem = store::get_snapshot(&state.pool, snapshot_id)
        .await?
        .file_stem();

    let (mut writer, reader) = tokio::io::duplex(PIPE_CAPACITY);
    let (done_tx, done_rx) = oneshot::channel();
    let pool = state.pool.clone();
    tokio::spawn(async move {
        let result = export_part(&pool, snapshot_id, kind, &mut writer).await;
        // Report first, then close the pipe: the body must know the outcome
        // by the time it reads end-of-data.
        let _ = done_tx.send(result);
        drop(writer);
    });
    let mut body = PartBody {
        bytes: ReaderStream::with_capacity(reader, PIPE_CAPACITY),
        done: Some(done_rx),
        failure: None,
        sent: 0,
        snapshot_id,
        kind,
    };

    // Wait for the first bytes before answering, so that failures before any
    // data (no such part, part not complete, unreadable first chunk) still
    // get a proper status instead of a cut 200.
    let first = match body.next().await {
        Some(Ok(bytes)) => Some(bytes),
        Some(Err(_)) => {
            return Err(match body.failure.take() {
                Some(err) => ApiError::Store(err),
                None => ApiError::ExportAborted { snapshot_id, kind },
            })
        }
        None => None,
    };
    let stream = futures_util::stream::iter(first.map(Ok)).chain(body);

    let content_type = match kind {
        PartKind::LeadsCsv => "text/csv; charset=utf-8",
        _ => "application/json",
    };
    let disposition = format!("attachment; filename=\"{}\"", kind.file_name(&stem));
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&disposition).expect("a file name made of ASCII and digits"),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The pipe's reading end, failing at end-of-data unless the export succeeded.
struct PartBody {
    bytes: ReaderStream<DuplexStream>,
    /// `None` once the outcome has been read.
    done: Option<oneshot::Receiver<Result<u64, StoreError>>>,
    /// The export's error, once the body has failed because of it.
    failure: Option<StoreError>,
    /// Bytes handed to the response so far.
    sent: u64,
    snapshot_id: i64,
    kind: PartKind,
}

impl Stream for PartBody {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(item) = ready!(this.bytes.poll_next_unpin(cx)) {
            if let Ok(bytes) = &item {
                this.sent += bytes.len() as u64;
            }
            return Poll::Ready(Some(item));
        }
        let Some(done) = this.done.as_mut() else {
            return Poll::Ready(None);
        };
        let outcome = ready!(Pin::new(done).poll(cx));
        this.done = None;
        let message = match outcome {
            Ok(Ok(_)) => return Poll::Ready(None),
            Ok(Err(err)) => {
                let message = err.to_string();
                this.failure = Some(err);
                message
            }
            // The task ended without reporting (it panicked): the data is
            // not known to be whole.
            Err(_) => "the export task ended without a result".to_string(),
        };
        if this.sent > 0 {
            tracing::error!(
                snapshot_id = this.snapshot_id,
                part = %this.kind,
                bytes_sent = this.sent,
                error = %message,
                "snapshot part download cut: the export failed after data was sent"
            );
        }
        Poll::Ready(Some(Err(std::io::Error::other(message))))
    }
}
