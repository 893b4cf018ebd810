//! Live verification of one firehose `#commit` (`source.verify`): the
//! signed commit block against the DID's key, and (`full`) the Sync 1.1
//! proof that the ops turn the tree at `prevData` into the signed one.
//!
//! Owns: [`Proof`] (what the decoder keeps of a commit for the verifier:
//! its chain fields and the message bytes) and [`Proof::check`], pure.
//! Does not own: keys (the verifier stage fetches and caches them), what
//! happens to a failing commit, the rev chain.
//!
//! Checks, in order (the first failure is the verdict):
//! - `bad_signature`: the commit block named by `commit` is in the CAR and
//!   hashes to that CID, decodes as a v2/v3 commit for the message's repo
//!   and rev, and its signature verifies with the key;
//! - `bad_mst` (`full` only): every op names a `collection/rkey` key and a
//!   known action, and inverting the ops on the MST blocks included gives
//!   `prevData` ([`invert::check_commit`]). A legacy commit without
//!   `prevData` has nothing to check against and passes on its signature.

use super::CommitMeta;
use super::wire::{read_commit, read_header};
use crate::source::codecs::car::{self, Car};
use crate::source::codecs::dagcbor::Reader;
use crate::source::codecs::repo::invert::{self, Op};
use crate::source::codecs::repo::{Commit, PublicKey};

/// A commit the verifier has yet to check.
#[derive(Debug, Clone)]
pub struct Proof {
    pub meta: CommitMeta,
    /// The whole websocket message (header and body).
    message: Box<[u8]>,
}

/// Why a commit failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("bad signature: {0}")]
    BadSignature(&'static str),
    #[error("bad MST proof: {0}")]
    BadMst(String),
}

impl Proof {
    pub(super) fn new(meta: CommitMeta, message: &[u8]) -> Proof {
        Proof {
            meta,
            message: message.into(),
        }
    }

    /// Verifies the commit with `key`; `full` adds the MST proof.
    pub fn check(&self, key: &PublicKey, full: bool) -> Result<(), ProofError> {
        let sig = ProofError::BadSignature;
        let mut r = Reader::new(&self.message);
        read_header(&mut r).map_err(|_| sig("frame"))?;
        let body = read_commit(&self.message[r.position()..]).map_err(|_| sig("frame"))?;
        let car = Car::parse(body.blocks).map_err(|_| sig("blocks"))?;
        let block = car.get(body.commit).ok_or(sig("commit block missing"))?;
        car::verify(body.commit, block).map_err(|_| sig("commit block hash"))?;
        let commit = Commit::parse(block).map_err(|_| sig("commit block"))?;
        if commit.did != body.repo || commit.rev != body.rev {
            return Err(sig("commit is for another repo or rev"));
        }
        if !key.verify(&commit.unsigned, commit.sig) {
            return Err(sig("signature does not verify with the #atproto key"));
        }
        if !full {
            return Ok(());
        }
        let Some(prev_data) = body.prev_data else {
            return Ok(());
        };
        let mut ops = Vec::with_capacity(body.ops.len());
        for op in &body.ops {
            let key = op.path.as_bytes();
            let missing = || ProofError::BadMst("create/update without cid".into());
            ops.push(match op.action {
                "create" => Op::Create {
                    key,
                    cid: op.cid.ok_or_else(missing)?,
                },
                "update" => Op::Update {
                    key,
                    cid: op.cid.ok_or_else(missing)?,
                    prev: op.prev,
                },
                "delete" => Op::Delete { key, prev: op.prev },
                _ => return Err(ProofError::BadMst("unknown action".into())),
            });
        }
        invert::check_commit(&car, commit.data, &ops, prev_data)
            .map_err(|e| ProofError::BadMst(e.to_string()))
    }
}

#[cfg(test)]
#[path = "proof_tests.rs"]
mod tests;
