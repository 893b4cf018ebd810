//! Property test: whatever order creates, updates and deletes arrive in,
//! with duplicates and replays, and however they are cut into batches, the
//! tables end up holding the newest rev of each record (or nothing, when
//! the newest op is a delete). Runs against real SQLite and PostgreSQL.

use crate::common;

use std::collections::BTreeMap;
use std::time::Instant;

use common::TestDb;
use parity::batch::{BatchConfig, Batcher, PurgePolicy};
use parity::event::{
    AccountStatus, Commit, CommitOp, Cursor, Did, Event, EventKind, Nsid, RecordKey,
};
use parity::mapper::{Dispatch, Registry, builtin};
use parity::store::{DatabaseConfig, Store};
use proptest::prelude::*;
use serde_json::value::RawValue;

/// One op in the true history of a record: (rkey index, op, content).
#[derive(Debug, Clone)]
struct Op {
    rkey: usize,
    rev: u32,
    delete: bool,
    content: u8,
}

fn history() -> impl Strategy<Value = Vec<Op>> {
    // Per record: a few ops with strictly increasing revs.
    prop::collection::vec(prop::collection::vec((any::<bool>(), 0u8..3), 1..5), 1..5).prop_map(
        |recs| {
            let mut out = Vec::new();
            let mut rev = 0;
            for (rkey, ops) in recs.into_iter().enumerate() {
                for (delete, content) in ops {
                    rev += 1;
                    out.push(Op {
                        rkey,
                        rev,
                        delete,
                        content,
                    });
                }
            }
            out
        },
    )
}

/// The delivered stream: the history shuffled, with some ops repeated.
fn delivery() -> impl Strategy<Value = (Vec<Op>, Vec<Op>, Vec<usize>)> {
    history()
        .prop_flat_map(|h| {
            let n = h.len();
            (
                Just(h),
                prop::collection::vec(0..n, 0..n + 1),
                prop::collection::vec(1usize..6, 1..10),
            )
        })
        .prop_flat_map(|(h, dups, cuts)| {
            let mut stream = h.clone();
            stream.extend(dups.iter().map(|&i| h[i].clone()));
            (Just(h), Just(stream).prop_shuffle(), Just(cuts))
        })
}

fn record(content: u8) -> String {
    format!(
        r#"{{"$type":"app.bsky.feed.like","createdAt":"2026-07-04T14:38:0{content}.000Z","subject":{{"cid":"bafyc{content}","uri":"at://did:plc:x/app.bsky.feed.post/{content}"}}}}"#
    )
}

fn event(did: &Did, op: &Op, seq: i64) -> Event {
    let rev = format!("3l{:011}", op.rev);
    Event {
        cursor: Cursor(seq),
        time_us: seq,
        did: did.clone(),
        kind: EventKind::Commit(Commit {
            collection: Nsid::parse("app.bsky.feed.like").unwrap(),
            rkey: RecordKey::parse(&format!("r{}", op.rkey)).unwrap(),
            rev,
            op: if op.delete {
                CommitOp::Delete
            } else {
                CommitOp::Update
            },
            cid: (!op.delete).then(|| format!("bafycid{}", op.content)),
            record: (!op.delete).then(|| RawValue::from_string(record(op.content)).unwrap()),
        }),
    }
}

async fn run_case(store: &Store, did: &Did, stream: &[Op], cuts: &[usize]) {
    let mut reg = Registry::new();
    builtin::register_all(&mut reg, &builtin::ALL).unwrap();
    let mut batcher = Batcher::new(
        &BatchConfig {
            max_events: 1_000,
            max_age_ms: 1_000,
        },
        PurgePolicy {
            statuses: vec![AccountStatus::Deleted],
        },
    );
    let mut cut = cuts.iter().cycle();
    let mut left = *cut.next().unwrap();
    for (i, op) in stream.iter().enumerate() {
        let ev = event(did, op, i as i64 + 1);
        batcher.seen("s", ev.cursor, ev.time_us, true, Instant::now());
        let Dispatch::Mutation(m) = reg.dispatch(&ev) else {
            panic!("likes map")
        };
        batcher.push(m);
        left -= 1;
        if left == 0 {
            store.commit(&batcher.take().unwrap()).await.unwrap();
            left = *cut.next().unwrap();
        }
    }
    if let Some(b) = batcher.take() {
        store.commit(&b).await.unwrap();
    }
}

fn expected(did: &Did, history: &[Op]) -> Vec<Vec<Option<String>>> {
    let mut newest: BTreeMap<usize, &Op> = BTreeMap::new();
    for op in history {
        if newest.get(&op.rkey).is_none_or(|o| o.rev < op.rev) {
            newest.insert(op.rkey, op);
        }
    }
    let mut rows: Vec<Vec<Option<String>>> = newest
        .values()
        .filter(|o| !o.delete)
        .map(|o| {
            vec![
                Some(format!("at://{did}/app.bsky.feed.like/r{}", o.rkey)),
                Some(format!("3l{:011}", o.rev)),
                Some(format!("bafycid{}", o.content)),
                Some(record(o.content)),
                Some(format!("bafyc{}", o.content)),
            ]
        })
        .collect();
    rows.sort();
    rows
}

async fn open(db: &TestDb) -> Store {
    let mut store = Store::connect(&DatabaseConfig {
        url: db.url.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let mut reg = Registry::new();
    builtin::register_all(&mut reg, &builtin::ALL).unwrap();
    store
        .prepare(reg.tables(), &[AccountStatus::Deleted])
        .await
        .unwrap();
    store
}

async fn actual(db: &TestDb, did: &Did) -> Vec<Vec<Option<String>>> {
    let all = db
        .rows(
            "likes",
            &["uri", "rev", "cid", "record", "subject_cid", "did"],
        )
        .await;
    all.into_iter()
        .filter(|r| r[5].as_deref() == Some(did.as_str()))
        .map(|mut r| {
            r.truncate(5);
            r
        })
        .collect()
}

fn check(backend: &'static str, cases: u32) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(async {
        if backend == "pg" {
            TestDb::postgres("converge").await
        } else {
            TestDb::sqlite()
        }
    });
    let store = rt.block_on(open(&db));
    let n = std::sync::atomic::AtomicU32::new(0);
    proptest!(ProptestConfig::with_cases(cases), |((history, stream, cuts) in delivery())| {
        // A DID per case keeps cases apart in one database.
        let case = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let did = Did::parse(&format!("did:plc:case{case}")).unwrap();
        let (want, got) = rt.block_on(async {
            run_case(&store, &did, &stream, &cuts).await;
            (expected(&did, &history), actual(&db, &did).await)
        });
        prop_assert_eq!(got, want);
    });
}

#[test]
fn any_order_converges_to_newest_rev_sqlite() {
    check("sqlite", 64);
}

#[test]
fn any_order_converges_to_newest_rev_postgres() {
    check("pg", 48);
}
