//! Failover between raw firehose relays, and cursors a server cannot serve
//! (issue 11 items 3 and 7), with the `parity` binary and local relays that
//! follow the reference PDS's cursor rules (`seq > cursor`, `FutureCursor`
//! past the head).
//!
//! Sequence numbers are per host: relay A here replays the real relay
//! recording (seqs around 31.5 billion), relay B a few synthetic commits
//! with seqs from 10. A's position must never be used on B.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::TestDb;
use common::frames::{like_commits, relay_frames};
use common::jetstream::{JetstreamServer, Line};
use common::process::{Metrics, Parity, get, scrape};

/// B's frames: 6 commits of 3 likes, seqs 10..=15.
fn b_frames() -> Vec<(i64, Vec<u8>)> {
    like_commits(10, 6, 3)
}

async fn relay(frames: &[(i64, Vec<u8>)]) -> JetstreamServer {
    JetstreamServer::start(frames.iter().map(|(s, b)| Line::frame(b, *s)).collect()).await
}

fn toml(endpoints: &[String]) -> String {
    let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        "[source]\nendpoints = [{}]\nbackoff_initial_ms = 20\nbackoff_max_ms = 200\n\
         [batch]\nmax_age_ms = 20\n[log]\nprogress_interval_seconds = 0\n",
        list.join(", ")
    )
}

/// The stored cursor of `server`'s firehose stream.
async fn stream_cursor(db: &TestDb, server: &JetstreamServer) -> Option<i64> {
    let key = format!("firehose:{}", server.addr);
    db.scalar(&format!(
        "SELECT CAST(cursor AS TEXT) FROM parity_cursors WHERE stream = '{key}'"
    ))
    .await
    .map(|s| s.parse().unwrap())
}

