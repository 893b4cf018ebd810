//! End-to-end consume benchmark: a local Jetstream v1 server streams
//! generated events (the real recorded ones varied: new DIDs, rkeys, revs and
//! `time_us`, the same mix of collections) to the release `parity consume`
//! process, which writes them into SQLite or PostgreSQL.
//!
//! With `BENCH_SOURCE=firehose` the server plays a relay instead: the 100
//! recorded `subscribeRepos` frames, re-encoded with a new DID, `seq` and
//! `rev` each (the CAR blocks, and so the record CIDs, are the real ones).
//!
//! Reports events/s, rows/s and the consumer's peak RSS. Not a test: run it
//! with `cargo bench --bench consume` (see README → Benchmarks). Options via
//! env: `BENCH_EVENTS` (default 1,000,000; frames for the firehose),
//! `BENCH_BACKENDS` (default
//! `sqlite,postgres`), `BENCH_MAX_EVENTS` (batch.max_events for the consumer),
//! `BENCH_WRITERS` (database.writers for the consumer),
//! `TEST_PG_URL` (PostgreSQL server).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const RELAY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/firehose/bsky-relay-2026-07-04-seq-31527015372-31527015471/jetstream_v1.jsonl"
);
const FRAMES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/firehose/bsky-relay-2026-07-04-seq-31527015372-31527015471/frames.bin"
);
const B32: &[u8] = b"234567abcdefghijklmnopqrstuvwxyz";

/// A 13-character TID-shaped string from a counter (sortable).
fn tid(mut n: u64) -> String {
    let mut out = [b'2'; 13];
    for i in (0..13).rev() {
        out[i] = B32[(n % 32) as usize];
        n /= 32;
    }
    out[0] = b'3';
    String::from_utf8(out.to_vec()).unwrap()
}

/// `n` events from the recorded templates, each with a fresh DID (from a
/// pool of 100k), rkey, rev and increasing time_us.
fn generate(n: usize) -> Vec<Message> {
    let templates: Vec<serde_json::Value> = std::fs::read_to_string(RELAY)
        .expect("fixtures in tests/fixtures")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let t0 = 1_783_175_888_000_000i64;
    (0..n)
        .map(|i| {
            let mut v = templates[i % templates.len()].clone();
            let did = format!("did:plc:bench{:019}", i % 100_000);
            v["did"] = did.clone().into();
            v["time_us"] = (t0 + i as i64).into();
            if let Some(c) = v.get_mut("commit") {
                c["rkey"] = tid(i as u64).into();
                c["rev"] = tid(1_000_000_000 + i as u64).into();
            }
            for k in ["identity", "account"] {
                if let Some(x) = v.get_mut(k) {
                    x["did"] = did.clone().into();
                }
            }
            Message::text(serde_json::to_string(&v).unwrap())
        })
        .collect()
}

/// `n` relay frames from the recorded ones, each with a fresh DID, `seq`
/// (1..=n) and `rev`.
fn generate_frames(n: usize) -> Vec<Message> {
    use ipld_core::ipld::Ipld;
    let bytes = std::fs::read(FRAMES).expect("fixtures in tests/fixtures");
    let mut templates = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 4 {
        let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        let mut de = serde_ipld_dagcbor::de::Deserializer::from_slice(&rest[4..4 + len]);
        let header: Ipld = serde::Deserialize::deserialize(&mut de).unwrap();
        let body: Ipld = serde::Deserialize::deserialize(&mut de).unwrap();
        templates.push((serde_ipld_dagcbor::to_vec(&header).unwrap(), body));
        rest = &rest[4 + len..];
    }
    (0..n)
        .map(|i| {
            let (header, body) = &templates[i % templates.len()];
            let Ipld::Map(mut m) = body.clone() else {
                panic!("map body")
            };
            // A DID per frame: the records (and so the URIs) repeat with the templates.
            let did = Ipld::String(format!("did:plc:bench{i:019}"));
            m.insert("seq".into(), Ipld::Integer(i as i128 + 1));
            if m.contains_key("repo") {
                m.insert("repo".into(), did);
                m.insert("rev".into(), Ipld::String(tid(1_000_000_000 + i as u64)));
                m.insert("since".into(), Ipld::Null);
                m.remove("prevData");
            } else {
                m.insert("did".into(), did);
            }
            let mut msg = header.clone();
            msg.extend(serde_ipld_dagcbor::to_vec(&Ipld::Map(m)).unwrap());
            Message::binary(msg)
        })
        .collect()
}

