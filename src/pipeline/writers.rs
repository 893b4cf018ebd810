//! The writer side of `consume`: one or more writer tasks, each committing
//! its share of every batch, and the low watermark of what they committed.
//!
//! Owns: splitting each batch over the writers ([`dispatch`], through
//! `store::shard`), each writer's commit loop ([`write`]: retry on
//! transient errors, quarantine of refused records, counting the upserts
//! the store's guards refused as stale, the tombstone sweep on writer 0), and [`Watermark`], which tells `Obs` where every writer has
//! committed up to. Does not own the SQL of a share's checkpoint (the
//! commit walker writes the writer's position and the stream's low
//! watermark in the share's transaction) nor the processor.
//!
//! Invariants:
//! - a DID always goes to the same writer, and each writer commits its
//!   shares in batch order, so per-DID order is the stream's order;
//! - every writer gets a share of every batch (empty ones too), so the low
//!   watermark never stalls behind an idle writer;
//! - queues are bounded per writer ([`SHARE_QUEUE`]): a slow writer fills
//!   its queue, the dispatcher blocks on it, and back-pressure reaches the
//!   socket as with one writer; shares in flight are at most
//!   `writers × (SHARE_QUEUE + 1)`, about as many rows as four whole
//!   batches plus the one being committed (on SQLite, where a writer takes
//!   every queued share into one commit, `2 × SHARE_QUEUE + 1`: the queue
//!   fills again while that commit runs);
//! - the cursor gauge and `/health`'s lag report the low watermark, never
//!   one writer's position;
//! - on SQLite, the shares waiting in the queue when the writer comes back
//!   for more are committed in one transaction, all or none, in order
//!   ([`write`]); the queue's bound is also the group's.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::report_rejected;
use crate::batch::Batch;
use crate::mapper::Mutation;
use crate::obs::{DropReason, Escaped, Obs};
use crate::store::{CommitStats, Store, StoreError, shard};

/// Shares buffered per writer: one committing, four waiting. On SQLite the
/// waiting ones are also the most batches one transaction takes besides
/// the first (see [`write`]): at 1M bench-key events four gave 17.7–18.2k
/// rows/s against 13.8k with two, and eight no more than four with 70 MB
/// more RSS (BENCHMARKS.md, session 18).
pub const SHARE_QUEUE: usize = 4;
/// How often expired delete tombstones are removed.
const TOMBSTONE_SWEEP: Duration = Duration::from_secs(3_600);
/// Longest wait between retries of a batch after a transient DB error.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// One writer's share of batch number `seq` (1, 2, …).
#[derive(Debug)]
pub struct Share {
    pub seq: u64,
    /// Shared with SQLite's writer thread while it commits (no copy).
    pub batch: Arc<Batch>,
}

/// Where a whole batch leaves the stream once every writer committed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The batch's last stream cursor, if it moved one.
    pub cursor: Option<i64>,
    /// Event time of its last event, µs (0: unknown).
    pub time_us: i64,
}

/// The low watermark of several writers: the newest batch every writer has
/// committed its share of. Pure; shared by the writers behind a mutex.
#[derive(Debug)]
pub struct Watermark {
    /// Per writer: the last batch it committed (0: none yet).
    done: Vec<u64>,
    /// Batches dispatched and not yet committed by every writer, oldest
    /// first.
    pending: VecDeque<(u64, Progress)>,
}

impl Watermark {
    pub fn new(writers: usize) -> Watermark {
        Watermark {
            done: vec![0; writers.max(1)],
            pending: VecDeque::new(),
        }
    }

    /// Batch `seq` (increasing) was handed to the writers.
    pub fn dispatched(&mut self, seq: u64, progress: Progress) {
        self.pending.push_back((seq, progress));
    }

    /// `writer` committed its share of batch `seq`. Returns the progress of
    /// the newest batch every writer has now committed, if that moved
    /// (when it passes several batches at once, the newest cursor and event
    /// time among them).
    pub fn committed(&mut self, writer: usize, seq: u64) -> Option<Progress> {
        self.done[writer] = self.done[writer].max(seq);
        let low = *self.done.iter().min().expect("at least one writer");
        let mut moved: Option<Progress> = None;
        while let Some(&(s, p)) = self.pending.front() {
            if s > low {
                break;
            }
            self.pending.pop_front();
            moved = Some(match moved {
                Some(prev) => Progress {
                    cursor: p.cursor.or(prev.cursor),
                    time_us: if p.time_us > 0 {
                        p.time_us
                    } else {
                        prev.time_us
                    },
                },
                None => p,
            });
        }
        moved
    }

