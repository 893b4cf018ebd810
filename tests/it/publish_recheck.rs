//! After `kill -9` mid-batch, the next claim's creates (`attempts > 1`:
//! they may have reached the PDS) are looked up with `getRecord` before
//! being sent again: the ones the PDS has as parity would write them are
//! published without a write, the others go back in one `applyWrites`,
//! instead of one `putRecord` commit per row (200 of them for one lost
//! batch, which under load made `publish_killed_mid_batch_exactly_once`
//! outlast its wait). Against the local fake PDS, which counts calls.

use crate::common::TestDb;
use crate::common::fake_pds::{CID, FakePds, post, publish_setup, store, wait_scalar};
use crate::common::process::Parity;

const A: &str = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa";
const POST: &str = "app.bsky.feed.post";

/// A TID-shaped rkey, distinct per `i`.
fn rkey(i: usize) -> String {
    const D: &[u8] = b"234567abcdefghijklmnopqrstuvwxyz";
    let digits: String = (0..4)
        .rev()
        .map(|k| D[(i >> (k * 5)) & 31] as char)
        .collect();
    format!("3kzzzzzzz{digits}")
}

async fn retried_claim_is_looked_up_then_batched(db: TestDb) {
    let (fake, server) = FakePds::start().await;
    let (_dir, _sealer, cfg) = publish_setup(&db, &fake.url, &[A], "").await;
    let s = store(&db).await;
    // A dead worker's claim: 200 creates in flight with their rkeys, one
    // attempt spent, the lease expired. The PDS got the first 50 (the
    // answer was lost); the rest never reached it.
    for i in 0..200 {
        let record = post(&format!("r{i}"));
        s.add_outbox(A, POST, Some(&rkey(i)), "create", Some(&record), None)
            .await
            .unwrap();
        if i < 50 {
            fake.has_record(&rkey(i), serde_json::from_str(&record).unwrap());
        }
    }
    let expired = if db.is_pg() {
        "now() - interval '1 minute'"
    } else {
        "'2000-01-01T00:00:00.000000Z'"
    };
    db.exec(&format!(
        "UPDATE parity_outbox SET status = 'in_flight', attempts = 1, lease_owner = 'dead/0', \
         lease_expires_at = {expired}"
    ))
    .await;

    let publisher = Parity::spawn(&["--config", cfg.to_str().unwrap(), "publish"]);
    wait_scalar(
        &db,
        "SELECT CAST(COUNT(*) AS TEXT) FROM parity_outbox WHERE status = 'published' AND attempts = 2",
        "200",
        60,
        || publisher.lines().join("\n"),
    )
    .await;
    let lines = publisher.stop();
    assert!(
        !lines.iter().any(|l| l.contains("Publish failed.")),
        "{lines:?}"
    );
    let calls = fake.calls();
    let count = |m: &str| calls.iter().filter(|c| c.method == m).count();
    assert_eq!(count("getRecord"), 200);
    assert_eq!(count("putRecord"), 0, "one put per row: not looked up");
    let batches: Vec<usize> = calls
        .iter()
        .filter(|c| c.method == "applyWrites")
        .map(|c| c.writes)
        .collect();
    assert_eq!(batches, [150]);
    // The 50 found: published with the PDS's CID, at its latest rev.
    assert_eq!(
        db.scalar(&format!(
            "SELECT CAST(COUNT(*) AS TEXT) FROM parity_outbox WHERE rkey <= '{}' \
             AND cid = '{CID}' AND rev = '3kzzzzzzzzzz2'",
            rkey(49)
        ))
        .await
        .as_deref(),
        Some("50")
    );
    assert_eq!(
        db.scalar("SELECT CAST(COUNT(*) AS TEXT) FROM posts")
            .await
            .as_deref(),
        Some("200")
    );
    s.close().await;
    server.abort();
}

backend_tests!(publish_retried_claim_looked_up, |db| {
    retried_claim_is_looked_up_then_batched(db)
});
