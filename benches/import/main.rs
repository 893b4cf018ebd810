//! Import benchmarks (`cargo bench --bench import`), run against the test
//! suite's local PLC directory + PDS (and relay) with the release `parity`
//! binary. `BENCH_MODE` picks one:
//!
//! - `paced` (default, [`paced`]): listRecords paging under the per-host
//!   rate limit, 50 ms of latency per request;
//! - `methods` ([`methods`], issue 15 benchmark a): whole-repo import
//!   (getRepo) against listRecords on the same repos with 50 ms of latency
//!   per request: records/s and requests per 1,000 records;
//! - `all` ([`all`], issue 15 benchmark b): `import --all` from the local
//!   relay with no latency, many generated repos, into SQLite and
//!   PostgreSQL, against the store-limit baseline writing the same rows.
//!
//! Shared here: env parsing, the release build, generated repos, fresh
//! databases, running the binary and reading its CPU time. Not a test
//! (README → Benchmarks).

mod all;
mod methods;
mod paced;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use nix::sys::resource::{UsageWho, getrusage};
use testnet::pds::{Pds, SynthRecord, tid};

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The release binary: `BENCH_PARITY_BIN` if set (a binary built
/// beforehand), else `cargo build --release` first.
pub fn build_release() -> PathBuf {
    if let Ok(bin) = std::env::var("BENCH_PARITY_BIN") {
        return PathBuf::from(bin);
    }
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--locked", "--bin", "parity"])
        .status()
        .expect("cargo build");
    assert!(status.success());
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/release/parity"
    ))
}

/// Repo `d`: `records` records, half posts, half likes, rkeys in time order.
pub fn repo(d: usize, records: usize) -> (String, Vec<SynthRecord>) {
    let did = format!("did:plc:bench{d:019}");
    let out = (0..records)
        .map(|i| {
            let rkey = tid(1_700_000_000_000_000 + i as u64, d as u16);
            if i % 2 == 0 {
                SynthRecord::new(
                    "app.bsky.feed.post",
                    &rkey,
                    &format!(
                        r#"{{"$type":"app.bsky.feed.post","text":"post {i} of account {d}, a sentence of ordinary length for a post","langs":["en"],"createdAt":"2026-01-01T00:00:00.000Z"}}"#
                    ),
                )
            } else {
                SynthRecord::new(
                    "app.bsky.feed.like",
                    &rkey,
                    &format!(
                        r#"{{"$type":"app.bsky.feed.like","subject":{{"uri":"at://did:plc:ewvi7nxzyoun6zhxrhs64oiz/app.bsky.feed.post/3k{i:011}","cid":"bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"}},"createdAt":"2026-01-01T00:00:00.000Z"}}"#
                    ),
                )
            }
        })
        .collect();
    (did, out)
}

/// The rev every generated repo is served at.
pub fn rev_of(d: usize) -> String {
    tid(1_800_000_000_000_000, d as u16)
}

/// `n` generated repos of `records` records on `pds`; their DIDs.
pub fn add_repos(pds: &Pds, n: usize, records: usize) -> Vec<String> {
    (0..n)
        .map(|d| {
            let (did, recs) = repo(d, records);
            pds.add_repo(&did, &rev_of(d), None, recs);
            did
        })
        .collect()
}

pub fn pg_base() -> String {
    std::env::var("TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://parity_test:parity_test@127.0.0.1:5432/parity_test".into())
}

/// A fresh PostgreSQL database `name` on the test server; its URL.
pub async fn pg_database(base: &str, name: &str) -> String {
    let admin = sqlx::PgPool::connect(base).await.expect("PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name}"
    )))
    .execute(&admin)
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    format!("{}/{name}", base.rsplit_once('/').unwrap().0)
}

/// Drops a database [`pg_database`] made.
pub async fn drop_pg_database(base: &str, name: &str) {
    let admin = sqlx::PgPool::connect(base).await.expect("PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&admin)
    .await
    .unwrap();
    admin.close().await;
}

/// A fresh database of `backend` named `name` (SQLite: a file in `dir`).
pub async fn fresh_db(backend: &str, name: &str, dir: &Path) -> String {
    match backend {
        "sqlite" => format!("sqlite://{}", dir.join(format!("{name}.db")).display()),
        "postgres" => pg_database(&pg_base(), name).await,
        other => panic!("unknown backend {other}"),
    }
}

/// One run of the binary: its output, wall seconds and CPU seconds
/// (user + system of the child).
pub struct Ran {
    pub out: Output,
    pub wall: f64,
    pub cpu: f64,
}

/// Runs `parity ARGS` with `env` (on a blocking thread), timing it.
pub async fn run_parity(bin: &Path, args: Vec<String>, env: Vec<(String, String)>) -> Ran {
    let cpu = |u: &nix::sys::resource::Usage| {
        let t = u.user_time();
        let s = u.system_time();
        t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6 + s.tv_sec() as f64 + s.tv_usec() as f64 / 1e6
    };
    let bin = bin.to_owned();
    let usage0 = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap();
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .args(args)
            .envs(env)
            .stdin(Stdio::null())
            .output()
            .expect("run parity")
    })
    .await
    .unwrap();
    let wall = started.elapsed().as_secs_f64();
    let usage1 = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ran {
        out,
        wall,
        cpu: cpu(&usage1) - cpu(&usage0),
    }
}

/// The load average (1 min) now, for the record.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mode = std::env::var("BENCH_MODE").unwrap_or_else(|_| "paced".into());
    match mode.as_str() {
        "paced" => paced::run().await,
        "methods" => methods::run().await,
        "all" => all::run().await,
        other => panic!("BENCH_MODE={other}: paced, methods or all"),
    }
}
