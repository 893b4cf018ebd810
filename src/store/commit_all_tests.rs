//! Several batches in one SQLite transaction ([`Store::commit_all`]): in
//! order, each with its own stats, all of them or none; PostgreSQL does
//! not offer it.

use std::sync::Arc;

use super::Store;
use super::commit::tests::{batch, cursor, open, upsert};

async fn rev(store: &Store, rkey: &str) -> Option<String> {
    store
        .fetch_optional::<(String,)>("SELECT rev FROM likes WHERE rkey = $1", vec![rkey.into()])
        .await
        .unwrap()
        .map(|(r,)| r)
}

/// The second batch rewrites a row of the first (a newer rev) and adds
/// one: the rows are the second's, the cursor is the second's, each batch
/// gets its own stats, and it all took one transaction.
#[tokio::test]
async fn batches_committed_together_land_in_order() {
    let (store, _dir) = open(false).await;
    assert!(store.commits_together());
    let before = store.sqlite_transactions().unwrap();
    let first = Arc::new(batch(vec![upsert("a", "k1", "3a")], vec![], 10));
    let second = Arc::new(batch(
        vec![upsert("a", "k1", "3b"), upsert("a", "k2", "3b")],
        vec![],
        20,
    ));
    let stats = store
        .commit_all(vec![first.clone(), second.clone()])
        .await
        .unwrap();
    let upserted: Vec<u64> = stats.iter().map(|s| s.upserted_total()).collect();
    assert_eq!(upserted, [1, 2]);
    assert_eq!(rev(&store, "k1").await.as_deref(), Some("3b"));
    assert_eq!(rev(&store, "k2").await.as_deref(), Some("3b"));
    assert_eq!(cursor(&store).await, Some(20));
    assert_eq!(store.sqlite_transactions().unwrap(), before + 1);
}

/// The second batch is refused (a negative cursor breaks parity's own
/// CHECK): nothing of the first is kept either, so its caller can commit
/// them one by one.
#[tokio::test]
async fn a_refused_batch_leaves_nothing_of_its_group() {
    let (store, _dir) = open(false).await;
    let first = Arc::new(batch(vec![upsert("a", "k1", "3a")], vec![], 10));
    let refused = Arc::new(batch(vec![upsert("a", "k2", "3b")], vec![], -1));
    let err = store
        .commit_all(vec![first.clone(), refused])
        .await
        .unwrap_err();
    assert!(err.is_rejection(), "{err}");
    assert_eq!(rev(&store, "k1").await, None);
    assert_eq!(cursor(&store).await, None);
    // Alone, the first commits.
    store.commit(&first).await.unwrap();
    assert_eq!(cursor(&store).await, Some(10));
}

/// PostgreSQL's writers commit each batch in its own transaction: it does
/// not offer to commit them together, and refuses to, writing nothing.
#[tokio::test]
async fn postgres_commits_each_batch_alone() {
    let (store, _) = open(true).await;
    assert!(!store.commits_together());
    assert_eq!(store.sqlite_transactions(), None);
    let first = Arc::new(batch(vec![upsert("a", "k1", "3a")], vec![], 10));
    assert!(store.commit_all(vec![first]).await.is_err());
    assert_eq!(cursor(&store).await, None);
}
