//! The SQLite writer: one dedicated thread that owns one rusqlite
//! connection and commits every batch of its store, in the order they were
//! sent.
//!
//! Owns: the thread and its queue, the writer connection and its pragmas,
//! beginning each transaction (`BEGIN IMMEDIATE`: the write lock up front,
//! so a transaction that reads first cannot fail to upgrade), and the
//! per-DID facts (`sqlite_repos.rs`) kept across batches, and asking the
//! checkpoint thread (`sqlite_checkpoint.rs`) to run after each commit. Does not own: the
//! commit order (`commit.rs`, walked here unchanged) or the statements
//! (`sqlite_steps.rs`).
//!
//! Why a thread: sqlx runs each SQLite connection on a thread of its own
//! anyway and hands it each statement with every value copied into an
//! `Arc`; here the statements are prepared once, values are bound by
//! reference, and the async caller only waits for the answer. The commit
//! walk is async only because PostgreSQL's steps wait on the network; the
//! SQLite steps never wait, so it is polled to completion in one go.
//!
//! A commit whose caller stopped waiting (shutdown) still runs to its end:
//! it commits or rolls back as a whole, cursor with rows, as before.

use std::future::Future;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::sync::mpsc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::oneshot;

use super::change_log::ChangeLog;
use super::commit::{self, Finish};
use super::sqlite_checkpoint::{Checkpointer, WAL_SIZE_LIMIT, WRITER_AUTOCHECKPOINT};
use super::sqlite_exec::{self, Stmt};
use super::sqlite_repos::{REPO_CACHE_DIDS, RepoCache};
use super::sqlite_steps::{Prepared, STATEMENT_CACHE, SqliteSteps};
use super::{CommitStats, StoreError};
use crate::batch::Batch;

/// Jobs queued for the writer: the pipeline keeps at most a couple of
/// batches in flight, and each import task or other caller one job, so
/// this rarely fills; a caller that finds it full waits on a blocking
/// thread.
const QUEUE: usize = 64;

/// How the writer's connection is set up.
#[derive(Debug, Clone)]
pub(super) struct WriterConfig {
    pub(super) path: PathBuf,
    pub(super) busy_timeout: Duration,
    /// `PRAGMA cache_size`, in KiB.
    pub(super) cache_kib: u64,
    /// `PRAGMA mmap_size`, in bytes.
    pub(super) mmap_bytes: u64,
    /// `PRAGMA journal_size_limit`, in bytes ([`WAL_SIZE_LIMIT`]).
    pub(super) wal_limit_bytes: u64,
}

/// The writer's page cache when `sqlite_cache_mib` is 0: 1/32 of the
/// machine's memory, at least the 32 MiB parity used before, at most 1 GiB
/// (an index working set larger than that is disk-bound anyway).
pub fn default_cache_kib() -> u64 {
    const MIN_KIB: u64 = 32 * 1024;
    const MAX_KIB: u64 = 1024 * 1024;
    let total_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    (total_kib / 32).clamp(MIN_KIB, MAX_KIB)
}

impl WriterConfig {
    pub(super) fn new(path: &std::path::Path, cfg: &super::DatabaseConfig) -> WriterConfig {
        WriterConfig {
            path: path.to_owned(),
            busy_timeout: Duration::from_millis(cfg.busy_timeout_ms),
            cache_kib: match cfg.sqlite_cache_mib {
                0 => default_cache_kib(),
                mib => mib.saturating_mul(1024),
            },
            mmap_bytes: cfg.sqlite_mmap_mib.saturating_mul(1024 * 1024),
            wal_limit_bytes: WAL_SIZE_LIMIT,
        }
    }
}

/// Work run on the writer's connection (or told why it could not open).
type Work = Box<dyn FnOnce(Result<&mut Connection, StoreError>) + Send>;

enum Job {
    Commit {
        batch: Box<Batch>,
        finish: Finish,
        prepared: Arc<Prepared>,
        log: Arc<ChangeLog>,
        reply: oneshot::Sender<Result<CommitStats, StoreError>>,
    },
    /// Shared statements (`sqlite_exec.rs`): runs on the connection and
    /// sends its own answer.
    /// `writes`: whether the work may have written (then the per-DID
    /// cache is forgotten and the checkpoint thread asked to run).
    Run {
        work: Work,
        writes: bool,
    },
    Close(oneshot::Sender<()>),
}

/// The handle to a writer thread; the thread ends when every handle is
/// dropped or [`Writer::close`] is called.
pub(super) struct Writer {
    jobs: mpsc::SyncSender<Job>,
}

