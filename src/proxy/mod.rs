//! The proxy listener's service: classify a request, forward it to SmartLead
//! with clean headers, and stream the answer back, recording every request.
//!
//! Everything that can fail becomes a response here (`Error = Infallible`);
//! [`error::ProxyError`] is the one place that picks status codes.

pub mod body;
pub mod error;
mod keys;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};

use crate::audit::{redact, AuditRecord, AuditSink, OperationKind};
use crate::config::Config;
use crate::guard::classify::{classify, ClassifyError, Guarded, Operation};
use crate::guard::context::GuardContext;
use crate::guard::operations::Op;
use crate::guard::pipeline::{self, GuardInput};
use crate::identity::{Identities, KeyEntry};
use crate::metrics::Metrics;
use crate::upstream::client::{self, RequestBody, UpstreamClient};
use crate::upstream::{headers, Upstream};
use body::{ResponseBody, Tracker};
use error::ProxyError;
use keys::{mask_headers, ClientBody};

/// What every request handler shares: the upstream, the audit queue, the
/// metrics, the bits of config the hot path reads, and the guard.
pub struct ProxyState {
    pub upstream: Upstream,
    /// Which query parameters are secret (`audit.redact_params` and the built-ins).
    pub redactor: redact::Redactor,
    /// Whether passthrough requests are recorded (`audit.passthrough`).
    pub audit_passthrough: bool,
    /// Refuse every request while the audit trail cannot be written
    /// (`audit.on_failure = "refuse"`).
    pub audit_refuse: bool,
    pub audit: AuditSink,
    pub metrics: Arc<Metrics>,
    /// Set when the shutdown grace period ran out and connections are being
    /// cut: unfinished requests are then recorded as `shutting_down`.
    pub cutting: AtomicBool,
    /// Where destructive calls go.
    pub guard: Arc<GuardContext>,
    /// Gateway keys and the accounts they send for; `None` in passthrough mode.
    pub identities: Option<Arc<Identities>>,
}

impl ProxyState {
    pub fn new(
        config: &Config,
        upstream: Upstream,
        audit: AuditSink,
        metrics: Arc<Metrics>,
        guard: Arc<GuardContext>,
        identities: Arc<Identities>,
    ) -> Self {
        ProxyState {
            upstream,
            redactor: redact::Redactor::new(&config.audit.redact_params),
            audit_passthrough: config.audit.passthrough,
            audit_refuse: config.audit.on_failure == crate::config::OnAuditFailure::Refuse,
            audit,
            metrics,
            cutting: AtomicBool::new(false),
            guard,
            identities: identities.gateway_keys().then_some(identities),
        }
    }
}

/// The per-connection service; cloned for every request, so it is one `Arc`.
#[derive(Clone)]
pub struct ProxyService(Arc<ConnectionContext>);

/// What every request on one client connection shares.
pub struct ConnectionContext {
    pub state: Arc<ProxyState>,
    /// The upstream pool of the worker this connection runs on.
    pub client: UpstreamClient,
    pub client_addr: SocketAddr,
    /// The client's IP as text, for `X-Forwarded-For` and the audit record.
    client_ip: HeaderValue,
    /// `http` or `https`: the listener's scheme, for `X-Forwarded-Proto`.
    pub scheme: &'static str,
    /// The key fingerprints of this connection.
    fingerprints: Fingerprints,
    /// Set when the client stopped reading for `body_idle_timeout` and the
    /// connection was cut (its request is recorded as `client_stalled`).
    pub stalled: Arc<AtomicBool>,
}

impl ProxyService {
    pub fn new(
        state: Arc<ProxyState>,
        client: UpstreamClient,
        client_addr: SocketAddr,
        scheme: &'static str,
    ) -> Self {
        let client_ip = HeaderValue::from_str(&client_addr.ip().to_string())
            .expect("an IP address is a valid header value");
        ProxyService(Arc::new(ConnectionContext {
            state,
            client,
            client_addr,
            client_ip,
            scheme,
            fingerprints: Fingerprints::default(),
            stalled: Arc::default(),
        }))
    }
}

impl std::ops::Deref for ProxyService {
    type Target = ConnectionContext;

    fn deref(&self) -> &ConnectionContext {
        &self.0
    }
}

impl hyper::service::Service<Request<Incoming>> for ProxyService {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(req).await) })
    }
}

