//! The accept loops of both listeners and graceful shutdown: stop accepting,
//! let in-flight requests finish within the grace period, flush the audit
//! writer, close the database.

mod accept;
mod admin_listener;
mod forward_proxy;
mod listen;
mod loops;
mod stall;
mod workers;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper::server::conn::http1;
use hyper_util::rt::TokioTimer;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::admin::{self, AdminState};
use crate::audit::{AuditError, AuditWriter};
use crate::config::{Config, RELOADED};
use crate::db::{self, DbError};
use crate::guard::context::GuardContext;
use crate::identity::Identities;
use crate::metrics::Metrics;
use crate::proxy::ProxyState;
use crate::tls::{self, TlsError};
use crate::upstream::{client, Upstream};
use listen::{ListenError, ListenLock};
use tokio::sync::Semaphore;
use workers::Workers;
pub use workers::WorkersError;

/// A problem starting or running the gateway.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Listen(#[from] ListenError),
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
    #[error(transparent)]
    UpstreamLoop(#[from] loops::UpstreamLoop),
}

/// Both listeners, bound before anything else starts (so tests can bind
/// `127.0.0.1:0` and read the port): the proxy's, one socket per worker, and
/// the admin listener.
pub struct Listeners {
    proxy: Vec<std::net::TcpListener>,
    proxy_addr: SocketAddr,
    /// Keeps the proxy's address this gateway's alone while it runs.
    lock: ListenLock,
    pub admin: TcpListener,
    /// The forward-proxy listener (`[forward_proxy]`).
    forward_proxy: Option<std::net::TcpListener>,
}

impl Listeners {
    pub async fn bind(config: &Config) -> Result<Listeners, ServeError> {
        let (proxy, lock) = listen::bind_proxy(config.listen, workers::count(config.workers))?;
        let proxy_addr = proxy[0]
            .local_addr()
            .expect("a bound listener has an address");
        let admin = listen::bind("admin listener", config.admin.listen, false)?;
        let admin = TcpListener::from_std(admin).map_err(|source| ListenError::Bind {
            what: "admin listener",
            addr: config.admin.listen,
            source,
        })?;
        let forward_proxy = config
            .forward_proxy
            .map(|f| listen::bind("forward-proxy listener", f.listen, false))
            .transpose()?;
        Ok(Listeners {
            proxy,
            proxy_addr,
            lock,
            admin,
            forward_proxy,
        })
    }

    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy_addr
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
    let forward_addr = listeners
        .forward_proxy
        .as_ref()
        .and_then(|l| l.local_addr().ok());
    let _lock = listeners.lock;
    match loops::upstream_targets(&config.upstream).await {
        Some(targets) => loops::check(
            &config.upstream,
            &targets,
            &[("proxy", proxy_addr), ("admin", admin_addr)],
        )?,
        None => tracing::warn!(
            upstream = %config.upstream.url(),
            "cannot resolve the upstream's name to check that it does not lead back to this gateway; a request that comes back is refused (508) all the same"
        ),
    }
    let pool = db::open_with(&config.database.store, &config.database.pool).await?;
    let metrics = Arc::new(Metrics::default());
    let (audit, writer) = AuditWriter::spawn(
        &config.database.store,
        config.audit.queue_capacity,
        config.audit.batch_max,
        metrics.clone(),
    )?;
    // The guard pipeline's client; passthrough traffic uses the workers' own.
    let client = client::build(&config.upstream, metrics.clone())?;
    let workers = Workers::start(listeners.proxy.len(), &config.upstream, &metrics)?;
    let tls = config
        .listen_tls
        .as_ref()
        .map(tls::server_config)
        .transpose()?
        .map(TlsAcceptor::from);
    let forward_client = client.clone();
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
    let sweep_task = tokio::spawn(sweep_unfinished(pool.clone(), audit.clone()));
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