/// The queue is gone: the writer was closed or its thread died. Fatal,
/// not transient: retrying would wait forever.
fn closed() -> StoreError {
    StoreError::Sql(sqlx::Error::WorkerCrashed)
}

impl Writer {
    /// Starts the thread. The connection opens at the first commit, so a
    /// store that never writes never opens it.
    pub(super) fn spawn(cfg: WriterConfig) -> std::io::Result<Writer> {
        let (jobs, rx) = mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("parity-sqlite-writer".into())
            .spawn(move || run(cfg, rx))?;
        Ok(Writer { jobs })
    }

    /// Commits (or trial-runs) `batch` on the writer thread.
    pub(super) async fn commit(
        &self,
        batch: Batch,
        finish: Finish,
        prepared: Arc<Prepared>,
        log: Arc<ChangeLog>,
    ) -> Result<CommitStats, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Commit {
            batch: Box::new(batch),
            finish,
            prepared,
            log,
            reply,
        };
        // The queue is sized above the batches in flight: a full queue
        // would mean a stuck writer, and waiting here is then right.
        self.send(job).await?;
        answer.await.map_err(|_| closed())?
    }

    /// Runs `work` on the writer's connection, after the jobs queued
    /// before it, and returns its answer (see `sqlite_exec.rs`).
    pub(super) async fn run<T: Send + 'static>(
        &self,
        writes: bool,
        work: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Run {
            work: Box::new(move |conn| {
                let _ = reply.send(conn.and_then(work));
            }),
            writes,
        })
        .await?;
        answer.await.map_err(|_| closed())?
    }

    /// Runs shared statements in one transaction on the writer thread.
    pub(super) async fn exec(
        &self,
        stmts: Vec<Stmt>,
        guard: Option<usize>,
    ) -> Result<Option<Vec<u64>>, StoreError> {
        self.run(true, move |c| sqlite_exec::run(c, &stmts, guard))
            .await
    }

    async fn send(&self, job: Job) -> Result<(), StoreError> {
        let jobs = self.jobs.clone();
        match jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(mpsc::TrySendError::Full(job)) => {
                tokio::task::spawn_blocking(move || jobs.send(job))
                    .await
                    .map_err(|_| closed())?
                    .map_err(|_| closed())
            }
            Err(mpsc::TrySendError::Disconnected(_)) => Err(closed()),
        }
    }

    /// Closes the connection (checkpointing the WAL) after the queued
    /// batches, and waits for it.
    pub(super) async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.jobs.try_send(Job::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Opens the writer's connection on an existing, migrated database file.
fn open(cfg: &WriterConfig) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        &cfg.path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(cfg.busy_timeout)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // The file is already in WAL mode (the pool sets it); these are per
    // connection. See README → Configuration → SQLite for each choice.
    conn.execute_batch(&format!(
        "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = OFF; \
         PRAGMA cache_size = -{}; PRAGMA mmap_size = {}; PRAGMA wal_autocheckpoint = {}; \
         PRAGMA journal_size_limit = {};",
        cfg.cache_kib, cfg.mmap_bytes, WRITER_AUTOCHECKPOINT, cfg.wal_limit_bytes
    ))?;
    Ok(conn)
}

/// The writer's connection, opened at its first use.
fn opened<'a>(
    conn: &'a mut Option<Connection>,
    cfg: &WriterConfig,
) -> rusqlite::Result<&'a mut Connection> {
    if conn.is_none() {
        *conn = Some(open(cfg)?);
    }
    Ok(conn.as_mut().expect("opened above"))
}

/// The thread: one job at a time, in order.
fn run(cfg: WriterConfig, jobs: mpsc::Receiver<Job>) {
    let mut conn: Option<Connection> = None;
    let mut repos = RepoCache::new(REPO_CACHE_DIDS);
    // Without it, the writer's own fallback checkpoints still bound the WAL.
    let mut checkpointer = Checkpointer::spawn(&cfg)
        .map_err(|e| tracing::warn!(error = %e, "Cannot start the SQLite checkpoint thread; the writer checkpoints itself."))
        .ok();
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Commit {
                batch,
                finish,
                prepared,
                log,
                reply,
            } => {
                let c = match opened(&mut conn, &cfg) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                        continue;
                    }
                };
                let result = commit_one(c, &mut repos, &batch, finish, &prepared, &log);
                if result.is_err() || finish == Finish::Rollback {
                    repos.clear();
                } else if let Some(c) = &checkpointer {
                    c.request();
                }
                let _ = reply.send(result);
            }
            Job::Run { work, writes } => {
                work(opened(&mut conn, &cfg).map_err(StoreError::from));
                // The statements may have changed `parity_repos` (an
                // identity, an account status) without moving this
                // connection's `data_version`: forget what was known.
                if writes {
                    repos.clear();
                    if let Some(c) = &checkpointer {
                        c.request();
                    }
                }
            }
            Job::Close(done) => {
                checkpointer = None;
                conn = None;
                repos.clear();
                let _ = done.send(());
            }
        }
    }
}