impl ProxyService {
    async fn handle(self, req: Request<Incoming>) -> Response<ResponseBody> {
        let state = self.state.clone();
        let (mut parts, body) = req.into_parts();
        // Secrets first: nothing about the request is kept until they are known.
        let mut redacted = parts.uri.query().map(|q| state.redactor.redact_query(q));
        let secrets = redacted.as_ref().map(|r| &r.secrets);
        let request_id = headers::request_id(&parts.headers, secrets);
        // From here on the request is recorded exactly once, even if the
        // client goes away while this future waits (the tracker's drop).
        let record = new_record(
            &parts,
            &request_id,
            redacted.as_mut(),
            &self.client_ip,
            &self.fingerprints,
        );
        let mut tracker = Tracker::new(state.clone(), record, parts.method.clone());
        tracker.connection_stalled = Some(self.stalled.clone());
        let client_version = parts.version;
        if state.audit_refuse {
            if let Some(cause) = state.audit.failure() {
                return self.fail(ProxyError::AuditUnavailable(cause), tracker, &request_id);
            }
        }

        if headers::came_through_here(&parts.headers) {
            return self.fail(ProxyError::Loop, tracker, &request_id);
        }
        let path_and_query = match target(&parts) {
            Ok(pq) => pq,
            Err(err) => return self.fail(err, tracker, &request_id),
        };
        let operation = match classify(
            &parts.method,
            parts.uri.path(),
            parts.uri.query(),
            &parts.headers,
        ) {
            Ok(op) => op,
            Err(err) => match err.operation() {
                Some(op) => {
                    return Box::pin(self.refuse_guarded(op, err, tracker, request_id)).await
                }
                None => return self.fail(err.into(), tracker, &request_id),
            },
        };

        upstream_head(
            &mut parts,
            path_and_query,
            state.upstream.host_header(),
            &self.client_ip,
            self.scheme,
            &request_id,
        );

        // Gateway keys: the caller is the key's name, and the account's
        // SmartLead key goes to SmartLead in place of the gateway key.
        let mut body = ClientBody::Unread(body);
        let mut caller = None;
        if let Some(identities) = state.identities.clone() {
            let query_key = redacted.as_ref().and_then(|r| r.api_key.as_deref());
            let swapped = self.swap_keys(&identities, query_key, &mut parts, body, &mut tracker);
            match Box::pin(swapped).await {
                Ok((swapped, who)) => {
                    body = swapped;
                    caller = Some(who);
                }
                Err(err) => return self.fail(err, tracker, &request_id),
            }
        }

        let (guarded, body) = match (operation, body) {
            (Operation::Passthrough, ClientBody::Read(bytes)) => {
                (None, RequestBody::Full(Some(bytes)))
            }
            (Operation::Passthrough, ClientBody::Unread(body)) if body.is_end_stream() => {
                (None, RequestBody::Empty)
            }
            (Operation::Passthrough, ClientBody::Unread(body)) => {
                let counted = body::CountedIncoming::new(body, may_carry_key(&parts));
                tracker.upload = Some(counted.state());
                (None, RequestBody::Client(counted))
            }
            (Operation::Guarded(guarded), ClientBody::Unread(body)) => {
                (Some((guarded, GuardBody::Unread(body))), RequestBody::Empty)
            }
            (Operation::Guarded(guarded), ClientBody::Read(bytes)) => {
                (Some((guarded, GuardBody::Read(bytes))), RequestBody::Empty)
            }
            (Operation::NeedsBody(pending), body) => {
                let read = match body {
                    ClientBody::Read(bytes) => Ok(bytes),
                    ClientBody::Unread(body) => self.read_small_body(body, &mut tracker).await,
                };
                let bytes = match read {
                    Ok(bytes) => bytes,
                    Err(err) => return self.fail(err, tracker, &request_id),
                };
                let op = pending.op();
                match pending.finish(&bytes) {
                    // Not destructive after all (a status change that is not a stop).
                    Ok(None) => (None, RequestBody::Full(Some(bytes))),
                    Ok(Some(guarded)) => {
                        (Some((guarded, GuardBody::Read(bytes))), RequestBody::Empty)
                    }
                    Err(err) => {
                        return Box::pin(self.refuse_guarded(op, err, tracker, request_id)).await
                    }
                }
            }
        };
        if let Some((guarded, body)) = guarded {
            // Boxed, so that passthrough requests do not carry its state.
            let call = GuardedCall {
                guarded,
                parts,
                body,
                redacted,
                caller,
            };
            return Box::pin(self.guarded(call, tracker, request_id, client_version)).await;
        }

        let sent = Instant::now();
        match forward(&state, &self.client, parts, body, tracker.upload.as_deref()).await {
            Ok(mut resp) => {
                state.metrics.record_upstream_latency(sent.elapsed());
                tracker.record.upstream_status = Some(resp.status().as_u16());
                tracker.record.status = resp.status().as_u16();
                headers::strip_hop_by_hop(resp.headers_mut());
                *resp.version_mut() = client_version;
                resp.headers_mut()
                    .insert(headers::X_REQUEST_ID.clone(), request_id);
                let (mut parts, incoming) = resp.into_parts();
                let mut body = ResponseBody::upstream(incoming, state.upstream.body_idle_timeout);
                if let Some(caller) = &caller {
                    mask_headers(&mut parts.headers, &caller.account.mask);
                    body.mask(caller.account.mask.stream());
                }
                body.track(tracker);
                Response::from_parts(parts, body)
            }
            Err(err) => {
                let err = match &tracker.upload {
                    Some(u) if u.failed.load(Ordering::Relaxed) => ProxyError::ClientAborted,
                    _ => err,
                };
                self.fail(err, tracker, &request_id)
            }
        }
    }

