//! Account and identity events: a deleted account's rows are purged from
//! every table and stay purged when its older commits are replayed; `keep`
//! leaves them; `active=true` restores the status; identity sets the handle.

use crate::common;

use common::jetstream::{JetstreamServer, Line};
use common::{TestDb, config, start};
use parity::cmd::consume::{ConsumeOptions, Consumer};
use parity::config::Config;

const A: &str = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb";

/// A TID for a short test rev (`3a01`): its hex digits are the clock, so
/// TIDs sort as the short revs do.
fn tid_of(rev: &str) -> String {
    common::pds::tid(
        1_783_000_000_000_000 + u64::from_str_radix(&rev[1..], 16).unwrap(),
        0,
    )
}

fn like(did: &str, rkey: &str, rev: &str, t: i64) -> String {
    format!(
        r#"{{"did":"{did}","time_us":{t},"kind":"commit","commit":{{"rev":"{rev}","operation":"create","collection":"app.bsky.feed.like","rkey":"{rkey}","record":{{"$type":"app.bsky.feed.like","createdAt":"2026-07-04T14:38:07.513Z","subject":{{"cid":"bafyx","uri":"at://{B}/app.bsky.feed.post/1"}}}},"cid":"{cid}"}}}}"#,
        rev = tid_of(rev),
        cid = common::pds::dag_cbor_cid(rkey.as_bytes()),
    )
}

fn post(did: &str, rkey: &str, rev: &str, t: i64) -> String {
    format!(
        r#"{{"did":"{did}","time_us":{t},"kind":"commit","commit":{{"rev":"{rev}","operation":"create","collection":"app.bsky.feed.post","rkey":"{rkey}","record":{{"$type":"app.bsky.feed.post","text":"hi","createdAt":"2026-07-04T14:38:07.513Z"}},"cid":"{cid}"}}}}"#,
        rev = tid_of(rev),
        cid = common::pds::dag_cbor_cid(format!("p{rkey}").as_bytes()),
    )
}

