//! Logging setup and the pipeline's counters.
//!
//! Owns: the tracing subscriber (text or JSON lines) and [`Stats`], the one
//! place every stage counts what it received, dropped and wrote. Counters
//! are plain atomics, updated per event or per batch, read by the progress
//! log line, by tests and (later) by the metrics exporter. Labels are
//! bounded: reasons and kinds are fixed enums, never DIDs, URIs or error
//! text.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// Why an event (or message) was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not valid JSON / CBOR, or a required field missing or invalid.
    Malformed,
    /// Larger than `source.max_message_bytes`.
    Oversized,
    /// An event kind or message type this version does not know.
    UnknownType,
    /// The record did not fit its mapper.
    MapperFailure,
    /// An older rev of a URI already superseded in the same batch.
    StaleRev,
    /// A commit for an account purged earlier in the batch.
    AccountGone,
}

impl DropReason {
    pub const ALL: [DropReason; 6] = [
        DropReason::Malformed,
        DropReason::Oversized,
        DropReason::UnknownType,
        DropReason::MapperFailure,
        DropReason::StaleRev,
        DropReason::AccountGone,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Oversized => "oversized",
            DropReason::UnknownType => "unknown_type",
            DropReason::MapperFailure => "mapper_failure",
            DropReason::StaleRev => "stale_rev",
            DropReason::AccountGone => "account_gone",
        }
    }
}

/// Counters shared by the pipeline's tasks.
#[derive(Debug, Default)]
pub struct Stats {
    pub commits_received: AtomicU64,
    pub identities_received: AtomicU64,
    pub accounts_received: AtomicU64,
    pub others_received: AtomicU64,
    pub filtered: AtomicU64,
    dropped: [AtomicU64; 6],
    pub rows_upserted: AtomicU64,
    pub rows_deleted: AtomicU64,
    pub batches: AtomicU64,
    pub reconnects: AtomicU64,
    /// Last committed cursor.
    pub cursor: AtomicI64,
    /// Event time (µs) of the last committed event.
    pub committed_time_us: AtomicI64,
}

impl Stats {
    pub fn record_drop(&self, reason: DropReason) {
        self.dropped[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize].load(Relaxed)
    }

    pub fn received(&self) -> u64 {
        self.commits_received.load(Relaxed)
            + self.identities_received.load(Relaxed)
            + self.accounts_received.load(Relaxed)
            + self.others_received.load(Relaxed)
    }

    /// Seconds between now and the event time of the last commit.
    pub fn lag_seconds(&self) -> Option<f64> {
        let t = self.committed_time_us.load(Relaxed);
        (t > 0).then(|| {
            let now = chrono::Utc::now().timestamp_micros();
            (now - t) as f64 / 1e6
        })
    }
}

/// Installs the global tracing subscriber. `filter` is a `RUST_LOG`-style
/// directive; `json` selects JSON lines. Logs go to stderr.
pub fn init_logging(filter: &str, json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
