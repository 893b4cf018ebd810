//! `parity import` against servers that strangers control (issue 11, items
//! 8–10): PDS endpoints that point inside our network, redirects, did:web
//! on localhost, oversized (chunked) bodies, listRecords cursor cycles,
//! rate-limit headers that ask for an hour, a describeRepo with endless
//! collections, and DID documents claiming handles that are not theirs.
//!
//! Every local server listens on 127.0.0.1 over plain http, so the address
//! rules are tested with `identity.allow_private_addresses` off (the
//! operator-configured PLC directory is trusted either way), and everything
//! else with it on, as local testing must.

use crate::common;

use std::time::{Duration, Instant};

use common::importer::{ALLOW_PRIVATE, parity, run};
use common::pds::{
    ATPROTO_DID, DESCRIBE_REPO, DID_WEB, Fault, GET_LATEST_COMMIT, LIST_RECORDS, PLC, Pds,
    SynthRecord, tid,
};
use common::{TestDb, fixture};

const LIKE: &str = "app.bsky.feed.like";

fn likes(n: usize) -> Vec<SynthRecord> {
    (0..n)
        .map(|i| {
            let rkey = tid(1_700_000_000_000_000 + i as u64, 0);
            let json = format!(
                r#"{{"$type":"app.bsky.feed.like","subject":{{"uri":"at://did:plc:zzz/app.bsky.feed.post/{rkey}","cid":"bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"}},"createdAt":"2026-01-01T00:00:00.000Z"}}"#
            );
            SynthRecord::new(LIKE, &rkey, &json)
        })
        .collect()
}

/// A did:plc of 24 base32 characters, distinct per `n` (< 1024).
fn did(n: u32) -> String {
    const B32: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let tail: String = [n >> 5, n & 31]
        .iter()
        .map(|&k| B32[k as usize % 32] as char)
        .collect();
    format!("did:plc:hostilexxxxxxxxxxxxxxx{tail}")
}

fn xrpc_requests(pds: &Pds) -> usize {
    pds.count(LIST_RECORDS) + pds.count(DESCRIBE_REPO) + pds.count(GET_LATEST_COMMIT)
}

/// Item 8: without the opt-in, a PDS endpoint must be https at a public
/// address, checked for IP literals before sending and for names at
/// connect time. No request reaches the local PDS.
#[tokio::test(flavor = "multi_thread")]
async fn pds_endpoints_must_be_public_https_without_the_opt_in() {
    let db = TestDb::sqlite();
    let pds = Pds::start().await;
    let port = pds.addr().port();
    let endpoints = [
        (pds.url(), "127.0.0.1 is not a public address"),
        ("http://pds.example.com".to_owned(), "plain http is refused"),
        (
            format!("https://127.0.0.1:{port}"),
            "127.0.0.1 is not a public address",
        ),
        (
            "https://169.254.169.254".to_owned(),
            "169.254.169.254 is not a public address",
        ),
        (
            "https://100.64.0.1".to_owned(),
            "100.64.0.1 is not a public address",
        ),
        (
            format!("https://[::1]:{port}"),
            "::1 is not a public address",
        ),
        // A name: refused when it resolves, at connect time.
        (
            format!("https://localhost:{port}"),
            "localhost resolves to no public address",
        ),
    ];
    let mut dids = Vec::new();
    for (i, (endpoint, _)) in endpoints.iter().enumerate() {
        let d = did(i as u32);
        pds.add_repo(&d, &tid(1_700_000_000_000_000, 1), None, likes(2));
        pds.set_pds_endpoint(&d, endpoint);
        dids.push(d);
    }
    let mut args = vec!["import"];
    args.extend(dids.iter().map(String::as_str));
    let mut cmd = parity(&db, &pds, &args);
    cmd.env_remove(ALLOW_PRIVATE);
    let (code, out, err) = run(cmd).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!(
            "0 DIDs completed, 0 skipped, {} failed",
            dids.len()
        )),
        "{out}"
    );
    for (d, (endpoint, why)) in dids.iter().zip(&endpoints) {
        let line = err
            .lines()
            .find(|l| l.starts_with(&format!("{d}: failed:")))
            .unwrap_or_else(|| panic!("no failure line for {endpoint}: {err}"));
        assert!(line.contains(why), "{endpoint}: {line}");
    }
    // The trusted PLC directory answered; the "PDS" never heard from us.
    assert_eq!(pds.count(PLC), dids.len());
    assert_eq!(xrpc_requests(&pds), 0);
    assert_eq!(db.count("likes").await, 0);
}

