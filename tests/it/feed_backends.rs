//! The same events give the same change log on both backends: generated
//! events (the recorded collection mix, a small account pool so records
//! are rewritten and deleted, deletes of earlier records, account events)
//! consumed into SQLite and into PostgreSQL with several writers log the
//! same changes, each URI's in the same order, when the batches are the
//! same. (The consume bench logged 287,071 changes on SQLite and 287,091
//! on PostgreSQL for the same 300,000 events: its batches are also cut by
//! time, and a record created and deleted within one batch logs nothing.)

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::common;
use common::jetstream::{JetstreamServer, Line};
use common::{TestDb, config, start};
use parity::cmd::consume::{ConsumeOptions, Consumer};
use workload::{Config, Generator, KeyMode};

const EVENTS: u64 = 6_000;

fn generator(keys: KeyMode) -> Arc<Generator> {
    let mut cfg = Config::new(11, keys, 1_783_175_888_000_000, 1_000);
    cfg.accounts = 300;
    cfg.delete_window = 400;
    Arc::new(Generator::new(cfg))
}

async fn consume(db: &TestDb, g: &Generator, writers: u32) {
    // Only what the server sends (parity's wanted collections), so that
    // the events parity receives make exactly EVENTS / 500 batches.
    let lines: Vec<Line> = (0..)
        .map(|i| Line::new(&workload::jetstream::message(&g.event(i))))
        .filter(|l| {
            l.collection
                .as_deref()
                .is_none_or(|c| common::model::table_of(c).is_some())
        })
        .take(EVENTS as usize)
        .collect();
    let last = common::last_time_us(&lines);
    let server = JetstreamServer::start(lines).await;
    let mut cfg = config(db, &server.url());
    cfg.feed.enabled = true;
    cfg.feed.addr = "off".into();
    cfg.database.writers = writers;
    // Batches by count alone, so both runs cut the stream at the same
    // events: a record created and deleted inside one batch is logged as
    // its net effect (nothing), across two batches as both changes, so
    // batches cut by time would log differently run to run.
    cfg.batch.max_events = 500;
    cfg.batch.max_age_ms = 600_000;
    let run = start(Consumer::new(cfg), ConsumeOptions::default());
    server.wait_connections(1).await;
    server.publish_all();
    run.wait_cursor(last).await;
    run.stop().await.unwrap();
}

/// Each URI's logged changes in seq order: (table, op, cid, rev, record,
/// subjects).
type Log = BTreeMap<String, Vec<Vec<Option<String>>>>;

async fn log(db: &TestDb) -> Log {
    let rows = db
        .query_text(
            "SELECT uri, table_name, op, cid, rev, CAST(record AS TEXT), subjects \
             FROM parity_changes ORDER BY seq"
                .into(),
            7,
        )
        .await;
    let mut out = Log::new();
    for mut r in rows {
        let uri = r.remove(0).unwrap();
        out.entry(uri).or_default().push(r);
    }
    out
}

async fn same_log(keys: KeyMode) {
    let g = generator(keys);
    let lite = TestDb::sqlite();
    let pg = TestDb::postgres("feed_backends").await;
    consume(&lite, &g, 1).await;
    consume(&pg, &g, 4).await;
    let (a, b) = (log(&lite).await, log(&pg).await);
    let total: usize = a.values().map(Vec::len).sum();
    assert!(total > 3_000, "the run logs changes: {total}");
    assert!(
        a.values().any(|v| v.len() > 1),
        "some record changes more than once"
    );
    let differ: Vec<_> = a
        .iter()
        .filter(|(uri, v)| b.get(*uri) != Some(v))
        .map(|(uri, v)| (uri.clone(), v.clone(), b.get(uri).cloned()))
        .chain(
            b.iter()
                .filter(|(uri, _)| !a.contains_key(*uri))
                .map(|(uri, v)| (uri.clone(), Vec::new(), Some(v.clone()))),
        )
        .take(5)
        .collect();
    assert!(differ.is_empty(), "sqlite vs postgres: {differ:?}");
    for (t, cols) in common::SNAPSHOT {
        assert_eq!(
            lite.rows(t, cols).await,
            pg.rows(t, cols).await,
            "table {t}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_log_the_same_changes_bench_keys() {
    same_log(KeyMode::Bench).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_log_the_same_changes_random_keys() {
    same_log(KeyMode::Random).await;
}
