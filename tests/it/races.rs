//! Two writers on one database, really overlapping: an import page (old
//! rev) and a live batch that deletes the same record or purges its
//! account commit at the same moment, many times over. Whatever order the
//! database interleaves them in, the later-rev delete and the purge win:
//! the imported row never survives, and the page's other rows are
//! written. Pages hold [`PAGE_ROWS`] rows, as an import's pages hold many.

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use common::TestDb;
use parity::batch::{Batch, BatchConfig, Batcher, Checkpoint, ImportPage, PurgePolicy};
use parity::event::{
    AccountStatus, Commit, CommitOp, Cursor, Did, Event, EventKind, Nsid, RecordKey,
};
use parity::mapper::{Dispatch, Mutation, Registry, builtin};
use parity::store::{DatabaseConfig, Store};
use serde_json::value::RawValue;
use tokio::sync::Barrier;

/// Rounds per scenario: without per-DID locks PostgreSQL let the import
/// page through in most rounds; a few hundred leave no room for luck.
const ROUNDS: usize = 150;

/// Rows of each import page.
const PAGE_ROWS: usize = 40;

const LIKE: &str = r#"{"$type":"app.bsky.feed.like","createdAt":"2026-07-04T14:38:00.000Z","subject":{"cid":"bafyc","uri":"at://did:plc:x/app.bsky.feed.post/1"}}"#;

fn registry() -> Registry {
    let mut reg = Registry::new();
    builtin::register_all(&mut reg, &builtin::ALL).unwrap();
    reg
}

