//! Streaming CARv1 reader with a memory bound: bytes arrive in chunks (an
//! HTTP body), complete sections are indexed as soon as they are whole, and
//! the total never exceeds the bound given to [`CarStream::new`].
//!
//! Owns: incremental splitting into header and blocks, the block index
//! ([`Blocks`]). Does not own: hashing (blocks are checked when used, see
//! `verify`), decoding.
//!
//! Invariants: the buffer only grows by the bytes pushed and a push that
//! would take it past the bound fails with `TooBig` before copying; a
//! length prefix larger than the bound is rejected before waiting for its
//! bytes; the first copy of a duplicated block wins (as in `car::Car`).

use std::collections::HashMap;
use std::ops::Range;

use super::RepoError;
use crate::source::codecs::car::{self, CarError, MAX_VARINT_LEN};

/// Blocks of a whole CAR, kept in one buffer and indexed by binary CID.
#[derive(Debug, Default)]
pub struct Blocks {
    buf: Vec<u8>,
    roots: Vec<Range<usize>>,
    index: HashMap<Box<[u8]>, Range<usize>>,
}

impl Blocks {
    /// The header's root CIDs (binary).
    pub fn roots(&self) -> impl Iterator<Item = &[u8]> {
        self.roots.iter().map(|r| &self.buf[r.clone()])
    }

    /// The block named by the binary `cid`, not yet hash-checked.
    pub fn get(&self, cid: &[u8]) -> Option<&[u8]> {
        self.index.get(cid).map(|r| &self.buf[r.clone()])
    }

    /// Number of distinct blocks.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when the CAR had no block.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Bytes held (the CAR's size).
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// Reads a whole in-memory CAR (tests, benches, small slices).
    pub fn from_car(bytes: &[u8], max_bytes: u64) -> Result<Blocks, RepoError> {
        let mut s = CarStream::new(max_bytes);
        s.push(bytes)?;
        s.finish()
    }
}

/// Incremental CAR reader: [`push`](Self::push) chunks, then
/// [`finish`](Self::finish).
#[derive(Debug)]
pub struct CarStream {
    blocks: Blocks,
    /// Start of the first section not yet indexed.
    parsed: usize,
    header_done: bool,
    max_bytes: u64,
}

impl CarStream {
    /// A reader that refuses CARs larger than `max_bytes`.
    pub fn new(max_bytes: u64) -> CarStream {
        CarStream {
            blocks: Blocks::default(),
            parsed: 0,
            header_done: false,
            max_bytes,
        }
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.blocks.buf.len() as u64
    }

    /// Appends a chunk and indexes every section it completes.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), RepoError> {
        if self.received() + chunk.len() as u64 > self.max_bytes {
            return Err(RepoError::TooBig(self.max_bytes));
        }
        self.blocks.buf.extend_from_slice(chunk);
        self.index_complete()
    }

    /// Ends the stream: every byte must belong to a complete section.
    pub fn finish(mut self) -> Result<Blocks, RepoError> {
        self.index_complete()?;
        if !self.header_done {
            return Err(RepoError::Malformed("CAR without a header"));
        }
        if self.parsed != self.blocks.buf.len() {
            return Err(RepoError::Malformed("CAR truncated"));
        }
        Ok(self.blocks)
    }

    fn index_complete(&mut self) -> Result<(), RepoError> {
        let len = self.blocks.buf.len();
        loop {
            let mut pos = self.parsed;
            let section_len = match car::read_uvarint(&self.blocks.buf, &mut pos) {
                Ok(n) => n,
                Err(CarError::Truncated(_)) if len - self.parsed < MAX_VARINT_LEN => {
                    return Ok(()); // the varint is still arriving
                }
                Err(_) => return Err(RepoError::Malformed("CAR section length")),
            };
            if section_len == 0 || section_len > self.max_bytes {
                return Err(if section_len == 0 {
                    RepoError::Malformed("empty CAR section")
                } else {
                    RepoError::TooBig(self.max_bytes)
                });
            }
            let end = pos as u64 + section_len;
            if end > len as u64 {
                return Ok(()); // the section is still arriving
            }
            let section = pos..end as usize;
            if self.header_done {
                self.index_block(section)?;
            } else {
                self.read_header(section)?;
            }
            self.parsed = end as usize;
        }
    }

    fn read_header(&mut self, section: Range<usize>) -> Result<(), RepoError> {
        let buf = &self.blocks.buf;
        let roots =
            car::parse_header(&buf[section]).map_err(|_| RepoError::Malformed("CAR header"))?;
        for root in roots {
            // Each root borrows the buffer: turn it back into a range.
            let start = root.as_ptr() as usize - buf.as_ptr() as usize;
            self.blocks.roots.push(start..start + root.len());
        }
        self.header_done = true;
        Ok(())
    }

    fn index_block(&mut self, section: Range<usize>) -> Result<(), RepoError> {
        let bytes = &self.blocks.buf[section.clone()];
        let cid_len = car::parse_cid(bytes)
            .map_err(|_| RepoError::Malformed("block CID"))?
            .len;
        let cid: Box<[u8]> = bytes[..cid_len].into();
        self.blocks
            .index
            .entry(cid)
            .or_insert(section.start + cid_len..section.end);
        Ok(())
    }
}
