//! `parity import --all` end to end: the real binary lists repositories
//! from the local relay (`testnet::relay`, listRepos /
//! listReposByCollection pages over the local PDS's repos) and imports them
//! whole (getRepo) into SQLite and PostgreSQL. Inactive repos are skipped;
//! `--collection` lists with listReposByCollection and writes only those
//! collections; kill -9 mid-listing or mid-import, then the same command,
//! continues from the saved cursor without fetching completed DIDs again
//! (requests counted on the relay and the PDS); two processes on one
//! PostgreSQL share the listing and the queue; malformed relay pages are
//! counted and skipped.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::TestDb;
use common::importer::{self, parity, run};
use common::pds::{GET_REPO, Pds, SynthRecord, tid};
use common::process::scrape;
use common::relay::{LIST_REPOS, LIST_REPOS_BY_COLLECTION, Relay, RelayFault};

const POST: &str = "app.bsky.feed.post";
const LIKE: &str = "app.bsky.feed.like";
const FOLLOW: &str = "app.bsky.graph.follow";

fn did(i: usize) -> String {
    format!("did:plc:all{i:021}")
}

/// Repo `i`: `posts` posts, `likes` likes and one follow.
fn records(i: usize, posts: usize, likes: usize) -> Vec<SynthRecord> {
    let mut out = Vec::new();
    for p in 0..posts {
        let rkey = tid(1_700_000_000_000_000 + p as u64, i as u16);
        out.push(SynthRecord::new(
            POST,
            &rkey,
            &format!(
                r#"{{"$type":"{POST}","text":"post {p} of {i}","createdAt":"2026-01-01T00:00:00.000Z"}}"#
            ),
        ));
    }
    for l in 0..likes {
        let rkey = tid(1_710_000_000_000_000 + l as u64, i as u16);
        out.push(SynthRecord::new(
            LIKE,
            &rkey,
            &format!(
                r#"{{"$type":"{LIKE}","subject":{{"uri":"at://did:plc:ewvi7nxzyoun6zhxrhs64oiz/{POST}/3k{l:011}","cid":"bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"}},"createdAt":"2026-01-01T00:00:00.000Z"}}"#
            ),
        ));
    }
    out.push(SynthRecord::new(
        FOLLOW,
        &tid(1_720_000_000_000_000, i as u16),
        &format!(
            r#"{{"$type":"{FOLLOW}","subject":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","createdAt":"2026-01-01T00:00:00.000Z"}}"#
        ),
    ));
    out
}

/// `n` repos on `pds` (repo `i` has `i % 3` likes), their revs by DID.
fn repos(pds: &Pds, n: usize) -> BTreeMap<String, String> {
    (0..n)
        .map(|i| {
            let rev = tid(1_750_000_000_000_000, i as u16);
            pds.add_repo(&did(i), &rev, None, records(i, 3, i % 3));
            (did(i), rev)
        })
        .collect()
}

/// A PDS serving `n` generated repos and a relay listing them; the repos'
/// revs by DID.
async fn network(n: usize) -> (Pds, BTreeMap<String, String>, Relay) {
    let pds = Pds::start().await;
    let revs = repos(&pds, n);
    let relay = Relay::start().await;
    relay.add_pds(&pds);
    (pds, revs, relay)
}

/// `parity import --all --relay RELAY ARGS…`, whole repos.
fn all(db: &TestDb, pds: &Pds, relay: &Relay, args: &[&str]) -> tokio::process::Command {
    let mut a = vec!["import", "--all", "--relay"];
    let url = relay.url();
    a.push(&url);
    a.extend_from_slice(args);
    let mut cmd = parity(db, pds, &a);
    cmd.env("PARITY_IMPORT_METHOD", "getrepo")
        .env("PARITY_IMPORT_LEASE_SECONDS", "6");
    cmd
}

/// getRepo requests per DID so far.
fn fetched(pds: &Pds) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in pds.requests() {
        if r.method == GET_REPO {
            *out.entry(r.query["did"].clone()).or_default() += 1;
        }
    }
    out
}

async fn rows_match(db: &TestDb, pds: &Pds, revs: &BTreeMap<String, String>, dids: &[String]) {
    let dids: Vec<&str> = dids.iter().map(String::as_str).collect();
    let want = importer::expected(pds, &dids, revs, false);
    let got = importer::stored(db, want.keys().copied()).await;
    assert_eq!(got, want);
}

