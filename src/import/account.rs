//! Imports one account: resolve the input to a DID and PDS, decide its
//! collections, then run each (did, collection) in turn.
//!
//! Owns: the per-DID flow and its outcome, and the failed `*` state left
//! for a DID that failed before its collections were known (so
//! `import-status` shows it and `resume` retries it). A repo that can never
//! be imported ends its pending work `gone` instead (terminal, so `resume`
//! does not fail on it forever): on `resume`, an account the stream
//! reported deleted (nothing is asked) or a DID tombstoned in the PLC
//! directory; on both `import` and `resume`, a PDS that answers
//! `RepoNotFound` / `RepoDeactivated`. Does not own which
//! collections exist (`discover`) or one pair's claim and run (`pair`).

use std::collections::BTreeMap;

use futures_util::future::join_all;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::config::ImportMethod;
use super::discover::{self, ALL_COLLECTIONS, Collection};
use super::failure::{DidError, is_gone};
use super::identity::Identity;
use super::identity::IdentityError;
use super::job::Counts;
use super::job::{self, JobError};
use super::lease::stealable;
use super::pair::{self, PairResult};
use super::progress::DidBar;
use super::runner::{Runner, Work};
use super::snapshot::{self, Fetched, Snapshot};
use super::summary::{DidOutcome, DidStatus, PerCollection};
use crate::event::{AccountStatus, Nsid};
use crate::store::{ImportState, StatusFilter};

impl Runner {
    /// Runs `work` for one input (a DID or a handle). `fetching` is its
    /// network slot: a verified snapshot trades it for held memory before
    /// its pages are written; a listRecords import keeps it to the end.
    pub(super) async fn account(
        &self,
        input: &str,
        work: &Work,
        bar: &DidBar,
        fetching: OwnedSemaphorePermit,
        token: &CancellationToken,
    ) -> DidOutcome {
        if matches!(work, Work::Resume)
            && let Some(out) = self.gone_if_deleted(input).await
        {
            return out;
        }
        let (id, unsaved) = match self.resolver.resolve_unsaved(input).await {
            Ok(resolved) => resolved,
            // A pending re-import of a deleted account ends; an explicit
            // `import` of one fails, saying why.
            Err(IdentityError::Tombstoned(_)) if matches!(work, Work::Resume) => {
                let reason =
                    "the DID is tombstoned in the PLC directory (410): the account was deleted";
                return self.gone(input, reason).await;
            }
            Err(e) => {
                let e = DidError::from(e);
                if input.starts_with("did:") {
                    self.record_failure(input, &e).await;
                }
                return DidOutcome::failed(input, e);
            }
        };
        // The identity is written to the store's cache while the repo is
        // fetched: the fetching slot waits for the network, not for a turn
        // of the writer (measured in BENCHMARKS.md, issue 15 b).
        let (out, ()) = tokio::join!(
            self.resolved(&id, work, bar, fetching, token),
            self.resolver.save(unsaved)
        );
        out
    }

    /// The rest of [`Runner::account`] once `id` is resolved.
    async fn resolved(
        &self,
        id: &Identity,
        work: &Work,
        bar: &DidBar,
        fetching: OwnedSemaphorePermit,
        token: &CancellationToken,
    ) -> DidOutcome {
        let did = id.did.to_string();
        let snapshot = match self.ctx.method {
            ImportMethod::Listrecords => None,
            _ => match snapshot::fetch(&self.ctx, &self.resolver, id, token).await {
                Ok(Fetched::Verified(s)) => Some(s),
                Ok(Fetched::ListRecords) => None,
                Err(_) if token.is_cancelled() => return DidOutcome::interrupted(&did),
                Err(DidError::Discover(e)) if is_gone(&e) => {
                    return self.gone(&did, &e.to_string()).await;
                }
                Err(e) => {
                    tracing::warn!(did = %did, error = %e, "import: the repository was not imported");
                    self.record_failure(&did, &e).await;
                    return DidOutcome::failed(&did, e);
                }
            },
        };
        // The slot (listRecords) or the held snapshot's room, to the end.
        let _slot = match &snapshot {
            Some(s) => match self.slots.hold(s.bytes(), fetching, token).await {
                Some(held) => held,
                None => return DidOutcome::interrupted(&did),
            },
            None => fetching,
        };
        if let Some(snap) = &snapshot
            && let Some(out) = self.fresh(snap, &id.did, work, bar).await
        {
            return out;
        }
        let (collections, states) = match self.collections(id, snapshot.as_ref(), work, token).await
        {
            Ok(c) => c,
            Err(_) if token.is_cancelled() => return DidOutcome::interrupted(&did),
            Err(e) => {
                if let Some(reason) = self.repo_gone(id, &e, token).await {
                    return self.gone(&did, &reason).await;
                }
                self.record_failure(&did, &e).await;
                return DidOutcome::failed(&did, e);
            }
        };
        self.run_pairs(id, snapshot.as_ref(), &collections, states, bar, token)
            .await
    }

