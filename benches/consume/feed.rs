//! The change-feed scenario (issue 14's benchmark), `BENCH_SCENARIO=feed`:
//! the release `parity consume` commits generated events arriving live at
//! `BENCH_FEED_RATE` events/s (default 10,000) with the change feed on,
//! while `BENCH_FEED_SUBSCRIBERS` WebSocket clients (default 1,000), spread
//! round-robin over `BENCH_FEED_CHANNELS`, receive what it commits. Printed
//! per broker in `BENCH_FEED_BROKERS` (`none,nats,redis,rabbitmq`):
//! commit → client latency p50/p99 (from each message's `committed_at`,
//! written inside the commit's transaction), deliveries/s, changes/s
//! committed, clients dropped, and CPU and RSS of each parity process.
//! With `none` consume serves the clients itself (`feed.addr`); with a
//! broker, consume relays to it and two `parity serve` nodes following it
//! serve half the clients each.
//!
//! Then the idle case: `parity serve` holding `BENCH_FEED_IDLE` (default
//! 10,000) subscriptions on a quiet channel; its RSS before and after.
//!
//! Runs for `BENCH_FEED_SECONDS` (default 30) after a 5 s warm-up.
//! `BENCH_FEED_BATCH_MS` sets consume's `batch.max_age_ms` (default: the
//! config's default, 500 ms): how many changes one commit hands the feed.

use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::feed_clients::{self, percentile_ms};
use crate::probe::{load_average, machine_busy, proc_stats};
use crate::run::{drop_db, fresh_db, parity};
use crate::server::{self, Wire};
use crate::{Options, env, number};

const WARM_UP: Duration = Duration::from_secs(5);

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn broker_url(name: &str) -> String {
    match name {
        "none" => String::new(),
        "nats" => "nats://127.0.0.1:4222".into(),
        "redis" => "redis://127.0.0.1:6379".into(),
        "rabbitmq" => "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
        b => crate::fail(format!(
            "BENCH_FEED_BROKERS: {b} is not none, nats, redis or rabbitmq"
        )),
    }
}

fn config(dir: &std::path::Path, name: &str, feed: &str) -> String {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, feed).unwrap();
    path.to_str().unwrap().to_owned()
}

fn feed_section(addr: &str, broker: &str) -> String {
    format!(
        "[feed]\nenabled = true\naddr = \"{addr}\"\nbroker = \"{broker}\"\n\
         max_connections = 20000\nclient_buffer = 65536\n"
    )
}

