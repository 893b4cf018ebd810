//! Which collections of one DID to import.
//!
//! Owns: asking the PDS which collections a repo has (`describeRepo`) and
//! keeping those some mapper handles; for `resume`, expanding a pending `*`
//! request (queued by the stream's resync signal, or left by a DID that
//! failed before its collections were known) into per-collection states,
//! then reading back every collection that is not completed. Collection
//! names are parsed here, where they leave the store or the network.
//! Does not own claiming or running a pair (`pair`).

use std::fmt;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::failure::DidError;
use super::identity::Identity;
use super::job::Ctx;
use super::lease::stealable;
use super::xrpc::XrpcError;
use crate::event::Nsid;
use crate::store::StatusFilter;

/// The collection name of a "discover every collection" request.
pub const ALL_COLLECTIONS: &str = "*";

/// Most collections `describeRepo` may list. Real repos have a few dozen;
/// a longer list is a PDS trying to queue work without end, and the DID
/// fails instead.
pub const MAX_DESCRIBED_COLLECTIONS: usize = 1_000;

/// One collection of a DID that is due to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Collection {
    /// An NSID: claimed and imported.
    Nsid(Nsid),
    /// A state row whose collection is not an NSID (written by hand or by
    /// another tool): claimed and marked failed, never fetched.
    Unreadable(String),
}

impl Collection {
    /// Parses a collection read back from a state row.
    pub fn from_stored(name: String) -> Collection {
        match Nsid::parse(&name) {
            Some(n) => Collection::Nsid(n),
            None => Collection::Unreadable(name),
        }
    }

    /// The name as stored.
    pub fn as_str(&self) -> &str {
        match self {
            Collection::Nsid(n) => n.as_str(),
            Collection::Unreadable(s) => s,
        }
    }
}

impl fmt::Display for Collection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Deserialize)]
struct DescribeRepo {
    #[serde(default)]
    collections: Vec<String>,
}

/// Every collection of the repo that has a mapper (`describeRepo`),
/// sorted.
pub async fn mapped_collections(
    ctx: &Ctx,
    id: &Identity,
    token: &CancellationToken,
) -> Result<Vec<Nsid>, XrpcError> {
    let d: DescribeRepo = ctx
        .xrpc
        .get(
            &id.pds,
            "com.atproto.repo.describeRepo",
            &[("repo", id.did.as_str())],
            token,
        )
        .await?;
    if d.collections.len() > MAX_DESCRIBED_COLLECTIONS {
        return Err(XrpcError::Rejected {
            method: "com.atproto.repo.describeRepo".into(),
            detail: format!(
                "the repo lists {} collections, more than {MAX_DESCRIBED_COLLECTIONS} (refused)",
                d.collections.len()
            ),
        });
    }
    Ok(keep_mapped(d.collections, |c| ctx.registry.handles(c)))
}

/// The NSIDs among `listed` that `handles`, sorted, without repeats.
fn keep_mapped(listed: Vec<String>, handles: impl Fn(&str) -> bool) -> Vec<Nsid> {
    let mut cols: Vec<Nsid> = listed
        .iter()
        .filter_map(|c| Nsid::parse(c))
        .filter(|c| handles(c.as_str()))
        .collect();
    cols.sort();
    cols.dedup();
    cols
}

/// For `resume`: turns a pending `*` request into per-collection states
/// (re-importing every mapped collection), then returns every collection of
/// the DID that is not completed, sorted by name.
pub async fn expand_requests(
    ctx: &Ctx,
    id: &Identity,
    token: &CancellationToken,
) -> Result<Vec<Collection>, DidError> {
    let store = &ctx.store;
    let owner = ctx.lease.owner();
    let did = id.did.as_str();
    let states = store
        .import_states(Some(did), StatusFilter::Pending, i64::MAX)
        .await?;
    if let Some(req) = states.iter().find(|s| s.collection == ALL_COLLECTIONS) {
        let steal = stealable(req.lease_owner.as_deref());
        if let Some(claimed) = store
            .claim_import(did, ALL_COLLECTIONS, owner, ctx.lease.until(), steal)
            .await?
        {
            let cols = match mapped_collections(ctx, id, token).await {
                Ok(c) => c,
                Err(e) => {
                    let _ = store.fail_import(claimed.id, owner, &e.to_string()).await;
                    return Err(e.into());
                }
            };
            store.enqueue_imports(did, &names(&cols), true).await?;
            let at = claimed.updated_at.clone();
            store
                .complete_discovery(claimed.id, owner, did, &at)
                .await?;
        }
    }
    let states = store
        .import_states(Some(did), StatusFilter::Pending, i64::MAX)
        .await?;
    Ok(pending(states.into_iter().map(|s| s.collection)))
}

/// The collections of pending states, `*` left out, sorted by name.
fn pending(stored: impl Iterator<Item = String>) -> Vec<Collection> {
    let mut cols: Vec<Collection> = stored
        .filter(|c| c != ALL_COLLECTIONS)
        .map(Collection::from_stored)
        .collect();
    cols.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    cols
}

/// The names the store keys states by.
pub fn names(cols: &[Nsid]) -> Vec<String> {
    cols.iter().map(|c| c.as_str().to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_mapped_nsids_are_kept_once_and_sorted() {
        let listed = [
            "app.bsky.graph.follow",
            "app.bsky.feed.post",
            "not an nsid",
            "com.example.unmapped",
            "app.bsky.feed.post",
        ]
        .map(String::from)
        .to_vec();
        let kept = keep_mapped(listed, |c| c.starts_with("app.bsky."));
        assert_eq!(
            names(&kept),
            vec!["app.bsky.feed.post", "app.bsky.graph.follow"]
        );
    }

    #[test]
    fn pending_states_sort_by_name_and_keep_unreadable_ones() {
        let stored = ["app.bsky.feed.post", "*", "Bad Name", "app.bsky.feed.like"]
            .map(String::from)
            .into_iter();
        let cols = pending(stored);
        let shown: Vec<&str> = cols.iter().map(Collection::as_str).collect();
        assert_eq!(
            shown,
            vec!["Bad Name", "app.bsky.feed.like", "app.bsky.feed.post"]
        );
        assert_eq!(cols[0], Collection::Unreadable("Bad Name".into()));
        assert!(matches!(cols[1], Collection::Nsid(_)));
        assert_eq!(cols[2].to_string(), "app.bsky.feed.post");
    }
}
