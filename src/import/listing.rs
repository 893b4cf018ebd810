//! The listing half of `parity import --all`: page through the relay and
//! queue every active repository, one committed page at a time.
//!
//! Owns: the listings of one run in turn (`*`: listRepos; else one
//! listReposByCollection per collection), each claimed under a lease so two
//! processes on one database never list at once (the other one drains the
//! queue, takes the listing over when its holder's lease expires, or at
//! once when the holder is a dead process of this host). Each page's DIDs,
//! cursor and counters commit in one transaction, so a crash (even
//! `kill -9`) loses at most the page in flight and the same command run
//! again continues from the saved cursor. Does not own reading a page
//! (`relay`), the queue's consumers (`all`) or SQL (`store::import_queue`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::job::Ctx;
use super::lease::owner_is_dead;
use super::progress::Progress;
use super::relay::{self, RawPage};
use super::xrpc::XrpcError;
use crate::obs::names;
use crate::store::ListedPage;

/// How often a process waiting on another's listing looks again.
const WAIT_FOR_OTHERS: Duration = Duration::from_millis(500);

/// What the listing side of a run needs.
pub struct Lister {
    pub ctx: Arc<Ctx>,
    /// The relay's base URL (checked: `config::relay_base`).
    pub relay: String,
    /// The run key (relay + collections).
    pub run: String,
    /// `*`, or the collections to list with listReposByCollection.
    pub listings: Vec<String>,
    /// When this run started: listings that failed since are not retried.
    pub since: DateTime<Utc>,
    /// `--force`: DIDs listed again are queued again.
    pub requeue: bool,
    pub progress: Progress,
    /// Woken after every committed page (the queue has new DIDs).
    pub queued: Arc<Notify>,
}

/// How a run's listings ended, as far as this process saw.
#[derive(Debug, Default, Clone)]
pub struct Listed {
    /// `collection: error` of each listing that failed in this run.
    pub failures: Vec<String>,
    /// The run was interrupted before every listing completed.
    pub interrupted: bool,
}

/// How one claimed listing ended.
enum Ended {
    Completed,
    Failed(String),
    /// Another process holds it now, or the run is being cancelled.
    Stopped,
}

impl Lister {
    /// Lists until every listing of the run is completed (by this process
    /// or another), failed in this run, or the run is cancelled.
    pub async fn run(&self, token: &CancellationToken) -> Listed {
        let mut out = Listed::default();
        for collection in &self.listings {
            loop {
                if token.is_cancelled() {
                    out.interrupted = true;
                    return out;
                }
                match self.one(collection, token).await {
                    Ok(Some(Ended::Completed)) => break,
                    Ok(Some(Ended::Failed(e))) => {
                        out.failures.push(format!("{collection}: {e}"));
                        break;
                    }
                    Ok(Some(Ended::Stopped)) | Ok(None) => {}
                    Err(e) => {
                        out.failures.push(format!("{collection}: {e}"));
                        break;
                    }
                }
                // Not claimable (or lost): completed, failed since this run
                // started (a failed listing of an earlier run is claimable),
                // or another live process's; then look again shortly.
                match self.status(collection).await {
                    Ok(Some(s)) if s == "completed" => break,
                    Ok(Some(s)) if s == "failed" => {
                        out.failures.push(format!(
                            "{collection}: the listing failed in another process of this run"
                        ));
                        break;
                    }
                    _ => {}
                }
                tokio::select! {
                    _ = tokio::time::sleep(WAIT_FOR_OTHERS) => {}
                    _ = token.cancelled() => {}
                }
            }
        }
        out
    }

    async fn status(&self, collection: &str) -> Result<Option<String>, crate::store::StoreError> {
        Ok(self
            .ctx
            .store
            .listings(&self.run)
            .await?
            .into_iter()
            .find(|(c, _, _)| c == collection)
            .map(|(_, s, _)| s))
    }

