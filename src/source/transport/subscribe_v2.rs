//! The Jetstream v2 handshake, pure: subscribe query parameters, the
//! websocket subprotocol, and reading the `getZstdDictionary` response.
//!
//! Owns: parameter names and encodings as the `subscribeEvents` and
//! `getZstdDictionary` lexicons define them. Does not own: URL building
//! (`subscribe`), HTTP (`dictionary`), websocket IO (`connection`).
//!
//! Invariants: arrays are repeated keys (`kinds=commit&kinds=sync`), never
//! comma-joined; `cursor` is a v2 `seq` (values ≥ 1e15 would be read by the
//! server as a µs timestamp); resuming replays the cursor's own event, which
//! the decoder drops (`stream::Resume`).

use crate::source::codecs::zstd_frames::dictionary_id;

/// XRPC path of the v2 stream.
pub const SUBSCRIBE_PATH: &str = "/xrpc/network.bsky.jetstream.subscribeEvents";
/// XRPC path of the dictionary download.
pub const GET_ZSTD_DICTIONARY_PATH: &str = "/xrpc/network.bsky.jetstream.getZstdDictionary";
/// The websocket subprotocol to offer (`Sec-WebSocket-Protocol`); the
/// server also uses this framing when none is offered.
pub const SUBPROTOCOL: &str = "xrpc.v1.json";
/// Accepted values of `kinds` (the payload `$type` fragments).
pub const KINDS: [&str; 4] = ["commit", "identity", "account", "sync"];
/// Larger dictionary bodies are refused (the current one is 64 KiB).
pub const MAX_DICTIONARY_LEN: usize = 4 << 20;

/// Query pairs for `subscribeEvents`, in a stable order. Empty filters are
/// omitted (match-all). The server answers 400 for a kind outside
/// [`KINDS`], for more than 4 kinds, 100 collections or 10,000 DIDs, and for
/// `collections` with `kinds` that excludes `commit`.
pub fn subscribe_query(
    collections: &[String],
    dids: &[String],
    kinds: &[&str],
    cursor: Option<i64>,
    zstd_dictionary: Option<u32>,
) -> Vec<(String, String)> {
    let mut q = Vec::with_capacity(collections.len() + dids.len() + kinds.len() + 2);
    q.extend(kinds.iter().map(|k| ("kinds".to_owned(), (*k).to_owned())));
    q.extend(
        collections
            .iter()
            .map(|c| ("collections".to_owned(), c.clone())),
    );
    q.extend(dids.iter().map(|d| ("dids".to_owned(), d.clone())));
    if let Some(c) = cursor {
        q.push(("cursor".to_owned(), c.to_string()));
    }
    if let Some(id) = zstd_dictionary {
        q.push(("zstdDictionary".to_owned(), id.to_string()));
    }
    q
}

/// Query pairs for `getZstdDictionary`: `id` if given, else the server's
/// current dictionary.
pub fn zstd_dictionary_query(id: Option<u32>) -> Vec<(String, String)> {
    id.map(|id| vec![("id".to_owned(), id.to_string())])
        .unwrap_or_default()
}

/// Why a `getZstdDictionary` response is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DictionaryError {
    /// An XRPC error envelope (`DictionaryNotFound` for a retired ID). The
    /// caller fetches again without an `id`, or connects uncompressed.
    #[error("xrpc error {error}: {message:?}")]
    Xrpc {
        error: String,
        message: Option<String>,
    },
    /// The body is not a structured zstd dictionary (no magic or ID 0).
    /// The caller connects uncompressed and logs it.
    #[error("response is not a zstd dictionary")]
    NotADictionary,
    /// The dictionary carries another ID than the one asked for. The caller
    /// uses the ID it got (never the requested one) or connects uncompressed.
    #[error("asked for dictionary {requested}, got {got}")]
    WrongId { requested: u32, got: u32 },
    /// More than [`MAX_DICTIONARY_LEN`] bytes. The caller connects
    /// uncompressed and logs it.
    #[error("dictionary of {0} bytes is too large")]
    TooLarge(usize),
}

#[derive(serde::Deserialize)]
struct XrpcError {
    error: String,
    message: Option<String>,
}

/// Reads a `getZstdDictionary` body: `application/octet-stream`, the raw
/// structured dictionary (RFC 8878 §5), ID taken from its header. A JSON
/// body is the XRPC error envelope. Returns the ID and the dictionary bytes
/// to pass to `FrameDecompressor::new` and cache by ID.
pub fn parse_zstd_dictionary<'b>(
    content_type: Option<&str>,
    body: &'b [u8],
    requested: Option<u32>,
) -> Result<(u32, &'b [u8]), DictionaryError> {
    let json = content_type.is_some_and(|ct| ct.trim_start().starts_with("application/json"));
    if json {
        return Err(match serde_json::from_slice::<XrpcError>(body) {
            Ok(e) => DictionaryError::Xrpc {
                error: e.error,
                message: e.message,
            },
            Err(_) => DictionaryError::NotADictionary,
        });
    }
    if body.len() > MAX_DICTIONARY_LEN {
        return Err(DictionaryError::TooLarge(body.len()));
    }
    let got = dictionary_id(body).ok_or(DictionaryError::NotADictionary)?;
    match requested {
        Some(requested) if requested != got => Err(DictionaryError::WrongId { requested, got }),
        _ => Ok((got, body)),
    }
}