/// Queue rows of the run in `status`.
async fn queued(db: &TestDb, status: &str) -> i64 {
    db.scalar(&format!(
        "SELECT CAST(COUNT(*) AS TEXT) FROM parity_import_queue WHERE status = '{status}'"
    ))
    .await
    .unwrap()
    .parse()
    .unwrap()
}

/// The queued DIDs with `status`, in DID order.
async fn queued_dids(db: &TestDb, status: &str) -> Vec<String> {
    db.rows("parity_import_queue", &["did", "status"])
        .await
        .into_iter()
        .filter(|r| r[1].as_deref() == Some(status))
        .filter_map(|r| r[0].clone())
        .collect()
}

/// Waits (10 ms polls, 30 s at most) until `n` queued DIDs are completed.
async fn until_completed(db: &TestDb, n: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while queued(db, "completed").await < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {n} completed DIDs"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn every_active_repo(db: TestDb) {
    let pds = Pds::start().await;
    let revs = repos(&pds, 7);
    pds.set_account_status(&did(3), Some("deactivated"));
    let relay = Relay::start().await;
    relay.add_pds(&pds);
    relay.set_max_page(2);
    let (code, out, err) = run(all(&db, &pds, &relay, &["--concurrency", "3"])).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("relay listing complete: 7 repos listed, 6 queued, 1 inactive skipped, 0 malformed skipped; 0 queued DIDs not completed"),
        "{out}"
    );
    assert!(
        out.contains("6 DIDs completed, 0 skipped, 0 failed"),
        "{out}"
    );
    let active: Vec<String> = (0..7).filter(|i| *i != 3).map(did).collect();
    rows_match(&db, &pds, &revs, &active).await;
    // One getRepo per active DID, none for the inactive one.
    let want: BTreeMap<String, usize> = active.iter().map(|d| (d.clone(), 1)).collect();
    assert_eq!(fetched(&pds), want);
    // listRepos from the first page to the short last one, 1000 asked.
    let reqs = relay.requests();
    let cursors: Vec<Option<&str>> = reqs.iter().map(|r| r.cursor.as_deref()).collect();
    assert_eq!(cursors, [None, Some("2"), Some("4"), Some("6")]);
    assert!(
        reqs.iter()
            .all(|r| r.method == LIST_REPOS && r.limit.as_deref() == Some("1000")),
        "{reqs:?}"
    );

    // The same command again: the listing is complete and every DID
    // completed, so nothing is asked of the relay or the PDS.
    let (code, out, err) = run(all(&db, &pds, &relay, &[])).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("0 DIDs completed, 0 skipped, 0 failed"),
        "{out}"
    );
    assert_eq!(relay.count(), 4);
    assert_eq!(fetched(&pds), want);
}

backend_tests!(
    #[tokio::test(flavor = "multi_thread")]
    import_all_imports_every_active_repo_once,
    |db| every_active_repo(db)
);

