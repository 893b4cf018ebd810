//! Jetstream v1 (`/subscribe`): JSON text frames, or the same JSON in
//! zstd frames made with the bundled dictionary (`compress=true`).
//!
//! Owns: the v1 JSON envelope (`did`, `time_us`, `kind`, `commit` /
//! `identity` / `account`) → [`Event`] ([`decode_v1`], pure), the commit
//! validation Jetstream v2 shares ([`commit_from`]), and the v1 [`Decoder`],
//! which holds the connection's zstd decompressor. Does not own: the socket
//! or the size limit (`formats::Decoder`), nor record contents (mappers).
//!
//! The envelope is deserialised into a borrowed struct and the record is kept
//! as a `&RawValue`, so the record JSON is copied once and never re-parsed
//! here (dependencies.md §7: fastest of the measured options for ~1 KB
//! messages).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::rev::valid_rev;
use super::{Dropped, Fault, Message, Output, inflate};
use crate::event::{
    AccountStatus, Commit, CommitOp, Cursor, Did, Event, EventKind, Nsid, RecordKey, is_cid,
    is_handle,
};
use crate::source::codecs::zstd_frames::FrameDecompressor;

/// Why a message could not be turned into an event. The caller drops the
/// message (as [`Dropped::Jetstream`]) and moves on; none of these is fatal.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or JSON of the wrong shape.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A field is present but not valid (bad DID, NSID, rkey, operation,
    /// rev that is not a TID, CID that does not parse, handle).
    #[error("invalid field {field}")]
    Invalid { field: &'static str },
    /// A `kind` this version does not know.
    #[error("unknown event kind")]
    UnknownKind,
}

impl DecodeError {
    /// Bounded metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Malformed(_) | DecodeError::Invalid { .. } => "malformed",
            DecodeError::UnknownKind => "unknown_type",
        }
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    did: Cow<'a, str>,
    time_us: i64,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    commit: Option<CommitJson<'a>>,
    #[serde(borrow)]
    identity: Option<IdentityJson<'a>>,
    #[serde(borrow)]
    account: Option<AccountJson<'a>>,
}

#[derive(Deserialize)]
pub(super) struct CommitJson<'a> {
    #[serde(borrow)]
    pub(super) rev: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) operation: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) collection: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) rkey: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) record: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) cid: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub(super) struct IdentityJson<'a> {
    #[serde(borrow)]
    pub(super) handle: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub(super) struct AccountJson<'a> {
    pub(super) active: bool,
    #[serde(borrow)]
    pub(super) status: Option<Cow<'a, str>>,
}

/// Decodes one Jetstream v1 JSON message. The cursor is `time_us`.
pub fn decode_v1(text: &[u8]) -> Result<Event, DecodeError> {
    let env: Envelope<'_> = serde_json::from_slice(text)?;
    let did = Did::parse(&env.did).ok_or(DecodeError::Invalid { field: "did" })?;
    if env.time_us < 0 {
        return Err(DecodeError::Invalid { field: "time_us" });
    }
    let kind = match env.kind.as_ref() {
        "commit" => {
            let c = env.commit.ok_or(DecodeError::Invalid { field: "commit" })?;
            EventKind::Commit(commit_from(c)?)
        }
        "identity" => identity_from(env.identity)?,
        "account" => {
            let a = env
                .account
                .ok_or(DecodeError::Invalid { field: "account" })?;
            EventKind::Account {
                active: a.active,
                status: a.status.map(|s| AccountStatus::parse(&s)),
            }
        }
        _ => return Err(DecodeError::UnknownKind),
    };
    Ok(Event {
        cursor: Cursor(env.time_us),
        time_us: env.time_us,
        did,
        kind,
    })
}

pub(super) fn commit_from(c: CommitJson<'_>) -> Result<Commit, DecodeError> {
    let op = CommitOp::parse(&c.operation).ok_or(DecodeError::Invalid { field: "operation" })?;
    let collection = Nsid::parse(&c.collection).ok_or(DecodeError::Invalid {
        field: "collection",
    })?;
    let rkey = RecordKey::parse(&c.rkey).ok_or(DecodeError::Invalid { field: "rkey" })?;
    if !valid_rev(&c.rev) {
        return Err(DecodeError::Invalid { field: "rev" });
    }
    let (record, cid) = match op {
        CommitOp::Delete => (None, None),
        CommitOp::Create | CommitOp::Update => {
            let record = c.record.ok_or(DecodeError::Invalid { field: "record" })?;
            let cid = c
                .cid
                .filter(|cid| is_cid(cid))
                .ok_or(DecodeError::Invalid { field: "cid" })?;
            (Some(record.to_owned()), Some(cid.into_owned()))
        }
    };
    Ok(Commit {
        collection,
        rkey,
        rev: c.rev.into_owned(),
        op,
        cid,
        record,
    })
}

/// An identity event (v1 and v2 share it): a handle, when present, must be
/// a handle.
pub(super) fn identity_from(i: Option<IdentityJson<'_>>) -> Result<EventKind, DecodeError> {
    let handle = i.and_then(|i| i.handle);
    if handle.as_deref().is_some_and(|h| !is_handle(h)) {
        return Err(DecodeError::Invalid { field: "handle" });
    }
    Ok(EventKind::Identity {
        handle: handle.map(Cow::into_owned),
    })
}

/// The v1 decoder of one reader: JSON text, or zstd frames inflated with the
/// bundled dictionary (loaded on the first compressed frame).
#[derive(Default)]
pub struct Decoder {
    zstd: Option<FrameDecompressor>,
}

