//! Publish rate limits: each account's write budget is paced before the PDS
//! would refuse (create 3, update 2, delete 1 points against
//! `publish.points_per_hour` / `points_per_day`), the spend lives in the
//! database so every process shares it, and a 429 pauses the whole PDS
//! host, not only the DID that got it. Against the local fake PDS (the
//! reference PDS's dev network has rate limits off).

use std::time::Duration;

use chrono::Utc;
use parity::store::Charge;

use crate::common::TestDb;
use crate::common::fake_pds::{FakePds, Reply, post, publish_setup, store, wait_scalar};
use crate::common::process::Parity;

const A: &str = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb";
const POST: &str = "app.bsky.feed.post";

fn near(t: chrono::DateTime<Utc>, want: chrono::DateTime<Utc>) -> bool {
    (t - want).num_milliseconds().abs() < 1000
}

/// The hourly and the daily window, as two processes (two pools) see them,
/// and concurrent charges that never overspend.
async fn budget_windows(db: TestDb) {
    let p1 = store(&db).await;
    let p2 = store(&db).await;
    let now = Utc::now();
    let hour = chrono::Duration::hours(1);
    let scope = "did:plc:windows";
    // 10 points an hour, 12 a day.
    assert_eq!(
        p1.charge_write_points(scope, 6, 10, 12, now).await.unwrap(),
        Charge::Granted
    );
    match p2.charge_write_points(scope, 6, 10, 12, now).await.unwrap() {
        Charge::Exhausted { remaining, until } => {
            assert_eq!(remaining, 4);
            assert!(near(until, now + hour), "{until} vs {now}");
        }
        other => panic!("{other:?}"),
    }
    // Past the hour the hourly window is new, the daily one is not.
    let later = now + hour + chrono::Duration::minutes(1);
    assert_eq!(
        p2.charge_write_points(scope, 6, 10, 12, later)
            .await
            .unwrap(),
        Charge::Granted
    );
    match p1
        .charge_write_points(scope, 3, 10, 12, later)
        .await
        .unwrap()
    {
        Charge::Exhausted { remaining, until } => {
            assert_eq!(remaining, 0);
            assert!(near(until, now + chrono::Duration::days(1)), "{until}");
        }
        other => panic!("{other:?}"),
    }

    // Twenty charges of 3 from two pools at once against 30 an hour:
    // exactly ten go through.
    let shared = "did:plc:shared";
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let s = if i % 2 == 0 { p1.clone() } else { p2.clone() };
        tasks.spawn(async move {
            s.charge_write_points(shared, 3, 30, 35_000, Utc::now())
                .await
                .unwrap()
        });
    }
    let granted = tasks
        .join_all()
        .await
        .into_iter()
        .filter(|c| *c == Charge::Granted)
        .count();
    assert_eq!(granted, 10);
    assert_eq!(
        db.scalar(&format!(
            "SELECT CAST(hour_points AS TEXT) FROM parity_publish_limits WHERE scope = '{shared}'"
        ))
        .await
        .as_deref(),
        Some("30")
    );
    p1.close().await;
    p2.close().await;
}

backend_tests!(publish_budget_windows_shared, |db| budget_windows(db));

/// SQL for "now" and "now + minutes" on each backend.
fn now_sql(db: &TestDb, minutes: i64) -> String {
    if db.is_pg() {
        format!("(now() + interval '{minutes} minutes')")
    } else {
        format!("strftime('%Y-%m-%dT%H:%M:%f000Z', 'now', '{minutes:+} minutes')")
    }
}

