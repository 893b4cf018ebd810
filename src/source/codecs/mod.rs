//! Codecs: byte-level formats the wire formats are built from. Pure, no IO,
//! no knowledge of events.
//!
//! - [`dagcbor`]: the strict DAG-CBOR reader and the record → Jetstream
//!   JSON transcoder.
//! - [`car`]: CAR v1 slices (blocks by CID) and CID verification.
//! - [`repo`]: whole-repository verification (streaming CAR with a memory
//!   bound, signed commit, signing keys, MST walk and root recomputation).
//! - [`zstd_frames`]: dictionary-zstd frames (bounded output), the bundled
//!   Jetstream v1 dictionary, dictionary IDs.

pub mod car;
pub mod dagcbor;
pub mod repo;
pub mod zstd_frames;
