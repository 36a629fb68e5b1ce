//! The admin listener: liveness, readiness, Prometheus metrics and the JSON
//! API operators read the trail with, on its own (loopback by default)
//! address so operators never share a port with clients. When `admin.token`
//! is set, everything except `/healthz` and `/readyz` needs
//! `Authorization: Bearer <token>`.
//!
//! # Layout
//! - [`api`]: `/v1/audit`, `/v1/history/{campaign_id}`, `/v1/snapshots[/{id}]`.
//! - [`part`]: `/v1/snapshots/{id}/parts/{kind}`, a part streamed back.
//! - [`keys`]: `/v1/keys`, gateway keys listed, created, revoked, rotated.
//! - [`restores`]: `/v1/restores`, restores started, resumed and followed.
//! - [`params`]: strict query and path parameter parsing.
//! - [`error`]: the API's errors and their one mapping to responses.

pub mod api;
pub mod error;
pub mod keys;
pub mod params;
pub mod part;
pub mod restores;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::audit::AuditSink;
use crate::config::Secret;
use crate::metrics::Metrics;

/// What the admin endpoints read.
#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub audit: AuditSink,
    /// True once the database is open and both listeners are bound; false
    /// again while draining at shutdown.
    pub ready: Arc<AtomicBool>,
    /// Bearer token required for everything but the health endpoints.
    pub token: Option<Secret>,
    /// The gateway's database, read by the `/v1` API.
    pub pool: crate::db::Pool,
    /// The SmartLead accounts a new gateway key may send for.
    pub accounts: Vec<String>,
    /// The account a new key sends for when none is named.
    pub default_account: Option<String>,
    /// The SmartLead accounts' keys and limiters (restores send with them).
    pub identities: Arc<crate::identity::Identities>,
    /// The upstream client restores send through.
    pub upstream: crate::upstream::Upstream,
    /// The restores this gateway runs now.
    pub restores: Arc<restores::Running>,
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/audit", get(api::audit))
        .route("/v1/history/{campaign_id}", get(api::history))
        .route("/v1/snapshots", get(api::snapshots))
        .route("/v1/snapshots/{id}", get(api::snapshot))
        .route("/v1/snapshots/{id}/parts/{kind}", get(part::part))
        .route("/v1/keys", get(keys::list).post(keys::create))
        .route("/v1/keys/{name}/revoke", post(keys::revoke))
        .route("/v1/keys/{name}/rotate", post(keys::rotate))
        .route("/v1/restores", get(restores::list).post(restores::start))
        .route("/v1/restores/{id}", get(restores::get))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(protected)
        .with_state(state)
}

async fn require_token(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    let Some(token) = &state.token else {
        return next.run(req).await;
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .unwrap_or("");
    if constant_time_eq(presented, token.expose()) {
        next.run(req).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [
                (header::CONTENT_TYPE, "application/json; charset=utf-8"),
                (header::WWW_AUTHENTICATE, "Bearer"),
            ],
            r#"{"error":"missing or wrong admin token"}"#,
        )
            .into_response()
    }
}

/// Compares digests of both values, touching every byte, so the time taken
/// says nothing about how much of the token was right.
fn constant_time_eq(a: &str, b: &str) -> bool {
    let (da, db) = (
        crate::digest::sha256(a.as_bytes()),
        crate::digest::sha256(b.as_bytes()),
    );
    da.iter()
        .zip(db.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

async fn healthz() -> impl IntoResponse {
    json(StatusCode::OK, r#"{"status":"ok"}"#)
}

/// Ready while the proxy listener is open and the audit trail can be
/// written; the reason says which is not the case.
/// How long `/readyz` waits for the database to answer.
const READY_PING_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

async fn readyz(State(state): State<AdminState>) -> Response {
    if !state.ready.load(Ordering::Acquire) {
        return json(StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"not ready"}"#).into_response();
    }
    let reason = match state.audit.failure() {
        Some(cause) => Some(format!("the audit trail cannot be written: {cause}")),
        // A store that does not answer refuses every guarded call.
        None => crate::db::ping(&state.pool, READY_PING_WITHIN)
            .await
            .err()
            .map(|cause| format!("the database does not answer: {cause}")),
    };
    if let Some(reason) = reason {
        let body = serde_json::json!({ "status": "not ready", "reason": reason });
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
    }
    json(StatusCode::OK, r#"{"status":"ready"}"#).into_response()
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(state.audit.depth()),
    )
}

fn json(status: StatusCode, body: &'static str) -> impl IntoResponse {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
}