/// Serves every message to the first connection, then idles.
async fn serve(
    events: Arc<Vec<Message>>,
    path: &str,
) -> (String, tokio::sync::oneshot::Receiver<Instant>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}{path}", listener.local_addr().unwrap());
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        let _ = started_tx.send(Instant::now());
        for e in events.iter() {
            if ws.feed(e.clone()).await.is_err() {
                return;
            }
        }
        let _ = ws.flush().await;
        while ws.next().await.is_some() {}
    });
    (url, started_rx)
}

fn peak_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn db_cursor(url: &str) -> Option<i64> {
    let sql = "SELECT MAX(cursor) FROM parity_cursors";
    if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url).await.ok()?;
        let v: Option<i64> = sqlx::query_scalar(sql).fetch_one(&pool).await.ok()?;
        pool.close().await;
        v
    } else {
        let pool = sqlx::SqlitePool::connect(url).await.ok()?;
        let v: Option<i64> = sqlx::query_scalar(sql).fetch_one(&pool).await.ok()?;
        pool.close().await;
        v
    }
}

async fn rows(url: &str) -> i64 {
    let sql = "SELECT (SELECT COUNT(*) FROM posts) + (SELECT COUNT(*) FROM likes) + (SELECT COUNT(*) FROM reposts) \
               + (SELECT COUNT(*) FROM follows) + (SELECT COUNT(*) FROM blocks) + (SELECT COUNT(*) FROM profiles)";
    if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap()
    } else {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap()
    }
}

async fn run(backend: &str, events: Arc<Vec<Message>>, last: i64, path: &str) {
    let _dir = tempfile::tempdir().unwrap();
    let url = if backend == "postgres" {
        let base = std::env::var("TEST_PG_URL").unwrap_or_else(|_| {
            "postgres://parity_test:parity_test@127.0.0.1:5432/parity_test".into()
        });
        let admin = sqlx::PgPool::connect(&base)
            .await
            .expect("PostgreSQL reachable");
        sqlx::query("DROP DATABASE IF EXISTS parity_bench")
            .execute(&admin)
            .await
            .unwrap();
        sqlx::query("CREATE DATABASE parity_bench")
            .execute(&admin)
            .await
            .unwrap();
        format!("{}/parity_bench", base.rsplit_once('/').unwrap().0)
    } else {
        format!("sqlite://{}", _dir.path().join("bench.db").display())
    };
    let (endpoint, started) = serve(events.clone(), path).await;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_parity"));
    for (k, _) in std::env::vars() {
        if k.starts_with("PARITY_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .args(["consume", "--endpoint", &endpoint, "--database-url", &url])
        .env("PARITY_LOG_LEVEL", "warn")
        .env("PARITY_LOG_PROGRESS_INTERVAL_SECONDS", "0")
        // Metrics stay on, as in production, on a port nothing else holds.
        .env("PARITY_METRICS_ADDR", "127.0.0.1:0")
        .envs(
            std::env::var("BENCH_MAX_EVENTS")
                .ok()
                .map(|v| ("PARITY_BATCH_MAX_EVENTS", v)),
        )
        .envs(
            std::env::var("BENCH_WRITERS")
                .ok()
                .map(|v| ("PARITY_DATABASE_WRITERS", v)),
        )
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = started.await.unwrap();
    while db_cursor(&url).await != Some(last) {
        assert!(child.try_wait().unwrap().is_none(), "parity exited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    // VmHWM: the child's own peak RSS since exec (rusage would also count
    // the pre-exec copy of this process, which holds the generated events).
    let hwm_kb = peak_rss_kb(child.id());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    child.wait().unwrap();
    let rows = rows(&url).await;
    println!(
        "{backend:>8}: {} messages in {elapsed:.2} s = {:.0} messages/s, {rows} rows = {:.0} rows/s, peak RSS {:.1} MB",
        events.len(),
        events.len() as f64 / elapsed,
        rows as f64 / elapsed,
        hwm_kb as f64 / 1024.0
    );
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let n: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let backends = std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let firehose = std::env::var("BENCH_SOURCE").is_ok_and(|s| s == "firehose");
    let gen_start = Instant::now();
    let (events, last, path) = if firehose {
        (
            generate_frames(n),
            n as i64,
            "/xrpc/com.atproto.sync.subscribeRepos",
        )
    } else {
        (
            generate(n),
            1_783_175_888_000_000i64 + n as i64 - 1,
            "/subscribe",
        )
    };
    let events = Arc::new(events);
    eprintln!(
        "generated {n} messages in {:.1} s",
        gen_start.elapsed().as_secs_f64()
    );
    for b in backends.split(',') {
        rt.block_on(run(b.trim(), events.clone(), last, path));
    }
}
