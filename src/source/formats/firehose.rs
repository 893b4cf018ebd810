//! The raw firehose (`com.atproto.sync.subscribeRepos`): frames → events.
//!
//! Owns: one websocket binary message → [`Frame`] ([`decode_frame_with`],
//! pure). A message is two concatenated DAG-CBOR objects, a header
//! `{op, t}` and a body. `#commit` bodies are split into one [`Event`] per
//! op, with each create/update record looked up in the body's CAR slice,
//! CID-verified and transcoded to Jetstream-identical JSON (see
//! `codecs::dagcbor`). `#info` and error frames are the shared [`Control`].
//! The firehose [`Decoder`] of a reader owns the protocol state that
//! outlives one message: the record [`Transcoder`] and the per-DID
//! rev/`since` chain ([`chain`]). Does not own: the websocket, cursors,
//! commit signatures, `prevData` checks, filtering.
//!
//! Error policy, chosen to keep the most good data:
//! - A problem that makes the whole message untrustworthy (bad CBOR framing,
//!   bad DID, CAR that does not parse, CAR root ≠ commit CID, size limits) is a
//!   [`DecodeError`] for the whole frame.
//! - A problem confined to one op (unparsable path, unknown action, missing
//!   record block, block whose hash ≠ op CID, record that is not valid atproto
//!   data) drops only that op: it is listed in [`CommitFrame::bad_ops`] and
//!   the other ops still become events. Jetstream v1 does the same (it logs and
//!   `continue`s).
//!
//! Invariants: never panics on input; events keep op order; every event of a
//! frame carries `Cursor(seq)` of that frame; `time_us` is the body's `time`.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::rev::valid_rev;
use super::time::parse_time_us;
use super::{Control, Dropped, Output};
use crate::source::codecs::car::{self, Car, CarError};
use crate::source::codecs::dagcbor::{self, CborError, Reader, Transcoder};

pub mod chain;
mod wire;

use crate::event::{
    AccountStatus, Commit, CommitOp, Cursor, Did, Event, EventKind, Nsid, RecordKey,
};
use wire::{
    AccountBody, CommitBody, ErrorBody, IdentityBody, InfoBody, OpBody, SyncBody, read_commit,
    read_header,
};

/// Largest `blocks` CAR slice accepted in a `#commit` (lexicon maxLength).
pub const MAX_BLOCKS_BYTES: usize = 2_000_000;
/// Most ops accepted in one `#commit` (lexicon maxLength).
pub const MAX_OPS: usize = 200;

/// One decoded firehose message. (No `PartialEq`: `Event` holds a
/// `RawValue`, which has none; tests compare `Debug` output.)
#[derive(Debug, Clone)]
pub enum Frame {
    /// `#commit`: the commit's chain fields plus one event per good op.
    Commit(CommitFrame),
    /// `#identity`, `#account` or `#sync`: exactly one event.
    Event(Event),
    /// `#info` (e.g. `OutdatedCursor`); `op = -1`, an upstream error (e.g.
    /// `FutureCursor`; the stream closes next); or a message type this
    /// version does not know (unknown `t`, or an `op` other than 1/-1; its
    /// body is not decoded).
    Control(Control),
}

/// A decoded `#commit`.
#[derive(Debug, Clone)]
pub struct CommitFrame {
    pub meta: CommitMeta,
    /// One event per good op, in op order.
    pub events: Vec<Event>,
    /// Ops that were dropped, in op order.
    pub bad_ops: Vec<OpError>,
}

/// The commit-level fields the caller needs for chain checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitMeta {
    pub did: Did,
    pub seq: i64,
    pub rev: String,
    /// Rev of the previous commit of this repo (`None` for the first one).
    pub since: Option<String>,
    /// MST root CID before this commit (Sync 1.1), as a string.
    pub prev_data: Option<String>,
    /// CID of the commit block, as a string.
    pub commit_cid: String,
    pub time_us: i64,
}

/// An op that was dropped from an otherwise good commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError {
    /// Position in the commit's `ops`.
    pub index: usize,
    pub path: String,
    pub kind: OpErrorKind,
}

/// Why one op was dropped. The record is lost for this stream; a later
/// update, or a repo resync, brings it back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpErrorKind {
    #[error("path is not collection/rkey")]
    BadPath,
    #[error("unknown action {0:?}")]
    UnknownAction(String),
    #[error("create/update without a cid")]
    MissingCid,
    #[error("record block not in the CAR")]
    MissingBlock,
    #[error("record block does not match its CID: {0}")]
    BadBlock(CarError),
    #[error("record is not valid atproto data: {0}")]
    BadRecord(CborError),
}

