//! Repository verification: a whole `com.atproto.sync.getRepo` CAR (or a
//! firehose commit) checked end to end before anything of it is used.
//!
//! Owns: the streaming CAR reader with a memory bound ([`stream`]), the
//! signed commit block and its unsigned bytes ([`commit`]), `#atproto`
//! signing keys from multikeys, did:key and DID documents and ECDSA
//! verification ([`key`]), the MST walk and the root recomputed from the
//! leaves ([`mst`]), and [`verify_repo`], which ties them together. Does not
//! own: fetching (the import's HTTP client), record decoding (`dagcbor`),
//! rows or SQL.
//!
//! Invariants: pure, no IO; nothing here panics or allocates more than the
//! input's size on hostile bytes (lengths are checked against what remains,
//! recursion is bounded). A repo either verifies completely or fails with
//! one [`RepoError`], whose text for the four verification failures is
//! exactly `bad signature`, `MST root mismatch`, `record CID mismatch` or
//! `missing block` (the operator-facing reasons of issue 15).

pub mod commit;
pub mod invert;
pub mod key;
pub mod mst;
pub mod stream;
mod verify;

pub use commit::Commit;
pub use key::{KeyError, PublicKey};
pub use stream::{Blocks, CarStream};
pub use verify::{RepoRecord, VerifiedRepo, verify_repo};

#[cfg(test)]
mod tests;

/// Why a repository (or a commit) is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepoError {
    /// The commit signature does not verify with the DID's `#atproto` key.
    #[error("bad signature")]
    BadSignature,
    /// An MST node does not hash to the CID that names it, or the root
    /// recomputed from the leaves differs from the commit's `data`.
    #[error("MST root mismatch")]
    MstRootMismatch,
    /// A record block does not hash to the CID its MST leaf names.
    #[error("record CID mismatch")]
    RecordCidMismatch,
    /// A block the commit or the MST names is not in the CAR.
    #[error("missing block")]
    MissingBlock,
    /// The CAR is larger than the configured bound (the caller falls back
    /// to listRecords).
    #[error("repository larger than {0} bytes")]
    TooBig(u64),
    /// The commit is signed for another DID than the one asked for.
    #[error("commit DID does not match the repository")]
    DidMismatch,
    /// Bytes that are not a CAR, a commit or an MST node at all.
    #[error("malformed repository: {0}")]
    Malformed(&'static str),
}
