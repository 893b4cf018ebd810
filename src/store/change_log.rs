//! The change log's write side: which tables a store logs, the row changes
//! one commit collects while its steps run, and what follows a commit that
//! appended some (the `parity_feed_changes_total` counter and the in-process
//! wake).
//!
//! Owns: [`ChangeLog`] (the `[feed]` keys the store needs: `enabled`,
//! `tables`), [`Logged`] (one change as appended), and [`Signal`]. Does not
//! own the statements (each backend's `append` step, `commit.rs` calls it
//! once, last, under the append lock) nor reading the log (`changes.rs`).
//!
//! What is a change (decisions.md, "Change feed"): a row an upsert
//! inserted or rewrote (the rev guard lets only a newer rev through, so a
//! rewrite always changes `rev`), a row a delete, a purge or an import
//! sweep removed. A replay the guards refused, a delete of a missing row
//! and anything else that leaves the row as it was append nothing: the
//! backends report per row what their statements actually did
//! (`changes()` on SQLite's cached statements, `RETURNING` on PostgreSQL).
//! Changes are appended in the order the commit ran them, so replaying the
//! log onto the tables as they were gives the tables as they are.

use std::borrow::Cow;
use std::sync::Arc;

use tokio::sync::watch;

use super::CommitStats;
use super::subjects;
use crate::mapper::Row;

/// `parity_feed_changes_total{table,op}`: changes appended, counted after
/// their commit (`obs::names::FEED_CHANGES`; defined here because `obs`
/// depends on `store`, not the other way).
pub const FEED_CHANGES_METRIC: &str = "parity_feed_changes_total";

/// Which changes a store appends to `parity_changes` (`[feed] enabled` and
/// `feed.tables`). Off by default: a store that does not log runs no
/// statement of the log at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeLog {
    pub enabled: bool,
    /// Mapped tables whose changes are logged; empty: every mapped table.
    pub tables: Vec<String>,
}

impl ChangeLog {
    /// Whether changes of `table` are appended.
    pub fn logs(&self, table: &str) -> bool {
        self.enabled && (self.tables.is_empty() || self.tables.iter().any(|t| t == table))
    }
}

/// What happened to the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Upsert,
    Delete,
}

impl Op {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Op::Upsert => "upsert",
            Op::Delete => "delete",
        }
    }
}

/// One change as appended: the row written (upsert) or removed (delete).
#[derive(Debug, Clone)]
pub(super) struct Logged<'a> {
    /// `TableId` of the [`super::plan::Plan`].
    pub(super) table: usize,
    pub(super) op: Op,
    pub(super) uri: Cow<'a, str>,
    pub(super) did: Cow<'a, str>,
    pub(super) rkey: Cow<'a, str>,
    /// `None` for a delete.
    pub(super) cid: Option<&'a str>,
    /// The upserted rev; for a delete, the rev that deleted it (the record
    /// delete's, the import sweep's), `None` for a purge.
    pub(super) rev: Option<&'a str>,
    /// The record (atproto JSON); `None` for a delete.
    pub(super) record: Option<&'a str>,
    /// JSON array of the at-uris the row points at (for a delete: the
    /// removed row's), `None` when none.
    pub(super) subjects: Option<String>,
}

impl<'a> Logged<'a> {
    /// A row an upsert wrote.
    pub(super) fn upsert(table: usize, row: &'a Row) -> Logged<'a> {
        let record = row.record.get();
        Logged {
            table,
            op: Op::Upsert,
            uri: Cow::Borrowed(&row.uri),
            did: Cow::Borrowed(row.did.as_str()),
            rkey: Cow::Borrowed(&row.rkey),
            cid: Some(&row.cid),
            rev: Some(&row.rev),
            record: Some(record),
            subjects: subjects::column(record),
        }
    }

    /// A row a delete, purge or sweep removed; `record` is the removed
    /// row's (for its subjects).
    pub(super) fn removed(
        table: usize,
        uri: String,
        did: String,
        rkey: String,
        record: Option<&str>,
        rev: Option<&'a str>,
    ) -> Logged<'a> {
        Logged {
            table,
            op: Op::Delete,
            uri: Cow::Owned(uri),
            did: Cow::Owned(did),
            rkey: Cow::Owned(rkey),
            cid: None,
            rev,
            record: None,
            subjects: record.and_then(subjects::column),
        }
    }

    /// The collection of the at-uri (`at://DID/COLLECTION/RKEY`).
    pub(super) fn collection(&self) -> &str {
        collection_of(&self.uri)
    }
}

/// The collection of an at-uri (`at://DID/COLLECTION/RKEY`); empty when it
/// has none.
pub(super) fn collection_of(uri: &str) -> &str {
    uri.strip_prefix("at://")
        .and_then(|rest| rest.split('/').nth(1))
        .unwrap_or("")
}

/// Counts what `log` appended into `stats` (per table name and op).
pub(super) fn count(stats: &mut CommitStats, names: impl Fn(usize) -> String, log: &[Logged<'_>]) {
    for c in log {
        let list = match c.op {
            Op::Upsert => &mut stats.logged_upserts,
            Op::Delete => &mut stats.logged_deletes,
        };
        CommitStats::add(list, &names(c.table), 1);
    }
}

/// The in-process wake of readers of the log: holds the newest `seq` this
/// process appended, updated right after each commit that appended
/// changes. Shared by every clone of a store.
#[derive(Clone)]
pub(super) struct Signal(Arc<watch::Sender<i64>>);

impl Default for Signal {
    fn default() -> Self {
        Signal(Arc::new(watch::Sender::new(0)))
    }
}

impl Signal {
    pub(super) fn subscribe(&self) -> watch::Receiver<i64> {
        self.0.subscribe()
    }

    /// After a commit: counts its changes and wakes the readers.
    pub(super) fn committed(&self, stats: &CommitStats) {
        for (op, list) in [
            ("upsert", &stats.logged_upserts),
            ("delete", &stats.logged_deletes),
        ] {
            for (table, n) in list {
                metrics::counter!(FEED_CHANGES_METRIC, "table" => table.clone(), "op" => op)
                    .increment(*n);
            }
        }
        if let Some(seq) = stats.last_seq {
            self.0.send_if_modified(|s| {
                let newer = seq > *s;
                if newer {
                    *s = seq;
                }
                newer
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_limit_what_is_logged_and_off_logs_nothing() {
        let all = ChangeLog {
            enabled: true,
            tables: vec![],
        };
        assert!(all.logs("likes") && all.logs("posts"));
        let some = ChangeLog {
            enabled: true,
            tables: vec!["likes".into()],
        };
        assert!(some.logs("likes") && !some.logs("posts"));
        let off = ChangeLog {
            enabled: false,
            tables: vec!["likes".into()],
        };
        assert!(!off.logs("likes"));
    }

    #[test]
    fn the_collection_is_the_uris_second_segment() {
        assert_eq!(
            collection_of("at://did:plc:a/app.bsky.feed.like/3k"),
            "app.bsky.feed.like"
        );
        assert_eq!(collection_of("nope"), "");
    }
}
