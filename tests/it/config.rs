//! `parity config example`, `parity config check` and `parity health` as a
//! user runs them: the example is the file and parses to the defaults,
//! each kind of bad config gets its own one-line error, the check masks
//! passwords and reports a missing column without changing the database.

use crate::common;

use std::path::Path;

use common::TestDb;
use common::process::command;
use parity::config::Config;
use parity::mapper::{ColumnType, TableSchema};
use parity::store::{DatabaseConfig, Store};

/// Runs the binary; returns (exit code, stdout, stderr).
fn parity(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = command()
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn example_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/parity.example.toml")
}

#[test]
fn example_file_parses_to_the_defaults() {
    let cfg = Config::load(Some(&example_path()), Vec::new()).unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg, Config::default());
    assert_eq!(cfg.metrics.addr, "127.0.0.1:9464");
    assert_eq!(cfg.health.max_stale, 60);
    let names = Config::env_names();
    for n in ["PARITY_METRICS_ADDR", "PARITY_HEALTH_MAX_STALE"] {
        assert!(names.contains(&n.to_owned()), "{n}");
    }
}

#[test]
fn config_example_prints_the_file() {
    let (code, out, err) = parity(&["config", "example"], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, std::fs::read_to_string(example_path()).unwrap());
    // It needs no valid config: it is what you start one from.
    let (code, out2, _) = parity(
        &["config", "example"],
        &[
            ("PARITY_NO_SUCH_KEY", "1"),
            ("PARITY_CONFIG", "/nonexistent.toml"),
        ],
    );
    assert_eq!((code, out2), (0, out));
}

/// One `error:` line on stderr, exit code 2, naming what to fix.
fn assert_one_line_error(args: &[&str], env: &[(&str, &str)], wanted: &[&str]) {
    let (code, out, err) = parity(args, env);
    assert_eq!(code, 2, "{args:?} {env:?}: {err}");
    assert!(out.is_empty(), "nothing printed on stdout: {out}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    for w in wanted {
        assert!(lines[0].contains(w), "{w:?} missing from: {err}");
    }
}

#[test]
fn each_bad_config_gets_its_own_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.display().to_string()
    };
    let check = ["config", "check"];
    let with_file = |p: &str| -> Vec<String> {
        ["--config", p, "config", "check"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    };
    let cases: Vec<(String, &[&str])> = vec![
        (
            file("unknown_key.toml", "[metrics]\naddress = \"x\"\n"),
            &["address", "line 2"],
        ),
        (
            file("unknown_section.toml", "[helth]\nmax_stale = 5\n"),
            &["helth", "line 1"],
        ),
        (
            file("bad_addr.toml", "[metrics]\naddr = \"localhost:9464\"\n"),
            &["metrics.addr", "localhost:9464", "IP:PORT"],
        ),
        (
            file("addr_type.toml", "[metrics]\naddr = 9464\n"),
            &["line 2", "string"],
        ),
        (
            file("stale_text.toml", "[health]\nmax_stale = \"1m\"\n"),
            &["health.max_stale", "whole seconds", "line 2"],
        ),
        (
            file("stale_zero.toml", "[health]\nmax_stale = 0\n"),
            &["health.max_stale", "at least 1"],
        ),
        (
            file("stale_negative.toml", "[health]\nmax_stale = -5\n"),
            &["health.max_stale", "-5"],
        ),
        (
            file("stale_float.toml", "[health]\nmax_stale = 2.5\n"),
            &["health.max_stale", "2.5"],
        ),
        (
            file("log_format.toml", "[log]\nformat = \"xml\"\n"),
            &["log.format", "xml"],
        ),
        (
            file("not_toml.toml", "[metrics\naddr = 1\n"),
            &["not_toml.toml", "line 1"],
        ),
        (
            file(
                "reserved_table.toml",
                "[[mappers.declarative]]\ncollection = \"app.bsky.actor.profile\"\ntable = \"user\"\n",
            ),
            &["table name \"user\"", "reserved word", "pick another"],
        ),
        (
            file(
                "reserved_column.toml",
                "[[mappers.declarative]]\ncollection = \"com.example.item\"\ntable = \"items\"\n[mappers.declarative.columns]\norder = { pointer = \"/order\", type = \"integer\" }\n",
            ),
            &["column name \"order\"", "reserved word"],
        ),
    ];
    for (path, wanted) in &cases {
        let args = with_file(path);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_one_line_error(&args, &[], wanted);
    }
    assert_one_line_error(
        &check,
        &[("PARITY_METRICS_ADRR", "off")],
        &["PARITY_METRICS_ADRR"],
    );
    assert_one_line_error(
        &check,
        &[("PARITY_METRICS_ADDR", "nope")],
        &["metrics.addr", "nope"],
    );
    assert_one_line_error(
        &check,
        &[("PARITY_HEALTH_MAX_STALE", "1m")],
        &["PARITY_HEALTH_MAX_STALE", "integer"],
    );
    assert_one_line_error(
        &["--metrics-addr", "9464", "config", "check"],
        &[],
        &["metrics.addr", "\"9464\""],
    );
    // The same checks stop `consume` before it touches anything.
    assert_one_line_error(
        &["consume"],
        &[("PARITY_HEALTH_MAX_STALE", "0")],
        &["health.max_stale"],
    );
}

