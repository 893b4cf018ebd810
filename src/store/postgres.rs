//! PostgreSQL backend: one `UNNEST` statement per table and step, so a batch
//! of any size is a handful of round trips with no bind-limit chunking.
//!
//! Owns: the pool, migrations, mapper-table DDL and catalog checks, and
//! the bulk commit [`Steps`] (purges, tombstones, deletes, upserts, revs),
//! each one statement over `UNNEST` arrays, and sweeps (one statement of
//! data-modifying `WITH`s). The upsert's statements are
//! `postgres_upsert.rs`'s. Does not own: the commit order
//! (`commit.rs`) or the statements written once for both backends
//! (`dialect.rs`). `record` and JSON columns are `json` (kept verbatim; `jsonb` would reject
//! records containing `\u0000`), timestamps `timestamptz`.
//!
//! The change log: a logged table's upsert, delete, purge and sweep run a
//! `RETURNING` variant of the same statement (the rows actually written or
//! removed); the appended rows take their `seq` from the identity under
//! the append lock (the watermark lock), taken just before the append and
//! held to COMMIT, so seqs follow commit order across writers.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::{AssertSqlSafe, Postgres};

use super::change_log::{ChangeLog, Logged, Signal};
use super::commit::{self, Finish, Steps};
use super::dialect::{Arg, Dialect, Sql, bind_args};
use super::did_locks;
use super::pg_pool;
use super::postgres_copy;
use super::postgres_upsert::{self, UpsertSql};
use super::schema;
use super::{CommitStats, DatabaseConfig, StoreError};
use crate::batch::{Batch, Sweep};
use crate::event::{AccountStatus, Did};
use crate::mapper::{Row, TableSchema};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The advisory lock key mapper-table DDL runs under ("parity" in ASCII);
/// sqlx's migrator uses its own key.
const SCHEMA_LOCK: i64 = 0x7061_7269_7479;

/// Second key of the stream-watermark lock, under [`did_locks::NAMESPACE`]:
/// outside the DID buckets (`0..BUCKETS`), so it never waits on a DID.
/// Also the change log's append lock: a sharded commit that took it for
/// its watermark appends without asking again, and every writer still
/// takes DID locks first and this one last.
const WATERMARK_LOCK: i32 = -1;

/// One change per array element, in order; returns the newest seq. The
/// commit time is the statement's start, after the append lock is held, so
/// it grows with `seq`.
const APPEND: &str = "WITH ins AS (\
     INSERT INTO parity_changes \
     (table_name, op, uri, did, collection, rkey, cid, rev, record, subjects, committed_at) \
     SELECT v.t, v.o, v.u, v.d, v.l, v.k, v.c, v.r, v.j::json, v.s, statement_timestamp() \
     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
     $7::text[], $8::text[], $9::text[], $10::text[]) WITH ORDINALITY AS v(t, o, u, d, l, k, c, r, j, s, n) \
     ORDER BY v.n RETURNING seq) \
     SELECT MAX(seq) FROM ins";

/// How long to wait for a pooled connection before calling it transient.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

struct TableSql {
    schema: TableSchema,
    upsert: UpsertSql,
    delete: Arc<str>,
    purge: Arc<str>,
    /// The same statements returning what they removed, for the change
    /// log.
    delete_returning: Arc<str>,
    purge_returning: Arc<str>,
    /// `COPY` of its rows (`postgres_fresh.rs`).
    copy: Arc<str>,
}

/// A PostgreSQL database.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    tables: Arc<Vec<TableSql>>,
    pub(super) change_log: Arc<ChangeLog>,
    pub(super) signal: Signal,
    /// The session commits without waiting for the WAL flush
    /// ([`DatabaseConfig::async_commit`]); `close` makes it durable.
    async_commit: bool,
    /// The account statuses whose rows the upsert refuses, as an SQL list
    /// (none: no status purges).
    purging: Option<Arc<str>>,
}

