//! Domain types shared by every stage: cursors, identifiers and the decoded
//! [`Event`].
//!
//! Owns: the in-memory shape of one upstream event, whatever wire format it
//! came from. Does not own: decoding (see `source::*`) or what an event means
//! for a table (see `mapper`). No IO happens here.
//!
//! Invariants: a commit's `record` is kept as raw JSON (atproto data-model
//! JSON, exactly as Jetstream sends it) until a mapper parses it, so the JSON
//! is never re-serialised on the hot path.

use std::fmt;

use serde_json::value::RawValue;

/// An opaque position in one upstream stream (`time_us` for Jetstream v1,
/// `seq` for the firehose and Jetstream v2). Ordered, copyable, never negative
/// once stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor(pub i64);

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A DID (`did:plc:…`, `did:web:…`), checked for the `did:` prefix only.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Did(String);

impl Did {
    /// Accepts `did:<method>:<id>` with a lowercase method and a non-empty id.
    pub fn parse(s: &str) -> Option<Did> {
        let rest = s.strip_prefix("did:")?;
        let (method, id) = rest.split_once(':')?;
        let ok = !method.is_empty()
            && method.bytes().all(|b| b.is_ascii_lowercase())
            && !id.is_empty()
            && s.len() <= 2048
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:%-".contains(&b))
            && !id.ends_with(':')
            && !id.ends_with('%');
        ok.then(|| Did(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Did {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `s` is a TID (atproto `specs/tid`): 13 characters of
/// base32-sortable (`234567abcdefghijklmnopqrstuvwxyz`), the first in
/// `234567abcdefghij` (the top bit is 0). Commit revs are TIDs, and TIDs
/// compare in time order as strings, which the rev guards rely on.
pub fn is_tid(s: &str) -> bool {
    const ALPHABET: &[u8] = b"234567abcdefghijklmnopqrstuvwxyz";
    let b = s.as_bytes();
    b.len() == 13 && b"234567abcdefghij".contains(&b[0]) && b.iter().all(|c| ALPHABET.contains(c))
}

/// Longest CID text accepted. A sha-256 CIDv1 in base32 is 59 characters;
/// the slack allows other hashes without letting anyone's text through.
pub const MAX_CID_LEN: usize = 256;

/// Whether `s` is the text form of a CID (v0 base58 or multibase v1) that
/// parses.
pub fn is_cid(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_CID_LEN && cid::Cid::try_from(s).is_ok()
}

/// Handle syntax (atproto `specs/handle`): at least two labels of
/// `[a-zA-Z0-9-]`, not starting or ending with `-`, a TLD that does not
/// start with a digit, at most 253 characters. `handle.invalid` passes (it
/// means "unverified").
pub fn is_handle(h: &str) -> bool {
    let labels: Vec<&str> = h.split('.').collect();
    h.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && !labels
            .last()
            .is_some_and(|t| t.starts_with(|c: char| c.is_ascii_digit()))
}

/// A collection NSID such as `app.bsky.feed.post`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nsid(String);

impl Nsid {
    /// Accepts dot-separated segments (at least three), ASCII letters,
    /// digits and hyphens, at most 317 characters: the atproto NSID syntax,
    /// loosely (the name segment may not contain hyphens upstream; we accept
    /// what the network sends and only guard against garbage).
    pub fn parse(s: &str) -> Option<Nsid> {
        let ok = s.len() <= 317
            && s.split('.').count() >= 3
            && s.split('.').all(|seg| {
                !seg.is_empty()
                    && seg.len() <= 63
                    && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        ok.then(|| Nsid(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Nsid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A record key (TID or any atproto record key).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordKey(String);

impl RecordKey {
    /// atproto record-key syntax: 1–512 chars of `A-Za-z0-9._:~-`, not `.` or `..`.
    pub fn parse(s: &str) -> Option<RecordKey> {
        let ok = !s.is_empty()
            && s.len() <= 512
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:~-".contains(&b));
        ok.then(|| RecordKey(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a commit operation does to one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommitOp {
    Create,
    Update,
    Delete,
}

impl CommitOp {
    pub fn parse(s: &str) -> Option<CommitOp> {
        match s {
            "create" => Some(CommitOp::Create),
            "update" => Some(CommitOp::Update),
            "delete" => Some(CommitOp::Delete),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CommitOp::Create => "create",
            CommitOp::Update => "update",
            CommitOp::Delete => "delete",
        }
    }
}

/// One record operation of a repo commit.
#[derive(Debug, Clone)]
pub struct Commit {
    pub collection: Nsid,
    pub rkey: RecordKey,
    /// The commit's revision (a TID); string order is time order.
    pub rev: String,
    pub op: CommitOp,
    /// The record's CID; `None` for deletes.
    pub cid: Option<String>,
    /// The record as atproto JSON; `None` for deletes.
    pub record: Option<Box<RawValue>>,
}

impl PartialEq for Commit {
    fn eq(&self, o: &Commit) -> bool {
        self.collection == o.collection
            && self.rkey == o.rkey
            && self.rev == o.rev
            && self.op == o.op
            && self.cid == o.cid
            && self.record.as_ref().map(|r| r.get()) == o.record.as_ref().map(|r| r.get())
    }
}

impl Commit {
    /// `at://DID/COLLECTION/RKEY`
    pub fn uri(&self, did: &Did) -> String {
        format!("at://{}/{}/{}", did, self.collection, self.rkey)
    }
}

/// Account status values sent with `#account` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccountStatus {
    Active,
    Takendown,
    Suspended,
    Deleted,
    Deactivated,
    Desynchronized,
    Throttled,
    /// A status this version does not know; recorded as `unknown`.
    Other,
}

impl AccountStatus {
    pub fn parse(s: &str) -> AccountStatus {
        match s {
            "active" => AccountStatus::Active,
            "takendown" => AccountStatus::Takendown,
            "suspended" => AccountStatus::Suspended,
            "deleted" => AccountStatus::Deleted,
            "deactivated" => AccountStatus::Deactivated,
            "desynchronized" => AccountStatus::Desynchronized,
            "throttled" => AccountStatus::Throttled,
            _ => AccountStatus::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Takendown => "takendown",
            AccountStatus::Suspended => "suspended",
            AccountStatus::Deleted => "deleted",
            AccountStatus::Deactivated => "deactivated",
            AccountStatus::Desynchronized => "desynchronized",
            AccountStatus::Throttled => "throttled",
            AccountStatus::Other => "unknown",
        }
    }
}

/// What happened, by kind.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    Commit(Commit),
    /// The DID's handle (or DID document) changed.
    Identity {
        handle: Option<String>,
    },
    /// The account's hosting status changed.
    Account {
        active: bool,
        status: Option<AccountStatus>,
    },
    /// The repo was reset: the DID needs a full re-import.
    Sync {
        rev: String,
    },
    /// Informational message from upstream (e.g. `OutdatedCursor`).
    Info {
        name: String,
    },
    /// Nothing to apply (a stale or fully invalid commit), but the stream
    /// position still moves past it.
    Skip,
}

impl EventKind {
    /// A bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            EventKind::Commit(_) => "commit",
            EventKind::Identity { .. } => "identity",
            EventKind::Account { .. } => "account",
            EventKind::Sync { .. } => "sync",
            EventKind::Info { .. } => "info",
            EventKind::Skip => "skip",
        }
    }
}

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
        if Nsid::parse(s).is_some() {
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

/// One decoded upstream event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Where this event sits in its stream.
    pub cursor: Cursor,
    /// When upstream saw the event, in µs since the epoch (for lag).
    pub time_us: i64,
    pub did: Did,
    pub kind: EventKind,
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn did_syntax() {
        assert!(Did::parse("did:plc:wlnukjmqlxmtguqls4pmmgzq").is_some());
        assert!(Did::parse("did:web:example.com").is_some());
        assert!(Did::parse("did:web:localhost%3A8080").is_some());
        for bad in [
            "",
            "did:",
            "did:plc:",
            "plc:abc",
            "did:PLC:abc",
            "did:plc:a b",
            "*",
        ] {
            assert!(Did::parse(bad).is_none(), "{bad} accepted");
        }
    }

    #[test]
    fn tid_cid_and_handle_syntax() {
        assert!(is_tid("3mptbypqos22u"));
        assert!(is_tid("2222222222222"));
        for bad in [
            "",
            "3mpt",
            "3mptbypqos22uu",
            "kmptbypqos22u",
            "3mptbypqos21u",
            "3MPTBYPQOS22U",
            "3mptbypq\0s22u",
        ] {
            assert!(!is_tid(bad), "{bad:?} accepted");
        }
        assert!(is_cid(
            "bafyreifesp3rrl2hz4jqsphhmonn22uqczzaswkxyodbnptgldfdbefvny"
        ));
        assert!(is_cid("QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n"));
        for bad in [
            "",
            "bafyc1",
            "bafy\0",
            "not a cid",
            &"b".repeat(MAX_CID_LEN + 1),
        ] {
            assert!(!is_cid(bad), "{bad:?} accepted");
        }
        assert!(is_handle("alice.bsky.social"));
        assert!(is_handle("handle.invalid"));
        assert!(is_handle("xn--ls8h.test"));
        for bad in [
            "alice",
            "-a.test",
            "a.1test",
            "a..test",
            "al ice.test",
            "evil\0.bsky.social",
            &format!("{}.test", "a".repeat(250)),
        ] {
            assert!(!is_handle(bad), "{bad:?} accepted");
        }
    }

    #[test]
    fn nsid_and_rkey_syntax() {
        assert!(Nsid::parse("app.bsky.feed.post").is_some());
        assert!(Nsid::parse("app.bsky").is_none());
        assert!(Nsid::parse("app..bsky.post").is_none());
        assert!(RecordKey::parse("3mptbypqkv22u").is_some());
        assert!(RecordKey::parse("self").is_some());
        assert!(RecordKey::parse("..").is_none());
        assert!(RecordKey::parse("a/b").is_none());
    }

    #[test]
    fn uri_is_at_did_collection_rkey() {
        let c = Commit {
            collection: Nsid::parse("app.bsky.feed.like").unwrap(),
            rkey: RecordKey::parse("3abc").unwrap(),
            rev: "3rev".into(),
            op: CommitOp::Delete,
            cid: None,
            record: None,
        };
        let did = Did::parse("did:plc:x").unwrap();
        assert_eq!(c.uri(&did), "at://did:plc:x/app.bsky.feed.like/3abc");
    }
}