async fn wait_listening(addr: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(child.try_wait().unwrap().is_none(), "parity exited");
        assert!(Instant::now() < deadline, "{addr} never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn stop(mut child: Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    child.wait().unwrap();
}

pub async fn run(o: &Options) {
    feed_clients::check_committed_at_parse();
    let rate = number("BENCH_FEED_RATE", 10_000).max(1);
    let subscribers = number("BENCH_FEED_SUBSCRIBERS", 1_000) as usize;
    let seconds = number("BENCH_FEED_SECONDS", 30).max(1);
    let idle = number("BENCH_FEED_IDLE", 10_000) as usize;
    let brokers = env("BENCH_FEED_BROKERS").unwrap_or_else(|| "none,nats,redis,rabbitmq".into());
    let keys = o.keys[0];
    let channels: Vec<String> = env("BENCH_FEED_CHANNELS")
        .unwrap_or_else(|| {
            let mut c = vec![
                "collection:app.bsky.feed.post".to_owned(),
                "collection:app.bsky.feed.repost".to_owned(),
                "collection:app.bsky.graph.*".to_owned(),
                "table:likes".to_owned(),
            ];
            // The most active accounts of the Zipf pool.
            c.extend((0..8).map(|r| format!("did:{}", workload::keys::did(keys, o.seed, r))));
            c.join(",")
        })
        .split(',')
        .map(str::to_owned)
        .collect();
    println!(
        "feed bench: {} at {rate} events/s for {seconds} s, {subscribers} subscribers over {} channels, {} keys, batch.max_age_ms {}, load average {}",
        o.backends[0],
        channels.len(),
        keys.name(),
        env("BENCH_FEED_BATCH_MS").unwrap_or_else(|| "default".into()),
        load_average()
    );
    println!(
        "  broker     committed/s  deliveries/s  p50 (ms)  p99 (ms)  dropped  consume CPU/s  consume RSS (MB)  serve CPU/s  serve RSS (MB)  bench CPU/s  others CPU/s"
    );
    for b in brokers.split(',') {
        one(o, b.trim(), rate, seconds, subscribers, &channels).await;
    }
    if idle > 0 {
        idle_rss(o, idle).await;
    }
}

async fn one(
    o: &Options,
    broker: &str,
    rate: u64,
    seconds: u64,
    subscribers: usize,
    channels: &[String],
) {
    let url_broker = broker_url(broker);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let db = fresh_db(&o.backends[0], "parity_feedbench", dir.path()).await;
    let st = parity()
        .args(["--database-url", &db, "migrate"])
        .status()
        .unwrap();
    assert!(st.success(), "parity migrate");
    // Events start once every client is connected, then run live.
    let total = rate * (seconds + WARM_UP.as_secs() + 5);
    let lead_us = 20_000_000;
    let mut cfg = workload::Config::new(
        o.seed,
        o.keys[0],
        server::now_us() + lead_us,
        1_000_000 / rate,
    );
    cfg.real_cids = false;
    let g = Arc::new(workload::Generator::new(cfg));
    let srv = server::serve(g, Wire::Jetstream, 0, total, true).await;

    let consume_addr = if url_broker.is_empty() {
        free_addr()
    } else {
        "off".into()
    };
    let mut consume_cfg = feed_section(&consume_addr, &url_broker);
    if let Some(ms) = env("BENCH_FEED_BATCH_MS") {
        consume_cfg.push_str(&format!("\n[batch]\nmax_age_ms = {ms}\n"));
    }
    let cfg_path = config(dir.path(), "consume", &consume_cfg);
    let mut consume = parity()
        .args([
            "--config",
            &cfg_path,
            "--database-url",
            &db,
            "consume",
            "--endpoint",
            &srv.url,
        ])
        .spawn()
        .unwrap();
    let mut nodes: Vec<(String, Child)> = Vec::new();
    if url_broker.is_empty() {
        wait_listening(&consume_addr, &mut consume).await;
    } else {
        for i in 0..2 {
            let addr = free_addr();
            let p = config(
                dir.path(),
                &format!("serve{i}"),
                &feed_section(&addr, &url_broker),
            );
            let mut child = parity()
                .args(["--config", &p, "--database-url", &db, "serve"])
                .spawn()
                .unwrap();
            wait_listening(&addr, &mut child).await;
            nodes.push((addr, child));
        }
    }
    let addrs: Vec<String> = if nodes.is_empty() {
        vec![consume_addr.clone()]
    } else {
        nodes.iter().map(|(a, _)| a.clone()).collect()
    };

    let recording = Arc::new(AtomicBool::new(false));
    let stopping = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::with_capacity(subscribers);
    for i in 0..subscribers {
        let ws =
            feed_clients::connect(&addrs[i % addrs.len()], &channels[i % channels.len()]).await;
        clients.push(tokio::spawn(feed_clients::run(
            ws,
            recording.clone(),
            stopping.clone(),
            dropped.clone(),
        )));
    }
    // Wait for the first events, then warm up, then record.
    let first = tokio::time::timeout(Duration::from_secs(60), srv.started).await;
    assert!(first.is_ok(), "consume never connected to the event server");
    while srv.sent.load(Ordering::Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(WARM_UP).await;
    let seq0 = max_seq(&db).await;
    let (c0, _, _) = proc_stats(consume.id());
    let (b0, _, _) = proc_stats(std::process::id());
    let m0 = machine_busy();
    let s0: Vec<f64> = nodes.iter().map(|(_, c)| proc_stats(c.id()).0).collect();
    recording.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    recording.store(false, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let seq1 = max_seq(&db).await;
    let (c1, _, consume_rss) = proc_stats(consume.id());
    let (b1, _, _) = proc_stats(std::process::id());
    let m1 = machine_busy();
    let serve: Vec<(f64, u64)> = nodes
        .iter()
        .zip(&s0)
        .map(|((_, c), s0)| {
            let (c1, _, rss) = proc_stats(c.id());
            (c1 - s0, rss)
        })
        .collect();
    stopping.store(true, Ordering::Relaxed);
    let mut deliveries = 0u64;
    let mut lat = Vec::new();
    for c in clients {
        let seen = c.await.unwrap();
        deliveries += seen.deliveries;
        lat.extend(seen.latencies_us);
    }
    lat.sort_unstable();
    let serve_cpu: f64 = serve.iter().map(|s| s.0).sum::<f64>() / secs;
    let serve_rss = serve
        .iter()
        .map(|s| format!("{:.0}", s.1 as f64 / 1024.0))
        .collect::<Vec<_>>()
        .join("+");
    // What the rest of the machine (brokers, other sessions) took.
    let others = (m1 - m0) - (c1 - c0) - (b1 - b0) - serve.iter().map(|s| s.0).sum::<f64>();
    println!(
        "  {:<9}  {:>11.0}  {:>12.0}  {:>8.1}  {:>8.1}  {:>7}  {:>13.2}  {:>16.0}  {:>11}  {:>14}  {:>11.2}  {:>12.2}",
        broker,
        (seq1 - seq0) as f64 / secs,
        deliveries as f64 / secs,
        percentile_ms(&lat, 50.0),
        percentile_ms(&lat, 99.0),
        dropped.load(Ordering::Relaxed),
        (c1 - c0) / secs,
        consume_rss as f64 / 1024.0,
        if nodes.is_empty() {
            "-".into()
        } else {
            format!("{serve_cpu:.2}")
        },
        if nodes.is_empty() {
            "-".into()
        } else {
            serve_rss
        },
        (b1 - b0) / secs,
        others / secs,
    );
    for (_, c) in nodes {
        stop(c);
    }
    stop(consume);
    drop_db(&db).await;
}

/// The newest change seq in the log.
async fn max_seq(db: &str) -> i64 {
    let sql = "SELECT COALESCE(MAX(seq), 0) FROM parity_changes";
    if db.starts_with("sqlite") {
        let pool = sqlx::SqlitePool::connect(db).await.unwrap();
        let v: i64 = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
        pool.close().await;
        v
    } else {
        let pool = sqlx::PgPool::connect(db).await.unwrap();
        let v: i64 = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
        pool.close().await;
        v
    }
}

/// `parity serve`'s RSS with no clients, then with `n` idle subscribers.
async fn idle_rss(o: &Options, n: usize) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let db = fresh_db(&o.backends[0], "parity_feedidle", dir.path()).await;
    let addr = free_addr();
    let p = config(dir.path(), "idle", &feed_section(&addr, ""));
    let mut child = parity()
        .args(["--config", &p, "--database-url", &db, "serve"])
        .spawn()
        .unwrap();
    wait_listening(&addr, &mut child).await;
    let (_, _, before) = proc_stats(child.id());
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        held.push(feed_clients::connect(&addr, &format!("did:did:plc:idle{i:020}")).await);
    }
    let (_, _, after) = proc_stats(child.id());
    println!(
        "  idle: parity serve RSS {:.0} MB with no client, {:.0} MB with {n} idle subscribers ({:.1} kB each)",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after.saturating_sub(before)) as f64 / n as f64
    );
    drop(held);
    stop(child);
    drop_db(&db).await;
}
