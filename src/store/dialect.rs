//! The one dialect strategy of `store/`: a statement both backends run is
//! written once, in PostgreSQL form, and translated for SQLite at one point,
//! [`Dialect::translate`].
//!
//! Owns: the backend tag ([`Dialect`]), that translation, [`Sql`] (a
//! statement written once whose SQLite text is translated on first use and
//! kept, so the commit path allocates nothing for it and sqlx's statement
//! cache sees one text per backend), [`Arg`] (an argument bound the way each
//! backend stores it), and running one shared statement on a [`Store`]'s
//! pool. Does not own: the statements that genuinely differ per backend
//! (bulk multi-row `VALUES` on SQLite vs `UNNEST` arrays on PostgreSQL, DDL,
//! catalog queries), which stay in `sqlite.rs` / `postgres.rs` / `schema.rs`.
//!
//! Shared statement text may use only: `$N` placeholders, the casts
//! `::timestamptz` and `::text` (dropped for SQLite, which has neither), and
//! `FOR UPDATE SKIP LOCKED` (dropped: SQLite serialises writers anyway).
//! Timestamps bound as [`Arg::Time`] are `timestamptz` on PostgreSQL and RFC
//! 3339 text (UTC, µs) on SQLite, the column types each backend's migrations
//! use.

use std::borrow::Cow;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, FromRow};

use super::sqlite_exec::{self, WriterRow};
use super::{Store, StoreError};

/// Which SQL a backend speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// A statement written in PostgreSQL form, as this backend runs it:
    /// unchanged for PostgreSQL; for SQLite `$N` → `?N`, casts and
    /// `FOR UPDATE SKIP LOCKED` dropped.
    pub fn translate(self, sql: &str) -> Cow<'_, str> {
        match self {
            Dialect::Postgres => Cow::Borrowed(sql),
            Dialect::Sqlite => Cow::Owned(
                sql.replace("::timestamptz", "")
                    .replace("::text", "")
                    .replace(" FOR UPDATE SKIP LOCKED", "")
                    .replace('$', "?"),
            ),
        }
    }
}

/// A statement written once, in PostgreSQL form (see the module doc).
pub struct Sql {
    pg: &'static str,
    sqlite: OnceLock<String>,
}

impl Sql {
    pub const fn new(pg: &'static str) -> Sql {
        Sql {
            pg,
            sqlite: OnceLock::new(),
        }
    }

    /// The statement text for `dialect`, translated once per process.
    pub fn text(&'static self, dialect: Dialect) -> &'static str {
        match dialect {
            Dialect::Postgres => self.pg,
            Dialect::Sqlite => self
                .sqlite
                .get_or_init(|| dialect.translate(self.pg).into_owned()),
        }
    }
}

/// A bound argument of a shared statement.
#[derive(Debug, Clone)]
pub enum Arg {
    Text(Option<String>),
    Int(i64),
    Bool(bool),
    /// `timestamptz` on PostgreSQL, RFC 3339 text on SQLite.
    Time(DateTime<Utc>),
}

impl From<&str> for Arg {
    fn from(s: &str) -> Arg {
        Arg::Text(Some(s.to_owned()))
    }
}
impl From<String> for Arg {
    fn from(s: String) -> Arg {
        Arg::Text(Some(s))
    }
}
impl From<Option<&str>> for Arg {
    fn from(s: Option<&str>) -> Arg {
        Arg::Text(s.map(str::to_owned))
    }
}
impl From<Option<String>> for Arg {
    fn from(s: Option<String>) -> Arg {
        Arg::Text(s)
    }
}
impl From<i64> for Arg {
    fn from(i: i64) -> Arg {
        Arg::Int(i)
    }
}
impl From<bool> for Arg {
    fn from(b: bool) -> Arg {
        Arg::Bool(b)
    }
}
impl From<DateTime<Utc>> for Arg {
    fn from(t: DateTime<Utc>) -> Arg {
        Arg::Time(t)
    }
}

/// Binds [`Arg`]s to a sqlx query of the named backend.
macro_rules! bind_args {
    (Sqlite, $q:expr, $args:expr) => {{
        let mut q = $q;
        for a in $args {
            q = match a {
                $crate::store::dialect::Arg::Text(t) => q.bind(t),
                $crate::store::dialect::Arg::Int(i) => q.bind(i),
                $crate::store::dialect::Arg::Bool(b) => q.bind(b),
                $crate::store::dialect::Arg::Time(t) => {
                    q.bind($crate::mapper::table::timestamp_text(&t))
                }
            };
        }
        q
    }};
    (Postgres, $q:expr, $args:expr) => {{
        let mut q = $q;
        for a in $args {
            q = match a {
                $crate::store::dialect::Arg::Text(t) => q.bind(t),
                $crate::store::dialect::Arg::Int(i) => q.bind(i),
                $crate::store::dialect::Arg::Bool(b) => q.bind(b),
                $crate::store::dialect::Arg::Time(t) => q.bind(t),
            };
        }
        q
    }};
}
pub(super) use bind_args;

/// The row filter of a statement that takes an optional DID as `$N`:
/// `did = $N` for one DID, `$N IS NULL` (every row) for none. Written as
/// one `($N IS NULL OR did = $N)`, SQLite cannot use the `did` index
/// through the `OR` and reads the whole table, which made each imported
/// DID's state look-up a scan of every state of the run.
pub(super) fn did_is(n: u8, did: Option<&str>) -> String {
    match did {
        Some(_) => format!("did = ${n}::text"),
        None => format!("${n}::text IS NULL"),
    }
}

/// Rows both backends can decode.
pub trait AnyRow:
    for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}
