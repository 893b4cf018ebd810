//! Which stream an endpoint is, what its cursor key is, and where a
//! connection to it resumes.
//!
//! Owns: [`WireFormat`] (picked from the endpoint path), [`stream_key`] (the
//! opaque key the store keeps a stream's cursor under), [`Endpoint`], and
//! the resume rule, written once here and used by the connection loop and by
//! the pipeline's start-up:
//!
//! - **Rewind**: time-based cursors (Jetstream v1 `time_us`) are resumed
//!   `rewind_seconds` early, because instances stamp `time_us` themselves
//!   and events in flight at a disconnect may carry slightly older stamps.
//!   `seq` cursors are exact and are never rewound ([`WireFormat::rewind`]).
//! - **Floor**: events at or below the floor were already received and are
//!   dropped ([`Resume`]), because some servers replay the cursor's own
//!   event (Jetstream v2 and the indigo relay resend `seq >= cursor`; the
//!   reference PDS resends `seq > cursor`; the floor makes both the same).
//!   After a reconnect the floor is the last event received (everything
//!   received is already in the pipeline). On the first connection it is
//!   the stored cursor, for every `seq` format: a stored cursor only ever
//!   names a frame whose events were all committed (a firehose `#commit`
//!   frame carries many ops under one `seq`, and a batch never ends inside
//!   one, see `batch`). A cursor the user asked for is not floored.
//!
//! Does not own: loading or saving cursors (the pipeline and the store), nor
//! the socket (`transport`). No IO.

use std::sync::Arc;

use url::Url;

use super::config::parse_endpoint;
use crate::event::Cursor;

/// The wire formats parity reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireFormat {
    /// Jetstream v1 `/subscribe` (cursor: `time_us`).
    JetstreamV1,
    /// Jetstream v2 `network.bsky.jetstream.subscribeEvents` (cursor: `seq`).
    JetstreamV2,
    /// `com.atproto.sync.subscribeRepos` (cursor: `seq`).
    Firehose,
}

impl WireFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            WireFormat::JetstreamV1 => "jetstream-v1",
            WireFormat::JetstreamV2 => "jetstream-v2",
            WireFormat::Firehose => "firehose",
        }
    }

    /// Whether cursors of this format are timestamps comparable across hosts.
    pub fn time_based(self) -> bool {
        self == WireFormat::JetstreamV1
    }

    /// Picks the format from the endpoint path.
    pub fn from_url(url: &Url) -> Option<WireFormat> {
        let path = url.path().trim_end_matches('/');
        if path.ends_with("/subscribe") {
            Some(WireFormat::JetstreamV1)
        } else if path.ends_with("/xrpc/network.bsky.jetstream.subscribeEvents") {
            Some(WireFormat::JetstreamV2)
        } else if path.ends_with("/xrpc/com.atproto.sync.subscribeRepos") {
            Some(WireFormat::Firehose)
        } else {
            None
        }
    }

    /// The cursor to ask for when resuming from `c`: `rewind_seconds`
    /// earlier for time-based cursors (never below 0), `c` itself for `seq`.
    pub fn rewind(self, c: Cursor, rewind_seconds: u64) -> Cursor {
        if self.time_based() {
            let us = i64::try_from(rewind_seconds)
                .unwrap_or(i64::MAX)
                .saturating_mul(1_000_000);
            Cursor(c.0.saturating_sub(us).max(0))
        } else {
            c
        }
    }
}

/// `format:host[:port]`, the key a stream's cursor is stored under.
pub fn stream_key(format: WireFormat, url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(p) => format!("{}:{host}:{p}", format.as_str()),
        None => format!("{}:{host}", format.as_str()),
    }
}

/// One endpoint of the failover list.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: Url,
    pub format: WireFormat,
    /// The stream key its cursor is stored under.
    pub key: Arc<str>,
}

impl Endpoint {
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        let (url, format) = parse_endpoint(s)?;
        let key = stream_key(format, &url).into();
        Ok(Endpoint { url, format, key })
    }
}

