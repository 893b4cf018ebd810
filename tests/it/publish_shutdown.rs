//! SIGTERM of `parity publish` mid-claim: the call in flight finishes and
//! its row is published; the claim's rows not yet sent go back to
//! `pending` with no lease and no attempt spent, so another process takes
//! them at once instead of after the lease expires.

use std::time::{Duration, Instant};

use crate::common::TestDb;
use crate::common::fake_pds::{FakePds, Reply, post, publish_setup, store};
use crate::common::process::Parity;

const A: &str = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa";
const POST: &str = "app.bsky.feed.post";

async fn sigterm_finishes_the_call_and_releases_the_rest(db: TestDb) {
    let (fake, server) = FakePds::start().await;
    fake.script(A, vec![Reply::Slow(Duration::from_millis(1500))]);
    let (_dir, _sealer, cfg) = publish_setup(&db, &fake.url, &[A], "").await;
    let s = store(&db).await;
    // swap_cid: each row is its own putRecord call.
    for i in 0..3 {
        s.add_outbox(
            A,
            POST,
            Some(&format!("3kaaaaaaaaa{i}2")),
            "update",
            Some(&post(&format!("v{i}"))),
            Some(crate::common::fake_pds::CID),
        )
        .await
        .unwrap();
    }
    s.close().await;
    let publisher = Parity::spawn(&["--config", cfg.to_str().unwrap(), "publish"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while fake.slow_arrived() == 0 {
        assert!(
            Instant::now() < deadline,
            "{}",
            publisher.lines().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lines = publisher.stop();
    // The first call was answered after the signal and written back.
    assert_eq!(fake.calls().len(), 1);
    let rows = db
        .rows(
            "parity_outbox",
            &["id", "status", "attempts", "lease_owner"],
        )
        .await;
    assert_eq!(rows[0][1].as_deref(), Some("published"), "{rows:?}");
    for r in &rows[1..] {
        assert_eq!(r[1].as_deref(), Some("pending"), "{rows:?}");
        assert_eq!(r[2].as_deref(), Some("0"), "{rows:?}");
        assert_eq!(r[3], None, "{rows:?}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Released outbox rows on shutdown.") && l.contains("\"rows\":2")),
        "{lines:?}"
    );
    server.abort();
}

backend_tests!(publish_sigterm_releases_leases, |db| {
    sigterm_finishes_the_call_and_releases_the_rest(db)
});

/// A call slower than `publish.lease_seconds` keeps its lease (renewed
/// while it is in flight): a second `parity publish` polling the same
/// outbox does not claim the row and send it again.
async fn slow_call_keeps_its_lease(db: TestDb) {
    let (fake, server) = FakePds::start().await;
    fake.script(A, vec![Reply::Slow(Duration::from_secs(8))]);
    let (_dir, _sealer, cfg) = publish_setup(&db, &fake.url, &[A], "lease_seconds = 5").await;
    let s = store(&db).await;
    s.add_outbox(
        A,
        POST,
        Some("3kaaaaaaaaaa2"),
        "create",
        Some(&post("slow")),
        None,
    )
    .await
    .unwrap();
    s.close().await;
    let cfg = cfg.to_str().unwrap().to_owned();
    let first = Parity::spawn(&["--config", &cfg, "publish"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while fake.slow_arrived() == 0 {
        assert!(Instant::now() < deadline, "{}", first.lines().join("\n"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = Parity::spawn(&["--config", &cfg, "publish"]);
    crate::common::fake_pds::wait_scalar(
        &db,
        "SELECT status FROM parity_outbox",
        "published",
        60,
        || first.lines().join("\n"),
    )
    .await;
    first.stop();
    second.stop();
    assert_eq!(fake.calls().len(), 1, "{:?}", fake.calls());
    assert_eq!(
        db.scalar("SELECT CAST(attempts AS TEXT) FROM parity_outbox")
            .await
            .as_deref(),
        Some("1")
    );
    server.abort();
}

backend_tests!(publish_slow_call_keeps_its_lease, |db| {
    slow_call_keeps_its_lease(db)
});
