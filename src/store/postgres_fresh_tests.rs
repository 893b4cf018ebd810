//! The write of fresh repos (`postgres_fresh.rs`): what a written repo
//! leaves (the rows a page's upsert writes, value for value; each
//! collection's state completed; floors where complete), every reason a
//! repo is left to the pages (and only that repo), a state queued by
//! another importer meanwhile, and an error that keeps nothing.

use chrono::{TimeZone, Utc};
use serde_json::value::RawValue;

use super::FreshRepo;
use crate::event::{Did, Nsid};
use crate::mapper::{Mutation, Row, TableId, Value};
use crate::store::Store;
use crate::store::commit::tests::{batch, open};

const LIKE: &str = "app.bsky.feed.like";

/// A like of `did` at `rev` whose record has `COPY`'s special characters.
pub(in crate::store) fn like(did: &str, rkey: &str, rev: &str) -> Row {
    Row {
        table: TableId(0),
        uri: format!("at://{did}/{LIKE}/{rkey}"),
        did: Did::parse(did).unwrap(),
        rkey: rkey.into(),
        cid: format!("bafy-{rkey}"),
        rev: rev.into(),
        record: RawValue::from_string(format!(r#"{{"text":"tab\tnew\nline \\ {rkey}"}}"#)).unwrap(),
        values: vec![
            Value::Text(format!("at://did:plc:x/app.bsky.feed.post/{rkey}")),
            Value::Null,
            Value::Timestamp(Utc.with_ymd_and_hms(2026, 7, 4, 12, 0, 0).unwrap()),
        ],
    }
}

/// `n` likes of `did` at `rev`.
fn likes(did: &str, n: usize, rev: &str) -> Vec<Row> {
    (0..n)
        .map(|i| like(did, &format!("3k{i:011}"), rev))
        .collect()
}

fn repo(store: &Store, did: &str, n: usize, failed: u64) -> FreshRepo {
    repo_of(store, did, &likes(did, n, "3rev"), failed)
}

fn repo_of(store: &Store, did: &str, rows: &[Row], failed: u64) -> FreshRepo {
    let collection = Nsid::parse(LIKE).unwrap();
    FreshRepo {
        did: Did::parse(did).unwrap(),
        rev: "3rev".into(),
        collections: vec![
            store
                .fresh_collection(collection, TableId(0), rows, failed, failed == 0)
                .expect("PostgreSQL writes fresh repos"),
        ],
    }
}

/// The rows `sql` (whose one parameter is a DID) gives for `did`.
async fn of_did<T: crate::store::dialect::AnyRow>(store: &Store, sql: &str, did: &str) -> Vec<T> {
    store.fetch_all::<T>(sql, vec![did.into()]).await.unwrap()
}

async fn pg() -> Store {
    open(true).await.0
}

async fn exec(store: &Store, sql: &str) {
    store.execute(sql, vec![]).await.unwrap();
}

async fn count(store: &Store, sql: &str, did: &str) -> i64 {
    of_did::<(i64,)>(store, sql, did).await[0].0
}

/// Rows of `did` in `table`.
async fn count_of(store: &Store, table: &str, did: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table} WHERE did = $1");
    count(store, &sql, did).await
}

async fn rows_of(store: &Store, did: &str) -> i64 {
    count_of(store, "likes", did).await
}

async fn states_of(store: &Store, did: &str) -> i64 {
    count_of(store, "parity_import_states", did).await
}

async fn floors_of(store: &Store, did: &str) -> i64 {
    count_of(store, "parity_sweep_floors", did).await
}

#[tokio::test]
async fn fresh_repos_are_written_as_their_pages_would_be() {
    let store = pg().await;
    let (a, b) = (
        repo(&store, "did:plc:a", 40, 0),
        repo(&store, "did:plc:b", 3, 2),
    );
    let (written, stats) = store.commit_fresh(&[&a, &b]).await.unwrap();
    assert_eq!(written, vec![true, true]);
    assert_eq!(stats.upserted, vec![("likes".to_owned(), 43)]);
    // The same rows of another repo through the upsert (a live batch).
    let twins = likes("did:plc:c", 40, "3rev");
    store
        .commit(&batch(
            twins.into_iter().map(Mutation::Upsert).collect(),
            vec![],
            1,
        ))
        .await
        .unwrap();
    type Read = (
        String,
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        String,
    );
    let read = "SELECT rkey, cid, rev, record::text, subject_uri, subject_cid, created_at::text \
                FROM likes WHERE did = $1 ORDER BY uri";
    let copied: Vec<Read> = of_did(&store, read, "did:plc:a").await;
    let upserted: Vec<Read> = of_did(&store, read, "did:plc:c").await;
    assert_eq!(copied.len(), 40);
    assert_eq!(copied, upserted);
    assert!(
        copied[0].3.contains("tab\\tnew\\nline \\\\ "),
        "{}",
        copied[0].3
    );
    // Each collection's state completed as its one page leaves it.
    type State = (
        String,
        Option<String>,
        String,
        i64,
        i64,
        i64,
        i64,
        Option<String>,
        bool,
    );
    let state = "SELECT status, cursor, rev, records_synced, records_skipped, records_failed, pages, \
                 lease_owner, completed_at IS NOT NULL FROM parity_import_states \
                 WHERE did = $1 AND collection = 'app.bsky.feed.like'";
    assert_eq!(
        of_did::<State>(&store, state, "did:plc:a").await,
        vec![(
            "completed".into(),
            None,
            "3rev".into(),
            40,
            0,
            0,
            1,
            None,
            true
        )]
    );
    assert_eq!(
        of_did::<State>(&store, state, "did:plc:b").await,
        vec![(
            "completed".into(),
            None,
            "3rev".into(),
            3,
            0,
            2,
            1,
            None,
            true
        )]
    );
    // A floor where the collection is complete, as its sweep leaves one.
    assert_eq!(floors_of(&store, "did:plc:a").await, 1);
    assert_eq!(floors_of(&store, "did:plc:b").await, 0);
}

/// Each reason the upsert or the sweep could act otherwise than `COPY`
/// leaves that repo to the pages; the group's other repo is written.
#[tokio::test]
async fn a_repo_with_anything_stored_is_left_to_the_pages() {
    let store = pg().await;
    let setups: [(&str, &str); 5] = [
        (
            "did:plc:state",
            "INSERT INTO parity_import_states (did, collection, status, created_at, updated_at) \
             VALUES ('did:plc:state', '*', 'pending', now(), now())",
        ),
        (
            "did:plc:row",
            "INSERT INTO likes (uri, did, rkey, cid, rev, record, synced_at) VALUES \
             ('at://did:plc:row/app.bsky.feed.like/zzz', 'did:plc:row', 'zzz', 'c', '3old', '{}', now())",
        ),
        (
            "did:plc:tomb",
            "INSERT INTO parity_tombstones (uri, rev, deleted_at) VALUES \
             ('at://did:plc:tomb/app.bsky.feed.like/zzz', '3old', now())",
        ),
        (
            "did:plc:floor",
            "INSERT INTO parity_sweep_floors (did, collection, rev) VALUES \
             ('did:plc:floor', 'app.bsky.feed.like', '3old')",
        ),
        (
            "did:plc:gone",
            "INSERT INTO parity_repos (did, status, active, updated_at) VALUES \
             ('did:plc:gone', 'deleted', false, now())",
        ),
    ];
    for (n, (did, setup)) in setups.iter().enumerate() {
        exec(&store, setup).await;
        let other = format!("did:plc:other{n}");
        let (stale, fresh) = (repo(&store, did, 5, 0), repo(&store, &other, 5, 0));
        let before = rows_of(&store, did).await;
        let (written, _) = store.commit_fresh(&[&stale, &fresh]).await.unwrap();
        assert_eq!(written, vec![false, true], "{did}");
        assert_eq!(rows_of(&store, did).await, before, "{did}");
        assert_eq!(rows_of(&store, &other).await, 5, "{did}");
        let states = count(
            &store,
            "SELECT COUNT(*) FROM parity_import_states WHERE did = $1 AND collection <> '*'",
            did,
        )
        .await;
        assert_eq!(states, 0, "{did}");
    }
    // Rows, tombstones and floors of other repos and collections are not
    // this repo's.
    exec(
        &store,
        "INSERT INTO likes (uri, did, rkey, cid, rev, record, synced_at) VALUES \
         ('at://did:plc:clean/app.bsky.feed.likf/1', 'did:plc:clean', '1', 'c', '3old', '{}', now()), \
         ('at://did:plc:cleam/app.bsky.feed.like/1', 'did:plc:cleam', '1', 'c', '3old', '{}', now())",
    )
    .await;
    let clean = repo(&store, "did:plc:clean", 5, 0);
    let (written, _) = store.commit_fresh(&[&clean]).await.unwrap();
    assert_eq!(written, vec![true]);
}

/// Another importer queues a state of a repo of the group after the check
/// read none: the group's insert waits for it, conflicts, and the whole
/// group is rolled back for the pages.
#[tokio::test]
async fn a_state_queued_meanwhile_rolls_the_group_back() {
    let store = pg().await;
    let Store::Postgres(p) = &store else {
        unreachable!("open(true) is PostgreSQL")
    };
    let mut other = p.pool().begin().await.unwrap();
    sqlx::query(
        "INSERT INTO parity_import_states (did, collection, status, created_at, updated_at) \
         VALUES ('did:plc:b', 'app.bsky.feed.like', 'pending', now(), now())",
    )
    .execute(&mut *other)
    .await
    .unwrap();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let (a, b) = (
                repo(&store, "did:plc:a", 5, 0),
                repo(&store, "did:plc:b", 5, 0),
            );
            store.commit_fresh(&[&a, &b]).await.unwrap().0
        })
    };
    // The group's insert waits on the other transaction's row.
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query LIKE 'WITH st AS%'",
        )
        .fetch_one(p.pool())
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    other.commit().await.unwrap();
    assert_eq!(writer.await.unwrap(), vec![false, false]);
    for did in ["did:plc:a", "did:plc:b"] {
        assert_eq!(rows_of(&store, did).await, 0);
        assert_eq!(floors_of(&store, did).await, 0);
    }
    assert_eq!(states_of(&store, "did:plc:a").await, 0);
    assert_eq!(states_of(&store, "did:plc:b").await, 1);
}

