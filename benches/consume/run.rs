//! One row of the comparison: parity consumes N generated events into a
//! fresh database, then each baseline writes the same rows into another
//! fresh database with the same schema; prints rows/s, the ratio, parity's
//! CPU and peak RSS, bytes per row, and the per-step series as the tables
//! grow.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use workload::KeyMode;
use workload::baseline::{self, Point};

use crate::probe::{Db, machine_busy, proc_stats};
use crate::server;
use crate::{Options, generator};

/// A fresh database: a SQLite file in `dir`, or a PostgreSQL database
/// `name` + this process's id (dropped first; other checkouts may run the
/// bench on the same server) on `TEST_PG_URL`'s server. Migrated by
/// `parity migrate`, so the layout is whatever parity's migrations make.
pub async fn fresh_db(backend: &str, name: &str, dir: &std::path::Path) -> String {
    let name = format!("{name}_{}", std::process::id());
    let url = if backend == "postgres" {
        workload::pg_db::fresh(&name).await
    } else {
        format!("sqlite://{}", dir.join(format!("{name}.db")).display())
    };
    let status = parity()
        .args(["--database-url", &url, "migrate"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "parity migrate failed on {url}");
    url
}

/// Deletes a bench database once measured (10M-row databases are GBs),
/// unless `BENCH_KEEP_DB=1`: then it is left for inspection (`dbstat`,
/// `pg_relation_size`) and its URL printed.
pub async fn drop_db(url: &str) {
    if std::env::var("BENCH_KEEP_DB").as_deref() == Ok("1") {
        println!("  kept database: {url}");
        return;
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        for f in [
            path.to_owned(),
            format!("{path}-wal"),
            format!("{path}-shm"),
        ] {
            let _ = std::fs::remove_file(f);
        }
        return;
    }
    let (base, name) = url.rsplit_once('/').unwrap();
    let admin_url = std::env::var("TEST_PG_URL").unwrap_or_else(|_| format!("{base}/parity_test"));
    if let Ok(admin) = sqlx::PgPool::connect(&admin_url).await {
        let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&admin).await;
        admin.close().await;
    }
}

/// The release parity binary (`BENCH_PARITY_BIN`, else this build's), with
/// no `PARITY_*` from the caller's env but the page cache of
/// `BENCH_SQLITE_CACHE_MIB`. Another binary lets one bench build
/// measure an older parity in the same session.
pub fn parity() -> Command {
    let bin =
        std::env::var("BENCH_PARITY_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_parity").into());
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars() {
        if k.starts_with("PARITY_") {
            cmd.env_remove(k);
        }
    }
    // The one PARITY_* the bench passes on, from its own option.
    match crate::sqlite_cache_mib() {
        0 => {}
        mib => {
            cmd.env("PARITY_DATABASE_SQLITE_CACHE_MIB", mib.to_string());
        }
    }
    cmd.env("PARITY_LOG_LEVEL", "warn")
        .env("PARITY_LOG_PROGRESS_INTERVAL_SECONDS", "0")
        .stdin(Stdio::null());
    cmd
}

/// What one writer achieved.
struct Outcome {
    name: String,
    secs: f64,
    rows: u64,
    bytes: u64,
    /// `(events, seconds)` at each step boundary.
    series: Vec<(u64, f64)>,
}

/// Rows written by the end of event `events` (from the baseline's points,
/// which land on every transaction; falls back to events).
fn rows_at(points: &[Point], events: u64) -> u64 {
    if events == 0 {
        return 0;
    }
    points
        .iter()
        .find(|p| p.events >= events)
        .map_or(events, |p| p.rows)
}

