//! Bodies that stream through the gateway: the client's upload, counted, and
//! the response, which closes the request's audit record when it ends — at the
//! last byte, or when the client or SmartLead goes away mid-body.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::Method;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::ProxyState;
use crate::audit::{AuditRecord, ErrorKind};

/// What the upload did, shared between the body and the request's tracker.
#[derive(Default)]
pub struct UploadState {
    pub bytes: AtomicU64,
    pub failed: AtomicBool,
}

/// The client's request body, counted as it streams upstream.
pub struct CountedIncoming {
    inner: Incoming,
    state: Arc<UploadState>,
}

impl CountedIncoming {
    pub fn new(inner: Incoming) -> Self {
        CountedIncoming {
            inner,
            state: Arc::default(),
        }
    }
    pub fn state(&self) -> Arc<UploadState> {
        self.state.clone()
    }
}

impl Body for CountedIncoming {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.state
                        .bytes
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            }
            Poll::Ready(Some(Err(_))) => this.state.failed.store(true, Ordering::Relaxed),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Everything needed to finish a request's audit record and access log line.
pub struct Tracker {
    pub state: Arc<ProxyState>,
    pub record: AuditRecord,
    pub method: Method,
    pub started: Instant,
    pub upload: Option<Arc<UploadState>>,
    bytes_out: u64,
    body_failed: bool,
}

impl Tracker {
    pub fn new(
        state: Arc<ProxyState>,
        record: AuditRecord,
        method: Method,
        started: Instant,
    ) -> Self {
        Tracker {
            state,
            record,
            method,
            started,
            upload: None,
            bytes_out: 0,
            body_failed: false,
        }
    }

    /// Records the request: metrics, one access log line, one audit record.
    fn finish(mut self, complete: bool) {
        let r = &mut self.record;
        r.duration = self.started.elapsed();
        r.bytes_out = self.bytes_out;
        if let Some(upload) = &self.upload {
            r.bytes_in = upload.bytes.load(Ordering::Relaxed);
        }
        if r.error_kind.is_none() {
            if self.body_failed {
                r.error_kind = Some(ErrorKind::UpstreamBodyError);
                self.state
                    .metrics
                    .record_upstream_error(crate::metrics::UpstreamError::Body);
            } else if !complete {
                r.error_kind = Some(ErrorKind::ClientAborted);
            }
        }
        self.state.metrics.record_request(&self.method, r.status);
        self.state.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
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
            error_kind = r.error_kind.map(|e| e.as_str()).unwrap_or(""),
            "request"
        );
        let record = std::mem::replace(r, placeholder());
        self.state.audit.submit(record);
    }
}

fn placeholder() -> AuditRecord {
    AuditRecord {
        time: std::time::UNIX_EPOCH,
        request_id: String::new(),
        method: String::new(),
        path: String::new(),
        query: None,
        actor_fingerprint: None,
        actor_label: None,
        client_addr: None,
        user_agent: None,
        operation: crate::audit::OperationKind::Passthrough,
        campaign_id: None,
        upstream_status: None,
        status: 0,
        bytes_in: 0,
        bytes_out: 0,
        duration: std::time::Duration::ZERO,
        error_kind: None,
    }
}

enum Inner {
    Upstream(Incoming),
    Full(Option<Bytes>),
}

/// The response body: SmartLead's, streamed, or one the gateway wrote.
pub struct ResponseBody {
    inner: Inner,
    tracker: Option<Box<Tracker>>,
}

impl ResponseBody {
    pub fn upstream(body: Incoming) -> Self {
        ResponseBody {
            inner: Inner::Upstream(body),
            tracker: None,
        }
    }

    pub fn full(bytes: Bytes) -> Self {
        ResponseBody {
            inner: Inner::Full(Some(bytes)),
            tracker: None,
        }
    }

    /// Attaches the tracker that records the request when this body ends.
    pub fn track(&mut self, tracker: Tracker) {
        self.tracker = Some(Box::new(tracker));
    }

    fn finish(&mut self, complete: bool) {
        if let Some(tracker) = self.tracker.take() {
            tracker.finish(complete);
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
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Inner::Upstream(body) => Pin::new(body).poll_frame(cx),
            Inner::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(t)) = (frame.data_ref(), this.tracker.as_mut()) {
                    t.bytes_out += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(err))) => {
                tracing::warn!(error = %err, "upstream response body failed mid-stream");
                if let Some(t) = this.tracker.as_mut() {
                    t.body_failed = true;
                }
                this.finish(false);
            }
            Poll::Ready(None) => this.finish(true),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
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
        self.finish(complete);
    }
}
