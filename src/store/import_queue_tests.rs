//! `claim_queued` on both backends with a run of 20,000 DIDs, the first
//! half done: claims come in the documented order, and each one reads one
//! index range, not every DID of the run (the plan, not a timing).

use chrono::{Duration, Utc};

use super::CLAIM_QUEUED;
use crate::mapper::table::timestamp_text;
use crate::store::commit::tests::open;
use crate::store::{StatusFilter, Store};

const QUEUED: i64 = 20_000;

/// `QUEUED` DIDs in run `r`: ids 1..=half completed, then pending; then
/// one failed by an earlier run, one failed by this run, and one in
/// progress under an expired lease.
async fn fill(store: &Store, since: chrono::DateTime<Utc>) {
    let old = timestamp_text(&(since - Duration::hours(1)));
    let later = timestamp_text(&(since + Duration::seconds(1)));
    store
        .execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
             INSERT INTO parity_import_queue (run, did, status, created_at, updated_at) \
             SELECT 'r', 'did:plc:q' || i, CASE WHEN i <= $1 / 2 THEN 'completed' ELSE 'pending' END, \
                    $2::timestamptz, $2::timestamptz FROM n",
            vec![QUEUED.into(), old.clone().into()],
        )
        .await
        .unwrap();
    for (did, status, updated, lease) in [
        ("did:plc:oldfail", "failed", &old, None),
        ("did:plc:ownfail", "failed", &later, None),
        ("did:plc:expired", "in_progress", &old, Some(&old)),
    ] {
        store
            .execute(
                "INSERT INTO parity_import_queue (run, did, status, lease_owner, lease_expires_at, created_at, updated_at) \
                 VALUES ('r', $1, $2, 'gone', $3::timestamptz, $4::timestamptz, $4::timestamptz)",
                vec![
                    did.into(),
                    status.into(),
                    lease.cloned().into(),
                    updated.clone().into(),
                ],
            )
            .await
            .unwrap();
    }
    store
        .execute("ANALYZE parity_import_queue", vec![])
        .await
        .unwrap();
}

async fn claims_in_order(pg: bool) {
    let (store, _dir) = open(pg).await;
    let since = Utc::now();
    fill(&store, since).await;
    let lease = since + Duration::minutes(5);
    let first = store
        .claim_queued("r", "me", lease, since, 1)
        .await
        .unwrap()
        .pop();
    assert_eq!(
        first.unwrap().did,
        "did:plc:expired",
        "an expired lease first"
    );
    let second = store
        .claim_queued("r", "me", lease, since, 1)
        .await
        .unwrap()
        .pop();
    assert_eq!(
        second.unwrap().did,
        format!("did:plc:q{}", QUEUED / 2 + 1),
        "then the oldest pending DID"
    );
    store
        .execute(
            "UPDATE parity_import_queue SET status = 'completed' WHERE status = 'pending'",
            vec![],
        )
        .await
        .unwrap();
    let third = store
        .claim_queued("r", "me", lease, since, 1)
        .await
        .unwrap()
        .pop();
    assert_eq!(
        third.unwrap().did,
        "did:plc:oldfail",
        "then an earlier run's failure"
    );
    assert!(
        store
            .claim_queued("r", "me", lease, since, 1)
            .await
            .unwrap()
            .is_empty(),
        "never this run's own failure"
    );
}

#[tokio::test]
async fn claims_come_in_order_sqlite() {
    claims_in_order(false).await;
}

#[tokio::test]
async fn claims_come_in_order_postgres() {
    claims_in_order(true).await;
}

/// A batch takes the expired lease, then the oldest pending DIDs; the
/// next batch (another importer) takes the following ones; concurrent
/// batches never share a DID.
async fn batches_claim_each_did_once(pg: bool) {
    let (store, _dir) = open(pg).await;
    let since = Utc::now();
    fill(&store, since).await;
    let lease = since + Duration::minutes(5);
    let dids = |b: Vec<super::QueuedDid>| b.into_iter().map(|q| q.did).collect::<Vec<_>>();
    let first = dids(
        store
            .claim_queued("r", "me", lease, since, 3)
            .await
            .unwrap(),
    );
    let half = QUEUED / 2;
    assert_eq!(
        first,
        [
            format!("did:plc:q{}", half + 1),
            format!("did:plc:q{}", half + 2),
            "did:plc:expired".to_owned()
        ],
        "the expired lease and the two oldest pending, by id"
    );
    let second = dids(
        store
            .claim_queued("r", "other", lease, since, 2)
            .await
            .unwrap(),
    );
    assert_eq!(
        second,
        [
            format!("did:plc:q{}", half + 3),
            format!("did:plc:q{}", half + 4)
        ]
    );
    let claims = (0..4).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .claim_queued("r", &format!("w{i}"), lease, since, 500)
                .await
                .unwrap()
        })
    });
    let mut all: Vec<String> = Vec::new();
    for c in claims {
        let batch = c.await.unwrap();
        assert_eq!(batch.len(), 500);
        all.extend(dids(batch));
    }
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "a DID was claimed twice");
    let in_progress: Option<(i64,)> = store
        .fetch_optional(
            "SELECT COUNT(*) FROM parity_import_queue WHERE status = 'in_progress'",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(in_progress, Some((3 + 2 + 2_000,)));
}

