//! SQLite backend: WAL, `synchronous=NORMAL`, a busy timeout, and multi-row
//! statements chunked under SQLite's bind limit.
//!
//! Owns: the pool and its pragmas, migrations, mapper-table DDL and
//! catalog checks, and the bulk commit [`Steps`] (purges, tombstones,
//! deletes, upserts, revs) as multi-row `VALUES` statements chunked by a
//! fixed ladder of sizes, so sqlx's statement cache keeps a few shapes per
//! table. Does not own: the commit order (`commit.rs`) or the statements
//! written once for both backends (`dialect.rs`). Timestamps are stored as
//! RFC 3339 text (UTC, µs), JSON as text, booleans as 0/1.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Sqlite};

use super::commit::{self, Finish, Steps};
use super::dialect::{Arg, Dialect, Sql, bind_args};
use super::schema;
use super::{CommitStats, DatabaseConfig, StoreError};
use crate::batch::Batch;
use crate::event::{AccountStatus, Did};
use crate::mapper::table::timestamp_text;
use crate::mapper::{Row, TableSchema, Value};

/// SQLite's default `SQLITE_MAX_VARIABLE_NUMBER` since 3.32.
const MAX_BINDS: usize = 32_766;
/// Rows per multi-row statement: large enough to amortise the statement,
/// small enough that sqlx's statement cache keeps a handful of shapes.
const CHUNK_ROWS: usize = 500;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// SQLite page cache per connection, in KiB.
const CACHE_KIB: u32 = 32 * 1024;
/// Prepared statements kept per connection: five ladder shapes for each of
/// a dozen tables and steps.
const STATEMENT_CACHE: usize = 128;

type Query = sqlx::query::Query<'static, Sqlite, SqliteArguments>;

struct TableSql {
    schema: TableSchema,
    /// `INSERT … SELECT * FROM (VALUES ` — the rows go after it.
    upsert_head: String,
    /// `) AS v WHERE … ON CONFLICT … ` — after the rows.
    upsert_tail: String,
    rows_per_chunk: usize,
}

/// A SQLite database.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    tables: Arc<Vec<TableSql>>,
}

/// Splits `items` into chunks whose sizes come from a fixed ladder
/// (`max`, 128, 32, 8, 1), so each table has at most five statement shapes:
/// preparing a multi-row statement costs more than running it, and sqlx
/// caches prepared statements by their text.
fn ladder<T>(items: &[T], max: usize) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut rest = items;
    for size in [max, 128, 32, 8, 1] {
        let size = size.min(max).max(1);
        while rest.len() >= size {
            let (head, tail) = rest.split_at(size);
            out.push(head);
            rest = tail;
        }
    }
    out
}

fn placeholders(rows: usize, cols: usize) -> String {
    let one = format!("({})", vec!["?"; cols].join(","));
    vec![one; rows].join(",")
}

