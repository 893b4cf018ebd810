//! The SQLite store-limit baseline: one rusqlite connection, WAL and
//! `synchronous = NORMAL` like parity's, the same page cache size, one
//! prepared upsert per table (`INSERT … ON CONFLICT(uri) DO UPDATE … WHERE
//! excluded.rev > rev`), a prepared delete plus tombstone, and one
//! transaction per chunk. This is the fastest plain way to store the rows:
//! what parity's SQLite path is measured against.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use rusqlite::{Connection, params};

use super::feed;
use super::schema::{DbColumn, writable};
use super::{Point, STANDARD};
use crate::event::{Generator, rfc3339};
use crate::rows::{Write, value_text};

/// Where one upsert parameter comes from.
#[derive(Debug, Clone, Copy)]
enum Source {
    Standard(usize),
    Mapper(usize),
}

struct Upsert {
    sql: String,
    sources: Vec<Source>,
}

/// The writer.
pub struct SqliteBaseline {
    conn: Connection,
    upserts: HashMap<String, Upsert>,
}

impl SqliteBaseline {
    /// Opens the migrated database at `path` with a `cache_kib` page cache
    /// and parity's writer's `wal_autocheckpoint`, so the settings that
    /// are not the store's own limit are parity's.
    pub fn open(path: &str, cache_kib: u64) -> rusqlite::Result<SqliteBaseline> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "cache_size", format!("-{cache_kib}"))?;
        conn.pragma_update(
            None,
            "wal_autocheckpoint",
            parity::store::SQLITE_WAL_AUTOCHECKPOINT,
        )?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(SqliteBaseline {
            conn,
            upserts: HashMap::new(),
        })
    }

    fn columns(&self, table: &str) -> rusqlite::Result<Vec<DbColumn>> {
        let mut st = self
            .conn
            .prepare("SELECT name, type, \"notnull\", dflt_value FROM pragma_table_info(?1)")?;
        let rows = st.query_map([table], |r| {
            Ok(DbColumn {
                name: r.get(0)?,
                ty: r.get(1)?,
                required: r.get::<_, bool>(2)? && r.get::<_, Option<String>>(3)?.is_none(),
            })
        })?;
        rows.collect()
    }

    fn upsert_for(&mut self, table: &str, mapper_cols: &[String]) -> rusqlite::Result<&Upsert> {
        if !self.upserts.contains_key(table) {
            let cols = writable(table, &self.columns(table)?, mapper_cols);
            let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
            let sources = cols
                .iter()
                .map(|c| match STANDARD.iter().position(|s| *s == c.name) {
                    Some(i) => Source::Standard(i),
                    None => Source::Mapper(mapper_cols.iter().position(|m| *m == c.name).unwrap()),
                })
                .collect();
            let marks: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
            let set: Vec<String> = names
                .iter()
                .filter(|n| **n != "uri")
                .map(|n| format!("{n} = excluded.{n}"))
                .collect();
            let sql = format!(
                "INSERT INTO {table} ({}) VALUES ({}) ON CONFLICT(uri) DO UPDATE SET {} WHERE excluded.rev > {table}.rev",
                names.join(", "),
                marks.join(", "),
                set.join(", ")
            );
            self.upserts
                .insert(table.to_owned(), Upsert { sql, sources });
        }
        Ok(&self.upserts[table])
    }

    /// Writes one chunk in one transaction, with the stream cursor.
    pub fn write(&mut self, writes: &[Write], cursor: u64, stream: &str) -> rusqlite::Result<()> {
        let now = rfc3339(chrono::Utc::now().timestamp_micros() as u64);
        // Statements are looked up (and built) before the transaction.
        for w in writes {
            if let Write::Upsert { table, values, .. } = w {
                let names: Vec<String> = values.iter().map(|(n, _)| n.clone()).collect();
                self.upsert_for(table, &names)?;
            }
        }
        let tx = self.conn.transaction()?;
        for w in writes {
            match w {
                Write::Upsert {
                    table,
                    uri,
                    did,
                    rkey,
                    cid,
                    rev,
                    record,
                    values,
                } => {
                    let u = &self.upserts[table];
                    let standard: [&str; 7] = [uri, did, rkey, cid, rev, record, &now];
                    let mut st = tx.prepare_cached(&u.sql)?;
                    for (i, s) in u.sources.iter().enumerate() {
                        match *s {
                            Source::Standard(k) => st.raw_bind_parameter(i + 1, standard[k])?,
                            Source::Mapper(k) => {
                                st.raw_bind_parameter(i + 1, value_text(&values[k].1, true))?
                            }
                        }
                    }
                    st.raw_execute()?;
                }
                Write::Delete { table, uri, rev } => {
                    tx.prepare_cached(&format!("DELETE FROM {table} WHERE uri = ?1 AND rev < ?2"))?
                        .execute(params![uri, rev])?;
                    tx.prepare_cached(
                        "INSERT INTO parity_tombstones (uri, rev, deleted_at) VALUES (?1, ?2, ?3) \
                         ON CONFLICT(uri) DO UPDATE SET rev = excluded.rev, deleted_at = excluded.deleted_at \
                         WHERE excluded.rev > parity_tombstones.rev",
                    )?
                    .execute(params![uri, rev, now])?;
                }
                Write::Repo {
                    did,
                    handle,
                    account,
                } => {
                    let (active, status) = match account {
                        Some((a, s)) => (Some(*a), Some(s.as_str())),
                        None => (None, None),
                    };
                    tx.prepare_cached(
                        "INSERT INTO parity_repos (did, handle, status, active, updated_at) \
                         VALUES (?1, ?2, COALESCE(?3, 'active'), COALESCE(?4, 1), ?5) \
                         ON CONFLICT(did) DO UPDATE SET handle = COALESCE(excluded.handle, parity_repos.handle), \
                         status = COALESCE(?3, parity_repos.status), active = COALESCE(?4, parity_repos.active), \
                         updated_at = excluded.updated_at",
                    )?
                    .execute(params![did, handle, status, active, now])?;
                }
            }
        }
        tx.prepare_cached(
            "INSERT INTO parity_cursors (stream, cursor, updated_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT(stream) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
        )?
        .execute(params![stream, cursor as i64, now])?;
        tx.commit()
    }
}

/// Writes events `from..to` of `generator` into the migrated SQLite file
/// at `path`, `per_tx` events per transaction; returns a point per
/// transaction.
pub fn run(
    generator: Arc<Generator>,
    path: &str,
    cache_kib: u64,
    from: u64,
    to: u64,
    per_tx: u64,
) -> rusqlite::Result<Vec<Point>> {
    let mut db = SqliteBaseline::open(path, cache_kib)?;
    let mut points = Vec::new();
    let (mut events, mut rows, mut busy) = (0, 0, 0.0);
    for chunk in feed::chunks(&generator, from, to, per_tx) {
        let t0 = Instant::now();
        db.write(&chunk.writes, chunk.last_cursor, "baseline")?;
        busy += t0.elapsed().as_secs_f64();
        events += chunk.events;
        rows += chunk.writes.iter().filter(|w| w.is_row()).count() as u64;
        points.push(Point {
            events,
            rows,
            secs: busy,
        });
    }
    Ok(points)
}
