//! Runs `parity import` and `parity resume`: every input (DID or handle)
//! through [`Runner::account`], `concurrency` DIDs fetched at a time.
//!
//! Owns: the fan-out over inputs (up to [`WRITE_AHEAD`] × `concurrency`
//! DIDs in flight: see `slots`), the `parity_import_dids` gauges, and
//! folding each DID's outcome into the run [`Summary`]. Does not own one
//! account's flow (`account`), claiming and running a pair (`pair`),
//! leases (`lease`), paging (`job`) or HTTP (`xrpc`).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::config::ImportMethod;
use super::fresh::Fresh;
use super::identity::Resolver;
use super::job::Ctx;
use super::progress::Progress;
use super::slots::{HELD_BYTES, Slots, WRITE_AHEAD};
use super::summary::{DidOutcome, DidStatus, Summary};
use crate::event::Nsid;
use crate::obs::names;

/// Group writers of fresh repos (`fresh`): two keep a transaction open
/// while the other's rows are encoded, on the two cores this was measured
/// on (BENCHMARKS.md, issue 15 b, session 29).
const FRESH_WRITERS: usize = 2;

/// What to do with each DID.
#[derive(Debug, Clone)]
pub enum Work {
    /// `parity import`: these collections (`None`: every mapped collection
    /// the repo has), re-importing completed ones if `force`.
    Import {
        collections: Option<Vec<Nsid>>,
        force: bool,
    },
    /// `parity resume`: whatever is not completed.
    Resume,
}

/// Shared state of one run (cheap to clone: each DID's task holds one).
#[derive(Clone)]
pub struct Runner {
    pub ctx: Arc<Ctx>,
    pub resolver: Arc<Resolver>,
    pub progress: Progress,
    pub concurrency: usize,
    /// Fetching slots and room for snapshots waiting for the writer.
    pub(super) slots: Arc<Slots>,
    /// The group writers of fresh repos (PostgreSQL; `fresh`).
    pub(super) fresh: Option<Arc<Fresh>>,
    gauges: Arc<Gauges>,
}

/// DIDs by state, published as `parity_import_dids{status}`.
#[derive(Default)]
struct Gauges {
    pending: AtomicI64,
    in_progress: AtomicI64,
    completed: AtomicI64,
    failed: AtomicI64,
}

impl Gauges {
    fn publish(&self) {
        for (status, v) in [
            ("pending", &self.pending),
            ("in_progress", &self.in_progress),
            ("completed", &self.completed),
            ("failed", &self.failed),
        ] {
            metrics::gauge!(names::IMPORT_DIDS, "status" => status).set(v.load(Relaxed) as f64);
        }
    }
}

impl Runner {
    pub fn new(
        ctx: Arc<Ctx>,
        resolver: Arc<Resolver>,
        progress: Progress,
        concurrency: usize,
    ) -> Runner {
        let fresh = match ctx.method {
            ImportMethod::Listrecords => None,
            _ => Fresh::start(&ctx.store, &ctx.obs, FRESH_WRITERS.min(concurrency.max(1))),
        };
        Runner {
            ctx,
            resolver,
            progress,
            concurrency: concurrency.max(1),
            slots: Arc::new(Slots::new(concurrency, HELD_BYTES)),
            fresh: fresh.map(Arc::new),
            gauges: Arc::new(Gauges::default()),
        }
    }

    /// DIDs in flight at once: fetching, or verified and waiting for the
    /// writer (see the module doc).
    pub fn in_flight(&self) -> usize {
        self.concurrency.saturating_mul(WRITE_AHEAD)
    }

    /// Runs `work` for every input (DID or handle), `concurrency` fetched
    /// at a time. `inputs` is pulled as slots free up (resume pages it
    /// from the store); `total` is how many it will yield, for the gauges.
    pub async fn run(
        &self,
        inputs: impl futures_util::Stream<Item = String>,
        total: u64,
        work: Work,
        token: &CancellationToken,
    ) -> Summary {
        self.gauges.pending.store(total as i64, Relaxed);
        self.gauges.publish();
        let mut summary = Summary::default();
        let results = inputs
            .map(|input| {
                let (runner, work, token) = (self.clone(), work.clone(), token.clone());
                spawned(async move { runner.one(&input, &work, &token).await })
            })
            .buffer_unordered(self.in_flight());
        let mut results = std::pin::pin!(results);
        while let Some(o) = results.next().await {
            o.report(&self.progress);
            summary.add(&o);
        }
        summary
    }

    /// `n` more DIDs wait (the queue of `import --all` grows as it runs).
    pub(super) fn add_pending(&self, n: u64) {
        self.gauges.pending.fetch_add(n as i64, Relaxed);
        self.gauges.publish();
    }

    /// Runs `work` for one input, keeping the gauges.
    pub(super) async fn one(
        &self,
        input: &str,
        work: &Work,
        token: &CancellationToken,
    ) -> DidOutcome {
        let Some(fetching) = self.slots.fetch(token).await else {
            return DidOutcome::interrupted(input);
        };
        let g = &self.gauges;
        g.pending.fetch_sub(1, Relaxed);
        g.in_progress.fetch_add(1, Relaxed);
        g.publish();
        let bar = self.progress.did(input);
        let out = self.account(input, work, &bar, fetching, token).await;
        bar.finish();
        g.in_progress.fetch_sub(1, Relaxed);
        match out.status {
            DidStatus::Completed | DidStatus::Skipped(_) | DidStatus::Gone(_) => {
                g.completed.fetch_add(1, Relaxed)
            }
            DidStatus::Failed(_) | DidStatus::Interrupted => g.failed.fetch_add(1, Relaxed),
        };
        g.publish();
        out
    }
}

/// Runs `fut` as its own task and waits for it. Each DID of a run gets
/// one, so the DIDs in flight spread over the runtime's worker threads,
/// and one DID's CPU work (parsing and verifying a whole repository, a few
/// milliseconds) never leaves another DID's open transaction waiting to be
/// polled: polled together inside one `buffer_unordered`, a PostgreSQL
/// import spent most of its time "idle in transaction" and used under half
/// a core. Dropping the returned future aborts the task; a panic in it is
/// resumed here.
pub(super) async fn spawned<T: Send + 'static>(
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    let mut task = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(fut));
    match (&mut task).await {
        Ok(out) => out,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("an import task was cancelled from outside: {e}"),
    }
}
