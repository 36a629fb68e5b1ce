//! The bypass watch: now that the gateway holds the account keys, it lists
//! each account's campaigns every `bypass.interval` and compares the listing
//! with the previous one. A campaign that disappeared without a delete
//! through the gateway was deleted behind its back (in the SmartLead UI, or
//! by a tool holding the key): that is written to the audit trail
//! (`bypass_detected`, with the campaign's last known name and status and
//! its newest snapshot), logged as a warning and counted in `/metrics`.
//!
//! The listings live in `bypass_accounts` and `bypass_campaigns`, so a
//! delete made while the gateway was stopped is found at its next start.
//! An account's first listing ever is the baseline: nothing is compared.
//! A listing that fails changes nothing; the next one compares against the
//! last good one. Archived campaigns stay in SmartLead's listing, so an
//! archive is never a disappearance.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::db::Pool;
use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::BodyExt;

use crate::audit::{format_time, AuditError, AuditRecord, AuditSink, OperationKind};
use crate::identity::AccountKey;
use crate::metrics::Metrics;
use crate::upstream::client::{ClientError, RequestBody};
use crate::upstream::Upstream;

/// The listing path, as recorded in the audit trail.
pub const LISTING_PATH: &str = "/api/v1/campaigns";

/// The method the audit trail shows for a bypass record: no client sent it.
pub const AUDIT_METHOD: &str = "WATCH";

/// The most of a listing read into memory. SmartLead does not paginate it;
/// a campaign object is about 1 KiB, so this is room for ~16,000 campaigns.
pub const MAX_LISTING_BYTES: usize = 16 * 1024 * 1024;

/// What the watch works with; the accounts are passed to [`watch`].
pub struct Watch {
    pub upstream: Upstream,
    pub pool: Pool,
    pub audit: AuditSink,
    pub metrics: Arc<Metrics>,
    /// `bypass.interval` (not zero).
    pub interval: Duration,
}

/// A campaign as a listing showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: i64,
    pub name: Option<String>,
    pub status: Option<String>,
}

/// Why an account's listing could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ListingError {
    #[error("account {account}: its rate limit has no turn free (next in {retry_after:?}); the listing waits for the next round")]
    RateLimited {
        account: String,
        retry_after: Duration,
    },
    #[error("account {account}: SmartLead answered 401 to the campaign listing: the account's key is wrong or revoked; fix the key of [[smartlead.accounts]] {account:?}")]
    Unauthorized { account: String },
    #[error("account {account}: SmartLead answered {status} to the campaign listing")]
    Status { account: String, status: StatusCode },
    #[error("account {account}: could not reach SmartLead: {source}")]
    Upstream {
        account: String,
        #[source]
        source: ClientError,
    },
    #[error("account {account}: SmartLead did not answer the campaign listing within {waited:?}")]
    Timeout { account: String, waited: Duration },
    #[error(
        "account {account}: the campaign listing failed mid-body, or is larger than {max} bytes"
    )]
    Body { account: String, max: usize },
    #[error("account {account}: the campaign listing is not a JSON array of campaigns with ids")]
    NotListing { account: String },
}

/// Why a round of the watch for one account failed.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Listing(#[from] ListingError),
    #[error("account {account}: cannot read or store the campaign listing: {source}")]
    Db {
        account: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "account {account}: cannot write the audit record of campaign {campaign_id}: {source}"
    )]
    Audit {
        account: String,
        campaign_id: i64,
        #[source]
        source: AuditError,
    },
}

