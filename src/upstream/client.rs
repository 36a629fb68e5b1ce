//! The pooled keep-alive client that talks to SmartLead, and the request body
//! type it sends. The connector counts open connections for `/metrics`.
//!
//! The pool is deliberately small: one upstream, HTTP/1.1, a stack of idle
//! connections. Each proxy worker has its own client, so its lock is never
//! contended; the general-purpose pooled client it replaced cost a few
//! microseconds a request in pool keys, clones and boxed futures.

use crate::sync::lock;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use tower_service::Service;

use crate::config::Upstream;
use crate::metrics::Metrics;
use crate::tls::{self, TlsError};

type Connector = CountingConnector<HttpsConnector<HttpConnector<Resolver>>>;
type Sender = http1::SendRequest<RequestBody>;

/// A keep-alive client for the one configured upstream. Cheap to clone;
/// clones share the pool.
#[derive(Clone)]
pub struct UpstreamClient {
    inner: Arc<Inner>,
}

struct Inner {
    connector: Connector,
    /// The upstream's scheme and authority (the `Host` of its requests).
    origin: Uri,
    /// What the connector is given: the origin, without its port when
    /// `upstream.connect_to` says where to connect (its ports then apply).
    connect_uri: Uri,
    idle: Mutex<IdleList>,
    idle_timeout: Duration,
    max_idle: usize,
}

#[derive(Default)]
struct IdleList {
    /// Most recently used last.
    list: Vec<Idle>,
    /// Whether a reaper task is watching this list.
    reaping: bool,
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection could be made (DNS, TCP, TLS or the timeout around them).
    #[error("connect failed: {0}")]
    Connect(#[source] BoxError),
    /// The upstream answered the TLS handshake with something that is not
    /// TLS: an `https://` upstream URL pointing at a plain-HTTP port.
    #[error("{authority} answered plain HTTP to a TLS handshake; use http://{authority} in upstream.url, or check the port")]
    PlainHttp {
        authority: String,
        #[source]
        source: BoxError,
    },
    /// The connection failed while the request was sent or answered.
    #[error("{0}")]
    Request(#[source] hyper::Error),
}

impl ClientError {
    /// No connection was made, so the request was not sent.
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            ClientError::Connect(_) | ClientError::PlainHttp { .. }
        )
    }

    pub fn is_plain_http(&self) -> bool {
        matches!(self, ClientError::PlainHttp { .. })
    }
}

/// Whether a connect failed because the upstream answered the TLS
/// ClientHello with a record type TLS does not have: what a plain-HTTP
/// server's `HTTP/1.1 400 ...` looks like to rustls. The rustls error sits
/// inside (possibly nested) `io::Error`s, whose `source()` skips it, hence
/// `get_ref`.
fn is_plain_http_answer(err: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)) =
        err.downcast_ref::<rustls::Error>()
    {
        return true;
    }
    if let Some(inner) = err
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
    {
        if is_plain_http_answer(inner) {
            return true;
        }
    }
    err.source().is_some_and(is_plain_http_answer)
}

/// Builds the pooled client for the configured upstream.
pub fn build(upstream: &Upstream, metrics: Arc<Metrics>) -> Result<UpstreamClient, TlsError> {
    let resolver = if upstream.connect_to.is_empty() {
        Resolver::System(GaiResolver::new())
    } else {
        Resolver::Fixed(upstream.connect_to.clone().into())
    };
    let mut http = HttpConnector::new_with_resolver(resolver);
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
    let origin = Uri::builder()
        .scheme(upstream.scheme.clone())
        .authority(upstream.authority.clone())
        .path_and_query("/")
        .build()
        .expect("a parsed scheme and authority make a valid URI");
    let connect_uri = if upstream.connect_to.is_empty() {
        origin.clone()
    } else {
        // hyper-util puts an explicit URI port on every resolved address;
        // without one, connect_to's own ports are used.
        Uri::builder()
            .scheme(upstream.scheme.clone())
            .authority(upstream.authority.host())
            .path_and_query("/")
            .build()
            .expect("a parsed host makes a valid URI")
    };
    Ok(UpstreamClient {
        inner: Arc::new(Inner {
            connector,
            origin,
            connect_uri,
            idle: Mutex::default(),
            idle_timeout: upstream.idle_timeout,
            max_idle: upstream.max_idle_per_host,
        }),
    })
}