    /// Claims `collection`'s listing and pages through it. `None`: not
    /// claimable now.
    async fn one(
        &self,
        collection: &str,
        token: &CancellationToken,
    ) -> Result<Option<Ended>, crate::store::StoreError> {
        let store = &self.ctx.store;
        let lease = &self.ctx.lease;
        let holder = store
            .listings(&self.run)
            .await?
            .into_iter()
            .find(|(c, _, _)| c == collection)
            .and_then(|(_, _, o)| o);
        let steal = holder.filter(|o| owner_is_dead(o));
        let Some(state) = store
            .claim_listing(
                &self.run,
                collection,
                lease.owner(),
                lease.until(),
                self.since,
                steal.as_deref(),
            )
            .await?
        else {
            return Ok(None);
        };
        tracing::info!(collection, cursor = ?state.cursor, pages = state.pages, "listing repositories from the relay");
        let ended = self.pages(state.id, collection, state.cursor, token).await;
        match &ended {
            Ended::Failed(e) => {
                tracing::warn!(collection, error = %e, "the relay listing failed; run the same command again to continue it");
                store.fail_listing(state.id, lease.owner(), e).await?;
            }
            Ended::Stopped if token.is_cancelled() => {
                store.release_listing(state.id, lease.owner()).await?;
            }
            _ => {}
        }
        Ok(Some(ended))
    }

    /// Pages from `cursor` to the end (or a failure, a lost lease, a
    /// cancellation).
    async fn pages(
        &self,
        id: i64,
        collection: &str,
        mut cursor: Option<String>,
        token: &CancellationToken,
    ) -> Ended {
        let (method, limit) = relay::method_of(collection);
        let limit_text = limit.to_string();
        let mut seen: HashSet<String> = cursor.iter().cloned().collect();
        loop {
            let mut params: Vec<(&str, &str)> = vec![("limit", &limit_text)];
            if method == relay::LIST_REPOS_BY_COLLECTION {
                params.push(("collection", collection));
            }
            if let Some(c) = &cursor {
                params.push(("cursor", c));
            }
            let raw: RawPage = match self.ctx.xrpc.get(&self.relay, method, &params, token).await {
                Ok(r) => r,
                Err(XrpcError::Cancelled) => return Ended::Stopped,
                Err(e) => return Ended::Failed(e.to_string()),
            };
            let page = match relay::read_page(raw, limit, &seen) {
                Ok(p) => p,
                Err(e) => return Ended::Failed(e.to_string()),
            };
            let last = page.next.is_none();
            let listed = ListedPage {
                dids: &page.dids,
                next: page.next.as_deref(),
                last,
                listed: page.listed,
                inactive: page.inactive,
                malformed: page.malformed,
            };
            let lease = &self.ctx.lease;
            let saved = self
                .ctx
                .store
                .save_listed_page(
                    &self.run,
                    id,
                    lease.owner(),
                    lease.until(),
                    &listed,
                    self.requeue,
                )
                .await;
            let queued = match saved {
                Ok(Some(n)) => n,
                Ok(None) => return Ended::Stopped,
                Err(e) => return Ended::Failed(format!("cannot save the listed page: {e}")),
            };
            count(page.listed, queued, page.inactive, page.malformed);
            self.progress
                .listed(page.listed, queued, page.inactive, page.malformed);
            self.queued.notify_one();
            match page.next {
                None => return Ended::Completed,
                Some(next) => {
                    seen.insert(next.clone());
                    cursor = Some(next);
                }
            }
        }
    }
}

/// `parity_import_relay_repos_total{result}`.
fn count(listed: u64, queued: u64, inactive: u64, malformed: u64) {
    let duplicate = listed.saturating_sub(queued + inactive + malformed);
    for (result, n) in [
        ("queued", queued),
        ("inactive", inactive),
        ("malformed", malformed),
        ("already_queued", duplicate),
    ] {
        if n > 0 {
            metrics::counter!(names::IMPORT_RELAY_REPOS, "result" => result).increment(n);
        }
    }
}
