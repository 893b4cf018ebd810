//! Declarative, generic and library-registered mappers end to end: tables
//! created with the standard columns, values taken by JSON pointer, an
//! existing table missing a mapped column refused with an error naming it.

use crate::common;

use std::sync::Arc;

use common::jetstream::{JetstreamServer, Line};
use common::{TestDb, config, fixture_lines, last_time_us, start};
use parity::cmd::consume::{ConsumeOptions, Consumer};
use parity::config::Config;
use parity::event::CollectionPattern;
use parity::mapper::declarative::{ColumnConfig, DeclarativeConfig};
use parity::mapper::{ColumnType, MapError, Mapper, RecordRef, TableSchema, Value};

fn status_mapper() -> DeclarativeConfig {
    let col = |p: &str, t, required| ColumnConfig {
        pointer: p.into(),
        r#type: t,
        required,
    };
    DeclarativeConfig {
        collection: "app.bsky.actor.status".into(),
        table: "statuses".into(),
        columns: [
            (
                "duration_minutes".to_owned(),
                col("/durationMinutes", ColumnType::Integer, true),
            ),
            (
                "title".to_owned(),
                col("/embed/external/title", ColumnType::Text, false),
            ),
            (
                "created_at".to_owned(),
                col("/createdAt", ColumnType::Timestamp, false),
            ),
            (
                "thumb".to_owned(),
                col("/embed/external/thumb", ColumnType::Json, false),
            ),
            (
                "missing".to_owned(),
                col("/nope", ColumnType::Boolean, false),
            ),
        ]
        .into(),
    }
}

async fn consume(
    cfg: Config,
    lines: &[String],
    custom: Option<(CollectionPattern, Arc<dyn Mapper>)>,
) -> Result<(), parity::Error> {
    let server = JetstreamServer::start(lines.iter().map(|l| Line::new(l)).collect()).await;
    let mut cfg = cfg;
    cfg.source.endpoints = vec![server.url()];
    let mut consumer = Consumer::new(cfg);
    if let Some((p, m)) = custom {
        consumer.register(p, m);
    }
    let run = start(consumer, ConsumeOptions::default());
    server.wait_connections(1).await;
    server.publish_all();
    run.wait_cursor(last_time_us(&server.lines())).await;
    run.stop().await
}

async fn declarative_and_generic(db: TestDb) {
    let mut cfg = config(&db, "ws://unused/subscribe");
    cfg.mappers.declarative = vec![status_mapper()];
    cfg.mappers.generic = vec!["place.stream.*".into(), "org.hypercerts.*".into()];
    let mut lines = fixture_lines(common::RELAY_JSONL);
    lines.extend(fixture_lines(common::GOLDEN_JSONL));
    consume(cfg, &lines, None).await.unwrap();

    let src = lines
        .iter()
        .find(|l| l.contains("app.bsky.actor.status"))
        .unwrap();
    let src: serde_json::Value = serde_json::from_str(src).unwrap();
    let rec = &src["commit"]["record"];
    let rows = db
        .rows(
            "statuses",
            &[
                "uri",
                "did",
                "rkey",
                "cid",
                "rev",
                "duration_minutes",
                "title",
                "created_at",
                "thumb",
                "missing",
            ],
        )
        .await;
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(
        r[0].as_deref(),
        Some(
            format!(
                "at://{}/app.bsky.actor.status/self",
                src["did"].as_str().unwrap()
            )
            .as_str()
        )
    );
    assert_eq!(r[3].as_deref(), src["commit"]["cid"].as_str());
    assert_eq!(r[4].as_deref(), src["commit"]["rev"].as_str());
    assert_eq!(
        r[5].as_deref(),
        Some(rec["durationMinutes"].to_string().as_str())
    );
    assert_eq!(r[6].as_deref(), rec["embed"]["external"]["title"].as_str());
    assert_eq!(r[7], common::model::norm_time(rec["createdAt"].as_str()));
    let thumb: serde_json::Value = serde_json::from_str(r[8].as_deref().unwrap()).unwrap();
    assert_eq!(&thumb, &rec["embed"]["external"]["thumb"]);
    assert_eq!(r[9], None);

    // The generic table caught the place.stream record, not the bsky ones.
    let rows = db.rows("records", &["uri", "collection", "record"]).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][1].as_deref(), Some("place.stream.broadcast.origin"));
    assert!(rows[0][2].as_deref().unwrap().contains("websocketURL"));
    assert_eq!(db.count("likes").await, 72);
}