/// Lists every account's campaigns every `interval`, the first time at
/// once, until the task is aborted. Failures are logged once per streak.
pub async fn watch(w: Watch, accounts: Vec<Arc<AccountKey>>) {
    let mut ticker = tokio::time::interval(w.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = vec![false; accounts.len()];
    loop {
        ticker.tick().await;
        for (account, failing) in accounts.iter().zip(failing.iter_mut()) {
            match round(&w, account).await {
                Ok(_) if *failing => {
                    *failing = false;
                    tracing::info!(account = %account.name, "the bypass watch lists the account's campaigns again");
                }
                Ok(_) => {}
                Err(err) if *failing => {
                    tracing::debug!(account = %account.name, error = %err, "bypass watch: the listing still fails");
                }
                Err(err) => {
                    *failing = true;
                    tracing::warn!(account = %account.name, error = %err, "bypass watch: cannot check the account for deletes made outside the gateway; it tries again every {:?}", w.interval);
                }
            }
        }
    }
}

/// One listing of one account, compared with the previous one and stored.
/// Returns the campaigns found deleted outside the gateway.
pub async fn round(w: &Watch, account: &AccountKey) -> Result<Vec<Listed>, WatchError> {
    let name = account.name.as_str();
    let db = |source| WatchError::Db {
        account: name.to_string(),
        source,
    };
    if let Some(limiter) = &account.limiter {
        limiter
            .acquire()
            .await
            .map_err(|retry_after| ListingError::RateLimited {
                account: name.to_string(),
                retry_after,
            })?;
    }
    let (status, current) = list(&w.upstream, account).await?;
    let now = format_time(SystemTime::now());
    let mut found = Vec::new();
    if let Some((listed_at, previous)) = load(&w.pool, name).await.map_err(db)? {
        let current_ids: HashSet<i64> = current.iter().map(|c| c.id).collect();
        let mut through_gateway = HashSet::new();
        for gone in previous.iter().filter(|p| !current_ids.contains(&p.id)) {
            if deleted_through_gateway(&w.pool, gone.id)
                .await
                .map_err(db)?
            {
                through_gateway.insert(gone.id);
            }
        }
        for gone in disappeared(&previous, &current, &through_gateway) {
            let snapshot = newest_snapshot(&w.pool, gone.id).await.map_err(db)?;
            let detail = describe(gone, name, &listed_at, &now, snapshot);
            let mut r = AuditRecord::empty(OperationKind::BypassDetected);
            r.method = AUDIT_METHOD.into();
            r.path = LISTING_PATH.into();
            r.campaign_id = Some(gone.id);
            r.target = Some(format!("campaign:{}", gone.id));
            r.account = Some(name.to_string());
            r.snapshot_id = snapshot;
            r.status = status.as_u16();
            r.upstream_status = Some(status.as_u16());
            r.detail = Some(detail.clone());
            w.audit
                .write_durable(r)
                .await
                .map_err(|source| WatchError::Audit {
                    account: name.to_string(),
                    campaign_id: gone.id,
                    source,
                })?;
            w.metrics.record_bypass(name);
            tracing::warn!(
                account = name,
                campaign_id = gone.id,
                snapshot_id = snapshot,
                "deleted outside the gateway: {detail}"
            );
            found.push(gone.clone());
        }
    } else {
        tracing::info!(
            account = name,
            campaigns = current.len(),
            "bypass watch: first listing of the account, kept as the baseline"
        );
    }
    replace(&w.pool, name, &current, &now).await.map_err(db)?;
    Ok(found)
}

/// The campaigns of `previous` that are not in `current` and were not
/// deleted through the gateway, in the previous listing's order.
pub fn disappeared<'a>(
    previous: &'a [Listed],
    current: &[Listed],
    through_gateway: &HashSet<i64>,
) -> Vec<&'a Listed> {
    let current: HashSet<i64> = current.iter().map(|c| c.id).collect();
    previous
        .iter()
        .filter(|p| !current.contains(&p.id) && !through_gateway.contains(&p.id))
        .collect()
}

/// The audit record's detail, for people.
fn describe(gone: &Listed, account: &str, since: &str, now: &str, snapshot: Option<i64>) -> String {
    let name = match &gone.name {
        Some(n) => format!("{n:?}"),
        None => "(no name)".into(),
    };
    let status = gone.status.as_deref().unwrap_or("unknown");
    let snapshot = match snapshot {
        Some(id) => format!("last snapshot {id}"),
        None => "no snapshot".into(),
    };
    format!(
        "campaign {} {name} (status {status}) disappeared from account {account} between {since} and {now} without a delete through the gateway; {snapshot}",
        gone.id
    )
}

