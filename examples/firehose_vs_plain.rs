//! parity's firehose decoder against a plain Rust decoder built from the
//! usual crates, on the 100 recorded relay frames, in one run on one thread.
//!
//! The plain decoder is what a hand-written consumer would write: serde
//! derive over `serde_ipld_dagcbor` for the header and `#commit` body (the
//! CAR slice borrowed), the CAR read with the `cid` crate into a
//! `HashMap`, each op's record block decoded into `ipld_core::Ipld` and
//! turned into JSON text through `serde_json::Value`. Both decoders produce
//! the same thing per op (DID, collection, rkey, CID, record JSON), so the
//! comparison is like for like. The plain decoder also runs in lighter
//! forms: stopping each record at `Ipld` (no JSON), and with or without
//! checking every CAR block against its CID (SHA-256). parity always checks
//! the CID of each op's block and always produces JSON.
//!
//! Rounds of one second alternate between the three decoders, so a noisy
//! neighbour hits all of them alike; the best and median round of each are
//! printed, with parity's rate as a ratio of each plain one.
//!
//! `cargo run --release --example firehose_vs_plain [rounds]`

use std::collections::HashMap;
use std::io::Cursor as IoCursor;
use std::time::{Duration, Instant};

use cid::Cid;
use ipld_core::ipld::Ipld;
use parity::source::dagcbor::Transcoder;
use parity::source::firehose::{Frame, decode_frame_with};
use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Deserialize)]
struct Header {
    #[allow(dead_code)]
    op: i64,
    t: Option<String>,
}

#[derive(Deserialize)]
struct Body<'a> {
    #[allow(dead_code)]
    seq: i64,
    repo: String,
    #[allow(dead_code)]
    rev: String,
    #[serde(borrow)]
    blocks: &'a [u8],
    ops: Vec<Op>,
}

#[derive(Deserialize)]
struct Op {
    #[allow(dead_code)]
    action: String,
    path: String,
    cid: Option<Cid>,
}

/// What both decoders hand on per op.
struct PlainEvent {
    _did: String,
    _collection: String,
    _rkey: String,
    _cid: Option<Cid>,
    _record: Option<String>,
}

fn read_varint(r: &mut &[u8]) -> Option<u64> {
    let mut out = 0u64;
    for i in 0..10 {
        let (&b, rest) = r.split_first()?;
        *r = rest;
        out |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(out);
        }
    }
    None
}

/// CAR v1: header, then `varint(len) CID block` sections.
fn plain_car(mut bytes: &[u8]) -> Option<HashMap<Cid, &[u8]>> {
    let hlen = read_varint(&mut bytes)? as usize;
    bytes = bytes.get(hlen..)?;
    let mut blocks = HashMap::new();
    while !bytes.is_empty() {
        let len = read_varint(&mut bytes)? as usize;
        let section = bytes.get(..len)?;
        bytes = &bytes[len..];
        let mut cur = IoCursor::new(section);
        let cid = Cid::read_bytes(&mut cur).ok()?;
        let block = &section[cur.position() as usize..];
        blocks.insert(cid, block);
    }
    Some(blocks)
}

