//! Pure decompression of dictionary-zstd Jetstream frames.
//!
//! Owns: turning one binary websocket message (exactly one zstd frame made
//! with a shared dictionary) back into the JSON text frame it carries, under
//! a hard cap on the decompressed size; the vendored Jetstream v1 dictionary;
//! reading a dictionary's ID from its header. Does not own: the socket,
//! fetching a v2 dictionary (`transport::dictionary`), or the JSON inside
//! (`formats::jetstream`, `formats::jetstream_v2`).
//!
//! Invariants: a frame never makes us allocate more than `max_len` bytes
//! for its output (a frame that declares a bigger content size is refused
//! before any allocation; one that declares nothing is decoded into a
//! buffer whose capacity is the cap, and zstd stops at the capacity); bad
//! input is an error, never a panic. Each Jetstream decoder holds one
//! [`FrameDecompressor`]: it owns a zstd context and reuses one output
//! buffer.

use zstd::zstd_safe;

/// The Jetstream v1 `/subscribe` dictionary (`compress=true`), vendored from
/// bluesky-social/jetstream (see `assets/README.md`).
pub const V1_DICTIONARY: &[u8] = include_bytes!("../../../assets/jetstream_v1.zdict");

/// The dictionary ID in [`V1_DICTIONARY`]'s header.
pub const V1_DICTIONARY_ID: u32 = 1_612_007_021;

/// Magic number opening a structured zstd dictionary (RFC 8878 §5).
const DICT_MAGIC: u32 = 0xEC30_A437;

/// zstd's name for `ZSTD_error_dstSize_tooSmall` (stable since zstd 1.0).
const DST_TOO_SMALL: &str = "Destination buffer is too small";

/// The ID of a structured zstd dictionary: magic `0xEC30A437`, then the ID
/// as a little-endian u32. `None` for raw-content dictionaries, short input
/// and the reserved ID 0.
pub fn dictionary_id(dict: &[u8]) -> Option<u32> {
    let magic = u32::from_le_bytes(dict.get(0..4)?.try_into().ok()?);
    let id = u32::from_le_bytes(dict.get(4..8)?.try_into().ok()?);
    (magic == DICT_MAGIC && id != 0).then_some(id)
}

/// Why a frame (or a dictionary) was refused.
#[derive(Debug, thiserror::Error)]
pub enum ZstdError {
    /// zstd rejected the dictionary. The caller does not enable
    /// compression with it (falls back to uncompressed frames, or fetches
    /// the dictionary again).
    #[error("unusable zstd dictionary: {0}")]
    Dictionary(String),
    /// The frame names a dictionary other than ours: the connection was
    /// negotiated with the wrong dictionary. The decoder drops the message
    /// as malformed; a connection that yields no event then forgets the
    /// cached dictionary on reconnect.
    #[error("frame wants dictionary {frame}, we hold {ours}")]
    WrongDictionary { frame: u32, ours: u32 },
    /// The frame decompresses to more than the cap (`declared` is the size
    /// the header announced, if any). The caller drops the message and
    /// counts it, as for an oversized text frame.
    #[error("frame exceeds {max_len} bytes (declared {declared:?})")]
    TooLarge {
        max_len: usize,
        declared: Option<u64>,
    },
    /// Not a valid zstd frame for this dictionary (garbage, truncated,
    /// corrupt). The caller drops the message and counts it as malformed.
    #[error("corrupt zstd frame: {0}")]
    Corrupt(String),
}

impl ZstdError {
    /// Bounded metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            ZstdError::Dictionary(_) | ZstdError::WrongDictionary { .. } => "zstd_dictionary",
            ZstdError::TooLarge { .. } => "too_large",
            ZstdError::Corrupt(_) => "malformed",
        }
    }
}

/// A per-connection zstd decompressor bound to one dictionary.
pub struct FrameDecompressor {
    inner: zstd::bulk::Decompressor<'static>,
    /// The dictionary's header ID, if it has one (checked against frames).
    dict_id: Option<u32>,
    /// Output buffer reused across frames; its length is the last output.
    buf: Vec<u8>,
}

impl FrameDecompressor {
    /// Loads `dict` (copied and parsed once, ~0.1 ms for the v1 dictionary).
    pub fn new(dict: &[u8]) -> Result<FrameDecompressor, ZstdError> {
        let inner = zstd::bulk::Decompressor::with_dictionary(dict)
            .map_err(|e| ZstdError::Dictionary(e.to_string()))?;
        Ok(FrameDecompressor {
            inner,
            dict_id: dictionary_id(dict),
            buf: Vec::new(),
        })
    }

    /// A decompressor for Jetstream v1 `/subscribe?compress=true` frames.
    pub fn v1() -> Result<FrameDecompressor, ZstdError> {
        FrameDecompressor::new(V1_DICTIONARY)
    }

    /// The ID of the dictionary this decompressor holds.
    pub fn dictionary_id(&self) -> Option<u32> {
        self.dict_id
    }

    /// Decompresses one frame into the reused buffer and returns its bytes,
    /// valid until the next call. Fails with [`ZstdError::TooLarge`] rather
    /// than producing more than `max_len` bytes.
    pub fn decompress(&mut self, frame: &[u8], max_len: usize) -> Result<&[u8], ZstdError> {
        if let (Some(ours), Some(theirs)) = (self.dict_id, zstd_safe::get_dict_id_from_frame(frame))
            && theirs.get() != ours
        {
            return Err(ZstdError::WrongDictionary {
                frame: theirs.get(),
                ours,
            });
        }
        let declared = match zstd_safe::get_frame_content_size(frame) {
            Ok(size) => size,
            Err(_) => return Err(ZstdError::Corrupt("no zstd frame header".into())),
        };
        let want = match declared {
            Some(n) if n > max_len as u64 => {
                return Err(ZstdError::TooLarge { max_len, declared });
            }
            // Fits in usize: bounded by max_len.
            Some(n) => n as usize,
            None => max_len,
        };
        self.buf.clear();
        self.buf.reserve(want);
        match self.inner.decompress_to_buffer(frame, &mut self.buf) {
            Ok(n) if n <= max_len => Ok(&self.buf[..n]),
            // Only when an earlier, larger cap left spare capacity.
            Ok(_) => Err(ZstdError::TooLarge { max_len, declared }),
            Err(e) if e.to_string() == DST_TOO_SMALL => {
                Err(ZstdError::TooLarge { max_len, declared })
            }
            Err(e) => Err(ZstdError::Corrupt(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests;
