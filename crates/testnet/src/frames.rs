//! Builds binary firehose messages from the JSON-form frames in the
//! fixtures (`{"$bytes": …}` for bytes, `{"$link": …}` for CIDs), with
//! `serde_ipld_dagcbor` as the encoder: header object then body object; and
//! reads the recorded relay capture into `(seq, message)` pairs
//! ([`relay_frames`]).

#![allow(dead_code)]

use std::collections::BTreeMap;

use base64::Engine;
use ipld_core::ipld::Ipld;

pub fn to_ipld(v: &serde_json::Value) -> Ipld {
    use serde_json::Value as J;
    match v {
        J::Null => Ipld::Null,
        J::Bool(b) => Ipld::Bool(*b),
        J::Number(n) => Ipld::Integer(n.as_i64().expect("integers only").into()),
        J::String(s) => Ipld::String(s.clone()),
        J::Array(a) => Ipld::List(a.iter().map(to_ipld).collect()),
        J::Object(o) => {
            if o.len() == 1 {
                if let Some(J::String(l)) = o.get("$link") {
                    return Ipld::Link(cid::Cid::try_from(l.as_str()).expect("valid CID"));
                }
                if let Some(J::String(b)) = o.get("$bytes") {
                    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
                        .decode(b.trim_end_matches('='))
                        .expect("base64");
                    return Ipld::Bytes(bytes);
                }
            }
            Ipld::Map(
                o.iter()
                    .map(|(k, v)| (k.clone(), to_ipld(v)))
                    .collect::<BTreeMap<_, _>>(),
            )
        }
    }
}

/// One websocket message: DAG-CBOR header then DAG-CBOR body.
pub fn message(header: &serde_json::Value, body: &serde_json::Value) -> Vec<u8> {
    let mut out = serde_ipld_dagcbor::to_vec(&to_ipld(header)).unwrap();
    out.extend(serde_ipld_dagcbor::to_vec(&to_ipld(body)).unwrap());
    out
}

