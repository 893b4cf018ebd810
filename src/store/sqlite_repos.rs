//! What the SQLite writer knows about each DID without asking the
//! database: whether its account status blocks upserts, and a lower bound
//! of its stored commit rev.
//!
//! Owns: a bounded map of those facts, filled from `parity_repos` on a
//! miss and emptied when full (cheaper per look-up than an LRU's list,
//! which was a visible share of the writer's time), and the rules that keep
//! it true. Does not own: the statements
//! that change `parity_repos` (the commit walk runs them; the steps tell
//! this cache which DIDs they touched).
//!
//! Invariants, which make an answer from memory the answer the database
//! would give inside the writer's transaction:
//! - another connection's commit (another process, or this process's own
//!   pool: `parity import` next to `parity consume`) changes `PRAGMA
//!   data_version` on the writer's connection; [`RepoCache::begin`] reads
//!   it at the start of every write transaction and forgets everything
//!   when it moved;
//! - a statement of the writer itself that changes a DID's account status
//!   [`forget`](RepoCache::forget)s that DID, so the next question reads
//!   the row the transaction just wrote;
//! - a transaction that does not commit may leave facts that never became
//!   durable, so [`RepoCache::clear`] runs on every rollback and error;
//! - a rev is kept only as a lower bound of the stored one (what was read,
//!   or a rev the guarded upsert has just offered), so "the stored rev is
//!   already at least this" is never claimed wrongly.

use rusqlite::{Connection, OptionalExtension};
use std::collections::HashMap;

/// DIDs remembered before the map is emptied: at ~120 bytes each about
/// 24 MB, and more than the accounts active in any few minutes of the
/// network's firehose.
pub(super) const REPO_CACHE_DIDS: usize = 200_000;

#[derive(Debug, Clone)]
struct Facts {
    /// The account status is one of the purging statuses: upserts of the
    /// DID are refused.
    purging: bool,
    /// The stored rev is at least this.
    rev_floor: Option<Box<str>>,
}

/// The per-DID facts of one writer connection (see the module doc).
pub(super) struct RepoCache {
    /// foldhash with a random seed per map: SipHash was a visible share
    /// of the writer's time, and the map is bounded and often cleared.
    facts: HashMap<Box<str>, Facts, foldhash::fast::RandomState>,
    capacity: usize,
    data_version: Option<i64>,
}

impl RepoCache {
    pub(super) fn new(capacity: usize) -> RepoCache {
        RepoCache {
            facts: HashMap::default(),
            capacity: capacity.max(1),
            data_version: None,
        }
    }

    /// At the start of a write transaction (the write lock held): forgets
    /// everything if another connection committed since the last one.
    pub(super) fn begin(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let v: i64 = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        if self.data_version != Some(v) {
            self.facts.clear();
            self.data_version = Some(v);
        }
        Ok(())
    }

    /// Forgets everything (a rollback or an error).
    pub(super) fn clear(&mut self) {
        self.facts.clear();
    }

    /// Forgets one DID (its `parity_repos` row was just changed).
    pub(super) fn forget(&mut self, did: &str) {
        self.facts.remove(did);
    }

    /// How many DIDs are remembered.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.facts.len()
    }

    /// Whether upserts of `did` are refused by its account status;
    /// `purging` is the SQL list of purging statuses (`None`: none purge).
    pub(super) fn purging(
        &mut self,
        conn: &Connection,
        did: &str,
        purging: Option<&str>,
    ) -> rusqlite::Result<bool> {
        let Some(list) = purging else {
            return Ok(false);
        };
        if let Some(f) = self.facts.get(did) {
            return Ok(f.purging);
        }
        let sql = format!("SELECT status IN ({list}), rev FROM parity_repos WHERE did = ?1");
        let row: Option<(bool, Option<String>)> = conn
            .prepare_cached(&sql)?
            .query_row([did], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let facts = match row {
            Some((purging, rev)) => Facts {
                purging,
                rev_floor: rev.map(String::into_boxed_str),
            },
            None => Facts {
                purging: false,
                rev_floor: None,
            },
        };
        let p = facts.purging;
        if self.facts.len() >= self.capacity {
            self.facts.clear();
        }
        self.facts.insert(did.into(), facts);
        Ok(p)
    }

    /// Whether the stored rev of `did` is known to be at least `rev` (so
    /// a guarded rev upsert would change nothing).
    pub(super) fn rev_covers(&mut self, did: &str, rev: &str) -> bool {
        self.facts
            .get(did)
            .and_then(|f| f.rev_floor.as_deref())
            .is_some_and(|floor| floor >= rev)
    }

    /// After the guarded rev upsert of `did` at `rev`: the stored rev is
    /// now at least `rev`. Only a DID already remembered is updated (its
    /// status is known); others stay unknown.
    pub(super) fn offered_rev(&mut self, did: &str, rev: &str) {
        if let Some(f) = self.facts.get_mut(did)
            && f.rev_floor.as_deref().is_none_or(|floor| floor < rev)
        {
            f.rev_floor = Some(rev.into());
        }
    }
}

#[cfg(test)]
mod tests;