/// `import --all` into a database that holds none of the repos: on
/// PostgreSQL they are written whole, several in a transaction
/// (`parity_import_fresh_repos_total`), with the rows, states and counters
/// that pair-by-pair pages leave; a repo imported before (its states
/// stored) goes pair by pair. SQLite writes every repo pair by pair. The
/// last getRepo is held so the running process can be scraped.
async fn fresh_repos(db: TestDb) {
    let (pds, revs, relay) = network(6).await;
    let mut first = parity(&db, &pds, &["import", &did(0)]);
    first.env("PARITY_IMPORT_METHOD", "getrepo");
    let (code, out, err) = run(first).await;
    assert_eq!(code, 0, "{out}{err}");
    // Its identity is resolved again: offered to a group that does not
    // write it, it is cached beside its pairs.
    db.exec(&format!(
        "UPDATE parity_repos SET pds = NULL, identity_resolved_at = NULL WHERE did = '{}'",
        did(0)
    ))
    .await;
    pds.gate_after(GET_REPO, 5);
    let url = relay.url();
    let mut p = importer::watched(
        &db,
        &pds,
        &["--all", "--relay", &url, "--concurrency", "3"],
        "getrepo",
        &[("PARITY_IMPORT_REQUESTS_PER_SECOND", "1000")],
    );
    let addr = p.metrics_addr().await;
    // The first run's getRepo and this run's six, the last one held.
    pds.wait_for_requests(GET_REPO, 7).await;
    let five_done = async {
        loop {
            let m = scrape(addr).await;
            if m.get("parity_import_dids", &[("status", "completed")]) == 5.0 {
                break m;
            }
            tokio::task::yield_now().await;
        }
    };
    let m = tokio::time::timeout(Duration::from_secs(60), five_done)
        .await
        .expect("five repos completed");
    // The held getRepo: the one request not answered yet.
    let held: Vec<String> = pds
        .requests()
        .into_iter()
        .filter(|r| r.method == GET_REPO && r.status == 0)
        .map(|r| r.query["did"].clone())
        .collect();
    assert_eq!(held.len(), 1, "{held:?}");
    let fresh = if held[0] == did(0) { 5.0 } else { 4.0 };
    let want = if db.is_pg() { fresh } else { 0.0 };
    assert_eq!(m.get("parity_import_fresh_repos_total", &[]), want);
    pds.open_gate();
    let (status, lines) = p.wait();
    assert!(status.success(), "{}", lines.join("\n"));
    let dids: Vec<String> = (0..6).map(did).collect();
    rows_match(&db, &pds, &revs, &dids).await;
    for d in &dids {
        let mut per_collection: BTreeMap<String, i64> = BTreeMap::new();
        for r in pds.records(d) {
            *per_collection.entry(r.collection).or_default() += 1;
        }
        let want: Vec<(String, String, i64, i64, i64)> = per_collection
            .into_iter()
            .map(|(c, n)| (c, "completed".to_owned(), n, 0, 0))
            .collect();
        assert_eq!(importer::states(&db, d).await, want, "{d}");
        // The identity resolved for it is cached, whichever way it went.
        let cached = format!(
            "SELECT pds FROM parity_repos WHERE did = '{d}' AND identity_resolved_at IS NOT NULL"
        );
        assert_eq!(db.scalar(&cached).await, Some(pds.url()), "{d}");
    }
    // One page a collection, its floor, no lease left.
    let pages = db
        .scalar(
            "SELECT CAST(COUNT(*) AS TEXT) FROM parity_import_states \
             WHERE pages <> 1 OR lease_owner IS NOT NULL OR cursor IS NOT NULL OR completed_at IS NULL",
        )
        .await;
    assert_eq!(pages.as_deref(), Some("0"));
    let floors = db
        .scalar("SELECT CAST(COUNT(*) AS TEXT) FROM parity_sweep_floors")
        .await;
    let states = db
        .scalar("SELECT CAST(COUNT(*) AS TEXT) FROM parity_import_states")
        .await;
    assert_eq!(floors, states);
}

backend_tests!(
    #[tokio::test(flavor = "multi_thread")]
    import_all_writes_new_repos_whole_on_postgresql_pair_by_pair_on_sqlite,
    |db| fresh_repos(db)
);

/// The database refuses one like of one repo (an operator's trigger): on
/// PostgreSQL the group holding that repo fails and keeps nothing, and its
/// repos are written pair by pair, where that record is skipped and
/// counted; nothing else is lost, on either backend.
async fn refused_in_a_group(db: TestDb) {
    common::install_like_refusal(&db).await;
    let pds = Pds::start().await;
    let revs = repos(&pds, 6);
    let refused = tid(1_790_000_000_000_000, 2);
    let mut bad = records(2, 3, 2);
    bad.push(SynthRecord::new(
        LIKE,
        &refused,
        &format!(
            r#"{{"$type":"{LIKE}","subject":{{"uri":"at://did:plc:ewvi7nxzyoun6zhxrhs64oiz/{POST}/3kzzz","cid":"refused"}},"createdAt":"2026-01-01T00:00:00.000Z"}}"#
        ),
    ));
    pds.add_repo(&did(2), &revs[&did(2)], None, bad);
    let relay = Relay::start().await;
    relay.add_pds(&pds);
    let (code, out, err) = run(all(&db, &pds, &relay, &["--concurrency", "3"])).await;
    assert_eq!(code, 0, "{out}{err}");
    let total: usize = (0..6).map(|i| pds.records(&did(i)).len()).sum();
    assert!(
        out.contains(&format!(
            "{} records synced, 0 skipped, 1 failed",
            total - 1
        )),
        "{out}{err}"
    );
    // Every record of every repo but the refused like.
    let dids: Vec<String> = (0..6).map(did).collect();
    let dids: Vec<&str> = dids.iter().map(String::as_str).collect();
    let mut want = importer::expected(&pds, &dids, &revs, false);
    let uri = format!("at://{}/{LIKE}/{refused}", did(2));
    let likes = want.get_mut("likes").unwrap();
    let before = likes.len();
    likes.retain(|r| r[0].as_deref() != Some(uri.as_str()));
    assert_eq!(likes.len(), before - 1);
    let got = importer::stored(&db, want.keys().copied()).await;
    assert_eq!(got, want);
}

