//! Whole-repo import (`parity import --method getrepo|auto`) end to end: the
//! real binary against the local PDS's `com.atproto.sync.getRepo` (CARs
//! built from the fixtures' records and signed with the account's test key,
//! or a fixture's own bytes with its real signature), into SQLite and
//! PostgreSQL. Rows are checked against what the PDS serves and the
//! independent `goat repo ls` listing; tampered repos fail with the right
//! reason and write nothing; a re-import removes rows deleted upstream;
//! `auto` falls back to listRecords; kill -9 then `resume` equals an
//! uninterrupted run.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::importer::{self, parity, run};
use common::pds::{Fault, GET_LATEST_COMMIT, GET_REPO, LIST_RECORDS, PLC, Pds, tid};
use common::{TestDb, fixture};
use parity::source::codecs::car::Car;
use parity::source::codecs::repo::Commit;

const JETSTREAM_CAR: &str = "car/jetstream_repo.car";
const LITTLE_CAR: &str = "car/repostream_little.car";
const TABLES: [&str; 7] = [
    "posts", "likes", "reposts", "follows", "blocks", "profiles", "records",
];

fn getrepo(db: &TestDb, pds: &Pds, args: &[&str]) -> tokio::process::Command {
    let mut cmd = parity(db, pds, args);
    cmd.env("PARITY_IMPORT_METHOD", "getrepo")
        .env("PARITY_MAPPERS_GENERIC", "*");
    cmd
}

async fn whole_repo_import(db: TestDb) {
    let pds = Pds::start().await;
    let a = pds.add_car(fixture(JETSTREAM_CAR));
    let b = pds.add_car(fixture(LITTLE_CAR));
    let mut cmd = getrepo(&db, &pds, &["import", &a.did, &b.did, "--concurrency", "2"]);
    cmd.env("PARITY_IMPORT_GETREPO_PAGE_SIZE", "7");
    let (code, out, err) = run(cmd).await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let total = a.records + b.records;
    assert!(
        out.contains(&format!(
            "{total} records synced, 0 skipped, 0 failed; 2 DIDs completed"
        )),
        "{out}"
    );
    // One getRepo per DID and nothing else from the PDS: the signed
    // commit's rev replaces getLatestCommit.
    assert_eq!(pds.count(GET_REPO), 2);
    assert_eq!(pds.count(LIST_RECORDS), 0);
    assert_eq!(pds.count(GET_LATEST_COMMIT), 0);
    // One DID document per DID: the one that resolved the PDS also gives
    // the key the commit is checked with. The identity is cached all the
    // same, though it is written while the repo is fetched.
    assert_eq!(pds.count(PLC), 2);
    for did in [&a.did, &b.did] {
        let cached = format!(
            "SELECT pds FROM parity_repos WHERE did = '{did}' AND identity_resolved_at IS NOT NULL"
        );
        assert_eq!(db.scalar(&cached).await, Some(pds.url()), "{did}");
    }

    let revs: BTreeMap<String, String> = [
        (a.did.clone(), a.rev.clone()),
        (b.did.clone(), b.rev.clone()),
    ]
    .into();
    let want = importer::expected(&pds, &[&a.did, &b.did], &revs, true);
    let got = importer::stored(&db, want.keys().copied()).await;
    assert_eq!(got, want);

    // The independent listing of the first repo: every record, same CID.
    let tsv =
        std::fs::read_to_string(fixture("car/jetstream_repo.car_expected_records.tsv")).unwrap();
    let mut listing: Vec<(String, String)> = tsv
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (k, cid) = l.split_once('\t').unwrap();
            (format!("at://{}/{k}", a.did), cid.trim().to_owned())
        })
        .collect();
    listing.sort();
    let mut imported: Vec<(String, String)> = got
        .values()
        .flatten()
        .filter(|r| {
            r[0].as_deref()
                .unwrap()
                .starts_with(&format!("at://{}/", a.did))
        })
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect();
    imported.sort();
    assert_eq!(imported, listing);

    // One completed state per collection; ceil(10 / 7) pages of likes.
    for info in [&a, &b] {
        let mut per_collection: BTreeMap<String, i64> = BTreeMap::new();
        for r in pds.records(&info.did) {
            *per_collection.entry(r.collection).or_default() += 1;
        }
        let want: Vec<(String, String, i64, i64, i64)> = per_collection
            .into_iter()
            .map(|(c, n)| (c, "completed".to_owned(), n, 0, 0))
            .collect();
        assert_eq!(importer::states(&db, &info.did).await, want, "{}", info.did);
    }
    let pages = db
        .scalar(&format!(
            "SELECT CAST(pages AS TEXT) FROM parity_import_states WHERE did = '{}' AND collection = 'app.bsky.feed.like'",
            a.did
        ))
        .await;
    assert_eq!(pages.as_deref(), Some("2"));
}

