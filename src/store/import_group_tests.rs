//! Import pages committed through a store that groups them
//! ([`Store::group_import_pages`]): pages waiting at once land together,
//! each with its own counts, sweep and lease check; a page whose lease was
//! taken over fails alone and the others commit. On PostgreSQL the group
//! is one transaction (`postgres_group.rs`); SQLite's writer thread groups
//! what waits in its queue.

use std::sync::Arc;

use chrono::Utc;

use super::commit::tests::{batch, delete, did, open, stats, upsert};
use super::{CommitStats, ImportState, StatusFilter, Store, StoreError};
use crate::batch::{Batch, Checkpoint, ImportPage, Sweep};
use crate::event::Nsid;
use crate::mapper::TableId;
use crate::mapper::table::timestamp_text;

const LIKE: &str = "app.bsky.feed.like";

/// The likes of `did:plc:<d>` queued and claimed by `owner`.
async fn claim(store: &Store, d: &str, owner: &str) -> ImportState {
    let d = format!("did:plc:{d}");
    let collection = [LIKE.to_owned()];
    store.enqueue_imports(&d, &collection, false).await.unwrap();
    let until = Utc::now() + chrono::Duration::minutes(5);
    store
        .claim_import(&d, LIKE, owner, until, None)
        .await
        .unwrap()
        .unwrap()
}

/// The last page of `d`'s likes at rev `3m` (rkeys `1`, `2`), written as
/// `owner`, sweeping what the repo no longer has.
fn last_page(d: &str, state: &ImportState, owner: &str) -> Arc<Batch> {
    let mut b = batch(vec![upsert(d, "1", "3m"), upsert(d, "2", "3m")], vec![], 0);
    b.checkpoint = Checkpoint::ImportPage(ImportPage {
        state_id: state.id,
        owner: owner.into(),
        cursor: None,
        rev: "3m".into(),
        last: true,
        failed: 0,
        lease_until: timestamp_text(&(Utc::now() + chrono::Duration::minutes(5))),
        sweep: Some(Sweep {
            did: did(d),
            collection: Nsid::parse(LIKE).unwrap(),
            table: TableId(0),
            rev: "3m".into(),
        }),
    });
    Arc::new(b)
}

/// Commits `pages` at once: each is queued before any is written.
async fn commit_at_once(
    store: &Store,
    pages: &[Arc<Batch>],
) -> Vec<Result<CommitStats, StoreError>> {
    futures_util::future::join_all(pages.iter().map(|p| store.commit_shared(p))).await
}

/// `(synced, skipped, status)` of `d`'s likes.
async fn counted(store: &Store, d: &str) -> (i64, i64, String) {
    let s = &store
        .import_states(Some(&format!("did:plc:{d}")), StatusFilter::All, 10)
        .await
        .unwrap()[0];
    (
        s.records_synced,
        s.records_skipped,
        s.status.as_str().to_owned(),
    )
}

async fn rkeys(store: &Store, d: &str) -> Vec<String> {
    store
        .fetch_all::<(String,)>(
            "SELECT rkey FROM likes WHERE did = $1 ORDER BY rkey",
            vec![format!("did:plc:{d}").into()],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|(r,)| r)
        .collect()
}

