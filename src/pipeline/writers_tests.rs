//! The writer loop ([`write`]) on a real SQLite store: shares that queued
//! up while it was busy are committed in one transaction, and should that
//! transaction fail, one by one as usual (quarantine included).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Progress, Share, Watermark, write};
use crate::batch::{Batch, Checkpoint};
use crate::event::{Cursor, Did};
use crate::mapper::builtin::Builtin;
use crate::mapper::{Mutation, Row, TableId, Value};
use crate::obs::Obs;
use crate::store::{DatabaseConfig, Store};

/// A migrated SQLite store with the likes table; `refuse`: a trigger of
/// the operator's refuses likes whose `subject_cid` is `refused`.
async fn store(dir: &tempfile::TempDir, refuse: bool) -> Store {
    let path = dir.path().join("t.db");
    let mut store = Store::connect(&DatabaseConfig {
        url: format!("sqlite://{}", path.display()),
        ..Default::default()
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    if refuse {
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TRIGGER refuse_like BEFORE INSERT ON likes \
                 WHEN NEW.subject_cid = 'refused' \
                 BEGIN SELECT RAISE(ABORT, 'like refused by policy'); END",
            )
            .unwrap();
    }
    store
        .prepare(&[Builtin::Likes.schema()], &[])
        .await
        .unwrap();
    store
}

fn like(rkey: &str, subject_cid: &str) -> Mutation {
    let did = Did::parse("did:plc:writer").unwrap();
    let mut values = vec![Value::Null; Builtin::Likes.schema().columns.len()];
    values[1] = Value::Text(subject_cid.into());
    Mutation::Upsert(Row {
        table: TableId(0),
        uri: format!("at://{did}/app.bsky.feed.like/{rkey}"),
        did,
        rkey: rkey.into(),
        cid: format!("cid-{rkey}"),
        rev: rkey.into(),
        record: RawValue::from_string("{}".into()).unwrap(),
        values,
    })
}

fn share(seq: u64, mutations: Vec<Mutation>) -> Share {
    Share {
        seq,
        batch: std::sync::Arc::new(Batch {
            mutations,
            repos: Default::default(),
            last_time_us: 0,
            events: 1,
            checkpoint: Checkpoint::Stream(vec![("s".into(), Cursor(seq as i64 * 10))]),
        }),
    }
}

/// Runs the writer loop over `shares`, all queued before it starts, to its
/// end; returns the shares the low watermark has not passed and the rows
/// in likes.
async fn run(store: &Store, dir: &tempfile::TempDir, shares: Vec<Share>) -> (usize, Vec<String>) {
    let (tx, rx) = mpsc::channel(shares.len());
    let watermark = Arc::new(Mutex::new(Watermark::new(1)));
    for s in shares {
        watermark.lock().unwrap().dispatched(
            s.seq,
            Progress {
                cursor: s.batch.checkpoint.last_cursor().map(|c| c.0),
                time_us: 0,
            },
        );
        tx.send(s).await.unwrap();
    }
    drop(tx);
    let obs = Arc::new(Obs::new(Duration::from_secs(60)));
    write(
        0,
        rx,
        store.clone(),
        obs,
        watermark.clone(),
        CancellationToken::new(),
        Duration::from_secs(3_600),
    )
    .await
    .unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
    let mut stmt = conn
        .prepare("SELECT rkey FROM likes ORDER BY rkey")
        .unwrap();
    let rows = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let pending = watermark.lock().unwrap().in_flight();
    (pending, rows)
}

/// Three shares waiting for the writer: one transaction for all three,
/// every row and the last cursor stored.
#[tokio::test]
async fn shares_that_queued_up_commit_in_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir, false).await;
    let before = store.sqlite_transactions().unwrap();
    let shares = vec![
        share(1, vec![like("3a", "c")]),
        share(2, vec![like("3b", "c")]),
        share(3, vec![like("3c", "c")]),
    ];
    let (pending, rows) = run(&store, &dir, shares).await;
    assert_eq!(rows, ["3a", "3b", "3c"]);
    assert_eq!(pending, 0);
    assert_eq!(store.load_cursor("s").await.unwrap(), Some(Cursor(30)));
    // The shared transaction, then writer 0's first tombstone expiry (one
    // by one: four).
    assert_eq!(store.sqlite_transactions().unwrap(), before + 2);
}

/// The middle share holds a record the database refuses: the shared
/// transaction fails, and the shares are committed one by one, the
/// refused record quarantined and everything else stored.
#[tokio::test]
async fn a_refused_record_in_a_group_is_quarantined_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir, true).await;
    let shares = vec![
        share(1, vec![like("3a", "c")]),
        share(2, vec![like("3b", "refused"), like("3c", "c")]),
        share(3, vec![like("3d", "c")]),
    ];
    let (pending, rows) = run(&store, &dir, shares).await;
    assert_eq!(rows, ["3a", "3c", "3d"]);
    assert_eq!(pending, 0);
    assert_eq!(store.load_cursor("s").await.unwrap(), Some(Cursor(30)));
}
