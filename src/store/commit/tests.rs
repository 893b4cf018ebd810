//! The commit walk against real databases (a SQLite file and the
//! PostgreSQL at `TEST_PG_URL`): each test pins one ordering of `plan.rs`
//! by a batch whose result would differ if two steps swapped, and checks
//! both backends report the same [`CommitStats`].

use chrono::Utc;
use serde_json::value::RawValue;

use crate::batch::{Batch, Checkpoint, ImportPage, RepoChange};
use crate::event::{AccountStatus, Cursor, Did};
use crate::mapper::builtin::Builtin;
use crate::mapper::table::timestamp_text;
use crate::mapper::{Mutation, Row, TableId, Value};
use crate::store::{
    CommitStats, DatabaseConfig, ImportState, ImportStatus, StatusFilter, Store, StoreError,
};

/// A migrated store with the likes table, purging `deleted` accounts. The
/// temp dir of a SQLite store lives as long as the returned guard.
pub(in crate::store) async fn open(pg: bool) -> (Store, Option<tempfile::TempDir>) {
    let (url, dir) = if pg {
        let base = std::env::var("TEST_PG_URL").unwrap_or_else(|_| {
            "postgres://parity_test:parity_test@127.0.0.1:5432/parity_test".into()
        });
        let admin = sqlx::PgPool::connect(&base)
            .await
            .expect("PostgreSQL at TEST_PG_URL");
        let name = format!("parity_t_commit_{}", rand::random::<u32>());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let (prefix, _) = base.rsplit_once('/').unwrap();
        (format!("{prefix}/{name}"), None)
    } else {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        (url, Some(dir))
    };
    let mut store = Store::connect(&DatabaseConfig {
        url,
        ..Default::default()
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    store
        .prepare(&[Builtin::Likes.schema()], &[AccountStatus::Deleted])
        .await
        .unwrap();
    (store, dir)
}

fn did(n: &str) -> Did {
    Did::parse(&format!("did:plc:{n}")).unwrap()
}

fn uri(d: &str, rkey: &str) -> String {
    format!("at://did:plc:{d}/app.bsky.feed.like/{rkey}")
}

pub(in crate::store) fn upsert(d: &str, rkey: &str, rev: &str) -> Mutation {
    Mutation::Upsert(Row {
        table: TableId(0),
        uri: uri(d, rkey),
        did: did(d),
        rkey: rkey.into(),
        cid: format!("cid-{rev}"),
        rev: rev.into(),
        record: RawValue::from_string("{}".into()).unwrap(),
        values: vec![Value::Null; Builtin::Likes.schema().columns.len()],
    })
}

fn delete(d: &str, rkey: &str, rev: &str) -> Mutation {
    Mutation::Delete {
        table: TableId(0),
        uri: uri(d, rkey),
        did: did(d),
        rev: rev.into(),
    }
}

pub(in crate::store) fn batch(
    mutations: Vec<Mutation>,
    repos: Vec<(Did, RepoChange)>,
    cursor: i64,
) -> Batch {
    Batch {
        mutations,
        repos: repos.into_iter().collect(),
        last_time_us: 0,
        events: 1,
        checkpoint: Checkpoint::Stream(vec![("s".to_owned(), Cursor(cursor))]),
    }
}

/// The cursor of the stream `s` the test batches move.
pub(in crate::store) async fn cursor(store: &Store) -> Option<i64> {
    store
        .fetch_optional::<(i64,)>(
            "SELECT cursor FROM parity_cursors WHERE stream = $1",
            vec!["s".into()],
        )
        .await
        .unwrap()
        .map(|(c,)| c)
}

fn stats(upserted: u64, deleted: u64) -> CommitStats {
    let list = |n| match n {
        0 => vec![],
        n => vec![("likes".to_owned(), n)],
    };
    CommitStats {
        upserted: list(upserted),
        deleted: list(deleted),
        ..CommitStats::default()
    }
}

/// Rows in likes of one DID.
async fn likes_of(store: &Store, d: &str) -> i64 {
    let (n,): (i64,) = store
        .fetch_optional(
            "SELECT COUNT(*) FROM likes WHERE did = $1",
            vec![format!("did:plc:{d}").into()],
        )
        .await
        .unwrap()
        .unwrap();
    n
}

/// Step 1 before 3: the account change and purge of a DID run before the
/// upserts, so the status guard refuses that DID's rows in the same batch,
/// and the purge counts as deletes. Many rows of another DID cross the
/// SQLite ladder (500 + 128 + ...) and are all written.
async fn account_state_guards_the_same_batch(pg: bool) {
    let (store, _dir) = open(pg).await;
    let first = batch(vec![upsert("a", "1", "3a")], vec![], 1);
    assert_eq!(store.commit(&first).await.unwrap(), stats(1, 0));

    let mut rows = vec![upsert("a", "2", "3b")];
    rows.extend((0..700).map(|i| upsert("b", &format!("k{i}"), "3b")));
    let gone = RepoChange {
        account: Some((false, Some(AccountStatus::Deleted))),
        purge: true,
        ..Default::default()
    };
    let second = batch(rows, vec![(did("a"), gone)], 2);
    assert_eq!(store.commit(&second).await.unwrap(), stats(700, 1));
    assert_eq!(likes_of(&store, "a").await, 0);
    assert_eq!(likes_of(&store, "b").await, 700);
    assert_eq!(store.load_cursor("s").await.unwrap(), Some(Cursor(2)));
}

/// Step 2 before 3, and tombstones before deletes: a delete needs its
/// tombstone to remove the stored row, and an older upsert of a URI deleted
/// in the same batch is refused by that tombstone.
async fn tombstones_guard_deletes_and_upserts(pg: bool) {
    let (store, _dir) = open(pg).await;
    let first = batch(vec![upsert("a", "1", "3a")], vec![], 1);
    store.commit(&first).await.unwrap();

    let second = batch(
        vec![
            delete("a", "1", "3c"),
            delete("a", "2", "3c"),
            upsert("a", "2", "3b"),
        ],
        vec![],
        2,
    );
    assert_eq!(store.commit(&second).await.unwrap(), stats(0, 1));
    assert_eq!(likes_of(&store, "a").await, 0);
}

/// A delete whose URI already has a tombstone at its rev or a newer one
/// (a replay, or the stream's echo of a delete `parity publish` wrote
/// back) writes nothing and is counted stale; a newer delete, or one of a
/// URI never seen, is not.
async fn deletes_refused_by_the_tombstone_are_stale(pg: bool) {
    let (store, _dir) = open(pg).await;
    store
        .commit(&batch(vec![upsert("a", "1", "3a")], vec![], 1))
        .await
        .unwrap();
    let first = store
        .commit(&batch(vec![delete("a", "1", "3c")], vec![], 2))
        .await
        .unwrap();
    assert_eq!(first, stats(0, 1));
    // The same delete again, and an older one: both stale; a delete of a
    // URI never seen and a newer delete of the first are not.
    let again = store
        .commit(&batch(
            vec![
                delete("a", "1", "3c"),
                delete("a", "2", "3b"),
                delete("a", "3", "3c"),
            ],
            vec![],
            3,
        ))
        .await
        .unwrap();
    assert_eq!(
        again,
        CommitStats {
            stale_deletes: 1,
            ..stats(0, 0)
        }
    );
    let older = store
        .commit(&batch(vec![delete("a", "2", "3a")], vec![], 4))
        .await
        .unwrap();
    assert_eq!(older.stale_deletes, 1);
    let newer = store
        .commit(&batch(vec![delete("a", "1", "3d")], vec![], 5))
        .await
        .unwrap();
    assert_eq!(newer.stale_deletes, 0);
}

/// The likes of `did:plc:a` queued and claimed by `me` for five minutes.
async fn claimed_likes(store: &Store) -> (String, chrono::DateTime<Utc>, ImportState) {
    let collection = "app.bsky.feed.like".to_owned();
    store
        .enqueue_imports("did:plc:a", std::slice::from_ref(&collection), false)
        .await
        .unwrap();
    let lease_until = Utc::now() + chrono::Duration::minutes(5);
    let state = store
        .claim_import("did:plc:a", &collection, "me", lease_until, None)
        .await
        .unwrap()
        .unwrap();
    (collection, lease_until, state)
}

/// Step 5: the import page is the last statement and is guarded by the
/// lease, so a page written under a lost lease rolls the whole batch back;
/// under the lease, rows, cursor, the run's rev and counters commit
/// together, and the last page ends the pair (`completed`, lease released)
/// in the same transaction.
async fn import_page_commits_with_its_rows_or_not_at_all(pg: bool) {
    let (store, _dir) = open(pg).await;
    let (_, lease_until, state) = claimed_likes(&store).await;
    assert_eq!(state.rev, None);
    let page = |owner: &str, rkeys: [&str; 2], last: bool| {
        let mut b = batch(
            vec![upsert("a", rkeys[0], "3a"), upsert("a", rkeys[1], "3a")],
            vec![],
            0,
        );
        b.checkpoint = Checkpoint::ImportPage(ImportPage {
            state_id: state.id,
            owner: owner.into(),
            cursor: (!last).then(|| rkeys[1].into()),
            rev: "3a".into(),
            last,
            failed: 1,
            lease_until: timestamp_text(&lease_until),
            sweep: None,
        });
        b
    };
    let err = store
        .commit(&page("thief", ["1", "2"], false))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost), "{err}");
    assert_eq!(likes_of(&store, "a").await, 0);
    let states = store.resumable_imports(Some("did:plc:a")).await.unwrap();
    assert_eq!(states[0].rev, None, "a refused page wrote the rev");

    assert_eq!(
        store.commit(&page("me", ["1", "2"], false)).await.unwrap(),
        stats(2, 0)
    );
    let states = store.resumable_imports(Some("did:plc:a")).await.unwrap();
    let s = &states[0];
    assert_eq!(
        (
            s.pages,
            s.records_synced,
            s.records_failed,
            s.cursor.as_deref(),
            s.rev.as_deref(),
            s.status
        ),
        (1, 2, 1, Some("2"), Some("3a"), ImportStatus::InProgress)
    );
    assert_eq!(likes_of(&store, "a").await, 2);
    assert_eq!(store.load_cursor("s").await.unwrap(), None);

    // The last page: counted, and the pair completed with its lease given
    // back, by the page's own commit.
    let err = store
        .commit(&page("thief", ["3", "4"], true))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost), "{err}");
    store.commit(&page("me", ["3", "4"], true)).await.unwrap();
    let s = &state_of_a(&store).await;
    assert_eq!(
        (
            s.pages,
            s.records_synced,
            s.cursor.as_deref(),
            s.rev.as_deref(),
            s.status,
            s.lease_owner.as_deref(),
            s.lease_expires_at.as_deref(),
            s.completed_at.is_some()
        ),
        (
            2,
            4,
            None,
            Some("3a"),
            ImportStatus::Completed,
            None,
            None,
            true
        )
    );
    assert_eq!(likes_of(&store, "a").await, 4);
}

