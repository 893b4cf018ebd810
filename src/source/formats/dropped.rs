//! [`Dropped`]: why (part of) a message did not become events, as a type.
//!
//! Every decoder reports what it drops with one of these variants, carrying
//! what a log line needs. The transport counts each under its metric reason
//! (`malformed`, `oversized`, `unknown_type`, `stale_rev`) by matching on
//! the variant and the typed error inside it, never on label strings.

use super::firehose::{self, OpError};
use super::jetstream;
use crate::event::Did;
use crate::source::codecs::zstd_frames::ZstdError;

/// One thing a decoder dropped.
#[derive(Debug)]
pub enum Dropped {
    /// The message is larger than `source.max_message_bytes`.
    Oversized { len: usize },
    /// A frame type the format does not use (text on the firehose).
    WrongFrameType { len: usize },
    /// A compressed frame, but the connection has no dictionary.
    NoDictionary { len: usize },
    /// A compressed frame that does not inflate (corrupt, over the size
    /// limit, made with another dictionary).
    Zstd { error: ZstdError, len: usize },
    /// A Jetstream (v1 or v2) message that does not decode; `len` is the
    /// JSON's length.
    Jetstream {
        error: jetstream::DecodeError,
        len: usize,
    },
    /// A firehose message that does not decode as a whole.
    Firehose {
        error: firehose::DecodeError,
        len: usize,
    },
    /// A firehose commit whose rev is not newer than the last one seen for
    /// its repo: its `ops` events are dropped (counted once each).
    StaleCommit { did: Did, seq: i64, ops: usize },
    /// One op of an otherwise good firehose commit.
    BadOp { did: Did, seq: i64, op: OpError },
}

impl Dropped {
    /// How many events this drop counts as.
    pub fn events(&self) -> usize {
        match self {
            Dropped::StaleCommit { ops, .. } => *ops,
            _ => 1,
        }
    }
}
