//! `parity import` end to end: the real binary against a local PLC
//! directory + PDS serving real repositories (CAR fixtures, MST walked),
//! into SQLite and PostgreSQL. Rows are checked against what the PDS serves
//! and, for `jetstream_repo.car`, against the independent `goat repo ls`
//! listing; states and the summary line are checked too.

use crate::common;

use std::collections::BTreeMap;

use common::importer::{self, BUILTIN, parity, run};
use common::pds::Pds;
use common::{TestDb, fixture};

const JETSTREAM_CAR: &str = "car/jetstream_repo.car";
const LITTLE_CAR: &str = "car/repostream_little.car";

async fn multi_page(db: TestDb) {
    let pds = Pds::start().await;
    let a = pds.add_car(fixture(JETSTREAM_CAR));
    let b = pds.add_car(fixture(LITTLE_CAR));
    let mut cmd = parity(&db, &pds, &["import", &a.did, &b.did, "--concurrency", "2"]);
    cmd.env("PARITY_IMPORT_PAGE_SIZE", "7")
        .env("PARITY_MAPPERS_GENERIC", "*");
    let (code, out, err) = run(cmd).await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let total = a.records + b.records;
    assert!(
        out.contains(&format!(
            "{total} records synced, 0 skipped, 0 failed; 2 DIDs completed"
        )),
        "{out}"
    );

    let revs: BTreeMap<String, String> = [
        (a.did.clone(), a.rev.clone()),
        (b.did.clone(), b.rev.clone()),
    ]
    .into();
    let want = importer::expected(&pds, &[&a.did, &b.did], &revs, true);
    let got = importer::stored(&db, want.keys().copied()).await;
    assert_eq!(got, want);
    let stored_total: usize = got.values().map(Vec::len).sum();
    assert_eq!(stored_total, total);

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

    // One completed state per collection, with its pages and counters.
    for info in [&a, &b] {
        let states = importer::states(&db, &info.did).await;
        let mut per_collection: BTreeMap<String, i64> = BTreeMap::new();
        for r in pds.records(&info.did) {
            *per_collection.entry(r.collection).or_default() += 1;
        }
        let want: Vec<(String, String, i64, i64, i64)> = per_collection
            .into_iter()
            .map(|(c, n)| (c, "completed".to_owned(), n, 0, 0))
            .collect();
        assert_eq!(states, want, "{}", info.did);
    }
    // Paging really happened: ceil(10 / 7) pages of likes, plus the empty
    // page that ends a listing on the reference PDS.
    let pages = db
        .scalar(&format!(
            "SELECT CAST(pages AS TEXT) FROM parity_import_states WHERE did = '{}' AND collection = 'app.bsky.feed.like'",
            a.did
        ))
        .await;
    assert_eq!(pages.as_deref(), Some("3"));
    let list_calls = pds.list_records_pages();
    let mut unique = list_calls.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), list_calls.len(), "a page was fetched twice");

    // A second run finds everything done; --force imports it again.
    let (code, out, _) = run(parity(&db, &pds, &["import", &a.did])).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("0 records synced") && out.contains("1 skipped"),
        "{out}"
    );
    let (code, out, _) = run(parity(&db, &pds, &["import", &a.did, "--force"])).await;
    assert_eq!(code, 0);
    // Same rev: the rows are already there, so the convergence rules skip them.
    assert!(
        out.contains(&format!(
            "0 records synced, {} skipped, 0 failed; 1 DIDs completed",
            a.records
        )),
        "{out}"
    );
    assert_eq!(importer::stored(&db, want.keys().copied()).await, want);
}

backend_tests!(
    #[tokio::test(flavor = "multi_thread")]
    multi_page_import,
    |db| multi_page(db)
);