backend_tests!(
    #[tokio::test(flavor = "multi_thread")]
    import_all_writes_a_group_page_by_page_when_the_database_refuses_a_row,
    |db| refused_in_a_group(db)
);

/// Eight DIDs in flight on a pool of one connection (`--concurrency 8`,
/// `database.max_connections = 1`): every repo is imported and the
/// command ends. It used to stop making progress, with "pool timed out"
/// failures, once the work in flight held the pool.
async fn small_pool(db: TestDb) {
    let (pds, revs, relay) = network(40).await;
    let mut cmd = all(&db, &pds, &relay, &["--concurrency", "8"]);
    cmd.env("PARITY_DATABASE_MAX_CONNECTIONS", "1");
    let (code, out, err) = tokio::time::timeout(Duration::from_secs(120), run(cmd))
        .await
        .expect("import --all with a pool of one connection did not finish");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("40 DIDs completed, 0 skipped, 0 failed"),
        "{out}{err}"
    );
    let dids: Vec<String> = (0..40).map(did).collect();
    rows_match(&db, &pds, &revs, &dids).await;
}

backend_tests!(
    #[tokio::test(flavor = "multi_thread")]
    import_all_with_concurrency_above_the_pool_size_completes,
    |db| small_pool(db)
);

async fn by_collection(db: TestDb) {
    let (pds, revs, relay) = network(6).await;
    let (code, out, err) = run(all(&db, &pds, &relay, &["--collection", LIKE])).await;
    assert_eq!(code, 0, "{out}{err}");
    // Repos 1, 2, 4 and 5 have likes.
    let with_likes: Vec<String> = [1, 2, 4, 5].map(did).to_vec();
    assert!(
        out.contains("4 DIDs completed, 0 skipped, 0 failed"),
        "{out}"
    );
    let reqs = relay.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].method, LIST_REPOS_BY_COLLECTION);
    assert_eq!(reqs[0].collection.as_deref(), Some(LIKE));
    assert_eq!(reqs[0].limit.as_deref(), Some("2000"));
    let fetched_dids: Vec<String> = fetched(&pds).into_keys().collect();
    assert_eq!(fetched_dids, with_likes);
    // Only likes are written.
    let want = importer::expected(
        &pds,
        &with_likes.iter().map(String::as_str).collect::<Vec<_>>(),
        &revs,
        false,
    );
    assert_eq!(
        importer::stored(&db, ["likes"].into_iter()).await["likes"],
        want["likes"]
    );
    assert_eq!(db.count("posts").await, 0);
    assert_eq!(db.count("follows").await, 0);
    let states = db
        .scalar("SELECT CAST(COUNT(*) AS TEXT) FROM parity_import_states WHERE collection <> 'app.bsky.feed.like'")
        .await;
    assert_eq!(states.as_deref(), Some("0"));
}

backend_tests!(
    #[tokio::test(flavor = "multi_thread")]
    import_all_by_collection_lists_and_writes_only_it,
    |db| by_collection(db)
);

