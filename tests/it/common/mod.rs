//! Shared test support: fixture paths, real databases (a SQLite file in a
//! temp dir, a fresh PostgreSQL database per test), table snapshots, and an
//! in-process consumer with a condition-based wait, and [`backend_tests!`]
//! (one scenario, every backend). The fake network peers and fixture paths
//! are re-exported from the dev-only `testnet` crate.

#![allow(dead_code)]

#[macro_use]
mod backend;
pub mod browser;
pub mod fake_pds;
pub mod importer;
pub mod model;
pub mod process;
pub mod stall_proxy;

// The fake network peers and fixture paths, from the dev-only `testnet` crate.
pub use testnet::frames::relay_frames;
pub use testnet::jetstream::v1_to_v2;
pub use testnet::{
    GOLDEN_JSONL, RELAY_JSONL, dns, fixture, fixture_lines, frames, jetstream, pds, relay,
};

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use parity::cmd::consume::{ConsumeOptions, Consumer};
use parity::config::Config;
use parity::obs::Obs;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

/// The PostgreSQL server tests use: `TEST_PG_URL`, by default the role and
/// database `scripts/test` creates (run it once before `cargo test`).
pub fn pg_base_url() -> String {
    std::env::var("TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://parity_test:parity_test@127.0.0.1:5432/parity_test".into())
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
            panic!("PostgreSQL at TEST_PG_URL is required for tests (scripts/test starts it and creates the parity_test role): {e}")
        });
        // PostgreSQL truncates names at 63 bytes; keep the random part.
        let hint: String = hint.chars().take(24).collect();
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
    pub async fn query_text(&self, sql: String, n: usize) -> Vec<Vec<Option<String>>> {
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

    /// Runs one statement (setup and changes made behind parity's back).
    pub async fn exec(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        if self.is_pg() {
            let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
        } else {
            let pool = sqlx::SqlitePool::connect(&self.url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
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
    pub stats: Arc<Obs>,
    pub token: CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), parity::Error>>,
}

pub fn start(consumer: Consumer, opts: ConsumeOptions) -> Running {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let stats = consumer.obs();
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
    pub async fn wait_for(&self, what: &str, cond: impl Fn(&Obs) -> bool) {
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
                self.stats.dropped(parity::obs::DropReason::Malformed),
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
) -> Arc<Obs> {
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

/// A rule of the operator's that the database enforces (a trigger on
/// `likes`): a like whose `subject.cid` is `refused` is refused.
pub async fn install_like_refusal(db: &TestDb) {
    let (code, err) = {
        let out = process::command()
            .args(["migrate", "--database-url", &db.url])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(code, Some(0), "{err}");
    let ddl: &[&str] = if db.is_pg() {
        &[
            "CREATE FUNCTION refuse_like() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF NEW.subject_cid = 'refused' THEN RAISE EXCEPTION 'like refused by policy'; END IF; \
             RETURN NEW; END $$",
            "CREATE TRIGGER refuse_like BEFORE INSERT OR UPDATE ON likes \
             FOR EACH ROW EXECUTE FUNCTION refuse_like()",
        ]
    } else {
        &[
            "CREATE TRIGGER refuse_like BEFORE INSERT ON likes WHEN NEW.subject_cid = 'refused' \
           BEGIN SELECT RAISE(ABORT, 'like refused by policy'); END",
        ]
    };
    for sql in ddl {
        db.scalar(sql).await;
    }
}
