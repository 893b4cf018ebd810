//! Strict DAG-CBOR reading and the DAG-CBOR → atproto-JSON transcoder.
//!
//! Owns: the strict low-level [`Reader`] (item heads, strings, links, keys,
//! skipping) shared by `car` (CAR header) and `firehose` (frame header and
//! `#commit` body), [`CborError`], and, in submodules, turning one record
//! block into the exact JSON text Jetstream v1 emits for it
//! ([`Transcoder`], see `transcode` for the output rules and `json` for the
//! text writers). Does not own: CID verification (`car`), frames (`firehose`).
//!
//! Invariants (rejected with [`CborError`], never a panic): strict DAG-CBOR as
//! `serde_ipld_dagcbor` 0.7 enforces it by default — minimal heads, definite
//! lengths, text keys in length-then-bytes order without duplicates, only tag
//! 42 (`0xd8 0x2a`), only `false`/`true`/`null` simple values, valid UTF-8, no
//! trailing bytes — plus the atproto data model for records: no floats,
//! integers within i64, links are DASL CIDs (v1, raw or dag-cbor, sha-256 or
//! blake3, 32-byte digest), nesting ≤ [`MAX_DEPTH`]. Every declared length is
//! checked against the bytes that remain before anything is allocated.

mod json;
mod transcode;

pub use json::{push_cid_base32, push_json_str};
pub use transcode::{Transcoder, record_to_json, value_to_json};

/// Deepest container nesting accepted (atproto itself recommends 32).
pub const MAX_DEPTH: usize = 128;
/// Most elements in one array or map (indigo `MAX_CBOR_CONTAINER_LEN`).
pub const MAX_CONTAINER_LEN: u64 = 128 * 1024;
/// Longest map key in bytes (indigo `MAX_OBJECT_KEY_LEN`).
pub const MAX_KEY_LEN: usize = 8192;
/// Largest record block (indigo `MAX_CBOR_RECORD_SIZE`).
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// Why a block is not valid DAG-CBOR / atproto data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CborError {
    #[error("unexpected end of input")]
    Eof,
    #[error("trailing bytes after the value")]
    TrailingData,
    #[error("integer or length not in its shortest form")]
    NonMinimal,
    #[error("indefinite-length item")]
    Indefinite,
    #[error("reserved additional-information value")]
    Reserved,
    #[error("floats are not allowed in atproto data")]
    Float,
    #[error("integer outside the signed 64-bit range")]
    IntRange,
    #[error("simple value other than false/true/null")]
    Simple,
    #[error("tag other than 42")]
    Tag,
    #[error("invalid CID link")]
    Cid,
    #[error("map key is not a text string")]
    KeyType,
    #[error("map keys out of DAG-CBOR order or duplicated")]
    KeyOrder,
    #[error("invalid UTF-8 in a text string")]
    Utf8,
    #[error("nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("length larger than the input or a data-model limit")]
    TooLong,
    #[error("record is not a map")]
    NotAnObject,
    #[error("atproto data model: {0}")]
    DataModel(&'static str),
}

pub(crate) type Result<T> = std::result::Result<T, CborError>;

pub(crate) const MAJOR_UINT: u8 = 0;
pub(crate) const MAJOR_NINT: u8 = 1;
pub(crate) const MAJOR_BYTES: u8 = 2;
pub(crate) const MAJOR_TEXT: u8 = 3;
pub(crate) const MAJOR_ARRAY: u8 = 4;
pub(crate) const MAJOR_MAP: u8 = 5;
pub(crate) const MAJOR_TAG: u8 = 6;
pub(crate) const MAJOR_SIMPLE: u8 = 7;