/// The import state of `did:plc:a` (its one pair).
async fn state_of_a(store: &Store) -> ImportState {
    store
        .import_states(Some("did:plc:a"), StatusFilter::All, 10)
        .await
        .unwrap()
        .remove(0)
}

/// The last page of the claimed likes of `a` (`state`), by `owner`, at rev
/// `3m`, writing `rows` and sweeping the collection at that rev.
fn swept_last_page(
    state: &ImportState,
    owner: &str,
    lease_until: &chrono::DateTime<Utc>,
    collection: &str,
    rows: Vec<Mutation>,
) -> Batch {
    let mut b = batch(rows, vec![], 0);
    b.checkpoint = Checkpoint::ImportPage(ImportPage {
        state_id: state.id,
        owner: owner.into(),
        cursor: None,
        rev: "3m".into(),
        last: true,
        failed: 0,
        lease_until: timestamp_text(lease_until),
        sweep: Some(crate::batch::Sweep {
            did: did("a"),
            collection: crate::event::Nsid::parse(collection).unwrap(),
            table: TableId(0),
            rev: "3m".into(),
        }),
    });
    b
}

/// Step 3b's floor guards later writes: once the last page of a complete
/// listing swept the repo's collection at its rev, an older write of a
/// record the listing did not have is refused, a newer one and another
/// repo's are written (on PostgreSQL each batch is one repo's collection,
/// the shape that asks the floor once before asking per row).
async fn a_swept_floor_refuses_older_rows_of_the_repo(pg: bool) {
    let (store, _dir) = open(pg).await;
    let (collection, lease_until, state) = claimed_likes(&store).await;
    let last = swept_last_page(
        &state,
        "me",
        &lease_until,
        &collection,
        vec![upsert("a", "1", "3m")],
    );
    assert_eq!(store.commit(&last).await.unwrap(), stats(1, 0));

    let older = batch(
        vec![upsert("a", "2", "3k"), upsert("a", "3", "3k")],
        vec![],
        1,
    );
    assert_eq!(store.commit(&older).await.unwrap(), stats(0, 0));
    let newer = batch(vec![upsert("a", "2", "3n")], vec![], 2);
    assert_eq!(store.commit(&newer).await.unwrap(), stats(1, 0));
    let other = batch(vec![upsert("b", "2", "3k")], vec![], 3);
    assert_eq!(store.commit(&other).await.unwrap(), stats(1, 0));
    assert_eq!(likes_of(&store, "a").await, 2);
}