impl UpstreamClient {
    /// Sends a request to the upstream (whatever scheme and authority its URI
    /// names) on an idle connection, or a new one. A request that a reused
    /// connection closed on before writing any of it is sent again on
    /// another: it never reached SmartLead. Nothing else is retried here.
    pub async fn request(
        &self,
        mut req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, ClientError> {
        if !req.headers().contains_key(http::header::HOST) {
            // HTTP/1.1 requires Host; the connection API does not add one.
            let host = http::HeaderValue::from_str(
                self.inner.origin.authority().map_or("", |a| a.as_str()),
            )
            .expect("a parsed authority is a valid header value");
            req.headers_mut().insert(http::header::HOST, host);
        }
        // Marked as this gateway's, so a request that comes back is refused.
        super::headers::add_via(req.headers_mut());
        if req.uri().scheme().is_some() {
            let pq = req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            *req.uri_mut() = Uri::from(pq);
        }
        while let Some(mut sender) = self.checkout() {
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    self.release(sender);
                    return Ok(resp);
                }
                Err(mut err) => match err.take_message() {
                    Some(back) => req = back,
                    None => return Err(ClientError::Request(err.into_error())),
                },
            }
        }
        // Boxed: connecting is the rare path, and its future is large;
        // inline, every request's future would carry it.
        let mut sender = Box::pin(self.connect()).await?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(ClientError::Request)?;
        self.release(sender);
        Ok(resp)
    }

    /// The most recently used idle connection that is still open and fresh;
    /// stale ones met on the way are closed.
    fn checkout(&self) -> Option<Sender> {
        let mut idle = lock(&self.inner.idle);
        while let Some(entry) = idle.list.pop() {
            if entry.sender.is_ready() && entry.since.elapsed() < self.inner.idle_timeout {
                return Some(entry.sender);
            }
        }
        None
    }

    /// Returns a connection to the pool once its response has been read to
    /// the end (HTTP/1.1 sends one request at a time). A connection that
    /// closes instead, or finds the pool full, is dropped.
    fn release(&self, sender: Sender) {
        if sender.is_ready() {
            self.inner.put(sender);
            return;
        }
        let pool = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut sender = sender;
            if sender.ready().await.is_ok() {
                if let Some(pool) = pool.upgrade() {
                    pool.put(sender);
                }
            }
        });
    }

    async fn connect(&self) -> Result<Sender, ClientError> {
        let io = self
            .inner
            .connector
            .clone()
            .call(self.inner.connect_uri.clone())
            .await
            .map_err(|source| {
                if is_plain_http_answer(&*source) {
                    let authority = self.inner.origin.authority().map_or("", |a| a.as_str());
                    ClientError::PlainHttp {
                        authority: authority.to_string(),
                        source,
                    }
                } else {
                    ClientError::Connect(source)
                }
            })?;
        let (sender, conn) = http1::handshake(io)
            .await
            .map_err(|e| ClientError::Connect(e.into()))?;
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(error = %err, "upstream connection ended");
            }
        });
        Ok(sender)
    }

    /// Idle connections in the pool now.
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        lock(&self.inner.idle).list.len()
    }
}

impl Inner {
    fn put(self: &Arc<Self>, sender: Sender) {
        let mut idle = lock(&self.idle);
        if idle.list.len() >= self.max_idle {
            return;
        }
        idle.list.push(Idle {
            sender,
            since: Instant::now(),
        });
        if !idle.reaping {
            idle.reaping = true;
            spawn_reaper(Arc::downgrade(self));
        }
    }
}

/// Closes idle connections older than the idle timeout, so a quiet gateway
/// does not hold SmartLead connections open. Runs while the pool has idle
/// connections; the next one to arrive starts it again.
fn spawn_reaper(pool: Weak<Inner>) {
    tokio::spawn(async move {
        loop {
            let period = match pool.upgrade() {
                Some(p) => (p.idle_timeout / 2).max(Duration::from_millis(10)),
                None => return,
            };
            tokio::time::sleep(period).await;
            let Some(pool) = pool.upgrade() else { return };
            let mut idle = lock(&pool.idle);
            let timeout = pool.idle_timeout;
            idle.list
                .retain(|e| e.since.elapsed() < timeout && !e.sender.is_closed());
            if idle.list.is_empty() {
                idle.reaping = false;
                return;
            }
        }
    });
}

