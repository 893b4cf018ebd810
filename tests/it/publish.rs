//! Publishing against the reference PDS (`@atproto/dev-env`, started by
//! `testnet::refpds`): `parity auth login` with an app password, rows
//! enqueued with the README's plain SQL, `parity publish` as a child
//! process, and every effect checked on the PDS (getRecord/listRecords)
//! and in parity's own tables.

use std::path::PathBuf;
use std::time::Duration;

use parity::auth::Sealer;
use testnet::refpds::{Account, RefPds};

use crate::common::TestDb;
use crate::common::process::{Parity, tokio_command};

const POST: &str = "app.bsky.feed.post";

/// A reference network plus a parity config pointing at it.
struct Setup {
    net: RefPds,
    dir: tempfile::TempDir,
    cfg: PathBuf,
}

impl Setup {
    async fn new(db: &TestDb) -> Setup {
        Setup::with(db, "").await
    }

    /// With extra `[publish]` keys.
    async fn with(db: &TestDb, publish: &str) -> Setup {
        let net = RefPds::start().await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("parity.toml");
        std::fs::write(
            &cfg,
            format!(
                "[database]\nurl = \"{}\"\n\n[identity]\nplc_url = \"{}\"\nallow_private_addresses = true\n\n\
                 [auth]\nkey_file = \"{}\"\n\n[publish]\npoll_interval_ms = 50\n{publish}\n\n[metrics]\naddr = \"off\"\n",
                db.url,
                net.plc,
                dir.path().join("auth.key").display()
            ),
        )
        .unwrap();
        Setup { net, dir, cfg }
    }

    fn cfg(&self) -> &str {
        self.cfg.to_str().unwrap()
    }

