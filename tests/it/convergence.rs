//! Property tests, against real SQLite and PostgreSQL.
//!
//! 1. Whatever order creates, updates and deletes arrive in, with
//!    duplicates and replays, and however they are cut into batches, the
//!    tables end up holding the newest rev of each record (or nothing, when
//!    the newest op is a delete).
//! 2. Several DIDs at once: live commits (some never delivered), account
//!    deletions, and import runs (listings of the repo at some rev, in
//!    pages, the last one sweeping what the repo no longer has) interleaved
//!    in any order end in the model's state: a deleted account has no rows;
//!    every other record holds its newest op, at the newest imported rev
//!    when an import listed it after that op.

use crate::common;

use std::collections::BTreeMap;
use std::time::Instant;

use common::TestDb;
use parity::batch::{BatchConfig, Batcher, PurgePolicy};
use parity::event::{
    AccountStatus, Commit, CommitOp, Cursor, Did, Event, EventKind, Nsid, RecordKey,
};
use parity::mapper::{Dispatch, Registry, builtin};
use parity::store::{DatabaseConfig, Store, shard};
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
    let rev = rev_text(op.rev);
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
            cid: (!op.delete).then(|| cid_text(op.content)),
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
                Some(rev_text(o.rev)),
                Some(cid_text(o.content)),
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

// ---- Several DIDs: account events and import pages interleaved with live
// events, some of which never arrive (a later import covers them). ----

/// DIDs per case.
pub(crate) const DIDS: usize = 3;

/// One live event: a commit op of a DID (by index), or that DID's account
/// being deleted.
#[derive(Debug, Clone)]
enum Live {
    Commit(usize, Op),
    Deleted(usize),
}

/// A generated world: per DID its true history, whether its account gets
/// deleted, and the repo states (history prefix lengths) it is imported
/// at, in run order; the live delivery; and how steps interleave.
#[derive(Debug, Clone)]
pub(crate) struct World {
    histories: Vec<Vec<Op>>,
    deleted: Vec<bool>,
    imports: Vec<Vec<usize>>,
    page_size: usize,
    live: Vec<Live>,
    cuts: Vec<usize>,
    choices: Vec<prop::sample::Index>,
}

pub(crate) fn world() -> impl Strategy<Value = World> {
    (
        prop::collection::vec(history(), DIDS),
        prop::collection::vec(prop::bool::weighted(0.3), DIDS),
        prop::collection::vec(
            prop::collection::vec(any::<prop::sample::Index>(), 0..3),
            DIDS,
        ),
        1usize..4,
        prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        prop::collection::vec(1usize..6, 1..10),
        prop::collection::vec(any::<prop::sample::Index>(), 0..80),
        prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    )
        .prop_flat_map(
            |(histories, deleted, import_at, page_size, dups, cuts, choices, lost)| {
                let imports: Vec<Vec<usize>> = import_at
                    .iter()
                    .zip(&histories)
                    .map(|(at, h)| at.iter().map(|i| i.index(h.len()) + 1).collect())
                    .collect();
                // Ops a later import covers may never arrive live (parity was
                // not listening): the import must make up for them.
                let covered: Vec<(usize, u32, bool)> = histories
                    .iter()
                    .enumerate()
                    .flat_map(|(d, h)| {
                        let upto = imports[d].iter().map(|&k| h[k - 1].rev).max().unwrap_or(0);
                        h.iter()
                            .filter(move |op| op.rev <= upto)
                            .map(move |op| (d, op.rev, op.delete))
                    })
                    .collect();
                // Every other pick is a delete when there is one: a lost
                // delete is what only the sweep can make up for.
                let deletes: Vec<(usize, u32, bool)> =
                    covered.iter().copied().filter(|c| c.2).collect();
                let lost: Vec<(usize, u32)> = lost
                    .iter()
                    .enumerate()
                    .filter_map(|(n, i)| {
                        let from = if n % 2 == 0 && !deletes.is_empty() {
                            &deletes
                        } else {
                            &covered
                        };
                        (!from.is_empty()).then(|| {
                            let c = from[i.index(from.len())];
                            (c.0, c.1)
                        })
                    })
                    .collect();
                let mut live: Vec<Live> = Vec::new();
                for (d, h) in histories.iter().enumerate() {
                    live.extend(
                        h.iter()
                            .filter(|op| !lost.contains(&(d, op.rev)))
                            .map(|op| Live::Commit(d, op.clone())),
                    );
                    if deleted[d] {
                        live.push(Live::Deleted(d));
                    }
                }
                let n = live.len();
                let extra: Vec<Live> = if n == 0 {
                    Vec::new()
                } else {
                    dups.iter().map(|i| live[i.index(n)].clone()).collect()
                };
                live.extend(extra);
                (
                    Just((histories, deleted, imports, page_size, cuts, choices)),
                    Just(live).prop_shuffle(),
                )
            },
        )
        .prop_map(
            |((histories, deleted, imports, page_size, cuts, choices), live)| World {
                histories,
                deleted,
                imports,
                page_size,
                live,
                cuts,
                choices,
            },
        )
}