impl OpErrorKind {
    /// A bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            OpErrorKind::BadPath => "bad_path",
            OpErrorKind::UnknownAction(_) => "unknown_action",
            OpErrorKind::MissingCid => "missing_cid",
            OpErrorKind::MissingBlock => "missing_block",
            OpErrorKind::BadBlock(_) => "bad_block",
            OpErrorKind::BadRecord(_) => "bad_record",
        }
    }
}

/// Why a whole message was rejected. For every variant the caller counts it
/// (by [`DecodeError::label`]) and skips the message; if it was a `#commit`
/// the repo's next commit will not chain (`since`), which triggers the usual
/// resync of that DID, and [`DecodeError::did`] lets the caller schedule it
/// right away.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// The header is not a DAG-CBOR `{op, t}` map. Nothing can be trusted:
    /// skip; if it keeps happening, reconnect.
    #[error("frame header: {0}")]
    Header(String),
    /// The body does not match the schema of its `t` (or trailing bytes).
    #[error("{t} body: {message}")]
    Body { t: &'static str, message: String },
    /// A body field has a bad value (DID syntax, negative seq, bad time).
    #[error("{t} field {field}: {reason}")]
    Field {
        t: &'static str,
        field: &'static str,
        reason: String,
    },
    /// `blocks` or `ops` exceed the protocol limits.
    #[error("commit {did} seq {seq}: {what} is {size}, limit {max}")]
    TooLarge {
        did: String,
        seq: i64,
        what: &'static str,
        size: usize,
        max: usize,
    },
    /// The commit's `blocks` is not a readable CARv1.
    #[error("commit {did} seq {seq}: {source}")]
    Car {
        did: String,
        seq: i64,
        source: CarError,
    },
    /// The CAR's root is not the commit CID (Sync 1.1 rule).
    #[error("commit {did} seq {seq}: CAR root is not the commit CID")]
    RootMismatch { did: String, seq: i64 },
}

impl DecodeError {
    /// A bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            DecodeError::Header(_) => "header",
            DecodeError::Body { .. } => "body",
            DecodeError::Field { .. } => "field",
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::Car { .. } => "car",
            DecodeError::RootMismatch { .. } => "root_mismatch",
        }
    }

    /// The repo concerned, when known (to schedule a resync).
    pub fn did(&self) -> Option<&str> {
        match self {
            DecodeError::TooLarge { did, .. }
            | DecodeError::Car { did, .. }
            | DecodeError::RootMismatch { did, .. } => Some(did),
            _ => None,
        }
    }
}

fn field(t: &'static str, field: &'static str, reason: impl Into<String>) -> DecodeError {
    DecodeError::Field {
        t,
        field,
        reason: reason.into(),
    }
}

fn did(t: &'static str, s: &str) -> Result<Did, DecodeError> {
    Did::parse(s).ok_or_else(|| field(t, "did", format!("invalid DID {s:?}")))
}

fn cursor(t: &'static str, seq: i64) -> Result<Cursor, DecodeError> {
    if seq < 0 {
        return Err(field(t, "seq", format!("negative seq {seq}")));
    }
    Ok(Cursor(seq))
}

/// The body's `time` (RFC 3339) → µs since the epoch.
fn time_us(t: &'static str, s: &str) -> Result<i64, DecodeError> {
    parse_time_us(s).map_err(|e| field(t, "time", format!("{s:?}: {e}")))
}

/// A commit's or `#sync`'s `rev`, checked.
fn rev<'a>(t: &'static str, s: &'a str) -> Result<&'a str, DecodeError> {
    if valid_rev(s) {
        Ok(s)
    } else {
        Err(field(t, "rev", format!("invalid rev of {} bytes", s.len())))
    }
}

/// String form of a binary CID: multibase base32 for v1 (what every
/// implementation prints), base58 for v0.
fn cid_string(cid: &[u8]) -> String {
    if cid.first() != Some(&0x01) {
        return cid::Cid::try_from(cid)
            .map(|c| c.to_string())
            .unwrap_or_default();
    }
    let mut out = Vec::with_capacity(64);
    dagcbor::push_cid_base32(&mut out, cid);
    String::from_utf8(out).unwrap_or_default()
}

/// Decodes one websocket binary message.
pub fn decode_frame(bytes: &[u8]) -> Result<Frame, DecodeError> {
    decode_frame_with(bytes, &mut Transcoder::new())
}

/// Decodes a non-commit body with serde (rare messages; not speed-critical).
fn body<'a, T: Deserialize<'a>>(bytes: &'a [u8], t: &'static str) -> Result<T, DecodeError> {
    serde_ipld_dagcbor::from_slice(bytes).map_err(|e| DecodeError::Body {
        t,
        message: e.to_string(),
    })
}