backend_tests!(
    #[tokio::test(flavor = "multi_thread")]
    whole_repo_import_writes_every_record_at_the_signed_rev,
    |db| whole_repo_import(db)
);

/// A snapshot's collection is written in pages of
/// `import.getrepo_page_size` (1,000 by default), not listRecords' page
/// size: the repo's ten likes are one page though `page_size` is 7.
async fn snapshot_pages(db: TestDb) {
    let pds = Pds::start().await;
    let a = pds.add_car(fixture(JETSTREAM_CAR));
    let mut cmd = getrepo(&db, &pds, &["import", &a.did]);
    cmd.env("PARITY_IMPORT_PAGE_SIZE", "7");
    let (code, out, err) = run(cmd).await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let likes = format!(
        "SELECT CAST(pages AS TEXT) || ':' || CAST(records_synced AS TEXT) FROM parity_import_states WHERE did = '{}' AND collection = 'app.bsky.feed.like'",
        a.did
    );
    assert_eq!(db.scalar(&likes).await.as_deref(), Some("1:10"));
}

backend_tests!(
    #[tokio::test(flavor = "multi_thread")]
    a_snapshot_collection_is_written_in_getrepo_pages,
    |db| snapshot_pages(db)
);

/// The fixture's own bytes, real signature and all (a v2 commit signed
/// with a legacy K-256 key), against its real DID document: the signature
/// verifies, and the repo is then refused because its legacy commit has no
/// rev to stamp rows with; against another key it is a bad signature.
#[tokio::test(flavor = "multi_thread")]
async fn a_real_signed_repo_is_checked_against_its_did_document() {
    let db = TestDb::sqlite();
    let pds = Pds::start().await;
    let read = |rel: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(fixture(rel)).unwrap()).unwrap()
    };
    let doc = read("identity/did-docs/indigo_paul_staging.didDoc.json");
    let info = pds.add_car_verbatim(fixture("car/indigo_paul_staging.repo.car"), doc.clone());
    assert_eq!(info.rev, "", "a legacy v2 export without a rev");
    let (code, out, err) = run(getrepo(&db, &pds, &["import", &info.did])).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("failed: malformed repository: the commit's rev is not a TID"),
        "{err}"
    );

    // The same document with another account's key.
    let mut other = doc;
    other["verificationMethod"] =
        read("identity/did-docs/indigo_did_plc_doc_legacy.json")["verificationMethod"].clone();
    pds.add_did_doc_json(other);
    let (code, out, err) = run(getrepo(&db, &pds, &["import", &info.did])).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("failed: bad signature"), "{err}");
}

/// The offsets of a CAR's parts: (commit signature, MST root node, one
/// record block) as byte ranges of `bytes`.
fn parts(
    bytes: &[u8],
) -> (
    std::ops::Range<usize>,
    std::ops::Range<usize>,
    std::ops::Range<usize>,
) {
    let car = Car::parse(bytes).unwrap();
    let at = |s: &[u8]| {
        let start = s.as_ptr() as usize - bytes.as_ptr() as usize;
        start..start + s.len()
    };
    let commit = Commit::parse(car.get(car.roots()[0]).unwrap()).unwrap();
    let node = car.get(commit.data).unwrap();
    let record = car
        .blocks()
        .iter()
        .rev()
        .find(|b| b.data != node && b.cid != car.roots()[0])
        .unwrap();
    (at(commit.sig), at(node), at(record.data))
}

/// The CAR without the block whose data is at `skip`.
fn without(bytes: &[u8], skip: &std::ops::Range<usize>) -> Vec<u8> {
    let car = Car::parse(bytes).unwrap();
    let varint = |out: &mut Vec<u8>, mut v: usize| {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    };
    let first = car.blocks()[0].cid.as_ptr() as usize - bytes.as_ptr() as usize;
    let mut len_bytes = Vec::new();
    varint(
        &mut len_bytes,
        car.blocks()[0].cid.len() + car.blocks()[0].data.len(),
    );
    let mut out = bytes[..first - len_bytes.len()].to_vec();
    for b in car.blocks() {
        let start = b.data.as_ptr() as usize - bytes.as_ptr() as usize;
        if start == skip.start {
            continue;
        }
        varint(&mut out, b.cid.len() + b.data.len());
        out.extend_from_slice(b.cid);
        out.extend_from_slice(b.data);
    }
    out
}

