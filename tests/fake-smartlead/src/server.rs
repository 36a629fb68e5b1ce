//! The network side: binding, the accept loop (plain TCP or TLS), the hyper
//! service that records each request, applies faults and calls the routes, and
//! [`FakeHandle`], through which a test inspects and steers a running fake.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::auth::{self, Limiter};
use crate::body::FakeBody;
use crate::faults::{self, FaultRule, FaultTable, Trigger};
use crate::query::Query;
use crate::record::RecordedRequest;
use crate::routes::Api;
use crate::FakeConfig;

/// Everything the connections of one fake share.
struct Shared {
    api: Api,
    faults: FaultTable,
    /// `false` for the binary, which has nobody to read recordings and must not
    /// grow without bound during a benchmark.
    record: bool,
    requests: Mutex<Vec<RecordedRequest>>,
    connections: AtomicUsize,
    /// SmartLead's per-key rate limit, when the config sets one.
    limiter: Option<Limiter>,
    /// How many requests the rate limit answered 429.
    rate_limited: AtomicUsize,
    /// Writes received, by route (see [`route_of`]).
    writes: Mutex<BTreeMap<String, usize>>,
}

impl Shared {
    fn new(config: &FakeConfig, record: bool) -> Self {
        let faults = FaultTable::default();
        for (rule, trigger) in &config.faults {
            faults.add_triggered(rule.clone(), *trigger);
        }
        Self {
            api: Api::new(config),
            faults,
            writes: Mutex::new(BTreeMap::new()),
            record,
            requests: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            limiter: config.rate_limit.map(Limiter::new),
            rate_limited: AtomicUsize::new(0),
        }
    }

    fn requests(&self) -> MutexGuard<'_, Vec<RecordedRequest>> {
        self.requests.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn writes(&self) -> MutexGuard<'_, BTreeMap<String, usize>> {
        self.writes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `METHOD /path` with every all-digit segment replaced by `{id}`, e.g.
/// `POST /api/v1/campaigns/{id}/leads`.
pub fn route_of(method: &str, path: &str) -> String {
    let path: Vec<&str> = path
        .split('/')
        .map(|s| {
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                "{id}"
            } else {
                s
            }
        })
        .collect();
    format!("{method} {}", path.join("/"))
}

/// A running in-process fake. Clones share the same fake; it stops when
/// [`FakeHandle::shutdown`] is called or the last clone is dropped.
#[derive(Clone)]
pub struct FakeHandle {
    addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    stop: Arc<watch::Sender<bool>>,
    task: Arc<Mutex<Option<JoinHandle<io::Result<()>>>>>,
}

impl std::fmt::Debug for FakeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeHandle")
            .field("addr", &self.addr)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// Binds `127.0.0.1:0` and runs a fake on it in a spawned task.
pub async fn start(config: FakeConfig) -> io::Result<FakeHandle> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared::new(&config, true));
    let (stop, mut stopped) = watch::channel(false);
    let shutdown = async move {
        // A dropped sender (every handle gone) also means stop.
        let _ = stopped.wait_for(|s| *s).await;
    };
    let tls = config.tls.map(TlsAcceptor::from);
    let task = tokio::spawn(run(listener, Arc::clone(&shared), tls.clone(), shutdown));
    Ok(FakeHandle {
        addr,
        tls: tls.is_some(),
        shared,
        stop: Arc::new(stop),
        task: Arc::new(Mutex::new(Some(task))),
    })
}

/// Runs a fake on `listener` until `shutdown` completes (used by the binary).
/// Requests are not recorded and faults cannot be programmed: there is no handle.
pub async fn serve(
    listener: TcpListener,
    config: FakeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let shared = Arc::new(Shared::new(&config, false));
    let tls = config.tls.map(TlsAcceptor::from);
    run(listener, shared, tls, shutdown).await
}

impl FakeHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL: `http://127.0.0.1:PORT`, or `https://localhost:PORT` with TLS so
    /// a certificate for `localhost` validates.
    pub fn url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests().clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.requests().clear();
    }

    /// Adds a fault rule after the existing ones.
    pub fn fault(&self, rule: FaultRule) {
        self.shared.faults.add(rule);
    }

    /// Adds a fault rule that fires as `trigger` says (every Nth match, after
    /// N matches, writes only), after the existing ones.
    pub fn fault_triggered(&self, rule: FaultRule, trigger: Trigger) {
        self.shared.faults.add_triggered(rule, trigger);
    }

    /// Removes every fault rule (also those of [`FakeConfig::faults`]): the
    /// "recovery" after a [`faults::fail_after`].
    pub fn clear_faults(&self) {
        self.shared.faults.clear();
    }

    /// How many writes (POST, PUT, PATCH, DELETE) the fake has received, by
    /// route (`"POST /api/v1/campaigns/{id}/leads"`, ids folded), counting
    /// those a fault or the rate limit refused. Not cleared by
    /// [`FakeHandle::clear_requests`].
    pub fn write_calls(&self) -> BTreeMap<String, usize> {
        self.shared.writes().clone()
    }

    /// [`FakeHandle::write_calls`] for one route (0 if never called).
    pub fn write_count(&self, route: &str) -> usize {
        self.shared.writes().get(route).copied().unwrap_or(0)
    }

    /// The current campaign object; `None` once deleted.
    pub fn campaign(&self, id: u64) -> Option<serde_json::Value> {
        self.shared.api.campaign(id)
    }

    /// The exact bytes `GET /campaigns/{id}/leads-export` would serve right now.
    pub fn expected_leads_csv(&self, campaign_id: u64) -> Vec<u8> {
        self.shared.api.expected_csv(campaign_id)
    }

    /// The API behind this fake, for the accessors of [`crate::inspect`].
    pub(crate) fn api(&self) -> &Api {
        &self.shared.api
    }

    /// How many requests the configured rate limit answered 429 (zero when
    /// none is configured).
    pub fn rate_limited(&self) -> usize {
        self.shared.rate_limited.load(Ordering::Relaxed)
    }

    /// How many TCP connections have been accepted.
    pub fn connections_accepted(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Stops accepting and ends the server task; open connections are dropped.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// The accept loop. Connection tasks live in a `JoinSet`, so returning aborts them.
async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    tokio::pin!(shutdown);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    shared.connections.fetch_add(1, Ordering::Relaxed);
                    let _ = stream.set_nodelay(true);
                    connections.spawn(connection(stream, Arc::clone(&shared), tls.clone()));
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
    Ok(())
}