async fn pages_land_together_and_fail_alone(pg: bool) {
    let (mut store, _dir) = open(pg).await;
    store.group_import_pages(2);
    // Before the import: an old row of `a` the snapshot no longer has, and
    // a newer delete of `c`'s record 2.
    store
        .commit(&batch(vec![upsert("a", "old", "3a")], vec![], 1))
        .await
        .unwrap();
    store
        .commit(&batch(vec![delete("c", "2", "3z")], vec![], 2))
        .await
        .unwrap();
    let (a, c) = (
        claim(&store, "a", "me").await,
        claim(&store, "c", "me").await,
    );

    let results = commit_at_once(
        &store,
        &[last_page("a", &a, "me"), last_page("c", &c, "me")],
    )
    .await;
    let results: Vec<CommitStats> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(results, [stats(2, 1), stats(1, 0)]);
    assert_eq!(rkeys(&store, "a").await, ["1", "2"]);
    assert_eq!(rkeys(&store, "c").await, ["1"]);
    assert_eq!(counted(&store, "a").await, (2, 0, "completed".into()));
    assert_eq!(counted(&store, "c").await, (1, 1, "completed".into()));

    // A page whose lease another process took: refused alone.
    let (b, d) = (
        claim(&store, "b", "thief").await,
        claim(&store, "d", "me").await,
    );
    let results = commit_at_once(
        &store,
        &[last_page("b", &b, "me"), last_page("d", &d, "me")],
    )
    .await;
    assert!(
        matches!(results[0], Err(StoreError::LeaseLost)),
        "{:?}",
        results[0]
    );
    assert_eq!(results[1].as_ref().unwrap(), &stats(2, 0));
    assert!(rkeys(&store, "b").await.is_empty());
    assert_eq!(rkeys(&store, "d").await, ["1", "2"]);
    assert_eq!(counted(&store, "b").await.2, "in_progress");
}

/// Two pages of one repo waiting at once: the second waits for the next
/// group, and is written after the first, even when nothing else comes to
/// the queue (a committer waiting for more pages must not hold it up).
async fn a_repos_pages_waiting_at_once_land_in_order(pg: bool) {
    let (mut store, _dir) = open(pg).await;
    store.group_import_pages(2);
    let a = claim(&store, "a", "me").await;
    let mut first = batch(
        vec![upsert("a", "1", "3m"), upsert("a", "2", "3m")],
        vec![],
        0,
    );
    let Checkpoint::ImportPage(last) = &last_page("a", &a, "me").checkpoint else {
        unreachable!()
    };
    first.checkpoint = Checkpoint::ImportPage(ImportPage {
        cursor: Some("2".into()),
        last: false,
        sweep: None,
        ..last.clone()
    });
    let mut second = batch(vec![upsert("a", "3", "3m")], vec![], 0);
    second.checkpoint = Checkpoint::ImportPage(last.clone());
    let pages = [Arc::new(first), Arc::new(second)];
    let results = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        commit_at_once(&store, &pages),
    )
    .await
    .expect("both pages are answered");
    let results: Vec<CommitStats> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(results, [stats(2, 0), stats(1, 0)]);
    assert_eq!(rkeys(&store, "a").await, ["1", "2", "3"]);
    assert_eq!(counted(&store, "a").await, (3, 0, "completed".into()));
}

/// PostgreSQL: pages waiting at once are one transaction (their rows and
/// import states share one `xmin`), where without grouping each page is
/// its own.
#[tokio::test]
async fn postgres_commits_waiting_pages_in_one_transaction() {
    let (mut store, _dir) = open(true).await;
    store.group_import_pages(1);
    let dids = ["a", "b", "c", "d"];
    let mut pages = Vec::new();
    for d in dids {
        let state = claim(&store, d, "me").await;
        pages.push(last_page(d, &state, "me"));
    }
    for r in commit_at_once(&store, &pages).await {
        assert_eq!(r.unwrap(), stats(2, 0));
    }
    let xmins = |table: &str| format!("SELECT COUNT(DISTINCT xmin::text) FROM {table}");
    for table in ["likes", "parity_import_states"] {
        let (n,): (i64,) = store
            .fetch_optional(&xmins(table), vec![])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1, "{table}: the pages took {n} transactions");
    }
}

#[tokio::test]
async fn pages_land_together_and_fail_alone_sqlite() {
    pages_land_together_and_fail_alone(false).await;
}

#[tokio::test]
async fn pages_land_together_and_fail_alone_postgres() {
    pages_land_together_and_fail_alone(true).await;
}

#[tokio::test]
async fn a_repos_pages_waiting_at_once_land_in_order_sqlite() {
    a_repos_pages_waiting_at_once_land_in_order(false).await;
}

#[tokio::test]
async fn a_repos_pages_waiting_at_once_land_in_order_postgres() {
    a_repos_pages_waiting_at_once_land_in_order(true).await;
}