/// [`decode_frame`] reusing a caller-owned [`Transcoder`] (saves allocations).
pub fn decode_frame_with(bytes: &[u8], tc: &mut Transcoder) -> Result<Frame, DecodeError> {
    let mut r = Reader::new(bytes);
    let (op, t) = read_header(&mut r).map_err(|e| DecodeError::Header(e.to_string()))?;
    let rest = &bytes[r.position()..];
    match (op, t) {
        (1, Some("#commit")) => {
            let b = read_commit(rest).map_err(|e| DecodeError::Body {
                t: "#commit",
                message: e.to_string(),
            })?;
            decode_commit(b, tc).map(Frame::Commit)
        }
        (1, Some("#identity")) => {
            let b: IdentityBody = body(rest, "#identity")?;
            let handle = b.handle.map(str::to_owned);
            event(
                "#identity",
                b.seq,
                b.did,
                b.time,
                EventKind::Identity { handle },
            )
        }
        (1, Some("#account")) => {
            let b: AccountBody = body(rest, "#account")?;
            let status = b.status.map(AccountStatus::parse);
            event(
                "#account",
                b.seq,
                b.did,
                b.time,
                EventKind::Account {
                    active: b.active,
                    status,
                },
            )
        }
        (1, Some("#sync")) => {
            let b: SyncBody = body(rest, "#sync")?;
            event(
                "#sync",
                b.seq,
                b.did,
                b.time,
                EventKind::Sync {
                    rev: rev("#sync", b.rev)?.to_owned(),
                },
            )
        }
        (1, Some("#info")) => {
            let b: InfoBody = body(rest, "#info")?;
            Ok(Frame::Control(Control::Info {
                name: b.name,
                message: b.message,
            }))
        }
        (-1, _) => {
            let b: ErrorBody = body(rest, "error")?;
            Ok(Frame::Control(Control::Error {
                error: b.error,
                message: b.message,
            }))
        }
        (op, t) => Ok(Frame::Control(Control::Unknown {
            op: Some(op),
            t: t.map(str::to_owned),
        })),
    }
}

fn event(
    t: &'static str,
    seq: i64,
    did_str: &str,
    time: &str,
    kind: EventKind,
) -> Result<Frame, DecodeError> {
    Ok(Frame::Event(Event {
        cursor: cursor(t, seq)?,
        time_us: time_us(t, time)?,
        did: did(t, did_str)?,
        kind,
    }))
}

fn decode_commit(b: CommitBody<'_>, tc: &mut Transcoder) -> Result<CommitFrame, DecodeError> {
    const T: &str = "#commit";
    let did = did(T, b.repo)?;
    let cursor = cursor(T, b.seq)?;
    let time_us = time_us(T, b.time)?;
    rev(T, b.rev)?;
    let too_large = |what, size, max| DecodeError::TooLarge {
        did: b.repo.to_owned(),
        seq: b.seq,
        what,
        size,
        max,
    };
    if b.blocks.len() > MAX_BLOCKS_BYTES {
        return Err(too_large("blocks", b.blocks.len(), MAX_BLOCKS_BYTES));
    }
    if b.ops.len() > MAX_OPS {
        return Err(too_large("ops", b.ops.len(), MAX_OPS));
    }
    let car = Car::parse(b.blocks).map_err(|source| DecodeError::Car {
        did: b.repo.to_owned(),
        seq: b.seq,
        source,
    })?;
    if car.roots().first() != Some(&b.commit) {
        return Err(DecodeError::RootMismatch {
            did: b.repo.to_owned(),
            seq: b.seq,
        });
    }

    let mut events = Vec::with_capacity(b.ops.len());
    let mut bad_ops = Vec::new();
    for (index, op) in b.ops.iter().enumerate() {
        match decode_op(op, b.rev, &car, tc) {
            Ok(commit) => events.push(Event {
                cursor,
                time_us,
                did: did.clone(),
                kind: EventKind::Commit(commit),
            }),
            Err(kind) => bad_ops.push(OpError {
                index,
                path: op.path.to_owned(),
                kind,
            }),
        }
    }
    let meta = CommitMeta {
        did,
        seq: b.seq,
        rev: b.rev.to_owned(),
        since: b.since.map(str::to_owned),
        prev_data: b.prev_data.map(cid_string),
        commit_cid: cid_string(b.commit),
        time_us,
    };
    Ok(CommitFrame {
        meta,
        events,
        bad_ops,
    })
}

