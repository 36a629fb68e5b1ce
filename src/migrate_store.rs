//! `safedelete migrate-store`: copies a whole store (a SQLite file, say)
//! into another, empty one (a PostgreSQL database), table by table in key
//! order, each batch in one transaction. Rows keep their ids, so the audit
//! chain is copied unchanged and still verifies, and snapshot chunks are
//! copied as stored (compressed) and then verified against the SHA-256
//! their parts recorded.
//!
//! A marker table in the target names the source while a copy runs: a run
//! that stopped (killed, a lost connection) is resumed by running the same
//! command again, from each table's last copied row; a target that holds
//! anything else is refused. The marker is dropped once the copy verified.

use std::fmt;

use sqlx::any::{AnyRow, AnyTypeInfoKind};
use sqlx::{Column, Executor, Row};

use crate::audit::chain;
use crate::db::{self, Backend, DbError, Location, Pool, Statement};
use crate::snapshot::store::{self as snapshots, PartOutcome};

/// One table to copy: its name, the key it is copied in order of, and how
/// many rows go in one transaction.
struct Table {
    name: &'static str,
    /// Integer key columns (resumed after the target's last row), or empty
    /// for a table copied in one transaction (small, keyed by text).
    key: &'static [&'static str],
    batch: usize,
    /// Its `id` is a PostgreSQL identity: the sequence is moved past the
    /// copied ids.
    identity: bool,
}

/// Every table of the schema, parents before the tables that reference
/// them (a test checks none is missing).
const TABLES: &[Table] = &[
    Table {
        name: "operations",
        key: &["id"],
        batch: 1000,
        identity: true,
    },
    Table {
        name: "snapshots",
        key: &["id"],
        batch: 1000,
        identity: true,
    },
    Table {
        name: "snapshot_parts",
        key: &["id"],
        batch: 1000,
        identity: true,
    },
    // Up to 1 MiB each: a few per transaction keeps memory bounded.
    Table {
        name: "snapshot_chunks",
        key: &["part_id", "seq"],
        batch: 8,
        identity: false,
    },
    Table {
        name: "restores",
        key: &["id"],
        batch: 1000,
        identity: true,
    },
    Table {
        name: "restore_steps",
        key: &[],
        batch: 0,
        identity: false,
    },
    Table {
        name: "gateway_keys",
        key: &["id"],
        batch: 1000,
        identity: true,
    },
    Table {
        name: "bypass_accounts",
        key: &[],
        batch: 0,
        identity: false,
    },
    Table {
        name: "bypass_campaigns",
        key: &[],
        batch: 0,
        identity: false,
    },
    Table {
        name: "audit_chain",
        key: &[],
        batch: 0,
        identity: false,
    },
    Table {
        name: "audit_events",
        key: &["id"],
        batch: 500,
        identity: false,
    },
];

/// Names the source of a copy in progress (and nothing else: the target's
/// own schema is the migrations').
const MARKER: &str = "safedelete_migrate_store";

/// Why a copy stopped.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Open(#[from] DbError),
    #[error("--from and --to name the same store ({0})")]
    Same(String),
    #[error(
        "the target {target} is not empty ({table} has {rows} row(s)); migrate-store only \
         writes into an empty store: give a new database, or drop and create this one"
    )]
    NotEmpty {
        target: String,
        table: &'static str,
        rows: i64,
    },
    #[error(
        "the target {target} holds an unfinished copy from {from}, not from {source_now}; finish \
         that one (run migrate-store --from with it again) or start over in a new database"
    )]
    OtherSource {
        target: String,
        from: String,
        source_now: String,
    },
    #[error("cannot copy {table}: {source}")]
    Table {
        table: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("the copy does not match its source: {0}")]
    Mismatch(String),
    #[error("cannot verify the copy: {0}")]
    Verify(String),
}

