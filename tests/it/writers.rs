//! Several writer connections (`database.writers`, PostgreSQL): each
//! commits the share of every batch whose DIDs hash to it, and the stream
//! cursor stored is the low watermark of what every writer committed.
//!
//! Scenarios: the watermark through the store (the slowest writer holds it,
//! a writer that has committed nothing holds it back entirely, positions
//! of another writer count are not counted, concurrent writers never leave
//! it behind the last commit); and the process (SIGKILL while one writer is
//! held by a lock on one of its DIDs and the others have run ahead:
//! restarting, with another writer count, from the low watermark ends with
//! the same tables as an uninterrupted run).

use crate::common;

use std::process::{Child, Stdio};
use std::time::Duration;

use common::jetstream::JetstreamServer;
use common::{TestDb, last_time_us};
use parity::batch::{Batch, Checkpoint, Shard};
use parity::event::{Cursor, Did};
use parity::store::{DatabaseConfig, Store, shard};

use crate::resume_after_crash::mapped_lines;

async fn open(db: &TestDb) -> Store {
    let mut store = Store::connect(&DatabaseConfig {
        url: db.url.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    store.prepare(&[], &[]).await.unwrap();
    store
}

/// An empty share of writer `writer` of `writers` at `cursor` of stream `s`.
fn share(writer: u32, writers: u32, cursor: i64) -> Batch {
    Batch {
        mutations: Vec::new(),
        repos: Default::default(),
        last_time_us: 0,
        events: 0,
        checkpoint: Checkpoint::Shard(Shard {
            writer,
            writers,
            cursors: vec![("s".to_owned(), Cursor(cursor))],
        }),
    }
}

/// The stored cursor is the lowest writer position, and only once every
/// writer has one; a row of a writer beyond the count (an earlier run with
/// more writers) is not counted.
async fn the_cursor_is_the_slowest_writers_position(db: TestDb) {
    let store = open(&db).await;
    store.commit(&share(5, 6, 1)).await.unwrap();
    store.commit(&share(0, 2, 10)).await.unwrap();
    assert_eq!(
        store.load_cursor("s").await.unwrap(),
        None,
        "writer 1 has committed nothing: its events may be missing from 0 on"
    );
    store.commit(&share(1, 2, 5)).await.unwrap();
    assert_eq!(store.load_cursor("s").await.unwrap(), Some(Cursor(5)));
    store.commit(&share(1, 2, 20)).await.unwrap();
    assert_eq!(store.load_cursor("s").await.unwrap(), Some(Cursor(10)));
    store.commit(&share(0, 2, 30)).await.unwrap();
    assert_eq!(store.load_cursor("s").await.unwrap(), Some(Cursor(20)));

    // A new run forgets the positions and keeps the cursor until every
    // writer has committed again.
    store.reset_writer_cursors("s").await.unwrap();
    store.commit(&share(0, 2, 40)).await.unwrap();
    assert_eq!(store.load_cursor("s").await.unwrap(), Some(Cursor(20)));
    store.commit(&share(1, 2, 35)).await.unwrap();
    assert_eq!(store.load_cursor("s").await.unwrap(), Some(Cursor(35)));
}

backend_tests!(cursor_is_the_slowest_writers_position, |db| {
    the_cursor_is_the_slowest_writers_position(db)
});

/// Writers that commit at the same moment never leave the cursor behind
/// the last of them: each reads the others' positions only after their
/// commits (the watermark lock), so after every round all writers have
/// committed, the cursor is that round's.
async fn concurrent_writers_leave_the_cursor_at_the_last_commit(db: TestDb) {
    let store = open(&db).await;
    const WRITERS: u32 = 4;
    for round in 1..=40i64 {
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..WRITERS {
            let store = store.clone();
            tasks.spawn(async move { store.commit(&share(w, WRITERS, round)).await });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap().unwrap();
        }
        assert_eq!(
            store.load_cursor("s").await.unwrap(),
            Some(Cursor(round)),
            "round {round}"
        );
    }
}

backend_tests!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    concurrent_writers_never_leave_the_cursor_behind,
    |db| concurrent_writers_leave_the_cursor_at_the_last_commit(db)
);

fn spawn(db: &TestDb, endpoint: &str, writers: u32) -> Child {
    common::process::command()
        .args(["consume", "--endpoint", endpoint, "--database-url", &db.url])
        .env("PARITY_DATABASE_WRITERS", writers.to_string())
        .env("PARITY_BATCH_MAX_EVENTS", "10")
        .env("PARITY_BATCH_MAX_AGE_MS", "20")
        .env("PARITY_SOURCE_REWIND_SECONDS", "0")
        .env("PARITY_SOURCE_BACKOFF_INITIAL_MS", "20")
        .env("PARITY_LOG_PROGRESS_INTERVAL_SECONDS", "0")
        .env("PARITY_LOG_LEVEL", "warn")
        .env("PARITY_METRICS_ADDR", "127.0.0.1:0")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn parity")
}

/// Polls (another process writes) until `sql`'s scalar is `want`.
async fn wait_scalar(db: &TestDb, child: &mut Child, sql: &str, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if db.scalar(sql).await.as_deref() == Some(want) {
            return;
        }
        assert!(child.try_wait().unwrap().is_none(), "parity exited early");
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {sql} = {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sigterm(child: &mut Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
}

/// SIGKILL while writers stand at different positions: one writer waits on
/// the advisory lock of a DID that first appears in the 31st event (the
/// test holds it), the other three run ahead. The stored cursor is the
/// held writer's position, below theirs. Restarted with 2 writers instead
/// of 4 (the lock released), parity resumes from that cursor and the tables
/// equal those of an uninterrupted run: nothing the held writer had not
/// committed is lost, and what the others committed twice is the same.
/// PostgreSQL only: SQLite has one writer (`database.writers` = 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_writers_apart_resumes_from_the_low_watermark() {
    let lines = mapped_lines();
    let last = last_time_us(&lines);

    let clean = TestDb::postgres("writers_clean").await;
    let server = JetstreamServer::start(lines.clone()).await;
    let mut child = spawn(&clean, &server.url(), 4);
    server.wait_connections(1).await;
    server.publish_all();
    wait_scalar(
        &clean,
        &mut child,
        "SELECT CAST(MAX(cursor) AS TEXT) FROM parity_cursors",
        &last.to_string(),
    )
    .await;
    sigterm(&mut child);

    let crashed = TestDb::postgres("writers_crashed").await;
    let held = Did::parse(lines[30].did.as_deref().unwrap()).unwrap();
    assert!(
        lines[..30]
            .iter()
            .all(|l| l.did.as_deref() != Some(held.as_str())),
        "the held DID first appears in event 31"
    );
    let held_writer = shard::writer_of(&held, 4);
    let lock = sqlx::PgPool::connect(&crashed.url).await.unwrap();
    let mut lock_conn = lock.acquire().await.unwrap();
    let (ns, key) = shard::lock_key(&held);
    sqlx::query("SELECT pg_advisory_lock($1, $2)")
        .bind(ns)
        .bind(key)
        .execute(&mut *lock_conn)
        .await
        .unwrap();

    let server = JetstreamServer::start(lines.clone()).await;
    let mut child = spawn(&crashed, &server.url(), 4);
    server.wait_connections(1).await;
    server.publish_all();
    // The three free writers run ahead of the held one, which stays at a
    // batch before event 31.
    wait_scalar(
        &crashed,
        &mut child,
        &format!(
            "SELECT CAST(COUNT(*) AS TEXT) FROM parity_writer_cursors \
             WHERE writer <> {held_writer} AND cursor > (SELECT cursor FROM parity_writer_cursors WHERE writer = {held_writer})"
        ),
        "3",
    )
    .await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let held_at: i64 = crashed
        .scalar(&format!(
            "SELECT CAST(cursor AS TEXT) FROM parity_writer_cursors WHERE writer = {held_writer}"
        ))
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert!(held_at < lines[30].cursor.unwrap());
    assert_eq!(
        crashed.cursor().await,
        Some(held_at),
        "the stored cursor is the held writer's position"
    );
    let ahead: i64 = crashed
        .scalar("SELECT CAST(MAX(cursor) AS TEXT) FROM parity_writer_cursors")
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert!(ahead > held_at, "the other writers had run ahead");
    drop(lock_conn);
    lock.close().await;

    let mut child = spawn(&crashed, &server.url(), 2);
    wait_scalar(
        &crashed,
        &mut child,
        "SELECT CAST(MAX(cursor) AS TEXT) FROM parity_cursors",
        &last.to_string(),
    )
    .await;
    sigterm(&mut child);
    assert!(
        server.requests.lock().unwrap()[1].contains(&format!("cursor={held_at}")),
        "resumed from the low watermark"
    );
    assert_eq!(
        crashed
            .scalar("SELECT CAST(COUNT(*) AS TEXT) FROM parity_writer_cursors")
            .await
            .as_deref(),
        Some("2"),
        "the earlier run's four positions were replaced by two"
    );
    assert_eq!(crashed.snapshot().await, clean.snapshot().await);
}
