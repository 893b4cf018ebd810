//! The database: SQLite (embedded default) or PostgreSQL, behind one
//! [`Store`].
//!
//! Owns: connecting, migrations, creating and checking mapper tables, and
//! committing a [`Batch`] (rows plus cursor) in one transaction. Only this
//! module speaks SQL.
//!
//! Convergence rules every backend enforces in SQL, so that any order of
//! live events, replays and duplicates ends at the newest rev of each
//! record:
//! - an upsert applies only if its rev is newer than the stored row's, no
//!   tombstone with an equal or newer rev exists for the URI, no complete
//!   import listing of its (DID, collection) at a newer rev left it out
//!   (`parity_sweep_floors`), and the DID is not in a purging account
//!   status; an unchanged CID keeps `synced_at`;
//! - a delete removes the row only if the stored rev is not newer, and leaves
//!   a tombstone `(uri, rev)` that expires after the configured retention.
//!
//! Errors: [`StoreError::is_transient`] tells the writer whether to retry
//! the batch; anything else stops the process.
//!
//! # Layout
//! - `plan.rs`: a batch grouped per table, and the statement order of a
//!   commit (pure);
//! - `commit.rs`: walks that order once for both backends, through the
//!   bulk steps each backend implements (`Steps`);
//! - `sqlite.rs` / `postgres.rs`: pools, migrations, mapper-table DDL and
//!   catalog checks, and those bulk steps;
//! - `postgres_fresh.rs`, `postgres_copy.rs`: PostgreSQL's write of whole
//!   repositories it holds nothing of, several in one transaction, their
//!   rows by `COPY` (an import's fast path beside the commit order);
//! - `sqlite_writer.rs`, `sqlite_steps.rs`, `sqlite_repos.rs`,
//!   `sqlite_checkpoint.rs`: SQLite's writer thread, its commit statements,
//!   its per-DID cache and its WAL checkpoint thread;
//! - `dialect.rs`: the one dialect strategy (below) and running a shared
//!   statement on the pool;
//! - `did_locks.rs`: the per-DID locks a PostgreSQL commit takes first, so
//!   the guards hold between concurrent writers;
//! - `shard.rs`: which of several writer connections commits which DIDs,
//!   and a batch split into one share per writer (pure);
//! - `schema.rs`: DDL and guard fragments from mapper schemas;
//! - `imports.rs`: import states, leases and the identity cache;
//! - `outbox.rs` / `sessions.rs`: the publish queue and its sessions
//!   (tokens arrive sealed; this module never sees them in clear);
//! - `change_log.rs`, `subjects.rs`: the change log's write side (what a
//!   commit appends to `parity_changes`, in its own transaction, when the
//!   feed is on; the counter and in-process wake after it) and the at-uris
//!   a record points at;
//! - `changes.rs`: the change log's read side, retention sweep and feed
//!   state;
//! - `cursor.rs`: the cursor contract.
//!
//! # Dialect
//! One strategy for the whole module: a statement both backends run is
//! written once, in PostgreSQL form (`$N`, `::timestamptz`/`::text` casts,
//! `FOR UPDATE SKIP LOCKED`), and `dialect::Dialect::translate` is the only
//! place that turns it into SQLite (`?N`, casts and row locks dropped).
//! Arguments are `dialect::Arg`s, bound the way each backend stores them
//! (timestamps: `timestamptz` vs RFC 3339 text). Only statements that
//! genuinely differ are written per backend: bulk writes (cached single-row
//! statements on SQLite's writer thread, one `UNNEST` per table on
//! PostgreSQL), DDL,
//! catalog queries and connection setup.

mod change_log;
mod changes;
mod commit;
#[cfg(test)]
mod commit_all_tests;
pub mod cursor;
mod dialect;
mod did_locks;
mod import_queue;
mod imports;
mod outbox;
mod pg_pool;
pub mod plan;
mod postgres;
mod postgres_copy;
mod postgres_fresh;
mod postgres_upsert;
mod publish_limits;
mod quarantine;
mod resyncs;
mod schema;
mod sessions;
pub mod shard;
mod sqlite;
mod sqlite_cache;
mod sqlite_checkpoint;
mod sqlite_exec;
mod sqlite_group;
mod sqlite_repos;
mod sqlite_steps;
mod sqlite_writer;
mod subjects;
pub mod tcp_nodelay;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::batch::Batch;
use crate::event::{AccountStatus, Cursor};
use crate::mapper::TableSchema;