/// A cursor over a byte slice that reads strict DAG-CBOR item heads.
pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    #[inline]
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    #[inline]
    fn byte(&mut self) -> Result<u8> {
        let b = *self.buf.get(self.pos).ok_or(CborError::Eof)?;
        self.pos += 1;
        Ok(b)
    }

    #[inline]
    pub(crate) fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        if n > self.remaining() as u64 {
            return Err(CborError::Eof);
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.buf[start..self.pos])
    }

    #[inline]
    fn be(&mut self, n: u64) -> Result<u64> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    /// Reads one item head as `(major, argument)`. Rejects non-minimal and
    /// indefinite forms; for major 7 returns 20/21/22 (false/true/null) only.
    #[inline]
    pub(crate) fn head(&mut self) -> Result<(u8, u64)> {
        let b = self.byte()?;
        let (major, info) = (b >> 5, b & 0x1f);
        if major == MAJOR_SIMPLE {
            return match info {
                20..=22 => Ok((major, u64::from(info))),
                25..=27 => Err(CborError::Float),
                31 => Err(CborError::Indefinite),
                _ => Err(CborError::Simple),
            };
        }
        let (arg, min) = match info {
            0..=23 => return Ok((major, u64::from(info))),
            24 => (self.be(1)?, 24),
            25 => (self.be(2)?, 0x100),
            26 => (self.be(4)?, 0x1_0000),
            27 => (self.be(8)?, 0x1_0000_0000),
            31 => return Err(CborError::Indefinite),
            _ => return Err(CborError::Reserved),
        };
        if arg < min {
            return Err(CborError::NonMinimal);
        }
        Ok((major, arg))
    }

    /// Reads a text string's body of `len` bytes.
    #[inline]
    fn text(&mut self, len: u64) -> Result<&'a str> {
        std::str::from_utf8(self.take(len)?).map_err(|_| CborError::Utf8)
    }

    /// Reads a text string item.
    pub(crate) fn read_text(&mut self) -> Result<&'a str> {
        match self.head()? {
            (MAJOR_TEXT, len) => self.text(len),
            _ => Err(CborError::DataModel("expected a text string")),
        }
    }

    /// Reads a map head and returns its length.
    pub(crate) fn read_map_len(&mut self) -> Result<u64> {
        match self.head()? {
            (MAJOR_MAP, n) if n <= self.remaining() as u64 => Ok(n),
            (MAJOR_MAP, _) => Err(CborError::TooLong),
            _ => Err(CborError::DataModel("expected a map")),
        }
    }

    /// Reads an array head and returns its length.
    pub(crate) fn read_array_len(&mut self) -> Result<u64> {
        match self.head()? {
            (MAJOR_ARRAY, n) if n <= self.remaining() as u64 => Ok(n),
            (MAJOR_ARRAY, _) => Err(CborError::TooLong),
            _ => Err(CborError::DataModel("expected an array")),
        }
    }

    /// Reads an unsigned integer item.
    pub(crate) fn read_uint(&mut self) -> Result<u64> {
        match self.head()? {
            (MAJOR_UINT, v) => Ok(v),
            _ => Err(CborError::DataModel("expected an unsigned integer")),
        }
    }

    /// Reads a tag-42 link and returns the binary CID (after the 0x00 prefix),
    /// without judging the CID itself (see `car::parse_cid`).
    pub(crate) fn read_link(&mut self) -> Result<&'a [u8]> {
        match self.head()? {
            (MAJOR_TAG, 42) => self.link_body(),
            (MAJOR_TAG, _) => Err(CborError::Tag),
            _ => Err(CborError::DataModel("expected a CID link")),
        }
    }

    /// The byte string after a tag 42: `0x00 ‖ binary CID`.
    pub(crate) fn link_body(&mut self) -> Result<&'a [u8]> {
        let bytes = match self.head()? {
            (MAJOR_BYTES, len) => self.take(len)?,
            _ => return Err(CborError::Cid),
        };
        match bytes.split_first() {
            Some((0, cid)) if !cid.is_empty() => Ok(cid),
            _ => Err(CborError::Cid),
        }
    }

    /// Reads a whole map key and checks it sorts after `prev` (DAG-CBOR
    /// order: shorter first, then bytewise; no duplicates). The caller checks
    /// UTF-8 with [`check_utf8`] (callers matching known ASCII names only
    /// need to check the keys they don't know).
    #[inline]
    pub(crate) fn raw_key(&mut self, prev: Option<&[u8]>) -> Result<&'a [u8]> {
        let key = match self.head()? {
            (MAJOR_TEXT, len) => self.take(len)?,
            _ => return Err(CborError::KeyType),
        };
        if let Some(p) = prev {
            let ordered = p.len() < key.len() || (p.len() == key.len() && p < key);
            if !ordered {
                return Err(CborError::KeyOrder);
            }
        }
        Ok(key)
    }

    /// Skips one complete, strictly valid item (unknown fields).
    pub(crate) fn skip_value(&mut self, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(CborError::TooDeep);
        }
        match self.head()? {
            (MAJOR_BYTES, len) => {
                self.take(len)?;
            }
            (MAJOR_TEXT, len) => {
                self.text(len)?;
            }
            (MAJOR_ARRAY, n) => {
                if n > self.remaining() as u64 {
                    return Err(CborError::TooLong);
                }
                for _ in 0..n {
                    self.skip_value(depth + 1)?;
                }
            }
            (MAJOR_MAP, n) => {
                if n.saturating_mul(2) > self.remaining() as u64 {
                    return Err(CborError::TooLong);
                }
                let mut prev = None;
                for _ in 0..n {
                    let key = self.raw_key(prev)?;
                    check_utf8(key)?;
                    prev = Some(key);
                    self.skip_value(depth + 1)?;
                }
            }
            (MAJOR_TAG, 42) => {
                self.link_body()?;
            }
            (MAJOR_TAG, _) => return Err(CborError::Tag),
            _ => {} // integers, false/true/null
        }
        Ok(())
    }

    /// Reads a signed integer item within i64.
    pub(crate) fn read_i64(&mut self) -> Result<i64> {
        match self.head()? {
            (MAJOR_UINT, v) => i64::try_from(v).map_err(|_| CborError::IntRange),
            (MAJOR_NINT, v) => i64::try_from(v)
                .map(|v| -1 - v)
                .map_err(|_| CborError::IntRange),
            _ => Err(CborError::DataModel("expected an integer")),
        }
    }

    /// Reads a byte string item.
    pub(crate) fn read_bytes(&mut self) -> Result<&'a [u8]> {
        match self.head()? {
            (MAJOR_BYTES, len) => self.take(len),
            _ => Err(CborError::DataModel("expected a byte string")),
        }
    }

    /// Consumes a `null` if one is next.
    pub(crate) fn take_null(&mut self) -> bool {
        let null = self.buf.get(self.pos) == Some(&0xf6);
        self.pos += usize::from(null);
        null
    }
}

