//! The audit writer: a bounded queue in front of one thread that owns a
//! SQLite connection and commits many records per transaction, each chained
//! to the one before. Submitting a passthrough record never blocks the proxy
//! (a full queue drops the record, counts it and logs it); a guarded record is
//! waited for until it is committed.
//!
//! The writer is a plain thread with its own connection and one cached
//! `INSERT` statement rather than a task on the async pool: at tens of
//! thousands of records a second, a round trip to the pool's worker per
//! statement cost more than the insert itself.

use crate::sync::lock;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::chain;
use super::event::{StoredEvent, COLUMNS};
use super::{format_time, AuditRecord, ErrorKind, OperationKind};
use crate::metrics::Metrics;

/// How long the writer waits for more records before committing a batch
/// that is not full, in steps after which it commits at once if the batch is
/// full or someone waits for it. Under load, longer batches mean fewer
/// commits, WAL frames and wake-ups per record (20 ms costs ~25 % less writer
/// CPU per record than 5 ms; `bench/audit.sh`); a passthrough record becomes
/// visible at most this much later.
const LINGER: Duration = Duration::from_millis(20);
const LINGER_STEPS: u32 = 2;

/// How often a failing writer tries again when no record arrives.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// Whether the trail can be written now, and what was lost while it could
/// not. Shared by the writer, the proxy (queue drops, `audit.on_failure`)
/// and `/readyz`.
#[derive(Debug, Default)]
pub struct AuditHealth {
    /// Why the last write failed; `None` while writing works.
    failing: std::sync::Mutex<Option<String>>,
    /// Records lost and not yet accounted for by a gap record.
    gap: std::sync::Mutex<Option<Gap>>,
}

/// Records lost in a row: how many, when, and why (the last cause).
#[derive(Debug, Clone)]
struct Gap {
    lost: u64,
    first: SystemTime,
    last: SystemTime,
    cause: String,
}

impl AuditHealth {
    /// Why the trail cannot be written, while it cannot.
    pub fn failure(&self) -> Option<String> {
        lock(&self.failing).clone()
    }

    fn set_failure(&self, cause: Option<String>) {
        *lock(&self.failing) = cause;
    }

    /// Counts records that will never be written, for the next gap record.
    fn lost(&self, count: u64, first: SystemTime, last: SystemTime, cause: &str) {
        let mut gap = lock(&self.gap);
        match &mut *gap {
            Some(g) => {
                g.lost += count;
                g.first = g.first.min(first);
                g.last = g.last.max(last);
                g.cause = cause.to_string();
            }
            None => {
                *gap = Some(Gap {
                    lost: count,
                    first,
                    last,
                    cause: cause.to_string(),
                })
            }
        }
    }

    fn take_gap(&self) -> Option<Gap> {
        lock(&self.gap).take()
    }

    /// Puts back a gap whose record could not be written either.
    fn restore_gap(&self, gap: Gap) {
        self.lost(gap.lost, gap.first, gap.last, &gap.cause);
    }
}

impl Gap {
    /// The record that says so in the chain.
    fn record(&self) -> AuditRecord {
        let mut r = AuditRecord::empty(OperationKind::AuditGap);
        r.method = "-".into();
        r.path = "-".into();
        r.error_kind = Some(ErrorKind::AuditLost);
        r.detail = Some(format!(
            "{} audit record{} lost between {} and {}: {}",
            self.lost,
            if self.lost == 1 { "" } else { "s" },
            format_time(self.first),
            format_time(self.last),
            self.cause
        ));
        r
    }
}

/// What travels to the writer thread.
enum Job {
    /// A passthrough record: written when its batch is.
    Record(AuditRecord),
    /// A guarded record: the sender learns its id once it is committed.
    Durable(AuditRecord, oneshot::Sender<Result<i64, String>>),
    /// Write what is queued, then stop.
    Stop,
}

/// Why a guarded record could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open the audit writer's connection: {0}")]
    Open(#[source] rusqlite::Error),
    #[error("cannot start the audit writer thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the audit writer has stopped")]
    Stopped,
    #[error("cannot write the audit record: {0}")]
    Write(String),
}

/// The proxy's side of the queue. Cheap to clone.
#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<Job>,
    metrics: Arc<Metrics>,
    health: Arc<AuditHealth>,
    last_drop_log: Arc<AtomicU64>,
}

