//! Who is calling. In `passthrough` mode callers send SmartLead keys and are
//! named by `[[actors]]` fingerprints (the proxy and the guard do that). In
//! `gateway_keys` mode callers send gateway keys: [`Identities`] checks them
//! against the database (re-read every [`REFRESH`], so a revoke on any
//! gateway is in force within a second), names the caller after the key, and
//! hands out the account whose SmartLead key is sent instead ([`swap`]).
//!
//! `keys` is the table's storage, `manage` what the CLI and the admin API
//! share to create, list, revoke and rotate keys, `limit` the per-key and
//! per-account rate limits.

pub mod keys;
pub mod limit;
pub mod manage;
pub mod swap;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::db::Pool;

use crate::config::{Config, IdentityMode, Rate, Secret};
use crate::metrics::Metrics;
use crate::sync::lock;

/// What every gateway key starts with, so a SmartLead key sent by mistake
/// is told apart from a wrong gateway key.
pub const KEY_PREFIX: &str = crate::config::GATEWAY_KEY_PREFIX;

/// How often the keys are read again from the database.
pub const REFRESH: Duration = Duration::from_millis(400);

/// How often the keys' `last_used_at` is written.
const TOUCH_EVERY: Duration = Duration::from_secs(5);

/// A SmartLead account as the running gateway uses it.
#[derive(Debug)]
pub struct AccountKey {
    pub name: String,
    pub api_key: Secret,
    /// The key percent-encoded for a query string.
    pub api_key_query: String,
    /// Keeps the account under SmartLead's own limit, when one is set.
    pub limiter: Option<limit::AccountLimiter>,
    /// Replaces the key wherever SmartLead echoes it.
    pub mask: swap::Mask,
}

impl AccountKey {
    /// The account's rate limit as the guard takes it before each of its
    /// own requests; `None` without a limit.
    pub fn pace(self: &Arc<Self>) -> Option<crate::upstream::Pace> {
        self.limiter.as_ref()?;
        let account = self.clone();
        Some(Arc::new(move || {
            let account = account.clone();
            Box::pin(async move {
                match &account.limiter {
                    Some(limiter) => limiter.acquire().await,
                    None => Ok(()),
                }
            })
        }))
    }
}

/// A gateway key the gateway knows.
#[derive(Debug)]
pub struct KeyEntry {
    pub name: String,
    pub key_sha256: String,
    pub account: Arc<AccountKey>,
    pub expires_at: Option<SystemTime>,
    pub revoked: bool,
    /// Shared by every key of the name (a rotation keeps its count).
    pub limiter: Option<Arc<limit::KeyLimiter>>,
    /// When it was last used, in ms since the epoch (0: not since start).
    last_used_ms: AtomicU64,
    /// What `last_used_ms` was when it was last written.
    touched_ms: AtomicU64,
}

/// Why a caller is refused in `gateway_keys` mode: a 401 in SmartLead's
/// shape that says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unauthorized {
    #[error("safedelete: this gateway needs a gateway key: send it as api_key (in the query, or in the JSON body) where the SmartLead key used to go; ask your SmartLead admin for one (`safedelete keys create --name YOUR_NAME`)")]
    NoKey,
    #[error("safedelete: this gateway takes gateway keys (sdg_...), not SmartLead keys; use the gateway key your admin gave you in place of the SmartLead key")]
    SmartLeadKey,
    #[error("safedelete: unknown gateway key; check that it was copied whole, or ask your admin for a new one (`safedelete keys list` shows the valid ones)")]
    Unknown,
    #[error("safedelete: the gateway key {name:?} was revoked; ask your admin for a new one")]
    Revoked { name: String },
    #[error("safedelete: the gateway key {name:?} expired; ask your admin to rotate it (`safedelete keys rotate {name}`)")]
    Expired { name: String },
    #[error(
        "safedelete: the request carries more than one key, and they differ; send one gateway key"
    )]
    Mixed,
}

