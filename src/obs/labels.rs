//! The bounded label values parity puts on its metrics.
//!
//! Owns: [`DropReason`] (`reason` and `intentional` of
//! `parity_events_dropped_total`), [`ReceivedKind`] (`kind` of
//! `parity_events_received_total`), [`RECONNECT_REASONS`],
//! [`DB_ERROR_KINDS`] and [`IMPORT_OUTCOMES`] (the other counters' label
//! sets, exported at 0 from the start by [`super::recorder`]) and
//! [`endpoint_label`] (`endpoint` of `parity_source_connected`). Does not
//! own counting (see [`super::Obs`]).
//!
//! Invariant: every value is from a fixed set or the configuration, never a
//! DID, URI or error text, so the series count stays bounded.

use url::Url;

use crate::event::EventKind;

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
    /// The database refused the record (a value or an index entry it
    /// cannot store, a constraint or trigger); the rest of its batch was
    /// committed.
    DbRejected,
    /// A firehose commit whose signature does not verify with its DID's
    /// `#atproto` key (`source.verify`), even after refreshing the key.
    BadSignature,
    /// A firehose commit whose ops, inverted on its MST blocks, do not
    /// give its `prevData` (`source.verify = "full"`).
    BadMst,
    /// A firehose commit whose DID's key could not be fetched in time
    /// (`source.verify`): not checked, so not applied.
    Unverifiable,
}

impl DropReason {
    pub const ALL: [DropReason; 10] = [
        DropReason::Malformed,
        DropReason::Oversized,
        DropReason::UnknownType,
        DropReason::MapperFailure,
        DropReason::StaleRev,
        DropReason::AccountGone,
        DropReason::DbRejected,
        DropReason::BadSignature,
        DropReason::BadMst,
        DropReason::Unverifiable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Oversized => "oversized",
            DropReason::UnknownType => "unknown_type",
            DropReason::MapperFailure => "mapper_failure",
            DropReason::StaleRev => "stale_rev",
            DropReason::AccountGone => "account_gone",
            DropReason::DbRejected => "db_rejected",
            DropReason::BadSignature => "bad_signature",
            DropReason::BadMst => "bad_mst",
            DropReason::Unverifiable => "unverifiable",
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

/// The `reason` label of `parity_source_reconnects_total`: every reason the
/// source's connection loop reports.
pub const RECONNECT_REASONS: [&str; 8] = [
    "connect_failed",
    "connect_timeout",
    "send_failed",
    "idle_timeout",
    "closed",
    "error",
    "upstream_error",
    "zstd_dictionary",
];

/// The `reason` label of `parity_source_cursor_rejected_total`: why a
/// server could not serve the cursor asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorRejection {
    /// `FutureCursor`: past the server's newest event; parity goes on live.
    Future,
    /// `OutdatedCursor`: older than the server keeps; it replays from its
    /// oldest event.
    Outdated,
}

impl CursorRejection {
    pub const ALL: [CursorRejection; 2] = [CursorRejection::Future, CursorRejection::Outdated];

    pub fn as_str(self) -> &'static str {
        match self {
            CursorRejection::Future => "future_cursor",
            CursorRejection::Outdated => "outdated_cursor",
        }
    }
}

/// The `format` label of `parity_source_starts_without_cursor_total`: the
/// formats whose cursors are per host (`source::WireFormat::as_str`).
pub const SEQ_FORMATS: [&str; 2] = ["jetstream-v2", "firehose"];

/// The `kind` label of `parity_db_errors_total` (`StoreError::kind`).
pub const DB_ERROR_KINDS: [&str; 3] = ["transient", "rejected", "fatal"];

/// The `outcome` label of `parity_import_records_total`.
pub const IMPORT_OUTCOMES: [&str; 3] = ["synced", "skipped", "failed"];

/// The configured host, with the port when the URL names one: bounded by
/// the config, and never a path or query.
pub fn endpoint_label(url: &Url) -> String {
    let host = url.host_str().unwrap_or("unknown");
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every literal reason the source's connection loop and control-frame
    /// handling report is in [`RECONNECT_REASONS`], so each is exported at 0.
    #[test]
    fn reconnect_reasons_cover_the_source() {
        let sources = [
            (include_str!("../source/transport/connection.rs"), "lost(\""),
            (
                include_str!("../source/transport/report.rs"),
                "Reconnect(\"",
            ),
            (include_str!("../source/formats/mod.rs"), "=> \""),
        ];
        let mut found = Vec::new();
        for (src, marker) in sources {
            for (i, _) in src.match_indices(marker) {
                let rest = &src[i + marker.len()..];
                found.push(&rest[..rest.find('"').unwrap()]);
            }
        }
        for r in [
            "connect_failed",
            "idle_timeout",
            "upstream_error",
            "zstd_dictionary",
        ] {
            assert!(found.contains(&r), "scan missed {r}");
        }
        for r in found {
            assert!(
                RECONNECT_REASONS.contains(&r),
                "{r} not in RECONNECT_REASONS"
            );
        }
    }

    #[test]
    fn endpoint_label_is_the_host() {
        let u = Url::parse("wss://jetstream2.us-east.bsky.network/subscribe?cursor=5").unwrap();
        assert_eq!(endpoint_label(&u), "jetstream2.us-east.bsky.network");
        let u = Url::parse("ws://127.0.0.1:6008/subscribe").unwrap();
        assert_eq!(endpoint_label(&u), "127.0.0.1:6008");
    }
}
