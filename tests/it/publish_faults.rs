//! Rate limits and server errors from a small local fake PDS (the
//! reference PDS's dev network has rate limits off): a 429 pauses the DID
//! for `Retry-After`, a 5xx is retried with backoff, and a DID whose PDS
//! keeps failing ends `failed` after `publish.max_attempts`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use parity::auth::Sealer;
use parity::store::{DatabaseConfig, Store};
use serde_json::{Value, json};

use crate::common::TestDb;
use crate::common::process::Parity;

const GOOD: &str = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa";
const DOWN: &str = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb";
const CID: &str = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm";

/// applyWrites / putRecord calls seen: (when, repo).
type Calls = Arc<Mutex<Vec<(Instant, String)>>>;

async fn apply_writes(state: State<Calls>, body: String) -> (StatusCode, HeaderMap, String) {
    answer(state, body, false).await
}

async fn put_record(state: State<Calls>, body: String) -> (StatusCode, HeaderMap, String) {
    answer(state, body, true).await
}

/// Per repo: 429, then 502, then success; `DOWN` always answers 503.
async fn answer(
    State(calls): State<Calls>,
    body: String,
    put: bool,
) -> (StatusCode, HeaderMap, String) {
    let v: Value = serde_json::from_str(&body).unwrap();
    let repo = v["repo"].as_str().unwrap().to_owned();
    let n = {
        let mut c = calls.lock().unwrap();
        c.push((Instant::now(), repo.clone()));
        c.iter().filter(|(_, r)| *r == repo).count()
    };
    let mut h = HeaderMap::new();
    if repo == DOWN {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            h,
            json!({"error": "InternalServerError"}).to_string(),
        );
    }
    match n {
        1 => {
            h.insert("retry-after", "1".parse().unwrap());
            h.insert("ratelimit-limit", "5000".parse().unwrap());
            h.insert("ratelimit-remaining", "0".parse().unwrap());
            (
                StatusCode::TOO_MANY_REQUESTS,
                h,
                json!({"error": "RateLimitExceeded"}).to_string(),
            )
        }
        2 => (StatusCode::BAD_GATEWAY, h, String::new()),
        _ if put => (
            StatusCode::OK,
            h,
            json!({"uri": "at://x", "cid": CID, "commit": {"cid": CID, "rev": "3kzzzzzzzzzz2"}})
                .to_string(),
        ),
        _ => {
            let results: Vec<Value> = v["writes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|_| json!({"$type": "com.atproto.repo.applyWrites#createResult", "cid": CID}))
                .collect();
            (
                StatusCode::OK,
                h,
                json!({"commit": {"cid": CID, "rev": "3kzzzzzzzzzz2"}, "results": results})
                    .to_string(),
            )
        }
    }
}