/// What was copied, per table, and what the verification found.
#[derive(Debug, Default)]
pub struct Copied {
    /// (table, rows in the target, rows copied by this run).
    pub tables: Vec<(&'static str, i64, i64)>,
    /// The run continued an earlier one.
    pub resumed: bool,
    pub audit_records: u64,
    /// The newest audit record, `id:hash`, the same in both stores.
    pub audit_head: Option<String>,
    pub snapshot_parts_verified: u64,
    pub snapshot_bytes_verified: u64,
}

impl fmt::Display for Copied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (table, rows, now) in &self.tables {
            writeln!(f, "{table:<18} {rows:>10} rows ({now} copied now)")?;
        }
        writeln!(
            f,
            "audit chain: {} records verified, newest {}",
            self.audit_records,
            self.audit_head.as_deref().unwrap_or("-")
        )?;
        write!(
            f,
            "snapshots: {} complete parts verified byte for byte ({} bytes)",
            self.snapshot_parts_verified, self.snapshot_bytes_verified
        )
    }
}

/// Progress, as each batch commits: (table, rows in the target so far).
pub type Progress<'a> = &'a mut dyn FnMut(&'static str, i64);

/// Copies `from` into `to` (created and migrated if need be), verifies the
/// copy, and returns what it did.
pub async fn copy(
    from: &Location,
    to: &Location,
    progress: Progress<'_>,
) -> Result<Copied, CopyError> {
    if from == to {
        return Err(CopyError::Same(from.to_string()));
    }
    let source = db::open_read_only(from).await?;
    let target = db::open(to).await?;
    let result = copy_open(&source, &target, from, to, progress).await;
    source.close().await;
    target.close().await;
    result
}

async fn copy_open(
    source: &Pool,
    target: &Pool,
    from: &Location,
    to: &Location,
    progress: Progress<'_>,
) -> Result<Copied, CopyError> {
    let resumed = claim(target, from, to).await?;
    let mut copied = Copied {
        resumed,
        ..Copied::default()
    };
    for table in TABLES {
        let table_error = |source| CopyError::Table {
            table: table.name,
            source,
        };
        let now = copy_table(source, target, table, progress)
            .await
            .map_err(table_error)?;
        let rows = count(target, table.name).await.map_err(table_error)?;
        let want = count(source, table.name).await.map_err(table_error)?;
        if rows != want {
            return Err(CopyError::Mismatch(format!(
                "{} has {rows} rows, its source {want}",
                table.name
            )));
        }
        if table.identity && Backend::of(target) == Backend::Postgres && rows > 0 {
            sqlx::query(&format!(
                "SELECT setval(pg_get_serial_sequence('{0}', 'id'), (SELECT MAX(id) FROM {0}))",
                table.name
            ))
            .execute(target)
            .await
            .map_err(table_error)?;
        }
        copied.tables.push((table.name, rows, now));
    }
    verify(source, target, &mut copied).await?;
    sqlx::query(&format!("DROP TABLE {MARKER}"))
        .execute(target)
        .await
        .map_err(|source| CopyError::Table {
            table: MARKER,
            source,
        })?;
    Ok(copied)
}

/// Marks the target as the copy of `from`: true when it already was (a
/// resumed run). An unmarked target must be empty.
async fn claim(target: &Pool, from: &Location, to: &Location) -> Result<bool, CopyError> {
    let marker_error = |source| CopyError::Table {
        table: MARKER,
        source,
    };
    target
        .execute(
            format!(
                "CREATE TABLE IF NOT EXISTS {MARKER} (\
                 id BIGINT PRIMARY KEY CHECK (id = 1), source TEXT NOT NULL)"
            )
            .as_str(),
        )
        .await
        .map_err(marker_error)?;
    let marked: Option<String> = sqlx::query_scalar(&format!("SELECT source FROM {MARKER}"))
        .fetch_optional(target)
        .await
        .map_err(marker_error)?;
    // Shown without a password, so it can be stored and compared.
    let source_now = from.to_string();
    match marked {
        Some(from) if from == source_now => return Ok(true),
        Some(from) => {
            return Err(CopyError::OtherSource {
                target: to.to_string(),
                from,
                source_now,
            })
        }
        None => {}
    }
    for table in TABLES {
        let rows = count(target, table.name)
            .await
            .map_err(|source| CopyError::Table {
                table: table.name,
                source,
            })?;
        if rows > 0 {
            return Err(CopyError::NotEmpty {
                target: to.to_string(),
                table: table.name,
                rows,
            });
        }
    }
    sqlx::query(&format!("INSERT INTO {MARKER} (id, source) VALUES (1, $1)"))
        .bind(&source_now)
        .execute(target)
        .await
        .map_err(marker_error)?;
    Ok(false)
}

async fn count(pool: &Pool, table: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(pool)
        .await
}

/// One column's value, of either store.
enum Cell {
    Int(Option<i64>),
    Text(Option<String>),
    Real(Option<f64>),
    Blob(Option<Vec<u8>>),
}

impl Cell {
    fn read(row: &AnyRow, i: usize, kind: AnyTypeInfoKind) -> Result<Cell, sqlx::Error> {
        Ok(match kind {
            AnyTypeInfoKind::SmallInt | AnyTypeInfoKind::Integer | AnyTypeInfoKind::BigInt => {
                Cell::Int(row.try_get(i)?)
            }
            AnyTypeInfoKind::Real | AnyTypeInfoKind::Double => Cell::Real(row.try_get(i)?),
            AnyTypeInfoKind::Blob => Cell::Blob(row.try_get(i)?),
            _ => Cell::Text(row.try_get(i)?),
        })
    }

    fn bind(self, statement: &mut Statement<'_>) {
        match self {
            Cell::Int(v) => statement.bind(v),
            Cell::Text(v) => statement.bind(v),
            Cell::Real(v) => statement.bind(v),
            Cell::Blob(v) => statement.bind(v),
        };
    }
}

/// The source table's columns and their kinds, as the source declares them.
async fn columns(
    source: &Pool,
    table: &str,
) -> Result<Vec<(String, AnyTypeInfoKind)>, sqlx::Error> {
    let described = source.describe(&format!("SELECT * FROM {table}")).await?;
    Ok(described
        .columns()
        .iter()
        .map(|c| (c.name().to_string(), c.type_info().kind()))
        .collect())
}

/// Copies the rows of `table` the target lacks, in key order; returns how
/// many.
async fn copy_table(
    source: &Pool,
    target: &Pool,
    table: &Table,
    progress: Progress<'_>,
) -> Result<i64, sqlx::Error> {
    let columns = columns(source, table.name).await?;
    let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
    let kinds: Vec<AnyTypeInfoKind> = columns.iter().map(|(_, k)| *k).collect();
    if table.key.is_empty() {
        // Small: all at once, or (already copied) not at all.
        if count(target, table.name).await? > 0 {
            return Ok(0);
        }
        let rows = sqlx::query(&format!("SELECT {} FROM {}", names.join(", "), table.name))
            .fetch_all(source)
            .await?;
        let n = rows.len() as i64;
        insert(target, table.name, &names, &kinds, &rows).await?;
        progress(table.name, n);
        return Ok(n);
    }
    let key = table.key.join(", ");
    let key_at: Vec<usize> = table
        .key
        .iter()
        .map(|k| {
            names
                .iter()
                .position(|n| n == k)
                .expect("a key column is a column")
        })
        .collect();
    // Resume after the target's last row.
    let newest_first: Vec<String> = table.key.iter().map(|k| format!("{k} DESC")).collect();
    let mut after: Option<Vec<i64>> = sqlx::query(&format!(
        "SELECT {key} FROM {} ORDER BY {} LIMIT 1",
        table.name,
        newest_first.join(", ")
    ))
    .fetch_optional(target)
    .await?
    .map(|row| {
        (0..table.key.len())
            .map(|i| row.try_get::<i64, _>(i))
            .collect()
    })
    .transpose()?;
    let mut copied = 0i64;
    let mut done = count(target, table.name).await?;
    loop {
        let mut select = Statement::new(format!(
            "SELECT {} FROM {} WHERE ",
            names.join(", "),
            table.name
        ));
        match &after {
            None => {
                select.push("1 = 1");
            }
            Some(last) => {
                select.push(&format!("({key}) > ("));
                for (i, v) in last.iter().enumerate() {
                    if i > 0 {
                        select.push(", ");
                    }
                    select.bind(*v);
                }
                select.push(")");
            }
        }
        select.push(&format!(" ORDER BY {key} LIMIT {}", table.batch));
        let (sql, args) = select.finish();
        let rows = sqlx::query_with(&sql, args).fetch_all(source).await?;
        let Some(last) = rows.last() else {
            return Ok(copied);
        };
        after = Some(
            key_at
                .iter()
                .map(|&i| last.try_get::<i64, _>(i))
                .collect::<Result<_, _>>()?,
        );
        insert(target, table.name, &names, &kinds, &rows).await?;
        copied += rows.len() as i64;
        done += rows.len() as i64;
        progress(table.name, done);
    }
}

/// Inserts `rows` in one transaction, as many per statement as the
/// stores' bind limits allow.
async fn insert(
    target: &Pool,
    table: &str,
    names: &[&str],
    kinds: &[AnyTypeInfoKind],
    rows: &[AnyRow],
) -> Result<(), sqlx::Error> {
    // SQLite allows 32,766 binds and PostgreSQL 65,535 in one statement.
    let per_statement = (30_000 / names.len().max(1)).max(1);
    let mut tx = target.begin().await?;
    for chunk in rows.chunks(per_statement) {
        let mut statement = Statement::new(format!(
            "INSERT INTO {table} ({}) VALUES ",
            names.join(", ")
        ));
        for (r, row) in chunk.iter().enumerate() {
            statement.push(if r == 0 { "(" } else { ", (" });
            for (i, kind) in kinds.iter().enumerate() {
                if i > 0 {
                    statement.push(", ");
                }
                Cell::read(row, i, *kind)?.bind(&mut statement);
            }
            statement.push(")");
        }
        let (sql, args) = statement.finish();
        sqlx::query_with(&sql, args).execute(&mut *tx).await?;
    }
    tx.commit().await
}

/// The audit chain verifies in the target and ends where the source's
/// does; every complete snapshot part decompresses to the SHA-256 its
/// capture recorded.
async fn verify(source: &Pool, target: &Pool, copied: &mut Copied) -> Result<(), CopyError> {
    let verify_error = |e: sqlx::Error| CopyError::Verify(e.to_string());
    let report = chain::verify(target, None).await.map_err(verify_error)?;
    if let Some(problem) = report.problem {
        return Err(CopyError::Mismatch(format!(
            "the copied audit chain: {problem}"
        )));
    }
    let (head, source_head) = (
        chain::checkpoint(target).await.map_err(verify_error)?,
        chain::checkpoint(source).await.map_err(verify_error)?,
    );
    let (head, source_head) = (
        head.map(|c| c.to_string()),
        source_head.map(|c| c.to_string()),
    );
    if head != source_head {
        return Err(CopyError::Mismatch(format!(
            "the copied chain ends at {head:?}, its source at {source_head:?}"
        )));
    }
    copied.audit_records = report.records;
    copied.audit_head = head;
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM snapshots ORDER BY id")
        .fetch_all(target)
        .await
        .map_err(verify_error)?;
    for id in ids {
        let checks = snapshots::verify_snapshot(target, id)
            .await
            .map_err(|e| CopyError::Verify(e.to_string()))?;
        for check in checks {
            match check.outcome {
                PartOutcome::Ok { bytes, .. } => {
                    copied.snapshot_parts_verified += 1;
                    copied.snapshot_bytes_verified += bytes;
                }
                PartOutcome::Failed(e) => {
                    return Err(CopyError::Mismatch(format!(
                        "snapshot {id} part {}: {e}",
                        check.kind
                    )))
                }
                PartOutcome::Skipped { .. } => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every table of the schema is copied, parents first.
    #[tokio::test]
    async fn every_table_of_the_schema_is_copied() {
        let store = crate::db::testing::TestStore::sqlite();
        let pool = store.open().await;
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations' ORDER BY name",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let mut copied: Vec<String> = TABLES.iter().map(|t| t.name.to_string()).collect();
        copied.sort();
        assert_eq!(copied, tables);
    }
}