    /// Reads a guarded call's small body whole (counted, and scanned for a
    /// key like any upload), within [`GUARDED_BODY_MAX`] and the idle timeout.
    async fn read_small_body(
        &self,
        body: Incoming,
        tracker: &mut Tracker,
    ) -> Result<Bytes, ProxyError> {
        self.read_body(body, GUARDED_BODY_MAX, tracker).await
    }

    /// Reads a body whole within `max` bytes (see [`ProxyService::read_small_body`]).
    async fn read_body(
        &self,
        body: Incoming,
        max: usize,
        tracker: &mut Tracker,
    ) -> Result<Bytes, ProxyError> {
        let counted = body::CountedIncoming::new(body, true);
        tracker.upload = Some(counted.state());
        let limited = http_body_util::Limited::new(counted, max);
        let read =
            tokio::time::timeout(self.state.upstream.body_idle_timeout, limited.collect()).await;
        tracker.scrub_body_keys();
        match read {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => {
                Err(ProxyError::BadRequest(if max == GUARDED_BODY_MAX {
                    "safedelete: the body of a guarded call is larger than 64 KiB; nothing was forwarded"
                } else {
                    "safedelete: a JSON body larger than 16 MiB cannot have its key swapped; send the gateway key as the api_key query parameter; nothing was forwarded"
                }))
            }
            Ok(Err(_)) => Err(ProxyError::ClientAborted),
            Err(_) => Err(ProxyError::ClientBodyTimeout {
                after: self.state.upstream.body_idle_timeout,
            }),
        }
    }