/// Item 8: `did:web:localhost%3APORT` is plain http on this machine: only
/// with the opt-in.
#[tokio::test(flavor = "multi_thread")]
async fn did_web_on_localhost_needs_the_opt_in() {
    let db = TestDb::sqlite();
    let pds = Pds::start().await;
    let web = pds.local_did_web();
    pds.add_repo(&web, &tid(1_700_000_000_000_000, 1), None, likes(3));
    pds.set_did_web(&web);

    let mut cmd = parity(&db, &pds, &["import", &web]);
    cmd.env_remove(ALLOW_PRIVATE);
    let (code, out, err) = run(cmd).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!("{web}: failed:")) && err.contains("allow_private_addresses"),
        "{err}"
    );
    assert_eq!(pds.count(DID_WEB), 0);
    assert_eq!(xrpc_requests(&pds), 0);

    let (code, out, err) = run(parity(&db, &pds, &["import", &web])).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(db.count("likes").await, 3);
}

/// Item 8, with the opt-in: the endpoint is still reduced to its origin
/// (path, query and fragment never reach the wire) and redirects, from the
/// PLC directory or the PDS, are answers, never followed.
#[tokio::test(flavor = "multi_thread")]
async fn with_the_opt_in_endpoints_are_origins_and_redirects_are_not_followed() {
    let db = TestDb::sqlite();
    let pds = Pds::start().await;
    let a = did(1);
    pds.add_repo(&a, &tid(1_700_000_000_000_000, 1), None, likes(4));
    pds.set_pds_endpoint(&a, &format!("{}/evil/path?x=1#frag", pds.url()));
    let (code, out, err) = run(parity(&db, &pds, &["import", &a])).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(db.count("likes").await, 4);
    // Only /xrpc/… was asked for: the router counts those by method.
    assert!(pds.count(LIST_RECORDS) >= 1);

    // The PLC directory answers 302 to another path of the same server.
    let b = did(2);
    pds.add_repo(&b, &tid(1_700_000_000_000_000, 1), None, likes(1));
    let elsewhere = format!("{}/.well-known/atproto-did", pds.url());
    pds.inject(PLC, vec![Fault::Redirect(elsewhere.clone())]);
    let (code, out, err) = run(parity(&db, &pds, &["import", &b])).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!("{b}: failed:")) && err.contains("HTTP 302"),
        "{err}"
    );

    // The PDS answers listRecords with a 302.
    let c = did(3);
    pds.add_repo(&c, &tid(1_700_000_000_000_000, 1), None, likes(1));
    pds.inject(LIST_RECORDS, vec![Fault::Redirect(elsewhere)]);
    let (code, out, err) = run(parity(&db, &pds, &["import", &c, "--collection", LIKE])).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("com.atproto.repo.listRecords answered HTTP 302"),
        "{err}"
    );
    assert_eq!(pds.count(ATPROTO_DID), 0, "a redirect was followed");
}