/// Serves one connection with HTTP/1.1 or HTTP/2, over TLS when configured.
async fn connection(stream: TcpStream, shared: Arc<Shared>, tls: Option<TlsAcceptor>) {
    let service = service_fn(move |request| {
        let shared = Arc::clone(&shared);
        async move { respond(&shared, request).await }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    // Connection errors (client went away, fault-cut bodies) are the point of
    // half the tests; there is nobody to report them to.
    let _ = match tls {
        Some(acceptor) => match acceptor.accept(stream).await {
            Ok(stream) => {
                builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await
            }
            Err(_) => return,
        },
        None => {
            builder
                .serve_connection(TokioIo::new(stream), service)
                .await
        }
    };
}

/// Records the request, then answers it through the rate limit, the faults
/// and the routes.
async fn respond(
    shared: &Shared,
    request: hyper::Request<Incoming>,
) -> Result<http::Response<FakeBody>, DroppedOnPurpose> {
    let received_at = Instant::now();
    let (parts, body) = request.into_parts();
    let target = match parts.version {
        http::Version::HTTP_2 => parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
        _ => parts.uri.to_string(),
    };
    let (body, complete) = read_body(body).await;
    let raw_query = target.split_once('?').map_or("", |(_, q)| q);
    let api_key = auth::presented(&parts.method, &Query::parse(raw_query), &body).map(|(k, _)| k);
    if faults::is_write(parts.method.as_str()) {
        *shared
            .writes()
            .entry(route_of(parts.method.as_str(), parts.uri.path()))
            .or_default() += 1;
    }
    if shared.record {
        let headers = parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect();
        shared.requests().push(RecordedRequest {
            method: parts.method.as_str().to_owned(),
            target: target.clone(),
            headers,
            body: body.clone(),
            body_complete: complete,
            received_at,
            api_key: api_key.clone(),
        });
    }
    // SmartLead's limiter sits in front of everything else; only requests
    // with a key it accepts are counted.
    if let (Some(limiter), Some(key)) = (&shared.limiter, &api_key) {
        if shared.api.accepts(key) {
            if let Err(secs) = limiter.check(key, received_at) {
                shared.rate_limited.fetch_add(1, Ordering::Relaxed);
                let response = faults::status_response(429, Some(secs));
                let fault = faults::Fault {
                    retry_after: Some(secs),
                    ..faults::Fault::default()
                };
                return Ok(faults::bend(&fault, response));
            }
        }
    }
    let fault = shared.faults.take(parts.method.as_str(), parts.uri.path());
    let Some(fault) = fault else {
        return Ok(shared.api.handle(&parts.method, &target, &body));
    };
    if let Some(delay) = fault.delay {
        tokio::time::sleep(delay).await;
    }
    if fault.drop_before_response {
        // A service error makes hyper close the connection without answering.
        return Err(DroppedOnPurpose);
    }
    if fault.status.is_some() && fault.apply_write {
        let _ = shared.api.handle(&parts.method, &target, &body);
    }
    let response = match fault.status {
        Some(status) if fault.echo_request => {
            faults::echo_response(status, fault.retry_after, parts.method.as_str(), &target)
        }
        Some(status) => faults::status_response(status, fault.retry_after),
        None => shared.api.handle(&parts.method, &target, &body),
    };
    Ok(faults::bend(&fault, response))
}

/// The "error" a `drop_before_response` fault returns to hyper.
#[derive(Debug)]
pub struct DroppedOnPurpose;

impl std::fmt::Display for DroppedOnPurpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped before responding (programmed fault)")
    }
}

impl std::error::Error for DroppedOnPurpose {}

/// Reads the whole request body; `false` if it was cut short.
async fn read_body(mut body: Incoming) -> (Bytes, bool) {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    buf.extend_from_slice(data);
                }
            }
            Err(_) => return (buf.freeze(), false),
        }
    }
    (buf.freeze(), true)
}
