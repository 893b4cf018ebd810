//! The plans of PostgreSQL's upsert. Once its guard tables are large, each
//! guard (tombstones, account status, sweep floors) is a look-up per row
//! by key, never a scan of the guard's table: as a join the planner chose
//! to hash the whole tombstone table for every statement, which made
//! parity slower the more deletes it had seen (BENCHMARKS.md, session 11).
//! The rows of one repo's collection ask the tombstones and the floors per
//! row only when the repo has some (`EXPLAIN ANALYZE`, rolled back).

use chrono::Utc;
use serde_json::value::RawValue;

use super::postgres_upsert::query_with;
use crate::event::Did;
use crate::mapper::{Row, TableId, Value};
use crate::store::Store;
use crate::store::commit::tests::open;

/// Rows of a batch's share for one writer (5,000 events over 4 writers).
const ROWS: usize = 1_250;
/// Rows in each guard table: well past where a hash join looked cheaper.
const GUARD_ROWS: i64 = 200_000;

#[tokio::test]
async fn guards_probe_by_key_with_large_guard_tables() {
    let (store, _) = open(true).await;
    let Store::Postgres(p) = &store else {
        unreachable!()
    };
    for sql in [
        "INSERT INTO parity_tombstones (uri, rev, deleted_at) \
         SELECT 'at://did:plc:t' || i || '/app.bsky.feed.like/3k', '3k', now() \
         FROM generate_series(1, $1) i",
        "INSERT INTO parity_repos (did, status, active, updated_at) \
         SELECT 'did:plc:r' || i, CASE WHEN i % 100 = 0 THEN 'deleted' ELSE 'active' END, \
         i % 100 <> 0, now() FROM generate_series(1, $1) i",
        "ANALYZE parity_tombstones",
        "ANALYZE parity_repos",
    ] {
        let q = sqlx::query(sqlx::AssertSqlSafe(sql));
        let q = if sql.contains("$1") {
            q.bind(GUARD_ROWS)
        } else {
            q
        };
        q.execute(p.pool()).await.unwrap();
    }
    let t = &p.tables[0];
    let rows: Vec<Row> = (0..ROWS)
        .map(|i| Row {
            table: TableId(0),
            uri: format!("at://did:plc:r{i}/app.bsky.feed.like/3m{i}"),
            did: Did::parse(&format!("did:plc:r{i}")).unwrap(),
            rkey: format!("3m{i}"),
            cid: format!("cid{i}"),
            rev: "3m".into(),
            record: RawValue::from_string("{}".into()).unwrap(),
            values: vec![Value::Null; t.schema.columns.len()],
        })
        .collect();
    let refs: Vec<&Row> = rows.iter().collect();
    // Which join the planner picks depends on statistics this test cannot
    // cheaply reproduce (the bench's 3M events); without nested loops, a
    // guard that can be planned as a join is planned as a hash join over
    // its whole table. A guard that is a per-row subplan is not affected.
    let mut c = p.pool().acquire().await.unwrap();
    sqlx::query("SET enable_nestloop = off")
        .execute(&mut *c)
        .await
        .unwrap();
    for returning in [false, true] {
        let explain = |s: &std::sync::Arc<str>| format!("EXPLAIN {s}").into();
        let plan: Vec<String> =
            query_with(&t.schema, &t.upsert, &refs, Utc::now(), returning, explain)
                .fetch_all(&mut *c)
                .await
                .unwrap()
                .iter()
                .map(|r| sqlx::Row::get(r, 0))
                .collect();
        let scans: Vec<&String> = plan
            .iter()
            .filter(|l| {
                l.contains("Seq Scan on parity_tombstones")
                    || l.contains("Seq Scan on parity_repos")
                    || l.contains("Hash Anti Join")
            })
            .collect();
        assert!(scans.is_empty(), "{}", plan.join("\n"));
    }
}

const A: &str = "did:plc:aaaa";
const B: &str = "did:plc:bbbb";
const LIKE: &str = "app.bsky.feed.like";

