//! Reads a repository CAR (a `com.atproto.sync.getRepo` export) into the
//! records a PDS would list: the commit block, then an in-order walk of the
//! MST under `commit.data`.
//!
//! Blocks are decoded with `serde_ipld_dagcbor` into `Ipld`, independently
//! of parity's own decoder; only CAR splitting, the record JSON and the CID
//! text use parity (`source::car`, `dagcbor::record_to_json`,
//! `push_cid_base32`).
//!
//! MST node: `{l: link|null, e: [{p: prefix_len, k: key_suffix, v: record
//! link, t: subtree link|null}]}`. An entry's key is the first `p` bytes of
//! the previous entry's key in the same node followed by `k` (the first
//! entry has `p = 0`). In-order: the `l` subtree, then each entry followed by
//! its `t` subtree. Keys are `collection/rkey`.
//!
//! Partial CARs are tolerated: a record whose block is absent is skipped and
//! counted, and so is a node whose block is absent (its whole subtree is
//! skipped).

#![allow(dead_code)]

use std::collections::BTreeMap;

use ipld_core::cid::Cid;
use ipld_core::ipld::Ipld;
use parity::source::car::Car;
use parity::source::dagcbor::{push_cid_base32, record_to_json};

use super::SynthRecord;

/// What a CAR holds, as served.
pub struct CarRepo {
    pub did: String,
    /// Empty for legacy (v2) commits without a `rev`.
    pub rev: String,
    pub commit_cid: String,
    pub version: i128,
    /// In MST (key) order.
    pub records: Vec<SynthRecord>,
    /// Records listed by the MST whose block is not in the CAR.
    pub missing_records: usize,
    /// MST nodes referenced but not in the CAR.
    pub missing_nodes: usize,
    /// The record blocks present, by CID text (served again by getRepo).
    pub record_blocks: Vec<(String, Vec<u8>)>,
}

/// Multibase base32 text of a binary CID.
pub fn cid_text(cid: &[u8]) -> String {
    let mut out = Vec::with_capacity(64);
    push_cid_base32(&mut out, cid);
    String::from_utf8(out).expect("base32 is ASCII")
}

fn decode(block: &[u8], what: &str) -> BTreeMap<String, Ipld> {
    match serde_ipld_dagcbor::from_slice::<Ipld>(block) {
        Ok(Ipld::Map(m)) => m,
        Ok(other) => panic!("{what} is not a map: {other:?}"),
        Err(e) => panic!("{what} is not DAG-CBOR: {e}"),
    }
}

fn text(m: &BTreeMap<String, Ipld>, key: &str) -> Option<String> {
    match m.get(key) {
        Some(Ipld::String(s)) => Some(s.clone()),
        _ => None,
    }
}

fn link(m: &BTreeMap<String, Ipld>, key: &str) -> Option<Cid> {
    match m.get(key) {
        Some(Ipld::Link(c)) => Some(*c),
        _ => None,
    }
}

/// Parses `bytes` as a CAR and walks its repository. Panics on anything
/// that is not a readable repository (these are test fixtures).
pub fn read_car(bytes: &[u8]) -> CarRepo {
    let car = Car::parse(bytes).expect("CAR parses");
    let root = *car.roots().first().expect("CAR has a root");
    let commit = decode(car.get(root).expect("commit block present"), "commit");
    let did = text(&commit, "did").expect("commit.did");
    let version = match commit.get("version") {
        Some(Ipld::Integer(v)) => *v,
        _ => panic!("commit.version"),
    };
    let data = link(&commit, "data").expect("commit.data");
    let mut walk = Walk {
        car: &car,
        records: Vec::new(),
        missing_records: 0,
        missing_nodes: 0,
        record_blocks: Vec::new(),
    };
    walk.node(&data);
    CarRepo {
        did,
        rev: text(&commit, "rev").unwrap_or_default(),
        commit_cid: cid_text(root),
        version,
        records: walk.records,
        missing_records: walk.missing_records,
        missing_nodes: walk.missing_nodes,
        record_blocks: walk.record_blocks,
    }
}

struct Walk<'c, 'a> {
    car: &'c Car<'a>,
    records: Vec<SynthRecord>,
    missing_records: usize,
    missing_nodes: usize,
    record_blocks: Vec<(String, Vec<u8>)>,
}

impl Walk<'_, '_> {
    fn node(&mut self, cid: &Cid) {
        let Some(block) = self.car.get(&cid.to_bytes()) else {
            self.missing_nodes += 1;
            return;
        };
        let node = decode(block, "MST node");
        if let Some(l) = link(&node, "l") {
            self.node(&l);
        }
        let Some(Ipld::List(entries)) = node.get("e") else {
            panic!("MST node without an `e` list")
        };
        let mut key: Vec<u8> = Vec::new();
        for e in entries {
            let Ipld::Map(e) = e else {
                panic!("MST entry is not a map")
            };
            let (Some(Ipld::Integer(p)), Some(Ipld::Bytes(k))) = (e.get("p"), e.get("k")) else {
                panic!("MST entry without p/k")
            };
            let p = usize::try_from(*p).expect("prefix length fits");
            assert!(p <= key.len(), "MST prefix longer than the previous key");
            key.truncate(p);
            key.extend_from_slice(k);
            self.entry(&key, &link(e, "v").expect("MST entry value link"));
            if let Some(t) = link(e, "t") {
                self.node(&t);
            }
        }
    }

    fn entry(&mut self, key: &[u8], value: &Cid) {
        let key = std::str::from_utf8(key).expect("MST key is UTF-8");
        let (collection, rkey) = key.split_once('/').expect("MST key is collection/rkey");
        let cid = value.to_bytes();
        let Some(block) = self.car.get(&cid) else {
            self.missing_records += 1;
            return;
        };
        let json = record_to_json(block)
            .unwrap_or_else(|e| panic!("record {key} does not transcode: {e}"));
        self.record_blocks.push((cid_text(&cid), block.to_vec()));
        self.records.push(SynthRecord {
            collection: collection.to_owned(),
            rkey: rkey.to_owned(),
            cid: cid_text(&cid),
            json,
        });
    }
}
