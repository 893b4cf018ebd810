//! The 98 real relay commits verify (signature and MST proof) against the
//! keys of their DID documents; tampered copies fail with the right reason.

use std::collections::HashMap;

use super::super::tests::relay_frames;
use super::super::{Decoder, Output};
use super::*;

fn keys() -> HashMap<String, PublicKey> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/firehose/bsky-relay-2026-07-04-seq-31527015372-31527015471/did_docs.json"
    ))
    .unwrap();
    let docs: HashMap<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    docs.into_iter()
        .map(|(did, doc)| (did, PublicKey::from_did_document(&doc).unwrap()))
        .collect()
}

/// The proof the verify-mode decoder keeps for `msg`, if it is a commit.
fn proof(msg: &[u8]) -> Option<Proof> {
    let mut d = Decoder::default();
    d.set_verify(true);
    let mut out = Output::default();
    d.decode(msg, &mut out);
    out.proof
}

#[test]
fn every_real_commit_verifies_in_full() {
    let keys = keys();
    let mut checked = 0;
    for msg in relay_frames() {
        let Some(p) = proof(&msg) else { continue };
        let key = &keys[p.meta.did.as_str()];
        assert_eq!(p.check(key, true), Ok(()), "seq {}", p.meta.seq);
        checked += 1;
    }
    assert_eq!(checked, 98);
}

#[test]
fn another_key_is_a_bad_signature() {
    let keys = keys();
    let frames = relay_frames();
    let mut proofs = frames.iter().filter_map(|m| proof(m));
    let (a, b) = (proofs.next().unwrap(), proofs.next().unwrap());
    assert_ne!(a.meta.did, b.meta.did);
    assert!(matches!(
        a.check(&keys[b.meta.did.as_str()], false),
        Err(ProofError::BadSignature(_))
    ));
}

#[test]
fn tampered_commits_fail_with_the_right_reason() {
    let keys = keys();
    let frames = relay_frames();
    let mut tried = 0;
    for msg in frames.iter().filter(|m| proof(m).is_some()).take(20) {
        let p = proof(msg).unwrap();
        let key = &keys[p.meta.did.as_str()];
        assert_eq!(p.check(key, true), Ok(()));
        // The signature: a bad signature in either mode.
        let sig = proof(&testnet::tamper::signature(msg)).unwrap();
        assert!(matches!(
            sig.check(key, false),
            Err(ProofError::BadSignature(_))
        ));
        assert!(matches!(
            sig.check(key, true),
            Err(ProofError::BadSignature(_))
        ));
        // An MST node: the signature still holds; the proof does not.
        let node = proof(&testnet::tamper::mst_node(msg)).unwrap();
        assert_eq!(node.check(key, false), Ok(()));
        assert!(
            matches!(node.check(key, true), Err(ProofError::BadMst(_))),
            "seq {}",
            p.meta.seq
        );
        tried += 1;
    }
    assert_eq!(tried, 20);
}

#[test]
fn a_swapped_record_passes_the_signature_but_not_the_proof() {
    let keys = keys();
    let frames = relay_frames();
    let mut tried = 0;
    for msg in &frames {
        let Some(p) = proof(msg) else { continue };
        if msg.windows(9).any(|w| w == b"createdAt") {
            let key = &keys[p.meta.did.as_str()];
            let Some(op_create) = proof(&testnet::tamper::record_swapped(msg)) else {
                continue;
            };
            assert_eq!(op_create.check(key, false), Ok(()));
            assert!(matches!(
                op_create.check(key, true),
                Err(ProofError::BadMst(_))
            ));
            tried += 1;
            if tried == 10 {
                break;
            }
        }
    }
    assert_eq!(tried, 10);
}

/// A flipped record byte is caught by the decoder itself (the record no
/// longer hashes to its op's CID): the op is dropped as malformed whatever
/// `source.verify` says.
#[test]
fn a_flipped_record_byte_drops_the_op() {
    let frames = relay_frames();
    let msg = frames
        .iter()
        .find(|m| proof(m).is_some() && m.windows(9).any(|w| w == b"createdAt"))
        .unwrap();
    let mut d = Decoder::default();
    d.set_verify(true);
    let mut out = Output::default();
    d.decode(&testnet::tamper::record_byte(msg), &mut out);
    assert_eq!(out.dropped.len(), 1, "{:?}", out.dropped);
    assert!(matches!(
        &out.dropped[0],
        crate::source::formats::Dropped::BadOp { op, .. } if op.kind.label() == "bad_block"
    ));
}
