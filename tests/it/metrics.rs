//! The real `parity consume` binary against the local Jetstream server:
//! `/metrics` counts exactly what was sent (events by kind, rows per table,
//! drops by reason), and `/health` follows the stream: 503 `stale` once the
//! server is silent for `health.max_stale`, a watchdog reconnect after
//! `source.idle_timeout_seconds`, 200 again when events flow.

use crate::common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::jetstream::{JetstreamServer, Line};
use common::process::{Metrics, Parity, get, scrape};
use common::{TestDb, fixture_lines, last_time_us, model};

/// Below the largest recorded event (1,247 bytes) plus margin; the padded
/// like below is over it.
const MAX_MESSAGE_BYTES: usize = 2_048;
const T0: i64 = 1_783_175_888_000_000;

fn like(did: &str, rkey: &str, t: i64, record: &str) -> String {
    format!(
        r#"{{"did":"{did}","time_us":{t},"kind":"commit","commit":{{"rev":"{rev}","operation":"create","collection":"app.bsky.feed.like","rkey":"{rkey}","record":{record},"cid":"{cid}"}}}}"#,
        rev = common::pds::tid(t as u64, 0),
        cid = common::pds::dag_cbor_cid(&t.to_be_bytes()),
    )
}

/// The recorded relay stream plus one bad line of each kind.
fn stream() -> Vec<String> {
    let good = r#"{"$type":"app.bsky.feed.like","createdAt":"2026-07-04T14:38:07.513Z","subject":{"cid":"bafyx","uri":"at://did:plc:b/app.bsky.feed.post/1"}}"#;
    let padded = format!(
        r#"{{"$type":"app.bsky.feed.like","createdAt":"2026-07-04T14:38:07.513Z","pad":"{}","subject":{{"cid":"bafyx","uri":"at://x"}}}}"#,
        "x".repeat(3_000)
    );
    let mut lines = fixture_lines(common::RELAY_JSONL);
    lines.extend([
        "{not json".to_owned(),
        "\u{1b}[31mnot json either".to_owned(),
        r#"{"did":"did:plc:a","time_us":6,"kind":"labels"}"#.to_owned(),
        like(
            "did:plc:nosubject",
            "k1",
            T0 + 1,
            r#"{"createdAt":"2026-07-04T14:38:07.513Z"}"#,
        ),
        like("did:plc:padded", "k2", T0 + 2, &padded),
        like("did:plc:good", "k3", T0 + 3, good),
    ]);
    lines
}

/// What the server sends and what parity must count, computed from the
/// lines without parity's code.
struct Expected {
    received: BTreeMap<&'static str, f64>,
    rows: BTreeMap<&'static str, f64>,
}

fn expected(lines: &[String]) -> Expected {
    let mut received = BTreeMap::from([
        ("commit", 0.0),
        ("identity", 0.0),
        ("account", 0.0),
        ("other", 0.0),
    ]);
    for l in lines.iter().filter(|l| l.len() <= MAX_MESSAGE_BYTES) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
            continue;
        };
        match v["kind"].as_str() {
            // The server only sends collections parity asked for.
            Some("commit")
                if model::table_of(v["commit"]["collection"].as_str().unwrap()).is_some() =>
            {
                *received.get_mut("commit").unwrap() += 1.0
            }
            Some("identity") => *received.get_mut("identity").unwrap() += 1.0,
            Some("account") => *received.get_mut("account").unwrap() += 1.0,
            _ => {}
        }
    }
    // Every record is created once and only older records are deleted, so
    // the rows upserted per table are the rows the model ends with (the
    // like without a subject fails its mapper and is not written).
    let ordered: Vec<&str> = lines
        .iter()
        .filter(|l| l.len() <= MAX_MESSAGE_BYTES && !l.contains("nosubject"))
        .map(String::as_str)
        .collect();
    let rows = model::expected(&ordered)
        .into_iter()
        .map(|(t, rows)| (t, rows.len() as f64))
        .collect();
    Expected { received, rows }
}

async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    mut cond: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn health(addr: SocketAddr) -> (u16, serde_json::Value) {
    let (status, body) = get(addr, "/health").await;
    (status, serde_json::from_str(&body).unwrap())
}

async fn wait_health(addr: SocketAddr, want: u16, reason: Option<&str>) {
    wait_until(&format!("/health {want} {reason:?}"), || async {
        let (status, body) = health(addr).await;
        status == want && body["reason"].as_str() == reason
    })
    .await;
}

