//! Rows in the text format of PostgreSQL's `COPY … FROM STDIN`, columns in
//! [`schema::all_columns`] order and with the values the upsert binds, for
//! the write of fresh repositories (`postgres_fresh.rs`).
//!
//! Why `COPY`: PostgreSQL writes its rows through the multi-row insert (a
//! heap page filled at once, one WAL record for many rows) and spent about
//! half the upsert's CPU a row on the same heap, indexes and WAL in the
//! import bench (`pg_stat_statements`: half the buffer hits, 40 % fewer WAL
//! records); no `INSERT` form takes that path (BENCHMARKS.md, issue 15 b,
//! session 28).

use chrono::{DateTime, SecondsFormat, Utc};

use super::schema;
use crate::mapper::{ColumnType, Row, TableSchema, Value};

/// The statement that copies rows of `t` in [`encode`]'s column order.
pub(super) fn statement(t: &TableSchema) -> String {
    format!(
        "COPY {} ({}) FROM STDIN",
        t.name,
        schema::all_columns(t).join(", ")
    )
}

/// `rows` in `COPY`'s text format, columns in [`schema::all_columns`]
/// order: the same values the upsert binds.
pub(super) fn encode(t: &TableSchema, rows: &[Row], now: DateTime<Utc>) -> Vec<u8> {
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
