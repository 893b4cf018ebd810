//! Runs one (did, collection): claim its state under our lease, run the
//! job (listRecords pages, or the collection's records from a verified
//! whole-repo snapshot) while the lease is renewed beside it, and record
//! how it ended.
//!
//! Owns: the state transitions of one pair around its job: claimed
//! (`in_progress`), then `failed` with the error text, `gone`
//! when the PDS says the repo is (`RepoNotFound`, `RepoDeactivated`), or
//! released back to `pending` when the run is interrupted. `completed` is
//! written by the job's last page, in that page's transaction. A pair that
//! cannot be claimed (completed, or held by a live importer) is skipped.
//! Does not own paging (`job`) or the lease clock (`lease`).

use tokio_util::sync::CancellationToken;

use super::discover::Collection;
use super::failure::{PairError, is_gone};
use super::identity::Identity;
use super::job::{self, Counts, Ctx, JobError};
use super::progress::DidBar;
use super::repo_job;
use super::snapshot::Snapshot;
use super::xrpc::XrpcError;
use crate::store::{ImportState, ImportStatus, StatusFilter};

/// Why a pair was not claimed: nothing to do here. The runner counts it
/// as skipped; if no pair of the DID ran, the DID is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotClaimed {
    /// The pair is completed; `--force` imports it again.
    #[error("already imported (use --force to import again)")]
    AlreadyImported,
    /// An earlier run found the repo gone (account deleted, `RepoNotFound`,
    /// `RepoDeactivated`); `--force` tries again.
    #[error("the repo is gone (use --force to try again)")]
    Gone,
    /// A live importer holds the lease; it finishes the pair.
    #[error("being imported by another process")]
    Busy,
    /// Another importer took the lease over while this one ran; it
    /// finishes the pair from the last committed page.
    #[error("the lease was taken over by another importer")]
    LeaseLost,
}

/// How one pair ended, with the records it added.
pub enum PairResult {
    Done(Counts),
    NotClaimed(NotClaimed),
    Failed(Counts, PairError),
    /// The PDS says the repo is gone (`RepoNotFound`, `RepoDeactivated`):
    /// the pair ended in the terminal `gone` state with this reason.
    Gone(String),
    Interrupted(Counts),
}

/// Claims and runs one pair. `steal` is a dead local owner whose lease may
/// be taken over before it expires.
pub async fn run(
    ctx: &Ctx,
    id: &Identity,
    snapshot: Option<&Snapshot>,
    collection: &Collection,
    steal: Option<&str>,
    bar: &DidBar,
    token: &CancellationToken,
) -> PairResult {
    let did = id.did.as_str();
    let owner = ctx.lease.owner();
    let state = match ctx
        .store
        .claim_import(did, collection.as_str(), owner, ctx.lease.until(), steal)
        .await
    {
        Ok(Some(s)) => s,
        Ok(None) => return PairResult::NotClaimed(why_not_claimed(ctx, id, collection).await),
        Err(e) => return PairResult::Failed(Counts::default(), e.into()),
    };
    let nsid = match collection {
        Collection::Nsid(n) => n,
        Collection::Unreadable(name) => {
            return fail(ctx, &state, PairError::InvalidCollection(name.clone())).await;
        }
    };
    let pair_bar = bar.pair(nsid.as_str());
    let lease_token = token.child_token();
    let renew = ctx.lease.keep(&ctx.store, state.id, lease_token.clone());
    let work = async {
        match snapshot {
            Some(snap) => {
                repo_job::run(ctx, snap, &id.did, nsid, &state, &pair_bar, &lease_token).await
            }
            None => job::run(ctx, &id.pds, &id.did, nsid, &state, &pair_bar, &lease_token).await,
        }
    };
    tokio::pin!(work);
    let result = tokio::select! {
        biased;
        r = &mut work => r,
        () = renew => {
            // The lease is no longer ours: taken over, or the last page has
            // just completed the pair. The cancelled token stops the work at
            // its next step; a last page that committed still counts.
            match work.await {
                Ok(n) => Ok(n),
                Err(_) => Err(JobError::LeaseLost),
            }
        }
    };
    lease_token.cancel();
    match result {
        // The last page's commit completed the pair and released the lease.
        Ok(n) => PairResult::Done(n),
        Err(JobError::Cancelled) | Err(JobError::Remote(XrpcError::Cancelled))
            if token.is_cancelled() =>
        {
            let _ = ctx.store.release_import(state.id, owner).await;
            PairResult::Interrupted(Counts::default())
        }
        Err(JobError::LeaseLost) => PairResult::NotClaimed(NotClaimed::LeaseLost),
        Err(JobError::Remote(e)) if is_gone(&e) => {
            let reason = e.to_string();
            match ctx.store.finish_import_gone(state.id, owner, &reason).await {
                Ok(true) => PairResult::Gone(reason),
                Ok(false) => PairResult::NotClaimed(NotClaimed::LeaseLost),
                Err(se) => PairResult::Failed(Counts::default(), se.into()),
            }
        }
        Err(e) => fail(ctx, &state, e.into()).await,
    }
}

/// A pair that was not claimable: completed, or someone else's.
async fn why_not_claimed(ctx: &Ctx, id: &Identity, collection: &Collection) -> NotClaimed {
    let states = ctx
        .store
        .import_states(Some(id.did.as_str()), StatusFilter::All, i64::MAX)
        .await;
    match states {
        Ok(v) if v.iter().any(|s| is(s, collection, ImportStatus::Completed)) => {
            NotClaimed::AlreadyImported
        }
        Ok(v) if v.iter().any(|s| is(s, collection, ImportStatus::Gone)) => NotClaimed::Gone,
        _ => NotClaimed::Busy,
    }
}

fn is(s: &ImportState, collection: &Collection, status: ImportStatus) -> bool {
    s.collection == collection.as_str() && s.status == status
}

/// Marks a claimed pair failed with the error's text.
async fn fail(ctx: &Ctx, state: &ImportState, error: PairError) -> PairResult {
    let msg = error.to_string();
    if let Err(se) = ctx
        .store
        .fail_import(state.id, ctx.lease.owner(), &msg)
        .await
    {
        tracing::warn!(error = %se, "cannot record the import failure");
    }
    PairResult::Failed(Counts::default(), error)
}
