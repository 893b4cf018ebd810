//! SQLite backend: WAL, `synchronous=NORMAL`, a busy timeout; batches are
//! committed by a dedicated writer thread (`sqlite_writer.rs`).
//!
//! Owns: the sqlx pool (migrations, catalog checks, the shared statements
//! of `dialect.rs`, import states) and its pragmas, mapper-table DDL, and
//! handing each batch to the writer. Does not own: the commit order
//! (`commit.rs`), the commit statements (`sqlite_steps.rs`) or the writer
//! connection (`sqlite_writer.rs`). Timestamps are stored as RFC 3339 text
//! (UTC, µs), JSON as text, booleans as 0/1.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::AssertSqlSafe;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::change_log::{ChangeLog, Signal};
use super::commit::Finish;
use super::dialect::Dialect;
use super::schema;
use super::sqlite_checkpoint::{WAL_SIZE_LIMIT, WRITER_AUTOCHECKPOINT};
use super::sqlite_steps::{Prepared, UriColumn};
use super::sqlite_writer::{Writer, WriterConfig};
use super::{CommitStats, DatabaseConfig, StoreError};
use crate::batch::Batch;
use crate::event::AccountStatus;
use crate::mapper::builtin::Builtin;
use crate::mapper::{TableSchema, generic};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Prepared statements kept per pool connection (status queries, import
/// states, the shared statements): a few dozen texts.
const STATEMENT_CACHE: usize = 64;

/// A SQLite database.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    prepared: Arc<Prepared>,
    /// `None` for a read-only store.
    writer: Option<Arc<Writer>>,
    pub(super) change_log: Arc<ChangeLog>,
    pub(super) signal: Signal,
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
            .statement_cache_capacity(STATEMENT_CACHE)
            // Checkpoints are the checkpoint thread's: at SQLite's default
            // (1,000 pages) a pool connection's bookkeeping write checkpointed
            // the whole WAL inside its own COMMIT whenever the thread was a
            // little behind (a sixth of the pool threads' time in an
            // `import --all` profile). The writer's threshold instead.
            .pragma("wal_autocheckpoint", WRITER_AUTOCHECKPOINT.to_string())
            // Whichever connection restarts the WAL cuts the file back.
            .pragma("journal_size_limit", WAL_SIZE_LIMIT.to_string());
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
        let writer = Writer::spawn(WriterConfig::new(opts.get_filename(), cfg))
            .map_err(|e| StoreError::Connect(sqlx::Error::Io(e)))?;
        Ok(SqliteStore {
            pool,
            prepared: Arc::new(Prepared::new(&[], &[], &[])),
            writer: Some(Arc::new(writer)),
            change_log: Arc::default(),
            signal: Signal::default(),
        })
    }

    /// Closes the writer's connection, then the pool.
    pub async fn close(&self) {
        if let Some(w) = &self.writer {
            w.close().await;
        }
        self.pool.close().await;
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The writer thread, which runs every write of this store
    /// (`sqlite_exec.rs`); `None` for a read-only store.
    pub(super) fn writer(&self) -> Option<&Writer> {
        self.writer.as_deref()
    }

    /// The mapped tables `prepare` set up.
    pub(super) fn table_names(&self) -> Vec<&str> {
        self.prepared
            .tables
            .iter()
            .map(|t| t.schema.name.as_str())
            .collect()
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
            prepared: Arc::new(Prepared::new(&[], &[], &[])),
            writer: None,
            change_log: Arc::default(),
            signal: Signal::default(),
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

    /// The column names of `table`, generated ones included; empty when it
    /// does not exist.
    pub async fn columns(&self, table: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT name FROM pragma_table_xinfo(?)")
            .bind(table.to_owned())
            .fetch_all(&self.pool)
            .await?)
    }

    /// How `t` holds `uri`: stored, or generated (the record tables since
    /// migration 20261203000000: SQLite computes it from did, collection
    /// and rkey, so rows are about 70 bytes smaller).
    async fn uri_column(&self, t: &TableSchema) -> Result<UriColumn, StoreError> {
        // pragma_table_xinfo's `hidden`: 2 virtual, 3 stored generated.
        let hidden: Option<i64> =
            sqlx::query_scalar("SELECT hidden FROM pragma_table_xinfo(?) WHERE name = 'uri'")
                .bind(t.name.clone())
                .fetch_optional(&self.pool)
                .await?;
        if !matches!(hidden, Some(2 | 3)) {
            return Ok(UriColumn::Stored);
        }
        if let Some(b) = Builtin::from_table_name(&t.name) {
            return Ok(UriColumn::Fixed(b.collection()));
        }
        match t.columns.iter().position(|c| c.name == "collection") {
            Some(n) if t.name == generic::TABLE => Ok(UriColumn::FromCollection(n)),
            _ => Err(StoreError::UnknownUriLayout {
                table: t.name.clone(),
            }),
        }
    }

    pub async fn prepare(
        &mut self,
        tables: &[TableSchema],
        purge: &[AccountStatus],
    ) -> Result<(), StoreError> {
        let mut uris = Vec::with_capacity(tables.len());
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
            uris.push(self.uri_column(t).await?);
        }
        self.prepared = Arc::new(Prepared::new(tables, &uris, purge));
        Ok(())
    }

    /// Transactions the writer thread has committed (0 for a read-only
    /// store).
    #[cfg(test)]
    pub(super) fn transactions(&self) -> u64 {
        self.writer.as_ref().map_or(0, |w| w.commits())
    }

    /// `batches` in order in one transaction (a trial: exactly one). The
    /// writer thread shares them: nothing is copied.
    pub(super) async fn commit(
        &self,
        batches: Vec<Arc<Batch>>,
        finish: Finish,
    ) -> Result<Vec<CommitStats>, StoreError> {
        let Some(writer) = &self.writer else {
            return Err(StoreError::Sql(sqlx::Error::Configuration(
                "a read-only store cannot commit".into(),
            )));
        };
        writer
            .commit(
                batches,
                finish,
                self.prepared.clone(),
                self.change_log.clone(),
            )
            .await
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
#[path = "sqlite_uri_tests.rs"]
mod uri_tests;

#[cfg(test)]
mod tests {
    use super::*;

    /// The pool's connections leave WAL checkpoints to the checkpoint
    /// thread, down to the same fallback bound as the writer.
    #[tokio::test]
    async fn pool_connections_leave_checkpoints_to_the_checkpoint_thread() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DatabaseConfig {
            url: format!("sqlite://{}", dir.path().join("t.db").display()),
            ..DatabaseConfig::default()
        };
        let s = SqliteStore::connect(&cfg).await.unwrap();
        let n: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(s.pool())
            .await
            .unwrap();
        assert_eq!(n, i64::from(WRITER_AUTOCHECKPOINT));
        let limit: i64 = sqlx::query_scalar("PRAGMA journal_size_limit")
            .fetch_one(s.pool())
            .await
            .unwrap();
        assert_eq!(limit, WAL_SIZE_LIMIT as i64);
        s.close().await;
    }

    /// parity's bookkeeping writes (shared statements, and the import
    /// claims that return rows) and an import's per-DID look-ups run on
    /// the writer thread: they complete while the pool's only connection
    /// is taken, where on the pool they would wait for it
    /// (`sqlite_exec.rs`).
    #[tokio::test]
    async fn bookkeeping_writes_run_on_the_writer_not_the_pool() {
        use crate::store::{ImportStatus, Store};
        let dir = tempfile::tempdir().unwrap();
        let cfg = DatabaseConfig {
            url: format!("sqlite://{}", dir.path().join("t.db").display()),
            max_connections: 1,
            ..DatabaseConfig::default()
        };
        let s = SqliteStore::connect(&cfg).await.unwrap();
        s.migrate().await.unwrap();
        let store = Store::Sqlite(s);
        let Store::Sqlite(inner) = &store else {
            unreachable!()
        };
        let held = inner.pool().acquire().await.unwrap();
        let (did, col) = ("did:plc:writerbookkeeping", "app.bsky.feed.post");
        let writes = async {
            store
                .save_identity(did, "https://pds.example", Some("a.test"))
                .await
                .unwrap();
            store
                .enqueue_imports(did, &[col.to_owned()], false)
                .await
                .unwrap();
            let until = chrono::Utc::now() + chrono::Duration::hours(1);
            let claimed = store
                .claim_import(did, col, "owner-1", until, None)
                .await
                .unwrap();
            // The per-DID look-ups by key: on the writer too.
            let id = store.cached_identity(did).await.unwrap().unwrap();
            assert_eq!(id.pds.as_deref(), Some("https://pds.example"));
            assert_eq!(id.handle.as_deref(), Some("a.test"));
            let states = store
                .import_states(Some(did), crate::store::StatusFilter::All, 10)
                .await
                .unwrap();
            assert_eq!(states.len(), 1);
            assert_eq!(
                store.account_status(did).await.unwrap().as_deref(),
                Some("active")
            );
            claimed
        };
        // The pool would give up waiting after 30 s; the writer answers at
        // once, so a bound well below that tells the two apart.
        let claimed = tokio::time::timeout(Duration::from_secs(10), writes)
            .await
            .expect("the writes waited for the pool's only connection")
            .expect("the pair was claimed");
        assert_eq!(
            (claimed.status, claimed.lease_owner.as_deref()),
            (ImportStatus::InProgress, Some("owner-1"))
        );
        drop(held);
        // What the writer committed is what the pool reads.
        let listed = store
            .import_states(None, crate::store::StatusFilter::All, 10)
            .await
            .unwrap();
        assert_eq!(listed, [claimed]);
        store.close().await;
    }
}
