//! End-to-end consume benchmark with the store-limit baseline in the same
//! run (issue 12): a local websocket server streams generated events
//! (`crates/workload`: the recorded mix, Zipf-skewed accounts, bench or
//! random keys) to the release `parity consume`, which writes them into a
//! fresh SQLite or PostgreSQL database; then a plain program writes the
//! same rows into another fresh database with the same schema (made by
//! `parity migrate`), and the bench prints parity ÷ baseline.
//!
//! Not a test: run it with `cargo bench --bench consume` (see
//! BENCHMARKS.md). Options via env:
//! - `BENCH_EVENTS` (default 1,000,000), `BENCH_KEYS` (`bench,random`),
//!   `BENCH_BACKENDS` (`sqlite,postgres`), `BENCH_SOURCE` (`jetstream` or
//!   `firehose`), `BENCH_SEED` (1), `BENCH_STEP` (events per point of the
//!   per-step series; default N/10), `BENCH_BASELINE` (`0` skips it),
//!   `BENCH_KEEP_DB` (`1`: keep the measured databases and print their URLs),
//!   `BENCH_MAX_EVENTS` (parity's `batch.max_events`, also the baseline's
//!   events per transaction; default 5,000), `BENCH_WRITERS` (parity's
//!   `database.writers`), `BENCH_SQLITE_CACHE_MIB` (SQLite's page cache
//!   for parity in every scenario, as its `database.sqlite_cache_mib`, and
//!   for the baseline alike; default: parity's own, 1/32 of the machine's
//!   memory),
//!   `TEST_PG_URL`, `BENCH_FEED` (`1`: parity runs a
//!   second time with `[feed] enabled`, on a fresh database, and the bench
//!   prints feed on ÷ feed off: the change log's cost to the consumer, in
//!   events/s and in the whole machine's busy CPU per event);
//! - `BENCH_SCENARIO=catchup`: the catch-up scenario ([`catchup`]);
//! - `BENCH_SCENARIO=feed`: the change feed's fan-out ([`feed`]).

mod catchup;
mod feed;
mod feed_clients;
mod probe;
mod run;
mod server;

use std::sync::Arc;

use workload::{Config, Generator, KeyMode};

use server::Wire;

/// Bench options from the environment.
#[derive(Debug, Clone)]
pub struct Options {
    pub events: u64,
    pub keys: Vec<KeyMode>,
    pub backends: Vec<String>,
    pub wire: Wire,
    pub seed: u64,
    pub step: u64,
    pub baseline: bool,
    pub per_tx: u64,
    pub feed: bool,
    /// SQLite's page cache in MiB for both writers; 0: parity's default.
    pub sqlite_cache_mib: u64,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `BENCH_SQLITE_CACHE_MIB` (0: parity's default), within the bound
/// parity's own config check puts on `database.sqlite_cache_mib`.
pub fn sqlite_cache_mib() -> u64 {
    const MAX_MIB: u64 = 1 << 20;
    let mib = number("BENCH_SQLITE_CACHE_MIB", 0);
    if mib > MAX_MIB {
        fail(format!(
            "BENCH_SQLITE_CACHE_MIB={mib} is over {MAX_MIB} (MiB); give a smaller cache"
        ));
    }
    mib
}

fn fail(msg: String) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(2)
}

pub fn number(name: &str, default: u64) -> u64 {
    match env(name) {
        None => default,
        Some(v) => v
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| fail(format!("{name}={v} is not a number"))),
    }
}

impl Options {
    fn from_env() -> Options {
        let events = number("BENCH_EVENTS", 1_000_000).max(1);
        let keys = env("BENCH_KEYS")
            .unwrap_or_else(|| "bench,random".into())
            .split(',')
            .map(|k| {
                KeyMode::parse(k.trim())
                    .unwrap_or_else(|| fail(format!("BENCH_KEYS: {k} is not bench or random")))
            })
            .collect();
        let backends = env("BENCH_BACKENDS")
            .unwrap_or_else(|| "sqlite,postgres".into())
            .split(',')
            .map(|b| match b.trim() {
                b @ ("sqlite" | "postgres") => b.to_owned(),
                b => fail(format!("BENCH_BACKENDS: {b} is not sqlite or postgres")),
            })
            .collect();
        let wire = match env("BENCH_SOURCE").as_deref() {
            None | Some("jetstream") => Wire::Jetstream,
            Some("firehose") => Wire::Firehose,
            Some(s) => fail(format!("BENCH_SOURCE={s} is not jetstream or firehose")),
        };
        Options {
            events,
            keys,
            backends,
            wire,
            seed: number("BENCH_SEED", 1),
            step: number("BENCH_STEP", (events / 10).max(1)).max(1),
            baseline: env("BENCH_BASELINE").is_none_or(|v| v != "0"),
            per_tx: number("BENCH_MAX_EVENTS", 5_000).max(1),
            feed: env("BENCH_FEED").is_some_and(|v| v == "1"),
            sqlite_cache_mib: sqlite_cache_mib(),
        }
    }
}

/// The run's generator: events 1 µs apart ending about now, so random-key
/// TIDs carry a real clock.
pub fn generator(o: &Options, keys: KeyMode, n: u64) -> Arc<Generator> {
    let start = server::now_us() - n - 1_000_000;
    let mut cfg = Config::new(o.seed, keys, start, 1);
    cfg.real_cids = o.wire == Wire::Firehose;
    Arc::new(Generator::new(cfg))
}

/// How fast the server's side makes messages on one thread (it must stay
/// well ahead of parity for the comparison to measure parity).
fn generate_only(o: &Options) {
    for &keys in &o.keys {
        let g = generator(o, keys, o.events);
        let t0 = std::time::Instant::now();
        let mut bytes = 0usize;
        for i in 0..o.events {
            let e = g.event(i);
            bytes += match o.wire {
                Wire::Jetstream => workload::jetstream::message(&e).len(),
                Wire::Firehose => workload::firehose::message(&e).len(),
            };
        }
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "generate: {} keys, {:?}: {:.0} messages/s on one thread, mean {} bytes, load average {}",
            keys.name(),
            o.wire,
            o.events as f64 / secs,
            bytes as u64 / o.events,
            probe::load_average()
        );
    }
}

/// The feed scenario's clients read on both cores.
fn feed_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let o = Options::from_env();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    match env("BENCH_SCENARIO").as_deref() {
        Some("catchup") => return rt.block_on(catchup::run(&o)),
        Some("feed") => return feed_runtime().block_on(feed::run(&o)),
        Some("generate") => return generate_only(&o),
        None | Some("compare") => {}
        Some(s) => fail(format!(
            "BENCH_SCENARIO={s} is not compare, catchup, feed or generate"
        )),
    }
    let cache = match o.sqlite_cache_mib {
        0 => "parity's default".to_owned(),
        mib => format!("{mib} MiB"),
    };
    println!(
        "consume bench: {} events, {:?}, seed {}, {} events per batch/transaction, SQLite cache {cache}, load average {}",
        o.events,
        o.wire,
        o.seed,
        o.per_tx,
        probe::load_average()
    );
    for &keys in &o.keys {
        for backend in &o.backends {
            rt.block_on(run::compare(&o, keys, backend));
        }
    }
}