impl SqliteStore {
    pub async fn connect(cfg: &DatabaseConfig) -> Result<SqliteStore, StoreError> {
        let opts = SqliteConnectOptions::from_str(&cfg.url)
            .map_err(StoreError::Connect)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_millis(cfg.busy_timeout_ms))
            .foreign_keys(false)
            // Index inserts land on random pages (uri, did, subject keys);
            // a larger page cache keeps them off the disk.
            .pragma("cache_size", format!("-{}", CACHE_KIB))
            .statement_cache_capacity(STATEMENT_CACHE);
        // Switching a new file to WAL needs its lock, and SQLite can answer
        // SQLITE_BUSY to that without waiting (another process starting on
        // the same new file at that moment). Retry within the busy timeout.
        let deadline = std::time::Instant::now() + Duration::from_millis(cfg.busy_timeout_ms);
        let pool = loop {
            match SqlitePoolOptions::new()
                .max_connections(cfg.max_connections.max(1))
                .connect_with(opts.clone())
                .await
            {
                Ok(pool) => break pool,
                Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(StoreError::Connect(e)),
            }
        };
        Ok(SqliteStore {
            pool,
            tables: Arc::new(Vec::new()),
        })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Opens an existing database file read-only (nothing is created or
    /// changed); `None` when the file does not exist yet.
    pub async fn open_read_only(cfg: &DatabaseConfig) -> Result<Option<SqliteStore>, StoreError> {
        let opts = SqliteConnectOptions::from_str(&cfg.url)
            .map_err(StoreError::Connect)?
            .read_only(true)
            .create_if_missing(false)
            .busy_timeout(Duration::from_millis(cfg.busy_timeout_ms));
        if !opts.get_filename().exists() {
            return Ok(None);
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .map_err(StoreError::Connect)?;
        Ok(Some(SqliteStore {
            pool,
            tables: Arc::new(Vec::new()),
        }))
    }

    /// Runs the embedded migrations inside one `BEGIN IMMEDIATE`
    /// transaction: SQLite has no advisory lock, so a second process
    /// starting at the same moment waits on the write lock (up to the busy
    /// timeout) and then finds every migration applied, instead of applying
    /// them again. sqlx runs each migration in a savepoint inside it.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
        // run_direct (what `run` calls after acquiring): `run` on a
        // transaction's connection does not compile in a Send future
        // (sqlx's "Acquire is not general enough").
        MIGRATOR.run_direct(None, &mut *tx, false).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Embedded migrations not applied yet (read-only).
    pub async fn pending_migrations(&self) -> Result<usize, StoreError> {
        let applied: Vec<i64> = if sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_one(&self.pool)
        .await?
            > 0
        {
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
        Ok(sqlx::query_scalar("SELECT name FROM pragma_table_info(?)")
            .bind(table.to_owned())
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn prepare(
        &mut self,
        tables: &[TableSchema],
        purge: &[AccountStatus],
    ) -> Result<(), StoreError> {
        let mut out = Vec::new();
        for t in tables {
            for ddl in schema::create_table(Dialect::Sqlite, t) {
                sqlx::query(AssertSqlSafe(ddl)).execute(&self.pool).await?;
            }
            let existing = self.columns(&t.name).await?;
            if let Some(col) = schema::missing_column(t, &existing) {
                return Err(StoreError::MissingColumn {
                    table: t.name.clone(),
                    column: col.to_owned(),
                });
            }
            let cols = schema::all_columns(t);
            let status_guard = schema::status_list(purge)
                .map(|l| {
                    format!(" AND NOT EXISTS (SELECT 1 FROM parity_repos r WHERE r.did = v.column2 AND r.status IN ({l}))")
                })
                .unwrap_or_default();
            out.push(TableSql {
                upsert_head: format!("INSERT INTO {} ({}) SELECT * FROM (VALUES ", t.name, cols.join(", ")),
                upsert_tail: format!(
                    ") AS v WHERE NOT EXISTS (SELECT 1 FROM parity_tombstones ts WHERE ts.uri = v.column1 AND ts.rev >= v.column5){status_guard} \
                     ON CONFLICT(uri) DO UPDATE SET {} WHERE excluded.rev > {}.rev",
                    schema::update_set(t),
                    t.name
                ),
                rows_per_chunk: CHUNK_ROWS.min(MAX_BINDS / cols.len()),
                schema: t.clone(),
            });
        }
        self.tables = Arc::new(out);
        Ok(())
    }

    pub(super) async fn commit(
        &self,
        batch: &Batch,
        finish: Finish,
    ) -> Result<CommitStats, StoreError> {
        // Take the write lock up front: a deferred transaction that reads
        // first could fail to upgrade under a concurrent writer.
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        commit::commit(
            SqliteSteps {
                tx,
                tables: &self.tables,
            },
            batch,
            finish,
        )
        .await
    }
}

/// A SQLite commit transaction: the bulk steps as multi-row statements,
/// chunked by [`ladder`] so each table and step has a few cached shapes.
struct SqliteSteps<'a> {
    tx: sqlx::Transaction<'static, Sqlite>,
    tables: &'a [TableSql],
}

impl Steps for SqliteSteps<'_> {
    fn table_count(&self) -> usize {
        self.tables.len()
    }

    fn table_name(&self, table: usize) -> &str {
        &self.tables[table].schema.name
    }

    async fn run(&mut self, sql: &'static Sql, args: Vec<Arg>) -> Result<u64, StoreError> {
        let q = sqlx::query(sql.text(Dialect::Sqlite));
        Ok(bind_args!(Sqlite, q, args)
            .execute(&mut *self.tx)
            .await?
            .rows_affected())
    }

    async fn purge(&mut self, dids: &[&Did], stats: &mut CommitStats) -> Result<(), StoreError> {
        for did in dids {
            for t in self.tables {
                let sql = format!("DELETE FROM {} WHERE did = ?", t.schema.name);
                let n = sqlx::query(AssertSqlSafe(sql))
                    .bind(did.as_str().to_owned())
                    .execute(&mut *self.tx)
                    .await?
                    .rows_affected();
                CommitStats::add(&mut stats.deleted, &t.schema.name, n);
            }
        }
        Ok(())
    }

    async fn tombstones(
        &mut self,
        deletes: &[(&str, &str)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let now = timestamp_text(&now);
        for chunk in ladder(deletes, CHUNK_ROWS) {
            let sql = format!(
                "INSERT INTO parity_tombstones (uri, rev, deleted_at) VALUES {} \
                 ON CONFLICT(uri) DO UPDATE SET rev = excluded.rev, deleted_at = excluded.deleted_at \
                 WHERE excluded.rev > parity_tombstones.rev",
                placeholders(chunk.len(), 3)
            );
            let mut q: Query = sqlx::query(AssertSqlSafe(sql));
            for (uri, rev) in chunk {
                q = q
                    .bind(uri.to_string())
                    .bind(rev.to_string())
                    .bind(now.clone());
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    async fn delete(&mut self, table: usize, deletes: &[(&str, &str)]) -> Result<u64, StoreError> {
        let t = &self.tables[table];
        let mut deleted = 0;
        for chunk in ladder(deletes, CHUNK_ROWS) {
            let sql = format!(
                "DELETE FROM {t} WHERE uri IN ({}) AND rev <= (SELECT ts.rev FROM parity_tombstones ts WHERE ts.uri = {t}.uri)",
                vec!["?"; chunk.len()].join(","),
                t = t.schema.name
            );
            let mut q: Query = sqlx::query(AssertSqlSafe(sql));
            for (uri, _) in chunk {
                q = q.bind(uri.to_string());
            }
            deleted += q.execute(&mut *self.tx).await?.rows_affected();
        }
        Ok(deleted)
    }

    async fn upsert(
        &mut self,
        table: usize,
        rows: &[&Row],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let t = &self.tables[table];
        let now = timestamp_text(&now);
        let ncols = 7 + t.schema.columns.len();
        let mut upserted = 0;
        for chunk in ladder(rows, t.rows_per_chunk) {
            let sql = format!(
                "{}{}{}",
                t.upsert_head,
                placeholders(chunk.len(), ncols),
                t.upsert_tail
            );
            let mut q: Query = sqlx::query(AssertSqlSafe(sql));
            for row in chunk {
                q = q
                    .bind(row.uri.clone())
                    .bind(row.did.as_str().to_owned())
                    .bind(row.rkey.clone())
                    .bind(row.cid.clone())
                    .bind(row.rev.clone())
                    .bind(row.record.get().to_owned())
                    .bind(now.clone());
                for v in &row.values {
                    q = bind_value(q, v);
                }
            }
            upserted += q.execute(&mut *self.tx).await?.rows_affected();
        }
        Ok(upserted)
    }

    async fn sweep(
        &mut self,
        table: usize,
        range: (&str, &str),
        rev: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let t = &self.tables[table].schema.name;
        let tombstones = format!(
            "INSERT INTO parity_tombstones (uri, rev, deleted_at) SELECT uri, ?3, ?4 FROM {t} \
             WHERE uri >= ?1 AND uri < ?2 AND rev < ?3 \
             ON CONFLICT(uri) DO UPDATE SET rev = excluded.rev, deleted_at = excluded.deleted_at \
             WHERE excluded.rev > parity_tombstones.rev"
        );
        sqlx::query(AssertSqlSafe(tombstones))
            .bind(range.0.to_owned())
            .bind(range.1.to_owned())
            .bind(rev.to_owned())
            .bind(timestamp_text(&now))
            .execute(&mut *self.tx)
            .await?;
        let delete = format!("DELETE FROM {t} WHERE uri >= ?1 AND uri < ?2 AND rev < ?3");
        Ok(sqlx::query(AssertSqlSafe(delete))
            .bind(range.0.to_owned())
            .bind(range.1.to_owned())
            .bind(rev.to_owned())
            .execute(&mut *self.tx)
            .await?
            .rows_affected())
    }

    async fn revs(&mut self, revs: &[(&Did, &str)], now: DateTime<Utc>) -> Result<(), StoreError> {
        let now = timestamp_text(&now);
        for chunk in ladder(revs, CHUNK_ROWS) {
            let sql = format!(
                "INSERT INTO parity_repos (did, rev, updated_at) VALUES {} \
                 ON CONFLICT(did) DO UPDATE SET rev = excluded.rev, updated_at = excluded.updated_at \
                 WHERE parity_repos.rev IS NULL OR excluded.rev > parity_repos.rev",
                placeholders(chunk.len(), 3)
            );
            let mut q: Query = sqlx::query(AssertSqlSafe(sql));
            for (did, rev) in chunk {
                q = q
                    .bind(did.as_str().to_owned())
                    .bind(rev.to_string())
                    .bind(now.clone());
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// Nothing to wait for: this transaction already holds SQLite's one
    /// write lock (`BEGIN IMMEDIATE`).
    async fn lock_watermark(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn commit(self) -> Result<(), StoreError> {
        Ok(self.tx.commit().await?)
    }

    async fn rollback(self) -> Result<(), StoreError> {
        Ok(self.tx.rollback().await?)
    }
}

fn bind_value(q: Query, v: &Value) -> Query {
    match v {
        Value::Null => q.bind(None::<String>),
        Value::Text(s) | Value::Json(s) => q.bind(s.clone()),
        Value::Integer(i) => q.bind(*i),
        Value::Boolean(b) => q.bind(*b),
        Value::Timestamp(t) => q.bind(timestamp_text(t)),
    }
}

/// SQLITE_BUSY (5) or SQLITE_LOCKED (6), primary code.
fn is_busy(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|c| matches!(c & 0xff, 5 | 6))
}

#[cfg(test)]
mod tests {
    use super::ladder;

    #[test]
    fn ladder_covers_everything_with_few_shapes() {
        let items: Vec<u32> = (0..1_337).collect();
        let chunks = ladder(&items, 500);
        let sizes: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 1_337);
        assert!(sizes.iter().all(|s| [500, 128, 32, 8, 1].contains(s)));
        let flat: Vec<u32> = chunks.concat();
        assert_eq!(flat, items);
        assert!(ladder::<u32>(&[], 500).is_empty());
        assert_eq!(ladder(&items[..3], 2).len(), 2);
    }
}
