//! Publish sessions without the reference PDS: a refresh is single-flight
//! across processes (refresh tokens are single-use, so a second refresh
//! with the same token would expire a good session), and rows that wait
//! for a login longer than `publish.pending_auth_ttl` end `failed` with a
//! reason that says so.

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
