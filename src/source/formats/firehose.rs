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
mod proof;
mod wire;

pub use proof::{Proof, ProofError};

use crate::event::{
    AccountStatus, Commit, CommitOp, Cursor, Did, Event, EventKind, Nsid, RecordKey, is_handle,
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
    Did::parse(s).ok_or_else(|| field(t, "did", format!("invalid DID of {} bytes", s.len())))
}

fn cursor(t: &'static str, seq: i64) -> Result<Cursor, DecodeError> {
    if seq < 0 {
        return Err(field(t, "seq", format!("negative seq {seq}")));
    }
    Ok(Cursor(seq))
}

/// The body's `time` (RFC 3339) → µs since the epoch.
fn time_us(t: &'static str, s: &str) -> Result<i64, DecodeError> {
    parse_time_us(s).map_err(|_| field(t, "time", format!("invalid time of {} bytes", s.len())))
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
            if b.handle.is_some_and(|h| !is_handle(h)) {
                return Err(field("#identity", "handle", "not a handle"));
            }
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
    /// `source.verify` is on: each commit leaves a [`Proof`] in the output
    /// and the rev chain is applied by the verifier after the signature
    /// (a forged commit must not move the chain).
    verify: bool,
}

impl Decoder {
    /// Decodes one binary message into `out`, applying the chain rules to
    /// commits (stale ones become a `Skip` event; one that does not follow
    /// is preceded by a `Sync` event).
    pub fn decode(&mut self, bytes: &[u8], out: &mut Output) {
        match decode_frame_with(bytes, &mut self.transcoder) {
            Ok(Frame::Commit(c)) if self.verify => self.unverified(c, bytes, out),
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

    /// Keeps commits for the verifier (`source.verify`): no chain check here.
    pub fn set_verify(&mut self, on: bool) {
        self.verify = on;
    }

    /// A commit to verify: its events as they are, and its [`Proof`].
    fn unverified(&mut self, c: CommitFrame, bytes: &[u8], out: &mut Output) {
        if c.events.is_empty() {
            out.events.push(Event {
                cursor: Cursor(c.meta.seq),
                time_us: c.meta.time_us,
                did: c.meta.did.clone(),
                kind: EventKind::Skip,
            });
        }
        for op in c.bad_ops {
            out.dropped.push(Dropped::BadOp {
                did: c.meta.did.clone(),
                seq: c.meta.seq,
                op,
            });
        }
        out.events.extend(c.events);
        out.proof = Some(Proof::new(c.meta, bytes));
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
pub(crate) mod tests;

#[cfg(test)]
mod bench;
