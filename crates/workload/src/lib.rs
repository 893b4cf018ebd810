//! The benchmark workload (issue 12): a generator of distinct, realistic
//! events and the store-limit baselines parity is measured against.
//!
//! - [`event`]: event `i` of a run from a seed: the recorded collection mix
//!   ([`template`]), Zipf-skewed accounts ([`zipf`]), bench or random keys
//!   ([`keys`]), random subjects; streams in constant memory.
//! - [`jetstream`] / [`firehose`]: the wire forms the bench server sends.
//! - [`rows`]: what parity writes for an event, by parity's own mappers.
//! - [`baseline`]: plain SQLite and PostgreSQL writers of those rows.
//! - [`pg_db`]: a fresh PostgreSQL database per run.
//!
//! Dev-only (`publish = false`); driven by `benches/consume` and checked
//! against parity itself by `tests/it/workload.rs`.

pub mod baseline;
pub mod event;
pub mod firehose;
pub mod jetstream;
pub mod keys;
pub mod pg_db;
pub mod rng;
pub mod rows;
pub mod template;
pub mod zipf;

pub use event::{Config, GenEvent, Generator, Kind};
pub use keys::KeyMode;

#[cfg(test)]
mod tests;