    /// Runs the binary to completion; returns (success, stdout, stderr).
    async fn parity(&self, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
        let out = tokio_command()
            .args(["--config", self.cfg()])
            .args(args)
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    async fn login(&self, account: &Account, app_password: &str) -> String {
        let (ok, out, err) = self
            .parity(
                &["auth", "login", &account.did],
                &[("PARITY_APP_PASSWORD", app_password)],
            )
            .await;
        assert!(ok, "auth login failed: {out}{err}");
        assert!(!out.contains(app_password) && !err.contains(app_password));
        out
    }

    fn publish(&self) -> Parity {
        Parity::spawn(&["--config", self.cfg(), "publish"])
    }

    /// The access token parity stored for `did`, in clear.
    async fn access(&self, db: &TestDb, did: &str) -> String {
        let sealed = db
            .scalar(&format!(
                "SELECT access_token FROM parity_sessions WHERE did = '{did}'"
            ))
            .await
            .unwrap();
        self.sealer().open(did, "access_token", &sealed).unwrap()
    }

    fn sealer(&self) -> Sealer {
        let hex = std::fs::read_to_string(self.dir.path().join("auth.key")).unwrap();
        Sealer::load(
            Some(hex.trim()),
            std::path::Path::new("/nonexistent"),
            false,
        )
        .unwrap()
    }
}

/// Runs SQL as the application would (one transaction per call).
async fn exec(db: &TestDb, statements: &[String]) {
    macro_rules! run {
        ($pool:ty) => {{
            let pool = <$pool>::connect(&db.url).await.unwrap();
            let mut tx = pool.begin().await.unwrap();
            for s in statements {
                sqlx::query(sqlx::AssertSqlSafe(s.clone()))
                    .execute(&mut *tx)
                    .await
                    .unwrap_or_else(|e| panic!("{s}: {e}"));
            }
            tx.commit().await.unwrap();
            pool.close().await;
        }};
    }
    if db.is_pg() {
        run!(sqlx::PgPool)
    } else {
        run!(sqlx::SqlitePool)
    }
}

/// The README's enqueue statement.
fn enqueue(
    did: &str,
    rkey: Option<&str>,
    op: &str,
    record: Option<&str>,
    swap: Option<&str>,
) -> String {
    let q = |v: Option<&str>| {
        v.map_or("NULL".to_owned(), |s| {
            format!("'{}'", s.replace('\'', "''"))
        })
    };
    format!(
        "INSERT INTO parity_outbox (did, collection, rkey, op, record, swap_cid) VALUES ('{did}', '{POST}', {}, '{op}', {}, {})",
        q(rkey),
        q(record),
        q(swap)
    )
}

/// A valid TID record key, distinct per `i` (`3kzz` + 9 base32 digits).
fn tid(i: u64) -> String {
    const A: &[u8] = b"234567abcdefghijklmnopqrstuvwxyz";
    let digits: String = (0..9)
        .rev()
        .map(|k| A[((i >> (k * 5)) & 31) as usize] as char)
        .collect();
    format!("3kzz{digits}")
}

fn post(text: &str) -> String {
    serde_json::json!({"$type": POST, "text": text, "createdAt": "2026-12-01T10:00:00.000Z"})
        .to_string()
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    db.scalar(sql).await.unwrap_or_default().parse().unwrap()
}

/// Waits (50 ms polls, 90 s at most) until `sql` counts `want`.
async fn wait_count(db: &TestDb, sql: &str, want: i64, publisher: &Parity) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let n = count(db, sql).await;
        if n == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out: {sql} is {n}, want {want}; outbox: {:?}\nlog:\n{}",
            db.rows("parity_outbox", &["id", "status", "attempts", "error"])
                .await,
            publisher
                .lines()
                .iter()
                .filter(|l| !l.contains("\"Published.\""))
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn creates_updates_deletes_across_two_dids(db: TestDb) {
    let s = Setup::new(&db).await;
    let alice = s.net.create_account("alice").await;
    let bob = s.net.create_account("bob").await;
    let alice_pw = s.net.create_app_password(&alice, "parity").await;
    let bob_pw = s.net.create_app_password(&bob, "parity").await;
    let out = s.login(&alice, &alice_pw).await;
    assert!(out.contains(&alice.did), "{out}");
    s.login(&bob, &bob_pw).await;

    // Sessions are stored sealed: no JWT (base64url of '{"') in clear.
    let tokens = db
        .rows(
            "parity_sessions",
            &["did", "access_token", "refresh_token", "state"],
        )
        .await;
    assert_eq!(tokens.len(), 2);
    for t in &tokens {
        assert_eq!(t[3].as_deref(), Some("active"));
        for (tok, column) in [(&t[1], "access_token"), (&t[2], "refresh_token")] {
            let tok = tok.as_deref().unwrap();
            // No JWT header ({"typ" / {"alg" in base64url) in the column;
            // opened, it is one.
            assert!(tok.starts_with("v1:"), "{tok}");
            assert!(
                !tok.contains("eyJ0eXAi") && !tok.contains("eyJhbGci"),
                "{tok}"
            );
            let did = t[0].as_deref().unwrap();
            assert!(
                s.sealer()
                    .open(did, column, tok)
                    .unwrap()
                    .starts_with("eyJ")
            );
        }
    }

    // 250 creates for alice (TIDs assigned by parity), two for bob.
    let mut sql: Vec<String> = (0..250)
        .map(|i| {
            enqueue(
                &alice.did,
                None,
                "create",
                Some(&post(&format!("alice {i}"))),
                None,
            )
        })
        .collect();
    sql.push(enqueue(
        &bob.did,
        Some("3kbobbbbbbbb2"),
        "create",
        Some(&post("bob one")),
        None,
    ));
    sql.push(enqueue(
        &bob.did,
        Some("3kbobbbbbbbc2"),
        "create",
        Some(&post("bob two")),
        None,
    ));
    exec(&db, &sql).await;

    let publisher = s.publish();
    wait_count(
        &db,
        "SELECT CAST(COUNT(*) AS TEXT) FROM parity_outbox WHERE status = 'published'",
        252,
        &publisher,
    )
    .await;

    let on_pds = s.net.list_records(&alice.did, POST).await;
    assert_eq!(on_pds.len(), 250);
    // 250 writes of one DID: two applyWrites calls, so two commits.
    let revs = count(
        &db,
        &format!(
            "SELECT CAST(COUNT(DISTINCT rev) AS TEXT) FROM parity_outbox WHERE did = '{}'",
            alice.did
        ),
    )
    .await;
    assert_eq!(revs, 2);
    // Written back at once, at the commit's rev, with the PDS's CID.
    let local = count(
        &db,
        &format!(
            "SELECT CAST(COUNT(*) AS TEXT) FROM posts WHERE did = '{}'",
            alice.did
        ),
    )
    .await;
    assert_eq!(local, 250);
    let mismatched = count(
        &db,
        "SELECT CAST(COUNT(*) AS TEXT) FROM parity_outbox o JOIN posts p ON p.uri = o.uri \
         WHERE p.cid <> o.cid OR p.rev <> o.rev",
    )
    .await;
    assert_eq!(mismatched, 0);
    let bob_one = s
        .net
        .get_record(&bob.did, POST, "3kbobbbbbbbb2")
        .await
        .unwrap();
    assert_eq!(bob_one["value"]["text"], "bob one");
    let first_cid = bob_one["cid"].as_str().unwrap().to_owned();

    // An update and a delete for bob, and a compare-and-swap on a stale CID.
    let alice_rkey = db
        .scalar(&format!(
            "SELECT rkey FROM parity_outbox WHERE did = '{}' ORDER BY id LIMIT 1",
            alice.did
        ))
        .await
        .unwrap();
    exec(
        &db,
        &[
            enqueue(
                &bob.did,
                Some("3kbobbbbbbbb2"),
                "update",
                Some(&post("bob one, edited")),
                None,
            ),
            enqueue(&bob.did, Some("3kbobbbbbbbc2"), "delete", None, None),
            enqueue(
                &alice.did,
                Some(&alice_rkey),
                "update",
                Some(&post("stale")),
                Some(&first_cid),
            ),
        ],
    )
    .await;
    wait_count(
        &db,
        "SELECT CAST(COUNT(*) AS TEXT) FROM parity_outbox WHERE status IN ('pending', 'in_flight')",
        0,
        &publisher,
    )
    .await;
    let lines = publisher.stop();

    let edited = s
        .net
        .get_record(&bob.did, POST, "3kbobbbbbbbb2")
        .await
        .unwrap();
    assert_eq!(edited["value"]["text"], "bob one, edited");
    assert!(
        s.net
            .get_record(&bob.did, POST, "3kbobbbbbbbc2")
            .await
            .is_none()
    );
    let local_text = db
        .scalar(&format!(
            "SELECT text FROM posts WHERE did = '{}' AND rkey = '3kbobbbbbbbb2'",
            bob.did
        ))
        .await;
    assert_eq!(local_text.as_deref(), Some("bob one, edited"));
    assert_eq!(
        count(
            &db,
            &format!(
                "SELECT CAST(COUNT(*) AS TEXT) FROM posts WHERE did = '{}'",
                bob.did
            )
        )
        .await,
        1
    );
    let conflict = db
        .rows("parity_outbox", &["id", "status", "error"])
        .await
        .into_iter()
        .find(|r| r[1].as_deref() == Some("conflict"))
        .expect("the stale swap is a conflict");
    assert!(
        conflict[2].as_deref().unwrap().contains("InvalidSwap"),
        "{conflict:?}"
    );
    let alice_first = s
        .net
        .get_record(&alice.did, POST, &alice_rkey)
        .await
        .unwrap();
    assert_eq!(alice_first["value"]["text"], "alice 0");

    // One log line per published / unpublished row, naming its URI; no
    // secret in any line.
    let uri = |did: &str, rkey: &str| format!("at://{did}/{POST}/{rkey}");
    let has = |msg: &str, u: &str| {
        lines
            .iter()
            .any(|l| l.contains(&format!("\"message\":\"{msg}\"")) && l.contains(u))
    };
    assert!(has("Published.", &uri(&bob.did, "3kbobbbbbbbb2")));
    assert!(has("Unpublished.", &uri(&bob.did, "3kbobbbbbbbc2")));
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("\"message\":\"Published.\""))
            .count(),
        253
    );
    for l in &lines {
        assert!(
            !l.contains("eyJ0eXAi")
                && !l.contains("eyJhbGci")
                && !l.contains(&alice_pw)
                && !l.contains(&bob_pw),
            "{l}"
        );
    }

    // outbox status: the summary line, then JSON rows.
    let (ok, out, _) = s.parity(&["outbox", "status"], &[]).await;
    assert!(ok);
    let summary = out.lines().next().unwrap();
    assert!(
        summary.contains("published: 254") && summary.contains("conflict: 1"),
        "{summary}"
    );
    let (ok, out, _) = s
        .parity(&["outbox", "status", &bob.did, "--json"], &[])
        .await;
    assert!(ok);
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4);
    for key in [
        "id",
        "did",
        "collection",
        "rkey",
        "op",
        "status",
        "attempts",
        "uri",
        "cid",
        "rev",
        "error",
    ] {
        assert!(rows[0].get(key).is_some(), "{key} missing in {}", rows[0]);
    }
}

