//! The per-DID facts against real SQLite connections on one file: a
//! commit by another connection must be seen, the writer's own changes
//! must be forgotten, and revs are only ever lower bounds.

use rusqlite::{Connection, TransactionBehavior};

use super::RepoCache;

const PURGING: Option<&str> = Some("'deleted', 'takendown'");

/// Two connections on a fresh file with the `parity_repos` columns the
/// cache reads.
fn open() -> (tempfile::TempDir, Connection, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let a = Connection::open(&path).unwrap();
    a.execute_batch(
        "PRAGMA journal_mode = WAL; \
         CREATE TABLE parity_repos (did TEXT PRIMARY KEY NOT NULL, \
         status TEXT NOT NULL DEFAULT 'active', rev TEXT) WITHOUT ROWID;",
    )
    .unwrap();
    let b = Connection::open(&path).unwrap();
    (dir, a, b)
}

/// What the writer would answer for `did` in a new write transaction.
fn purging_now(cache: &mut RepoCache, conn: &mut Connection, did: &str) -> bool {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    cache.begin(&tx).unwrap();
    let p = cache.purging(&tx, did, PURGING).unwrap();
    tx.commit().unwrap();
    p
}

#[test]
fn another_connections_commit_is_seen_at_the_next_transaction() {
    let (_dir, mut a, b) = open();
    let mut cache = RepoCache::new(16);
    assert!(!purging_now(&mut cache, &mut a, "did:plc:x"));
    // Asked again without any other commit: answered from memory.
    assert!(!purging_now(&mut cache, &mut a, "did:plc:x"));
    assert_eq!(cache.len(), 1);

    b.execute(
        "INSERT INTO parity_repos (did, status) VALUES ('did:plc:x', 'deleted')",
        [],
    )
    .unwrap();
    assert!(purging_now(&mut cache, &mut a, "did:plc:x"));

    b.execute(
        "UPDATE parity_repos SET status = 'active' WHERE did = 'did:plc:x'",
        [],
    )
    .unwrap();
    assert!(!purging_now(&mut cache, &mut a, "did:plc:x"));
}

#[test]
fn the_writers_own_commits_keep_what_it_knows() {
    let (_dir, mut a, _b) = open();
    let mut cache = RepoCache::new(16);
    assert!(!purging_now(&mut cache, &mut a, "did:plc:x"));
    a.execute(
        "INSERT INTO parity_repos (did, rev) VALUES ('did:plc:x', '3a')",
        [],
    )
    .unwrap();
    let tx = a
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    cache.begin(&tx).unwrap();
    // Its own commit does not move data_version: still remembered.
    assert_eq!(cache.len(), 1);
    tx.commit().unwrap();
}

#[test]
fn a_forgotten_did_is_read_again() {
    let (_dir, mut a, _b) = open();
    let mut cache = RepoCache::new(16);
    assert!(!purging_now(&mut cache, &mut a, "did:plc:x"));
    a.execute(
        "INSERT INTO parity_repos (did, status) VALUES ('did:plc:x', 'takendown')",
        [],
    )
    .unwrap();
    assert!(!purging_now(&mut cache, &mut a, "did:plc:x"), "remembered");
    cache.forget("did:plc:x");
    assert!(purging_now(&mut cache, &mut a, "did:plc:x"));
}

#[test]
fn revs_are_lower_bounds() {
    let (_dir, mut a, _b) = open();
    a.execute(
        "INSERT INTO parity_repos (did, rev) VALUES ('did:plc:x', '3b')",
        [],
    )
    .unwrap();
    let mut cache = RepoCache::new(16);
    // Unknown DID: nothing is claimed.
    assert!(!cache.rev_covers("did:plc:x", "3a"));
    cache.offered_rev("did:plc:x", "3c");
    assert!(
        !cache.rev_covers("did:plc:x", "3a"),
        "status unknown: not kept"
    );
    assert!(!purging_now(&mut cache, &mut a, "did:plc:x"));
    assert!(cache.rev_covers("did:plc:x", "3a"));
    assert!(cache.rev_covers("did:plc:x", "3b"));
    assert!(!cache.rev_covers("did:plc:x", "3c"));
    cache.offered_rev("did:plc:x", "3c");
    assert!(cache.rev_covers("did:plc:x", "3c"));
    cache.offered_rev("did:plc:x", "3a");
    assert!(cache.rev_covers("did:plc:x", "3c"), "never lowered");
}

#[test]
fn no_purging_status_reads_nothing() {
    let (_dir, a, _b) = open();
    let mut cache = RepoCache::new(16);
    assert!(!cache.purging(&a, "did:plc:x", None).unwrap());
    assert_eq!(cache.len(), 0);
}

#[test]
fn the_cache_is_bounded() {
    let (_dir, mut a, _b) = open();
    let mut cache = RepoCache::new(2);
    for d in ["did:plc:a", "did:plc:b", "did:plc:c"] {
        purging_now(&mut cache, &mut a, d);
    }
    assert!(cache.len() <= 2, "{}", cache.len());
}