async fn tampered(db: TestDb) {
    let pds = Pds::start().await;
    let good = pds.add_car(fixture("car/repostream_tiny.car"));
    let original = pds.repo_car(&good.did);
    let (sig, node, record) = parts(&original);
    let flip = |at: usize| {
        let mut b = original.clone();
        b[at] ^= 0x01;
        b
    };
    let cases = [
        ("bad signature", flip(sig.start + 5)),
        ("MST root mismatch", flip(node.end - 1)),
        ("record CID mismatch", flip(record.end - 1)),
        ("missing block", without(&original, &record)),
    ];
    for (reason, bytes) in cases {
        pds.set_repo_car(&good.did, bytes);
        let (code, out, err) = run(getrepo(&db, &pds, &["import", &good.did])).await;
        assert_eq!(code, 1, "{reason}: {out}{err}");
        assert!(
            err.contains(&format!("failed: {reason}")),
            "{reason}: {err}"
        );
        for t in TABLES {
            assert_eq!(db.count(t).await, 0, "{reason}: rows written to {t}");
        }
        let (_, status, _) = run(parity(&db, &pds, &["import-status", &good.did, "--json"])).await;
        assert!(status.contains(reason), "{reason}: {status}");
    }
    // The untampered repo then imports.
    pds.set_repo_car(&good.did, original);
    let (code, out, err) = run(getrepo(&db, &pds, &["import", &good.did])).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("{} records synced", good.records)),
        "{out}"
    );
}

backend_tests!(
    #[tokio::test(flavor = "multi_thread")]
    tampered_repos_fail_with_the_reason_and_write_nothing,
    |db| tampered(db)
);

async fn resync(db: TestDb) {
    let pds = Pds::start().await;
    let a = pds.add_car(fixture(LITTLE_CAR));
    let (code, out, err) = run(getrepo(&db, &pds, &["import", &a.did])).await;
    assert_eq!(code, 0, "{out}{err}");
    // While parity is away: two records deleted, the repo moves on.
    let records = pds.records(&a.did);
    let gone: Vec<_> = records
        .iter()
        .filter(|r| r.collection == "app.bsky.feed.post")
        .take(2)
        .cloned()
        .collect();
    for r in &gone {
        assert!(pds.delete_record(&a.did, &r.collection, &r.rkey));
    }
    let new_rev = tid(1_900_000_000_000_000, 1);
    assert!(new_rev > a.rev);
    pds.set_rev(&a.did, &new_rev);
    let (code, out, err) = run(getrepo(&db, &pds, &["import", &a.did, "--force"])).await;
    assert_eq!(code, 0, "{out}{err}");

    // The tables are the repo now, every row at the new rev.
    let revs: BTreeMap<String, String> = [(a.did.clone(), new_rev.clone())].into();
    let want = importer::expected(&pds, &[&a.did], &revs, true);
    assert_eq!(importer::stored(&db, want.keys().copied()).await, want);
    // The deleted ones are tombstoned at the snapshot's rev.
    for r in &gone {
        let uri = format!("at://{}/{}/{}", a.did, r.collection, r.rkey);
        let rev = db
            .scalar(&format!(
                "SELECT rev FROM parity_tombstones WHERE uri = '{uri}'"
            ))
            .await;
        assert_eq!(rev.as_deref(), Some(new_rev.as_str()), "{uri}");
    }
}

backend_tests!(
    #[tokio::test(flavor = "multi_thread")]
    a_whole_repo_import_removes_rows_deleted_upstream,
    |db| resync(db)
);

