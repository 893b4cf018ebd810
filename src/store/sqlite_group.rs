//! Group commit on the SQLite writer: the jobs waiting back to back in the
//! writer's queue run in one transaction, and each caller hears back once
//! that transaction has committed.
//!
//! Owns: the writer's job types, which jobs may share a transaction, that
//! transaction, and what happens when one job of a group fails (the group
//! is rolled back and each job runs again in a transaction of its own, so
//! it fails alone). Does not own: the thread and its queue
//! (`sqlite_writer.rs`), a batch's statements (`commit.rs`,
//! `sqlite_steps.rs`) or the shared statements (`sqlite_exec.rs`, which
//! keep their own all-or-nothing inside a savepoint).
//!
//! Why: a transaction costs the writer more than its rows. Each commit
//! writes the pages it touched to the WAL again (the tables' rightmost
//! leaves, the import states, `parity_repos`), gives the checkpoint thread
//! those pages to copy again, and ends with SQLite scanning its whole
//! page-cache hash table whenever a page split renumbered pages (SQLite
//! moves a page through a temporary page number beyond the file's end,
//! and `pcache1Truncate` at commit then walks every hash slot: 11 % of the
//! writer's samples in an `import --all` profile). An import commits about
//! seven transactions per repository (claims, identity, state, one page
//! per collection, the queue entry); eight workers keep several queued.
//!
//! A commit job may itself hold several batches: `consume`'s writer hands
//! over, as one job, the batches that queued up while it waited for the
//! last commit (`pipeline/writers.rs`). They land all or none, so its
//! caller can fall back to committing them one by one.
//!
//! Invariants: jobs run in queue order, and a job's batches in their
//! order, so a group is the same serial order the writer would have run
//! them in one by one; nobody's answer is sent before the shared `COMMIT`;
//! a batch still lands whole with its cursor or import page; a trial
//! (quarantine's bisection, rolled back) runs alone.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::change_log::ChangeLog;
use super::commit::{self, Finish};
use super::sqlite_repos::RepoCache;
use super::sqlite_steps::{Prepared, SqliteSteps};
use super::{CommitStats, StoreError};
use crate::batch::Batch;

/// The most jobs run in one transaction.
pub(super) const MAX_GROUP: usize = 128;

/// A shared statement's work on the writer's connection (inside the
/// writer's transaction), answering with a value of the caller's type.
/// `Fn`: a failed group runs it again alone.
pub(super) type Work =
    Box<dyn Fn(&mut Connection) -> Result<Box<dyn Any + Send>, StoreError> + Send>;

/// Batches to commit, in order and all or none (a trial: exactly one),
/// and where their answer goes.
pub(super) struct CommitJob {
    pub(super) batches: Vec<Arc<Batch>>,
    pub(super) finish: Finish,
    pub(super) prepared: Arc<Prepared>,
    pub(super) log: Arc<ChangeLog>,
    /// The answer (one [`CommitStats`] per batch, in order), with the
    /// writer's references to the batches: the caller holds the others, so
    /// the rows are freed on its side, not on the writer thread (measured:
    /// freeing the rows was 4 % of the writer's time in an import).
    pub(super) reply: oneshot::Sender<(CommitAnswer, Vec<Arc<Batch>>)>,
}

/// What a [`CommitJob`] comes back with: one [`CommitStats`] per batch.
pub(super) type CommitAnswer = Result<Vec<CommitStats>, StoreError>;

impl CommitJob {
    fn answer(self, r: CommitAnswer) {
        drop(self.reply.send((r, self.batches)));
    }
}

/// Shared statements (`sqlite_exec.rs`) and where their answer goes.
pub(super) struct RunJob {
    pub(super) work: Work,
    /// Whether the work may write (then the per-DID cache is forgotten
    /// after it, and the checkpoint thread asked to run).
    pub(super) writes: bool,
    pub(super) reply: oneshot::Sender<Result<Box<dyn Any + Send>, StoreError>>,
}

pub(super) enum Job {
    Commit(CommitJob),
    Run(RunJob),
    Close(oneshot::Sender<()>),
}

impl Job {
    /// Whether the job may share a transaction with others: anything but
    /// a trial (which rolls its transaction back) and closing.
    pub(super) fn groups(&self) -> bool {
        match self {
            Job::Commit(c) => c.finish == Finish::Commit,
            Job::Run(_) => true,
            Job::Close(_) => false,
        }
    }

    /// Tells the caller the work could not start.
    pub(super) fn fail(self, e: StoreError) {
        match self {
            Job::Commit(c) => c.answer(Err(e)),
            Job::Run(r) => drop(r.reply.send(Err(e))),
            Job::Close(done) => drop(done.send(())),
        }
    }