/// A row PostgreSQL refuses fails the group: nothing of it is kept, for
/// the pages (which retry and quarantine) to write.
#[tokio::test]
async fn an_error_keeps_nothing_of_the_group() {
    let store = pg().await;
    let a = repo(&store, "did:plc:a", 5, 0);
    let mut rows = likes("did:plc:b", 5, "3rev");
    rows[2].cid = "bafy\0".into();
    let b = repo_of(&store, "did:plc:b", &rows, 0);
    assert!(store.commit_fresh(&[&a, &b]).await.is_err());
    for did in ["did:plc:a", "did:plc:b"] {
        assert_eq!(rows_of(&store, did).await, 0);
        assert_eq!(states_of(&store, did).await, 0);
        assert_eq!(floors_of(&store, did).await, 0);
    }
}

/// SQLite, and PostgreSQL logging a mapped table's changes, write nothing
/// this way (their imports go page by page).
#[tokio::test]
async fn only_postgresql_without_a_change_log_writes_fresh_repos() {
    let (sqlite, _dir) = open(false).await;
    assert!(!sqlite.writes_fresh());
    let rows = likes("did:plc:a", 5, "3rev");
    let like = || Nsid::parse(LIKE).unwrap();
    assert!(
        sqlite
            .fresh_collection(like(), TableId(0), &rows, 0, true)
            .is_none()
    );
    let mut logged = pg().await;
    assert!(logged.writes_fresh());
    let a = repo(&logged, "did:plc:a", 5, 0);
    logged.set_change_log(crate::store::ChangeLog {
        enabled: true,
        tables: vec![],
    });
    assert!(!logged.writes_fresh());
    assert!(
        logged
            .fresh_collection(like(), TableId(0), &rows, 0, true)
            .is_none()
    );
    assert_eq!(logged.commit_fresh(&[&a]).await.unwrap().0, vec![false]);
    assert_eq!(rows_of(&logged, "did:plc:a").await, 0);
}
