//! The commands: one file per `parity` subcommand, each the only place that
//! reads the whole [`Config`](crate::config::Config) for its run.
//!
//! A command turns config sections into the runtime types its components
//! take (`Registry::from_config`, `Filter::from_config`,
//! `PurgePolicy::from_config`, `import::Settings`, `pipeline::Parts`), runs
//! them, prints what the command prints and returns the exit code.
//! Components never see `Config`; `main` only parses, loads the config and
//! dispatches here.
//!
//! Exit codes: 0 success; 1 a runtime failure (an import with failed DIDs,
//! an unhealthy probe, a database error); 2 a configuration mistake
//! (`Error::Config`, and `config check` finding an error).

pub mod auth;
pub mod config_check;
pub mod config_example;
pub mod consume;
mod consume_feed;
pub mod health;
pub mod import;
pub mod import_status;
pub mod migrate;
pub mod outbox;
pub mod publish;
pub mod resume;
pub mod serve;