/// Checks that an unknown map key read with [`Reader::raw_key`] is UTF-8.
#[inline]
pub(crate) fn check_utf8(bytes: &[u8]) -> Result<()> {
    // `is_ascii` is much cheaper than `from_utf8` on short strings.
    if bytes.is_ascii() || std::str::from_utf8(bytes).is_ok() {
        Ok(())
    } else {
        Err(CborError::Utf8)
    }
}

/// True for a DASL CID: v1, raw or dag-cbor, sha-256 or blake3, 32-byte digest.
pub(crate) fn is_dasl_cid(cid: &[u8]) -> bool {
    cid.len() == 36
        && cid[0] == 0x01
        && (cid[1] == 0x55 || cid[1] == 0x71)
        && (cid[2] == 0x12 || cid[2] == 0x1e)
        && cid[3] == 0x20
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD_NO_PAD;
    use ipld_core::ipld::Ipld;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

    pub(crate) fn b64(s: &str) -> Vec<u8> {
        STANDARD_NO_PAD.decode(s.trim_end_matches('=')).unwrap()
    }

    pub(crate) fn to_b64(b: &[u8]) -> String {
        STANDARD_NO_PAD.encode(b)
    }

    /// atproto JSON → Ipld: `{"$link"}` / `{"$bytes"}` objects become links /
    /// bytes only when well-formed (otherwise they stay plain maps, so the
    /// decoder under test sees them); integral floats become integers.
    pub(crate) fn json_to_ipld(v: &Value) -> Ipld {
        match v {
            Value::Null => Ipld::Null,
            Value::Bool(b) => Ipld::Bool(*b),
            Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => Ipld::Integer(i.into()),
                (_, Some(u), _) => Ipld::Integer(u.into()),
                (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 9e15 => Ipld::Integer(f as i128),
                (_, _, Some(f)) => Ipld::Float(f),
                _ => unreachable!(),
            },
            Value::String(s) => Ipld::String(s.clone()),
            Value::Array(a) => Ipld::List(a.iter().map(json_to_ipld).collect()),
            Value::Object(o) => {
                if o.len() == 1 {
                    if let Some(Value::String(s)) = o.get("$link")
                        && let Ok(c) = cid::Cid::try_from(s.as_str())
                    {
                        return Ipld::Link(c);
                    }
                    if let Some(Value::String(s)) = o.get("$bytes")
                        && let Ok(b) = STANDARD_NO_PAD.decode(s)
                    {
                        return Ipld::Bytes(b);
                    }
                }
                Ipld::Map(
                    o.iter()
                        .map(|(k, v)| (k.clone(), json_to_ipld(v)))
                        .collect(),
                )
            }
        }
    }

    pub(crate) fn json_to_dagcbor(v: &Value) -> Vec<u8> {
        serde_ipld_dagcbor::to_vec(&json_to_ipld(v)).unwrap()
    }

    pub(crate) fn ipld_to_json(v: &Ipld) -> Value {
        match v {
            Ipld::Null => Value::Null,
            Ipld::Bool(b) => json!(b),
            Ipld::Integer(i) => json!(*i as i64),
            Ipld::Float(f) => json!(f),
            Ipld::String(s) => json!(s),
            Ipld::Bytes(b) => json!({"$bytes": to_b64(b)}),
            Ipld::List(l) => Value::Array(l.iter().map(ipld_to_json).collect()),
            Ipld::Map(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), ipld_to_json(v)))
                    .collect(),
            ),
            Ipld::Link(c) => json!({"$link": c.to_string()}),
        }
    }

    pub(crate) fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    pub(crate) fn reference_accepts(bytes: &[u8]) -> bool {
        serde_ipld_dagcbor::from_slice::<Ipld>(bytes).is_ok()
    }

    /// hyphacoop/dasl-testing vectors. A case applies to us if it is tagged
    /// `basic`, `dag-cbor` or `dasl-cid`; `invalid_out` (encoder) cases and
    /// cases only for other profiles (rfc8949, dCBOR, CBOR-Core) don't apply.
    #[test]
    fn dasl_cbor_vectors() {
        let dir = format!("{FIXTURES}/dasl-cbor");
        let (mut ok, mut rejected, mut data_model) = (0, 0, 0);
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let cases: Vec<Value> =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            for case in cases {
                let tags: Vec<&str> = case["tags"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_str().unwrap())
                    .collect();
                if !tags
                    .iter()
                    .any(|t| matches!(*t, "basic" | "dag-cbor" | "dasl-cid"))
                {
                    continue;
                }
                let data = hex(case["data"].as_str().unwrap());
                let name = format!("{}: {}", path.display(), case["name"]);
                let got = value_to_json(&data);
                match case["type"].as_str().unwrap() {
                    "roundtrip" => match got {
                        Ok(json) => {
                            let reference = serde_ipld_dagcbor::from_slice::<Ipld>(&data).unwrap();
                            assert_eq!(
                                serde_json::from_str::<Value>(&json).unwrap(),
                                ipld_to_json(&reference),
                                "{name}"
                            );
                            ok += 1;
                        }
                        // Valid DAG-CBOR that the atproto data model excludes.
                        Err(e @ (CborError::Float | CborError::IntRange)) => {
                            assert!(reference_accepts(&data), "{name}: {e}");
                            data_model += 1;
                        }
                        Err(e) => panic!("{name}: rejected valid input: {e}"),
                    },
                    "invalid_in" => {
                        assert!(got.is_err(), "{name}: accepted invalid input as {got:?}");
                        rejected += 1;
                    }
                    _ => {}
                }
            }
        }
        // All 23 applicable roundtrip cases: 18 decode, 5 are valid DAG-CBOR
        // but not atproto data (3 floats, 2 integers outside i64). All 60
        // applicable invalid_in cases are rejected.
        assert_eq!((ok, data_model, rejected), (18, 5, 60));
    }

    #[test]
    fn nesting_limit() {
        let nest = |depth: usize| {
            let mut v = vec![0xa1, 0x61, b'a'];
            v.extend(std::iter::repeat_n(0x81, depth));
            v.push(0x00);
            v
        };
        assert!(record_to_json(&nest(MAX_DEPTH - 1)).is_ok());
        assert_eq!(
            record_to_json(&nest(MAX_DEPTH + 5)),
            Err(CborError::TooDeep)
        );
        assert_eq!(record_to_json(&nest(100_000)), Err(CborError::TooDeep));
    }

    #[test]
    fn huge_declared_lengths_fail_cleanly() {
        for h in [
            "a1616199ffff",
            "a161619bffffffffffffffff",
            "bbffffffffffffffff",
            "a161617bffffffffffffffff",
            "a161615a7fffffff",
        ] {
            assert!(record_to_json(&hex(h)).is_err(), "{h}");
        }
    }

    proptest! {
        /// Never panics, and never accepts what serde_ipld_dagcbor (strict)
        /// rejects.
        #[test]
        fn at_least_as_strict_as_the_reference(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if value_to_json(&bytes).is_ok() {
                prop_assert!(reference_accepts(&bytes), "{:02x?}", bytes);
            }
        }

    }
}
