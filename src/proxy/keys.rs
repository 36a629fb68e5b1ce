//! Gateway keys in the proxy (`identity.mode = "gateway_keys"`): the caller
//! is found by their key, held to their key's and their account's rate
//! limits, and the account's SmartLead key takes the gateway key's place in
//! the query and the JSON body; it is masked out of what comes back.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use hyper::body::{Body, Incoming};

use super::body::Tracker;
use super::error::ProxyError;
use super::{may_carry_key, ProxyService};
use crate::audit::body_key::BodyKeyScanner;
use crate::identity::{swap, AccountKey, Identities, KeyEntry};

/// The most of a JSON body read whole to swap its key (gateway keys only;
/// SmartLead's largest bodies, 400 leads, are far smaller).
pub(super) const KEY_SWAP_BODY_MAX: usize = 16 * 1024 * 1024;

/// The client's body: read whole (to swap its key), or still streaming.
pub(super) enum ClientBody {
    Read(Bytes),
    Unread(Incoming),
}

/// Masks the SmartLead key in response headers (a `Location` that repeats
/// the URL, say).
pub(super) fn mask_headers(headers: &mut http::HeaderMap, mask: &swap::Mask) {
    for value in headers.values_mut() {
        if let std::borrow::Cow::Owned(masked) = mask.apply(value.as_bytes()) {
            if let Ok(v) = HeaderValue::from_bytes(&masked) {
                *value = v;
            }
        }
    }
}

impl ProxyService {
    /// Gateway keys: finds the caller by the key in the query or the JSON
    /// body (a body that may carry one is read whole first), applies the
    /// key's and the account's rate limits, and puts the account's SmartLead
    /// key where the gateway key was. Nothing is forwarded on an error.
    pub(super) async fn swap_keys(
        &self,
        identities: &Identities,
        query_key: Option<&str>,
        parts: &mut http::request::Parts,
        body: ClientBody,
        tracker: &mut Tracker,
    ) -> Result<(ClientBody, Arc<KeyEntry>), ProxyError> {
        let metrics = &self.state.metrics;
        let body = match body {
            ClientBody::Unread(incoming) if may_carry_key(parts) && !incoming.is_end_stream() => {
                ClientBody::Read(self.read_body(incoming, KEY_SWAP_BODY_MAX, tracker).await?)
            }
            other => other,
        };
        let body_keys = match &body {
            ClientBody::Read(bytes) => BodyKeyScanner::default().feed(bytes),
            ClientBody::Unread(_) => Vec::new(),
        };
        let presented = query_key
            .into_iter()
            .chain(body_keys.iter().map(String::as_str));
        let caller = identities.authenticate(presented).inspect_err(|why| {
            metrics.record_unauthorized(why.reason());
            tracker.record.actor_label = why.key_name().map(str::to_string);
        })?;
        tracker.record.actor_label = Some(caller.name.clone());
        tracker.record.account = Some(caller.account.name.clone());
        if let Some(limiter) = &caller.limiter {
            if let Err(retry_after) = limiter.try_acquire() {
                metrics.record_rate_limited("key", &caller.name);
                return Err(ProxyError::RateLimited {
                    limit: format!("the gateway key {:?} ({})", caller.name, limiter.rate()),
                    retry_after,
                });
            }
        }
        let account: &AccountKey = &caller.account;
        if let Some(limiter) = &account.limiter {
            if let Err(retry_after) = limiter.acquire().await {
                return Err(ProxyError::RateLimited {
                    limit: format!(
                        "the SmartLead account {:?} ({}), shared by all its keys",
                        account.name,
                        limiter.rate()
                    ),
                    retry_after,
                });
            }
        }
        if query_key.is_some() {
            if let Some(query) = parts.uri.query() {
                let swapped = format!(
                    "{}?{}",
                    parts.uri.path(),
                    swap::swap_query(query, &account.api_key_query)
                );
                let pq = PathAndQuery::try_from(swapped).map_err(|_| {
                    ProxyError::BadRequest("safedelete: the request target is not valid")
                })?;
                parts.uri = Uri::from(pq);
            }
        }
        let body = match (body, body_keys.first()) {
            (ClientBody::Read(bytes), Some(key)) => {
                ClientBody::Read(swap::swap_body(&bytes, key, account.api_key.expose())?)
            }
            (body, _) => body,
        };
        if let ClientBody::Read(bytes) = &body {
            parts.headers.remove(header::TRANSFER_ENCODING);
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        }
        Ok((body, caller))
    }
}
