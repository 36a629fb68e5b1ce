//! The batch writer: a bounded queue in front of one task that commits many
//! records per transaction. Submitting never blocks the proxy; a full queue
//! drops the record, counts it and logs it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{QueryBuilder, Sqlite, SqlitePool};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{format_time, AuditRecord};
use crate::metrics::Metrics;

/// Rows per INSERT statement; SQLite allows 32,766 bound variables and a row has 25.
const ROWS_PER_STATEMENT: usize = 200;

/// The proxy's side of the queue. Cheap to clone.
#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<AuditRecord>,
    metrics: Arc<Metrics>,
    last_drop_log: Arc<AtomicU64>,
}

impl AuditSink {
    /// Queues a record without waiting. If the queue is full or closed the
    /// record is dropped, counted in `safedelete_audit_dropped_total` and logged
    /// (at most once a second).
    pub fn submit(&self, record: AuditRecord) {
        if let Err(err) = self.tx.try_send(record) {
            self.metrics.audit_dropped.fetch_add(1, Ordering::Relaxed);
            let now = unix_secs();
            let last = self.last_drop_log.load(Ordering::Relaxed);
            if now != last
                && self
                    .last_drop_log
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                let reason = match err {
                    mpsc::error::TrySendError::Full(_) => "queue full",
                    mpsc::error::TrySendError::Closed(_) => "writer stopped",
                };
                tracing::error!(
                    reason,
                    dropped_total = self.metrics.audit_dropped.load(Ordering::Relaxed),
                    "audit record dropped"
                );
            }
        }
    }

    /// Records waiting to be written.
    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// The writer task's handle, used to flush and stop it at shutdown.
pub struct AuditWriter {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<u64>,
}

impl AuditWriter {
    /// Starts the writer task and returns both ends.
    pub fn spawn(
        pool: SqlitePool,
        capacity: usize,
        batch_max: usize,
        metrics: Arc<Metrics>,
    ) -> (AuditSink, AuditWriter) {
        let (tx, rx) = mpsc::channel(capacity);
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(run(pool, rx, stop_rx, batch_max, metrics.clone()));
        let sink = AuditSink {
            tx,
            metrics,
            last_drop_log: Arc::new(AtomicU64::new(0)),
        };
        (
            sink,
            AuditWriter {
                stop: Some(stop_tx),
                task,
            },
        )
    }

    /// Stops accepting records, writes everything still queued, and returns
    /// how many records the writer committed in its life.
    pub async fn close(mut self) -> u64 {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(n) => n,
            Err(err) => {
                tracing::error!(error = %err, "audit writer task failed");
                0
            }
        }
    }
}

async fn run(
    pool: SqlitePool,
    mut rx: mpsc::Receiver<AuditRecord>,
    mut stop: oneshot::Receiver<()>,
    batch_max: usize,
    metrics: Arc<Metrics>,
) -> u64 {
    let mut batch = Vec::with_capacity(batch_max);
    let mut written = 0u64;
    let mut stopping = false;
    loop {
        let n = if stopping {
            rx.recv_many(&mut batch, batch_max).await
        } else {
            tokio::select! {
                n = rx.recv_many(&mut batch, batch_max) => n,
                _ = &mut stop => {
                    // Refuse new records, then drain what is queued.
                    rx.close();
                    stopping = true;
                    continue;
                }
            }
        };
        if n == 0 {
            break;
        }
        written += write_with_retry(&pool, &batch, &metrics).await;
        batch.clear();
    }
    written
}

