//! The accept loops of both listeners and graceful shutdown: stop accepting,
//! let in-flight requests finish within the grace period, flush the audit
//! writer, close the database.

mod admin_listener;
mod stall;
mod workers;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::admin::{self, AdminState};
use crate::audit::{AuditError, AuditWriter};
use crate::config::{Config, RELOADED};
use crate::db::{self, DbError};
use crate::guard::context::GuardContext;
use crate::identity::Identities;
use crate::metrics::Metrics;
use crate::proxy::{ProxyService, ProxyState};
use crate::tls::{self, TlsError};
use crate::upstream::{client, Upstream};
use stall::StallGuard;
use tokio::sync::Semaphore;
use workers::Workers;
pub use workers::WorkersError;

/// Connections the kernel queues for a listener before refusing more.
const LISTEN_BACKLOG: u32 = 4096;

/// How long a TLS handshake may take on the proxy listener.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A problem starting or running the gateway.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Workers(#[from] WorkersError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("cannot read the gateway keys: {0}")]
    Keys(#[source] sqlx::Error),
}

/// Both listeners, bound before anything else starts (so tests can bind
/// `127.0.0.1:0` and read the port).
pub struct Listeners {
    pub proxy: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    pub async fn bind(config: &Config) -> Result<Listeners, ServeError> {
        // A deep backlog: connections past `max_connections` wait there (the
        // kernel caps it at net.core.somaxconn).
        let bind = |what, addr: SocketAddr| async move {
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            };
            socket
                .and_then(|s| {
                    s.set_reuseaddr(true)?;
                    s.bind(addr)?;
                    s.listen(LISTEN_BACKLOG)
                })
                .map_err(|source| ServeError::Bind { what, addr, source })
        };
        Ok(Listeners {
            proxy: bind("proxy listener", config.listen).await?,
            admin: bind("admin listener", config.admin.listen).await?,
        })
    }

    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("a bound listener has an address")
    }
}

/// What a finished run did.
#[derive(Debug)]
pub struct RunSummary {
    /// Connections still open when the grace period ran out (and were cut).
    pub connections_cut: usize,
    /// Audit records the writer committed.
    pub audit_records_written: u64,
}