fn ipld_to_json(v: &Ipld) -> serde_json::Value {
    use base64::Engine;
    match v {
        Ipld::Null => serde_json::Value::Null,
        Ipld::Bool(b) => (*b).into(),
        Ipld::Integer(i) => serde_json::Value::from(*i as i64),
        Ipld::Float(f) => (*f).into(),
        Ipld::String(s) => s.clone().into(),
        Ipld::Bytes(b) => serde_json::json!({
            "$bytes": base64::engine::general_purpose::STANDARD_NO_PAD.encode(b)
        }),
        Ipld::List(l) => l.iter().map(ipld_to_json).collect(),
        Ipld::Map(m) => m
            .iter()
            .map(|(k, v)| (k.clone(), ipld_to_json(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        Ipld::Link(c) => serde_json::json!({ "$link": c.to_string() }),
    }
}

/// What the plain decoder does beyond reading the frame.
#[derive(Clone, Copy)]
struct Plain {
    /// Check every CAR block against its CID (SHA-256), as a consumer that
    /// verifies the slice it was sent does.
    hash_all: bool,
    /// Turn each record into JSON text (what parity stores); without it the
    /// record stops at `Ipld`.
    json: bool,
}

/// One frame through the plain decoder; returns the events it produced.
fn plain_decode(frame: &[u8], how: Plain, out: &mut Vec<PlainEvent>) -> Option<()> {
    let mut de = serde_ipld_dagcbor::de::Deserializer::from_slice(frame);
    let header = Header::deserialize(&mut de).ok()?;
    if header.t.as_deref() != Some("#commit") {
        return Some(());
    }
    let body = Body::deserialize(&mut de).ok()?;
    let blocks = plain_car(body.blocks)?;
    if how.hash_all {
        for (cid, block) in &blocks {
            if Sha256::digest(block)[..] != *cid.hash().digest() {
                return None;
            }
        }
    }
    for op in body.ops {
        let (collection, rkey) = op.path.split_once('/')?;
        let record = match op.cid {
            Some(cid) => {
                let block = blocks.get(&cid)?;
                let ipld: Ipld = serde_ipld_dagcbor::from_slice(block).ok()?;
                if how.json {
                    Some(ipld_to_json(&ipld).to_string())
                } else {
                    std::hint::black_box(&ipld);
                    None
                }
            }
            None => None,
        };
        out.push(PlainEvent {
            _did: body.repo.clone(),
            _collection: collection.to_owned(),
            _rkey: rkey.to_owned(),
            _cid: op.cid,
            _record: record,
        });
    }
    Some(())
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    // The recorded frames, read by the test network's own reader.
    let owned: Vec<Vec<u8>> = testnet::frames::relay_frames()
        .into_iter()
        .map(|(_, message)| message)
        .collect();
    let frames: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();

    // Both decoders must agree on what they produce, or the race is unfair.
    let mut tc = Transcoder::new();
    let (mut ours, mut theirs) = (0usize, 0usize);
    let mut sink = Vec::new();
    for f in &frames {
        if let Frame::Commit(c) = decode_frame_with(f, &mut tc).expect("decodes") {
            ours += c.events.len();
        }
        sink.clear();
        let all = Plain {
            hash_all: true,
            json: true,
        };
        plain_decode(f, all, &mut sink).expect("plain decodes");
        theirs += sink.len();
    }
    assert_eq!(ours, theirs, "both decoders yield one event per op");
    println!(
        "{} frames, {ours} commit ops; {rounds} rounds of 1 s each, alternating",
        frames.len()
    );

    let variants = [
        ("plain → Ipld, no hashing", false, false),
        ("plain → Ipld, all CIDs checked", true, false),
        ("plain → JSON, no hashing", false, true),
        ("plain → JSON, all CIDs checked", true, true),
    ];
    let names: Vec<&str> = std::iter::once("parity (→ JSON, op CIDs checked)")
        .chain(variants.iter().map(|v| v.0))
        .collect();
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for _ in 0..rounds {
        for (which, rate) in rates.iter_mut().enumerate() {
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < Duration::from_secs(1) {
                for f in &frames {
                    if which == 0 {
                        if let Ok(Frame::Commit(c)) = decode_frame_with(f, &mut tc) {
                            std::hint::black_box(&c);
                        }
                    } else {
                        let (_, hash_all, json) = variants[which - 1];
                        sink.clear();
                        let how = Plain { hash_all, json };
                        std::hint::black_box(plain_decode(f, how, &mut sink));
                    }
                    n += 1;
                }
            }
            rate.push(n as f64 / start.elapsed().as_secs_f64());
        }
    }
    let stat = |v: &Vec<f64>| {
        let mut s = v.clone();
        s.sort_by(|a, b| b.total_cmp(a));
        (s[0], s[s.len() / 2])
    };
    let (pb, pm) = stat(&rates[0]);
    for (name, r) in names.iter().zip(&rates) {
        let (best, median) = stat(r);
        println!(
            "{name:<32} best {best:>9.0} frames/s  median {median:>9.0}  parity ÷ this: best {:.2}, median {:.2}",
            pb / best,
            pm / median
        );
    }
}