    fn writes(&self) -> bool {
        match self {
            Job::Commit(c) => c.finish == Finish::Commit,
            Job::Run(r) => r.writes,
            Job::Close(_) => false,
        }
    }
}

/// One job's answer, before it is sent.
enum Answer {
    Stats(Vec<CommitStats>),
    Value(Box<dyn Any + Send>),
}

/// Runs `group` (a trial alone, or jobs that [`Job::groups`]), adds the
/// transactions it committed to `commits` and sends every answer; returns
/// whether a job that writes was committed.
pub(super) fn run(
    conn: &mut Connection,
    repos: &mut RepoCache,
    group: Vec<Job>,
    committed: &AtomicU64,
) -> bool {
    let trial = group.iter().any(|j| !j.groups());
    let mut commits = 0;
    let answers: Vec<Result<Answer, StoreError>> = match transaction(conn, repos, &group) {
        Ok(answers) => {
            commits += u64::from(!trial);
            answers.into_iter().map(Ok).collect()
        }
        Err(e) if group.len() == 1 => vec![Err(e)],
        Err(_) => {
            repos.clear();
            group
                .iter()
                .map(|job| {
                    let one = transaction(conn, repos, std::slice::from_ref(job));
                    commits += u64::from(one.is_ok());
                    one.map(|mut a| a.remove(0))
                })
                .collect()
        }
    };
    if trial || answers.iter().any(Result::is_err) {
        // What the cache learnt may have been rolled back.
        repos.clear();
    }
    committed.fetch_add(commits, Ordering::Relaxed);
    let mut wrote = false;
    for (job, answer) in group.into_iter().zip(answers) {
        wrote |= !trial && job.writes() && answer.is_ok();
        match (job, answer) {
            (Job::Commit(c), Ok(Answer::Stats(s))) => c.answer(Ok(s)),
            (Job::Run(r), Ok(Answer::Value(v))) => drop(r.reply.send(Ok(v))),
            (job, Err(e)) => job.fail(e),
            (job, Ok(_)) => unreachable!("each job is answered in kind: {}", job.writes()),
        }
    }
    wrote
}

/// One `BEGIN IMMEDIATE` transaction running `group` in order, committed
/// (or, for a trial, rolled back) at the end; the first error rolls all of
/// it back.
fn transaction(
    conn: &mut Connection,
    repos: &mut RepoCache,
    group: &[Job],
) -> Result<Vec<Answer>, StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let trial = group.iter().any(|j| !j.groups());
    match jobs(conn, repos, group) {
        Ok(answers) if !trial => match conn.execute_batch("COMMIT") {
            Ok(()) => Ok(answers),
            Err(e) => {
                let _ = rollback(conn);
                Err(e.into())
            }
        },
        Ok(answers) => {
            rollback(conn)?;
            Ok(answers)
        }
        Err(e) => {
            let _ = rollback(conn);
            Err(e)
        }
    }
}

fn jobs(
    conn: &mut Connection,
    repos: &mut RepoCache,
    group: &[Job],
) -> Result<Vec<Answer>, StoreError> {
    repos.begin(conn)?;
    let mut answers = Vec::with_capacity(group.len());
    for job in group {
        answers.push(match job {
            Job::Commit(c) => Answer::Stats(batches(conn, repos, c)?),
            Job::Run(r) => {
                let value = (r.work)(conn)?;
                // The statements may have changed `parity_repos` (an
                // identity, an account status) without moving this
                // connection's `data_version`: forget what was known.
                if r.writes {
                    repos.clear();
                }
                Answer::Value(value)
            }
            Job::Close(_) => unreachable!("closing is never grouped"),
        });
    }
    Ok(answers)
}

/// The batches of one job, in order, in the open transaction.
fn batches(
    conn: &Connection,
    repos: &mut RepoCache,
    job: &CommitJob,
) -> Result<Vec<CommitStats>, StoreError> {
    let mut stats = Vec::with_capacity(job.batches.len());
    for batch in &job.batches {
        let steps = SqliteSteps {
            tx: conn,
            prepared: &job.prepared,
            repos,
            log: &job.log,
        };
        stats.push(complete(commit::commit(steps, batch, job.finish))?);
    }
    Ok(stats)
}

fn rollback(conn: &Connection) -> rusqlite::Result<()> {
    if conn.is_autocommit() {
        // SQLite already rolled back (an I/O error, a full disk).
        return Ok(());
    }
    conn.execute_batch("ROLLBACK")
}

/// Runs a future that never waits (the SQLite steps do no IO through the
/// async runtime) to its end.
fn complete<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => unreachable!("the SQLite commit steps never wait"),
    }
}
