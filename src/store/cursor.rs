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
//!    moves forward within a stream by construction. With several writers
//!    (`database.writers`, `store::shard`), each commits its share of a batch
//!    with its own position in `parity_writer_cursors`, and the stream's row
//!    here becomes, in the same transaction and under one lock that orders
//!    the writers' last statements, the lowest position of all of them (once
//!    every writer has one): the low watermark, which is what restarts,
//!    `/health` and every other reader use. Positions of an earlier run are
//!    forgotten at start (another writer count partitions differently). (Jetstream v1 `time_us`
//!    can step back slightly between events; storing the last, not the
//!    largest, only ever replays more.)
//! 4. A cursor is kept per stream key, an opaque string to the store (the
//!    source builds it from wire format plus endpoint host, see
//!    `source::stream_key`), because `seq` cursors belong to one host. Jetstream
//!    v1 `time_us` cursors roughly line up across hosts, so on failover the
//!    newest v1 cursor of any host is used, rewound.
//! 5. A missing cursor means "start live". A negative stored cursor is
//!    corruption: the process stops instead of silently going live.