    /// Runs the guard pipeline and turns its answer into the response.
    async fn guarded(
        &self,
        call: GuardedCall,
        mut tracker: Tracker,
        request_id: HeaderValue,
        client_version: http::Version,
    ) -> Response<ResponseBody> {
        let state = self.state.clone();
        let GuardedCall {
            guarded,
            parts,
            body,
            redacted,
            caller,
        } = call;
        let body = match body {
            GuardBody::Read(bytes) => bytes,
            // Only the routes that take a body, and unknown deletes (whose
            // bodies the gateway cannot judge), forward one.
            GuardBody::Unread(incoming)
                if guarded.op.forwards_body() && !incoming.is_end_stream() =>
            {
                match self.read_small_body(incoming, &mut tracker).await {
                    Ok(bytes) => bytes,
                    Err(err) => return self.fail(err, tracker, &request_id),
                }
            }
            GuardBody::Unread(_) => Bytes::new(),
        };
        let (api_key_raw, api_key_sha256, actor) = match &caller {
            // The guard's own reads go out with the account's key.
            Some(caller) => (
                Some(caller.account.api_key_query.clone()),
                None,
                Some(caller.name.clone()),
            ),
            None => {
                let mut api_key = redacted.and_then(|r| r.api_key.zip(r.api_key_raw));
                if api_key.is_none() {
                    // A key only in the JSON body: the guard's own reads send it in the query.
                    api_key = body_api_key(&body).map(|key| {
                        let raw = percent_encoding::utf8_percent_encode(
                            &key,
                            percent_encoding::NON_ALPHANUMERIC,
                        )
                        .to_string();
                        (key, raw)
                    });
                }
                let sha256 = api_key.as_ref().map(|(key, _)| redact::key_sha256(key));
                (api_key.map(|(_, raw)| raw), sha256, None)
            }
        };
        tracker.record.bytes_in = body.len() as u64;
        let input = GuardInput {
            op: guarded.op,
            target: guarded.target,
            user_agent: parts.headers.get(header::USER_AGENT).cloned(),
            parts,
            body,
            api_key_raw,
            api_key_sha256,
            actor,
            pace: caller.as_ref().and_then(|c| c.account.pace()),
            record: tracker.record.clone(),
        };
        // The pipeline writes this request's audit record itself, durably.
        tracker.audited = true;
        let op = input.op;
        tracker.record.operation = OperationKind::Guarded(op.name());
        let answer = pipeline::run(state.guard.clone(), input).await;
        state.metrics.record_guarded(op.name(), answer.action);
        tracker.record.status = answer.status.as_u16();
        tracker.record.action = Some(answer.action);
        let mut headers = answer.headers;
        let answer_body = match &caller {
            Some(caller) => {
                mask_headers(&mut headers, &caller.account.mask);
                Bytes::from(caller.account.mask.apply(&answer.body).into_owned())
            }
            None => answer.body,
        };
        let mut body = ResponseBody::full(answer_body);
        body.track(tracker);
        let mut resp = Response::new(body);
        *resp.status_mut() = answer.status;
        *resp.headers_mut() = headers;
        *resp.version_mut() = client_version;
        resp.headers_mut()
            .insert(headers::X_REQUEST_ID.clone(), request_id);
        resp
    }

    /// A guarded call refused for its spelling or its body: recorded
    /// durably as the operation it is, so the refusal carries its audit id
    /// and shows up in the target's history.
    async fn refuse_guarded(
        &self,
        op: Op,
        err: ClassifyError,
        mut tracker: Tracker,
        request_id: HeaderValue,
    ) -> Response<ResponseBody> {
        let err = ProxyError::from(err);
        let mut resp: Response<ResponseBody> = err.to_response(&request_id);
        tracker.scrub_body_keys();
        let r = &mut tracker.record;
        r.operation = OperationKind::Guarded(op.name());
        self.state.metrics.record_guarded(op.name(), "refused");
        if let ProxyError::Refused(ClassifyError::Ambiguous { campaign_id, .. }) = &err {
            r.campaign_id = *campaign_id;
        }
        r.action = Some("refused");
        r.status = err.status().as_u16();
        r.error_kind = Some(err.kind());
        r.bytes_out = resp.body().size_hint().exact().unwrap_or(0);
        r.duration = tracker.started.elapsed();
        match self.state.audit.write_durable(r.clone()).await {
            Ok(id) => {
                tracker.audited = true;
                resp.headers_mut().insert(
                    pipeline::X_SAFEDELETE_AUDIT_ID.clone(),
                    HeaderValue::from(id),
                );
            }
            // The tracker records it through the queue instead.
            Err(e) => {
                tracing::error!(error = %e, "cannot write the audit record of a refused delete")
            }
        }
        tracing::debug!(request_id = ?request_id, error = %err, "delete refused for its spelling");
        resp.body_mut().track(tracker);
        resp
    }

    fn fail(
        &self,
        err: ProxyError,
        mut tracker: Tracker,
        request_id: &HeaderValue,
    ) -> Response<ResponseBody> {
        // The record's id is scrubbed of keys the body carried; log that one.
        tracker.scrub_body_keys();
        let logged_id = tracker.record.request_id.as_str();
        match err.upstream_metric() {
            Some(m) => {
                self.state.metrics.record_upstream_error(m);
                tracing::warn!(request_id = logged_id, error = %err, "upstream request failed");
            }
            None => tracing::debug!(request_id = logged_id, error = %err, "request refused"),
        }
        tracker.record.status = err.status().as_u16();
        tracker.record.error_kind = Some(err.kind());
        let mut resp: Response<ResponseBody> = err.to_response(request_id);
        resp.body_mut().track(tracker);
        resp
    }
}