impl AuditSink {
    /// Queues a record without waiting. If the queue is full or closed the
    /// record is dropped, counted in `safedelete_audit_dropped_total` and logged
    /// (at most once a second).
    pub fn submit(&self, record: AuditRecord) {
        let time = record.time;
        if let Err(err) = self.tx.try_send(Job::Record(record)) {
            self.metrics.audit_dropped.fetch_add(1, Ordering::Relaxed);
            let cause = match &err {
                mpsc::error::TrySendError::Full(_) => "the audit queue was full",
                mpsc::error::TrySendError::Closed(_) => "the audit writer had stopped",
            };
            self.health.lost(1, time, time, cause);
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

    /// Writes a record and waits until it is committed (guarded requests).
    /// Waits for room in the queue rather than dropping. Returns its id.
    pub async fn write_durable(&self, record: AuditRecord) -> Result<i64, AuditError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Job::Durable(record, tx))
            .await
            .map_err(|_| AuditError::Stopped)?;
        match rx.await {
            Ok(Ok(id)) => Ok(id),
            Ok(Err(err)) => Err(AuditError::Write(err)),
            Err(_) => Err(AuditError::Stopped),
        }
    }

    /// Why the trail cannot be written, while it cannot (`/readyz`,
    /// `audit.on_failure`).
    pub fn failure(&self) -> Option<String> {
        self.health.failure()
    }

    /// Records waiting to be written.
    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// The writer thread's handle, used to flush and stop it at shutdown.
pub struct AuditWriter {
    tx: mpsc::Sender<Job>,
    thread: std::thread::JoinHandle<u64>,
}

impl AuditWriter {
    /// Opens the writer's connection to `database` (already migrated) and
    /// starts the thread; returns both ends.
    pub fn spawn(
        database: &Path,
        capacity: usize,
        batch_max: usize,
        metrics: Arc<Metrics>,
    ) -> Result<(AuditSink, AuditWriter), AuditError> {
        let conn = open(database).map_err(AuditError::Open)?;
        let (tx, rx) = mpsc::channel(capacity);
        let health = Arc::new(AuditHealth::default());
        let thread = {
            let metrics = metrics.clone();
            let health = health.clone();
            std::thread::Builder::new()
                .name("safedelete-audit".into())
                .spawn(move || run(conn, rx, batch_max, &metrics, &health))
                .map_err(AuditError::Thread)?
        };
        let sink = AuditSink {
            tx: tx.clone(),
            metrics,
            health,
            last_drop_log: Arc::new(AtomicU64::new(0)),
        };
        Ok((sink, AuditWriter { tx, thread }))
    }

