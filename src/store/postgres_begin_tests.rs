//! The opening of a PostgreSQL commit transaction ([`PgStore::begin`]):
//! one round trip that leaves the transaction open with
//! `synchronous_commit` off and the DID locks of the batch held (shared
//! by a plain import page, exclusive otherwise).

use std::time::Duration;

use sqlx::Row as _;

use super::{PgStore, begin_sql};
use crate::batch::{Batch, Checkpoint, ImportPage};
use crate::mapper::Mutation;
use crate::store::Store;
use crate::store::commit::tests::{batch, open, upsert};
use crate::store::did_locks;

#[test]
fn the_lock_keys_are_written_into_the_text() {
    assert_eq!(
        begin_sql(&[], false),
        "BEGIN; SET LOCAL synchronous_commit = off"
    );
    assert_eq!(
        begin_sql(&[3, 700], false),
        format!(
            "BEGIN; SET LOCAL synchronous_commit = off; \
             SELECT pg_advisory_xact_lock({}, k) FROM UNNEST('{{3,700}}'::int4[]) AS k",
            did_locks::NAMESPACE
        )
    );
    assert_eq!(
        begin_sql(&[3], true),
        format!(
            "BEGIN; SET LOCAL synchronous_commit = off; \
             SELECT pg_advisory_xact_lock_shared({}, k) FROM UNNEST('{{3}}'::int4[]) AS k",
            did_locks::NAMESPACE
        )
    );
}

/// An import page of upserts for repo `a`, collection `collection`.
fn import_page(collection: &str) -> Batch {
    let mut row = upsert("a", "1", "3a");
    if let Mutation::Upsert(r) = &mut row {
        r.uri = format!("at://did:plc:a/{collection}/1");
    }
    let mut b = batch(vec![row], vec![], 0);
    b.checkpoint = Checkpoint::ImportPage(ImportPage::for_test());
    b
}

/// Two import pages of one repo's collections hold its DID lock at the same
/// time (neither waits for the other's transaction); a live batch of the
/// same DID could not take it until both end, and vice versa.
#[tokio::test]
async fn import_pages_of_one_repo_share_its_lock_and_a_live_batch_waits() {
    let (store, _) = open(true).await;
    let Store::Postgres(p) = &store else {
        unreachable!("open(true) is PostgreSQL")
    };
    let (likes, posts) = (
        import_page("app.bsky.feed.like"),
        import_page("app.bsky.feed.post"),
    );
    assert!(did_locks::shared(&likes) && did_locks::shared(&posts));
    let key = did_locks::buckets(&likes)[0];
    assert_eq!(did_locks::buckets(&posts), vec![key]);
    let other = sqlx::PgPool::connect_with(p.pool().connect_options().as_ref().clone())
        .await
        .unwrap();
    let first = PgStore::begin(p, &likes).await.unwrap();
    // Exclusive, this would wait until `first` ends: the bound only turns
    // that wait into a failure.
    let second = tokio::time::timeout(Duration::from_secs(10), PgStore::begin(p, &posts))
        .await
        .expect("the second page does not wait for the first")
        .unwrap();
    assert!(
        !lock_free(&other, key).await,
        "a live batch's exclusive lock waits for the pages"
    );
    first.rollback().await.unwrap();
    assert!(!lock_free(&other, key).await, "and for the second page too");
    second.rollback().await.unwrap();
    assert!(lock_free(&other, key).await, "free once both end");
    let live = batch(vec![upsert("a", "2", "3b")], vec![], 1);
    assert!(!did_locks::shared(&live));
    let live_tx = PgStore::begin(p, &live).await.unwrap();
    let shared_free: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock_shared($1, $2)")
        .bind(did_locks::NAMESPACE)
        .bind(key)
        .fetch_one(&other)
        .await
        .unwrap();
    assert!(!shared_free, "an import page waits for a live batch");
    live_tx.rollback().await.unwrap();
}

/// Inside the transaction `synchronous_commit` is off and another session
/// cannot take the batch's DID lock; once it ends, both are as before.
#[tokio::test]
async fn a_commit_transaction_opens_with_its_did_locks_held() {
    let (store, _) = open(true).await;
    let Store::Postgres(p) = &store else {
        unreachable!("open(true) is PostgreSQL")
    };
    let b = batch(vec![upsert("a", "1", "3a")], vec![], 1);
    let key = did_locks::buckets(&b)[0];
    let other = sqlx::PgPool::connect_with(p.pool().connect_options().as_ref().clone())
        .await
        .unwrap();
    let mut tx = PgStore::begin(p, &b).await.unwrap();
    let sync: String = sqlx::query("SHOW synchronous_commit")
        .fetch_one(&mut *tx)
        .await
        .unwrap()
        .get(0);
    assert_eq!(sync, "off");
    assert!(
        !lock_free(&other, key).await,
        "the batch's DID lock is held by its transaction"
    );
    tx.rollback().await.unwrap();
    assert!(
        lock_free(&other, key).await,
        "released when the transaction ends"
    );
}

/// Whether another session could take DID lock `key` right now.
async fn lock_free(pool: &sqlx::PgPool, key: i32) -> bool {
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, $2)")
        .bind(did_locks::NAMESPACE)
        .bind(key)
        .fetch_one(pool)
        .await
        .unwrap()
}