/// parity on `url`; with `feed`, `[feed] enabled` (not serving: the cost
/// of writing the change log). Returns the outcome, parity's CPU seconds,
/// its peak RSS and the whole machine's busy CPU seconds from the first
/// event sent to the last one stored (parity, the database server and this
/// bench's server together: steadier than the wall time on a shared
/// machine, where another process's burst moves the wall time but not the
/// work).
async fn run_parity(
    o: &Options,
    g: Arc<workload::Generator>,
    url: &str,
    feed: bool,
) -> (Outcome, f64, u64, f64) {
    let n = o.events;
    let db = Db::open(url).await;
    let empty = db.bytes().await;
    let srv = server::serve(g.clone(), o.wire, 0, n, false).await;
    let mut child = parity()
        .args(["consume", "--endpoint", &srv.url, "--database-url", url])
        // Metrics stay on, as in production, on a port nothing else holds.
        .env("PARITY_METRICS_ADDR", "127.0.0.1:0")
        .env("PARITY_BATCH_MAX_EVENTS", o.per_tx.to_string())
        .env("PARITY_FEED_ENABLED", feed.to_string())
        .env("PARITY_FEED_ADDR", "off")
        .envs(
            std::env::var("BENCH_WRITERS")
                .ok()
                .map(|v| ("PARITY_DATABASE_WRITERS", v)),
        )
        .spawn()
        .unwrap();
    let t0 = srv.started.await.unwrap();
    let busy0 = machine_busy();
    let last = o.wire.cursor(&g, n - 1);
    let mut series = Vec::new();
    let mut next = o.step.min(n);
    loop {
        let c = db.cursor().await;
        let secs = t0.elapsed().as_secs_f64();
        while next <= n && c.is_some_and(|c| c >= o.wire.cursor(&g, next - 1)) {
            series.push((next, secs));
            next += o.step;
        }
        if c == Some(last) {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "parity exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let busy = machine_busy() - busy0;
    let secs = series.last().map_or(0.0, |s| s.1);
    if series.last().map(|s| s.0) != Some(n) {
        series.push((n, secs));
    }
    let (cpu, hwm, _) = proc_stats(child.id());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    child.wait().unwrap();
    let rows = db.rows().await as u64;
    let bytes = db.bytes().await.saturating_sub(empty);
    if feed {
        println!("  feed on: {} changes logged", db.changes().await);
    }
    db.close().await;
    let out = Outcome {
        name: if feed { "parity feed on" } else { "parity" }.into(),
        secs,
        rows,
        bytes,
        series,
    };
    (out, cpu, hwm, busy)
}

async fn run_baseline(
    o: &Options,
    g: Arc<workload::Generator>,
    backend: &str,
    mode: baseline::postgres::Mode,
    dir: &std::path::Path,
) -> (Outcome, Vec<Point>) {
    let url = fresh_db(backend, "parity_bench_base", dir).await;
    let db = Db::open(&url).await;
    let empty = db.bytes().await;
    let points = if backend == "postgres" {
        baseline::postgres::run(g, &url, mode, 0, o.events, o.per_tx)
            .await
            .expect("PostgreSQL baseline")
    } else {
        let path = url.trim_start_matches("sqlite://").to_owned();
        let (n, per_tx) = (o.events, o.per_tx);
        // parity's page cache (its default, or BENCH_SQLITE_CACHE_MIB as
        // parity was given), for a like-for-like limit.
        let cache_kib = match o.sqlite_cache_mib {
            0 => parity::store::default_sqlite_cache_kib(),
            mib => mib * 1024,
        };
        tokio::task::spawn_blocking(move || {
            baseline::sqlite::run(g, &path, cache_kib, 0, n, per_tx)
        })
        .await
        .unwrap()
        .expect("SQLite baseline")
    };
    let secs = points.last().map_or(0.0, |p| p.secs);
    let rows = db.rows().await as u64;
    let bytes = db.bytes().await.saturating_sub(empty);
    db.close().await;
    drop_db(&url).await;
    let series = points
        .iter()
        .filter(|p| p.events % o.step == 0 || p.events == o.events)
        .map(|p| (p.events, p.secs))
        .collect();
    let name = if backend == "postgres" {
        format!("baseline {}", mode.name())
    } else {
        "baseline upsert".into()
    };
    (
        Outcome {
            name,
            secs,
            rows,
            bytes,
            series,
        },
        points,
    )
}

/// parity then the baseline(s) on the same events; prints the comparison.
pub async fn compare(o: &Options, keys: KeyMode, backend: &str) {
    let mut dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    dir.disable_cleanup(std::env::var("BENCH_KEEP_DB").as_deref() == Ok("1"));
    let g = generator(o, keys, o.events);
    let url = fresh_db(backend, "parity_bench", dir.path()).await;
    let (p, cpu, hwm, busy) = run_parity(o, g.clone(), &url, false).await;
    drop_db(&url).await;
    if o.feed {
        let url = fresh_db(backend, "parity_bench_feed", dir.path()).await;
        let (f, cpu_f, _, busy_f) = run_parity(o, g.clone(), &url, true).await;
        drop_db(&url).await;
        let per_event = |busy: f64| busy * 1e6 / o.events as f64;
        println!(
            "\n{backend} / {} keys: feed off {:.0} events/s in {:.1} s (CPU {:.1} s), \
             feed on {:.0} events/s in {:.1} s (CPU {:.1} s): feed on = {:.1} % of feed off, load {}\n  \
             machine CPU (parity, database, bench server): feed off {:.1} µs/event, feed on {:.1} µs/event: \
             feed off ÷ on = {:.1} %",
            keys.name(),
            o.events as f64 / p.secs,
            p.secs,
            cpu,
            o.events as f64 / f.secs,
            f.secs,
            cpu_f,
            100.0 * p.secs / f.secs,
            crate::probe::load_average(),
            per_event(busy),
            per_event(busy_f),
            100.0 * busy / busy_f,
        );
    }
    let mut baselines = Vec::new();
    if o.baseline {
        let modes: &[baseline::postgres::Mode] = if backend == "postgres" {
            &[
                baseline::postgres::Mode::Upsert,
                baseline::postgres::Mode::Copy,
            ]
        } else {
            &[baseline::postgres::Mode::Upsert]
        };
        for &m in modes {
            baselines.push(run_baseline(o, g.clone(), backend, m, dir.path()).await);
        }
    }
    let points: &[Point] = baselines.first().map_or(&[], |b| &b.1);
    let row_writes = rows_at(points, o.events);
    let rate = |x: &Outcome| row_writes as f64 / x.secs;
    println!(
        "\n{backend} / {} keys / {:?}: parity {:.0} rows/s ({:.0} events/s, {row_writes} row writes in {:.1} s), \
         CPU {:.1} s ({:.2} cores), peak RSS {:.0} MB, {:.0} bytes/row, load {}",
        keys.name(),
        o.wire,
        rate(&p),
        o.events as f64 / p.secs,
        p.secs,
        cpu,
        cpu / p.secs,
        hwm as f64 / 1024.0,
        p.bytes as f64 / p.rows.max(1) as f64,
        crate::probe::load_average()
    );
    for (b, _) in &baselines {
        println!(
            "  {}: {:.0} rows/s in {:.1} s, {:.0} bytes/row; parity ÷ baseline = {:.0} %",
            b.name,
            rate(b),
            b.secs,
            b.bytes as f64 / b.rows.max(1) as f64,
            100.0 * rate(&p) / rate(b)
        );
        if b.rows != p.rows {
            println!(
                "  WARNING: parity stored {} rows, {} stored {}: a row was dropped or a guard differs",
                p.rows, b.name, b.rows
            );
        }
    }
    println!("  per step (rows/s while the tables grow from the step's start to its end):");
    let mut prev = (0u64, 0.0f64);
    let mut prevs: Vec<f64> = vec![0.0; baselines.len()];
    for &(ev, secs) in &p.series {
        let rows = rows_at(points, ev).saturating_sub(rows_at(points, prev.0));
        let mut line = format!(
            "    events {:>9}–{:<9} parity {:>7.0}",
            prev.0,
            ev,
            rows as f64 / (secs - prev.1).max(1e-9)
        );
        for (k, (b, _)) in baselines.iter().enumerate() {
            if let Some(&(_, bs)) = b.series.iter().find(|s| s.0 == ev) {
                line += &format!(
                    " · {} {:>7.0} ({:.0} %)",
                    b.name,
                    rows as f64 / (bs - prevs[k]).max(1e-9),
                    100.0 * (bs - prevs[k]) / (secs - prev.1).max(1e-9)
                );
                prevs[k] = bs;
            }
        }
        println!("{line}");
        prev = (ev, secs);
    }
}