/// Polls until `cond` holds on a fresh scrape (30 s at most).
async fn wait_scrape(addr: SocketAddr, what: &str, cond: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let m = scrape(addr).await;
        if cond(&m) {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until `server`'s stream cursor is `c` (another process writes it).
async fn wait_stream_cursor(db: &TestDb, server: &JetstreamServer, c: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while stream_cursor(db, server).await != Some(c) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for cursor {c} of {}",
            server.addr
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn dropped(m: &Metrics) -> f64 {
    m.sum("parity_events_dropped_total")
}

/// A dies after parity consumed it; B was never consumed (no cursor of
/// its own): parity starts live on B, says so once (warning + metric),
/// and stores everything B sends afterwards; nothing from B is dropped and
/// `/health` is 200 because B's events really commit.
async fn failover_to_a_host_without_cursor(db: TestDb) {
    let a_frames = relay_frames();
    let a_last = a_frames.iter().map(|f| f.0).max().unwrap();
    let a = relay(&a_frames).await;
    let b_frames = b_frames();
    let b = relay(&b_frames).await;
    let (mut parity, _cfg) = Parity::consume(&toml(&[a.firehose_url(), b.firehose_url()]), &db.url);
    let addr = parity.metrics_addr().await;
    a.wait_connections(1).await;
    a.publish_all();
    wait_stream_cursor(&db, &a, a_last).await;
    let before = scrape(addr).await;
    let likes_before = db.count("likes").await;

    a.stop();
    b.wait_connections(1).await;
    b.publish_all();
    wait_stream_cursor(&db, &b, 15).await;
    let m = wait_scrape(addr, "parity_cursor 15", |m| {
        m.get("parity_cursor", &[]) == 15.0
    })
    .await;

    assert_eq!(
        db.count("likes").await,
        likes_before + 18,
        "all of B's likes"
    );
    assert_eq!(dropped(&m), dropped(&before), "nothing from B dropped");
    assert_eq!(
        m.get(
            "parity_source_starts_without_cursor_total",
            &[("format", "firehose")]
        ),
        1.0
    );
    assert_eq!(
        stream_cursor(&db, &a).await,
        Some(a_last),
        "A's cursor kept for A"
    );
    let (status, body) = get(addr, "/health").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        !b.requests.lock().unwrap()[0].contains("cursor="),
        "A's seq never sent to B: {:?}",
        b.requests.lock().unwrap()
    );
    let lines = parity.stop();
    let warnings = lines
        .iter()
        .filter(|l| l.contains("No stored cursor for this host"))
        .count();
    assert_eq!(warnings, 1, "the operator is told once");
}

backend_tests!(
    failover_to_a_host_without_cursor_starts_live_and_drops_nothing,
    |db| { failover_to_a_host_without_cursor(db) }
);

/// B was consumed before (its cursor is stored) and published more while
/// parity was elsewhere; failing over from A to B resumes from B's own
/// stored cursor, so what B published meanwhile arrives.
async fn failover_to_a_host_with_its_own_cursor(db: TestDb) {
    let b_frames = b_frames();
    let b = relay(&b_frames).await;
    // First run: B only, its first two commits.
    let (parity, _cfg) = Parity::consume(&toml(&[b.firehose_url()]), &db.url);
    b.wait_connections(1).await;
    b.publish(2);
    wait_stream_cursor(&db, &b, 11).await;
    parity.stop();
    b.publish_all();

    // Second run: A first, then A dies.
    let a_frames = relay_frames();
    let a_last = a_frames.iter().map(|f| f.0).max().unwrap();
    let a = relay(&a_frames).await;
    let (mut parity, _cfg) = Parity::consume(&toml(&[a.firehose_url(), b.firehose_url()]), &db.url);
    let addr = parity.metrics_addr().await;
    a.wait_connections(1).await;
    a.publish_all();
    wait_stream_cursor(&db, &a, a_last).await;
    let likes_before = db.count("likes").await;
    let before = scrape(addr).await;
    a.stop();
    wait_stream_cursor(&db, &b, 15).await;

    assert_eq!(
        db.count("likes").await,
        likes_before + 12,
        "B's four commits published while parity was away"
    );
    let requests = b.requests.lock().unwrap().clone();
    assert!(requests[1].contains("cursor=11"), "{requests:?}");
    // A itself was new (no cursor of its own while B had one): that start
    // was live and counted once; the failover to B added nothing.
    let m = scrape(addr).await;
    let no_cursor = [("format", "firehose")];
    assert_eq!(
        before.get("parity_source_starts_without_cursor_total", &no_cursor),
        1.0
    );
    assert_eq!(
        m.get("parity_source_starts_without_cursor_total", &no_cursor),
        1.0
    );
    let (status, body) = get(addr, "/health").await;
    assert_eq!(status, 200, "{body}");
    parity.stop();
}

backend_tests!(failover_resumes_from_the_new_hosts_stored_cursor, |db| {
    failover_to_a_host_with_its_own_cursor(db)
});

/// Issue 11 item 7: `--cursor` past the relay's newest seq. The relay
/// answers as the reference PDS does (`FutureCursor` error frame, then
/// close); parity says so once, counts it, and goes on live: what the relay
/// publishes afterwards is stored and `/health` is 200, instead of
/// reconnecting with the same cursor forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_cursor_is_reported_once_and_parity_goes_live() {
    let db = TestDb::sqlite();
    let frames = relay_frames();
    let last = frames.iter().map(|f| f.0).max().unwrap();
    let server = relay(&frames).await;
    server.publish(50);
    let future = frames[49].0 + 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("parity.toml");
    std::fs::write(&cfg, toml(&[server.firehose_url()])).unwrap();
    let mut parity = Parity::spawn(&[
        "--config",
        cfg.to_str().unwrap(),
        "--database-url",
        &db.url,
        "--metrics-addr",
        "127.0.0.1:0",
        "consume",
        "--cursor",
        &future.to_string(),
    ]);
    let addr = parity.metrics_addr().await;
    server.wait_connections(2).await;
    server.publish_all();
    wait_stream_cursor(&db, &server, last).await;

    assert!(db.count("likes").await > 0);
    let requests = server.requests.lock().unwrap().clone();
    assert!(
        requests[0].contains(&format!("cursor={future}")),
        "{requests:?}"
    );
    assert!(!requests[1].contains("cursor="), "live: {requests:?}");
    let m = scrape(addr).await;
    assert_eq!(
        m.get(
            "parity_source_cursor_rejected_total",
            &[("reason", "future_cursor")]
        ),
        1.0
    );
    assert_eq!(
        m.get(
            "parity_source_cursor_rejected_total",
            &[("reason", "outdated_cursor")]
        ),
        0.0
    );
    let (status, body) = get(addr, "/health").await;
    assert_eq!(status, 200, "{body}");
    let lines = parity.stop();
    let told = lines
        .iter()
        .filter(|l| l.contains("FutureCursor") && l.contains("\"WARN\""))
        .count();
    assert_eq!(told, 1, "one warning:\n{}", lines.join("\n"));
}

/// A cursor older than the relay keeps: the relay says `#info
/// OutdatedCursor` and replays its window (the reference PDS); parity keeps
/// reading, stores the window, and counts the rejected cursor once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outdated_cursor_is_counted_and_the_window_is_stored() {
    use parity::cmd::consume::{ConsumeOptions, Consumer};
    use parity::obs::CursorRejection;
    let db = TestDb::sqlite();
    let frames = relay_frames();
    let last = frames.iter().map(|f| f.0).max().unwrap();
    let server = relay(&frames).await;
    server.set_window_start(frames[50].0);
    server.publish_all();
    let run = common::start(
        Consumer::new(common::config(&db, &server.firehose_url())),
        ConsumeOptions {
            cursor: Some(frames[10].0),
            ..Default::default()
        },
    );
    run.wait_cursor(last).await;
    let stats = run.stats.clone();
    run.stop().await.unwrap();
    assert_eq!(stats.cursor_rejected(CursorRejection::Outdated), 1);
    assert_eq!(stats.cursor_rejected(CursorRejection::Future), 0);
    assert_eq!(server.requests.lock().unwrap().len(), 1, "no reconnect");
}
