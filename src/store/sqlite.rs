//! SQLite backend: WAL, `synchronous=NORMAL`, a busy timeout, and multi-row
//! statements chunked under SQLite's bind limit.
//!
//! Owns: the SQLite dialect of every statement the store runs. Timestamps
//! are stored as RFC 3339 text (UTC, µs), JSON as text, booleans as 0/1.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Sqlite};

use super::plan::{Plan, status_text};
use super::schema::{self, Backend};
use super::{CommitStats, DatabaseConfig, StoreError, imports};
use crate::batch::Batch;
use crate::event::AccountStatus;
use crate::mapper::table::timestamp_text;
use crate::mapper::{TableSchema, Value};

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

fn now_text() -> String {
    timestamp_text(&Utc::now())
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
        let pool = SqlitePoolOptions::new()
            .max_connections(cfg.max_connections.max(1))
            .connect_with(opts)
            .await
            .map_err(StoreError::Connect)?;
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

    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
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
            for ddl in schema::create_table(Backend::Sqlite, t) {
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

    pub async fn load_cursor(&self, stream: &str) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT cursor FROM parity_cursors WHERE stream = ?")
                .bind(stream.to_owned())
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn cursors_with_prefix(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT stream, cursor FROM parity_cursors WHERE substr(stream, 1, length(?1)) = ?1",
        )
        .bind(prefix.to_owned())
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn delete_cursors(&self, prefix: &str) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("DELETE FROM parity_cursors WHERE substr(stream, 1, length(?1)) = ?1")
                .bind(prefix.to_owned())
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    pub async fn expire_tombstones(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("DELETE FROM parity_tombstones WHERE deleted_at < ?")
                .bind(timestamp_text(&cutoff))
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    pub async fn commit(&self, batch: &Batch) -> Result<CommitStats, StoreError> {
        let plan = Plan::new(batch, self.tables.len());
        let now = now_text();
        let mut stats = CommitStats::default();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;

        for (did, change) in &plan.account_changes {
            if change.identity || change.handle.is_some() {
                let handle = &change.handle;
                sqlx::query(
                    "INSERT INTO parity_repos (did, handle, updated_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT(did) DO UPDATE SET handle = COALESCE(excluded.handle, parity_repos.handle), \
                     identity_resolved_at = NULL, updated_at = excluded.updated_at",
                )
                .bind(did.as_str().to_owned())
                .bind(handle.clone())
                .bind(now.clone())
                .execute(&mut *tx)
                .await?;
            }
            if let Some((active, status)) = change.account {
                sqlx::query(
                    "INSERT INTO parity_repos (did, status, active, updated_at) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT(did) DO UPDATE SET status = excluded.status, active = excluded.active, updated_at = excluded.updated_at",
                )
                .bind(did.as_str().to_owned())
                .bind(status_text(active, status))
                .bind(active)
                .bind(now.clone())
                .execute(&mut *tx)
                .await?;
            }
        }
        for (did, change) in &plan.account_changes {
            if change.resync {
                sqlx::query(
                    "INSERT INTO parity_repos (did, resync_requested_at, updated_at) VALUES (?1, ?2, ?2) \
                     ON CONFLICT(did) DO UPDATE SET resync_requested_at = excluded.resync_requested_at, updated_at = excluded.updated_at",
                )
                .bind(did.as_str().to_owned())
                .bind(now.clone())
                .execute(&mut *tx)
                .await?;
                sqlx::query(imports::QUEUE_RESYNC_SQLITE)
                    .bind(did.as_str().to_owned())
                    .bind(now.clone())
                    .execute(&mut *tx)
                    .await?;
            }
        }
        for did in &plan.purges {
            for t in self.tables.iter() {
                let sql = format!("DELETE FROM {} WHERE did = ?", t.schema.name);
                let n = sqlx::query(AssertSqlSafe(sql))
                    .bind(did.as_str().to_owned())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                CommitStats::add(&mut stats.deleted, &t.schema.name, n);
            }
        }

        let deletes: Vec<(&str, &str)> = plan.all_deletes().collect();
        for chunk in ladder(&deletes, CHUNK_ROWS) {
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
            q.execute(&mut *tx).await?;
        }
        for (t, work) in self.tables.iter().zip(&plan.tables) {
            for chunk in ladder(&work.deletes, CHUNK_ROWS) {
                let sql = format!(
                    "DELETE FROM {t} WHERE uri IN ({}) AND rev <= (SELECT ts.rev FROM parity_tombstones ts WHERE ts.uri = {t}.uri)",
                    vec!["?"; chunk.len()].join(","),
                    t = t.schema.name
                );
                let mut q: Query = sqlx::query(AssertSqlSafe(sql));
                for (uri, _) in chunk {
                    q = q.bind(uri.to_string());
                }
                let n = q.execute(&mut *tx).await?.rows_affected();
                CommitStats::add(&mut stats.deleted, &t.schema.name, n);
            }
        }

        for (t, work) in self.tables.iter().zip(&plan.tables) {
            let ncols = 7 + t.schema.columns.len();
            for chunk in ladder(&work.upserts, t.rows_per_chunk) {
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
                let n = q.execute(&mut *tx).await?.rows_affected();
                CommitStats::add(&mut stats.upserted, &t.schema.name, n);
            }
        }

        for chunk in ladder(&plan.revs, CHUNK_ROWS) {
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
            q.execute(&mut *tx).await?;
        }

        if let Some(page) = &batch.import {
            let offered = plan.upsert_count() as u64;
            let synced = stats.upserted_total();
            let n = sqlx::query(imports::PAGE_DONE_SQLITE)
                .bind(page.cursor.clone())
                .bind(synced as i64)
                .bind(offered.saturating_sub(synced) as i64)
                .bind(page.failed as i64)
                .bind(page.lease_until.clone())
                .bind(now.clone())
                .bind(page.state_id)
                .bind(page.owner.clone())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 0 {
                return Err(StoreError::LeaseLost);
            }
        }

        for (stream, cursor) in &batch.cursors {
            sqlx::query(
                "INSERT INTO parity_cursors (stream, cursor, updated_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(stream) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
            )
            .bind(stream.clone())
            .bind(cursor.0)
            .bind(now.clone())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(stats)
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
