//! The publish direction: local rows → the account's PDS, through the
//! transactional outbox `parity_outbox`.
//!
//! Owns: the `[publish]` config section ([`PublishConfig`]), the worker
//! that drains the outbox ([`worker`]), the XRPC calls it makes
//! ([`xrpc`]), record keys ([`tid`]), the session handling around each
//! call (refresh single-flight, pending-auth; [`session`]), the look-up of
//! creates an earlier claim may have written ([`recheck`]) and the
//! write-back of a published change into the mapped tables ([`writeback`]).
//! Does not own the SQL (`store::outbox`, `store::sessions`) nor sealing
//! tokens (`auth`).
//!
//! Invariants: per DID, rows apply in `id` order and only one worker (of
//! any process) holds a DID at a time; a create's rkey is stored before
//! the PDS is called, and a create that may have reached the PDS is
//! retried as a `putRecord` that must not overwrite, so no record is ever
//! written twice; the published row and the written-back records commit in
//! one transaction; tokens never reach logs, metrics or errors.

pub mod pacing;
pub mod recheck;
pub mod session;
pub mod tid;
pub mod worker;
pub mod writeback;
pub mod xrpc;

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Points the costliest write (a create) spends of an account's budget.
pub const MAX_WRITE_POINTS: u32 = 3;

/// The `[publish]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PublishConfig {
    /// Run the publish worker inside `parity consume` too (one process for
    /// both directions). `parity publish` runs it regardless.
    #[serde(default)]
    pub enabled: bool,
    /// DIDs published in parallel (each DID's rows stay in order).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Attempts before a row that keeps failing (5xx, timeouts) is `failed`.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Rows waiting for a login (`pending_auth`) longer than this, counted
    /// from when they were enqueued, become `failed`: a duration as
    /// operators write it (`90m`, `24h`, `7d`).
    #[serde(default = "default_pending_auth_ttl")]
    pub pending_auth_ttl: String,
    /// Write points one account may spend per hour (the reference PDS
    /// charges create 3, update 2, delete 1 and allows 5,000 an hour).
    #[serde(default = "default_points_per_hour")]
    pub points_per_hour: u32,
    /// Write points one account may spend per day (35,000 on the reference
    /// PDS).
    #[serde(default = "default_points_per_day")]
    pub points_per_day: u32,
    /// How long a claim holds a DID's rows; another process takes them over
    /// after this if the holder died.
    #[serde(default = "default_lease_seconds")]
    pub lease_seconds: u64,
    /// How often an idle worker looks for new rows, in milliseconds.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Timeout of one call to a PDS, in seconds.
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: u64,
}

/// A few accounts at once without flooding one PDS.
const fn default_concurrency() -> usize {
    4
}

/// With backoff from 1 s doubling (capped at 5 min), about half an hour of
/// retries.
const fn default_max_attempts() -> u32 {
    10
}

/// A week: long enough for a user to come back and sign in again.
fn default_pending_auth_ttl() -> String {
    "7d".into()
}

/// The reference PDS's hourly repo-write limit per account.
const fn default_points_per_hour() -> u32 {
    5000
}

/// The reference PDS's daily repo-write limit per account.
const fn default_points_per_day() -> u32 {
    35000
}

/// Far longer than one applyWrites call.
const fn default_lease_seconds() -> u64 {
    60
}

/// New rows are published within about half a second.
const fn default_poll_interval_ms() -> u64 {
    500
}

const fn default_timeout_seconds() -> u64 {
    30
}

impl Default for PublishConfig {
    fn default() -> Self {
        PublishConfig {
            enabled: false,
            concurrency: default_concurrency(),
            max_attempts: default_max_attempts(),
            pending_auth_ttl: default_pending_auth_ttl(),
            points_per_hour: default_points_per_hour(),
            points_per_day: default_points_per_day(),
            lease_seconds: default_lease_seconds(),
            poll_interval_ms: default_poll_interval_ms(),
            timeout_seconds: default_timeout_seconds(),
        }
    }
}

impl PublishConfig {
    /// One-line error naming the bad key.
    pub fn validate(&self) -> Result<(), String> {
        if self.concurrency == 0 {
            return Err("publish.concurrency must be at least 1".into());
        }
        if self.max_attempts == 0 {
            return Err("publish.max_attempts must be at least 1".into());
        }
        if self.lease_seconds < 5 {
            return Err("publish.lease_seconds must be at least 5".into());
        }
        if self.poll_interval_ms == 0 || self.timeout_seconds == 0 {
            return Err(
                "publish.poll_interval_ms and publish.timeout_seconds must be at least 1".into(),
            );
        }
        if self.points_per_hour < MAX_WRITE_POINTS || self.points_per_day < self.points_per_hour {
            return Err(format!(
                "publish.points_per_hour must be at least {MAX_WRITE_POINTS} (one create) and \
                 publish.points_per_day at least publish.points_per_hour"
            ));
        }
        self.pending_auth_ttl()?;
        Ok(())
    }

    /// `pending_auth_ttl` as a duration (at least one second).
    pub fn pending_auth_ttl(&self) -> Result<Duration, String> {
        match humantime::parse_duration(self.pending_auth_ttl.trim()) {
            Ok(d) if d >= Duration::from_secs(1) => Ok(d),
            _ => Err(format!(
                "publish.pending_auth_ttl is {:?}; use a duration of at least 1s, e.g. \"7d\" or \"24h\"",
                self.pending_auth_ttl
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_and_budget_are_validated_with_the_key_named() {
        let ok = PublishConfig::default();
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(ok.pending_auth_ttl(), Ok(Duration::from_secs(7 * 86_400)));
        let bad = PublishConfig {
            pending_auth_ttl: "soon".into(),
            ..PublishConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .starts_with("publish.pending_auth_ttl is \"soon\"")
        );
        let zero = PublishConfig {
            pending_auth_ttl: "0s".into(),
            ..PublishConfig::default()
        };
        assert!(zero.validate().is_err());
        let tiny = PublishConfig {
            points_per_hour: 2,
            ..PublishConfig::default()
        };
        assert!(
            tiny.validate()
                .unwrap_err()
                .starts_with("publish.points_per_hour")
        );
        let day_below_hour = PublishConfig {
            points_per_day: 100,
            ..PublishConfig::default()
        };
        assert!(day_below_hour.validate().is_err());
    }
}
