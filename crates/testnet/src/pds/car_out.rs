//! `com.atproto.sync.getRepo`: the account's repository as a CARv1 — the
//! signed commit, the MST nodes and every record block — built from the
//! records served now, or the fixture's own bytes for a verbatim repo.
//!
//! Keys: each DID signs with a secp256k1 key derived from SHA-256 of the
//! DID (deterministic, so a test can name it: [`multikey`]); generated DID
//! documents carry it. Record blocks are the fixture's blocks when the
//! record came from a CAR, else the DAG-CBOR encoding of its JSON (the CID
//! `SynthRecord::new` computes). The MST and its root are built with
//! parity's `mst::build_nodes`; the commit is `{did, rev, sig, data, prev:
//! null, version: 3}`. Errors follow the reference PDS: 400 `RepoNotFound`,
//! `RepoTakendown`, `RepoSuspended`, `RepoDeactivated`.

use std::collections::BTreeMap;

use k256::ecdsa::{Signature, SigningKey, signature::Signer as _};
use parity::source::codecs::repo::mst::{self, Leaf};
use sha2::{Digest, Sha256};

use super::serve::Reply;
use super::state::State;

pub(crate) fn signing_key(did: &str) -> SigningKey {
    let seed = Sha256::digest(format!("testnet signing key for {did}").as_bytes());
    SigningKey::from_slice(&seed).expect("a SHA-256 is a valid scalar")
}

/// The `#atproto` multikey of `did`'s signing key (`z…`, secp256k1-pub).
pub fn multikey(did: &str) -> String {
    let point = signing_key(did)
        .verifying_key()
        .to_encoded_point(true)
        .as_bytes()
        .to_vec();
    let mut bytes = vec![0xe7, 0x01];
    bytes.extend_from_slice(&point);
    multibase::encode(multibase::Base::Base58Btc, bytes)
}

pub(super) fn get_repo(s: &State, q: &BTreeMap<String, String>) -> Reply {
    let Some(did) = q.get("did") else {
        return Reply::xrpc_error(
            400,
            "InvalidRequest",
            "Error: Params must have the property \"did\"",
        );
    };
    let Some(repo) = s.repos.get(did) else {
        let msg = format!("Could not find repo for DID: {did}");
        return Reply::xrpc_error(400, "RepoNotFound", &msg);
    };
    if let Some(status) = repo.status.as_deref() {
        let (error, what) = match status {
            "takendown" => ("RepoTakendown", "takendown"),
            "suspended" => ("RepoSuspended", "suspended"),
            _ => ("RepoDeactivated", "deactivated"),
        };
        return Reply::xrpc_error(400, error, &format!("Repo has been {what}: {did}"));
    }
    if let Some(bytes) = &repo.verbatim {
        return Reply::car(bytes.clone());
    }
    let mut records: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> = Vec::new();
    for (collection, recs) in &repo.collections {
        for (rkey, rec) in recs {
            let block = repo.blocks.get(&rec.cid).cloned().unwrap_or_else(|| {
                let v: serde_json::Value = serde_json::from_str(rec.value.get()).expect("JSON");
                serde_ipld_dagcbor::to_vec(&v).expect("JSON encodes as DAG-CBOR")
            });
            let cid = cid::Cid::try_from(rec.cid.as_str())
                .expect("record CID")
                .to_bytes();
            records.push((format!("{collection}/{rkey}").into_bytes(), cid, block));
        }
    }
    records.sort();
    let leaves: Vec<Leaf<'_>> = records
        .iter()
        .map(|(key, cid, _)| Leaf {
            key: key.clone(),
            value: cid,
        })
        .collect();
    let (data, nodes) = mst::build_nodes(&leaves);
    let commit = commit_block(did, &repo.rev, &data);
    let commit_cid = mst::dag_cbor_cid(&commit);
    let mut out = header(&commit_cid);
    section(&mut out, &commit_cid, &commit);
    for (cid, bytes) in nodes.iter().rev() {
        section(&mut out, cid, bytes);
    }
    for (_, cid, block) in &records {
        section(&mut out, cid, block);
    }
    Reply::car(out)
}

/// The signed commit block.
pub(crate) fn commit_block(did: &str, rev: &str, data: &[u8]) -> Vec<u8> {
    let fields = |out: &mut Vec<u8>, sig: Option<&[u8]>| {
        mst::head(out, 5, if sig.is_some() { 6 } else { 5 });
        mst::text(out, "did");
        mst::text(out, did);
        mst::text(out, "rev");
        mst::text(out, rev);
        if let Some(sig) = sig {
            mst::text(out, "sig");
            mst::head(out, 2, sig.len() as u64);
            out.extend_from_slice(sig);
        }
        mst::text(out, "data");
        mst::link_or_null(out, Some(data));
        mst::text(out, "prev");
        mst::link_or_null(out, None);
        mst::text(out, "version");
        mst::head(out, 0, 3);
    };
    let mut unsigned = Vec::new();
    fields(&mut unsigned, None);
    let sig: Signature = signing_key(did).sign(&unsigned);
    let mut signed = Vec::new();
    fields(&mut signed, Some(&sig.to_bytes()));
    signed
}

fn varint(out: &mut Vec<u8>, mut v: usize) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn header(root: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    mst::head(&mut h, 5, 2);
    mst::text(&mut h, "roots");
    mst::head(&mut h, 4, 1);
    mst::link_or_null(&mut h, Some(root));
    mst::text(&mut h, "version");
    mst::head(&mut h, 0, 1);
    let mut out = Vec::new();
    varint(&mut out, h.len());
    out.extend_from_slice(&h);
    out
}

pub(crate) fn section(out: &mut Vec<u8>, cid: &[u8], bytes: &[u8]) {
    varint(out, cid.len() + bytes.len());
    out.extend_from_slice(cid);
    out.extend_from_slice(bytes);
}
