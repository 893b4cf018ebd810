//! The crate-level error, aggregating each module's own.
//!
//! Every variant's message is one line that says what to fix; `main` prints
//! it and exits 2 for [`Error::Config`], 1 otherwise. Component errors
//! (`PipelineError`, `ImportError`, `MappersError`) are flattened into these
//! variants, so a configuration mistake found inside a component still
//! exits 2 and a store error reads the same whichever command hit it.
//! Nothing in `pipeline`, `import` or the other components uses this type:
//! it sits above them.

use crate::config::ConfigError;
use crate::feed::FeedRunError;
use crate::import::ImportError;
use crate::mapper::{MappersError, RegistryError};
use crate::obs::ServeError;
use crate::pipeline::PipelineError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(StoreError),
    /// The metrics and health listener could not start.
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("mapper registration: {0}")]
    Registry(#[from] RegistryError),
    /// A pipeline task panicked or was aborted: a bug, stop loudly.
    #[error("internal error: {0}")]
    Internal(String),
    /// The change feed server could not run.
    #[error("{0}")]
    Feed(String),
}

impl From<StoreError> for Error {
    /// An unsupported database URL is the operator's config mistake (exit
    /// 2), whichever command found it; every other store error stays one.
    fn from(e: StoreError) -> Error {
        match e {
            e @ StoreError::BadUrl(_) => Error::Config(ConfigError(e.to_string())),
            e => Error::Store(e),
        }
    }
}

impl From<FeedRunError> for Error {
    fn from(e: FeedRunError) -> Error {
        match e {
            FeedRunError::Store(e) => e.into(),
            FeedRunError::Config(msg) => Error::Config(ConfigError(msg)),
            e @ FeedRunError::Io(_) => Error::Feed(e.to_string()),
        }
    }
}

impl From<MappersError> for Error {
    fn from(e: MappersError) -> Error {
        match e {
            MappersError::Config(msg) => Error::Config(ConfigError(msg)),
            MappersError::Registry(e) => Error::Registry(e),
        }
    }
}

impl From<PipelineError> for Error {
    fn from(e: PipelineError) -> Error {
        match e {
            PipelineError::Store(e) => e.into(),
            PipelineError::Serve(e) => Error::Serve(e),
            PipelineError::Internal(msg) => Error::Internal(msg),
        }
    }
}

impl From<ImportError> for Error {
    fn from(e: ImportError) -> Error {
        match e {
            ImportError::Invalid(msg) => Error::Config(ConfigError(msg)),
            ImportError::Store(e) => e.into(),
            ImportError::Serve(e) => Error::Serve(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_config_mistakes_stay_config_errors() {
        let e: Error = ImportError::Invalid("nothing to import".into()).into();
        assert!(matches!(e, Error::Config(_)));
        assert_eq!(e.to_string(), "nothing to import");
        let e: Error = MappersError::Config("mappers.builtin: x".into()).into();
        assert!(matches!(e, Error::Config(_)));
        let e: Error = PipelineError::Internal("panic".into()).into();
        assert_eq!(e.to_string(), "internal error: panic");
        let e: Error = MappersError::Registry(RegistryError::Duplicate("a.b.c".into())).into();
        assert_eq!(
            e.to_string(),
            "mapper registration: collection a.b.c already has a mapper"
        );
    }
}