backend_tests!(publish_creates_updates_deletes, |db| {
    creates_updates_deletes_across_two_dids(db)
});

async fn revoked_session_waits_for_login(db: TestDb) {
    let s = Setup::new(&db).await;
    let alice = s.net.create_account("alice").await;
    let first = s.net.create_app_password(&alice, "first").await;
    s.login(&alice, &first).await;

    // Revoking the app password ends its refresh tokens; its access token
    // lives on (a stateless JWT, two hours), so the stored one is made to
    // have expired already: the worker gets ExpiredToken and refreshes.
    s.net.revoke_app_password(&alice, "first").await;
    let bad = s.sealer().seal(
        &alice.did,
        "access_token",
        &s.net.expired(&s.access(&db, &alice.did).await),
    );
    exec(
        &db,
        &[format!(
            "UPDATE parity_sessions SET access_token = '{bad}' WHERE did = '{}'",
            alice.did
        )],
    )
    .await;
    let sql: Vec<String> = (0..3)
        .map(|i| {
            enqueue(
                &alice.did,
                None,
                "create",
                Some(&post(&format!("after revoke {i}"))),
                None,
            )
        })
        .collect();
    exec(&db, &sql).await;

    let publisher = s.publish();
    wait_count(
        &db,
        "SELECT CAST(COUNT(*) AS TEXT) FROM parity_outbox WHERE status = 'pending_auth'",
        3,
        &publisher,
    )
    .await;
    // Auth failures spend no attempts.
    assert_eq!(
        count(&db, "SELECT CAST(MAX(attempts) AS TEXT) FROM parity_outbox").await,
        0
    );
    let (ok, out, _) = s.parity(&["auth", "list"], &[]).await;
    assert!(
        ok && out.contains(&alice.did) && out.contains("expired"),
        "{out}"
    );
    // Refused because the app password is gone, not for how we asked.
    let why = db
        .scalar("SELECT error FROM parity_sessions")
        .await
        .unwrap();
    assert!(
        why.contains("ExpiredToken") || why.contains("InvalidToken"),
        "{why}"
    );
    assert!(s.net.list_records(&alice.did, POST).await.is_empty());

    // A new login resumes the rows in the running publisher; nothing else.
    let second = s.net.create_app_password(&alice, "second").await;
    let out = s.login(&alice, &second).await;
    assert!(out.contains("3 outbox rows"), "{out}");
    wait_count(
        &db,
        "SELECT CAST(COUNT(*) AS TEXT) FROM parity_outbox WHERE status = 'published'",
        3,
        &publisher,
    )
    .await;
    let lines = publisher.stop();
    assert_eq!(s.net.list_records(&alice.did, POST).await.len(), 3);
    assert!(
        lines
            .iter()
            .filter(|l| l.contains("Publish waits for a login (pending_auth)."))
            .count()
            == 3
    );
    let (ok, out, _) = s.parity(&["auth", "list"], &[]).await;
    assert!(ok && out.contains("active"), "{out}");
}

