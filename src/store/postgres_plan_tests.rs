//! The plan of PostgreSQL's upsert once its guard tables are large: each
//! guard (tombstones, account status, sweep floors) is a look-up per row
//! by key, never a scan of the guard's table. As a join the planner chose
//! to hash the whole tombstone table for every statement, which made
//! parity slower the more deletes it had seen (BENCHMARKS.md, session 11).

use chrono::Utc;
use serde_json::value::RawValue;

use super::upsert_query;
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
    for sql in [&t.upsert, &t.upsert_returning] {
        let explain = format!("EXPLAIN {sql}").into();
        let plan: Vec<String> = upsert_query(t, &explain, &refs, Utc::now())
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
