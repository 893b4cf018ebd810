//! The `[metrics]` and `[health]` config sections.
//!
//! Owns: [`MetricsConfig`] (`metrics.addr`: where `/metrics`, `/health` and
//! `/ready` listen, or `off`) and [`HealthConfig`] (`health.max_stale`),
//! their defaults and their value checks. Does not own the listener
//! ([`super::serve`]) or the liveness rules ([`super::Obs`]).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Where the metrics and health endpoints listen.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `IP:PORT` for `/metrics`, `/health` and `/ready`, or `off`.
    #[serde(default = "default_addr")]
    pub addr: String,
}

/// Loopback by default: metrics are scraped by a local agent or through an
/// explicit `0.0.0.0:9464`, never exposed by accident.
fn default_addr() -> String {
    "127.0.0.1:9464".to_owned()
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            addr: default_addr(),
        }
    }
}

impl MetricsConfig {
    /// The address to listen on, or `None` for `off`.
    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, String> {
        if self.addr.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        self.addr.parse().map(Some).map_err(|_| {
            format!(
                "metrics.addr is {:?}; use IP:PORT (e.g. 127.0.0.1:9464 or 0.0.0.0:9464) or off",
                self.addr
            )
        })
    }
}

/// When `/health` reports the process unhealthy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Seconds without progress (no message or ping from the stream, no
    /// commit) after which `/health` answers 503 `stale`.
    #[serde(
        default = "default_max_stale",
        deserialize_with = "seconds::deserialize"
    )]
    pub max_stale: u64,
    /// Seconds the oldest open publish outbox row (pending or in flight)
    /// may wait after being enqueued before `/health` answers 503
    /// `outbox_stuck` (when the publish worker runs).
    #[serde(
        default = "default_max_outbox_age",
        deserialize_with = "seconds::deserialize"
    )]
    pub max_outbox_age: u64,
}

/// An hour: far beyond any backoff or rate-limit pause of a healthy PDS.
const fn default_max_outbox_age() -> u64 {
    3600
}

/// Jetstream pings every 30 s: two missed pings on a quiet stream.
const fn default_max_stale() -> u64 {
    60
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            max_stale: default_max_stale(),
            max_outbox_age: default_max_outbox_age(),
        }
    }
}

impl HealthConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_stale == 0 {
            return Err("health.max_stale must be at least 1 (whole seconds, e.g. 60)".into());
        }
        if self.max_outbox_age == 0 {
            return Err(
                "health.max_outbox_age must be at least 1 (whole seconds, e.g. 3600)".into(),
            );
        }
        Ok(())
    }
}

/// Whole seconds, with an error that says so (serde's default names only
/// the Rust type).
mod seconds {
    use serde::{Deserialize, Deserializer, de::Error};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Other(toml::Value),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) if n >= 0 => Ok(n as u64),
            Raw::Int(n) => Err(D::Error::custom(format!(
                "health.max_stale is {n}; use whole seconds, e.g. max_stale = 60"
            ))),
            Raw::Other(v) => Err(D::Error::custom(format!(
                "health.max_stale is {v}; use whole seconds, e.g. max_stale = 60"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_addr_is_an_address_or_off() {
        let mut m = MetricsConfig::default();
        assert_eq!(
            m.listen_addr().unwrap(),
            Some("127.0.0.1:9464".parse().unwrap())
        );
        m.addr = "OFF".into();
        assert_eq!(m.listen_addr().unwrap(), None);
        m.addr = "[::]:9464".into();
        assert!(m.listen_addr().unwrap().is_some());
        m.addr = "localhost".into();
        let e = m.listen_addr().unwrap_err();
        assert!(
            e.contains("metrics.addr") && e.contains("\"localhost\""),
            "{e}"
        );
    }
}
