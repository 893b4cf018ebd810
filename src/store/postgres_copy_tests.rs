//! The `COPY` of an import page (`postgres_copy.rs`): which pages it takes
//! (every guard the upsert has sends a page back to the upsert), the rows
//! it writes (the upsert's, value for value), and its text format.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::value::RawValue;

use super::{CopySql, MIN_ROWS, encode, field, try_copy};
use crate::event::{AccountStatus, Did};
use crate::mapper::builtin::Builtin;
use crate::mapper::{Row, TableId, TableSchema, Value};
use crate::store::Store;
use crate::store::commit::tests::open;
use crate::store::postgres::PgStore;

const LIKE: &str = "app.bsky.feed.like";

fn like(did: &str, rkey: &str, rev: &str) -> Row {
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

/// `n` likes of `did` at `rev`, rkeys in order.
fn page(did: &str, n: usize, rev: &str) -> Vec<Row> {
    (0..n)
        .map(|i| like(did, &format!("3k{i:011}"), rev))
        .collect()
}

fn schema() -> TableSchema {
    Builtin::Likes.schema()
}

async fn pg() -> Store {
    open(true).await.0
}

fn pg_of(store: &Store) -> &PgStore {
    let Store::Postgres(p) = store else {
        unreachable!("open(true) is PostgreSQL")
    };
    p
}

/// `try_copy` of `rows` in a transaction of its own, committed: the rows
/// it copied, or `None` when the page must take the upsert.
async fn copied(store: &Store, rows: &[Row]) -> Option<u64> {
    let p = pg_of(store);
    let sql = CopySql::new(&schema(), &[AccountStatus::Deleted]);
    let refs: Vec<&Row> = rows.iter().collect();
    let mut tx = p.pool().begin().await.unwrap();
    let n = try_copy(&mut tx, &sql, &schema(), &refs, Utc::now(), MIN_ROWS)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    n
}

async fn exec(store: &Store, sql: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(pg_of(store).pool())
        .await
        .unwrap();
}

async fn count(store: &Store, did: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM likes WHERE did = $1")
        .bind(did)
        .fetch_one(pg_of(store).pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_page_of_new_rows_is_copied_as_the_upsert_would_write_it() {
    let store = pg().await;
    let rows = page("did:plc:a", MIN_ROWS + 8, "3a");
    assert_eq!(copied(&store, &rows).await, Some(rows.len() as u64));
    // The same rows of another repo through the upsert (a live batch).
    let twins: Vec<Row> = page("did:plc:b", MIN_ROWS + 8, "3a");
    let batch = crate::store::commit::tests::batch(
        twins
            .iter()
            .cloned()
            .map(crate::mapper::Mutation::Upsert)
            .collect(),
        vec![],
        1,
    );
    store.commit(&batch).await.unwrap();
    let read = |did: &'static str| {
        let pool = pg_of(&store).pool().clone();
        async move {
            sqlx::query_as::<
                _,
                (
                    String,
                    String,
                    String,
                    String,
                    Option<String>,
                    Option<String>,
                    String,
                ),
            >(
                "SELECT rkey, cid, rev, record::text, subject_uri, subject_cid, created_at::text \
                 FROM likes WHERE did = $1 ORDER BY uri",
            )
            .bind(did)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    let (copied_rows, upserted) = (read("did:plc:a").await, read("did:plc:b").await);
    assert_eq!(copied_rows.len(), rows.len());
    assert_eq!(copied_rows, upserted);
    assert!(
        copied_rows[0].3.contains("tab\\tnew\\nline \\\\ "),
        "the record's escapes arrive as they were: {}",
        copied_rows[0].3
    );
}

#[tokio::test]
async fn small_pages_and_pages_of_several_repos_take_the_upsert() {
    let store = pg().await;
    assert_eq!(
        copied(&store, &page("did:plc:a", MIN_ROWS - 1, "3a")).await,
        None
    );
    let mut mixed = page("did:plc:a", MIN_ROWS, "3a");
    mixed.push(like("did:plc:b", "3k00000000001", "3a"));
    assert_eq!(copied(&store, &mixed).await, None);
    assert_eq!(count(&store, "did:plc:a").await, 0);
}

#[tokio::test]
async fn a_stored_row_at_one_of_the_uris_sends_the_page_to_the_upsert() {
    let store = pg().await;
    let rows = page("did:plc:a", MIN_ROWS + 2, "3b");
    let last = rows.last().unwrap();
    exec(
        &store,
        &format!(
            "INSERT INTO likes (uri, did, rkey, cid, rev, record, synced_at) VALUES ('{}', 'did:plc:a', '{}', 'c', '3a', '{{}}', now())",
            last.uri, last.rkey
        ),
    )
    .await;
    assert_eq!(copied(&store, &rows).await, None);
    // A row outside the page's URIs does not.
    let later = page("did:plc:c", MIN_ROWS, "3b");
    exec(
        &store,
        "INSERT INTO likes (uri, did, rkey, cid, rev, record, synced_at) VALUES ('at://did:plc:c/app.bsky.feed.like/3l', 'did:plc:c', '3l', 'c', '3a', '{}', now())",
    )
    .await;
    assert_eq!(copied(&store, &later).await, Some(MIN_ROWS as u64));
}

#[tokio::test]
async fn a_tombstone_in_the_page_sends_it_to_the_upsert() {
    let store = pg().await;
    let rows = page("did:plc:a", MIN_ROWS + 2, "3b");
    exec(
        &store,
        &format!(
            "INSERT INTO parity_tombstones (uri, rev, deleted_at) VALUES ('{}', '3a', now())",
            rows[5].uri
        ),
    )
    .await;
    assert_eq!(copied(&store, &rows).await, None);
}

/// After `setup`, a page of `did:plc:a` takes the upsert and one of
/// `did:plc:b` is copied.
async fn a_upserted_b_copied(setup: &str) {
    let store = pg().await;
    exec(&store, setup).await;
    let page_of = |did| page(did, MIN_ROWS, "3b");
    assert_eq!(copied(&store, &page_of("did:plc:a")).await, None);
    assert_eq!(
        copied(&store, &page_of("did:plc:b")).await,
        Some(MIN_ROWS as u64)
    );
}

#[tokio::test]
async fn a_newer_floor_sends_the_page_to_the_upsert_and_an_older_one_does_not() {
    a_upserted_b_copied(&format!(
        "INSERT INTO parity_sweep_floors (did, collection, rev) VALUES ('did:plc:a', '{LIKE}', '3c'), ('did:plc:b', '{LIKE}', '3a')"
    ))
    .await;
}

/// Deactivated does not purge here: its rows are written.
#[tokio::test]
async fn an_account_whose_status_purges_sends_the_page_to_the_upsert() {
    a_upserted_b_copied(
        "INSERT INTO parity_repos (did, status, active, updated_at) VALUES ('did:plc:a', 'deleted', false, now()), ('did:plc:b', 'deactivated', false, now())",
    )
    .await;
}

#[test]
fn rows_are_written_in_the_text_format_in_column_order() {
    use crate::mapper::ColumnType;
    let t: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 12, 4, 9, 8, 7).unwrap();
    let table = TableSchema::new(
        "t",
        &[
            ("n", ColumnType::Integer),
            ("b", ColumnType::Boolean),
            ("j", ColumnType::Json),
            ("at", ColumnType::Timestamp),
        ],
    );
    let mut row = like("did:plc:a", "3k1", "3a");
    row.values = vec![
        Value::Integer(-42),
        Value::Boolean(true),
        Value::Json("[\"a\\b\"]".into()),
        Value::Timestamp(t),
    ];
    // A value of another type than its column's is NULL, as the upsert
    // binds it; a missing one too.
    let mut other = like("did:plc:a", "3k2", "3a");
    other.values = vec![Value::Text("7".into()), Value::Boolean(false)];
    let out = String::from_utf8(encode(&table, &[&row, &other], t)).unwrap();
    let lines: Vec<&str> = out.split_terminator('\n').collect();
    let head = |rkey: &str| {
        format!(
            "at://did:plc:a/app.bsky.feed.like/{rkey}\tdid:plc:a\t{rkey}\tbafy-{rkey}\t3a\t{{\"text\":\"tab\\\\tnew\\\\nline \\\\\\\\ {rkey}\"}}\t2026-12-04T09:08:07.000000Z"
        )
    };
    assert_eq!(
        lines,
        vec![
            format!(
                "{}\t-42\tt\t[\"a\\\\b\"]\t2026-12-04T09:08:07.000000Z",
                head("3k1")
            ),
            format!("{}\t\\N\tf\t\\N\t\\N", head("3k2")),
        ]
    );
}

fn escaped(v: Option<&str>) -> String {
    let mut out = Vec::new();
    field(&mut out, v);
    String::from_utf8(out).unwrap()
}

#[test]
fn the_four_special_characters_are_escaped_and_null_is_marked() {
    assert_eq!(escaped(None), "\\N");
    assert_eq!(escaped(Some("")), "");
    assert_eq!(escaped(Some("plain é")), "plain é");
    assert_eq!(escaped(Some("a\\b\tc\nd\re\\N")), "a\\\\b\\tc\\nd\\re\\\\N");
}

/// Through [`Store::commit`]: an import page of new rows is copied, with
/// its state and its change-log rows as the upsert would leave them; a
/// live batch of as many rows is not (its DID lock is exclusive, and its
/// cursor is a stream's).
#[tokio::test]
async fn an_import_page_commits_by_copy_and_a_live_batch_by_upsert() {
    use crate::batch::{Checkpoint, ImportPage};
    use crate::mapper::Mutation;
    use crate::mapper::table::timestamp_text;
    use crate::store::ChangeLog;
    use crate::store::commit::tests::batch;

    let mut store = pg().await;
    store.set_change_log(ChangeLog {
        enabled: true,
        tables: vec![],
    });
    let did = "did:plc:a";
    store
        .enqueue_imports(did, &[LIKE.to_owned()], false)
        .await
        .unwrap();
    let until = Utc::now() + chrono::Duration::minutes(5);
    let state = store
        .claim_import(did, LIKE, "me", until, None)
        .await
        .unwrap()
        .unwrap();
    let rows = page(did, MIN_ROWS + 3, "3a");
    let mut b = batch(
        rows.iter().cloned().map(Mutation::Upsert).collect(),
        vec![],
        0,
    );
    b.checkpoint = Checkpoint::ImportPage(ImportPage {
        state_id: state.id,
        owner: "me".into(),
        cursor: Some("3k99".into()),
        rev: "3a".into(),
        last: false,
        failed: 0,
        lease_until: timestamp_text(&until),
        sweep: None,
    });
    let stats = store.commit(&b).await.unwrap();
    let n = rows.len() as u64;
    assert_eq!((stats.upserted_total(), stats.copied), (n, n));
    let logged: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM parity_changes WHERE did = $1 AND op = 'upsert'")
            .bind(did)
            .fetch_one(pg_of(&store).pool())
            .await
            .unwrap();
    assert_eq!(logged, n as i64, "every copied row is in the change log");
    let s = &store.resumable_imports(Some(did)).await.unwrap()[0];
    assert_eq!(
        (s.records_synced, s.cursor.as_deref()),
        (n as i64, Some("3k99"))
    );

    let live = page("did:plc:b", MIN_ROWS + 3, "3a");
    let stats = store
        .commit(&batch(
            live.into_iter().map(Mutation::Upsert).collect(),
            vec![],
            1,
        ))
        .await
        .unwrap();
    assert_eq!((stats.upserted_total(), stats.copied), (n, 0));
}
