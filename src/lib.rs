//! safedelete: a gateway in front of the SmartLead API. It forwards every
//! request unchanged, audits each one, and (in the guard) captures a
//! campaign's data before anything destroys it.
//!
//! # Layout
//!
//! - [`cli`]: the command line (`serve`, `check-config`, `health`, `audit`, `keys`, `policy explain`, `snapshots`, `restore`, `migrate-store`).
//! - [`config`]: the TOML file and `SAFEDELETE_*` overrides, validated into [`config::Config`].
//! - [`server`]: both listeners' accept loops and graceful shutdown.
//! - [`proxy`]: the proxy service: classify, hand guarded calls to the guard,
//!   stream everything else; error responses.
//! - [`upstream`]: SmartLead as the gateway reaches it: the pooled client, header
//!   hygiene, the counted upload body, the endpoint and its timeouts (below both
//!   the proxy and the guard).
//! - [`audit`]: audit records (their columns defined once in `audit::event`), secret
//!   redaction, the batch writer with its gap records, the hash chain and queries.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics` and the `/v1` API (audit, history,
//!   snapshots, keys) on the admin listener.
//! - [`metrics`]: lock-free counters rendered as Prometheus text.
//! - [`guard`]: the deletion guard: the operation table, classification, policy, the
//!   guarded pipeline with its own context, the durable operation rows (ledger), history.
//! - [`identity`]: who is calling: gateway keys (stored as hashes, re-read every
//!   400 ms), the accounts whose SmartLead keys the gateway holds, the key swap
//!   and mask, per-key and per-account rate limits.
//! - [`bypass`]: the bypass watch: lists each account's campaigns every
//!   `bypass.interval` and records those deleted outside the gateway.
//!
//! Dependencies point down: `server` → `proxy` → `guard` → `snapshot` → `upstream`;
//! `proxy` and `bypass` use `identity`, which uses `db`, `audit` and `config`;
//! `audit`, `db` and `metrics` are used from above and use none of these; `config`
//! validates the policy with `guard::policy` (pure: no I/O, no state).
//! - [`restore`]: a snapshot read back and worked out into the SmartLead calls
//!   that rebuild it as a new campaign (`restore --dry-run`), or undo a
//!   smaller delete (a lead, a webhook, sender accounts) and unarchive a
//!   campaign.
//! - [`snapshot`]: reading what a call would destroy into checksummed, compressed chunks.
//! - [`digest`]: SHA-256 and hex, the one digest helper.
//! - [`db`]: the store, SQLite or PostgreSQL, as one pool (read-write, or read-only for the
//!   commands that only read), each kind's embedded migrations, private SQLite file modes.
//! - [`migrate_store`]: a whole store copied into an empty one, resumable, verified.
//! - [`sync`]: a mutex lock that survives a panicked holder.
//! - [`tls`]: rustls configs for the upstream client and the proxy listener.
//! - [`logging`]: tracing setup (JSON or pretty).

pub mod admin;
pub mod audit;
pub mod bypass;
pub mod cli;
pub mod config;
pub mod db;
pub mod digest;
pub mod guard;
pub mod identity;
pub mod logging;
pub mod metrics;
pub mod migrate_store;
pub mod proxy;
pub mod restore;
pub mod server;
pub mod snapshot;
pub mod sync;
pub mod tls;
pub mod upstream;