impl PgStore {
    pub async fn connect(cfg: &DatabaseConfig) -> Result<PgStore, StoreError> {
        // `CREATE ... IF NOT EXISTS` on tables and indexes that exist
        // answers with a NOTICE each, which sqlx logs: ~20 lines on every
        // start. Warnings and errors still come through.
        let mut opts = PgConnectOptions::from_str(&cfg.url)
            .map_err(StoreError::Connect)?
            .options([("client_min_messages", "warning")]);
        if cfg.async_commit {
            opts = opts.options([("synchronous_commit", "off")]);
        }
        // Every writer holds a connection for its commits; one more for the
        // sweeps and readers.
        let pool = pg_pool::options(&opts, pg_pool::IDLE_TEST)
            .max_connections(cfg.max_connections.max(cfg.writer_count() + 1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(opts)
            .await
            .map_err(StoreError::Connect)?;
        Ok(PgStore {
            pool,
            tables: Arc::new(Vec::new()),
            change_log: Arc::default(),
            signal: Signal::default(),
            async_commit: cfg.async_commit,
            purging: None,
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema of mapped table `t`.
    pub(super) fn schema(&self, t: usize) -> &TableSchema {
        &self.tables[t].schema
    }

    /// Each mapped table's index and `COPY` statement.
    pub(super) fn copy_tables(&self) -> impl Iterator<Item = (usize, &str)> {
        self.tables.iter().enumerate().map(|(i, t)| (i, &*t.copy))
    }

    /// The account statuses whose rows the upsert refuses, as an SQL list.
    pub(super) fn purging_statuses(&self) -> Option<&str> {
        self.purging.as_deref()
    }

    /// Whether the change log logs any mapped table.
    pub(super) fn logs_a_table(&self) -> bool {
        self.tables
            .iter()
            .any(|t| self.change_log.logs(&t.schema.name))
    }

    /// The mapped tables `prepare` set up.
    pub(super) fn table_names(&self) -> Vec<&str> {
        self.tables.iter().map(|t| t.schema.name.as_str()).collect()
    }

    /// Connects with every transaction read-only: nothing can be created
    /// or changed.
    pub async fn connect_read_only(cfg: &DatabaseConfig) -> Result<PgStore, StoreError> {
        let opts = PgConnectOptions::from_str(&cfg.url)
            .map_err(StoreError::Connect)?
            .options([("default_transaction_read_only", "on")]);
        let pool = pg_pool::options(&opts, pg_pool::IDLE_TEST)
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(opts)
            .await
            .map_err(StoreError::Connect)?;
        Ok(PgStore {
            pool,
            tables: Arc::new(Vec::new()),
            change_log: Arc::default(),
            signal: Signal::default(),
            async_commit: false,
            purging: None,
        })
    }

    /// Closes the pool; on a pool that commits asynchronously, first makes
    /// every commit of it durable.
    pub async fn close(&self) {
        if self.async_commit
            && let Err(e) = self.flush_commits().await
        {
            tracing::warn!(error = %e, "could not wait for the last commits to reach the WAL on disk");
        }
        self.pool.close().await;
    }

    /// Waits until every transaction committed so far (by any session) is
    /// on disk: one transaction that commits with `synchronous_commit` on,
    /// so it waits for the WAL to be flushed up to its commit, which covers
    /// every earlier commit (the WAL is flushed in order). PostgreSQL skips
    /// that wait for a transaction that wrote no WAL of its own before its
    /// commit record, so it writes one: an empty transactional logical
    /// message (any role may; only logical decoding clients see it, as a
    /// message with the prefix `parity.flush`, and may ignore it).
    async fn flush_commits(&self) -> Result<(), StoreError> {
        sqlx::raw_sql(FLUSH_SQL).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Embedded migrations not applied yet (read-only).
    pub async fn pending_migrations(&self) -> Result<usize, StoreError> {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(&self.pool)
            .await?;
        let applied: Vec<i64> = if exists {
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await?
        } else {
            Vec::new()
        };
        Ok(super::pending(&MIGRATOR, &applied))
    }

    /// The column names of `table`; empty when it does not exist.
    pub async fn columns(&self, table: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1",
        )
        .bind(table.to_owned())
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn prepare(
        &mut self,
        tables: &[TableSchema],
        purge: &[AccountStatus],
    ) -> Result<(), StoreError> {
        // `CREATE TABLE IF NOT EXISTS` is not safe against itself: two
        // sessions creating the same table at once can fail on the catalog's
        // unique index (pg_type_typname_nsp_index). Processes starting
        // together take turns under one advisory lock, held until commit.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SCHEMA_LOCK)
            .execute(&mut *tx)
            .await?;
        for t in tables {
            for ddl in schema::create_table(Dialect::Postgres, t) {
                sqlx::query(AssertSqlSafe(ddl)).execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        let mut out = Vec::new();
        for t in tables {
            let existing = self.columns(&t.name).await?;
            if let Some(col) = schema::missing_column(t, &existing) {
                return Err(StoreError::MissingColumn {
                    table: t.name.clone(),
                    column: col.to_owned(),
                });
            }
            let upsert = UpsertSql::new(t, purge);
            let delete = format!(
                "DELETE FROM {t} USING parity_tombstones ts WHERE {t}.uri = ANY($1::text[]) AND ts.uri = {t}.uri AND {t}.rev <= ts.rev",
                t = t.name
            );
            let purge = format!("DELETE FROM {} WHERE did = ANY($1::text[])", t.name);
            let removed =
                |t: &str| format!(" RETURNING {t}.uri, {t}.did, {t}.rkey, {t}.record::text");
            out.push(TableSql {
                copy: postgres_copy::statement(t).into(),
                upsert,
                schema: t.clone(),
                delete_returning: format!("{delete}{}", removed(&t.name)).into(),
                purge_returning: format!("{purge}{}", removed(&t.name)).into(),
                delete: delete.into(),
                purge: purge.into(),
            });
        }
        self.tables = Arc::new(out);
        self.purging = schema::status_list(purge).map(Arc::from);
        Ok(())
    }

    pub(super) async fn commit(
        &self,
        batch: &Batch,
        finish: Finish,
    ) -> Result<CommitStats, StoreError> {
        let tx = self.begin(batch).await?;
        commit::commit(
            PgSteps {
                tx,
                tables: &self.tables,
                log: &self.change_log,
                ordered: false,
            },
            batch,
            finish,
        )
        .await
    }
}

impl PgStore {
    /// Opens the commit transaction of `batch`, in one round trip: `BEGIN`,
    /// `synchronous_commit` off for it (the cursor commits in this same
    /// transaction, so a commit lost to a server crash loses its cursor
    /// too and is simply consumed again: waiting for the WAL flush buys
    /// nothing here), and the DID locks of the batch, before any guard
    /// reads (see `did_locks`). One simple query of three statements:
    /// bound, they were three round trips, each a wait of the whole
    /// network distance to the server for every batch and import page.
    async fn begin(
        &self,
        batch: &Batch,
    ) -> Result<sqlx::Transaction<'static, Postgres>, StoreError> {
        Ok(self
            .pool
            .begin_with(AssertSqlSafe(begin_sql(
                &did_locks::buckets(batch),
                did_locks::shared(batch),
            )))
            .await?)
    }
}

/// What [`PgStore::flush_commits`] sends, in one round trip.
const FLUSH_SQL: &str = "BEGIN; SET LOCAL synchronous_commit = on; \
     SELECT pg_logical_emit_message(true, 'parity.flush', ''); COMMIT";

/// The text [`PgStore::begin`] sends. The lock keys are integers of ours
/// (hash buckets), never input, so they are written into the text.
pub(super) fn begin_sql(keys: &[i32], shared: bool) -> String {
    let mut sql = String::from("BEGIN; SET LOCAL synchronous_commit = off");
    if !keys.is_empty() {
        let keys: Vec<String> = keys.iter().map(i32::to_string).collect();
        let lock = if shared {
            "pg_advisory_xact_lock_shared"
        } else {
            "pg_advisory_xact_lock"
        };
        sql.push_str(&format!(
            "; SELECT {lock}({}, k) FROM UNNEST('{{{}}}'::int4[]) AS k",
            did_locks::NAMESPACE,
            keys.join(",")
        ));
    }
    sql
}

/// A PostgreSQL commit transaction: each bulk step is one `UNNEST`
/// statement per table, whatever the batch size.
struct PgSteps<'a> {
    tx: sqlx::Transaction<'static, Postgres>,
    tables: &'a [TableSql],
    log: &'a ChangeLog,
    /// This transaction holds the watermark (and append) lock.
    ordered: bool,
}

/// A removed row as `RETURNING` gives it: uri, did, rkey, record.
type Removed = (String, String, String, Option<String>);

impl PgSteps<'_> {
    /// The `WITH` of a sweep's statement (`$1`..`$6`, [`sweep_binds`]): the
    /// rows go (`gone`: uri, did, rkey and, for the change log, the record
    /// as text), their tombstones and the pair's floor are written, from
    /// the same snapshot.
    fn sweep_ctes(&self, sweep: &Sweep, with_records: bool) -> String {
        let t = &self.tables[sweep.table.0].schema.name;
        let record = if with_records {
            "record::text"
        } else {
            "NULL::text"
        };
        format!(
            "WITH gone AS (DELETE FROM {t} WHERE uri >= $1 AND uri < $2 AND rev < $3 \
             RETURNING uri, did, rkey, {record} AS record), \
             tombs AS (INSERT INTO parity_tombstones (uri, rev, deleted_at) SELECT uri, $3, $4 FROM gone \
             ON CONFLICT (uri) DO UPDATE SET rev = excluded.rev, deleted_at = excluded.deleted_at \
             WHERE excluded.rev > parity_tombstones.rev), \
             floor AS (INSERT INTO parity_sweep_floors (did, collection, rev) VALUES ($5, $6, $3) \
             ON CONFLICT (did, collection) DO UPDATE SET rev = excluded.rev \
             WHERE excluded.rev > parity_sweep_floors.rev)"
        )
    }

    /// Counts the rows a sweep removed, handing them to the change log.
    fn removed<'b>(
        &self,
        sweep: &'b Sweep,
        rows: Vec<Removed>,
        log: Option<&mut Vec<Logged<'b>>>,
    ) -> u64 {
        let n = rows.len() as u64;
        if let Some(sink) = log {
            for (uri, did, rkey, record) in rows {
                sink.push(Logged::removed(
                    sweep.table.0,
                    uri,
                    did,
                    rkey,
                    record.as_deref(),
                    Some(&sweep.rev),
                ));
            }
        }
        n
    }
}

/// Parameters a sweep's statement binds (`$1`..`$6`); a statement joined
/// to it numbers its own from `$7`.
const SWEEP_PARAMS: usize = 6;

/// Binds a sweep's six parameters.
fn sweep_binds<'q, O>(
    q: sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments>,
    sweep: &'q Sweep,
    now: DateTime<Utc>,
) -> sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments> {
    let (lo, hi) = sweep.uri_range();
    q.bind(lo)
        .bind(hi)
        .bind(sweep.rev.as_str())
        .bind(now)
        .bind(sweep.did.as_str())
        .bind(sweep.collection.as_str())
}

/// A sweep's statement (its `WITH`, `ctes`) joined by the state update
/// `done` (its parameters renumbered after the sweep's): the first column
/// of every row is the state rows updated, the others a removed row, or
/// nulls in the one row of a sweep that removed nothing.
fn sweep_with_state_sql(ctes: &str, done: &str) -> String {
    format!(
        "{ctes}, done AS ({} RETURNING 1) \
         SELECT (SELECT count(*) FROM done), g.uri, g.did, g.rkey, g.record \
         FROM (SELECT 1) AS one LEFT JOIN gone AS g ON true",
        shift_params(done, SWEEP_PARAMS)
    )
}

/// `sql` with every parameter `$n` renumbered `$(n + by)`.
fn shift_params(sql: &str, by: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        out.push(c);
        if c != '$' {
            continue;
        }
        let mut n = String::new();
        while let Some(&(_, d)) = chars.peek().filter(|(_, d)| d.is_ascii_digit()) {
            n.push(d);
            chars.next();
        }
        if let Ok(n) = n.parse::<usize>() {
            out.push_str(&(n + by).to_string());
        }
    }
    out
}

impl Steps for PgSteps<'_> {
    fn table_count(&self) -> usize {
        self.tables.len()
    }

    fn table_name(&self, table: usize) -> &str {
        &self.tables[table].schema.name
    }

    fn logged(&self, table: usize) -> bool {
        self.log.logs(self.table_name(table))
    }

    async fn run(&mut self, sql: &'static Sql, args: Vec<Arg>) -> Result<u64, StoreError> {
        let q = sqlx::query(sql.text(Dialect::Postgres));
        Ok(bind_args!(Postgres, q, args)
            .execute(&mut *self.tx)
            .await?
            .rows_affected())
    }

    async fn purge<'b>(
        &mut self,
        dids: &[&'b Did],
        stats: &mut CommitStats,
        mut log: Option<&mut Vec<Logged<'b>>>,
    ) -> Result<(), StoreError> {
        let dids: Vec<String> = dids.iter().map(|d| d.as_str().to_owned()).collect();
        for (i, t) in self.tables.iter().enumerate() {
            let n = match log.as_deref_mut().filter(|_| self.log.logs(&t.schema.name)) {
                None => sqlx::query(AssertSqlSafe(t.purge.clone()))
                    .bind(dids.clone())
                    .execute(&mut *self.tx)
                    .await?
                    .rows_affected(),
                Some(sink) => {
                    let rows: Vec<Removed> =
                        sqlx::query_as(AssertSqlSafe(t.purge_returning.clone()))
                            .bind(dids.clone())
                            .fetch_all(&mut *self.tx)
                            .await?;
                    let n = rows.len() as u64;
                    for (uri, did, rkey, record) in rows {
                        sink.push(Logged::removed(i, uri, did, rkey, record.as_deref(), None));
                    }
                    n
                }
            };
            CommitStats::add(&mut stats.deleted, &t.schema.name, n);
        }
        Ok(())
    }

    async fn tombstones(
        &mut self,
        deletes: &[(&str, &str)],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let (uris, revs): (Vec<String>, Vec<String>) = deletes
            .iter()
            .map(|(u, r)| ((*u).to_owned(), (*r).to_owned()))
            .unzip();
        let written = sqlx::query(
            "INSERT INTO parity_tombstones (uri, rev, deleted_at) SELECT u, r, $3 FROM UNNEST($1::text[], $2::text[]) AS v(u, r) \
             ON CONFLICT (uri) DO UPDATE SET rev = excluded.rev, deleted_at = excluded.deleted_at WHERE excluded.rev > parity_tombstones.rev",
        )
        .bind(uris)
        .bind(revs)
        .bind(now)
        .execute(&mut *self.tx)
        .await?
        .rows_affected();
        Ok(written)
    }

    async fn delete<'b>(
        &mut self,
        table: usize,
        deletes: &[(&'b str, &'b str)],
        log: Option<&mut Vec<Logged<'b>>>,
    ) -> Result<u64, StoreError> {
        let uris: Vec<String> = deletes.iter().map(|(u, _)| (*u).to_owned()).collect();
        let t = &self.tables[table];
        let Some(sink) = log else {
            return Ok(sqlx::query(AssertSqlSafe(t.delete.clone()))
                .bind(uris)
                .execute(&mut *self.tx)
                .await?
                .rows_affected());
        };
        let rows: Vec<Removed> = sqlx::query_as(AssertSqlSafe(t.delete_returning.clone()))
            .bind(uris)
            .fetch_all(&mut *self.tx)
            .await?;
        let revs: std::collections::HashMap<&str, &'b str> = deletes.iter().copied().collect();
        let n = rows.len() as u64;
        for (uri, did, rkey, record) in rows {
            let rev = revs.get(uri.as_str()).copied();
            sink.push(Logged::removed(
                table,
                uri,
                did,
                rkey,
                record.as_deref(),
                rev,
            ));
        }
        Ok(n)
    }

