//! Crash safety: SIGKILL the `parity` process mid-stream (with a partial
//! batch in memory), start it again, and the tables must equal those of an
//! uninterrupted run: nothing lost, nothing duplicated. Also: SIGTERM
//! commits the buffered batch and exits 0.

use crate::common;

use std::process::{Child, Stdio};
use std::time::Duration;

use common::jetstream::{JetstreamServer, Line};
use common::{TestDb, fixture_lines, last_time_us};

fn spawn(db: &TestDb, endpoint: &str, max_age_ms: u64) -> Child {
    common::process::command()
        .args(["consume", "--endpoint", endpoint, "--database-url", &db.url])
        .env("PARITY_BATCH_MAX_EVENTS", "10")
        .env("PARITY_BATCH_MAX_AGE_MS", max_age_ms.to_string())
        .env("PARITY_SOURCE_REWIND_SECONDS", "0")
        .env("PARITY_SOURCE_BACKOFF_INITIAL_MS", "20")
        .env("PARITY_LOG_PROGRESS_INTERVAL_SECONDS", "0")
        .env("PARITY_LOG_LEVEL", "warn")
        // The listener stays on, on a free port: tests run in parallel.
        .env("PARITY_METRICS_ADDR", "127.0.0.1:0")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn parity")
}

/// Polls the database (another process writes it) until its cursor is `c`.
async fn wait_db_cursor(db: &TestDb, child: &mut Child, c: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if db.cursor().await == Some(c) {
            return;
        }
        assert!(child.try_wait().unwrap().is_none(), "parity exited early");
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for cursor {c}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sigterm(child: &mut Child) -> std::process::ExitStatus {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "parity did not exit within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The relay recording without the one commit no built-in maps (the server
/// would not send it under parity's default wantedCollections), so that
/// "the Nth event" means the same to server and consumer.
pub(crate) fn mapped_lines() -> Vec<Line> {
    fixture_lines(common::RELAY_JSONL)
        .iter()
        .map(|l| Line::new(l))
        .filter(|l| {
            l.collection
                .as_deref()
                .is_none_or(|c| common::model::table_of(c).is_some())
        })
        .collect()
}

async fn crash_and_resume(crashed: TestDb, clean: TestDb) {
    let lines = mapped_lines();
    let last = last_time_us(&lines);

    // Uninterrupted run.
    let server = JetstreamServer::start(lines.clone()).await;
    let mut child = spawn(&clean, &server.url(), 20);
    server.wait_connections(1).await;
    server.publish_all();
    wait_db_cursor(&clean, &mut child, last).await;
    assert!(sigterm(&mut child).success());

    // Crashed run: 65 events arrive; batches of 10 commit up to event 60;
    // events 61-65 sit in an open batch (max age 60 s) when SIGKILL lands.
    let server = JetstreamServer::start(lines.clone()).await;
    let mut child = spawn(&crashed, &server.url(), 60_000);
    server.wait_connections(1).await;
    server.publish(65);
    let c60 = server.lines()[59].cursor.unwrap();
    wait_db_cursor(&crashed, &mut child, c60).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(
        crashed.cursor().await,
        Some(c60),
        "nothing past the last commit is stored"
    );
    let partial = crashed.count("likes").await;

    // The rest of the stream arrives while parity is down; then restart.
    server.publish_all();
    let mut child = spawn(&crashed, &server.url(), 20);
    wait_db_cursor(&crashed, &mut child, last).await;
    assert!(sigterm(&mut child).success(), "SIGTERM exits 0");
    assert!(server.requests.lock().unwrap()[1].contains(&format!("cursor={c60}")));

    let (a, b) = (crashed.snapshot().await, clean.snapshot().await);
    assert!(partial < a[1].len() as i64, "the crash happened mid-stream");
    assert_eq!(a, b);
}

backend_tests!(sigkill_then_restart_equals_uninterrupted, |a, b| {
    crash_and_resume(a, b)
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_commits_the_open_batch() {
    let db = TestDb::sqlite();
    let lines = mapped_lines();
    let server = JetstreamServer::start(lines).await;
    // Batches of 10, max age 60 s: after 15 events, 5 are only in memory.
    let mut child = spawn(&db, &server.url(), 60_000);
    server.wait_connections(1).await;
    server.publish(15);
    let c10 = server.lines()[9].cursor.unwrap();
    wait_db_cursor(&db, &mut child, c10).await;
    assert!(sigterm(&mut child).success());
    assert_eq!(
        db.cursor().await,
        server.lines()[14].cursor,
        "the open batch was committed at shutdown"
    );
}

/// Polls the database until `cond(likes rows)` holds (another process writes it).
async fn wait_likes(db: &TestDb, child: &mut Child, what: &str, cond: impl Fn(i64) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if cond(db.count("likes").await) {
            return;
        }
        assert!(child.try_wait().unwrap().is_none(), "parity exited early");
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Issue 11 item 2, as reproduced: 3 raw firehose frames of 42 ops each
/// (all ops of a frame share its seq), batches of 10 events, SIGKILL while
/// the last ops of the last frame can only be waiting for `max_age_ms`;
/// the relay resends only `seq > cursor`, like the reference PDS. After a
/// restart all 126 records are there, and the next frame too.
async fn sigkill_inside_a_multi_op_commit(db: TestDb) {
    let mut frames = common::frames::like_commits(500, 4, 42);
    frames[3] = common::frames::like_commits(500, 4, 1).remove(3);
    let lines: Vec<Line> = frames.iter().map(|(s, b)| Line::frame(b, *s)).collect();
    let server = JetstreamServer::start(lines).await;
    let mut child = spawn(&db, &server.firehose_url(), 60_000);
    server.wait_connections(1).await;
    server.publish(3);
    // 126 events in batches of 10: at least 12 batches commit at once; the
    // 6 events of a 13th batch could only wait (max age 60 s).
    wait_likes(&db, &mut child, "120 likes", |n| n >= 120).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // Restart; one more frame (seq 503, one op) marks the end of the replay.
    server.publish_all();
    let mut child = spawn(&db, &server.firehose_url(), 20);
    wait_db_cursor(&db, &mut child, 503).await;
    assert!(sigterm(&mut child).success());
    assert_eq!(
        db.count("likes").await,
        127,
        "every op of every frame is stored"
    );
}

backend_tests!(sigkill_inside_a_multi_op_commit_loses_nothing, |db| {
    sigkill_inside_a_multi_op_commit(db)
});

/// Shutdown never cuts a frame: the reader is cancelled while it is handing
/// the 42 ops of one firehose `#commit` to a full queue (capacity 1); every
/// op still arrives, and only the last one ends the frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_over_the_whole_frame() {
    use parity::obs::Obs;
    use parity::source::{Endpoint, Positions, Pushdown, Reader, SourceConfig};
    let frames = common::frames::like_commits(700, 1, 42);
    let server = JetstreamServer::start(vec![Line::frame(&frames[0].1, 700)]).await;
    let reader = Reader::new(
        vec![Endpoint::parse(&server.firehose_url()).unwrap()],
        SourceConfig::default(),
        Pushdown::default(),
        Positions::default(),
        std::sync::Arc::new(Obs::new(Duration::from_secs(60))),
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let token = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(reader.run(tx, token.clone()));
    server.wait_connections(1).await;
    server.publish_all();
    let first = rx.recv().await.expect("the first op");
    // The queue is full again (the next op), the reader waits on it.
    token.cancel();
    let mut items = vec![first];
    while let Some(item) = rx.recv().await {
        items.push(item);
    }
    task.await.unwrap();
    assert_eq!(items.len(), 42, "every op of the frame");
    let ends: Vec<bool> = items.iter().map(|i| i.frame_end).collect();
    assert_eq!(ends.iter().filter(|e| **e).count(), 1);
    assert!(ends[41], "the last op ends the frame");
    assert!(items.iter().all(|i| i.event.cursor.0 == 700));
}
