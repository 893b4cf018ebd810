//! The SQLite writer: one dedicated thread that owns one rusqlite
//! connection and commits every batch of its store, in the order they were
//! sent.
//!
//! Owns: the thread and its queue, the writer connection and its pragmas,
//! the per-DID facts (`sqlite_repos.rs`) kept across transactions, and
//! asking the checkpoint thread (`sqlite_checkpoint.rs`) to run after each
//! commit. Does not own: the transactions (`sqlite_group.rs`: the jobs
//! queued back to back share one, begun `BEGIN IMMEDIATE` so one that
//! reads first cannot fail to upgrade), the commit order (`commit.rs`),
//! the statements (`sqlite_steps.rs`) or the page-cache size
//! (`sqlite_cache.rs`, told after each commit).
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

use std::any::Any;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use super::change_log::ChangeLog;
use super::commit::Finish;
use super::sqlite_cache::{Cache, CachePlan};
use super::sqlite_checkpoint::{Checkpointer, WAL_SIZE_LIMIT, WRITER_AUTOCHECKPOINT};
use super::sqlite_exec::{self, Stmt};
use super::sqlite_group::{self, CommitJob, Job, RunJob};
use super::sqlite_repos::{REPO_CACHE_DIDS, RepoCache};
use super::sqlite_steps::{Prepared, STATEMENT_CACHE};
use super::{CommitStats, StoreError};
use crate::batch::Batch;

/// Jobs queued for the writer: the pipeline keeps at most a couple of
/// batches in flight, and each import task (4 × `--concurrency` DIDs in
/// flight, a page per collection) or other caller a few jobs, so this
/// rarely fills; a caller that finds it full waits on a blocking thread.
const QUEUE: usize = 256;

/// How the writer's connection is set up.
#[derive(Debug, Clone)]
pub(super) struct WriterConfig {
    pub(super) path: PathBuf,
    pub(super) busy_timeout: Duration,
    /// `PRAGMA cache_size` (`sqlite_cache.rs`).
    pub(super) cache: CachePlan,
    /// `PRAGMA mmap_size`, in bytes.
    pub(super) mmap_bytes: u64,
    /// `PRAGMA journal_size_limit`, in bytes ([`WAL_SIZE_LIMIT`]).
    pub(super) wal_limit_bytes: u64,
}

impl WriterConfig {
    pub(super) fn new(path: &std::path::Path, cfg: &super::DatabaseConfig) -> WriterConfig {
        WriterConfig {
            path: path.to_owned(),
            busy_timeout: Duration::from_millis(cfg.busy_timeout_ms),
            cache: CachePlan::new(cfg.sqlite_cache_mib),
            mmap_bytes: cfg.sqlite_mmap_mib.saturating_mul(1024 * 1024),
            wal_limit_bytes: WAL_SIZE_LIMIT,
        }
    }
}

/// The handle to a writer thread; the thread ends when every handle is
/// dropped or [`Writer::close`] is called.
pub(super) struct Writer {
    jobs: mpsc::SyncSender<Job>,
    /// Transactions the thread committed (group commit makes this fewer
    /// than the jobs).
    commits: Arc<AtomicU64>,
}

/// The answer of a [`RunJob`] (the work's value, boxed).
type RunAnswer = oneshot::Receiver<Result<Box<dyn Any + Send>, StoreError>>;

/// `work` as a job for the thread, and where its answer will come.
fn run_job<T: Send + 'static>(
    writes: bool,
    work: impl Fn(&mut Connection) -> Result<T, StoreError> + Send + 'static,
) -> (RunJob, RunAnswer) {
    let (reply, answer) = oneshot::channel();
    let job = RunJob {
        work: Box::new(move |conn| work(conn).map(|v| Box::new(v) as Box<dyn Any + Send>)),
        writes,
        reply,
    };
    (job, answer)
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
        let commits = Arc::new(AtomicU64::new(0));
        let counted = commits.clone();
        std::thread::Builder::new()
            .name("parity-sqlite-writer".into())
            .spawn(move || run(cfg, rx, &counted))?;
        Ok(Writer { jobs, commits })
    }

    /// Transactions committed so far.
    pub(super) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Commits (or trial-runs: exactly one batch) `batches` on the writer
    /// thread, in order and in one transaction: all of them or none.
    pub(super) async fn commit(
        &self,
        batches: Vec<Arc<Batch>>,
        finish: Finish,
        prepared: Arc<Prepared>,
        log: Arc<ChangeLog>,
    ) -> Result<Vec<CommitStats>, StoreError> {
        debug_assert!(finish == Finish::Commit || batches.len() == 1);
        let (reply, answer) = oneshot::channel();
        let job = Job::Commit(CommitJob {
            batches,
            finish,
            prepared,
            log,
            reply,
        });
        // The queue is sized above the batches in flight: a full queue
        // would mean a stuck writer, and waiting here is then right.
        self.send(job).await?;
        let (result, batches) = answer.await.map_err(|_| closed())?;
        drop(batches);
        result
    }

    /// Runs `work` on the writer's connection, inside the writer's
    /// transaction after the jobs queued before it, and returns its
    /// answer once that transaction committed (see `sqlite_exec.rs`).
    pub(super) async fn run<T: Send + 'static>(
        &self,
        writes: bool,
        work: impl Fn(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (job, answer) = run_job(writes, work);
        self.send(Job::Run(job)).await?;
        let value = answer.await.map_err(|_| closed())??;
        Ok(*value
            .downcast::<T>()
            .expect("the writer answers with the work's own type"))
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
        tracing::debug!(transactions = self.commits(), "SQLite writer closed");
    }
}

