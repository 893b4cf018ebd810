//! The opening of a PostgreSQL commit transaction ([`PgStore::begin`]):
//! one round trip that leaves the transaction open with
//! `synchronous_commit` off and the DID locks of the batch held.

use sqlx::Row as _;

use super::{PgStore, begin_sql};
use crate::store::Store;
use crate::store::commit::tests::{batch, open, upsert};
use crate::store::did_locks;

#[test]
fn the_lock_keys_are_written_into_the_text() {
    assert_eq!(begin_sql(&[]), "BEGIN; SET LOCAL synchronous_commit = off");
    assert_eq!(
        begin_sql(&[3, 700]),
        format!(
            "BEGIN; SET LOCAL synchronous_commit = off; \
             SELECT pg_advisory_xact_lock({}, k) FROM UNNEST('{{3,700}}'::int4[]) AS k",
            did_locks::NAMESPACE
        )
    );
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
