//! The bulk commit [`Steps`] of SQLite, on the writer thread's rusqlite
//! transaction: one cached prepared statement per table and step, executed
//! once per row, values bound by reference.
//!
//! Owns: the per-table statement texts ([`TableSql`], built once by
//! `prepare`) and each step's execution. Does not own: the commit order
//! (`commit.rs`), the transaction's lifetime and the thread (`sqlite_writer.rs`),
//! or the per-DID facts (`sqlite_repos.rs`), which answer the account-status
//! guard here instead of a subquery per row.
//!
//! The guards are the module-level ones of `store/`: an upsert applies only
//! if its rev is newer than the stored row's (`ON CONFLICT … WHERE`), no
//! tombstone with an equal or newer rev exists (a look-up by the tombstone
//! key first), the pair's last complete import listing is not newer (a
//! look-up in `parity_sweep_floors`), and the DID's account status does not purge (the cache, read from
//! `parity_repos` inside this transaction on a miss).
//!
//! The change log: a logged table's upsert knows from `changes()` whether
//! the row was written; its deletes, purges and sweeps run a `RETURNING`
//! variant of the same statement for the rows they removed (a table that is
//! not logged runs the plain one). The appended rows take their `seq`
//! from `AUTOINCREMENT` under the one write lock this transaction holds.

use chrono::{DateTime, Utc};
use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::{Connection, OptionalExtension, Statement};

use super::change_log::{ChangeLog, Logged, collection_of};
use super::commit::Steps;
use super::dialect::{Arg, Dialect, Sql};
use super::schema;
use super::sqlite_repos::RepoCache;
use super::{CommitStats, StoreError};
use crate::batch::Sweep;
use crate::event::{AccountStatus, Did};
use crate::mapper::table::timestamp_text;
use crate::mapper::{Row, TableSchema, Value};

/// Prepared statements the writer's connection keeps: a handful per table
/// (upsert, delete, purge, sweep) for a dozen tables, plus the shared ones.
pub(super) const STATEMENT_CACHE: usize = 128;

/// A tombstone per delete; a newer rev wins. `?1` uri, `?2` rev, `?3` now.
const TOMBSTONE: &str = "INSERT INTO parity_tombstones (uri, rev, deleted_at) VALUES (?1, ?2, ?3) \
     ON CONFLICT(uri) DO UPDATE SET rev = excluded.rev, deleted_at = excluded.deleted_at \
     WHERE excluded.rev > parity_tombstones.rev";

/// The rev of the last complete listing of a pair, if any. `?1` did, `?2`
/// collection.
const SWEEP_FLOOR: &str = "SELECT rev FROM parity_sweep_floors WHERE did = ?1 AND collection = ?2";

/// The rev a complete listing of a pair was imported at; newer wins.
const SET_SWEEP_FLOOR: &str = "INSERT INTO parity_sweep_floors (did, collection, rev) VALUES (?1, ?2, ?3) \
     ON CONFLICT (did, collection) DO UPDATE SET rev = excluded.rev \
     WHERE excluded.rev > parity_sweep_floors.rev";

/// One change appended to the log; `?11` the commit time.
const APPEND: &str = "INSERT INTO parity_changes \
     (table_name, op, uri, did, collection, rkey, cid, rev, record, subjects, committed_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

/// The tombstone of one URI, if any. `?1` uri.
const TOMBSTONE_REV: &str = "SELECT rev FROM parity_tombstones WHERE uri = ?1";

/// A DID's newest commit rev. `?1` did, `?2` rev, `?3` now.
const REPO_REV: &str = "INSERT INTO parity_repos (did, rev, updated_at) VALUES (?1, ?2, ?3) \
     ON CONFLICT(did) DO UPDATE SET rev = excluded.rev, updated_at = excluded.updated_at \
     WHERE parity_repos.rev IS NULL OR excluded.rev > parity_repos.rev";

/// How a table holds `uri` (read from the table by `prepare`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum UriColumn {
    /// A stored column, bound like the others.
    Stored,
    /// A generated column SQLite computes as `at://` did `/` this
    /// collection `/` rkey (the built-in tables).
    Fixed(&'static str),
    /// A generated column computed from the mapped `collection` column,
    /// the `n`th of the mapper's values (the generic `records` table).
    FromCollection(usize),
}

