//! The change log's write side against real SQLite files and the real
//! PostgreSQL: what a commit appends to `parity_changes` (and what it does
//! not), the replay invariant over random worlds (live events, replays,
//! duplicates, account purges, import pages with sweeps, several writers),
//! `seq` in commit order with several PostgreSQL writers, `feed.tables`,
//! feed off, and the in-process wake.

use crate::common;

use std::collections::BTreeMap;
use std::time::Instant;

use common::TestDb;
use parity::batch::{Batch, BatchConfig, Batcher, PurgePolicy};
use parity::event::{
    AccountStatus, Commit, CommitOp, Cursor, Did, Event, EventKind, Nsid, RecordKey,
};
use parity::mapper::{Dispatch, Registry};
use parity::store::{ChangeLog, DatabaseConfig, Store};
use proptest::prelude::*;
use serde_json::value::RawValue;

/// The tables the built-in mappers write.
pub(crate) const TABLES: [&str; 6] = ["posts", "likes", "reposts", "follows", "blocks", "profiles"];

/// `(table, uri)` → `[did, rkey, cid, rev, record]`.
pub(crate) type Rows = BTreeMap<(String, String), Vec<Option<String>>>;

/// The rows of `tables` as the log describes them.
pub(crate) async fn table_rows(db: &TestDb, tables: &[&str]) -> Rows {
    let mut out = Rows::new();
    for t in tables {
        for mut r in db
            .rows(t, &["uri", "did", "rkey", "cid", "rev", "record"])
            .await
        {
            let uri = r.remove(0).unwrap();
            out.insert(((*t).to_owned(), uri), r);
        }
    }
    out
}

/// One `parity_changes` row: seq, table, op, uri, did, collection, rkey,
/// cid, rev, record, subjects, committed_at.
pub(crate) type LogRow = Vec<Option<String>>;

/// The log after `seq`, in seq order.
pub(crate) async fn log_after(db: &TestDb, seq: i64) -> Vec<LogRow> {
    let cols = [
        "seq",
        "table_name",
        "op",
        "uri",
        "did",
        "collection",
        "rkey",
        "cid",
        "rev",
        "record",
        "subjects",
        "committed_at",
    ];
    let mut rows: Vec<LogRow> = db
        .rows("parity_changes", &cols)
        .await
        .into_iter()
        .filter(|r| seq_of(r) > seq)
        .collect();
    rows.sort_by_key(seq_of);
    rows
}

pub(crate) fn seq_of(r: &LogRow) -> i64 {
    r[0].as_deref().unwrap().parse().unwrap()
}

pub(crate) async fn max_seq(db: &TestDb) -> i64 {
    db.scalar("SELECT CAST(COALESCE(MAX(seq), 0) AS TEXT) FROM parity_changes")
        .await
        .unwrap()
        .parse()
        .unwrap()
}

/// Applies `log` to `rows` (upsert: set the row; delete: remove it),
/// checking each change really changed something: an upsert sets a row
/// that was absent or different, a delete removes a row that was there.
pub(crate) fn replay(mut rows: Rows, log: &[LogRow]) -> Rows {
    let mut last = 0;
    for c in log {
        let seq = seq_of(c);
        assert!(seq > last, "seq {seq} after {last}");
        last = seq;
        let key = (c[1].clone().unwrap(), c[3].clone().unwrap());
        let uri = key.1.clone();
        let did = c[4].clone().unwrap();
        assert_eq!(
            uri,
            format!(
                "at://{did}/{}/{}",
                c[5].as_deref().unwrap(),
                c[6].as_deref().unwrap()
            ),
            "uri, did, collection, rkey agree"
        );
        assert!(c[11].as_deref().is_some_and(|t| t.ends_with('Z')), "{c:?}");
        match c[2].as_deref() {
            Some("upsert") => {
                let row = vec![
                    Some(did),
                    c[6].clone(),
                    c[7].clone(),
                    c[8].clone(),
                    c[9].clone(),
                ];
                let before = rows.insert(key, row.clone());
                assert_ne!(
                    before,
                    Some(row),
                    "seq {seq}: an upsert that changed nothing"
                );
            }
            Some("delete") => {
                assert_eq!(
                    (&c[7], &c[9]),
                    (&None, &None),
                    "a delete has no cid or record"
                );
                assert!(
                    rows.remove(&key).is_some(),
                    "seq {seq}: a delete of a row that was not there ({uri})"
                );
            }
            op => panic!("op {op:?}"),
        }
    }
    rows
}

