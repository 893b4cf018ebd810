//! The crate-level error, aggregating each module's own.
//!
//! Every variant's message is one line that says what to fix; `main` prints
//! it and exits non-zero.

use crate::config::ConfigError;
use crate::mapper::RegistryError;
use crate::obs::ServeError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The metrics and health listener could not start.
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("mapper registration: {0}")]
    Registry(#[from] RegistryError),
    /// A pipeline task panicked or was aborted: a bug, stop loudly.
    #[error("internal error: {0}")]
    Internal(String),
}