backend_tests!(revoked_app_password_pending_auth_then_login, |db| {
    revoked_session_waits_for_login(db)
});

/// Every row of `did` is on the PDS exactly once, at its stored rkey, with
/// its text; nothing else is there.
async fn assert_exactly_once(s: &Setup, db: &TestDb, did: &str, n: usize) {
    let on_pds = s.net.list_records(did, POST).await;
    assert_eq!(on_pds.len(), n, "records on the PDS");
    let rows = db
        .query_text(
            format!("SELECT rkey, cid, CAST(record AS TEXT) FROM parity_outbox WHERE did = '{did}' AND status = 'published' ORDER BY id"),
            3,
        )
        .await;
    assert_eq!(rows.len(), n, "published rows");
    for r in rows {
        let rkey = r[0].clone().unwrap();
        let uri = format!("at://{did}/{POST}/{rkey}");
        let rec = on_pds
            .iter()
            .find(|v| v["uri"] == uri.as_str())
            .unwrap_or_else(|| panic!("{uri} not on the PDS"));
        assert_eq!(rec["cid"].as_str(), r[1].as_deref(), "{uri}");
        let want: serde_json::Value = serde_json::from_str(r[2].as_deref().unwrap()).unwrap();
        assert_eq!(rec["value"]["text"], want["text"]);
    }
}

/// The state a crash leaves after the PDS applied a batch but before parity
/// stored the answer: rows in flight with their rkeys, an expired lease,
/// one attempt spent, and the records already on the PDS. The next
/// publisher retries them as puts that must not overwrite: each ends
/// published once, with the CID the PDS has, and no call fails.
async fn lost_answers_are_published_once(db: TestDb) {
    let s = Setup::new(&db).await;
    let alice = s.net.create_account("alice").await;
    let pw = s.net.create_app_password(&alice, "parity").await;
    s.login(&alice, &pw).await;
    let rkeys: Vec<String> = (0..5).map(tid).collect();
    let mut sql = Vec::new();
    for (i, k) in rkeys.iter().enumerate() {
        sql.push(enqueue(
            &alice.did,
            Some(k),
            "create",
            Some(&post(&format!("crash {i}"))),
            None,
        ));
    }
    // The first three reached the PDS; the last two did not.
    sql.push(format!(
        "UPDATE parity_outbox SET status = 'in_flight', attempts = 1, lease_owner = 'dead/0', \
         lease_expires_at = {} WHERE did = '{}'",
        if db.is_pg() {
            "now() - interval '1 minute'"
        } else {
            "'2000-01-01T00:00:00.000000Z'"
        },
        alice.did
    ));
    exec(&db, &sql).await;
    let writes: Vec<serde_json::Value> = (0..3)
        .map(|i| {
            serde_json::json!({"$type": "com.atproto.repo.applyWrites#create", "collection": POST,
                "rkey": rkeys[i], "value": serde_json::from_str::<serde_json::Value>(&post(&format!("crash {i}"))).unwrap()})
        })
        .collect();
    let applied = s
        .net
        .apply_writes(&alice, serde_json::Value::Array(writes))
        .await;
    let applied_rev = applied["commit"]["rev"].as_str().unwrap().to_owned();

    let publisher = s.publish();
    wait_count(
        &db,
        "SELECT CAST(COUNT(*) AS TEXT) FROM parity_outbox WHERE status = 'published'",
        5,
        &publisher,
    )
    .await;
    let lines = publisher.stop();
    assert!(
        !lines.iter().any(|l| l.contains("Publish failed.")),
        "{lines:?}"
    );
    assert_exactly_once(&s, &db, &alice.did, 5).await;
    // A record the PDS already had keeps the rev of a commit at or after
    // the one that wrote it, and is written back locally.
    let rev0 = db
        .scalar(&format!(
            "SELECT rev FROM parity_outbox WHERE rkey = '{}'",
            rkeys[0]
        ))
        .await
        .unwrap();
    assert!(rev0 >= applied_rev, "{rev0} < {applied_rev}");
    assert_eq!(
        count(
            &db,
            &format!(
                "SELECT CAST(COUNT(*) AS TEXT) FROM posts WHERE did = '{}'",
                alice.did
            )
        )
        .await,
        5
    );
}

backend_tests!(publish_after_lost_answers_exactly_once, |db| {
    lost_answers_are_published_once(db)
});

/// `kill -9` of `parity publish` while it works through 600 rows of one
/// account, then a new publisher (the dead one's lease expires after
/// `lease_seconds`): every row ends published exactly once.
async fn killed_publisher_leaves_no_duplicates(db: TestDb) {
    let s = Setup::with(&db, "lease_seconds = 5").await;
    let alice = s.net.create_account("alice").await;
    let pw = s.net.create_app_password(&alice, "parity").await;
    s.login(&alice, &pw).await;
    let sql: Vec<String> = (0..600)
        .map(|i| {
            enqueue(
                &alice.did,
                None,
                "create",
                Some(&post(&format!("kill {i}"))),
                None,
            )
        })
        .collect();
    exec(&db, &sql).await;

    let mut first = s.publish();
    // Killed right after its first batch is written back: the next batch
    // is claimed or in flight.
    first.wait_log("Published.").await;
    first.kill9();
    let in_flight = count(
        &db,
        "SELECT CAST(COUNT(*) AS TEXT) FROM parity_outbox WHERE status <> 'published'",
    )
    .await;
    assert!(in_flight > 0, "the kill came after the last batch");

    let second = s.publish();
    wait_count(
        &db,
        "SELECT CAST(COUNT(*) AS TEXT) FROM parity_outbox WHERE status = 'published'",
        600,
        &second,
    )
    .await;
    second.stop();
    assert_exactly_once(&s, &db, &alice.did, 600).await;
}

