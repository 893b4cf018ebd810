//! The catch-up scenario (issue 12 item 6): the generator's clock starts
//! one hour ago (`BENCH_CATCHUP_SECONDS`, default 3,600) at
//! `BENCH_CATCHUP_RATE` events/s (default 200: a 720,000-event backlog);
//! parity starts with `--cursor` at its start. The server sends the backlog
//! as fast as parity takes it, then goes live at the same rate. Every
//! second the bench records parity's RSS, `/health` and the
//! `parity_lag_seconds` gauge from `/metrics` on the same listener, until
//! the lag has stayed under 5 s for 10 samples (live).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::probe::proc_stats;
use crate::run::{fresh_db, parity};
use crate::server::{self, Wire};
use crate::{Options, number};

/// One plain HTTP/1.0 GET on 127.0.0.1: `(status, body)`.
async fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map_or("", |x| x.1).to_owned();
    Some((status, body))
}

fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

pub async fn run(o: &Options) {
    let backlog_secs = number("BENCH_CATCHUP_SECONDS", 3_600);
    let rate = number("BENCH_CATCHUP_RATE", 200).max(1);
    let keys = o.keys[0];
    let backend = o.backends[0].clone();
    let step_us = 1_000_000 / rate;
    let start = server::now_us() - backlog_secs * 1_000_000;
    let mut cfg = workload::Config::new(o.seed, keys, start, step_us);
    cfg.real_cids = o.wire == Wire::Firehose;
    let g = std::sync::Arc::new(workload::Generator::new(cfg));
    let backlog = backlog_secs * rate;
    // Live for long enough after the backlog to see the lag settle.
    let total = backlog + 600 * rate;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let url = fresh_db(&backend, "parity_bench", dir.path()).await;
    let srv = server::serve(g.clone(), o.wire, 0, total, true).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let cursor = o.wire.cursor(&g, 0).to_string();
    let mut child = parity()
        .args([
            "consume",
            "--endpoint",
            &srv.url,
            "--database-url",
            &url,
            "--cursor",
            &cursor,
        ])
        .env("PARITY_METRICS_ADDR", &addr)
        .env("PARITY_BATCH_MAX_EVENTS", o.per_tx.to_string())
        .spawn()
        .unwrap();
    println!(
        "catch-up: {backend}, {} keys, {:?}, backlog {backlog} events ({backlog_secs} s at {rate}/s), load average {}",
        keys.name(),
        o.wire,
        crate::probe::load_average()
    );
    println!("  t (s)  events sent  RSS (MB)  /health  lag (s)");
    let t0 = Instant::now();
    let mut live_samples = 0;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticker.tick().await;
        assert!(child.try_wait().unwrap().is_none(), "parity exited");
        let (_, _, rss) = proc_stats(child.id());
        let health = get(&addr, "/health")
            .await
            .map_or("-".into(), |(s, _)| s.to_string());
        let lag = match get(&addr, "/metrics").await {
            Some((_, m)) => gauge(&m, "parity_lag_seconds"),
            None => None,
        };
        println!(
            "  {:>5.0}  {:>11}  {:>8.1}  {:>7}  {}",
            t0.elapsed().as_secs_f64(),
            srv.sent.load(std::sync::atomic::Ordering::Relaxed),
            rss as f64 / 1024.0,
            health,
            lag.map_or("-".into(), |l| format!("{l:.1}"))
        );
        live_samples = if lag.is_some_and(|l| l < 5.0) {
            live_samples + 1
        } else {
            0
        };
        if live_samples >= 10 {
            break;
        }
    }
    let (cpu, hwm, _) = proc_stats(child.id());
    println!(
        "  live after {:.0} s; CPU {cpu:.1} s; peak RSS {:.0} MB",
        t0.elapsed().as_secs_f64() - 10.0,
        hwm as f64 / 1024.0
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    child.wait().unwrap();
    crate::run::drop_db(&url).await;
}
