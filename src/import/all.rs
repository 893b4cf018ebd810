//! `parity import --all [--collection NSID…] [--relay URL]`: every active
//! repository a relay lists, imported through the same per-DID flow as
//! `parity import DID…`.
//!
//! A run is the command's relay and collections (its key in
//! `parity_import_listings` / `parity_import_queue`). Two halves run side by
//! side: the [`Lister`] pages through the relay (listReposByCollection per
//! given collection, else listRepos) and queues each active DID as
//! `pending`, saving the cursor with each page; `concurrency` workers claim
//! queued DIDs under a lease and import them (the per-PDS limiter of `xrpc`
//! paces each host, whatever the mix of hosts), writing only the given
//! collections when there are some. Several processes running the same
//! command on one database share the listing (one lists at a time) and the
//! queue (`FOR UPDATE SKIP LOCKED`). The same command run again continues:
//! the listing from its cursor, the queue from its pending DIDs; completed
//! DIDs are not fetched again. `--force` lists from the start again and
//! imports every listed DID again.
//!
//! Owns: the run key, its checks (relay URL, collections), the queue's
//! consumers and their leases, and the run's totals. Does not own listing
//! (`listing`), one DID (`account`) or SQL (`store::import_queue`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::config::relay_base;
use super::lease::owner_is_dead;
use super::listing::{Listed, Lister};
use super::progress::Progress;
use super::runner::{Runner, Work};
use super::summary::{DidStatus, RelayTotals, Summary};
use super::{ImportError, ImportOptions, Settings};
use crate::store::{QueueOutcome, QueuedDid, Store};

/// The key of a run: its relay and its collections (`*`: all).
pub fn run_key(relay: &str, collections: &[String]) -> String {
    if collections.is_empty() {
        format!("{relay} *")
    } else {
        format!("{relay} {}", collections.join(","))
    }
}

/// Longest wait for new queued DIDs before looking again (pages committed
/// by another process wake nobody here).
const POLL_QUEUE: Duration = Duration::from_millis(500);

/// The most queued DIDs claimed in one write (at most the runner's DIDs
/// in flight).
const MAX_CLAIM_BATCH: usize = 64;

/// `parity import --all`.
pub async fn import_all(
    settings: Settings,
    opts: ImportOptions,
    token: CancellationToken,
) -> Result<Summary, ImportError> {
    if opts.concurrency == Some(0) {
        return Err(ImportError::Invalid(
            "--concurrency must be at least 1".into(),
        ));
    }
    let raw_relay = opts
        .relay
        .clone()
        .unwrap_or_else(|| settings.import.relay.clone());
    let relay = relay_base(&raw_relay, settings.identity.allow_private_addresses)
        .map_err(|e| ImportError::Invalid(format!("--relay / import.relay: {e}")))?;
    let super::Session {
        store,
        registry,
        ops,
        mut import,
        identity,
        log_every,
    } = super::start(settings, opts.concurrency).await?;
    if let Some(m) = opts.method {
        import.method = m;
    }
    let collections = super::parse_collections(&registry, &opts.collections)?;
    let mut names: Vec<String> = collections
        .iter()
        .flatten()
        .map(|c| c.as_str().to_owned())
        .collect();
    names.sort();
    names.dedup();
    let run = run_key(&relay, &names);
    let listings = if names.is_empty() {
        vec!["*".to_owned()]
    } else {
        names.clone()
    };
    store.open_listings(&run, &listings, opts.force).await?;
    let since = Utc::now();
    reap_dead_owners(&store, &run).await?;
    let before = store.run_counts(&run).await?;
    let waiting = (before.pending + before.in_progress + before.failed).max(0) as u64;
    let progress = Progress::for_all(opts.progress, waiting, log_every);
    let runner = super::runner(
        &import,
        &identity,
        store.clone(),
        registry,
        progress.clone(),
        opts.concurrency,
        ops.obs.clone(),
    )?;
    runner.add_pending(waiting);
    let queued = Arc::new(Notify::new());
    let lister = Lister {
        ctx: runner.ctx.clone(),
        relay,
        run: run.clone(),
        listings,
        since,
        requeue: opts.force,
        progress: progress.clone(),
        queued: queued.clone(),
    };
    let logger = progress.spawn_logger(token.child_token());
    let renewer = spawn_renewer(&runner, token.child_token());
    let work = Work::Import {
        collections,
        force: opts.force,
    };
    let listing_done = CancellationToken::new();
    let list = async {
        let out = lister.run(&token).await;
        listing_done.cancel();
        out
    };
    let drain = drain(&runner, &run, since, &work, &queued, &listing_done, &token);
    let (listed, mut summary): (Listed, Summary) = tokio::join!(list, drain);
    renewer.abort();
    if let Some(l) = logger {
        l.abort();
    }
    progress.finish();
    let after = store.run_counts(&run).await?;
    summary.relay = Some(RelayTotals {
        listed: after.listed,
        queued: after.queued,
        inactive: after.inactive,
        malformed: after.malformed,
        left: after.pending + after.in_progress + after.failed,
        complete: after.listings_open == 0,
        failures: listed.failures,
    });
    if listed.interrupted {
        summary.interrupted = summary.interrupted.max(1);
    }
    store.close().await;
    ops.stop().await;
    Ok(summary)
}