backend_tests!(publish_killed_mid_batch_exactly_once, |db| {
    killed_publisher_leaves_no_duplicates(db)
});

/// Two `parity publish` processes on one PostgreSQL outbox: every row is
/// published once, and each DID's rows were applied in id order (their
/// commit revs never go down), so no DID was worked on by both at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_publishers_share_one_postgres_outbox() {
    let db = TestDb::postgres("two_publishers").await;
    let s = Setup::with(&db, "concurrency = 2").await;
    let mut accounts = Vec::new();
    for name in ["ann", "ben", "cat", "dan"] {
        let a = s.net.create_account(name).await;
        let pw = s.net.create_app_password(&a, "parity").await;
        s.login(&a, &pw).await;
        accounts.push(a);
    }
    // Interleaved ids across DIDs, with updates of earlier rows in between
    // so that order matters.
    let mut sql = Vec::new();
    for i in 0..60 {
        for a in &accounts {
            let rkey = tid(i);
            sql.push(enqueue(
                &a.did,
                Some(&rkey),
                "create",
                Some(&post(&format!("{} v1", a.handle))),
                None,
            ));
            sql.push(enqueue(
                &a.did,
                Some(&rkey),
                "update",
                Some(&post(&format!("{} {i} v2", a.handle))),
                None,
            ));
        }
    }
    exec(&db, &sql).await;
    let p1 = s.publish();
    let p2 = s.publish();
    wait_count(
        &db,
        "SELECT CAST(COUNT(*) AS TEXT) FROM parity_outbox WHERE status = 'published'",
        480,
        &p1,
    )
    .await;
    let l1 = p1.stop();
    let l2 = p2.stop();
    let published = |l: &[String]| {
        l.iter()
            .filter(|x| x.contains("\"message\":\"Published.\""))
            .count()
    };
    assert_eq!(published(&l1) + published(&l2), 480);
    for a in &accounts {
        let revs = db
            .query_text(
                format!(
                    "SELECT rev FROM parity_outbox WHERE did = '{}' ORDER BY id",
                    a.did
                ),
                1,
            )
            .await;
        let revs: Vec<String> = revs.into_iter().map(|r| r[0].clone().unwrap()).collect();
        assert!(
            revs.windows(2).all(|w| w[0] <= w[1]),
            "{}: revs out of order",
            a.did
        );
        let on_pds = s.net.list_records(&a.did, POST).await;
        assert_eq!(on_pds.len(), 60);
        assert!(
            on_pds
                .iter()
                .all(|r| r["value"]["text"].as_str().unwrap().ends_with("v2"))
        );
    }
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// The benchmark in BENCHMARKS.md ("Publishing"): 2,000 creates through
/// the reference PDS for 1 DID and for 20 DIDs, parity's rows/s and CPU
/// per 1,000 rows, the PDS's CPU over the same run, against a baseline
/// measured in the same run: the same writes sent straight to the PDS in
/// 200-write applyWrites calls. The write budget is lifted (the default
/// paces one account at 5,000 points, 1,666 creates, an hour). Run with a
/// release binary:
/// `cargo build --release && BENCH_PARITY_BIN=target/release/parity cargo test --test it -- --ignored publish::publish_benchmark --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: see the doc comment"]
async fn publish_benchmark() {
    const ROWS: usize = 2000;
    println!(
        "publish bench: parity binary {}",
        std::env::var("BENCH_PARITY_BIN")
            .unwrap_or_else(|_| "debug (BENCH_PARITY_BIN unset)".into())
    );
    for dids in [1usize, 20] {
        let db = TestDb::sqlite();
        let s = Setup::with(&db, "points_per_hour = 10000000\npoints_per_day = 10000000").await;
        // The default idle poll (the tests poll every 50 ms): idle tasks'
        // claims are part of parity's CPU.
        let toml = std::fs::read_to_string(&s.cfg).unwrap();
        std::fs::write(
            &s.cfg,
            toml.replace("poll_interval_ms = 50\n", "poll_interval_ms = 500\n"),
        )
        .unwrap();
        let pds_pid = s.net.pid().unwrap();
        let mut accounts = Vec::new();
        for i in 0..dids {
            let a = s.net.create_account(&format!("bench{i}")).await;
            let pw = s.net.create_app_password(&a, "parity").await;
            s.login(&a, &pw).await;
            accounts.push(a);
        }
        let per = ROWS / dids;
        // Baseline: the PDS alone, same writes, one client.
        let t = std::time::Instant::now();
        let pds0 = cpu_seconds(pds_pid);
        for a in &accounts {
            for chunk in 0..per.div_ceil(200) {
                let n = (per - chunk * 200).min(200);
                let writes: Vec<serde_json::Value> = (0..n)
                    .map(|i| serde_json::json!({"$type": "com.atproto.repo.applyWrites#create", "collection": POST,
                        "value": serde_json::from_str::<serde_json::Value>(&post(&format!("base {i}"))).unwrap()}))
                    .collect();
                s.net
                    .apply_writes(a, serde_json::Value::Array(writes))
                    .await;
            }
        }
        let base = ROWS as f64 / t.elapsed().as_secs_f64();
        let base_pds_cpu = cpu_seconds(pds_pid) - pds0;

        let mut sql = Vec::new();
        for a in &accounts {
            for i in 0..per {
                sql.push(enqueue(
                    &a.did,
                    None,
                    "create",
                    Some(&post(&format!("bench {i}"))),
                    None,
                ));
            }
        }
        exec(&db, &sql).await;
        let publisher = s.publish();
        let t = std::time::Instant::now();
        let cpu0 = cpu_seconds(publisher.pid());
        let pds0 = cpu_seconds(pds_pid);
        wait_count(
            &db,
            "SELECT CAST(COUNT(*) AS TEXT) FROM parity_outbox WHERE status = 'published'",
            ROWS as i64,
            &publisher,
        )
        .await;
        let secs = t.elapsed().as_secs_f64();
        let cpu = cpu_seconds(publisher.pid()) - cpu0;
        let pds_cpu = cpu_seconds(pds_pid) - pds0;
        publisher.stop();
        let load = std::fs::read_to_string("/proc/loadavg").unwrap();
        let per_k = |c: f64| c * 1000.0 / (ROWS as f64 / 1000.0);
        println!(
            "publish bench: {dids} DIDs, {ROWS} creates: parity {:.0} rows/s, PDS alone {:.0} rows/s (ratio {:.2}); \
             CPU per 1,000 rows: parity {:.0} ms, PDS {:.0} ms (PDS alone {:.0} ms); wall {:.1} s; load {}",
            ROWS as f64 / secs,
            base,
            (ROWS as f64 / secs) / base,
            per_k(cpu),
            per_k(pds_cpu),
            per_k(base_pds_cpu),
            secs,
            load.trim()
        );
    }
}