    /// Stops accepting records, writes everything still queued, and returns
    /// how many records the writer committed in its life.
    pub async fn close(self) -> u64 {
        let _ = self.tx.send(Job::Stop).await;
        drop(self.tx);
        let thread = self.thread;
        match tokio::task::spawn_blocking(move || thread.join()).await {
            Ok(Ok(n)) => n,
            _ => {
                tracing::error!("audit writer thread failed");
                0
            }
        }
    }
}

/// The writer's own connection: same file and pragmas as the pool
/// (`db::open` has already created and migrated it).
fn open(database: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(database)?;
    conn.busy_timeout(crate::db::BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

fn run(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    batch_max: usize,
    metrics: &Metrics,
    health: &AuditHealth,
) -> u64 {
    let mut batch: Vec<Job> = Vec::with_capacity(batch_max);
    let mut written = 0u64;
    // `open` starts every connection at `synchronous = FULL`.
    let mut full = true;
    loop {
        let first = if health.failure().is_some() {
            // Failing: try again now and then even when nothing arrives, so
            // readiness and the gap record do not wait for the next request.
            match rx.try_recv() {
                Ok(job) => job,
                Err(mpsc::error::TryRecvError::Empty) => {
                    std::thread::sleep(PROBE_EVERY);
                    written += write_batch(&mut conn, &mut full, &mut batch, metrics, health, 1);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
        } else {
            match rx.blocking_recv() {
                Some(job) => job,
                None => break,
            }
        };
        batch.push(first);
        drain(&mut rx, &mut batch, batch_max);
        // Under load, wait a moment for more records: one commit (and one
        // fsync) for many records is most of the writer's throughput. A
        // guarded record or shutdown is written at once, or after the step
        // during which it arrived.
        for _ in 0..LINGER_STEPS {
            if batch.len() >= batch_max || batch.iter().any(Job::is_urgent) {
                break;
            }
            std::thread::sleep(LINGER / LINGER_STEPS);
            drain(&mut rx, &mut batch, batch_max);
        }
        let stopping = batch.iter().any(|j| matches!(j, Job::Stop));
        if stopping {
            // Refuse new records; what is already queued is still written.
            rx.close();
        }
        // Shutting down while the trail cannot be written: one try per
        // batch, so a stop is not held up for minutes (the rest is lost,
        // and counted).
        let attempts = if stopping && health.failure().is_some() {
            1
        } else {
            5
        };
        written += write_batch(&mut conn, &mut full, &mut batch, metrics, health, attempts);
        batch.clear();
        if stopping && rx.is_empty() {
            break;
        }
    }
    written
}

fn drain(rx: &mut mpsc::Receiver<Job>, batch: &mut Vec<Job>, batch_max: usize) {
    while batch.len() < batch_max {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

impl Job {
    /// Someone is waiting for this batch to be committed.
    fn is_urgent(&self) -> bool {
        matches!(self, Job::Durable(..) | Job::Stop)
    }
}

/// Writes a batch (after the gap record, if records were lost before it),
/// trying up to `attempts` times (the database may be busy or the disk
/// briefly full). A batch that still fails is counted as lost for the next
/// gap record, and the callers waiting on its guarded records learn why.
fn write_batch(
    conn: &mut Connection,
    full: &mut bool,
    batch: &mut [Job],
    metrics: &Metrics,
    health: &AuditHealth,
    attempts: u32,
) -> u64 {
    let records = batch.iter().filter(|j| !matches!(j, Job::Stop)).count();
    let gap = health.take_gap();
    if records == 0 && gap.is_none() {
        return 0;
    }
    let gap_record = gap.as_ref().map(Gap::record);
    let want_full = needs_disk(batch) || gap_record.is_some();
    // The rows to insert, converted once for every attempt: the gap record
    // first, then the batch's records (their strings moved, not copied).
    let mut times = Vec::with_capacity(records);
    let mut rows: Vec<StoredEvent> = Vec::with_capacity(records + 1);
    if let Some(mut r) = gap_record.clone() {
        rows.push(StoredEvent::from_record(&mut r));
    }
    for job in batch.iter_mut() {
        if let Job::Record(r) | Job::Durable(r, _) = job {
            times.push(r.time);
            rows.push(StoredEvent::from_record(r));
        }
    }
    let started = Instant::now();
    let mut delay = Duration::from_millis(50);
    let mut attempt = 1;
    let outcome = loop {
        match synchronous(conn, full, want_full).and_then(|()| insert_chained(conn, &mut rows)) {
            Ok(first_id) => break Ok(first_id),
            Err(err) if attempt < attempts => {
                tracing::warn!(error = %err, attempt, rows = records, "audit batch failed, retrying");
                std::thread::sleep(delay);
                delay *= 2;
                attempt += 1;
            }
            Err(err) => break Err(err),
        }
    };
    match outcome {
        Ok(first_id) => {
            if health.failure().is_some() {
                tracing::info!("the audit trail can be written again");
            }
            health.set_failure(None);
            if let (Some(gap), Some(r)) = (&gap, &gap_record) {
                tracing::warn!(
                    lost = gap.lost,
                    detail = r.detail.as_deref().unwrap_or(""),
                    "audit gap recorded in the trail"
                );
            }
            metrics
                .audit_written
                .fetch_add(records as u64, Ordering::Relaxed);
            tracing::trace!(rows = records, elapsed = ?started.elapsed(), "audit batch committed");
            // The batch's own records follow the gap record.
            let mut id = first_id + i64::from(gap_record.is_some());
            for job in batch.iter_mut() {
                match std::mem::replace(job, Job::Stop) {
                    Job::Durable(_, reply) => {
                        let _ = reply.send(Ok(id));
                        id += 1;
                    }
                    Job::Record(_) => id += 1,
                    Job::Stop => {}
                }
            }
            records as u64
        }
        Err(err) => {
            let cause = err.to_string();
            if health.failure().is_none() {
                tracing::error!(error = %err, "the audit trail cannot be written");
            }
            health.set_failure(Some(cause.clone()));
            if let Some(gap) = gap {
                health.restore_gap(gap);
            }
            metrics
                .audit_dropped
                .fetch_add(records as u64, Ordering::Relaxed);
            if records > 0 {
                tracing::error!(error = %err, rows = records, "audit batch lost after retries");
            }
            let mut times = times.into_iter();
            if let Some(t0) = times.next() {
                let (first, last) = times.fold((t0, t0), |(a, b), t| (a.min(t), b.max(t)));
                health.lost(records as u64, first, last, &cause);
            }
            for job in batch.iter_mut() {
                if let Job::Durable(_, reply) = std::mem::replace(job, Job::Stop) {
                    let _ = reply.send(Err(cause.clone()));
                }
            }
            0
        }
    }
}

/// Whether a batch's commit must reach the disk before it returns: any
/// record but a passthrough one (a guarded operation, a gap, a key action)
/// does. A batch of passthrough records only is already up to 20 ms from
/// disk by design; committed with `synchronous = NORMAL`, it is in the WAL
/// (which stays consistent) and reaches the disk with the next checkpoint or
/// `FULL` commit, so a power cut, not a crash of the gateway, can lose it.
fn needs_disk(batch: &[Job]) -> bool {
    batch.iter().any(|job| match job {
        Job::Record(r) => r.operation != OperationKind::Passthrough,
        Job::Durable(..) => true,
        Job::Stop => false,
    })
}

/// Sets `synchronous` for the next commit when it changes. A batch that
/// needs the disk is not written unless `FULL` is set; one that does not is
/// written `FULL` when it cannot be lowered.
fn synchronous(conn: &Connection, full: &mut bool, want_full: bool) -> rusqlite::Result<()> {
    if *full == want_full {
        return Ok(());
    }
    let value = if want_full { "FULL" } else { "NORMAL" };
    match conn.pragma_update(None, "synchronous", value) {
        Ok(()) => {
            *full = want_full;
            Ok(())
        }
        Err(err) if !want_full => {
            tracing::warn!(error = %err, "cannot lower synchronous for a passthrough batch");
            Ok(())
        }
        Err(err) => Err(err),
    }
}

/// Appends one record to the trail of `database` from outside a gateway
/// (`safedelete keys ...`), chained like the writer's own: the write lock
/// taken by [`insert_chained`] makes it safe while gateways write too.
/// Blocks; returns the record's id.
pub fn append(database: &Path, mut record: AuditRecord) -> rusqlite::Result<i64> {
    let mut conn = open(database)?;
    insert_chained(&mut conn, &mut [StoredEvent::from_record(&mut record)])
}

/// Inserts the rows with explicit ids, each chained to the one before
/// (`prev_hash`, `hash`), in one `BEGIN IMMEDIATE` transaction: the write
/// lock is held from the first read, so every writer on the file (this one,
/// another gateway's) extends one chain. Returns the first row's id.
fn insert_chained(conn: &mut Connection, rows: &mut [StoredEvent]) -> rusqlite::Result<i64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (last_id, last_hash): (i64, Option<String>) = tx
        .prepare_cached("SELECT id, hash FROM audit_events ORDER BY id DESC LIMIT 1")?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok((0, None)),
            e => Err(e),
        })?;
    let seq: i64 = tx
        .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'audit_events'")?
        .query_row([], |row| row.get(0))
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(0),
            e => Err(e),
        })?;
    let first_id = seq.max(last_id) + 1;
    let mut prev_hash = last_hash.unwrap_or_else(|| chain::GENESIS.to_string());
    for (row, id) in rows.iter_mut().zip(first_id..) {
        row.id = id;
        let hash = chain::hash(&prev_hash, &row.hashed_values());
        row.prev_hash = Some(std::mem::replace(&mut prev_hash, hash.clone()));
        row.hash = Some(hash);
    }
    // Full chunks go in one statement of `ROWS_PER_INSERT` rows, prepared
    // once; the rest row by row.
    let mut chunks = rows.chunks_exact(ROWS_PER_INSERT);
    for chunk in chunks.by_ref() {
        tx.prepare_cached(insert_sql(true))?
            .execute(rusqlite::params_from_iter(
                chunk.iter().flat_map(StoredEvent::values),
            ))?;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut insert = tx.prepare_cached(insert_sql(false))?;
        for row in rest {
            insert.execute(rusqlite::params_from_iter(row.values()))?;
        }
    }
    tx.commit()?;
    Ok(first_id)
}

/// Rows a full chunk inserts in one statement.
const ROWS_PER_INSERT: usize = 32;

/// `INSERT INTO audit_events (every column) VALUES (?, ...), ...` for one
/// row, or `many` ([`ROWS_PER_INSERT`]), from the one column list.
fn insert_sql(many: bool) -> &'static str {
    static ONE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static MANY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let rows = if many { ROWS_PER_INSERT } else { 1 };
    let build = || {
        let row = format!("({})", vec!["?"; COLUMNS.len()].join(", "));
        format!(
            "INSERT INTO audit_events ({}) VALUES {}",
            COLUMNS.join(", "),
            vec![row; rows].join(", ")
        )
    };
    if many {
        MANY.get_or_init(build)
    } else {
        ONE.get_or_init(build)
    }
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synchronous_now(conn: &Connection) -> i64 {
        conn.pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap()
    }

    /// Passthrough batches are committed `NORMAL`; a batch with anything else
    /// goes back to `FULL` before it is written, and every record is kept.
    #[tokio::test]
    async fn only_batches_of_passthrough_records_skip_the_disk_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        crate::db::open(&path).await.unwrap().close().await;
        let mut conn = open(&path).unwrap();
        let (metrics, health) = (Metrics::default(), AuditHealth::default());
        let mut full = true;
        let record = |op| Job::Record(AuditRecord::empty(op));

        let mut batch = vec![
            record(OperationKind::Passthrough),
            record(OperationKind::Passthrough),
        ];
        assert_eq!(
            write_batch(&mut conn, &mut full, &mut batch, &metrics, &health, 1),
            2
        );
        assert_eq!(synchronous_now(&conn), 1, "NORMAL");

        let mut batch = vec![
            record(OperationKind::Passthrough),
            record(OperationKind::Guarded("campaign.delete")),
        ];
        assert_eq!(
            write_batch(&mut conn, &mut full, &mut batch, &metrics, &health, 1),
            2
        );
        assert_eq!(synchronous_now(&conn), 2, "FULL");

        let mut batch = vec![record(OperationKind::Passthrough)];
        write_batch(&mut conn, &mut full, &mut batch, &metrics, &health, 1);
        assert_eq!(synchronous_now(&conn), 1);
        let (tx, _rx) = oneshot::channel();
        let mut batch = vec![Job::Durable(
            AuditRecord::empty(OperationKind::Passthrough),
            tx,
        )];
        write_batch(&mut conn, &mut full, &mut batch, &metrics, &health, 1);
        assert_eq!(synchronous_now(&conn), 2, "a caller waits for it: FULL");

        let rows: i64 = conn
            .query_row("SELECT count(*) FROM audit_events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 6);
    }

    /// Batches of whole chunks and a remainder are stored in order, each
    /// record chained to the one before, as the verifier reads them.
    #[tokio::test]
    async fn chunked_inserts_keep_every_record_in_order_and_chained() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let pool = crate::db::open(&path).await.unwrap();
        let mut conn = open(&path).unwrap();
        let (metrics, health) = (Metrics::default(), AuditHealth::default());
        let mut full = true;
        let mut written = 0;
        for size in [ROWS_PER_INSERT * 2 + 5, 1, ROWS_PER_INSERT] {
            let mut batch: Vec<Job> = (0..size)
                .map(|i| {
                    let mut r = AuditRecord::empty(OperationKind::Passthrough);
                    r.path = format!("/api/v1/campaigns/{}", written + i);
                    Job::Record(r)
                })
                .collect();
            written += write_batch(&mut conn, &mut full, &mut batch, &metrics, &health, 1) as usize;
        }
        assert_eq!(written, ROWS_PER_INSERT * 3 + 6);
        let paths: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, path FROM audit_events ORDER BY id")
                .fetch_all(&pool)
                .await
                .unwrap();
        for (i, (id, path)) in paths.iter().enumerate() {
            assert_eq!(*id, i as i64 + 1);
            assert_eq!(path, &format!("/api/v1/campaigns/{i}"));
        }
        let report = chain::verify(&pool, None).await.unwrap();
        assert!(report.problem.is_none(), "{:?}", report.problem);
        assert_eq!(report.records, written as u64);
    }
}
