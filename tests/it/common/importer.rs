//! Runs the real `parity import` / `resume` / `import-status` binary against
//! a test database and the local PDS ([`super::pds::Pds`]), and computes the
//! rows an import must produce from what the PDS serves (an independent
//! oracle: the served records, not parity's own mapping code).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::{Output, Stdio};

use tokio::process::{Child, Command};

use super::TestDb;
use super::pds::Pds;

/// The local-testing opt-in that lets requests reach the local PDS.
pub const ALLOW_PRIVATE: &str = "PARITY_IDENTITY_ALLOW_PRIVATE_ADDRESSES";

/// Built-in table of each Bluesky collection.
pub const BUILTIN: &[(&str, &str)] = &[
    ("app.bsky.feed.post", "posts"),
    ("app.bsky.feed.like", "likes"),
    ("app.bsky.feed.repost", "reposts"),
    ("app.bsky.graph.follow", "follows"),
    ("app.bsky.graph.block", "blocks"),
    ("app.bsky.actor.profile", "profiles"),
];

pub fn table_of(collection: &str) -> Option<&'static str> {
    BUILTIN
        .iter()
        .find(|(c, _)| *c == collection)
        .map(|(_, t)| *t)
}

/// A `parity` command with a clean environment pointing at `db` and `pds`
/// (as PLC directory), fast retries, a generous request rate and
/// `import.method = "listrecords"`. The PDS
/// listens on 127.0.0.1 over plain http, so the command opts in to private
/// addresses (`identity.allow_private_addresses`, the only switch for
/// that); tests of the address rules remove that variable.
pub fn parity(db: &TestDb, pds: &Pds, args: &[&str]) -> Command {
    let mut cmd = super::process::tokio_command();
    cmd.args(args)
        .env("PARITY_DATABASE_URL", &db.url)
        .env("PARITY_PLC_URL", pds.url())
        .env(ALLOW_PRIVATE, "true")
        .env("PARITY_IMPORT_REQUESTS_PER_SECOND", "1000")
        .env("PARITY_IMPORT_BACKOFF_INITIAL_MS", "10")
        .env("PARITY_IMPORT_BACKOFF_MAX_MS", "50")
        .env("PARITY_IMPORT_TIMEOUT_SECONDS", "5")
        .env("PARITY_LOG_LEVEL", "warn")
        .env("PARITY_METRICS_ADDR", "off")
        // The listRecords path, which these tests were written for; the
        // whole-repo tests (`import_getrepo.rs`) pass `--method`.
        .env("PARITY_IMPORT_METHOD", "listrecords")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// `parity import ARGS…` into `db` with `pds` as PLC directory, serving
/// its metrics on an ephemeral port (read it with
/// [`Parity::metrics_addr`](super::process::Parity::metrics_addr)), with
/// `method` as `import.method` and `env` set too.
pub fn watched(
    db: &TestDb,
    pds: &Pds,
    args: &[&str],
    method: &str,
    env: &[(&str, &str)],
) -> super::process::Parity {
    let plc = pds.url();
    let mut all = vec![
        "--database-url",
        &db.url,
        "--metrics-addr",
        "127.0.0.1:0",
        "import",
        "--plc-url",
        &plc,
    ];
    all.extend_from_slice(args);
    let mut vars = vec![(ALLOW_PRIVATE, "true"), ("PARITY_IMPORT_METHOD", method)];
    vars.extend_from_slice(env);
    super::process::Parity::spawn_env(&all, &vars)
}

/// Runs to the end; returns (exit code, stdout, stderr).
pub async fn run(mut cmd: Command) -> (i32, String, String) {
    let out: Output = cmd.output().await.expect("run parity");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts without waiting.
pub fn spawn(mut cmd: Command) -> Child {
    cmd.spawn().expect("spawn parity")
}

/// `(uri, cid, rev, record)` rows expected in each built-in table (and in
/// `records` for the other collections when `generic` is set) after
/// importing `dids` from `pds` at each repo's current rev.
pub fn expected(
    pds: &Pds,
    dids: &[&str],
    revs: &BTreeMap<String, String>,
    generic: bool,
) -> BTreeMap<&'static str, Vec<Vec<Option<String>>>> {
    let mut out: BTreeMap<&'static str, Vec<Vec<Option<String>>>> = BTreeMap::new();
    for (_, t) in BUILTIN {
        out.insert(t, Vec::new());
    }
    if generic {
        out.insert("records", Vec::new());
    }
    for did in dids {
        for r in pds.records(did) {
            let table = match table_of(&r.collection) {
                Some(t) => t,
                None if generic => "records",
                None => continue,
            };
            let uri = format!("at://{did}/{}/{}", r.collection, r.rkey);
            out.get_mut(table).unwrap().push(vec![
                Some(uri),
                Some(r.cid.clone()),
                Some(revs[*did].clone()),
                Some(canonical(&r.json)),
            ]);
        }
    }
    for rows in out.values_mut() {
        rows.sort();
    }
    out
}

/// The same rows as stored.
pub async fn stored(
    db: &TestDb,
    tables: impl Iterator<Item = &'static str>,
) -> BTreeMap<&'static str, Vec<Vec<Option<String>>>> {
    let mut out = BTreeMap::new();
    for t in tables {
        let mut rows = db.rows(t, &["uri", "cid", "rev", "record"]).await;
        for r in &mut rows {
            r[3] = r[3].as_deref().map(canonical);
        }
        rows.sort();
        out.insert(t, rows);
    }
    out
}

/// JSON compared by value (key order and spacing aside).
pub fn canonical(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| json.to_owned())
}

/// `(collection, status, synced, skipped, failed)` of each state of `did`.
pub async fn states(db: &TestDb, did: &str) -> Vec<(String, String, i64, i64, i64)> {
    db.rows(
        &format!("parity_import_states WHERE did = '{did}'"),
        &[
            "collection",
            "status",
            "records_synced",
            "records_skipped",
            "records_failed",
        ],
    )
    .await
    .into_iter()
    .map(|r| {
        let n = |i: usize| r[i].as_deref().unwrap().parse::<i64>().unwrap();
        (
            r[0].clone().unwrap(),
            r[1].clone().unwrap(),
            n(2),
            n(3),
            n(4),
        )
    })
    .collect()
}
