//! `BENCH_MODE=paced` (the default): the release `parity import` binary backfills
//! 200 DIDs × 1,000 records (500 posts, 500 likes each) from the local
//! PLC directory + PDS of the test suite, with 50 ms of latency injected
//! into every XRPC request, into SQLite or PostgreSQL.
//!
//! Reports records/s, the XRPC request rate the PDS saw against the
//! configured per-host rate, and parity's own CPU use (user + system time
//! over wall time; 100 % is one of the 2 cores). The aim: the configured rate is
//! the limit, never parity's CPU. Not a test: `cargo bench --bench import`
//! (README → Benchmarks). Env: `BENCH_DIDS` (200), `BENCH_RECORDS` (1000),
//! `BENCH_LATENCY_MS` (50), `BENCH_RPS` (comma list of per-host rates,
//! default `100,400`), `BENCH_CONCURRENCY` (32), `BENCH_BACKENDS`
//! (`sqlite,postgres`), `TEST_PG_URL`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::resource::{UsageWho, getrusage};

use testnet::pds::{Pds, tid};

use super::{build_release, env_or, pg_database, repo};

pub async fn run() {
    let dids_n: usize = env_or("BENCH_DIDS", 200);
    let records_n: usize = env_or("BENCH_RECORDS", 1000);
    let latency = Duration::from_millis(env_or("BENCH_LATENCY_MS", 50));
    let concurrency: usize = env_or("BENCH_CONCURRENCY", 32);
    let rates: Vec<u32> = std::env::var("BENCH_RPS")
        .unwrap_or_else(|_| "100,400".into())
        .split(',')
        .map(|r| r.trim().parse().expect("BENCH_RPS: numbers"))
        .collect();
    let backends = std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let pg_base = std::env::var("TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://parity_test:parity_test@127.0.0.1:5432/parity_test".into());
    let bin = build_release();

    let pds = Pds::start().await;
    let mut dids = Vec::new();
    for d in 0..dids_n {
        let (did, records) = repo(d, records_n);
        pds.add_repo(&did, &tid(1_800_000_000_000_000, d as u16), None, records);
        dids.push(did);
    }
    pds.set_latency(latency);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dids.txt");
    std::fs::write(&file, dids.join("\n")).unwrap();
    println!(
        "import benchmark: {dids_n} DIDs × {records_n} records, {} ms latency per request, concurrency {concurrency}",
        latency.as_millis()
    );
    println!(
        "| store | rate limit (req/s) | records/s | XRPC req/s seen | of limit | parity CPU (of 1 core) |"
    );
    println!("|---|---|---|---|---|---|");
    for backend in backends.split(',') {
        for (i, rps) in rates.iter().enumerate() {
            let url = match backend.trim() {
                "sqlite" => format!(
                    "sqlite://{}",
                    dir.path().join(format!("bench{i}.db")).display()
                ),
                "postgres" => pg_database(&pg_base, &format!("parity_bench_import_{i}")).await,
                other => panic!("unknown backend {other}"),
            };
            let before = pds.requests().len();
            let usage0 = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap();
            let started = Instant::now();
            let out = tokio::task::spawn_blocking({
                let bin = bin.clone();
                let file = file.clone();
                let plc = pds.url();
                let rps = rps.to_string();
                let conc = concurrency.to_string();
                move || {
                    Command::new(bin)
                        .args([
                            "import",
                            "--file",
                            file.to_str().unwrap(),
                            "--concurrency",
                            &conc,
                        ])
                        .env("PARITY_DATABASE_URL", &url)
                        .env("PARITY_PLC_URL", plc)
                        // The local PDS is plain http on 127.0.0.1: the local-testing opt-in.
                        .env("PARITY_IDENTITY_ALLOW_PRIVATE_ADDRESSES", "true")
                        .env("PARITY_IMPORT_REQUESTS_PER_SECOND", rps)
                        // This bench measures listRecords paging (the default is auto: getRepo).
                        .env("PARITY_IMPORT_METHOD", "listrecords")
                        .env("PARITY_LOG_LEVEL", "warn")
                        .stdin(Stdio::null())
                        .output()
                        .expect("run parity import")
                }
            })
            .await
            .unwrap();
            let wall = started.elapsed().as_secs_f64();
            let usage1 = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let summary = String::from_utf8_lossy(&out.stdout);
            assert!(
                summary.contains(&format!("{} records synced", dids_n * records_n)),
                "{summary}"
            );
            let reqs = pds.requests();
            let xrpc: Vec<Instant> = reqs[before..]
                .iter()
                .filter(|r| r.method.starts_with("com.atproto."))
                .map(|r| r.at)
                .collect();
            let span = xrpc.last().unwrap().duration_since(xrpc[0]).as_secs_f64();
            let seen = (xrpc.len() - 1) as f64 / span;
            let cpu = |u: &nix::sys::resource::Usage| {
                let t = u.user_time();
                let s = u.system_time();
                t.tv_sec() as f64
                    + t.tv_usec() as f64 / 1e6
                    + s.tv_sec() as f64
                    + s.tv_usec() as f64 / 1e6
            };
            let cpu_share = (cpu(&usage1) - cpu(&usage0)) / wall;
            println!(
                "| {backend} | {rps} | {:.0} | {seen:.1} | {:.0} % | {:.0} % |",
                (dids_n * records_n) as f64 / wall,
                seen / *rps as f64 * 100.0,
                cpu_share * 100.0,
            );
        }
    }
}