/// `GET /api/v1/campaigns` with the account's key: the listing's status and
/// campaigns. Never logged: the request holds the key.
async fn list(
    upstream: &Upstream,
    account: &AccountKey,
) -> Result<(StatusCode, Vec<Listed>), ListingError> {
    let name = || account.name.clone();
    let uri = Uri::builder()
        .scheme(upstream.scheme.clone())
        .authority(upstream.authority.clone())
        .path_and_query(format!("{LISTING_PATH}?api_key={}", account.api_key_query))
        .build()
        .expect("a percent-encoded key makes a valid query");
    let req = Request::builder()
        .method(Method::GET)
        .uri(uri)
        .header(header::HOST, upstream.host_header())
        .header(header::ACCEPT, HeaderValue::from_static("application/json"))
        .header(
            header::USER_AGENT,
            concat!("safedelete/", env!("CARGO_PKG_VERSION"), " (bypass watch)"),
        )
        .body(RequestBody::Empty)
        .expect("a request built from valid parts");
    let waited = upstream.first_byte_timeout;
    let resp = match tokio::time::timeout(waited, upstream.client.request(req)).await {
        Err(_) => {
            return Err(ListingError::Timeout {
                account: name(),
                waited,
            })
        }
        Ok(Err(source)) => {
            return Err(ListingError::Upstream {
                account: name(),
                source,
            })
        }
        Ok(Ok(resp)) => resp,
    };
    let status = resp.status();
    if status == StatusCode::UNAUTHORIZED {
        return Err(ListingError::Unauthorized { account: name() });
    }
    if !status.is_success() {
        return Err(ListingError::Status {
            account: name(),
            status,
        });
    }
    let limited = http_body_util::Limited::new(resp.into_body(), MAX_LISTING_BYTES);
    let waited = upstream.body_idle_timeout;
    let body = match tokio::time::timeout(waited, limited.collect()).await {
        Err(_) => {
            return Err(ListingError::Timeout {
                account: name(),
                waited,
            })
        }
        Ok(Err(_)) => {
            return Err(ListingError::Body {
                account: name(),
                max: MAX_LISTING_BYTES,
            })
        }
        Ok(Ok(c)) => c.to_bytes(),
    };
    let campaigns =
        parse_listing(&body).ok_or_else(|| ListingError::NotListing { account: name() })?;
    Ok((status, campaigns))
}

/// The campaigns of a listing: a bare array (what SmartLead sends), or the
/// `{"data": [...]}` its docs show. Every entry must have an id, or the
/// whole listing is refused: a partial reading would report campaigns that
/// are still there.
pub fn parse_listing(body: &[u8]) -> Option<Vec<Listed>> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let items = match &value {
        serde_json::Value::Array(items) => items,
        serde_json::Value::Object(o) => o.get("data")?.as_array()?,
        _ => return None,
    };
    items
        .iter()
        .map(|c| {
            let id = c.get("id")?;
            let id = id
                .as_i64()
                .or_else(|| id.as_str().and_then(|s| s.parse().ok()))?;
            let text = |k: &str| c.get(k).and_then(|v| v.as_str()).map(str::to_string);
            Some(Listed {
                id,
                name: text("name"),
                status: text("status"),
            })
        })
        .collect()
}

/// The account's stored listing and when it was taken; `None` before the
/// first listing.
async fn load(pool: &Pool, account: &str) -> Result<Option<(String, Vec<Listed>)>, sqlx::Error> {
    let listed_at: Option<String> =
        sqlx::query_scalar("SELECT listed_at FROM bypass_accounts WHERE account = $1")
            .bind(account)
            .fetch_optional(pool)
            .await?;
    let Some(listed_at) = listed_at else {
        return Ok(None);
    };
    let rows: Vec<(i64, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT campaign_id, name, status FROM bypass_campaigns WHERE account = $1 ORDER BY campaign_id",
    )
    .bind(account)
    .fetch_all(pool)
    .await?;
    let listed = rows
        .into_iter()
        .map(|(id, name, status)| Listed { id, name, status })
        .collect();
    Ok(Some((listed_at, listed)))
}

