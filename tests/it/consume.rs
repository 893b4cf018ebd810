//! Consuming recorded Jetstream v1 streams from a local server into real
//! SQLite and PostgreSQL databases, asserting the exact rows.

use crate::common;

use std::sync::atomic::Ordering::Relaxed;

use common::jetstream::{JetstreamServer, Line};
use common::{TestDb, config, fixture_lines, last_time_us, model, start};
use parity::cmd::consume::{ConsumeOptions, Consumer};
use parity::obs::DropReason;

const STD: [&str; 6] = ["uri", "did", "rkey", "cid", "rev", "record"];
const TABLES: [&str; 6] = ["posts", "likes", "reposts", "follows", "blocks", "profiles"];

async fn consume_all(db: &TestDb, lines: &[String]) -> common::Running {
    let server = JetstreamServer::start(lines.iter().map(|l| Line::new(l)).collect()).await;
    let run = start(
        Consumer::new(config(db, &server.url())),
        ConsumeOptions::default(),
    );
    server.wait_connections(1).await;
    server.publish_all();
    run.wait_cursor(last_time_us(&server.lines())).await;
    std::mem::forget(server); // keep serving until the test ends
    run
}

async fn recorded_stream_gives_exact_rows(db: TestDb) {
    let lines = fixture_lines(common::RELAY_JSONL);
    let run = consume_all(&db, &lines).await;
    run.stop().await.unwrap();

    // Serve order is time_us order; the model applies the same order.
    let mut ordered: Vec<Line> = lines.iter().map(|l| Line::new(l)).collect();
    ordered.sort_by_key(|l| l.cursor);
    let texts: Vec<&str> = ordered.iter().map(|l| &*l.text).collect();
    let want = model::expected(&texts);
    for t in TABLES {
        assert_eq!(
            db.rows(t, &STD).await,
            model::standard_rows(&want, t),
            "table {t}"
        );
    }
    // 71 likes, 9 reposts, 1 block (the deletes are of older records).
    assert_eq!(db.count("likes").await, 71);
    assert_eq!(db.count("reposts").await, 9);
    assert_eq!(db.count("blocks").await, 1);

    // Mapped columns, checked against the record JSON.
    let likes = db
        .rows(
            "likes",
            &["uri", "subject_uri", "subject_cid", "created_at"],
        )
        .await;
    for row in likes {
        let e = &want["likes"][row[0].as_ref().unwrap()];
        let rec: serde_json::Value = serde_json::from_str(&e.record).unwrap();
        assert_eq!(row[1].as_deref(), rec["subject"]["uri"].as_str());
        assert_eq!(row[2].as_deref(), rec["subject"]["cid"].as_str());
        assert_eq!(row[3], model::norm_time(rec["createdAt"].as_str()));
    }
    let posts = db
        .rows(
            "posts",
            &[
                "uri",
                "text",
                "reply_parent_uri",
                "reply_root_uri",
                "langs",
                "created_at",
            ],
        )
        .await;
    assert!(!posts.is_empty());
    for row in posts {
        let e = &want["posts"][row[0].as_ref().unwrap()];
        let rec: serde_json::Value = serde_json::from_str(&e.record).unwrap();
        assert_eq!(row[1].as_deref(), rec["text"].as_str());
        assert_eq!(
            row[2].as_deref(),
            rec.pointer("/reply/parent/uri").and_then(|v| v.as_str())
        );
        assert_eq!(
            row[3].as_deref(),
            rec.pointer("/reply/root/uri").and_then(|v| v.as_str())
        );
        let langs: Option<serde_json::Value> =
            row[4].as_deref().map(|l| serde_json::from_str(l).unwrap());
        assert_eq!(langs.as_ref(), rec.get("langs"));
        assert_eq!(row[5], model::norm_time(rec["createdAt"].as_str()));
    }
    let follows = db.rows("follows", &["uri", "subject_did"]).await;
    for row in follows {
        let rec: serde_json::Value =
            serde_json::from_str(&want["follows"][row[0].as_ref().unwrap()].record).unwrap();
        assert_eq!(row[1].as_deref(), rec["subject"].as_str());
    }
    // The cursor is the last event's time_us, stored per stream.
    assert_eq!(db.cursor().await, Some(last_time_us(&ordered)));
}

