//! PostgreSQL: one repo's new rows written with `COPY` instead of the
//! upsert, when nothing could refuse or collide with any of them.
//!
//! Owns: when a step's rows may take `COPY` (at least [`MIN_ROWS`] rows,
//! all of one repo's collection, none of their URIs in the table yet, no
//! tombstone in the collection's URI range, no sweep floor of it, no
//! purging status of the repo: one statement asks all of it), the `COPY`
//! statement and the rows in its text format. Does not own: the upsert
//! that writes every other step (`postgres_upsert.rs`), nor the change
//! log's steps (a logged table always upserts, as the log needs the rows
//! written back).
//!
//! Why: a backfill writes mostly repos the database has never seen, and
//! for those the upsert's conflict check and per-row insert path were the
//! server's time; `COPY` writes a page of heap tuples at a time.
//!
//! Invariants: the check and the `COPY` run in the commit's transaction,
//! after its DID locks: no other parity writer can write the repo between
//! them, so what the check saw still holds; a step `COPY` writes is
//! exactly the rows the upsert would have written (all of them, as none
//! exists and no guard applies).

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::{AssertSqlSafe, PgConnection};

use super::StoreError;
use super::schema;
use crate::event::AccountStatus;
use crate::mapper::{ColumnType, Row, TableSchema, Value};

/// Fewer rows than this upsert: the check and `COPY` are two more round
/// trips than the upsert's one.
pub(super) const MIN_ROWS: usize = 16;

/// A table's check and `COPY` statements.
pub(super) struct CopySql {
    check: Arc<str>,
    copy: Arc<str>,
}

impl CopySql {
    /// The statements of table `t`, whose rows of accounts with a status in
    /// `purge` are refused.
    pub(super) fn new(t: &TableSchema, purge: &[AccountStatus]) -> CopySql {
        let status = schema::status_list(purge)
            .map(|l| format!(" AND NOT EXISTS (SELECT 1 FROM parity_repos r WHERE r.did = $4 AND r.status IN ({l}))"))
            .unwrap_or_default();
        // `uri = ANY(…)`, not a range: the table's own `uri` may have any
        // collation (a table the operator made), so only equality is safe.
        let check = format!(
            "SELECT NOT EXISTS (SELECT 1 FROM {name} WHERE uri = ANY($1::text[])) \
             AND NOT EXISTS (SELECT 1 FROM parity_tombstones t WHERE t.uri >= $2 AND t.uri < $3) \
             AND NOT EXISTS (SELECT 1 FROM parity_sweep_floors f WHERE f.did = $4 AND f.collection = $5){status}",
            name = t.name
        );
        let copy = format!(
            "COPY {} ({}) FROM STDIN",
            t.name,
            schema::all_columns(t).join(", ")
        );
        CopySql {
            check: check.into(),
            copy: copy.into(),
        }
    }
}

/// Writes `rows` with `COPY` if they may take it (see the module doc);
/// `None` when they may not, and nothing was written.
pub(super) async fn write(
    conn: &mut PgConnection,
    t: &TableSchema,
    sql: &CopySql,
    rows: &[&Row],
    now: DateTime<Utc>,
) -> Result<Option<u64>, StoreError> {
    if rows.len() < MIN_ROWS {
        return Ok(None);
    }
    let Some((did, collection)) = super::postgres_upsert::one_repo_collection(rows) else {
        return Ok(None);
    };
    let uris: Vec<&str> = rows.iter().map(|r| r.uri.as_str()).collect();
    let base = format!("at://{did}/{collection}");
    let fresh: bool = sqlx::query_scalar(AssertSqlSafe(sql.check.clone()))
        .bind(uris)
        .bind(format!("{base}/"))
        .bind(format!("{base}0"))
        .bind(did)
        .bind(collection)
        .fetch_one(&mut *conn)
        .await?;
    if !fresh {
        return Ok(None);
    }
    let mut sink = conn.copy_in_raw(&sql.copy).await?;
    sink.send(encode(t, rows, now).into_bytes()).await?;
    Ok(Some(sink.finish().await?))
}

/// `rows` in `COPY`'s text format, in [`schema::all_columns`] order; each
/// extra column's value as the upsert binds it (a value of another type
/// than its column's is NULL).
pub(super) fn encode(t: &TableSchema, rows: &[&Row], now: DateTime<Utc>) -> String {
    let now = now.to_rfc3339_opts(SecondsFormat::Micros, true);
    let mut out = String::with_capacity(rows.len() * 512);
    for row in rows {
        for v in [
            &row.uri,
            row.did.as_str(),
            &row.rkey,
            &row.cid,
            &row.rev,
            row.record.get(),
        ] {
            field(&mut out, Some(v));
            out.push('\t');
        }
        out.push_str(&now);
        for (i, c) in t.columns.iter().enumerate() {
            out.push('\t');
            match (c.ty, row.values.get(i).unwrap_or(&Value::Null)) {
                (ColumnType::Text | ColumnType::Json, Value::Text(s) | Value::Json(s)) => {
                    field(&mut out, Some(s))
                }
                (ColumnType::Integer, Value::Integer(i)) => out.push_str(&i.to_string()),
                (ColumnType::Boolean, Value::Boolean(b)) => out.push(if *b { 't' } else { 'f' }),
                (ColumnType::Timestamp, Value::Timestamp(t)) => {
                    out.push_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true))
                }
                _ => field(&mut out, None),
            }
        }
        out.push('\n');
    }
    out
}

/// One field: `\N` for NULL, else the text with `COPY`'s backslash escapes.
fn field(out: &mut String, v: Option<&str>) {
    let Some(v) = v else {
        out.push_str("\\N");
        return;
    };
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}