/// The audit record a request starts with: what it asked for, secrets
/// scrubbed, and who sent it (the key's fingerprint, hashed once per
/// connection).
fn new_record(
    parts: &http::request::Parts,
    request_id: &HeaderValue,
    mut redacted: Option<&mut redact::RedactedQuery>,
    client_ip: &HeaderValue,
    fingerprints: &Fingerprints,
) -> AuditRecord {
    let path = parts.uri.path();
    let no_secrets = redact::Secrets::default();
    // The redacted query moves into the record; nothing else reads it.
    let query = redacted.as_mut().map(|r| std::mem::take(&mut r.query));
    let secrets = redacted.as_ref().map(|r| &r.secrets).unwrap_or(&no_secrets);
    // Scrub before truncating, so a key cut in half cannot survive.
    let user_agent = parts
        .headers
        .get(header::USER_AGENT)
        .map(|v| {
            secrets
                .scrub(&String::from_utf8_lossy(v.as_bytes()))
                .into_owned()
        })
        .map(|ua| truncate(ua, 512));
    let mut record = AuditRecord::empty(OperationKind::Passthrough);
    record.request_id = request_id.to_str().unwrap_or("").to_string();
    record.method = parts.method.as_str().to_string();
    record.path = truncate(secrets.scrub(path).into_owned(), 2048);
    record.query = query.map(|q| truncate(q, 4096));
    record.actor_fingerprint = redacted
        .and_then(|r| r.api_key.as_deref())
        .map(|key| fingerprints.of(key));
    record.client_addr = client_ip.to_str().ok().map(str::to_string);
    record.user_agent = user_agent;
    record.campaign_id = campaign_id(path);
    record
}

/// The last `api_key` seen on a connection and its fingerprint: a client
/// sends the same key on every request, so it is hashed once.
#[derive(Default)]
struct Fingerprints(std::sync::Mutex<Option<(String, String)>>);

impl Fingerprints {
    /// The actor fingerprint of `key`.
    fn of(&self, key: &str) -> String {
        let mut cached = match self.0.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        match &*cached {
            Some((k, fp)) if k == key => fp.clone(),
            _ => {
                let fp = redact::fingerprint(key);
                *cached = Some((key.to_string(), fp.clone()));
                fp
            }
        }
    }
}

/// Turns the client's request head into the one SmartLead gets: hop-by-hop
/// headers and `Expect` gone (the gateway answers `100-continue` itself;
/// hyper sends the 100 when the body is first read), SmartLead's `Host`,
/// `X-Forwarded-For`/`-Proto`, the request id, origin-form, HTTP/1.1.
fn upstream_head(
    parts: &mut http::request::Parts,
    path_and_query: PathAndQuery,
    host: HeaderValue,
    client_ip: &HeaderValue,
    scheme: &'static str,
    request_id: &HeaderValue,
) {
    headers::strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::EXPECT);
    parts.headers.insert(header::HOST, host);
    headers::add_forwarded(&mut parts.headers, client_ip, scheme);
    parts
        .headers
        .insert(headers::X_REQUEST_ID.clone(), request_id.clone());
    // Origin-form: the client connects to the configured upstream.
    parts.uri = Uri::from(path_and_query);
    // The upstream leg is always HTTP/1.1, whatever the client spoke.
    parts.version = http::Version::HTTP_11;
}

/// The request target to forward: origin-form path and query exactly as sent.
fn target(parts: &http::request::Parts) -> Result<PathAndQuery, ProxyError> {
    if parts.method == Method::CONNECT {
        return Err(ProxyError::BadRequest(
            "safedelete: CONNECT is not supported; use the gateway as the API base URL",
        ));
    }
    match parts.uri.path_and_query() {
        Some(pq) if pq.as_str().starts_with('/') => Ok(pq.clone()),
        _ => Err(ProxyError::BadRequest(
            "safedelete: the request target must be a path starting with /",
        )),
    }
}

