//! The `safedelete` binary: parse the command line, run it, turn failure into
//! an exit code.

use std::process::ExitCode;

use clap::Parser;

/// jemalloc, with its background thread purging freed memory: after a burst
/// of connections RSS comes back down even when the gateway is then idle
/// (glibc's per-thread arenas kept most of it; `tests/limits.rs` measures).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // Without it, jemalloc purges only while the process keeps allocating.
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
    let cli = safedelete::cli::Cli::parse();
    match safedelete::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("safedelete: {}", describe(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, skipping a cause whose text the
/// message already includes.
fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