/// Runs the gateway until `shutdown` resolves, then drains and returns.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<RunSummary, ServeError> {
    let proxy_addr = listeners.proxy_addr();
    let admin_addr = listeners.admin_addr();
    let pool = db::open(&config.database).await?;
    let metrics = Arc::new(Metrics::default());
    let (audit, writer) = AuditWriter::spawn(
        &config.database,
        config.audit.queue_capacity,
        config.audit.batch_max,
        metrics.clone(),
    )?;
    // The guard pipeline's client; passthrough traffic uses the workers' own.
    let client = client::build(&config.upstream, metrics.clone())?;
    let workers = Workers::start(config.workers, &config.upstream, &metrics)?;
    let tls = config
        .listen_tls
        .as_ref()
        .map(tls::server_config)
        .transpose()?
        .map(TlsAcceptor::from);
    let upstream = Upstream::new(&config, client);
    let identities = Arc::new(Identities::new(&config, pool.clone(), metrics.clone()));
    // Keys are known before the first request, and kept fresh from then on.
    identities.refresh().await.map_err(ServeError::Keys)?;
    let keys_task = tokio::spawn(identities.clone().keep_fresh());
    let guard = Arc::new(GuardContext::new(
        &config,
        upstream.clone(),
        pool.clone(),
        audit.clone(),
    ));
    let state = Arc::new(ProxyState::new(
        &config,
        upstream,
        audit.clone(),
        metrics.clone(),
        guard.clone(),
        identities.clone(),
    ));
    recover_unfinished(&pool).await;
    record_interrupted(&pool, &audit).await;
    let reload_task = tokio::spawn(reload_on_sighup(config.clone(), state.clone()));
    let bypass_task = (!config.bypass.interval.is_zero() && !config.smartlead.accounts.is_empty())
        .then(|| {
            let watch = crate::bypass::Watch {
                upstream: state.upstream.clone(),
                pool: pool.clone(),
                audit: audit.clone(),
                metrics: metrics.clone(),
                interval: config.bypass.interval,
            };
            tokio::spawn(crate::bypass::watch(watch, identities.accounts().to_vec()))
        });

    let ready = Arc::new(AtomicBool::new(false));
    let (admin_stop_tx, admin_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let admin_router = admin::router(AdminState {
        metrics: metrics.clone(),
        audit: audit.clone(),
        ready: ready.clone(),
        token: config.admin.token.clone(),
        pool: pool.clone(),
        accounts: config
            .smartlead
            .names()
            .into_iter()
            .map(String::from)
            .collect(),
        default_account: config.smartlead.default_account().map(|a| a.name.clone()),
        identities: identities.clone(),
        upstream: state.upstream.clone(),
        restores: Default::default(),
    });
    let admin_task = tokio::spawn(admin_listener::serve(
        listeners.admin,
        admin_router,
        config.request_head_timeout,
        async {
            let _ = admin_stop_rx.await;
        },
    ));

    tracing::info!(
        proxy = %proxy_addr,
        admin = %admin_addr,
        upstream = %state.upstream.url,
        database = %config.database.display(),
        tls = tls.is_some(),
        workers = workers.count(),
        config = config
            .source
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "no config file".into())
            .as_str(),
        policy_revision = %state.guard.policy().policy.revision(),
        "safedelete listening"
    );
    if let Some(open_files) = crate::config::connections_exceed_open_files(config.max_connections) {
        tracing::warn!(
            max_connections = config.max_connections,
            open_files,
            "max_connections can use up the open-files limit (two descriptors a connection, 256 kept back); \
             past it, accepts fail and the admin listener may stop answering: lower max_connections or raise the limit (ulimit -n)"
        );
    }
    ready.store(true, Ordering::Release);

    let graceful = GracefulShutdown::new();
    let limits = ConnectionLimits {
        max_connections: config.max_connections,
        request_head_timeout: config.request_head_timeout,
        max_request_head_bytes: config.max_request_head_bytes,
        body_idle_timeout: config.body_idle_timeout,
    };
    let mut connections = accept_loop(
        listeners.proxy,
        state.clone(),
        &workers,
        tls,
        &limits,
        &graceful,
        &ready,
        shutdown,
    )
    .await;

    // The listener is closed: let in-flight requests finish within the grace
    // period, then cut what is left (its requests are recorded as cut).
    while connections.try_join_next().is_some() {}
    tracing::info!(open_connections = connections.len(), grace = ?config.shutdown_grace, "shutting down");
    let connections_cut =
        match tokio::time::timeout(config.shutdown_grace, graceful.shutdown()).await {
            Ok(()) => 0,
            Err(_) => {
                while connections.try_join_next().is_some() {}
                let open = connections.len();
                tracing::warn!(
                    open_connections = open,
                    "grace period over; cutting the remaining connections"
                );
                state.cutting.store(true, Ordering::Relaxed);
                open
            }
        };
    connections.abort_all();
    while connections.join_next().await.is_some() {}
    workers.stop().await;
    // Guard pipelines whose clients went away still run to the end (they may
    // be mid-snapshot or mid-archive); the database must outlive them.
    let pipelines = state.guard.tasks.running();
    if pipelines > 0 {
        tracing::info!(pipelines, "waiting for deletion guard pipelines to finish");
        let wait = config.shutdown_grace.max(Duration::from_secs(5));
        if tokio::time::timeout(wait, state.guard.tasks.wait_idle())
            .await
            .is_err()
        {
            tracing::warn!(
                "guard pipelines still running; they will be marked interrupted at the next start"
            );
        }
    }
    drop(state);

    reload_task.abort();
    keys_task.abort();
    identities.flush().await;
    if let Some(task) = bypass_task {
        task.abort();
    }
    let _ = admin_stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), admin_task).await;
    let audit_records_written = writer.close().await;
    pool.close().await;
    tracing::info!(audit_records_written, connections_cut, "safedelete stopped");
    Ok(RunSummary {
        connections_cut,
        audit_records_written,
    })
}

