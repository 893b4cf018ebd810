//! Why an import, resume or import-status run could not go on.
//!
//! Failures of one DID or one collection are not errors here: they are
//! counted in the run's `Summary` and recorded in `parity_import_states`.
//! These are the failures of the run as a whole.

use crate::obs::ServeError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Nothing usable to do (no targets, a bad `--collection`, an unusable
    /// `[import]`/`[identity]` value): the message says what to fix, and
    /// the caller reports it as a configuration mistake.
    #[error("{0}")]
    Invalid(String),
    /// The database refused a statement or could not be reached.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The metrics and health listener could not start.
    #[error(transparent)]
    Serve(#[from] ServeError),
}