/// Where one connection attempt starts (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// The cursor to ask the server for (`None`: live).
    pub cursor: Option<Cursor>,
    /// Events at or below this cursor were already received: drop them.
    pub floor: Option<Cursor>,
}

impl Resume {
    /// The first connection to a `format` stream, from `start` (the stored
    /// cursor, already rewound, when `start_is_stored`; else one the user
    /// asked for, taken as is).
    pub fn first(format: WireFormat, start: Option<Cursor>, start_is_stored: bool) -> Resume {
        Resume {
            cursor: start,
            floor: start.filter(|_| start_is_stored && !format.time_based()),
        }
    }

    /// A reconnection to a `format` stream whose last received event had
    /// cursor `last`.
    pub fn after(format: WireFormat, last: Cursor, rewind_seconds: u64) -> Resume {
        Resume {
            cursor: Some(format.rewind(last, rewind_seconds)),
            floor: (!format.time_based()).then_some(last),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_keys() {
        let u = Url::parse("wss://jetstream2.us-east.bsky.network/subscribe").unwrap();
        assert_eq!(WireFormat::from_url(&u), Some(WireFormat::JetstreamV1));
        assert_eq!(
            stream_key(WireFormat::JetstreamV1, &u),
            "jetstream-v1:jetstream2.us-east.bsky.network"
        );
        let f = Url::parse("wss://bsky.network/xrpc/com.atproto.sync.subscribeRepos").unwrap();
        assert_eq!(WireFormat::from_url(&f), Some(WireFormat::Firehose));
        let l =
            Url::parse("ws://127.0.0.1:4000/xrpc/network.bsky.jetstream.subscribeEvents").unwrap();
        assert_eq!(WireFormat::from_url(&l), Some(WireFormat::JetstreamV2));
        assert_eq!(
            stream_key(WireFormat::JetstreamV2, &l),
            "jetstream-v2:127.0.0.1:4000"
        );
        assert_eq!(
            WireFormat::from_url(&Url::parse("wss://x/other").unwrap()),
            None
        );
    }

    #[test]
    fn rewind_only_moves_time_cursors_and_stops_at_zero() {
        let v1 = WireFormat::JetstreamV1;
        assert_eq!(v1.rewind(Cursor(10_000_000), 5), Cursor(5_000_000));
        assert_eq!(v1.rewind(Cursor(3), 5), Cursor(0));
        assert_eq!(v1.rewind(Cursor(3), u64::MAX), Cursor(0));
        assert_eq!(v1.rewind(Cursor(7), 0), Cursor(7));
        assert_eq!(WireFormat::Firehose.rewind(Cursor(3), 5), Cursor(3));
        assert_eq!(WireFormat::JetstreamV2.rewind(Cursor(3), 5), Cursor(3));
    }

    #[test]
    fn resume_floors_replayed_seq_events() {
        use WireFormat::*;
        let c = Some(Cursor(42));
        // First connection: a stored seq cursor is floored (it names whole
        // committed frames only); a user's cursor and time cursors are not.
        for f in [JetstreamV2, Firehose] {
            assert_eq!(
                Resume::first(f, c, true),
                Resume {
                    cursor: c,
                    floor: c
                }
            );
        }
        for (f, stored) in [(JetstreamV2, false), (Firehose, false), (JetstreamV1, true)] {
            assert_eq!(
                Resume::first(f, c, stored),
                Resume {
                    cursor: c,
                    floor: None
                }
            );
        }
        assert_eq!(
            Resume::first(JetstreamV2, None, true),
            Resume {
                cursor: None,
                floor: None
            }
        );
        // Reconnect: seq formats floor at the last event, v1 rewinds instead.
        for f in [JetstreamV2, Firehose] {
            assert_eq!(
                Resume::after(f, Cursor(42), 5),
                Resume {
                    cursor: c,
                    floor: c
                }
            );
        }
        assert_eq!(
            Resume::after(JetstreamV1, Cursor(10_000_000), 5),
            Resume {
                cursor: Some(Cursor(5_000_000)),
                floor: None
            }
        );
    }
}