/// A real TID whose clock is `rev`: TIDs sort as the numbers do.
fn rev_text(rev: u32) -> String {
    common::pds::tid(1_783_000_000_000_000 + u64::from(rev), 0)
}

/// The number [`rev_text`] made this TID from.
fn rev_number(tid: &str) -> u32 {
    const ALPHABET: &[u8] = b"234567abcdefghijklmnopqrstuvwxyz";
    let v = tid.bytes().fold(0u64, |v, c| {
        (v << 5) | ALPHABET.iter().position(|&a| a == c).unwrap() as u64
    });
    u32::try_from((v >> 10) - 1_783_000_000_000_000).unwrap()
}

/// A real CID for the record with this content number.
fn cid_text(content: impl std::fmt::Display) -> String {
    common::pds::dag_cbor_cid(format!("record {content}").as_bytes())
}

/// The repo after the first `k` ops: each live record's newest op.
fn snapshot(history: &[Op], k: usize) -> BTreeMap<usize, &Op> {
    let mut last: BTreeMap<usize, &Op> = BTreeMap::new();
    for op in &history[..k] {
        last.insert(op.rkey, op);
    }
    last.retain(|_, op| !op.delete);
    last
}

/// The live events cut into batches, as `parity consume` commits them,
/// each with the `(DID index, rev)` of its commits.
fn live_batches(
    dids: &[Did],
    w: &World,
    reg: &Registry,
) -> Vec<(parity::batch::Batch, Vec<(usize, u32)>)> {
    let mut batcher = Batcher::new(
        &BatchConfig {
            max_events: 1_000,
            max_age_ms: 1_000,
        },
        PurgePolicy {
            statuses: vec![AccountStatus::Deleted],
        },
    );
    let mut out = Vec::new();
    let mut cut = w.cuts.iter().cycle();
    let mut left = *cut.next().unwrap();
    let mut ops = Vec::new();
    for (i, item) in w.live.iter().enumerate() {
        let seq = i as i64 + 1;
        batcher.seen("s", Cursor(seq), seq, true, Instant::now());
        match item {
            Live::Commit(d, op) => {
                let Dispatch::Mutation(m) = reg.dispatch(&event(&dids[*d], op, seq)) else {
                    panic!("likes map")
                };
                batcher.push(m);
                ops.push((*d, op.rev));
            }
            Live::Deleted(d) => {
                batcher.account(&dids[*d], false, Some(AccountStatus::Deleted));
            }
        }
        left -= 1;
        if left == 0 {
            out.push((batcher.take().unwrap(), std::mem::take(&mut ops)));
            left = *cut.next().unwrap();
        }
    }
    out.extend(batcher.take().map(|b| (b, ops)));
    out
}