async fn fallback(db: TestDb) {
    let pds = Pds::start().await;
    let a = pds.add_car(fixture(JETSTREAM_CAR));
    let b = pds.add_car(fixture("car/repostream_tiny.car"));
    // This PDS does not implement getRepo: asked once, then listed.
    pds.inject(GET_REPO, vec![Fault::Status(501)]);
    let mut cmd = parity(
        &db,
        &pds,
        &[
            "import",
            &a.did,
            &b.did,
            "--concurrency",
            "1",
            "--method",
            "auto",
        ],
    );
    cmd.env("PARITY_MAPPERS_GENERIC", "*");
    let (code, out, err) = run(cmd).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(pds.count(GET_REPO), 1, "the PDS was asked again");
    assert!(pds.count(LIST_RECORDS) > 0);
    let revs: BTreeMap<String, String> = [
        (a.did.clone(), a.rev.clone()),
        (b.did.clone(), b.rev.clone()),
    ]
    .into();
    let want = importer::expected(&pds, &[&a.did, &b.did], &revs, true);
    assert_eq!(importer::stored(&db, want.keys().copied()).await, want);

    // `getrepo` does not fall back: the DID fails.
    pds.inject(GET_REPO, vec![Fault::Status(501)]);
    let mut cmd = getrepo(&db, &pds, &["import", &a.did, "--force"]);
    cmd.env("PARITY_IMPORT_MAX_RETRIES", "1");
    let (code, out, _) = run(cmd).await;
    assert_eq!(code, 1, "{out}");

    // A repo-state refusal is the repo's, not the PDS's: the DID fails
    // and the PDS is not given up on (the next DID still gets getRepo).
    pds.set_account_status(&b.did, Some("takendown"));
    let asked = pds.count(GET_REPO);
    let mut cmd = parity(
        &db,
        &pds,
        &[
            "import",
            &b.did,
            &a.did,
            "--force",
            "--concurrency",
            "1",
            "--method",
            "auto",
        ],
    );
    cmd.env("PARITY_MAPPERS_GENERIC", "*");
    let (code, out, err) = run(cmd).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("RepoTakendown"), "{err}");
    assert_eq!(
        pds.count(GET_REPO),
        asked + 2,
        "getRepo not asked for the second DID"
    );
    pds.set_account_status(&b.did, None);

    // Too big for import.max_repo_bytes: listed instead, with `auto`.
    let lists = pds.count(LIST_RECORDS);
    let mut cmd = parity(
        &db,
        &pds,
        &["import", &a.did, "--force", "--method", "auto"],
    );
    cmd.env("PARITY_IMPORT_MAX_REPO_BYTES", "2048")
        .env("PARITY_MAPPERS_GENERIC", "*");
    let (code, out, err) = run(cmd).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(pds.count(LIST_RECORDS) > lists, "not listed");
}

backend_tests!(
    #[tokio::test(flavor = "multi_thread")]
    auto_falls_back_to_list_records,
    |db| fallback(db)
);

/// Page size of the interrupted runs: the little repo's posts fit one page,
/// its likes take several.
fn paged(cmd: &mut tokio::process::Command) {
    cmd.env("PARITY_IMPORT_GETREPO_PAGE_SIZE", "10");
}

