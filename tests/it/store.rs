//! Store-level behaviour not covered through the pipeline: tombstone
//! expiry, and a corrupt stored cursor stopping the process.

use crate::common;

use std::time::{Duration, Instant};

use common::TestDb;
use parity::batch::{BatchConfig, Batcher, PurgePolicy};
use parity::event::{Cursor, Did};
use parity::mapper::{Mutation, TableId};
use parity::store::{DatabaseConfig, Store, StoreError};

async fn open(db: &TestDb) -> Store {
    let mut s = Store::connect(&DatabaseConfig {
        url: db.url.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    s.migrate().await.unwrap();
    s.prepare(&[parity::mapper::builtin::Builtin::Likes.schema()], &[])
        .await
        .unwrap();
    s
}

async fn tombstones_expire(db: TestDb) {
    let store = open(&db).await;
    let mut b = Batcher::new(&BatchConfig::default(), PurgePolicy::default());
    b.seen("s", Cursor(1), 1, true, Instant::now());
    b.push(Mutation::Delete {
        table: TableId(0),
        uri: "at://did:plc:a/app.bsky.feed.like/1".into(),
        did: Did::parse("did:plc:a").unwrap(),
        rev: "3abc".into(),
    });
    store.commit(&b.take().unwrap()).await.unwrap();
    assert_eq!(db.count("parity_tombstones").await, 1);
    assert_eq!(
        store
            .expire_tombstones(Duration::from_secs(3_600))
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.expire_tombstones(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(db.count("parity_tombstones").await, 0);
}

backend_tests!(tombstones_expire, |db| tombstones_expire(db));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_cursor_is_corruption() {
    let db = TestDb::sqlite();
    let store = open(&db).await;
    // The CHECK constraint keeps parity from writing this; corruption from
    // outside bypasses it.
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
    sqlx::query("PRAGMA ignore_check_constraints = ON")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO parity_cursors (stream, cursor, updated_at) VALUES ('jetstream-v1:x', -7, 'now')")
        .execute(&mut conn)
        .await
        .unwrap();
    let err = store.load_cursor("jetstream-v1:x").await.unwrap_err();
    assert!(
        matches!(err, StoreError::CorruptCursor { value: -7, .. }),
        "{err}"
    );
    assert!(!err.is_transient());
}