impl<T> AnyRow for T where
    T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}

/// Running one shared statement (PostgreSQL form) on the pool.
impl Store {
    pub(super) fn dialect(&self) -> Dialect {
        match self {
            Store::Sqlite(_) => Dialect::Sqlite,
            Store::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Runs a statement; returns the rows it affected.
    /// On SQLite the writer thread runs it (`sqlite_exec.rs`).
    pub(super) async fn execute(&self, sql: &str, args: Vec<Arg>) -> Result<u64, StoreError> {
        if let Store::Sqlite(s) = self
            && let Some(w) = s.writer()
        {
            let affected = w.exec(vec![(sql.to_owned(), args)], None).await?;
            return Ok(affected.and_then(|a| a.first().copied()).unwrap_or(0));
        }
        let sql = AssertSqlSafe(self.dialect().translate(sql).into_owned());
        Ok(match self {
            Store::Sqlite(s) => bind_args!(Sqlite, sqlx::query(sql), args)
                .execute(s.pool())
                .await?
                .rows_affected(),
            Store::Postgres(p) => bind_args!(Postgres, sqlx::query(sql), args)
                .execute(p.pool())
                .await?
                .rows_affected(),
        })
    }

    /// Runs a query; returns every row.
    pub(super) async fn fetch_all<T: AnyRow>(
        &self,
        sql: &str,
        args: Vec<Arg>,
    ) -> Result<Vec<T>, StoreError> {
        let sql = AssertSqlSafe(self.dialect().translate(sql).into_owned());
        Ok(match self {
            Store::Sqlite(s) => {
                bind_args!(Sqlite, sqlx::query_as(sql), args)
                    .fetch_all(s.pool())
                    .await?
            }
            Store::Postgres(p) => {
                bind_args!(Postgres, sqlx::query_as(sql), args)
                    .fetch_all(p.pool())
                    .await?
            }
        })
    }

    /// Runs one statement that writes and returns rows (`UPDATE …
    /// RETURNING`); returns every row. On SQLite the writer thread runs it
    /// (`sqlite_exec.rs`), like [`Store::execute`].
    pub(super) async fn fetch_written<T: AnyRow + WriterRow>(
        &self,
        sql: &str,
        args: Vec<Arg>,
    ) -> Result<Vec<T>, StoreError> {
        self.fetch_on_writer(sql, args, true).await
    }

    /// Runs a look-up by key that an import makes for each DID (its
    /// states, identity, account status); returns every row. On SQLite the
    /// writer thread answers it from its warm cache, between batches
    /// (`sqlite_exec.rs`); listings and counts stay on the pool.
    pub(super) async fn fetch_keyed<T: AnyRow + WriterRow>(
        &self,
        sql: &str,
        args: Vec<Arg>,
    ) -> Result<Vec<T>, StoreError> {
        self.fetch_on_writer(sql, args, false).await
    }

    /// [`Store::fetch_all`] on SQLite's writer thread (`writes`: the
    /// statement may write, so the writer forgets its per-DID cache after
    /// it); on PostgreSQL (or a read-only SQLite
    /// store, which has no writer) on the pool.
    async fn fetch_on_writer<T: AnyRow + WriterRow>(
        &self,
        sql: &str,
        args: Vec<Arg>,
        writes: bool,
    ) -> Result<Vec<T>, StoreError> {
        if let Store::Sqlite(s) = self
            && let Some(w) = s.writer()
        {
            let sql = sql.to_owned();
            return w
                .run(writes, move |c| sqlite_exec::rows(c, &sql, &args))
                .await;
        }
        self.fetch_all(sql, args).await
    }

    /// Runs a query that selects at most one row (by key); returns it.
    pub(super) async fn fetch_optional<T: AnyRow>(
        &self,
        sql: &str,
        args: Vec<Arg>,
    ) -> Result<Option<T>, StoreError> {
        Ok(self.fetch_all(sql, args).await?.into_iter().next())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translates_statements_for_sqlite() {
        assert_eq!(
            Dialect::Sqlite
                .translate("SELECT $1::text, $12::timestamptz FROM t FOR UPDATE SKIP LOCKED"),
            "SELECT ?1, ?12 FROM t"
        );
        assert_eq!(
            Dialect::Postgres.translate("SELECT $1::text"),
            "SELECT $1::text"
        );
    }

    #[test]
    fn shared_statements_keep_one_text_per_backend() {
        static S: Sql = Sql::new("UPDATE t SET a = $1::timestamptz WHERE b = $2");
        assert_eq!(S.text(Dialect::Sqlite), "UPDATE t SET a = ?1 WHERE b = ?2");
        assert!(std::ptr::eq(
            S.text(Dialect::Sqlite),
            S.text(Dialect::Sqlite)
        ));
        assert_eq!(
            S.text(Dialect::Postgres),
            "UPDATE t SET a = $1::timestamptz WHERE b = $2"
        );
    }
}
