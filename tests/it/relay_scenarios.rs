//! indigo's relay scenarios (real frames, JSON form) replayed through a
//! local relay: stale revs are dropped, accounts are deleted, `#sync` marks
//! the repo for re-import.

use crate::common;

use common::frames::scenario;
use common::jetstream::{JetstreamServer, Line};
use common::{TestDb, config, start};
use parity::cmd::consume::{ConsumeOptions, Consumer};
use parity::obs::DropReason;

async fn relay(name: &str) -> (JetstreamServer, Vec<(i64, Vec<u8>, bool)>) {
    let frames = scenario(name);
    let server = JetstreamServer::start(
        frames
            .iter()
            .map(|(seq, b, _)| Line::frame(b, *seq))
            .collect(),
    )
    .await;
    (server, frames)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_revs_are_dropped() {
    let db = TestDb::sqlite();
    let (server, frames) = relay("rev_ordering.json").await;
    let run = start(
        Consumer::new(config(&db, &server.firehose_url())),
        ConsumeOptions::default(),
    );
    server.wait_connections(1).await;
    // The create, then two deletes whose revs are not newer (must drop).
    server.publish(3);
    run.wait_cursor(frames[2].0).await;
    assert_eq!(db.count("likes").await, 1, "stale deletes did not apply");
    // Then a delete with a newer rev.
    server.publish_all();
    run.wait_cursor(frames[3].0).await;
    let stats = run.stats.clone();
    run.stop().await.unwrap();
    assert_eq!(db.count("likes").await, 0);
    let dropped: Vec<bool> = frames.iter().map(|f| f.2).collect();
    assert_eq!(dropped, [false, true, true, false]);
    // The first dropped commit's rev (`3lmxjza3nva00`) is not a TID: it is
    // refused as malformed before the rev order is even looked at.
    assert_eq!(stats.dropped(DropReason::Malformed), 1);
    assert_eq!(stats.dropped(DropReason::StaleRev), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_lifecycle_and_sync() {
    let db = TestDb::postgres("lifecycle").await;
    let (server, frames) = relay("account_lifecycle.json").await;
    let run = start(
        Consumer::new(config(&db, &server.firehose_url())),
        ConsumeOptions::default(),
    );
    server.wait_connections(1).await;
    server.publish(3);
    run.wait_cursor(frames[2].0).await;
    let did = "did:plc:vvpy7d6y2li5yo73cgbszibl";
    let q = |col: &str| format!("SELECT {col}::text FROM parity_repos WHERE did = '{did}'");
    assert_eq!(
        db.scalar(&q("handle")).await.as_deref(),
        Some("pengua.bsky.social")
    );
    assert!(
        db.scalar(&q("resync_requested_at")).await.is_some(),
        "#sync recorded"
    );
    server.publish_all();
    run.wait_cursor(frames[3].0).await;
    run.stop().await.unwrap();
    assert_eq!(db.scalar(&q("status")).await.as_deref(), Some("deleted"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_lifecycle_applies_every_commit() {
    lifecycle("post_lifecycle.json").await;
}

/// The same story from pre-Sync-1.1 commits (no `prevData`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_post_lifecycle_applies_every_commit() {
    lifecycle("post_lifecycle_legacy.json").await;
}

async fn lifecycle(name: &str) {
    let db = TestDb::sqlite();
    let (server, frames) = relay(name).await;
    let run = start(
        Consumer::new(config(&db, &server.firehose_url())),
        ConsumeOptions::default(),
    );
    server.wait_connections(1).await;
    server.publish_all();
    run.wait_cursor(frames.last().unwrap().0).await;
    let stats = run.stats.clone();
    run.stop().await.unwrap();
    assert_eq!(stats.dropped(DropReason::StaleRev), 0);
    assert_eq!(stats.dropped(DropReason::Malformed), 0);
    // Independent expectation from the frames' ops: the last action per path wins.
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixture(&format!(
            "firehose/indigo-relay-scenarios/{name}"
        )))
        .unwrap(),
    )
    .unwrap();
    let mut last = std::collections::BTreeMap::new();
    for m in v["messages"].as_array().unwrap() {
        let b = &m["frame"]["body"];
        for op in b["ops"].as_array().unwrap() {
            let uri = format!(
                "at://{}/{}",
                b["repo"].as_str().unwrap(),
                op["path"].as_str().unwrap()
            );
            last.insert(uri, op["action"].as_str().unwrap().to_owned());
        }
    }
    for (table, nsid) in [
        ("likes", "app.bsky.feed.like"),
        ("posts", "app.bsky.feed.post"),
        ("profiles", "app.bsky.actor.profile"),
    ] {
        let want: Vec<Vec<Option<String>>> = last
            .iter()
            .filter(|(u, a)| u.contains(&format!("/{nsid}/")) && a.as_str() != "delete")
            .map(|(u, _)| vec![Some(u.clone())])
            .collect();
        assert_eq!(db.rows(table, &["uri"]).await, want, "{table}");
    }
}