pub use change_log::{ChangeLog, FEED_CHANGES_METRIC};
pub use changes::{ChangeBounds, ChangeRow};
pub use import_queue::{ListedPage, ListingRow, ListingState, QueueOutcome, QueuedDid, RunCounts};
pub use imports::{CachedIdentity, ImportState, ImportStatus, StatusFilter, UnknownImportStatus};
pub use outbox::{OutboxFilter, OutboxRow, RetryTarget};
pub use postgres::PgStore;
pub use postgres_fresh::{FreshCollection, FreshRepo};
pub use publish_limits::Charge;
pub use quarantine::{Quarantined, Rejected};
pub use sessions::SessionRow;
pub use sqlite::SqliteStore;
pub use sqlite_cache::default_cache_kib as default_sqlite_cache_kib;
/// The SQLite writer's defaults, for a like-for-like store-limit baseline
/// (`crates/workload`): its full page cache in KiB when `sqlite_cache_mib`
/// is 0 (the writer holds it at 64 MiB while the database is under 1 GiB,
/// `sqlite_cache.rs`; a baseline with the full size throughout only gains
/// cache hits by it), and its `wal_autocheckpoint` in pages.
pub use sqlite_checkpoint::WRITER_AUTOCHECKPOINT as SQLITE_WAL_AUTOCHECKPOINT;
pub use subjects::{subjects_of, subjects_of_text};

/// Database settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://FILE` (created if missing) or `postgres://USER@HOST/DB`.
    #[serde(default = "default_url")]
    pub url: String,
    /// Connections in the pool.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// How long SQLite waits for a lock before giving up, in milliseconds.
    #[serde(default = "default_busy_timeout_ms")]
    pub busy_timeout_ms: u64,
    /// How long delete tombstones are kept, in hours.
    #[serde(default = "default_tombstone_retention_hours")]
    pub tombstone_retention_hours: u64,
    /// SQLite only: the page cache of the connection that writes batches,
    /// in MiB. 0 sizes it from the machine's memory (1/32 of it, between
    /// 32 MiB and 1 GiB), held at 64 MiB while the database is under 1 GiB
    /// (`sqlite_cache.rs`).
    #[serde(default)]
    pub sqlite_cache_mib: u64,
    /// SQLite only: memory-mapped reads for the writing connection, in MiB
    /// (`PRAGMA mmap_size`); 0 (the default) turns them off.
    #[serde(default = "default_sqlite_mmap_mib")]
    pub sqlite_mmap_mib: u64,
    /// Writer connections `consume` commits on in parallel, each taking the
    /// share of every batch whose DIDs hash to it; 0: the backend's default
    /// ([`DatabaseConfig::writer_count`]). SQLite has one write lock, so it
    /// takes only 1.
    #[serde(default)]
    pub writers: u32,
    /// PostgreSQL only, not configurable: every transaction of the pool
    /// commits without waiting for its WAL flush (`synchronous_commit =
    /// off` for the session), and [`Store::close`] ends with one commit
    /// that does wait, which makes everything before it durable. Set by
    /// `import`, whose every write is idempotent and resumable: a server
    /// crash loses at most the last fraction of a second of commits, in
    /// order, as if the import had stopped that much earlier.
    #[serde(skip)]
    pub async_commit: bool,
}

/// PostgreSQL's default writer count: each writer is one server backend
/// (one core) that otherwise waits on parity between statements; measured
/// on 2 cores in BENCHMARKS.md ("Several writers on PostgreSQL").
pub const DEFAULT_PG_WRITERS: u32 = 4;

/// The most writers `database.writers` accepts: each is a connection and a
/// batch queue.
pub const MAX_WRITERS: u32 = 32;

impl DatabaseConfig {
    fn is_sqlite(&self) -> bool {
        self.url.starts_with("sqlite:")
    }

    /// The writer count in effect: `writers`, or 1 on SQLite and
    /// [`DEFAULT_PG_WRITERS`] on PostgreSQL when it is 0.
    pub fn writer_count(&self) -> u32 {
        match self.writers {
            0 if self.is_sqlite() => 1,
            0 => DEFAULT_PG_WRITERS,
            n => n,
        }
    }

