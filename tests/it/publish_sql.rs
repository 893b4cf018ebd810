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

/// `parity outbox add` validates before it writes and enqueues what an
/// INSERT would; `outbox retry` re-queues failed rows with attempts reset.
async fn outbox_add_and_retry(db: TestDb) {
    let run = |args: &[&str]| {
        let out = crate::common::process::command()
            .args(["--database-url", &db.url, "outbox"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let did = "did:plc:abc123";
    let record = r#"{"$type":"app.bsky.feed.post","text":"hi","createdAt":"2026-12-01T10:00:00Z"}"#;
    let (code, out, err) = run(&[
        "add",
        "--did",
        did,
        "--collection",
        "app.bsky.feed.post",
        "--create",
        "--record",
        record,
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("Enqueued outbox row 1"), "{out}");
    // Bad input: one line, exit 2, nothing enqueued.
    for bad in [
        vec![
            "add",
            "--did",
            did,
            "--collection",
            "app.bsky.feed.post",
            "--rkey",
            "3kabc",
            "--create",
            "--delete",
        ],
        vec![
            "add",
            "--did",
            "not-a-did",
            "--collection",
            "app.bsky.feed.post",
            "--create",
            "--record",
            record,
        ],
        vec![
            "add",
            "--did",
            did,
            "--collection",
            "app.bsky.feed.post",
            "--update",
            "--record",
            record,
        ],
        vec![
            "add",
            "--did",
            did,
            "--collection",
            "app.bsky.feed.like",
            "--create",
            "--record",
            record,
        ],
        vec![
            "add",
            "--did",
            did,
            "--collection",
            "app.bsky.feed.post",
            "--delete",
            "--rkey",
            "3kabc",
            "--record",
            record,
        ],
    ] {
        let (code, _, err) = run(&bad);
        assert_eq!(code, Some(2), "{bad:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    assert_eq!(db.count("parity_outbox").await, 1);
    let (code, _, _) = run(&[
        "add",
        "--did",
        did,
        "--collection",
        "app.bsky.feed.post",
        "--rkey",
        "3kabc",
        "--delete",
    ]);
    assert_eq!(code, Some(0));

    let pool_sql =
        "UPDATE parity_outbox SET status = 'failed', attempts = 10, error = 'x' WHERE id = 1";
    if db.is_pg() {
        let p = sqlx::PgPool::connect(&db.url).await.unwrap();
        sqlx::query(pool_sql).execute(&p).await.unwrap();
    } else {
        let p = sqlx::SqlitePool::connect(&db.url).await.unwrap();
        sqlx::query(pool_sql).execute(&p).await.unwrap();
    }
    let (_, out, _) = run(&["status", "--failed"]);
    assert!(
        out.starts_with(
            "pending: 1, in_flight: 0, published: 0, pending_auth: 0, conflict: 0, failed: 1"
        ),
        "{out}"
    );
    let (code, out, _) = run(&["retry", "--failed"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("1 outbox rows queued again"), "{out}");
    let rows = db
        .rows("parity_outbox", &["id", "status", "attempts", "error"])
        .await;
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(rows[0], vec![s("1"), s("pending"), s("0"), None]);
}

backend_tests!(outbox_add_retry_commands, |db| outbox_add_and_retry(db));
