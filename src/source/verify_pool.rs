//! The verification stage's checks, off its task: each commit's signature
//! (and, `full`, MST proof) is checked on Tokio's blocking pool, at most
//! `workers` batches at once, so `source.verify` uses every core while the
//! stage itself only orders frames.
//!
//! Owns: the queue of checks waiting for a worker, cutting it into batches
//! (one blocking task per batch keeps the hand-off cost off each 50 µs
//! verification), and handing back each commit's verdict with its proof.
//! Does not own: the verdict's consequences, the order frames leave in
//! (both `source::verify`), the checks themselves (`Proof::check`).
//!
//! Bounded: at most `workers` batches of at most [`MAX_BATCH`] commits run;
//! the rest wait here, and the stage's window (`verify::WINDOW` events)
//! bounds how many can wait.

use std::collections::VecDeque;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::task::JoinHandle;

use crate::source::codecs::repo::PublicKey;
use crate::source::formats::firehose::{Proof, ProofError};

/// Commits checked by one blocking task at most.
pub const MAX_BATCH: usize = 32;

/// What checks a commit: [`Proof::check`] (tests substitute their own).
pub type CheckFn = fn(&Proof, &PublicKey, bool) -> Result<(), ProofError>;

/// One commit to check: group number `n` of the stage, with `key`;
/// `fresh`: the key was just fetched past the cache.
pub(super) struct Job {
    pub n: u64,
    pub proof: Box<Proof>,
    pub key: PublicKey,
    pub fresh: bool,
}

/// A checked commit, its proof handed back.
pub(super) struct Checked {
    pub n: u64,
    pub proof: Box<Proof>,
    pub fresh: bool,
    pub result: Result<(), ProofError>,
}

pub(super) struct Pool {
    workers: usize,
    full: bool,
    check: CheckFn,
    queued: VecDeque<Job>,
    running: FuturesUnordered<JoinHandle<Vec<Checked>>>,
}

impl Pool {
    pub fn new(workers: usize, full: bool, check: CheckFn) -> Pool {
        Pool {
            workers: workers.max(1),
            full,
            check,
            queued: VecDeque::new(),
            running: FuturesUnordered::new(),
        }
    }

    pub fn push(&mut self, job: Job) {
        self.queued.push_back(job);
    }

    /// Starts batches while workers are free: the queue is spread evenly
    /// over the free workers, [`MAX_BATCH`] each at most.
    pub fn dispatch(&mut self) {
        while self.running.len() < self.workers && !self.queued.is_empty() {
            let free = self.workers - self.running.len();
            let take = self.queued.len().div_ceil(free).min(MAX_BATCH);
            let batch: Vec<Job> = self.queued.drain(..take).collect();
            let (check, full) = (self.check, self.full);
            self.running.push(tokio::task::spawn_blocking(move || {
                batch
                    .into_iter()
                    .map(|j| Checked {
                        result: check(&j.proof, &j.key, full),
                        n: j.n,
                        proof: j.proof,
                        fresh: j.fresh,
                    })
                    .collect()
            }));
        }
    }

    /// True while a batch runs (then [`Pool::next`] will yield).
    pub fn busy(&self) -> bool {
        !self.running.is_empty()
    }

    /// The next finished batch. A check that panicked panics here (checks
    /// of hostile input never panic: `Proof::check`'s property tests).
    pub async fn next(&mut self) -> Vec<Checked> {
        match self.running.next().await {
            Some(Ok(done)) => done,
            Some(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Cancelled: the runtime is shutting down, and the stage with it.
            Some(Err(_)) | None => Vec::new(),
        }
    }
}

/// Workers by default: one per core the process may use.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
