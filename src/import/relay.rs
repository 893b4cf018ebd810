//! One page of a relay's repository listing, read defensively: the relay
//! side of `parity import --all`.
//!
//! Owns: the two XRPC methods (`com.atproto.sync.listRepos`, up to 1,000
//! repos a page, and `com.atproto.sync.listReposByCollection`, up to 2,000),
//! their parameters, and turning an answer into the DIDs to queue. Relay
//! data is hostile: an entry that is not an object with a valid DID, or
//! whose `active` is not a boolean, is counted as malformed and skipped
//! (logged with bounded fields); an inactive repo (`active: false`) is
//! counted and skipped; entries beyond the page size asked for are
//! malformed too (a page cannot queue unbounded work). A cursor over
//! [`MAX_CURSOR_BYTES`], with control characters, not a string, or one this
//! listing already gave (a cycle) stops the listing, before it is stored
//! or sent back. Does not own pacing and retries (`xrpc`) or saving
//! (`listing`).

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::Value;

use crate::event::Did;
use crate::obs::Escaped;

/// `com.atproto.sync.listRepos`.
pub const LIST_REPOS: &str = "com.atproto.sync.listRepos";
/// `com.atproto.sync.listReposByCollection`.
pub const LIST_REPOS_BY_COLLECTION: &str = "com.atproto.sync.listReposByCollection";
/// The largest `limit` listRepos accepts (its lexicon's maximum).
pub const LIST_REPOS_LIMIT: usize = 1_000;
/// The largest `limit` listReposByCollection accepts.
pub const BY_COLLECTION_LIMIT: usize = 2_000;
/// Longest relay cursor accepted. Real ones are a number or a short
/// `time::did` key.
pub const MAX_CURSOR_BYTES: usize = 1_024;
/// Malformed entries logged one by one per page; the rest are counted.
const LOGGED_PER_PAGE: usize = 5;

/// The listing a collection name stands for: `*` is listRepos.
pub fn method_of(collection: &str) -> (&'static str, usize) {
    if collection == "*" {
        (LIST_REPOS, LIST_REPOS_LIMIT)
    } else {
        (LIST_REPOS_BY_COLLECTION, BY_COLLECTION_LIMIT)
    }
}

/// A page as it arrives: `repos` must be an array (else the answer is not
/// the expected JSON, retried like a cut-off body); entries and the cursor
/// are checked one by one.
#[derive(Debug, Deserialize)]
pub struct RawPage {
    #[serde(default)]
    pub cursor: Option<Value>,
    pub repos: Vec<Value>,
}

/// What one page queues and counts.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RelayPage {
    /// Valid, active DIDs, in listed order, without repeats.
    pub dids: Vec<String>,
    pub listed: u64,
    pub inactive: u64,
    pub malformed: u64,
    /// The next page's cursor; `None` ends the listing.
    pub next: Option<String>,
}

/// Why a listing stopped at a page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    #[error(
        "the relay returned an invalid cursor (not a string, over {MAX_CURSOR_BYTES} bytes or with control characters): listing stopped"
    )]
    BadCursor,
    #[error("the relay returned a cursor it had already given (a cycle): listing stopped")]
    RepeatedCursor,
}

/// Reads one page asked with `limit`. `seen`: the cursors this listing
/// has followed so far.
pub fn read_page(
    raw: RawPage,
    limit: usize,
    seen: &HashSet<String>,
) -> Result<RelayPage, PageError> {
    let mut page = RelayPage {
        listed: raw.repos.len() as u64,
        ..RelayPage::default()
    };
    let empty = raw.repos.is_empty();
    let mut in_page: HashSet<&str> = HashSet::new();
    let mut logged = 0usize;
    for (i, entry) in raw.repos.iter().enumerate() {
        let verdict = if i >= limit {
            Err("more entries than the page size asked for")
        } else {
            judge(entry)
        };
        match verdict {
            Ok(Some(did)) => {
                if in_page.insert(did) {
                    page.dids.push(did.to_owned());
                }
            }
            Ok(None) => page.inactive += 1,
            Err(reason) => {
                page.malformed += 1;
                if logged < LOGGED_PER_PAGE {
                    logged += 1;
                    let shown: String = entry.to_string().chars().take(120).collect();
                    tracing::warn!(reason, entry = %Escaped(&shown), "relay listed a malformed repo entry; skipped");
                }
            }
        }
    }
    page.next = match raw.cursor {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) if c.is_empty() => None,
        Some(Value::String(c)) => {
            if c.len() > MAX_CURSOR_BYTES || c.chars().any(char::is_control) {
                return Err(PageError::BadCursor);
            }
            if seen.contains(&c) {
                return Err(PageError::RepeatedCursor);
            }
            Some(c)
        }
        Some(_) => return Err(PageError::BadCursor),
    };
    if empty {
        page.next = None;
    }
    Ok(page)
}