impl Unauthorized {
    /// The `reason` label of `safedelete_unauthorized_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Unauthorized::NoKey => "no_key",
            Unauthorized::SmartLeadKey => "smartlead_key",
            Unauthorized::Unknown => "unknown_key",
            Unauthorized::Revoked { .. } => "revoked",
            Unauthorized::Expired { .. } => "expired",
            Unauthorized::Mixed => "mixed_keys",
        }
    }

    /// The key's name, when the key was one of ours.
    pub fn key_name(&self) -> Option<&str> {
        match self {
            Unauthorized::Revoked { name } | Unauthorized::Expired { name } => Some(name),
            _ => None,
        }
    }
}

/// The gateway's view of accounts and gateway keys.
pub struct Identities {
    pub mode: IdentityMode,
    accounts: Vec<Arc<AccountKey>>,
    /// Keys by SHA-256 (hex); swapped whole on every refresh.
    keys: RwLock<Arc<HashMap<String, Arc<KeyEntry>>>>,
    /// Per-name limiters, kept across refreshes.
    limiters: std::sync::Mutex<HashMap<String, Arc<limit::KeyLimiter>>>,
    default_rate: Option<Rate>,
    pool: Pool,
    metrics: Arc<Metrics>,
}

impl Identities {
    /// The accounts from the config; keys are read by [`Identities::refresh`].
    pub fn new(config: &Config, pool: Pool, metrics: Arc<Metrics>) -> Identities {
        let accounts = config
            .smartlead
            .accounts
            .iter()
            .map(|a| {
                Arc::new(AccountKey {
                    name: a.name.clone(),
                    api_key_query: percent_encoding::utf8_percent_encode(
                        a.api_key.expose(),
                        swap::QUERY_VALUE,
                    )
                    .to_string(),
                    mask: swap::Mask::new(a.api_key.expose()),
                    limiter: a.rate_limit.map(|rate| {
                        limit::AccountLimiter::new(
                            &a.name,
                            rate,
                            config.smartlead.max_wait,
                            config.smartlead.max_queue,
                            metrics.clone(),
                        )
                    }),
                    api_key: a.api_key.clone(),
                })
            })
            .collect();
        Identities {
            mode: config.identity.mode,
            accounts,
            keys: RwLock::default(),
            limiters: Default::default(),
            default_rate: config.identity.rate_limit,
            pool,
            metrics,
        }
    }

    pub fn gateway_keys(&self) -> bool {
        self.mode == IdentityMode::GatewayKeys
    }

    pub fn accounts(&self) -> &[Arc<AccountKey>] {
        &self.accounts
    }

    pub fn account(&self, name: &str) -> Option<&Arc<AccountKey>> {
        self.accounts.iter().find(|a| a.name == name)
    }

