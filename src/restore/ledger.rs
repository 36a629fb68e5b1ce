//! A restore's record in the database: the restore itself (its snapshot,
//! the new campaign's id, its state) and each step once done, with what
//! SmartLead answered, so a resumed restore skips what is done.

use std::time::SystemTime;

use serde_json::Value;
use sqlx::SqlitePool;

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
}

fn now() -> String {
    format_time(SystemTime::now())
}

pub async fn begin(
    pool: &SqlitePool,
    snapshot_id: i64,
    name: &str,
    leads_choice: &str,
    operator: &str,
) -> Result<i64, sqlx::Error> {
    let now = now();
    sqlx::query_scalar(
        "INSERT INTO restores (snapshot_id, name, leads_choice, state, operator, created_at, updated_at) \
         VALUES (?, ?, ?, 'running', ?, ?, ?) RETURNING id",
    )
    .bind(snapshot_id)
    .bind(name)
    .bind(leads_choice)
    .bind(operator)
    .bind(&now)
    .bind(&now)
    .fetch_one(pool)
    .await
}

pub async fn get(pool: &SqlitePool, id: i64) -> Result<Option<RestoreRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, snapshot_id, name, leads_choice, state, new_campaign_id, operator, \
         created_at, updated_at, error FROM restores WHERE id = ?",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// What a step answered, if it is done.
pub async fn done(pool: &SqlitePool, id: i64, step: &str) -> Result<Option<Value>, sqlx::Error> {
    let row: Option<(Option<String>,)> =
        sqlx::query_as("SELECT result FROM restore_steps WHERE restore_id = ? AND step = ?")
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
    pool: &SqlitePool,
    id: i64,
    step: &str,
    result: &Value,
    new_campaign_id: Option<i64>,
) -> Result<(), sqlx::Error> {
    let now = now();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO restore_steps (restore_id, step, done_at, result) VALUES (?, ?, ?, ?)",
    )
    .bind(id)
    .bind(step)
    .bind(&now)
    .bind(result.to_string())
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE restores SET updated_at = ?, new_campaign_id = COALESCE(?, new_campaign_id) WHERE id = ?",
    )
    .bind(&now)
    .bind(new_campaign_id)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Ends the restore `done`, or `failed` with why (a failed one can be resumed).
pub async fn finish(pool: &SqlitePool, id: i64, error: Option<&str>) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE restores SET state = ?, error = ?, updated_at = ? WHERE id = ?")
        .bind(if error.is_some() { "failed" } else { "done" })
        .bind(error)
        .bind(now())
        .bind(id)
        .execute(pool)
        .await
        .map(|_| ())
}

/// Every step done, in order, with its answer (for the report).
pub async fn steps(pool: &SqlitePool, id: i64) -> Result<Vec<(String, Value)>, sqlx::Error> {
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT step, result FROM restore_steps WHERE restore_id = ? ORDER BY done_at, rowid",
    )
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
