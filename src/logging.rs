//! Log setup: tracing to stdout through a non-blocking, lossy writer, so a
//! slow terminal or a stalled pipe never stalls request handling. Lines that
//! could not be buffered are counted (`safedelete_log_lines_dropped_total`).

use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::{Log, LogFormat};

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Installs the global subscriber. Keep the guard alive until exit: dropping
/// it flushes the buffered lines.
pub fn init(log: &Log) -> WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .finish(std::io::stdout());
    let _ = DROPPED.set(writer.error_counter());
    // Checked when the config was loaded (`LogFilter`), so nothing is lost here.
    // PostgreSQL's notices ("relation ... already exists, skipping" from
    // every migration check) are not news: shown from warnings up.
    let filter = EnvFilter::new(format!(
        "{},sqlx::postgres::notice=warn",
        log.filter.as_str()
    ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match log.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Pretty => builder.with_ansi(false).init(),
    }
    guard
}

/// Log lines dropped because the writer could not keep up (0 before `init`).
pub fn dropped_lines() -> usize {
    DROPPED.get().map(|c| c.dropped_lines()).unwrap_or(0)
}