async fn open(db: &TestDb) -> Store {
    let mut s = Store::connect(&DatabaseConfig {
        url: db.url.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    s.migrate().await.unwrap();
    s.prepare(registry().tables(), &[AccountStatus::Deleted])
        .await
        .unwrap();
    s
}

fn like_event(did: &Did, rkey: &str, rev: &str, delete: bool) -> Event {
    Event {
        cursor: Cursor(1),
        time_us: 1,
        did: did.clone(),
        kind: EventKind::Commit(Commit {
            collection: Nsid::parse("app.bsky.feed.like").unwrap(),
            rkey: RecordKey::parse(rkey).unwrap(),
            rev: rev.into(),
            op: if delete {
                CommitOp::Delete
            } else {
                CommitOp::Create
            },
            cid: (!delete).then(|| "bafycid".to_owned()),
            record: (!delete).then(|| RawValue::from_string(LIKE.into()).unwrap()),
        }),
    }
}

fn mutation(reg: &Registry, ev: &Event) -> Mutation {
    match reg.dispatch(ev) {
        Dispatch::Mutation(m) => m,
        _ => panic!("likes map"),
    }
}

/// An import page of `did`'s likes `{prefix}-00`… at rev 1, checkpointing
/// the claimed state `id`.
fn import_page(reg: &Registry, did: &Did, prefix: &str, id: i64, owner: &str) -> Batch {
    let mutations: Vec<Mutation> = (0..PAGE_ROWS)
        .map(|i| {
            let rkey = format!("{prefix}-{i:02}");
            mutation(reg, &like_event(did, &rkey, "3l00000000001", false))
        })
        .collect();
    Batch {
        events: mutations.len(),
        mutations,
        repos: HashMap::new(),
        last_time_us: 0,
        checkpoint: Checkpoint::ImportPage(ImportPage {
            state_id: id,
            owner: owner.into(),
            cursor: Some("next".into()),
            rev: "3a".into(),
            last: false,
            failed: 0,
            lease_until: "2999-01-01T00:00:00.000000Z".into(),
            sweep: None,
        }),
    }
}

/// Claims an import of the DID's likes for `owner`; returns the state id.
async fn claim(store: &Store, did: &Did, owner: &str) -> i64 {
    let c = "app.bsky.feed.like".to_owned();
    store
        .enqueue_imports(did.as_str(), std::slice::from_ref(&c), false)
        .await
        .unwrap();
    let until = chrono::Utc::now() + chrono::Duration::hours(1);
    store
        .claim_import(did.as_str(), &c, owner, until, None)
        .await
        .unwrap()
        .expect("claimable")
        .id
}

/// Commits both batches at once, each from its own store handle.
async fn race(a: &Store, batch_a: Batch, b: &Store, batch_b: Batch) {
    let barrier = Arc::new(Barrier::new(2));
    let run = |store: Store, batch: Batch, barrier: Arc<Barrier>| {
        tokio::spawn(async move {
            barrier.wait().await;
            store.commit(&batch).await.unwrap();
        })
    };
    let ta = run(a.clone(), batch_a, barrier.clone());
    let tb = run(b.clone(), batch_b, barrier);
    ta.await.unwrap();
    tb.await.unwrap();
}

/// Rows whose URI starts with `prefix`.
async fn count_prefix(db: &TestDb, prefix: &str) -> usize {
    db.rows("likes", &["uri"])
        .await
        .into_iter()
        .filter(|r| r[0].as_deref().is_some_and(|u| u.starts_with(prefix)))
        .count()
}

async fn count_uri(db: &TestDb, uri: &str) -> usize {
    db.rows("likes", &["uri"])
        .await
        .into_iter()
        .filter(|r| r[0].as_deref() == Some(uri))
        .count()
}

/// A page importing records at rev 1 races a live delete of one of them
/// at rev 2; the page's other records are written.
async fn later_delete_beats_concurrent_import(db: TestDb) {
    let (importer, consumer) = (open(&db).await, open(&db).await);
    let reg = registry();
    let did = Did::parse("did:plc:racedelete").unwrap();
    let id = claim(&importer, &did, "h:1:0").await;
    let mut survived = Vec::new();
    for round in 0..ROUNDS {
        let prefix = format!("r{round}");
        let page = import_page(&reg, &did, &prefix, id, "h:1:0");
        let rkey = format!("{prefix}-17");
        let mut live = Batcher::new(&BatchConfig::default(), PurgePolicy::default());
        live.seen("s", Cursor(round as i64 + 1), 1, true, Instant::now());
        live.push(mutation(
            &reg,
            &like_event(&did, &rkey, "3l00000000002", true),
        ));
        race(&importer, page, &consumer, live.take().unwrap()).await;
        let uri = format!("at://{did}/app.bsky.feed.like/{rkey}");
        if count_uri(&db, &uri).await > 0 {
            survived.push(round);
        }
        let page_uris = format!("at://{did}/app.bsky.feed.like/{prefix}-");
        assert_eq!(
            count_prefix(&db, &page_uris).await,
            PAGE_ROWS - 1,
            "round {round}: the page's other records"
        );
    }
    assert!(
        survived.is_empty(),
        "an import page older than a concurrent delete survived it in rounds {survived:?}"
    );
}

backend_tests!(later_delete_beats_concurrent_import, |db| {
    later_delete_beats_concurrent_import(db)
});

/// A page importing a record races a live `#account` deleted (purge).
async fn purge_beats_concurrent_import(db: TestDb) {
    let (importer, consumer) = (open(&db).await, open(&db).await);
    let reg = registry();
    let mut survived = Vec::new();
    for round in 0..ROUNDS {
        let did = Did::parse(&format!("did:plc:racepurge{round}")).unwrap();
        let id = claim(&importer, &did, "h:1:0").await;
        let page = import_page(&reg, &did, "r", id, "h:1:0");
        let mut live = Batcher::new(
            &BatchConfig::default(),
            PurgePolicy {
                statuses: vec![AccountStatus::Deleted],
            },
        );
        live.seen("s", Cursor(round as i64 + 1), 1, true, Instant::now());
        assert!(live.account(&did, false, Some(AccountStatus::Deleted)));
        race(&importer, page, &consumer, live.take().unwrap()).await;
        if count_prefix(&db, &format!("at://{did}/")).await > 0 {
            survived.push(round);
        }
    }
    assert!(
        survived.is_empty(),
        "an import page survived a concurrent purge of its account in rounds {survived:?}"
    );
}

backend_tests!(purge_beats_concurrent_import, |db| {
    purge_beats_concurrent_import(db)
});
