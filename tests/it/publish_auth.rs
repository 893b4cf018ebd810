//! Publish sessions without the reference PDS: a refresh is single-flight
//! across processes (refresh tokens are single-use, so a second refresh
//! with the same token would expire a good session), also between two
//! `parity publish` processes on one PostgreSQL, and rows that wait for a
//! login longer than `publish.pending_auth_ttl` end `failed` with a reason
//! that says so.

use std::time::Duration;

use parity::net::Policy;
use parity::publish::session::Sessions;
use parity::publish::xrpc::Client;

use crate::common::TestDb;
use crate::common::fake_pds::{FakePds, post, publish_setup, store, wait_scalar};
use crate::common::process::Parity;

const A: &str = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa";
const POST: &str = "app.bsky.feed.post";

/// Two processes' sessions (separate pools, separate lease owners) find
/// the same access token expired at the same moment: one refreshSession
/// call, both get its tokens, and the session stays active with them.
async fn refresh_is_single_flight(db: TestDb) {
    let (fake, server) = FakePds::start().await;
    fake.accept_refresh("refresh0");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (_dir, sealer, _cfg) = publish_setup(&db, &fake.url, &[A], "").await;
    let client = Client::new(
        Policy {
            allow_private: true,
        },
        Duration::from_secs(10),
    )
    .unwrap();
    let one = Sessions::new(
        store(&db).await,
        sealer.clone(),
        client.clone(),
        "host-1-a/0".into(),
    );
    let two = Sessions::new(
        store(&db).await,
        sealer.clone(),
        client,
        "host-2-b/0".into(),
    );
    let (r1, r2) = tokio::join!(one.refresh(A, "access0"), two.refresh(A, "access0"));
    let (r1, r2) = (r1.unwrap().unwrap(), r2.unwrap().unwrap());
    assert_eq!(r1.access, "access1");
    assert_eq!(r2.access, "access1");
    assert_eq!(fake.refresh_calls(), 1);
    let s = store(&db).await;
    let row = s.session(A).await.unwrap().unwrap();
    assert_eq!(row.state, "active");
    assert_eq!(
        sealer.open(A, "refresh_token", &row.refresh_token).unwrap(),
        "refresh1"
    );
    assert!(row.refreshed_at.is_some());
    s.close().await;
    server.abort();
}

backend_tests!(
    publish_refresh_single_flight,
    |db| refresh_is_single_flight(db)
);

/// A refresh refused because its token was already spent, while the
/// process that spent it stores the new tokens meanwhile (its refresh lock
/// had lapsed): the session is not marked expired, and the refused side
/// goes on with the tokens the other stored. (Expiring is a compare-and-
/// swap on the refresh token the PDS refused.)
async fn refused_refresh_keeps_a_session_refreshed_meanwhile(db: TestDb) {
    let (fake, server) = FakePds::start().await;
    // The PDS already took refresh0 (from the other process): only
    // refresh1 works now.
    fake.accept_refresh("refresh1");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (_dir, sealer, _cfg) = publish_setup(&db, &fake.url, &[A], "").await;
    let client = Client::new(
        Policy {
            allow_private: true,
        },
        Duration::from_secs(10),
    )
    .unwrap();
    let late = Sessions::new(store(&db).await, sealer.clone(), client, "host-1-a".into());
    let held = fake.hold_refreshes().await;
    let refresh = tokio::spawn(async move { late.refresh(A, "access0").await });
    // The refused refresh is in flight (the fake answers only once
    // released): the other process stores what its refresh of refresh0
    // returned.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while fake.refresh_calls() == 0 {
        assert!(std::time::Instant::now() < deadline, "no refresh call");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let s = store(&db).await;
    let spent = s.session(A).await.unwrap().unwrap().refresh_token;
    assert!(
        s.store_refreshed_session(
            A,
            &spent,
            &sealer.seal(A, "access_token", "access-other"),
            &sealer.seal(A, "refresh_token", "refresh1"),
        )
        .await
        .unwrap()
    );
    drop(held);
    let live = refresh.await.unwrap().unwrap();
    assert_eq!(live.map(|l| l.access).as_deref(), Some("access-other"));
    let row = s.session(A).await.unwrap().unwrap();
    assert_eq!(row.state, "active", "{:?}", row.error);
    assert_eq!(
        sealer.open(A, "refresh_token", &row.refresh_token).unwrap(),
        "refresh1"
    );
    assert_eq!(fake.refresh_calls(), 1);
    s.close().await;
    server.abort();
}

backend_tests!(publish_refused_refresh_keeps_a_refreshed_session, |db| {
    refused_refresh_keeps_a_session_refreshed_meanwhile(db)
});

