//! Everything that reads an upstream stream (Jetstream v1, Jetstream v2, the
//! raw firehose) and turns it into [`Event`](crate::event::Event)s, grouped
//! by role:
//!
//! - [`config`]: [`SourceConfig`], the `[source]` section.
//! - [`stream`]: [`WireFormat`], [`stream_key`] (the opaque key a stream's
//!   cursor is stored under), [`Endpoint`], and the resume rule (rewind and
//!   floor), written once.
//! - [`formats`]: per wire format, message → events plus typed drop
//!   reasons, each decoder owning its protocol state; the shared control
//!   frame, RFC 3339 parser and rev check. No IO.
//! - [`codecs`]: DAG-CBOR, CAR and zstd frames. No IO.
//! - [`verify`]: the live verification stage (`source.verify`) between
//!   the reader and the processor: commit signatures and MST proofs,
//!   keys fetched in parallel, frames kept in order.
//! - [`transport`]: the IO: the websocket [`Reader`] loop (connect, read,
//!   reconnect, back off, rotate endpoints, watchdog), the subscribe
//!   handshakes, the Jetstream v2 dictionary download and its disk cache,
//!   and the one place that reports to stats, health and metrics.
//!
//! One message travels: `transport::connection` reads it →
//! `formats::Decoder::decode` → events, drops, control frame →
//! `transport::report` counts and logs → events go to the pipeline as
//! [`Item`]s.
//!
//! Uses `event` and `filter` (and the stats/health/metrics handles, only in
//! `transport::report`); never the store or the config module.

pub mod codecs;
pub mod config;
pub mod formats;
pub mod stream;
pub mod transport;
pub mod verify;
pub mod verify_pool;

pub use config::{DEFAULT_ENDPOINTS, SourceConfig, VerifyMode, parse_endpoint};
pub use stream::{Endpoint, Origin, Positions, Resume, WireFormat, stream_key};
pub use transport::{Item, Pushdown, Reader};

// The modules' paths before they were grouped, kept for tests, examples
// and benches.
pub use codecs::{car, dagcbor, zstd_frames};
pub use formats::{firehose, jetstream, jetstream_v2};
