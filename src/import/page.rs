//! Turns one `listRecords` page into the [`Batch`] that commits it.
//!
//! Owns: checking that each listed record belongs to the repo and
//! collection being imported, mapping it through the same [`Registry`] as
//! live commits ([`Registry::map_listed`]), dropping a repeated URI within
//! the page, and the page's checkpoint (its cursor, failed count and lease
//! renewal). Pure: no IO; the job commits the batch.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use serde_json::value::RawValue;

use super::lease::Lease;
use crate::batch::{Batch, Checkpoint, ImportPage};
use crate::event::{Did, Nsid, RecordKey, is_cid};
use crate::mapper::{Dispatch, ListedRecord, Registry};

/// One `com.atproto.repo.listRecords` answer.
#[derive(Deserialize)]
pub struct Page {
    pub cursor: Option<String>,
    pub records: Vec<Listed>,
}

/// One record of a page.
#[derive(Debug, Clone, Deserialize)]
pub struct Listed {
    pub uri: String,
    pub cid: String,
    pub value: Box<RawValue>,
}

/// Where a page's records come from and where its checkpoint goes.
pub struct PageOf<'a> {
    pub did: &'a Did,
    pub collection: &'a Nsid,
    /// The repo rev the whole import is pinned at.
    pub rev: &'a str,
    /// The state row the page checkpoints.
    pub state_id: i64,
}

/// A mapped page, ready to commit.
pub struct MappedPage {
    pub batch: Batch,
    /// Rows offered to the store (one per distinct mapped URI).
    pub offered: u64,
    /// Records that did not belong here, had no mapper or did not fit it.
    pub failed: u64,
}

/// Maps one page through the registry, exactly as live commits are mapped.
/// `next` is the cursor of the page after this one (`None`: the last).
/// Borrows the records: a snapshot's stay where they are, not copied.
pub fn map<'r>(
    of: &PageOf<'_>,
    registry: &Registry,
    lease: &Lease,
    records: impl ExactSizeIterator<Item = &'r Listed>,
    next: Option<String>,
) -> MappedPage {
    let events = records.len();
    let mut mutations = Vec::with_capacity(events);
    let mut seen: HashSet<String> = HashSet::with_capacity(events);
    let mut failed = 0u64;
    for r in records {
        let Some(rkey) = record_key(&r.uri, of.did, of.collection) else {
            failed += 1;
            tracing::warn!(uri = ?truncate(&r.uri), "import: record URI does not belong to this repo and collection");
            continue;
        };
        if !is_cid(&r.cid) {
            failed += 1;
            tracing::warn!(uri = ?truncate(&r.uri), "import: record CID is not a CID; skipped");
            continue;
        }
        let listed = ListedRecord {
            did: of.did,
            collection: of.collection,
            rkey: &rkey,
            cid: &r.cid,
            rev: of.rev,
            record: &r.value,
        };
        match registry.map_listed(&listed) {
            Dispatch::Mutation(m) => {
                if seen.insert(m.uri().to_owned()) {
                    mutations.push(m);
                }
            }
            Dispatch::Failed { uri, error } => {
                failed += 1;
                tracing::warn!(uri = ?uri, error = %error, "import: record does not fit its mapper");
            }
            Dispatch::Unmapped => failed += 1,
        }
    }
    let offered = mutations.len() as u64;
    let batch = Batch {
        mutations,
        repos: HashMap::new(),
        last_time_us: 0,
        events,
        checkpoint: Checkpoint::ImportPage(ImportPage {
            state_id: of.state_id,
            owner: lease.owner().to_owned(),
            last: next.is_none(),
            cursor: next,
            rev: of.rev.to_owned(),
            failed,
            lease_until: crate::mapper::table::timestamp_text(&lease.until()),
            sweep: None,
        }),
    };
    MappedPage {
        batch,
        offered,
        failed,
    }
}

/// The rkey of `at://DID/COLLECTION/RKEY` if DID and collection match.
fn record_key(uri: &str, did: &Did, collection: &Nsid) -> Option<RecordKey> {
    let rest = uri.strip_prefix("at://")?;
    let (d, rest) = rest.split_once('/')?;
    let (c, rkey) = rest.split_once('/')?;
    (d == did.as_str() && c == collection.as_str())
        .then(|| RecordKey::parse(rkey))
        .flatten()
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(200) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::mapper::{Mutation, builtin};

    #[test]
    fn record_keys_must_match_repo_and_collection() {
        let did = Did::parse("did:plc:abc").unwrap();
        let c = Nsid::parse("app.bsky.feed.post").unwrap();
        assert_eq!(
            record_key("at://did:plc:abc/app.bsky.feed.post/3k2", &did, &c).map(|k| k.to_string()),
            Some("3k2".into())
        );
        assert!(record_key("at://did:plc:xyz/app.bsky.feed.post/3k2", &did, &c).is_none());
        assert!(record_key("at://did:plc:abc/app.bsky.feed.like/3k2", &did, &c).is_none());
        assert!(record_key("https://x/y", &did, &c).is_none());
    }

    const CID: &str = "bafyreifesp3rrl2hz4jqsphhmonn22uqczzaswkxyodbnptgldfdbefvny";

    fn listed(uri: &str, json: &str) -> Listed {
        Listed {
            uri: uri.into(),
            cid: CID.into(),
            value: RawValue::from_string(json.into()).unwrap(),
        }
    }

    #[test]
    fn a_page_maps_its_records_and_counts_the_rest_as_failed() {
        let mut reg = Registry::new();
        builtin::register_all(&mut reg, &builtin::ALL).unwrap();
        let did = Did::parse("did:plc:abc").unwrap();
        let col = Nsid::parse("app.bsky.feed.post").unwrap();
        let post = r#"{"text":"hi","createdAt":"2026-01-01T00:00:00Z"}"#;
        let lease = Lease::with_owner("h:1:0".into(), Duration::from_secs(60));
        let of = PageOf {
            did: &did,
            collection: &col,
            rev: "3rev",
            state_id: 7,
        };
        let page = map(
            &of,
            &reg,
            &lease,
            [
                listed("at://did:plc:abc/app.bsky.feed.post/1", post),
                listed("at://did:plc:abc/app.bsky.feed.post/1", post),
                listed("at://did:plc:other/app.bsky.feed.post/2", post),
                listed("at://did:plc:abc/app.bsky.feed.post/3", "{}"),
                Listed {
                    cid: "bafy\0".into(),
                    ..listed("at://did:plc:abc/app.bsky.feed.post/4", post)
                },
            ]
            .iter(),
            Some("next".into()),
        );
        assert_eq!((page.offered, page.failed), (1, 3));
        assert_eq!(page.batch.events, 5);
        let Mutation::Upsert(row) = &page.batch.mutations[0] else {
            panic!("an upsert")
        };
        assert_eq!(
            (row.uri.as_str(), row.rev.as_str(), row.cid.as_str()),
            ("at://did:plc:abc/app.bsky.feed.post/1", "3rev", CID)
        );
        let Checkpoint::ImportPage(cp) = &page.batch.checkpoint else {
            panic!("an import page checkpoint")
        };
        assert_eq!(
            (
                cp.state_id,
                cp.owner.as_str(),
                cp.cursor.as_deref(),
                cp.failed
            ),
            (7, "h:1:0", Some("next"), 3)
        );
    }
}
