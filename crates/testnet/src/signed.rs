//! Signed firehose `#commit` messages that pass `source.verify = "full"`:
//! each account (a generated DID, whose test key `pds` serves in its DID
//! document) commits one like at a time, with the Sync 1.1 fields (`since`,
//! `prevData`) and the whole new tree's MST nodes in `blocks`, signed with
//! the account's test key. For the verification benchmark and tests.

use std::collections::BTreeMap;

use ipld_core::ipld::Ipld;
use parity::source::codecs::repo::mst::{self, Leaf};

use crate::pds::car_out::{commit_block, header, section};
use crate::pds::tid;

/// The DID of generated account `n`.
pub fn did(n: usize) -> String {
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut id = String::from("did:plc:signed");
    let mut v = n;
    for _ in 0..10 {
        id.push(A[v % 32] as char);
        v /= 32;
    }
    id
}

/// `per_account` commits for each of `accounts` accounts, interleaved
/// (account 0, 1, …, then each one's next commit), seqs from `first_seq`.
pub fn likes(accounts: usize, per_account: usize, first_seq: i64) -> Vec<(i64, Vec<u8>)> {
    let mut trees: Vec<Vec<(Vec<u8>, Vec<u8>)>> = vec![Vec::new(); accounts];
    let mut revs: Vec<Option<String>> = vec![None; accounts];
    let mut out = Vec::with_capacity(accounts * per_account);
    let mut seq = first_seq;
    for round in 0..per_account {
        for (a, tree) in trees.iter_mut().enumerate() {
            let did = did(a);
            let rev = tid(1_780_000_000_000_000 + (round * accounts + a) as u64, 7);
            let rkey = tid(1_780_000_000_000_000 + round as u64 * 1_000 + a as u64, 3);
            let record = serde_json::json!({
                "$type": "app.bsky.feed.like",
                "createdAt": "2026-07-04T14:38:08.463Z",
                "subject": {
                    "cid": "bafyreib7pjfjurxsuyvzie2mb35om7yce664nen7mdt7ta6sktvbzv32pu",
                    "uri": format!("at://did:plc:oy5nmpi2bgcvjnpktfafng5z/app.bsky.feed.post/{rkey}"),
                },
            });
            let block = serde_ipld_dagcbor::to_vec(&record).unwrap();
            let cid = mst::dag_cbor_cid(&block);
            let prev_data = root(tree);
            let key = format!("app.bsky.feed.like/{rkey}").into_bytes();
            tree.push((key, cid.clone()));
            tree.sort();
            let leaves: Vec<Leaf<'_>> = tree
                .iter()
                .map(|(k, v)| Leaf {
                    key: k.clone(),
                    value: v,
                })
                .collect();
            let (data, nodes) = mst::build_nodes(&leaves);
            let commit = commit_block(&did, &rev, &data);
            let commit_cid = mst::dag_cbor_cid(&commit);
            let mut car = header(&commit_cid);
            section(&mut car, &commit_cid, &commit);
            for (c, bytes) in nodes.iter().rev() {
                section(&mut car, c, bytes);
            }
            section(&mut car, &cid, &block);
            let link = |c: &[u8]| Ipld::Link(cid::Cid::try_from(c).unwrap());
            let body = Ipld::Map(BTreeMap::from([
                ("seq".to_owned(), Ipld::Integer(seq.into())),
                ("repo".to_owned(), Ipld::String(did.clone())),
                ("commit".to_owned(), link(&commit_cid)),
                ("rev".to_owned(), Ipld::String(rev.clone())),
                (
                    "since".to_owned(),
                    revs[a].clone().map_or(Ipld::Null, Ipld::String),
                ),
                ("blocks".to_owned(), Ipld::Bytes(car)),
                (
                    "ops".to_owned(),
                    Ipld::List(vec![Ipld::Map(BTreeMap::from([
                        ("action".to_owned(), Ipld::String("create".into())),
                        (
                            "path".to_owned(),
                            Ipld::String(format!("app.bsky.feed.like/{rkey}")),
                        ),
                        ("cid".to_owned(), link(&cid)),
                        ("prev".to_owned(), Ipld::Null),
                    ]))]),
                ),
                ("prevData".to_owned(), link(&prev_data)),
                (
                    "time".to_owned(),
                    Ipld::String("2026-07-04T14:38:08.463Z".into()),
                ),
                ("tooBig".to_owned(), Ipld::Bool(false)),
                ("rebase".to_owned(), Ipld::Bool(false)),
                ("blobs".to_owned(), Ipld::List(vec![])),
            ]));
            let head = Ipld::Map(BTreeMap::from([
                ("op".to_owned(), Ipld::Integer(1)),
                ("t".to_owned(), Ipld::String("#commit".into())),
            ]));
            let mut msg = serde_ipld_dagcbor::to_vec(&head).unwrap();
            msg.extend(serde_ipld_dagcbor::to_vec(&body).unwrap());
            out.push((seq, msg));
            revs[a] = Some(rev);
            seq += 1;
        }
    }
    out
}

fn root(tree: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let leaves: Vec<Leaf<'_>> = tree
        .iter()
        .map(|(k, v)| Leaf {
            key: k.clone(),
            value: v,
        })
        .collect();
    mst::root_cid(&leaves)
}
