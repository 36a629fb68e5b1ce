//! The writer's PostgreSQL connection. Every gateway's writer extends one
//! chain: a batch takes a transaction-scoped advisory lock ([`CHAIN_LOCK`])
//! before it reads the newest record, so batches from different gateways
//! are chained one after the other. A batch is one `INSERT ... SELECT FROM
//! UNNEST(...)` with an array per column, whatever its size.
//! Passthrough-only batches commit with `synchronous_commit = off` (the
//! analogue of SQLite's `NORMAL`: a crash of the server, not of the gateway,
//! can lose the last of them).

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};

use super::chain_rows;
use crate::audit::chain;
use crate::audit::event::{StoredEvent, Value, COLUMNS};
use crate::db::PostgresUrl;

/// The advisory lock that serialises chain extensions across gateways
/// ("safedelete audit chain" as a number).
pub const CHAIN_LOCK: i64 = 0x5AFE_DE1E_A0D1_7C4A;

/// The writer thread's connection, made when first needed (on the thread:
/// its runtime cannot be driven from the gateway's) and again after a
/// failure.
pub struct Writer {
    options: PgConnectOptions,
    runtime: Option<tokio::runtime::Runtime>,
    conn: Option<PgConnection>,
}

impl Writer {
    pub fn open(url: &PostgresUrl) -> Result<Writer, sqlx::Error> {
        Ok(Writer {
            options: PgConnectOptions::from_str(url.expose())?,
            runtime: None,
            conn: None,
        })
    }

    /// Inserts the rows chained; a failed batch drops the connection, and
    /// the next one connects again.
    pub fn insert(&mut self, rows: &mut [StoredEvent], durable: bool) -> Result<i64, sqlx::Error> {
        if self.runtime.is_none() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(sqlx::Error::Io)?;
            self.runtime = Some(runtime);
        }
        let runtime = self.runtime.as_ref().expect("built above");
        let options = &self.options;
        let conn = &mut self.conn;
        let result = runtime.block_on(async {
            if conn.is_none() {
                *conn = Some(options.connect().await?);
            }
            let c = conn.as_mut().expect("connected above");
            insert_chained(c, rows, durable).await
        });
        if result.is_err() {
            if let Some(c) = conn.take() {
                let _ = runtime.block_on(c.close_hard());
            }
        }
        result
    }
}

/// Inserts the rows with explicit ids, each chained to the one before,
/// under the chain lock. Returns the first row's id.
pub async fn insert_chained(
    conn: &mut PgConnection,
    rows: &mut [StoredEvent],
    durable: bool,
) -> Result<i64, sqlx::Error> {
    let mut tx = conn.begin().await?;
    if !durable {
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CHAIN_LOCK)
        .execute(&mut *tx)
        .await?;
    let last: Option<(i64, Option<String>)> =
        sqlx::query_as("SELECT id, hash FROM audit_events ORDER BY id DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
    let (last_id, last_hash) = last.unwrap_or((0, None));
    let first_id = last_id + 1;
    chain_rows(
        rows,
        first_id,
        last_hash.unwrap_or_else(|| chain::GENESIS.to_string()),
    );
    let mut query = sqlx::query(insert_sql());
    for column in columns(rows) {
        query = match column {
            Column::Int(v) => query.bind(v),
            Column::Text(v) => query.bind(v),
            Column::Float(v) => query.bind(v),
        };
    }
    query.execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(first_id)
}

/// One column's values across a batch, as one array parameter.
enum Column<'a> {
    Int(Vec<Option<i64>>),
    Text(Vec<Option<&'a str>>),
    Float(Vec<f64>),
}

/// Each column's kind, from a default row (the one field list).
fn kinds() -> Vec<Value<'static>> {
    static KINDS: std::sync::OnceLock<Vec<Value<'static>>> = std::sync::OnceLock::new();
    KINDS
        .get_or_init(|| {
            StoredEvent::default()
                .values()
                .into_iter()
                .map(|v| match v {
                    Value::Int(_) => Value::Int(None),
                    Value::Text(_) => Value::Text(None),
                    Value::Float(_) => Value::Float(0.0),
                })
                .collect()
        })
        .clone()
}

fn columns(rows: &[StoredEvent]) -> Vec<Column<'_>> {
    let mut columns: Vec<Column<'_>> = kinds()
        .into_iter()
        .map(|k| match k {
            Value::Int(_) => Column::Int(Vec::with_capacity(rows.len())),
            Value::Text(_) => Column::Text(Vec::with_capacity(rows.len())),
            Value::Float(_) => Column::Float(Vec::with_capacity(rows.len())),
        })
        .collect();
    for row in rows {
        for (column, value) in columns.iter_mut().zip(row.values()) {
            match (column, value) {
                (Column::Int(c), Value::Int(v)) => c.push(v),
                (Column::Text(c), Value::Text(v)) => c.push(v),
                (Column::Float(c), Value::Float(v)) => c.push(v),
                _ => unreachable!("a field's kind is fixed by its type"),
            }
        }
    }
    columns
}

/// `INSERT INTO audit_events (every column) SELECT * FROM UNNEST($1::BIGINT[], ...)`.
fn insert_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let arrays: Vec<String> = kinds()
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let ty = match k {
                    Value::Int(_) => "BIGINT[]",
                    Value::Text(_) => "TEXT[]",
                    Value::Float(_) => "DOUBLE PRECISION[]",
                };
                format!("${}::{ty}", i + 1)
            })
            .collect();
        format!(
            "INSERT INTO audit_events ({}) SELECT * FROM UNNEST({})",
            COLUMNS.join(", "),
            arrays.join(", ")
        )
    })
}
