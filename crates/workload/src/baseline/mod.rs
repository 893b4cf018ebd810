//! The store-limit baselines: plain programs that write the rows parity
//! writes for the same generated events ([`crate::rows`]) into a database
//! whose schema `parity migrate` made, as fast as the store allows. parity's
//! rows/s is reported as a share of theirs.
//!
//! Owns: making each transaction's rows between writes ([`feed`]), and the
//! progress record both writers return. The
//! writers themselves: [`sqlite`] (prepared upsert in large transactions)
//! and [`postgres`] (multi-row upsert, or COPY).

pub mod feed;
pub mod postgres;
pub mod schema;
pub mod sqlite;

/// One point of a baseline run: after a transaction committed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Events consumed so far (from the start of the run).
    pub events: u64,
    /// Record row writes (upserts and deletes) so far.
    pub rows: u64,
    /// Seconds the writer spent writing so far: its clock stops while the
    /// next chunk is generated and mapped, so the generator never limits
    /// the baseline.
    pub secs: f64,
}

/// The columns every mapped table has, filled by the writer itself.
pub const STANDARD: [&str; 7] = ["uri", "did", "rkey", "cid", "rev", "record", "synced_at"];
