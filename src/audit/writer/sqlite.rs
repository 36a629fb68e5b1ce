//! The writer's SQLite connection (rusqlite, one cached multi-row `INSERT`):
//! at tens of thousands of records a second, going through the async pool
//! cost more than the insert itself. Passthrough-only batches are committed
//! `synchronous = NORMAL`, everything else `FULL`.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::chain_rows;
use crate::audit::chain;
use crate::audit::event::{StoredEvent, COLUMNS};

pub struct Writer {
    conn: Connection,
    /// Whether the connection is at `synchronous = FULL` now.
    full: bool,
}

impl Writer {
    /// The writer's own connection: same file and pragmas as the pool
    /// (`db::open` has already created and migrated it).
    pub fn open(database: &Path) -> rusqlite::Result<Writer> {
        let conn = Connection::open(database)?;
        conn.busy_timeout(crate::db::BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        Ok(Writer { conn, full: true })
    }

    /// Inserts the rows chained (see [`insert_chained`]), after setting
    /// `synchronous` for the commit: `FULL` when `durable`.
    pub fn insert(&mut self, rows: &mut [StoredEvent], durable: bool) -> rusqlite::Result<i64> {
        self.synchronous(durable)?;
        insert_chained(&mut self.conn, rows)
    }

    /// Sets `synchronous` for the next commit when it changes. A batch that
    /// needs the disk is not written unless `FULL` is set; one that does not
    /// is written `FULL` when it cannot be lowered.
    fn synchronous(&mut self, want_full: bool) -> rusqlite::Result<()> {
        if self.full == want_full {
            return Ok(());
        }
        let value = if want_full { "FULL" } else { "NORMAL" };
        match self.conn.pragma_update(None, "synchronous", value) {
            Ok(()) => {
                self.full = want_full;
                Ok(())
            }
            Err(err) if !want_full => {
                tracing::warn!(error = %err, "cannot lower synchronous for a passthrough batch");
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    /// `PRAGMA synchronous` as the connection has it (1 NORMAL, 2 FULL).
    #[cfg(test)]
    pub fn synchronous_now(&self) -> i64 {
        self.conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap()
    }
}

/// Inserts the rows with explicit ids, each chained to the one before
/// (`prev_hash`, `hash`), in one `BEGIN IMMEDIATE` transaction: the write
/// lock is held from the first read, so every writer on the file (this one,
/// another gateway's, `safedelete keys`) extends one chain. Returns the
/// first row's id.
fn insert_chained(conn: &mut Connection, rows: &mut [StoredEvent]) -> rusqlite::Result<i64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (last_id, last_hash): (i64, Option<String>) = tx
        .prepare_cached("SELECT id, hash FROM audit_events ORDER BY id DESC LIMIT 1")?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok((0, None)),
            e => Err(e),
        })?;
    // AUTOINCREMENT's high-water mark: an id is never given twice, even
    // after the newest rows were deleted.
    let seq: i64 = tx
        .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'audit_events'")?
        .query_row([], |row| row.get(0))
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(0),
            e => Err(e),
        })?;
    let first_id = seq.max(last_id) + 1;
    chain_rows(
        rows,
        first_id,
        last_hash.unwrap_or_else(|| chain::GENESIS.to_string()),
    );
    // Full chunks go in one statement of `ROWS_PER_INSERT` rows, prepared
    // once; the rest row by row.
    let mut chunks = rows.chunks_exact(ROWS_PER_INSERT);
    for chunk in chunks.by_ref() {
        tx.prepare_cached(insert_sql(true))?
            .execute(rusqlite::params_from_iter(
                chunk.iter().flat_map(StoredEvent::values),
            ))?;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut insert = tx.prepare_cached(insert_sql(false))?;
        for row in rest {
            insert.execute(rusqlite::params_from_iter(row.values()))?;
        }
    }
    tx.commit()?;
    Ok(first_id)
}

/// Rows a full chunk inserts in one statement.
pub const ROWS_PER_INSERT: usize = 32;

/// `INSERT INTO audit_events (every column) VALUES (?, ...), ...` for one
/// row, or `many` ([`ROWS_PER_INSERT`]), from the one column list.
fn insert_sql(many: bool) -> &'static str {
    static ONE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static MANY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let rows = if many { ROWS_PER_INSERT } else { 1 };
    let build = || {
        let row = format!("({})", vec!["?"; COLUMNS.len()].join(", "));
        format!(
            "INSERT INTO audit_events ({}) VALUES {}",
            COLUMNS.join(", "),
            vec![row; rows].join(", ")
        )
    };
    if many {
        MANY.get_or_init(build)
    } else {
        ONE.get_or_init(build)
    }
}