/// One import run of a DID at history prefix `k`: its listing's pages
/// (records, next cursor), rkey descending as the reference PDS lists.
struct ImportRun {
    did: usize,
    rev: String,
    pages: Vec<Vec<(usize, &'static str, u8)>>,
}

fn import_runs(w: &World) -> Vec<Vec<ImportRun>> {
    (0..DIDS)
        .map(|d| {
            w.imports[d]
                .iter()
                .map(|&k| {
                    let h = &w.histories[d];
                    let snap = snapshot(h, k);
                    let listed: Vec<(usize, &'static str, u8)> = snap
                        .iter()
                        .rev()
                        .map(|(rkey, op)| (*rkey, "", op.content))
                        .collect();
                    let mut pages: Vec<Vec<_>> =
                        listed.chunks(w.page_size).map(|c| c.to_vec()).collect();
                    if pages.is_empty() {
                        pages.push(Vec::new());
                    }
                    ImportRun {
                        did: d,
                        rev: rev_text(h[k - 1].rev),
                        pages,
                    }
                })
                .collect()
        })
        .collect()
}

/// Commits page `p` of `run` (claiming the pair first on page 0, finishing
/// it after the last), as the importer does; the last page of the listing
/// carries the sweep.
async fn import_page(store: &Store, reg: &Registry, dids: &[Did], run: &ImportRun, p: usize) {
    use parity::import::lease::Lease;
    use parity::import::page::{self, Listed, PageOf};
    let did = &dids[run.did];
    let like = Nsid::parse("app.bsky.feed.like").unwrap();
    let lease = Lease::with_owner("h:1:0".into(), std::time::Duration::from_secs(3_600));
    let collections = [like.as_str().to_owned()];
    if p == 0 {
        store
            .enqueue_imports(did.as_str(), &collections, true)
            .await
            .unwrap();
    }
    let state = store
        .claim_import(did.as_str(), like.as_str(), "h:1:0", lease.until(), None)
        .await
        .unwrap()
        .or(store
            .import_states(Some(did.as_str()), parity::store::StatusFilter::All, 1)
            .await
            .unwrap()
            .into_iter()
            .next())
        .unwrap();
    let records: Vec<Listed> = run.pages[p]
        .iter()
        .map(|(rkey, _, content)| Listed {
            uri: format!("at://{did}/{like}/r{rkey}"),
            cid: cid_text(content),
            value: RawValue::from_string(record(*content)).unwrap(),
        })
        .collect();
    let last = p + 1 == run.pages.len();
    let next = (!last).then(|| format!("c{p}"));
    let of = PageOf {
        did,
        collection: &like,
        rev: &run.rev,
        state_id: state.id,
    };
    let mut mapped = page::map(&of, reg, &lease, records.iter(), next);
    if last && let parity::batch::Checkpoint::ImportPage(cp) = &mut mapped.batch.checkpoint {
        cp.sweep = Some(parity::batch::Sweep {
            did: did.clone(),
            collection: like.clone(),
            table: reg.table_of(like.as_str()).unwrap(),
            rev: run.rev.clone(),
        });
    }
    store.commit(&mapped.batch).await.unwrap();
    if last {
        // The last page's commit completed the pair.
        let states = store
            .import_states(Some(did.as_str()), parity::store::StatusFilter::All, 10)
            .await
            .unwrap();
        let st = states.iter().find(|s| s.id == state.id).unwrap();
        assert_eq!(st.status, parity::store::ImportStatus::Completed);
    }
}

/// Live batches and every DID's import pages, interleaved as `choices`
/// says (each stream keeps its own order), then the rest in turn, with no
/// other constraint: a live event older than an import's rev may arrive
/// after that import's last page (the sweep's tombstones and the pair's
/// floor keep it out).
/// One writer's share of a live batch, with the `(DID, rev)` of its ops.
type LiveShare = (parity::batch::Batch, Vec<(usize, u32)>);

pub(crate) async fn run_world(store: &Store, dids: &[Did], w: &World, writers: u32) {
    let reg = registry();
    // Live batches, split into one share per writer (a DID's share always
    // goes to the same writer); each writer's queue keeps batch order.
    let mut live: Vec<std::collections::VecDeque<LiveShare>> =
        (0..writers).map(|_| Default::default()).collect();
    for (b, ops) in live_batches(dids, w, &reg) {
        for (wr, share) in shard::split(b, writers).into_iter().enumerate() {
            let mine = ops
                .iter()
                .filter(|(d, _)| {
                    writers == 1 || shard::writer_of(&dids[*d], writers) as usize == wr
                })
                .copied()
                .collect();
            live[wr].push_back((share, mine));
        }
    }
    let writers = writers as usize;
    let runs = import_runs(w);
    // Streams 0..writers: the writers' live shares; writers + d: DID d's
    // import runs, page by page.
    let mut pos: Vec<(usize, usize)> = vec![(0, 0); DIDS];
    let mut choices = w.choices.iter();
    loop {
        let mut open: Vec<usize> = (0..writers).filter(|&wr| !live[wr].is_empty()).collect();
        for (d, (r, _)) in pos.iter().enumerate() {
            if *r < runs[d].len() {
                open.push(writers + d);
            }
        }
        if open.is_empty() {
            break;
        }
        let s = match choices.next() {
            Some(i) => open[i.index(open.len())],
            None => open[0],
        };
        if s < writers {
            let (b, _) = live[s].pop_front().expect("open");
            store.commit(&b).await.unwrap();
            continue;
        }
        let d = s - writers;
        let (r, p) = pos[d];
        import_page(store, &reg, dids, &runs[d][r], p).await;
        pos[d] = if p + 1 == runs[d][r].pages.len() {
            (r + 1, 0)
        } else {
            (r, p + 1)
        };
    }
}

pub(crate) fn registry() -> Registry {
    let mut reg = Registry::new();
    builtin::register_all(&mut reg, &builtin::ALL).unwrap();
    reg
}

/// The model: a deleted account has no rows; otherwise each record holds
/// its newest op (nothing if a delete), at that op's rev or, when an import
/// listed it later, at the newest imported rev.
fn expected_world(did: &Did, w: &World, d: usize) -> Vec<Vec<Option<String>>> {
    if w.deleted[d] {
        return Vec::new();
    }
    let h = &w.histories[d];
    let imported = w.imports[d]
        .iter()
        .map(|&k| h[k - 1].rev)
        .max()
        .unwrap_or(0);
    let mut rows = expected(did, h);
    for row in &mut rows {
        let rev = rev_number(row[1].as_deref().unwrap());
        row[1] = Some(rev_text(rev.max(imported)));
    }
    rows
}

fn check_world(backend: &'static str, cases: u32, writers: u32) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(async {
        if backend == "pg" {
            TestDb::postgres("converge_world").await
        } else {
            TestDb::sqlite()
        }
    });
    let store = rt.block_on(open(&db));
    let n = std::sync::atomic::AtomicU32::new(0);
    proptest!(ProptestConfig::with_cases(cases), |(w in world())| {
        let case = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dids: Vec<Did> = (0..DIDS)
            .map(|d| Did::parse(&format!("did:plc:world{case}d{d}")).unwrap())
            .collect();
        let results = rt.block_on(async {
            run_world(&store, &dids, &w, writers).await;
            let mut out = Vec::new();
            for (d, did) in dids.iter().enumerate() {
                out.push((expected_world(did, &w, d), actual(&db, did).await));
            }
            out
        });
        for (d, (want, got)) in results.into_iter().enumerate() {
            prop_assert_eq!(got, want, "DID {}", d);
        }
    });
}

#[test]
fn live_events_accounts_and_import_pages_converge_sqlite() {
    check_world("sqlite", 48, 1);
}

#[test]
fn live_events_accounts_and_import_pages_converge_postgres() {
    check_world("pg", 32, 1);
}

/// The same worlds with the live batches committed by three writers, each
/// its share of every batch (`store::shard`), the writers' commits
/// interleaved in any order (each writer's own in batch order) with the
/// import pages.
#[test]
fn several_writers_interleaved_converge_postgres() {
    check_world("pg", 32, 3);
}

#[test]
fn several_writers_interleaved_converge_sqlite() {
    check_world("sqlite", 16, 3);
}