/// Opens the writer's connection on an existing, migrated database file,
/// with its page cache sized for the database (`sqlite_cache.rs`).
fn open(cfg: &WriterConfig) -> rusqlite::Result<(Connection, Cache)> {
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
         PRAGMA mmap_size = {}; PRAGMA wal_autocheckpoint = {}; \
         PRAGMA journal_size_limit = {};",
        cfg.mmap_bytes, WRITER_AUTOCHECKPOINT, cfg.wal_limit_bytes
    ))?;
    let cache = Cache::open(&cfg.cache, &conn)?;
    Ok((conn, cache))
}

/// The writer's connection (and its cache's state), opened at its first
/// use.
fn opened<'a>(
    conn: &'a mut Option<(Connection, Cache)>,
    cfg: &WriterConfig,
) -> rusqlite::Result<&'a mut (Connection, Cache)> {
    if conn.is_none() {
        *conn = Some(open(cfg)?);
    }
    Ok(conn.as_mut().expect("opened above"))
}

/// The thread: the jobs in queue order; those waiting back to back share
/// one transaction (`sqlite_group.rs`).
fn run(cfg: WriterConfig, jobs: mpsc::Receiver<Job>, commits: &AtomicU64) {
    let mut conn: Option<(Connection, Cache)> = None;
    let mut repos = RepoCache::new(REPO_CACHE_DIDS);
    // Without it, the writer's own fallback checkpoints still bound the WAL.
    let mut checkpointer = Checkpointer::spawn(&cfg)
        .map_err(|e| tracing::warn!(error = %e, "Cannot start the SQLite checkpoint thread; the writer checkpoints itself."))
        .ok();
    let mut held: Option<Job> = None;
    while let Some(job) = held.take().or_else(|| jobs.recv().ok()) {
        if let Job::Close(done) = job {
            checkpointer = None;
            conn = None;
            repos.clear();
            let _ = done.send(());
            continue;
        }
        let mut group = vec![job];
        while group.len() < sqlite_group::MAX_GROUP && group[0].groups() {
            match jobs.try_recv() {
                Ok(next) if next.groups() => group.push(next),
                Ok(other) => {
                    held = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        let (c, cache) = match opened(&mut conn, &cfg) {
            Ok((c, cache)) => (c, cache),
            Err(e) => {
                for job in group {
                    job.fail(copy_of(&e).into());
                }
                continue;
            }
        };
        if sqlite_group::run(c, &mut repos, group, commits) {
            if let Err(e) = cache.committed(c) {
                tracing::warn!(error = %e, "cannot read the SQLite database's size to size the writer's cache");
            }
            if let Some(c) = &checkpointer {
                c.request();
            }
        }
    }
}

/// The same error for each job of a group that could not start (the code
/// is what callers classify by).
fn copy_of(e: &rusqlite::Error) -> rusqlite::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, msg) => {
            rusqlite::Error::SqliteFailure(*code, msg.clone())
        }
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some(other.to_string()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DatabaseConfig;
    use crate::store::dialect::Arg;

    fn pragma(c: &Connection, name: &str) -> i64 {
        c.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            .unwrap()
    }

    /// A fresh database file in WAL mode, as the pool leaves it.
    fn wal_database() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA journal_mode = WAL")
            .unwrap();
        (dir, path)
    }

    #[test]
    fn the_writer_connection_takes_the_configured_sizes() {
        let (_dir, path) = wal_database();
        let cfg = DatabaseConfig {
            sqlite_cache_mib: 48,
            sqlite_mmap_mib: 16,
            ..Default::default()
        };
        let (c, _) = open(&WriterConfig::new(&path, &cfg)).unwrap();
        assert_eq!(pragma(&c, "cache_size"), -48 * 1024);
        assert_eq!(pragma(&c, "mmap_size"), 16 << 20);
        assert_eq!(
            pragma(&c, "wal_autocheckpoint"),
            i64::from(WRITER_AUTOCHECKPOINT)
        );
        assert_eq!(pragma(&c, "synchronous"), 1, "NORMAL");
        assert_eq!(pragma(&c, "journal_size_limit"), WAL_SIZE_LIMIT as i64);
    }

    /// With the default size, a small database's writer opens with the
    /// small cache (`sqlite_cache.rs`), not the machine-sized one.
    #[test]
    fn the_default_cache_starts_small_on_a_small_database() {
        let (_dir, path) = wal_database();
        let cfg = WriterConfig::new(&path, &DatabaseConfig::default());
        let (c, _) = open(&cfg).unwrap();
        let want = cfg.cache.kib_for(0);
        assert_eq!(pragma(&c, "cache_size"), -(want as i64));
        assert!(
            want <= super::super::sqlite_cache::SMALL_DB_CACHE_KIB,
            "{want}"
        );
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
        let (w, _) = open(&cfg).unwrap();
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

    /// A writer on a fresh WAL database with a table `t (v TEXT)`.
    fn writer_on_table() -> (tempfile::TempDir, Writer) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (v TEXT NOT NULL);")
            .unwrap();
        let w = Writer::spawn(WriterConfig::new(&path, &DatabaseConfig::default())).unwrap();
        (dir, w)
    }

    /// Queues `stmts` (run like `Store::in_transaction`) without waiting.
    fn queue(w: &Writer, stmts: &[(&str, &str)], guard: Option<usize>) -> RunAnswer {
        let stmts: Vec<Stmt> = stmts
            .iter()
            .map(|(sql, v)| (sql.to_string(), vec![Arg::Text(Some(v.to_string()))]))
            .collect();
        let (job, answer) = run_job(true, move |c| sqlite_exec::run(c, &stmts, guard));
        assert!(w.jobs.try_send(Job::Run(job)).is_ok());
        answer
    }

    /// Queues a job that holds the writer until `release` is sent, and
    /// waits until it runs: what is queued next waits behind it.
    fn hold(w: &Writer) -> (mpsc::Sender<()>, RunAnswer) {
        let (started, running) = mpsc::channel::<()>();
        let (release, gate) = mpsc::channel::<()>();
        let gate = std::sync::Mutex::new(gate);
        let (job, answer) = run_job(false, move |_| {
            let _ = started.send(());
            let _ = gate.lock().unwrap().recv();
            Ok(())
        });
        assert!(w.jobs.try_send(Job::Run(job)).is_ok());
        running.recv().unwrap();
        (release, answer)
    }

    fn rows(dir: &tempfile::TempDir) -> Vec<String> {
        let c = Connection::open(dir.path().join("t.db")).unwrap();
        let mut stmt = c.prepare("SELECT v FROM t ORDER BY v").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    const INSERT: &str = "INSERT INTO t (v) VALUES ($1)";

    /// Jobs waiting back to back in the queue share one transaction, and
    /// none is answered before it commits (`sqlite_group.rs`).
    #[tokio::test]
    async fn jobs_queued_together_commit_in_one_transaction() {
        let (dir, w) = writer_on_table();
        let (release, held) = hold(&w);
        let answers: Vec<RunAnswer> = ["a", "b", "c"]
            .iter()
            .map(|v| queue(&w, &[(INSERT, v)], None))
            .collect();
        release.send(()).unwrap();
        held.await.unwrap().unwrap();
        let mut answers = answers.into_iter();
        answers.next().unwrap().await.unwrap().unwrap();
        // The first answer came after the whole group's COMMIT.
        assert_eq!(rows(&dir), ["a", "b", "c"]);
        for a in answers {
            a.await.unwrap().unwrap();
        }
        // The holder's transaction, then one for the three.
        assert_eq!(w.commits(), 2);
    }

    /// One failing job of a group fails alone; a job whose guard rolled it
    /// back keeps the others' writes.
    #[tokio::test]
    async fn a_failing_job_of_a_group_fails_alone() {
        let (dir, w) = writer_on_table();
        let (release, held) = hold(&w);
        let a = queue(&w, &[(INSERT, "a")], None);
        let bad = queue(&w, &[("INSERT INTO missing (v) VALUES ($1)", "x")], None);
        let guarded = queue(
            &w,
            &[(INSERT, "z"), ("UPDATE t SET v = 'q' WHERE v = $1", "none")],
            Some(1),
        );
        let d = queue(&w, &[(INSERT, "d")], None);
        release.send(()).unwrap();
        held.await.unwrap().unwrap();
        let n = |r: Result<Box<dyn Any + Send>, StoreError>| {
            *r.unwrap().downcast::<Option<Vec<u64>>>().unwrap()
        };
        assert_eq!(n(a.await.unwrap()), Some(vec![1]));
        assert!(bad.await.unwrap().is_err());
        assert_eq!(n(guarded.await.unwrap()), None);
        assert_eq!(n(d.await.unwrap()), Some(vec![1]));
        assert_eq!(rows(&dir), ["a", "d"]);
    }

    #[test]
    fn a_gone_writer_is_fatal_not_retried() {
        let e = closed();
        assert!(!e.is_transient() && !e.is_rejection(), "{e}");
    }

    #[test]
    fn the_default_cache_follows_the_machines_memory_within_bounds() {
        let kib = WriterConfig::new(std::path::Path::new("x"), &DatabaseConfig::default())
            .cache
            .full_kib;
        assert!((32 * 1024..=1024 * 1024).contains(&kib), "{kib}");
        assert_eq!(
            WriterConfig::new(std::path::Path::new("x"), &DatabaseConfig::default()).mmap_bytes,
            0
        );
    }
}
