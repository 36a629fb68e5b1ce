//! One SmartLead call of a restore, paced: a 429 waits for `Retry-After`
//! (seconds or an HTTP date) and goes again, however long that takes; an
//! exhausted `x-ratelimit-remaining` waits for `x-ratelimit-reset`; a
//! connection failure or a 5xx is tried three times in all, then the restore
//! stops (and can be resumed).

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;

use crate::upstream::client::RequestBody;
use crate::upstream::headers::retry_after;
use crate::upstream::{Pace, Upstream};

/// The most of an answer read (SmartLead's answers to writes are small).
const ANSWER_MAX: usize = 4 * 1024 * 1024;
/// Tries of a call that failed for the connection or with a 5xx.
const TRIES: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{method} {path}: SmartLead answered {status}: {message}")]
    Refused {
        method: Method,
        path: String,
        status: StatusCode,
        message: String,
    },
    #[error("{method} {path}: {problem} ({TRIES} tries)")]
    Failed {
        method: Method,
        path: String,
        problem: String,
    },
}

/// A 2xx answer, its body as JSON (`Null` when it was not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

/// Told how long a call waits and why.
pub type OnWait = Box<dyn Fn(Duration, &str) + Send + Sync>;

/// What a restore sends with: the endpoint and the account's key.
pub struct Caller {
    pub upstream: Upstream,
    /// The key, percent-encoded for the query.
    pub key_query: String,
    /// Told about every wait, for the progress output.
    pub on_wait: OnWait,
    /// In the gateway, the account's own limiter: a restore takes turns with
    /// the traffic it forwards for the same account.
    pub pace: Option<Pace>,
}

impl Caller {
    /// Sends `method path` (under `/api/v1`) with a JSON body; returns a 2xx
    /// answer, or why not.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, CallError> {
        let mut failures = 0;
        loop {
            let failed = |problem: String| CallError::Failed {
                method: method.clone(),
                path: path.to_string(),
                problem,
            };
            if let Some(pace) = &self.pace {
                while let Err(wait) = pace().await {
                    self.wait(wait, "the account's rate limit in the gateway")
                        .await;
                }
            }
            let req = self.request(&method, path, body);
            let sent = tokio::time::timeout(
                self.upstream.first_byte_timeout,
                self.upstream.client.request(req),
            )
            .await;
            let resp = match sent {
                Ok(Ok(resp)) => resp,
                Ok(Err(err)) => {
                    failures += 1;
                    if failures >= TRIES {
                        return Err(failed(format!("cannot reach SmartLead: {err}")));
                    }
                    self.wait(backoff(failures), "SmartLead could not be reached")
                        .await;
                    continue;
                }
                Err(_) => {
                    failures += 1;
                    if failures >= TRIES {
                        return Err(failed("SmartLead did not answer in time".into()));
                    }
                    self.wait(backoff(failures), "SmartLead did not answer in time")
                        .await;
                    continue;
                }
            };
            let status = resp.status();
            let retry_after = retry_after(resp.headers(), SystemTime::now());
            let reset = exhausted_until(resp.headers(), SystemTime::now());
            let bytes = match http_body_util::Limited::new(resp.into_body(), ANSWER_MAX)
                .collect()
                .await
            {
                Ok(c) => c.to_bytes(),
                Err(_) if status.is_success() => {
                    return Err(failed("the answer was cut off or too large".into()))
                }
                Err(_) => Bytes::new(),
            };
            if status == StatusCode::TOO_MANY_REQUESTS {
                // SmartLead's limit: wait as told and go on, however long.
                self.wait(
                    retry_after.unwrap_or(Duration::from_secs(30)),
                    "SmartLead's rate limit (429)",
                )
                .await;
                continue;
            }
            if status.is_server_error() {
                failures += 1;
                if failures >= TRIES {
                    return Err(CallError::Refused {
                        method: method.clone(),
                        path: path.to_string(),
                        status,
                        message: self.masked(message(&bytes)),
                    });
                }
                self.wait(
                    retry_after.unwrap_or(backoff(failures)),
                    "a SmartLead error (5xx)",
                )
                .await;
                continue;
            }
            if !status.is_success() {
                return Err(CallError::Refused {
                    method,
                    path: path.to_string(),
                    status,
                    message: self.masked(message(&bytes)),
                });
            }
            if let Some(wait) = reset {
                self.wait(wait, "SmartLead's rate limit (x-ratelimit-remaining: 0)")
                    .await;
            }
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Ok(Answer { status, body });
        }
    }

    /// SmartLead's reason with the key masked, should SmartLead echo it:
    /// the reason is shown, and kept with the restore.
    fn masked(&self, text: String) -> String {
        let key = percent_encoding::percent_decode_str(&self.key_query).decode_utf8_lossy();
        let mask = crate::identity::swap::Mask::new(&key);
        String::from_utf8_lossy(&mask.apply(text.as_bytes())).into_owned()
    }

    async fn wait(&self, wait: Duration, why: &str) {
        (self.on_wait)(wait, why);
        tokio::time::sleep(wait).await;
    }

    fn request(&self, method: &Method, path: &str, body: Option<&Value>) -> Request<RequestBody> {
        let u = &self.upstream;
        let sep = if path.contains('?') { '&' } else { '?' };
        let uri = format!(
            "{}://{}/api/v1{path}{sep}api_key={}",
            u.scheme, u.authority, self.key_query
        );
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(header::HOST, u.host_header())
            .header(
                header::USER_AGENT,
                concat!("safedelete-restore/", env!("CARGO_PKG_VERSION")),
            );
        let body = match body {
            Some(v) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                RequestBody::Full(Some(Bytes::from(v.to_string())))
            }
            None => RequestBody::Empty,
        };
        builder
            .body(body)
            .expect("a request built from valid parts")
    }
}

fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1 << failures.min(5))
}

/// SmartLead's reason, from `{"error": ...}`, `{"message": ...}` or the text.
fn message(bytes: &[u8]) -> String {
    let text = match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => v
            .get("error")
            .and_then(|e| {
                e.as_str()
                    .map(str::to_string)
                    .or_else(|| e.get("message").and_then(Value::as_str).map(str::to_string))
            })
            .or_else(|| v.get("message").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| v.to_string()),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    };
    text.chars().take(500).collect()
}

/// When `x-ratelimit-remaining` is 0: the wait until `x-ratelimit-reset` (a Unix time).
pub fn exhausted_until(headers: &http::HeaderMap, now: SystemTime) -> Option<Duration> {
    let get = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<u64>().ok();
    if get("x-ratelimit-remaining")? != 0 {
        return None;
    }
    let reset = SystemTime::UNIX_EPOCH + Duration::from_secs(get("x-ratelimit-reset")?);
    Some(
        reset
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(3600)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exhausted_window_waits_for_its_reset() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let mut h = http::HeaderMap::new();
        h.insert("x-ratelimit-remaining", "3".parse().unwrap());
        h.insert("x-ratelimit-reset", "1012".parse().unwrap());
        assert_eq!(exhausted_until(&h, now), None);
        h.insert("x-ratelimit-remaining", "0".parse().unwrap());
        assert_eq!(exhausted_until(&h, now), Some(Duration::from_secs(12)));
    }

    #[test]
    fn smartleads_reason_is_read_from_its_error_shapes() {
        assert_eq!(
            message(br#"{"error":"Campaign not found"}"#),
            "Campaign not found"
        );
        assert_eq!(
            message(br#"{"message":"Invalid API Key"}"#),
            "Invalid API Key"
        );
        assert_eq!(
            message(br#"{"error":{"code":"X","message":"too many"}}"#),
            "too many"
        );
        assert_eq!(message(b"plain"), "plain");
    }
}
