//! Reading what a destructive call would destroy from SmartLead, with the
//! client's own key: each part is streamed through [`PartWriter`] (hashed,
//! compressed, stored in chunks), and reads that hit 429/5xx, drop mid-body or
//! stall are retried with backoff that honours `Retry-After`, all within one
//! time budget for the whole snapshot. Errors that waiting will not fix end
//! the capture at once: any other 4xx (401/403/404: wrong key, no access,
//! gone), and the same 5xx [`SAME_5XX_LIMIT`] times in a row for one part.

use std::time::Duration;

use crate::db::Pool;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use super::csv_rows::CsvRows;
use super::store::{PartKind, PartSummary, PartWriter, StoreError};
use crate::upstream::client::RequestBody;
use crate::upstream::{Pace, Upstream};

/// A part whose read gets the same 5xx this many times in a row is refused:
/// SmartLead is failing on it, and waiting out the whole budget (minutes)
/// would only hold the client until it times out.
pub const SAME_5XX_LIMIT: u32 = 3;

/// Why a part could not be captured.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{kind}: the snapshot budget of {budget:?} ran out")]
    Budget { kind: PartKind, budget: Duration },
    #[error("{kind}: SmartLead answered {status}")]
    Status { kind: PartKind, status: StatusCode },
    #[error("{kind}: SmartLead answered {status} {times} times in a row")]
    Persistent {
        kind: PartKind,
        status: StatusCode,
        times: u32,
    },
    #[error("{kind}: could not reach SmartLead: {source}")]
    Upstream {
        kind: PartKind,
        #[source]
        source: crate::upstream::client::ClientError,
    },
    #[error("{kind}: the download failed mid-body: {source}")]
    Body {
        kind: PartKind,
        #[source]
        source: hyper::Error,
    },
    #[error("{kind}: the download stalled")]
    Stalled { kind: PartKind },
    #[error("{kind}: the answer is larger than the {max} bytes read into memory")]
    TooLarge { kind: PartKind, max: usize },
    #[error("{kind}: the answer is not the JSON expected")]
    NotJson { kind: PartKind },
    #[error("{kind}: cannot store it: {source}")]
    Store {
        kind: PartKind,
        #[source]
        source: StoreError,
    },
}

impl FetchError {
    /// True when the database, not SmartLead, failed.
    pub fn is_storage(&self) -> bool {
        matches!(self, FetchError::Store { .. })
    }
}

/// Where and how to read: the target (for logs), the caller's key, the budget.
pub struct Source<'a> {
    pub upstream: &'a Upstream,
    pub pool: &'a Pool,
    /// What is being read about, for logs (`campaign:5/lead:7`).
    pub target: &'a str,
    /// The `api_key` value exactly as the client sent it (still encoded).
    pub api_key_raw: Option<&'a str>,
    pub user_agent: Option<HeaderValue>,
    pub deadline: Instant,
    pub budget: Duration,
    /// The account's rate limit, taken before every request.
    pub pace: Option<&'a Pace>,
}