/// Sends the request upstream. A bodiless GET or HEAD whose connection died
/// before any answer is tried once more (both are safe to repeat); the pooled
/// client itself retries requests that never left on a reused connection.
/// Nothing else is ever retried.
async fn forward(
    state: &ProxyState,
    client: &UpstreamClient,
    parts: http::request::Parts,
    body: RequestBody,
    upload: Option<&body::UploadState>,
) -> Result<Response<Incoming>, ProxyError> {
    let retryable = matches!(parts.method, Method::GET | Method::HEAD) && body.is_end_stream();
    let copy = retryable.then(|| {
        let mut b = Request::builder()
            .method(parts.method.clone())
            .uri(parts.uri.clone())
            .version(parts.version);
        if let Some(h) = b.headers_mut() {
            *h = parts.headers.clone();
        }
        b
    });
    let first = send(state, client, Request::from_parts(parts, body), upload).await;
    match (first, copy) {
        (Err(ProxyError::UpstreamReset { .. }), Some(copy)) => {
            tracing::debug!("upstream connection died before answering; retrying once");
            let req = copy
                .body(RequestBody::Empty)
                .expect("a copy of a valid request is valid");
            Box::pin(send(state, client, req, None)).await
        }
        (result, _) => result,
    }
}

/// One attempt. While the client's body is still streaming, the request may
/// take as long as the body keeps moving (each pause at most
/// `body_idle_timeout`); the time-to-first-byte budget starts once it has all
/// been sent.
async fn send(
    state: &ProxyState,
    client: &UpstreamClient,
    req: Request<RequestBody>,
    upload: Option<&body::UploadState>,
) -> Result<Response<Incoming>, ProxyError> {
    let response = client.request(req);
    tokio::pin!(response);
    if let Some(upload) = upload {
        let mut last = upload.bytes.load(Ordering::Relaxed);
        loop {
            tokio::select! {
                biased;
                result = &mut response => return map_result(state, result),
                _ = upload.done.notified() => break,
                _ = tokio::time::sleep(state.upstream.body_idle_timeout) => {
                    let now = upload.bytes.load(Ordering::Relaxed);
                    if now != last {
                        last = now;
                        continue;
                    }
                    let after = state.upstream.body_idle_timeout;
                    return Err(if upload.waiting_on_client.load(Ordering::Relaxed) {
                        ProxyError::ClientBodyTimeout { after }
                    } else {
                        ProxyError::UpstreamStalledReading { upstream: state.upstream.url.clone(), after }
                    });
                }
            }
        }
    }
    match tokio::time::timeout(state.upstream.first_byte_timeout, response).await {
        Err(_) => Err(ProxyError::UpstreamTimeout {
            upstream: state.upstream.url.clone(),
            after: state.upstream.first_byte_timeout,
        }),
        Ok(result) => map_result(state, result),
    }
}

fn map_result(
    state: &ProxyState,
    result: Result<Response<Incoming>, client::ClientError>,
) -> Result<Response<Incoming>, ProxyError> {
    let upstream = || state.upstream.url.clone();
    match result {
        Ok(resp) => Ok(resp),
        Err(err) if err.is_connect() && is_timeout(&err) => {
            Err(ProxyError::UpstreamConnectTimeout {
                upstream: upstream(),
                after: state.upstream.connect_timeout,
            })
        }
        Err(err) if err.is_plain_http() => Err(ProxyError::UpstreamPlainHttp {
            upstream: upstream(),
            source: err,
        }),
        Err(err) if err.is_connect() => Err(ProxyError::UpstreamConnect {
            upstream: upstream(),
            source: err,
        }),
        Err(err) => Err(ProxyError::UpstreamReset {
            upstream: upstream(),
            source: err,
        }),
    }
}

fn is_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        source = e.source();
    }
    false
}

/// The most of a guarded call's body the gateway reads (they are ids).
const GUARDED_BODY_MAX: usize = 64 * 1024;

/// A guarded call's body: already read (it named the target), or not yet.
enum GuardBody {
    Read(Bytes),
    Unread(Incoming),
}

/// A guarded call as the proxy hands it to the guard.
struct GuardedCall {
    guarded: Guarded,
    parts: http::request::Parts,
    body: GuardBody,
    redacted: Option<redact::RedactedQuery>,
    /// The gateway key's entry, in `gateway_keys` mode.
    caller: Option<Arc<KeyEntry>>,
}

/// An `api_key` string at the top of a JSON body.
fn body_api_key(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("api_key")?.as_str().map(str::to_string)
}