/// Item 9: every body from an untrusted server is read with a limit while
/// it streams (these are chunked, with no Content-Length), and the DID
/// fails with a clear error. The padding is JSON whitespace: without the
/// limit each answer parses and the import "succeeds".
#[tokio::test(flavor = "multi_thread")]
async fn oversized_chunked_bodies_fail_the_did_clearly() {
    let db = TestDb::sqlite();
    let pds = Pds::start().await;
    let cases: [(&str, usize, &str); 4] = [
        (LIST_RECORDS, 17 << 20, "larger than 16777216 bytes"),
        (DESCRIBE_REPO, 2 << 20, "larger than 1048576 bytes"),
        (GET_LATEST_COMMIT, 2 << 20, "larger than 1048576 bytes"),
        (PLC, 100 << 10, "DID document is larger than 65536 bytes"),
    ];
    for (i, (method, size, why)) in cases.iter().enumerate() {
        let d = did(10 + i as u32);
        pds.add_repo(&d, &tid(1_700_000_000_000_000, 1), None, likes(2));
        pds.inject(method, vec![Fault::Padded(*size)]);
        let (code, out, err) = run(parity(&db, &pds, &["import", &d])).await;
        assert_eq!(code, 1, "{method}: {out}{err}");
        let line = err
            .lines()
            .find(|l| l.starts_with(&format!("{d}: failed:")))
            .unwrap_or_else(|| panic!("{method}: no failure line: {err}"));
        assert!(line.contains(why), "{method}: {line}");
    }
    assert_eq!(db.count("likes").await, 0);
}

/// Item 10: a listRecords cursor that comes back (A, B, A) ends the pair
/// with an error instead of paging forever.
#[tokio::test(flavor = "multi_thread")]
async fn a_cursor_cycle_ends_the_listing_with_an_error() {
    let db = TestDb::sqlite();
    let pds = Pds::start().await;
    let a = did(20);
    pds.add_repo(&a, &tid(1_700_000_000_000_000, 1), None, likes(3));
    // Cursors sort after every rkey, so each of these pages is full.
    pds.inject(
        LIST_RECORDS,
        vec![
            Fault::WithCursor("zzzzA".into()),
            Fault::WithCursor("zzzzB".into()),
            Fault::WithCursor("zzzzA".into()),
            Fault::WithCursor("zzzzB".into()),
        ],
    );
    let (code, out, err) = run(parity(&db, &pds, &["import", &a, "--collection", LIKE])).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("a cursor it had already given"), "{err}");
    assert_eq!(pds.count(LIST_RECORDS), 3, "stopped at the first repeat");
    let state = db
        .scalar(&format!(
            "SELECT status FROM parity_import_states WHERE did = '{a}' AND collection = '{LIKE}'"
        ))
        .await;
    assert_eq!(state.as_deref(), Some("failed"));
}