#[tokio::test(flavor = "multi_thread")]
async fn only_the_named_collection_and_unknown_collections_are_refused() {
    let db = TestDb::sqlite();
    let pds = Pds::start().await;
    let a = pds.add_car(fixture(JETSTREAM_CAR));
    let (code, out, err) = run(parity(
        &db,
        &pds,
        &["import", &a.did, "--collection", "app.bsky.feed.like"],
    ))
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(db.count("likes").await, 10);
    assert_eq!(db.count("posts").await, 0);

    let (code, _, err) = run(parity(
        &db,
        &pds,
        &["import", &a.did, "--collection", "com.example.nomapper"],
    ))
    .await;
    assert_eq!(code, 2);
    assert!(
        err.contains("com.example.nomapper") && err.contains("no mapper"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tombstoned_and_unknown_dids_fail_clearly_and_the_rest_goes_on() {
    let db = TestDb::sqlite();
    let pds = Pds::start().await;
    let good = pds.add_car(fixture("car/repostream_tiny.car"));
    let gone = pds.add_car(fixture("car/indigo_greenground.repo.car"));
    pds.tombstone(&gone.did);
    let unknown = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa";
    let (code, out, err) = run(parity(
        &db,
        &pds,
        &["import", unknown, &gone.did, &good.did],
    ))
    .await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!("{unknown}: failed"))
            && err.contains("not known to the PLC directory"),
        "{err}"
    );
    assert!(
        err.contains(&gone.did) && err.contains("tombstoned"),
        "{err}"
    );
    assert!(
        out.contains("1 DIDs completed, 0 skipped, 2 failed"),
        "{out}"
    );
    // The good DID is fully imported (8 records, all built-in collections).
    let stored: i64 = {
        let mut n = 0;
        for (_, t) in BUILTIN {
            n += db.count(t).await;
        }
        n
    };
    assert_eq!(stored as usize, good.records);
    // Failures are visible in import-status, with a hint to resume.
    let (code, out, _) = run(parity(&db, &pds, &["import-status", "--failed"])).await;
    assert_eq!(code, 0);
    assert!(out.contains("failed: 2"), "{out}");
    assert!(out.contains(unknown) && out.contains(&gone.did), "{out}");
    assert!(out.contains("parity resume"), "{out}");

    // Once the unknown DID exists, importing it again clears its failure.
    pds.add_repo(
        unknown,
        &common::pds::tid(1_800_000_000_000_000, 9),
        None,
        pds.records(&good.did),
    );
    let (code, out, err) = run(parity(&db, &pds, &["import", unknown])).await;
    assert_eq!(code, 0, "{out}{err}");
    let (_, out, _) = run(parity(&db, &pds, &["import-status", "--failed"])).await;
    assert!(out.contains("failed: 1"), "{out}");
    assert!(!out.contains(unknown), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn handles_and_a_file_with_an_invalid_line() {
    let db = TestDb::sqlite();
    let pds = Pds::start().await;
    let dns = common::dns::Dns::start().await;
    let a = pds.add_car(fixture("car/repostream_tiny.car"));
    let b = pds.add_car(fixture("car/rsky_valid_repo.car"));
    pds.add_did_doc(&a.did, "alice.test");
    dns.set_handle("alice.test", &a.did);
    // A handle whose DNS record points at a DID that does not claim it.
    dns.set_handle("mallory.test", &b.did);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("accounts.txt");
    std::fs::write(
        &file,
        format!(
            "# accounts to import\nAlice.Test\n\nthis is not a did\n{}  # second\n",
            b.did
        ),
    )
    .unwrap();
    let mut cmd = parity(
        &db,
        &pds,
        &["import", "--file", file.to_str().unwrap(), "mallory.test"],
    );
    cmd.env("PARITY_IDENTITY_DNS_SERVERS", dns.addr().to_string());
    let (code, out, err) = run(cmd).await;
    assert!(
        err.contains("line 4") && err.contains("this is not a did"),
        "{err}"
    );
    assert!(
        err.contains("mallory.test") && err.contains("does not claim"),
        "{err}"
    );
    assert_eq!(code, 1, "mallory failed: {out}{err}");
    assert!(
        out.contains("2 DIDs completed, 0 skipped, 1 failed"),
        "{out}"
    );
    assert!(out.contains("1 invalid input lines skipped"), "{out}");
    let mut n = 0;
    for (_, t) in BUILTIN {
        n += db.count(t).await;
    }
    assert_eq!(n as usize, a.records + b.records);
    assert_eq!(
        db.scalar(&format!(
            "SELECT handle FROM parity_repos WHERE did = '{}'",
            a.did
        ))
        .await
        .as_deref(),
        Some("alice.test")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn import_status_summarises_lists_and_prints_json() {
    let db = TestDb::sqlite();
    let pds = Pds::start().await;
    let a = pds.add_car(fixture(JETSTREAM_CAR));
    let (code, _, err) = run(parity(&db, &pds, &["import", &a.did])).await;
    assert_eq!(code, 0, "{err}");

    let (code, out, _) = run(parity(&db, &pds, &["import-status"])).await;
    assert_eq!(code, 0);
    assert!(
        out.starts_with("pending: 0, in_progress: 0, completed: 5, failed: 0"),
        "{out}"
    );
    for c in [
        "app.bsky.feed.like",
        "app.bsky.feed.post",
        "app.bsky.actor.profile",
    ] {
        assert!(out.contains(c), "{out}");
    }
    assert!(!out.contains("parity resume"), "{out}");

    let (_, out, _) = run(parity(&db, &pds, &["import-status", "--pending"])).await;
    assert!(out.contains("No imports match"), "{out}");

    let (_, out, _) = run(parity(&db, &pds, &["import-status", &a.did])).await;
    assert!(out.contains("pages") && out.contains("completed"), "{out}");

    let (_, out, _) = run(parity(
        &db,
        &pds,
        &["import-status", "--json", "--completed"],
    ))
    .await;
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report["import_all"],
        serde_json::json!([]),
        "no import --all run"
    );
    let rows = report["states"].as_array().unwrap();
    assert_eq!(rows.len(), 5);
    let likes = rows
        .iter()
        .find(|r| r["collection"] == "app.bsky.feed.like")
        .unwrap();
    assert_eq!(likes["records_synced"], 10);
    assert_eq!(likes["status"], "completed");
    assert_eq!(likes["did"], a.did.as_str());
    assert_eq!(likes["rev"], a.rev.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn progress_is_logged_without_a_terminal_and_drawn_on_one() {
    let db = TestDb::sqlite();
    let pds = Pds::start().await;
    let a = pds.add_car(fixture(JETSTREAM_CAR));
    pds.set_latency(std::time::Duration::from_millis(150));
    // No TTY (pipes): plain log lines every second.
    let mut cmd = parity(&db, &pds, &["import", &a.did, "--progress"]);
    cmd.env("PARITY_LOG_LEVEL", "info")
        .env("PARITY_LOG_PROGRESS_INTERVAL_SECONDS", "1")
        .env("PARITY_IMPORT_PAGE_SIZE", "3");
    let (code, _, err) = run(cmd).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("import progress") && err.contains("/1 DIDs"),
        "{err}"
    );

    // A terminal (script(1) gives the command a pty): indicatif bars.
    let db2 = TestDb::sqlite();
    let cmd = parity(&db2, &pds, &[]);
    let std = cmd.as_std();
    let mut line: Vec<String> = std
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={:?}", k.to_str()?, v?.to_str()?)))
        .collect();
    line.insert(0, "env".into());
    line.push(std.get_program().to_str().unwrap().into());
    line.extend(["import".into(), a.did.clone(), "--progress".into()]);
    let out = tokio::process::Command::new("script")
        .args(["-qec", &line.join(" "), "/dev/null"])
        .output()
        .await
        .expect("script(1) from util-linux");
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{tty}");
    // The overall bar's "done/total DIDs" (the summary says "1 DIDs
    // completed"; info log lines are off at the warn level).
    assert!(tty.contains("/1 DIDs"), "{tty}");
    assert!(tty.contains(&a.did), "the DID's own bar: {tty}");
    assert!(tty.contains("records synced"), "{tty}");
}

#[tokio::test(flavor = "multi_thread")]
async fn did_web_accounts_resolve_through_their_well_known_document() {
    let db = TestDb::sqlite();
    let pds = Pds::start().await;
    let did = pds.local_did_web();
    let records: Vec<common::pds::SynthRecord> = (0..3)
        .map(|i| {
            common::pds::SynthRecord::new(
                "app.bsky.feed.post",
                &common::pds::tid(1_700_000_000_000_000 + i, 3),
                &format!(r#"{{"$type":"app.bsky.feed.post","text":"web {i}","createdAt":"2026-01-01T00:00:00.000Z"}}"#),
            )
        })
        .collect();
    pds.add_repo(
        &did,
        &common::pds::tid(1_800_000_000_000_000, 3),
        None,
        records,
    );
    pds.set_did_web(&did);
    let (code, out, err) = run(parity(&db, &pds, &["import", &did])).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(db.count("posts").await, 3);
    assert_eq!(pds.count(common::pds::DID_WEB), 1);
    assert_eq!(pds.count(common::pds::PLC), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn import_status_caps_the_table_with_a_note() {
    let db = TestDb::sqlite();
    let pds = Pds::start().await;
    let mut cfg = parity::config::Config::default();
    cfg.database.url = db.url.clone();
    let store = parity::store::Store::connect(&cfg.database).await.unwrap();
    store.migrate().await.unwrap();
    let collections: Vec<String> = (0..60).map(|i| format!("com.example.c{i}")).collect();
    store
        .enqueue_imports("did:plc:ewvi7nxzyoun6zhxrhs64oiz", &collections, false)
        .await
        .unwrap();
    store.close().await;
    let (code, out, _) = run(parity(&db, &pds, &["import-status"])).await;
    assert_eq!(code, 0);
    assert!(out.starts_with("pending: 60, in_progress: 0"), "{out}");
    assert!(
        out.contains("Showing the 50 most recently updated"),
        "{out}"
    );
    assert_eq!(out.matches("com.example.c").count(), 50);
    let (_, out, _) = run(parity(&db, &pds, &["import-status", "--json"])).await;
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["states"].as_array().unwrap().len(), 60);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_import_serves_metrics_and_health_while_it_runs() {
    use common::pds::{Fault, LIST_RECORDS};
    use common::process::{get, scrape};
    let db = TestDb::sqlite();
    let pds = Pds::start().await;
    let a = pds.add_car(fixture(JETSTREAM_CAR));
    pds.inject(
        LIST_RECORDS,
        vec![Fault::RateLimited {
            retry_after_secs: Some(0),
            remaining: None,
            reset_epoch_secs: None,
        }],
    );
    // One page with all 10 likes, then the import waits at the gate for
    // the empty page that ends the listing.
    pds.gate_list_records_after(1);
    // The listRecords path: its gate holds the run open.
    let mut p = importer::watched(
        &db,
        &pds,
        &[&a.did, "--collection", "app.bsky.feed.like"],
        "listrecords",
        &[],
    );
    let addr = p.metrics_addr().await;
    pds.wait_for_list_records(3).await;
    // The first page is committed before the second is asked for.
    let m = scrape(addr).await;
    assert_eq!(
        m.get("parity_import_records_total", &[("outcome", "synced")]),
        10.0
    );
    assert_eq!(m.get("parity_import_rate_limited_total", &[]), 1.0);
    assert_eq!(
        m.get("parity_import_requests_total", &[("status", "429")]),
        1.0
    );
    assert_eq!(
        m.get("parity_import_dids", &[("status", "in_progress")]),
        1.0
    );
    assert_eq!(
        m.get(
            "parity_records_written_total",
            &[("table", "likes"), ("op", "upsert")]
        ),
        10.0
    );
    assert_eq!(get(addr, "/health").await.0, 200);
    assert_eq!(get(addr, "/ready").await.0, 200);
    pds.open_gate();
    drop(p);
}
