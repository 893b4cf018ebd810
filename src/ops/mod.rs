//! The `parity config check` and `parity health` commands.
//!
//! Owns: checking a config against the database read-only and printing it
//! with secrets masked ([`check`]); probing a running parity's `/health`
//! ([`probe`]). Metrics, health and the listener live in `obs`.

pub mod check;
pub mod probe;