    /// A DID the stream reported deleted: its pending work ends `gone`
    /// without asking the network.
    async fn gone_if_deleted(&self, input: &str) -> Option<DidOutcome> {
        let did = crate::event::Did::parse(input)?;
        match self.ctx.store.account_status(did.as_str()).await {
            Ok(Some(s)) if s == AccountStatus::Deleted.as_str() => Some(
                self.gone(
                    did.as_str(),
                    "the account was deleted (#account status deleted)",
                )
                .await,
            ),
            _ => None,
        }
    }

    /// After `describeRepo` failed (the reference PDS answers a plain
    /// `InvalidRequest` for a missing or deactivated repo), asks
    /// `getLatestCommit`, which names the reason: the reason text when the
    /// repo is gone.
    async fn repo_gone(
        &self,
        id: &Identity,
        error: &DidError,
        token: &CancellationToken,
    ) -> Option<String> {
        let DidError::Discover(e) = error else {
            return None;
        };
        if is_gone(e) {
            return Some(e.to_string());
        }
        match job::repo_rev(&self.ctx, &id.pds, &id.did, token).await {
            Err(JobError::Remote(e)) if is_gone(&e) => Some(e.to_string()),
            _ => None,
        }
    }

    /// Ends the DID's resumable states `gone` (leaving one `*` state to
    /// show it when it had none).
    async fn gone(&self, did: &str, reason: &str) -> DidOutcome {
        let store = &self.ctx.store;
        let owner = self.ctx.lease.owner();
        let r = async {
            if store.abandon_imports(did, owner, reason).await? == 0 {
                store
                    .enqueue_imports(did, &[ALL_COLLECTIONS.to_owned()], false)
                    .await?;
                store.abandon_imports(did, owner, reason).await?;
            }
            Ok::<(), crate::store::StoreError>(())
        };
        if let Err(e) = r.await {
            tracing::warn!(did = ?did, error = %e, "cannot record that the repo is gone");
        }
        DidOutcome {
            did: did.to_owned(),
            counts: Counts::default(),
            status: DidStatus::Gone(reason.to_owned()),
        }
    }

    /// The collections `work` runs for this DID, with their states queued,
    /// and the DID's states as read before queueing when they were read.
    /// With a snapshot, "every mapped collection" is the snapshot's mapped
    /// collections plus those imported before (now empty, so swept).
    async fn collections(
        &self,
        id: &Identity,
        snapshot: Option<&Snapshot>,
        work: &Work,
        token: &CancellationToken,
    ) -> Result<(Vec<Collection>, Option<Vec<ImportState>>), DidError> {
        let (ctx, did) = (&self.ctx, id.did.as_str());
        match work {
            Work::Import { collections, force } => {
                let mut read = None;
                let cols = match (collections, snapshot) {
                    (Some(c), _) => c.clone(),
                    (None, Some(snap)) => {
                        let before = ctx
                            .store
                            .import_states(Some(did), StatusFilter::All, i64::MAX)
                            .await?;
                        let mut cols: Vec<Nsid> = snap
                            .collections
                            .keys()
                            .map(String::as_str)
                            .chain(before.iter().map(|s| s.collection.as_str()))
                            .filter(|c| ctx.registry.handles(c))
                            .filter_map(Nsid::parse)
                            .collect();
                        cols.sort();
                        cols.dedup();
                        read = Some(before);
                        cols
                    }
                    (None, None) => discover::mapped_collections(ctx, id, token).await?,
                };
                ctx.store
                    .queue_collections(did, &discover::names(&cols), *force)
                    .await?;
                Ok((cols.into_iter().map(Collection::Nsid).collect(), read))
            }
            Work::Resume => Ok((discover::expand_requests(ctx, id, token).await?, None)),
        }
    }

