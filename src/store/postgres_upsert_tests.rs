//! Which shape a step's rows take. The plans of both shapes are checked in
//! `postgres_plan_tests.rs`; what the guards refuse, on both backends, by
//! the commit tests (`commit/tests.rs`).

use serde_json::value::RawValue;

use super::{MAX_PAIRS, pairs_of};
use crate::event::Did;
use crate::mapper::builtin::Builtin;
use crate::mapper::{Row, TableId, Value};

/// A like row of `did` whose URI names `uri_did` and `collection`.
pub(in crate::store) fn like(did: &str, uri_did: &str, collection: &str, rkey: &str) -> Row {
    Row {
        table: TableId(0),
        uri: format!("at://{uri_did}/{collection}/{rkey}"),
        did: Did::parse(did).unwrap(),
        rkey: rkey.into(),
        cid: format!("cid-{rkey}"),
        rev: "3m".into(),
        record: RawValue::from_string("{}".into()).unwrap(),
        values: vec![Value::Null; Builtin::Likes.schema().columns.len()],
    }
}

const A: &str = "did:plc:aaaa";
const B: &str = "did:plc:bbbb";
const LIKE: &str = "app.bsky.feed.like";

#[test]
fn rows_of_a_few_repos_collections_share_a_shape_and_others_do_not() {
    let pairs = |rows: &[Row]| {
        let refs: Vec<&Row> = rows.iter().collect();
        pairs_of(&refs).map(|p| {
            p.into_iter()
                .map(|(d, c)| (d.to_owned(), c.to_owned()))
                .collect::<Vec<_>>()
        })
    };
    let own = |d: &str, c: &str| (d.to_owned(), c.to_owned());
    let one = [like(A, A, LIKE, "3k1"), like(A, A, LIKE, "3k2")];
    assert_eq!(pairs(&one), Some(vec![own(A, LIKE)]));

    let repost = "app.bsky.feed.repost";
    let several = [
        like(A, A, LIKE, "3k1"),
        like(B, B, LIKE, "3k2"),
        like(A, A, repost, "3k3"),
        like(A, A, LIKE, "3k4"),
        // The same text as a prefix, but another collection.
        like(A, A, "app.bsky.feed.likes", "3k5"),
    ];
    assert_eq!(
        pairs(&several),
        Some(vec![
            own(A, LIKE),
            own(B, LIKE),
            own(A, repost),
            own(A, "app.bsky.feed.likes")
        ])
    );

    // A row whose URI names another repo than its DID: the tombstone range
    // asked per pair would not cover it.
    let elsewhere = [like(A, A, LIKE, "3k1"), like(A, B, LIKE, "3k2")];
    assert_eq!(pairs(&elsewhere), None);
    assert_eq!(pairs(&[]), None);

    let many: Vec<Row> = (0..=MAX_PAIRS)
        .map(|i| {
            let did = format!("did:plc:r{i:04}");
            like(&did, &did, LIKE, "3k1")
        })
        .collect();
    assert_eq!(pairs(&many[..MAX_PAIRS]).map(|p| p.len()), Some(MAX_PAIRS));
    assert_eq!(pairs(&many), None, "more pairs than a statement asks once");
}
