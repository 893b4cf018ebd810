//! Import state under stress: SIGKILL mid-way then `parity resume` equals an
//! uninterrupted run; two importers on one PostgreSQL never import the same
//! page twice; an import racing live updates and deletes converges to the
//! newest state; resync requests from the stream are queued and resumed;
//! an `#identity` event invalidates the shared identity cache.

use crate::common;

use std::collections::{BTreeMap, HashMap};

use common::importer::{self, parity, run};
use common::jetstream::{JetstreamServer, Line};
use common::pds::{LIST_RECORDS, Pds, SynthRecord, tid};
use common::{TestDb, config, fixture};
use parity::batch::{Batch, Checkpoint, RepoChange};
use parity::event::Did;
use parity::pipeline::ConsumeOptions;
use parity::store::Store;

const POST: &str = "app.bsky.feed.post";

async fn kill_then_resume(db: TestDb, reference: TestDb) {
    let pds = Pds::start().await;
    let a = pds.add_car(fixture("car/repostream_little.car"));
    let env = |cmd: &mut tokio::process::Command| {
        cmd.env("PARITY_IMPORT_PAGE_SIZE", "10")
            .env("PARITY_MAPPERS_GENERIC", "*");
    };
    let mut cmd = parity(&reference, &pds, &["import", &a.did]);
    env(&mut cmd);
    let (code, out, err) = run(cmd).await;
    assert_eq!(code, 0, "{out}{err}");
    let full_run = pds.count(LIST_RECORDS);

    // Hold the 9th page request, kill the importer while it waits.
    pds.gate_list_records_after(8);
    let mut cmd = parity(&db, &pds, &["import", &a.did, "--concurrency", "1"]);
    env(&mut cmd);
    let mut child = importer::spawn(cmd);
    pds.wait_for_list_records(full_run + 9).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    pds.open_gate();
    let before_resume = pds.count(LIST_RECORDS);

    let interrupted = db
        .scalar(
            "SELECT CAST(COUNT(*) AS TEXT) FROM parity_import_states WHERE status = 'in_progress'",
        )
        .await;
    assert_eq!(interrupted.as_deref(), Some("1"));
    let (code, out, err) = run(parity(&db, &pds, &["import-status", "--pending"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("in_progress: 1"), "{out}");

    let mut cmd = parity(&db, &pds, &["resume"]);
    env(&mut cmd);
    let (code, out, err) = run(cmd).await;
    assert_eq!(code, 0, "{out}{err}");

    let tables = [
        "posts", "likes", "reposts", "follows", "blocks", "profiles", "records",
    ];
    assert_eq!(
        importer::stored(&db, tables.into_iter()).await,
        importer::stored(&reference, tables.into_iter()).await
    );
    assert_eq!(db.snapshot().await, reference.snapshot().await);
    let states = importer::states(&db, &a.did).await;
    assert!(states.iter().all(|s| s.1 == "completed"), "{states:?}");
    // Counters count each record once, as in the uninterrupted run.
    assert_eq!(states, importer::states(&reference, &a.did).await);
    // Nothing committed before the kill was fetched again: the 8 committed
    // pages are not repeated, only the one in flight.
    assert_eq!(pds.count(LIST_RECORDS) - before_resume, full_run - 8);
}

backend_tests!(
    #[tokio::test(flavor = "multi_thread")]
    killed_import_resumes_to_the_same_tables,
    |a, b| kill_then_resume(a, b)
);

fn post_json(text: &str) -> String {
    format!(r#"{{"$type":"{POST}","text":"{text}","createdAt":"2026-01-01T00:00:00.000Z"}}"#)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_importers_on_one_postgres_never_import_the_same_pair_twice() {
    let db = TestDb::postgres("two").await;
    let pds = Pds::start().await;
    pds.set_latency(std::time::Duration::from_millis(5));
    let mut dids = Vec::new();
    let mut total = 0;
    for d in 0..6u16 {
        let did = format!("did:plc:two{d:021}");
        let mut records = Vec::new();
        for (c, n) in [
            (POST, 30u64),
            ("app.bsky.feed.like", 20),
            ("app.bsky.graph.follow", 10),
        ] {
            for i in 0..n {
                let json = match c {
                    POST => post_json(&format!("post {i} of {d}")),
                    "app.bsky.feed.like" => format!(
                        r#"{{"$type":"{c}","subject":{{"uri":"at://did:plc:x/{POST}/{i}","cid":"bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"}},"createdAt":"2026-01-01T00:00:00.000Z"}}"#
                    ),
                    _ => format!(
                        r#"{{"$type":"{c}","subject":"did:plc:friend{i:018}","createdAt":"2026-01-01T00:00:00.000Z"}}"#
                    ),
                };
                records.push(SynthRecord::new(
                    c,
                    &tid(1_700_000_000_000_000 + i, d),
                    &json,
                ));
                total += 1;
            }
        }
        pds.add_repo(&did, &tid(1_800_000_000_000_000, d), None, records);
        pds.add_did_doc(&did, &format!("two{d}.test"));
        dids.push(did);
    }
    let mut args = vec!["import", "--concurrency", "3"];
    args.extend(dids.iter().map(String::as_str));
    let mut a = parity(&db, &pds, &args);
    let mut b = parity(&db, &pds, &args);
    for c in [&mut a, &mut b] {
        c.env("PARITY_IMPORT_PAGE_SIZE", "5");
    }
    // Migrate first so the two processes do not race on creating tables.
    let (code, _, err) = run(parity(&db, &pds, &["migrate"])).await;
    assert_eq!(code, 0, "{err}");
    let (ra, rb) = tokio::join!(run(a), run(b));
    assert_eq!(ra.0, 0, "{}{}", ra.1, ra.2);
    assert_eq!(rb.0, 0, "{}{}", rb.1, rb.2);

    let pages = pds.list_records_pages();
    let mut seen = HashMap::new();
    for p in &pages {
        *seen.entry(p.clone()).or_insert(0) += 1;
    }
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "pages fetched twice: {repeated:?}");
    // Every (did, collection) completed exactly once, with all its records.
    let synced = |out: &str| -> u64 {
        let s = out.split(" records synced").next().unwrap();
        s.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(synced(&ra.1) + synced(&rb.1), total);
    for did in &dids {
        let states = importer::states(&db, did).await;
        assert_eq!(states.len(), 3);
        assert!(
            states.iter().all(|s| s.1 == "completed" && s.3 == 0),
            "{states:?}"
        );
    }
    let revs: BTreeMap<String, String> = dids
        .iter()
        .enumerate()
        .map(|(d, did)| (did.clone(), tid(1_800_000_000_000_000, d as u16)))
        .collect();
    let refs: Vec<&str> = dids.iter().map(String::as_str).collect();
    let want = importer::expected(&pds, &refs, &revs, false);
    assert_eq!(importer::stored(&db, want.keys().copied()).await, want);
}

/// A repo of 20 posts at rev `old`, and live events at rev `new` that
/// update posts 0–4, delete posts 5–9 and create two more.
fn race_fixture(
    pds: &Pds,
    did: &str,
    old: &str,
    new: &str,
) -> (Vec<Line>, Vec<(String, String, String)>) {
    let rkeys: Vec<String> = (0..22u64)
        .map(|i| tid(1_700_000_000_000_000 + i, 7))
        .collect();
    let records: Vec<SynthRecord> = (0..20)
        .map(|i| SynthRecord::new(POST, &rkeys[i], &post_json(&format!("original {i}"))))
        .collect();
    pds.add_repo(did, old, None, records.clone());
    pds.add_did_doc(did, "racer.test");
    let mut lines = Vec::new();
    let mut want: BTreeMap<String, (String, String)> = BTreeMap::new();
    for r in &records {
        want.insert(r.rkey.clone(), (r.cid.clone(), old.to_owned()));
    }
    let mut t = 1_750_000_000_000_000i64;
    let mut event = |op: &str, rkey: &str, rec: Option<&SynthRecord>| {
        t += 1;
        let commit = match rec {
            Some(r) => format!(
                r#"{{"rev":"{new}","operation":"{op}","collection":"{POST}","rkey":"{rkey}","record":{},"cid":"{}"}}"#,
                r.json, r.cid
            ),
            None => format!(
                r#"{{"rev":"{new}","operation":"{op}","collection":"{POST}","rkey":"{rkey}"}}"#
            ),
        };
        Line::new(&format!(
            r#"{{"did":"{did}","time_us":{t},"kind":"commit","commit":{commit}}}"#
        ))
    };
    for (i, rkey) in rkeys.iter().enumerate().take(5).chain([(19, &rkeys[19])]) {
        let r = SynthRecord::new(POST, rkey, &post_json(&format!("edited {i}")));
        lines.push(event("update", rkey, Some(&r)));
        want.insert(rkey.clone(), (r.cid.clone(), new.to_owned()));
    }
    for rkey in rkeys.iter().take(10).skip(5) {
        lines.push(event("delete", rkey, None));
        want.remove(rkey);
    }
    for (i, rkey) in rkeys.iter().enumerate().skip(20) {
        let r = SynthRecord::new(POST, rkey, &post_json(&format!("new {i}")));
        lines.push(event("create", rkey, Some(&r)));
        want.insert(rkey.clone(), (r.cid.clone(), new.to_owned()));
    }
    let want = want
        .into_iter()
        .map(|(k, (cid, rev))| (format!("at://{did}/{POST}/{k}"), cid, rev))
        .collect();
    (lines, want)
}

async fn posts(db: &TestDb) -> Vec<(String, String, String)> {
    db.rows("posts", &["uri", "cid", "rev"])
        .await
        .into_iter()
        .map(|r| {
            (
                r[0].clone().unwrap(),
                r[1].clone().unwrap(),
                r[2].clone().unwrap(),
            )
        })
        .collect()
}

async fn race(db: TestDb) {
    let did = "did:plc:racer000000000000000000";
    let (old, new) = (tid(1_700_000_000_000_000, 1), tid(1_760_000_000_000_000, 1));
    let pds = Pds::start().await;
    let (lines, want) = race_fixture(&pds, did, &old, &new);
    let last = common::last_time_us(&lines);
    let server = JetstreamServer::start(lines).await;

    // The import writes its first page, then waits while the live stream
    // updates a record of that page and updates and deletes records of the
    // pages still to come.
    pds.gate_list_records_after(1);
    let mut cmd = parity(&db, &pds, &["import", did]);
    cmd.env("PARITY_IMPORT_PAGE_SIZE", "5");
    let child = importer::spawn(cmd);
    pds.wait_for_list_records(2).await;
    common::run_to_end(
        &server,
        config(&db, &server.url()),
        ConsumeOptions::default(),
        last,
    )
    .await;
    pds.open_gate();
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(posts(&db).await, want, "import then live, interleaved");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The 10 records the stream changed or deleted were refused by the
    // convergence rules and counted as skipped.
    assert!(
        stdout.contains("10 records synced, 10 skipped, 0 failed"),
        "{stdout}"
    );
}

backend_tests!(
    #[tokio::test(flavor = "multi_thread")]
    import_racing_live_updates_converges_to_the_newest_state,
    |db| race(db)
);

async fn open_store(db: &TestDb) -> Store {
    let mut cfg = parity::config::Config::default();
    cfg.database.url = db.url.clone();
    let store = Store::connect(&cfg.database).await.unwrap();
    store.migrate().await.unwrap();
    store
}

fn repo_batch(did: &Did, change: RepoChange) -> Batch {
    Batch {
        mutations: Vec::new(),
        repos: [(did.clone(), change)].into(),
        last_time_us: 0,
        events: 1,
        checkpoint: Checkpoint::Stream(Vec::new()),
    }
}

async fn resync_then_resume(db: TestDb) {
    let pds = Pds::start().await;
    let a = pds.add_car(fixture("car/jetstream_repo.car"));
    let did = Did::parse(&a.did).unwrap();
    let store = open_store(&db).await;
    // What `parity consume` commits for a #sync frame or a broken since chain.
    store
        .commit(&repo_batch(
            &did,
            RepoChange {
                resync: Some("3mzzzzzzzzzzz".into()),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let (_, out, _) = run(parity(&db, &pds, &["import-status", "--pending"])).await;
    assert!(out.contains("pending: 1") && out.contains(&a.did), "{out}");

    let (code, out, err) = run(parity(&db, &pds, &["resume", &a.did])).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("{} records synced", a.records)),
        "{out}"
    );
    let states = importer::states(&db, &a.did).await;
    assert_eq!(states.len(), 5, "{states:?}");
    assert!(states.iter().all(|s| s.1 == "completed"), "{states:?}");
    assert_eq!(
        db.scalar(&format!(
            "SELECT resync_requested_at FROM parity_repos WHERE did = '{}'",
            a.did
        ))
        .await,
        None
    );

    // The resolved PDS is cached for every process; #identity clears it.
    let cached = format!(
        "SELECT pds FROM parity_repos WHERE did = '{}' AND identity_resolved_at IS NOT NULL",
        a.did
    );
    assert_eq!(db.scalar(&cached).await, Some(pds.url()));
    // Another process uses the shared cache: no new DID document fetch.
    let plc_cached = pds.count(common::pds::PLC);
    let (code, _, err) = run(parity(&db, &pds, &["import", &a.did, "--force"])).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        pds.count(common::pds::PLC),
        plc_cached,
        "served from the cache"
    );
    store
        .commit(&repo_batch(
            &did,
            RepoChange {
                identity: true,
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    assert_eq!(db.scalar(&cached).await, None);
    let plc_before = pds.count(common::pds::PLC);
    let (code, _, err) = run(parity(&db, &pds, &["import", &a.did, "--force"])).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        pds.count(common::pds::PLC),
        plc_before + 1,
        "resolved again"
    );
    assert_eq!(db.scalar(&cached).await, Some(pds.url()));
    store.close().await;
}

backend_tests!(
    #[tokio::test(flavor = "multi_thread")]
    resync_requests_are_queued_and_resumed,
    |db| resync_then_resume(db)
);

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_releases_the_lease_and_resume_continues_at_once() {
    let db = TestDb::sqlite();
    let pds = Pds::start().await;
    let a = pds.add_car(fixture("car/jetstream_repo.car"));
    pds.gate_list_records_after(2);
    let mut cmd = parity(
        &db,
        &pds,
        &["import", &a.did, "--collection", "app.bsky.feed.like"],
    );
    cmd.env("PARITY_IMPORT_PAGE_SIZE", "3");
    let child = importer::spawn(cmd);
    pds.wait_for_list_records(3).await;
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "interrupted is not success: {stdout}"
    );
    assert!(stdout.contains("1 interrupted"), "{stdout}");
    pds.open_gate();
    // Still in progress, but its lease is given back: not held for the
    // default 60 s by a process that is gone.
    let state = db
        .rows(
            "parity_import_states",
            &["status", "cursor", "lease_expires_at", "updated_at"],
        )
        .await;
    assert_eq!(state.len(), 1);
    assert_eq!(state[0][0].as_deref(), Some("in_progress"));
    assert!(state[0][1].is_some(), "the saved cursor");
    assert!(
        state[0][2] <= state[0][3],
        "lease expired when released: {state:?}"
    );
    assert_eq!(db.count("likes").await, 6);

    let (code, out, err) = run(parity(&db, &pds, &["resume"])).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("4 records synced"), "{out}");
    assert_eq!(db.count("likes").await, 10);
}

/// Re-imports that can never run end in the terminal `gone` state instead
/// of failing every `parity resume`: a deactivated repo (the PDS answers
/// `RepoDeactivated`), a repo the PDS does not have (`RepoNotFound`), an
/// account the stream reported deleted (its DID tombstoned, nothing asked),
/// and one deleted unseen (the PLC directory answers 410).
async fn unavailable_repos_end_gone(db: TestDb) {
    const DEACT: &str = "did:plc:deactivatedaaaaaaaaaaaaa";
    const MISSING: &str = "did:plc:missingrepoaaaaaaaaaaaa";
    const DELETED: &str = "did:plc:deletedaccountaaaaaaaaa";
    // Deleted without parity seeing the #account event: the PLC tombstone.
    const TOMBSTONED: &str = "did:plc:tombstonedaaaaaaaaaaaaaa";
    let pds = Pds::start().await;
    let like = r#"{"$type":"app.bsky.feed.like","createdAt":"2026-07-04T14:38:07.513Z","subject":{"cid":"bafyx","uri":"at://did:plc:x/app.bsky.feed.post/1"}}"#;
    pds.add_repo(
        DEACT,
        &tid(1_000, 0),
        Some("deact.test"),
        vec![SynthRecord::new("app.bsky.feed.like", &tid(1, 0), like)],
    );
    pds.set_account_status(DEACT, Some("deactivated"));
    pds.add_did_doc(MISSING, "missing.test");
    pds.tombstone(DELETED);
    pds.tombstone(TOMBSTONED);
    let store = open_store(&db).await;
    let resync = |did: &str, deleted: bool| {
        repo_batch(
            &Did::parse(did).unwrap(),
            RepoChange {
                resync: Some(tid(2_000, 0)),
                account: deleted.then_some((false, Some(parity::event::AccountStatus::Deleted))),
                ..Default::default()
            },
        )
    };
    store.commit(&resync(DEACT, false)).await.unwrap();
    store.commit(&resync(DELETED, false)).await.unwrap();
    store.commit(&resync(DELETED, true)).await.unwrap();
    store.commit(&resync(TOMBSTONED, false)).await.unwrap();
    store
        .enqueue_imports(MISSING, &["app.bsky.feed.like".to_owned()], false)
        .await
        .unwrap();

    let (code, out, err) = run(parity(&db, &pds, &["resume"])).await;
    assert_eq!(code, 0, "{out}{err}");
    for (did, why) in [
        (DEACT, "RepoDeactivated"),
        (MISSING, "RepoNotFound"),
        (DELETED, "deleted"),
        (TOMBSTONED, "tombstoned"),
    ] {
        let rows = db
            .rows(
                &format!("parity_import_states WHERE did = '{did}'"),
                &["status", "error"],
            )
            .await;
        assert_eq!(rows.len(), 1, "{did}: {rows:?}");
        assert_eq!(rows[0][0].as_deref(), Some("gone"), "{did}: {rows:?}");
        let error = rows[0][1].clone().unwrap_or_default();
        assert!(error.contains(why), "{did}: {error}");
    }
    let (_, status, _) = run(parity(&db, &pds, &["import-status"])).await;
    assert!(status.contains("gone: 4"), "{status}");

    // Terminal: the next resume has nothing left to do and asks no one.
    let asked = pds.requests().len();
    let (code, out, err) = run(parity(&db, &pds, &["resume"])).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        pds.requests().len(),
        asked,
        "nothing fetched again: {:?}",
        &pds.requests()[asked..]
    );
    store.close().await;
}

backend_tests!(
    #[tokio::test(flavor = "multi_thread")]
    unavailable_repos_end_in_the_gone_state,
    |db| unavailable_repos_end_gone(db)
);

/// A full re-import of a (did, collection) removes the rows the repo no
/// longer has, with a tombstone at the imported rev (a late replay of the
/// old create cannot bring one back), only once the last page is in, and
/// never a row a live event wrote newer than the imported rev.
async fn reimport_removes_what_is_gone(db: TestDb) {
    const DID: &str = "did:plc:reimportaaaaaaaaaaaaaaaaa";
    const LIKE_NSID: &str = "app.bsky.feed.like";
    let like = r#"{"$type":"app.bsky.feed.like","createdAt":"2026-07-04T14:38:07.513Z","subject":{"cid":"bafyx","uri":"at://did:plc:x/app.bsky.feed.post/1"}}"#;
    let rec = |rkey: &str| SynthRecord::new(LIKE_NSID, rkey, like);
    let (ka, kb, kc, kd) = (tid(1, 0), tid(2, 0), tid(3, 0), tid(4, 0));
    let (r1, r2, r3) = (tid(1_000, 0), tid(2_000, 0), tid(3_000, 0));
    let pds = Pds::start().await;
    pds.add_repo(
        DID,
        &r1,
        Some("re.test"),
        vec![rec(&ka), rec(&kb), rec(&kc)],
    );
    let import = |force: bool| {
        let mut args = vec![
            "import",
            DID,
            "--collection",
            LIKE_NSID,
            "--concurrency",
            "1",
        ];
        if force {
            args.push("--force");
        }
        let mut cmd = parity(&db, &pds, &args);
        cmd.env("PARITY_IMPORT_PAGE_SIZE", "1");
        cmd
    };
    let (code, out, err) = run(import(false)).await;
    assert_eq!(code, 0, "{out}{err}");
    let uri = |rkey: &str| format!("at://{DID}/{LIKE_NSID}/{rkey}");
    let uris = || async {
        db.rows("likes", &["uri"])
            .await
            .into_iter()
            .filter_map(|r| r[0].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(uris().await, vec![uri(&ka), uri(&kb), uri(&kc)]);

    // While parity was not listening: b was deleted (the repo is at r2).
    // A live event newer than r2 wrote d, which the PDS does not list yet.
    assert!(pds.delete_record(DID, LIKE_NSID, &kb));
    pds.set_rev(DID, &r2);
    let mut store = open_store(&db).await;
    let mut reg = parity::mapper::Registry::new();
    parity::mapper::builtin::register_all(&mut reg, &parity::mapper::builtin::ALL).unwrap();
    store.prepare(reg.tables(), &[]).await.unwrap();
    let live = |rkey: &str, rev: &str| {
        let ev = parity::event::Event {
            cursor: parity::event::Cursor(1),
            time_us: 1,
            did: Did::parse(DID).unwrap(),
            kind: parity::event::EventKind::Commit(parity::event::Commit {
                collection: parity::event::Nsid::parse(LIKE_NSID).unwrap(),
                rkey: parity::event::RecordKey::parse(rkey).unwrap(),
                rev: rev.to_owned(),
                op: parity::event::CommitOp::Create,
                cid: Some("bafylive".into()),
                record: Some(serde_json::value::RawValue::from_string(like.into()).unwrap()),
            }),
        };
        let parity::mapper::Dispatch::Mutation(m) = reg.dispatch(&ev) else {
            panic!("likes map")
        };
        Batch {
            mutations: vec![m],
            repos: Default::default(),
            last_time_us: 0,
            events: 1,
            checkpoint: Checkpoint::Stream(Vec::new()),
        }
    };
    store.commit(&live(&kd, &r3)).await.unwrap();

    // Re-import one record per page; hold the second page: nothing is
    // removed before the listing is complete.
    let before = pds.count(LIST_RECORDS);
    pds.gate_list_records_after(1);
    let child = importer::spawn(import(true));
    pds.wait_for_list_records(before + 2).await;
    assert_eq!(
        uris().await,
        vec![uri(&ka), uri(&kb), uri(&kc), uri(&kd)],
        "nothing removed mid-listing"
    );
    pds.open_gate();
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        uris().await,
        vec![uri(&ka), uri(&kc), uri(&kd)],
        "b removed; the newer live row kept"
    );
    assert_eq!(
        db.scalar(&format!(
            "SELECT rev FROM parity_tombstones WHERE uri = '{}'",
            uri(&kb)
        ))
        .await,
        Some(r2.clone()),
        "tombstone at the imported rev"
    );
    // A late replay of b's create (rev r1) stays out.
    store.commit(&live(&kb, &r1)).await.unwrap();
    assert_eq!(uris().await, vec![uri(&ka), uri(&kc), uri(&kd)]);
    store.close().await;
}

backend_tests!(
    #[tokio::test(flavor = "multi_thread")]
    reimport_removes_rows_the_repo_no_longer_has,
    |db| reimport_removes_what_is_gone(db)
);
