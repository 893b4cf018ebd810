//! The local relay's listing, proven against the reference PDS's recorded
//! `listRepos` page (`xrpc/rsky-ts-pds-0.5.27/listRepos.json`: the same
//! accounts served back in the same shape) and the lexicons' limits.

use serde_json::{Value, json};
use testnet::fixture;
use testnet::relay::{LIST_REPOS, LIST_REPOS_BY_COLLECTION, Relay, RelayFault};

async fn get(relay: &Relay, method: &str, params: &[(&str, &str)]) -> (u16, Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut u = url::Url::parse(&format!("{}/xrpc/{method}", relay.url())).unwrap();
    u.query_pairs_mut().extend_pairs(params);
    let r = reqwest::get(u.as_str()).await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap())
}

/// The recorded page's four accounts, added as the relay lists them.
fn recorded() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(fixture("xrpc/rsky-ts-pds-0.5.27/listRepos.json")).unwrap(),
    )
    .unwrap()
}

fn relay_of(rec: &Value, relay: &Relay) {
    for r in rec["repos"].as_array().unwrap() {
        relay.add_repo(
            r["did"].as_str().unwrap(),
            r["head"].as_str().unwrap(),
            r["rev"].as_str().unwrap(),
            r["active"].as_bool().unwrap(),
            r["status"].as_str(),
            &["app.bsky.feed.post".to_owned()],
        );
    }
}

#[tokio::test]
async fn list_repos_answers_the_reference_shape() {
    let rec = recorded();
    let relay = Relay::start().await;
    relay_of(&rec, &relay);
    relay.set_cursor_on_every_page(true);
    let (status, page) = get(&relay, LIST_REPOS, &[]).await;
    assert_eq!(status, 200);
    // Same entries, fields and values as the reference PDS (the cursor is
    // opaque and differs).
    assert_eq!(page["repos"], rec["repos"]);
    let cursor = page["cursor"].as_str().unwrap().to_owned();
    let (_, end) = get(&relay, LIST_REPOS, &[("cursor", &cursor)]).await;
    assert_eq!(end, json!({"repos": []}));
}

#[tokio::test]
async fn pages_follow_the_cursor_and_limits_are_checked() {
    let rec = recorded();
    let relay = Relay::start().await;
    relay_of(&rec, &relay);
    // indigo's way: a cursor only on full pages.
    let (_, p1) = get(&relay, LIST_REPOS, &[("limit", "3")]).await;
    assert_eq!(p1["repos"].as_array().unwrap().len(), 3);
    let c = p1["cursor"].as_str().unwrap().to_owned();
    let (_, p2) = get(&relay, LIST_REPOS, &[("limit", "3"), ("cursor", &c)]).await;
    assert_eq!(p2["repos"][0], rec["repos"][3]);
    assert!(p2.get("cursor").is_none(), "{p2}");
    relay.set_max_page(1);
    let (_, capped) = get(&relay, LIST_REPOS, &[("limit", "1000")]).await;
    assert_eq!(capped["repos"].as_array().unwrap().len(), 1);

    for (method, bad) in [(LIST_REPOS, "1001"), (LIST_REPOS_BY_COLLECTION, "2001")] {
        let (status, e) = get(
            &relay,
            method,
            &[("limit", bad), ("collection", "app.bsky.feed.post")],
        )
        .await;
        assert_eq!((status, e["error"].as_str()), (400, Some("InvalidRequest")));
    }
    let (status, _) = get(&relay, LIST_REPOS_BY_COLLECTION, &[]).await;
    assert_eq!(status, 400);

    // By collection: only active repos with the collection, `{did}` only.
    relay.set_max_page(100);
    let (_, by) = get(
        &relay,
        LIST_REPOS_BY_COLLECTION,
        &[("collection", "app.bsky.feed.post")],
    )
    .await;
    assert_eq!(
        by["repos"],
        json!([{"did": rec["repos"][0]["did"]}, {"did": rec["repos"][3]["did"]}])
    );
    assert_eq!(relay.count(), 7);
}

#[tokio::test]
async fn faults_replace_answers_in_order() {
    let relay = Relay::start().await;
    relay.add_raw(json!({"did": 5}), &[]);
    relay.inject(
        LIST_REPOS,
        vec![
            RelayFault::Status(502),
            RelayFault::Pass,
            RelayFault::WithCursor(json!("again")),
        ],
    );
    assert_eq!(get(&relay, LIST_REPOS, &[]).await.0, 502);
    assert_eq!(
        get(&relay, LIST_REPOS, &[]).await.1,
        json!({"repos": [{"did": 5}]})
    );
    assert_eq!(get(&relay, LIST_REPOS, &[]).await.1["cursor"], "again");
    let statuses: Vec<u16> = relay.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [502, 200, 200]);
}