async fn rate_limits_and_server_errors(db: TestDb) {
    let calls: Calls = Arc::default();
    let app = Router::new()
        .route("/xrpc/com.atproto.repo.applyWrites", post(apply_writes))
        .route("/xrpc/com.atproto.repo.putRecord", post(put_record))
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pds = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("auth.key");
    let sealer = Sealer::load(None, &key_file, true).unwrap();
    let store = Store::connect(&DatabaseConfig {
        url: db.url.clone(),
        ..DatabaseConfig::default()
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    for did in [GOOD, DOWN] {
        store
            .save_session(
                did,
                None,
                &pds,
                &sealer.seal(did, "access_token", "access"),
                &sealer.seal(did, "refresh_token", "refresh"),
            )
            .await
            .unwrap();
        let record = json!({"$type": "app.bsky.feed.post", "text": "x", "createdAt": "2026-12-01T10:00:00Z"});
        store
            .add_outbox(
                did,
                "app.bsky.feed.post",
                None,
                "create",
                Some(&record.to_string()),
                None,
            )
            .await
            .unwrap();
    }
    store.close().await;
    let cfg = dir.path().join("parity.toml");
    std::fs::write(
        &cfg,
        format!(
            "[database]\nurl = \"{}\"\n[identity]\nallow_private_addresses = true\n[auth]\nkey_file = \"{}\"\n\
             [publish]\npoll_interval_ms = 50\nmax_attempts = 2\n[metrics]\naddr = \"off\"\n",
            db.url,
            key_file.display()
        ),
    )
    .unwrap();
    let publisher = Parity::spawn(&["--config", cfg.to_str().unwrap(), "publish"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = db
            .scalar("SELECT CAST(COUNT(*) AS TEXT) FROM parity_outbox WHERE status IN ('published', 'failed')")
            .await;
        if done.as_deref() == Some("2") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            publisher.lines().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lines = publisher.stop();
    server.abort();

    let rows = db
        .rows("parity_outbox", &["did", "status", "attempts", "error"])
        .await;
    let good = rows.iter().find(|r| r[0].as_deref() == Some(GOOD)).unwrap();
    let down = rows.iter().find(|r| r[0].as_deref() == Some(DOWN)).unwrap();
    assert_eq!(
        good[1].as_deref(),
        Some("published"),
        "{rows:?} calls {:?}\n{}",
        calls.lock().unwrap().len(),
        lines.join("\n")
    );
    assert_eq!(down[1].as_deref(), Some("failed"), "{rows:?}");
    assert_eq!(down[2].as_deref(), Some("2"));
    assert!(
        down[3].as_deref().unwrap().contains("max_attempts"),
        "{down:?}"
    );

    // 429, then 502, then success; the call after the 429 waited for
    // Retry-After (1 s), the one after the 502 for the backoff (≥ 0.75 s).
    // The 429 spent no attempt (max_attempts = 2 was not reached); after
    // the 502 the create went as a put that must not overwrite.
    let calls = calls.lock().unwrap();
    let good_calls: Vec<Instant> = calls
        .iter()
        .filter(|(_, r)| r == GOOD)
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(good_calls.len(), 3);
    assert!(good_calls[1] - good_calls[0] >= Duration::from_secs(1));
    assert!(good_calls[2] - good_calls[1] >= Duration::from_millis(750));
    assert_eq!(calls.iter().filter(|(_, r)| r == DOWN).count(), 2);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("PDS rate limit: pausing this DID and its PDS host."))
    );
}

backend_tests!(publish_rate_limits_and_5xx, |db| {
    rate_limits_and_server_errors(db)
});

/// `/health` of `parity publish` answers 503 `outbox_stuck` while the
/// oldest open row is older than `health.max_outbox_age`, and 200 again
/// once it is not; `/metrics` has the outbox gauge.
async fn stuck_outbox_fails_health(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("auth.key");
    Sealer::load(None, &key_file, true).unwrap();
    let store = Store::connect(&DatabaseConfig {
        url: db.url.clone(),
        ..DatabaseConfig::default()
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let record =
        json!({"$type": "app.bsky.feed.post", "text": "x", "createdAt": "2026-12-01T10:00:00Z"});
    store
        .add_outbox(
            GOOD,
            "app.bsky.feed.post",
            None,
            "create",
            Some(&record.to_string()),
            None,
        )
        .await
        .unwrap();
    store.close().await;
    // Enqueued two hours ago and backing off for another hour: pending, not claimable.
    let (old, later) = if db.is_pg() {
        ("now() - interval '2 hours'", "now() + interval '1 hour'")
    } else {
        (
            "strftime('%Y-%m-%dT%H:%M:%f000Z', 'now', '-2 hours')",
            "strftime('%Y-%m-%dT%H:%M:%f000Z', 'now', '+1 hour')",
        )
    };
    let pool_exec = |sql: String| {
        let url = db.url.clone();
        let pg = db.is_pg();
        async move {
            if pg {
                let p = sqlx::PgPool::connect(&url).await.unwrap();
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&p)
                    .await
                    .unwrap();
            } else {
                let p = sqlx::SqlitePool::connect(&url).await.unwrap();
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&p)
                    .await
                    .unwrap();
            }
        }
    };
    pool_exec(format!(
        "UPDATE parity_outbox SET created_at = {old}, next_attempt_at = {later}"
    ))
    .await;

    let cfg = dir.path().join("parity.toml");
    std::fs::write(
        &cfg,
        format!(
            "[database]\nurl = \"{}\"\n[auth]\nkey_file = \"{}\"\n[health]\nmax_outbox_age = 3600\n",
            db.url,
            key_file.display()
        ),
    )
    .unwrap();
    let mut publisher = Parity::spawn(&[
        "--config",
        cfg.to_str().unwrap(),
        "--metrics-addr",
        "127.0.0.1:0",
        "publish",
    ]);
    let addr = publisher.metrics_addr().await;
    let wait_health = |want: u16| async move {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = crate::common::process::get(addr, "/health").await;
            if status == want {
                return body;
            }
            assert!(Instant::now() < deadline, "/health stayed {status}: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let body = wait_health(503).await;
    assert!(body.contains("outbox_stuck"), "{body}");
    let metrics = crate::common::process::scrape(addr).await;
    assert_eq!(
        metrics.get("parity_publish_outbox", &[("status", "pending")]),
        1.0
    );
    // A row enqueued now is within the limit: healthy again.
    pool_exec("UPDATE parity_outbox SET created_at = next_attempt_at".to_owned()).await;
    wait_health(200).await;
    publisher.stop();
}

backend_tests!(publish_stuck_outbox_health, |db| stuck_outbox_fails_health(
    db
));
