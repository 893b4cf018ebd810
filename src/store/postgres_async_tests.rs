//! A pool that commits asynchronously ([`DatabaseConfig::async_commit`],
//! what `import` connects with): its sessions do not wait for the WAL
//! flush, and closing the store waits once for every commit before it.

use sqlx::Row as _;

use super::PgStore;
use crate::store::DatabaseConfig;

fn config(async_commit: bool) -> DatabaseConfig {
    DatabaseConfig {
        url: std::env::var("TEST_PG_URL").unwrap_or_else(|_| {
            "postgres://parity_test:parity_test@127.0.0.1:5432/parity_test".into()
        }),
        async_commit,
        ..Default::default()
    }
}

async fn synchronous_commit(store: &PgStore) -> String {
    sqlx::query("SHOW synchronous_commit")
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn only_an_async_commit_pool_commits_without_waiting_for_the_disk() {
    let fast = PgStore::connect(&config(true)).await.unwrap();
    assert_eq!(synchronous_commit(&fast).await, "off");
    fast.close().await;
    let durable = PgStore::connect(&config(false)).await.unwrap();
    assert_ne!(synchronous_commit(&durable).await, "off");
    durable.close().await;
}

/// A commit of the async pool is in the WAL but not yet on disk; once the
/// store is closed the WAL is flushed past it. (Without the flush in
/// `close` this fails unless the WAL writer, which flushes on its own
/// every `wal_writer_delay`, happens to run in the few milliseconds
/// between: five runs in six failed so.)
#[tokio::test]
async fn closing_an_async_commit_store_makes_its_commits_durable() {
    let store = PgStore::connect(&config(true)).await.unwrap();
    let other = sqlx::PgPool::connect(&config(false).url).await.unwrap();
    let mut committed = None;
    // The WAL writer flushes on its own every `wal_writer_delay`; look for
    // a moment just after a commit, before it has.
    for _ in 0..100 {
        let row = sqlx::raw_sql(
            "BEGIN; SELECT txid_current(); COMMIT; \
             SELECT pg_current_wal_insert_lsn()::text, \
                    pg_current_wal_flush_lsn() < pg_current_wal_insert_lsn()",
        )
        .fetch_all(store.pool())
        .await
        .unwrap()
        .pop()
        .unwrap();
        if row.get::<bool, _>(1) {
            committed = Some(row.get::<String, _>(0));
            break;
        }
    }
    let committed = committed.expect("an asynchronous commit not yet flushed");
    store.close().await;
    let durable: bool = sqlx::query_scalar("SELECT pg_current_wal_flush_lsn() >= $1::pg_lsn")
        .bind(&committed)
        .fetch_one(&other)
        .await
        .unwrap();
    assert!(
        durable,
        "the WAL is flushed past {committed} when the store closes"
    );
    other.close().await;
}
