//! The record tables compute `uri` on SQLite (migration 20261203000000):
//! a fresh database has the layout, an upgrade keeps every row and refuses
//! what it would lose, and the writer refuses a row whose URI the table
//! would compute otherwise.

use super::*;
use crate::mapper::Mutation;
use crate::store::Store;
use crate::store::commit::tests::{batch, open, upsert};

/// The last migration before the layout change.
const BEFORE: i64 = 20261201800000;

const TABLES: [&str; 7] = [
    "posts", "likes", "reposts", "follows", "blocks", "profiles", "records",
];

async fn connect(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::connect(&DatabaseConfig {
        url: format!("sqlite://{}", dir.path().join("t.db").display()),
        ..DatabaseConfig::default()
    })
    .await
    .unwrap()
}

async fn migrate_to(s: &SqliteStore, version: i64) {
    let mut conn = s.pool.acquire().await.unwrap();
    MIGRATOR
        .run_direct(Some(version), &mut *conn, false)
        .await
        .unwrap();
}

/// `hidden` of `uri` in each record table (2: a virtual generated column).
async fn uri_hidden(s: &SqliteStore) -> Vec<i64> {
    let mut out = Vec::new();
    for t in TABLES {
        out.push(
            sqlx::query_scalar("SELECT hidden FROM pragma_table_xinfo(?) WHERE name = 'uri'")
                .bind(t)
                .fetch_one(&s.pool)
                .await
                .unwrap(),
        );
    }
    out
}

/// Every row of every record table, as text, in a fixed order.
async fn rows(s: &SqliteStore) -> Vec<String> {
    let mut out = Vec::new();
    for t in TABLES {
        let sql =
            format!("SELECT uri || '|' || did || '|' || rkey || '|' || cid FROM {t} ORDER BY uri");
        out.extend(
            sqlx::query_scalar::<_, String>(AssertSqlSafe(sql))
                .fetch_all(&s.pool)
                .await
                .unwrap(),
        );
    }
    out
}