async fn killed_mid_listing(db: TestDb) {
    let (pds, revs, relay) = network(10).await;
    relay.set_max_page(2);
    // Two pages pass; the third waits. The DIDs of the first two are
    // imported, then the importer is killed.
    relay.gate_after(2);
    let mut child = importer::spawn(all(&db, &pds, &relay, &["--concurrency", "2"]));
    relay.wait_for_requests(3).await;
    until_completed(&db, 4).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    relay.open_gate();
    let cursor = db.scalar("SELECT cursor FROM parity_import_listings").await;
    assert_eq!(cursor.as_deref(), Some("4"));
    // import-status shows the interrupted run: listing not done, at
    // cursor 4, and the queue.
    let (code, out, _) = run(parity(&db, &pds, &["import-status"])).await;
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!(
            "import --all from {} (*): queue pending: 0, in_progress: 0, completed: 4, failed: 0; \
             4 repos listed (0 inactive, 0 malformed skipped)\n  listing *: not done, 2 pages, cursor: 4\n",
            relay.url().trim_end_matches('/')
        )),
        "{out}"
    );
    let status = status_json(&db, &pds).await;
    let run_status = &status["import_all"][0];
    assert_eq!(run_status["collections"], "*");
    assert_eq!(
        run_status["queue"],
        serde_json::json!({"pending": 0, "in_progress": 0, "completed": 4, "failed": 0})
    );
    assert_eq!(
        run_status["listings"],
        serde_json::json!([{"collection": "*", "status": "listing", "done": false,
            "cursor": "4", "pages": 2, "repos_queued": 4, "error": null}])
    );
    let first_run = relay.count();
    let before = fetched(&pds);
    assert_eq!(before.len(), 4, "{before:?}");

    let (code, out, err) = run(all(&db, &pds, &relay, &["--concurrency", "2"])).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("relay listing complete: 10 repos listed, 10 queued"),
        "{out}"
    );
    assert!(out.contains("6 DIDs completed"), "{out}");
    // The listing went on from the saved cursor: pages 3 to 5 and the
    // empty one after the full last page; never the first page again.
    let again: Vec<Option<String>> = relay.requests()[first_run..]
        .iter()
        .map(|r| r.cursor.clone())
        .collect();
    assert_eq!(
        again,
        ["4", "6", "8", "10"].map(|c| Some(c.to_owned())).to_vec()
    );
    // Every DID fetched exactly once over both runs.
    let all_dids: Vec<String> = (0..10).map(did).collect();
    let want: BTreeMap<String, usize> = all_dids.iter().map(|d| (d.clone(), 1)).collect();
    assert_eq!(fetched(&pds), want);
    rows_match(&db, &pds, &revs, &all_dids).await;
    let status = status_json(&db, &pds).await;
    let run_status = &status["import_all"][0];
    assert_eq!(run_status["listings"][0]["done"], true);
    assert_eq!(run_status["repos_listed"], 10);
    assert_eq!(
        run_status["queue"],
        serde_json::json!({"pending": 0, "in_progress": 0, "completed": 10, "failed": 0})
    );
    assert_eq!(status["import_all"].as_array().unwrap().len(), 1);
}

/// `parity import-status --json`.
async fn status_json(db: &TestDb, pds: &Pds) -> serde_json::Value {
    let (code, out, err) = run(parity(db, pds, &["import-status", "--json"])).await;
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

backend_tests!(
    #[tokio::test(flavor = "multi_thread")]
    import_all_killed_mid_listing_resumes_from_the_saved_cursor,
    |db| killed_mid_listing(db)
);

async fn killed_mid_import(db: TestDb) {
    let (pds, revs, relay) = network(6).await;
    // Three repos are fetched and written; the fourth getRepo waits and
    // the importer is killed with it in flight. (A verified repo gives its
    // fetching slot to the next DID before it is written: wait for the
    // three to be written.)
    pds.gate_after(GET_REPO, 3);
    let mut child = importer::spawn(all(&db, &pds, &relay, &["--concurrency", "1"]));
    pds.wait_for_requests(GET_REPO, 4).await;
    until_completed(&db, 3).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    pds.open_gate();
    assert_eq!(queued(&db, "completed").await, 3);
    // DID 3 in flight, and whichever of 4 and 5 were claimed with it (up
    // to 4 × --concurrency DIDs in flight) under the dead process's lease.
    assert_eq!(
        queued(&db, "in_progress").await + queued(&db, "pending").await,
        3
    );
    assert!(queued(&db, "in_progress").await >= 1);
    // DIDs waiting for the fetching slot take it in no set order: which
    // four were fetched, and which one was in flight at the kill.
    let fetched_before = fetched(&pds);
    let done_before = queued_dids(&db, "completed").await;
    assert_eq!(done_before.len(), 3);
    assert!(done_before.iter().all(|d| fetched_before[d] == 1));
    let in_flight: Vec<&String> = fetched_before
        .keys()
        .filter(|d| !done_before.contains(d))
        .collect();
    assert_eq!(in_flight.len(), 1, "{fetched_before:?}");
    let in_flight = in_flight[0].clone();
    assert_eq!(relay.count(), 1);

    let (code, out, err) = run(all(&db, &pds, &relay, &["--concurrency", "1"])).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("3 DIDs completed, 0 skipped, 0 failed"),
        "{out}"
    );
    // No new listing, and the three completed DIDs were not fetched again;
    // the one in flight at the kill was (its lease was a dead process's).
    assert_eq!(relay.count(), 1);
    let f = fetched(&pds);
    for d in &done_before {
        assert_eq!(f[d], 1, "{d} fetched again");
    }
    assert_eq!(f[&in_flight], 2);
    for d in (0..6).map(did).filter(|d| !fetched_before.contains_key(d)) {
        assert_eq!(f[&d], 1, "{d}");
    }
    rows_match(&db, &pds, &revs, &(0..6).map(did).collect::<Vec<_>>()).await;
}