    /// Leaves a visible failed `*` state for a DID that failed before its
    /// collections were known. `did` is the input as given when it did not
    /// resolve, as the store keys it.
    async fn record_failure(&self, did: &str, error: &DidError) {
        let store = &self.ctx.store;
        let owner = self.ctx.lease.owner();
        let lease_until = self.ctx.lease.until();
        let r = async {
            store
                .enqueue_imports(did, &[ALL_COLLECTIONS.to_owned()], false)
                .await?;
            if let Some(s) = store
                .claim_import(did, ALL_COLLECTIONS, owner, lease_until, None)
                .await?
            {
                store.fail_import(s.id, owner, &error.to_string()).await?;
            }
            Ok::<(), crate::store::StoreError>(())
        };
        if let Err(e) = r.await {
            tracing::warn!(did = ?did, error = %e, "cannot record the import failure");
        }
    }

    /// Runs each collection: a snapshot's all at once, listRecords' in
    /// turn (each pages its PDS); stops early only when interrupted.
    /// `states` are the DID's states if [`Runner::collections`] read them
    /// (before queueing: what it queued is new, so leased by nobody), else
    /// they are read here. Only their leases are used, to take over a pair
    /// a dead local importer held.
    async fn run_pairs(
        &self,
        id: &Identity,
        snapshot: Option<&Snapshot>,
        collections: &[Collection],
        states: Option<Vec<ImportState>>,
        bar: &DidBar,
        token: &CancellationToken,
    ) -> DidOutcome {
        let did = id.did.to_string();
        let mut counts = Counts::default();
        let mut ran = 0usize;
        let mut skipped = PerCollection::default();
        let mut failures = PerCollection::default();
        let mut gone: Vec<String> = Vec::new();
        let states = match states {
            Some(s) => s,
            None => self
                .ctx
                .store
                .import_states(Some(&did), StatusFilter::All, i64::MAX)
                .await
                .unwrap_or_default(),
        };
        let existing: BTreeMap<String, ImportState> = states
            .into_iter()
            .map(|s| (s.collection.clone(), s))
            .collect();
        let steal = |c: &Collection| {
            stealable(
                existing
                    .get(c.as_str())
                    .and_then(|s| s.lease_owner.as_deref()),
            )
        };
        let results = if snapshot.is_some() && !token.is_cancelled() {
            // A snapshot's collections are all in memory: their pages reach
            // the writer together and share its transactions (group
            // commit); each collection's own pages stay in order.
            join_all(
                collections
                    .iter()
                    .map(|c| pair::run(&self.ctx, id, snapshot, c, steal(c), bar, token)),
            )
            .await
        } else {
            let mut out = Vec::with_capacity(collections.len());
            for c in collections {
                if token.is_cancelled() {
                    out.push(PairResult::Interrupted(Counts::default()));
                    break;
                }
                let r = pair::run(&self.ctx, id, snapshot, c, steal(c), bar, token).await;
                let stop = matches!(r, PairResult::Interrupted(_));
                out.push(r);
                if stop {
                    break;
                }
            }
            out
        };
        let mut interrupted = false;
        for (c, result) in collections.iter().zip(results) {
            match result {
                PairResult::Done(n) => {
                    counts += n;
                    ran += 1;
                }
                PairResult::NotClaimed(why) => skipped.0.push((c.clone(), why)),
                PairResult::Failed(n, e) => {
                    counts += n;
                    failures.0.push((c.clone(), e));
                }
                PairResult::Gone(why) => gone.push(why),
                PairResult::Interrupted(n) => {
                    counts += n;
                    interrupted = true;
                }
            }
        }
        if interrupted {
            return DidOutcome {
                did,
                counts,
                status: DidStatus::Interrupted,
            };
        }
        let status = if !failures.0.is_empty() {
            DidStatus::Failed(DidError::Collections(failures))
        } else if ran == 0 && !gone.is_empty() {
            DidStatus::Gone(gone.swap_remove(0))
        } else if ran == 0 && !skipped.0.is_empty() {
            DidStatus::Skipped(skipped)
        } else {
            DidStatus::Completed
        };
        DidOutcome {
            did,
            counts,
            status,
        }
    }
}