/// One process, both directions: `parity consume` with `[publish] enabled`
/// reads the reference PDS's own firehose while publishing to it. The
/// published rows are written back at once; their echo from the firehose
/// changes nothing (same rev: not newer), and a record written to the PDS
/// by someone else arrives through the stream as usual.
async fn consume_publishes_and_echoes_change_nothing(db: TestDb) {
    let s = Setup::new(&db).await;
    let alice = s.net.create_account("alice").await;
    let pw = s.net.create_app_password(&alice, "parity").await;
    s.login(&alice, &pw).await;
    let toml = std::fs::read_to_string(&s.cfg)
        .unwrap()
        .replace("[publish]\n", "[publish]\nenabled = true\n")
        + &format!("\n[source]\nendpoints = [\"{}\"]\n", s.net.firehose_url());
    let both = s.dir.path().join("both.toml");
    std::fs::write(&both, toml).unwrap();
    let mut consumer = Parity::spawn(&["--config", both.to_str().unwrap(), "consume"]);
    consumer.wait_log("Connected.").await;

    let sql: Vec<String> = (0..3)
        .map(|i| {
            enqueue(
                &alice.did,
                Some(&tid(i)),
                "create",
                Some(&post(&format!("both {i}"))),
                None,
            )
        })
        .chain([enqueue(
            &alice.did,
            Some(&tid(0)),
            "update",
            Some(&post("both 0 edited")),
            None,
        )])
        .collect();
    exec(&db, &sql).await;
    wait_count(
        &db,
        "SELECT CAST(COUNT(*) AS TEXT) FROM parity_outbox WHERE status = 'published'",
        4,
        &consumer,
    )
    .await;
    let cols = ["uri", "cid", "rev", "text", "synced_at"];
    let before = db.rows("posts", &cols).await;
    assert_eq!(before.len(), 3);
    assert!(
        before
            .iter()
            .any(|r| r[3].as_deref() == Some("both 0 edited"))
    );

    // A later record from elsewhere: once it is in, the stream has passed
    // the echoes of the published commits.
    s.net
        .apply_writes(
            &alice,
            serde_json::json!([{"$type": "com.atproto.repo.applyWrites#create", "collection": POST,
                "rkey": tid(99), "value": serde_json::from_str::<serde_json::Value>(&post("marker")).unwrap()}]),
        )
        .await;
    wait_count(
        &db,
        "SELECT CAST(COUNT(*) AS TEXT) FROM posts",
        4,
        &consumer,
    )
    .await;
    consumer.stop();
    let after: Vec<_> = db
        .rows("posts", &cols)
        .await
        .into_iter()
        .filter(|r| r[3].as_deref() != Some("marker"))
        .collect();
    assert_eq!(after, before, "the echo changed published rows");
}

backend_tests!(consume_with_publish_enabled, |db| {
    consume_publishes_and_echoes_change_nothing(db)
});