/// The statements of one mapper table, built once by `prepare`.
pub(super) struct TableSql {
    pub(super) schema: TableSchema,
    /// Whether `uri` is bound (stored) or computed by SQLite.
    uri: UriColumn,
    /// One row, under the rev guard (the tombstone guard is
    /// [`TOMBSTONE_REV`]).
    upsert: String,
    /// One URI, if the stored row is no newer than its tombstone.
    delete: String,
    /// Every row of one DID.
    purge: String,
    sweep_tombstones: String,
    sweep_delete: String,
    /// `delete`, `purge` and `sweep_delete` returning the removed rows, for
    /// the change log.
    delete_returning: String,
    purge_returning: String,
    sweep_delete_returning: String,
}

impl TableSql {
    pub(super) fn new(t: &TableSchema, uri: UriColumn) -> TableSql {
        let mut cols = schema::all_columns(t);
        if uri != UriColumn::Stored {
            cols.retain(|c| *c != "uri");
        }
        let params: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
        let name = &t.name;
        TableSql {
            // VALUES, not SELECT … WHERE: an INSERT from a SELECT may
            // write many rows, so SQLite keeps a statement journal for it
            // and copies every page it touches (a tenth of the writer's
            // time). The tombstone guard is a separate look-up instead.
            upsert: format!(
                "INSERT INTO {name} ({}) VALUES ({}) \
                 ON CONFLICT(uri) DO UPDATE SET {} WHERE excluded.rev > {name}.rev",
                cols.join(", "),
                params.join(", "),
                schema::update_set(t),
            ),
            delete: format!(
                "DELETE FROM {name} WHERE uri = ?1 \
                 AND rev <= (SELECT ts.rev FROM parity_tombstones ts WHERE ts.uri = ?1)"
            ),
            delete_returning: format!(
                "DELETE FROM {name} WHERE uri = ?1 \
                 AND rev <= (SELECT ts.rev FROM parity_tombstones ts WHERE ts.uri = ?1) \
                 RETURNING did, rkey, record"
            ),
            purge: format!("DELETE FROM {name} WHERE did = ?1"),
            purge_returning: format!(
                "DELETE FROM {name} WHERE did = ?1 RETURNING uri, rkey, record"
            ),
            sweep_tombstones: format!(
                "INSERT INTO parity_tombstones (uri, rev, deleted_at) SELECT uri, ?3, ?4 FROM {name} \
                 WHERE uri >= ?1 AND uri < ?2 AND rev < ?3 \
                 ON CONFLICT(uri) DO UPDATE SET rev = excluded.rev, deleted_at = excluded.deleted_at \
                 WHERE excluded.rev > parity_tombstones.rev"
            ),
            sweep_delete: format!("DELETE FROM {name} WHERE uri >= ?1 AND uri < ?2 AND rev < ?3"),
            sweep_delete_returning: format!(
                "DELETE FROM {name} WHERE uri >= ?1 AND uri < ?2 AND rev < ?3 RETURNING uri, did, rkey, record"
            ),
            schema: t.clone(),
            uri,
        }
    }

    /// A generated `uri` must come out as the row's own: a mapper that
    /// writes another collection into a built-in table (or another value
    /// into `records.collection`) would otherwise store rows under a URI
    /// the rest of parity does not know. Stops the writer (our mistake or
    /// the operator's, never the network's: rows' URIs are built from
    /// their own did, collection and rkey).
    fn check_uri(&self, row: &Row) -> Result<(), StoreError> {
        let expected = match &self.uri {
            UriColumn::Stored => return Ok(()),
            UriColumn::Fixed(c) => *c,
            UriColumn::FromCollection(n) => match row.values.get(*n) {
                Some(Value::Text(c)) => c.as_str(),
                _ => "",
            },
        };
        let uri = row.uri.as_str();
        let computed = uri
            .strip_prefix("at://")
            .and_then(|u| u.strip_prefix(row.did.as_str()))
            .and_then(|u| u.strip_prefix('/'))
            .and_then(|u| u.strip_prefix(expected))
            .and_then(|u| u.strip_prefix('/'))
            .is_some_and(|u| u == row.rkey.as_str());
        if computed {
            Ok(())
        } else {
            Err(StoreError::UriLayout {
                table: self.schema.name.clone(),
                collection: collection_of(uri).to_owned(),
            })
        }
    }
}

