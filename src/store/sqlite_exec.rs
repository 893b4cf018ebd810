//! Shared statements (`dialect.rs`) run on the SQLite writer's connection:
//! the bookkeeping writes of imports, publishing and the rest
//! (`Store::execute`, `Store::in_transaction`), the writes that return
//! rows (`Store::fetch_written`: the import claims) and an import's
//! per-DID look-ups by key (`Store::fetch_keyed`), handed to the writer
//! thread instead of the sqlx pool.
//!
//! Why: every SQLite write takes the database's one write lock, which the
//! writer holds for each batch. A pool connection's write waited for it
//! in SQLite's busy handler (sleeps of 1 ms and up), re-read from the WAL
//! the pages the writer had just changed (its own cache is invalidated by
//! every commit of another connection), and cost two thread hand-offs
//! (sqlx's per-connection worker). In an `import --all` profile those pool
//! threads were a quarter of parity's CPU. On the writer's thread the
//! statements queue behind the batches in order, find their pages in a
//! warm cache, and never wait for the lock of their own process.
//!
//! Owns: binding [`Arg`]s for rusqlite, running one transaction of
//! statements with an optional guard, and one statement that returns rows
//! (decoded by [`WriterRow`]). Does not own: the statements
//! (each store file) or the thread (`sqlite_writer.rs`).

use rusqlite::Connection;

use super::StoreError;
use super::dialect::{Arg, Dialect};
use crate::mapper::table::timestamp_text;

/// One statement of PostgreSQL form with its arguments.
pub(super) type Stmt = (String, Vec<Arg>);

/// Runs `stmts` all or nothing (a savepoint inside the writer's
/// transaction); returns the rows each changed. When statement `guard`
/// changes no row, they are rolled back and `None` returned (as
/// `Store::in_transaction` does).
pub(super) fn run(
    conn: &mut Connection,
    stmts: &[Stmt],
    guard: Option<usize>,
) -> Result<Option<Vec<u64>>, StoreError> {
    let mut tx = conn.savepoint()?;
    let mut affected = Vec::with_capacity(stmts.len());
    for (i, (sql, args)) in stmts.iter().enumerate() {
        let mut stmt = tx.prepare_cached(&Dialect::Sqlite.translate(sql))?;
        for (at, arg) in args.iter().enumerate() {
            bind(&mut stmt, at + 1, arg)?;
        }
        let n = stmt.raw_execute()? as u64;
        if guard == Some(i) && n == 0 {
            drop(stmt);
            tx.rollback()?;
            return Ok(None);
        }
        affected.push(n);
    }
    tx.commit()?;
    Ok(Some(affected))
}

/// A row type a write with `RETURNING` gives back on the writer's
/// connection, decoded by column name as its `sqlx::FromRow` does.
pub(super) trait WriterRow: Sized + Send + 'static {
    fn from_writer_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self>;
}

/// Runs one statement that returns rows (an `UPDATE … RETURNING` claim
/// or a look-up by key) inside the writer's transaction, whose cache holds
/// the pages its batches just wrote; returns every row. A single statement
/// is all or nothing by itself.
pub(super) fn rows<T: WriterRow>(
    conn: &Connection,
    sql: &str,
    args: &[Arg],
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare_cached(&Dialect::Sqlite.translate(sql))?;
    for (at, arg) in args.iter().enumerate() {
        bind(&mut stmt, at + 1, arg)?;
    }
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(T::from_writer_row(row)?);
    }
    Ok(out)
}

/// A one-column text row.
impl WriterRow for (String,) {
    fn from_writer_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok((row.get(0)?,))
    }
}

/// A column whose text does not parse as its type.
pub(super) fn bad_column(
    at: &str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("column {at}: {e}").into(),
    )
}