#[tokio::test]
async fn batches_claim_each_did_once_sqlite() {
    batches_claim_each_did_once(false).await;
}

#[tokio::test]
async fn batches_claim_each_did_once_postgres() {
    batches_claim_each_did_once(true).await;
}

/// The claim's plan on SQLite: every step a search of an index, no scan of
/// the run and no sort of it.
#[tokio::test]
async fn a_claim_searches_index_ranges_sqlite() {
    let (store, _dir) = open(false).await;
    let since = Utc::now();
    fill(&store, since).await;
    let Store::Sqlite(s) = &store else {
        unreachable!()
    };
    let sql = crate::store::dialect::Dialect::Sqlite.translate(CLAIM_QUEUED);
    let now = timestamp_text(&since);
    let plan: Vec<(i64, i64, i64, String)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
            .bind("r")
            .bind("me")
            .bind(now.clone())
            .bind(now.clone())
            .bind(now)
            .bind(8_i64)
            .fetch_all(s.pool())
            .await
            .unwrap();
    let steps: Vec<&str> = plan.iter().map(|(_, _, _, d)| d.as_str()).collect();
    // The only scans are of the claim's own kinds, each at most `$6` rows
    // read from an index range (`SEARCH` above them).
    let bounded = ["SCAN expired", "SCAN pending", "SCAN failed"];
    assert!(
        steps
            .iter()
            .all(|d| (!d.starts_with("SCAN") || bounded.contains(d)) && !d.contains("TEMP B-TREE")),
        "{steps:#?}"
    );
    assert_eq!(
        steps
            .iter()
            .filter(|d| d.starts_with("SEARCH parity_import_queue USING"))
            .count(),
        4,
        "one index search per kind, and the update by id: {steps:#?}"
    );
}

/// One DID's states are read through the `(did, collection)` index, not
/// by scanning every state of the run: each imported DID reads them.
#[tokio::test]
async fn one_dids_states_are_searched_not_scanned_sqlite() {
    let (store, _dir) = open(false).await;
    let Store::Sqlite(s) = &store else {
        unreachable!()
    };
    let plan_of = |sql: String| async move {
        let sql = crate::store::dialect::Dialect::Sqlite
            .translate(&sql)
            .into_owned();
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                .bind("did:plc:x")
                .fetch_all(s.pool())
                .await
                .unwrap();
        plan.into_iter().map(|p| p.3).collect::<Vec<_>>()
    };
    for filter in [StatusFilter::All, StatusFilter::Pending] {
        let steps = plan_of(store.import_states_sql(Some("did:plc:x"), filter, 10)).await;
        assert!(
            steps
                .iter()
                .any(|d| d.starts_with("SEARCH parity_import_states USING INDEX")
                    && d.contains("did=?")),
            "{steps:#?}"
        );
        assert!(!steps.iter().any(|d| d.starts_with("SCAN")), "{steps:#?}");
    }
}

/// The claim on PostgreSQL, run under `EXPLAIN ANALYZE`: no step reads and
/// throws away the DIDs already done (the primary-key walk the planner
/// chose before the partial index read 10,000 of them).
#[tokio::test]
async fn a_claim_reads_no_done_dids_postgres() {
    let (store, _dir) = open(true).await;
    let since = Utc::now();
    fill(&store, since).await;
    // Past the expired lease, so the pending range is the one read.
    store
        .claim_queued("r", "me", since, since, 1)
        .await
        .unwrap();
    let Store::Postgres(p) = &store else {
        unreachable!()
    };
    let plan: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "EXPLAIN ANALYZE {CLAIM_QUEUED}"
    )))
    .bind("r")
    .bind("me")
    .bind(since)
    .bind(since)
    .bind(since)
    .bind(8_i64)
    .fetch_all(p.pool())
    .await
    .unwrap();
    let removed: Vec<u64> = plan
        .iter()
        .filter_map(|(l,)| l.trim().strip_prefix("Rows Removed by Filter: "))
        .map(|n| n.parse().unwrap())
        .collect();
    assert!(
        removed.iter().all(|&n| n < 100),
        "{removed:?}\n{}",
        plan.iter()
            .map(|(l,)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A DID's states are read once or twice per imported DID on the SQLite
/// writer: the statement must be planned once, not again for each DID
/// (SQLite plans again whenever a bound `LIMIT` changes).
#[tokio::test]
async fn one_dids_states_read_is_not_prepared_again_per_did_sqlite() {
    let (store, dir) = open(false).await;
    let sql = crate::store::dialect::Dialect::Sqlite
        .translate(&store.import_states_sql(Some("did:plc:x"), StatusFilter::All, i64::MAX))
        .into_owned();
    let dir = dir.unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
    for n in 0..3 {
        let mut stmt = conn.prepare_cached(&sql).unwrap();
        stmt.raw_bind_parameter(1, format!("did:plc:{n}")).unwrap();
        // Whatever else the statement binds (a bound limit would be one),
        // bound as the store binds it: the same value each time.
        for at in 2..=stmt.parameter_count() {
            stmt.raw_bind_parameter(at, i64::MAX).unwrap();
        }
        let mut rows = stmt.raw_query();
        while rows.next().unwrap().is_some() {}
        drop(rows);
        assert_eq!(
            stmt.get_status(rusqlite::StatementStatus::RePrepare),
            0,
            "{sql}"
        );
    }
}
