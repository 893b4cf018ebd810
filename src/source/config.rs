//! [`SourceConfig`]: the `[source]` section (endpoints, reconnect and
//! liveness limits, compression), its defaults and its validation.
//!
//! Owns: the section's keys and defaults, and checking each endpoint URL
//! ([`parse_endpoint`]: a ws/wss URL whose path names a known wire format).
//! Does not own: what a wire format is ([`super::stream::WireFormat`]) or
//! anything that connects (`transport`).

use serde::{Deserialize, Serialize};
use url::Url;

use super::stream::WireFormat;

/// The public Jetstream v1 hosts, primary first.
pub const DEFAULT_ENDPOINTS: [&str; 4] = [
    "wss://jetstream2.us-east.bsky.network/subscribe",
    "wss://jetstream1.us-east.bsky.network/subscribe",
    "wss://jetstream1.us-west.bsky.network/subscribe",
    "wss://jetstream2.us-west.bsky.network/subscribe",
];

/// Where events come from and how the connection is kept alive.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Endpoints in failover order. The path picks the wire format:
    /// `/subscribe` (Jetstream v1), `/xrpc/network.bsky.jetstream.subscribeEvents`
    /// (Jetstream v2), `/xrpc/com.atproto.sync.subscribeRepos` (firehose).
    #[serde(default = "default_endpoints")]
    pub endpoints: Vec<String>,
    /// On reconnect and restart, resume this many seconds before the last
    /// cursor (time-based cursors only); writes are idempotent.
    #[serde(default = "default_rewind_seconds")]
    pub rewind_seconds: u64,
    /// Reconnect when nothing (not even a ping) arrives for this long.
    #[serde(default = "default_idle_timeout_seconds")]
    pub idle_timeout_seconds: u64,
    /// Give up a connection attempt after this long.
    #[serde(default = "default_connect_timeout_seconds")]
    pub connect_timeout_seconds: u64,
    /// First reconnect delay; doubles per failed attempt, with jitter.
    #[serde(default = "default_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    /// Longest reconnect delay.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Messages larger than this (after decompression) are counted as
    /// oversized and skipped.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Ask Jetstream for zstd-compressed frames: v1 `compress=true` (bundled
    /// dictionary), v2 `zstdDictionary` (fetched once, cached in
    /// `cache_dir`). About half the bandwidth.
    #[serde(default = "default_compress")]
    pub compress: bool,
    /// Where downloaded Jetstream v2 dictionaries are kept.
    #[serde(default = "default_cache_dir")]
    pub cache_dir: String,
    /// Live verification of firehose commits (issue 15): `none`,
    /// `signature` (each `#commit` against its DID's `#atproto` key) or
    /// `full` (also the Sync 1.1 MST proof against `prevData`). Firehose
    /// endpoints only.
    #[serde(default)]
    pub verify: VerifyMode,
}

/// How much of each firehose commit is verified before it is applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyMode {
    /// Nothing beyond record CIDs (what the decoder always checks).
    #[default]
    None,
    /// The commit's signature with the DID's `#atproto` key.
    Signature,
    /// The signature and the Sync 1.1 MST proof (ops inverted → `prevData`).
    Full,
}

impl VerifyMode {
    pub fn is_on(self) -> bool {
        self != VerifyMode::None
    }
}

fn default_cache_dir() -> String {
    "parity-cache".to_owned()
}

const fn default_compress() -> bool {
    true
}

fn default_endpoints() -> Vec<String> {
    DEFAULT_ENDPOINTS.iter().map(|s| (*s).to_owned()).collect()
}
/// Jetstream instances stamp `time_us` themselves; a few seconds covers the
/// skew between instances and events in flight at a disconnect.
const fn default_rewind_seconds() -> u64 {
    5
}
/// Jetstream pings every 30 s; two missed pings mean a dead socket.
const fn default_idle_timeout_seconds() -> u64 {
    60
}
const fn default_connect_timeout_seconds() -> u64 {
    10
}
const fn default_backoff_initial_ms() -> u64 {
    250
}
const fn default_backoff_max_ms() -> u64 {
    30_000
}
/// The firehose caps a message at 5 MB; nothing legitimate is larger.
const fn default_max_message_bytes() -> usize {
    5_000_000
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            endpoints: default_endpoints(),
            rewind_seconds: default_rewind_seconds(),
            idle_timeout_seconds: default_idle_timeout_seconds(),
            connect_timeout_seconds: default_connect_timeout_seconds(),
            backoff_initial_ms: default_backoff_initial_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            max_message_bytes: default_max_message_bytes(),
            compress: default_compress(),
            cache_dir: default_cache_dir(),
            verify: VerifyMode::None,
        }
    }
}

/// Parses and checks one endpoint URL.
pub fn parse_endpoint(s: &str) -> Result<(Url, WireFormat), String> {
    let url = Url::parse(s).map_err(|e| format!("endpoint {s:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "ws" | "wss") {
        return Err(format!("endpoint {s}: use a ws:// or wss:// URL"));
    }
    match WireFormat::from_url(&url) {
        Some(f) => Ok((url, f)),
        None => Err(format!(
            "endpoint {s}: unknown wire format; the path must end in /subscribe (Jetstream v1), \
             /xrpc/network.bsky.jetstream.subscribeEvents (Jetstream v2) or /xrpc/com.atproto.sync.subscribeRepos (firehose)"
        )),
    }
}

impl SourceConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.endpoints.is_empty() {
            return Err("source.endpoints is empty; give at least one endpoint".into());
        }
        for e in &self.endpoints {
            parse_endpoint(e)?;
        }
        if self.idle_timeout_seconds == 0 {
            return Err("source.idle_timeout_seconds must be at least 1".into());
        }
        if self.backoff_initial_ms == 0 || self.backoff_max_ms < self.backoff_initial_ms {
            return Err(
                "source.backoff_initial_ms must be at least 1 and at most source.backoff_max_ms"
                    .into(),
            );
        }
        if self.verify.is_on() {
            for e in &self.endpoints {
                if parse_endpoint(e)?.1 != WireFormat::Firehose {
                    return Err(format!(
                        "source.verify needs firehose endpoints (…/xrpc/com.atproto.sync.subscribeRepos); {e} carries no signatures: set source.verify = \"none\" or use a relay"
                    ));
                }
            }
        }
        if self.max_message_bytes < 1024 {
            return Err("source.max_message_bytes must be at least 1024".into());
        }
        Ok(())
    }
}
