//! Renders a generated event as a relay `subscribeRepos` binary message:
//! a DAG-CBOR header then body. A commit carries one op and a CARv1
//! `blocks` slice rooted at an (unsigned) commit block, followed by the
//! record's block under its real CID (the generator must run with
//! `real_cids`); the firehose `seq` is index + 1. Identity and account
//! events become `#identity` and `#account` frames.

use std::collections::BTreeMap;

use ipld_core::ipld::Ipld;

use crate::event::{GenEvent, Kind, rfc3339};
use crate::keys::dag_cid;
use crate::template::Op;

fn s(v: &str) -> Ipld {
    Ipld::String(v.to_owned())
}

fn varint(mut n: usize, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn frame(t: &str, body: BTreeMap<String, Ipld>) -> Vec<u8> {
    let head = BTreeMap::from([("op".to_owned(), Ipld::Integer(1)), ("t".to_owned(), s(t))]);
    let mut out = serde_ipld_dagcbor::to_vec(&Ipld::Map(head)).expect("header");
    out.extend(serde_ipld_dagcbor::to_vec(&Ipld::Map(body)).expect("body"));
    out
}

/// The message for `e`, at firehose `seq` index + 1.
pub fn message(e: &GenEvent) -> Vec<u8> {
    let seq = Ipld::Integer(e.index as i128 + 1);
    let time = s(&rfc3339(e.time_us));
    match &e.kind {
        Kind::Identity { handle } => frame(
            "#identity",
            BTreeMap::from([
                ("seq".into(), seq),
                ("did".into(), s(&e.did)),
                ("time".into(), time),
                ("handle".into(), s(handle)),
            ]),
        ),
        Kind::Account { active, status } => {
            let mut b = BTreeMap::from([
                ("seq".to_owned(), seq),
                ("did".to_owned(), s(&e.did)),
                ("time".to_owned(), time),
                ("active".to_owned(), Ipld::Bool(*active)),
            ]);
            if let Some(st) = status {
                b.insert("status".into(), s(st));
            }
            frame("#account", b)
        }
        Kind::Commit {
            op,
            collection,
            rkey,
            rev,
            cid,
            block,
            ..
        } => {
            let record = match (op, cid, block) {
                (Op::Delete, _, _) => None,
                (_, Some(cid), Some(bytes)) => {
                    Some((cid::Cid::try_from(cid.as_str()).expect("cid"), bytes))
                }
                _ => panic!("firehose commits need the generator's real_cids"),
            };
            let data_root =
                dag_cid(&serde_ipld_dagcbor::to_vec(&Ipld::Map(BTreeMap::new())).unwrap());
            let commit_block = serde_ipld_dagcbor::to_vec(&Ipld::Map(BTreeMap::from([
                ("did".to_owned(), s(&e.did)),
                ("version".to_owned(), Ipld::Integer(3)),
                ("data".to_owned(), Ipld::Link(data_root)),
                ("rev".to_owned(), s(rev)),
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
            let mut car = Vec::with_capacity(header.len() + commit_block.len() + 600);
            varint(header.len(), &mut car);
            car.extend(&header);
            let mut push = |c: &cid::Cid, bytes: &[u8]| {
                let cb = c.to_bytes();
                varint(cb.len() + bytes.len(), &mut car);
                car.extend(cb);
                car.extend(bytes);
            };
            push(&commit_cid, &commit_block);
            if let Some((c, bytes)) = &record {
                push(c, bytes);
            }
            let op_map = BTreeMap::from([
                ("action".to_owned(), s(op.as_str())),
                ("path".to_owned(), s(&format!("{collection}/{rkey}"))),
                (
                    "cid".to_owned(),
                    record.as_ref().map_or(Ipld::Null, |(c, _)| Ipld::Link(*c)),
                ),
            ]);
            frame(
                "#commit",
                BTreeMap::from([
                    ("seq".into(), seq),
                    ("repo".into(), s(&e.did)),
                    ("commit".into(), Ipld::Link(commit_cid)),
                    ("rev".into(), s(rev)),
                    ("since".into(), Ipld::Null),
                    ("blocks".into(), Ipld::Bytes(car)),
                    ("ops".into(), Ipld::List(vec![Ipld::Map(op_map)])),
                    ("time".into(), time),
                    ("tooBig".into(), Ipld::Bool(false)),
                    ("rebase".into(), Ipld::Bool(false)),
                    ("blobs".into(), Ipld::List(vec![])),
                ]),
            )
        }
    }
}
