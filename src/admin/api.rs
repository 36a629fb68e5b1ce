//! The admin API's JSON reads: the audit trail (filtered, paged by cursor),
//! a campaign's history, and snapshot listings.

use std::time::SystemTime;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Serialize;

use super::error::ApiError;
use super::params::{parse_id, Params};
use super::AdminState;
use crate::audit::query::{self, Filter, Page, StoredEvent};
use crate::guard::history::{self, History};
use crate::snapshot::store::{self, SnapshotInfo};

/// The query string as name/value pairs; a malformed one is a 400.
pub type RawParams = Result<Query<Vec<(String, String)>>, QueryRejection>;

pub fn params(raw: RawParams, known: &'static [&'static str]) -> Result<Params, ApiError> {
    let Query(pairs) = raw.map_err(|source| ApiError::Query { source })?;
    Params::new(pairs, known)
}

/// One page of audit records, newest first.
#[derive(Debug, Serialize)]
pub struct AuditPage {
    pub items: Vec<StoredEvent>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    pub next_cursor: Option<String>,
}

const AUDIT_PARAMS: &[&str] = &[
    "campaign", "actor", "action", "method", "status", "since", "until", "limit", "cursor",
];

/// `GET /v1/audit`
pub async fn audit(
    State(state): State<AdminState>,
    raw: RawParams,
) -> Result<Json<AuditPage>, ApiError> {
    let p = params(raw, AUDIT_PARAMS)?;
    let now = SystemTime::now();
    let filter = Filter {
        campaign_id: p.id("campaign")?,
        actor: p.get("actor").map(str::to_string),
        action: p
            .get("action")
            .map(|a| {
                crate::audit::query::parse_action(a)
                    .map(str::to_string)
                    .map_err(|_| {
                        ApiError::bad(
                            "action",
                            "one of allowed, archived, paused, denied, refused (or allow, archive, pause, deny)",
                        )
                    })
            })
            .transpose()?,
        method: p
            .get("method")
            .map(|m| {
                (m.len() <= 16 && m.bytes().all(|b| b.is_ascii_alphabetic()))
                    .then(|| m.to_ascii_uppercase())
                    .ok_or_else(|| ApiError::bad("method", "an HTTP method such as GET or DELETE"))
            })
            .transpose()?,
        status: p
            .get("status")
            .map(|s| {
                s.parse::<i64>()
                    .ok()
                    .filter(|s| (100..=599).contains(s))
                    .ok_or_else(|| ApiError::bad("status", "an HTTP status from 100 to 599"))
            })
            .transpose()?,
        since: p.time("since", now)?,
        until: p.time("until", now)?,
    };
    let before = p.get("cursor").map(|c| parse_id("cursor", c)).transpose()?;
    let limit = p.limit()?;
    // One more than asked says whether another page exists, so the last
    // page's cursor is null rather than pointing at an empty page.
    let mut items = query::list(
        &state.pool,
        &filter,
        Page::NewestFirst { before },
        limit + 1,
    )
    .await
    .map_err(|source| ApiError::Audit { source })?;
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next_cursor = more
        .then(|| items.last().map(|e| e.id.to_string()))
        .flatten();
    Ok(Json(AuditPage { items, next_cursor }))
}

/// `GET /v1/history/{campaign_id}`
pub async fn history(
    State(state): State<AdminState>,
    Path(campaign_id): Path<String>,
) -> Result<Json<History>, ApiError> {
    let campaign_id = parse_id("campaign_id", &campaign_id)?;
    let history = history::campaign(&state.pool, campaign_id).await?;
    if history.operations.is_empty() && history.first_seen.is_none() {
        return Err(ApiError::UnknownCampaign { campaign_id });
    }
    Ok(Json(history))
}

/// A listing of snapshots, newest first.
#[derive(Debug, Serialize)]
pub struct SnapshotList {
    pub items: Vec<SnapshotInfo>,
}

/// `GET /v1/snapshots`
pub async fn snapshots(
    State(state): State<AdminState>,
    raw: RawParams,
) -> Result<Json<SnapshotList>, ApiError> {
    let p = params(raw, &["campaign", "limit"])?;
    let items = store::list_snapshots(&state.pool, p.id("campaign")?, p.limit()?).await?;
    Ok(Json(SnapshotList { items }))
}

/// `GET /v1/snapshots/{id}`
pub async fn snapshot(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<SnapshotInfo>, ApiError> {
    let id = parse_id("id", &id)?;
    Ok(Json(store::get_snapshot(&state.pool, id).await?))
}