impl Decoder {
    /// Decodes one message into `out`; `Err` only when the bundled
    /// dictionary cannot be loaded.
    pub fn decode(
        &mut self,
        msg: Message<'_>,
        max_len: usize,
        out: &mut Output,
    ) -> Result<(), Fault> {
        match msg {
            Message::Text(text) => push(text, out),
            Message::Binary(frame) => {
                if self.zstd.is_none() {
                    let d = FrameDecompressor::v1().map_err(Fault::BundledDictionary)?;
                    self.zstd = Some(d);
                }
                if let Some(text) = inflate(self.zstd.as_mut(), frame, max_len, &mut out.dropped) {
                    push(text, out);
                }
            }
        }
        Ok(())
    }
}

fn push(text: &[u8], out: &mut Output) {
    match decode_v1(text) {
        Ok(ev) => out.events.push(ev),
        Err(error) => out.dropped.push(Dropped::Jetstream {
            error,
            len: text.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOLDEN: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/jetstream/golden_v1.jsonl"
    ));

    #[test]
    fn golden_events_decode() {
        let events: Vec<Event> = GOLDEN
            .lines()
            .map(|l| decode_v1(l.as_bytes()).expect(l))
            .collect();
        assert_eq!(events.len(), 10);
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.label()).collect();
        assert_eq!(kinds.iter().filter(|k| **k == "commit").count(), 8);
        assert_eq!(kinds[7], "identity");
        assert_eq!(kinds[8], "account");
        let EventKind::Commit(like) = &events[0].kind else {
            panic!("first golden event is a like commit")
        };
        assert_eq!(like.collection.as_str(), "app.bsky.feed.like");
        assert_eq!(like.op, CommitOp::Create);
        let EventKind::Commit(del) = &events[5].kind else {
            panic!("sixth golden event is a delete")
        };
        assert_eq!(del.op, CommitOp::Delete);
        assert!(del.record.is_none() && del.cid.is_none());
    }

    #[test]
    fn record_is_kept_verbatim() {
        let line = r#"{"did":"did:plc:a","time_us":5,"kind":"commit","commit":{"rev":"3mptbypqos22u","operation":"create","collection":"a.b.c","rkey":"k","record":{"text":"h\u00e9","n":1},"cid":"bafyreifesp3rrl2hz4jqsphhmonn22uqczzaswkxyodbnptgldfdbefvny"}}"#;
        let ev = decode_v1(line.as_bytes()).unwrap();
        let EventKind::Commit(c) = ev.kind else {
            panic!()
        };
        assert_eq!(c.record.unwrap().get(), r#"{"text":"h\u00e9","n":1}"#);
        assert_eq!(ev.cursor, Cursor(5));
    }

    #[test]
    fn bad_messages_are_errors_not_panics() {
        for bad in [
            "",
            "{",
            "null",
            r#"{"did":"x","time_us":1,"kind":"commit"}"#,
            r#"{"did":"did:plc:a","time_us":1,"kind":"commit"}"#,
            r#"{"did":"did:plc:a","time_us":-1,"kind":"identity","identity":{}}"#,
            r#"{"did":"did:plc:a","time_us":1,"kind":"commit","commit":{"rev":"3mptbypqos22u","operation":"create","collection":"a.b.c","rkey":"k"}}"#,
            r#"{"did":"did:plc:a","time_us":1,"kind":"commit","commit":{"rev":"3mptbypqos22u","operation":"nuke","collection":"a.b.c","rkey":"k"}}"#,
        ] {
            assert!(decode_v1(bad.as_bytes()).is_err(), "{bad}");
        }
        // What reaches SQL is checked: a rev is a TID, a CID parses, a
        // handle is a handle.
        let good = r#"{"did":"did:plc:a","time_us":1,"kind":"commit","commit":{"rev":"3mptbypqos22u","operation":"create","collection":"a.b.c","rkey":"k","record":{},"cid":"bafyreifesp3rrl2hz4jqsphhmonn22uqczzaswkxyodbnptgldfdbefvny"}}"#;
        assert!(decode_v1(good.as_bytes()).is_ok());
        let identity = r#"{"did":"did:plc:a","time_us":1,"kind":"identity","identity":{"handle":"alice.bsky.social"}}"#;
        assert!(decode_v1(identity.as_bytes()).is_ok());
        for (bad, field) in [
            (good.replace("3mptbypqos22u", "3mpt1783175888"), "rev"),
            (good.replace("3mptbypqos22u", "3mptbypqos22\\u0000"), "rev"),
            (good.replace("bafyreif", "bafy\\u0000"), "cid"),
            (
                good.replace(
                    "bafyreifesp3rrl2hz4jqsphhmonn22uqczzaswkxyodbnptgldfdbefvny",
                    "bafyc1",
                ),
                "cid",
            ),
            (identity.replace("alice.bsky", "evil\\u0000.bsky"), "handle"),
            (
                identity.replace("alice.bsky.social", &"a".repeat(300)),
                "handle",
            ),
        ] {
            match decode_v1(bad.as_bytes()) {
                Err(DecodeError::Invalid { field: f }) => assert_eq!(f, field, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        let unknown = r#"{"did":"did:plc:a","time_us":1,"kind":"labels"}"#;
        assert!(matches!(
            decode_v1(unknown.as_bytes()),
            Err(DecodeError::UnknownKind)
        ));
    }
}