    /// Batches not yet committed by every writer.
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }
}

/// Hands each batch's shares to the writers, in order, until the processor
/// is done (then drops the writers' senders, so they drain and return) or
/// a writer is gone.
pub async fn dispatch(
    mut rx: mpsc::Receiver<Batch>,
    writers: Vec<mpsc::Sender<Share>>,
    watermark: Arc<Mutex<Watermark>>,
) {
    let n = writers.len() as u32;
    let mut seq = 0;
    while let Some(batch) = rx.recv().await {
        seq += 1;
        let progress = Progress {
            cursor: batch.checkpoint.last_cursor().map(|c| c.0),
            time_us: batch.last_time_us,
        };
        lock(&watermark).dispatched(seq, progress);
        for (tx, share) in writers.iter().zip(shard::split(batch, n)) {
            if tx
                .send(Share {
                    seq,
                    batch: Arc::new(share),
                })
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

fn lock(w: &Mutex<Watermark>) -> std::sync::MutexGuard<'_, Watermark> {
    // A writer that panicked while holding it left it consistent (every
    // method leaves the fields valid); keep going.
    w.lock().unwrap_or_else(|e| e.into_inner())
}

/// One writer's loop: commits its shares in order; retries transient
/// errors, leaves out what the database refuses (quarantine), stops on
/// anything else. Writer 0 also expires tombstones.
///
/// Where the store commits several batches in one transaction (SQLite), the
/// shares that queued up while the last commit ran are committed together:
/// a writer that has fallen behind pays one commit (the pages it touched
/// written to the WAL once, not once per batch) for all of them, and one
/// that keeps up still commits each batch as it comes. Should that
/// transaction fail, nothing of it was kept, and the shares are committed
/// one by one as usual (retry, quarantine).
pub async fn write(
    writer: usize,
    mut rx: mpsc::Receiver<Share>,
    store: Store,
    obs: Arc<Obs>,
    watermark: Arc<Mutex<Watermark>>,
    token: CancellationToken,
    retention: Duration,
) -> Result<(), StoreError> {
    let mut next_sweep = Instant::now();
    while let Some(first) = rx.recv().await {
        let mut shares = vec![first];
        if store.commits_together() {
            // At most SHARE_QUEUE more: the queue's bound is the group's.
            while let Ok(share) = rx.try_recv() {
                shares.push(share);
            }
        }
        let mut together = false;
        if shares.len() > 1 {
            let started = Instant::now();
            let batches: Vec<Arc<Batch>> = shares.iter().map(|s| s.batch.clone()).collect();
            match store.commit_all(batches).await {
                Ok(all) => {
                    // One transaction: each batch counts its share of it.
                    let took = started.elapsed() / shares.len() as u32;
                    for (share, stats) in shares.iter().zip(all) {
                        committed(writer, share, &stats, 0, took, &obs, &watermark);
                    }
                    together = true;
                }
                Err(e) => tracing::debug!(
                    writer,
                    batches = shares.len(),
                    error = %Escaped(&e),
                    "Batches committed together failed; committing them one by one."
                ),
            }
        }
        if !together {
            for share in &shares {
                let Some((stats, rejected, took)) =
                    commit_one(writer, &share.batch, &mut rx, &store, &obs, &token).await?
                else {
                    return Ok(());
                };
                committed(writer, share, &stats, rejected, took, &obs, &watermark);
            }
        }
        if writer == 0 && Instant::now() >= next_sweep {
            next_sweep = Instant::now() + TOMBSTONE_SWEEP;
            match store.expire_tombstones(retention).await {
                Ok(n) if n > 0 => tracing::info!(expired = n, "Expired delete tombstones."),
                Ok(_) => {}
                Err(e) if e.is_transient() => {
                    obs.record_db_error(&e);
                    tracing::warn!(error = %Escaped(&e), "Tombstone sweep failed; will retry.")
                }
                Err(e) => {
                    obs.record_db_error(&e);
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// Commits one batch: retries transient errors, quarantines what the
/// database refuses. Returns its stats, the records left out and how long
/// the successful commit took; `None` when shutting down while the database
/// is away (the batch is not committed, its events replay on restart).
async fn commit_one(
    writer: usize,
    batch: &Arc<Batch>,
    rx: &mut mpsc::Receiver<Share>,
    store: &Store,
    obs: &Obs,
    token: &CancellationToken,
) -> Result<Option<(CommitStats, u64, Duration)>, StoreError> {
    let mut delay = Duration::from_millis(100);
    let mut rejected = 0;
    loop {
        let started = Instant::now();
        let result = match store.commit_shared(batch).await {
            // The database refused some record: commit the rest.
            Err(e) if e.is_rejection() => {
                obs.record_db_error(&e);
                store.quarantine(batch, e).await.map(|q| {
                    report_rejected(&q, obs);
                    rejected = q.rejected.len() as u64;
                    q.stats
                })
            }
            r => r,
        };
        if let Err(e) = &result {
            obs.record_db_error(e);
        }
        match result {
            Ok(s) => return Ok(Some((s, rejected, started.elapsed()))),
            Err(e) if e.is_transient() => {
                obs.set_database_reachable(false);
                tracing::warn!(writer, error = %Escaped(&e), retry_in_ms = delay.as_millis() as u64, "Commit failed; retrying.");
                tokio::select! {
                    // Shutting down while the database is away: the batch
                    // is not committed, so its events replay on restart.
                    _ = token.cancelled() => if rx.is_closed() || token.is_cancelled() {
                        tracing::warn!(writer, "Database unavailable at shutdown; the last batch will be replayed on restart.");
                        return Ok(None);
                    },
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
            Err(e) => {
                tracing::error!(writer, error = %Escaped(&e), "Commit failed; stopping.");
                return Err(e);
            }
        }
    }
}

/// What follows a share's commit: metrics, stale counts and the low
/// watermark.
fn committed(
    writer: usize,
    share: &Share,
    stats: &CommitStats,
    rejected: u64,
    took: Duration,
    obs: &Obs,
    watermark: &Mutex<Watermark>,
) {
    let batch = &share.batch;
    obs.on_commit(stats, batch.events, took, None, 0);
    // Upserts the store's guards refused (a rev not newer than the
    // stored one: a replay, or the echo of a row `parity publish`
    // already wrote back) are stale, like those the batcher dropped;
    // so are deletes whose tombstone was already at their rev or newer
    // (the echo of a delete `parity publish` wrote back).
    let planned = batch
        .mutations
        .iter()
        .filter(|m| matches!(m, Mutation::Upsert(_)))
        .count() as u64;
    let refused = planned.saturating_sub(stats.upserted_total() + rejected) + stats.stale_deletes;
    for _ in 0..refused {
        obs.record_drop(DropReason::StaleRev);
    }
    if let Some(p) = lock(watermark).committed(writer, share.seq) {
        obs.on_checkpoint(p.cursor, p.time_us);
    }
}

#[cfg(test)]
#[path = "writers_tests.rs"]
mod loop_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn p(cursor: i64) -> Progress {
        Progress {
            cursor: Some(cursor),
            time_us: cursor * 10,
        }
    }

    /// The watermark is the newest batch every writer committed: a writer
    /// running ahead moves nothing; the slowest one moves it over every
    /// batch the others already passed.
    #[test]
    fn the_watermark_follows_the_slowest_writer() {
        let mut w = Watermark::new(3);
        for s in 1..=4 {
            w.dispatched(s, p(100 + s as i64));
        }
        assert_eq!(w.committed(0, 1), None);
        assert_eq!(w.committed(0, 2), None);
        assert_eq!(w.committed(2, 3), None, "writer 1 has committed nothing");
        assert_eq!(w.committed(1, 1), Some(p(101)));
        assert_eq!(w.committed(1, 3), Some(p(102)), "writer 0 is at 2");
        assert_eq!(w.committed(0, 4), Some(p(103)));
        assert_eq!(w.in_flight(), 1);
        assert_eq!(w.committed(1, 4), None);
        assert_eq!(w.committed(2, 4), Some(p(104)));
        assert_eq!(w.in_flight(), 0);
    }

    /// A batch that moved no cursor reports none (`Obs` keeps the last
    /// one), and a duplicate report moves nothing.
    #[test]
    fn a_batch_without_a_cursor_reports_none() {
        let mut w = Watermark::new(1);
        let none = Progress {
            cursor: None,
            time_us: 0,
        };
        w.dispatched(1, p(5));
        w.dispatched(2, none);
        assert_eq!(w.committed(0, 1), Some(p(5)));
        assert_eq!(w.committed(0, 2), Some(none));
        assert_eq!(w.committed(0, 2), None);
    }
}
