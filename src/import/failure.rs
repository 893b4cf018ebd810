//! Why an account, or one of its collections, failed to import.
//!
//! Owns: the runner's error types (per account and per pair; a failure of
//! the whole run is not one of these). They stay typed until they reach an
//! edge: the `error` column of a failed state, the `DID: failed: …` line and
//! the logs, which all show their `Display` text. That text is part of the
//! interface (operators and tests read it), so each variant shows exactly
//! the message of what it wraps. Paging errors are [`JobError`] (in `job`).

use super::identity::IdentityError;
use super::job::JobError;
use super::summary::PerCollection;
use super::xrpc::XrpcError;
use crate::store::StoreError;

/// Why one account failed. The runner counts the DID as failed and goes on
/// with the others.
#[derive(Debug, thiserror::Error)]
pub enum DidError {
    /// The input did not resolve to a DID document with a PDS. When the
    /// input is a DID, the runner leaves a failed `*` state so
    /// `import-status` shows it and `resume` retries it; a handle has no
    /// row to record it on.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// `describeRepo` failed, so the DID's collections are unknown. The
    /// runner leaves a failed `*` state (resume discovers them again).
    #[error(transparent)]
    Discover(#[from] XrpcError),
    /// Queuing or reading the DID's states failed. The runner tries to leave
    /// a failed `*` state, and only warns if the database refuses that too.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Some collections failed; each already has its own failed state (or,
    /// if the database failed, a lease that expires), and the others ran.
    #[error("{0}")]
    Collections(PerCollection<PairError>),
    /// The whole repository (getRepo) failed verification or is not a
    /// repository: nothing of it was written. The text is the reason
    /// (`bad signature`, `MST root mismatch`, `record CID mismatch`,
    /// `missing block`, …); the runner leaves a failed `*` state.
    #[error("{0}")]
    Repo(#[from] crate::source::codecs::repo::RepoError),
}

/// Why one (did, collection) failed after it was due to run.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    /// Claiming the pair or recording its end failed. Nothing more is
    /// written: an unfinished claim keeps its lease until it expires, and
    /// `resume` takes it over.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The state row names a collection that is not an NSID (it was not
    /// written by parity). The pair is marked failed without asking the PDS.
    #[error("invalid collection {0:?}")]
    InvalidCollection(String),
    /// The job stopped before its last page. The pair is marked failed with
    /// this text; `resume` continues from its last committed page.
    #[error(transparent)]
    Job(#[from] JobError),
}

/// The XRPC error names with which a PDS says a repo cannot be served and
/// will not be by retrying: the pair (or the DID's pending work) ends
/// `gone` instead of `failed`.
pub const GONE_ERRORS: [&str; 2] = ["RepoNotFound", "RepoDeactivated"];

/// Whether `e` says the repo is gone (see [`GONE_ERRORS`]).
pub fn is_gone(e: &XrpcError) -> bool {
    matches!(e, XrpcError::Refused { error: Some(n), .. } if GONE_ERRORS.contains(&n.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_repo_not_found_and_deactivated_are_gone() {
        let refused = |e: Option<&str>| XrpcError::Refused {
            method: "m".into(),
            status: 400,
            error: e.map(str::to_owned),
        };
        assert!(is_gone(&refused(Some("RepoNotFound"))));
        assert!(is_gone(&refused(Some("RepoDeactivated"))));
        assert!(!is_gone(&refused(Some("InvalidRequest"))));
        assert!(!is_gone(&refused(None)));
        assert!(!is_gone(&XrpcError::Cancelled));
    }

    #[test]
    fn wrapped_errors_keep_their_text() {
        let remote = XrpcError::Cancelled;
        assert_eq!(
            DidError::from(remote.clone()).to_string(),
            remote.to_string()
        );
        assert_eq!(
            PairError::from(JobError::from(remote.clone())).to_string(),
            remote.to_string()
        );
        assert_eq!(
            PairError::from(StoreError::LeaseLost).to_string(),
            StoreError::LeaseLost.to_string()
        );
        assert_eq!(
            DidError::from(IdentityError::Invalid("x".into())).to_string(),
            IdentityError::Invalid("x".into()).to_string()
        );
        assert_eq!(
            PairError::InvalidCollection("a b".into()).to_string(),
            "invalid collection \"a b\""
        );
    }
}