    // Said before the listening line, which tells scripts start-up is over.
    if let Some(tls) = &config.listen_tls {
        certificate_expiry(tls, &metrics, SystemTime::now());
    }
    tracing::info!(
        proxy = %proxy_addr,
        admin = %admin_addr,
        upstream = %state.upstream.url,
        database = %config.database.store,
        tls = tls.is_some(),
        // Only when it is on.
        forward_proxy = forward_addr.map(tracing::field::display),
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

    // HTTP/1.1 only: it is what SmartLead clients speak, and hyper's header
    // read timeout then bounds idle and slow connections from the first byte.
    // A head past the buffer limit is answered 431 by hyper.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.request_head_timeout)
        .max_buf_size(config.max_request_head_bytes);
    let shared = Arc::new(accept::Shared {
        state: state.clone(),
        tls,
        builder,
        slots: Arc::new(Semaphore::new(config.max_connections)),
        max_connections: config.max_connections,
        body_idle_timeout: config.body_idle_timeout,
    });
    let graceful = Arc::new(GracefulShutdown::new());
    let (stop_accepting, stopped) = tokio::sync::watch::channel(false);
    let loops: Vec<_> = listeners
        .proxy
        .into_iter()
        .zip(workers.iter())
        .map(|(listener, worker)| {
            worker.run(accept::accept_loop(
                listener,
                shared.clone(),
                graceful.clone(),
                worker.client.clone(),
                stopped.clone(),
            ))
        })
        .collect();
    let forward = listeners.forward_proxy.map(|listener| {
        let proxy = forward_proxy::ForwardProxy {
            names: config
                .listen_tls
                .as_ref()
                .map(tls::served_names)
                .unwrap_or_default(),
            allow_other_hosts: config.forward_proxy.is_some_and(|f| f.allow_other_hosts),
        };
        tokio::spawn(forward_proxy::accept_loop(
            listener,
            shared.clone(),
            Arc::new(proxy),
            graceful.clone(),
            forward_client,
            stopped.clone(),
        ))
    });
    drop(shared);
    shutdown.await;
    // Readiness goes false before the listeners close, so health checks see
    // the drain before connections are refused.
    ready.store(false, Ordering::Release);
    let _ = stop_accepting.send(true);
    let mut sets = Vec::with_capacity(loops.len());
    for accepting in loops {
        match accepting.await {
            Ok(set) => sets.push(set),
            Err(err) => tracing::error!(error = %err, "an accept loop ended abnormally"),
        }
    }
    if let Some(forward) = forward {
        match forward.await {
            Ok(set) => sets.push(set),
            Err(err) => {
                tracing::error!(error = %err, "the forward-proxy accept loop ended abnormally")
            }
        }
    }
    let mut connections = accept::Connections(sets);

    // The listeners are closed: let in-flight requests finish within the
    // grace period, then cut what is left (its requests are recorded as cut).
    // The accept loops have ended, so theirs were the last other handles.
    tracing::info!(open_connections = connections.open(), grace = ?config.shutdown_grace, "shutting down");
    let drained = async {
        if let Some(graceful) = Arc::into_inner(graceful) {
            graceful.shutdown().await;
        }
    };
    let connections_cut = match tokio::time::timeout(config.shutdown_grace, drained).await {
        Ok(()) => 0,
        Err(_) => {
            let open = connections.open();
            tracing::warn!(
                open_connections = open,
                "grace period over; cutting the remaining connections"
            );
            state.cutting.store(true, Ordering::Relaxed);
            open
        }
    };
    connections.cut().await;
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
    sweep_task.abort();
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
async fn recover_unfinished(pool: &crate::db::Pool) {
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

/// While running, looks again every [`ledger::HEARTBEAT_EVERY`] for the
/// operations of a gateway that died (another gateway on the same store:
/// gone from this host, or silent past [`ledger::STALE_AFTER`]), marks them
/// interrupted and records them, so nobody waits for a restart of the dead
/// one to learn their end.
///
/// [`ledger::HEARTBEAT_EVERY`]: crate::guard::ledger::HEARTBEAT_EVERY
/// [`ledger::STALE_AFTER`]: crate::guard::ledger::STALE_AFTER
async fn sweep_unfinished(pool: crate::db::Pool, audit: crate::audit::AuditSink) {
    let mut every = tokio::time::interval(crate::guard::ledger::HEARTBEAT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        recover_unfinished(&pool).await;
        record_interrupted(&pool, &audit).await;
    }
}

/// Operations a stopped gateway left interrupted get the audit record their
/// request never wrote, so the trail shows how each ended. Each is claimed
/// first, so two gateways sweeping at once record it once.
async fn record_interrupted(pool: &crate::db::Pool, audit: &crate::audit::AuditSink) {
    use crate::guard::ledger;
    let ops = match ledger::unrecorded_interrupted(pool).await {
        Ok(ops) => ops,
        Err(err) => {
            tracing::error!(error = %err, "cannot list interrupted operations");
            return;
        }
    };
    for op in ops {
        match ledger::claim_unrecorded(pool, op.id).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(err) => {
                tracing::error!(error = %err, operation_id = op.id, "cannot claim the interrupted operation");
                continue;
            }
        }
        let record = interrupted_record(&op);
        match audit.write_durable(record).await {
            Ok(audit_id) => {
                if let Err(err) = ledger::set_audit_id(pool, op.id, audit_id).await {
                    tracing::error!(error = %err, operation_id = op.id, "cannot link the interrupted operation to its audit record");
                }
            }
            Err(err) => {
                tracing::error!(error = %err, operation_id = op.id, "cannot record the interrupted operation");
                // Unclaimed, so the next sweep tries again.
                let _ = ledger::unclaim_unrecorded(pool, op.id).await;
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

/// How long before its end a certificate is warned about at start.
const CERT_WARN_WITHIN: Duration = Duration::from_secs(14 * 86_400);

/// Exports when the listener's first certificate to expire does, and warns
/// at start about each one with fewer than 14 days left (or none).
fn certificate_expiry(tls: &crate::config::ListenTls, metrics: &Metrics, now: SystemTime) {
    let mut earliest: Option<SystemTime> = None;
    for identity in &tls.identities {
        let Some(not_after) = identity.certs.first().and_then(tls::pki::not_after) else {
            continue;
        };
        earliest = Some(earliest.map_or(not_after, |e| e.min(not_after)));
        let expires = humantime::format_rfc3339_seconds(not_after).to_string();
        match not_after.duration_since(now) {
            Ok(left) if left >= CERT_WARN_WITHIN => {}
            Ok(left) => tracing::warn!(
                cert_file = %identity.cert_file.display(),
                expires = %expires,
                days_left = left.as_secs() / 86_400,
                "the listener's certificate expires soon: re-issue it (`safedelete tls renew`, for a certificate made by `tls init`) and restart"
            ),
            Err(_) => tracing::warn!(
                cert_file = %identity.cert_file.display(),
                expired = %expires,
                "the listener's certificate has expired: clients will refuse it; re-issue it (`safedelete tls renew`, for a certificate made by `tls init`) and restart"
            ),
        }
    }
    if let Some(earliest) = earliest {
        let unix = earliest
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        metrics.tls_cert_not_after.store(unix, Ordering::Relaxed);
    }
}
