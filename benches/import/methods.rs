//! `BENCH_MODE=methods` (issue 15, benchmark a): the same repos imported
//! whole (`--method getrepo`: one verified getRepo per DID) and page by
//! page (`--method listrecords`: describeRepo, getLatestCommit and
//! listRecords pages per collection), with `BENCH_LATENCY_MS` (50) of
//! latency added to every XRPC request. Reports records/s, XRPC requests
//! and requests per 1,000 records, and parity's CPU (user + system over
//! wall; 100 % = one core). The PDS serves each repo's CAR built once
//! beforehand, so its own cost per getRepo is sending bytes, as a
//! listRecords page costs it one JSON page.
//!
//! Env: `BENCH_DIDS` (200), `BENCH_RECORDS` (1000), `BENCH_LATENCY_MS`
//! (50), `BENCH_RPS` (per-host rate, 100), `BENCH_CONCURRENCY` (32),
//! `BENCH_BACKENDS` (`sqlite`), `TEST_PG_URL`.

use std::time::Duration;

use testnet::pds::Pds;

use super::{add_repos, build_release, env_or, fresh_db, loadavg, run_parity};

pub async fn run() {
    let dids_n: usize = env_or("BENCH_DIDS", 200);
    let records_n: usize = env_or("BENCH_RECORDS", 1000);
    let latency = Duration::from_millis(env_or("BENCH_LATENCY_MS", 50));
    let rps: u32 = env_or("BENCH_RPS", 100);
    let concurrency: usize = env_or("BENCH_CONCURRENCY", 32);
    let backends = std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "sqlite".into());
    let bin = build_release();

    let pds = Pds::start().await;
    let dids = add_repos(&pds, dids_n, records_n);
    for did in &dids {
        let car = pds.repo_car(did);
        pds.set_repo_car(did, car);
    }
    pds.set_latency(latency);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dids.txt");
    std::fs::write(&file, dids.join("\n")).unwrap();
    let total = dids_n * records_n;
    println!(
        "import methods: {dids_n} DIDs × {records_n} records, {} ms latency per XRPC request, {rps} req/s per host, concurrency {concurrency}; load average {}",
        latency.as_millis(),
        loadavg()
    );
    println!(
        "| store | method | records/s | XRPC requests | requests per 1,000 records | wall s | parity CPU (of 1 core) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for backend in backends.split(',').map(str::trim) {
        for method in ["getrepo", "listrecords"] {
            let url = fresh_db(backend, &format!("parity_bench_m_{method}"), dir.path()).await;
            let before = pds.requests().len();
            let ran = run_parity(
                &bin,
                vec![
                    "import".into(),
                    "--file".into(),
                    file.to_str().unwrap().into(),
                    "--concurrency".into(),
                    concurrency.to_string(),
                    "--method".into(),
                    method.into(),
                ],
                vec![
                    ("PARITY_DATABASE_URL".into(), url),
                    ("PARITY_PLC_URL".into(), pds.url()),
                    (
                        "PARITY_IDENTITY_ALLOW_PRIVATE_ADDRESSES".into(),
                        "true".into(),
                    ),
                    ("PARITY_IMPORT_REQUESTS_PER_SECOND".into(), rps.to_string()),
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
            let xrpc = pds.requests()[before..]
                .iter()
                .filter(|r| r.method.starts_with("com.atproto."))
                .count();
            println!(
                "| {backend} | {method} | {:.0} | {xrpc} | {:.2} | {:.1} | {:.0} % |",
                total as f64 / ran.wall,
                xrpc as f64 * 1000.0 / total as f64,
                ran.wall,
                ran.cpu / ran.wall * 100.0
            );
        }
    }
}
