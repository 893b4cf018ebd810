//! `BENCH_MODE=all` (issue 15, benchmark b): `parity import --all` from
//! the local relay over `BENCH_REPOS` generated repos of `BENCH_RECORDS`
//! records each (half posts, half likes), no latency and no useful rate
//! limit, whole repos (getRepo, fully verified), into SQLite and
//! PostgreSQL; then the store-limit baseline (`crates/workload`, as
//! `benches/consume` runs it) writes the same rows, mapped by parity's own
//! mappers at the same revs, into a fresh database migrated by
//! `parity migrate`, 5,000 rows per transaction, its clock running only
//! while it writes. parity's figure is end to end: records ÷ the wall time
//! of the whole command (listing, DID resolution, fetching, verifying,
//! writing). The PDS serves each repo's CAR built once beforehand.
//!
//! Env: `BENCH_REPOS` (1000), `BENCH_RECORDS` (200), `BENCH_CONCURRENCY`
//! (8), `BENCH_BACKENDS` (`sqlite,postgres`), `BENCH_PER_TX` (rows per
//! baseline transaction, 5,000; 100 writes them as an import writes its
//! pages, one collection's page a transaction), `BENCH_PER_STMT` (rows of
//! a table per baseline statement on PostgreSQL; default the whole
//! transaction's), `BENCH_PG_BASELINES` (the PostgreSQL baselines, of
//! `upsert`, `unnest`, `copy`; default `upsert,copy`: `unnest` is the
//! upsert in parity's statement shape, see `workload::baseline::postgres`),
//! `TEST_PG_URL`.

use std::time::Instant;

use testnet::pds::Pds;
use testnet::relay::Relay;
use workload::baseline::postgres::{Mode, PgBaseline};
use workload::baseline::sqlite::SqliteBaseline;
use workload::rows::{RowMapper, Write};

use super::{
    add_repos, build_release, drop_pg_database, env_or, fresh_db, loadavg, pg_base, rev_of,
    run_parity,
};

/// Rows per baseline transaction by default (the consume bench's).
const PER_TX: usize = 5_000;

