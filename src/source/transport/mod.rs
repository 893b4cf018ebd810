//! Transport: everything that does IO to reach a stream.
//!
//! - [`connection`]: the [`Reader`] loop (connect, read, reconnect with
//!   backoff, rotate endpoints, liveness watchdog); hands each message to
//!   `formats::Decoder` and each event to the pipeline.
//! - [`subscribe`]: the URL, first message and websocket request of a
//!   connection attempt, per wire format (pure).
//! - [`subscribe_v2`]: the Jetstream v2 lexicon parameters and the
//!   `getZstdDictionary` response (pure).
//! - [`dictionary`]: fetches the Jetstream v2 dictionary over HTTP and
//!   caches it on disk.
//! - `report`: the one place that reports to stats, health and metrics.

pub mod connection;
pub mod dictionary;
mod report;
pub mod subscribe;
pub mod subscribe_v2;

pub use connection::{Item, Reader};
pub use subscribe::Pushdown;