    /// Checks `writers` against the backend and the SQLite sizes; the
    /// message names the key.
    pub fn validate(&self) -> Result<(), String> {
        for (key, v) in [
            ("sqlite_cache_mib", self.sqlite_cache_mib),
            ("sqlite_mmap_mib", self.sqlite_mmap_mib),
        ] {
            if v > MAX_SQLITE_MIB {
                return Err(format!(
                    "database.{key} is {v}; at most {MAX_SQLITE_MIB} (MiB)"
                ));
            }
        }
        if self.writers > MAX_WRITERS {
            return Err(format!(
                "database.writers is {}; use 1 to {MAX_WRITERS} (or 0 for the backend's default)",
                self.writers
            ));
        }
        if self.is_sqlite() && self.writers > 1 {
            return Err(format!(
                "database.writers is {}, but SQLite has one write lock; use 1 (or 0) with sqlite://",
                self.writers
            ));
        }
        Ok(())
    }
}

fn default_url() -> String {
    "sqlite://parity.db".to_owned()
}

/// One writer plus a few readers (status commands, checks).
const fn default_max_connections() -> u32 {
    4
}

const fn default_busy_timeout_ms() -> u64 {
    5_000
}

/// Seven days: far longer than any replay window parity rewinds into.
const fn default_tombstone_retention_hours() -> u64 {
    168
}

/// Off: measured no faster on the write path (BENCHMARKS.md), and mapped
/// pages count in the process's RSS; see README → Configuration → SQLite.
const fn default_sqlite_mmap_mib() -> u64 {
    0
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: default_url(),
            max_connections: default_max_connections(),
            busy_timeout_ms: default_busy_timeout_ms(),
            tombstone_retention_hours: default_tombstone_retention_hours(),
            sqlite_cache_mib: 0,
            sqlite_mmap_mib: default_sqlite_mmap_mib(),
            writers: 0,
            async_commit: false,
        }
    }
}

/// The largest SQLite cache or memory map accepted, in MiB (1 TiB): larger
/// values are typos, and SQLite would silently clamp or wrap them.
const MAX_SQLITE_MIB: u64 = 1 << 20;

/// [`StoreError::BadUrl`] for `url`: its scheme only (the text before the
/// first `:`, or nothing when there is no `:`), never the rest.
fn bad_url(url: &str) -> StoreError {
    StoreError::BadUrl(url.split_once(':').map(|(s, _)| s).unwrap_or("").to_owned())
}

/// What went wrong talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is neither `sqlite://` nor `postgres://`: a config error.
    /// Holds only the scheme, so the password in the URL is never printed.
    #[error("unsupported database URL scheme {0:?}: use sqlite://FILE or postgres://USER@HOST/DB")]
    BadUrl(String),
    /// Could not connect (wrong host, server down, bad credentials).
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    /// A migration failed: our own corruption, stop.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A mapped table exists without a column its mapper writes.
    #[error(
        "table {table} has no column {column}: add it (ALTER TABLE {table} ADD COLUMN {column} ...) or change the mapper"
    )]
    MissingColumn { table: String, column: String },
    /// A row's URI is not the one the table computes (SQLite tables whose
    /// `uri` is generated from did, collection and rkey): a mapper writes
    /// another collection into the table. Fatal.
    #[error(
        "table {table} computes uri for its own collection, but a mapper writes {collection:?} records into it: map that collection to another table"
    )]
    UriLayout { table: String, collection: String },
    /// A table's `uri` is generated in a way parity cannot write.
    #[error(
        "table {table} has a generated uri column parity does not know how to fill: store uri in it (uri TEXT PRIMARY KEY NOT NULL) or map to another table"
    )]
    UnknownUriLayout { table: String },
    /// A stored cursor is negative: corruption, stop.
    #[error(
        "stored cursor for {stream} is {value}, which is invalid; fix or delete the row in parity_cursors"
    )]
    CorruptCursor { stream: String, value: i64 },
    /// An import page (or published outbox rows) was written after another
    /// process took over the lease; the batch was rolled back.
    #[error("the lease was taken over by another process")]
    LeaseLost,
    /// Any other database error.
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    /// An error of the SQLite writer's connection (rusqlite); classified
    /// like [`StoreError::Sql`] by its SQLite result code.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

