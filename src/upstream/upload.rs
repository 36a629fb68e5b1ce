//! The client's request body on its way to SmartLead: counted as it streams
//! (for the audit record and the forwarder's stall detection) and, where it
//! may carry one, scanned for an `api_key` so the key is kept out of the
//! trail.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::Notify;

use crate::audit::body_key::BodyKeyScanner;
use crate::sync::lock;

/// What the upload did, shared between the body, the forwarder and the tracker.
#[derive(Default)]
pub struct UploadState {
    pub bytes: AtomicU64,
    /// The client's body failed (it went away or broke the framing).
    pub failed: AtomicBool,
    /// Waiting on the client (rather than on SmartLead reading).
    pub waiting_on_client: AtomicBool,
    /// Notified once the body has ended, one way or another.
    pub done: Notify,
    /// `api_key` values found in the (JSON) body as it streamed.
    pub body_keys: std::sync::Mutex<Vec<String>>,
}

/// The client's request body, counted as it streams upstream.
pub struct CountedIncoming {
    inner: Incoming,
    state: Arc<UploadState>,
    /// Looks for `"api_key"` in bodies that may carry it.
    keys: Option<BodyKeyScanner>,
}

impl CountedIncoming {
    /// `scan_for_key`: look for a JSON `api_key` as the body streams.
    pub fn new(inner: Incoming, scan_for_key: bool) -> Self {
        CountedIncoming {
            inner,
            state: Arc::default(),
            keys: scan_for_key.then(BodyKeyScanner::default),
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
        let state = &this.state;
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                state.waiting_on_client.store(false, Ordering::Relaxed);
                if let Some(data) = frame.data_ref() {
                    state.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                    if let Some(scanner) = &mut this.keys {
                        let found = scanner.feed(data);
                        if !found.is_empty() {
                            lock(&state.body_keys).extend(found);
                        }
                    }
                }
                // hyper may never poll again once the body says it has ended.
                if this.inner.is_end_stream() {
                    state.done.notify_one();
                }
            }
            Poll::Ready(Some(Err(_))) => {
                state.failed.store(true, Ordering::Relaxed);
                state.done.notify_one();
            }
            Poll::Ready(None) => state.done.notify_one(),
            Poll::Pending => state.waiting_on_client.store(true, Ordering::Relaxed),
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
