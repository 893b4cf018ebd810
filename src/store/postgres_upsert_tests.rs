//! Which shape a step's rows take. The plans of both shapes are checked in
//! `postgres_plan_tests.rs`; what the guards refuse, on both backends, by
//! the commit tests (`commit/tests.rs`).

use serde_json::value::RawValue;

use super::one_repo_collection;
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
fn rows_of_one_repo_and_collection_share_a_shape_and_others_do_not() {
    let one = [like(A, A, LIKE, "3k1"), like(A, A, LIKE, "3k2")];
    let refs: Vec<&Row> = one.iter().collect();
    assert_eq!(one_repo_collection(&refs), Some((A, LIKE)));

    let two_dids = [like(A, A, LIKE, "3k1"), like(B, B, LIKE, "3k2")];
    let two_collections = [
        like(A, A, LIKE, "3k1"),
        like(A, A, "app.bsky.feed.repost", "3k2"),
    ];
    // A row whose URI names another repo than its DID: the tombstone range
    // asked once would not cover it.
    let elsewhere = [like(A, A, LIKE, "3k1"), like(A, B, LIKE, "3k2")];
    // The same text, but not under the repo's collection as a path.
    let prefix = [
        like(A, A, LIKE, "3k1"),
        like(A, A, "app.bsky.feed.likes", "3k2"),
    ];
    for rows in [&two_dids, &two_collections, &elsewhere, &prefix] {
        let refs: Vec<&Row> = rows.iter().collect();
        assert_eq!(one_repo_collection(&refs), None, "{:?}", rows[1].uri);
    }
    assert_eq!(one_repo_collection(&[]), None);
}