/// Whether the body may carry the key (`api_key` in JSON, which SmartLead
/// accepts for POST, PATCH and PUT), so it is scanned as it streams.
fn may_carry_key(parts: &http::request::Parts) -> bool {
    let writes = matches!(parts.method, Method::POST | Method::PATCH | Method::PUT);
    let json_or_unsaid = match parts.headers.get(header::CONTENT_TYPE) {
        None => true,
        Some(ct) => ct
            .as_bytes()
            .windows(4)
            .any(|w| w.eq_ignore_ascii_case(b"json")),
    };
    writes && json_or_unsaid
}

/// The campaign a path is about (`/api/v1/campaigns/{id}` and below), for the
/// audit trail's per-campaign queries.
fn campaign_id(path: &str) -> Option<i64> {
    let rest = path.strip_prefix("/api/v1/campaigns/")?;
    let id = rest.split('/').next()?;
    if id.is_empty() || id.len() > 18 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse().ok()
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn campaign_ids_come_from_campaign_paths_only() {
        assert_eq!(campaign_id("/api/v1/campaigns/108"), Some(108));
        assert_eq!(campaign_id("/api/v1/campaigns/108/leads-export"), Some(108));
        assert_eq!(campaign_id("/api/v1/campaigns/"), None);
        assert_eq!(campaign_id("/api/v1/campaigns/create"), None);
        assert_eq!(campaign_id("/api/v1/campaigns/99999999999999999999"), None);
        assert_eq!(campaign_id("/api/v1/leads/5"), None);
    }

    /// What a keep-alive GET costs in allocations before it is forwarded:
    /// the calls `handle` makes, in its order (redaction, request id, the
    /// record, classification, the upstream head), on the second request of
    /// a connection (the key's fingerprint is cached by then).
    #[test]
    fn a_keep_alive_get_allocates_little_before_it_is_forwarded() {
        let redactor = redact::Redactor::new(&[]);
        let fingerprints = Fingerprints::default();
        let client_ip = HeaderValue::from_static("127.0.0.1");
        let host = HeaderValue::from_static("server.smartlead.ai");
        let request = || {
            Request::get("/api/v1/campaigns/101?api_key=bench_key_0123456789&offset=0")
                .header(header::USER_AGENT, "curl/8.5.0")
                .header(header::ACCEPT, "*/*")
                .body(())
                .unwrap()
                .into_parts()
                .0
        };
        let before_forwarding = |mut parts: http::request::Parts| {
            let mut redacted = parts.uri.query().map(|q| redactor.redact_query(q));
            let request_id =
                headers::request_id(&parts.headers, redacted.as_ref().map(|r| &r.secrets));
            let record = new_record(
                &parts,
                &request_id,
                redacted.as_mut(),
                &client_ip,
                &fingerprints,
            );
            let path_and_query = target(&parts).unwrap();
            let operation = classify(
                &parts.method,
                parts.uri.path(),
                parts.uri.query(),
                &parts.headers,
            )
            .unwrap();
            assert!(matches!(operation, Operation::Passthrough));
            upstream_head(
                &mut parts,
                path_and_query,
                host.clone(),
                &client_ip,
                "http",
                &request_id,
            );
            (parts, record)
        };
        let first = before_forwarding(request());
        assert_eq!(first.1.actor_fingerprint.as_deref().map(str::len), Some(16));

        let parts = request();
        let mut out = None;
        let counted = allocation_counter::measure(|| {
            out = Some(before_forwarding(parts));
        });
        let (parts, record) = out.unwrap();
        assert_eq!(
            parts.uri,
            "/api/v1/campaigns/101?api_key=bench_key_0123456789&offset=0"
        );
        assert_eq!(record.query.as_deref(), Some("api_key=[REDACTED]&offset=0"));
        assert_eq!(record.actor_fingerprint, first.1.actor_fingerprint);
        // What is left (15): the redacted query, the key as sent and
        // decoded, the secrets to scrub (a list, the key and its encoded
        // spelling); the request id's header value; the record's owned
        // strings (request id, method, path, user agent, fingerprint, client
        // address); and the upstream head's header map growing. Zero needs a
        // record that shares the request head's bytes instead of copying.
        // Before the counting began it was 21.
        assert!(
            counted.count_total <= 15,
            "a keep-alive GET allocated {} times before it was forwarded: {counted:?}",
            counted.count_total
        );
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo".into(), 2), "h");
        assert_eq!(truncate("abc".into(), 10), "abc");
    }
}
