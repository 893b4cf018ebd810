//! When a step's rows take `COPY`, and that what `COPY` writes reads back
//! as the upsert would have written it.

use chrono::{TimeZone, Utc};
use serde_json::value::RawValue;

use super::PgStore;
use crate::mapper::{ColumnType, Row, Value};
use crate::store::Store;
use crate::store::commit::tests::open;
use crate::store::postgres_copy::{MIN_ROWS, write};
use crate::store::postgres_upsert::tests::like;

const A: &str = "did:plc:aaaa";
const B: &str = "did:plc:bbbb";
const LIKE: &str = "app.bsky.feed.like";

fn rows(did: &str, n: usize) -> Vec<Row> {
    (0..n)
        .map(|i| like(did, did, LIKE, &format!("3k{i:03}")))
        .collect()
}

/// Whether `rows` took `COPY` (and were written) in a transaction that is
/// then rolled back.
async fn copied(p: &PgStore, rows: &[Row]) -> bool {
    let t = &p.tables[0];
    let refs: Vec<&Row> = rows.iter().collect();
    let mut tx = p.pool().begin().await.unwrap();
    let n = write(&mut tx, &t.schema, &t.copy, &refs, Utc::now())
        .await
        .unwrap();
    if let Some(n) = n {
        assert_eq!(n, rows.len() as u64);
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM likes")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(count as u64, n, "COPY wrote every row");
    }
    tx.rollback().await.unwrap();
    n.is_some()
}

async fn run(p: &PgStore, sql: &str, args: &[&str]) {
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
    for a in args {
        q = q.bind(*a);
    }
    q.execute(p.pool()).await.unwrap();
}

#[tokio::test]
async fn only_a_repos_new_rows_that_no_guard_refuses_take_copy() {
    let (store, _) = open(true).await;
    let Store::Postgres(p) = &store else {
        unreachable!()
    };
    let page = rows(A, MIN_ROWS);
    assert!(copied(p, &page).await, "a new repo's page");
    assert!(!copied(p, &page[..MIN_ROWS - 1]).await, "too few rows");
    let mut two = page.clone();
    two.extend(rows(B, 1));
    assert!(!copied(p, &two).await, "two repos");

    // Each thing that would make the upsert refuse or update a row.
    let cases: [(&str, Vec<&str>); 4] = [
        (
            "INSERT INTO parity_tombstones (uri, rev, deleted_at) VALUES ($1, '3a', now())",
            vec!["at://did:plc:aaaa/app.bsky.feed.like/zzz"],
        ),
        (
            "INSERT INTO parity_sweep_floors (did, collection, rev) VALUES ($1, $2, '3a')",
            vec![A, LIKE],
        ),
        (
            "INSERT INTO parity_repos (did, status, active, updated_at) VALUES ($1, 'deleted', false, now())",
            vec![A],
        ),
        (
            "INSERT INTO likes (uri, did, rkey, cid, rev, record, synced_at) \
             VALUES ($1, $2, '3k007', 'c', '3a', '{}', now())",
            vec!["at://did:plc:aaaa/app.bsky.feed.like/3k007", A],
        ),
    ];
    for (sql, args) in cases {
        let mut tx = p.pool().begin().await.unwrap();
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
        for a in &args {
            q = q.bind(*a);
        }
        q.execute(&mut *tx).await.unwrap();
        let t = &p.tables[0];
        let refs: Vec<&Row> = page.iter().collect();
        let n = write(&mut tx, &t.schema, &t.copy, &refs, Utc::now())
            .await
            .unwrap();
        assert_eq!(n, None, "{sql}");
        tx.rollback().await.unwrap();
    }
    // Another repo's or collection's guard rows change nothing.
    run(
        p,
        "INSERT INTO parity_tombstones (uri, rev, deleted_at) VALUES ($1, '3a', now())",
        &["at://did:plc:bbbb/app.bsky.feed.like/3k001"],
    )
    .await;
    run(
        p,
        "INSERT INTO parity_sweep_floors (did, collection, rev) VALUES ($1, 'app.bsky.feed.repost', '3a')",
        &[A],
    )
    .await;
    assert!(copied(p, &page).await);
}

/// Text with every character `COPY` escapes, NULLs, and each column type:
/// read back exactly as given.
#[tokio::test]
async fn rows_written_by_copy_read_back_as_given() {
    let (store, _) = open(true).await;
    let Store::Postgres(p) = &store else {
        unreachable!()
    };
    let t = &p.tables[0];
    let tricky = "tab\there\nnewline\r\\back\\slash \\N é ✓";
    let at = Utc.with_ymd_and_hms(2024, 11, 30, 12, 0, 0).unwrap();
    let mut page = rows(A, MIN_ROWS);
    for (i, row) in page.iter_mut().enumerate() {
        let json = serde_json::json!({ "text": tricky, "i": i }).to_string();
        row.record = RawValue::from_string(json).unwrap();
        row.values = t
            .schema
            .columns
            .iter()
            .map(|c| match (i % 2, c.ty) {
                (1, _) => Value::Null,
                (_, ColumnType::Text) => Value::Text(tricky.into()),
                (_, ColumnType::Json) => Value::Json(r#"{"a":"\\t"}"#.into()),
                (_, ColumnType::Integer) => Value::Integer(-42),
                (_, ColumnType::Boolean) => Value::Boolean(true),
                (_, ColumnType::Timestamp) => Value::Timestamp(at),
            })
            .collect();
    }
    let refs: Vec<&Row> = page.iter().collect();
    let mut tx = p.pool().begin().await.unwrap();
    let n = write(&mut tx, &t.schema, &t.copy, &refs, Utc::now())
        .await
        .unwrap();
    assert_eq!(n, Some(MIN_ROWS as u64));
    tx.commit().await.unwrap();

    let cols = crate::store::schema::all_columns(&t.schema);
    let select: Vec<String> = cols.iter().map(|c| format!("{c}::text")).collect();
    let sql = format!("SELECT {} FROM likes WHERE uri = $1", select.join(", "));
    for row in &page {
        let got = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(&row.uri)
            .fetch_one(p.pool())
            .await
            .unwrap();
        let text = |i: usize| -> Option<String> { sqlx::Row::get(&got, i) };
        assert_eq!(text(0).as_deref(), Some(row.uri.as_str()));
        assert_eq!(text(1).as_deref(), Some(row.did.as_str()));
        assert_eq!(text(5).as_deref(), Some(row.record.get()));
        for (i, (c, v)) in t.schema.columns.iter().zip(&row.values).enumerate() {
            let got = text(7 + i);
            let want: Option<String> = match v {
                Value::Null => None,
                Value::Text(s) | Value::Json(s) => Some(s.clone()),
                Value::Integer(n) => Some(n.to_string()),
                Value::Boolean(b) => Some(b.to_string()),
                Value::Timestamp(_) => {
                    let (s,): (String,) = sqlx::query_as("SELECT $1::timestamptz::text")
                        .bind(at)
                        .fetch_one(p.pool())
                        .await
                        .unwrap();
                    Some(s)
                }
            };
            let want = match (c.ty, want) {
                (ColumnType::Boolean, Some(b)) => {
                    Some(if b == "true" { "true" } else { "false" }.to_owned())
                }
                (_, w) => w,
            };
            assert_eq!(got, want, "column {}", c.name);
        }
    }
}