/// Steps 3b and 5 together (one statement on PostgreSQL): the last page
/// of a lost lease is refused and its sweep removes nothing; under the
/// lease the sweep removes what the listing did not have, counted, and the
/// pair ends `completed` in the same commit.
async fn a_swept_last_page_is_refused_whole_under_a_lost_lease(pg: bool) {
    let (store, _dir) = open(pg).await;
    let (collection, lease_until, state) = claimed_likes(&store).await;
    let old = batch(
        vec![upsert("a", "1", "3a"), upsert("a", "2", "3a")],
        vec![],
        0,
    );
    assert_eq!(store.commit(&old).await.unwrap(), stats(2, 0));
    let last = |owner: &str| {
        let rows = vec![upsert("a", "3", "3m")];
        swept_last_page(&state, owner, &lease_until, &collection, rows)
    };
    let err = store.commit(&last("thief")).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost), "{err}");
    assert_eq!(
        likes_of(&store, "a").await,
        2,
        "the refused sweep removed rows"
    );
    let s = &state_of_a(&store).await;
    assert_eq!(s.status, ImportStatus::InProgress);

    assert_eq!(store.commit(&last("me")).await.unwrap(), stats(1, 2));
    assert_eq!(likes_of(&store, "a").await, 1);
    let s = &state_of_a(&store).await;
    assert_eq!(
        (
            s.status,
            s.records_synced,
            s.rev.as_deref(),
            s.lease_owner.as_deref()
        ),
        (ImportStatus::Completed, 1, Some("3m"), None)
    );
}