/// `parity auth login <handle>` resolves the handle (DNS TXT, then the DID
/// document that claims it back) to the account's PDS. Its access token
/// then expires (made to have expired, not waited for): the PDS answers
/// `ExpiredToken`, the worker refreshes once and the retried write
/// succeeds, with no row leaving `pending`/`published`.
async fn expired_access_token_is_refreshed(db: TestDb) {
    let s = Setup::new(&db).await;
    let alice = s.net.create_account("alice").await;
    let pw = s.net.create_app_password(&alice, "parity").await;
    let dns = crate::common::dns::Dns::start().await;
    dns.set_handle("alice.test", &alice.did);
    let dns_addr = dns.addr().to_string();
    let (ok, out, err) = s
        .parity(
            &["auth", "login", "alice.test"],
            &[
                ("PARITY_APP_PASSWORD", pw.as_str()),
                ("PARITY_IDENTITY_DNS_SERVERS", dns_addr.as_str()),
            ],
        )
        .await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&alice.did) && out.contains("(alice.test)") && out.contains(&s.net.pds),
        "{out}"
    );
    let (ok, out, _) = s.parity(&["auth", "list"], &[]).await;
    assert!(
        ok && out.contains("alice.test") && out.contains("active"),
        "{out}"
    );

    let first = s.access(&db, &alice.did).await;
    let refresh_before = db
        .scalar("SELECT refresh_token FROM parity_sessions")
        .await
        .unwrap();
    let expired = s.net.expired(&first);
    // What the worker will meet: the PDS refuses it as expired.
    let (status, body) = s
        .net
        .post(
            "com.atproto.repo.createRecord",
            Some(&expired),
            &serde_json::json!({"repo": alice.did, "collection": POST,
                "record": serde_json::from_str::<serde_json::Value>(&post("direct")).unwrap()}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("ExpiredToken"))
    );
    let sealed = s.sealer().seal(&alice.did, "access_token", &expired);
    exec(
        &db,
        &[format!(
            "UPDATE parity_sessions SET access_token = '{sealed}', refreshed_at = NULL WHERE did = '{}'",
            alice.did
        )],
    )
    .await;
    exec(
        &db,
        &[
            enqueue(
                &alice.did,
                None,
                "create",
                Some(&post("after expiry 0")),
                None,
            ),
            enqueue(
                &alice.did,
                None,
                "create",
                Some(&post("after expiry 1")),
                None,
            ),
        ],
    )
    .await;
    let publisher = s.publish();
    wait_count(
        &db,
        "SELECT CAST(COUNT(*) AS TEXT) FROM parity_outbox WHERE status = 'published' AND attempts = 1",
        2,
        &publisher,
    )
    .await;
    let lines = publisher.stop();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("Refreshed the publish session."))
            .count(),
        1
    );
    assert!(
        !lines.iter().any(|l| l.contains("pending_auth")),
        "{lines:?}"
    );
    assert_eq!(s.net.list_records(&alice.did, POST).await.len(), 2);
    let row = db
        .rows("parity_sessions", &["state", "refreshed_at"])
        .await
        .remove(0);
    assert_eq!(row[0].as_deref(), Some("active"));
    assert!(row[1].is_some(), "refreshed_at is set by the refresh");
    // A new pair was stored (an access token minted within the login's
    // second can equal the first one: JWTs carry whole seconds).
    let now = s.access(&db, &alice.did).await;
    assert_ne!(now, expired);
    assert_ne!(
        db.scalar("SELECT refresh_token FROM parity_sessions").await,
        Some(refresh_before)
    );

    // logout ends the session on the PDS (deleteSession): its refresh
    // token no longer works there.
    let sealed = db
        .scalar("SELECT refresh_token FROM parity_sessions")
        .await
        .unwrap();
    let refresh = s
        .sealer()
        .open(&alice.did, "refresh_token", &sealed)
        .unwrap();
    let (ok, out, err) = s.parity(&["auth", "logout", &alice.did], &[]).await;
    assert!(ok && !err.contains("deleteSession failed"), "{out}{err}");
    assert_eq!(db.count("parity_sessions").await, 0);
    let (status, body) = s
        .net
        .post_empty("com.atproto.server.refreshSession", &refresh)
        .await;
    assert_eq!(status, 400, "{body}");
}

backend_tests!(publish_refreshes_an_expired_token, |db| {
    expired_access_token_is_refreshed(db)
});