/// Sends SIGSTOP or SIGCONT to a child process.
fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// Two `parity publish` processes on one PostgreSQL share one DID's
/// session, whose access token the PDS refuses as expired (the fake takes
/// only the newest access token it issued, and each refresh token once).
/// Whichever process claims the rows first refreshes; then that process is
/// stopped (SIGSTOP) and the other publishes the next rows with the tokens
/// the first stored, without a refresh of its own. One refreshSession in
/// all, the session stays active, both processes published, no row waited
/// for a login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_publish_processes_refresh_a_session_once() {
    let db = TestDb::postgres("two_refreshers").await;
    let (fake, server) = FakePds::start().await;
    fake.accept_refresh("refresh0");
    fake.require_access("access-not-yet-issued");
    let (_dir, sealer, cfg) = publish_setup(&db, &fake.url, &[A], "concurrency = 2").await;
    let s = store(&db).await;
    let enqueue = |from: usize| {
        let s = s.clone();
        async move {
            for i in from..from + 3 {
                s.add_outbox(A, POST, None, "create", Some(&post(&format!("p{i}"))), None)
                    .await
                    .unwrap();
            }
        }
    };
    enqueue(0).await;
    let cfg = cfg.to_str().unwrap().to_owned();
    let one = Parity::spawn(&["--config", &cfg, "publish"]);
    let two = Parity::spawn(&["--config", &cfg, "publish"]);
    let published = "SELECT CAST(COUNT(*) AS TEXT) FROM parity_outbox WHERE status = 'published'";
    let logs =
        |a: &Parity, b: &Parity| format!("{}\n---\n{}", a.lines().join("\n"), b.lines().join("\n"));
    wait_scalar(&db, published, "3", 60, || logs(&one, &two)).await;
    let refreshed = |p: &Parity| {
        p.lines()
            .iter()
            .any(|l| l.contains("Refreshed the publish session."))
    };
    assert!(refreshed(&one) != refreshed(&two), "{}", logs(&one, &two));
    let (first, other) = if refreshed(&one) {
        (one, two)
    } else {
        (two, one)
    };

    // Only the other process can take the next rows.
    signal(first.pid(), "-STOP");
    enqueue(3).await;
    wait_scalar(&db, published, "6", 60, || logs(&first, &other)).await;
    signal(first.pid(), "-CONT");
    let first_lines = first.stop();
    let other_lines = other.stop();

    assert_eq!(fake.refresh_calls(), 1);
    let count = |lines: &[String], m: &str| lines.iter().filter(|l| l.contains(m)).count();
    assert!(count(&first_lines, "\"Published.\"") >= 1);
    assert_eq!(count(&other_lines, "\"Published.\""), 3, "{other_lines:?}");
    assert_eq!(count(&other_lines, "Refreshed the publish session."), 0);
    for lines in [&first_lines, &other_lines] {
        assert_eq!(count(lines, "Publish waits for a login"), 0, "{lines:?}");
        assert_eq!(count(lines, "Publish session expired"), 0, "{lines:?}");
    }
    let row = s.session(A).await.unwrap().unwrap();
    assert_eq!(row.state, "active");
    assert_eq!(
        sealer.open(A, "access_token", &row.access_token).unwrap(),
        "access1"
    );
    // One write was refused as expired (access0), then each went with
    // access1: the fake takes no other.
    let calls = fake.calls();
    assert_eq!(
        calls.iter().filter(|c| c.status == 400).count(),
        1,
        "{calls:?}"
    );
    assert_eq!(
        db.scalar("SELECT CAST(COUNT(*) AS TEXT) FROM parity_outbox WHERE attempts <> 1")
            .await
            .as_deref(),
        Some("0")
    );
    s.close().await;
    server.abort();
}

/// Rows of a DID nobody signed in for wait in `pending_auth`; the one
/// enqueued longer ago than `publish.pending_auth_ttl` becomes `failed`
/// with a reason naming the key, the newer one keeps waiting.
async fn pending_auth_expires(db: TestDb) {
    // No session at all: nothing is ever called.
    let (_dir, _sealer, cfg) =
        publish_setup(&db, "http://127.0.0.1:9", &[], "pending_auth_ttl = \"1h\"").await;
    let s = store(&db).await;
    let old = s
        .add_outbox(
            A,
            POST,
            Some("3kaaaaaaaaaa2"),
            "create",
            Some(&post("old")),
            None,
        )
        .await
        .unwrap();
    let new = s
        .add_outbox(
            A,
            POST,
            Some("3kaaaaaaaaab2"),
            "create",
            Some(&post("new")),
            None,
        )
        .await
        .unwrap();
    s.close().await;
    let two_hours_ago = if db.is_pg() {
        "now() - interval '2 hours'".to_owned()
    } else {
        "strftime('%Y-%m-%dT%H:%M:%f000Z', 'now', '-2 hours')".to_owned()
    };
    db.exec(&format!(
        "UPDATE parity_outbox SET created_at = {two_hours_ago} WHERE id = {old}"
    ))
    .await;
    let publisher = Parity::spawn(&["--config", cfg.to_str().unwrap(), "publish"]);
    wait_scalar(
        &db,
        &format!("SELECT status FROM parity_outbox WHERE id = {old}"),
        "failed",
        60,
        || publisher.lines().join("\n"),
    )
    .await;
    let lines = publisher.stop();
    let error = db
        .scalar(&format!("SELECT error FROM parity_outbox WHERE id = {old}"))
        .await
        .unwrap();
    assert!(error.contains("publish.pending_auth_ttl"), "{error}");
    assert!(error.contains("parity auth login"), "{error}");
    assert_eq!(
        db.scalar(&format!(
            "SELECT status FROM parity_outbox WHERE id = {new}"
        ))
        .await
        .as_deref(),
        Some("pending_auth")
    );
    let uri = format!("at://{A}/{POST}/3kaaaaaaaaaa2");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("no login within publish.pending_auth_ttl") && l.contains(&uri)),
        "{lines:?}"
    );
}

backend_tests!(publish_pending_auth_ttl, |db| pending_auth_expires(db));