/// A migrated store writing the built-in tables, purging deleted accounts,
/// with `log` as its change log.
pub(crate) async fn open(db: &TestDb, log: Option<ChangeLog>) -> Store {
    let mut store = Store::connect(&DatabaseConfig {
        url: db.url.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    store
        .prepare(
            crate::convergence::registry().tables(),
            &[AccountStatus::Deleted],
        )
        .await
        .unwrap();
    if let Some(log) = log {
        store.set_change_log(log);
    }
    store
}

pub(crate) fn on() -> Option<ChangeLog> {
    Some(ChangeLog {
        enabled: true,
        tables: vec![],
    })
}

// ---- What a commit appends: one batch per step, each checked exactly. ----

fn did(n: &str) -> Did {
    Did::parse(&format!("did:plc:{n}")).unwrap()
}

/// A TID whose clock is `n`.
fn rev(n: u64) -> String {
    common::pds::tid(1_783_000_000_000_000 + n, 0)
}

fn like_record(content: u8) -> String {
    format!(
        r#"{{"$type":"app.bsky.feed.like","createdAt":"2026-07-04T14:38:0{content}.000Z","subject":{{"cid":"bafyc{content}","uri":"at://did:plc:x/app.bsky.feed.post/{content}"}}}}"#
    )
}

/// A like, or its delete (`content` None).
fn like(d: &str, rkey: &str, rev_n: u64, content: Option<u8>) -> Event {
    commit(
        d,
        "app.bsky.feed.like",
        rkey,
        rev_n,
        content.map(like_record),
    )
}

fn follow(d: &str, rkey: &str, rev_n: u64) -> Event {
    let record = r#"{"$type":"app.bsky.graph.follow","subject":"did:plc:x","createdAt":"2026-07-04T14:38:00.000Z"}"#;
    commit(d, "app.bsky.graph.follow", rkey, rev_n, Some(record.into()))
}

fn commit(d: &str, collection: &str, rkey: &str, rev_n: u64, record: Option<String>) -> Event {
    Event {
        cursor: Cursor(1),
        time_us: 1,
        did: did(d),
        kind: EventKind::Commit(Commit {
            collection: Nsid::parse(collection).unwrap(),
            rkey: RecordKey::parse(rkey).unwrap(),
            rev: rev(rev_n),
            op: if record.is_some() {
                CommitOp::Update
            } else {
                CommitOp::Delete
            },
            cid: record
                .as_ref()
                .map(|r| common::pds::dag_cbor_cid(r.as_bytes())),
            record: record.map(|r| RawValue::from_string(r).unwrap()),
        }),
    }
}

/// What goes into one batch.
enum Item {
    Ev(Event),
    Deleted(&'static str),
}

fn batch(reg: &Registry, items: Vec<Item>) -> Batch {
    let mut b = Batcher::new(
        &BatchConfig::default(),
        PurgePolicy {
            statuses: vec![AccountStatus::Deleted],
        },
    );
    for (i, item) in items.into_iter().enumerate() {
        b.seen("s", Cursor(i as i64 + 1), 1, true, Instant::now());
        match item {
            Item::Ev(ev) => {
                let Dispatch::Mutation(m) = reg.dispatch(&ev) else {
                    panic!("mapped")
                };
                b.push(m);
            }
            Item::Deleted(d) => {
                b.account(&did(d), false, Some(AccountStatus::Deleted));
            }
        }
    }
    b.take().unwrap()
}

/// `(table, op, uri, rev)` of each change after `seq`.
async fn ops_after(db: &TestDb, seq: i64) -> Vec<(String, String, String, Option<String>)> {
    log_after(db, seq)
        .await
        .into_iter()
        .map(|r| {
            (
                r[1].clone().unwrap(),
                r[2].clone().unwrap(),
                r[3].clone().unwrap(),
                r[8].clone(),
            )
        })
        .collect()
}

fn uri(d: &str, collection: &str, rkey: &str) -> String {
    format!("at://did:plc:{d}/{collection}/{rkey}")
}

const LIKE: &str = "app.bsky.feed.like";

async fn only_real_changes_are_logged(db: TestDb) {
    let store = open(&db, on()).await;
    let reg = crate::convergence::registry();
    let mut wake = store.change_signal();
    let like_a1 = uri("a", LIKE, "k1");
    let like_a2 = uri("a", LIKE, "k2");
    let up = |u: &str, r: u64| {
        (
            "likes".to_owned(),
            "upsert".to_owned(),
            u.to_owned(),
            Some(rev(r)),
        )
    };
    let del = |u: &str, r: Option<u64>| {
        (
            "likes".to_owned(),
            "delete".to_owned(),
            u.to_owned(),
            r.map(rev),
        )
    };

    // Two inserts, in batch order.
    let b = batch(
        &reg,
        vec![
            Item::Ev(like("a", "k1", 10, Some(1))),
            Item::Ev(like("a", "k2", 10, Some(2))),
        ],
    );
    let stats = store.commit(&b).await.unwrap();
    assert_eq!(
        ops_after(&db, 0).await,
        [up(&like_a1, 10), up(&like_a2, 10)]
    );
    let seq = max_seq(&db).await;
    assert_eq!(stats.last_seq, Some(seq));
    assert_eq!(stats.logged_upserts, [("likes".to_owned(), 2)]);
    assert!(wake.has_changed().unwrap());
    assert_eq!(*wake.borrow_and_update(), seq);
    let first = log_after(&db, 0).await;
    assert_eq!(first[0][5].as_deref(), Some(LIKE));
    assert_eq!(first[0][6].as_deref(), Some("k1"));
    assert_eq!(first[0][9].as_deref(), Some(like_record(1).as_str()));
    assert_eq!(
        first[0][10].as_deref(),
        Some(r#"["at://did:plc:x/app.bsky.feed.post/1"]"#)
    );

    // Refused by the guards or changing nothing: a duplicate, an older rev,
    // a delete of a missing row, a delete older than the row.
    for items in [
        vec![Item::Ev(like("a", "k1", 10, Some(1)))],
        vec![Item::Ev(like("a", "k1", 9, Some(3)))],
        vec![Item::Ev(like("a", "k9", 11, None))],
        vec![Item::Ev(like("a", "k2", 9, None))],
    ] {
        let stats = store.commit(&batch(&reg, items)).await.unwrap();
        assert_eq!(stats.last_seq, None);
        assert!(stats.logged_upserts.is_empty() && stats.logged_deletes.is_empty());
    }
    assert_eq!(max_seq(&db).await, seq);
    assert!(!wake.has_changed().unwrap(), "no change, no wake");
    assert_eq!(db.count("likes").await, 2);

    // A newer rev rewrites the row; a delete removes one, with the removed
    // row's subjects and the delete's rev.
    let b = batch(&reg, vec![Item::Ev(like("a", "k1", 12, Some(3)))]);
    store.commit(&b).await.unwrap();
    let b = batch(&reg, vec![Item::Ev(like("a", "k1", 13, None))]);
    let stats = store.commit(&b).await.unwrap();
    assert_eq!(stats.logged_deletes, [("likes".to_owned(), 1)]);
    let after = log_after(&db, seq).await;
    assert_eq!(
        ops_after(&db, seq).await,
        [up(&like_a1, 12), del(&like_a1, Some(13))]
    );
    assert_eq!(
        after[1][10].as_deref(),
        Some(r#"["at://did:plc:x/app.bsky.feed.post/3"]"#)
    );
    assert_eq!(*wake.borrow_and_update(), seq_of(&after[1]));

    // An account purge: its rows go (no rev), and a later write of the DID
    // in the same batch is refused by the status guard.
    let seq = max_seq(&db).await;
    let b = batch(
        &reg,
        vec![
            Item::Ev(follow("b", "f1", 20)),
            Item::Deleted("a"),
            Item::Ev(like("a", "k3", 21, Some(4))),
        ],
    );
    store.commit(&b).await.unwrap();
    let ops = ops_after(&db, seq).await;
    assert_eq!(
        ops,
        [
            del(&like_a2, None),
            (
                "follows".to_owned(),
                "upsert".to_owned(),
                uri("b", "app.bsky.graph.follow", "f1"),
                Some(rev(20))
            )
        ]
    );
    // Every change replayed onto the empty tables gives the tables.
    assert_eq!(
        replay(Rows::new(), &log_after(&db, 0).await),
        table_rows(&db, &TABLES).await
    );
}

backend_tests!(only_real_changes_are_logged, |db| {
    only_real_changes_are_logged(db)
});

/// The log holds the record exactly as committed, whatever bytes it holds
/// that an encoding step between parity and the database could mangle (a
/// text format such as COPY's gives backslash, tab, newline and carriage
/// return a meaning): raw whitespace between tokens, escapes inside
/// strings, a literal `\N`, and text beyond ASCII.
async fn records_are_logged_byte_for_byte(db: TestDb) {
    let store = open(&db, on()).await;
    let reg = crate::convergence::registry();
    let record = "{\"$type\":\"app.bsky.feed.like\",\r\n\t\"createdAt\":\"2026-07-04T14:38:00.000Z\",\n  \
        \"note\":\"tab\\there, line\\nbreak, \\\"quoted\\\", back\\\\slash, \\\\N, é 🦋\",\t\
        \"subject\":{\"cid\":\"bafyc1\",\"uri\":\"at://did:plc:x/app.bsky.feed.post/1\"}\r\n}";
    let b = batch(
        &reg,
        vec![Item::Ev(commit(
            "a",
            LIKE,
            "k1",
            1,
            Some(record.to_owned()),
        ))],
    );
    store.commit(&b).await.unwrap();
    let log = log_after(&db, 0).await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0][9].as_deref(), Some(record));
    assert_eq!(
        log[0][10].as_deref(),
        Some(r#"["at://did:plc:x/app.bsky.feed.post/1"]"#)
    );
    let rows = table_rows(&db, &["likes"]).await;
    let stored = &rows[&("likes".to_owned(), uri("a", LIKE, "k1"))];
    assert_eq!(stored[4].as_deref(), Some(record));
    assert_eq!(replay(Rows::new(), &log), rows);
}

backend_tests!(records_are_logged_byte_for_byte, |db| {
    records_are_logged_byte_for_byte(db)
});

/// `feed.tables` limits the log; a store with the feed off writes nothing
/// to it (and wakes nobody).
async fn tables_filter_and_feed_off(db: TestDb) {
    let reg = crate::convergence::registry();
    let off = open(&db, None).await;
    let wake = off.change_signal();
    let b = batch(
        &reg,
        vec![
            Item::Ev(like("a", "k1", 10, Some(1))),
            Item::Ev(follow("a", "f1", 10)),
        ],
    );
    let stats = off.commit(&b).await.unwrap();
    assert_eq!(stats.upserted_total(), 2);
    assert_eq!(stats.last_seq, None);
    assert_eq!(db.count("parity_changes").await, 0);
    assert!(!wake.has_changed().unwrap());
    off.close().await;

    let likes_only = open(
        &db,
        Some(ChangeLog {
            enabled: true,
            tables: vec!["likes".into()],
        }),
    )
    .await;
    let b = batch(
        &reg,
        vec![
            Item::Ev(like("a", "k2", 11, Some(1))),
            Item::Ev(follow("a", "f2", 11)),
            Item::Ev(follow("a", "f1", 11)),
        ],
    );
    likes_only.commit(&b).await.unwrap();
    likes_only
        .commit(&batch(&reg, vec![Item::Deleted("a")]))
        .await
        .unwrap();
    let ops: Vec<(String, String)> = ops_after(&db, 0)
        .await
        .into_iter()
        .map(|(t, op, _, _)| (t, op))
        .collect();
    // The purge removed two likes and two follows; only the likes show.
    let likes = |op: &str| ("likes".to_owned(), op.to_owned());
    assert_eq!(ops, [likes("upsert"), likes("delete"), likes("delete")]);
    assert_eq!(db.count("follows").await, 0);
}

backend_tests!(feed_tables_limit_the_log_and_off_writes_nothing, |db| {
    tables_filter_and_feed_off(db)
});

// ---- The replay invariant over random worlds. ----

fn check_replay(backend: &'static str, cases: u32, writers: u32) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(async {
        if backend == "pg" {
            TestDb::postgres("feed_replay").await
        } else {
            TestDb::sqlite()
        }
    });
    let store = rt.block_on(open(&db, on()));
    let n = std::sync::atomic::AtomicU32::new(0);
    let logged = std::sync::atomic::AtomicUsize::new(0);
    proptest!(ProptestConfig::with_cases(cases), |(w in crate::convergence::world())| {
        let case = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dids: Vec<Did> = (0..crate::convergence::DIDS)
            .map(|d| Did::parse(&format!("did:plc:replay{case}d{d}")).unwrap())
            .collect();
        let (before, log, now) = rt.block_on(async {
            let before = table_rows(&db, &TABLES).await;
            let seq = max_seq(&db).await;
            crate::convergence::run_world(&store, &dids, &w, writers).await;
            (before, log_after(&db, seq).await, table_rows(&db, &TABLES).await)
        });
        logged.fetch_add(log.len(), std::sync::atomic::Ordering::Relaxed);
        prop_assert_eq!(replay(before, &log), now);
    });
    // The worlds did change things (the property is not vacuous).
    assert!(logged.into_inner() > cases as usize, "changes logged");
}

#[test]
fn replaying_the_log_gives_the_tables_sqlite() {
    check_replay("sqlite", 48, 1);
}

#[test]
fn replaying_the_log_gives_the_tables_postgres() {
    check_replay("pg", 32, 1);
}

#[test]
fn replaying_the_log_of_several_writers_gives_the_tables_postgres() {
    check_replay("pg", 24, 3);
}

#[test]
fn replaying_the_log_of_several_writers_gives_the_tables_sqlite() {
    check_replay("sqlite", 16, 3);
}

// ---- seq in commit order with several PostgreSQL writers. ----

/// Makes each commit of `did:plc:w0` slow after appending (30 ms per
/// appended row whose rkey ends in `x0`; PostgreSQL).
async fn slow_trigger(db: &TestDb) {
    db.exec(
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_sleep(0.03); RETURN NULL; END $$",
    )
    .await;
    db.exec(
        "CREATE TRIGGER slow AFTER INSERT ON parity_changes FOR EACH ROW \
         WHEN (NEW.did = 'did:plc:w0' AND NEW.rkey LIKE '%x0') EXECUTE FUNCTION slow()",
    )
    .await;
}

/// Four writers commit concurrently (each its own DIDs, as `consume`'s
/// writers do), one of them slow to commit after appending, while a reader
/// tails the log after the last seq it saw, as the feed does: the reader
/// must see every change. A seq taken before another transaction's higher
/// one but committed after it would be skipped.
async fn concurrent_writers(db: TestDb) {
    const WRITERS: usize = 4;
    const BATCHES: usize = 40;
    const ROWS: usize = 25;
    let store = open(&db, on()).await;
    // One writer's commits are slow between appending and committing (a
    // trigger of the operator's, a slow disk): others commit meanwhile.
    // (SQLite's one writer thread commits one batch at a time anyway.)
    if db.is_pg() {
        slow_trigger(&db).await;
    }
    let reg = crate::convergence::registry();
    let done = tokio_util::sync::CancellationToken::new();
    let reader = {
        let store = store.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut seen: Vec<i64> = Vec::new();
            loop {
                let finished = done.is_cancelled();
                let after = seen.last().copied().unwrap_or(0);
                let rows = store.changes_after(after, 10_000).await.unwrap();
                seen.extend(rows.iter().map(|r| r.seq));
                if finished && rows.is_empty() {
                    return seen;
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        let batches: Vec<Batch> = (0..BATCHES)
            .map(|b| {
                let items = (0..ROWS)
                    .map(|r| {
                        Item::Ev(like(
                            &format!("w{w}"),
                            &format!("k{b}x{r}"),
                            10 + b as u64,
                            Some(1),
                        ))
                    })
                    .collect();
                // Each writer its own stream (processes on different
                // sources, or imports): no cursor row orders them.
                let mut one = batch(&reg, items);
                one.checkpoint =
                    parity::batch::Checkpoint::Stream(vec![(format!("s{w}"), Cursor(b as i64))]);
                one
            })
            .collect();
        writers.push(tokio::spawn(async move {
            for b in batches {
                store.commit(&b).await.unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    done.cancel();
    let seen = reader.await.unwrap();
    let all: Vec<i64> = log_after(&db, 0).await.iter().map(seq_of).collect();
    assert_eq!(all.len(), WRITERS * BATCHES * ROWS);
    let missed: Vec<&i64> = all.iter().filter(|s| !seen.contains(s)).collect();
    assert!(missed.is_empty(), "the tailing reader missed {missed:?}");
    assert_eq!(seen, all, "in seq order, each once");
}

backend_tests!(
    a_reader_after_the_last_seq_misses_nothing_with_concurrent_writers,
    |db| concurrent_writers(db)
);

/// Commits that could not all succeed together stay apart: a rolled-back
/// commit (a lost import lease) appends nothing.
async fn a_rolled_back_commit_appends_nothing(db: TestDb) {
    let store = open(&db, on()).await;
    let reg = crate::convergence::registry();
    store
        .enqueue_imports("did:plc:a", &[LIKE.to_owned()], false)
        .await
        .unwrap();
    let until = chrono::Utc::now() + chrono::Duration::minutes(5);
    let state = store
        .claim_import("did:plc:a", LIKE, "me", until, None)
        .await
        .unwrap()
        .unwrap();
    let mut b = batch(&reg, vec![Item::Ev(like("a", "k1", 10, Some(1)))]);
    b.checkpoint = parity::batch::Checkpoint::ImportPage(parity::batch::ImportPage {
        state_id: state.id,
        owner: "thief".into(),
        cursor: None,
        rev: "3a".into(),
        last: true,
        failed: 0,
        lease_until: parity::mapper::table::timestamp_text(&until),
        sweep: None,
    });
    assert!(store.commit(&b).await.is_err());
    assert_eq!(db.count("parity_changes").await, 0);
    assert_eq!(db.count("likes").await, 0);
}

backend_tests!(a_rolled_back_commit_appends_nothing, |db| {
    a_rolled_back_commit_appends_nothing(db)
});

// ---- End to end: `parity consume` fills the log, a feed client gets it. ----

/// The real `parity consume` with the feed on, from the local Jetstream
/// server, while a WebSocket client of the feed server (in this process,
/// reading the same database) is subscribed to `all` from the start: the
/// client receives exactly the log, the log replayed onto the empty tables
/// is the tables, and `parity_feed_changes_total` counts it per table and
/// op.
async fn consume_fills_the_log_and_a_client_receives_it(db: TestDb) {
    use common::jetstream::{JetstreamServer, Line};
    use common::process::{Parity, scrape};
    let lines = common::fixture_lines(common::RELAY_JSONL);
    let server = JetstreamServer::start(lines.iter().map(|l| Line::new(l)).collect()).await;
    let last = common::last_time_us(&server.lines());
    let endpoint = server.url();
    let (mut parity, _cfg) = Parity::consume(
        &format!(
            "[source]\nendpoints = [\"{endpoint}\"]\nbackoff_initial_ms = 20\n\
             [batch]\nmax_age_ms = 20\n[log]\nprogress_interval_seconds = 0\n\
             [feed]\nenabled = true\naddr = \"off\"\n"
        ),
        &db.url,
    );
    let addr = parity.metrics_addr().await;
    server.wait_connections(1).await;
    let feed = crate::feed::start(&db, |_| {}).await;
    let mut ws = crate::feed::ws(&feed).await;
    crate::feed::send(
        &mut ws,
        serde_json::json!({"op": "subscribe", "channels": ["all"], "cursor": 0}),
    )
    .await;
    server.publish_all();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while db.cursor().await != Some(last) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "consumed to the end"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let log = log_after(&db, 0).await;
    assert!(
        log.len() > 10,
        "the relay stream changes rows: {}",
        log.len()
    );
    let mut received = Vec::new();
    while received.len() < log.len() {
        let msg = crate::feed::next_json(&mut ws).await;
        if msg["seq"].is_i64() {
            received.push(msg);
        }
    }
    for (msg, row) in received.iter().zip(&log) {
        assert_eq!(msg["seq"].as_i64(), Some(seq_of(row)));
        assert_eq!(msg["uri"].as_str(), row[3].as_deref());
        assert_eq!(msg["op"].as_str(), row[2].as_deref());
        assert_eq!(msg["channel"], "all");
    }
    assert_eq!(
        replay(Rows::new(), &log),
        table_rows(&db, &TABLES).await,
        "the log from the start replays to the tables"
    );
    let mut counts: BTreeMap<(String, String), f64> = BTreeMap::new();
    for r in &log {
        *counts
            .entry((r[1].clone().unwrap(), r[2].clone().unwrap()))
            .or_default() += 1.0;
    }
    let m = scrape(addr).await;
    for ((table, op), n) in &counts {
        assert_eq!(
            m.find("parity_feed_changes_total", &[("table", table), ("op", op)]),
            Some(*n),
            "{table} {op}"
        );
    }
    assert_eq!(m.sum("parity_feed_changes_total"), log.len() as f64);
    parity.stop();
}

backend_tests!(consume_fills_the_log_and_a_client_receives_it, |db| {
    consume_fills_the_log_and_a_client_receives_it(db)
});

// ---- Imports append through the same commit path. ----

/// `parity import` (listRecords), then, after two records were deleted
/// upstream and the repo moved on, a whole-repo re-import (`getRepo`) with
/// its sweep: each run appends exactly what it changed (the first every
/// row, the second every row at the new rev and a delete, at that rev, of
/// each removed row), and the log replays onto the tables as they were.
async fn imports_append_what_they_change(db: TestDb) {
    use common::importer::{parity, run};
    use common::pds::{Pds, tid};
    let pds = Pds::start().await;
    let a = pds.add_car(common::fixture("car/repostream_little.car"));
    let mut cmd = parity(&db, &pds, &["import", &a.did]);
    cmd.env("PARITY_FEED_ENABLED", "true");
    let (code, out, err) = run(cmd).await;
    assert_eq!(code, 0, "{out}{err}");
    let log = log_after(&db, 0).await;
    let tables = table_rows(&db, &TABLES).await;
    assert!(!tables.is_empty());
    assert_eq!(log.len(), tables.len(), "one upsert per imported row");
    assert!(log.iter().all(|r| r[2].as_deref() == Some("upsert")));
    assert_eq!(replay(Rows::new(), &log), tables);

    let gone: Vec<_> = pds
        .records(&a.did)
        .into_iter()
        .filter(|r| r.collection == "app.bsky.feed.post")
        .take(2)
        .collect();
    assert_eq!(gone.len(), 2);
    for r in &gone {
        assert!(pds.delete_record(&a.did, &r.collection, &r.rkey));
    }
    let new_rev = tid(1_900_000_000_000_000, 1);
    pds.set_rev(&a.did, &new_rev);
    let seq = max_seq(&db).await;
    let mut cmd = parity(&db, &pds, &["import", &a.did, "--force"]);
    cmd.env("PARITY_FEED_ENABLED", "true")
        .env("PARITY_IMPORT_METHOD", "getrepo");
    let (code, out, err) = run(cmd).await;
    assert_eq!(code, 0, "{out}{err}");
    let second = log_after(&db, seq).await;
    let now = table_rows(&db, &TABLES).await;
    assert_eq!(replay(tables, &second), now);
    let mut deleted: Vec<(String, Option<String>)> = second
        .iter()
        .filter(|r| r[2].as_deref() == Some("delete"))
        .map(|r| (r[3].clone().unwrap(), r[8].clone()))
        .collect();
    deleted.sort();
    let mut want: Vec<(String, Option<String>)> = gone
        .iter()
        .map(|r| {
            (
                format!("at://{}/{}/{}", a.did, r.collection, r.rkey),
                Some(new_rev.clone()),
            )
        })
        .collect();
    want.sort();
    assert_eq!(deleted, want, "the sweep's removals, at the snapshot's rev");
    assert_eq!(
        second.len(),
        now.len() + 2,
        "every row at the new rev, and the two removals"
    );
}

backend_tests!(imports_append_what_they_change, |db| {
    imports_append_what_they_change(db)
});

// ---- Publish write-backs append through the same commit path. ----

/// `parity publish` against the reference PDS with the feed on: each
/// write-back (`Checkpoint::Publish`) appends the rows it applied locally,
/// a create as an upsert and a delete as a delete of the row it removed.
async fn publish_write_backs_append(db: TestDb) {
    use common::process::{Parity, tokio_command};
    let net = testnet::refpds::RefPds::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("parity.toml");
    std::fs::write(
        &cfg,
        format!(
            "[database]\nurl = \"{}\"\n\n[identity]\nplc_url = \"{}\"\nallow_private_addresses = true\n\n\
             [auth]\nkey_file = \"{}\"\n\n[publish]\npoll_interval_ms = 50\n\n[metrics]\naddr = \"off\"\n\n\
             [feed]\nenabled = true\naddr = \"off\"\n",
            db.url,
            net.plc,
            dir.path().join("auth.key").display()
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap().to_owned();
    let alice = net.create_account("alice").await;
    let pw = net.create_app_password(&alice, "parity").await;
    let login = tokio_command()
        .args(["--config", &cfg, "auth", "login", &alice.did])
        .env("PARITY_APP_PASSWORD", &pw)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(login.status.success(), "{login:?}");
    open(&db, None).await.close().await;
    let post = |text: &str| {
        serde_json::json!({"$type": "app.bsky.feed.post", "text": text, "createdAt": "2026-12-01T10:00:00.000Z"})
            .to_string()
    };
    let enqueue = |rkey: &str, op: &str, record: Option<String>| {
        format!(
            "INSERT INTO parity_outbox (did, collection, rkey, op, record) VALUES ('{}', 'app.bsky.feed.post', '{rkey}', '{op}', {})",
            alice.did,
            record.map_or("NULL".to_owned(), |r| format!("'{r}'"))
        )
    };
    db.exec(&enqueue("3kzzaaaaaaaa2", "create", Some(post("one"))))
        .await;
    db.exec(&enqueue("3kzzaaaaaaab2", "create", Some(post("two"))))
        .await;
    let publisher = Parity::spawn(&["--config", &cfg, "publish"]);
    let published = |n: i64| {
        let db = &db;
        async move {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(90);
            loop {
                let got: i64 = db
                    .scalar("SELECT CAST(COUNT(*) AS TEXT) FROM parity_outbox WHERE status = 'published'")
                    .await
                    .unwrap()
                    .parse()
                    .unwrap();
                if got == n {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "published {got} of {n}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    published(2).await;
    let log = log_after(&db, 0).await;
    let uri = |rkey: &str| format!("at://{}/app.bsky.feed.post/{rkey}", alice.did);
    let ops: Vec<(Option<String>, Option<String>)> =
        log.iter().map(|r| (r[2].clone(), r[3].clone())).collect();
    let mut want = vec![
        (Some("upsert".to_owned()), Some(uri("3kzzaaaaaaaa2"))),
        (Some("upsert".to_owned()), Some(uri("3kzzaaaaaaab2"))),
    ];
    let mut sorted = ops.clone();
    sorted.sort();
    want.sort();
    assert_eq!(sorted, want);

    db.exec(&enqueue("3kzzaaaaaaaa2", "delete", None)).await;
    published(3).await;
    let seq = log.iter().map(seq_of).max().unwrap();
    let after = log_after(&db, seq).await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0][2].as_deref(), Some("delete"));
    assert_eq!(after[0][3], Some(uri("3kzzaaaaaaaa2")));
    assert_eq!(
        replay(Rows::new(), &log_after(&db, 0).await),
        table_rows(&db, &TABLES).await
    );
    publisher.stop();
}

backend_tests!(publish_write_backs_append, |db| publish_write_backs_append(
    db
));

/// A batch the database refuses (an operator's trigger refusing one like)
/// is committed without the refused record by the quarantine: the log
/// holds only what that commit kept, and readers are woken.
async fn quarantined(db: TestDb) {
    let store = open(&db, on()).await;
    let ddl: &[&str] = if db.is_pg() {
        &[
            "CREATE FUNCTION refuse_like() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF NEW.subject_cid = 'refused' THEN RAISE EXCEPTION 'like refused by policy'; END IF; \
             RETURN NEW; END $$",
            "CREATE TRIGGER refuse_like BEFORE INSERT OR UPDATE ON likes \
             FOR EACH ROW EXECUTE FUNCTION refuse_like()",
        ]
    } else {
        &[
            "CREATE TRIGGER refuse_like BEFORE INSERT ON likes WHEN NEW.subject_cid = 'refused' \
           BEGIN SELECT RAISE(ABORT, 'like refused by policy'); END",
        ]
    };
    for sql in ddl {
        db.exec(sql).await;
    }
    let mut wake = store.change_signal();
    let reg = crate::convergence::registry();
    let refused = r#"{"$type":"app.bsky.feed.like","createdAt":"2026-07-04T14:38:07.513Z","subject":{"cid":"refused","uri":"at://did:plc:b/app.bsky.feed.post/1"}}"#;
    let b = batch(
        &reg,
        vec![
            Item::Ev(like("a", "k1", 10, Some(1))),
            Item::Ev(commit("b", LIKE, "k2", 10, Some(refused.into()))),
        ],
    );
    let err = store.commit(&b).await.unwrap_err();
    assert!(err.is_rejection(), "{err}");
    assert_eq!(db.count("parity_changes").await, 0);
    let q = store.quarantine(&b, err).await.unwrap();
    assert_eq!(q.rejected.len(), 1);
    assert_eq!(
        ops_after(&db, 0).await,
        [(
            "likes".to_owned(),
            "upsert".to_owned(),
            uri("a", LIKE, "k1"),
            Some(rev(10))
        )]
    );
    assert!(wake.has_changed().unwrap());
    assert_eq!(*wake.borrow_and_update(), max_seq(&db).await);
}

backend_tests!(a_quarantined_batch_logs_what_it_kept, |db| quarantined(db));