fn decode_op(
    op: &OpBody<'_>,
    rev: &str,
    car: &Car<'_>,
    tc: &mut Transcoder,
) -> Result<Commit, OpErrorKind> {
    let slash = op
        .path
        .bytes()
        .position(|b| b == b'/')
        .ok_or(OpErrorKind::BadPath)?;
    let (collection, rkey) = (&op.path[..slash], &op.path[slash + 1..]);
    let collection = Nsid::parse(collection).ok_or(OpErrorKind::BadPath)?;
    let rkey = RecordKey::parse(rkey).ok_or(OpErrorKind::BadPath)?;
    let action = CommitOp::parse(op.action)
        .ok_or_else(|| OpErrorKind::UnknownAction(op.action.to_owned()))?;
    let (cid, record) = match action {
        CommitOp::Delete => (None, None),
        CommitOp::Create | CommitOp::Update => {
            let cid = op.cid.ok_or(OpErrorKind::MissingCid)?;
            let block = car.get(cid).ok_or(OpErrorKind::MissingBlock)?;
            car::verify(cid, block).map_err(OpErrorKind::BadBlock)?;
            let json = tc.record_to_json(block).map_err(OpErrorKind::BadRecord)?;
            let raw =
                RawValue::from_string(json).map_err(|_| OpErrorKind::BadRecord(CborError::Utf8))?;
            (Some(cid_string(cid)), Some(raw))
        }
    };
    Ok(Commit {
        collection,
        rkey,
        rev: rev.to_owned(),
        op: action,
        cid,
        record,
    })
}

/// The firehose decoder of one reader. It lives as long as the reader, so
/// the rev chain survives reconnects.
#[derive(Default)]
pub struct Decoder {
    transcoder: Transcoder,
    chain: chain::RevChain,
}

impl Decoder {
    /// Decodes one binary message into `out`, applying the chain rules to
    /// commits (stale ones become a `Skip` event; one that does not follow
    /// is preceded by a `Sync` event).
    pub fn decode(&mut self, bytes: &[u8], out: &mut Output) {
        match decode_frame_with(bytes, &mut self.transcoder) {
            Ok(Frame::Commit(c)) => self.commit(c, out),
            Ok(Frame::Event(ev)) => {
                if let EventKind::Sync { rev } = &ev.kind {
                    self.chain.remember(&ev.did, rev);
                }
                out.events.push(ev)
            }
            Ok(Frame::Control(c)) => out.control = Some(c),
            Err(error) => out.dropped.push(Dropped::Firehose {
                error,
                len: bytes.len(),
            }),
        }
    }

    fn commit(&mut self, c: CommitFrame, out: &mut Output) {
        let skip = Event {
            cursor: Cursor(c.meta.seq),
            time_us: c.meta.time_us,
            did: c.meta.did.clone(),
            kind: EventKind::Skip,
        };
        if !self.chain.check(&c.meta, &mut out.events) {
            out.dropped.push(Dropped::StaleCommit {
                did: c.meta.did,
                seq: c.meta.seq,
                ops: c.events.len(),
            });
            out.events.push(skip);
            return;
        }
        if c.events.is_empty() {
            out.events.push(skip);
        }
        for op in c.bad_ops {
            out.dropped.push(Dropped::BadOp {
                did: c.meta.did.clone(),
                seq: c.meta.seq,
                op,
            });
        }
        out.events.extend(c.events);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::source::codecs::dagcbor::tests::json_to_dagcbor;
    use proptest::prelude::*;

    const RELAY_DIR: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/firehose/bsky-relay-2026-07-04-seq-31527015372-31527015471"
    );
    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

