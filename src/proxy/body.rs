//! Bodies that stream through the gateway: the client's upload, counted, and
//! the response, which closes the request's audit record when it ends — at the
//! last byte, or when the client or SmartLead goes away or stalls mid-body.

use crate::sync::lock;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::Sleep;

use super::ProxyState;
use crate::audit::redact::{self, Secrets};
use crate::audit::{AuditRecord, ErrorKind, OperationKind};
use crate::identity::swap::MaskStream;
use crate::metrics::UpstreamError;
pub use crate::upstream::upload::{CountedIncoming, UploadState};

/// The error type of bodies the gateway streams.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Finishes a request's audit record and access log line exactly once: when
/// its response body ends, or when it is dropped (the client went away while
/// the gateway waited, or shutdown cut the connection).
pub struct Tracker {
    state: Arc<ProxyState>,
    pub record: AuditRecord,
    pub method: Method,
    pub started: Instant,
    pub upload: Option<Arc<UploadState>>,
    bytes_out: u64,
    body_error: Option<ErrorKind>,
    done: bool,
    /// The guard wrote this request's audit record itself.
    pub audited: bool,
    /// The connection's flag for a client that stopped reading.
    pub connection_stalled: Option<Arc<AtomicBool>>,
}

impl Tracker {
    pub fn new(state: Arc<ProxyState>, record: AuditRecord, method: Method) -> Self {
        state.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        Tracker {
            state,
            record,
            method,
            started: Instant::now(),
            upload: None,
            bytes_out: 0,
            body_error: None,
            done: false,
            audited: false,
            connection_stalled: None,
        }
    }

    /// Scrubs the keys the body has shown so far from the record (and names
    /// the actor by the first when the query had none).
    pub fn scrub_body_keys(&mut self) {
        let Some(upload) = &self.upload else { return };
        let keys = std::mem::take(&mut *lock(&upload.body_keys));
        if !keys.is_empty() {
            apply_body_keys(&mut self.record, &keys);
        }
    }

    /// Records the request: metrics, one access log line, one audit record.
    fn finish(&mut self, complete: bool) {
        if self.done {
            return;
        }
        self.done = true;
        self.scrub_body_keys();
        let state = &self.state;
        let r = &mut self.record;
        r.duration = self.started.elapsed();
        r.bytes_out = self.bytes_out;
        if let Some(upload) = &self.upload {
            r.bytes_in = upload.bytes.load(Ordering::Relaxed);
        }
        if r.error_kind.is_none() {
            r.error_kind = match self.body_error {
                Some(kind) => Some(kind),
                None if complete => None,
                None if self
                    .connection_stalled
                    .as_ref()
                    .is_some_and(|s| s.load(Ordering::Relaxed)) =>
                {
                    Some(ErrorKind::ClientStalled)
                }
                None if state.cutting.load(Ordering::Relaxed) => Some(ErrorKind::ShuttingDown),
                None => Some(ErrorKind::ClientAborted),
            };
        }
        if r.status == 0 {
            // Nothing was answered: the nginx convention for "client closed request".
            r.status = 499;
        }
        state.metrics.record_request(&self.method, r.status);
        state.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
        tracing::info!(
            target: "safedelete::access",
            request_id = %r.request_id,
            method = %r.method,
            path = %r.path,
            query = r.query.as_deref().unwrap_or(""),
            status = r.status,
            duration_ms = r.duration.as_micros() as f64 / 1000.0,
            bytes_in = r.bytes_in,
            bytes_out = r.bytes_out,
            // Absent, not empty, when there is nothing to say.
            action = r.action,
            error_kind = r.error_kind.map(|e| e.as_str()),
            "request"
        );
        let recorded = state.audit_passthrough || r.operation != OperationKind::Passthrough;
        if !self.audited && recorded {
            let record = std::mem::replace(r, AuditRecord::empty(OperationKind::Passthrough));
            state.audit.submit(record);
        }
    }
}

/// Keys found in the body are secrets like the query's: scrubbed from what
/// the record keeps, and the first names the actor when the query had none.
fn apply_body_keys(r: &mut AuditRecord, keys: &[String]) {
    let mut secrets = Secrets::default();
    for k in keys {
        secrets.add(k);
    }
    let scrub = |text: &mut String| {
        if let std::borrow::Cow::Owned(clean) = secrets.scrub(text) {
            *text = clean;
        }
    };
    scrub(&mut r.path);
    scrub(&mut r.request_id);
    for text in [&mut r.query, &mut r.user_agent].into_iter().flatten() {
        scrub(text);
    }
    if r.actor_fingerprint.is_none() {
        r.actor_fingerprint = Some(redact::fingerprint(&keys[0]));
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.finish(false);
    }
}

enum Inner {
    Upstream(Incoming),
    Full(Option<Bytes>),
}

/// SmartLead's body went quiet for longer than `body_idle_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("upstream body stalled for {0:?}")]
pub struct BodyStalled(Duration);