/// Operations and snapshots a crash left unfinished are marked, never
/// reported as complete.
async fn recover_unfinished(pool: &sqlx::SqlitePool) {
    match crate::guard::ledger::recover_stale(pool).await {
        Ok((0, 0)) => {}
        Ok((operations, snapshots)) => tracing::warn!(
            operations,
            snapshots,
            "operations left unfinished by a stopped gateway marked interrupted, their snapshots incomplete"
        ),
        Err(err) => tracing::error!(error = %err, "cannot recover unfinished operations"),
    }
}

/// Operations a stopped gateway left interrupted get the audit record their
/// request never wrote, so the trail shows how each ended.
async fn record_interrupted(pool: &sqlx::SqlitePool, audit: &crate::audit::AuditSink) {
    use crate::guard::ledger;
    let ops = match ledger::unrecorded_interrupted(pool).await {
        Ok(ops) => ops,
        Err(err) => {
            tracing::error!(error = %err, "cannot list interrupted operations");
            return;
        }
    };
    for op in ops {
        let record = interrupted_record(&op);
        match audit.write_durable(record).await {
            Ok(audit_id) => {
                if let Err(err) = ledger::set_audit_id(pool, op.id, audit_id).await {
                    tracing::error!(error = %err, operation_id = op.id, "cannot link the interrupted operation to its audit record");
                }
            }
            Err(err) => {
                tracing::error!(error = %err, operation_id = op.id, "cannot record the interrupted operation");
            }
        }
    }
}

fn interrupted_record(op: &crate::guard::ledger::Interrupted) -> crate::audit::AuditRecord {
    use crate::audit::{AuditRecord, ErrorKind, OperationKind};
    use crate::guard::operations::{Op, Verb};
    let kind = Op::from_name(&op.kind).unwrap_or(Op::UnknownDelete);
    let mut r = AuditRecord::empty(OperationKind::Guarded(kind.name()));
    r.request_id = op.request_id.clone();
    r.method = match kind.spec().routes.first().map(|r| r.verb) {
        Some(Verb::Post | Verb::PostOrPatch) => "POST",
        _ => "DELETE",
    }
    .into();
    // The request itself is gone; its target says what it was about.
    r.path = op.target.clone();
    r.target = Some(op.target.clone());
    r.actor_fingerprint = op.actor_fingerprint.clone();
    r.actor_label = op.actor_label.clone();
    r.campaign_id = op.campaign_id;
    r.rule = op.rule.clone();
    r.policy_revision = op.policy_revision.clone();
    r.snapshot_id = op.snapshot_id;
    r.error_kind = Some(ErrorKind::Interrupted);
    let acted = op
        .error
        .as_deref()
        .is_some_and(|e| e.contains("state acting"));
    let outcome = if acted {
        "the call to SmartLead may or may not have been made; check the campaign"
    } else {
        "nothing was deleted"
    };
    r.detail = Some(format!(
        "operation {} ({}, received {}) was interrupted: {}; {outcome}",
        op.id,
        op.kind,
        op.created_at,
        op.error
            .as_deref()
            .unwrap_or("the gateway stopped before it finished"),
    ));
    r
}

