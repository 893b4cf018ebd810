//! PostgreSQL's `COPY` of an import page that only adds rows: when a page
//! of one repo's collection writes URIs the table does not hold yet and no
//! guard could refuse any of its rows, the rows go in with `COPY … FROM
//! STDIN` instead of the upsert.
//!
//! Why: PostgreSQL writes `COPY`'s rows through its multi-row insert (a
//! heap page filled at once, one WAL record for many rows) and spends
//! about half the upsert's CPU a row on the same heap, indexes and WAL
//! (`pg_stat_statements`: half the buffer hits, 40 % fewer WAL records);
//! no `INSERT` form gets that path. A whole-repo import of a new repo is
//! all such pages (BENCHMARKS.md, issue 15 b, session 28).
//!
//! Owns: when a page may be copied (one statement, [`CopySql::check`],
//! asked after the page's DID locks are held, so nothing that would change
//! its answer can commit before this transaction does) and the page's rows
//! in `COPY`'s text format. The rows written are exactly the upsert's: the
//! check asks for every reason the upsert could skip or update a row (a
//! row already stored at one of the URIs, a tombstone in the page's URI
//! range, a floor of the repo's collection newer than a row, an account
//! status that purges), and a page with any of them takes the upsert.
//! Does not own the upsert (`postgres_upsert.rs`) or the locks
//! (`did_locks.rs`).

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::{AssertSqlSafe, PgConnection};

use super::StoreError;
use super::postgres_upsert::one_repo_collection;
use super::schema;
use crate::event::AccountStatus;
use crate::mapper::{ColumnType, Row, TableSchema, Value};

/// The fewest rows a page copies: below it the check and `COPY`'s two
/// round trips cost more than the upsert they save (the upsert is one
/// round trip; `COPY` saves ~5 µs of server CPU a row, a round trip costs
/// ~50–100 µs on this machine).
pub const MIN_ROWS: usize = 32;

/// A table's copy statements.
pub(super) struct CopySql {
    /// `$1`/`$2` the page's lowest and highest URI, `$3` DID, `$4`
    /// collection, `$5` the page's oldest rev: true when the page may be
    /// copied.
    check: String,
    copy: String,
}

impl CopySql {
    /// The statements of table `t`, whose upsert refuses rows of accounts
    /// whose status is one of `purge`.
    pub(super) fn new(t: &TableSchema, purge: &[AccountStatus]) -> CopySql {
        let status = schema::status_list(purge).map(|l| {
            format!(" AND NOT EXISTS (SELECT 1 FROM parity_repos r WHERE r.did = $3 AND r.status IN ({l}))")
        });
        let check = format!(
            "SELECT NOT EXISTS (SELECT 1 FROM {t} WHERE uri >= $1 AND uri <= $2) \
             AND NOT EXISTS (SELECT 1 FROM parity_tombstones ts WHERE ts.uri >= $1 AND ts.uri <= $2) \
             AND NOT EXISTS (SELECT 1 FROM parity_sweep_floors f WHERE f.did = $3 AND f.collection = $4 AND f.rev > $5){}",
            status.unwrap_or_default(),
            t = t.name,
        );
        let copy = format!(
            "COPY {} ({}) FROM STDIN",
            t.name,
            schema::all_columns(t).join(", ")
        );
        CopySql { check, copy }
    }
}

/// Copies `rows` (one page, all of one repo's collection, at least
/// `min_rows` of them) into table `t` when the check allows it, inside the
/// caller's transaction (which holds the page's DID locks); `None` when
/// the page must take the upsert.
pub(super) async fn try_copy(
    conn: &mut PgConnection,
    sql: &CopySql,
    t: &TableSchema,
    rows: &[&Row],
    now: DateTime<Utc>,
    min_rows: usize,
) -> Result<Option<u64>, StoreError> {
    if rows.len() < min_rows.max(1) {
        return Ok(None);
    }
    let Some((did, collection)) = one_repo_collection(rows) else {
        return Ok(None);
    };
    let (Some(lo), Some(hi), Some(rev)) = (
        rows.iter().map(|r| r.uri.as_str()).min(),
        rows.iter().map(|r| r.uri.as_str()).max(),
        rows.iter().map(|r| r.rev.as_str()).min(),
    ) else {
        return Ok(None);
    };
    let clean: bool = sqlx::query_scalar(AssertSqlSafe(sql.check.clone()))
        .bind(lo)
        .bind(hi)
        .bind(did)
        .bind(collection)
        .bind(rev)
        .fetch_one(&mut *conn)
        .await?;
    if !clean {
        return Ok(None);
    }
    let mut sink = conn.copy_in_raw(&sql.copy).await?;
    sink.send(encode(t, rows, now)).await?;
    Ok(Some(sink.finish().await?))
}

/// `rows` in `COPY`'s text format, columns in [`schema::all_columns`]
/// order: the same values the upsert binds.
pub(super) fn encode(t: &TableSchema, rows: &[&Row], now: DateTime<Utc>) -> Vec<u8> {
    let now = now.to_rfc3339_opts(SecondsFormat::Micros, true);
    let mut out = Vec::with_capacity(rows.len() * 512);
    for row in rows {
        for v in [
            row.uri.as_str(),
            row.did.as_str(),
            &row.rkey,
            &row.cid,
            &row.rev,
            row.record.get(),
            &now,
        ] {
            field(&mut out, Some(v));
            out.push(b'\t');
        }
        // As the upsert binds them: a value of another type than its
        // column's is NULL.
        for (i, c) in t.columns.iter().enumerate() {
            match (c.ty, row.values.get(i).unwrap_or(&Value::Null)) {
                (ColumnType::Text | ColumnType::Json, Value::Text(s) | Value::Json(s)) => {
                    field(&mut out, Some(s))
                }
                (ColumnType::Integer, Value::Integer(n)) => {
                    out.extend_from_slice(n.to_string().as_bytes())
                }
                (ColumnType::Boolean, Value::Boolean(b)) => out.push(if *b { b't' } else { b'f' }),
                (ColumnType::Timestamp, Value::Timestamp(ts)) => out
                    .extend_from_slice(ts.to_rfc3339_opts(SecondsFormat::Micros, true).as_bytes()),
                _ => field(&mut out, None),
            }
            out.push(b'\t');
        }
        // The last field's tab becomes the row's end.
        out.pop();
        out.push(b'\n');
    }
    out
}

/// One field: `\N` for NULL, else the text with the format's four special
/// characters escaped. Byte by byte: they are ASCII, so never part of a
/// longer UTF-8 sequence (a `char` pattern decoded every character: 4 %
/// of the import's CPU).
fn field(out: &mut Vec<u8>, v: Option<&str>) {
    let Some(v) = v else {
        out.extend_from_slice(b"\\N");
        return;
    };
    let bytes = v.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escaped);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
#[path = "postgres_copy_tests.rs"]
mod tests;