backend_tests!(
    #[tokio::test(flavor = "multi_thread")]
    import_all_killed_mid_import_does_not_fetch_completed_dids_again,
    |db| killed_mid_import(db)
);

/// DIDs are claimed as many at a time as may be in flight (4 ×
/// `--concurrency`); a SIGTERM puts back both the DIDs in flight and those
/// claimed but not started, so nothing is left in progress under the lease
/// of a process that is gone.
async fn interrupted_puts_back_claimed_dids(db: TestDb) {
    let (pds, revs, relay) = network(6).await;
    // One claim takes all six DIDs (in flight, they take the two fetching
    // slots in no set order). One is fetched and another's getRepo waits;
    // the first, verified, gives its slot to a third (its getRepo waits
    // too) and is written; the other three wait for a slot.
    pds.gate_after(GET_REPO, 1);
    let child = importer::spawn(all(&db, &pds, &relay, &["--concurrency", "2"]));
    pds.wait_for_requests(GET_REPO, 3).await;
    until_completed(&db, 1).await;
    assert_eq!(queued(&db, "in_progress").await, 5, "DIDs 1 to 5 claimed");
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "interrupted: {stdout}");
    pds.open_gate();
    assert_eq!(queued(&db, "completed").await, 1);
    assert_eq!(queued(&db, "in_progress").await, 0, "{stdout}");
    assert_eq!(queued(&db, "pending").await, 5);
    // The written DID and the two holding the fetching slots: the others
    // were not started.
    assert_eq!(fetched(&pds).len(), 3, "{:?}", fetched(&pds));

    let (code, out, err) = run(all(&db, &pds, &relay, &["--concurrency", "2"])).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("5 DIDs completed, 0 skipped, 0 failed"),
        "{out}"
    );
    rows_match(&db, &pds, &revs, &(0..6).map(did).collect::<Vec<_>>()).await;
}

backend_tests!(
    #[tokio::test(flavor = "multi_thread")]
    import_all_interrupted_puts_back_claimed_dids,
    |db| interrupted_puts_back_claimed_dids(db)
);

/// A verified repo gives its fetching slot to the next DID before its
/// pages are written: with `--concurrency 1` and the record tables locked
/// by another session (`EXCLUSIVE`: parity's bookkeeping writes go
/// through, its page writes wait), the second repo is still fetched while
/// the first waits for the writer. PostgreSQL only: SQLite's one
/// database-wide write lock would hold back the bookkeeping writes too;
/// the slot trade itself is the same for both stores (`slots` tests).
#[tokio::test(flavor = "multi_thread")]
async fn a_verified_repo_frees_its_fetching_slot_before_its_tables_unlock() {
    let db = TestDb::postgres("import_all_write_ahead").await;
    let (pds, revs, relay) = network(2).await;
    // The first getRepo waits until the tables are locked (parity has
    // set its schema up by then).
    pds.gate_after(GET_REPO, 0);
    let child = importer::spawn(all(&db, &pds, &relay, &["--concurrency", "1"]));
    pds.wait_for_requests(GET_REPO, 1).await;
    let mut blocker = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    let mut tx = sqlx::Connection::begin(&mut blocker).await.unwrap();
    sqlx::query("LOCK TABLE posts, likes IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .unwrap();
    pds.open_gate();
    pds.wait_for_requests(GET_REPO, 2).await;
    assert_eq!(queued(&db, "completed").await, 0, "nothing written yet");
    tx.commit().await.unwrap();
    let out = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("2 DIDs completed"), "{stdout}");
    rows_match(&db, &pds, &revs, &(0..2).map(did).collect::<Vec<_>>()).await;
}

