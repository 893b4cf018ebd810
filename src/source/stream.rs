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
//! - **Per host** ([`Positions`]): `seq` numbers belong to one host, so a
//!   `seq` position (cursor and floor) is kept per endpoint and never used
//!   on another: switching to a host resumes from that host's own position
//!   (stored, or received earlier in this run), or live when it has none.
//!   Jetstream v1 `time_us` is one position shared by every v1 host (the
//!   last one received, rewound).
//!
//! Does not own: loading or saving cursors (the pipeline and the store), nor
//! the socket (`transport`). No IO.

use std::collections::HashMap;
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

/// Where a known position comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The store's cursor: it names only whole committed frames.
    Stored,
    /// The cursor the user asked for (`--cursor`), taken as is.
    Given,
    /// The last event received in this run (already in the pipeline).
    Received,
}

/// What the reader knows of one position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    At(Cursor, Origin),
    /// The server refused the cursor (`FutureCursor`): live, on purpose.
    Live,
}

/// Where each endpoint stands (see the module doc, "Per host").
#[derive(Debug, Clone, Default)]
pub struct Positions {
    /// Per stream key (one host), for `seq` formats.
    seq: HashMap<Arc<str>, Known>,
    /// Shared by every Jetstream v1 host.
    time: Option<Known>,
}

impl Positions {
    fn put(&mut self, ep: &Endpoint, k: Known) {
        if ep.format.time_based() {
            self.time = Some(k);
        } else {
            self.seq.insert(ep.key.clone(), k);
        }
    }

    /// `ep`'s position is `c`, from `origin`.
    pub fn set(&mut self, ep: &Endpoint, c: Cursor, origin: Origin) {
        self.put(ep, Known::At(c, origin));
    }

    /// The server refused `ep`'s cursor: go on live there.
    pub fn go_live(&mut self, ep: &Endpoint) {
        self.put(ep, Known::Live);
    }

    /// The position `ep` resumes from, if any: for a log line.
    pub fn cursor(&self, ep: &Endpoint) -> Option<Cursor> {
        match self.known(ep) {
            Some(Known::At(c, _)) => Some(c),
            _ => None,
        }
    }

    fn known(&self, ep: &Endpoint) -> Option<Known> {
        if ep.format.time_based() {
            self.time
        } else {
            self.seq.get(&ep.key).copied()
        }
    }

    /// Where the next connection to `ep` starts, and whether it starts live
    /// only because `ep` has no position of its own while another host
    /// has one (a failover that may skip events: warn and count it).
    pub fn resume(&self, ep: &Endpoint, rewind_seconds: u64) -> (Resume, bool) {
        let known = self.known(ep);
        let resume = match known {
            None | Some(Known::Live) => Resume {
                cursor: None,
                floor: None,
            },
            Some(Known::At(c, origin)) => {
                let cursor = match origin {
                    Origin::Given => c,
                    Origin::Stored | Origin::Received => ep.format.rewind(c, rewind_seconds),
                };
                let floor = (!ep.format.time_based() && origin != Origin::Given).then_some(c);
                Resume {
                    cursor: Some(cursor),
                    floor,
                }
            }
        };
        let elsewhere = self.time.is_some_and(|k| k != Known::Live)
            || self
                .seq
                .iter()
                .any(|(k, v)| *k != ep.key && *v != Known::Live);
        (resume, known.is_none() && elsewhere)
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

    fn ep(url: &str) -> Endpoint {
        Endpoint::parse(url).unwrap()
    }

    fn at(cursor: i64, floor: Option<i64>) -> Resume {
        Resume {
            cursor: Some(Cursor(cursor)),
            floor: floor.map(Cursor),
        }
    }

    const LIVE: Resume = Resume {
        cursor: None,
        floor: None,
    };

    #[test]
    fn stored_and_received_seq_cursors_are_floored_given_ones_are_not() {
        for url in [
            "ws://a:1/xrpc/com.atproto.sync.subscribeRepos",
            "ws://a:1/xrpc/network.bsky.jetstream.subscribeEvents",
        ] {
            let a = ep(url);
            let mut p = Positions::default();
            assert_eq!(p.resume(&a, 5), (LIVE, false), "nothing known: live");
            p.set(&a, Cursor(42), Origin::Stored);
            assert_eq!(p.resume(&a, 5), (at(42, Some(42)), false));
            p.set(&a, Cursor(42), Origin::Given);
            assert_eq!(p.resume(&a, 5), (at(42, None), false));
            p.set(&a, Cursor(50), Origin::Received);
            assert_eq!(p.resume(&a, 5), (at(50, Some(50)), false));
        }
        let v1 = ep("ws://a:1/subscribe");
        let mut p = Positions::default();
        p.set(&v1, Cursor(10_000_000), Origin::Stored);
        assert_eq!(p.resume(&v1, 5), (at(5_000_000, None), false));
        p.set(&v1, Cursor(10_000_000), Origin::Given);
        assert_eq!(p.resume(&v1, 5), (at(10_000_000, None), false));
    }

    #[test]
    fn seq_positions_never_cross_hosts_time_positions_do() {
        let a = ep("ws://a:1/xrpc/com.atproto.sync.subscribeRepos");
        let b = ep("ws://b:2/xrpc/com.atproto.sync.subscribeRepos");
        let mut p = Positions::default();
        p.set(&a, Cursor(31_527_015_471), Origin::Received);
        // B has no position of its own: live, and flagged as a failover gap.
        assert_eq!(p.resume(&b, 0), (LIVE, true));
        p.set(&b, Cursor(7), Origin::Stored);
        assert_eq!(p.resume(&b, 0), (at(7, Some(7)), false));
        assert_eq!(
            p.resume(&a, 0),
            (at(31_527_015_471, Some(31_527_015_471)), false)
        );
        // Another format on the same host is another stream.
        let a2 = ep("ws://a:1/xrpc/network.bsky.jetstream.subscribeEvents");
        assert_eq!(p.resume(&a2, 0), (LIVE, true));
        // Jetstream v1 time_us is shared by every v1 host, rewound.
        let (v1a, v1b) = (ep("ws://a:1/subscribe"), ep("ws://b:2/subscribe"));
        p.set(&v1a, Cursor(10_000_000), Origin::Received);
        assert_eq!(p.resume(&v1b, 5), (at(5_000_000, None), false));
    }

    #[test]
    fn a_refused_cursor_goes_live_without_a_failover_warning() {
        let a = ep("ws://a:1/xrpc/com.atproto.sync.subscribeRepos");
        let b = ep("ws://b:2/xrpc/com.atproto.sync.subscribeRepos");
        let mut p = Positions::default();
        p.set(&a, Cursor(99), Origin::Given);
        p.set(&b, Cursor(5), Origin::Stored);
        p.go_live(&a);
        assert_eq!(p.resume(&a, 0), (LIVE, false));
        assert_eq!(p.cursor(&a), None);
        assert_eq!(p.cursor(&b), Some(Cursor(5)));
        let mut only = Positions::default();
        only.go_live(&a);
        assert_eq!(only.resume(&b, 0), (LIVE, false), "no position anywhere");
    }
}