/// `parity resume` reads the DIDs with unfinished states a page at a
/// time, in DID order, each DID once, completed ones left out.
async fn resume_reads_unfinished_dids_a_page_at_a_time(pg: bool) {
    let (store, _dir) = open(pg).await;
    let cols = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    for (did, c) in [
        ("did:plc:c", cols(&["app.bsky.feed.like"])),
        (
            "did:plc:a",
            cols(&["app.bsky.feed.like", "app.bsky.feed.post"]),
        ),
        ("did:plc:d", cols(&["app.bsky.feed.like"])),
        ("did:plc:b", cols(&["app.bsky.feed.post"])),
    ] {
        store.enqueue_imports(did, &c, false).await.unwrap();
    }
    let until = Utc::now() + chrono::Duration::seconds(60);
    let st = store
        .claim_import("did:plc:d", "app.bsky.feed.like", "me", until, None)
        .await
        .unwrap()
        .unwrap();
    // Its one page is its last: the pair is completed.
    let mut last = batch(vec![], vec![], 0);
    last.checkpoint = Checkpoint::ImportPage(ImportPage {
        state_id: st.id,
        owner: "me".into(),
        cursor: None,
        rev: "3a".into(),
        last: true,
        failed: 0,
        lease_until: timestamp_text(&until),
        sweep: None,
    });
    store.commit(&last).await.unwrap();

    assert_eq!(store.count_resumable_dids(None).await.unwrap(), 3);
    let first = store.resumable_dids(None, None, 2).await.unwrap();
    assert_eq!(first, vec!["did:plc:a", "did:plc:b"]);
    let second = store
        .resumable_dids(None, Some("did:plc:b"), 2)
        .await
        .unwrap();
    assert_eq!(second, vec!["did:plc:c"]);
    assert!(
        store
            .resumable_dids(None, Some("did:plc:c"), 2)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .resumable_dids(Some("did:plc:a"), None, 2)
            .await
            .unwrap(),
        vec!["did:plc:a"]
    );
    assert_eq!(
        store.count_resumable_dids(Some("did:plc:d")).await.unwrap(),
        0
    );
}

