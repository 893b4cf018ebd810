//! Splits a [`Batch`] into per-table work, the shape both backends write.
//!
//! Owns: grouping by table, and the documented order statements run in
//! within one transaction, which `commit.rs` walks (once, for both
//! backends). Pure: no SQL here.
//!
//! Order inside the transaction (each step relies on the ones before):
//! 1. account and identity changes to `parity_repos`, then purges, so the
//!    status guard on upserts sees this batch's account state;
//! 2. tombstones for every delete, then the deletes (guarded by the
//!    tombstone's rev);
//! 3. upserts (guarded by rev, tombstone and repo status), then, on the
//!    last page of a complete import listing, the sweep of the pair's rows
//!    older than the imported rev (tombstoned at that rev);
//! 4. per-DID commit revs in `parity_repos`;
//! 5. the batch's checkpoint: the stream cursors (with several writers: the
//!    writer's own positions, then the streams' low watermarks), or an import page's
//!    cursor and counters (refused, and the batch rolled back, if the page's
//!    lease was taken over);
//! 6. with the change log on, the rows the steps above actually changed,
//!    in that order, appended to `parity_changes` under the append lock.

use crate::batch::{Batch, RepoChange};
use crate::event::Did;
use crate::mapper::{Mutation, Row};

/// The work for one table.
#[derive(Debug, Default)]
pub struct TableWork<'a> {
    pub upserts: Vec<&'a Row>,
    /// `(uri, rev)` of each delete.
    pub deletes: Vec<(&'a str, &'a str)>,
}

/// A batch grouped for writing.
#[derive(Debug)]
pub struct Plan<'a> {
    /// Indexed by `TableId`.
    pub tables: Vec<TableWork<'a>>,
    /// Repos with an account or identity change (rare; written row by row).
    pub account_changes: Vec<(&'a Did, &'a RepoChange)>,
    /// DIDs whose rows are deleted from every table.
    pub purges: Vec<&'a Did>,
    /// `(did, newest rev)` for every DID that committed.
    pub revs: Vec<(&'a Did, &'a str)>,
}

impl<'a> Plan<'a> {
    pub fn new(batch: &'a Batch, table_count: usize) -> Plan<'a> {
        let mut tables: Vec<TableWork<'a>> =
            (0..table_count).map(|_| TableWork::default()).collect();
        for m in &batch.mutations {
            let Some(work) = tables.get_mut(m.table().0) else {
                continue;
            };
            match m {
                Mutation::Upsert(row) => work.upserts.push(row),
                Mutation::Delete { uri, rev, .. } => work.deletes.push((uri, rev)),
            }
        }
        let mut account_changes = Vec::new();
        let mut purges = Vec::new();
        let mut revs = Vec::new();
        for (did, change) in &batch.repos {
            if change.account.is_some()
                || change.identity
                || change.handle.is_some()
                || change.resync.is_some()
            {
                account_changes.push((did, change));
            }
            if change.purge {
                purges.push(did);
            }
            if let Some(rev) = &change.rev {
                revs.push((did, rev.as_str()));
            }
        }
        // Deterministic statement order keeps lock order stable across
        // concurrent writers on PostgreSQL.
        account_changes.sort_by(|a, b| a.0.cmp(b.0));
        purges.sort();
        revs.sort();
        Plan {
            tables,
            account_changes,
            purges,
            revs,
        }
    }

    /// Upserts in this batch, across tables.
    pub fn upsert_count(&self) -> usize {
        self.tables.iter().map(|t| t.upserts.len()).sum()
    }

    /// Every `(uri, rev)` deleted in this batch, across tables.
    pub fn all_deletes(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        self.tables.iter().flat_map(|t| t.deletes.iter().copied())
    }
}

/// The `status` text stored for an account event.
pub fn status_text(active: bool, status: Option<crate::event::AccountStatus>) -> &'static str {
    match (active, status) {
        (_, Some(s)) => s.as_str(),
        (true, None) => "active",
        (false, None) => "inactive",
    }
}
