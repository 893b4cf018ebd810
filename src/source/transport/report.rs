//! The one place where the source reports to the process's observability
//! object ([`Obs`]): connection state, liveness, reconnects, events
//! received, drops and control frames.
//!
//! Owns: turning a typed [`Dropped`] into its metric reason and debug line,
//! and what the connection does with a [`Control`] frame (info: count as
//! `other` and log; error: log and reconnect; unknown: count as
//! `unknown_type`; a cursor the server cannot serve, `OutdatedCursor` /
//! `FutureCursor`: one warning and `parity_source_cursor_rejected_total`,
//! and for `FutureCursor` go on live), and the warning and count of a
//! failover start without a cursor. Does not own: deciding to drop (`formats`) or to
//! reconnect on a lost socket (`connection`).

use std::sync::Arc;

use crate::event::Event;
use crate::obs::{CursorRejection, DropReason, Obs, ReceivedKind};
use crate::source::codecs::zstd_frames::ZstdError;
use crate::source::formats::{Control, Dropped, jetstream};
use crate::source::stream::{Endpoint, WireFormat};

pub(super) use crate::obs::Escaped;

/// What the connection does after a control frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum After {
    /// Keep reading.
    Read,
    /// The server ends the stream: reconnect; the reason is the metric label.
    Reconnect(&'static str),
    /// The server cannot serve the cursor asked for (`FutureCursor`, past
    /// its newest event) and ends the stream: reconnect live.
    GoLive,
}

/// The reader's observability handle.
pub(super) struct Report {
    /// Counters, connection state and last message time (`/health`).
    obs: Arc<Obs>,
}

impl Report {
    pub(super) fn new(obs: Arc<Obs>) -> Report {
        Report { obs }
    }

    /// The connection to `ep` came up or went down: `/health` and the
    /// `parity_source_connected` gauge.
    pub(super) fn connected(&self, ep: &Endpoint, up: bool) {
        self.obs.set_connected(&ep.url, up);
    }

    /// A message arrived (pings included): the stream is alive.
    pub(super) fn touch(&self) {
        self.obs.touch();
    }

    pub(super) fn reconnect(&self, reason: &'static str) {
        self.obs.record_reconnect(reason);
    }

    /// An event is handed to the pipeline.
    pub(super) fn received(&self, ev: &Event) {
        if let Some(kind) = ReceivedKind::of(&ev.kind) {
            self.obs.record_received(kind);
        }
    }

    /// Counts one drop under its reason and logs it at debug level.
    pub(super) fn dropped(&self, d: &Dropped) {
        for _ in 0..d.events() {
            self.obs.record_drop(reason(d));
        }
        match d {
            Dropped::Oversized { len } => tracing::debug!(len, "Oversized message skipped."),
            Dropped::WrongFrameType { len } => {
                tracing::debug!(len, "Message of the wrong frame type skipped.")
            }
            Dropped::NoDictionary { len } => {
                tracing::debug!(len, "Compressed frame without a dictionary skipped.")
            }
            Dropped::Zstd { error, len } => {
                tracing::debug!(error = %Escaped(error), len, "Undecompressable frame skipped.")
            }
            Dropped::Jetstream { error, len } => {
                tracing::debug!(error = %Escaped(error), len, "Undecodable message skipped.")
            }
            Dropped::Firehose { error, len } => {
                tracing::debug!(error = %Escaped(error), len, "Undecodable frame skipped.")
            }
            Dropped::StaleCommit { did, seq, .. } => {
                tracing::debug!(did = %did, seq, "Stale commit skipped (rev not newer).")
            }
            Dropped::BadOp { did, seq, op } => {
                tracing::debug!(did = %did, seq, op = op.index, reason = op.kind.label(), "Commit op skipped.")
            }
        }
    }

    /// A failover reached `ep`, which has no cursor of its own while another
    /// host has one: it starts live, and events published meanwhile on it
    /// may be missing. Sequence numbers are per host, so nothing else is
    /// safe.
    pub(super) fn started_without_cursor(&self, ep: &Endpoint) {
        self.obs.record_start_without_cursor(ep.format.as_str());
        tracing::warn!(endpoint = %ep.url, "No stored cursor for this host (sequence numbers are per host); starting live: events published here before now are not replayed.");
    }

