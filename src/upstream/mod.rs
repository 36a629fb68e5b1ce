//! SmartLead as the gateway reaches it, below both the proxy and the guard:
//! the pooled keep-alive client ([`client`]), header hygiene ([`headers`]),
//! the counted upload body ([`upload`]), and [`Upstream`], the endpoint with
//! its timeouts that every caller shares.

pub mod client;
pub mod headers;
pub mod upload;

use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderValue;
use http::uri::{Authority, Scheme};

use crate::config::Config;
use client::UpstreamClient;

/// Waits for a turn under a SmartLead account's rate limit, before each
/// request the guard sends for it; `Err(wait)` when the turn is further
/// away than the limiter holds requests.
pub type Pace =
    Arc<dyn Fn() -> futures_util::future::BoxFuture<'static, Result<(), Duration>> + Send + Sync>;

/// The configured SmartLead endpoint: where requests go, how long they may
/// take, and the client (a pool) that carries them. Cheap to clone.
#[derive(Clone)]
pub struct Upstream {
    pub client: UpstreamClient,
    pub scheme: Scheme,
    pub authority: Authority,
    /// The URL as configured, for messages.
    pub url: String,
    host_header: HeaderValue,
    pub first_byte_timeout: Duration,
    pub connect_timeout: Duration,
    pub body_idle_timeout: Duration,
}

impl Upstream {
    pub fn new(config: &Config, client: UpstreamClient) -> Self {
        let u = &config.upstream;
        Upstream {
            client,
            scheme: u.scheme.clone(),
            authority: u.authority.clone(),
            url: u.url(),
            host_header: HeaderValue::from_str(u.authority.as_str())
                .expect("a parsed authority is a valid header value"),
            first_byte_timeout: u.first_byte_timeout,
            connect_timeout: u.connect_timeout,
            body_idle_timeout: config.body_idle_timeout,
        }
    }

    /// `Host` for requests to the upstream.
    pub fn host_header(&self) -> HeaderValue {
        self.host_header.clone()
    }
}