/// Replaces the account's stored listing, in one transaction.
async fn replace(
    pool: &Pool,
    account: &str,
    current: &[Listed],
    now: &str,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM bypass_campaigns WHERE account = $1")
        .bind(account)
        .execute(&mut *tx)
        .await?;
    for c in current {
        // A listing that names a campaign twice keeps its last entry.
        sqlx::query(
            "INSERT INTO bypass_campaigns (account, campaign_id, name, status, seen_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account, campaign_id) DO UPDATE \
             SET name = excluded.name, status = excluded.status, seen_at = excluded.seen_at",
        )
        .bind(account)
        .bind(c.id)
        .bind(&c.name)
        .bind(&c.status)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "INSERT INTO bypass_accounts (account, listed_at) VALUES ($1, $2) \
         ON CONFLICT (account) DO UPDATE SET listed_at = excluded.listed_at",
    )
    .bind(account)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Whether a delete of the campaign went through the gateway: a
/// `campaign.delete` the policy allowed that was forwarded, may have been,
/// or is still on its way. Conservative: one whose outcome is unknown
/// (interrupted, failed upstream) counts, so the watch never blames a
/// delete the gateway itself sent.
async fn deleted_through_gateway(pool: &Pool, campaign_id: i64) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM operations WHERE kind = 'campaign.delete' AND campaign_id = $1 \
         AND (state IN ('received', 'deciding', 'snapshotting', 'acting') \
              OR (action = 'allow' AND state IN ('done', 'upstream_failed', 'interrupted')))",
    )
    .bind(campaign_id)
    .fetch_one(pool)
    .await?;
    Ok(n > 0)
}

/// The campaign's newest snapshot, a complete one first.
async fn newest_snapshot(pool: &Pool, campaign_id: i64) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM snapshots WHERE campaign_id = $1 \
         ORDER BY state = 'complete' DESC, id DESC LIMIT 1",
    )
    .bind(campaign_id)
    .fetch_optional(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: i64) -> Listed {
        Listed {
            id,
            name: Some(format!("c{id}")),
            status: Some("ACTIVE".into()),
        }
    }

    #[test]
    fn a_campaign_missing_now_and_not_deleted_through_the_gateway_has_disappeared() {
        let previous = [c(1), c(2), c(3), c(4)];
        let current = [c(1), c(3), c(5)];
        let through: HashSet<i64> = [4].into();
        let gone = disappeared(&previous, &current, &through);
        assert_eq!(gone, vec![&c(2)]);
    }

    #[test]
    fn new_campaigns_and_status_changes_are_not_disappearances() {
        let previous = [c(1)];
        let mut archived = c(1);
        archived.status = Some("ARCHIVED".into());
        let current = [archived, c(2)];
        assert!(disappeared(&previous, &current, &HashSet::new()).is_empty());
    }

    #[test]
    fn a_listing_is_a_bare_array_or_data_and_every_entry_needs_an_id() {
        let bare =
            br#"[{"id":7,"name":"Q3","status":"ACTIVE","client_id":null},{"id":"8","name":null}]"#;
        assert_eq!(
            parse_listing(bare).unwrap(),
            vec![
                Listed {
                    id: 7,
                    name: Some("Q3".into()),
                    status: Some("ACTIVE".into())
                },
                Listed {
                    id: 8,
                    name: None,
                    status: None
                }
            ]
        );
        assert_eq!(
            parse_listing(br#"{"success":true,"data":[{"id":9}]}"#).unwrap()[0].id,
            9
        );
        assert!(parse_listing(br#"[{"id":7},{"name":"no id"}]"#).is_none());
        assert!(parse_listing(br#"{"message":"Invalid API Key"}"#).is_none());
        assert!(parse_listing(b"<html>").is_none());
    }

    #[test]
    fn the_detail_names_the_campaign_its_status_the_window_and_the_snapshot() {
        let d = describe(&c(5), "default", "T0", "T1", Some(12));
        assert_eq!(d, "campaign 5 \"c5\" (status ACTIVE) disappeared from account default between T0 and T1 without a delete through the gateway; last snapshot 12");
        let nameless = Listed {
            id: 6,
            name: None,
            status: None,
        };
        assert!(describe(&nameless, "a", "T0", "T1", None)
            .starts_with("campaign 6 (no name) (status unknown)"));
        assert!(describe(&nameless, "a", "T0", "T1", None).ends_with("; no snapshot"));
    }
}
