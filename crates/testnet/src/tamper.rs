//! Tampered copies of real firehose `#commit` messages, for the live
//! verification tests (`source.verify`): each changes the bytes in place
//! (same lengths, so the message still decodes) and, where a CID names
//! the changed block, rewrites that CID everywhere in the message so the
//! frame is self-consistent and only the signature or the MST proof can
//! tell.

use ipld_core::ipld::Ipld;
use sha2::{Digest, Sha256};

/// The parts of a `#commit` body the tampering needs (binary CIDs).
struct Parts {
    commit: Vec<u8>,
    op_cids: Vec<Vec<u8>>,
    /// Each block of the CAR slice: its CID and the range of its data in
    /// the message.
    blocks: Vec<(Vec<u8>, std::ops::Range<usize>)>,
}

fn parts(msg: &[u8]) -> Parts {
    let mut de = serde_ipld_dagcbor::de::Deserializer::from_slice(msg);
    let _header: Ipld = serde::Deserialize::deserialize(&mut de).expect("header");
    let body: Ipld = serde::Deserialize::deserialize(&mut de).expect("body");
    let Ipld::Map(m) = body else { panic!("body") };
    let Some(Ipld::Link(commit)) = m.get("commit") else {
        panic!("a #commit message")
    };
    let Some(Ipld::Bytes(car)) = m.get("blocks") else {
        panic!("blocks")
    };
    let op_cids = match m.get("ops") {
        Some(Ipld::List(ops)) => ops
            .iter()
            .filter_map(|op| match op {
                Ipld::Map(o) => match o.get("cid") {
                    Some(Ipld::Link(c)) => Some(c.to_bytes()),
                    _ => None,
                },
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let base = find(msg, car).expect("the CAR bytes are in the message");
    let mut blocks = Vec::new();
    let mut pos = 0;
    let mut first = true;
    while pos < car.len() {
        let (len, n) = uvarint(&car[pos..]);
        pos += n;
        let section = pos..pos + len;
        pos += len;
        if first {
            first = false; // the header
            continue;
        }
        let cid_len = cid::Cid::read_bytes(&car[section.clone()])
            .expect("block CID")
            .encoded_len();
        let cid = car[section.start..section.start + cid_len].to_vec();
        blocks.push((cid, base + section.start + cid_len..base + section.end));
    }
    Parts {
        commit: commit.to_bytes(),
        op_cids,
        blocks,
    }
}

fn uvarint(b: &[u8]) -> (usize, usize) {
    let (mut v, mut shift) = (0usize, 0);
    for (i, &byte) in b.iter().enumerate() {
        v |= ((byte & 0x7f) as usize) << shift;
        if byte < 0x80 {
            return (v, i + 1);
        }
        shift += 7;
    }
    panic!("varint")
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The dag-cbor sha2-256 CIDv1 of `bytes`, binary.
fn cid_of(bytes: &[u8]) -> Vec<u8> {
    let mut c = vec![0x01, 0x71, 0x12, 0x20];
    c.extend_from_slice(&Sha256::digest(bytes));
    c
}

/// Replaces every occurrence of `old` (a CID) by `new` (same length).
fn replace_all(msg: &mut [u8], old: &[u8], new: &[u8]) {
    assert_eq!(old.len(), new.len());
    let mut at = 0;
    while let Some(i) = find(&msg[at..], old) {
        msg[at + i..at + i + old.len()].copy_from_slice(new);
        at += i + old.len();
    }
}

/// Block data of the first record an op creates or updates.
fn record(p: &Parts) -> std::ops::Range<usize> {
    let cid = p.op_cids.first().expect("an op with a record");
    p.blocks
        .iter()
        .find(|(c, _)| c == cid)
        .expect("the record's block")
        .1
        .clone()
}

/// One byte of the first record flipped, nothing else: its block no longer
/// hashes to the op's CID.
pub fn record_byte(msg: &[u8]) -> Vec<u8> {
    let p = parts(msg);
    let r = record(&p);
    let mut out = msg.to_vec();
    out[r.end - 1] ^= 0x01;
    out
}

/// The first record changed (one digit of its `createdAt`) and re-hashed,
/// with its CID rewritten in the CAR and the op: consistent with itself,
/// but not with the signed MST.
pub fn record_swapped(msg: &[u8]) -> Vec<u8> {
    let p = parts(msg);
    let r = record(&p);
    let mut out = msg.to_vec();
    let at = find(&out[r.clone()], b"createdAt").expect("a record with createdAt") + r.start;
    // `createdAt` then a text head, then `2026-…`: change the year's last digit.
    let year = find(&out[at..r.end], b"20").expect("a year") + at;
    out[year + 3] = if out[year + 3] == b'5' { b'4' } else { b'5' };
    let old = cid_of(&msg[r.clone()]);
    let new = cid_of(&out[r]);
    replace_all(&mut out, &old, &new);
    out
}

/// One byte of the commit's signature flipped, and the commit block's CID
/// rewritten (message, CAR root and block) so only the signature is wrong.
pub fn signature(msg: &[u8]) -> Vec<u8> {
    let p = parts(msg);
    let block = p
        .blocks
        .iter()
        .find(|(c, _)| *c == p.commit)
        .expect("the commit block")
        .1
        .clone();
    let mut out = msg.to_vec();
    // `sig` then a 64-byte byte string (0x58 0x40).
    let at = find(&out[block.clone()], b"csigX@").expect("sig") + block.start + 6;
    out[at + 10] ^= 0x01;
    let new = cid_of(&out[block]);
    replace_all(&mut out, &p.commit, &new);
    out
}

/// One byte of an MST node (a block that is neither the commit nor a
/// record) flipped: it no longer hashes to the CID its parent names.
pub fn mst_node(msg: &[u8]) -> Vec<u8> {
    let p = parts(msg);
    let (_, r) = p
        .blocks
        .iter()
        .find(|(c, _)| *c != p.commit && !p.op_cids.contains(c))
        .expect("an MST node in the CAR");
    let mut out = msg.to_vec();
    out[r.end - 1] ^= 0x01;
    out
}

/// The same message with its body's `seq` set to `seq` (re-encoded; the
/// signature does not cover it).
pub fn with_seq(msg: &[u8], seq: i64) -> Vec<u8> {
    let mut de = serde_ipld_dagcbor::de::Deserializer::from_slice(msg);
    let header: Ipld = serde::Deserialize::deserialize(&mut de).expect("header");
    let body: Ipld = serde::Deserialize::deserialize(&mut de).expect("body");
    let Ipld::Map(mut m) = body else {
        panic!("body")
    };
    m.insert("seq".into(), Ipld::Integer(seq.into()));
    let mut out = serde_ipld_dagcbor::to_vec(&header).unwrap();
    out.extend(serde_ipld_dagcbor::to_vec(&Ipld::Map(m)).unwrap());
    out
}