/// Two `import --all` processes started together on one PostgreSQL: one
/// lists, both import, and no DID is fetched or imported twice.
#[tokio::test(flavor = "multi_thread")]
async fn two_importers_on_one_postgres_share_the_listing_and_the_queue() {
    let db = TestDb::postgres("import_all_two").await;
    let pds = Pds::start().await;
    let revs = repos(&pds, 30);
    pds.set_latency(Duration::from_millis(20));
    let relay = Relay::start().await;
    relay.add_pds(&pds);
    relay.set_max_page(3);
    // Both processes migrate first, so neither races the other's DDL.
    let (code, _, err) = run(parity(&db, &pds, &["migrate"])).await;
    assert_eq!(code, 0, "{err}");
    let a = importer::spawn(all(&db, &pds, &relay, &["--concurrency", "2"]));
    let b = importer::spawn(all(&db, &pds, &relay, &["--concurrency", "2"]));
    let (a, b) = tokio::join!(a.wait_with_output(), b.wait_with_output());
    let mut completed = 0;
    for o in [a.unwrap(), b.unwrap()] {
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "{out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            out.contains("relay listing complete: 30 repos listed, 30 queued"),
            "{out}"
        );
        let n: u64 = out
            .split(" DIDs completed")
            .next()
            .and_then(|s| s.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{out}"));
        completed += n;
        assert!(out.contains(" 0 skipped, 0 failed"), "{out}");
    }
    assert_eq!(completed, 30);
    let all_dids: Vec<String> = (0..30).map(did).collect();
    let want: BTreeMap<String, usize> = all_dids.iter().map(|d| (d.clone(), 1)).collect();
    assert_eq!(fetched(&pds), want);
    // One listing: each page asked for once.
    let cursors: Vec<Option<String>> = relay.requests().into_iter().map(|r| r.cursor).collect();
    let mut want_cursors = vec![None];
    want_cursors.extend((1..=10).map(|p| Some((p * 3).to_string())));
    assert_eq!(cursors, want_cursors);
    rows_match(&db, &pds, &revs, &all_dids).await;
}

/// Hostile relay data: entries that are not valid active repos are
/// counted and skipped (logged escaped), an answer that is not a page is
/// retried, and a bad or repeated cursor stops the listing (exit 1) while
/// what was queued before it is imported; the same command then continues
/// from the last good cursor.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_relay_pages_are_counted_and_skipped() {
    let db = TestDb::sqlite();
    let pds = Pds::start().await;
    let revs = repos(&pds, 4);
    let relay = Relay::start().await;
    relay.set_max_page(4);
    let good = |i: usize| (did(i), revs[&did(i)].clone());
    let (d0, r0) = good(0);
    relay.add_repo(&d0, "bafy", &r0, true, None, &[]);
    relay.add_raw(serde_json::json!(did(1)), &[]);
    relay.add_raw(serde_json::json!({"did": 7}), &[]);
    relay.add_raw(
        serde_json::json!({"did": "did:plc:NOT VALID\u{1b}[31m"}),
        &[],
    );
    relay.add_raw(serde_json::json!({"did": did(1), "active": "yes"}), &[]);
    relay.add_raw(serde_json::json!({"head": "x"}), &[]);
    for i in 1..4 {
        if i == 2 {
            relay.add_repo(
                "did:plc:gone0000000000000000000",
                "bafy",
                "x",
                false,
                Some("takendown"),
                &[],
            );
        }
        let (d, r) = good(i);
        relay.add_repo(&d, "bafy", &r, true, None, &[]);
    }
    // The first answer is an HTML page: retried.
    relay.inject(
        LIST_REPOS,
        vec![RelayFault::Body(
            "<html>Checking your browser</html>".into(),
        )],
    );
    let (code, out, err) = run(all(&db, &pds, &relay, &[])).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("relay listing complete: 10 repos listed, 4 queued, 1 inactive skipped, 5 malformed skipped"),
        "{out}"
    );
    assert!(
        out.contains("4 DIDs completed, 0 skipped, 0 failed"),
        "{out}"
    );
    assert_eq!(relay.count(), 4);
    rows_match(&db, &pds, &revs, &(0..4).map(did).collect::<Vec<_>>()).await;
    assert!(err.contains("relay listed a malformed repo entry"), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "an escape sequence reached the log: {err}"
    );

    // A cursor of 2,000 bytes on the second page stops the listing; the
    // first page's DID is imported and its cursor kept.
    let db = TestDb::sqlite();
    let (pds, revs, relay) = network(4).await;
    relay.set_max_page(1);
    relay.inject(
        LIST_REPOS,
        vec![
            RelayFault::Pass,
            RelayFault::WithCursor(serde_json::json!("x".repeat(2000))),
        ],
    );
    let (code, out, err) = run(all(&db, &pds, &relay, &[])).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("relay listing incomplete (run the same command again to continue)")
            && out.contains("failed: *: the relay returned an invalid cursor"),
        "{out}"
    );
    assert!(out.contains("1 DIDs completed"), "{out}");
    let saved = db
        .query_text(
            "SELECT status, cursor FROM parity_import_listings".into(),
            2,
        )
        .await;
    assert_eq!(saved, [[Some("failed".to_owned()), Some("1".to_owned())]]);
    let first_run = relay.count();
    let (code, out, err) = run(all(&db, &pds, &relay, &[])).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("relay listing complete: 4 repos listed, 4 queued"),
        "{out}"
    );
    assert!(out.contains("3 DIDs completed"), "{out}");
    assert_eq!(relay.requests()[first_run].cursor.as_deref(), Some("1"));
    let want: BTreeMap<String, usize> = (0..4).map(|i| (did(i), 1)).collect();
    assert_eq!(fetched(&pds), want);
    rows_match(&db, &pds, &revs, &(0..4).map(did).collect::<Vec<_>>()).await;

    // A cursor the relay already gave (a cycle) stops the listing too.
    let db = TestDb::sqlite();
    let relay = Relay::start().await;
    relay.add_pds(&pds);
    relay.set_max_page(1);
    relay.inject(
        LIST_REPOS,
        vec![
            RelayFault::Pass,
            RelayFault::WithCursor(serde_json::json!("1")),
        ],
    );
    let (code, out, err) = run(all(&db, &pds, &relay, &[])).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("failed: *: the relay returned a cursor it had already given (a cycle)"),
        "{out}"
    );
}

