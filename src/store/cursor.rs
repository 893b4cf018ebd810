//! Stream cursors: where each upstream stream was when the last batch
//! committed.
//!
//! Semantics (the contract every writer of `parity_cursors` keeps):
//!
//! 1. The stored cursor is the cursor of the last event **included in a
//!    committed transaction**, written in the same transaction as the rows
//!    that event produced, so it is never ahead of durable data.
//! 2. Delivery is at-least-once and every write is idempotent, so resuming
//!    from the stored cursor (rewound by a margin for time-based cursors) may
//!    replay a few events harmlessly.
//! 3. The pipeline is one ordered stream per connection, so the cursor only
//!    moves forward within a stream by construction. (Jetstream v1 `time_us`
//!    can step back slightly between events; storing the last, not the
//!    largest, only ever replays more.)
//! 4. A cursor is kept per stream key, an opaque string to the store (the
//!    source builds it from wire format plus endpoint host, see
//!    `source::stream_key`), because `seq` cursors belong to one host. Jetstream
//!    v1 `time_us` cursors roughly line up across hosts, so on failover the
//!    newest v1 cursor of any host is used, rewound.
//! 5. A missing cursor means "start live". A negative stored cursor is
//!    corruption: the process stops instead of silently going live.
