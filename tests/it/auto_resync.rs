//! `import.auto_resync` (issue 15): `parity consume` heals a repo the
//! stream flags, by itself. A local relay sends a live commit for an
//! account and then a `#sync` for it; the account's PDS (which is also the
//! PLC directory here) has the new repo state; the consumer's worker
//! re-imports it whole (getRepo) and the rows end equal to the repo, with
//! the row the repo no longer has removed, and no `parity resume`.
//! The same after a commit that fails `source.verify = "signature"`: the
//! commit is dropped, the DID flagged, and the worker heals it.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::importer::{self, states};
use common::jetstream::{JetstreamServer, Line};
use common::pds::{GET_REPO, Pds, SynthRecord, tid};
use common::{TestDb, config, start};
use parity::cmd::consume::{ConsumeOptions, Consumer};
use parity::obs::DropReason;
use parity::source::VerifyMode;

/// Rows by table, as `importer::expected` and `importer::stored` give them.
type Rows = BTreeMap<&'static str, Vec<Vec<Option<String>>>>;

const DID: &str = "did:plc:autoresyncaaaaaaaaaaaaaa";

fn like(rkey: &str, n: u32) -> SynthRecord {
    SynthRecord::new(
        "app.bsky.feed.like",
        rkey,
        &format!(
            r#"{{"$type":"app.bsky.feed.like","createdAt":"2026-07-04T14:38:0{n}.000Z","subject":{{"cid":"bafyreib7pjfjurxsuyvzie2mb35om7yce664nen7mdt7ta6sktvbzv32pu","uri":"at://did:plc:oy5nmpi2bgcvjnpktfafng5z/app.bsky.feed.post/3mpt325iz{n}aa"}}}}"#
        ),
    )
}

backend_tests!(auto_resync_heals_a_repo_after_a_sync, |db| {
    auto_resync_heals_a_repo_after_a_sync(db, true)
});

/// The control: the same stream without the worker leaves the re-import
/// queued and the stale row in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auto_resync_the_reimport_waits() {
    auto_resync_heals_a_repo_after_a_sync(TestDb::sqlite(), false).await;
}

async fn auto_resync_heals_a_repo_after_a_sync(db: TestDb, on: bool) {
    let pds = Pds::start().await;
    let (rev0, rev1) = (tid(1_780_000_000_000_000, 1), tid(1_780_000_100_000_000, 1));
    pds.add_repo(
        DID,
        &rev1,
        None,
        vec![
            like("3mptbypaaaaa2", 1),
            like("3mptbypaaaaa3", 2),
            like("3mptbypaaaaa4", 3),
        ],
    );
    // Live: a like the repo no longer has (deleted while we were away).
    let stale = serde_json::from_str::<serde_json::Value>(&like("3mptbypaaaaa9", 9).json).unwrap();
    let commit = common::frames::commit(
        10,
        DID,
        &rev0,
        &[("app.bsky.feed.like/3mptbypaaaaa9".into(), stale)],
    );
    let sync = common::frames::message(
        &serde_json::json!({"op": 1, "t": "#sync"}),
        &serde_json::json!({"seq": 11, "did": DID, "rev": rev1, "time": "2026-07-04T14:39:15.000Z"}),
    );
    let relay =
        JetstreamServer::start(vec![Line::frame(&commit, 10), Line::frame(&sync, 11)]).await;
    let mut cfg = config(&db, &relay.firehose_url());
    cfg.import.auto_resync = on;
    cfg.import.requests_per_second = 1000;
    cfg.import.backoff_initial_ms = 10;
    cfg.import.backoff_max_ms = 50;
    cfg.identity.plc_url = pds.url();
    cfg.identity.allow_private_addresses = true;
    let run = start(Consumer::new(cfg), ConsumeOptions::default());
    relay.wait_connections(1).await;
    relay.publish(1);
    run.wait_cursor(10).await;
    assert_eq!(db.count("likes").await, 1, "the live like");
    relay.publish_all();
    run.wait_cursor(11).await;

    let revs: BTreeMap<String, String> = [(DID.to_owned(), rev1.clone())].into();
    let want = importer::expected(&pds, &[DID], &revs, false);
    if on {
        until_healed(&db, &pds, DID, &want).await;
    }
    run.stop().await.unwrap();
    if !on {
        assert_eq!(pds.count(GET_REPO), 0);
        assert_eq!(db.count("likes").await, 1, "the stale like is still there");
        let s = states(&db, DID).await;
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].0.as_str(), s[0].1.as_str()), ("*", "pending"));
    } else {
        assert_eq!(importer::stored(&db, want.keys().copied()).await, want);
        assert_eq!(db.count("likes").await, 3);
    }
}

