//! The audit writer: a bounded queue in front of one thread that owns a
//! SQLite connection and commits many records per transaction, each chained
//! to the one before. Submitting a passthrough record never blocks the proxy
//! (a full queue drops the record, counts it and logs it); a guarded record is
//! waited for until it is committed.
//!
//! The writer is a plain thread with its own connection rather than a task
//! on the async pool: at tens of thousands of records a second, a round trip
//! to the pool's worker per statement cost more than the insert itself.
//! `sqlite` and `postgres` hold the connection of each kind of store; both
//! chain a batch to the newest record under the store's write lock, so the
//! gateways and commands sharing a store extend one chain.

mod postgres;
mod sqlite;

use crate::sync::lock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};

use super::chain;
use super::event::StoredEvent;
use super::{format_time, AuditRecord, ErrorKind, OperationKind};
use crate::db::Location;
use crate::metrics::Metrics;

pub use postgres::CHAIN_LOCK;

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
    Open(#[source] WriteError),
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
        store: &Location,
        capacity: usize,
        batch_max: usize,
        metrics: Arc<Metrics>,
    ) -> Result<(AuditSink, AuditWriter), AuditError> {
        let conn = Connection::open(store).map_err(AuditError::Open)?;
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

/// Why a batch could not be written, from either kind of store.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Postgres(#[from] sqlx::Error),
    #[error("cannot wait for the write: {0}")]
    Join(String),
}

/// The writer's connection to the store.
enum Connection {
    Sqlite(sqlite::Writer),
    Postgres(Box<postgres::Writer>),
}

impl Connection {
    fn open(store: &Location) -> Result<Connection, WriteError> {
        Ok(match store {
            Location::Sqlite(path) => Connection::Sqlite(sqlite::Writer::open(path)?),
            Location::Postgres(url) => Connection::Postgres(Box::new(postgres::Writer::open(url)?)),
        })
    }

    /// Inserts the rows chained after the newest record; `durable`: the
    /// commit must reach the disk before it returns. Returns the first id.
    fn insert(&mut self, rows: &mut [StoredEvent], durable: bool) -> Result<i64, WriteError> {
        match self {
            Connection::Sqlite(w) => Ok(w.insert(rows, durable)?),
            Connection::Postgres(w) => Ok(w.insert(rows, durable)?),
        }
    }
}

