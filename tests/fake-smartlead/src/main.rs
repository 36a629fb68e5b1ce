//! `fake-smartlead`: the fake SmartLead API as a standalone server for benchmarks.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use fake_smartlead::{faults, FakeConfig};

/// A fake SmartLead API server.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9090")]
    listen: SocketAddr,
    /// How many leads campaign 101 holds.
    #[arg(long, default_value_t = 25)]
    leads: usize,
    /// The API key the fake accepts.
    #[arg(long)]
    api_key: Option<String>,
    /// Another API key the fake accepts (repeatable), as for a second account.
    #[arg(long = "extra-api-key")]
    extra_api_keys: Vec<String>,
    /// Answer every Nth write (POST, PUT, PATCH, DELETE) with SmartLead's 429
    /// and `Retry-After`, without carrying it out.
    #[arg(long, value_name = "N")]
    rate_limit_every: Option<usize>,
    /// The `Retry-After` seconds of `--rate-limit-every`.
    #[arg(long, value_name = "SECS", default_value_t = 1)]
    retry_after: u64,
    /// Answer every call after the first N with 500 (until the fake restarts).
    #[arg(long, value_name = "N")]
    fail_after: Option<usize>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mut config = FakeConfig::with_leads(args.leads);
    if let Some(key) = args.api_key {
        config.api_key = key;
    }
    config.extra_api_keys = args.extra_api_keys;
    if let Some(n) = args.rate_limit_every {
        config
            .faults
            .push(faults::rate_limit_every(n, true, args.retry_after));
    }
    if let Some(n) = args.fail_after {
        config.faults.push(faults::fail_after(n));
    }
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fake-smartlead: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().unwrap_or(args.listen);
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "fake-smartlead listening on http://{addr}");
    let _ = stdout.flush();
    match fake_smartlead::serve(listener, config, stop_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake-smartlead: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGINT or (on Unix) SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