/// A second store on the same database: another process's connection.
async fn reopen(store: &Store) -> Store {
    let url = match store {
        Store::Sqlite(s) => format!(
            "sqlite://{}",
            s.pool().connect_options().get_filename().display()
        ),
        Store::Postgres(p) => {
            let o = p.pool().connect_options();
            format!(
                "postgres://parity_test:parity_test@{}:{}/{}",
                o.get_host(),
                o.get_port(),
                o.get_database().unwrap()
            )
        }
    };
    let mut other = Store::connect(&DatabaseConfig {
        url,
        ..Default::default()
    })
    .await
    .unwrap();
    other
        .prepare(&[Builtin::Likes.schema()], &[AccountStatus::Deleted])
        .await
        .unwrap();
    other
}

fn deleted_account() -> RepoChange {
    RepoChange {
        account: Some((false, Some(AccountStatus::Deleted))),
        purge: true,
        ..Default::default()
    }
}

/// The status guard holds across writers: once another writer (another
/// process on the same file) commits an account deletion, this writer's
/// next batch refuses the DID's rows, though it wrote that DID just before
/// (and on SQLite remembers it as active).
async fn another_writers_account_change_guards_the_next_batch(pg: bool) {
    let (store, _dir) = open(pg).await;
    let other = reopen(&store).await;
    let first = batch(vec![upsert("a", "1", "3a")], vec![], 1);
    assert_eq!(store.commit(&first).await.unwrap(), stats(1, 0));

    let gone = batch(vec![], vec![(did("a"), deleted_account())], 2);
    assert_eq!(other.commit(&gone).await.unwrap(), stats(0, 1));

    let late = batch(vec![upsert("a", "2", "3b")], vec![], 3);
    assert_eq!(store.commit(&late).await.unwrap(), stats(0, 0));
    assert_eq!(likes_of(&store, "a").await, 0);
    other.close().await;
}

/// A trial commit (quarantine's, rolled back) that deletes an account
/// leaves no trace: the next real batch writes the DID's rows.
async fn a_rolled_back_account_change_is_forgotten(pg: bool) {
    let (store, _dir) = open(pg).await;
    let trial = batch(
        vec![upsert("a", "1", "3a")],
        vec![(did("a"), deleted_account())],
        1,
    );
    assert_eq!(
        store
            .run_commit(
                crate::store::Held::Borrowed(&trial),
                crate::store::commit::Finish::Rollback,
            )
            .await
            .unwrap(),
        stats(0, 0)
    );
    let real = batch(vec![upsert("a", "1", "3a")], vec![], 1);
    assert_eq!(store.commit(&real).await.unwrap(), stats(1, 0));
    assert_eq!(likes_of(&store, "a").await, 1);
}