/// Writes a batch, retrying a few times (the database may be busy or the disk
/// briefly full); a batch that still fails is counted as dropped and logged.
async fn write_with_retry(pool: &SqlitePool, batch: &[AuditRecord], metrics: &Metrics) -> u64 {
    let started = Instant::now();
    let mut delay = Duration::from_millis(50);
    for attempt in 1..=5 {
        match write_batch(pool, batch).await {
            Ok(()) => {
                metrics
                    .audit_written
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                tracing::trace!(rows = batch.len(), elapsed = ?started.elapsed(), "audit batch committed");
                return batch.len() as u64;
            }
            Err(err) if attempt < 5 => {
                tracing::warn!(error = %err, attempt, rows = batch.len(), "audit batch failed, retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(err) => {
                metrics
                    .audit_dropped
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                tracing::error!(error = %err, rows = batch.len(), "audit batch lost after retries");
            }
        }
    }
    0
}

/// Inserts one record now (guarded requests) and returns its id.
pub async fn write_one(pool: &SqlitePool, record: &AuditRecord) -> Result<i64, sqlx::Error> {
    insert_chained(pool, std::slice::from_ref(record)).await
}

/// Inserts records in one transaction.
pub async fn write_batch(pool: &SqlitePool, batch: &[AuditRecord]) -> Result<(), sqlx::Error> {
    insert_chained(pool, batch).await.map(|_| ())
}

/// Inserts records with explicit ids, each chained to the one before
/// (`prev_hash`, `hash`), in one `BEGIN IMMEDIATE` transaction: the write
/// lock is held from the first read, so concurrent writers (the batch writer,
/// guard pipelines, other gateways on the same file) extend one chain.
/// Returns the last id.
async fn insert_chained(pool: &SqlitePool, batch: &[AuditRecord]) -> Result<i64, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
    let last: Option<(i64, Option<String>)> =
        sqlx::query_as("SELECT id, hash FROM audit_events ORDER BY id DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
    let seq: Option<i64> =
        sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'audit_events'")
            .fetch_optional(&mut *tx)
            .await?;
    let mut next_id = seq
        .unwrap_or(0)
        .max(last.as_ref().map(|l| l.0).unwrap_or(0))
        + 1;
    let mut prev_hash = last
        .and_then(|(_, h)| h)
        .unwrap_or_else(|| super::chain::GENESIS.to_string());
    let mut last_id = 0;
    for rows in batch.chunks(ROWS_PER_STATEMENT) {
        let mut chained = Vec::with_capacity(rows.len());
        for r in rows {
            let time = format_time(r.time);
            let duration_ms = r.duration.as_micros() as f64 / 1000.0;
            let hash = super::chain::hash(
                &prev_hash,
                &super::chain::Hashed {
                    id: next_id,
                    time: &time,
                    request_id: &r.request_id,
                    method: &r.method,
                    path: &r.path,
                    query: r.query.as_deref(),
                    actor_fingerprint: r.actor_fingerprint.as_deref(),
                    actor_label: r.actor_label.as_deref(),
                    client_addr: r.client_addr.as_deref(),
                    user_agent: r.user_agent.as_deref(),
                    operation: r.operation.as_str(),
                    campaign_id: r.campaign_id,
                    action: r.action,
                    would_action: r.would_action.as_deref(),
                    rule: r.rule.as_deref(),
                    policy_revision: r.policy_revision.as_deref(),
                    snapshot_id: r.snapshot_id,
                    upstream_status: r.upstream_status.map(i64::from),
                    status: i64::from(r.status),
                    bytes_in: r.bytes_in as i64,
                    bytes_out: r.bytes_out as i64,
                    duration_ms,
                    error_kind: r.error_kind.map(|e| e.as_str()),
                },
            );
            chained.push((
                next_id,
                time,
                duration_ms,
                prev_hash.clone(),
                hash.clone(),
                r,
            ));
            last_id = next_id;
            next_id += 1;
            prev_hash = hash;
        }
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO audit_events (id, time, request_id, method, path, query, actor_fingerprint, \
             actor_label, client_addr, user_agent, operation, campaign_id, action, would_action, \
             rule, policy_revision, snapshot_id, upstream_status, status, bytes_in, bytes_out, \
             duration_ms, error_kind, prev_hash, hash) ",
        );
        q.push_values(chained, |mut b, (id, time, duration_ms, prev, hash, r)| {
            b.push_bind(id)
                .push_bind(time)
                .push_bind(&r.request_id)
                .push_bind(&r.method)
                .push_bind(&r.path)
                .push_bind(&r.query)
                .push_bind(&r.actor_fingerprint)
                .push_bind(&r.actor_label)
                .push_bind(&r.client_addr)
                .push_bind(&r.user_agent)
                .push_bind(r.operation.as_str())
                .push_bind(r.campaign_id)
                .push_bind(r.action)
                .push_bind(&r.would_action)
                .push_bind(&r.rule)
                .push_bind(&r.policy_revision)
                .push_bind(r.snapshot_id)
                .push_bind(r.upstream_status.map(i64::from))
                .push_bind(i64::from(r.status))
                .push_bind(r.bytes_in as i64)
                .push_bind(r.bytes_out as i64)
                .push_bind(duration_ms)
                .push_bind(r.error_kind.map(|e| e.as_str()))
                .push_bind(prev)
                .push_bind(hash);
        });
        q.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(last_id)
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
