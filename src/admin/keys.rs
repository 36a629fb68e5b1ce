//! `/v1/keys`: the gateway keys listed, created, revoked and rotated over the
//! admin API, as `safedelete keys` does on the command line. A key is in the
//! answer that made it and nowhere else; each action is audited as done by
//! the `admin token`.

use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::AdminState;
use crate::audit::AuditRecord;
use crate::identity::manage::{self, Accounts, CreateRequest, KeyActionError, Listed, Shown, Via};

/// Who the audit trail says acted through this API.
const ACTOR: &str = "admin token";

/// `POST /v1/keys`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    pub name: String,
    pub account: Option<String>,
    /// `90d` or an RFC 3339 time.
    pub expires: Option<String>,
    /// `30/min`.
    pub rate_limit: Option<String>,
}

/// `POST /v1/keys/{name}/rotate` (the body may be left out).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// `24h` when absent.
    pub grace: Option<String>,
}

/// The answer to a revoke.
#[derive(Debug, Serialize)]
pub struct Revoked {
    pub name: String,
    pub revoked: u64,
}

/// The grace period when none is asked for (as `keys rotate`).
const DEFAULT_GRACE: &str = "24h";

fn via(method: &Method, uri: &Uri) -> Via {
    Via {
        method: method.to_string(),
        path: uri.path().to_string(),
        actor: ACTOR.to_string(),
    }
}

/// The body as `T`; an empty body is `T::default()` where `empty` gives one.
fn body<T: DeserializeOwned>(bytes: &Bytes, empty: Option<T>) -> Result<T, ApiError> {
    match empty {
        Some(default) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(default),
        _ => serde_json::from_slice(bytes).map_err(|source| ApiError::Body { source }),
    }
}

async fn audit(state: &AdminState, record: AuditRecord) -> Result<(), ApiError> {
    state
        .audit
        .write_durable(record)
        .await
        .map(drop)
        .map_err(|source| ApiError::KeyAudit { source })
}

/// `GET /v1/keys`
pub async fn list(State(state): State<AdminState>) -> Result<Json<Vec<Listed>>, ApiError> {
    let keys = manage::listed(&state.pool, SystemTime::now())
        .await
        .map_err(KeyActionError::from)?;
    Ok(Json(keys))
}

/// `POST /v1/keys`
pub async fn create(
    State(state): State<AdminState>,
    method: Method,
    uri: Uri,
    bytes: Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let req: CreateBody = body(&bytes, None)?;
    let accounts = Accounts {
        names: &state.accounts,
        default: state.default_account.as_deref(),
    };
    let request = CreateRequest {
        name: &req.name,
        account: req.account.as_deref(),
        expires: req.expires.as_deref(),
        rate_limit: req.rate_limit.as_deref(),
        rate_key: "rate_limit",
    };
    let (created, record) =
        manage::create(&state.pool, &accounts, request, &via(&method, &uri)).await?;
    audit(&state, record).await?;
    Ok((
        StatusCode::CREATED,
        Json(to_value(&Shown::created(&created))),
    ))
}

/// `POST /v1/keys/{name}/revoke`
pub async fn revoke(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    method: Method,
    uri: Uri,
) -> Result<Json<Revoked>, ApiError> {
    let (revoked, record) = manage::revoke(&state.pool, &name, &via(&method, &uri)).await?;
    audit(&state, record).await?;
    Ok(Json(Revoked { name, revoked }))
}

/// `POST /v1/keys/{name}/rotate`
pub async fn rotate(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    method: Method,
    uri: Uri,
    bytes: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let req: RotateBody = body(&bytes, Some(RotateBody::default()))?;
    let grace = manage::parse_grace(req.grace.as_deref().unwrap_or(DEFAULT_GRACE))?;
    let (rotated, record) = manage::rotate(&state.pool, &name, grace, &via(&method, &uri)).await?;
    audit(&state, record).await?;
    Ok(Json(to_value(&Shown::rotated(&rotated))))
}

/// The answer as a value: `Shown` borrows from the key, which is dropped
/// (and not kept anywhere) once the answer is built.
fn to_value(shown: &Shown<'_>) -> serde_json::Value {
    serde_json::to_value(shown).expect("Shown has only strings and options of strings")
}
