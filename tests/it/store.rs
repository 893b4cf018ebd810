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

/// Several processes starting at once on a new database (a rolling deploy,
/// `consume` and `import` started together): every one migrates and creates
/// the mapper tables without error. Each store has its own pool, so the
/// database sees separate sessions racing, as it would from separate
/// processes; barriers make them migrate together and create the tables
/// together, round after round.
async fn simultaneous_starts_on_a_new_database(hint: &'static str) {
    const STARTERS: usize = 4;
    const ROUNDS: usize = 6;
    // The built-in tables come from the migrations; a declarative one is
    // created by `prepare`.
    let mut tables: Vec<_> = parity::mapper::builtin::ALL
        .iter()
        .map(|b| b.schema())
        .collect();
    tables.push(
        parity::mapper::TableSchema::new(
            "statuses",
            &[("title", parity::mapper::ColumnType::Text)],
        )
        .with_index(&["title"]),
    );
    for round in 0..ROUNDS {
        let db = if hint.is_empty() {
            TestDb::sqlite()
        } else {
            TestDb::postgres(hint).await
        };
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(STARTERS));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..STARTERS {
            let (url, barrier, tables) = (db.url.clone(), barrier.clone(), tables.clone());
            tasks.spawn(async move {
                let mut store = Store::connect(&DatabaseConfig {
                    url,
                    ..Default::default()
                })
                .await?;
                barrier.wait().await;
                let migrated = store.migrate().await;
                barrier.wait().await;
                migrated?;
                store.prepare(&tables, &[]).await?;
                store.close().await;
                Ok::<_, StoreError>(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            if let Err(e) = r.unwrap() {
                panic!("round {round}: a simultaneous start failed: {e}");
            }
        }
        let s = Store::connect(&DatabaseConfig {
            url: db.url.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        assert_eq!(s.pending_migrations().await.unwrap(), 0);
        s.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn simultaneous_starts_on_a_new_database_sqlite() {
    simultaneous_starts_on_a_new_database("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn simultaneous_starts_on_a_new_database_postgres() {
    simultaneous_starts_on_a_new_database("simultaneous_starts").await;
}

/// sqlx 0.9.0 leaves Nagle's algorithm on its sockets, which made every
/// large statement wait ~40 ms for the server's delayed ACK: a PostgreSQL
/// store sets `TCP_NODELAY` on each connection it opens. Its connections
/// go through a proxy on a port of their own, so only they are looked at.
#[tokio::test]
async fn postgres_connections_have_tcp_nodelay() {
    let db = TestDb::postgres("tcp_nodelay").await;
    let mut url = url::Url::parse(&db.url).unwrap();
    let target = format!(
        "{}:{}",
        url.host_str().unwrap(),
        url.port_or_known_default().unwrap()
    );
    let proxy = common::stall_proxy::StallProxy::start(&target).await;
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(proxy.addr.port())).unwrap();
    let store = Store::connect(&DatabaseConfig {
        url: url.to_string(),
        ..Default::default()
    })
    .await
    .unwrap();
    // Several connections at once, so the pool opens more than its first.
    let queries = (0..3).map(|_| store.pending_migrations());
    for r in futures_util::future::join_all(queries).await {
        r.unwrap();
    }
    assert!(
        parity::store::tcp_nodelay::all_set_to(proxy.addr.port()).unwrap(),
        "a PostgreSQL connection of the store has Nagle's algorithm on"
    );
    store.close().await;
}