/// 5 creates (15 points) against 12 points an hour: one call with the 4
/// that fit, the fifth waits `pending` until the window ends without
/// spending an attempt. A second process sees the same spend and does not
/// send it either; once the window has ended it does.
async fn budget_paced_before_the_limit(db: TestDb) {
    let (fake, server) = FakePds::start().await;
    let (_dir, _sealer, cfg) = publish_setup(
        &db,
        &fake.url,
        &[A],
        "points_per_hour = 12\nconcurrency = 1",
    )
    .await;
    let s = store(&db).await;
    for i in 0..5 {
        s.add_outbox(A, POST, None, "create", Some(&post(&format!("p{i}"))), None)
            .await
            .unwrap();
    }
    let cfg = cfg.to_str().unwrap().to_owned();
    let first = Parity::spawn(&["--config", &cfg, "publish"]);
    let waiting = format!(
        "SELECT CAST(COUNT(*) AS TEXT) FROM parity_outbox WHERE status = 'pending' AND attempts = 0 \
         AND error LIKE 'write budget spent%' AND next_attempt_at > {}",
        now_sql(&db, 50)
    );
    wait_scalar(&db, &waiting, "1", 30, || first.lines().join("\n")).await;
    let published = "SELECT CAST(COUNT(*) AS TEXT) FROM parity_outbox WHERE status = 'published'";
    assert_eq!(db.scalar(published).await.as_deref(), Some("4"));
    let lines = first.stop();
    let calls = fake.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].writes, 4);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Write budget spent: pacing this DID."))
    );

    // Another process, the row due again: the budget is in the database,
    // so it waits again instead of calling.
    db.exec(&format!(
        "UPDATE parity_outbox SET next_attempt_at = {} WHERE status = 'pending'",
        now_sql(&db, 0)
    ))
    .await;
    let second = Parity::spawn(&["--config", &cfg, "publish"]);
    wait_scalar(&db, &waiting, "1", 30, || second.lines().join("\n")).await;
    assert_eq!(fake.calls().len(), 1);

    // The hour is over: the same process sends it.
    db.exec(
        "UPDATE parity_publish_limits SET hour_start = '2000-01-01T00:00:00.000000Z', \
         day_start = '2000-01-01T00:00:00.000000Z'",
    )
    .await;
    db.exec(&format!(
        "UPDATE parity_outbox SET next_attempt_at = {} WHERE status = 'pending'",
        now_sql(&db, 0)
    ))
    .await;
    wait_scalar(&db, published, "5", 30, || second.lines().join("\n")).await;
    second.stop();
    let calls = fake.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].writes, 1);
    assert_eq!(
        db.scalar(&format!(
            "SELECT CAST(hour_points AS TEXT) FROM parity_publish_limits WHERE scope = 'did:{A}'"
        ))
        .await
        .as_deref(),
        Some("3")
    );
    s.close().await;
    server.abort();
}

backend_tests!(publish_budget_paced, |db| budget_paced_before_the_limit(db));

/// A 429 for one DID (with the reference PDS's ratelimit-* headers, reset
/// as epoch seconds) pauses the whole host until that second: the other DID on it makes no
/// call before the reset either, and both are published afterwards with no
/// attempt spent.
async fn rate_limit_pauses_the_host(db: TestDb) {
    let (fake, server) = FakePds::start().await;
    fake.script(A, vec![Reply::ResetIn(2)]);
    let (_dir, _sealer, cfg) = publish_setup(&db, &fake.url, &[A, B], "concurrency = 1").await;
    let s = store(&db).await;
    for did in [A, B] {
        s.add_outbox(did, POST, None, "create", Some(&post(did)), None)
            .await
            .unwrap();
    }
    let publisher = Parity::spawn(&["--config", cfg.to_str().unwrap(), "publish"]);
    wait_scalar(
        &db,
        "SELECT CAST(COUNT(*) AS TEXT) FROM parity_outbox WHERE status = 'published' AND attempts = 1",
        "2",
        30,
        || publisher.lines().join("\n"),
    )
    .await;
    let lines = publisher.stop();
    let calls = fake.calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!((calls[0].repo.as_str(), calls[0].status), (A, 429));
    // Nothing went to the host before the reset.
    let reset_at = std::time::UNIX_EPOCH + Duration::from_secs(calls[0].reset.unwrap() as u64);
    for c in &calls[1..] {
        assert_eq!(c.status, 200);
        assert!(
            c.wall >= reset_at,
            "{} called {:?} before the reset",
            c.repo,
            reset_at.duration_since(c.wall).unwrap_or_default()
        );
    }
    assert!(calls[1..].iter().any(|c| c.repo == B));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("pausing this DID and its PDS host"))
    );
    assert_eq!(
        db.scalar(&format!(
            "SELECT CAST(COUNT(*) AS TEXT) FROM parity_publish_limits WHERE scope = 'host:{}' \
             AND paused_until IS NOT NULL",
            fake.url
        ))
        .await
        .as_deref(),
        Some("1")
    );
    s.close().await;
    server.abort();
}

backend_tests!(
    publish_429_pauses_the_host,
    |db| rate_limit_pauses_the_host(db)
);

