//! parity's integration tests, compiled as one binary (`cargo test --test it`).
//!
//! Owns: one module per scenario file below, and [`common`], the harness they
//! share (real databases, the in-process consumer, the `parity` binary as a
//! child process, the [`backend_tests!`] macro). The fake network peers
//! (Jetstream/firehose, PDS, PLC directory, DNS) live in the dev-only
//! `testnet` crate (`crates/testnet/`), with their own tests there.
//!
//! One binary instead of one per file: `common` and the peers compile once,
//! and every test still runs under `cargo test` (filter with a module path,
//! e.g. `cargo test --test it consume::`).

#[macro_use]
mod common;

mod accounts;
mod architecture;
mod auto_resync;
mod bad_input;
mod bench_workload;
mod config;
mod consume;
mod convergence;
mod deploy;
mod failover;
mod feed;
mod feed_backends;
mod feed_brokers;
mod feed_browser;
mod feed_crash;
mod feed_log;
mod hostile_net;
mod import;
mod import_all;
mod import_faults;
mod import_getrepo;
mod import_resume;
mod liveness;
mod mappers;
mod metrics;
mod poison;
mod publish;
mod publish_auth;
mod publish_faults;
mod publish_pacing;
mod publish_recheck;
mod publish_shutdown;
mod publish_sql;
mod races;
mod relay_scenarios;
mod resume_after_crash;
mod store;
mod verify;
mod writers;
