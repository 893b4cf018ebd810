//! A small local fake PDS for the publish tests that need answers the
//! reference PDS's dev network never gives (429 with rate-limit headers,
//! 5xx, single-use refresh tokens under a race): `applyWrites`,
//! `putRecord`, `deleteRecord`, `refreshSession`, `getRecord` and
//! `getLatestCommit` on 127.0.0.1:0, each call recorded, each repo's
//! answers scripted in order (then 200). Optionally strict about access
//! tokens ([`FakePds::require_access`]): only the newest one issued works.
//!
//! Also [`publish_setup`]: sessions for some DIDs pointing at a PDS, and a
//! config file for `parity publish` on a test database.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post as route;
use parity::auth::Sealer;
use parity::store::{DatabaseConfig, Store};
use serde_json::{Value, json};

use super::TestDb;

pub const CID: &str = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm";

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 429 with these headers.
    RateLimited(Vec<(&'static str, String)>),
    /// 429 with the reference PDS's ratelimit-* headers, the reset this
    /// many seconds after the answer (epoch seconds).
    ResetIn(i64),
    /// This status with an XRPC error body.
    Status(u16, &'static str),
    /// 200, after this long (a call still in flight).
    Slow(Duration),
}

/// One call seen.
#[derive(Debug, Clone)]
pub struct Call {
    pub at: Instant,
    /// The same moment on the wall clock (rate-limit resets are epoch
    /// seconds).
    pub wall: std::time::SystemTime,
    pub method: &'static str,
    pub repo: String,
    /// Writes in it (1 for putRecord/deleteRecord).
    pub writes: usize,
    /// What was answered.
    pub status: u16,
    /// The epoch second a [`Reply::ResetIn`] answer named.
    pub reset: Option<i64>,
}

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    script: HashMap<String, VecDeque<Reply>>,
    /// refreshSession: the refresh token that is valid now, and the
    /// number of the next session it issues.
    refresh: Option<(String, u32)>,
    refresh_calls: u32,
    /// Slow calls that have arrived (answered or not).
    arrived: u32,
    /// When set, the only access token writes are accepted with (others
    /// answer `ExpiredToken`); a refresh moves it to the token it issues.
    valid_access: Option<String>,
    /// getRecord: the records the PDS has, by rkey.
    records: HashMap<String, Value>,
}

#[derive(Clone, Default)]
pub struct FakePds {
    inner: Arc<Mutex<Inner>>,
    /// Held (written) by a test: refreshSession answers only once it is
    /// released ([`FakePds::hold_refreshes`]).
    refresh_gate: Arc<tokio::sync::RwLock<()>>,
    pub url: String,
}

impl FakePds {
    pub async fn start() -> (FakePds, tokio::task::JoinHandle<()>) {
        let mut fake = FakePds::default();
        let app = Router::new()
            .route(
                "/xrpc/com.atproto.repo.applyWrites",
                route(|s: State<FakePds>, h: HeaderMap, b: String| write(s, h, b, "applyWrites")),
            )
            .route(
                "/xrpc/com.atproto.repo.putRecord",
                route(|s: State<FakePds>, h: HeaderMap, b: String| write(s, h, b, "putRecord")),
            )
            .route(
                "/xrpc/com.atproto.repo.deleteRecord",
                route(|s: State<FakePds>, h: HeaderMap, b: String| write(s, h, b, "deleteRecord")),
            )
            .route(
                "/xrpc/com.atproto.server.refreshSession",
                route(refresh_session),
            )
            .route(
                "/xrpc/com.atproto.repo.getRecord",
                axum::routing::get(get_record),
            )
            .route(
                "/xrpc/com.atproto.sync.getLatestCommit",
                axum::routing::get(|| async {
                    json!({"cid": CID, "rev": "3kzzzzzzzzzz2"}).to_string()
                }),
            )
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        fake.url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (fake, server)
    }

    /// Answers `repo`'s next calls with `replies`, in order.
    pub fn script(&self, repo: &str, replies: Vec<Reply>) {
        self.inner
            .lock()
            .unwrap()
            .script
            .insert(repo.to_owned(), replies.into());
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner.lock().unwrap().calls.clone()
    }

    /// refreshSession accepts `token` once (single-use, like a PDS).
    pub fn accept_refresh(&self, token: &str) {
        self.inner.lock().unwrap().refresh = Some((token.to_owned(), 1));
    }

    /// Slow calls that have arrived, answered or still in flight.
    pub fn slow_arrived(&self) -> u32 {
        self.inner.lock().unwrap().arrived
    }

    /// refreshSession answers nothing until the returned guard is dropped:
    /// a test acts while a refresh is certainly in flight.
    pub async fn hold_refreshes(&self) -> tokio::sync::OwnedRwLockWriteGuard<()> {
        self.refresh_gate.clone().write_owned().await
    }

    pub fn refresh_calls(&self) -> u32 {
        self.inner.lock().unwrap().refresh_calls
    }

    /// From now on writes need this access token (or the one a later
    /// refresh issues); any other is refused as expired.
    pub fn require_access(&self, token: &str) {
        self.inner.lock().unwrap().valid_access = Some(token.to_owned());
    }

    /// getRecord finds `value` at `rkey` (CID [`CID`]).
    pub fn has_record(&self, rkey: &str, value: Value) {
        self.inner
            .lock()
            .unwrap()
            .records
            .insert(rkey.to_owned(), value);
    }
}

/// getRecord: a record given to [`FakePds::has_record`], else
/// `RecordNotFound` as the reference PDS answers.
async fn get_record(
    State(fake): State<FakePds>,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
) -> (StatusCode, String) {
    let mut inner = fake.inner.lock().unwrap();
    let repo = q.get("repo").cloned().unwrap_or_default();
    let rkey = q.get("rkey").cloned().unwrap_or_default();
    let found = inner.records.get(&rkey).cloned();
    let status = if found.is_some() { 200 } else { 400 };
    inner.calls.push(Call {
        at: Instant::now(),
        wall: std::time::SystemTime::now(),
        method: "getRecord",
        repo,
        writes: 0,
        status,
        reset: None,
    });
    match found {
        Some(value) => (
            StatusCode::OK,
            json!({"uri": "at://x", "cid": CID, "value": value}).to_string(),
        ),
        None => (
            StatusCode::BAD_REQUEST,
            json!({"error": "RecordNotFound", "message": "Could not locate record"}).to_string(),
        ),
    }
}

fn bearer(h: &HeaderMap) -> String {
    h.get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned()
}

async fn write(
    State(fake): State<FakePds>,
    headers: HeaderMap,
    body: String,
    method: &'static str,
) -> (StatusCode, HeaderMap, String) {
    let v: Value = serde_json::from_str(&body).unwrap();
    let repo = v["repo"].as_str().unwrap().to_owned();
    let writes = v["writes"].as_array().map_or(1, Vec::len);
    let mut reply = {
        let mut inner = fake.inner.lock().unwrap();
        let expired = inner
            .valid_access
            .as_ref()
            .is_some_and(|t| *t != bearer(&headers));
        if expired {
            Some(Reply::Status(400, "ExpiredToken"))
        } else {
            inner.script.get_mut(&repo).and_then(VecDeque::pop_front)
        }
    };
    if let Some(Reply::Slow(d)) = reply {
        fake.inner.lock().unwrap().arrived += 1;
        tokio::time::sleep(d).await;
        reply = None;
    }
    let mut inner = fake.inner.lock().unwrap();
    let mut h = HeaderMap::new();
    let mut reset = None;
    if let Some(Reply::ResetIn(secs)) = reply {
        let at = chrono::Utc::now().timestamp() + secs;
        reset = Some(at);
        reply = Some(Reply::RateLimited(vec![
            ("ratelimit-limit", "3000".into()),
            ("ratelimit-remaining", "0".into()),
            ("ratelimit-reset", at.to_string()),
            ("ratelimit-policy", "3000;w=300".into()),
        ]));
    }
    let (status, body) = match reply {
        Some(Reply::RateLimited(headers)) => {
            for (k, val) in headers {
                h.insert(k, val.parse().unwrap());
            }
            (
                429,
                json!({"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"}),
            )
        }
        Some(Reply::Status(s, name)) => (s, json!({"error": name, "message": "scripted"})),
        Some(Reply::Slow(_) | Reply::ResetIn(_)) => unreachable!("handled above"),
        None if method == "applyWrites" => {
            let results: Vec<Value> = (0..writes)
                .map(|_| json!({"$type": "com.atproto.repo.applyWrites#createResult", "cid": CID}))
                .collect();
            (
                200,
                json!({"commit": {"cid": CID, "rev": "3kzzzzzzzzzz2"}, "results": results}),
            )
        }
        None => (
            200,
            json!({"uri": "at://x", "cid": CID, "commit": {"cid": CID, "rev": "3kzzzzzzzzzz2"}}),
        ),
    };
    inner.calls.push(Call {
        at: Instant::now(),
        wall: std::time::SystemTime::now(),
        method,
        repo,
        writes,
        status,
        reset,
    });
    (StatusCode::from_u16(status).unwrap(), h, body.to_string())
}

/// Single-use refresh tokens: the valid one gets a new pair (after a short
/// delay, as a real PDS's database write takes); any other is refused as a
/// PDS refuses a used one.
async fn refresh_session(State(fake): State<FakePds>, headers: HeaderMap) -> (StatusCode, String) {
    let token = bearer(&headers);
    let issued = {
        let mut inner = fake.inner.lock().unwrap();
        inner.refresh_calls += 1;
        match inner.refresh.take() {
            Some((valid, n)) if valid == token => {
                inner.refresh = Some((format!("refresh{n}"), n + 1));
                if inner.valid_access.is_some() {
                    inner.valid_access = Some(format!("access{n}"));
                }
                Some(n)
            }
            other => {
                inner.refresh = other;
                None
            }
        }
    };
    // Keeps a concurrent second refresh (if any) overlapping this one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(fake.refresh_gate.read().await);
    match issued {
        Some(n) => (
            StatusCode::OK,
            json!({"did": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "handle": "a.test",
                   "accessJwt": format!("access{n}"), "refreshJwt": format!("refresh{n}")})
            .to_string(),
        ),
        None => (
            StatusCode::BAD_REQUEST,
            json!({"error": "ExpiredToken", "message": "Token has been revoked"}).to_string(),
        ),
    }
}

/// A migrated test database with an active session for each DID on `pds`
/// (tokens `access0` / `refresh0`), the key file, and a `parity publish`
/// config (`[publish]` gets `publish`). Returns (dir, key file, config).
pub async fn publish_setup(
    db: &TestDb,
    pds: &str,
    dids: &[&str],
    publish: &str,
) -> (tempfile::TempDir, Sealer, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("auth.key");
    let sealer = Sealer::load(None, &key_file, true).unwrap();
    let store = store(db).await;
    for did in dids {
        store
            .save_session(
                did,
                None,
                pds,
                &sealer.seal(did, "access_token", "access0"),
                &sealer.seal(did, "refresh_token", "refresh0"),
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
             [publish]\npoll_interval_ms = 50\n{publish}\n[metrics]\naddr = \"off\"\n",
            db.url,
            key_file.display()
        ),
    )
    .unwrap();
    (dir, sealer, cfg)
}

/// A migrated store on the test database.
pub async fn store(db: &TestDb) -> Store {
    let store = Store::connect(&DatabaseConfig {
        url: db.url.clone(),
        ..DatabaseConfig::default()
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    store
}

/// A post record (JSON text).
pub fn post(text: &str) -> String {
    json!({"$type": "app.bsky.feed.post", "text": text, "createdAt": "2026-12-01T10:00:00Z"})
        .to_string()
}

/// Waits (50 ms polls, `secs` at most) until `sql` answers `want`.
pub async fn wait_scalar(db: &TestDb, sql: &str, want: &str, secs: u64, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let got = db.scalar(sql).await;
        if got.as_deref() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out: {sql} is {got:?}, want {want}\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
