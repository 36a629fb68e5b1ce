//! The audit writer alone: how much CPU one passthrough record costs the
//! writer thread, at a steady offered rate like the forwarding benchmark's.
//! Run by `bench/audit.sh`; see BENCHMARKS.md.
//!
//! Usage: audit_writer [RECORDS] [RATE]   (defaults 200000 records at 20000/s)
//!
//! Records are shaped like the forwarding benchmark's (a campaign GET with a
//! redacted key); the database is a fresh file in a temporary directory, or
//! the PostgreSQL database `SAFEDELETE_DATABASE` names (it should be empty).
//! Reported: records/s written, and the writer thread's CPU time per record
//! from /proc/self/task/TID/schedstat (nanoseconds on the CPU).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use safedelete::audit::{AuditRecord, AuditWriter, OperationKind};
use safedelete::metrics::Metrics;

const CAPACITY: usize = 65_536;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let records: u64 = args.next().map_or(Ok(200_000), |a| a.parse())?;
    let rate: u64 = args.next().map_or(Ok(20_000), |a| a.parse())?;
    if records == 0 || rate == 0 {
        return Err("RECORDS and RATE must be positive".into());
    }

    let dir = tempfile::tempdir()?;
    let database = match std::env::var("SAFEDELETE_DATABASE") {
        Ok(url) => url.parse()?,
        Err(_) => safedelete::db::Location::Sqlite(dir.path().join("safedelete.db")),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let pool = safedelete::db::open(&database).await?;
        pool.close().await;
        Ok::<_, safedelete::db::DbError>(())
    })?;

    let metrics = Arc::new(Metrics::default());
    let (sink, writer) = AuditWriter::spawn(&database, CAPACITY, 1_000, metrics.clone())?;
    let writer_task = writer_thread().ok_or("cannot find the audit writer thread")?;

    let template = record();
    let started = Instant::now();
    let mut sent = 0u64;
    // Offer `rate` records a second, in 1 ms steps.
    while sent < records {
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due.min(records) {
            let mut r = template.clone();
            r.time = SystemTime::now();
            r.request_id = format!("req-{sent:016x}");
            sink.submit(r);
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    while metrics.audit_written.load(Ordering::Relaxed)
        + metrics.audit_dropped.load(Ordering::Relaxed)
        < records
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = started.elapsed();
    let cpu_ns = cpu_ns(&writer_task)?;
    let written = runtime.block_on(writer.close());
    let dropped = metrics.audit_dropped.load(Ordering::Relaxed);
    let db_bytes: u64 = std::fs::read_dir(dir.path())?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();

    println!("records            {written} written, {dropped} dropped");
    println!("offered rate       {rate}/s");
    println!(
        "written            {:.0} records/s",
        written as f64 / elapsed.as_secs_f64()
    );
    println!(
        "writer CPU         {:.2} us/record",
        cpu_ns as f64 / 1000.0 / written.max(1) as f64
    );
    println!("database + WAL     {:.1} MB", db_bytes as f64 / 1e6);
    if dropped > 0 {
        return Err("records were dropped: lower RATE".into());
    }
    Ok(())
}

/// A passthrough record like the forwarding benchmark's.
fn record() -> AuditRecord {
    let mut r = AuditRecord::empty(OperationKind::Passthrough);
    r.method = "GET".into();
    r.path = "/api/v1/campaigns/101".into();
    r.query = Some("api_key=[REDACTED]".into());
    r.actor_fingerprint = Some("5f2b9c3e8a1d4f07".into());
    r.client_addr = Some("127.0.0.1".into());
    r.user_agent = Some("wrk".into());
    r.campaign_id = Some(101);
    r.upstream_status = Some(200);
    r.status = 200;
    r.bytes_out = 72;
    r.duration = Duration::from_micros(412);
    r
}

/// `/proc/self/task/TID` of the writer thread, found by its name.
fn writer_thread() -> Option<std::path::PathBuf> {
    // The thread is started by `spawn`; give it a moment to be named.
    for _ in 0..100 {
        for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim_end() == "safedelete-audi" {
                return Some(task.path());
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Nanoseconds the task has run on a CPU.
fn cpu_ns(task: &std::path::Path) -> Result<u64, Box<dyn std::error::Error>> {
    let stat = std::fs::read_to_string(task.join("schedstat"))?;
    let ns = stat.split_whitespace().next().ok_or("empty schedstat")?;
    Ok(ns.parse()?)
}
