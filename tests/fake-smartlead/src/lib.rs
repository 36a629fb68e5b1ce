//! A faithful fake of the SmartLead API (`/api/v1`) for the gateway's integration
//! tests (in process, on `127.0.0.1:0`) and its benchmarks (as the `fake-smartlead`
//! binary).
//!
//! It is written on plain hyper rather than a router so that it can record each
//! request target exactly as it arrived on the wire. Response shapes follow the
//! "real/likely response" column of `shared/reference/smartlead-api.md`: bare
//! objects and arrays, `{"ok":true}` for writes, `total_leads` as a string, and a
//! fully quoted 22-column CSV export that is streamed, never built in memory.
//!
//! # Layout
//! - [`server`]: binds, accepts (plain or TLS), runs the hyper service and owns
//!   [`FakeHandle`], the test's window into the fake.
//! - [`inspect`]: the [`FakeHandle`] accessors that read the store (leads, sender
//!   accounts, lead lists, webhooks, client API keys, block-list entries) and
//!   [`CampaignState`], a whole campaign for comparing a restore with its original.
//! - [`record`]: [`RecordedRequest`], the raw copy of every request received,
//!   with when it arrived and the key it carried.
//! - [`auth`]: the key a request carries (query, or JSON body on writes) and
//!   SmartLead's optional per-key rate limit ([`RateLimit`]).
//! - [`faults`]: programmed failures ([`FaultRule`], [`Fault`]) and how they bend a
//!   response (status, delay, slow chunks, cut connections, extra headers).
//! - [`body`]: the one response body type, a boxed stream of bytes.
//! - [`state`]: the mutable campaign store, per-lead changes, default seeds.
//! - [`account`]: the account-wide objects (sender email accounts, lead lists,
//!   global webhooks, client API keys, domain block list) and their seeds.
//! - [`lead`]: deterministic lead generation shared by every lead-facing route.
//! - [`csv`]: the streaming leads export and its byte-exact twin for tests.
//! - [`query`]: percent-decoding of paths and query strings.
//! - [`routes`]: request dispatch, authentication and the campaign handlers.
//! - [`resources`]: handlers for a campaign's sub-resources (sequences, email
//!   accounts, webhooks, analytics, statistics).
//! - [`lead_upload`]: `POST /campaigns/{id}/leads`: limits, de-duplication,
//!   block and unsubscribe lists, the real response.
//! - [`settings`]: a campaign's configurable fields and the settings and
//!   schedule writes that change them.
//! - [`sequence`]: validating and storing `POST /campaigns/{id}/sequences`.
//! - [`lead_routes`]: handlers for single leads, account-wide (`/leads/{id}`)
//!   and within a campaign (pause, resume, unsubscribe, message history).
//! - [`account_routes`]: handlers for the account-wide routes (`/email-accounts`,
//!   `/lead-list`, `/webhook`, `/client/api-key`, the domain block list, tags).

pub mod account;
pub mod account_routes;
pub mod auth;
pub mod body;
pub mod csv;
pub mod faults;
pub mod inspect;
pub mod lead;
pub mod lead_routes;
pub mod lead_upload;
pub mod query;
pub mod record;
pub mod resources;
pub mod routes;
pub mod sequence;
pub mod server;
pub mod settings;
pub mod state;

use std::sync::Arc;

pub use auth::RateLimit;
pub use faults::{Fault, FaultRule, Trigger};
pub use inspect::CampaignState;
pub use record::RecordedRequest;
pub use server::{serve, start, FakeHandle};

/// Namespace form of [`start`] and [`serve`], for callers that prefer
/// `FakeSmartlead::start(config)`.
pub struct FakeSmartlead;

impl FakeSmartlead {
    /// See [`start`].
    pub async fn start(config: FakeConfig) -> std::io::Result<FakeHandle> {
        start(config).await
    }

    /// See [`serve`].
    pub async fn serve(
        listener: tokio::net::TcpListener,
        config: FakeConfig,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        serve(listener, config, shutdown).await
    }
}

/// How a fake upstream is set up before it starts.
#[derive(Clone, Debug)]
pub struct FakeConfig {
    /// The `api_key` the fake accepts (in the query, or at the top of a JSON
    /// body on POST, PATCH and PUT when the query has none).
    pub api_key: String,
    /// More keys the fake accepts, as if several SmartLead accounts (or
    /// several keys of one account) shared the same data.
    pub extra_api_keys: Vec<String>,
    /// SmartLead's per-key rate limit, enforced when set: past it the fake
    /// answers 429 with `Retry-After` and the body of reference §2.
    pub rate_limit: Option<RateLimit>,
    /// The campaigns that exist when the fake starts.
    pub campaigns: Vec<CampaignSeed>,
    /// Fault rules armed from the start, each with its [`Trigger`] (the
    /// binary's `--rate-limit-every` and `--fail-after`, built by
    /// [`faults::rate_limit_every`] and [`faults::fail_after`]); tests can also
    /// add rules to a running fake.
    pub faults: Vec<(FaultRule, Trigger)>,
    /// Serve HTTPS with this configuration when set, plain HTTP otherwise.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            api_key: "sl_test_key".to_owned(),
            extra_api_keys: Vec::new(),
            rate_limit: None,
            campaigns: CampaignSeed::defaults(),
            faults: Vec::new(),
            tls: None,
        }
    }
}

impl FakeConfig {
    /// The default seeds, with campaign 101 holding `n` leads (for large exports).
    pub fn with_leads(n: usize) -> Self {
        let mut config = Self::default();
        for seed in &mut config.campaigns {
            if seed.id == 101 {
                seed.leads = n;
            }
        }
        config
    }
}

/// One campaign that exists when the fake starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CampaignSeed {
    /// Campaign id, as used in `/campaigns/{id}`.
    pub id: u64,
    /// Campaign name.
    pub name: String,
    /// Status as read (`DRAFTED`, `ACTIVE`, `PAUSED`, `STOPPED`, `COMPLETED`, ...).
    pub status: String,
    /// Owning client, if any (filtered on by `GET /campaigns?client_id=`).
    pub client_id: Option<u64>,
    /// How many generated leads the campaign holds.
    pub leads: usize,
}

impl CampaignSeed {
    /// The default seeds: 101 active with 25 leads, 102 paused for client 7 with
    /// 5 leads, 103 drafted and empty.
    pub fn defaults() -> Vec<Self> {
        vec![
            Self::new(101, "Cold Outreach Q1", "ACTIVE", None, 25),
            Self::new(102, "Partners EU", "PAUSED", Some(7), 5),
            Self::new(103, "Old Drafts", "DRAFTED", None, 0),
        ]
    }

    fn new(id: u64, name: &str, status: &str, client_id: Option<u64>, leads: usize) -> Self {
        Self {
            id,
            name: name.to_owned(),
            status: status.to_owned(),
            client_id,
            leads,
        }
    }
}