/// Gives the rows their ids from `first_id` on and links each to the one
/// before, the first to `prev_hash` (the newest stored record's hash).
fn chain_rows(rows: &mut [StoredEvent], first_id: i64, mut prev_hash: String) {
    for (row, id) in rows.iter_mut().zip(first_id..) {
        row.id = id;
        let hash = chain::hash(&prev_hash, &row.hashed_values());
        row.prev_hash = Some(std::mem::replace(&mut prev_hash, hash.clone()));
        row.hash = Some(hash);
    }
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
    loop {
        let first = if health.failure().is_some() {
            // Failing: try again now and then even when nothing arrives, so
            // readiness and the gap record do not wait for the next request.
            match rx.try_recv() {
                Ok(job) => job,
                Err(mpsc::error::TryRecvError::Empty) => {
                    std::thread::sleep(PROBE_EVERY);
                    written += write_batch(&mut conn, &mut batch, metrics, health, 1);
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
        written += write_batch(&mut conn, &mut batch, metrics, health, attempts);
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
    let durable = needs_disk(batch) || gap_record.is_some();
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
        match conn.insert(&mut rows, durable) {
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

/// Appends one record to the trail from outside a gateway (`safedelete
/// keys ...`, a command-line restore), chained like the writer's own: the
/// store's write lock makes it safe while gateways write too. Returns the
/// record's id.
pub async fn append(store: &Location, mut record: AuditRecord) -> Result<i64, WriteError> {
    let mut rows = [StoredEvent::from_record(&mut record)];
    match store {
        Location::Sqlite(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                sqlite::Writer::open(&path)?.insert(&mut rows, true)
            })
            .await
            .map_err(|e| WriteError::Join(e.to_string()))?
            .map_err(WriteError::from)
        }
        Location::Postgres(url) => {
            use sqlx::{ConnectOptions, Connection as _};
            let mut conn = url
                .expose()
                .parse::<sqlx::postgres::PgConnectOptions>()?
                .connect()
                .await?;
            let id = postgres::insert_chained(&mut conn, &mut rows, true).await;
            let _ = conn.close().await;
            Ok(id?)
        }
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
        match conn {
            Connection::Sqlite(w) => w.synchronous_now(),
            Connection::Postgres(_) => unreachable!("a SQLite test"),
        }
    }

    /// Passthrough batches are committed `NORMAL`; a batch with anything else
    /// goes back to `FULL` before it is written, and every record is kept.
    #[tokio::test]
    async fn only_batches_of_passthrough_records_skip_the_disk_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        crate::db::open(&path).await.unwrap().close().await;
        let mut conn = Connection::open(&Location::Sqlite(path.clone())).unwrap();
        let (metrics, health) = (Metrics::default(), AuditHealth::default());
        let record = |op| Job::Record(AuditRecord::empty(op));

        let mut batch = vec![
            record(OperationKind::Passthrough),
            record(OperationKind::Passthrough),
        ];
        assert_eq!(write_batch(&mut conn, &mut batch, &metrics, &health, 1), 2);
        assert_eq!(synchronous_now(&conn), 1, "NORMAL");

        let mut batch = vec![
            record(OperationKind::Passthrough),
            record(OperationKind::Guarded("campaign.delete")),
        ];
        assert_eq!(write_batch(&mut conn, &mut batch, &metrics, &health, 1), 2);
        assert_eq!(synchronous_now(&conn), 2, "FULL");

        let mut batch = vec![record(OperationKind::Passthrough)];
        write_batch(&mut conn, &mut batch, &metrics, &health, 1);
        assert_eq!(synchronous_now(&conn), 1);
        let (tx, _rx) = oneshot::channel();
        let mut batch = vec![Job::Durable(
            AuditRecord::empty(OperationKind::Passthrough),
            tx,
        )];
        write_batch(&mut conn, &mut batch, &metrics, &health, 1);
        assert_eq!(synchronous_now(&conn), 2, "a caller waits for it: FULL");

        let pool = crate::db::open(&path).await.unwrap();
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(rows, 6);
    }

    /// Batches written on a thread of their own, as the writer thread
    /// writes them (the PostgreSQL connection drives its own runtime
    /// there), each tried once: a batch that collides with another
    /// writer's is lost, not retried into success. The thread starts
    /// writing when `start` lets it.
    fn writer_thread(
        location: &Location,
        batches: Vec<Vec<Job>>,
        start: Arc<std::sync::Barrier>,
    ) -> std::thread::JoinHandle<u64> {
        let location = location.clone();
        std::thread::spawn(move || {
            let mut conn = Connection::open(&location).unwrap();
            let (metrics, health) = (Metrics::default(), AuditHealth::default());
            start.wait();
            batches
                .into_iter()
                .map(|mut batch| write_batch(&mut conn, &mut batch, &metrics, &health, 1))
                .sum()
        })
    }

    fn write_on_a_thread(location: &Location, batches: Vec<Vec<Job>>) -> u64 {
        let start = Arc::new(std::sync::Barrier::new(1));
        writer_thread(location, batches, start).join().unwrap()
    }

    fn passthrough(path: String) -> Job {
        let mut r = AuditRecord::empty(OperationKind::Passthrough);
        r.path = path;
        Job::Record(r)
    }

    crate::db::testing::store_tests! {
        /// Batches of whole chunks and a remainder are stored in order, each
        /// record chained to the one before, as the verifier reads them.
        async fn chunked_inserts_keep_every_record_in_order_and_chained(pool, store) {
            let mut batches = Vec::new();
            let mut n = 0;
            for size in [sqlite::ROWS_PER_INSERT * 2 + 5, 1, sqlite::ROWS_PER_INSERT] {
                batches.push((n..n + size).map(|i| passthrough(format!("/api/v1/campaigns/{i}"))).collect());
                n += size;
            }
            let written = write_on_a_thread(&store.location, batches);
            assert_eq!(written as usize, sqlite::ROWS_PER_INSERT * 3 + 6);
            let paths: Vec<(i64, String)> =
                sqlx::query_as("SELECT id, path FROM audit_events ORDER BY id")
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            assert_eq!(paths.len() as u64, written);
            for (i, (id, path)) in paths.iter().enumerate() {
                assert_eq!(*id, i as i64 + 1);
                assert_eq!(path, &format!("/api/v1/campaigns/{i}"));
            }
            let report = chain::verify(&pool, None).await.unwrap();
            assert!(report.problem.is_none(), "{:?}", report.problem);
            assert_eq!(report.records, written);
        }

        /// Three writers on one store (three gateways' worth) writing at
        /// once: every record lands once, and one chain covers them all.
        async fn writers_of_several_gateways_extend_one_chain(pool, store) {
            let start = Arc::new(std::sync::Barrier::new(3));
            let writers: Vec<_> = (0..3)
                .map(|w| {
                    let batches = (0..100)
                        .map(|round| (0..5).map(|i| passthrough(format!("/gw{w}/{round}/{i}"))).collect())
                        .collect();
                    writer_thread(&store.location, batches, start.clone())
                })
                .collect();
            let written: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
            assert_eq!(written, 3 * 100 * 5);
            let distinct: i64 = sqlx::query_scalar("SELECT COUNT(DISTINCT path) FROM audit_events")
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(distinct as u64, written);
            let report = chain::verify(&pool, None).await.unwrap();
            assert!(report.problem.is_none(), "{:?}", report.problem);
            assert_eq!(report.records, written);
        }

        /// A record appended from outside a gateway (`safedelete keys`)
        /// extends the same chain as the gateway's writer.
        async fn an_appended_record_extends_the_writers_chain(pool, store) {
            write_on_a_thread(&store.location, vec![vec![passthrough("/a".into())]]);
            let id = append(&store.location, AuditRecord::empty(OperationKind::Passthrough))
                .await
                .unwrap();
            assert_eq!(id, 2);
            write_on_a_thread(&store.location, vec![vec![passthrough("/b".into())]]);
            let report = chain::verify(&pool, None).await.unwrap();
            assert!(report.problem.is_none(), "{:?}", report.problem);
            assert_eq!(report.records, 3);
        }
    }
}