/// One row per table, stored the way parity wrote them before the change.
async fn seed(s: &SqliteStore) {
    for (t, c) in [
        ("posts", "app.bsky.feed.post"),
        ("likes", "app.bsky.feed.like"),
        ("reposts", "app.bsky.feed.repost"),
        ("follows", "app.bsky.graph.follow"),
        ("blocks", "app.bsky.graph.block"),
        ("profiles", "app.bsky.actor.profile"),
    ] {
        let sql = format!(
            "INSERT INTO {t} (uri, did, rkey, cid, rev, record, synced_at) \
             VALUES ('at://did:plc:a/{c}/3k', 'did:plc:a', '3k', 'cid', '3r', '{{}}', 'now')"
        );
        sqlx::query(AssertSqlSafe(sql))
            .execute(&s.pool)
            .await
            .unwrap();
    }
    sqlx::query(
        "INSERT INTO records (uri, did, rkey, cid, rev, record, synced_at, collection) \
         VALUES ('at://did:plc:a/com.example.x/self', 'did:plc:a', 'self', 'cid', '3r', '{}', 'now', 'com.example.x')",
    )
    .execute(&s.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_fresh_database_computes_uri_in_every_record_table() {
    let dir = tempfile::tempdir().unwrap();
    let s = connect(&dir).await;
    s.migrate().await.unwrap();
    assert_eq!(uri_hidden(&s).await, vec![2; TABLES.len()]);
    // `uri` keeps its place: the first column of `SELECT *`.
    let first: String =
        sqlx::query_scalar("SELECT name FROM pragma_table_xinfo('likes') WHERE cid = 0")
            .fetch_one(&s.pool)
            .await
            .unwrap();
    assert_eq!(first, "uri");
}

#[tokio::test]
async fn an_upgrade_keeps_every_row_and_its_uri() {
    let dir = tempfile::tempdir().unwrap();
    let s = connect(&dir).await;
    migrate_to(&s, BEFORE).await;
    seed(&s).await;
    // A view of the operator's on a rebuilt table.
    sqlx::query("CREATE VIEW my_likes AS SELECT uri FROM likes")
        .execute(&s.pool)
        .await
        .unwrap();
    assert_eq!(uri_hidden(&s).await, vec![0; TABLES.len()]);
    let before = rows(&s).await;
    assert_eq!(before.len(), TABLES.len());

    s.migrate().await.unwrap();
    assert_eq!(uri_hidden(&s).await, vec![2; TABLES.len()]);
    assert_eq!(rows(&s).await, before);
    let viewed: String = sqlx::query_scalar("SELECT uri FROM my_likes")
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(
        viewed, "at://did:plc:a/app.bsky.feed.like/3k",
        "the view still works"
    );
    // The indexes keep their names; the unique one on uri replaces the key.
    let idx: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'likes' ORDER BY name",
    )
    .fetch_all(&s.pool)
    .await
    .unwrap();
    assert_eq!(
        idx,
        ["likes_did_idx", "likes_subject_uri_idx", "likes_uri_key"]
    );
    // A second row with the same URI is still refused.
    let dup = sqlx::query(
        "INSERT INTO likes (did, rkey, cid, rev, record, synced_at) \
         VALUES ('did:plc:a', '3k', 'c2', '3s', '{}', 'now')",
    )
    .execute(&s.pool)
    .await;
    assert!(dup.is_err(), "uri stays unique");
}

/// Runs the layout migration on a database prepared by `spoil` and
/// returns its error, checking nothing changed.
async fn refused(spoil: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let s = connect(&dir).await;
    migrate_to(&s, BEFORE).await;
    seed(&s).await;
    sqlx::query(AssertSqlSafe(spoil.to_owned()))
        .execute(&s.pool)
        .await
        .unwrap();
    let before = rows(&s).await;
    let err = s.migrate().await.unwrap_err().to_string();
    assert_eq!(
        uri_hidden(&s).await,
        vec![0; TABLES.len()],
        "nothing migrated"
    );
    assert_eq!(rows(&s).await, before, "no row changed");
    err
}

#[tokio::test]
async fn an_upgrade_refuses_a_uri_its_columns_do_not_give() {
    let err = refused(
        "INSERT INTO likes (uri, did, rkey, cid, rev, record, synced_at) \
         VALUES ('at://did:plc:a/com.example.like/3k', 'did:plc:a', '3k', 'c', '3r', '{}', 'now')",
    )
    .await;
    assert!(
        err.contains("a row's uri is not at://did/collection/rkey"),
        "{err}"
    );
}

#[tokio::test]
async fn an_upgrade_refuses_to_drop_an_index_parity_did_not_create() {
    let err = refused("CREATE INDEX my_likes_by_time ON likes (created_at)").await;
    assert!(err.contains("drop it, migrate, create it again"), "{err}");
}

/// A row whose URI names another collection than the table computes
/// stops the writer instead of being stored under the computed URI.
#[tokio::test]
async fn the_writer_refuses_a_row_the_table_would_store_under_another_uri() {
    let (store, _dir) = open(false).await;
    let mut m = upsert("a", "3k", "3r");
    if let Mutation::Upsert(row) = &mut m {
        row.uri = "at://did:plc:a/com.example.like/3k".into();
    }
    let err = store.commit(&batch(vec![m], vec![], 1)).await.unwrap_err();
    assert!(matches!(err, StoreError::UriLayout { .. }), "{err}");
    assert!(!err.is_transient() && !err.is_rejection(), "fatal: {err}");
    // The row itself, with its own URI, is stored.
    store
        .commit(&batch(vec![upsert("a", "3k", "3r")], vec![], 2))
        .await
        .unwrap();
}

/// A table of the operator's whose `uri` is generated some other way is
/// refused at start-up, naming the table, instead of written wrongly.
#[tokio::test]
async fn a_generated_uri_parity_cannot_fill_is_refused_at_prepare() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = connect(&dir).await;
    s.migrate().await.unwrap();
    sqlx::query(
        "CREATE TABLE notes (uri TEXT NOT NULL GENERATED ALWAYS AS ('at://' || did) VIRTUAL, \
         did TEXT NOT NULL, rkey TEXT NOT NULL, cid TEXT NOT NULL, rev TEXT NOT NULL, \
         record TEXT NOT NULL, synced_at TEXT NOT NULL)",
    )
    .execute(&s.pool)
    .await
    .unwrap();
    let err = s
        .prepare(&[TableSchema::new("notes", &[])], &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::UnknownUriLayout { ref table } if table == "notes"),
        "{err}"
    );
}

/// `records` computes its uri from the row's `collection` value: a row
/// whose value names another collection than its URI stops the writer; the
/// row with its own collection is stored under its URI.
#[tokio::test]
async fn records_uri_follows_the_collection_column() {
    use crate::mapper::{ColumnType, Row, TableId, Value};
    let (mut store, _dir) = open(false).await;
    store
        .prepare(
            &[TableSchema::new(
                generic::TABLE,
                &[("collection", ColumnType::Text)],
            )],
            &[],
        )
        .await
        .unwrap();
    let row = |collection: &str| {
        Mutation::Upsert(Row {
            table: TableId(0),
            uri: "at://did:plc:a/com.example.x/self".into(),
            did: crate::event::Did::parse("did:plc:a").unwrap(),
            rkey: "self".into(),
            cid: "cid".into(),
            rev: "3r".into(),
            record: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
            values: vec![Value::Text(collection.into())],
        })
    };
    let err = store
        .commit(&batch(vec![row("com.example.y")], vec![], 1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::UriLayout { .. }), "{err}");
    store
        .commit(&batch(vec![row("com.example.x")], vec![], 2))
        .await
        .unwrap();
    let Store::Sqlite(s) = &store else {
        unreachable!("open(false) is SQLite")
    };
    let uri: String = sqlx::query_scalar("SELECT uri FROM records")
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(uri, "at://did:plc:a/com.example.x/self");
}
