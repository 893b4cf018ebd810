//! The `[feed]` section: the change log and the server that streams it.
//!
//! Owns: the keys, their defaults and their checks. `enabled` turns the
//! change log on (appended in each commit's transaction; off costs
//! nothing); `addr` is where `parity serve` listens, and where `parity
//! consume` serves too when the log is on (`off` to not serve from
//! consume); the rest bounds clients and names the broker.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::channel::{Channel, MAX_CHANNEL_LEN};

/// One bearer token: its SHA-256 (hex) and the channel patterns it reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// `sha256sum` of the token, lower-case hex (the token itself is never
    /// stored).
    pub sha256: String,
    /// Channel names or patterns with a trailing `*` (`did:*`, `table:app_*`).
    pub channels: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// Append every committed row change to `parity_changes`.
    #[serde(default)]
    pub enabled: bool,
    /// Mapped tables whose changes are logged; empty: every mapped table.
    #[serde(default)]
    pub tables: Vec<String>,
    /// How long changes are kept (`24h`, `90m`, `7d`).
    #[serde(default = "default_retention")]
    pub retention: String,
    /// Where the feed server listens (IP:PORT), or `off` (consume only).
    #[serde(default = "default_addr")]
    pub addr: String,
    /// `nats://…`, `redis://…` or `amqp://…`; empty: in-process only.
    #[serde(default)]
    pub broker: String,
    /// RabbitMQ topic exchange the changes are published to.
    #[serde(default = "default_exchange")]
    pub rabbitmq_exchange: String,
    /// Bearer tokens; when any is set, channels are private unless listed in
    /// `public_channels`.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Channel patterns anyone may read even when tokens are set.
    #[serde(default)]
    pub public_channels: Vec<String>,
    /// Browser origins allowed by CORS (`*` for any); empty: none.
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// Most clients at once, over all transports.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most channels one client may subscribe to.
    #[serde(default = "default_max_channels")]
    pub max_channels_per_client: usize,
    /// Largest message a client may send, in bytes.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Changes a client may fall behind by before it is disconnected with
    /// its resume cursor.
    #[serde(default = "default_client_buffer")]
    pub client_buffer: usize,
    /// How often `parity serve` without a broker looks for new changes, in
    /// milliseconds.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Serve the demo page (`examples/feed/index.html`) at `/`.
    #[serde(default)]
    pub demo: bool,
}

fn default_retention() -> String {
    "24h".to_owned()
}
fn default_addr() -> String {
    "127.0.0.1:9465".to_owned()
}
fn default_exchange() -> String {
    "parity".to_owned()
}
const fn default_max_connections() -> usize {
    20_000
}
const fn default_max_channels() -> usize {
    64
}
const fn default_max_message_bytes() -> usize {
    16 * 1024
}
const fn default_client_buffer() -> usize {
    4_096
}
const fn default_poll_interval_ms() -> u64 {
    200
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            enabled: false,
            tables: Vec::new(),
            retention: default_retention(),
            addr: default_addr(),
            broker: String::new(),
            rabbitmq_exchange: default_exchange(),
            tokens: Vec::new(),
            public_channels: Vec::new(),
            cors_origins: Vec::new(),
            max_connections: default_max_connections(),
            max_channels_per_client: default_max_channels(),
            max_message_bytes: default_max_message_bytes(),
            client_buffer: default_client_buffer(),
            poll_interval_ms: default_poll_interval_ms(),
            demo: false,
        }
    }
}

/// A duration as operators write it: `30s`, `90m`, `24h`, `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?} is not a duration ({e})"))
}

impl FeedConfig {
    /// What the store appends to the change log (`enabled`, `tables`).
    pub fn change_log(&self) -> crate::store::ChangeLog {
        crate::store::ChangeLog {
            enabled: self.enabled,
            tables: self.tables.clone(),
        }
    }

    pub fn retention(&self) -> Result<Duration, String> {
        let d = parse_duration(&self.retention).map_err(|e| format!("feed.retention: {e}"))?;
        if d < Duration::from_secs(60) {
            return Err(format!(
                "feed.retention is {:?}; keep at least 1m of changes",
                self.retention
            ));
        }
        Ok(d)
    }

    /// The listen address, or `None` for `off`.
    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, String> {
        if self.addr.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        self.addr.parse().map(Some).map_err(|_| {
            format!(
                "feed.addr is {:?}; use IP:PORT (e.g. 127.0.0.1:9465) or off",
                self.addr
            )
        })
    }

    pub fn validate(&self) -> Result<(), String> {
        self.retention()?;
        self.listen_addr()?;
        if !(self.broker.is_empty()
            || ["nats://", "redis://", "rediss://", "amqp://", "amqps://"]
                .iter()
                .any(|p| self.broker.starts_with(p)))
        {
            return Err(
                "feed.broker must start with nats://, redis://, amqp:// (or be empty)".into(),
            );
        }
        for t in &self.tables {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!("feed.tables: {t:?} is not a table name"));
            }
        }
        for (i, t) in self.tokens.iter().enumerate() {
            if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "feed.tokens[{i}].sha256 must be 64 hex digits (sha256sum of the token)"
                ));
            }
            if t.channels.is_empty() {
                return Err(format!("feed.tokens[{i}].channels is empty"));
            }
        }
        for p in self
            .public_channels
            .iter()
            .chain(self.tokens.iter().flat_map(|t| &t.channels))
        {
            let exact = !p.ends_with('*');
            if p.is_empty() || p.len() > MAX_CHANNEL_LEN || (exact && Channel::parse(p).is_err()) {
                return Err(format!(
                    "feed: channel pattern {:?} is not a channel name or a prefix ending in *",
                    p.chars().take(40).collect::<String>()
                ));
            }
        }
        for (key, v) in [
            ("max_connections", self.max_connections),
            ("max_channels_per_client", self.max_channels_per_client),
            ("max_message_bytes", self.max_message_bytes),
            ("client_buffer", self.client_buffer),
        ] {
            if v == 0 {
                return Err(format!("feed.{key} must be at least 1"));
            }
        }
        if self.poll_interval_ms == 0 {
            return Err("feed.poll_interval_ms must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_key() {
        FeedConfig::default().validate().unwrap();
        assert_eq!(
            FeedConfig::default().retention().unwrap(),
            Duration::from_secs(86_400)
        );
        type Set = fn(&mut FeedConfig);
        let cases: [(&str, Set); 6] = [
            ("feed.retention", |c| c.retention = "soon".into()),
            ("feed.addr", |c| c.addr = "localhost".into()),
            ("feed.broker", |c| c.broker = "kafka://x".into()),
            ("feed.tables", |c| c.tables = vec!["a b".into()]),
            ("sha256", |c| {
                c.tokens = vec![TokenConfig {
                    sha256: "abc".into(),
                    channels: vec!["all".into()],
                }]
            }),
            ("channel pattern", |c| {
                c.public_channels = vec!["nope".into()]
            }),
        ];
        for (key, set) in cases {
            let mut c = FeedConfig::default();
            set(&mut c);
            let e = c.validate().unwrap_err();
            assert!(e.contains(key), "{e}");
        }
        let off = FeedConfig {
            addr: "off".into(),
            ..FeedConfig::default()
        };
        assert_eq!(off.listen_addr().unwrap(), None);
    }
}