    /// Finds the caller behind the keys a request carries (the query's
    /// first, then the body's); every one must be the same valid key.
    pub fn authenticate<'a>(
        &self,
        presented: impl IntoIterator<Item = &'a str>,
    ) -> Result<Arc<KeyEntry>, Unauthorized> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        let mut found: Option<Arc<KeyEntry>> = None;
        for key in presented {
            if !key.starts_with(KEY_PREFIX) {
                return Err(Unauthorized::SmartLeadKey);
            }
            let entry = keys
                .get(&keys::hash(key))
                .ok_or(Unauthorized::Unknown)?
                .clone();
            match &found {
                Some(f) if f.key_sha256 != entry.key_sha256 => return Err(Unauthorized::Mixed),
                Some(_) => {}
                None => found = Some(entry),
            }
        }
        let entry = found.ok_or(Unauthorized::NoKey)?;
        if entry.revoked {
            return Err(Unauthorized::Revoked {
                name: entry.name.clone(),
            });
        }
        let now = SystemTime::now();
        if entry.expires_at.is_some_and(|e| e <= now) {
            return Err(Unauthorized::Expired {
                name: entry.name.clone(),
            });
        }
        let ms = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        entry.last_used_ms.store(ms, Ordering::Relaxed);
        Ok(entry)
    }

    /// Reads the keys again. A key whose account the config no longer has
    /// is left out (and logged once per refresh).
    pub async fn refresh(&self) -> Result<(), sqlx::Error> {
        let rows = keys::known(&self.pool).await?;
        let old = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        let mut limiters = lock(&self.limiters);
        let mut map = HashMap::with_capacity(rows.len());
        for row in rows {
            let Some(account) = self.account(&row.account).cloned() else {
                if !row.revoked {
                    tracing::warn!(key = %row.name, account = %row.account, "a gateway key names an account this gateway does not have; it is refused");
                }
                continue;
            };
            let rate = row
                .rate_limit
                .as_deref()
                .and_then(|r| Rate::parse("rate_limit", r).ok())
                .or(self.default_rate);
            let limiter = rate.map(|rate| {
                limiters
                    .entry(row.name.clone())
                    .and_modify(|l| {
                        if l.rate() != rate {
                            *l = Arc::new(limit::KeyLimiter::new(rate));
                        }
                    })
                    .or_insert_with(|| Arc::new(limit::KeyLimiter::new(rate)))
                    .clone()
            });
            let last = old.get(&row.key_sha256);
            let entry = KeyEntry {
                expires_at: row.expires_at.as_deref().and_then(keys::parse_time),
                revoked: row.revoked,
                limiter,
                last_used_ms: AtomicU64::new(
                    last.map_or(0, |l| l.last_used_ms.load(Ordering::Relaxed)),
                ),
                touched_ms: AtomicU64::new(
                    last.map_or(0, |l| l.touched_ms.load(Ordering::Relaxed)),
                ),
                name: row.name,
                key_sha256: row.key_sha256.clone(),
                account,
            };
            map.insert(row.key_sha256, Arc::new(entry));
        }
        drop(limiters);
        self.metrics.set_gateway_keys(
            map.values()
                .filter(|k| !k.revoked && k.expires_at.is_none_or(|e| e > SystemTime::now()))
                .count(),
        );
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(map);
        Ok(())
    }

    /// Writes `last_used_at` for the keys used since the last write.
    async fn touch(&self) -> Result<(), sqlx::Error> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        let used: Vec<(String, SystemTime)> = keys
            .values()
            .filter_map(|k| {
                let last = k.last_used_ms.load(Ordering::Relaxed);
                let touched = k.touched_ms.swap(last, Ordering::Relaxed);
                (last > touched).then(|| {
                    (
                        k.key_sha256.clone(),
                        UNIX_EPOCH + Duration::from_millis(last),
                    )
                })
            })
            .collect();
        keys::touch(&self.pool, &used).await
    }

    /// Re-reads the keys every [`REFRESH`] and writes their last use every
    /// few seconds, until the task is dropped. A failed read keeps the keys
    /// as they were and is logged once until it works again.
    pub async fn keep_fresh(self: Arc<Self>) {
        let mut tick = tokio::time::interval(REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        let mut last_touch = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            match self.refresh().await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("gateway keys are read from the database again");
                }
                Ok(()) => {}
                Err(err) if !failing => {
                    failing = true;
                    tracing::error!(error = %err, "cannot read the gateway keys; keeping the last ones read");
                }
                Err(_) => {}
            }
            if last_touch.elapsed() >= TOUCH_EVERY {
                last_touch = tokio::time::Instant::now();
                if let Err(err) = self.touch().await {
                    tracing::warn!(error = %err, "cannot record when gateway keys were last used");
                }
            }
        }
    }

    /// Writes the last uses not yet written (at shutdown).
    pub async fn flush(&self) {
        if let Err(err) = self.touch().await {
            tracing::warn!(error = %err, "cannot record when gateway keys were last used");
        }
    }
}
