//! Whole-repo import of repos the database holds nothing of, on
//! PostgreSQL: each verified snapshot whose collections fit in one page
//! (`import.getrepo_page_size`) goes to a few group writers, which write
//! the snapshots queued at that moment in one transaction
//! ([`Store::commit_fresh`]: rows by `COPY`, states and floors one
//! statement for all), instead of claiming and writing each collection as
//! a pair.
//!
//! Owns: which snapshots may take this path, grouping them (a writer takes
//! what is queued when it is free, never waits for more), and reporting
//! a written repo as its pairs would have been (counts, metrics, progress
//! bars, one commit per group for `/metrics`). A repo the store finds is
//! not fresh (or every repo of a group that failed) returns `None` and is
//! imported pair by pair, as before, so every guard, lease and retry of
//! that path still applies to it.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Mutex, mpsc, oneshot};

use super::discover::ALL_COLLECTIONS;
use super::job::{self, Counts};
use super::page::{self, PageOf};
use super::progress::DidBar;
use super::runner::{Runner, Work};
use super::snapshot::Snapshot;
use super::summary::{DidOutcome, DidStatus};
use crate::event::Nsid;
use crate::mapper::Mutation;
use crate::obs::{Obs, names};
use crate::store::{CommitStats, FreshRepo, Store};

/// Most repos in one group's transaction.
const GROUP_REPOS: usize = 32;
/// Most rows in one group's transaction (a group stops growing once past
/// it): bounds the `COPY` text held and the transaction's length.
const GROUP_ROWS: usize = 20_000;

type Request = (FreshRepo, oneshot::Sender<bool>);

/// The group writers of one run.
pub struct Fresh {
    queue: mpsc::UnboundedSender<Request>,
}

impl Fresh {
    /// Starts `writers` group writers on `store`, or none where the store
    /// cannot write fresh repos ([`Store::writes_fresh`]).
    pub fn start(store: &Store, obs: &Arc<Obs>, writers: usize) -> Option<Fresh> {
        if !store.writes_fresh() {
            return None;
        }
        let (queue, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..writers.max(1) {
            tokio::spawn(write_groups(store.clone(), obs.clone(), rx.clone()));
        }
        Some(Fresh { queue })
    }

    /// Writes `repo` with the next group: whether it was written.
    async fn write(&self, repo: FreshRepo) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.queue.send((repo, tx)).is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }
}

/// One group writer: takes what is queued (at least one repo), writes it,
/// answers each repo; ends when the run's senders are gone.
async fn write_groups(
    store: Store,
    obs: Arc<Obs>,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Request>>>,
) {
    loop {
        let mut group: Vec<Request> = Vec::new();
        {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            let mut rows = rows_of(&first.0);
            group.push(first);
            while group.len() < GROUP_REPOS && rows < GROUP_ROWS {
                let Ok(next) = rx.try_recv() else { break };
                rows += rows_of(&next.0);
                group.push(next);
            }
        }
        let repos: Vec<&FreshRepo> = group.iter().map(|(r, _)| r).collect();
        let started = Instant::now();
        let (written, stats) = match store.commit_fresh(&repos).await {
            Ok(w) => w,
            Err(e) => {
                tracing::debug!(error = %e, repos = repos.len(), "import: a group of fresh repos failed; writing them page by page");
                (vec![false; repos.len()], CommitStats::default())
            }
        };
        if written.iter().any(|w| *w) {
            let events: usize = repos
                .iter()
                .zip(&written)
                .filter(|(_, w)| **w)
                .flat_map(|(r, _)| &r.collections)
                .map(|c| {
                    let (rows, failed) = c.counts();
                    (rows + failed) as usize
                })
                .sum();
            obs.on_commit(&stats, events, started.elapsed(), None, 0);
        }
        drop(repos);
        for ((_, reply), w) in group.into_iter().zip(written) {
            let _ = reply.send(w);
        }
    }
}

fn rows_of(repo: &FreshRepo) -> usize {
    repo.collections.iter().map(|c| c.counts().0 as usize).sum()
}

impl Runner {
    /// Imports `snap` as a fresh repo when it may take that path and the
    /// store finds it fresh; `None`: import it pair by pair.
    pub(super) async fn fresh(
        &self,
        snap: &Snapshot,
        did: &crate::event::Did,
        work: &Work,
        bar: &DidBar,
    ) -> Option<DidOutcome> {
        let fresh = self.fresh.as_ref()?;
        let (repo, counts) = self.fresh_repo(snap, did, work)?;
        let names: Vec<Nsid> = repo
            .collections
            .iter()
            .map(|c| c.collection().clone())
            .collect();
        if !fresh.write(repo).await {
            return None;
        }
        metrics::counter!(names::IMPORT_FRESH_REPOS).increment(1);
        let mut total = Counts::default();
        for (name, c) in names.iter().zip(counts) {
            job::record_metrics(c);
            bar.pair(name.as_str()).page(c);
            total += c;
        }
        Some(DidOutcome {
            did: did.to_string(),
            counts: total,
            status: DidStatus::Completed,
        })
    }

    /// `snap` mapped as one [`FreshRepo`], with each collection's counts
    /// as its pair would report them; `None` when it must go pair by pair:
    /// `resume`, a collection larger than one page, one no mapper writes,
    /// none to write.
    fn fresh_repo(
        &self,
        snap: &Snapshot,
        did: &crate::event::Did,
        work: &Work,
    ) -> Option<(FreshRepo, Vec<Counts>)> {
        let ctx = &self.ctx;
        let Work::Import { collections, .. } = work else {
            return None;
        };
        let names: Vec<Nsid> = match collections {
            Some(c) => c.clone(),
            None => snap
                .collections
                .keys()
                .filter(|c| ctx.registry.handles(c))
                .filter_map(|c| Nsid::parse(c))
                .collect(),
        };
        if names.is_empty() || names.iter().any(|n| n.as_str() == ALL_COLLECTIONS) {
            return None;
        }
        let empty = Default::default();
        let mut out = Vec::with_capacity(names.len());
        let mut counts = Vec::with_capacity(names.len());
        for nsid in names {
            let table = ctx.registry.table_of(nsid.as_str())?;
            let collected = snap.collection(nsid.as_str()).unwrap_or(&empty);
            if collected.records.len() > ctx.getrepo_page_size.max(1) as usize {
                return None;
            }
            let of = PageOf {
                did,
                collection: &nsid,
                rev: &snap.rev,
                state_id: 0,
            };
            let mapped = page::map(
                &of,
                &ctx.registry,
                &ctx.lease,
                collected.records.iter().map(|(_, l)| l),
                None,
            );
            let mut rows = Vec::with_capacity(mapped.batch.mutations.len());
            for m in mapped.batch.mutations {
                match m {
                    Mutation::Upsert(r) if r.table == table => rows.push(r),
                    _ => return None,
                }
            }
            counts.push(Counts {
                synced: rows.len() as u64,
                skipped: 0,
                failed: mapped.failed + collected.failed,
            });
            let complete = mapped.failed + collected.failed == 0;
            out.push(
                ctx.store
                    .fresh_collection(nsid, table, &rows, mapped.failed, complete)?,
            );
        }
        let repo = FreshRepo {
            did: did.clone(),
            rev: snap.rev.clone(),
            collections: out,
        };
        Some((repo, counts))
    }
}