/// Scrapes until `name{labels}` equals `want`; returns that scrape.
async fn wait_metric(addr: SocketAddr, name: &str, labels: &[(&str, &str)], want: f64) -> Metrics {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let m = scrape(addr).await;
        if m.get(name, labels) == want {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {name}{labels:?} = {want}; last {}",
            m.get(name, labels)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_was_sent_and_health_follows_the_stream() {
    let db = TestDb::sqlite();
    let lines = stream();
    let server = JetstreamServer::start(lines.iter().map(|l| Line::new(l)).collect()).await;
    let last = last_time_us(&server.lines());
    let endpoint = server.url();
    // A stale window (1 s) well inside the watchdog's (3 s): silent → stale
    // → reconnect, in that order.
    let (mut parity, _cfg) = Parity::consume(
        &format!(
            "[source]\nendpoints = [\"{endpoint}\"]\nidle_timeout_seconds = 3\nrewind_seconds = 0\n\
             backoff_initial_ms = 20\nbackoff_max_ms = 200\nmax_message_bytes = {MAX_MESSAGE_BYTES}\n\
             [batch]\nmax_age_ms = 20\n[health]\nmax_stale = 1\n[log]\nprogress_interval_seconds = 0\n"
        ),
        &db.url,
    );
    let addr = parity.metrics_addr().await;
    server.wait_connections(1).await;
    wait_until("/ready", || async { get(addr, "/ready").await.0 == 200 }).await;

    // Everything is consumed: the counters equal what was sent.
    server.publish_all();
    let m = wait_metric(addr, "parity_cursor", &[], last as f64).await;
    let want = expected(&lines);
    for (kind, n) in &want.received {
        assert_eq!(
            m.get("parity_events_received_total", &[("kind", kind)]),
            *n,
            "received {kind}"
        );
    }
    let drops = [
        ("malformed", "false", 2.0),
        ("unknown_type", "false", 1.0),
        ("oversized", "false", 1.0),
        ("mapper_failure", "false", 1.0),
        ("stale_rev", "true", 0.0),
        ("account_gone", "true", 0.0),
    ];
    for (reason, intentional, n) in drops {
        let labels = [("reason", reason), ("intentional", intentional)];
        assert_eq!(
            m.get("parity_events_dropped_total", &labels),
            n,
            "dropped {reason}"
        );
    }
    assert_eq!(m.get("parity_events_filtered_total", &[]), 0.0);
    for t in ["posts", "likes", "reposts", "follows", "blocks", "profiles"] {
        let n = want.rows.get(t).copied().unwrap_or(0.0);
        let upserted = m.get(
            "parity_records_written_total",
            &[("table", t), ("op", "upsert")],
        );
        assert_eq!(upserted, n, "rows upserted in {t}");
        assert_eq!(db.count(t).await as f64, n, "rows in {t}");
        let deleted = m.get(
            "parity_records_written_total",
            &[("table", t), ("op", "delete")],
        );
        assert_eq!(
            deleted, 0.0,
            "deletes in the recording are of older records ({t})"
        );
    }
    assert_eq!(want.rows["likes"], 72.0);
    // Every decoded event went into exactly one committed batch.
    let received: f64 = want.received.values().sum();
    assert_eq!(m.get("parity_batch_size_sum", &[]), received);
    assert!(m.get("parity_batch_commit_seconds_count", &[]) >= 1.0);
    assert_eq!(
        m.get("parity_batch_commit_seconds_count", &[]),
        m.get("parity_batch_size_count", &[])
    );
    assert!(m.get("parity_lag_seconds", &[]) > 0.0);
    let host = endpoint
        .trim_start_matches("ws://")
        .trim_end_matches("/subscribe");
    assert_eq!(m.get("parity_source_connected", &[("endpoint", host)]), 1.0);
    assert_eq!(m.sum("parity_source_reconnects_total"), 0.0);
    assert_eq!(m.sum("parity_db_errors_total"), 0.0);
    assert_eq!(
        m.get(
            "parity_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    for name in [
        "parity_events_received_total",
        "parity_events_dropped_total",
        "parity_records_written_total",
        "parity_batch_size",
        "parity_batch_commit_seconds",
        "parity_cursor",
        "parity_lag_seconds",
        "parity_source_connected",
    ] {
        assert!(
            m.help.get(name).is_some_and(|h| h.len() > 20),
            "help for {name}"
        );
    }

    // Silent past max_stale: 503 stale, while still connected and before
    // the watchdog fires; `parity health` says so and exits 1.
    server.set_silent(true);
    wait_health(addr, 503, Some("stale")).await;
    assert_eq!(
        scrape(addr).await.sum("parity_source_reconnects_total"),
        0.0
    );
    let out = common::process::command()
        .args(["health", "--url", &format!("http://{addr}/health")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("stale"),
        "{out:?}"
    );

    // Then the watchdog reconnects (visible as a reason), and the new
    // connection, still silent, goes stale again.
    wait_metric(
        addr,
        "parity_source_reconnects_total",
        &[("reason", "idle_timeout")],
        1.0,
    )
    .await;
    server.wait_connections(2).await;
    wait_health(addr, 503, Some("stale")).await;
    let before = scrape(addr).await.sum("parity_events_received_total");

    // The server resumes (it replays from the last cursor): 200 again.
    server.set_silent(false);
    wait_health(addr, 200, None).await;
    assert!(scrape(addr).await.sum("parity_events_received_total") > before);
    let requests = server.requests.lock().unwrap().clone();
    assert!(
        requests[1].contains(&format!("cursor={last}")),
        "{requests:?}"
    );

    let logs = parity.stop();
    for l in &logs {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"));
        for key in ["timestamp", "level", "target", "fields"] {
            assert!(v.get(key).is_some(), "{key} missing: {l}");
        }
        assert!(!l.contains('\u{1b}'), "raw escape in the log: {l}");
    }
}

/// Before any event: every counter with known label values is exported,
/// at 0, so `rate()` and alerts work from the first scrape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelled_counters_are_exported_at_zero_before_the_first_event() {
    let db = TestDb::sqlite();
    let server = JetstreamServer::start(Vec::new()).await;
    let endpoint = server.url();
    let (mut parity, _cfg) = Parity::consume(
        &format!("[source]\nendpoints = [\"{endpoint}\"]\n[log]\nprogress_interval_seconds = 0\n"),
        &db.url,
    );
    let addr = parity.metrics_addr().await;
    server.wait_connections(1).await;
    let m = scrape(addr).await;
    let mut want: Vec<(&str, Vec<(&str, &str)>)> = Vec::new();
    for kind in ["commit", "identity", "account", "other"] {
        want.push(("parity_events_received_total", vec![("kind", kind)]));
    }
    for (reason, intentional) in [
        ("malformed", "false"),
        ("oversized", "false"),
        ("unknown_type", "false"),
        ("mapper_failure", "false"),
        ("stale_rev", "true"),
        ("account_gone", "true"),
        ("db_rejected", "false"),
        ("bad_signature", "false"),
        ("bad_mst", "false"),
        ("unverifiable", "false"),
    ] {
        want.push((
            "parity_events_dropped_total",
            vec![("reason", reason), ("intentional", intentional)],
        ));
    }
    for reason in [
        "connect_failed",
        "connect_timeout",
        "send_failed",
        "idle_timeout",
        "closed",
        "error",
        "upstream_error",
        "zstd_dictionary",
    ] {
        want.push(("parity_source_reconnects_total", vec![("reason", reason)]));
    }
    for kind in ["transient", "rejected", "fatal"] {
        want.push(("parity_db_errors_total", vec![("kind", kind)]));
    }
    for outcome in ["synced", "skipped", "failed"] {
        want.push(("parity_import_records_total", vec![("outcome", outcome)]));
    }
    want.push(("parity_events_filtered_total", vec![]));
    want.push(("parity_import_rate_limited_total", vec![]));
    for (name, labels) in &want {
        assert_eq!(
            m.find(name, labels),
            Some(0.0),
            "{name}{labels:?} not exported at 0; scraped {:?}",
            m.series.keys().collect::<Vec<_>>()
        );
    }
    parity.stop();
}

/// With the default `metrics.addr` (127.0.0.1:9464) already taken, as by a
/// `parity import` started next to `consume`, the second process serves on
/// a free port of its own, says so in one warning naming `metrics.addr`,
/// and keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_default_metrics_port_falls_back_to_a_free_one() {
    // Held by this test, or by whatever already listens there: taken either way.
    let _hold = std::net::TcpListener::bind("127.0.0.1:9464");
    let db = TestDb::sqlite();
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("parity.toml");
    std::fs::write(
        &cfg,
        "[source]\nendpoints = [\"ws://127.0.0.1:1/subscribe\"]\n",
    )
    .unwrap();
    let mut parity = Parity::spawn(&[
        "--config",
        cfg.to_str().unwrap(),
        "--database-url",
        &db.url,
        "consume",
    ]);
    let addr = parity.metrics_addr().await;
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 9464);
    let warned = parity
        .lines()
        .into_iter()
        .filter(|l| l.contains("metrics.addr") && l.contains("WARN"))
        .count();
    assert_eq!(warned, 1, "{}", parity.lines().join("\n"));
    // It answers, and the process is still running (stop() wants exit 0).
    get(addr, "/health").await;
    parity.stop();
}

/// An explicitly configured address that is taken stays a one-line error:
/// only the default falls back.
#[test]
fn a_taken_explicit_metrics_address_stops_parity() {
    let hold = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = hold.local_addr().unwrap().to_string();
    let db = TestDb::sqlite();
    let out = common::process::command()
        .args([
            "--database-url",
            &db.url,
            "--metrics-addr",
            &taken,
            "consume",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: cannot listen on")
            && last.contains(&taken)
            && last.contains("metrics.addr"),
        "{err}"
    );
}
