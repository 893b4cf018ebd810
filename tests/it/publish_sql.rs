//! The README's "Publishing the outbox" SQL, run as written: the enqueue
//! statements on both backends (every column but the named ones has a
//! default), and the trigger example on PostgreSQL.

use parity::store::{DatabaseConfig, Store};

use crate::common::TestDb;

/// The `sql` code blocks of the README section `## Publishing the outbox`.
fn readme_sql() -> Vec<String> {
    let readme = include_str!("../../README.md");
    let start = readme.find("## Publishing the outbox").expect("section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    section
        .split("```sql\n")
        .skip(1)
        .map(|b| b[..b.find("```").unwrap()].to_owned())
        .collect()
}

async fn migrated(db: &TestDb) {
    let store = Store::connect(&DatabaseConfig {
        url: db.url.clone(),
        ..DatabaseConfig::default()
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    store.close().await;
}

async fn raw(db: &TestDb, sql: &str) {
    if db.is_pg() {
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        pool.close().await;
    } else {
        let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        pool.close().await;
    }
}

async fn enqueue_sql_runs(db: TestDb) {
    migrated(&db).await;
    let blocks = readme_sql();
    assert_eq!(blocks.len(), 2, "enqueue block and trigger block");
    raw(&db, &blocks[0]).await;
    let rows = db
        .rows(
            "parity_outbox",
            &["id", "op", "rkey", "status", "attempts", "swap_cid"],
        )
        .await;
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(
        rows,
        vec![
            vec![s("1"), s("create"), None, s("pending"), s("0"), None],
            vec![
                s("2"),
                s("update"),
                s("3kabc"),
                s("pending"),
                s("0"),
                s("bafyrei…")
            ],
            vec![s("3"), s("delete"), s("3kabc"), s("pending"), s("0"), None],
        ]
    );
    // The defaults are timestamps in the format parity compares.
    let due = db
        .scalar("SELECT CAST(COUNT(*) AS TEXT) FROM parity_outbox WHERE next_attempt_at IS NOT NULL AND created_at IS NOT NULL")
        .await;
    assert_eq!(due.as_deref(), Some("3"));
    // A delete with a record, or an update without an rkey, is refused.
    let bad = "INSERT INTO parity_outbox (did, collection, rkey, op, record) VALUES ('did:plc:x', 'app.bsky.feed.post', NULL, 'update', '{}')";
    let refused = if db.is_pg() {
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        sqlx::query(bad).execute(&pool).await.is_err()
    } else {
        let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
        sqlx::query(bad).execute(&pool).await.is_err()
    };
    assert!(refused);
}

backend_tests!(readme_enqueue_sql, |db| enqueue_sql_runs(db));

/// PostgreSQL only: the example is plpgsql.
#[tokio::test]
async fn readme_trigger_example_enqueues_from_a_table() {
    let db = TestDb::postgres("readme_trigger").await;
    migrated(&db).await;
    raw(
        &db,
        "CREATE TABLE notes (id BIGSERIAL PRIMARY KEY, author_did TEXT NOT NULL, rkey TEXT, body TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL)",
    )
    .await;
    raw(&db, &readme_sql()[1]).await;
    raw(
        &db,
        "INSERT INTO notes (author_did, rkey, body, created_at) VALUES ('did:plc:abc123', NULL, 'from a trigger', '2026-12-01T10:00:00Z')",
    )
    .await;
    let row = db
        .query_text(
            "SELECT did, op, status, record->>'text', record->>'createdAt', record->>'$type' FROM parity_outbox".into(),
            6,
        )
        .await;
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(
        row,
        vec![vec![
            s("did:plc:abc123"),
            s("create"),
            s("pending"),
            s("from a trigger"),
            s("2026-12-01T10:00:00Z"),
            s("app.bsky.feed.post")
        ]]
    );
}