impl StoreError {
    /// Whether retrying the same work later may succeed (connection lost,
    /// pool timeout, lock contention). Everything else is fatal.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Connect(_) => true,
            StoreError::Sql(e) => match e {
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
                sqlx::Error::Database(db) => {
                    let code = db.code().unwrap_or_default();
                    // SQLite BUSY/LOCKED; PostgreSQL serialization failure,
                    // deadlock, admin shutdown, cannot connect now.
                    matches!(
                        code.as_ref(),
                        "5" | "6" | "40001" | "40P01" | "57P01" | "57P03"
                    )
                }
                _ => false,
            },
            StoreError::Sqlite(e) => sqlite_code(e).is_some_and(|c| matches!(c & 0xff, 5 | 6)),
            _ => false,
        }
    }

    /// Whether the database refused the data of the batch (a value it
    /// cannot store, an index entry too large, a constraint or trigger of
    /// the operator's): the writer then finds the offending records and
    /// commits the rest ([`Store::quarantine`]). PostgreSQL SQLSTATE
    /// classes 22 (data exception) and 23 (integrity constraint), 54000
    /// (program limit exceeded) and P0001 (raised by a trigger); SQLite
    /// `SQLITE_TOOBIG`, `SQLITE_CONSTRAINT` (any extended code) and
    /// `SQLITE_MISMATCH`. Our own corruption that trips one of these (a
    /// negative cursor) fails without any record too, and still stops.
    pub fn is_rejection(&self) -> bool {
        if let StoreError::Sqlite(e) = self {
            return sqlite_code(e).is_some_and(|c| matches!(c & 0xff, 18..=20));
        }
        let StoreError::Sql(sqlx::Error::Database(db)) = self else {
            return false;
        };
        let code = db.code().unwrap_or_default();
        if db
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .is_some()
        {
            code.starts_with("22")
                || code.starts_with("23")
                || matches!(code.as_ref(), "54000" | "P0001")
        } else {
            // SQLite's extended result code; the primary code is its low
            // byte.
            code.parse::<i32>()
                .is_ok_and(|c| matches!(c & 0xff, 18..=20))
        }
    }

    /// Bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        if self.is_transient() {
            "transient"
        } else if self.is_rejection() {
            "rejected"
        } else {
            "fatal"
        }
    }
}

/// The extended SQLite result code of a writer error, if it has one.
fn sqlite_code(e: &rusqlite::Error) -> Option<i32> {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.extended_code),
        _ => None,
    }
}

/// What a committed batch changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CommitStats {
    /// Rows inserted or updated, per table name.
    pub upserted: Vec<(String, u64)>,
    /// Rows deleted, per table name (record deletes and purges).
    pub deleted: Vec<(String, u64)>,
    /// Upserts appended to the change log, per table name (empty when the
    /// log is off).
    pub logged_upserts: Vec<(String, u64)>,
    /// Deletes appended to the change log, per table name.
    pub logged_deletes: Vec<(String, u64)>,
    /// The newest `seq` appended, when any was.
    pub last_seq: Option<i64>,
    /// Deletes the tombstone guard refused: the URI's tombstone already
    /// held this rev or a newer one (a replay, or the echo of a delete
    /// `parity publish` already wrote back). Counted as stale, like
    /// upserts the rev guards refuse.
    pub stale_deletes: u64,
}

impl CommitStats {
    pub fn upserted_total(&self) -> u64 {
        self.upserted.iter().map(|(_, n)| n).sum()
    }
    pub fn deleted_total(&self) -> u64 {
        self.deleted.iter().map(|(_, n)| n).sum()
    }
    pub(crate) fn add(list: &mut Vec<(String, u64)>, table: &str, n: u64) {
        if n == 0 {
            return;
        }
        match list.iter_mut().find(|(t, _)| t == table) {
            Some((_, c)) => *c += n,
            None => list.push((table.to_owned(), n)),
        }
    }
}

/// What a mapper table looks like in the database (`parity config check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableState {
    /// Exists with every column the mapper writes.
    Ready,
    /// Does not exist; `consume` creates it.
    Absent,
    /// Exists without this column; `consume` would stop with
    /// [`StoreError::MissingColumn`].
    MissingColumn(String),
}

