//! Whether a database has the schema this binary knows. Read-only commands
//! cannot migrate, so they compare the migrations the database records
//! (`_sqlx_migrations`) with the ones embedded in the binary, and refuse,
//! saying what to run, when the two differ; a gateway refuses a database
//! that a newer binary migrated.

use std::collections::BTreeSet;
use std::fmt;

use crate::db::{Backend, Pool};

/// How the database's schema differs from the binary's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// No migration was ever recorded: not a database `serve` created.
    Unmigrated,
    /// The binary has migrations the database lacks; `newest` is the
    /// database's newest.
    Older { newest: i64, missing: i64 },
    /// The database records a migration this binary does not know.
    Newer { unknown: i64 },
    /// A migration was started and never finished.
    Failed { version: i64 },
}

/// Says what is wrong and what to run about it.
impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Unmigrated => write!(
                f,
                "it has no safedelete schema; check the config's database path, \
                 or run `safedelete serve` once to create it"
            ),
            Mismatch::Older { newest, missing } => write!(
                f,
                "its schema is older than this binary's (newest migration {newest}, \
                 this binary also needs {missing}); run `safedelete serve` with this \
                 binary once to migrate it, or use the binary that wrote it"
            ),
            Mismatch::Newer { unknown } => write!(
                f,
                "a newer safedelete migrated it (migration {unknown} is unknown to this \
                 binary); use that newer binary"
            ),
            Mismatch::Failed { version } => write!(
                f,
                "migration {version} failed part-way; `safedelete serve` says why when it \
                 tries again"
            ),
        }
    }
}

/// Reads the migrations recorded in the database: `(version, success)`.
/// Also the first read of the file, so it is where a database that cannot
/// be opened fails.
pub async fn applied(pool: &Pool) -> Result<Vec<(i64, bool)>, sqlx::Error> {
    let tables = match Backend::of(pool) {
        Backend::Sqlite => {
            "SELECT count(*) FROM sqlite_master \
             WHERE type = 'table' AND name = '_sqlx_migrations'"
        }
        Backend::Postgres => {
            "SELECT count(*) FROM pg_catalog.pg_tables \
             WHERE schemaname = current_schema() AND tablename = '_sqlx_migrations'"
        }
    };
    let exists: i64 = sqlx::query_scalar(tables).fetch_one(pool).await?;
    if exists == 0 {
        return Ok(Vec::new());
    }
    // `success` is a BOOLEAN column: read as an integer, which both stores
    // convert it to.
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT version, CAST(success AS INTEGER) FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(v, ok)| (v, ok != 0)).collect())
}

/// [`Mismatch::Newer`] when the database records a migration the binary
/// does not know, whatever else differs: a binary must not write a schema
/// it does not understand.
pub fn newer(applied: &[(i64, bool)], known: &BTreeSet<i64>) -> Option<Mismatch> {
    applied
        .iter()
        .map(|&(v, _)| v)
        .find(|v| !known.contains(v))
        .map(|unknown| Mismatch::Newer { unknown })
}

/// Compares what the database records with the versions the binary knows.
pub fn compare(applied: &[(i64, bool)], known: &BTreeSet<i64>) -> Option<Mismatch> {
    if applied.is_empty() {
        return Some(Mismatch::Unmigrated);
    }
    if let Some(&(version, _)) = applied.iter().find(|(_, success)| !success) {
        return Some(Mismatch::Failed { version });
    }
    let recorded: BTreeSet<i64> = applied.iter().map(|&(v, _)| v).collect();
    if let Some(&unknown) = recorded.difference(known).next() {
        return Some(Mismatch::Newer { unknown });
    }
    let missing = known.difference(&recorded).next()?;
    let newest = *recorded.last().expect("applied is not empty");
    Some(Mismatch::Older {
        newest,
        missing: *missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> BTreeSet<i64> {
        [1, 2, 3].into()
    }

    #[test]
    fn the_same_migrations_match() {
        assert_eq!(compare(&[(1, true), (2, true), (3, true)], &known()), None);
    }

    #[test]
    fn a_database_behind_the_binary_is_older() {
        assert_eq!(
            compare(&[(1, true), (2, true)], &known()),
            Some(Mismatch::Older {
                newest: 2,
                missing: 3
            })
        );
    }

    #[test]
    fn a_migration_the_binary_does_not_know_makes_it_newer() {
        assert_eq!(
            compare(&[(1, true), (2, true), (3, true), (4, true)], &known()),
            Some(Mismatch::Newer { unknown: 4 })
        );
    }

    #[test]
    fn an_unfinished_migration_or_none_at_all_is_reported() {
        assert_eq!(
            compare(&[(1, true), (2, false)], &known()),
            Some(Mismatch::Failed { version: 2 })
        );
        assert_eq!(compare(&[], &known()), Some(Mismatch::Unmigrated));
    }
}
