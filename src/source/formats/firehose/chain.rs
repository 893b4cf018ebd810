//! The firehose sync rules per repo: the last commit rev seen for each DID,
//! and what a new commit's `rev` and `since` say against it.
//!
//! Owns: the rev memory of this process (at most [`MAX_TRACKED_REPOS`]
//! DIDs; when full, the least recently active DID is forgotten, one at a
//! time, so the memory never drops every chain at once) and the two rules. A commit whose rev is not newer than the last one seen
//! is stale (the caller drops its ops). A commit whose `since` is not that
//! last rev does not follow it: the repo missed a commit, so a `Sync` event
//! is emitted before the commit to record it as needing a re-import; the
//! commit still applies. Does not own: persistent revs (the store's rev
//! guards keep stale data out across restarts), `prevData` checks.
//!
//! Revs are TIDs, whose string order is time order (`formats::rev`).

use hashlink::LruCache;

use super::CommitMeta;
use crate::event::{Cursor, Did, Event, EventKind};

/// Most DIDs whose last firehose rev is remembered (about 200 MB at most);
/// past this the least recently active DID is forgotten (its chain check
/// pauses until its next commit; the SQL rev guards still keep stale data
/// out).
pub const MAX_TRACKED_REPOS: usize = 2_000_000;

/// The last rev seen per DID, for this process's lifetime.
pub struct RevChain {
    revs: LruCache<Did, String>,
}

impl std::fmt::Debug for RevChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevChain")
            .field("tracked", &self.revs.len())
            .field("capacity", &self.revs.capacity())
            .finish()
    }
}

impl Default for RevChain {
    fn default() -> Self {
        RevChain::with_capacity(MAX_TRACKED_REPOS)
    }
}

impl RevChain {
    /// A memory of at most `capacity` DIDs.
    pub fn with_capacity(capacity: usize) -> RevChain {
        RevChain {
            revs: LruCache::new(capacity.max(1)),
        }
    }

    /// The rules for one commit: `false` when its rev is not newer than the
    /// last one seen for the DID (stale: skip it). When its `since` does not
    /// follow that rev, a `Sync` event is pushed to `out` first.
    pub fn check(&mut self, meta: &CommitMeta, out: &mut Vec<Event>) -> bool {
        if let Some(known) = self.revs.get(&meta.did) {
            if meta.rev <= *known {
                return false;
            }
            if meta.since.as_deref().is_some_and(|s| s != known) {
                tracing::info!(did = %meta.did, seq = meta.seq, "Commit does not follow the last rev seen; repo out of sync.");
                out.push(Event {
                    cursor: Cursor(meta.seq),
                    time_us: meta.time_us,
                    did: meta.did.clone(),
                    kind: EventKind::Sync {
                        rev: meta.rev.clone(),
                    },
                });
            }
        }
        self.remember(&meta.did, &meta.rev);
        true
    }

    /// DIDs remembered.
    pub fn len(&self) -> usize {
        self.revs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.revs.is_empty()
    }

    /// Records `rev` as the DID's latest (a commit, or a `#sync` that resets
    /// the repo).
    pub fn remember(&mut self, did: &Did, rev: &str) {
        // `get_mut` marks the DID most recently used; `insert` of a new one
        // into a full memory evicts the least recently used.
        match self.revs.get_mut(did) {
            Some(known) => {
                known.clear();
                known.push_str(rev);
            }
            None => {
                self.revs.insert(did.clone(), rev.to_owned());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(rev: &str, since: Option<&str>) -> CommitMeta {
        CommitMeta {
            did: Did::parse("did:plc:abc").unwrap(),
            seq: 9,
            rev: rev.into(),
            since: since.map(Into::into),
            prev_data: None,
            commit_cid: String::new(),
            time_us: 5,
        }
    }

    #[test]
    fn stale_and_out_of_sync_commits() {
        let mut chain = RevChain::default();
        let mut out = Vec::new();
        // First commit of a repo: nothing known, applies.
        assert!(chain.check(&meta("3b", Some("3a")), &mut out));
        assert!(out.is_empty());
        // Same or older rev: stale.
        assert!(!chain.check(&meta("3b", Some("3a")), &mut out));
        assert!(!chain.check(&meta("3a", None), &mut out));
        // Follows: applies, no sync.
        assert!(chain.check(&meta("3c", Some("3b")), &mut out));
        assert!(out.is_empty());
        // Skips a commit: applies, preceded by a Sync at the new rev.
        assert!(chain.check(&meta("3e", Some("3d")), &mut out));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].kind, EventKind::Sync { rev: "3e".into() });
        assert_eq!(out[0].cursor, Cursor(9));
        // A #sync resets the chain.
        chain.remember(&meta("3z", None).did, "3z");
        assert!(!chain.check(&meta("3f", Some("3e")), &mut out));
    }

    fn commit(did: &str, rev: &str) -> CommitMeta {
        CommitMeta {
            did: Did::parse(did).unwrap(),
            ..meta(rev, None)
        }
    }

    /// Full memory forgets the least recently active DID, one at a time:
    /// no cliff where every DID's chain is forgotten at once.
    #[test]
    fn a_full_memory_forgets_the_least_recent_did_only() {
        let mut chain = RevChain::with_capacity(3);
        let mut out = Vec::new();
        for d in ["did:plc:a", "did:plc:b", "did:plc:c"] {
            assert!(chain.check(&commit(d, "3b"), &mut out));
        }
        // a is active again, so b is now the least recent.
        assert!(chain.check(&commit("did:plc:a", "3c"), &mut out));
        assert!(chain.check(&commit("did:plc:d", "3b"), &mut out));
        assert_eq!(chain.len(), 3);
        // a, c and d are remembered: their replays are still stale.
        assert!(!chain.check(&commit("did:plc:a", "3c"), &mut out));
        assert!(!chain.check(&commit("did:plc:c", "3b"), &mut out));
        assert!(!chain.check(&commit("did:plc:d", "3b"), &mut out));
        // b was forgotten: its replay passes (the SQL rev guards hold it).
        assert!(chain.check(&commit("did:plc:b", "3b"), &mut out));
        assert_eq!(chain.len(), 3);
        assert!(out.is_empty());
    }
}
