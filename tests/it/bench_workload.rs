//! The benchmark's workload against parity itself (issue 12): generated
//! events (random keys, the recorded mix, deletes of earlier records) are
//! all accepted by parity, and the store-limit baselines
//! (`crates/workload/src/baseline`) write exactly the rows parity writes,
//! so "parity ÷ baseline" in BENCHMARKS.md compares equal work.

use std::sync::Arc;

use crate::common;
use common::jetstream::{JetstreamServer, Line};
use common::{SNAPSHOT, TestDb, config, start};
use parity::cmd::consume::{ConsumeOptions, Consumer};
use workload::baseline::postgres::Mode;
use workload::{Config, Generator, KeyMode};

const EVENTS: u64 = 4_000;

fn generator() -> Arc<Generator> {
    let mut cfg = Config::new(5, KeyMode::Random, 1_783_175_888_000_000, 1_000);
    // Short enough that most deletes find their record within the run.
    cfg.delete_window = 500;
    Arc::new(Generator::new(cfg))
}

/// `parity migrate` on `db`, as the bench makes the baseline's schema.
fn migrate(db: &TestDb) {
    let status = common::process::command()
        .args(["--database-url", &db.url, "migrate"])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn consume_generated(db: &TestDb, g: &Generator) {
    let lines: Vec<Line> = (0..EVENTS)
        .map(|i| Line::new(&workload::jetstream::message(&g.event(i))))
        .collect();
    let server = JetstreamServer::start(lines).await;
    let run = start(
        Consumer::new(config(db, &server.url())),
        ConsumeOptions::default(),
    );
    server.wait_connections(1).await;
    server.publish_all();
    run.wait_cursor(g.time_us(EVENTS - 1) as i64).await;
    let stats = run.stats.clone();
    run.stop().await.unwrap();
    drop(server);
    // Nothing generated was refused or failed to map.
    for reason in parity::obs::DropReason::ALL {
        assert_eq!(stats.dropped(reason), 0, "dropped as {}", reason.as_str());
    }
}

async fn baseline(db: &TestDb, g: Arc<Generator>, mode: Mode) {
    migrate(db);
    if db.is_pg() {
        workload::baseline::postgres::run(g, &db.url, mode, 0, EVENTS, 700)
            .await
            .unwrap();
    } else {
        let path = db.url.trim_start_matches("sqlite://").to_owned();
        tokio::task::spawn_blocking(move || {
            workload::baseline::sqlite::run(g, &path, 2_048, 0, EVENTS, 700)
        })
        .await
        .unwrap()
        .unwrap();
    }
}

async fn same_rows(parity: &TestDb, base: &TestDb) {
    for (t, cols) in SNAPSHOT {
        assert_eq!(
            parity.rows(t, cols).await,
            base.rows(t, cols).await,
            "table {t}"
        );
    }
    assert_eq!(
        parity.rows("parity_tombstones", &["uri", "rev"]).await,
        base.rows("parity_tombstones", &["uri", "rev"]).await
    );
    // parity also keeps a repo row for every account that commits; the
    // baseline writes only identity and account events' rows: each of
    // those must be parity's.
    let repos = parity
        .rows("parity_repos", &["did", "handle", "status"])
        .await;
    let base_repos = base
        .rows("parity_repos", &["did", "handle", "status"])
        .await;
    assert!(!base_repos.is_empty());
    for r in &base_repos {
        assert!(repos.contains(r), "{r:?}");
    }
}

async fn baseline_writes_parity_rows(a: TestDb, b: TestDb) {
    let g = generator();
    consume_generated(&a, &g).await;
    // The run is not trivial: thousands of likes, deletes that hit.
    assert!(a.count("likes").await > 2_000);
    let deleted = a
        .scalar("SELECT CAST(COUNT(*) AS TEXT) FROM parity_tombstones")
        .await
        .unwrap();
    assert!(deleted.parse::<i64>().unwrap() > 50, "{deleted} tombstones");
    baseline(&b, g.clone(), Mode::Upsert).await;
    same_rows(&a, &b).await;
    if a.is_pg() {
        let c = TestDb::postgres("workload_copy").await;
        baseline(&c, g.clone(), Mode::Copy).await;
        same_rows(&a, &c).await;
        let u = TestDb::postgres("workload_unnest").await;
        baseline(&u, g, Mode::Unnest).await;
        same_rows(&a, &u).await;
    }
}

backend_tests!(baseline_writes_the_rows_parity_writes, |a, b| {
    baseline_writes_parity_rows(a, b)
});