backend_tests!(recorded_stream, |db| recorded_stream_gives_exact_rows(db));

async fn golden_events(db: TestDb) {
    let lines = fixture_lines(common::GOLDEN_JSONL);
    let run = consume_all(&db, &lines).await;
    let stats = run.stats.clone();
    run.stop().await.unwrap();

    let post = db
        .rows(
            "posts",
            &[
                "did",
                "rkey",
                "text",
                "reply_parent_uri",
                "reply_root_uri",
                "langs",
                "created_at",
            ],
        )
        .await;
    let src: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    let rec = &src["commit"]["record"];
    assert_eq!(post.len(), 1);
    assert_eq!(post[0][0].as_deref(), src["did"].as_str());
    assert_eq!(post[0][1].as_deref(), src["commit"]["rkey"].as_str());
    assert_eq!(post[0][2].as_deref(), rec["text"].as_str());
    assert_eq!(
        post[0][3].as_deref(),
        rec["reply"]["parent"]["uri"].as_str()
    );
    assert_eq!(post[0][4].as_deref(), rec["reply"]["root"]["uri"].as_str());
    assert!(post[0][3].is_some());
    let profile = db
        .rows("profiles", &["did", "display_name", "description"])
        .await;
    let src: serde_json::Value = serde_json::from_str(&lines[4]).unwrap();
    assert_eq!(profile.len(), 1);
    assert_eq!(
        profile[0][1].as_deref(),
        src["commit"]["record"]["displayName"].as_str()
    );
    assert_eq!(
        profile[0][2].as_deref(),
        src["commit"]["record"]["description"].as_str()
    );
    for t in ["likes", "reposts", "follows", "blocks"] {
        assert_eq!(db.count(t).await, 1, "{t}");
    }
    // Non-bsky collections have no mapper, so wantedCollections kept the
    // server from sending the two of them; nothing failed.
    assert_eq!(stats.dropped(DropReason::MapperFailure), 0);
    assert_eq!(stats.commits_received.load(Relaxed), 6);
    assert_eq!(stats.identities_received.load(Relaxed), 1);
    assert_eq!(stats.accounts_received.load(Relaxed), 1);

    // Identity sets the handle; account records the status.
    let ident: serde_json::Value = serde_json::from_str(&lines[7]).unwrap();
    let handle = db
        .scalar(&format!(
            "SELECT handle FROM parity_repos WHERE did = '{}'",
            ident["did"].as_str().unwrap()
        ))
        .await;
    assert_eq!(handle.as_deref(), ident["identity"]["handle"].as_str());
    let acct: serde_json::Value = serde_json::from_str(&lines[8]).unwrap();
    let status = db
        .scalar(&format!(
            "SELECT status FROM parity_repos WHERE did = '{}'",
            acct["did"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status.as_deref(), Some("active"));
    // Every committing DID has its newest rev recorded.
    let like: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    let rev = db
        .scalar(&format!(
            "SELECT rev FROM parity_repos WHERE did = '{}'",
            like["did"].as_str().unwrap()
        ))
        .await;
    assert_eq!(rev.as_deref(), like["commit"]["rev"].as_str());
}

backend_tests!(golden_events, |db| golden_events(db));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wanted_collections_are_pushed_and_honoured() {
    let db = TestDb::sqlite();
    let lines = fixture_lines(common::RELAY_JSONL);
    let server = JetstreamServer::start(lines.iter().map(|l| Line::new(l)).collect()).await;
    let opts = ConsumeOptions {
        collections: Some(vec!["app.bsky.feed.post".into(), "app.bsky.graph.*".into()]),
        ..Default::default()
    };
    let run = start(Consumer::new(config(&db, &server.url())), opts);
    server.wait_connections(1).await;
    server.publish_all();
    // The last event the server sends under this filter.
    let last = server
        .lines()
        .iter()
        .filter(|l| {
            l.collection
                .as_deref()
                .is_none_or(|c| c == "app.bsky.feed.post" || c.starts_with("app.bsky.graph."))
        })
        .filter_map(|l| l.cursor)
        .max()
        .unwrap();
    run.wait_cursor(last).await;
    let stats = run.stats.clone();
    run.stop().await.unwrap();
    let uri = server.requests.lock().unwrap()[0].clone();
    assert!(
        uri.contains("wantedCollections=app.bsky.feed.post"),
        "{uri}"
    );
    assert!(uri.contains("wantedCollections=app.bsky.graph.*"), "{uri}");
    assert_eq!(db.count("likes").await, 0);
    // The one post delete is of a post created before the window.
    assert_eq!(db.count("posts").await, 12);
    assert_eq!(db.count("follows").await, 3);
    assert_eq!(db.count("blocks").await, 1);
    // 12+1 posts, 5 follows, 1 block, plus identity and account.
    assert_eq!(stats.received(), 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_from_the_stored_cursor() {
    let db = TestDb::sqlite();
    let lines = fixture_lines(common::RELAY_JSONL);
    let server = JetstreamServer::start(lines.iter().map(|l| Line::new(l)).collect()).await;
    let mut cfg = config(&db, &server.url());
    cfg.source.rewind_seconds = 0;
    let run = start(Consumer::new(cfg.clone()), ConsumeOptions::default());
    server.wait_connections(1).await;
    server.publish(50);
    let c50 = server.lines()[49].cursor.unwrap();
    run.wait_cursor(c50).await;
    run.stop().await.unwrap();
    assert_eq!(db.cursor().await, Some(c50));

    // Events published while parity was down arrive after the restart.
    server.publish_all();
    let run = start(Consumer::new(cfg.clone()), ConsumeOptions::default());
    run.wait_cursor(last_time_us(&server.lines())).await;
    run.stop().await.unwrap();
    assert!(server.requests.lock().unwrap()[1].contains(&format!("cursor={c50}")));
    assert_eq!(db.count("likes").await, 71);

    // --fresh forgets the cursor and starts live; --cursor starts there.
    let run = start(
        Consumer::new(cfg.clone()),
        ConsumeOptions {
            fresh: true,
            ..Default::default()
        },
    );
    server.wait_connections(3).await;
    run.stop().await.unwrap();
    assert!(!server.requests.lock().unwrap()[2].contains("cursor="));
    assert_eq!(db.cursor().await, None);
    let run = start(
        Consumer::new(cfg),
        ConsumeOptions {
            cursor: Some(42),
            ..Default::default()
        },
    );
    server.wait_connections(4).await;
    run.stop().await.unwrap();
    assert!(server.requests.lock().unwrap()[3].contains("cursor=42&"));
}

/// The same 100 relay frames consumed from a local relay (the raw firehose)
/// give exactly the tables the production Jetstream output for them gives.
async fn firehose_equals_jetstream(fh: TestDb, js: TestDb) {
    let frames = common::relay_frames();
    assert_eq!(frames.len(), 100);
    let relay =
        JetstreamServer::start(frames.iter().map(|(seq, b)| Line::frame(b, *seq)).collect()).await;
    let run = start(
        Consumer::new(config(&fh, &relay.firehose_url())),
        ConsumeOptions::default(),
    );
    relay.wait_connections(1).await;
    relay.publish_all();
    run.wait_cursor(frames.last().unwrap().0).await;
    run.stop().await.unwrap();

    let lines = fixture_lines(common::RELAY_JSONL);
    consume_all(&js, &lines).await.stop().await.unwrap();

    assert_eq!(fh.snapshot().await, js.snapshot().await);
    assert_eq!(fh.count("likes").await, 71);
    assert_eq!(fh.cursor().await, Some(frames.last().unwrap().0));
}

backend_tests!(firehose_equals_jetstream, |a, b| firehose_equals_jetstream(
    a, b
));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_frames_give_the_same_rows() {
    let (plain, packed) = (TestDb::sqlite(), TestDb::sqlite());
    let lines = fixture_lines(common::RELAY_JSONL);
    let mut cfg = config(&plain, "ws://x/subscribe");
    cfg.source.compress = false;
    let server = JetstreamServer::start(lines.iter().map(|l| Line::new(l)).collect()).await;
    cfg.source.endpoints = vec![server.url()];
    common::run_to_end(
        &server,
        cfg,
        ConsumeOptions::default(),
        last_time_us(&server.lines()),
    )
    .await;
    assert!(!server.requests.lock().unwrap()[0].contains("compress"));
    assert_eq!(server.compressed.load(Relaxed), 0);

    // Compression is on by default.
    let server = JetstreamServer::start(lines.iter().map(|l| Line::new(l)).collect()).await;
    let last = last_time_us(&server.lines());
    common::run_to_end(
        &server,
        config(&packed, &server.url()),
        ConsumeOptions::default(),
        last,
    )
    .await;
    assert!(server.requests.lock().unwrap()[0].contains("compress=true"));
    assert!(server.compressed.load(Relaxed) > 90);
    assert_eq!(packed.snapshot().await, plain.snapshot().await);
    assert_eq!(packed.count("likes").await, 71);
}

/// Jetstream v2 frames carrying the recorded events give the same tables as
/// the v1 recording, and the inclusive seq cursor never double-counts an
/// event after a reconnect.
async fn v2_equals_v1(v2db: TestDb, v1db: TestDb) {
    let lines = fixture_lines(common::RELAY_JSONL);
    // v2 seqs follow the order the v1 server serves (time_us order).
    let mut ordered: Vec<Line> = lines.iter().map(|l| Line::new(l)).collect();
    ordered.sort_by_key(|l| l.cursor);
    let frames: Vec<Line> = ordered
        .iter()
        .enumerate()
        .map(|(i, l)| Line::v2(&common::v1_to_v2(&l.text, 9_000 + i as i64)))
        .collect();
    let server = JetstreamServer::start(frames).await;
    let mut cfg = config(&v2db, &server.v2_url());
    cfg.source.idle_timeout_seconds = 1;
    cfg.source.compress = false;
    let run = start(Consumer::new(cfg), ConsumeOptions::default());
    server.wait_connections(1).await;
    server.publish(40);
    run.wait_cursor(9_039).await;
    // Force a reconnect: the server replays seq 9039 (inclusive cursor).
    server.set_silent(true);
    server.wait_connections(2).await;
    server.set_silent(false);
    server.publish_all();
    let last = 9_000 + lines.len() as i64 - 1;
    run.wait_cursor(last).await;
    let stats = run.stats.clone();
    run.stop().await.unwrap();
    assert!(server.requests.lock().unwrap()[1].contains("cursor=9039"));
    let commits = lines
        .iter()
        .filter(|l| l.contains(r#""kind":"commit""#))
        .count() as u64;
    let unmapped = 1; // app.bsky.actor.status: not pushed down as a collection
    assert_eq!(
        stats.commits_received.load(Relaxed),
        commits - unmapped,
        "no event counted twice"
    );

    consume_all(&v1db, &lines).await.stop().await.unwrap();
    assert_eq!(v2db.snapshot().await, v1db.snapshot().await);
}

backend_tests!(jetstream_v2_equals_v1, |a, b| v2_equals_v1(a, b));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_v2_zstd_with_a_fetched_and_cached_dictionary() {
    let (packed, plain) = (TestDb::sqlite(), TestDb::sqlite());
    let cache = tempfile::tempdir().unwrap();
    let lines = fixture_lines(common::RELAY_JSONL);
    let frames: Vec<Line> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| Line::v2(&common::v1_to_v2(l, 100 + i as i64)))
        .collect();
    // The last frame the server sends under parity's default collections.
    let last = frames
        .iter()
        .filter(|l| {
            l.collection
                .as_deref()
                .is_none_or(|c| model::table_of(c).is_some())
        })
        .filter_map(|l| l.cursor)
        .max()
        .unwrap();
    for (db, compress) in [(&packed, true), (&plain, false)] {
        let server = JetstreamServer::start(frames.clone()).await;
        let mut cfg = config(db, &server.v2_url());
        cfg.source.compress = compress;
        cfg.source.cache_dir = cache.path().display().to_string();
        common::run_to_end(&server, cfg.clone(), ConsumeOptions::default(), last).await;
        let uri = server.requests.lock().unwrap()[0].clone();
        assert_eq!(uri.contains("zstdDictionary=20260811"), compress, "{uri}");
        assert_eq!(
            server.dictionary_fetches.load(Relaxed),
            usize::from(compress)
        );
        assert_eq!(server.compressed.load(Relaxed) > 90, compress);
        if compress {
            // A restart uses the cached dictionary: no second download.
            let run = start(Consumer::new(cfg), ConsumeOptions::default());
            server.wait_connections(2).await;
            run.stop().await.unwrap();
            assert_eq!(server.dictionary_fetches.load(Relaxed), 1);
            assert!(server.requests.lock().unwrap()[1].contains("zstdDictionary=20260811"));
        }
    }
    assert_eq!(packed.snapshot().await, plain.snapshot().await);
    assert_eq!(packed.count("likes").await, 71);
}

/// Jetstream v2 replays the cursor's own event: after a restart from the
/// stored cursor it is not applied twice; `--cursor N` does include N.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_v2_cursor_is_inclusive_only_for_the_user() {
    let db = TestDb::sqlite();
    let lines = fixture_lines(common::RELAY_JSONL);
    let frames: Vec<Line> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.contains("app.bsky.actor.status"))
        .map(|(i, l)| Line::v2(&common::v1_to_v2(l, 500 + i as i64)))
        .collect();
    let seqs: Vec<i64> = frames.iter().filter_map(|l| l.cursor).collect();
    let server = JetstreamServer::start(frames).await;
    let mut cfg = config(&db, &server.v2_url());
    cfg.source.compress = false;
    let received = |s: &parity::obs::Obs| s.received();

    let run = start(Consumer::new(cfg.clone()), ConsumeOptions::default());
    server.wait_connections(1).await;
    server.publish(10);
    run.wait_cursor(seqs[9]).await;
    run.stop().await.unwrap();

    server.publish_all();
    let run = start(Consumer::new(cfg.clone()), ConsumeOptions::default());
    run.wait_cursor(*seqs.last().unwrap()).await;
    let stats = run.stats.clone();
    run.stop().await.unwrap();
    assert!(server.requests.lock().unwrap()[1].contains(&format!("cursor={}", seqs[9])));
    assert_eq!(
        received(&stats),
        (seqs.len() - 10) as u64,
        "the stored event is not delivered again"
    );

    let opts = ConsumeOptions {
        cursor: Some(seqs[4]),
        ..Default::default()
    };
    let run = start(Consumer::new(cfg), opts);
    run.wait_cursor(*seqs.last().unwrap()).await;
    let stats = run.stats.clone();
    run.stop().await.unwrap();
    assert_eq!(
        received(&stats),
        (seqs.len() - 4) as u64,
        "--cursor N starts at N itself"
    );
}

/// A second start against the same PostgreSQL database finds every table
/// and index already there: PostgreSQL's `... already exists, skipping`
/// notices must not reach the log (there were ~20 on every start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_logs_no_already_exists_notices() {
    let db = TestDb::postgres("restart_notices").await;
    let server = JetstreamServer::start(Vec::new()).await;
    let toml = format!(
        "[source]\nendpoints = [\"{}\"]\n[log]\nprogress_interval_seconds = 0\n",
        server.url()
    );
    let mut logs = Vec::new();
    for run in 1..=2 {
        let (mut parity, _cfg) = common::process::Parity::consume(&toml, &db.url);
        let addr = parity.metrics_addr().await;
        server.wait_connections(run).await;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while common::process::get(addr, "/ready").await.0 != 200 {
            assert!(tokio::time::Instant::now() < deadline, "not ready");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        logs = parity.stop();
    }
    // The second run's log: the tables and indexes existed.
    let notices: Vec<&String> = logs
        .iter()
        .filter(|l| l.contains("already exists"))
        .collect();
    assert!(
        notices.is_empty(),
        "{} notices: {notices:#?}",
        notices.len()
    );
    assert!(logs.iter().any(|l| l.contains("Connecting.")), "{logs:#?}");
}
