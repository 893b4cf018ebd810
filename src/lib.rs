//! # parity
//!
//! Keeps a SQL database (SQLite or PostgreSQL) in sync with the AT Protocol
//! network.
//!
//! # Layout
//!
//! Three layers; a module uses only the layers below it (checked by
//! `tests/architecture.rs`: no import cycle between top-level modules).
//!
//! 1. **Entry**: [`cli`] (clap: subcommands and global flags) and the
//!    `parity` binary (`main.rs`: parse, resolve the config, dispatch).
//!    [`cmd`] holds one file per command (`consume`, `import`, `resume`,
//!    `import_status`, `migrate`, `config_check`, `config_example`,
//!    `health`, `serve`); a command is the only code that sees the whole
//!    [`config::Config`], turns its sections into runtime types, runs the
//!    components and picks the exit code. [`config`] composes the sections
//!    and layers file → `PARITY_*` environment → flags once; [`error`]
//!    aggregates the component errors into [`Error`].
//! 2. **Components** (IO): [`pipeline`] (`parity consume`: reader →
//!    processor → writer, drain), [`import`] (backfill from each account's
//!    PDS), [`source`] (the network stream), [`store`] (SQLite and
//!    PostgreSQL), [`feed`] (the change feed: channels, the live hub fed
//!    from the change log, WebSocket, SSE and long-poll), [`obs`] (the one observability object `Obs`: counters,
//!    health, metric handles and `on_commit`; metric names, `/metrics`,
//!    `/health`, `/ready`, logging), [`shutdown`] (the signal token). Each takes its own config section,
//!    never `Config`.
//! 3. **Pure core** (no IO): [`event`] (`Cursor`, `Did`, `Nsid`, `Event`,
//!    `CollectionPattern`), [`filter`] (which events reach the mappers),
//!    [`mapper`] (the `Mapper` trait, built-in, declarative and generic
//!    mappers, the registry), [`batch`] (one batch: mutations, repo changes
//!    and cursors). Each owns its config section and builds its runtime
//!    type from it (`Filter::from_config`, `Registry::from_config`,
//!    `PurgePolicy::from_config`).
//!
//! # One event, from websocket frame to committed row
//!
//! 1. `cmd::consume` builds the pipeline's `Parts` from the config and calls
//!    `pipeline::run`, which opens the store (migrate, prepare the mapped
//!    tables), loads the start cursor and spawns the reader, the processor,
//!    the dispatcher and `database.writers` writer tasks.
//! 2. `source::transport::connection::Reader` reads a frame from the
//!    websocket (transport only: connect, reconnect, back off, fail over,
//!    watchdog) and hands it to the format's decoder in `source::formats`
//!    (`jetstream`, `jetstream_v2`, or `firehose` over the codecs in
//!    `source::codecs`: `zstd_frames`, `car`, `dagcbor`). The decoder owns
//!    the protocol state and returns [`event::Event`]s plus typed drops,
//!    which `source::transport::report` counts on the [`obs::Obs`]; each
//!    event goes on the bounded event channel with the key of its stream
//!    (`source::stream`).
//! 3. The processor task (`pipeline.rs`) asks the [`filter::Filter`] whether
//!    to keep it, maps a commit through the [`mapper::Registry`] into a
//!    `Mutation`, and pushes it into the [`batch::Batcher`], which also
//!    records the event's cursor whether it was kept or not.
//! 4. When the batch is full or old enough, it goes on the bounded batch
//!    channel; the dispatcher (`pipeline/writers.rs`) splits it by DID into
//!    one share per writer (`store::shard`; one writer on SQLite: the batch
//!    itself); each writer task calls `store::Store::commit`, which runs the
//!    statements in the order `store::plan` documents (repos, tombstones and
//!    deletes, upserts, revs, checkpoint) once, in `store::commit`, over
//!    the backend's bulk steps (`store::sqlite`, `store::postgres`), and
//!    saves the stream cursor in the same transaction (the contract in
//!    `store::cursor`; with several writers, the writer's own position and
//!    the stream's low watermark). The writer then calls `Obs::on_commit`,
//!    and `Obs::on_checkpoint` when every writer has passed the batch. On a transient error the
//!    writer retries the same batch; the row and its cursor commit together
//!    or not at all.

pub mod batch;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod error;
pub mod event;
pub mod feed;
pub mod filter;
pub mod import;
pub mod mapper;
pub mod net;
pub mod obs;
pub mod pipeline;
pub mod shutdown;
pub mod source;
pub mod store;

pub use error::Error;
