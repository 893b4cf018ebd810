//! # parity
//!
//! Keeps a SQL database (SQLite or PostgreSQL) in sync with the AT Protocol
//! network.
//!
//! # Layout
//!
//! Data flows `source → filter → mapper → batch → store`, wired together by
//! `pipeline`:
//!
//! - [`event`]: domain types (`Cursor`, `Did`, `Nsid`, `Event`); no IO.
//! - [`source`]: reads the network stream; one file per wire format.
//! - [`filter`]: which events reach the mappers (pure).
//! - [`mapper`]: the `Mapper` trait, built-in, declarative and generic
//!   mappers, and the registry that dispatches by collection (pure).
//! - [`batch`]: collects mutations and cursors into one batch (pure).
//! - [`store`]: SQLite and PostgreSQL; one transaction per batch.
//! - [`pipeline`]: `parity consume` wiring, shutdown and drain.
//! - [`import`]: `parity import`, `import-status` and `resume` (backfill
//!   from each account's PDS through the same mappers and store).
//! - [`config`], [`cli`]: configuration and the command line.
//! - [`obs`]: the one observability object (`Obs`: counters, health,
//!   metric handles, `on_commit`), metric names and help texts, `/metrics`,
//!   `/health` and `/ready` on one listener, and logging setup.
//! - [`ops`]: `parity config check` and `parity health`.

pub mod batch;
pub mod cli;
pub mod config;
pub mod error;
pub mod event;
pub mod filter;
pub mod import;
pub mod mapper;
pub mod obs;
pub mod ops;
pub mod pipeline;
pub mod shutdown;
pub mod source;
pub mod store;

pub use error::Error;