/// Frees the leases dead processes of this host left on the run.
async fn reap_dead_owners(store: &Store, run: &str) -> Result<(), ImportError> {
    for owner in store.run_lease_owners(run).await? {
        if owner_is_dead(&owner) {
            tracing::info!(owner = %owner, "taking over the import --all work of a process that is gone");
            store.expire_run_leases(run, &owner).await?;
        }
    }
    Ok(())
}

/// Renews this process's leases on listings and queued DIDs every third
/// of the lease.
fn spawn_renewer(runner: &Runner, token: CancellationToken) -> tokio::task::JoinHandle<()> {
    let ctx = runner.ctx.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(ctx.lease.renew_every()) => {}
                _ = token.cancelled() => return,
            }
            if let Err(e) = ctx
                .store
                .renew_run_leases(ctx.lease.owner(), ctx.lease.until())
                .await
            {
                tracing::warn!(error = %e, "cannot renew the import --all leases");
            }
        }
    })
}

/// Claims queued DIDs and imports them, `concurrency` fetched at a time
/// (more in flight: see `runner`), until the listing is over and nothing
/// claimable is left (or the run is cancelled).
async fn drain(
    runner: &Runner,
    run: &str,
    since: chrono::DateTime<Utc>,
    work: &Work,
    queued: &Notify,
    listing_done: &CancellationToken,
    token: &CancellationToken,
) -> Summary {
    let store = runner.ctx.store.clone();
    // DIDs are claimed as many at a time as may be in flight: one write
    // per batch, not one per DID made one after another (on SQLite each
    // waits for the write lock). Measured on (b) of BENCHMARKS.md: within
    // the noise.
    let batch = runner.in_flight().clamp(1, MAX_CLAIM_BATCH);
    let claims = futures_util::stream::unfold(VecDeque::new(), move |mut claimed| {
        let store = store.clone();
        async move {
            loop {
                let lease = &runner.ctx.lease;
                if token.is_cancelled() {
                    release(&store, claimed, lease.owner()).await;
                    return None;
                }
                if let Some(q) = claimed.pop_front() {
                    return Some((q, claimed));
                }
                let finished = listing_done.is_cancelled();
                match store
                    .claim_queued(run, lease.owner(), lease.until(), since, batch)
                    .await
                {
                    Ok(b) if !b.is_empty() => {
                        claimed.extend(b);
                        continue;
                    }
                    Ok(_) if finished => return None,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot claim queued DIDs; trying again");
                    }
                }
                tokio::select! {
                    _ = queued.notified() => {}
                    _ = listing_done.cancelled(), if !finished => {}
                    _ = tokio::time::sleep(POLL_QUEUE) => {}
                    _ = token.cancelled() => return None,
                }
            }
        }
    });
    // Each DID's end is recorded inside its own future. Awaiting the store
    // in the loop body instead would leave the other futures in flight
    // unpolled meanwhile, some holding a pooled connection (or first in
    // the pool's queue for one) that they give back only when polled: with
    // `--concurrency` above `database.max_connections` that wait never
    // ended (issue 15's hang). The loop body must not await.
    let results = claims
        .map(|q: QueuedDid| {
            let (runner, work, token) = (runner.clone(), work.clone(), token.clone());
            super::runner::spawned(async move {
                let out = runner.one(&q.did, &work, &token).await;
                finish(&runner, &q, &out.status).await;
                out
            })
        })
        .buffer_unordered(runner.in_flight());
    let mut results = std::pin::pin!(results);
    let mut summary = Summary::default();
    while let Some(out) = results.next().await {
        out.report(&runner.progress);
        summary.add(&out);
    }
    summary
}

/// Puts back DIDs claimed but not started (the run was interrupted), so
/// another importer need not wait for their leases to expire.
async fn release(store: &Store, claimed: VecDeque<QueuedDid>, owner: &str) {
    for q in claimed {
        if let Err(e) = store.release_queued(q.id, owner).await {
            tracing::warn!(did = ?q.did, error = %e, "cannot put back a claimed DID");
        }
    }
}

/// Records how one queued DID ended.
async fn finish(runner: &Runner, q: &QueuedDid, status: &DidStatus) {
    let store = &runner.ctx.store;
    let owner = runner.ctx.lease.owner();
    let r = match status {
        DidStatus::Completed | DidStatus::Skipped(_) | DidStatus::Gone(_) => {
            let note = match status {
                DidStatus::Gone(why) => Some(why.as_str()),
                _ => None,
            };
            store
                .finish_queued(q.id, owner, QueueOutcome::Completed, note)
                .await
        }
        DidStatus::Failed(e) => {
            runner.progress.did_failed();
            store
                .finish_queued(q.id, owner, QueueOutcome::Failed, Some(&e.to_string()))
                .await
        }
        DidStatus::Interrupted => store.release_queued(q.id, owner).await,
    };
    if let Err(e) = r {
        tracing::warn!(did = ?q.did, error = %e, "cannot record how a queued DID ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_keyed_by_relay_and_collections() {
        assert_eq!(
            run_key("https://bsky.network", &[]),
            "https://bsky.network *"
        );
        assert_eq!(
            run_key(
                "https://bsky.network",
                &["app.bsky.feed.like".into(), "app.bsky.feed.post".into()]
            ),
            "https://bsky.network app.bsky.feed.like,app.bsky.feed.post"
        );
    }
}
