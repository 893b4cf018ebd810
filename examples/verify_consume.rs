//! `parity consume` end to end with live verification (issue 15,
//! benchmark d): the same stream of signed firehose commits consumed with
//! `source.verify = "none"`, `"signature"` and `"full"`, alternating, into
//! a fresh database per run (SQLite, or PostgreSQL at `TEST_PG_URL`);
//! events/s of each against `none` in the same run.
//!
//! Workload: `testnet::signed::likes` — generated accounts each committing
//! one like at a time (real MST proofs, `since`/`prevData` chains, secp256k1
//! signatures), served by the local relay (`testnet::jetstream`); the
//! accounts' DID documents by the local PLC directory (`testnet::pds`),
//! fetched once per account during the run (a cold key cache).
//!
//! `cargo run --release --example verify_consume [accounts] [commits per account] [rounds] [sqlite|postgres]`

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use parity::cmd::consume::{ConsumeOptions, Consumer};
use parity::config::Config;
use parity::source::VerifyMode;
use testnet::jetstream::{JetstreamServer, Line};
use testnet::pds::Pds;
use tokio_util::sync::CancellationToken;

/// A fresh database for one run (PostgreSQL: one per process, dropped and
/// created again at each run).
async fn fresh_db(pg: bool, dir: &std::path::Path) -> String {
    if !pg {
        return format!("sqlite://{}", dir.join("parity.db").display());
    }
    workload::pg_db::fresh(&format!("parity_verify_bench_{}", std::process::id())).await
}

async fn once(lines: &[Line], last: i64, plc: &Pds, mode: VerifyMode, pg: bool) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let relay = JetstreamServer::start(lines.to_vec()).await;
    let mut c = Config::default();
    c.database.url = fresh_db(pg, dir.path()).await;
    c.source.endpoints = vec![relay.firehose_url()];
    c.source.verify = mode;
    c.identity.plc_url = plc.url();
    c.identity.allow_private_addresses = true;
    c.log.progress_interval_seconds = 0;
    c.metrics.addr = "off".into();
    let consumer = Consumer::new(c);
    let obs = consumer.obs();
    let token = CancellationToken::new();
    let t = token.clone();
    let run = tokio::spawn(consumer.run(ConsumeOptions::default(), t));
    relay.wait_connections(1).await;
    let start = Instant::now();
    relay.publish_all();
    while obs.cursor.load(Relaxed) != last {
        assert!(!run.is_finished(), "consumer stopped");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = start.elapsed();
    token.cancel();
    run.await.unwrap().unwrap();
    lines.len() as f64 / took.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let arg = |i: usize, d: usize| {
        std::env::args()
            .nth(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let (accounts, per, rounds) = (arg(1, 500), arg(2, 40), arg(3, 3));
    let pg = std::env::args().nth(4).is_some_and(|b| b == "postgres");
    let frames = testnet::signed::likes(accounts, per, 1);
    let last = frames.last().unwrap().0;
    let lines: Vec<Line> = frames.iter().map(|(s, b)| Line::frame(b, *s)).collect();
    let plc = Pds::start().await;
    for a in 0..accounts {
        plc.add_did_doc(&testnet::signed::did(a), &format!("signed{a}.test"));
    }
    println!(
        "(d) consume, {} signed commits ({accounts} accounts × {per}), {}, events/s",
        lines.len(),
        if pg { "PostgreSQL" } else { "SQLite" }
    );
    let modes = [VerifyMode::None, VerifyMode::Signature, VerifyMode::Full];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for _ in 0..rounds {
        for (i, m) in modes.iter().enumerate() {
            rates[i].push(once(&lines, last, &plc, *m, pg).await);
        }
    }
    let median = |r: &Vec<f64>| {
        let mut r = r.clone();
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    };
    let base = median(&rates[0]);
    for (i, m) in modes.iter().enumerate() {
        println!(
            "verify = {:<9} median {:>8.0}/s  rounds {:?}  ({:.2} of none)",
            format!("{m:?}").to_lowercase(),
            median(&rates[i]),
            rates[i]
                .iter()
                .map(|r| r.round() as u64)
                .collect::<Vec<_>>(),
            median(&rates[i]) / base
        );
    }
}