    /// Handles a control frame of a `format` stream.
    pub(super) fn control(&self, format: WireFormat, c: &Control) -> After {
        let message = c.short_message();
        match c {
            Control::Info { name, .. } if name == "OutdatedCursor" => {
                self.obs.record_received(ReceivedKind::Other);
                self.obs.record_cursor_rejected(CursorRejection::Outdated);
                tracing::warn!(message = ?message, "Cursor older than the server keeps (OutdatedCursor); it replays from its oldest event: events in between are missing.");
                After::Read
            }
            Control::Info { name, .. } => {
                self.obs.record_received(ReceivedKind::Other);
                tracing::warn!(name = %Escaped(name), message = ?message, "Upstream info message.");
                After::Read
            }
            Control::Error { error, .. } if error == "FutureCursor" => {
                self.obs.record_cursor_rejected(CursorRejection::Future);
                tracing::warn!(message = ?message, "Cursor is past the server's newest event (FutureCursor); going on live from now.");
                After::GoLive
            }
            Control::Error { error, .. } => {
                if format == WireFormat::JetstreamV2 {
                    tracing::warn!(error = %Escaped(error), message = ?message, "Upstream error frame; reconnecting from the stored position.");
                } else {
                    tracing::warn!(error = %Escaped(error), message = ?message, "Upstream error frame; reconnecting.");
                }
                After::Reconnect("upstream_error")
            }
            Control::Unknown { .. } => {
                self.obs.record_drop(DropReason::UnknownType);
                After::Read
            }
        }
    }
}

/// The metric reason of a drop, from its type.
fn reason(d: &Dropped) -> DropReason {
    match d {
        Dropped::Oversized { .. }
        | Dropped::Zstd {
            error: ZstdError::TooLarge { .. },
            ..
        } => DropReason::Oversized,
        Dropped::Jetstream {
            error: jetstream::DecodeError::UnknownKind,
            ..
        } => DropReason::UnknownType,
        Dropped::StaleCommit { .. } => DropReason::StaleRev,
        Dropped::WrongFrameType { .. }
        | Dropped::NoDictionary { .. }
        | Dropped::Zstd { .. }
        | Dropped::Jetstream { .. }
        | Dropped::Firehose { .. }
        | Dropped::BadOp { .. } => DropReason::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::formats::firehose::{OpError, OpErrorKind};

    #[test]
    fn drops_count_under_their_reason() {
        let stats = Arc::new(Obs::new(std::time::Duration::from_secs(60)));
        let r = Report::new(stats.clone());
        let did = crate::event::Did::parse("did:plc:a").unwrap();
        for d in [
            Dropped::Oversized { len: 1 },
            Dropped::Zstd {
                error: ZstdError::TooLarge {
                    max_len: 1,
                    declared: None,
                },
                len: 1,
            },
            Dropped::Zstd {
                error: ZstdError::Corrupt("x".into()),
                len: 1,
            },
            Dropped::Jetstream {
                error: jetstream::DecodeError::UnknownKind,
                len: 1,
            },
            Dropped::Jetstream {
                error: jetstream::DecodeError::Invalid { field: "did" },
                len: 1,
            },
            Dropped::NoDictionary { len: 1 },
            Dropped::WrongFrameType { len: 1 },
            Dropped::StaleCommit {
                did: did.clone(),
                seq: 1,
                ops: 3,
            },
            Dropped::BadOp {
                did,
                seq: 1,
                op: OpError {
                    index: 0,
                    path: "x".into(),
                    kind: OpErrorKind::BadPath,
                },
            },
        ] {
            r.dropped(&d);
        }
        assert_eq!(stats.dropped(DropReason::Oversized), 2);
        assert_eq!(stats.dropped(DropReason::UnknownType), 1);
        assert_eq!(stats.dropped(DropReason::StaleRev), 3);
        assert_eq!(stats.dropped(DropReason::Malformed), 5);
    }

    #[test]
    fn control_frames_are_handled_once_for_every_format() {
        let stats = Arc::new(Obs::new(std::time::Duration::from_secs(60)));
        let r = Report::new(stats.clone());
        for format in [WireFormat::JetstreamV2, WireFormat::Firehose] {
            let info = Control::Info {
                name: "OutdatedCursor".into(),
                message: None,
            };
            assert_eq!(r.control(format, &info), After::Read);
            let future = Control::Error {
                error: "FutureCursor".into(),
                message: Some("x".into()),
            };
            assert_eq!(r.control(format, &future), After::GoLive);
            let err = Control::Error {
                error: "ConsumerTooSlow".into(),
                message: Some("x".into()),
            };
            assert_eq!(r.control(format, &err), After::Reconnect("upstream_error"));
            let unknown = Control::Unknown { op: None, t: None };
            assert_eq!(r.control(format, &unknown), After::Read);
        }
        assert_eq!(stats.dropped(DropReason::UnknownType), 2);
        assert_eq!(stats.cursor_rejected(CursorRejection::Outdated), 2);
        assert_eq!(stats.cursor_rejected(CursorRejection::Future), 2);
    }
}