/// What every commit of one `prepare`d store needs.
pub(super) struct Prepared {
    pub(super) tables: Vec<TableSql>,
    /// `'deleted', …` for `status IN (…)`; `None` when no status purges.
    pub(super) purging: Option<String>,
}

impl Prepared {
    /// `uris[i]` says how `tables[i]` holds `uri` (missing: stored).
    pub(super) fn new(
        tables: &[TableSchema],
        uris: &[UriColumn],
        purge: &[AccountStatus],
    ) -> Prepared {
        Prepared {
            tables: tables
                .iter()
                .enumerate()
                .map(|(i, t)| TableSql::new(t, uris.get(i).cloned().unwrap_or(UriColumn::Stored)))
                .collect(),
            purging: schema::status_list(purge),
        }
    }
}

/// One batch's statements inside a transaction the writer began on its
/// connection. The writer, not these steps, ends that transaction: it may
/// hold several batches (`sqlite_writer.rs`, group commit).
pub(super) struct SqliteSteps<'a> {
    pub(super) tx: &'a Connection,
    pub(super) prepared: &'a Prepared,
    pub(super) repos: &'a mut RepoCache,
    pub(super) log: &'a ChangeLog,
}

fn arg(a: &Arg) -> ToSqlOutput<'_> {
    match a {
        Arg::Text(Some(s)) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        Arg::Text(None) => ToSqlOutput::Borrowed(ValueRef::Null),
        Arg::Int(i) => ToSqlOutput::Owned(SqlValue::Integer(*i)),
        Arg::Bool(b) => ToSqlOutput::Owned(SqlValue::Integer(*b as i64)),
        Arg::Time(t) => ToSqlOutput::Owned(SqlValue::Text(timestamp_text(t))),
    }
}

fn value(v: &Value) -> ToSqlOutput<'_> {
    match v {
        Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
        Value::Text(s) | Value::Json(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        Value::Integer(i) => ToSqlOutput::Owned(SqlValue::Integer(*i)),
        Value::Boolean(b) => ToSqlOutput::Owned(SqlValue::Integer(*b as i64)),
        Value::Timestamp(t) => ToSqlOutput::Owned(SqlValue::Text(timestamp_text(t))),
    }
}

/// The record of a removed row, for its subjects (text, as parity stores
/// it; anything else points at nothing).
fn removed_record(v: ValueRef<'_>) -> Option<&str> {
    v.as_str_or_null().ok().flatten()
}

/// Binds `row` (standard columns, then the mapped ones; `uri` only where
/// the table stores it) and runs `stmt`.
fn upsert_row(
    stmt: &mut Statement<'_>,
    row: &Row,
    now: &str,
    uri: &UriColumn,
) -> rusqlite::Result<usize> {
    let mut at = 1;
    if *uri == UriColumn::Stored {
        stmt.raw_bind_parameter(1, row.uri.as_str())?;
        at = 2;
    }
    stmt.raw_bind_parameter(at, row.did.as_str())?;
    stmt.raw_bind_parameter(at + 1, row.rkey.as_str())?;
    stmt.raw_bind_parameter(at + 2, row.cid.as_str())?;
    stmt.raw_bind_parameter(at + 3, row.rev.as_str())?;
    stmt.raw_bind_parameter(at + 4, row.record.get())?;
    stmt.raw_bind_parameter(at + 5, now)?;
    for (i, v) in row.values.iter().enumerate() {
        stmt.raw_bind_parameter(at + 6 + i, value(v))?;
    }
    stmt.raw_execute()
}

