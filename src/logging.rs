//! Log setup: tracing to stdout through a non-blocking writer, so a slow
//! terminal or pipe never stalls request handling.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

use crate::config::{Log, LogFormat};

/// Installs the global subscriber. Keep the guard alive until exit: dropping
/// it flushes the buffered lines.
pub fn init(log: &Log) -> WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stdout());
    let filter = EnvFilter::try_new(&log.filter).unwrap_or_else(|err| {
        eprintln!(
            "safedelete: log filter `{}` is invalid ({err}); using `info`",
            log.filter
        );
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match log.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Pretty => builder.with_ansi(false).init(),
    }
    guard
}