fn like(rkey: &str) -> Row {
    super::postgres_upsert::tests::like(A, A, LIKE, rkey)
}

/// A tombstone of `uri` at a rev newer than the rows'.
async fn tombstone(p: &super::PgStore, uri: &str) {
    sqlx::query("INSERT INTO parity_tombstones (uri, rev, deleted_at) VALUES ($1, '3z', now())")
        .bind(uri)
        .execute(p.pool())
        .await
        .unwrap();
}

/// The lines of `EXPLAIN ANALYZE` of the upsert of `rows`, in a
/// transaction that is rolled back.
async fn analyzed(store: &Store, rows: &[Row]) -> Vec<String> {
    let Store::Postgres(p) = store else {
        unreachable!()
    };
    let t = &p.tables[0];
    let refs: Vec<&Row> = rows.iter().collect();
    let mut tx = p.pool().begin().await.unwrap();
    let explain = |s: &std::sync::Arc<str>| format!("EXPLAIN (ANALYZE, COSTS OFF) {s}").into();
    let plan = query_with(&t.schema, &t.upsert, &refs, Utc::now(), false, explain)
        .fetch_all(&mut *tx)
        .await
        .unwrap()
        .iter()
        .map(|r| sqlx::Row::get(r, 0))
        .collect();
    tx.rollback().await.unwrap();
    plan
}

/// The plan line of the scan of `table` under `alias`.
fn scan<'p>(plan: &'p [String], table: &str, alias: &str) -> &'p str {
    let needle = format!(" on {table} {alias} ");
    plan.iter()
        .find(|l| format!("{l} ").contains(&needle))
        .unwrap_or_else(|| panic!("no scan of {table} {alias} in\n{}", plan.join("\n")))
}

#[tokio::test]
async fn one_repos_page_asks_tombstones_and_floors_per_row_only_when_it_has_some() {
    let (store, _) = open(true).await;
    let rows: Vec<Row> = (0..100).map(|i| like(&format!("3k{i:03}"))).collect();

    // Nothing of the repo in the guard tables: asked once, never per row.
    let plan = analyzed(&store, &rows).await;
    for (table, alias) in [("parity_tombstones", "ts"), ("parity_sweep_floors", "f")] {
        let line = scan(&plan, table, alias);
        assert!(line.contains("never executed"), "{}", plan.join("\n"));
    }
    for (table, alias) in [("parity_tombstones", "t1"), ("parity_sweep_floors", "f1")] {
        let line = scan(&plan, table, alias);
        assert!(line.contains("loops=1)"), "{}", plan.join("\n"));
    }

    // Another repo's tombstone changes nothing; one in this repo's
    // collection makes the tombstone guard look at every row.
    let Store::Postgres(p) = &store else {
        unreachable!()
    };
    for uri in [
        format!("at://{B}/{LIKE}/3k001"),
        format!("at://{A}/app.bsky.feed.repost/3k001"),
    ] {
        tombstone(p, &uri).await;
    }
    let plan = analyzed(&store, &rows).await;
    assert!(scan(&plan, "parity_tombstones", "ts").contains("never executed"));
    tombstone(p, &format!("at://{A}/{LIKE}/3k050")).await;
    let plan = analyzed(&store, &rows).await;
    assert!(
        scan(&plan, "parity_tombstones", "ts").contains("loops=100)"),
        "{}",
        plan.join("\n")
    );
    assert!(scan(&plan, "parity_sweep_floors", "f").contains("never executed"));

    // A floor of the repo's collection: the floor guard looks at every row
    // the tombstone guard let through (all but the tombstoned 3k050).
    sqlx::query("INSERT INTO parity_sweep_floors (did, collection, rev) VALUES ($1, $2, '3a')")
        .bind(A)
        .bind(LIKE)
        .execute(p.pool())
        .await
        .unwrap();
    let plan = analyzed(&store, &rows).await;
    assert!(
        scan(&plan, "parity_sweep_floors", "f").contains("loops=99)"),
        "{}",
        plan.join("\n")
    );
}