/// One transaction: begin, walk the commit order, commit or roll back.
fn commit_one(
    conn: &mut Connection,
    repos: &mut RepoCache,
    batch: &Batch,
    finish: Finish,
    prepared: &Prepared,
    log: &ChangeLog,
) -> Result<CommitStats, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    repos.begin(&tx)?;
    let steps = SqliteSteps {
        tx,
        prepared,
        repos,
        log,
    };
    // Dropping the transaction on an error rolls it back.
    complete(commit::commit(steps, batch, finish))
}

/// Runs a future that never waits (the SQLite steps do no IO through the
/// async runtime) to its end.
fn complete<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("the SQLite commit steps never wait"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DatabaseConfig;

    fn pragma(c: &Connection, name: &str) -> i64 {
        c.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn the_writer_connection_takes_the_configured_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA journal_mode = WAL")
            .unwrap();
        let cfg = DatabaseConfig {
            sqlite_cache_mib: 48,
            sqlite_mmap_mib: 16,
            ..Default::default()
        };
        let c = open(&WriterConfig::new(&path, &cfg)).unwrap();
        assert_eq!(pragma(&c, "cache_size"), -48 * 1024);
        assert_eq!(pragma(&c, "mmap_size"), 16 << 20);
        assert_eq!(
            pragma(&c, "wal_autocheckpoint"),
            i64::from(WRITER_AUTOCHECKPOINT)
        );
        assert_eq!(pragma(&c, "synchronous"), 1, "NORMAL");
        assert_eq!(pragma(&c, "journal_size_limit"), WAL_SIZE_LIMIT as i64);
    }

    /// A WAL that grew past the limit while a reader held an old snapshot
    /// (no checkpoint could restart it) is cut back to the limit when the
    /// writer restarts it, instead of keeping its high-water mark.
    #[test]
    fn the_wal_file_is_cut_back_after_a_reader_held_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let setup = Connection::open(&path).unwrap();
        setup
            .execute_batch(
                "PRAGMA journal_mode = WAL; CREATE TABLE t (v BLOB NOT NULL); \
                 INSERT INTO t VALUES (zeroblob(100));",
            )
            .unwrap();
        let mut cfg = WriterConfig::new(&path, &crate::store::DatabaseConfig::default());
        cfg.wal_limit_bytes = 256 * 1024;
        let w = open(&cfg).unwrap();
        let wal = || {
            std::fs::metadata(dir.path().join("t.db-wal"))
                .unwrap()
                .len()
        };
        let write = |n: usize| {
            for _ in 0..n {
                w.execute("INSERT INTO t VALUES (randomblob(8000))", [])
                    .unwrap();
            }
        };
        // A reader's open snapshot: checkpoints cannot restart the WAL.
        let reader = Connection::open(&path).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        let _: i64 = reader
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        write(200);
        let grown = wal();
        assert!(grown > 1024 * 1024, "{grown}");
        reader.execute_batch("COMMIT").unwrap();
        // Every frame checkpointed; the next write restarts the WAL.
        let (busy, log, done): (i64, i64, i64) = w
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!((busy, log), (0, done));
        write(1);
        let after = wal();
        assert!(
            after <= cfg.wal_limit_bytes,
            "{after} > {}",
            cfg.wal_limit_bytes
        );
    }

    #[test]
    fn a_gone_writer_is_fatal_not_retried() {
        let e = closed();
        assert!(!e.is_transient() && !e.is_rejection(), "{e}");
    }

    #[test]
    fn the_default_cache_follows_the_machines_memory_within_bounds() {
        let kib =
            WriterConfig::new(std::path::Path::new("x"), &DatabaseConfig::default()).cache_kib;
        assert!((32 * 1024..=1024 * 1024).contains(&kib), "{kib}");
        assert_eq!(
            WriterConfig::new(std::path::Path::new("x"), &DatabaseConfig::default()).mmap_bytes,
            0
        );
    }
}
