//! Bad input never stops parity and never loses what was written:
//! malformed and oversized frames, records that do not fit their mapper and
//! unmapped collections are counted and skipped; bad config, bad flags and
//! an unreachable database get a one-line error and a non-zero exit.

use crate::common;

use common::jetstream::{JetstreamServer, Line};
use common::{TestDb, config, fixture_lines, start};
use parity::cmd::consume::{ConsumeOptions, Consumer};
use parity::obs::DropReason;

fn like(did: &str, rkey: &str, t: i64, record: &str) -> String {
    format!(
        r#"{{"did":"{did}","time_us":{t},"kind":"commit","commit":{{"rev":"{rev}","operation":"create","collection":"app.bsky.feed.like","rkey":"{rkey}","record":{record},"cid":"{cid}"}}}}"#,
        rev = common::pds::tid(t as u64, 0),
        cid = common::pds::dag_cbor_cid(&t.to_be_bytes()),
    )
}

const GOOD: &str = r#"{"$type":"app.bsky.feed.like","createdAt":"2026-07-04T14:38:07.513Z","subject":{"cid":"bafyx","uri":"at://did:plc:b/app.bsky.feed.post/1"}}"#;

async fn bad_frames_are_counted_and_skipped(db: TestDb) {
    let mut lines = fixture_lines(common::GOLDEN_JSONL);
    let t0 = 1_783_175_888_000_000i64;
    let big = format!(
        r#"{{"$type":"app.bsky.feed.like","createdAt":"2026-07-04T14:38:07.513Z","pad":"{}","subject":{{"cid":"bafyx","uri":"at://x"}}}}"#,
        "x".repeat(2_000)
    );
    lines.extend([
        "{not json".to_owned(),
        r#"{"did":"did:plc:a","time_us":5,"kind":"commit","commit":{"rev":"r","operation":"create"}}"#.to_owned(),
        r#"{"did":"did:plc:a","time_us":6,"kind":"labels"}"#.to_owned(),
        like("did:plc:bad1", "k1", t0 + 1, r#"{"createdAt":"2026-07-04T14:38:07.513Z"}"#),
        like("did:plc:bad2", "k2", t0 + 2, &big),
        like("did:plc:good", "k3", t0 + 3, GOOD),
    ]);
    let server = JetstreamServer::start(lines.iter().map(|l| Line::new(l)).collect()).await;
    let mut cfg = config(&db, &server.url());
    cfg.source.max_message_bytes = 1_024;
    let run = start(Consumer::new(cfg), ConsumeOptions::default());
    server.wait_connections(1).await;
    server.publish_all();
    run.wait_cursor(t0 + 3).await;
    let stats = run.stats.clone();
    run.stop().await.unwrap();

    assert_eq!(stats.dropped(DropReason::Malformed), 2);
    assert_eq!(stats.dropped(DropReason::UnknownType), 1);
    assert_eq!(stats.dropped(DropReason::Oversized), 1);
    assert_eq!(stats.dropped(DropReason::MapperFailure), 1);
    // The golden like plus the good one; the failed like is not stored.
    let likes = db.rows("likes", &["did"]).await;
    assert_eq!(likes.len(), 2);
    assert!(
        likes
            .iter()
            .any(|r| r[0].as_deref() == Some("did:plc:good"))
    );
    assert!(
        !likes
            .iter()
            .any(|r| r[0].as_deref() == Some("did:plc:bad1"))
    );
    assert_eq!(db.count("posts").await, 1);
}

backend_tests!(bad_frames, |db| bad_frames_are_counted_and_skipped(db));

/// Runs the binary; returns (exit code, stderr).
fn parity(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = common::process::command()
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn one_error_line(stderr: &str) -> &str {
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "one error line expected in:\n{stderr}");
    errors[0]
}

#[test]
fn unknown_config_key_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("parity.toml");
    std::fs::write(&cfg, "[batch]\nmax_events = 10\nflush_every = 3\n").unwrap();
    let (code, err) = parity(&["--config", cfg.to_str().unwrap(), "migrate"], &[]);
    assert_eq!(code, 2);
    let line = one_error_line(&err);
    assert!(
        line.contains("flush_every") && line.contains("line 3"),
        "{line}"
    );

    let (code, err) = parity(&["migrate"], &[("PARITY_BATCH_MAXEVENTS", "3")]);
    assert_eq!(code, 2);
    assert!(one_error_line(&err).contains("PARITY_BATCH_MAXEVENTS"));

    let (code, err) = parity(&["consume", "--collections", "app.bsky.graph.fo*"], &[]);
    assert_eq!(code, 2);
    assert!(one_error_line(&err).contains("fo*"));
}

#[test]
fn bad_flags_are_rejected() {
    let (code, err) = parity(&["consume", "--cursor=-5"], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("--cursor"), "{err}");
    let (code, err) = parity(
        &["consume", "--endpoint", "https://example.com/subscribe"],
        &[],
    );
    assert_eq!(code, 2);
    assert!(one_error_line(&err).contains("ws://"));
}

#[test]
fn unreachable_database_is_a_clear_error() {
    let (code, err) = parity(
        &[
            "migrate",
            "--database-url",
            "postgres://postgres@127.0.0.1:1/nothing",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(
        one_error_line(&err).contains("cannot connect to the database"),
        "{err}"
    );
    // An unknown scheme is the operator's config mistake: exit 2.
    let (code, err) = parity(&["migrate", "--database-url", "mysql://x"], &[]);
    assert_eq!(code, 2);
    assert!(one_error_line(&err).contains("sqlite://"), "{err}");
}

#[test]
fn migrate_creates_the_tables() {
    let db = TestDb::sqlite();
    let (code, err) = parity(&["migrate", "--database-url", &db.url], &[]);
    assert_eq!(code, 0, "{err}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    for t in [
        "posts",
        "likes",
        "reposts",
        "follows",
        "blocks",
        "profiles",
        "records",
        "parity_cursors",
        "parity_repos",
        "parity_tombstones",
    ] {
        assert_eq!(rt.block_on(db.count(t)), 0, "{t} exists and is empty");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmapped_collections_are_skipped_not_failed() {
    // With `--collections '*'` the server sends every collection, including
    // ones no mapper handles: they are counted as filtered and move the cursor.
    let db = TestDb::sqlite();
    let lines = fixture_lines(common::GOLDEN_JSONL);
    let server = JetstreamServer::start(lines.iter().map(|l| Line::new(l)).collect()).await;
    let opts = ConsumeOptions {
        collections: Some(vec!["*".into()]),
        ..Default::default()
    };
    let run = start(Consumer::new(config(&db, &server.url())), opts);
    server.wait_connections(1).await;
    server.publish_all();
    run.wait_cursor(common::last_time_us(&server.lines())).await;
    let stats = run.stats.clone();
    run.stop().await.unwrap();
    assert!(!server.requests.lock().unwrap()[0].contains("wantedCollections"));
    assert_eq!(
        stats
            .commits_received
            .load(std::sync::atomic::Ordering::Relaxed),
        8
    );
    assert_eq!(stats.filtered.load(std::sync::atomic::Ordering::Relaxed), 2);
    assert_eq!(stats.dropped(DropReason::MapperFailure), 0);
    assert_eq!(db.count("records").await, 0);
    assert_eq!(db.count("posts").await, 1);
}