fn account(did: &str, active: bool, status: Option<&str>, t: i64) -> String {
    let status = status
        .map(|s| format!(r#","status":"{s}""#))
        .unwrap_or_default();
    format!(
        r#"{{"did":"{did}","time_us":{t},"kind":"account","account":{{"active":{active},"did":"{did}","seq":1,"time":"2026-07-04T14:38:07Z"{status}}}}}"#
    )
}

fn identity(did: &str, handle: &str, t: i64) -> String {
    format!(
        r#"{{"did":"{did}","time_us":{t},"kind":"identity","identity":{{"did":"{did}","handle":"{handle}","seq":2,"time":"2026-07-04T14:38:07Z"}}}}"#
    )
}

async fn run(cfg: Config, lines: &[String]) {
    let server = JetstreamServer::start(lines.iter().map(|l| Line::new(l)).collect()).await;
    let mut cfg = cfg;
    cfg.source.endpoints = vec![server.url()];
    cfg.batch.max_events = 3; // spread the story over several batches
    let r = start(Consumer::new(cfg), ConsumeOptions::default());
    server.wait_connections(1).await;
    server.publish_all();
    r.wait_cursor(common::last_time_us(&server.lines())).await;
    r.stop().await.unwrap();
}

fn story() -> Vec<String> {
    vec![
        like(A, "l1", "3a01", 100),
        post(A, "p1", "3a02", 101),
        like(B, "l2", "3b01", 102),
        identity(A, "alice.example.com", 103),
        account(A, false, Some("deleted"), 104),
        // A replay of A's older commits (as after a rewind) must not
        // resurrect them.
        like(A, "l1", "3a01", 105),
        post(A, "p3", "3a03", 106),
        like(B, "l3", "3b02", 107),
    ]
}

async fn purge(db: TestDb) {
    run(config(&db, "ws://x/subscribe"), &story()).await;
    assert_eq!(
        db.rows("likes", &["did"]).await,
        vec![vec![Some(B.to_owned())], vec![Some(B.to_owned())]]
    );
    assert_eq!(db.count("posts").await, 0);
    let repo = db
        .rows("parity_repos", &["did", "handle", "status", "active"])
        .await;
    assert_eq!(repo[0][0].as_deref(), Some(A));
    assert_eq!(repo[0][1].as_deref(), Some("alice.example.com"));
    assert_eq!(repo[0][2].as_deref(), Some("deleted"));
    assert!(matches!(repo[0][3].as_deref(), Some("0" | "false")));

    // Reactivation restores the status and new commits apply again.
    run(
        config(&db, "ws://x/subscribe"),
        &[account(A, true, None, 200), like(A, "l9", "3a09", 201)],
    )
    .await;
    assert_eq!(
        db.scalar(&format!(
            "SELECT status FROM parity_repos WHERE did = '{A}'"
        ))
        .await
        .as_deref(),
        Some("active")
    );
    assert_eq!(db.count("likes").await, 3);
}

backend_tests!(deleted_accounts_are_purged, |db| purge(db));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_policy_and_purge_on_takedown() {
    let db = TestDb::sqlite();
    let mut cfg = config(&db, "ws://x/subscribe");
    cfg.accounts.on_delete = "keep".into();
    run(cfg, &story()).await;
    assert_eq!(db.count("likes").await, 3);
    assert_eq!(db.count("posts").await, 2);

    let db = TestDb::sqlite();
    let mut cfg = config(&db, "ws://x/subscribe");
    cfg.accounts.purge_on = vec!["takendown".into()];
    run(
        cfg,
        &[
            like(A, "l1", "3a01", 1),
            account(A, false, Some("takendown"), 2),
            like(B, "l2", "3b01", 3),
        ],
    )
    .await;
    assert_eq!(
        db.rows("likes", &["did"]).await,
        vec![vec![Some(B.to_owned())]]
    );
    // Without purge_on, a suspension is only recorded.
    let db = TestDb::sqlite();
    run(
        config(&db, "ws://x/subscribe"),
        &[
            like(A, "l1", "3a01", 1),
            account(A, false, Some("suspended"), 2),
        ],
    )
    .await;
    assert_eq!(db.count("likes").await, 1);
    assert_eq!(
        db.scalar(&format!(
            "SELECT status FROM parity_repos WHERE did = '{A}'"
        ))
        .await
        .as_deref(),
        Some("suspended")
    );
}

/// A Jetstream v2 `#sync` frame (the upstream event wrapped verbatim).
fn sync_v2(did: &str, rev: &str, seq: i64) -> String {
    format!(
        r#"{{"$type":"message","payload":{{"$type":"network.bsky.jetstream.subscribeEvents#sync","seq":{seq},"did":"{did}","time":"2026-07-04T14:38:08.000000Z","sync":{{"did":"{did}","rev":"{rev}","seq":{seq},"time":"2026-07-04T14:38:08Z","blocks":{{"$bytes":"AQ"}}}}}}}}"#
    )
}

/// What the reference PDS sends for a new account (its first commit, then a
/// `#sync` at that same rev) and on reactivation (a `#sync` at a rev parity
/// already has) queues nothing; a `#sync` newer than every applied commit
/// still queues a re-import.
async fn sync_not_newer_than_applied_rev(db: TestDb) {
    const C: &str = "did:plc:cccccccccccccccccccccccc";
    let frames: Vec<Line> = [
        // A: first commit, then (next batch) a #sync at the same rev, then
        // one at an older rev.
        common::v1_to_v2(&like(A, "a1", "3a0a", 1), 1),
        sync_v2(A, &tid_of("3a0a"), 2),
        sync_v2(A, &tid_of("3a09"), 3),
        // C: commit and #sync at the same rev, sent together.
        common::v1_to_v2(&like(C, "c1", "3a0c", 4), 4),
        sync_v2(C, &tid_of("3a0c"), 5),
        // B: a #sync newer than its last commit: re-import queued.
        common::v1_to_v2(&like(B, "b1", "3a0b", 6), 6),
        sync_v2(B, &tid_of("3a0f"), 7),
    ]
    .iter()
    .map(|t| Line::v2(t))
    .collect();
    let server = JetstreamServer::start(frames).await;
    let mut cfg = config(&db, &server.v2_url());
    cfg.source.compress = false;
    let run = start(Consumer::new(cfg), ConsumeOptions::default());
    server.wait_connections(1).await;
    server.publish(1);
    run.wait_cursor(1).await;
    server.publish_all();
    run.wait_cursor(7).await;
    run.stop().await.unwrap();
    let queued = |did: &str| {
        let db = &db;
        let q = format!(
            "SELECT CAST(COUNT(*) AS TEXT) FROM parity_import_states WHERE did = '{did}' AND status = 'pending'"
        );
        let r = format!(
            "SELECT CAST(COUNT(*) AS TEXT) FROM parity_repos WHERE did = '{did}' AND resync_requested_at IS NOT NULL"
        );
        async move { (db.scalar(&q).await, db.scalar(&r).await) }
    };
    let none = (Some("0".to_owned()), Some("0".to_owned()));
    assert_eq!(
        queued(A).await,
        none,
        "a #sync at an applied rev queues nothing"
    );
    assert_eq!(
        queued(C).await,
        none,
        "nor one in the same batch as its commit"
    );
    let one = (Some("1".to_owned()), Some("1".to_owned()));
    assert_eq!(queued(B).await, one, "a newer #sync queues a re-import");
}

backend_tests!(sync_at_an_applied_rev_changes_nothing, |db| {
    sync_not_newer_than_applied_rev(db)
});