/// Embedded up-migrations whose version is not in `applied`.
fn pending(migrator: &sqlx::migrate::Migrator, applied: &[i64]) -> usize {
    migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
        .count()
}

/// A batch to commit as the caller holds it: SQLite's writer thread needs
/// its own reference, which a borrowed batch gets by a copy.
#[derive(Clone, Copy)]
enum Held<'a> {
    Borrowed(&'a Batch),
    Shared(&'a Arc<Batch>),
}

impl Held<'_> {
    fn get(&self) -> &Batch {
        match self {
            Held::Borrowed(b) => b,
            Held::Shared(b) => b,
        }
    }
}

/// A connected database.
#[derive(Clone)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl Store {
    /// Connects (creating a SQLite file if missing). Does not migrate.
    pub async fn connect(cfg: &DatabaseConfig) -> Result<Store, StoreError> {
        let url = cfg.url.as_str();
        if url.starts_with("sqlite:") {
            Ok(Store::Sqlite(SqliteStore::connect(cfg).await?))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Store::Postgres(PgStore::connect(cfg).await?))
        } else {
            Err(bad_url(url))
        }
    }

    /// Connects without creating or changing anything: SQLite opens the
    /// file read-only, PostgreSQL sessions are read-only. `None` when the
    /// SQLite file does not exist yet (`consume` and `migrate` create it).
    pub async fn connect_read_only(cfg: &DatabaseConfig) -> Result<Option<Store>, StoreError> {
        let url = cfg.url.as_str();
        if url.starts_with("sqlite:") {
            Ok(SqliteStore::open_read_only(cfg).await?.map(Store::Sqlite))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Some(Store::Postgres(
                PgStore::connect_read_only(cfg).await?,
            )))
        } else {
            Err(bad_url(url))
        }
    }

    /// How many embedded migrations are not applied yet.
    pub async fn pending_migrations(&self) -> Result<usize, StoreError> {
        match self {
            Store::Sqlite(s) => s.pending_migrations().await,
            Store::Postgres(s) => s.pending_migrations().await,
        }
    }

    /// Compares each table with its schema without changing anything.
    pub async fn inspect(&self, tables: &[TableSchema]) -> Result<Vec<TableState>, StoreError> {
        let mut out = Vec::with_capacity(tables.len());
        for t in tables {
            let existing = match self {
                Store::Sqlite(s) => s.columns(&t.name).await?,
                Store::Postgres(s) => s.columns(&t.name).await?,
            };
            out.push(if existing.is_empty() {
                TableState::Absent
            } else {
                match schema::missing_column(t, &existing) {
                    Some(c) => TableState::MissingColumn(c.to_owned()),
                    None => TableState::Ready,
                }
            });
        }
        Ok(out)
    }

    /// Runs the embedded migrations for this backend.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.migrate().await,
            Store::Postgres(s) => s.migrate().await,
        }
    }

    /// Creates missing mapper tables and checks existing ones have every
    /// column. Also fixes which account statuses block upserts.
    pub async fn prepare(
        &mut self,
        tables: &[TableSchema],
        purge_statuses: &[AccountStatus],
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.prepare(tables, purge_statuses).await,
            Store::Postgres(s) => s.prepare(tables, purge_statuses).await,
        }
    }

    /// The stored cursor of one stream.
    pub async fn load_cursor(&self, stream: &str) -> Result<Option<Cursor>, StoreError> {
        let v: Option<(i64,)> = self
            .fetch_optional(
                "SELECT cursor FROM parity_cursors WHERE stream = $1",
                vec![stream.into()],
            )
            .await?;
        match v {
            Some((value,)) if value < 0 => Err(StoreError::CorruptCursor {
                stream: stream.to_owned(),
                value,
            }),
            other => Ok(other.map(|(v,)| Cursor(v))),
        }
    }

    /// Every stored cursor whose stream key starts with `prefix`.
    pub async fn cursors_with_prefix(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, Cursor)>, StoreError> {
        let rows: Vec<(String, i64)> = self
            .fetch_all(
                "SELECT stream, cursor FROM parity_cursors WHERE substr(stream, 1, length($1)) = $1",
                vec![prefix.into()],
            )
            .await?;
        rows.into_iter()
            .map(|(stream, value)| {
                if value < 0 {
                    Err(StoreError::CorruptCursor { stream, value })
                } else {
                    Ok((stream, Cursor(value)))
                }
            })
            .collect()
    }

    /// Forgets the stored cursors whose stream key starts with `prefix`
    /// (and the writer positions behind them).
    pub async fn delete_cursors(&self, prefix: &str) -> Result<u64, StoreError> {
        self.reset_writer_cursors(prefix).await?;
        self.execute(
            "DELETE FROM parity_cursors WHERE substr(stream, 1, length($1)) = $1",
            vec![prefix.into()],
        )
        .await
    }

    /// Forgets the per-writer positions of the streams whose key starts
    /// with `prefix`, keeping their cursors. `consume` does this before its
    /// writers start: positions of an earlier run belong to its partition
    /// of DIDs (another writer count partitions differently), and until
    /// each new writer has committed once, the stream's cursor stays where
    /// the run started.
    pub async fn reset_writer_cursors(&self, prefix: &str) -> Result<u64, StoreError> {
        self.execute(
            "DELETE FROM parity_writer_cursors WHERE substr(stream, 1, length($1)) = $1",
            vec![prefix.into()],
        )
        .await
    }

    /// Writes one batch and its checkpoint in one transaction, with the
    /// changes it made appended to the change log when that is on
    /// ([`Store::set_change_log`]); then counts those changes and wakes
    /// [`Store::change_signal`].
    ///
    /// On SQLite this copies the batch for the writer thread; a caller that
    /// can hand the batch over shared uses [`Store::commit_shared`].
    pub async fn commit(&self, batch: &Batch) -> Result<CommitStats, StoreError> {
        self.run_commit(Held::Borrowed(batch), commit::Finish::Commit)
            .await
    }

    /// [`Store::commit`] of a batch held in an [`Arc`]: SQLite's writer
    /// thread shares it instead of copying every row (measured: the copy
    /// and its frees were a tenth of the import workers' CPU).
    /// The caller keeps it for a retry or [`Store::quarantine`].
    pub async fn commit_shared(&self, batch: &Arc<Batch>) -> Result<CommitStats, StoreError> {
        self.run_commit(Held::Shared(batch), commit::Finish::Commit)
            .await
    }

    /// Whether [`Store::commit_fresh`] can write repos: PostgreSQL, with no
    /// mapped table's changes logged (the change log is written by the
    /// commit order, which that path bypasses).
    pub fn writes_fresh(&self) -> bool {
        match self {
            Store::Postgres(p) => !p.logs_a_table(),
            Store::Sqlite(_) => false,
        }
    }

    /// Writes the repos of `repos` this database holds nothing of (no
    /// import state, no row, tombstone or floor in their collections, no
    /// account status that purges) in one transaction, their rows by
    /// `COPY`, each collection's state `completed` and its floor as a
    /// complete page's sweep leaves them: which repos were written, and
    /// the rows written per table. The others are the caller's to write
    /// page by page; so are all of them on an error (nothing of the group
    /// is kept). Nothing is written where [`Store::writes_fresh`] is false.
    pub async fn commit_fresh(
        &self,
        repos: &[&FreshRepo],
    ) -> Result<(Vec<bool>, CommitStats), StoreError> {
        match self {
            Store::Postgres(p) if self.writes_fresh() => p.commit_fresh(repos).await,
            _ => Ok((vec![false; repos.len()], CommitStats::default())),
        }
    }

    /// Whether [`Store::commit_all`] commits several batches in one
    /// transaction: SQLite's writer thread does; on PostgreSQL, whose
    /// writers commit in parallel, each batch is its own transaction.
    pub fn commits_together(&self) -> bool {
        matches!(self, Store::Sqlite(_))
    }

    /// Transactions SQLite's writer thread has committed so far (`None` on
    /// PostgreSQL): fewer than the batches when they were committed
    /// together. For tests.
    #[cfg(test)]
    pub(crate) fn sqlite_transactions(&self) -> Option<u64> {
        match self {
            Store::Sqlite(s) => Some(s.transactions()),
            Store::Postgres(_) => None,
        }
    }

    /// Writes `batches` as [`Store::commit`] would one after the other, in
    /// one transaction: all of them with their checkpoints, or none (on an
    /// error nothing of any of them is kept). One [`CommitStats`] per
    /// batch, in order. Only where [`Store::commits_together`]; elsewhere
    /// an error that says so.
    pub async fn commit_all(
        &self,
        batches: Vec<Arc<Batch>>,
    ) -> Result<Vec<CommitStats>, StoreError> {
        let Store::Sqlite(s) = self else {
            return Err(StoreError::Sql(sqlx::Error::Configuration(
                "PostgreSQL commits each batch in its own transaction".into(),
            )));
        };
        let all = s.commit(batches, commit::Finish::Commit).await?;
        for stats in &all {
            self.signal().committed(stats);
        }
        Ok(all)
    }

    /// Which changes later commits append to `parity_changes` (`[feed]
    /// enabled` and `tables`; off until this is called). Applies to every
    /// clone made after it. Call it after [`Store::prepare`]: a table in
    /// `tables` that no mapper writes is warned about (nothing would ever
    /// be logged for it).
    pub fn set_change_log(&mut self, log: ChangeLog) {
        let mapped = match &*self {
            Store::Sqlite(s) => s.table_names(),
            Store::Postgres(s) => s.table_names(),
        };
        if log.enabled {
            for t in log.tables.iter().filter(|t| !mapped.contains(&t.as_str())) {
                tracing::warn!(table = %t, "feed.tables names a table no mapper writes; its changes never come.");
            }
        }
        let log = std::sync::Arc::new(log);
        match self {
            Store::Sqlite(s) => s.change_log = log,
            Store::Postgres(s) => s.change_log = log,
        }
    }

    /// The in-process wake of change-log readers: the newest `seq` this
    /// process (through any clone of this store) appended, updated right
    /// after the commit that appended it. `changed().await` on the receiver
    /// returns once a newer commit appended changes; a feed hub reading the
    /// log in this process waits on it instead of its poll interval.
    pub fn change_signal(&self) -> tokio::sync::watch::Receiver<i64> {
        self.signal().subscribe()
    }

    fn signal(&self) -> &change_log::Signal {
        match self {
            Store::Sqlite(s) => &s.signal,
            Store::Postgres(s) => &s.signal,
        }
    }

    /// [`Store::commit`] (also quarantine's commit of the rest) or a trial
    /// of it that is rolled back; after a commit, counts the changes it
    /// appended and wakes [`Store::change_signal`].
    async fn run_commit(
        &self,
        batch: Held<'_>,
        finish: commit::Finish,
    ) -> Result<CommitStats, StoreError> {
        let stats = match self {
            Store::Sqlite(s) => {
                let shared = match batch {
                    Held::Borrowed(b) => Arc::new(b.copy()),
                    Held::Shared(b) => b.clone(),
                };
                s.commit(vec![shared], finish).await.map(|mut all| {
                    debug_assert_eq!(all.len(), 1);
                    all.remove(0)
                })
            }
            Store::Postgres(s) => s.commit(batch.get(), finish).await,
        }?;
        if finish == commit::Finish::Commit {
            self.signal().committed(&stats);
        }
        Ok(stats)
    }

    /// Deletes tombstones older than `age`.
    pub async fn expire_tombstones(&self, age: Duration) -> Result<u64, StoreError> {
        let cutoff =
            chrono::Utc::now() - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
        self.execute(
            "DELETE FROM parity_tombstones WHERE deleted_at < $1",
            vec![cutoff.into()],
        )
        .await
    }

    /// Closes the pool.
    pub async fn close(&self) {
        match self {
            Store::Sqlite(s) => s.close().await,
            Store::Postgres(s) => s.close().await,
        }
    }
}

#[cfg(test)]
mod config_tests {
    use super::DatabaseConfig;

    #[test]
    fn sqlite_sizes_are_bounded() {
        assert_eq!(DatabaseConfig::default().validate(), Ok(()));
        let huge = DatabaseConfig {
            sqlite_cache_mib: 1 << 40,
            ..Default::default()
        };
        assert_eq!(
            huge.validate().unwrap_err(),
            "database.sqlite_cache_mib is 1099511627776; at most 1048576 (MiB)"
        );
        let mmap = DatabaseConfig {
            sqlite_mmap_mib: (1 << 20) + 1,
            ..Default::default()
        };
        assert!(
            mmap.validate()
                .unwrap_err()
                .starts_with("database.sqlite_mmap_mib")
        );
    }
}
