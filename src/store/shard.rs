//! Which writer commits what, when several writer connections share a
//! stream (`database.writers` > 1).
//!
//! Owns: the partition of DIDs over writers ([`writer_of`]) and the split
//! of one consumed [`Batch`] into one share per writer ([`split`]). Pure: no
//! SQL, no IO.
//!
//! Invariants:
//! - a DID always goes to the same writer (for a given writer count), so
//!   everything about one DID (its rows, tombstones, account state, rev)
//!   commits in one writer's order, which is the stream's order;
//! - the partition follows the DID's advisory-lock bucket (`did_locks`), so
//!   two writers never take the same lock key and never wait on each other
//!   for a DID;
//! - every writer gets a share of every batch, even an empty one, carrying
//!   the batch's stream cursors: a writer with nothing to write still moves
//!   its position, or the low watermark would stall behind it;
//! - the shares' `events` add up to the batch's.

use std::collections::HashMap;

use super::did_locks;
use crate::batch::{Batch, Checkpoint, Shard};
use crate::event::Did;

/// The writer (`0..writers`) that commits everything about `did`.
pub fn writer_of(did: &Did, writers: u32) -> u32 {
    did_locks::bucket(did) as u32 % writers.max(1)
}

/// The PostgreSQL advisory lock (two-key form) a commit that writes `did`
/// takes first: operators and tests can hold it to see what waits on it.
pub fn lock_key(did: &Did) -> (i32, i32) {
    (did_locks::NAMESPACE, did_locks::bucket(did))
}

/// One share per writer of a consumed batch, indexed by writer. With one
/// writer, the batch itself, unchanged. A batch whose checkpoint is not a
/// stream's (an import page, already a share) is not split either: it is
/// the first and only element, for writer 0.
pub fn split(batch: Batch, writers: u32) -> Vec<Batch> {
    let Checkpoint::Stream(cursors) = &batch.checkpoint else {
        return vec![batch];
    };
    if writers <= 1 {
        return vec![batch];
    }
    let cursors = cursors.clone();
    let mut shares: Vec<Batch> = (0..writers)
        .map(|writer| Batch {
            mutations: Vec::new(),
            repos: HashMap::new(),
            last_time_us: batch.last_time_us,
            events: 0,
            checkpoint: Checkpoint::Shard(Shard {
                writer,
                writers,
                cursors: cursors.clone(),
            }),
        })
        .collect();
    let mut routed = 0usize;
    for m in batch.mutations {
        let w = writer_of(m.did(), writers) as usize;
        shares[w].mutations.push(m);
        if w != 0 {
            shares[w].events += 1;
            routed += 1;
        }
    }
    for (did, change) in batch.repos {
        let w = writer_of(&did, writers) as usize;
        shares[w].repos.insert(did, change);
    }
    // Events the other shares do not account for (filtered ones, repo
    // events, mutations merged in the batcher) stay with writer 0.
    shares[0].events = batch.events.saturating_sub(routed);
    shares
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::RepoChange;
    use crate::event::Cursor;
    use crate::mapper::{Mutation, TableId};

    fn did(i: usize) -> Did {
        Did::parse(&format!("did:plc:w{i:04}")).unwrap()
    }

    fn delete(i: usize, rkey: usize) -> Mutation {
        Mutation::Delete {
            table: TableId(0),
            uri: format!("at://{}/app.bsky.feed.like/{rkey}", did(i)),
            did: did(i),
            rev: format!("3a{rkey:04}"),
        }
    }

    fn batch(mutations: Vec<Mutation>, repos: Vec<Did>, events: usize) -> Batch {
        Batch {
            mutations,
            repos: repos
                .into_iter()
                .map(|d| (d, RepoChange::default()))
                .collect(),
            last_time_us: 77,
            events,
            checkpoint: Checkpoint::Stream(vec![("s".to_owned(), Cursor(9))]),
        }
    }

    /// Each DID's mutations and repo change land in one share, in batch
    /// order; every share carries the stream cursors under its writer; the
    /// events add up.
    #[test]
    fn a_did_goes_to_one_writer_in_order_and_every_writer_gets_the_cursor() {
        let mutations: Vec<Mutation> = (0..200).map(|k| delete(k % 40, k)).collect();
        let b = batch(mutations, (0..40).map(did).collect(), 250);
        let shares = split(b, 4);
        assert_eq!(shares.len(), 4);
        let mut seen = 0;
        for (w, share) in shares.iter().enumerate() {
            assert_eq!(
                share.checkpoint,
                Checkpoint::Shard(Shard {
                    writer: w as u32,
                    writers: 4,
                    cursors: vec![("s".to_owned(), Cursor(9))]
                })
            );
            assert_eq!(share.last_time_us, 77);
            for m in &share.mutations {
                assert_eq!(writer_of(m.did(), 4), w as u32);
            }
            for d in share.repos.keys() {
                assert_eq!(writer_of(d, 4), w as u32);
            }
            // Batch order within the share.
            let keys: Vec<&str> = share.mutations.iter().map(|m| m.uri()).collect();
            let mut sorted_by_rkey = keys.clone();
            sorted_by_rkey.sort_by_key(|u| u.rsplit('/').next().unwrap().parse::<usize>().unwrap());
            assert_eq!(keys, sorted_by_rkey);
            seen += share.mutations.len();
        }
        assert_eq!(seen, 200);
        assert_eq!(shares.iter().map(|s| s.events).sum::<usize>(), 250);
        assert!(
            shares.iter().all(|s| !s.mutations.is_empty()),
            "40 DIDs reach all 4 writers"
        );
    }

    /// A writer with no DID in the batch still gets a share with the
    /// cursors, so its position moves.
    #[test]
    fn an_empty_share_still_moves_its_writer() {
        let shares = split(batch(vec![delete(1, 1)], vec![], 1), 3);
        let empty: Vec<&Batch> = shares.iter().filter(|s| s.mutations.is_empty()).collect();
        assert_eq!(empty.len(), 2);
        for s in empty {
            assert!(
                matches!(&s.checkpoint, Checkpoint::Shard(sh) if sh.cursors == vec![("s".to_owned(), Cursor(9))])
            );
        }
    }

    #[test]
    fn one_writer_keeps_the_batch_as_it_is() {
        let shares = split(batch(vec![delete(1, 1)], vec![did(2)], 5), 1);
        assert_eq!(shares.len(), 1);
        assert_eq!(
            shares[0].checkpoint,
            Checkpoint::Stream(vec![("s".to_owned(), Cursor(9))])
        );
        assert_eq!((shares[0].mutations.len(), shares[0].events), (1, 5));
    }

    /// Writers' DIDs never share an advisory-lock key.
    #[test]
    fn writers_never_share_a_lock_key() {
        let mut owner: HashMap<i32, u32> = HashMap::new();
        for i in 0..2_000 {
            let d = did(i);
            let w = writer_of(&d, 3);
            assert_eq!(*owner.entry(did_locks::bucket(&d)).or_insert(w), w);
        }
    }
}