/// `database.writers`: more than SQLite's one write lock, or more than the
/// cap, is a one-line config error; `consume` stops before it touches the
/// database.
#[test]
fn writer_counts_the_backend_cannot_take_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("w.db").display());
    assert_one_line_error(
        &["--database-url", &sqlite, "consume"],
        &[("PARITY_DATABASE_WRITERS", "2")],
        &["database.writers", "SQLite", "use 1"],
    );
    assert!(!dir.path().join("w.db").exists(), "nothing was created");
    assert_one_line_error(
        &[
            "--database-url",
            "postgres://u@127.0.0.1:1/db",
            "config",
            "check",
        ],
        &[("PARITY_DATABASE_WRITERS", "33")],
        &["database.writers", "33", "1 to 32"],
    );
    let (code, _, err) = parity(
        &["--database-url", &sqlite, "config", "check"],
        &[("PARITY_DATABASE_WRITERS", "1")],
    );
    assert!(!err.contains("database.writers"), "{code}: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_masks_the_password_and_prints_the_effective_config() {
    let db = TestDb::postgres("check").await;
    let mut url = url::Url::parse(&db.url).unwrap();
    // The test server trusts local connections, so any password works.
    url.set_password(Some("hunter2")).unwrap();
    let (code, out, err) = parity(
        &["--database-url", url.as_str(), "config", "check"],
        &[
            ("PARITY_BATCH_MAX_EVENTS", "123"),
            ("PARITY_METRICS_ADDR", "off"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains("hunter2") && !err.contains("hunter2"),
        "{out}{err}"
    );
    let shown: Config = toml::from_str(&out).expect("stdout is the effective config as TOML");
    url.set_password(Some("****")).unwrap();
    assert_eq!(shown.database.url, url.as_str());
    assert_eq!(shown.batch.max_events, 123, "environment applied");
    assert_eq!(shown.metrics.addr, "off");
    assert!(err.contains("ok: database postgres://"), "{err}");
    assert!(
        err.contains("migration(s) not applied yet"),
        "fresh database: {err}"
    );
    // Read-only: the fresh database still has no tables.
    assert_eq!(
        db.scalar("SELECT CAST(COUNT(*) AS TEXT) FROM information_schema.tables WHERE table_schema = 'public'")
            .await
            .as_deref(),
        Some("0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_reports_a_missing_column_without_changing_anything() {
    let db = TestDb::sqlite();
    // An existing `statuses` table without `created_at`.
    let mut store = Store::connect(&DatabaseConfig {
        url: db.url.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let table = TableSchema::new("statuses", &[("duration_minutes", ColumnType::Integer)]);
    store.prepare(&[table], &[]).await.unwrap();
    store.close().await;

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("parity.toml");
    std::fs::write(
        &cfg,
        r#"
[[mappers.declarative]]
collection = "app.bsky.actor.status"
table = "statuses"
[mappers.declarative.columns]
duration_minutes = { pointer = "/durationMinutes", type = "integer" }
created_at = { pointer = "/createdAt", type = "timestamp" }

[[mappers.declarative]]
collection = "app.bsky.feed.threadgate"
table = "threadgates"
[mappers.declarative.columns]
post = { pointer = "/post", type = "text", required = true }
"#,
    )
    .unwrap();
    let tables_before = db
        .scalar("SELECT group_concat(name) FROM (SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name)")
        .await;
    let (code, out, err) = parity(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--database-url",
            &db.url,
            "config",
            "check",
        ],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(out.contains("table = \"statuses\""), "{out}");
    assert!(err.contains("ok: migrations are up to date"), "{err}");
    assert!(
        err.contains("ok: table posts has every mapped column"),
        "{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.starts_with("error: table statuses has no column created_at")),
        "{err}"
    );
    assert!(
        err.contains("note: table threadgates does not exist yet"),
        "{err}"
    );
    let tables_after = db
        .scalar("SELECT group_concat(name) FROM (SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name)")
        .await;
    assert_eq!(tables_after, tables_before, "config check created nothing");

    // A SQLite file that does not exist is not created.
    let missing = dir.path().join("nothing.db");
    let url = format!("sqlite://{}", missing.display());
    let (code, _, err) = parity(&["--database-url", &url, "config", "check"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("does not exist yet"), "{err}");
    assert!(!missing.exists());
}

#[test]
fn health_command_fails_when_nothing_answers() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/health");
    let (code, out, _) = parity(&["health", "--url", &url], &[]);
    assert_eq!(code, 1);
    assert!(out.starts_with("unhealthy: cannot reach"), "{out}");
    // Without --url the port comes from metrics.addr (unspecified → loopback).
    let (code, out, _) = parity(
        &["health"],
        &[("PARITY_METRICS_ADDR", &format!("0.0.0.0:{port}"))],
    );
    assert_eq!(code, 1);
    assert!(out.contains(&format!("127.0.0.1:{port}")), "{out}");
}

/// A database URL with an unknown scheme is a config error (exit 2) on
/// every command that connects, and its one-line message names what to use
/// without printing the password in the URL.
#[test]
fn unknown_database_scheme_is_a_config_error_without_the_password() {
    for url in ["mysql://u:s3cret@127.0.0.1/db", "http://u:s3cret@h/db"] {
        for cmd in [&["migrate"][..], &["consume", "--metrics-addr", "off"][..]] {
            let mut args = cmd.to_vec();
            args.extend_from_slice(&["--database-url", url]);
            let (code, out, err) = parity(&args, &[]);
            assert_eq!(code, 2, "{args:?}: {err}");
            assert!(out.is_empty(), "{out}");
            assert!(!err.contains("s3cret"), "password printed: {err}");
            let lines: Vec<&str> = err.lines().collect();
            assert_eq!(lines.len(), 1, "one line: {err}");
            for w in ["error: ", "sqlite://", "postgres://"] {
                assert!(lines[0].contains(w), "{w:?} missing from: {err}");
            }
        }
    }
}

/// An unreachable or malformed PostgreSQL URL fails with a one-line error,
/// and neither it nor any log line (even at trace level) shows the password.
#[test]
fn a_bad_database_url_never_prints_its_password() {
    for url in [
        "postgres://user:s3cret@127.0.0.1:1/db",
        "postgres://user:s3cret@[bad/db",
        "postgres://user:s3cret@127.0.0.1:notaport/db",
        "mysql://user:s3cret@127.0.0.1/db",
    ] {
        let args = ["--log-level", "trace", "migrate", "--database-url", url];
        let (code, out, err) = parity(&args, &[]);
        assert_ne!(code, 0, "{url}: {err}");
        assert!(
            err.lines().last().unwrap_or("").starts_with("error: "),
            "{err}"
        );
        assert!(
            !out.contains("s3cret") && !err.contains("s3cret"),
            "{url}: {err}"
        );
    }
}
