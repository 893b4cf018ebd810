//! Logging setup and the pipeline's counters.
//!
//! Owns: the tracing subscriber (text or JSON lines), [`Escaped`] for text
//! that came from the network, and [`Stats`], the one place every stage
//! counts what it received, dropped and wrote. Each counter is a plain
//! atomic (read by the progress log line and by tests) paired with a
//! Prometheus counter handle resolved once when `Stats` is created, so a
//! per-event update costs two atomic adds and no registry lookup. Metric
//! names and help texts live in `ops::metrics`. Labels are bounded: reasons
//! and kinds are fixed enums, never DIDs, URIs or error text.
//!
//! Logging rule: a field whose text may come from a peer (handles, record
//! text, upstream error messages, errors that quote input) is logged with
//! `?` or wrapped in [`Escaped`], never with a bare `%`, so it cannot
//! inject terminal escapes or fake log lines.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use metrics::{Counter, counter};

use crate::event::EventKind;
use crate::ops::metrics::{EVENTS_DROPPED, EVENTS_FILTERED, EVENTS_RECEIVED};

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

    /// Whether parity drops these on purpose (convergence rules) rather
    /// than because the input was bad.
    pub fn intentional(self) -> bool {
        matches!(self, DropReason::StaleRev | DropReason::AccountGone)
    }
}

/// The `kind` label of `parity_events_received_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceivedKind {
    Commit,
    Identity,
    Account,
    /// `#sync`, `#info` and other frames that are not records or repo state.
    Other,
}

impl ReceivedKind {
    pub const ALL: [ReceivedKind; 4] = [
        ReceivedKind::Commit,
        ReceivedKind::Identity,
        ReceivedKind::Account,
        ReceivedKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReceivedKind::Commit => "commit",
            ReceivedKind::Identity => "identity",
            ReceivedKind::Account => "account",
            ReceivedKind::Other => "other",
        }
    }

    /// `None` for internal cursor-only events, which are not counted.
    pub fn of(kind: &EventKind) -> Option<ReceivedKind> {
        match kind {
            EventKind::Commit(_) => Some(ReceivedKind::Commit),
            EventKind::Identity { .. } => Some(ReceivedKind::Identity),
            EventKind::Account { .. } => Some(ReceivedKind::Account),
            EventKind::Skip => None,
            _ => Some(ReceivedKind::Other),
        }
    }
}

/// Counters shared by the pipeline's tasks. Update them through the
/// `record_*` methods, which also feed the Prometheus counters.
#[derive(Debug)]
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
    exported: Exported,
}

/// Prometheus handles, resolved once (no-ops without a recorder).
#[derive(Debug)]
struct Exported {
    received: [Counter; 4],
    filtered: Counter,
    dropped: [Counter; 6],
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            commits_received: AtomicU64::new(0),
            identities_received: AtomicU64::new(0),
            accounts_received: AtomicU64::new(0),
            others_received: AtomicU64::new(0),
            filtered: AtomicU64::new(0),
            dropped: Default::default(),
            rows_upserted: AtomicU64::new(0),
            rows_deleted: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            cursor: AtomicI64::new(0),
            committed_time_us: AtomicI64::new(0),
            exported: Exported {
                received: ReceivedKind::ALL
                    .map(|k| counter!(EVENTS_RECEIVED, "kind" => k.as_str())),
                filtered: counter!(EVENTS_FILTERED),
                dropped: DropReason::ALL.map(|r| {
                    let intentional = if r.intentional() { "true" } else { "false" };
                    counter!(EVENTS_DROPPED, "reason" => r.as_str(), "intentional" => intentional)
                }),
            },
        }
    }
}

impl Stats {
    /// One event decoded from the stream.
    pub fn record_received(&self, kind: ReceivedKind) {
        let c = match kind {
            ReceivedKind::Commit => &self.commits_received,
            ReceivedKind::Identity => &self.identities_received,
            ReceivedKind::Account => &self.accounts_received,
            ReceivedKind::Other => &self.others_received,
        };
        c.fetch_add(1, Relaxed);
        self.exported.received[kind as usize].increment(1);
    }

    /// One event kept out of the database (filter, or no mapper).
    pub fn record_filtered(&self) {
        self.filtered.fetch_add(1, Relaxed);
        self.exported.filtered.increment(1);
    }

    /// One connection lost; `reason` is a fixed label.
    pub fn record_reconnect(&self, reason: &'static str) {
        self.reconnects.fetch_add(1, Relaxed);
        crate::ops::metrics::record_reconnect(reason);
    }

    pub fn record_drop(&self, reason: DropReason) {
        self.dropped[reason as usize].fetch_add(1, Relaxed);
        self.exported.dropped[reason as usize].increment(1);
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

/// Shows text from the network with control characters (C0, DEL, C1) and
/// bidirectional overrides escaped (`\u{1b}`, `\n`), so it can neither
/// drive the terminal nor start a fake log line.
pub struct Escaped<T>(pub T);

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Escaping<'a, 'b>(&'a mut fmt::Formatter<'b>);
        impl fmt::Write for Escaping<'_, '_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                for c in s.chars() {
                    if c.is_control()
                        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
                    {
                        write!(self.0, "{}", c.escape_debug())?;
                    } else {
                        fmt::Write::write_char(self.0, c)?;
                    }
                }
                Ok(())
            }
        }
        fmt::Write::write_fmt(&mut Escaping(f), format_args!("{}", self.0))
    }
}

/// Installs the global tracing subscriber. `filter` is a `RUST_LOG`-style
/// directive. Logs go to stderr:
/// - text: one line per event, coloured only when stderr is a terminal (a
///   file or journald gets no escape codes);
/// - JSON (`json`): one object per line with `timestamp` (RFC 3339, UTC),
///   `level`, `target` and `fields` (`message` plus the event's fields).
pub fn init_logging(filter: &str, json: bool) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true);
    let _ = if json {
        builder.json().with_ansi(false).try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_neutralises_control_characters() {
        let evil = "bob\u{1b}[31m.bsky.social\nINFO fake line\u{9b}\u{202e}";
        let shown = Escaped(evil).to_string();
        assert_eq!(
            shown,
            "bob\\u{1b}[31m.bsky.social\\nINFO fake line\\u{9b}\\u{202e}"
        );
        assert!(!shown.chars().any(char::is_control));
        assert_eq!(Escaped("plain ünïcode ✓").to_string(), "plain ünïcode ✓");
    }
}
