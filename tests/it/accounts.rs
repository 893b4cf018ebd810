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