    /// The recorded messages: repeated `[u32 LE length][message]`.
    pub(crate) fn relay_frames() -> Vec<Vec<u8>> {
        let bytes = std::fs::read(format!("{RELAY_DIR}/frames.bin")).expect("frames.bin");
        let mut frames = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let (len, tail) = rest.split_at(4);
            let len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
            frames.push(tail[..len].to_vec());
            rest = &tail[len..];
        }
        frames
    }

    /// A Jetstream v1 line, keeping `record` as raw bytes.
    #[derive(Deserialize)]
    struct JsLine {
        did: String,
        kind: String,
        commit: Option<JsCommit>,
        identity: Option<serde_json::Value>,
        account: Option<serde_json::Value>,
    }

    #[derive(Deserialize)]
    struct JsCommit {
        rev: String,
        operation: String,
        collection: String,
        rkey: String,
        record: Option<Box<RawValue>>,
        cid: Option<String>,
    }

    fn decode_all() -> Vec<Frame> {
        relay_frames()
            .iter()
            .map(|f| decode_frame(f).expect("frame decodes"))
            .collect()
    }

    #[test]
    fn relay_frames_all_decode() {
        let frames = decode_all();
        assert_eq!(frames.len(), 100);
        let mut seqs = Vec::new();
        let (mut commits, mut ops) = (0, 0);
        for f in &frames {
            match f {
                Frame::Commit(c) => {
                    commits += 1;
                    ops += c.events.len();
                    assert!(c.bad_ops.is_empty(), "{:?}", c.bad_ops);
                    assert!(c.meta.prev_data.is_some() && c.meta.since.is_some());
                    assert!(c.meta.commit_cid.starts_with("bafyrei"));
                    assert!(
                        c.events
                            .iter()
                            .all(|e| e.cursor.0 == c.meta.seq && e.did == c.meta.did)
                    );
                    seqs.push(c.meta.seq);
                }
                Frame::Event(e) => seqs.push(e.cursor.0),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!((commits, ops), (98, 100));
        assert_eq!(
            seqs,
            (31527015372..=31527015471).collect::<Vec<_>>(),
            "contiguous seqs in order"
        );
    }

    #[test]
    fn relay_frames_match_production_jetstream() {
        let events: Vec<Event> = decode_all()
            .into_iter()
            .flat_map(|f| match f {
                Frame::Commit(c) => c.events,
                Frame::Event(e) => vec![e],
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        let text = std::fs::read_to_string(format!("{RELAY_DIR}/jetstream_v1.jsonl")).unwrap();
        let lines: Vec<JsLine> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events.len(), 102);
        assert_eq!(lines.len(), events.len());
        let mut exact = 0;
        for (i, (ev, js)) in events.iter().zip(&lines).enumerate() {
            assert_eq!(ev.did.as_str(), js.did, "line {i}");
            assert_eq!(ev.kind.label(), js.kind, "line {i}");
            match &ev.kind {
                EventKind::Commit(c) => {
                    let jc = js.commit.as_ref().unwrap();
                    assert_eq!(c.rev, jc.rev, "line {i}");
                    assert_eq!(c.op.as_str(), jc.operation, "line {i}");
                    assert_eq!(c.collection.as_str(), jc.collection, "line {i}");
                    assert_eq!(c.rkey.as_str(), jc.rkey, "line {i}");
                    assert_eq!(c.cid, jc.cid, "line {i}");
                    let ours = c.record.as_ref().map(|r| r.get());
                    let theirs = jc.record.as_ref().map(|r| r.get());
                    let parse = |s: Option<&str>| {
                        s.map(|s| serde_json::from_str::<serde_json::Value>(s).unwrap())
                    };
                    assert_eq!(parse(ours), parse(theirs), "line {i} record value");
                    assert_eq!(ours, theirs, "line {i} record bytes");
                    exact += usize::from(ours.is_some());
                }
                EventKind::Identity { handle } => {
                    let id = js.identity.as_ref().unwrap();
                    assert_eq!(id["seq"].as_i64(), Some(ev.cursor.0));
                    assert_eq!(handle.as_deref(), id.get("handle").and_then(|h| h.as_str()));
                    assert_eq!(
                        ev.time_us,
                        time_us("t", id["time"].as_str().unwrap()).unwrap()
                    );
                }
                EventKind::Account { active, status } => {
                    let acc = js.account.as_ref().unwrap();
                    assert_eq!(acc["seq"].as_i64(), Some(ev.cursor.0));
                    assert_eq!(acc["active"].as_bool(), Some(*active));
                    assert_eq!(
                        status.map(|s| s.as_str()),
                        acc.get("status").and_then(|s| s.as_str())
                    );
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(exact, 97, "every create/update record byte-identical");
    }

    /// Wraps a JSON `{header, body}` as wire bytes.
    fn wire(header: &serde_json::Value, body: &serde_json::Value) -> Vec<u8> {
        let mut out = json_to_dagcbor(header);
        out.extend(json_to_dagcbor(body));
        out
    }

    #[test]
    fn indigo_commit_bodies_decode() {
        let header = serde_json::json!({"op": 1, "t": "#commit"});
        for (name, path) in [
            ("4621317030", "app.bsky.feed.repost"),
            ("4621317332", "app.bsky.feed.repost"),
            ("4623075231", "app.bsky.actor.profile"),
        ] {
            let text = std::fs::read_to_string(format!(
                "{FIXTURES}/firehose/indigo-commits/firehose_commit_{name}.json"
            ))
            .unwrap();
            let body: serde_json::Value = serde_json::from_str(&text).unwrap();
            let Frame::Commit(c) = decode_frame(&wire(&header, &body)).unwrap() else {
                panic!()
            };
            assert_eq!(c.meta.seq.to_string(), name);
            assert_eq!(c.meta.did.as_str(), body["repo"].as_str().unwrap());
            assert_eq!(c.meta.commit_cid, body["commit"]["$link"].as_str().unwrap());
            assert_eq!(c.meta.since.as_deref(), body["since"].as_str());
            assert_eq!(c.meta.prev_data, None);
            assert!(c.bad_ops.is_empty());
            assert_eq!(c.events.len(), 1);
            let EventKind::Commit(op) = &c.events[0].kind else {
                panic!()
            };
            assert_eq!(op.collection.as_str(), path);
            assert_eq!(op.cid.as_deref(), body["ops"][0]["cid"]["$link"].as_str());
            assert!(
                op.record
                    .as_ref()
                    .unwrap()
                    .get()
                    .contains(&format!("\"$type\":\"{path}\""))
            );
        }
    }

    #[test]
    fn indigo_relay_scenarios_decode() {
        let dir = format!("{FIXTURES}/firehose/indigo-relay-scenarios");
        let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
            for m in doc["messages"].as_array().unwrap() {
                let frame =
                    decode_frame(&wire(&m["frame"]["header"], &m["frame"]["body"])).unwrap();
                let kind = match &frame {
                    Frame::Commit(c) => {
                        assert!(c.bad_ops.is_empty(), "{:?}", c.bad_ops);
                        "commit"
                    }
                    Frame::Event(e) => e.kind.label(),
                    _ => "other",
                };
                *kinds.entry(kind).or_default() += 1;
                if let Frame::Event(Event {
                    kind: EventKind::Sync { rev },
                    ..
                }) = &frame
                {
                    assert_eq!(rev, m["frame"]["body"]["rev"].as_str().unwrap());
                }
                if let Frame::Event(Event {
                    kind:
                        EventKind::Account {
                            active: false,
                            status,
                        },
                    ..
                }) = frame
                {
                    assert_eq!(status, Some(AccountStatus::Deleted));
                }
            }
        }
        assert_eq!(kinds.get("sync"), Some(&1));
        assert_eq!(kinds.get("commit"), Some(&(1 + 6 + 6 + 4)));
    }

    fn body_frame(t: &str, body: serde_json::Value) -> Result<Frame, DecodeError> {
        decode_frame(&wire(&serde_json::json!({"op": 1, "t": t}), &body))
    }

    /// Compares through `Debug` (frames and events have no `PartialEq`).
    macro_rules! assert_debug_eq {
        ($a:expr, $b:expr $(,)?) => {
            assert_eq!(format!("{:?}", $a), format!("{:?}", $b))
        };
    }

    #[test]
    fn info_error_and_unknown_frames() {
        let info = body_frame(
            "#info",
            serde_json::json!({"name": "OutdatedCursor", "message": "old"}),
        )
        .unwrap();
        assert_debug_eq!(
            info,
            Frame::Control(Control::Info {
                name: "OutdatedCursor".into(),
                message: Some("old".into())
            })
        );
        let err = wire(
            &serde_json::json!({"op": -1}),
            &serde_json::json!({"error": "FutureCursor"}),
        );
        assert_debug_eq!(
            decode_frame(&err).unwrap(),
            Frame::Control(Control::Error {
                error: "FutureCursor".into(),
                message: None
            })
        );
        let unknown = body_frame("#labels", serde_json::json!({"seq": 1})).unwrap();
        assert_debug_eq!(
            unknown,
            Frame::Control(Control::Unknown {
                op: Some(1),
                t: Some("#labels".into())
            })
        );
        let op2 = wire(
            &serde_json::json!({"op": 2, "t": "#x"}),
            &serde_json::json!({}),
        );
        assert_debug_eq!(
            decode_frame(&op2).unwrap(),
            Frame::Control(Control::Unknown {
                op: Some(2),
                t: Some("#x".into())
            })
        );
        assert!(matches!(decode_frame(&[]), Err(DecodeError::Header(_))));
        // Trailing bytes after the body.
        let mut trailing = wire(
            &serde_json::json!({"op": -1}),
            &serde_json::json!({"error": "X"}),
        );
        trailing.push(0);
        assert!(matches!(
            decode_frame(&trailing),
            Err(DecodeError::Body { .. })
        ));
    }

    #[test]
    fn identity_account_sync_fields() {
        let t = "2026-07-04T14:38:07.877Z";
        let id = body_frame(
            "#identity",
            serde_json::json!({"seq": 5, "did": "did:plc:abc", "time": t, "handle": "a.b"}),
        );
        let Frame::Event(e) = id.unwrap() else {
            panic!()
        };
        assert_eq!((e.cursor, e.time_us), (Cursor(5), 1_783_175_887_877_000));
        assert_debug_eq!(
            e.kind,
            EventKind::Identity {
                handle: Some("a.b".into())
            }
        );
        let acc = body_frame(
            "#account",
            serde_json::json!({"seq": 6, "did": "did:plc:abc", "time": t, "active": false, "status": "takendown"}),
        );
        let Frame::Event(e) = acc.unwrap() else {
            panic!()
        };
        assert_debug_eq!(
            e.kind,
            EventKind::Account {
                active: false,
                status: Some(AccountStatus::Takendown)
            }
        );
        let bad_did = body_frame(
            "#identity",
            serde_json::json!({"seq": 5, "did": "plc:abc", "time": t}),
        );
        assert!(matches!(
            bad_did,
            Err(DecodeError::Field { field: "did", .. })
        ));
        let bad_time = body_frame(
            "#identity",
            serde_json::json!({"seq": 5, "did": "did:plc:abc", "time": "yesterday"}),
        );
        assert!(matches!(
            bad_time,
            Err(DecodeError::Field { field: "time", .. })
        ));
        let neg = body_frame(
            "#identity",
            serde_json::json!({"seq": -5, "did": "did:plc:abc", "time": t}),
        );
        assert!(matches!(neg, Err(DecodeError::Field { field: "seq", .. })));
    }

    /// The first real single-op like commit, as JSON, for surgery.
    fn sample_commit() -> serde_json::Value {
        let frames = relay_frames();
        let f = &frames[0];
        let mut de = serde_ipld_dagcbor::de::Deserializer::from_slice(f);
        let _h: ipld_core::ipld::Ipld = Deserialize::deserialize(&mut de).unwrap();
        let body: ipld_core::ipld::Ipld = Deserialize::deserialize(&mut de).unwrap();
        crate::source::codecs::dagcbor::tests::ipld_to_json(&body)
    }

    #[test]
    fn per_op_errors_keep_good_ops() {
        let mut body = sample_commit();
        let good = body["ops"][0].clone();
        let mut missing = good.clone();
        // A CID whose block is not in the CAR.
        missing["cid"] = serde_json::json!({"$link": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"});
        let mut no_cid = good.clone();
        no_cid["cid"] = serde_json::Value::Null;
        let mut bad_path = good.clone();
        bad_path["path"] = serde_json::json!("nocollection");
        let mut bad_action = good.clone();
        bad_action["action"] = serde_json::json!("upsert");
        let mut delete = good.clone();
        delete["action"] = serde_json::json!("delete");
        delete["cid"] = serde_json::Value::Null;
        body["ops"] = serde_json::json!([missing, good, no_cid, bad_path, bad_action, delete]);
        let Frame::Commit(c) = body_frame("#commit", body).unwrap() else {
            panic!()
        };
        let kinds: Vec<_> = c
            .bad_ops
            .iter()
            .map(|e| (e.index, e.kind.clone()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (0, OpErrorKind::MissingBlock),
                (2, OpErrorKind::MissingCid),
                (3, OpErrorKind::BadPath),
                (4, OpErrorKind::UnknownAction("upsert".into())),
            ]
        );
        assert_eq!(c.events.len(), 2);
        let ops: Vec<_> = c
            .events
            .iter()
            .map(|e| match &e.kind {
                EventKind::Commit(c) => (c.op, c.record.is_some()),
                _ => panic!(),
            })
            .collect();
        assert_eq!(
            ops,
            vec![(CommitOp::Create, true), (CommitOp::Delete, false)]
        );
    }

    #[test]
    fn corrupted_record_block_is_a_bad_op() {
        let mut body = sample_commit();
        let mut car =
            crate::source::codecs::dagcbor::tests::b64(body["blocks"]["$bytes"].as_str().unwrap());
        let op_cid = cid::Cid::try_from(body["ops"][0]["cid"]["$link"].as_str().unwrap())
            .unwrap()
            .to_bytes();
        // Offset of the record block's last byte inside the CAR.
        let offset = {
            let parsed = Car::parse(&car).unwrap();
            let data = parsed.get(&op_cid).unwrap();
            data.as_ptr() as usize - car.as_ptr() as usize + data.len() - 1
        };
        car[offset] ^= 0x01;
        body["blocks"] =
            serde_json::json!({"$bytes": crate::source::codecs::dagcbor::tests::to_b64(&car)});
        let Frame::Commit(c) = body_frame("#commit", body).unwrap() else {
            panic!()
        };
        assert!(c.events.is_empty());
        assert_eq!(c.bad_ops.len(), 1);
        assert_eq!(
            c.bad_ops[0].kind,
            OpErrorKind::BadBlock(CarError::DigestMismatch)
        );
    }

    #[test]
    fn root_mismatch_and_limits_reject_the_frame() {
        let mut body = sample_commit();
        body["commit"] = serde_json::json!({"$link": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"});
        assert!(matches!(
            body_frame("#commit", body),
            Err(DecodeError::RootMismatch { .. })
        ));

        let mut body = sample_commit();
        let op = body["ops"][0].clone();
        body["ops"] = serde_json::Value::Array(vec![op; MAX_OPS + 1]);
        let err = body_frame("#commit", body).unwrap_err();
        assert!(matches!(err, DecodeError::TooLarge { what: "ops", .. }));
        assert_eq!(err.did(), Some("did:plc:wlnukjmqlxmtguqls4pmmgzq"));

        let mut body = sample_commit();
        body["blocks"] = serde_json::json!({"$bytes": crate::source::codecs::dagcbor::tests::to_b64(&vec![0u8; MAX_BLOCKS_BYTES + 1])});
        assert!(matches!(
            body_frame("#commit", body),
            Err(DecodeError::TooLarge { what: "blocks", .. })
        ));

        let mut body = sample_commit();
        body["blocks"] = serde_json::json!({"$bytes": "AAAA"});
        assert!(matches!(
            body_frame("#commit", body),
            Err(DecodeError::Car { .. })
        ));
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        Flip(usize, u8),
        Truncate(usize),
        Insert(usize, u8),
        Remove(usize),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (any::<usize>(), 1..=255u8).prop_map(|(i, b)| Mutation::Flip(i, b)),
            any::<usize>().prop_map(Mutation::Truncate),
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
            any::<usize>().prop_map(Mutation::Remove),
        ]
    }

    fn apply(frame: &mut Vec<u8>, m: &Mutation) {
        let n = frame.len().max(1);
        match *m {
            Mutation::Flip(i, b) if !frame.is_empty() => frame[i % n] ^= b,
            Mutation::Truncate(i) => frame.truncate(i % n),
            Mutation::Insert(i, b) => frame.insert(i % (frame.len() + 1), b),
            Mutation::Remove(i) if !frame.is_empty() => {
                frame.remove(i % n);
            }
            _ => {}
        }
    }

    thread_local! {
        static FRAMES: Vec<Vec<u8>> = relay_frames();
    }

    proptest! {
        #[test]
        fn decode_frame_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_frame(&bytes);
        }

        #[test]
        fn decode_frame_never_panics_on_mutated_frames(
            index in 0..100usize,
            mutations in proptest::collection::vec(mutation(), 1..6),
        ) {
            let mut frame = FRAMES.with(|f| f[index].clone());
            for m in &mutations {
                apply(&mut frame, m);
            }
            let _ = decode_frame(&frame);
        }
    }
}

#[cfg(test)]
mod bench {
    use super::wire::{read_commit, read_header};
    use super::*;

    /// Where the time goes, stage by stage (cumulative). Run with
    /// `cargo test --release --lib -- --ignored --nocapture stage_breakdown`.
    #[test]
    #[ignore]
    fn stage_breakdown() {
        let frames = super::tests::relay_frames();
        let commits: Vec<&[u8]> = frames
            .iter()
            .map(|f| f.as_slice())
            .filter(|f| matches!(decode_frame(f), Ok(Frame::Commit(_))))
            .collect();
        let mut tc = Transcoder::new();
        let time = |name: &str, f: &mut dyn FnMut(&[u8]) -> usize| {
            let mut best = f64::MAX;
            for _ in 0..5 {
                let start = std::time::Instant::now();
                let mut sink = 0;
                for _ in 0..300 {
                    for c in &commits {
                        sink += f(c);
                    }
                }
                let per = start.elapsed().as_secs_f64() * 1e6 / (300.0 * commits.len() as f64);
                best = best.min(per);
                std::hint::black_box(sink);
            }
            println!("{name:<40} {best:.3} µs/commit");
        };
        fn body(f: &[u8]) -> (CommitBody<'_>, usize) {
            let mut r = Reader::new(f);
            read_header(&mut r).unwrap();
            let pos = r.position();
            (read_commit(&f[pos..]).unwrap(), pos)
        }
        time("header + body", &mut |f| body(f).0.ops.len());
        time("+ CAR parse", &mut |f| {
            Car::parse(body(f).0.blocks).unwrap().blocks().len()
        });
        time("+ get + verify", &mut |f| {
            let b = body(f).0;
            let car = Car::parse(b.blocks).unwrap();
            b.ops
                .iter()
                .filter_map(|o| o.cid)
                .map(|c| usize::from(car::verify(c, car.get(c).unwrap()).is_ok()))
                .sum()
        });
        time("+ transcode", &mut |f| {
            let b = body(f).0;
            let car = Car::parse(b.blocks).unwrap();
            b.ops
                .iter()
                .filter_map(|o| o.cid)
                .map(|c| {
                    let block = car.get(c).unwrap();
                    car::verify(c, block).unwrap();
                    tc.record_to_json(block).unwrap().len()
                })
                .sum()
        });
        let mut tc2 = Transcoder::new();
        time("+ RawValue", &mut |f| {
            let b = body(f).0;
            let car = Car::parse(b.blocks).unwrap();
            b.ops
                .iter()
                .filter_map(|o| o.cid)
                .map(|c| {
                    let block = car.get(c).unwrap();
                    car::verify(c, block).unwrap();
                    RawValue::from_string(tc2.record_to_json(block).unwrap())
                        .unwrap()
                        .get()
                        .len()
                })
                .sum()
        });
        let mut tc3 = Transcoder::new();
        time(
            "full decode_frame_with",
            &mut |f| match decode_frame_with(f, &mut tc3).unwrap() {
                Frame::Commit(c) => c.events.len(),
                _ => 0,
            },
        );
    }
}