backend_tests!(declarative_and_generic, |db| declarative_and_generic(db));

async fn missing_column_is_refused(db: TestDb) {
    // An existing table without the `title` column.
    let mut store = parity::store::Store::connect(&parity::store::DatabaseConfig {
        url: db.url.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let schema = TableSchema::new("statuses", &[("duration_minutes", ColumnType::Integer)]);
    store.prepare(&[schema], &[]).await.unwrap();
    store.close().await;

    let mut cfg = config(&db, "ws://127.0.0.1:9/subscribe");
    cfg.mappers.declarative = vec![status_mapper()];
    let token = tokio_util::sync::CancellationToken::new();
    let err = Consumer::new(cfg)
        .run(ConsumeOptions::default(), token)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("table statuses") && err.contains("column created_at"),
        "{err}"
    );
}

backend_tests!(missing_column_is_refused, |db| missing_column_is_refused(
    db
));

/// A mapper a library user would write: post lengths.
struct PostLength(TableSchema);

impl Mapper for PostLength {
    fn table(&self) -> &TableSchema {
        &self.0
    }
    fn map(&self, r: &RecordRef<'_>) -> Result<Vec<Value>, MapError> {
        let v: serde_json::Value =
            serde_json::from_str(r.json).map_err(|e| MapError::Json(e.to_string()))?;
        let text = v["text"]
            .as_str()
            .ok_or_else(|| MapError::Missing("text".into()))?;
        Ok(vec![Value::Integer(text.chars().count() as i64)])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_mappers_are_registered() {
    let db = TestDb::sqlite();
    let mut cfg = config(&db, "ws://unused/subscribe");
    cfg.mappers.builtin = vec!["likes".into()];
    let m: Arc<dyn Mapper> = Arc::new(PostLength(TableSchema::new(
        "post_lengths",
        &[("chars", ColumnType::Integer)],
    )));
    let lines = fixture_lines(common::RELAY_JSONL);
    consume(
        cfg,
        &lines,
        Some((CollectionPattern::parse("app.bsky.feed.post").unwrap(), m)),
    )
    .await
    .unwrap();
    let rows = db.rows("post_lengths", &["uri", "chars", "record"]).await;
    assert_eq!(rows.len(), 12);
    for r in rows {
        let rec: serde_json::Value = serde_json::from_str(r[2].as_deref().unwrap()).unwrap();
        assert_eq!(
            r[1],
            Some(rec["text"].as_str().unwrap().chars().count().to_string())
        );
    }
    assert_eq!(
        db.count("posts").await,
        0,
        "the built-in posts mapper was not enabled"
    );
}

/// Every keyword PostgreSQL or SQLite knows, from the servers themselves:
/// `pg_get_keywords()` and SQLite's `sqlite3_keyword_name` of the library
/// parity links.
async fn sql_keywords() -> std::collections::BTreeSet<String> {
    let pg = sqlx::PgPool::connect(&common::pg_base_url()).await.unwrap();
    let mut words: std::collections::BTreeSet<String> =
        sqlx::query_scalar::<_, String>("SELECT word FROM pg_get_keywords()")
            .fetch_all(&pg)
            .await
            .unwrap()
            .into_iter()
            .collect();
    pg.close().await;
    // SAFETY: the index is below sqlite3_keyword_count(), and SQLite hands
    // back a pointer to `len` bytes of its static keyword table.
    let n = unsafe { libsqlite3_sys::sqlite3_keyword_count() };
    for i in 0..n {
        let mut p: *const std::os::raw::c_char = std::ptr::null();
        let mut len = 0;
        let rc = unsafe { libsqlite3_sys::sqlite3_keyword_name(i, &mut p, &mut len) };
        assert_eq!(rc, libsqlite3_sys::SQLITE_OK);
        let bytes = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len as usize) };
        words.insert(std::str::from_utf8(bytes).unwrap().to_ascii_lowercase());
    }
    assert!(words.len() > 400, "{} keywords", words.len());
    words
}

/// `config check` refuses a reserved word as a table or column name, or the
/// name works end to end: table created, row inserted, updated through the
/// upsert's conflict path, deleted.
async fn every_accepted_keyword_works_as_a_table_and_column_name(db: TestDb) {
    use parity::batch::{BatchConfig, Batcher, PurgePolicy};
    use parity::event::{Cursor, Did};
    use parity::mapper::declarative::{DeclarativeError, DeclarativeMapper};
    use parity::mapper::{Mutation, Row, TableId};
    use parity::store::{DatabaseConfig, Store};
    use std::time::Instant;

    let text = ColumnConfig {
        pointer: "/text".into(),
        r#type: ColumnType::Text,
        required: false,
    };
    let (mut schemas, mut refused) = (Vec::new(), 0);
    for w in sql_keywords().await {
        // The word as the table's name and as its column's.
        let cfg = DeclarativeConfig {
            collection: "com.example.keyword".into(),
            table: w.clone(),
            columns: [(w.clone(), text.clone())].into(),
        };
        match DeclarativeMapper::new(&cfg) {
            Ok(m) => schemas.push(m.table().clone()),
            Err(DeclarativeError::Reserved { name, .. }) => {
                assert_eq!(name, w);
                refused += 1;
            }
            Err(e) => panic!("{w}: {e}"),
        }
    }
    assert!(refused >= 100, "only {refused} refused");

    let mut store = Store::connect(&DatabaseConfig {
        url: db.url.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    store.prepare(&schemas, &[]).await.unwrap();
    let did = Did::parse("did:plc:ewvi7nxzyoun6zhxrhs64oiz").unwrap();
    let row = |i: usize, rev: &str, note: &str| Row {
        table: TableId(i),
        uri: format!("at://{did}/com.example.keyword/{i}"),
        did: did.clone(),
        rkey: i.to_string(),
        cid: "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm".into(),
        rev: rev.into(),
        record: serde_json::value::RawValue::from_string(format!(r#"{{"text":"{note}"}}"#))
            .unwrap(),
        values: vec![Value::text(note)],
    };
    let commit = |muts: Vec<Mutation>, cursor: i64| {
        let mut b = Batcher::new(&BatchConfig::default(), PurgePolicy::default());
        b.seen("s", Cursor(cursor), cursor, Instant::now());
        for m in muts {
            b.push(m);
        }
        b.take().unwrap()
    };
    let n = schemas.len();
    let created = commit(
        (0..n)
            .map(|i| Mutation::Upsert(row(i, "3l2aaaaaaaa22", "a")))
            .collect(),
        1,
    );
    store.commit(&created).await.unwrap();
    let updated = commit(
        (0..n)
            .map(|i| Mutation::Upsert(row(i, "3l2aaaaaaab22", "b")))
            .collect(),
        2,
    );
    store.commit(&updated).await.unwrap();
    // One query per 200 tables (SQLite's compound-select limit is 500).
    let contents = |schemas: &[parity::mapper::TableSchema]| {
        let db = &db;
        let selects: Vec<String> = schemas
            .iter()
            .map(|s| {
                let col = &s.columns[0].name;
                format!("SELECT '{}', CAST({col} AS TEXT) FROM {}", s.name, s.name)
            })
            .collect();
        async move {
            let mut rows = Vec::new();
            for chunk in selects.chunks(200) {
                rows.extend(db.query_text(chunk.join(" UNION ALL "), 2).await);
            }
            rows.sort();
            rows
        }
    };
    let mut expected: Vec<Vec<Option<String>>> = schemas
        .iter()
        .map(|s| vec![Some(s.name.clone()), Some("b".to_owned())])
        .collect();
    expected.sort();
    assert_eq!(contents(&schemas).await, expected);
    let deleted = commit(
        (0..n)
            .map(|i| Mutation::Delete {
                table: TableId(i),
                uri: format!("at://{did}/com.example.keyword/{i}"),
                did: did.clone(),
                rev: "3l2aaaaaaac22".into(),
            })
            .collect(),
        3,
    );
    store.commit(&deleted).await.unwrap();
    assert_eq!(contents(&schemas).await, Vec::<Vec<Option<String>>>::new());
}

backend_tests!(
    every_accepted_keyword_works_as_a_table_and_column_name,
    |db| { every_accepted_keyword_works_as_a_table_and_column_name(db) }
);
