//! The local AT Protocol network parity's tests and benchmarks run against,
//! every peer on `127.0.0.1:0` and speaking the real wire protocol:
//!
//! - [`jetstream`]: a Jetstream v1/v2 websocket server that also plays a
//!   relay (`subscribeRepos` binary frames), replaying recorded events with
//!   the upstream cursor rules;
//! - [`frames`]: builds binary firehose messages (and Jetstream v2 frames)
//!   from the recorded fixtures;
//! - [`pds`]: one HTTP server playing an account's PDS, the PLC directory
//!   and a did:web / handle host, with injectable faults;
//! - [`relay`]: a relay's repository listing (`listRepos`,
//!   `listReposByCollection`) over the repos of one or more [`pds`]es;
//! - [`dns`]: a DNS server answering `_atproto.<handle>` TXT queries;
//! - [`tamper`]: tampered copies of real `#commit` messages (a record,
//!   the signature, an MST node) for the verification tests;
//! - [`signed`]: signed `#commit` chains with Sync 1.1 proofs for
//!   generated accounts (their keys are in `pds`'s DID documents);
//! - [`refpds`]: the reference PDS + PLC directory (`@atproto/dev-env`,
//!   Node) as a child process, for tests that need the real implementation.
//!
//! Also the fixture paths: [`fixture`] resolves a path under the
//! repository's `tests/fixtures/` (copied from the shared collection, see
//! its `SOURCES.md`).
//!
//! Dev-only (`publish = false`): nothing here is part of parity's build.
//! The peers are proven against independent oracles in `tests/`.

pub mod dns;
pub mod frames;
pub mod jetstream;
pub mod pds;
pub mod refpds;
pub mod relay;
pub mod signed;
pub mod tamper;

use std::path::PathBuf;

/// The recorded relay window as production Jetstream v1 JSON (one event a line).
pub const RELAY_JSONL: &str =
    "firehose/bsky-relay-2026-07-04-seq-31527015372-31527015471/jetstream_v1.jsonl";
/// The same window as the relay's binary frames (`[u32 LE length][message]`).
pub const RELAY_FRAMES: &str =
    "firehose/bsky-relay-2026-07-04-seq-31527015372-31527015471/frames.bin";
/// Ten hand-picked real Jetstream v1 events.
pub const GOLDEN_JSONL: &str = "jetstream/golden_v1.jsonl";

/// `tests/fixtures/<rel>` of the parity repository.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(rel)
}

/// The non-empty lines of a text fixture.
pub fn fixture_lines(rel: &str) -> Vec<String> {
    std::fs::read_to_string(fixture(rel))
        .unwrap_or_else(|e| panic!("fixture {rel}: {e}"))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}
