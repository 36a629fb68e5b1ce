//! safedelete: a gateway in front of the SmartLead API. It forwards every
//! request unchanged, audits each one, and (in the guard) captures a
//! campaign's data before anything destroys it.
//!
//! # Layout
//!
//! - [`cli`]: the command line (`serve`, `check-config`, `health`, `audit`, `policy explain`, `snapshots`).
//! - [`config`]: the TOML file and `SAFEDELETE_*` overrides, validated into [`config::Config`].
//! - [`server`]: both listeners' accept loops and graceful shutdown.
//! - [`proxy`]: the proxy service: header hygiene, forwarding, error responses.
//! - [`audit`]: audit records (their columns defined once in `audit::event`), secret
//!   redaction, the batch writer with its gap records, the hash chain and queries.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics` on the admin listener.
//! - [`metrics`]: lock-free counters rendered as Prometheus text.
//! - [`guard`]: the deletion guard: the operation table, classification, policy, the
//!   guarded pipeline, the durable operation rows (ledger), history.
//! - [`snapshot`]: reading what a call would destroy into checksummed, compressed chunks.
//! - [`digest`]: SHA-256 and hex, the one digest helper.
//! - [`db`]: the SQLite pool (read-write, or read-only for the commands that only read), embedded migrations, private file modes.
//! - [`sync`]: a mutex lock that survives a panicked holder.
//! - [`tls`]: rustls configs for the upstream client and the proxy listener.
//! - [`logging`]: tracing setup (JSON or pretty).

pub mod admin;
pub mod audit;
pub mod cli;
pub mod config;
pub mod db;
pub mod digest;
pub mod guard;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod snapshot;
pub mod sync;
pub mod tls;
