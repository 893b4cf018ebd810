//! Every metric parity exports: its name, help text and buckets, the
//! Prometheus recorder, and the few helpers the pipeline and source call.
//!
//! Owns: names (`parity_<subsystem>_<name>_<unit>`, counters ending in
//! `_total`), `describe_*` calls, histogram buckets, installing the
//! recorder without the exporter's own HTTP listener (the [`super::serve`]
//! listener renders [`render`]), and bounded label values. Does not own
//! when to count: callers do, per event through handles resolved once
//! (`telemetry::Stats`), per batch or per connection through the helpers
//! here, or with `metrics::counter!(NAME, …)` (the importer).
//!
//! Labels are bounded: reasons and kinds are fixed sets, tables come from
//! the config, endpoints are configured hosts. Never a DID, URI or error
//! text.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use url::Url;

use crate::store::{CommitStats, StoreError};

/// Events decoded from the stream, by `kind` (commit, identity, account, other).
pub const EVENTS_RECEIVED: &str = "parity_events_received_total";
/// Events the filter (or the lack of a mapper) kept out of the database.
pub const EVENTS_FILTERED: &str = "parity_events_filtered_total";
/// Events or messages dropped, by `reason` and `intentional`.
pub const EVENTS_DROPPED: &str = "parity_events_dropped_total";
/// Rows written, by `table` and `op` (upsert, delete).
pub const RECORDS_WRITTEN: &str = "parity_records_written_total";
/// Events per committed batch.
pub const BATCH_SIZE: &str = "parity_batch_size";
/// Duration of one successful batch commit.
pub const BATCH_COMMIT_SECONDS: &str = "parity_batch_commit_seconds";
/// Failed database operations, by `kind` (transient, fatal).
pub const DB_ERRORS: &str = "parity_db_errors_total";
/// The last committed cursor.
pub const CURSOR: &str = "parity_cursor";
/// Now minus the event time of the last committed event.
pub const LAG_SECONDS: &str = "parity_lag_seconds";
/// Stream connections lost, by `reason`.
pub const SOURCE_RECONNECTS: &str = "parity_source_reconnects_total";
/// 1 while connected to `endpoint`, else 0.
pub const SOURCE_CONNECTED: &str = "parity_source_connected";
/// Import: records by `outcome` (synced, skipped, failed).
pub const IMPORT_RECORDS: &str = "parity_import_records_total";
/// Import: HTTP requests by `status` (code or class).
pub const IMPORT_REQUESTS: &str = "parity_import_requests_total";
/// Import: DIDs by `status` (pending, in_progress, completed, failed).
pub const IMPORT_DIDS: &str = "parity_import_dids";
/// Import: requests answered 429 or held back by a rate limit.
pub const IMPORT_RATE_LIMITED: &str = "parity_import_rate_limited_total";
/// Always 1, labelled with the `version`.
pub const BUILD_INFO: &str = "parity_build_info";

/// Up to the largest `batch.max_events` anyone should need.
const BATCH_SIZE_BUCKETS: &[f64] = &[
    1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1_000.0, 2_500.0, 5_000.0, 10_000.0, 25_000.0,
];
/// From a SQLite commit on a fast disk to a PostgreSQL commit under load.
const COMMIT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Every metric with its type and help text, for `describe_*` and the
/// README (the unit follows from the name).
pub const ALL: &[(&str, Kind, &str)] = &[
    (
        EVENTS_RECEIVED,
        Kind::Counter,
        "Events decoded from the stream, by kind (commit, identity, account, other).",
    ),
    (
        EVENTS_FILTERED,
        Kind::Counter,
        "Events kept out of the database by the filter or because no mapper handles their collection; they still move the cursor.",
    ),
    (
        EVENTS_DROPPED,
        Kind::Counter,
        "Events or messages dropped, by reason (malformed, oversized, unknown_type, mapper_failure, stale_rev, account_gone); intentional=true for the convergence rules, false for bad input.",
    ),
    (
        RECORDS_WRITTEN,
        Kind::Counter,
        "Rows written by committed batches, by table and op (upsert, delete).",
    ),
    (
        BATCH_SIZE,
        Kind::Histogram,
        "Events per committed batch, filtered ones included.",
    ),
    (
        BATCH_COMMIT_SECONDS,
        Kind::Histogram,
        "Seconds one successful batch commit (rows and cursor in one transaction) took.",
    ),
    (
        DB_ERRORS,
        Kind::Counter,
        "Failed database operations, by kind (transient: retried; fatal: parity stops).",
    ),
    (
        CURSOR,
        Kind::Gauge,
        "The cursor of the last committed event (time_us for Jetstream v1, seq otherwise).",
    ),
    (
        LAG_SECONDS,
        Kind::Gauge,
        "Seconds between now and the event time of the last committed event.",
    ),
    (
        SOURCE_RECONNECTS,
        Kind::Counter,
        "Stream connections lost or failed, by reason (idle_timeout, closed, error, connect_failed, connect_timeout, upstream_error, ...).",
    ),
    (
        SOURCE_CONNECTED,
        Kind::Gauge,
        "1 while connected to the endpoint (configured host), 0 otherwise.",
    ),
    (
        IMPORT_RECORDS,
        Kind::Counter,
        "Records handled by parity import, by outcome (synced, skipped, failed).",
    ),
    (
        IMPORT_REQUESTS,
        Kind::Counter,
        "HTTP requests made by parity import, by status (HTTP status code or class, or error).",
    ),
    (
        IMPORT_DIDS,
        Kind::Gauge,
        "Repos (DIDs) known to parity import, by status (pending, in_progress, completed, failed).",
    ),
    (
        IMPORT_RATE_LIMITED,
        Kind::Counter,
        "parity import requests answered 429 or delayed by a rate limit.",
    ),
    (
        BUILD_INFO,
        Kind::Gauge,
        "Always 1; the version label says which parity is running.",
    ),
];

/// Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the global Prometheus recorder (once per process; later calls
/// return the same handle) and describes every metric. `None` when another
/// recorder was installed first. Install before creating anything that
/// resolves metric handles early (`telemetry::Stats`), or those stay no-ops.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), BATCH_SIZE_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(BATCH_COMMIT_SECONDS.into()),
                        COMMIT_BUCKETS,
                    )
                })
                .expect("bucket lists are not empty");
            match builder.install_recorder() {
                Ok(handle) => {
                    describe();
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Another metrics recorder is installed; /metrics stays empty.");
                    None
                }
            }
        })
        .as_ref()
}

fn describe() {
    for &(name, kind, help) in ALL {
        let unit = if name.ends_with("_seconds") {
            Unit::Seconds
        } else {
            Unit::Count
        };
        match kind {
            Kind::Counter => describe_counter!(name, unit, help),
            Kind::Gauge => describe_gauge!(name, unit, help),
            Kind::Histogram => describe_histogram!(name, unit, help),
        }
    }
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// The Prometheus text exposition of every metric, or `None` without a
/// recorder.
pub fn render() -> Option<String> {
    HANDLE.get().and_then(Option::as_ref).map(|h| h.render())
}

/// Drains histogram samples into their buckets; the listener calls this
/// periodically so an unscraped process does not accumulate samples.
pub fn upkeep() {
    if let Some(h) = HANDLE.get().and_then(Option::as_ref) {
        h.run_upkeep();
    }
}

/// One committed batch: rows per table and op, its size, how long the
/// commit took, and the cursor it stored.
pub fn record_commit(stats: &CommitStats, events: usize, took: Duration, cursor: Option<i64>) {
    for (table, n) in &stats.upserted {
        counter!(RECORDS_WRITTEN, "table" => table.clone(), "op" => "upsert").increment(*n);
    }
    for (table, n) in &stats.deleted {
        counter!(RECORDS_WRITTEN, "table" => table.clone(), "op" => "delete").increment(*n);
    }
    histogram!(BATCH_SIZE).record(events as f64);
    histogram!(BATCH_COMMIT_SECONDS).record(took.as_secs_f64());
    if let Some(c) = cursor {
        // Exact: cursors (µs or seq) stay far below 2^53.
        gauge!(CURSOR).set(c as f64);
    }
}

/// A failed database operation.
pub fn record_db_error(e: &StoreError) {
    counter!(DB_ERRORS, "kind" => e.kind()).increment(1);
}

/// The lag gauge, refreshed when scraped (it grows while nothing commits).
pub fn set_lag(seconds: Option<f64>) {
    if let Some(s) = seconds {
        gauge!(LAG_SECONDS).set(s);
    }
}

/// The connection to `endpoint` came up or went down.
pub fn set_source_connected(endpoint: &Url, up: bool) {
    gauge!(SOURCE_CONNECTED, "endpoint" => endpoint_label(endpoint)).set(if up {
        1.0
    } else {
        0.0
    });
}

/// A stream connection was lost; `reason` is a fixed label.
pub fn record_reconnect(reason: &'static str) {
    counter!(SOURCE_RECONNECTS, "reason" => reason).increment(1);
}

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

    #[test]
    fn names_follow_the_convention() {
        let mut seen = std::collections::HashSet::new();
        for &(name, kind, help) in ALL {
            assert!(seen.insert(name), "{name} twice");
            assert!(name.starts_with("parity_"), "{name}");
            assert_eq!(kind == Kind::Counter, name.ends_with("_total"), "{name}");
            assert!(help.ends_with('.') && help.len() > 20, "{name}: {help}");
        }
    }

    #[test]
    fn readme_and_alerts_use_these_names() {
        let readme = include_str!("../../README.md");
        for &(name, _, help) in ALL {
            assert!(
                readme.contains(&format!("| `{name}` |")),
                "{name} not in the README"
            );
            assert!(
                readme.contains(help),
                "help of {name} differs in the README"
            );
        }
        let alerts = include_str!("../../deploy/prometheus/alerts.yml");
        let names = alerts
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("parity_"));
        for n in names {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .unwrap_or(n);
            assert!(
                ALL.iter().any(|(m, ..)| *m == base),
                "alerts.yml uses unknown {n}"
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
