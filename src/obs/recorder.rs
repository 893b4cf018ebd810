//! The Prometheus recorder: installed once per process, described from
//! [`super::names::ALL`], rendered by the listener.
//!
//! Owns: histogram buckets, installing the recorder without the exporter's
//! own HTTP listener (the [`super::serve`] listener renders [`render`]),
//! the `describe_*` calls, the build-info gauge, and registering every
//! counter whose label values are known ([`super::labels`]) at 0, so
//! `rate()` and alerts work before the first event. Does not own any name
//! (see [`super::names`]), label value or count (see [`super::Obs`]).
//!
//! Order: [`install`] before creating anything that resolves metric handles
//! once ([`super::Obs::new`] does), or those handles stay no-ops.

use std::sync::OnceLock;

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::labels::{
    CursorRejection, DB_ERROR_KINDS, DropReason, IMPORT_OUTCOMES, RECONNECT_REASONS, ReceivedKind,
    SEQ_FORMATS,
};
use super::names::{
    ALL, BATCH_COMMIT_SECONDS, BATCH_SIZE, BUILD_INFO, DB_ERRORS, EVENTS_DROPPED, EVENTS_FILTERED,
    EVENTS_RECEIVED, IMPORT_FRESH_REPOS, IMPORT_RATE_LIMITED, IMPORT_RECORDS, Kind,
    SOURCE_CURSOR_REJECTED, SOURCE_RECONNECTS, SOURCE_STARTS_WITHOUT_CURSOR,
};

/// Up to the largest `batch.max_events` anyone should need.
const BATCH_SIZE_BUCKETS: &[f64] = &[
    1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1_000.0, 2_500.0, 5_000.0, 10_000.0, 25_000.0,
];
/// From a SQLite commit on a fast disk to a PostgreSQL commit under load.
const COMMIT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The recorder's builder with parity's histogram buckets.
pub(super) fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), BATCH_SIZE_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(BATCH_COMMIT_SECONDS.into()), COMMIT_BUCKETS)
        })
        .expect("bucket lists are not empty")
}

/// Installs the global Prometheus recorder (once per process; later calls
/// return the same handle) and describes every metric. `None` when another
/// recorder was installed first. Install before creating anything that
/// resolves metric handles early ([`super::Obs`]), or those stay no-ops.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| match builder().install_recorder() {
            Ok(handle) => {
                describe();
                Some(handle)
            }
            Err(e) => {
                tracing::warn!(error = %e, "Another metrics recorder is installed; /metrics stays empty.");
                None
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
    register_zeros();
}

/// Registers every counter whose label values are known in advance, so
/// each series is exported at 0 before its first increment. Counters
/// labelled from the config (`parity_records_written_total` by table) or
/// by the server (`parity_import_requests_total` by HTTP status) appear on
/// first use.
fn register_zeros() {
    for k in ReceivedKind::ALL {
        counter!(EVENTS_RECEIVED, "kind" => k.as_str()).increment(0);
    }
    for r in DropReason::ALL {
        let intentional = if r.intentional() { "true" } else { "false" };
        counter!(EVENTS_DROPPED, "reason" => r.as_str(), "intentional" => intentional).increment(0);
    }
    for r in RECONNECT_REASONS {
        counter!(SOURCE_RECONNECTS, "reason" => r).increment(0);
    }
    for r in CursorRejection::ALL {
        counter!(SOURCE_CURSOR_REJECTED, "reason" => r.as_str()).increment(0);
    }
    for f in SEQ_FORMATS {
        counter!(SOURCE_STARTS_WITHOUT_CURSOR, "format" => f).increment(0);
    }
    for k in DB_ERROR_KINDS {
        counter!(DB_ERRORS, "kind" => k).increment(0);
    }
    for o in IMPORT_OUTCOMES {
        counter!(IMPORT_RECORDS, "outcome" => o).increment(0);
    }
    counter!(EVENTS_FILTERED).increment(0);
    counter!(IMPORT_RATE_LIMITED).increment(0);
    counter!(IMPORT_FRESH_REPOS).increment(0);
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