/// The response body: SmartLead's, streamed, or one the gateway wrote.
pub struct ResponseBody {
    inner: Inner,
    tracker: Option<Box<Tracker>>,
    idle_timeout: Duration,
    /// Armed while the upstream body is pending; reset on every frame.
    idle: Option<Pin<Box<Sleep>>>,
    idle_armed: bool,
    /// Masks the account's SmartLead key out of the body (gateway keys).
    mask: Option<Box<MaskStream>>,
}

impl ResponseBody {
    pub fn upstream(body: Incoming, idle_timeout: Duration) -> Self {
        ResponseBody {
            inner: Inner::Upstream(body),
            tracker: None,
            idle_timeout,
            idle: None,
            idle_armed: false,
            mask: None,
        }
    }

    pub fn full(bytes: Bytes) -> Self {
        ResponseBody {
            inner: Inner::Full(Some(bytes)),
            tracker: None,
            idle_timeout: Duration::MAX,
            idle: None,
            idle_armed: false,
            mask: None,
        }
    }

    /// Masks a key out of the body as it streams (same length, so the
    /// framing SmartLead chose stays right).
    pub fn mask(&mut self, mask: MaskStream) {
        self.mask = Some(Box::new(mask));
    }

    /// Attaches the tracker that records the request when this body ends.
    pub fn track(&mut self, tracker: Tracker) {
        self.tracker = Some(Box::new(tracker));
    }

    fn finish(&mut self, complete: bool, error: Option<ErrorKind>) {
        if let Some(mut tracker) = self.tracker.take() {
            tracker.body_error = error;
            tracker.finish(complete);
        }
    }

    /// Polls the idle deadline while the upstream body is pending.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = tokio::time::Instant::now() + self.idle_timeout;
        if !self.idle_armed {
            self.idle_armed = true;
            match &mut self.idle {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.idle = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        match &mut self.idle {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

impl From<Bytes> for ResponseBody {
    fn from(bytes: Bytes) -> Self {
        ResponseBody::full(bytes)
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let polled = match &mut this.inner {
                Inner::Upstream(body) => Pin::new(body).poll_frame(cx),
                Inner::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            };
            return match polled {
                Poll::Ready(Some(Ok(frame))) => {
                    this.idle_armed = false;
                    let frame = match (&mut this.mask, frame.into_data()) {
                        (Some(mask), Ok(data)) => {
                            let ready = mask.feed(&data);
                            if ready.is_empty() {
                                // All of it held back: a key may go on in the next frame.
                                continue;
                            }
                            Frame::data(ready)
                        }
                        (None, Ok(data)) => Frame::data(data),
                        (_, Err(other)) => other,
                    };
                    if let (Some(data), Some(t)) = (frame.data_ref(), this.tracker.as_mut()) {
                        t.bytes_out += data.len() as u64;
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(err))) => {
                    tracing::warn!(error = %err, "upstream response body failed mid-stream");
                    if let Some(t) = &this.tracker {
                        t.state.metrics.record_upstream_error(UpstreamError::Body);
                    }
                    this.finish(false, Some(ErrorKind::UpstreamBodyError));
                    Poll::Ready(Some(Err(err.into())))
                }
                Poll::Ready(None) => {
                    let held = this.mask.as_mut().map(|m| m.finish());
                    if let Some(rest) = held.filter(|b| !b.is_empty()) {
                        if let Some(t) = this.tracker.as_mut() {
                            t.bytes_out += rest.len() as u64;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(rest))));
                    }
                    this.finish(true, None);
                    Poll::Ready(None)
                }
                Poll::Pending => {
                    if this.poll_idle(cx).is_ready() {
                        tracing::warn!(after = ?this.idle_timeout, "upstream response body stalled");
                        if let Some(t) = &this.tracker {
                            t.state.metrics.record_upstream_error(UpstreamError::Body);
                        }
                        this.finish(false, Some(ErrorKind::UpstreamBodyTimeout));
                        // Ending the stream with an error makes hyper cut the client
                        // connection: a short file must never look complete.
                        this.inner = Inner::Full(None);
                        return Poll::Ready(Some(Err(Box::new(BodyStalled(this.idle_timeout)))));
                    }
                    Poll::Pending
                }
            };
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.mask.as_ref().is_some_and(|m| m.holds_bytes()) {
            return false;
        }
        match &self.inner {
            Inner::Upstream(body) => body.is_end_stream(),
            Inner::Full(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(body) => body.size_hint(),
            Inner::Full(data) => {
                SizeHint::with_exact(data.as_ref().map(|d| d.len() as u64).unwrap_or(0))
            }
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // Dropped without being read to the end: either there was nothing to
        // read (HEAD, 204, 304) or the client went away mid-download.
        let complete = self.is_end_stream();
        self.finish(complete, None);
    }
}
