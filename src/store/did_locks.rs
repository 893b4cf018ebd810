//! Per-DID write locks of a PostgreSQL commit, so the tombstone and
//! account-status guards hold between concurrent writers.
//!
//! The guards are `NOT EXISTS` subqueries evaluated under READ COMMITTED:
//! without a lock, an import page could read "no tombstone, account
//! active" while a live batch that deletes the record or purges the account
//! is committing, and both would commit (the row survives). Every commit
//! therefore first takes a transaction-scoped advisory lock for each DID it
//! touches (rows, tombstones, account changes, purges, revs, an import's
//! final sweep); two batches
//! sharing a DID run one after the other, and the later one's statements,
//! each with a fresh snapshot, see what the earlier one committed.
//!
//! A plain import page (upserts of one repo's collection and perhaps its
//! sweep, no deletes, no account or repo changes) takes its DID's lock
//! *shared* ([`shared`]); every other batch takes it exclusive. Two pages
//! of one repo's different collections touch disjoint rows, tombstone
//! ranges and floors, and neither changes what the other's guards read,
//! so they commit side by side instead of one waiting for the other's
//! whole transaction (a whole-repo import writes a repo's collections at
//! once); a live batch, a delete or a purge still waits for them, and
//! they for it. Two pages of the same collection are one lease's, in
//! order (a page of a lost lease is refused and rolled back).
//!
//! DIDs are hashed into [`BUCKETS`] lock keys (a bounded number of entries
//! in PostgreSQL's shared lock table, whatever the batch size); two DIDs in
//! one bucket only wait for each other, never break a guard. Keys are taken
//! in ascending order by every writer, so writers cannot deadlock on them.
//! The hash is SHA-256, stable across processes and versions of parity.
//! SQLite needs none of this: its writer takes the database lock up front.
//!
//! Pure: which keys a batch locks. The statement is in `postgres.rs`.

use sha2::{Digest, Sha256};

use crate::batch::{Batch, Checkpoint};
use crate::event::Did;
use crate::mapper::Mutation;

/// Lock keys DIDs hash into: at most this many lock-table entries per
/// commit (PostgreSQL's default table holds 64 × max_connections).
pub const BUCKETS: u32 = 1024;

/// First key of PostgreSQL's two-key advisory lock form: parity's
/// namespace ("prty"), apart from other users of advisory locks.
pub const NAMESPACE: i32 = 0x7072_7479;

/// The lock key of one DID.
pub fn bucket(did: &Did) -> i32 {
    let h = Sha256::digest(did.as_str().as_bytes());
    (u32::from_be_bytes([h[0], h[1], h[2], h[3]]) % BUCKETS) as i32
}

/// The sorted, distinct lock keys of every DID `batch` writes.
pub fn buckets(batch: &Batch) -> Vec<i32> {
    let mut keys: Vec<i32> = batch
        .mutations
        .iter()
        .map(|m| bucket(m.did()))
        .chain(batch.repos.keys().map(bucket))
        .chain(sweep_did(batch).map(bucket))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Whether `batch` may take its locks shared: an import page of upserts
/// only, with no repo changes (see the module doc).
pub fn shared(batch: &Batch) -> bool {
    matches!(batch.checkpoint, Checkpoint::ImportPage(_))
        && batch.repos.is_empty()
        && batch
            .mutations
            .iter()
            .all(|m| matches!(m, Mutation::Upsert(_)))
}

fn sweep_did(batch: &Batch) -> Option<&Did> {
    match &batch.checkpoint {
        Checkpoint::ImportPage(p) => p.sweep.as_ref().map(|s| &s.did),
        Checkpoint::Stream(_) | Checkpoint::Shard(_) | Checkpoint::Publish(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::batch::RepoChange;
    use crate::mapper::TableId;

    #[test]
    fn keys_are_sorted_distinct_and_cover_rows_and_repos() {
        let d = |s: &str| Did::parse(s).unwrap();
        let del = |did: &str, rkey: &str| Mutation::Delete {
            table: TableId(0),
            uri: format!("at://{did}/app.bsky.feed.like/{rkey}"),
            did: d(did),
            rev: "3abc".into(),
        };
        let mut repos = HashMap::new();
        repos.insert(d("did:plc:c"), RepoChange::default());
        let batch = Batch {
            mutations: vec![
                del("did:plc:b", "1"),
                del("did:plc:a", "1"),
                del("did:plc:b", "2"),
            ],
            repos,
            last_time_us: 0,
            events: 3,
            checkpoint: Checkpoint::Stream(Vec::new()),
        };
        let keys = buckets(&batch);
        let mut want: Vec<i32> = ["did:plc:a", "did:plc:b", "did:plc:c"]
            .iter()
            .map(|s| bucket(&d(s)))
            .collect();
        want.sort_unstable();
        want.dedup();
        assert_eq!(keys, want);
        assert!(keys.iter().all(|k| (0..BUCKETS as i32).contains(k)));
    }

    #[test]
    fn only_an_import_page_of_upserts_takes_its_lock_shared() {
        let d = Did::parse("did:plc:a").unwrap();
        let row = Mutation::Upsert(crate::mapper::Row {
            table: TableId(0),
            uri: "at://did:plc:a/app.bsky.feed.like/1".into(),
            did: d.clone(),
            rkey: "1".into(),
            cid: "c".into(),
            rev: "3a".into(),
            record: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
            values: Vec::new(),
        });
        let del = Mutation::Delete {
            table: TableId(0),
            uri: "at://did:plc:a/app.bsky.feed.like/2".into(),
            did: d.clone(),
            rev: "3a".into(),
        };
        let page = crate::batch::ImportPage::for_test();
        let batch = |mutations: Vec<Mutation>, repos: bool, import: bool| Batch {
            mutations,
            repos: if repos {
                HashMap::from([(d.clone(), RepoChange::default())])
            } else {
                HashMap::new()
            },
            last_time_us: 0,
            events: 1,
            checkpoint: if import {
                Checkpoint::ImportPage(page.clone())
            } else {
                Checkpoint::Stream(Vec::new())
            },
        };
        assert!(shared(&batch(vec![row.clone()], false, true)));
        assert!(
            !shared(&batch(vec![row.clone()], false, false)),
            "a live batch"
        );
        assert!(
            !shared(&batch(vec![row.clone(), del], false, true)),
            "a delete"
        );
        assert!(!shared(&batch(vec![row], true, true)), "a repo change");
    }
}
