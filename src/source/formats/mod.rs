//! Formats: websocket messages → events, one module per wire format, no IO.
//!
//! Owns: the [`Decoder`] a reader feeds every message to, and what it hands
//! back ([`Output`]: events, typed [`Dropped`] reasons, a [`Control`] frame).
//! Each per-format decoder owns its protocol state: the zstd dictionary
//! (`jetstream`, `jetstream_v2`), the DAG-CBOR transcoder and the per-repo
//! rev chain (`firehose`). This wrapper owns the rules common to all: the
//! message size limit and the resume floor (`stream::Resume`). Shared
//! pieces: [`control`] (info / error / unknown frames), [`time`] (the RFC
//! 3339 parser), [`rev`] (the rev check).
//!
//! Does not own: sockets, reconnects, counting and logging (`transport`),
//! nor the byte-level codecs (`codecs`).

pub mod control;
mod dropped;
pub mod firehose;
pub mod jetstream;
pub mod jetstream_v2;
pub mod rev;
pub mod time;

pub use control::Control;
pub use dropped::Dropped;

use super::codecs::zstd_frames::{FrameDecompressor, ZstdError};
use super::stream::WireFormat;
use crate::event::{Cursor, Event};

/// One websocket data message, borrowed from the socket's buffer.
#[derive(Debug, Clone, Copy)]
pub enum Message<'a> {
    Text(&'a [u8]),
    Binary(&'a [u8]),
}

impl Message<'_> {
    pub fn len(&self) -> usize {
        match self {
            Message::Text(b) | Message::Binary(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What one message decoded to. Reused from message to message: the
/// caller takes what it needs; [`Decoder::decode`] clears it first.
#[derive(Debug, Default)]
pub struct Output {
    /// The events, in stream order, none at or below the resume floor.
    pub events: Vec<Event>,
    /// What was dropped, in order.
    pub dropped: Vec<Dropped>,
    /// The control frame, if the message was one.
    pub control: Option<Control>,
    /// A firehose commit to verify (`source.verify`), whose events are
    /// `events`.
    pub proof: Option<firehose::Proof>,
}

/// The decoder cannot go on with this connection: reconnect.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    /// The bundled Jetstream v1 dictionary does not load (a broken build).
    #[error("bundled zstd dictionary unusable: {0}")]
    BundledDictionary(ZstdError),
}

impl Fault {
    /// Bounded reason label for the reconnect metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Fault::BundledDictionary(_) => "zstd_dictionary",
        }
    }
}

/// Decodes the messages of one reader's connections. Lives as long as the
/// reader: per-format state that spans connections (the firehose rev chain)
/// survives reconnects; [`Decoder::connect`] resets the per-connection part.
pub struct Decoder {
    max_len: usize,
    format: WireFormat,
    floor: Option<Cursor>,
    v1: jetstream::Decoder,
    v2: jetstream_v2::Decoder,
    firehose: firehose::Decoder,
}

impl Decoder {
    /// `max_len`: larger messages (before or after decompression) are
    /// dropped as oversized.
    pub fn new(max_len: usize) -> Decoder {
        Decoder {
            max_len,
            format: WireFormat::JetstreamV1,
            floor: None,
            v1: jetstream::Decoder::default(),
            v2: jetstream_v2::Decoder::default(),
            firehose: firehose::Decoder::default(),
        }
    }

    /// Firehose commits are kept for the verifier (`source.verify`).
    pub fn set_verify(&mut self, on: bool) {
        self.firehose.set_verify(on);
    }

    /// A new connection to a `format` stream: events at or below `floor`
    /// are dropped; `dict` is the Jetstream v2 dictionary it asked for.
    /// `Err`: zstd refused `dict`; the connection goes on without one.
    pub fn connect(
        &mut self,
        format: WireFormat,
        floor: Option<Cursor>,
        dict: Option<&[u8]>,
    ) -> Result<(), ZstdError> {
        self.format = format;
        self.floor = floor;
        match format {
            WireFormat::JetstreamV2 => self.v2.connect(dict),
            _ => Ok(()),
        }
    }

    /// Decodes one message into `out` (cleared first).
    pub fn decode(&mut self, msg: Message<'_>, out: &mut Output) -> Result<(), Fault> {
        out.events.clear();
        out.dropped.clear();
        out.control = None;
        out.proof = None;
        let len = msg.len();
        if len > self.max_len {
            out.dropped.push(Dropped::Oversized { len });
            return Ok(());
        }
        match (self.format, msg) {
            (WireFormat::JetstreamV1, msg) => self.v1.decode(msg, self.max_len, out)?,
            (WireFormat::JetstreamV2, msg) => self.v2.decode(msg, self.max_len, out),
            (WireFormat::Firehose, Message::Binary(b)) => self.firehose.decode(b, out),
            (WireFormat::Firehose, Message::Text(_)) => {
                out.dropped.push(Dropped::WrongFrameType { len })
            }
        }
        if let Some(floor) = self.floor {
            out.events.retain(|e| e.cursor > floor);
            if out.events.is_empty() {
                out.proof = None;
            }
        }
        Ok(())
    }
}

/// Inflates one zstd frame with the connection's decompressor, or records
/// why not (no dictionary, corrupt, over `max_len`).
fn inflate<'z>(
    zstd: Option<&'z mut FrameDecompressor>,
    frame: &[u8],
    max_len: usize,
    dropped: &mut Vec<Dropped>,
) -> Option<&'z [u8]> {
    let len = frame.len();
    let Some(d) = zstd else {
        dropped.push(Dropped::NoDictionary { len });
        return None;
    };
    match d.decompress(frame, max_len) {
        Ok(text) => Some(text),
        Err(error) => {
            dropped.push(Dropped::Zstd { error, len });
            None
        }
    }
}

#[cfg(test)]
mod tests;