/// Waits (50 ms polls, 30 s at most) until `did`'s states are completed
/// and its rows are `want`, fetched whole once, its resync flag cleared.
async fn until_healed(db: &TestDb, pds: &Pds, did: &str, want: &Rows) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let done = states(db, did).await.iter().all(|s| s.1 == "completed");
        if done && importer::stored(db, want.keys().copied()).await == *want {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not healed: {:?}",
            states(db, did).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pds.count(GET_REPO), 1, "one whole-repo fetch");
    assert!(
        db.scalar(&format!(
            "SELECT CAST(resync_requested_at AS TEXT) FROM parity_repos WHERE did = '{did}'"
        ))
        .await
        .is_none(),
        "the flag is cleared"
    );
}

backend_tests!(auto_resync_heals_a_repo_after_a_bad_signature, |db| {
    auto_resync_heals_a_repo_after_a_bad_signature(db, true)
});

/// The control: verification drops the forged commit and flags the DID,
/// but without the worker nothing re-imports it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auto_resync_a_bad_signature_only_flags() {
    auto_resync_heals_a_repo_after_a_bad_signature(TestDb::sqlite(), false).await;
}

/// An account (a generated DID whose key the PDS's DID document carries)
/// commits two likes on the relay, the second with a forged signature;
/// the PDS's repo has moved on (three other likes, a later rev).
async fn auto_resync_heals_a_repo_after_a_bad_signature(db: TestDb, on: bool) {
    let did = testnet::signed::did(0);
    let pds = Pds::start().await;
    let rev = tid(1_780_000_100_000_000, 1);
    pds.add_repo(
        &did,
        &rev,
        None,
        vec![
            like("3mptbypaaaaa2", 1),
            like("3mptbypaaaaa3", 2),
            like("3mptbypaaaaa4", 3),
        ],
    );
    let frames = testnet::signed::likes(1, 2, 10);
    let forged = testnet::tamper::signature(&frames[1].1);
    let relay = JetstreamServer::start(vec![
        Line::frame(&frames[0].1, 10),
        Line::frame(&forged, 11),
    ])
    .await;
    let mut cfg = config(&db, &relay.firehose_url());
    cfg.source.verify = VerifyMode::Signature;
    cfg.import.auto_resync = on;
    cfg.import.requests_per_second = 1000;
    cfg.import.backoff_initial_ms = 10;
    cfg.import.backoff_max_ms = 50;
    cfg.identity.plc_url = pds.url();
    cfg.identity.allow_private_addresses = true;
    let run = start(Consumer::new(cfg), ConsumeOptions::default());
    relay.wait_connections(1).await;
    relay.publish(1);
    run.wait_cursor(10).await;
    assert_eq!(db.count("likes").await, 1, "the verified live like");
    relay.publish_all();
    run.wait_cursor(11).await;
    assert_eq!(run.stats.dropped(DropReason::BadSignature), 1);

    let revs: BTreeMap<String, String> = [(did.clone(), rev.clone())].into();
    let want = importer::expected(&pds, &[did.as_str()], &revs, false);
    if on {
        until_healed(&db, &pds, &did, &want).await;
    }
    run.stop().await.unwrap();
    if on {
        assert_eq!(importer::stored(&db, want.keys().copied()).await, want);
        assert_eq!(
            db.count("likes").await,
            3,
            "the live like the repo lacks is gone"
        );
    } else {
        assert_eq!(pds.count(GET_REPO), 0);
        assert_eq!(db.count("likes").await, 1, "only the verified like");
        let s = states(&db, &did).await;
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].0.as_str(), s[0].1.as_str()), ("*", "pending"));
    }
}