/// Starts a whole-repo import of `did` into `db` that pauses long after
/// every page, and kills it (-9) once `pages` pages are committed.
async fn kill_after_pages(db: &TestDb, pds: &Pds, did: &str, pages: i64) {
    let (code, _, err) = run(parity(db, pds, &["migrate"])).await;
    assert_eq!(code, 0, "{err}");
    let mut cmd = getrepo(db, pds, &["import", did, "--concurrency", "1"]);
    paged(&mut cmd);
    cmd.env("PARITY_IMPORT_PAGE_DELAY", "600000");
    let mut child = importer::spawn(cmd);
    let committed = "SELECT CAST(COALESCE(SUM(pages), 0) AS TEXT) FROM parity_import_states";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let done: i64 = db
            .scalar(committed)
            .await
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if done >= pages {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            child.start_kill().unwrap();
            let out = child.wait_with_output().await.unwrap();
            panic!(
                "no pages committed: {:?} {}{}",
                db.rows(
                    "parity_import_states",
                    &["collection", "status", "pages", "cursor"]
                )
                .await,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // Waiting on the child's database writes (another process): poll.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

async fn kill_then_resume(db: TestDb, reference: TestDb) {
    let pds = Pds::start().await;
    let a = pds.add_car(fixture(LITTLE_CAR));
    let mut cmd = getrepo(&reference, &pds, &["import", &a.did]);
    paged(&mut cmd);
    let (code, out, err) = run(cmd).await;
    assert_eq!(code, 0, "{out}{err}");

    // Killed once two pages are committed (a one-page collection, then the
    // first page of the likes).
    kill_after_pages(&db, &pds, &a.did, 2).await;

    let mut cmd = getrepo(&db, &pds, &["resume"]);
    paged(&mut cmd);
    let (code, out, err) = run(cmd).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        importer::stored(&db, TABLES.into_iter()).await,
        importer::stored(&reference, TABLES.into_iter()).await
    );
    assert_eq!(db.snapshot().await, reference.snapshot().await);
    // Same counters as the uninterrupted run: committed pages were skipped,
    // not written again.
    assert_eq!(
        importer::states(&db, &a.did).await,
        importer::states(&reference, &a.did).await
    );
    let pages = "SELECT CAST(SUM(pages) AS TEXT) FROM parity_import_states";
    assert_eq!(db.scalar(pages).await, reference.scalar(pages).await);
    // The CAR was fetched again (3 = reference, killed run, resume).
    assert_eq!(pds.count(GET_REPO), 3);
}

backend_tests!(
    #[tokio::test(flavor = "multi_thread")]
    a_killed_whole_repo_import_resumes_to_the_same_tables,
    |a, b| kill_then_resume(a, b)
);

/// `parity import` run again over a whole-repo import killed mid-way (not
/// `resume`): the killed process's pairs are still `in_progress` under
/// unexpired leases (one per collection it had claimed), and the new run
/// takes them over because their owner is a dead local process (known from
/// the DID's states, read before they are queued), ending with the same
/// tables as an uninterrupted run.
async fn kill_then_import_again(db: TestDb, reference: TestDb) {
    let pds = Pds::start().await;
    let a = pds.add_car(fixture(LITTLE_CAR));
    let mut cmd = getrepo(&reference, &pds, &["import", &a.did]);
    paged(&mut cmd);
    let (code, out, err) = run(cmd).await;
    assert_eq!(code, 0, "{out}{err}");

    kill_after_pages(&db, &pds, &a.did, 2).await;
    let leased = "SELECT CAST(COUNT(*) AS TEXT) FROM parity_import_states \
                  WHERE status = 'in_progress' AND lease_owner IS NOT NULL";
    let leased: i64 = db.scalar(leased).await.unwrap().parse().unwrap();
    assert!(leased > 0, "no pair left under the killed process's lease");

    let mut cmd = getrepo(&db, &pds, &["import", &a.did]);
    paged(&mut cmd);
    let (code, out, err) = run(cmd).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 DIDs completed"), "{out}");
    assert_eq!(
        importer::stored(&db, TABLES.into_iter()).await,
        importer::stored(&reference, TABLES.into_iter()).await
    );
    assert_eq!(db.snapshot().await, reference.snapshot().await);
}

backend_tests!(
    #[tokio::test(flavor = "multi_thread")]
    a_killed_whole_repo_import_run_again_takes_over_its_pairs,
    |a, b| kill_then_import_again(a, b)
);

/// A state's rev moves only with a committed page: a run that pins a new
/// rev and then fails before its first page must not make the cursor an
/// older run left look like the new snapshot's. Else the next whole-repo
/// run at that rev skips records written at the old rev, and its sweep
/// then removes them, though the repo still has them.
async fn failed_run_keeps_rev(db: TestDb) {
    let pds = Pds::start().await;
    let a = pds.add_car(fixture(LITTLE_CAR));
    // Killed at the old rev with the likes part-written.
    kill_after_pages(&db, &pds, &a.did, 2).await;
    // The repo moves on (same records, new rev); a listRecords resume pins
    // the new rev, then the PDS fails every listing.
    let new_rev = tid(1_900_000_000_000_000, 1);
    pds.set_rev(&a.did, &new_rev);
    pds.inject(LIST_RECORDS, vec![Fault::Status(500); 50]);
    let mut cmd = parity(&db, &pds, &["resume"]);
    cmd.env("PARITY_IMPORT_METHOD", "listrecords")
        .env("PARITY_IMPORT_MAX_RETRIES", "1")
        .env("PARITY_MAPPERS_GENERIC", "*");
    paged(&mut cmd);
    let (code, out, err) = run(cmd).await;
    assert_eq!(code, 1, "{out}{err}");
    pds.clear_faults(LIST_RECORDS);

    // A whole-repo resume at the new rev writes the repo as it is now.
    let mut cmd = getrepo(&db, &pds, &["resume"]);
    paged(&mut cmd);
    let (code, out, err) = run(cmd).await;
    assert_eq!(code, 0, "{out}{err}");
    // The likes (the pair the failed run touched) are the repo at the new
    // rev, every one of them; the completed posts pair was not run again.
    let revs: BTreeMap<String, String> = [(a.did.clone(), new_rev)].into();
    let want = importer::expected(&pds, &[&a.did], &revs, true);
    let likes = importer::stored(&db, ["likes"].into_iter()).await;
    assert_eq!(likes.get("likes"), want.get("likes"));
    assert!(
        want["likes"].len() > 10,
        "the likes take more than one page"
    );
}

backend_tests!(
    #[tokio::test(flavor = "multi_thread")]
    a_failed_run_leaves_the_earlier_runs_rev_with_its_cursor,
    |db| failed_run_keeps_rev(db)
);

/// The reference PDS (`@atproto/dev-env`) serves getRepo for real: a repo
/// written through `applyWrites`, signed with the PDS's own key, imports
/// whole and verified, rows equal to what listRecords lists, at the rev
/// `getLatestCommit` reports; a record deleted afterwards is swept by the
/// next whole-repo import.
#[tokio::test(flavor = "multi_thread")]
async fn the_reference_pds_serves_get_repo_for_real() {
    use serde_json::json;
    let db = TestDb::sqlite();
    let net = testnet::refpds::RefPds::start().await;
    let alice = net.create_account("alice").await;
    let mut writes = Vec::new();
    for i in 0..12 {
        writes.push(json!({"$type": "com.atproto.repo.applyWrites#create",
            "collection": "app.bsky.feed.post", "rkey": tid(1_764_000_000_000_000 + i, 7),
            "value": {"$type": "app.bsky.feed.post", "text": format!("post {i}"), "createdAt": "2026-12-01T00:00:00.000Z"}}));
    }
    writes.push(json!({"$type": "com.atproto.repo.applyWrites#create",
        "collection": "app.bsky.graph.follow", "rkey": tid(1_764_000_000_000_000, 8),
        "value": {"$type": "app.bsky.graph.follow", "subject": "did:plc:ewvi7nxzyoun6zhxrhs64oiz", "createdAt": "2026-12-01T00:00:00.000Z"}}));
    net.apply_writes(&alice, json!(writes)).await;

    let import = || {
        let mut cmd = common::process::tokio_command();
        cmd.args(["import", &alice.did, "--method", "getrepo", "--force"])
            .env("PARITY_DATABASE_URL", &db.url)
            .env("PARITY_PLC_URL", &net.plc)
            .env(importer::ALLOW_PRIVATE, "true")
            .env("PARITY_IMPORT_GETREPO_PAGE_SIZE", "5")
            .env("PARITY_LOG_LEVEL", "warn")
            .env("PARITY_METRICS_ADDR", "off")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        cmd
    };
    let (net_ref, db_ref, did) = (&net, &db, alice.did.as_str());
    let check = |expected: usize| async move {
        let (net, db) = (net_ref, db_ref);
        let (_, rev) = net.latest_commit(did).await;
        for (collection, table) in [
            ("app.bsky.feed.post", "posts"),
            ("app.bsky.graph.follow", "follows"),
        ] {
            let mut listed: Vec<(String, String, String)> = net
                .list_records(did, collection)
                .await
                .iter()
                .map(|r| {
                    (
                        r["uri"].as_str().unwrap().to_owned(),
                        r["cid"].as_str().unwrap().to_owned(),
                        rev.clone(),
                    )
                })
                .collect();
            listed.sort();
            let mut stored: Vec<(String, String, String)> = db
                .rows(table, &["uri", "cid", "rev"])
                .await
                .into_iter()
                .map(|r| {
                    (
                        r[0].clone().unwrap(),
                        r[1].clone().unwrap(),
                        r[2].clone().unwrap(),
                    )
                })
                .collect();
            stored.sort();
            assert_eq!(stored, listed, "{table}");
        }
        assert_eq!(db.count("posts").await as usize, expected);
    };
    let (code, out, err) = run(import()).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("13 records synced"), "{out}");
    check(12).await;

    // Deleted on the PDS: the next whole-repo import removes it.
    let (status, body) = net
        .post(
            "com.atproto.repo.deleteRecord",
            Some(&alice.access_jwt),
            &json!({"repo": alice.did, "collection": "app.bsky.feed.post",
                    "rkey": tid(1_764_000_000_000_003, 7)}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (code, out, err) = run(import()).await;
    assert_eq!(code, 0, "{out}{err}");
    check(11).await;
}
