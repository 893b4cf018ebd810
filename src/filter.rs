//! Pure event filtering: which events reach the mappers.
//!
//! Owns: collection patterns (exact NSIDs, `prefix.*` and `*`), the DID
//! allow- and deny-lists and the operation set. Does not own: reading DID
//! files (config does that) or the cursor: an event the filter rejects still
//! advances the cursor, because the pipeline passes it on as "seen".
//!
//! Identity and account events carry no collection, so only the DID lists
//! apply to them.

use std::collections::HashSet;
use std::fmt;

use crate::event::{CommitOp, Did, Event, EventKind};

/// A collection selector: `app.bsky.feed.post`, `app.bsky.feed.*` or `*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CollectionPattern {
    /// Every collection.
    All,
    /// Exactly this NSID.
    Exact(String),
    /// Every NSID that starts with this prefix followed by a dot
    /// (stored without the trailing `.*`).
    Prefix(String),
}

impl CollectionPattern {
    /// Parses `*`, `prefix.*` (prefix with at least two segments, as
    /// Jetstream requires) or an exact NSID. Returns a message fit for a
    /// one-line config error otherwise.
    pub fn parse(s: &str) -> Result<CollectionPattern, String> {
        let s = s.trim();
        if s == "*" {
            return Ok(CollectionPattern::All);
        }
        let segment_ok = |seg: &str| {
            !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if let Some(prefix) = s.strip_suffix(".*") {
            if prefix.split('.').count() >= 2 && prefix.split('.').all(segment_ok) {
                return Ok(CollectionPattern::Prefix(prefix.to_owned()));
            }
            return Err(format!(
                "invalid collection pattern {s:?}: a wildcard must be a whole NSID prefix such as app.bsky.*"
            ));
        }
        if crate::event::Nsid::parse(s).is_some() {
            Ok(CollectionPattern::Exact(s.to_owned()))
        } else {
            Err(format!(
                "invalid collection {s:?}: expected an NSID such as app.bsky.feed.post, a prefix such as app.bsky.*, or *"
            ))
        }
    }

    pub fn matches(&self, nsid: &str) -> bool {
        match self {
            CollectionPattern::All => true,
            CollectionPattern::Exact(n) => n == nsid,
            CollectionPattern::Prefix(p) => {
                nsid.len() > p.len() + 1
                    && nsid.starts_with(p.as_str())
                    && nsid.as_bytes()[p.len()] == b'.'
            }
        }
    }
}

impl fmt::Display for CollectionPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CollectionPattern::All => f.write_str("*"),
            CollectionPattern::Exact(n) => f.write_str(n),
            CollectionPattern::Prefix(p) => write!(f, "{p}.*"),
        }
    }
}

/// Whether any pattern in the list matches.
pub fn any_matches(patterns: &[CollectionPattern], nsid: &str) -> bool {
    patterns.iter().any(|p| p.matches(nsid))
}

/// The filter applied to every decoded event.
#[derive(Debug, Clone)]
pub struct Filter {
    collections: Vec<CollectionPattern>,
    allow: Option<HashSet<Did>>,
    deny: HashSet<Did>,
    create: bool,
    update: bool,
    delete: bool,
}

impl Filter {
    /// `collections` empty means every collection; `allow` `None` means every
    /// DID; `ops` lists the commit operations to keep.
    pub fn new(
        collections: Vec<CollectionPattern>,
        allow: Option<HashSet<Did>>,
        deny: HashSet<Did>,
        ops: &[CommitOp],
    ) -> Filter {
        Filter {
            collections,
            allow,
            deny,
            create: ops.contains(&CommitOp::Create),
            update: ops.contains(&CommitOp::Update),
            delete: ops.contains(&CommitOp::Delete),
        }
    }

    /// A filter that keeps everything.
    pub fn all() -> Filter {
        Filter::new(
            Vec::new(),
            None,
            HashSet::new(),
            &[CommitOp::Create, CommitOp::Update, CommitOp::Delete],
        )
    }

    /// The collection patterns, for pushing to the server.
    pub fn collections(&self) -> &[CollectionPattern] {
        &self.collections
    }

    /// The allow-list, if any, for pushing to the server.
    pub fn allowed_dids(&self) -> Option<&HashSet<Did>> {
        self.allow.as_ref()
    }

    fn did_ok(&self, did: &Did) -> bool {
        !self.deny.contains(did) && self.allow.as_ref().is_none_or(|a| a.contains(did))
    }

    /// Whether the event goes on to the mappers.
    pub fn accepts(&self, event: &Event) -> bool {
        if !self.did_ok(&event.did) {
            return false;
        }
        match &event.kind {
            EventKind::Commit(c) => {
                let op_ok = match c.op {
                    CommitOp::Create => self.create,
                    CommitOp::Update => self.update,
                    CommitOp::Delete => self.delete,
                };
                op_ok
                    && (self.collections.is_empty()
                        || any_matches(&self.collections, c.collection.as_str()))
            }
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Commit, Cursor, Nsid, RecordKey};

    fn commit(did: &str, nsid: &str, op: CommitOp) -> Event {
        Event {
            cursor: Cursor(1),
            time_us: 1,
            did: Did::parse(did).unwrap(),
            kind: EventKind::Commit(Commit {
                collection: Nsid::parse(nsid).unwrap(),
                rkey: RecordKey::parse("k").unwrap(),
                rev: "r".into(),
                op,
                cid: None,
                record: None,
            }),
        }
    }

    #[test]
    fn patterns() {
        let p = CollectionPattern::parse("app.bsky.*").unwrap();
        assert!(p.matches("app.bsky.feed.post"));
        assert!(!p.matches("app.bskyx.feed.post"));
        assert!(!p.matches("app.bsky"));
        assert!(CollectionPattern::parse("*").unwrap().matches("x.y.z"));
        assert!(CollectionPattern::parse("app.bsky.graph.fo*").is_err());
        assert!(CollectionPattern::parse("app.*").is_err());
        assert!(CollectionPattern::parse("nope").is_err());
        assert_eq!(
            CollectionPattern::parse("app.bsky.*").unwrap().to_string(),
            "app.bsky.*"
        );
    }

    #[test]
    fn collections_dids_and_ops() {
        let allow: HashSet<Did> = [
            Did::parse("did:plc:a").unwrap(),
            Did::parse("did:plc:b").unwrap(),
        ]
        .into();
        let deny: HashSet<Did> = [Did::parse("did:plc:b").unwrap()].into();
        let f = Filter::new(
            vec![CollectionPattern::parse("app.bsky.feed.*").unwrap()],
            Some(allow),
            deny,
            &[CommitOp::Create, CommitOp::Delete],
        );
        assert!(f.accepts(&commit("did:plc:a", "app.bsky.feed.post", CommitOp::Create)));
        assert!(!f.accepts(&commit("did:plc:a", "app.bsky.feed.post", CommitOp::Update)));
        assert!(!f.accepts(&commit(
            "did:plc:a",
            "app.bsky.graph.follow",
            CommitOp::Create
        )));
        assert!(!f.accepts(&commit("did:plc:b", "app.bsky.feed.post", CommitOp::Create)));
        assert!(!f.accepts(&commit("did:plc:c", "app.bsky.feed.post", CommitOp::Create)));
        let ident = Event {
            cursor: Cursor(1),
            time_us: 1,
            did: Did::parse("did:plc:a").unwrap(),
            kind: EventKind::Identity { handle: None },
        };
        assert!(f.accepts(&ident));
        assert!(Filter::all().accepts(&commit("did:plc:z", "x.y.z", CommitOp::Update)));
    }
}
