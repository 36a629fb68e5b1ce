//! The pooled keep-alive client that talks to SmartLead, and the request body
//! type it sends. The connector counts open connections for `/metrics`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::Upstream;
use crate::metrics::Metrics;
use crate::tls::{self, TlsError};

/// The upstream client type.
pub type UpstreamClient = Client<CountingConnector<HttpsConnector<HttpConnector>>, RequestBody>;

/// Builds the pooled client for the configured upstream.
pub fn build(upstream: &Upstream, metrics: Arc<Metrics>) -> Result<UpstreamClient, TlsError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(upstream.connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls::client_config(&upstream.extra_roots)?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let connector = CountingConnector {
        inner: https,
        metrics,
        timeout: upstream.connect_timeout,
    };
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(upstream.idle_timeout)
        .pool_max_idle_per_host(upstream.max_idle_per_host)
        // The forwarder sets Host itself, to the upstream authority.
        .set_host(false)
        .build(connector))
}

/// Request bodies sent upstream: the client's own body, streamed, or one the
/// gateway made itself.
pub enum RequestBody {
    Empty,
    Full(Option<Bytes>),
    Client(super::body::CountedIncoming),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            RequestBody::Client(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Full(data) => data.is_none(),
            RequestBody::Client(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map(|d| d.len() as u64).unwrap_or(0))
            }
            RequestBody::Client(body) => body.size_hint(),
        }
    }
}

impl From<Incoming> for RequestBody {
    fn from(body: Incoming) -> Self {
        RequestBody::Client(super::body::CountedIncoming::new(body))
    }
}

/// Wraps a connector so that every connection it makes is counted while open,
/// and so that the whole connect (DNS, TCP and the TLS handshake) fits in the
/// connect timeout.
#[derive(Clone)]
pub struct CountingConnector<C> {
    inner: C,
    metrics: Arc<Metrics>,
    timeout: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<C> tower_service::Service<Uri> for CountingConnector<C>
where
    C: tower_service::Service<Uri> + Send,
    C::Future: Send + 'static,
    C::Response: Send,
    C::Error: Into<BoxError>,
{
    type Response = Counted<C::Response>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let fut = self.inner.call(dst);
        let metrics = self.metrics.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let io = match tokio::time::timeout(timeout, fut).await {
                Ok(result) => result.map_err(Into::into)?,
                Err(_) => {
                    return Err(Box::new(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connect (DNS, TCP and TLS) timed out",
                    )) as BoxError)
                }
            };
            metrics.upstream_connections.fetch_add(1, Ordering::Relaxed);
            metrics.upstream_connects.fetch_add(1, Ordering::Relaxed);
            Ok(Counted { io, metrics })
        })
    }
}

/// A connection that decrements the open-connections gauge when dropped.
pub struct Counted<T> {
    io: T,
    metrics: Arc<Metrics>,
}

impl<T> Drop for Counted<T> {
    fn drop(&mut self) {
        self.metrics
            .upstream_connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl<T: Connection> Connection for Counted<T> {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for Counted<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for Counted<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}
