//! `parity import` against a misbehaving PDS: 429 with `Retry-After`, 5xx,
//! a hung request (client timeout), malformed and non-JSON bodies; retries
//! running out (the pair fails, `resume` finishes it); and per-host pacing.

use crate::common;

use std::time::Duration;

use common::importer::{self, parity, run};
use common::pds::{Fault, GET_LATEST_COMMIT, LIST_RECORDS, PLC, Pds, SynthRecord, tid};
use common::{TestDb, fixture};

const LIKE: &str = "app.bsky.feed.like";

#[tokio::test(flavor = "multi_thread")]
async fn every_fault_is_retried_and_the_import_completes() {
    let db = TestDb::sqlite();
    let pds = Pds::start().await;
    let a = pds.add_car(fixture("car/jetstream_repo.car"));
    pds.inject(
        LIST_RECORDS,
        vec![
            Fault::RateLimited {
                retry_after_secs: Some(1),
                remaining: Some(0),
                reset_epoch_secs: None,
            },
            Fault::Status(500),
            Fault::Status(502),
            Fault::Hang(Duration::from_secs(4)),
            Fault::MalformedJson,
            Fault::NotJson,
        ],
    );
    pds.inject(GET_LATEST_COMMIT, vec![Fault::Status(503)]);
    let mut cmd = parity(&db, &pds, &["import", &a.did, "--collection", LIKE]);
    cmd.env("PARITY_IMPORT_PAGE_SIZE", "4")
        .env("PARITY_IMPORT_TIMEOUT_SECONDS", "1")
        .env("PARITY_IMPORT_MAX_RETRIES", "8");
    let (code, out, err) = run(cmd).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("10 records synced, 0 skipped, 0 failed"),
        "{out}"
    );
    assert_eq!(db.count("likes").await, 10);
    assert_eq!(
        importer::states(&db, &a.did).await,
        vec![(LIKE.to_owned(), "completed".to_owned(), 10, 0, 0)]
    );

    // The request after the 429 waited for Retry-After.
    let list: Vec<_> = pds
        .requests()
        .into_iter()
        .filter(|r| r.method == LIST_RECORDS)
        .collect();
    assert_eq!(list[0].status, 429);
    assert!(
        list[1].at.duration_since(list[0].at) >= Duration::from_millis(950),
        "retried {:?} after a 429 with Retry-After: 1",
        list[1].at.duration_since(list[0].at)
    );
    // 6 faults + 3 pages (4 + 4 + 2 likes) + the empty last page.
    assert_eq!(list.len(), 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn ratelimit_remaining_zero_pauses_the_host_until_reset() {
    let db = TestDb::sqlite();
    let pds = Pds::start().await;
    let a = pds.add_car(fixture("car/jetstream_repo.car"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Every answer says the window is used up until 2 s from now.
    pds.set_rate_limit_headers(3000, 0, now + 2);
    let (code, out, err) = run(parity(&db, &pds, &["import", &a.did, "--collection", LIKE])).await;
    assert_eq!(code, 0, "{out}{err}");
    let reqs: Vec<_> = pds
        .requests()
        .into_iter()
        .filter(|r| r.method.starts_with("com.atproto."))
        .collect();
    let first = reqs.first().unwrap().at;
    let later: Vec<_> = reqs.iter().skip(1).collect();
    assert!(!later.is_empty());
    for r in later {
        assert!(
            r.at.duration_since(first) >= Duration::from_millis(900),
            "{} sent {:?} after a response with ratelimit-remaining: 0",
            r.method,
            r.at.duration_since(first)
        );
    }
    assert_eq!(
        pds.requests().iter().filter(|r| r.status == 429).count(),
        0,
        "no 429 was provoked"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exhausted_retries_fail_the_pair_and_resume_finishes_it() {
    let db = TestDb::sqlite();
    let pds = Pds::start().await;
    let a = pds.add_car(fixture("car/jetstream_repo.car"));
    // Two pages succeed, then the PDS fails three times in a row. Faults
    // are taken when a request arrives, so the second request is held at
    // the gate while the faults are queued for the ones after it.
    pds.gate_list_records_after(1);
    let mut cmd = parity(&db, &pds, &["import", &a.did, "--collection", LIKE]);
    cmd.env("PARITY_IMPORT_PAGE_SIZE", "4")
        .env("PARITY_IMPORT_MAX_RETRIES", "3");
    let child = importer::spawn(cmd);
    pds.wait_for_list_records(2).await;
    pds.inject(
        LIST_RECORDS,
        vec![Fault::Status(500), Fault::Status(500), Fault::Status(500)],
    );
    pds.open_gate();
    let out = child.wait_with_output().await.unwrap();
    let (code, stdout, stderr) = (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("HTTP 500") && stderr.contains("3 attempts"),
        "{stderr}"
    );
    assert_eq!(
        db.count("likes").await,
        8,
        "the pages before the failure were kept"
    );
    let err = db
        .scalar("SELECT error FROM parity_import_states WHERE status = 'failed'")
        .await
        .unwrap();
    assert!(err.contains("HTTP 500"), "{err}");

    let (code, out, err) = run(parity(&db, &pds, &["resume"])).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("2 records synced, 0 skipped, 0 failed; 1 DIDs completed"),
        "{out}"
    );
    assert_eq!(db.count("likes").await, 10);
    assert_eq!(
        importer::states(&db, &a.did).await,
        vec![(LIKE.to_owned(), "completed".to_owned(), 10, 0, 0)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_to_one_host_are_paced_however_many_dids_live_there() {
    let db = TestDb::sqlite();
    let pds = Pds::start().await;
    let mut dids = Vec::new();
    for d in 0..4u64 {
        let did = format!("did:plc:pace{d:020}");
        let records = (0..25u64)
            .map(|i| {
                SynthRecord::new(
                    LIKE,
                    &tid(1_700_000_000_000_000 + i, d as u16),
                    &format!(
                        r#"{{"$type":"{LIKE}","subject":{{"uri":"at://did:plc:x/app.bsky.feed.post/{i}","cid":"bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"}},"createdAt":"2026-01-01T00:00:00.000Z"}}"#
                    ),
                )
            })
            .collect();
        pds.add_repo(&did, &tid(1_800_000_000_000_000, 1), None, records);
        pds.add_did_doc(&did, &format!("pace{d}.test"));
        dids.push(did);
    }
    let rps = 20.0;
    let mut args = vec!["import", "--concurrency", "4"];
    args.extend(dids.iter().map(String::as_str));
    let mut cmd = parity(&db, &pds, &args);
    cmd.env("PARITY_IMPORT_REQUESTS_PER_SECOND", "20")
        .env("PARITY_IMPORT_PAGE_SIZE", "5");
    let (code, out, err) = run(cmd).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(db.count("likes").await, 100);
    let xrpc: Vec<_> = pds
        .requests()
        .into_iter()
        .filter(|r| r.method.starts_with("com.atproto."))
        .map(|r| r.at)
        .collect();
    // describeRepo + getLatestCommit + 5 pages + the empty last page per DID.
    assert_eq!(xrpc.len(), 4 * 8);
    let window = 10;
    for w in xrpc.windows(window + 1) {
        let span = w[window].duration_since(w[0]).as_secs_f64();
        assert!(
            span >= window as f64 / rps * 0.9,
            "{} requests to one host within {span:.3} s at {rps}/s",
            window + 1
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plc_directory_blip_is_retried_but_not_forever() {
    let db = TestDb::sqlite();
    let pds = Pds::start().await;
    let a = pds.add_car(fixture("car/repostream_tiny.car"));
    pds.inject(PLC, vec![Fault::Status(503), Fault::Status(500)]);
    let (code, out, err) = run(parity(&db, &pds, &["import", &a.did])).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(pds.count(PLC), 3);

    // A directory that stays down fails the DID with a clear error.
    let db = TestDb::sqlite();
    pds.inject(PLC, vec![Fault::Status(503); 4]);
    let (code, _, err) = run(parity(&db, &pds, &["import", &a.did])).await;
    assert_eq!(code, 1);
    assert!(err.contains("answered HTTP 503"), "{err}");
    assert_eq!(pds.count(PLC), 3 + 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn records_that_fail_their_mapper_are_counted_and_named() {
    let db = TestDb::sqlite();
    let pds = Pds::start().await;
    let did = "did:plc:mapperfail00000000000000";
    let post = "app.bsky.feed.post";
    let good = |i: u64| {
        SynthRecord::new(
            post,
            &tid(1_700_000_000_000_000 + i, 1),
            &format!(
                r#"{{"$type":"{post}","text":"ok {i}","createdAt":"2026-01-01T00:00:00.000Z"}}"#
            ),
        )
    };
    // No text: the built-in posts mapper requires it.
    let bad = SynthRecord::new(
        post,
        &tid(1_700_000_000_000_009, 1),
        &format!(r#"{{"$type":"{post}","createdAt":"2026-01-01T00:00:00.000Z"}}"#),
    );
    let bad_uri = format!("at://{did}/{post}/{}", bad.rkey);
    pds.add_repo(
        did,
        &tid(1_800_000_000_000_000, 1),
        None,
        vec![good(1), bad, good(2)],
    );
    let (code, out, err) = run(parity(&db, &pds, &["import", did])).await;
    assert_eq!(code, 0, "a bad record does not fail the DID: {out}{err}");
    assert!(
        out.contains("2 records synced, 0 skipped, 1 failed"),
        "{out}"
    );
    assert!(err.contains(&bad_uri) && err.contains("text"), "{err}");
    assert_eq!(db.count("posts").await, 2);
    assert_eq!(
        importer::states(&db, did).await,
        vec![(post.to_owned(), "completed".to_owned(), 2, 0, 1)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pds_without_get_latest_commit_imports_rows_that_yield_to_live_changes() {
    let db = TestDb::sqlite();
    let pds = Pds::start().await;
    let a = pds.add_car(fixture("car/repostream_tiny.car"));
    // The route is missing (404), and this PDS does not implement
    // getRepoStatus either (501).
    pds.inject(GET_LATEST_COMMIT, vec![Fault::Status(404)]);
    let (code, out, err) = run(parity(&db, &pds, &["import", &a.did, "--collection", LIKE])).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(db.count("likes").await, 2);
    // The empty rev sorts before every real one.
    let revs = db.rows("likes", &["rev"]).await;
    assert!(revs.iter().all(|r| r[0].as_deref() == Some("")), "{revs:?}");
    assert!(
        pds.requests()
            .iter()
            .any(|r| r.method == "com.atproto.sync.getRepoStatus")
    );
}