/// SIGHUP reloads the config file: the whole file is validated, the policy
/// and actors are swapped in, and one line says which changed settings were
/// applied and which need a restart (names only, never values). An invalid
/// file is refused and everything running stays as it was.
async fn reload_on_sighup(mut running: Config, state: Arc<ProxyState>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; policy reload is off");
        return;
    };
    while hup.recv().await.is_some() {
        let new = match running.reload(&crate::config::ProcessEnv) {
            Ok(new) => new,
            Err(err) => {
                tracing::error!(error = %err, kept = %state.guard.policy().policy.revision(), "config reload refused; keeping the running config");
                continue;
            }
        };
        let changed = running.changed_keys(&new);
        let (applied, restart): (Vec<&str>, Vec<&str>) =
            changed.iter().partition(|k| RELOADED.contains(k));
        if !applied.is_empty() {
            state.guard.set_policy(new.policy.clone());
            running.policy = new.policy;
        }
        // `running` keeps the settings that need a restart as they are in
        // force, so the next reload reports them again until then.
        let list = |keys: &[&str]| match keys {
            [] => "none".to_string(),
            keys => keys.join(", "),
        };
        let revision = running.policy.policy.revision();
        if restart.is_empty() {
            tracing::info!(applied = %list(&applied), needs_restart = "none", policy_revision = %revision, "config reloaded");
        } else {
            tracing::warn!(applied = %list(&applied), needs_restart = %list(&restart), policy_revision = %revision, "config reloaded; some changed settings need a restart");
        }
    }
}

/// What bounds a client connection's resources.
struct ConnectionLimits {
    max_connections: usize,
    request_head_timeout: Duration,
    max_request_head_bytes: usize,
    body_idle_timeout: Duration,
}

/// Accepts connections until `shutdown` resolves, then turns readiness off and
/// closes the listener. Returns the connection tasks still running.
///
/// At most `max_connections` are served at once: past that the loop stops
/// accepting and new connections wait in the kernel's listen backlog, so a
/// flood costs no memory here and never starves the admin listener of file
/// descriptors.
#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    listener: TcpListener,
    state: Arc<ProxyState>,
    workers: &Workers,
    tls: Option<TlsAcceptor>,
    limits: &ConnectionLimits,
    graceful: &GracefulShutdown,
    ready: &AtomicBool,
    shutdown: impl Future<Output = ()>,
) -> JoinSet<()> {
    // HTTP/1.1 only: it is what SmartLead clients speak, and hyper's header
    // read timeout then bounds idle and slow connections from the first byte.
    // A head past the buffer limit is answered 431 by hyper.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.request_head_timeout)
        .max_buf_size(limits.max_request_head_bytes);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    let mut full_since: Option<std::time::Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if full_since.is_none() {
                    full_since = Some(std::time::Instant::now());
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection limit reached; new connections wait in the backlog"
                    );
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                    _ = &mut shutdown => break,
                }
            }
        };
        if let Some(since) = full_since.take() {
            tracing::info!(waited = ?since.elapsed(), "accepting connections again");
        }
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
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // The connection moves to a worker's event loop.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(err) => {
                tracing::debug!(client = %client_addr, error = %err, "cannot hand over a connection");
                continue;
            }
        };
        let worker = workers.least_busy();
        let service = ProxyService::new(state.clone(), worker.client.clone(), client_addr, scheme);
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let idle = limits.body_idle_timeout;
        worker.spawn(&mut connections, async move {
            match TcpStream::from_std(stream) {
                Ok(stream) => {
                    let stream = StallGuard::new(stream, idle, service.stalled.clone());
                    serve_connection(stream, tls, builder, watcher, service).await
                }
                Err(err) => {
                    tracing::debug!(client = %client_addr, error = %err, "cannot register a connection");
                }
            }
            drop(slot);
        });
    }
    // Readiness goes false before the listener closes, so health checks see
    // the drain before connections are refused.
    ready.store(false, Ordering::Release);
    drop(listener);
    connections
}

async fn serve_connection(
    stream: StallGuard<TcpStream>,
    tls: Option<TlsAcceptor>,
    builder: http1::Builder,
    watcher: Watcher,
    service: ProxyService,
) {
    let client_addr = service.client_addr;
    let result = match tls {
        None => {
            let conn = builder.serve_connection(TokioIo::new(stream), service);
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
            let conn = builder.serve_connection(TokioIo::new(tls_stream), service);
            watcher.watch(conn).await
        }
    };
    if let Err(err) = result {
        tracing::debug!(client = %client_addr, error = %err, "connection ended with an error");
    }
}