/// The firehose copy of a published write is stale: `parity consume`
/// (stopped while `parity publish` creates three records, then updates one
/// and deletes another) reads those commits from the reference PDS's
/// firehose after the write-back; each upsert is refused by the rev guards,
/// the delete by its tombstone, each counted in
/// `parity_events_dropped_total{reason="stale_rev"}`, and
/// the table never goes back to an older version (nor brings back the
/// deleted record).
async fn echoes_of_published_writes_are_stale(db: TestDb) {
    let s = Setup::new(&db).await;
    let alice = s.net.create_account("alice").await;
    let pw = s.net.create_app_password(&alice, "parity").await;
    s.login(&alice, &pw).await;
    // One commit per batch, so each echo is judged by the store on its own.
    let toml = std::fs::read_to_string(&s.cfg).unwrap()
        + &format!(
            "\n[source]\nendpoints = [\"{}\"]\n\n[batch]\nmax_events = 1\n",
            s.net.firehose_url()
        );
    let consume_cfg = s.dir.path().join("consume.toml");
    std::fs::write(&consume_cfg, toml).unwrap();
    let consume = || {
        Parity::spawn(&[
            "--config",
            consume_cfg.to_str().unwrap(),
            "--metrics-addr",
            "127.0.0.1:0",
            "consume",
        ])
    };
    let marker = |i: u64| {
        serde_json::json!([{"$type": "com.atproto.repo.applyWrites#create", "collection": POST,
            "rkey": tid(i), "value": serde_json::from_str::<serde_json::Value>(&post("marker")).unwrap()}])
    };
    let posts = "SELECT CAST(COUNT(*) AS TEXT) FROM posts";

    // The stored cursor passes the account's creation.
    let mut consumer = consume();
    consumer.wait_log("Connected.").await;
    s.net.apply_writes(&alice, marker(90)).await;
    wait_count(&db, posts, 1, &consumer).await;
    consumer.stop();

    let publisher = s.publish();
    exec(
        &db,
        &(0..3)
            .map(|i| {
                enqueue(
                    &alice.did,
                    Some(&tid(i)),
                    "create",
                    Some(&post(&format!("v1 {i}"))),
                    None,
                )
            })
            .collect::<Vec<_>>(),
    )
    .await;
    let published = "SELECT CAST(COUNT(*) AS TEXT) FROM parity_outbox WHERE status = 'published'";
    wait_count(&db, published, 3, &publisher).await;
    exec(
        &db,
        &[
            enqueue(
                &alice.did,
                Some(&tid(0)),
                "update",
                Some(&post("v2 0")),
                None,
            ),
            enqueue(&alice.did, Some(&tid(1)), "delete", None, None),
        ],
    )
    .await;
    wait_count(&db, published, 5, &publisher).await;
    publisher.stop();
    // Two applyWrites calls: two commits on the firehose.
    assert_eq!(
        count(
            &db,
            "SELECT CAST(COUNT(DISTINCT rev) AS TEXT) FROM parity_outbox"
        )
        .await,
        2
    );
    let cols = ["uri", "cid", "rev", "text", "synced_at"];
    let before = db.rows("posts", &cols).await;
    assert_eq!(before.len(), 3, "{before:?}"); // marker, v2 0, v1 2

    let mut consumer = consume();
    let addr = consumer.metrics_addr().await;
    s.net.apply_writes(&alice, marker(91)).await;
    wait_count(&db, posts, 4, &consumer).await;
    let m = crate::common::process::scrape(addr).await;
    consumer.stop();
    // Creates of tid 0, 1, 2 (older than the update, the delete, and the
    // write-back), the update of tid 0 (same rev as its write-back) and
    // the delete of tid 1 (its tombstone is already at that rev).
    assert_eq!(
        m.get(
            "parity_events_dropped_total",
            &[("reason", "stale_rev"), ("intentional", "true")]
        ),
        5.0
    );
    let after: Vec<_> = db
        .rows("posts", &cols)
        .await
        .into_iter()
        .filter(|r| r[0].as_deref().is_none_or(|u| !u.ends_with(&tid(91))))
        .collect();
    assert_eq!(after, before, "an echo changed a published row");
}

backend_tests!(publish_echoes_are_stale, |db| {
    echoes_of_published_writes_are_stale(db)
});

/// The PDS's limits on one call: 100 records of 3 KB (300 KB, twice the
/// reference PDS's 150 KiB JSON body limit) go in three `applyWrites`
/// calls that each fit, not one refused call. And an account deactivated
/// on its PDS fails its rows (`AccountDeactivated`) without waiting for a
/// login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_size_limit_and_deactivated_account() {
    let db = TestDb::sqlite();
    let s = Setup::new(&db).await;
    let alice = s.net.create_account("alice").await;
    let bob = s.net.create_account("bob").await;
    for a in [&alice, &bob] {
        let pw = s.net.create_app_password(a, "parity").await;
        s.login(a, &pw).await;
    }
    let (status, body) = s
        .net
        .post(
            "com.atproto.server.deactivateAccount",
            Some(&bob.access_jwt),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    const NOTE: &str = "com.example.parity.note";
    let big = |i: usize| {
        serde_json::json!({"$type": NOTE, "body": format!("{i:04}{}", "x".repeat(3000))})
            .to_string()
    };
    let mut sql: Vec<String> = (0..100)
        .map(|i| {
            format!(
                "INSERT INTO parity_outbox (did, collection, op, record) VALUES ('{}', '{NOTE}', 'create', '{}')",
                alice.did,
                big(i)
            )
        })
        .collect();
    sql.extend((0..3).map(|i| {
        enqueue(
            &bob.did,
            None,
            "create",
            Some(&post(&format!("bob {i}"))),
            None,
        )
    }));
    exec(&db, &sql).await;
    let publisher = s.publish();
    wait_count(
        &db,
        "SELECT CAST(COUNT(*) AS TEXT) FROM parity_outbox WHERE status IN ('published', 'failed')",
        103,
        &publisher,
    )
    .await;
    let lines = publisher.stop();
    assert_eq!(s.net.list_records(&alice.did, NOTE).await.len(), 100);
    let revs = count(
        &db,
        &format!(
            "SELECT CAST(COUNT(DISTINCT rev) AS TEXT) FROM parity_outbox WHERE did = '{}' AND status = 'published'",
            alice.did
        ),
    )
    .await;
    assert_eq!(revs, 3);
    let failed = db
        .query_text(
            format!(
                "SELECT status, error, CAST(attempts AS TEXT) FROM parity_outbox WHERE did = '{}'",
                bob.did
            ),
            3,
        )
        .await;
    assert_eq!(failed.len(), 3);
    for r in &failed {
        assert_eq!(r[0].as_deref(), Some("failed"));
        assert!(
            r[1].as_deref().unwrap().contains("AccountDeactivated"),
            "{r:?}"
        );
        assert_eq!(r[2].as_deref(), Some("1"));
    }
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("\"message\":\"Publish failed.\"") && l.contains(&bob.did))
            .count(),
        3
    );
}
