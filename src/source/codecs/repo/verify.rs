//! [`verify_repo`]: a whole repository CAR checked before any of it is used
//! — signed commit, MST structure and every record block.
//!
//! Order of checks (the first failure is the reason): the root commit block
//! is present (`missing block`), decodes, is for the expected DID and its
//! signature verifies with the key (`bad signature`); the MST walk from
//! `data` finds every node (`missing block`) hashing to its CID, and the
//! root recomputed from the walked leaves equals `data` (`MST root
//! mismatch`); every leaf's record block is present (`missing block`) and
//! hashes to the leaf's CID (`record CID mismatch`).

use super::commit::Commit;
use super::key::PublicKey;
use super::stream::Blocks;
use super::{RepoError, mst};
use crate::source::codecs::car;

/// One verified record: its MST key and its block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRecord<'a> {
    /// `collection/rkey` as the MST stores it (not yet validated as such).
    pub key: Vec<u8>,
    /// Binary CID of the record.
    pub cid: &'a [u8],
    /// The record's DAG-CBOR block.
    pub block: &'a [u8],
}

/// A repository whose every part verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRepo<'a> {
    pub commit: Commit<'a>,
    /// Binary CID of the commit block (the CAR's root).
    pub commit_cid: &'a [u8],
    /// Records in key order.
    pub records: Vec<RepoRecord<'a>>,
}

/// Verifies `blocks` as the repository of `did`. With `key` = `None` the
/// signature is not checked (callers that have no key say so themselves).
pub fn verify_repo<'a>(
    blocks: &'a Blocks,
    did: &str,
    key: Option<&PublicKey>,
) -> Result<VerifiedRepo<'a>, RepoError> {
    let commit_cid = blocks
        .roots()
        .next()
        .ok_or(RepoError::Malformed("CAR without a root"))?;
    let block = blocks.get(commit_cid).ok_or(RepoError::MissingBlock)?;
    let commit = Commit::parse(block)?;
    if commit.did != did {
        return Err(RepoError::DidMismatch);
    }
    if let Some(key) = key
        && !key.verify(&commit.unsigned, commit.sig)
    {
        return Err(RepoError::BadSignature);
    }
    // The signature covers the commit's content; the block's bytes must
    // also be the root the CAR names (Sync 1.1: roots[0] is the commit).
    car::verify(commit_cid, block).map_err(|_| RepoError::BadSignature)?;
    let leaves = mst::walk(blocks, commit.data)?;
    if mst::root_cid(&leaves) != commit.data {
        return Err(RepoError::MstRootMismatch);
    }
    let mut records = Vec::with_capacity(leaves.len());
    for leaf in leaves {
        let block = blocks.get(leaf.value).ok_or(RepoError::MissingBlock)?;
        car::verify(leaf.value, block).map_err(|_| RepoError::RecordCidMismatch)?;
        records.push(RepoRecord {
            key: leaf.key,
            cid: leaf.value,
            block,
        });
    }
    Ok(VerifiedRepo {
        commit,
        commit_cid,
        records,
    })
}