/// One entry: `Ok(Some(did))` to queue, `Ok(None)` inactive, `Err` why it
/// is malformed.
fn judge(entry: &Value) -> Result<Option<&str>, &'static str> {
    let Some(obj) = entry.as_object() else {
        return Err("not an object");
    };
    let did = match obj.get("did") {
        Some(Value::String(d)) => d.as_str(),
        Some(_) => return Err("did is not a string"),
        None => return Err("no did"),
    };
    if Did::parse(did).is_none() {
        return Err("not a valid DID");
    }
    match obj.get("active") {
        None | Some(Value::Bool(true)) => Ok(Some(did)),
        Some(Value::Bool(false)) => Ok(None),
        Some(_) => Err("active is not a boolean"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(v: Value) -> RawPage {
        serde_json::from_value(v).unwrap()
    }

    /// The reference PDS's listRepos page (recorded): two active repos,
    /// one deactivated, one taken down.
    #[test]
    fn a_recorded_page_queues_the_active_repos() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/xrpc/rsky-ts-pds-0.5.27/listRepos.json"
        ))
        .unwrap();
        let page = read_page(serde_json::from_str(&text).unwrap(), 1000, &HashSet::new()).unwrap();
        assert_eq!(
            page.dids,
            [
                "did:plc:xnu5z7akmky27sltgn7hbneu",
                "did:plc:4jga5jladekhy5csoe62kfkm"
            ]
        );
        assert_eq!((page.listed, page.inactive, page.malformed), (4, 2, 0));
        assert_eq!(
            page.next.as_deref(),
            Some("1789132177002::did:plc:4jga5jladekhy5csoe62kfkm")
        );
    }

    /// A real bsky.social listRepos page: 99 repos without an `active`
    /// field (active) are queued in order, the suspended one is not.
    #[test]
    fn a_real_page_queues_all_but_its_suspended_repo() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/xrpc/atprotodart_com.atproto.sync.listRepos.json"
        ))
        .unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        let page = read_page(
            serde_json::from_value(v.clone()).unwrap(),
            1000,
            &HashSet::new(),
        )
        .unwrap();
        assert_eq!(page.dids.len(), 99);
        assert_eq!(page.dids[0], v["repos"][0]["did"].as_str().unwrap());
        assert_eq!(v["repos"][99]["status"], "suspended");
        assert!(
            !page
                .dids
                .iter()
                .any(|d| d == v["repos"][99]["did"].as_str().unwrap())
        );
        assert_eq!((page.listed, page.inactive, page.malformed), (100, 1, 0));
        assert_eq!(page.next.as_deref(), v["cursor"].as_str());
    }

    #[test]
    fn malformed_entries_are_counted_and_skipped() {
        let long = format!("did:plc:{}", "a".repeat(3000));
        let page = read_page(
            raw(json!({
                "cursor": "7",
                "repos": [
                    {"did": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"},
                    "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb",
                    {"did": 12},
                    {"head": "x"},
                    {"did": "did:plc:UPPER CASE"},
                    {"did": long},
                    {"did": "did:plc:cccccccccccccccccccccccc", "active": "yes"},
                    {"did": "did:plc:dddddddddddddddddddddddd", "active": false, "status": "takendown"},
                    {"did": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"},
                    {"did": "did:web:example.com", "active": true},
                ]
            })),
            1000,
            &HashSet::new(),
        )
        .unwrap();
        assert_eq!(
            page.dids,
            ["did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "did:web:example.com"]
        );
        assert_eq!((page.listed, page.inactive, page.malformed), (10, 1, 6));
        assert_eq!(page.next.as_deref(), Some("7"));
    }

    #[test]
    fn entries_past_the_limit_are_not_queued() {
        let repos: Vec<Value> = (0..5)
            .map(|i| json!({"did": format!("did:plc:{i:024}")}))
            .collect();
        let page = read_page(
            raw(json!({"cursor": "x", "repos": repos})),
            3,
            &HashSet::new(),
        )
        .unwrap();
        assert_eq!(page.dids.len(), 3);
        assert_eq!(page.malformed, 2);
    }

    #[test]
    fn cursors_are_bounded_and_cycles_stop() {
        let one = || json!([{"did": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"}]);
        let read = |c: Value, seen: &HashSet<String>| {
            read_page(raw(json!({"cursor": c, "repos": one()})), 10, seen)
        };
        let none = HashSet::new();
        assert_eq!(
            read(json!("x".repeat(MAX_CURSOR_BYTES + 1)), &none),
            Err(PageError::BadCursor)
        );
        assert_eq!(read(json!("a\u{0}b"), &none), Err(PageError::BadCursor));
        assert_eq!(read(json!(17), &none), Err(PageError::BadCursor));
        let seen: HashSet<String> = ["abc".to_owned()].into();
        assert_eq!(read(json!("abc"), &seen), Err(PageError::RepeatedCursor));
        assert_eq!(read(json!(""), &none).unwrap().next, None);
        assert_eq!(read(Value::Null, &none).unwrap().next, None);
        // An empty page ends the listing whatever its cursor.
        let empty = read_page(
            raw(json!({"cursor": "more", "repos": []})),
            10,
            &HashSet::new(),
        )
        .unwrap();
        assert_eq!(empty.next, None);
    }

    #[test]
    fn a_page_without_a_repos_array_is_not_a_page() {
        assert!(serde_json::from_value::<RawPage>(json!({"cursor": "1"})).is_err());
        assert!(serde_json::from_value::<RawPage>(json!({"repos": {"did": "x"}})).is_err());
    }
}