/// `--progress` without a terminal logs the listing's counters, DIDs done
/// and failed, records/s and an ETA.
#[tokio::test(flavor = "multi_thread")]
async fn progress_shows_the_listing_the_queue_and_an_eta() {
    let db = TestDb::sqlite();
    let pds = Pds::start().await;
    repos(&pds, 4);
    pds.set_account_status(&did(1), Some("takendown"));
    // Three getRepo answers of 500 ms each, one at a time: the run lasts
    // well past the 1 s progress interval.
    pds.set_latency(Duration::from_millis(500));
    let relay = Relay::start().await;
    relay.add_pds(&pds);
    let mut cmd = all(&db, &pds, &relay, &["--progress", "--concurrency", "1"]);
    cmd.env("PARITY_LOG_LEVEL", "info")
        .env("PARITY_LOG_PROGRESS_INTERVAL_SECONDS", "1");
    let (code, out, err) = run(cmd).await;
    assert_eq!(code, 0, "{out}{err}");
    let line = err
        .lines()
        .find(|l| l.contains("import progress"))
        .unwrap_or_else(|| panic!("no progress line: {err}"));
    assert!(
        line.contains(
            "/3 DIDs done, relay: 4 listed, 3 queued, 1 inactive, 0 malformed · 0 failed · "
        ) && line.contains("records")
            && line.contains("/s")
            && line.contains("ETA "),
        "{line}"
    );
}

/// The relay URL is checked before anything runs: https only, unless the
/// local-testing opt-in is on; an origin, nothing else.
#[tokio::test(flavor = "multi_thread")]
async fn relay_urls_must_be_https_origins() {
    let db = TestDb::sqlite();
    let pds = Pds::start().await;
    for (relay, allow, want) in [
        ("http://relay.example.com", false, "must be https://"),
        ("ftp://relay.example.com", true, "must be an https:// URL"),
        ("https://relay.example.com/xrpc", true, "origin only"),
    ] {
        let mut cmd = parity(&db, &pds, &["import", "--all", "--relay", relay]);
        if !allow {
            cmd.env_remove(importer::ALLOW_PRIVATE);
        }
        let (code, out, err) = run(cmd).await;
        assert_eq!(code, 2, "{relay}: {out}{err}");
        assert!(err.contains(want), "{relay}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    // --all takes no DIDs.
    let (code, _, err) = run(parity(&db, &pds, &["import", "--all", "did:plc:x"])).await;
    assert_eq!(code, 2, "{err}");
}
