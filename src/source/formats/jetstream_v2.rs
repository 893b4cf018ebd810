//! Pure decoding of Jetstream v2 frames
//! (`/xrpc/network.bsky.jetstream.subscribeEvents`, `xrpc.v1.json`
//! framing, atproto proposal 0015) into [`V2Frame`]s, and the v2
//! [`Decoder`] that holds the connection's zstd dictionary.
//!
//! Owns: the frame envelope (`{"$type":"message","payload":{…}}` or
//! `{"$type":"error","error":…,"message"?:…}`) and the five payload variants
//! of the `subscribeEvents` lexicon (`#info` and error frames become the
//! shared [`Control`]). Does not own: the socket, the subscribe query and the
//! dictionary download (`transport::subscribe_v2`, `transport::dictionary`),
//! the inclusive-cursor floor (`stream::Resume`, applied by
//! `formats::Decoder`), zstd itself (`codecs::zstd_frames`), nor record
//! contents (mappers).
//!
//! Wire facts (bluesky-social/jetstream `lexicons/network/bsky/jetstream/
//! subscribeEvents.json`, `internal/subscribe/encoder.go`):
//! - `#commit` is flat: `seq, did, time, rev, operation, collection, rkey,
//!   cid?, record?` (no `kind`; the `$type` is the discriminator).
//! - `#identity` / `#account` / `#sync` carry `seq, did, time` plus the
//!   upstream `subscribeRepos` event *nested* under `identity` / `account` /
//!   `sync` (its own `seq`/`time` are the relay's and are ignored here).
//! - `time` is RFC 3339 UTC with six fractional digits; `time_us` is its
//!   value in µs (`formats::time`). The cursor is `seq`.
//! - `#info` (`name`, `message?`) has no seq/time and never moves the cursor.
//!
//! Invariants: the record stays a `RawValue` copied once (as in
//! `decode_v1`), commits pass the same validation as v1's, and no input
//! panics. An unknown payload `$type` is [`Control::Unknown`] (skip it), not
//! an error, so additive lexicon changes do not count as malformed.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::jetstream::{AccountJson, CommitJson, IdentityJson, commit_from, identity_from};
use super::rev::valid_rev;
use super::time::parse_time_us;
use super::{Control, Dropped, Message, Output, inflate};
use crate::event::{AccountStatus, Cursor, Did, Event, EventKind};
use crate::source::codecs::zstd_frames::{FrameDecompressor, ZstdError};

pub use super::jetstream::DecodeError;

/// `$type` prefix of every payload in the `subscribeEvents` message union.
pub const PAYLOAD_TYPE_PREFIX: &str = "network.bsky.jetstream.subscribeEvents#";

/// One decoded v2 frame.
#[derive(Debug, Clone, PartialEq)]
pub enum V2Frame {
    /// `#commit`, `#identity`, `#account` or `#sync`; `cursor` is `seq`.
    Event(Event),
    /// `#info` (`OutdatedCursor`), an error frame (`ConsumerTooSlow`; the
    /// server closes the stream right after it), or a payload `$type` this
    /// version does not know (`op` is `None`).
    Control(Control),
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "$type", borrow)]
    t: Cow<'a, str>,
    #[serde(borrow)]
    payload: Option<Payload<'a>>,
    #[serde(borrow)]
    error: Option<Cow<'a, str>>,
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
}

/// Every field of every payload variant, flat, so one pass decodes any.
#[derive(Deserialize)]
struct Payload<'a> {
    #[serde(rename = "$type", borrow)]
    t: Cow<'a, str>,
    seq: Option<i64>,
    #[serde(borrow)]
    did: Option<Cow<'a, str>>,
    #[serde(borrow)]
    time: Option<Cow<'a, str>>,
    #[serde(borrow)]
    rev: Option<Cow<'a, str>>,
    #[serde(borrow)]
    operation: Option<Cow<'a, str>>,
    #[serde(borrow)]
    collection: Option<Cow<'a, str>>,
    #[serde(borrow)]
    rkey: Option<Cow<'a, str>>,
    #[serde(borrow)]
    cid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    record: Option<&'a RawValue>,
    #[serde(borrow)]
    identity: Option<IdentityJson<'a>>,
    #[serde(borrow)]
    account: Option<AccountJson<'a>>,
    #[serde(borrow)]
    sync: Option<SyncJson<'a>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
}

/// The nested upstream `com.atproto.sync.subscribeRepos#sync`; only `rev`
/// is kept (`blocks` is skipped unparsed).
#[derive(Deserialize)]
struct SyncJson<'a> {
    #[serde(borrow)]
    rev: Cow<'a, str>,
}

/// Just the discriminators, to classify a frame the full decode refused.
#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(rename = "$type", borrow)]
    t: Cow<'a, str>,
    #[serde(borrow)]
    payload: Option<ProbePayload<'a>>,
}

#[derive(Deserialize)]
struct ProbePayload<'a> {
    #[serde(rename = "$type", borrow)]
    t: Cow<'a, str>,
}

const KNOWN: [&str; 5] = ["commit", "identity", "account", "sync", "info"];