/// Item 10: a `Retry-After` of an hour, and `ratelimit-remaining: 0` with a
/// reset an hour away, pause the host for at most
/// `import.max_rate_limit_wait_seconds`.
#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_headers_are_capped() {
    let db = TestDb::sqlite();
    let pds = Pds::start().await;
    let a = pds.add_car(fixture("car/jetstream_repo.car"));
    pds.inject(
        LIST_RECORDS,
        vec![Fault::RateLimited {
            retry_after_secs: Some(3600),
            remaining: None,
            reset_epoch_secs: None,
        }],
    );
    let hour = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    pds.set_rate_limit_headers(3000, 0, hour);
    let mut cmd = parity(&db, &pds, &["import", &a.did, "--collection", LIKE]);
    cmd.env("PARITY_IMPORT_MAX_RATE_LIMIT_WAIT_SECONDS", "1");
    let started = Instant::now();
    let (code, out, err) = tokio::time::timeout(Duration::from_secs(60), run(cmd))
        .await
        .expect("one header parked the host");
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(db.count("likes").await, 10);
    // The 429 and each used-up window still paused the host (about 1 s).
    let list: Vec<_> = pds
        .requests()
        .into_iter()
        .filter(|r| r.method == LIST_RECORDS)
        .collect();
    assert_eq!(list[0].status, 429);
    let gap = list[1].at.duration_since(list[0].at);
    assert!(gap >= Duration::from_millis(900), "{gap:?}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// Item 10: a describeRepo listing more than 1,000 collections fails the
/// DID rather than queueing a pair for each.
#[tokio::test(flavor = "multi_thread")]
async fn describe_repo_collections_are_bounded() {
    let db = TestDb::sqlite();
    let pds = Pds::start().await;
    let a = did(30);
    let records: Vec<SynthRecord> = (0..1_001)
        .map(|i| SynthRecord::new(&format!("com.example.c{i:04}"), "self", r#"{"a":1}"#))
        .collect();
    pds.add_repo(&a, &tid(1_700_000_000_000_000, 1), None, records);
    let mut cmd = parity(&db, &pds, &["import", &a]);
    cmd.env("PARITY_MAPPERS_GENERIC", "*");
    let (code, out, err) = run(cmd).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("1001 collections, more than 1000"), "{err}");
    assert_eq!(pds.count(LIST_RECORDS), 0);
    assert_eq!(db.count("records").await, 0);
}

/// Item 10: a handle in a DID document is stored only if the handle
/// resolves back to that DID.
#[tokio::test(flavor = "multi_thread")]
async fn claimed_handles_are_stored_only_when_they_resolve_back() {
    let db = TestDb::sqlite();
    let pds = Pds::start().await;
    let dns = common::dns::Dns::start().await;
    let (a, b, c) = (did(40), did(41), did(42));
    for (d, h) in [(&a, "alice.test"), (&b, "bob.test"), (&c, "carol.test")] {
        pds.add_repo(d, &tid(1_700_000_000_000_000, 1), None, likes(1));
        pds.add_did_doc(d, h);
    }
    dns.set_handle("alice.test", &a);
    // bob.test belongs to alice's DID; carol.test resolves nowhere.
    dns.set_handle("bob.test", &a);
    let mut cmd = parity(&db, &pds, &["import", &a, &b, &c]);
    cmd.env("PARITY_IDENTITY_DNS_SERVERS", dns.addr().to_string());
    let (code, out, err) = run(cmd).await;
    assert_eq!(code, 0, "{out}{err}");
    for (d, want) in [(&a, Some("alice.test")), (&b, None), (&c, None)] {
        let got = db
            .scalar(&format!(
                "SELECT handle FROM parity_repos WHERE did = '{d}'"
            ))
            .await;
        assert_eq!(got.as_deref(), want, "{d}");
    }
}

/// A listRecords cursor with a NUL, or far longer than any record key,
/// fails the pair with the same clear error on both backends (PostgreSQL
/// refused to store the NUL and SQLite stored it); the cursor is neither
/// stored nor sent back.
async fn hostile_cursors_fail_the_pair_clearly(db: TestDb) {
    let pds = Pds::start().await;
    let (a, b) = (did(30), did(31));
    for d in [&a, &b] {
        pds.add_repo(d, &tid(1_700_000_000_000_000, 1), None, likes(3));
    }
    pds.inject(
        LIST_RECORDS,
        vec![
            Fault::WithCursor("zzzz\0evil".into()),
            Fault::WithCursor(format!("zzzz{}", "x".repeat(5_000))),
        ],
    );
    for d in [&a, &b] {
        let (code, out, err) = run(parity(&db, &pds, &["import", d, "--collection", LIKE])).await;
        assert_eq!(code, 1, "{out}{err}");
        assert!(err.contains("the PDS returned an invalid cursor"), "{err}");
        let state = db
            .rows(
                &format!("parity_import_states WHERE did = '{d}' AND collection = '{LIKE}'"),
                &["status", "cursor"],
            )
            .await;
        assert_eq!(state, vec![vec![Some("failed".to_owned()), None]], "{d}");
    }
    assert_eq!(
        pds.count(LIST_RECORDS),
        2,
        "no hostile cursor was sent back"
    );
}

backend_tests!(hostile_cursors_fail_the_pair_clearly, |db| {
    hostile_cursors_fail_the_pair_clearly(db)
});
