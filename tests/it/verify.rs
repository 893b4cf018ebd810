//! Live verification (`source.verify`, issue 15) end to end: the recorded
//! relay frames served by a local relay, their DID documents by a local
//! PLC directory, consumed with verification on.

use std::collections::HashMap;

use crate::common;

use common::jetstream::{JetstreamServer, Line};
use common::pds::{PLC, Pds};
use common::{TestDb, config, relay_frames, start};
use parity::cmd::consume::{ConsumeOptions, Consumer};
use parity::config::Config;
use parity::obs::DropReason;
use parity::source::VerifyMode;
use testnet::tamper;

fn docs() -> HashMap<String, serde_json::Value> {
    let text = std::fs::read_to_string(common::fixture(
        "firehose/bsky-relay-2026-07-04-seq-31527015372-31527015471/did_docs.json",
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A PLC directory serving every recorded document.
async fn plc() -> Pds {
    let pds = Pds::start().await;
    for (_, doc) in docs() {
        pds.add_did_doc_json(doc);
    }
    pds
}

fn verifying(db: &TestDb, relay: &JetstreamServer, plc: &Pds, mode: VerifyMode) -> Config {
    let mut c = config(db, &relay.firehose_url());
    c.source.verify = mode;
    c.identity.plc_url = plc.url();
    c.identity.allow_private_addresses = true;
    c
}

/// The DID of a commit message (its `repo`).
fn repo_of(msg: &[u8]) -> Option<String> {
    let mut de = serde_ipld_dagcbor::de::Deserializer::from_slice(msg);
    let _h: ipld_core::ipld::Ipld = serde::Deserialize::deserialize(&mut de).ok()?;
    let b: ipld_core::ipld::Ipld = serde::Deserialize::deserialize(&mut de).ok()?;
    match b {
        ipld_core::ipld::Ipld::Map(m) => match m.get("repo") {
            Some(ipld_core::ipld::Ipld::String(s)) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

async fn consume(
    cfg: Config,
    relay: &JetstreamServer,
    last: i64,
) -> std::sync::Arc<parity::obs::Obs> {
    let run = start(Consumer::new(cfg), ConsumeOptions::default());
    relay.wait_connections(1).await;
    relay.publish_all();
    run.wait_cursor(last).await;
    let stats = run.stats.clone();
    run.stop().await.unwrap();
    stats
}

backend_tests!(
    real_frames_verify_in_full_and_write_what_an_unverified_run_writes,
    |db| { real_frames_verify_in_full_and_write_what_an_unverified_run_writes(db) }
);
async fn real_frames_verify_in_full_and_write_what_an_unverified_run_writes(db: TestDb) {
    let frames = relay_frames();
    let last = frames.last().unwrap().0;
    let lines: Vec<Line> = frames.iter().map(|(s, b)| Line::frame(b, *s)).collect();
    let plc = plc().await;
    let relay = JetstreamServer::start(lines.clone()).await;
    let stats = consume(verifying(&db, &relay, &plc, VerifyMode::Full), &relay, last).await;
    for r in [
        DropReason::BadSignature,
        DropReason::BadMst,
        DropReason::Unverifiable,
    ] {
        assert_eq!(stats.dropped(r), 0, "{r:?}");
    }
    // One document per commit DID, each fetched once (then cached).
    assert_eq!(plc.count(PLC), 98);
    let plain = TestDb::sqlite();
    let relay2 = JetstreamServer::start(lines).await;
    consume(
        verifying(&plain, &relay2, &plc, VerifyMode::None),
        &relay2,
        last,
    )
    .await;
    assert_eq!(plc.count(PLC), 98, "no verification, no key lookups");
    assert!(db.count("likes").await > 0);
    for t in ["likes", "posts", "reposts", "follows"] {
        assert_eq!(
            db.rows(t, &["uri", "cid", "rev"]).await,
            plain.rows(t, &["uri", "cid", "rev"]).await,
            "{t}"
        );
    }
}

backend_tests!(
    tampered_commits_are_dropped_counted_and_flagged_for_resync,
    |db| { tampered_commits_are_dropped_counted_and_flagged_for_resync(db) }
);
async fn tampered_commits_are_dropped_counted_and_flagged_for_resync(db: TestDb) {
    let mut frames = relay_frames();
    let last = frames.last().unwrap().0;
    // Single-op commits of a like (a record with createdAt) to tamper
    // with (drops count events: one per op).
    let likes: Vec<usize> = frames
        .iter()
        .enumerate()
        .filter(|(_, (_, m))| {
            repo_of(m).is_some()
                && m.windows(18).any(|w| w == b"app.bsky.feed.like")
                && m.windows(6).filter(|w| *w == b"action").count() == 1
        })
        .map(|(i, _)| i)
        .take(3)
        .collect();
    let (sig, node, swapped) = (likes[0], likes[1], likes[2]);
    frames[sig].1 = tamper::signature(&frames[sig].1);
    frames[node].1 = tamper::mst_node(&frames[node].1);
    frames[swapped].1 = tamper::record_swapped(&frames[swapped].1);
    let bad: Vec<String> = [sig, node, swapped]
        .iter()
        .map(|&i| repo_of(&frames[i].1).unwrap())
        .collect();
    let plc = plc().await;
    let relay =
        JetstreamServer::start(frames.iter().map(|(s, b)| Line::frame(b, *s)).collect()).await;
    let stats = consume(verifying(&db, &relay, &plc, VerifyMode::Full), &relay, last).await;
    assert_eq!(stats.dropped(DropReason::BadSignature), 1);
    assert_eq!(stats.dropped(DropReason::BadMst), 2);
    assert_eq!(db.cursor().await, Some(last), "the cursor moved past them");
    for did in &bad {
        let like_rows = db
            .scalar(&format!(
                "SELECT CAST(COUNT(*) AS TEXT) FROM likes WHERE did = '{did}'"
            ))
            .await;
        assert_eq!(like_rows.as_deref(), Some("0"), "{did}: nothing written");
        assert!(
            db.scalar(&format!(
                "SELECT CAST(resync_requested_at AS TEXT) FROM parity_repos WHERE did = '{did}'"
            ))
            .await
            .is_some(),
            "{did}: flagged for a re-import"
        );
        assert_eq!(
            db.scalar(&format!(
                "SELECT status FROM parity_import_states WHERE did = '{did}' AND collection = '*'"
            ))
            .await
            .as_deref(),
            Some("pending"),
            "{did}: a re-import is queued"
        );
    }
    // The signature mode does not see the MST: only the signature counts.
    let db2 = TestDb::sqlite();
    let relay2 =
        JetstreamServer::start(frames.iter().map(|(s, b)| Line::frame(b, *s)).collect()).await;
    let stats = consume(
        verifying(&db2, &relay2, &plc, VerifyMode::Signature),
        &relay2,
        last,
    )
    .await;
    assert_eq!(stats.dropped(DropReason::BadSignature), 1);
    assert_eq!(stats.dropped(DropReason::BadMst), 0);
}

/// A key rotation: the directory first serves an old key, the account
/// rotates (new document, `#identity`), and its next commit verifies with
/// the new key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_used_after_identity() {
    let db = TestDb::sqlite();
    let frames = relay_frames();
    let (i, (seq, msg)) = frames
        .iter()
        .enumerate()
        .find(|(_, (_, m))| repo_of(m).is_some())
        .unwrap();
    let did = repo_of(msg).unwrap();
    let docs = docs();
    let other = frames[i + 1..]
        .iter()
        .find_map(|(_, m)| repo_of(m).filter(|d| *d != did))
        .unwrap();
    // The old document: the real one with another account's key.
    let mut old = docs[&did].clone();
    old["verificationMethod"][0]["publicKeyMultibase"] =
        docs[&other]["verificationMethod"][0]["publicKeyMultibase"].clone();
    let plc = Pds::start().await;
    plc.add_did_doc_json(old);
    let identity = common::frames::message(
        &serde_json::json!({"op": 1, "t": "#identity"}),
        &serde_json::json!({"seq": seq + 1, "did": did, "time": "2026-07-04T14:39:15.000Z"}),
    );
    let lines = vec![
        // Signed with the new key while the directory has the old one.
        Line::frame(msg, *seq),
        Line::frame(&identity, seq + 1),
        Line::frame(&tamper::with_seq(msg, seq + 2), seq + 2),
    ];
    let relay = JetstreamServer::start(lines).await;
    let run = start(
        Consumer::new(verifying(&db, &relay, &plc, VerifyMode::Full)),
        ConsumeOptions::default(),
    );
    relay.wait_connections(1).await;
    relay.publish(1);
    run.wait_cursor(*seq).await;
    assert_eq!(
        run.stats.dropped(DropReason::BadSignature),
        1,
        "old key: rejected"
    );
    // The rotation.
    plc.add_did_doc_json(docs[&did].clone());
    relay.publish_all();
    run.wait_cursor(seq + 2).await;
    let stats = run.stats.clone();
    run.stop().await.unwrap();
    assert_eq!(
        stats.dropped(DropReason::BadSignature),
        1,
        "new key: accepted"
    );
    let rows = db
        .scalar(&format!(
            "SELECT CAST(COUNT(*) AS TEXT) FROM (SELECT uri FROM likes WHERE did = '{did}' UNION ALL SELECT uri FROM posts WHERE did = '{did}' UNION ALL SELECT uri FROM reposts WHERE did = '{did}' UNION ALL SELECT uri FROM follows WHERE did = '{did}') x"
        ))
        .await;
    assert_eq!(rows.as_deref(), Some("1"));
}

#[test]
fn verification_needs_firehose_endpoints() {
    let mut c = Config::default();
    c.source.verify = VerifyMode::Signature;
    c.source.endpoints = vec!["wss://jetstream1.us-east.bsky.network/subscribe".into()];
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("source.verify needs firehose endpoints"), "{e}");
}

/// Chains of signed commits (generated accounts, one like each time, with
/// `since` and `prevData` linking them) verify in full: the benchmark's
/// workload, checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_commit_chains_verify_in_full() {
    let db = TestDb::sqlite();
    let frames = testnet::signed::likes(20, 5, 1);
    let plc = Pds::start().await;
    for a in 0..20 {
        plc.add_did_doc(&testnet::signed::did(a), &format!("signed{a}.test"));
    }
    let relay =
        JetstreamServer::start(frames.iter().map(|(s, b)| Line::frame(b, *s)).collect()).await;
    let stats = consume(verifying(&db, &relay, &plc, VerifyMode::Full), &relay, 100).await;
    for r in [
        DropReason::BadSignature,
        DropReason::BadMst,
        DropReason::Unverifiable,
    ] {
        assert_eq!(stats.dropped(r), 0, "{r:?}");
    }
    assert_eq!(stats.dropped(DropReason::StaleRev), 0);
    assert_eq!(db.count("likes").await, 100);
    assert_eq!(plc.count(PLC), 20);
}