/// Binds one argument the way the sqlx pool binds it for SQLite (times as
/// RFC 3339 text, booleans as integers).
fn bind(stmt: &mut rusqlite::CachedStatement<'_>, at: usize, arg: &Arg) -> rusqlite::Result<()> {
    match arg {
        Arg::Text(t) => stmt.raw_bind_parameter(at, t.as_deref()),
        Arg::Int(i) => stmt.raw_bind_parameter(at, i),
        Arg::Bool(b) => stmt.raw_bind_parameter(at, b),
        Arg::Time(t) => stmt.raw_bind_parameter(at, timestamp_text(t)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER, b INTEGER, at TEXT)")
            .unwrap();
        c
    }

    type Row = (String, Option<i64>, Option<bool>, Option<String>);

    fn rows(c: &Connection) -> Vec<Row> {
        let mut s = c.prepare("SELECT k, n, b, at FROM t ORDER BY k").unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn binds_like_the_pool_and_counts_changed_rows() {
        let mut c = conn();
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-02T09:00:00.5Z")
            .unwrap()
            .to_utc();
        let stmts = vec![
            (
                "INSERT INTO t (k, n, b, at) VALUES ($1, $2, $3, $4::timestamptz), ($5, NULL, NULL, NULL)"
                    .to_owned(),
                vec!["a".into(), 7i64.into(), true.into(), at.into(), "b".into()],
            ),
            (
                "UPDATE t SET n = $1 WHERE k <> $2::text".to_owned(),
                vec![1i64.into(), Arg::Text(None)],
            ),
        ];
        assert_eq!(run(&mut c, &stmts, None).unwrap(), Some(vec![2, 0]));
        assert_eq!(
            rows(&c),
            [
                (
                    "a".to_owned(),
                    Some(7),
                    Some(true),
                    Some("2026-12-02T09:00:00.500000Z".to_owned())
                ),
                ("b".to_owned(), None, None, None)
            ]
        );
    }

    #[test]
    fn a_guard_that_changes_nothing_rolls_everything_back() {
        let mut c = conn();
        let stmts = vec![
            ("INSERT INTO t (k) VALUES ($1)".to_owned(), vec!["a".into()]),
            (
                "UPDATE t SET n = 1 WHERE k = $1".to_owned(),
                vec!["missing".into()],
            ),
        ];
        assert_eq!(run(&mut c, &stmts, Some(1)).unwrap(), None);
        assert!(rows(&c).is_empty());
        assert_eq!(run(&mut c, &stmts[..1], Some(0)).unwrap(), Some(vec![1]));
    }

    #[derive(Debug, PartialEq)]
    struct Claimed {
        k: String,
        n: i64,
    }

    impl WriterRow for Claimed {
        fn from_writer_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
            Ok(Claimed {
                k: row.get("k")?,
                n: row.get("n")?,
            })
        }
    }

    #[test]
    fn a_write_returns_its_rows_and_commits() {
        let c = conn();
        c.execute_batch("INSERT INTO t (k, n) VALUES ('a', 1), ('b', 2), ('c', 3)")
            .unwrap();
        let mut got: Vec<Claimed> = super::rows(
            &c,
            "UPDATE t SET n = n * 10 WHERE n >= $1 RETURNING k, n",
            &[2i64.into()],
        )
        .unwrap();
        got.sort_by(|a, b| a.k.cmp(&b.k));
        assert_eq!(
            got,
            [
                Claimed {
                    k: "b".into(),
                    n: 20
                },
                Claimed {
                    k: "c".into(),
                    n: 30
                }
            ]
        );
        assert!(c.is_autocommit(), "the transaction ended");
        let n: i64 = c
            .query_row("SELECT SUM(n) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 51);
    }

    #[test]
    fn a_failing_statement_rolls_back_the_ones_before_it() {
        let mut c = conn();
        let stmts = vec![
            ("INSERT INTO t (k) VALUES ($1)".to_owned(), vec!["a".into()]),
            ("INSERT INTO t (k) VALUES ($1)".to_owned(), vec!["a".into()]),
        ];
        let e = run(&mut c, &stmts, None).unwrap_err();
        assert!(e.is_rejection(), "{e}");
        assert!(rows(&c).is_empty());
    }
}
