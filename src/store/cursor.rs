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
//!    moves forward within a stream by construction. (Jetstream v1 `time_us`
//!    can step back slightly between events; storing the last, not the
//!    largest, only ever replays more.)
//! 4. A cursor is kept per stream key: wire format plus endpoint host
//!    ([`stream_key`]), because `seq` cursors belong to one host. Jetstream
//!    v1 `time_us` cursors roughly line up across hosts, so on failover the
//!    newest v1 cursor of any host is used, rewound.
//! 5. A missing cursor means "start live". A negative stored cursor is
//!    corruption: the process stops instead of silently going live.

use url::Url;

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
}

/// `format:host[:port]`, the key a stream's cursor is stored under.
pub fn stream_key(format: WireFormat, url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(p) => format!("{}:{host}:{p}", format.as_str()),
        None => format!("{}:{host}", format.as_str()),
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
}