/// Request bodies sent upstream: the client's own body, streamed, or one the
/// gateway made itself.
pub enum RequestBody {
    Empty,
    Full(Option<Bytes>),
    Client(super::upload::CountedIncoming),
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
        RequestBody::Client(super::upload::CountedIncoming::new(body, false))
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

impl<C> Service<Uri> for CountingConnector<C>
where
    C: Service<Uri> + Send,
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

/// Where the upstream's host name leads: the system's resolver, or the
/// fixed addresses of `upstream.connect_to` (for a host whose name, on this
/// machine, points at the gateway itself).
#[derive(Clone)]
enum Resolver {
    System(GaiResolver),
    Fixed(Arc<[std::net::SocketAddr]>),
}

impl Service<Name> for Resolver {
    type Response = std::vec::IntoIter<std::net::SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        match self {
            Resolver::System(gai) => {
                let lookup = gai.call(name);
                Box::pin(async move { Ok(lookup.await?.collect::<Vec<_>>().into_iter()) })
            }
            Resolver::Fixed(addrs) => {
                let addrs = addrs.to_vec();
                Box::pin(async move { Ok(addrs.into_iter()) })
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A raw HTTP/1.1 upstream on 127.0.0.1:0 that answers every request on
    /// a connection with a small keep-alive response, counts connections, and
    /// closes each connection `close_after` after its first answer, if set.
    async fn upstream(close_after: Option<Duration>) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    loop {
                        let n = match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        seen.extend_from_slice(&buf[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if sock.write_all(answer.as_bytes()).await.is_err() {
                                return;
                            }
                            if let Some(after) = close_after {
                                tokio::time::sleep(after).await;
                                return;
                            }
                        }
                    }
                });
            }
        });
        (format!("http://{addr}"), accepted)
    }

    fn client(
        url: &str,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> (UpstreamClient, Arc<Metrics>) {
        let uri: Uri = url.parse().unwrap();
        let upstream = Upstream {
            connect_to: Vec::new(),
            scheme: uri.scheme().unwrap().clone(),
            authority: uri.authority().unwrap().clone(),
            ca_file: None,
            extra_roots: Vec::new(),
            connect_timeout: Duration::from_secs(2),
            first_byte_timeout: Duration::from_secs(2),
            idle_timeout,
            max_idle_per_host: max_idle,
        };
        let metrics = Arc::new(Metrics::default());
        (build(&upstream, metrics.clone()).unwrap(), metrics)
    }

    async fn get(client: &UpstreamClient, url: &str) -> Result<String, ClientError> {
        let req = Request::get(format!("{url}/api/v1/campaigns"))
            .header(http::header::HOST, "upstream")
            .body(RequestBody::Empty)
            .unwrap();
        let resp = client.request(req).await?;
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Ok(String::from_utf8(body.to_vec()).unwrap())
    }

    async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..200 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn connections_are_reused_then_closed_after_the_idle_timeout() {
        let (url, accepted) = upstream(None).await;
        let (client, metrics) = client(&url, Duration::from_millis(300), 8);
        for _ in 0..3 {
            assert_eq!(get(&client, &url).await.unwrap(), "ok");
            wait_for("the connection to return to the pool", || {
                client.idle_count() == 1
            })
            .await;
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection for three requests"
        );
        assert_eq!(metrics.upstream_connections.load(Ordering::Relaxed), 1);
        wait_for("the idle connection to be closed", || {
            client.idle_count() == 0 && metrics.upstream_connections.load(Ordering::Relaxed) == 0
        })
        .await;
        // The next request simply opens a new connection.
        assert_eq!(get(&client, &url).await.unwrap(), "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_while_idle_is_not_used_again() {
        let (url, accepted) = upstream(Some(Duration::from_millis(20))).await;
        let (client, metrics) = client(&url, Duration::from_secs(60), 8);
        assert_eq!(get(&client, &url).await.unwrap(), "ok");
        wait_for("the upstream to close the connection", || {
            metrics.upstream_connections.load(Ordering::Relaxed) == 0
        })
        .await;
        assert_eq!(get(&client, &url).await.unwrap(), "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_pool_keeps_at_most_max_idle_connections() {
        let (url, accepted) = upstream(None).await;
        let (client, metrics) = client(&url, Duration::from_secs(60), 1);
        let (a, b, c) = tokio::join!(get(&client, &url), get(&client, &url), get(&client, &url));
        assert_eq!(
            (a.unwrap(), b.unwrap(), c.unwrap()),
            ("ok".into(), "ok".into(), "ok".into())
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        wait_for("the extra connections to close", || {
            metrics.upstream_connections.load(Ordering::Relaxed) == 1
        })
        .await;
        assert_eq!(client.idle_count(), 1);
    }

    #[tokio::test]
    async fn a_request_without_host_gets_the_upstream_authority() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = sock.read(&mut buf).await.unwrap();
                head.extend_from_slice(&buf[..n]);
            }
            sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8(head).unwrap()
        });
        let url = format!("http://{addr}");
        let (client, _) = client(&url, Duration::from_secs(60), 8);
        let req = Request::get(format!("{url}/x?y=1"))
            .body(RequestBody::Empty)
            .unwrap();
        assert_eq!(client.request(req).await.unwrap().status(), 200);
        let head = seen.await.unwrap().to_ascii_lowercase();
        assert!(head.starts_with("get /x?y=1 http/1.1\r\n"), "{head}");
        assert!(head.contains(&format!("\r\nhost: {addr}\r\n")), "{head}");
    }

    #[tokio::test]
    async fn an_https_upstream_that_answers_plain_http_is_named_as_such() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                // What an HTTP server answers to a TLS ClientHello.
                let _ = sock
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let url = format!("https://{addr}");
        let (client, _) = client(&url, Duration::from_secs(60), 8);
        let err = get(&client, &url).await.unwrap_err();
        assert!(err.is_plain_http() && err.is_connect(), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "{addr} answered plain HTTP to a TLS handshake; use http://{addr} in upstream.url, or check the port"
            )
        );
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let (client, _) = client(&url, Duration::from_secs(60), 8);
        let err = get(&client, &url).await.unwrap_err();
        assert!(err.is_connect() && !err.is_plain_http(), "{err}");
    }
}
