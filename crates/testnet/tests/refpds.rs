//! The reference PDS starter: a fresh network answers, accounts and app
//! passwords work, records written are read back, and `stop` ends the node
//! process (dropping the handle closes its stdin the same way).

use serde_json::json;
use testnet::refpds::RefPds;

#[tokio::test]
async fn reference_pds_starts_creates_accounts_writes_and_stops() {
    let net = RefPds::start().await;
    let alice = net.create_account("alice").await;
    assert!(alice.did.starts_with("did:plc:"), "{}", alice.did);
    let app_pw = net.create_app_password(&alice, "parity").await;
    // An app password opens a session like the main password.
    let (status, body) = net
        .post(
            "com.atproto.server.createSession",
            None,
            &json!({"identifier": alice.handle, "password": app_pw}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["did"], alice.did.as_str());

    // The PLC directory serves the account's DID document naming this PDS.
    let doc = reqwest::get(format!("{}/{}", net.plc, alice.did))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(doc["service"][0]["serviceEndpoint"], net.pds.as_str());

    let out = net
        .apply_writes(
            &alice,
            json!([{"$type": "com.atproto.repo.applyWrites#create",
                    "collection": "app.bsky.feed.post", "rkey": "3kaaaaaaaaaa2",
                    "value": {"$type": "app.bsky.feed.post", "text": "hi", "createdAt": "2026-12-01T00:00:00Z"}}]),
        )
        .await;
    let rec = net
        .get_record(&alice.did, "app.bsky.feed.post", "3kaaaaaaaaaa2")
        .await
        .expect("record written");
    assert_eq!(rec["value"]["text"], "hi");
    assert_eq!(
        out["commit"]["rev"],
        net.latest_commit(&alice.did).await.1.as_str()
    );
    assert_eq!(
        net.list_records(&alice.did, "app.bsky.feed.post")
            .await
            .len(),
        1
    );
    assert!(
        net.get_record(&alice.did, "app.bsky.feed.post", "3kaaaaaaaaaa3")
            .await
            .is_none()
    );

    let pds = net.pds.clone();
    assert!(net.stop().await, "the node process exits cleanly");
    assert!(
        reqwest::get(format!("{pds}/xrpc/_health")).await.is_err(),
        "the reference PDS still answers after stop"
    );
}
