//! Shared test support: fixture paths, real databases (a SQLite file in a
//! temp dir, a fresh PostgreSQL database per test), table snapshots, and an
//! in-process consumer with a condition-based wait.

#![allow(dead_code)]

pub mod dns;
pub mod frames;
pub mod importer;
pub mod jetstream;
pub mod model;
pub mod pds;
pub mod process;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use parity::config::Config;
use parity::pipeline::{ConsumeOptions, Consumer};
use parity::telemetry::Stats;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures")
        .join(rel)
}

pub fn fixture_lines(rel: &str) -> Vec<String> {
    std::fs::read_to_string(fixture(rel))
        .unwrap_or_else(|e| panic!("fixture {rel}: {e}"))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

pub const RELAY_JSONL: &str =
    "firehose/bsky-relay-2026-07-04-seq-31527015372-31527015471/jetstream_v1.jsonl";
pub const GOLDEN_JSONL: &str = "jetstream/golden_v1.jsonl";

/// The PostgreSQL server tests use; `.ci/run` starts it.
pub fn pg_base_url() -> String {
    std::env::var("TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database under test; the SQLite temp dir lives as long as this.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("parity.db").display());
        TestDb {
            url,
            _dir: Some(dir),
        }
    }

    /// A new, empty PostgreSQL database. Fails (never skips) when the
    /// server is not reachable.
    pub async fn postgres(hint: &str) -> TestDb {
        let base = pg_base_url();
        let admin = sqlx::PgPool::connect(&base).await.unwrap_or_else(|e| {
            panic!("PostgreSQL at {base} is required for tests (start it; .ci/run does): {e}")
        });
        let name = format!("parity_t_{}_{}", hint, rand::random::<u32>());
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
        let (prefix, _) = base.rsplit_once('/').unwrap();
        TestDb {
            url: format!("{prefix}/{name}"),
            _dir: None,
        }
    }

    pub fn is_pg(&self) -> bool {
        self.url.starts_with("postgres")
    }

    /// Runs `sql` and returns the first `n` columns of every row as text.
    async fn query_text(&self, sql: String, n: usize) -> Vec<Vec<Option<String>>> {
        // One body for both pool types.
        macro_rules! fetch {
            ($pool:ty) => {{
                let pool = <$pool>::connect(&self.url).await.unwrap();
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .fetch_all(&pool)
                    .await
                    .unwrap();
                pool.close().await;
                rows.iter()
                    .map(|r| (0..n).map(|i| r.get::<Option<String>, _>(i)).collect())
                    .collect()
            }};
        }
        if self.is_pg() {
            fetch!(sqlx::PgPool)
        } else {
            fetch!(sqlx::SqlitePool)
        }
    }

    /// Rows of `table` as text, ordered by the first column. Timestamps are rendered as
    /// RFC 3339 UTC with µs and booleans as true/false on both backends.
    pub async fn rows(&self, table: &str, cols: &[&str]) -> Vec<Vec<Option<String>>> {
        let exprs: Vec<String> = cols.iter().map(|c| self.text_expr(table, c)).collect();
        let sql = format!("SELECT {} FROM {table} ORDER BY 1", exprs.join(", "));
        self.query_text(sql, cols.len()).await
    }

    fn text_expr(&self, _table: &str, col: &str) -> String {
        let is_time = col == "created_at" || col == "synced_at" || col.ends_with("_at");
        match (self.is_pg(), is_time) {
            (true, true) => {
                format!("to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
            }
            (true, false) => format!("{col}::text"),
            (false, _) => format!("CAST({col} AS TEXT)"),
        }
    }

    /// A single scalar as text.
    pub async fn scalar(&self, sql: &str) -> Option<String> {
        self.query_text(sql.to_owned(), 1)
            .await
            .into_iter()
            .next()
            .and_then(|mut r| r.pop().flatten())
    }

    pub async fn count(&self, table: &str) -> i64 {
        self.scalar(&format!("SELECT CAST(COUNT(*) AS TEXT) FROM {table}"))
            .await
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Every built-in table ([`SNAPSHOT`]) and `parity_repos`, as text.
    pub async fn snapshot(&self) -> Vec<Vec<Vec<Option<String>>>> {
        let mut out = Vec::new();
        for (t, cols) in SNAPSHOT {
            out.push(self.rows(t, cols).await);
        }
        out.push(
            self.rows("parity_repos", &["did", "handle", "status", "rev"])
                .await,
        );
        out
    }

    /// The stored cursor of the only (or newest) stream, if any.
    pub async fn cursor(&self) -> Option<i64> {
        self.scalar("SELECT CAST(MAX(cursor) AS TEXT) FROM parity_cursors")
            .await
            .map(|s| s.parse().unwrap())
    }
}

/// Every built-in table with all its columns except `synced_at`.
pub const SNAPSHOT: &[(&str, &[&str])] = &[
    (
        "posts",
        &[
            "uri",
            "did",
            "rkey",
            "cid",
            "rev",
            "record",
            "text",
            "created_at",
            "reply_parent_uri",
            "reply_root_uri",
            "langs",
        ],
    ),
    (
        "likes",
        &[
            "uri",
            "did",
            "rkey",
            "cid",
            "rev",
            "record",
            "subject_uri",
            "subject_cid",
            "created_at",
        ],
    ),
    (
        "reposts",
        &[
            "uri",
            "did",
            "rkey",
            "cid",
            "rev",
            "record",
            "subject_uri",
            "subject_cid",
            "created_at",
        ],
    ),
    (
        "follows",
        &[
            "uri",
            "did",
            "rkey",
            "cid",
            "rev",
            "record",
            "subject_did",
            "created_at",
        ],
    ),
    (
        "blocks",
        &[
            "uri",
            "did",
            "rkey",
            "cid",
            "rev",
            "record",
            "subject_did",
            "created_at",
        ],
    ),
    (
        "profiles",
        &[
            "uri",
            "did",
            "rkey",
            "cid",
            "rev",
            "record",
            "display_name",
            "description",
        ],
    ),
];

/// A config pointing at `db` and `endpoint`, with quick flushes, no
/// progress lines and no metrics listener (tests run in parallel).
pub fn config(db: &TestDb, endpoint: &str) -> Config {
    let mut c = Config::default();
    c.database.url = db.url.clone();
    c.source.endpoints = vec![endpoint.to_owned()];
    c.source.backoff_initial_ms = 20;
    c.source.backoff_max_ms = 200;
    c.batch.max_age_ms = 20;
    c.log.progress_interval_seconds = 0;
    c.metrics.addr = "off".into();
    c
}

/// A consumer running in this process.
pub struct Running {
    pub stats: Arc<Stats>,
    pub token: CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), parity::Error>>,
}

pub fn start(consumer: Consumer, opts: ConsumeOptions) -> Running {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let stats = consumer.stats();
    let token = CancellationToken::new();
    let t = token.clone();
    let handle = tokio::spawn(async move { consumer.run(opts, t).await });
    Running {
        stats,
        token,
        handle,
    }
}

impl Running {
    /// Waits until `cond(stats)` holds (checked every 10 ms, 30 s at most).
    pub async fn wait_for(&self, what: &str, cond: impl Fn(&Stats) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !cond(&self.stats) {
            assert!(
                !self.handle.is_finished(),
                "consumer exited while waiting for {what}"
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; cursor {}, received {}, malformed {}, reconnects {}",
                self.stats.cursor.load(Relaxed),
                self.stats.received(),
                self.stats.dropped(parity::telemetry::DropReason::Malformed),
                self.stats.reconnects.load(Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the committed cursor equals `c`.
    pub async fn wait_cursor(&self, c: i64) {
        self.wait_for(&format!("cursor {c}"), |s| s.cursor.load(Relaxed) == c)
            .await;
    }

    /// Cancels and waits for the drain; returns the run's result.
    pub async fn stop(self) -> Result<(), parity::Error> {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("consumer drains within 10 s")
            .expect("consumer task did not panic")
    }
}

/// Runs a consumer against a fresh `server` (no connection yet) until every published line up to
/// cursor `last` is committed, then stops it cleanly; returns its counters.
pub async fn run_to_end(
    server: &jetstream::JetstreamServer,
    cfg: Config,
    opts: ConsumeOptions,
    last: i64,
) -> Arc<Stats> {
    let run = start(Consumer::new(cfg), opts);
    server.wait_connections(1).await;
    server.publish_all();
    run.wait_cursor(last).await;
    let stats = run.stats.clone();
    run.stop().await.unwrap();
    stats
}

/// The largest cursor among the lines (the final cursor of a full run).
pub fn last_time_us(lines: &[jetstream::Line]) -> i64 {
    lines.iter().filter_map(|l| l.cursor).max().unwrap()
}

/// The relay frames of the recording as `(seq, message bytes)`; the seq is
/// read with `serde_ipld_dagcbor`, independently of parity's decoder.
pub fn relay_frames() -> Vec<(i64, Vec<u8>)> {
    let bytes = std::fs::read(fixture(
        "firehose/bsky-relay-2026-07-04-seq-31527015372-31527015471/frames.bin",
    ))
    .unwrap();
    let mut out = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 4 {
        let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        let msg = &rest[4..4 + len];
        let mut de = serde_ipld_dagcbor::de::Deserializer::from_slice(msg);
        let _header: ipld_core::ipld::Ipld = serde::Deserialize::deserialize(&mut de).unwrap();
        let body: ipld_core::ipld::Ipld = serde::Deserialize::deserialize(&mut de).unwrap();
        let ipld_core::ipld::Ipld::Map(m) = body else {
            panic!("body is a map")
        };
        let Some(ipld_core::ipld::Ipld::Integer(seq)) = m.get("seq") else {
            panic!("seq")
        };
        out.push((*seq as i64, msg.to_vec()));
        rest = &rest[4 + len..];
    }
    out
}

/// The Jetstream v2 frame for a v1 line (subscribeEvents lexicon): `seq` as
/// given, `time` from `time_us` (RFC 3339, µs), commit fields moved up into
/// the payload with the record copied byte for byte, identity/account
/// objects nested as they are.
pub fn v1_to_v2(line: &str, seq: i64) -> String {
    #[derive(serde::Deserialize)]
    struct V1<'a> {
        did: String,
        time_us: i64,
        kind: String,
        #[serde(borrow)]
        commit: Option<std::collections::BTreeMap<String, &'a serde_json::value::RawValue>>,
        #[serde(borrow)]
        identity: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow)]
        account: Option<&'a serde_json::value::RawValue>,
    }
    let v1: V1<'_> = serde_json::from_str(line).unwrap();
    let time = chrono::DateTime::from_timestamp_micros(v1.time_us)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let mut fields = vec![
        format!(
            r#""$type":"network.bsky.jetstream.subscribeEvents#{}""#,
            v1.kind
        ),
        format!(r#""seq":{seq}"#),
        format!(r#""did":{}"#, serde_json::to_string(&v1.did).unwrap()),
        format!(r#""time":"{time}""#),
    ];
    match (v1.commit, v1.identity, v1.account) {
        (Some(c), _, _) => fields.extend(c.iter().map(|(k, v)| format!(r#""{k}":{}"#, v.get()))),
        (_, Some(i), _) => fields.push(format!(r#""identity":{}"#, i.get())),
        (_, _, Some(a)) => fields.push(format!(r#""account":{}"#, a.get())),
        _ => panic!("unexpected v1 event"),
    }
    format!(
        r#"{{"$type":"message","payload":{{{}}}}}"#,
        fields.join(",")
    )
}
