//! A restore's record in the database: the restore itself (its snapshot,
//! the new campaign's id, its state) and each step once done, with what
//! SmartLead answered, so a resumed restore skips what is done.

use std::time::SystemTime;

use crate::db::Pool;
use serde_json::Value;

use crate::audit::format_time;

#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct RestoreRow {
    pub id: i64,
    pub snapshot_id: i64,
    pub name: String,
    pub leads_choice: String,
    pub state: String,
    pub new_campaign_id: Option<i64>,
    pub operator: String,
    pub created_at: String,
    pub updated_at: String,
    pub error: Option<String>,
    /// The leads the plan sends, and its calls (unknown for a restore begun
    /// before they were recorded).
    pub leads_total: Option<i64>,
    pub calls_total: Option<i64>,
}

/// How far a restore got, read from its steps.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Progress {
    pub steps_done: u64,
    pub lead_batches_done: u64,
    pub leads_sent: u64,
    /// The step done last.
    pub last_step: Option<String>,
}

/// The columns of a [`RestoreRow`].
const ROW: &str = "id, snapshot_id, name, leads_choice, state, new_campaign_id, operator, \
                   created_at, updated_at, error, leads_total, calls_total";

fn now() -> String {
    format_time(SystemTime::now())
}

/// What a new restore is: its snapshot, the campaign's name, the leads it
/// takes and what its plan adds up to.
pub struct Begin<'a> {
    pub snapshot_id: i64,
    pub name: &'a str,
    pub leads_choice: &'a str,
    pub operator: &'a str,
    pub leads_total: u64,
    pub calls_total: u64,
}

pub async fn begin(pool: &Pool, b: Begin<'_>) -> Result<i64, sqlx::Error> {
    let now = now();
    sqlx::query_scalar(
        "INSERT INTO restores (snapshot_id, name, leads_choice, state, operator, created_at, \
         updated_at, leads_total, calls_total) \
         VALUES ($1, $2, $3, 'running', $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(b.snapshot_id)
    .bind(b.name)
    .bind(b.leads_choice)
    .bind(b.operator)
    .bind(&now)
    .bind(&now)
    .bind(b.leads_total as i64)
    .bind(b.calls_total as i64)
    .fetch_one(pool)
    .await
}

pub async fn get(pool: &Pool, id: i64) -> Result<Option<RestoreRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {ROW} FROM restores WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// The newest restores first, at most `limit`.
pub async fn list(pool: &Pool, limit: u32) -> Result<Vec<RestoreRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ROW} FROM restores ORDER BY id DESC LIMIT $1"
    ))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
}

/// Marks the restore running again (a resume).
pub async fn reopen(pool: &Pool, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE restores SET state = 'running', error = NULL, updated_at = $1 WHERE id = $2",
    )
    .bind(now())
    .bind(id)
    .execute(pool)
    .await
    .map(|_| ())
}

/// Keeps the report of an ended restore, as JSON.
pub async fn keep_report(pool: &Pool, id: i64, report: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE restores SET report = $1 WHERE id = $2")
        .bind(report)
        .bind(id)
        .execute(pool)
        .await
        .map(|_| ())
}

/// The report kept when the restore ended, as its JSON text.
pub async fn report(pool: &Pool, id: i64) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(Option<String>,)> =
        sqlx::query_as("SELECT report FROM restores WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    Ok(row.and_then(|(r,)| r))
}

/// How far the restore got.
pub async fn progress(pool: &Pool, id: i64) -> Result<Progress, sqlx::Error> {
    let mut p = Progress::default();
    for (step, result) in steps(pool, id).await? {
        if step.ends_with(":attempt") {
            continue;
        }
        p.steps_done += 1;
        if step.starts_with("leads:") {
            p.lead_batches_done += 1;
            p.leads_sent += result.get("sent").and_then(Value::as_u64).unwrap_or(0);
        }
        p.last_step = Some(step);
    }
    Ok(p)
}

/// What a step answered, if it is done.
pub async fn done(pool: &Pool, id: i64, step: &str) -> Result<Option<Value>, sqlx::Error> {
    let row: Option<(Option<String>,)> =
        sqlx::query_as("SELECT result FROM restore_steps WHERE restore_id = $1 AND step = $2")
            .bind(id)
            .bind(step)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(r,)| {
        r.and_then(|r| serde_json::from_str(&r).ok())
            .unwrap_or(Value::Null)
    }))
}

/// Records a step as done (and the new campaign, for `create`), in one
/// transaction.
pub async fn record(
    pool: &Pool,
    id: i64,
    step: &str,
    result: &Value,
    new_campaign_id: Option<i64>,
) -> Result<(), sqlx::Error> {
    let now = now();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO restore_steps (restore_id, step, done_at, result, seq) VALUES ($1, $2, $3, $4, \
         (SELECT COALESCE(MAX(seq), 0) + 1 FROM restore_steps WHERE restore_id = $1))",
    )
    .bind(id)
    .bind(step)
    .bind(&now)
    .bind(result.to_string())
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE restores SET updated_at = $1, new_campaign_id = COALESCE($2, new_campaign_id) WHERE id = $3",
    )
    .bind(&now)
    .bind(new_campaign_id)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Ends the restore `done`, or `failed` with why (a failed one can be resumed).
pub async fn finish(pool: &Pool, id: i64, error: Option<&str>) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE restores SET state = $1, error = $2, updated_at = $3 WHERE id = $4")
        .bind(if error.is_some() { "failed" } else { "done" })
        .bind(error)
        .bind(now())
        .bind(id)
        .execute(pool)
        .await
        .map(|_| ())
}

/// Every step done, in order, with its answer (for the report).
pub async fn steps(pool: &Pool, id: i64) -> Result<Vec<(String, Value)>, sqlx::Error> {
    let rows: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT step, result FROM restore_steps WHERE restore_id = $1 ORDER BY seq")
            .bind(id)
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(s, r)| {
            (
                s,
                r.and_then(|r| serde_json::from_str(&r).ok())
                    .unwrap_or(Value::Null),
            )
        })
        .collect())
}
