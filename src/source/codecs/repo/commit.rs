//! The signed repository commit block `{did, version, data, rev, prev, sig}`
//! (atproto repository spec, versions 2 and 3) and its unsigned bytes.
//!
//! Owns: strict decoding of the commit block and the bytes the signature
//! covers (the same map without `sig`). Does not own: checking the
//! signature (`key`), the MST under `data` (`mst`).
//!
//! Invariants: the block is strict DAG-CBOR (the shared `Reader`), so its
//! entries are already in canonical order and minimal form; the unsigned
//! bytes are therefore the map head for one entry fewer followed by every
//! other entry copied byte for byte, which is exactly the canonical
//! encoding of the unsigned commit. Unknown keys are kept (they are signed).

use super::RepoError;
use crate::source::codecs::dagcbor::{Reader, check_utf8};

/// A decoded commit, borrowing the block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit<'a> {
    pub did: &'a str,
    pub version: u64,
    /// Binary CID of the MST root.
    pub data: &'a [u8],
    /// The commit's revision (TID); empty for legacy v2 commits without one.
    pub rev: &'a str,
    pub prev: Option<&'a [u8]>,
    pub sig: &'a [u8],
    /// The canonical encoding of the commit without `sig`: what is signed.
    pub unsigned: Vec<u8>,
}

const MALFORMED: RepoError = RepoError::Malformed("commit block");

impl<'a> Commit<'a> {
    /// Decodes a commit block strictly.
    pub fn parse(block: &'a [u8]) -> Result<Commit<'a>, RepoError> {
        let mut r = Reader::new(block);
        let n = r.read_map_len().map_err(|_| MALFORMED)?;
        if n == 0 || n > 23 {
            return Err(MALFORMED); // six keys in practice; one-byte map heads only
        }
        let mut unsigned = Vec::with_capacity(block.len());
        unsigned.push(0xa0 | (n as u8 - 1));
        let (mut did, mut version, mut data, mut rev, mut prev, mut sig) =
            (None, None, None, None, None, None);
        let mut prev_key = None;
        for _ in 0..n {
            let start = r.position();
            let key = r.raw_key(prev_key).map_err(|_| MALFORMED)?;
            check_utf8(key).map_err(|_| MALFORMED)?;
            prev_key = Some(key);
            match key {
                b"did" => did = Some(r.read_text().map_err(|_| MALFORMED)?),
                b"rev" => rev = Some(r.read_text().map_err(|_| MALFORMED)?),
                b"sig" => sig = Some(r.read_bytes().map_err(|_| MALFORMED)?),
                b"data" => data = Some(r.read_link().map_err(|_| MALFORMED)?),
                b"prev" => {
                    prev = Some(if r.take_null() {
                        None
                    } else {
                        Some(r.read_link().map_err(|_| MALFORMED)?)
                    })
                }
                b"version" => version = Some(r.read_uint().map_err(|_| MALFORMED)?),
                _ => r.skip_value(1).map_err(|_| MALFORMED)?,
            }
            if key != b"sig" {
                unsigned.extend_from_slice(&block[start..r.position()]);
            }
        }
        if r.remaining() != 0 {
            return Err(MALFORMED);
        }
        let version = version.ok_or(MALFORMED)?;
        if !(2..=3).contains(&version) {
            return Err(RepoError::Malformed("commit version"));
        }
        Ok(Commit {
            did: did.ok_or(MALFORMED)?,
            version,
            data: data.ok_or(MALFORMED)?,
            rev: match (rev, version) {
                (Some(rev), _) => rev,
                (None, 2) => "",
                (None, _) => return Err(MALFORMED),
            },
            prev: prev.flatten(),
            sig: sig.ok_or(RepoError::BadSignature)?,
            unsigned,
        })
    }
}