/// A DID's rev in `parity_repos` only moves forward, also when a later
/// batch of the same writer brings an older rev (the writer may skip that
/// statement, knowing the stored rev is newer).
async fn repo_revs_only_move_forward(pg: bool) {
    let (store, _dir) = open(pg).await;
    let with_rev = |rev: &str, cursor| {
        let change = RepoChange {
            rev: Some(rev.into()),
            ..Default::default()
        };
        batch(
            vec![upsert("a", rev, rev)],
            vec![(did("a"), change)],
            cursor,
        )
    };
    store.commit(&with_rev("3c", 1)).await.unwrap();
    store.commit(&with_rev("3b", 2)).await.unwrap();
    let (rev,): (String,) = store
        .fetch_optional(
            "SELECT rev FROM parity_repos WHERE did = $1",
            vec!["did:plc:a".into()],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rev, "3c");
    store.commit(&with_rev("3d", 3)).await.unwrap();
    let (rev,): (String,) = store
        .fetch_optional(
            "SELECT rev FROM parity_repos WHERE did = $1",
            vec!["did:plc:a".into()],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rev, "3d");
}

/// A batch committed shared (`Store::commit_shared`, what `consume`'s
/// writers and the import jobs use) lands with its cursor like a borrowed
/// one, and comes back whole and the caller's alone, committed or refused,
/// so a retry or quarantine has all of it.
async fn a_shared_batch_commits_and_comes_back_whole(pg: bool) {
    use std::sync::Arc;
    let (store, _dir) = open(pg).await;
    let good = Arc::new(batch(
        vec![upsert("a", "k1", "3a"), upsert("a", "k2", "3a")],
        vec![],
        10,
    ));
    assert_eq!(store.commit_shared(&good).await.unwrap(), stats(2, 0));
    assert_eq!(cursor(&store).await, Some(10));
    assert_eq!(Arc::strong_count(&good), 1);
    assert_eq!(good.mutations.len(), 2);
    // A negative cursor breaks parity's own CHECK: refused, nothing kept.
    let refused = Arc::new(batch(vec![upsert("a", "k3", "3b")], vec![], -1));
    let err = store.commit_shared(&refused).await.unwrap_err();
    assert!(err.is_rejection(), "{err}");
    assert_eq!(cursor(&store).await, Some(10));
    assert_eq!(Arc::strong_count(&refused), 1);
    assert_eq!(refused.mutations.len(), 1);
    let (n,): (i64,) = store
        .fetch_optional("SELECT COUNT(*) FROM likes", vec![])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 2);
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$name(false).await;
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                super::$name(true).await;
            })*
        }
    };
}

on_both!(
    account_state_guards_the_same_batch,
    tombstones_guard_deletes_and_upserts,
    deletes_refused_by_the_tombstone_are_stale,
    import_page_commits_with_its_rows_or_not_at_all,
    a_swept_floor_refuses_older_rows_of_the_repo,
    a_swept_last_page_is_refused_whole_under_a_lost_lease,
    resume_reads_unfinished_dids_a_page_at_a_time,
    another_writers_account_change_guards_the_next_batch,
    a_rolled_back_account_change_is_forgotten,
    repo_revs_only_move_forward,
    a_shared_batch_commits_and_comes_back_whole,
);

/// SQLite: committed pages reach the database file without waiting for the
/// writer's own checkpoint threshold (raised to 10,000 WAL pages): the
/// checkpoint thread copies them after each commit. Polls the file size
/// (the checkpoint runs on its own thread) up to a deadline.
#[tokio::test]
async fn sqlite_commits_are_checkpointed_by_their_own_thread() {
    use std::time::{Duration, Instant};
    let (store, dir) = open(false).await;
    let path = dir.as_ref().unwrap().path().join("t.db");
    let before = std::fs::metadata(&path).unwrap().len();
    let rows = (0..2_000)
        .map(|i| upsert("b", &format!("k{i}"), "3b"))
        .collect();
    store.commit(&batch(rows, vec![], 1)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&path).unwrap().len() <= before {
        assert!(Instant::now() < deadline, "the database file never grew");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