impl Source<'_> {
    /// A request to SmartLead at `path` under `/api/v1` (which may carry a
    /// query), never logged: it holds the key.
    pub fn request(&self, method: Method, path: &str, body: Option<Bytes>) -> Request<RequestBody> {
        let s = self.upstream;
        let mut target = format!("/api/v1{path}");
        if let Some(key) = self.api_key_raw {
            target.push_str(if path.contains('?') {
                "&api_key="
            } else {
                "?api_key="
            });
            target.push_str(key);
        }
        let uri = Uri::builder()
            .scheme(s.scheme.clone())
            .authority(s.authority.clone())
            .path_and_query(target)
            .build();
        let mut builder = Request::builder().method(method);
        builder = match uri {
            Ok(uri) => builder.uri(uri),
            // A key that is not a valid query string cannot reach SmartLead either.
            Err(_) => builder.uri(format!("{}://{}/", s.scheme, s.authority)),
        };
        builder = builder.header(header::HOST, s.host_header());
        if let Some(ua) = &self.user_agent {
            builder = builder.header(header::USER_AGENT, ua.clone());
        } else {
            builder = builder.header(
                header::USER_AGENT,
                concat!("safedelete/", env!("CARGO_PKG_VERSION")),
            );
        }
        let body = match body {
            Some(b) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                RequestBody::Full(Some(b))
            }
            None => RequestBody::Empty,
        };
        builder
            .body(body)
            .expect("a request built from valid parts")
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Sends one request, waiting for its head at most the first-byte timeout
    /// and never past the deadline.
    pub async fn send(
        &self,
        kind: PartKind,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, FetchError> {
        if let Some(pace) = self.pace {
            // Held for a turn, within the budget.
            while let Err(wait) = pace().await {
                if wait >= self.remaining() {
                    return Err(FetchError::Budget {
                        kind,
                        budget: self.budget,
                    });
                }
                tokio::time::sleep(wait).await;
            }
        }
        let wait = self.remaining().min(self.upstream.first_byte_timeout);
        match tokio::time::timeout(wait, self.upstream.client.request(req)).await {
            Err(_) if self.remaining().is_zero() => Err(FetchError::Budget {
                kind,
                budget: self.budget,
            }),
            Err(_) => Err(FetchError::Stalled { kind }),
            Ok(Err(source)) => Err(FetchError::Upstream { kind, source }),
            Ok(Ok(resp)) => Ok(resp),
        }
    }

    /// Sends a request, retrying connection failures, 429 and 5xx (waiting
    /// for `Retry-After` when given) up to three tries ([`SAME_5XX_LIMIT`])
    /// while the budget allows; any other status is final at once. Returns
    /// the last response, whatever its status, when retrying is not possible.
    pub async fn send_retrying(
        &self,
        kind: PartKind,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Response<Incoming>, FetchError> {
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let req = self.request(method.clone(), path, body.clone());
            let (retry_after, outcome) = match self.send(kind, req).await {
                Ok(resp)
                    if resp.status() == StatusCode::TOO_MANY_REQUESTS
                        || resp.status().is_server_error() =>
                {
                    (retry_after(&resp), Ok(resp))
                }
                Ok(resp) => return Ok(resp),
                Err(err @ FetchError::Budget { .. }) => return Err(err),
                Err(err) => (None, Err(err)),
            };
            let wait = retry_after.unwrap_or_else(|| backoff(attempt));
            if attempt >= SAME_5XX_LIMIT || wait >= self.remaining() {
                return outcome;
            }
            tracing::info!(target = self.target, %method, attempt, ?wait, "SmartLead call failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// Captures one part from `path`, retrying within the budget.
    pub async fn capture(
        &self,
        snapshot_id: i64,
        kind: PartKind,
        path: &str,
    ) -> Result<PartSummary, FetchError> {
        let mut attempt: u32 = 0;
        // The last 5xx and how many times in a row it came.
        let mut same_5xx: Option<(StatusCode, u32)> = None;
        loop {
            attempt += 1;
            if self.remaining().is_zero() {
                return Err(FetchError::Budget {
                    kind,
                    budget: self.budget,
                });
            }
            let req = self.request(Method::GET, path, None);
            let outcome = match self.send(kind, req).await {
                Ok(resp) => self.store(snapshot_id, kind, resp).await,
                Err(e) => Err(Retry::Transient(e, None)),
            };
            let (err, retry_after) = match outcome {
                Ok(summary) => return Ok(summary),
                Err(Retry::Fatal(e)) => return Err(e),
                Err(Retry::Transient(e, retry_after)) => (e, retry_after),
            };
            if matches!(err, FetchError::Budget { .. }) {
                return Err(err);
            }
            same_5xx = match (&err, same_5xx) {
                (FetchError::Status { status, .. }, Some((last, n)))
                    if status.is_server_error() && *status == last =>
                {
                    Some((last, n + 1))
                }
                (FetchError::Status { status, .. }, _) if status.is_server_error() => {
                    Some((*status, 1))
                }
                _ => None,
            };
            if let Some((status, times)) = same_5xx.filter(|&(_, n)| n >= SAME_5XX_LIMIT) {
                tracing::warn!(target = self.target, %kind, %status, times, "snapshot read keeps failing the same way; not retrying");
                return Err(FetchError::Persistent {
                    kind,
                    status,
                    times,
                });
            }
            let wait = retry_after.unwrap_or_else(|| backoff(attempt));
            if wait >= self.remaining() {
                tracing::warn!(target = self.target, %kind, error = %err, ?wait, "snapshot read failed; no budget left to retry");
                return Err(err);
            }
            tracing::info!(target = self.target, %kind, attempt, error = %err, ?wait, "snapshot read failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    async fn store(
        &self,
        snapshot_id: i64,
        kind: PartKind,
        resp: Response<Incoming>,
    ) -> Result<PartSummary, Retry> {
        let status = resp.status();
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            let retry_after = retry_after(&resp);
            return Err(Retry::Transient(
                FetchError::Status { kind, status },
                retry_after,
            ));
        }
        if !status.is_success() {
            return Err(Retry::Fatal(FetchError::Status { kind, status }));
        }
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let store_err = |source| Retry::Fatal(FetchError::Store { kind, source });
        let mut writer = PartWriter::begin(
            self.pool,
            snapshot_id,
            kind,
            content_type.as_deref(),
            status.as_u16(),
        )
        .await
        .map_err(store_err)?;
        let mut body = resp.into_body();
        let mut rows = (kind == PartKind::LeadsCsv).then(CsvRows::default);
        loop {
            let wait = self.remaining().min(self.upstream.body_idle_timeout);
            let frame = match tokio::time::timeout(wait, body.frame()).await {
                Err(_) => {
                    let err = if self.remaining().is_zero() {
                        FetchError::Budget {
                            kind,
                            budget: self.budget,
                        }
                    } else {
                        FetchError::Stalled { kind }
                    };
                    let _ = writer.fail(&err.to_string()).await;
                    return Err(Retry::Transient(err, None));
                }
                Ok(None) => break,
                Ok(Some(Err(source))) => {
                    let err = FetchError::Body { kind, source };
                    let _ = writer.fail(&err.to_string()).await;
                    return Err(Retry::Transient(err, None));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data() {
                if let Some(rows) = &mut rows {
                    rows.feed(&data);
                }
                writer.write(&data).await.map_err(store_err)?;
            }
        }
        let summary = writer.finish().await.map_err(store_err)?;
        if let Some(rows) = rows {
            // Informational: a failure here does not make the snapshot worse.
            let _ = sqlx::query(
                "UPDATE snapshot_parts SET rows = $1 WHERE snapshot_id = $2 AND kind = $3",
            )
            .bind(rows.data_rows() as i64)
            .bind(snapshot_id)
            .bind(kind.as_str())
            .execute(self.pool)
            .await;
        }
        Ok(summary)
    }

    /// GETs `path` and reads the answer whole (at most `max` bytes),
    /// retrying 429/5xx and failed connections within the budget; the
    /// status is the caller's to judge.
    pub async fn get_whole(
        &self,
        kind: PartKind,
        path: &str,
        max: usize,
    ) -> Result<Whole, FetchError> {
        let resp = self.send_retrying(kind, Method::GET, path, None).await?;
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let limited = http_body_util::Limited::new(resp.into_body(), max);
        let wait = self.remaining().min(self.upstream.body_idle_timeout);
        let body = match tokio::time::timeout(wait, limited.collect()).await {
            Err(_) => return Err(FetchError::Stalled { kind }),
            Ok(Err(_)) => return Err(FetchError::TooLarge { kind, max }),
            Ok(Ok(c)) => c.to_bytes(),
        };
        Ok(Whole {
            status,
            content_type,
            body,
        })
    }

    /// Stores bytes already read (the campaign object from the facts call).
    pub async fn store_bytes(
        &self,
        snapshot_id: i64,
        kind: PartKind,
        content_type: Option<&str>,
        bytes: &[u8],
    ) -> Result<PartSummary, FetchError> {
        let store_err = |source| FetchError::Store { kind, source };
        let mut writer = PartWriter::begin(self.pool, snapshot_id, kind, content_type, 200)
            .await
            .map_err(store_err)?;
        writer.write(bytes).await.map_err(store_err)?;
        writer.finish().await.map_err(store_err)
    }
}

/// An answer read whole.
#[derive(Debug)]
pub struct Whole {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub body: Bytes,
}

/// `Retry-After`, in seconds (the form SmartLead documents) or an HTTP date.
fn retry_after(resp: &Response<Incoming>) -> Option<Duration> {
    crate::upstream::headers::retry_after(resp.headers(), std::time::SystemTime::now())
}

/// Exponential backoff: 250 ms, 500 ms, 1 s, ... capped at 8 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250) * 2u32.saturating_pow(attempt.saturating_sub(1)).min(32)
}

enum Retry {
    Transient(FetchError, Option<Duration>),
    Fatal(FetchError),
}