pub async fn run() {
    let repos_n: usize = env_or("BENCH_REPOS", 1000);
    let records_n: usize = env_or("BENCH_RECORDS", 200);
    let concurrency: usize = env_or("BENCH_CONCURRENCY", 8);
    let per_tx: usize = env_or("BENCH_PER_TX", PER_TX).max(1);
    let per_stmt: Option<usize> = std::env::var("BENCH_PER_STMT")
        .ok()
        .map(|v| v.parse().expect("BENCH_PER_STMT: a number of rows"));
    let backends = std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let pg_modes =
        pg_baselines(&std::env::var("BENCH_PG_BASELINES").unwrap_or_else(|_| "upsert,copy".into()));
    let bin = build_release();

    let pds = Pds::start().await;
    let dids = add_repos(&pds, repos_n, records_n);
    for did in &dids {
        let car = pds.repo_car(did);
        pds.set_repo_car(did, car);
    }
    let relay = Relay::start().await;
    relay.add_pds(&pds);
    let mapper = RowMapper::new();
    let writes: Vec<Write> = dids
        .iter()
        .enumerate()
        .flat_map(|(d, did)| {
            let rev = rev_of(d);
            pds.records(did)
                .into_iter()
                .map(|r| {
                    mapper
                        .listed(did, &r.collection, &r.rkey, &r.cid, &rev, &r.json)
                        .expect("a mapped record")
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let total = repos_n * records_n;
    assert_eq!(writes.len(), total);
    let dir = tempfile::tempdir().unwrap();
    println!(
        "import --all: {repos_n} repos × {records_n} records from the local relay, no latency, concurrency {concurrency}; load average {}",
        loadavg()
    );
    println!(
        "| store | parity records/s | parity CPU (of 1 core) | baseline | baseline rows/s | parity ÷ baseline |"
    );
    println!("|---|---|---|---|---|---|");
    for backend in backends.split(',').map(str::trim) {
        let url = fresh_db(backend, "parity_bench_all", dir.path()).await;
        let ran = run_parity(
            &bin,
            vec![
                "import".into(),
                "--all".into(),
                "--relay".into(),
                relay.url(),
                "--concurrency".into(),
                concurrency.to_string(),
            ],
            vec![
                ("PARITY_DATABASE_URL".into(), url.clone()),
                ("PARITY_PLC_URL".into(), pds.url()),
                (
                    "PARITY_IDENTITY_ALLOW_PRIVATE_ADDRESSES".into(),
                    "true".into(),
                ),
                ("PARITY_IMPORT_REQUESTS_PER_SECOND".into(), "100000".into()),
                ("PARITY_IMPORT_METHOD".into(), "getrepo".into()),
                ("PARITY_LOG_LEVEL".into(), "warn".into()),
                ("PARITY_METRICS_ADDR".into(), "off".into()),
            ],
        )
        .await;
        let summary = String::from_utf8_lossy(&ran.out.stdout);
        assert!(
            summary.contains(&format!("{total} records synced")),
            "{summary}"
        );
        let parity_rate = total as f64 / ran.wall;
        remove(backend, &url, "parity_bench_all").await;
        let modes: &[Option<Mode>] = if backend == "postgres" {
            &pg_modes
        } else {
            &[None]
        };
        for mode in modes {
            let name = "parity_bench_all_base";
            let url = fresh_db(backend, name, dir.path()).await;
            run_parity(
                &bin,
                vec!["--database-url".into(), url.clone(), "migrate".into()],
                vec![("PARITY_LOG_LEVEL".into(), "warn".into())],
            )
            .await;
            let secs = baseline(&url, *mode, &writes, per_tx, per_stmt).await;
            let rate = total as f64 / secs;
            println!(
                "| {backend} | {parity_rate:.0} | {:.0} % | {} | {rate:.0} | {:.0} % |",
                ran.cpu / ran.wall * 100.0,
                mode.map_or("upsert", Mode::name),
                parity_rate / rate * 100.0
            );
            remove(backend, &url, name).await;
        }
    }
}

/// The PostgreSQL baselines named in `list` (comma-separated), in order.
fn pg_baselines(list: &str) -> Vec<Option<Mode>> {
    list.split(',')
        .map(|m| {
            let mode = Mode::from_name(m.trim());
            assert!(
                mode.is_some(),
                "BENCH_PG_BASELINES: {m:?} is not upsert, unnest or copy"
            );
            mode
        })
        .collect()
}

/// Seconds the baseline spent writing `writes`, `per_tx` per transaction
/// (PostgreSQL: `per_stmt` rows of a table per statement, if given).
async fn baseline(
    url: &str,
    mode: Option<Mode>,
    writes: &[Write],
    per_tx: usize,
    per_stmt: Option<usize>,
) -> f64 {
    let mut busy = 0.0;
    match mode {
        None => {
            let path = url.trim_start_matches("sqlite://").to_owned();
            let writes = writes.to_vec();
            tokio::task::spawn_blocking(move || {
                // parity's default page cache, like for like.
                let cache = parity::store::default_sqlite_cache_kib();
                let mut db = SqliteBaseline::open(&path, cache).expect("SQLite baseline");
                let mut busy = 0.0;
                for (i, chunk) in writes.chunks(per_tx).enumerate() {
                    let t0 = Instant::now();
                    db.write(chunk, i as u64, "baseline")
                        .expect("baseline write");
                    busy += t0.elapsed().as_secs_f64();
                }
                busy
            })
            .await
            .unwrap()
        }
        Some(mode) => {
            let mut db = PgBaseline::connect(url, mode)
                .await
                .expect("PostgreSQL baseline");
            if let Some(rows) = per_stmt {
                db = db.with_statement_rows(rows);
            }
            for (i, chunk) in writes.chunks(per_tx).enumerate() {
                let t0 = Instant::now();
                db.write(chunk, i as u64, "baseline")
                    .await
                    .expect("baseline write");
                busy += t0.elapsed().as_secs_f64();
            }
            busy
        }
    }
}

async fn remove(backend: &str, url: &str, name: &str) {
    if backend == "postgres" {
        drop_pg_database(&pg_base(), name).await;
    } else {
        let path = url.trim_start_matches("sqlite://");
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
    }
}