    async fn upsert<'b>(
        &mut self,
        table: usize,
        rows: &[&'b Row],
        now: DateTime<Utc>,
        log: Option<&mut Vec<Logged<'b>>>,
    ) -> Result<u64, StoreError> {
        let t = &self.tables[table];
        let Some(sink) = log else {
            return Ok(
                postgres_upsert::query(&t.schema, &t.upsert, rows, now, false)
                    .execute(&mut *self.tx)
                    .await?
                    .rows_affected(),
            );
        };
        let written: Option<Vec<String>> = sqlx::Row::try_get(
            &postgres_upsert::query(&t.schema, &t.upsert, rows, now, true)
                .fetch_one(&mut *self.tx)
                .await?,
            0,
        )?;
        let Some(written) = written else {
            // Every row was written (a batch has one mutation per URI).
            sink.extend(rows.iter().map(|row| Logged::upsert(table, row)));
            return Ok(rows.len() as u64);
        };
        let written: std::collections::HashSet<&str> = written.iter().map(String::as_str).collect();
        // In the batch's order.
        for row in rows {
            if written.contains(row.uri.as_str()) {
                sink.push(Logged::upsert(table, row));
            }
        }
        Ok(written.len() as u64)
    }

    async fn sweep<'b>(
        &mut self,
        sweep: &'b Sweep,
        now: DateTime<Utc>,
        log: Option<&mut Vec<Logged<'b>>>,
    ) -> Result<u64, StoreError> {
        // One statement (one round trip): the rows go, their tombstones and
        // the pair's floor are written, from the same snapshot.
        let sql = format!(
            "{} SELECT uri, did, rkey, record FROM gone",
            self.sweep_ctes(sweep, log.is_some())
        );
        let rows: Vec<Removed> = sweep_binds(sqlx::query_as(AssertSqlSafe(sql)), sweep, now)
            .fetch_all(&mut *self.tx)
            .await?;
        Ok(self.removed(sweep, rows, log))
    }

    /// The sweep's statement with the page's state update as one more
    /// `WITH` (a different table, so the order inside the statement does
    /// not matter): one round trip instead of two. The first row carries
    /// the state rows updated; a sweep that removed nothing returns that
    /// row alone (the `LEFT JOIN`).
    async fn sweep_last_page<'b>(
        &mut self,
        sweep: &'b Sweep,
        now: DateTime<Utc>,
        log: Option<&mut Vec<Logged<'b>>>,
        done: &'static Sql,
        args: Vec<Arg>,
    ) -> Result<(u64, u64), StoreError> {
        let sql = sweep_with_state_sql(
            &self.sweep_ctes(sweep, log.is_some()),
            done.text(Dialect::Postgres),
        );
        let q = sweep_binds(sqlx::query_as(AssertSqlSafe(sql)), sweep, now);
        type Row = (
            i64,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let rows: Vec<Row> = bind_args!(Postgres, q, args)
            .fetch_all(&mut *self.tx)
            .await?;
        let updated = rows.first().map_or(0, |r| r.0) as u64;
        let removed: Vec<Removed> = rows
            .into_iter()
            .filter_map(|(_, uri, did, rkey, record)| Some((uri?, did?, rkey?, record)))
            .collect();
        Ok((self.removed(sweep, removed, log), updated))
    }

    async fn revs(&mut self, revs: &[(&Did, &str)], now: DateTime<Utc>) -> Result<(), StoreError> {
        let (dids, revs): (Vec<String>, Vec<String>) = revs
            .iter()
            .map(|(d, r)| (d.as_str().to_owned(), (*r).to_owned()))
            .unzip();
        sqlx::query(
            "INSERT INTO parity_repos (did, rev, updated_at) SELECT d, r, $3 FROM UNNEST($1::text[], $2::text[]) AS v(d, r) \
             ON CONFLICT (did) DO UPDATE SET rev = excluded.rev, updated_at = excluded.updated_at \
             WHERE parity_repos.rev IS NULL OR excluded.rev > parity_repos.rev",
        )
        .bind(dids)
        .bind(revs)
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn lock_watermark(&mut self) -> Result<(), StoreError> {
        // Taken last, after the rows and the writer's own position: other
        // writers wait only for this transaction's last two statements and
        // its COMMIT. DID locks are taken first and the watermark lock last
        // by every writer, so they cannot deadlock on each other.
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(did_locks::NAMESPACE)
            .bind(WATERMARK_LOCK)
            .execute(&mut *self.tx)
            .await?;
        self.ordered = true;
        Ok(())
    }

    async fn append(&mut self, changes: &[Logged<'_>]) -> Result<i64, StoreError> {
        // As late as possible: other writers wait only for this statement
        // and the COMMIT. A seq taken before the lock could be committed
        // after a higher one, and a reader past the higher one would skip it.
        if !self.ordered {
            self.lock_watermark().await?;
        }
        // Borrowed: the arrays are encoded as they are bound, so no row's
        // text is copied into owned strings first.
        let text = |f: for<'x> fn(&'x Logged<'x>) -> &'x str| -> Vec<&str> {
            changes.iter().map(f).collect()
        };
        let opt = |f: for<'x> fn(&'x Logged<'x>) -> Option<&'x str>| -> Vec<Option<&str>> {
            changes.iter().map(f).collect()
        };
        let tables: Vec<&str> = changes
            .iter()
            .map(|c| self.tables[c.table].schema.name.as_str())
            .collect();
        let seq: Option<i64> = sqlx::query_scalar(APPEND)
            .bind(tables)
            .bind(text(|c| c.op.as_str()))
            .bind(text(|c| &c.uri))
            .bind(text(|c| &c.did))
            .bind(text(|c| c.collection()))
            .bind(text(|c| &c.rkey))
            .bind(opt(|c| c.cid))
            .bind(opt(|c| c.rev))
            .bind(opt(|c| c.record))
            .bind(opt(|c| c.subjects.as_deref()))
            .fetch_one(&mut *self.tx)
            .await?;
        seq.ok_or(StoreError::Sql(sqlx::Error::RowNotFound))
    }

    async fn commit(self) -> Result<(), StoreError> {
        Ok(self.tx.commit().await?)
    }

    async fn rollback(self) -> Result<(), StoreError> {
        Ok(self.tx.rollback().await?)
    }
}

#[cfg(test)]
#[path = "postgres_plan_tests.rs"]
mod plan_tests;

#[cfg(test)]
#[path = "postgres_begin_tests.rs"]
mod begin_tests;

#[cfg(test)]
#[path = "postgres_async_tests.rs"]
mod async_tests;

#[cfg(test)]
mod shift_tests {
    #[test]
    fn parameters_are_renumbered_and_nothing_else() {
        assert_eq!(
            super::shift_params(
                "SET a = $1, b = $12::timestamptz WHERE c = '$' AND d = $3",
                6
            ),
            "SET a = $7, b = $18::timestamptz WHERE c = '$' AND d = $9"
        );
    }

    /// The last page's state travels inside the sweep's statement, its
    /// parameters after the sweep's six.
    #[test]
    fn the_state_update_joins_the_sweep_statement() {
        let sql = super::sweep_with_state_sql(
            "WITH gone AS (DELETE FROM t WHERE uri >= $1 RETURNING uri)",
            super::super::imports::LAST_PAGE_DONE.text(super::Dialect::Postgres),
        );
        assert!(sql.starts_with("WITH gone AS (DELETE FROM t WHERE uri >= $1 RETURNING uri), done AS (UPDATE parity_import_states "), "{sql}");
        for part in [
            "rev = $13",
            "records_synced = records_synced + $7",
            "completed_at = $10::timestamptz",
            "WHERE id = $11 AND lease_owner = $12",
        ] {
            assert!(sql.contains(part), "{part} in {sql}");
        }
        assert!(sql.contains("SELECT (SELECT count(*) FROM done)"), "{sql}");
    }
}
