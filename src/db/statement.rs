//! A statement assembled from pieces (filters that may or may not apply),
//! with its binds numbered `$1, $2, ...`: the one spelling both SQLite and
//! PostgreSQL accept. (sqlx's `QueryBuilder` writes `?` for the `Any`
//! driver, which PostgreSQL refuses.)

use std::fmt::Write;

use sqlx::any::AnyArguments;
use sqlx::{Any, Arguments, Encode, Type};

pub struct Statement<'q> {
    sql: String,
    args: AnyArguments<'q>,
    binds: usize,
}

impl<'q> Statement<'q> {
    pub fn new(sql: impl Into<String>) -> Statement<'q> {
        Statement {
            sql: sql.into(),
            args: AnyArguments::default(),
            binds: 0,
        }
    }

    /// Appends SQL text.
    pub fn push(&mut self, sql: &str) -> &mut Statement<'q> {
        self.sql.push_str(sql);
        self
    }

    /// Appends the next placeholder and binds `value` to it.
    pub fn bind<T>(&mut self, value: T) -> &mut Statement<'q>
    where
        T: 'q + Encode<'q, Any> + Type<Any>,
    {
        self.binds += 1;
        let _ = write!(self.sql, "${}", self.binds);
        // Encoding into `AnyArguments` only stores the value.
        self.args
            .add(value)
            .expect("AnyArguments stores any value it is given");
        self
    }

    /// The SQL and its arguments, for `sqlx::query_with` and friends.
    pub fn finish(self) -> (String, AnyArguments<'q>) {
        (self.sql, self.args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_are_numbered_in_order() {
        let mut s = Statement::new("SELECT 1 WHERE a = ");
        s.bind(1_i64)
            .push(" AND (b = ")
            .bind("x")
            .push(" OR c = ")
            .bind("y")
            .push(")");
        let (sql, args) = s.finish();
        assert_eq!(sql, "SELECT 1 WHERE a = $1 AND (b = $2 OR c = $3)");
        assert_eq!(args.len(), 3);
    }
}