/// `(seq, message, drop flag)` for every message of a relay scenario file.
pub fn scenario(name: &str) -> Vec<(i64, Vec<u8>, bool)> {
    let path = crate::fixture(&format!("firehose/indigo-relay-scenarios/{name}"));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let f = &m["frame"];
            (
                f["body"]["seq"].as_i64().unwrap(),
                message(&f["header"], &f["body"]),
                m["drop"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

/// The relay frames of the recording as `(seq, message bytes)`; the seq is
/// read with `serde_ipld_dagcbor`, independently of parity's decoder.
pub fn relay_frames() -> Vec<(i64, Vec<u8>)> {
    let bytes = std::fs::read(crate::fixture(crate::RELAY_FRAMES)).unwrap();
    let mut out = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 4 {
        let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        let msg = &rest[4..4 + len];
        let mut de = serde_ipld_dagcbor::de::Deserializer::from_slice(msg);
        let _header: ipld_core::ipld::Ipld = serde::Deserialize::deserialize(&mut de).unwrap();
        let body: ipld_core::ipld::Ipld = serde::Deserialize::deserialize(&mut de).unwrap();
        let ipld_core::ipld::Ipld::Map(m) = body else {
            panic!("body is a map")
        };
        let Some(ipld_core::ipld::Ipld::Integer(seq)) = m.get("seq") else {
            panic!("seq")
        };
        out.push((*seq as i64, msg.to_vec()));
        rest = &rest[4 + len..];
    }
    out
}

/// A `#commit` of the relay recording: its repo's DID, the commit block's
/// CID and the frame's CAR `blocks`.
pub struct RelayCommit {
    pub did: String,
    pub commit: cid::Cid,
    pub blocks: Vec<u8>,
}

/// Every `#commit` frame of the relay recording, read with
/// `serde_ipld_dagcbor` (independently of parity's decoder), and the
/// recording's DID documents (`did_docs.json`, by DID).
pub fn relay_commits() -> (Vec<RelayCommit>, serde_json::Value) {
    use ipld_core::ipld::Ipld;
    use std::collections::BTreeMap;
    let docs_path = crate::fixture(crate::RELAY_FRAMES).with_file_name("did_docs.json");
    let docs = serde_json::from_slice(&std::fs::read(docs_path).unwrap()).unwrap();
    let mut out = Vec::new();
    for (_, msg) in relay_frames() {
        let mut de = serde_ipld_dagcbor::de::Deserializer::from_slice(&msg);
        let header: BTreeMap<String, Ipld> = serde::Deserialize::deserialize(&mut de).unwrap();
        if header.get("t") != Some(&Ipld::String("#commit".into())) {
            continue;
        }
        let body: BTreeMap<String, Ipld> = serde::Deserialize::deserialize(&mut de).unwrap();
        if let (Some(Ipld::String(did)), Some(Ipld::Link(cid)), Some(Ipld::Bytes(blocks))) =
            (body.get("repo"), body.get("commit"), body.get("blocks"))
        {
            out.push(RelayCommit {
                did: did.clone(),
                commit: *cid,
                blocks: blocks.clone(),
            });
        }
    }
    (out, docs)
}

/// The DAG-CBOR (sha2-256, codec 0x71) CID of `bytes`.
fn dag_cid(bytes: &[u8]) -> cid::Cid {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    let mh = cid::multihash::Multihash::<64>::wrap(0x12, &digest).expect("sha2-256 fits");
    cid::Cid::new_v1(0x71, mh)
}

/// `n` in `width` characters of the TID alphabet (base32-sortable).
fn b32(mut n: usize, width: usize) -> String {
    const A: &[u8] = b"234567abcdefghijklmnopqrstuvwxyz";
    let mut out = vec![b'2'; width];
    for c in out.iter_mut().rev() {
        *c = A[n % 32];
        n /= 32;
    }
    String::from_utf8(out).unwrap()
}

fn varint(mut n: usize, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A `#commit` message at `seq` for `did`, creating one record per
/// `(path, record JSON)` in one commit (`rev`, `since` null), the way a
/// PDS sends an `applyWrites` of many writes: a CARv1 `blocks` slice whose
/// root is the (unsigned) commit block, then the record blocks, and one op
/// per record with its CID. Every op of the frame shares `seq`.
pub fn commit(seq: i64, did: &str, rev: &str, records: &[(String, serde_json::Value)]) -> Vec<u8> {
    let blocks: Vec<(cid::Cid, Vec<u8>)> = records
        .iter()
        .map(|(_, r)| {
            let bytes = serde_ipld_dagcbor::to_vec(&to_ipld(r)).unwrap();
            (dag_cid(&bytes), bytes)
        })
        .collect();
    let data_root = serde_ipld_dagcbor::to_vec(&Ipld::Map(BTreeMap::new())).unwrap();
    let commit_block = serde_ipld_dagcbor::to_vec(&Ipld::Map(BTreeMap::from([
        ("did".to_owned(), Ipld::String(did.to_owned())),
        ("version".to_owned(), Ipld::Integer(3)),
        ("data".to_owned(), Ipld::Link(dag_cid(&data_root))),
        ("rev".to_owned(), Ipld::String(rev.to_owned())),
        ("prev".to_owned(), Ipld::Null),
        ("sig".to_owned(), Ipld::Bytes(vec![0; 64])),
    ])))
    .unwrap();
    let commit_cid = dag_cid(&commit_block);
    let header = serde_ipld_dagcbor::to_vec(&Ipld::Map(BTreeMap::from([
        ("version".to_owned(), Ipld::Integer(1)),
        ("roots".to_owned(), Ipld::List(vec![Ipld::Link(commit_cid)])),
    ])))
    .unwrap();
    let mut car = Vec::new();
    varint(header.len(), &mut car);
    car.extend(&header);
    for (cid, bytes) in std::iter::once(&(commit_cid, commit_block)).chain(&blocks) {
        let c = cid.to_bytes();
        varint(c.len() + bytes.len(), &mut car);
        car.extend(c);
        car.extend(bytes);
    }
    let ops = records
        .iter()
        .zip(&blocks)
        .map(|((path, _), (cid, _))| {
            Ipld::Map(BTreeMap::from([
                ("action".to_owned(), Ipld::String("create".into())),
                ("path".to_owned(), Ipld::String(path.clone())),
                ("cid".to_owned(), Ipld::Link(*cid)),
            ]))
        })
        .collect();
    let body = Ipld::Map(BTreeMap::from([
        ("seq".to_owned(), Ipld::Integer(seq.into())),
        ("repo".to_owned(), Ipld::String(did.to_owned())),
        ("commit".to_owned(), Ipld::Link(commit_cid)),
        ("rev".to_owned(), Ipld::String(rev.to_owned())),
        ("since".to_owned(), Ipld::Null),
        ("blocks".to_owned(), Ipld::Bytes(car)),
        ("ops".to_owned(), Ipld::List(ops)),
        (
            "time".to_owned(),
            Ipld::String("2026-07-04T14:38:08.463Z".into()),
        ),
        ("tooBig".to_owned(), Ipld::Bool(false)),
        ("rebase".to_owned(), Ipld::Bool(false)),
        ("blobs".to_owned(), Ipld::List(vec![])),
    ]));
    let head = serde_json::json!({"op": 1, "t": "#commit"});
    let mut out = serde_ipld_dagcbor::to_vec(&to_ipld(&head)).unwrap();
    out.extend(serde_ipld_dagcbor::to_vec(&body).unwrap());
    out
}

/// `frames` commits of `ops` likes each (seqs `first_seq`, `first_seq + 1`,
/// …; one DID per frame), built with [`commit`]. Returns the messages with
/// their seqs.
pub fn like_commits(first_seq: i64, frames: usize, ops: usize) -> Vec<(i64, Vec<u8>)> {
    (0..frames)
        .map(|f| {
            let seq = first_seq + f as i64;
            let did = format!("did:plc:batchsplit{}aaaaaaaaaaaa", b32(f, 2));
            let records: Vec<(String, serde_json::Value)> = (0..ops)
                .map(|i| {
                    let rkey = format!("3mptbyp{}", b32(f * 1000 + i, 6));
                    let rec = serde_json::json!({
                        "$type": "app.bsky.feed.like",
                        "createdAt": "2026-07-04T14:38:08.463Z",
                        "subject": {
                            "cid": "bafyreib7pjfjurxsuyvzie2mb35om7yce664nen7mdt7ta6sktvbzv32pu",
                            "uri": format!("at://did:plc:oy5nmpi2bgcvjnpktfafng5z/app.bsky.feed.post/3mpt325iz{}", b32(i, 4)),
                        },
                    });
                    (format!("app.bsky.feed.like/{rkey}"), rec)
                })
                .collect();
            let rev = format!("3mptbyprqw{}", b32(f, 3));
            (seq, commit(seq, &did, &rev, &records))
        })
        .collect()
}
