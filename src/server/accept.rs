//! Accepting proxy connections: every worker runs its own loop on its own
//! listening socket (see [`super::listen`]), so a connection is accepted,
//! parsed, forwarded and answered on one thread, never handed across.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::stall::StallGuard;
use crate::proxy::{ProxyService, ProxyState};
use crate::upstream::client::UpstreamClient;

/// How long a TLS handshake may take on the proxy listener.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every worker's accept loop shares.
pub struct Shared {
    pub state: Arc<ProxyState>,
    pub tls: Option<TlsAcceptor>,
    /// HTTP/1.1 with the head timeout and size limit.
    pub builder: http1::Builder,
    /// At most `max_connections` served at once, over all workers.
    pub slots: Arc<Semaphore>,
    pub max_connections: usize,
    pub body_idle_timeout: Duration,
}

/// Accepts connections on `listener` until `shutdown` turns true, serving
/// each on this thread with this worker's upstream `client`; then closes the
/// listener and returns the connection tasks still running.
///
/// Past `max_connections` the loop stops accepting: one accepted connection
/// per worker waits for a slot and the others wait in the kernel's listen
/// backlog, so a flood costs no memory here and never starves the admin
/// listener of file descriptors.
pub async fn accept_loop(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    graceful: Arc<GracefulShutdown>,
    client: UpstreamClient,
    mut shutdown: watch::Receiver<bool>,
) -> JoinSet<()> {
    let mut connections = JoinSet::new();
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(err) => {
            tracing::error!(error = %err, "a worker cannot accept on its listener");
            return connections;
        }
    };
    let scheme = if shared.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let mut full_since: Option<std::time::Instant> = None;
    loop {
        // No slot is held while waiting for a connection: a slot waited for
        // by one worker's accept would stay unused while the connection
        // waits in another worker's backlog.
        let (stream, client_addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            _ = shutdown.changed() => break,
        };
        let slot = match shared.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if full_since.is_none() {
                    full_since = Some(std::time::Instant::now());
                    tracing::warn!(
                        max_connections = shared.max_connections,
                        "connection limit reached; new connections wait in the backlog"
                    );
                }
                // This connection waits for a slot (FIFO over all workers);
                // the ones after it wait in the kernel's backlog.
                let wait = shared.slots.clone().acquire_owned();
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        slot = &mut wait => break match slot {
                            Ok(slot) => slot,
                            Err(_) => return connections,
                        },
                        Some(_) = connections.join_next(), if !connections.is_empty() => {}
                        _ = shutdown.changed() => return connections,
                    }
                }
            }
        };
        if let Some(since) = full_since.take() {
            tracing::info!(waited = ?since.elapsed(), "accepting connections again");
        }
        let _ = stream.set_nodelay(true);
        let service = ProxyService::new(shared.state.clone(), client.clone(), client_addr, scheme);
        let watcher = graceful.watcher();
        let shared = shared.clone();
        let served = Served::new(&shared.state.metrics);
        connections.spawn(async move {
            let _served = served;
            let stream = StallGuard::new(stream, shared.body_idle_timeout, service.stalled.clone());
            serve_connection(stream, &shared, watcher, service, client_addr).await;
            drop(slot);
        });
    }
    drop(listener);
    connections
}

async fn serve_connection(
    stream: StallGuard<TcpStream>,
    shared: &Shared,
    watcher: Watcher,
    service: ProxyService,
    client_addr: SocketAddr,
) {
    let result = match &shared.tls {
        None => {
            let conn = shared
                .builder
                .serve_connection(TokioIo::new(stream), service);
            watcher.watch(conn).await
        }
        Some(acceptor) => {
            let tls_stream = match tokio::time::timeout(
                TLS_HANDSHAKE_TIMEOUT,
                acceptor.accept(stream),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(err)) => {
                    tracing::debug!(client = %client_addr, error = %err, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(client = %client_addr, "TLS handshake timed out");
                    return;
                }
            };
            let conn = shared
                .builder
                .serve_connection(TokioIo::new(tls_stream), service);
            watcher.watch(conn).await
        }
    };
    if let Err(err) = result {
        tracing::debug!(client = %client_addr, error = %err, "connection ended with an error");
    }
}

/// Counts a client connection as served for as long as it holds its slot.
struct Served(Arc<crate::metrics::Metrics>);

impl Served {
    fn new(metrics: &Arc<crate::metrics::Metrics>) -> Served {
        metrics
            .client_connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Served(metrics.clone())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.0
            .client_connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The connection tasks of every worker, once the listeners are closed.
pub struct Connections(pub Vec<JoinSet<()>>);

impl Connections {
    /// Forgets the connections that have ended; returns how many are open.
    pub fn open(&mut self) -> usize {
        self.0
            .iter_mut()
            .map(|set| {
                while set.try_join_next().is_some() {}
                set.len()
            })
            .sum()
    }

    /// Cuts what is still open and waits for it to end.
    pub async fn cut(&mut self) {
        for set in &mut self.0 {
            set.abort_all();
            while set.join_next().await.is_some() {}
        }
    }
}