impl Steps for SqliteSteps<'_> {
    fn table_count(&self) -> usize {
        self.prepared.tables.len()
    }

    fn table_name(&self, table: usize) -> &str {
        &self.prepared.tables[table].schema.name
    }

    fn logged(&self, table: usize) -> bool {
        self.log.logs(self.table_name(table))
    }

    async fn run(&mut self, sql: &'static Sql, args: Vec<Arg>) -> Result<u64, StoreError> {
        let text = sql.text(Dialect::Sqlite);
        // A shared statement that writes parity_repos names its DID as $1
        // (commit.rs): what is remembered of that DID may no longer hold.
        if text.contains("parity_repos")
            && let Some(Arg::Text(Some(did))) = args.first()
        {
            self.repos.forget(did);
        }
        let mut stmt = self.tx.prepare_cached(text)?;
        for (i, a) in args.iter().enumerate() {
            stmt.raw_bind_parameter(i + 1, arg(a))?;
        }
        Ok(stmt.raw_execute()? as u64)
    }

    async fn purge<'b>(
        &mut self,
        dids: &[&'b Did],
        stats: &mut CommitStats,
        mut log: Option<&mut Vec<Logged<'b>>>,
    ) -> Result<(), StoreError> {
        for (i, t) in self.prepared.tables.iter().enumerate() {
            let sink = log.as_deref_mut().filter(|_| self.log.logs(&t.schema.name));
            let Some(sink) = sink else {
                let mut stmt = self.tx.prepare_cached(&t.purge)?;
                for did in dids {
                    let n = stmt.execute([did.as_str()])?;
                    CommitStats::add(&mut stats.deleted, &t.schema.name, n as u64);
                }
                continue;
            };
            let mut stmt = self.tx.prepare_cached(&t.purge_returning)?;
            for did in dids {
                let mut rows = stmt.query([did.as_str()])?;
                let mut n = 0;
                while let Some(r) = rows.next()? {
                    n += 1;
                    sink.push(Logged::removed(
                        i,
                        r.get(0)?,
                        did.as_str().to_owned(),
                        r.get(1)?,
                        removed_record(r.get_ref(2)?),
                        None,
                    ));
                }
                CommitStats::add(&mut stats.deleted, &t.schema.name, n);
            }
        }
        Ok(())
    }

    async fn tombstones(
        &mut self,
        deletes: &[(&str, &str)],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let now = timestamp_text(&now);
        let mut stmt = self.tx.prepare_cached(TOMBSTONE)?;
        let mut written = 0;
        for (uri, rev) in deletes {
            written += stmt.execute([uri, rev, &now.as_str()])? as u64;
        }
        Ok(written)
    }

    async fn delete<'b>(
        &mut self,
        table: usize,
        deletes: &[(&'b str, &'b str)],
        log: Option<&mut Vec<Logged<'b>>>,
    ) -> Result<u64, StoreError> {
        let t = &self.prepared.tables[table];
        let mut n = 0;
        let Some(sink) = log else {
            let mut stmt = self.tx.prepare_cached(&t.delete)?;
            for (uri, _) in deletes {
                n += stmt.execute([uri])? as u64;
            }
            return Ok(n);
        };
        let mut stmt = self.tx.prepare_cached(&t.delete_returning)?;
        for (uri, rev) in deletes {
            let mut rows = stmt.query([uri])?;
            while let Some(r) = rows.next()? {
                n += 1;
                sink.push(Logged::removed(
                    table,
                    (*uri).to_owned(),
                    r.get(0)?,
                    r.get(1)?,
                    removed_record(r.get_ref(2)?),
                    Some(rev),
                ));
            }
        }
        Ok(n)
    }

    async fn upsert<'b>(
        &mut self,
        table: usize,
        rows: &[&'b Row],
        now: DateTime<Utc>,
        mut log: Option<&mut Vec<Logged<'b>>>,
    ) -> Result<u64, StoreError> {
        let now = timestamp_text(&now);
        let purging = self.prepared.purging.as_deref();
        let t = &self.prepared.tables[table];
        let mut stmt = self.tx.prepare_cached(&t.upsert)?;
        let mut tombstone = self.tx.prepare_cached(TOMBSTONE_REV)?;
        let mut floor = self.tx.prepare_cached(SWEEP_FLOOR)?;
        let mut n = 0;
        for row in rows {
            if self.repos.purging(self.tx, row.did.as_str(), purging)? {
                continue;
            }
            let dead: Option<String> = tombstone.query_row([&row.uri], |r| r.get(0)).optional()?;
            if dead.is_some_and(|rev| rev.as_str() >= row.rev.as_str()) {
                continue;
            }
            let listed: Option<String> = floor
                .query_row([row.did.as_str(), collection_of(&row.uri)], |r| r.get(0))
                .optional()?;
            if listed.is_some_and(|rev| rev.as_str() > row.rev.as_str()) {
                continue;
            }
            t.check_uri(row)?;
            let written = upsert_row(&mut stmt, row, &now, &t.uri)? as u64;
            if written > 0
                && let Some(sink) = log.as_deref_mut()
            {
                sink.push(Logged::upsert(table, row));
            }
            n += written;
        }
        Ok(n)
    }

    async fn sweep<'b>(
        &mut self,
        sweep: &'b Sweep,
        now: DateTime<Utc>,
        log: Option<&mut Vec<Logged<'b>>>,
    ) -> Result<u64, StoreError> {
        let table = sweep.table.0;
        let t = &self.prepared.tables[table];
        let (lo, hi) = sweep.uri_range();
        let (range, rev) = ((lo.as_str(), hi.as_str()), sweep.rev.as_str());
        let now = timestamp_text(&now);
        self.tx
            .prepare_cached(&t.sweep_tombstones)?
            .execute([range.0, range.1, rev, &now])?;
        self.tx.prepare_cached(SET_SWEEP_FLOOR)?.execute([
            sweep.did.as_str(),
            sweep.collection.as_str(),
            rev,
        ])?;
        let Some(sink) = log else {
            return Ok(self
                .tx
                .prepare_cached(&t.sweep_delete)?
                .execute([range.0, range.1, rev])? as u64);
        };
        let mut stmt = self.tx.prepare_cached(&t.sweep_delete_returning)?;
        let mut rows = stmt.query([range.0, range.1, rev])?;
        let mut n = 0;
        while let Some(r) = rows.next()? {
            n += 1;
            sink.push(Logged::removed(
                table,
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                removed_record(r.get_ref(3)?),
                Some(rev),
            ));
        }
        Ok(n)
    }

    async fn revs(&mut self, revs: &[(&Did, &str)], now: DateTime<Utc>) -> Result<(), StoreError> {
        let now = timestamp_text(&now);
        let mut stmt = self.tx.prepare_cached(REPO_REV)?;
        for (did, rev) in revs {
            if self.repos.rev_covers(did.as_str(), rev) {
                continue;
            }
            stmt.execute([did.as_str(), rev, &now])?;
            self.repos.offered_rev(did.as_str(), rev);
        }
        Ok(())
    }

    /// Nothing to wait for: this transaction already holds SQLite's one
    /// write lock (`BEGIN IMMEDIATE`).
    async fn lock_watermark(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    /// SQLite's one write lock, held since `BEGIN IMMEDIATE`, orders the
    /// appends: `AUTOINCREMENT` hands out seqs in commit order and never
    /// reuses one.
    async fn append(&mut self, changes: &[Logged<'_>]) -> Result<i64, StoreError> {
        let now = timestamp_text(&Utc::now());
        let mut stmt = self.tx.prepare_cached(APPEND)?;
        for c in changes {
            stmt.execute(rusqlite::params![
                self.prepared.tables[c.table].schema.name,
                c.op.as_str(),
                c.uri,
                c.did,
                c.collection(),
                c.rkey,
                c.cid,
                c.rev,
                c.record,
                c.subjects,
                now,
            ])?;
        }
        Ok(self.tx.last_insert_rowid())
    }

    /// The writer commits the transaction once every batch in it is
    /// written.
    async fn commit(self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The writer rolls a trial's transaction back.
    async fn rollback(self) -> Result<(), StoreError> {
        Ok(())
    }
}