/// Decodes one v2 text frame (or the output of a zstd frame).
pub fn decode_v2(text: &[u8]) -> Result<V2Frame, DecodeError> {
    let frame: Frame<'_> = match serde_json::from_slice(text) {
        Ok(f) => f,
        Err(e) => return classify_failure(text, e),
    };
    match frame.t.as_ref() {
        "message" => {
            let p = frame
                .payload
                .ok_or(DecodeError::Invalid { field: "payload" })?;
            decode_payload(p)
        }
        "error" => Ok(V2Frame::Control(Control::Error {
            error: frame
                .error
                .ok_or(DecodeError::Invalid { field: "error" })?
                .into_owned(),
            message: frame.message.map(Cow::into_owned),
        })),
        _ => Err(DecodeError::UnknownKind),
    }
}

/// A frame the typed decode refused is still `Unknown` (not malformed) when
/// its payload `$type` is one we do not know: a future variant may reuse a
/// field name with another shape.
fn classify_failure(text: &[u8], e: serde_json::Error) -> Result<V2Frame, DecodeError> {
    let Ok(probe) = serde_json::from_slice::<Probe<'_>>(text) else {
        return Err(e.into());
    };
    match (probe.t.as_ref(), probe.payload) {
        ("message", Some(p)) if !is_known(&p.t) => Ok(unknown(p.t)),
        ("message" | "error", _) => Err(e.into()),
        _ => Err(DecodeError::UnknownKind),
    }
}

fn is_known(t: &str) -> bool {
    t.strip_prefix(PAYLOAD_TYPE_PREFIX)
        .is_some_and(|f| KNOWN.contains(&f))
}

fn decode_payload(p: Payload<'_>) -> Result<V2Frame, DecodeError> {
    let fragment = match p.t.strip_prefix(PAYLOAD_TYPE_PREFIX) {
        Some(f) if KNOWN.contains(&f) => f,
        _ => return Ok(unknown(p.t)),
    };
    if fragment == "info" {
        return Ok(V2Frame::Control(Control::Info {
            name: p
                .name
                .ok_or(DecodeError::Invalid { field: "name" })?
                .into_owned(),
            message: p.message.map(Cow::into_owned),
        }));
    }
    let seq = p.seq.ok_or(DecodeError::Invalid { field: "seq" })?;
    if seq < 0 {
        return Err(DecodeError::Invalid { field: "seq" });
    }
    let did = p
        .did
        .as_deref()
        .and_then(Did::parse)
        .ok_or(DecodeError::Invalid { field: "did" })?;
    let time_us = p
        .time
        .as_deref()
        .and_then(|t| parse_time_us(t).ok())
        .ok_or(DecodeError::Invalid { field: "time" })?;
    let kind = match fragment {
        "commit" => EventKind::Commit(commit_from(CommitJson {
            rev: p.rev.ok_or(DecodeError::Invalid { field: "rev" })?,
            operation: p
                .operation
                .ok_or(DecodeError::Invalid { field: "operation" })?,
            collection: p.collection.ok_or(DecodeError::Invalid {
                field: "collection",
            })?,
            rkey: p.rkey.ok_or(DecodeError::Invalid { field: "rkey" })?,
            record: p.record,
            cid: p.cid,
        })?),
        "identity" => identity_from(p.identity)?,
        "account" => {
            let a = p.account.ok_or(DecodeError::Invalid { field: "account" })?;
            EventKind::Account {
                active: a.active,
                status: a.status.map(|s| AccountStatus::parse(&s)),
            }
        }
        // "sync"; `KNOWN` leaves nothing else.
        _ => {
            let s = p.sync.ok_or(DecodeError::Invalid { field: "sync" })?;
            if !valid_rev(&s.rev) {
                return Err(DecodeError::Invalid { field: "rev" });
            }
            EventKind::Sync {
                rev: s.rev.into_owned(),
            }
        }
    };
    Ok(V2Frame::Event(Event {
        cursor: Cursor(seq),
        time_us,
        did,
        kind,
    }))
}

fn unknown(t: Cow<'_, str>) -> V2Frame {
    V2Frame::Control(Control::Unknown {
        op: None,
        t: Some(t.into_owned()),
    })
}

/// The v2 decoder of one reader: JSON text, or zstd frames inflated with the
/// dictionary negotiated for the current connection.
#[derive(Default)]
pub struct Decoder {
    zstd: Option<FrameDecompressor>,
}

impl Decoder {
    /// A new connection, which asked for `dict` (`None`: uncompressed).
    /// `Err`: zstd refused the dictionary; the connection then has none, and
    /// compressed frames are dropped.
    pub fn connect(&mut self, dict: Option<&[u8]>) -> Result<(), ZstdError> {
        self.zstd = None;
        if let Some(bytes) = dict {
            self.zstd = Some(FrameDecompressor::new(bytes)?);
        }
        Ok(())
    }

    /// Decodes one message into `out`.
    pub fn decode(&mut self, msg: Message<'_>, max_len: usize, out: &mut Output) {
        let text = match msg {
            Message::Text(text) => text,
            Message::Binary(frame) => {
                match inflate(self.zstd.as_mut(), frame, max_len, &mut out.dropped) {
                    Some(text) => text,
                    None => return,
                }
            }
        };
        match decode_v2(text) {
            Ok(V2Frame::Event(ev)) => out.events.push(ev),
            Ok(V2Frame::Control(c)) => out.control = Some(c),
            Err(error) => out.dropped.push(Dropped::Jetstream {
                error,
                len: text.len(),
            }),
        }
    }
}

#[cfg(test)]
mod tests;