/// Points come back for calls the PDS did not charge (it checks the token
/// before its rate limiter, and a request that never arrived costs
/// nothing), and stay spent for calls it did (a 5xx comes from its
/// handler). With 9 points an hour:
/// - A: 3 creates (9 points) refused as expired, the refresh refused too:
///   pending_auth with the 9 points given back; after a new login the
///   same 3 creates fit the hour and go at once (without the refund they
///   would wait for the next window);
/// - B: its PDS refuses connections: retried, nothing spent;
/// - C: a create answered 500 (3 points, kept), then retried alone as a
///   putRecord (2 points, what the PDS charges a put, not a create's 3).
async fn points_refunded_when_the_pds_did_not_charge(db: TestDb) {
    const C: &str = "did:plc:cccccccccccccccccccccccc";
    let (fake, server) = FakePds::start().await;
    fake.script(A, vec![Reply::Status(400, "ExpiredToken")]);
    fake.script(C, vec![Reply::Status(500, "InternalServerError")]);
    let (_dir, sealer, cfg) = publish_setup(
        &db,
        &fake.url,
        &[A, C],
        "points_per_hour = 9\nmax_attempts = 5",
    )
    .await;
    let s = store(&db).await;
    // B's PDS: a port nothing listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let down = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    s.save_session(
        B,
        None,
        &down,
        &sealer.seal(B, "access_token", "access0"),
        &sealer.seal(B, "refresh_token", "refresh0"),
    )
    .await
    .unwrap();
    for i in 0..3 {
        s.add_outbox(A, POST, None, "create", Some(&post(&format!("a{i}"))), None)
            .await
            .unwrap();
    }
    s.add_outbox(B, POST, None, "create", Some(&post("b")), None)
        .await
        .unwrap();
    // C's retry finds another record at its key, so it goes alone as a
    // put (whose answer decides).
    s.add_outbox(
        C,
        POST,
        Some("3kcccccccccc2"),
        "create",
        Some(&post("c")),
        None,
    )
    .await
    .unwrap();
    fake.has_record(
        "3kcccccccccc2",
        serde_json::json!({"$type": POST, "text": "other"}),
    );
    let publisher = Parity::spawn(&["--config", cfg.to_str().unwrap(), "publish"]);
    let log = || publisher.lines().join("\n");
    let points = |did: &str| {
        format!(
            "SELECT CAST(hour_points AS TEXT) FROM parity_publish_limits WHERE scope = 'did:{did}'"
        )
    };
    wait_scalar(
        &db,
        &format!("SELECT CAST(COUNT(*) AS TEXT) FROM parity_outbox WHERE did = '{A}' AND status = 'pending_auth'"),
        "3",
        30,
        log,
    )
    .await;
    assert_eq!(
        db.scalar(&points(A)).await.as_deref(),
        Some("0"),
        "{}",
        log()
    );
    wait_scalar(
        &db,
        &format!("SELECT status FROM parity_outbox WHERE did = '{C}'"),
        "published",
        30,
        log,
    )
    .await;
    assert_eq!(
        db.scalar(&points(C)).await.as_deref(),
        Some("5"),
        "{}",
        log()
    );
    // Read once B's row has spent every attempt (`failed`): no call of B
    // is then between its charge and its refund, so every one of the five
    // charges must have come back. (Read after the second attempt, a third
    // could be caught charged but not yet refunded.)
    wait_scalar(
        &db,
        &format!(
            "SELECT CAST(COUNT(*) AS TEXT) FROM parity_outbox WHERE did = '{B}' AND attempts = 5 \
             AND status = 'failed' AND error LIKE '%cannot reach the PDS%'"
        ),
        "1",
        60,
        log,
    )
    .await;
    assert_eq!(
        db.scalar(&points(B)).await.as_deref(),
        Some("0"),
        "{}",
        log()
    );

    // A signs in again (what `parity auth login` stores and resumes).
    s.save_session(
        A,
        None,
        &fake.url,
        &sealer.seal(A, "access_token", "access9"),
        &sealer.seal(A, "refresh_token", "refresh9"),
    )
    .await
    .unwrap();
    s.resume_pending_auth(A).await.unwrap();
    wait_scalar(
        &db,
        &format!("SELECT CAST(COUNT(*) AS TEXT) FROM parity_outbox WHERE did = '{A}' AND status = 'published'"),
        "3",
        30,
        log,
    )
    .await;
    assert_eq!(db.scalar(&points(A)).await.as_deref(), Some("9"));
    publisher.stop();
    let calls = fake.calls();
    let of = |did: &str| -> Vec<(&str, u16)> {
        calls
            .iter()
            .filter(|c| c.repo == did && c.method != "getRecord")
            .map(|c| (c.method, c.status))
            .collect()
    };
    assert_eq!(of(A), [("applyWrites", 400), ("applyWrites", 200)]);
    assert_eq!(of(C), [("applyWrites", 500), ("putRecord", 200)]);
    s.close().await;
    server.abort();
}

backend_tests!(publish_points_refunded_when_not_charged, |db| {
    points_refunded_when_the_pds_did_not_charge(db)
});
