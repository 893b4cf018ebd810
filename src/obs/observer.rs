//! [`Obs`]: the one observability object a running command injects into
//! its stages, as an `Arc<Obs>`.
//!
//! Owns: the pipeline's counters (plain atomics, read by the progress log
//! and by tests), the liveness state behind `/health` and `/ready`, the
//! event time of the last commit (so the lag is computed in one place,
//! [`Obs::lag_seconds`], for the progress log and the `/metrics` gauge
//! alike), and the Prometheus handles resolved once in [`Obs::new`], so a
//! per-event update costs two atomic adds and no registry lookup. A commit
//! is reported once, through [`Obs::on_commit`], which updates counters,
//! metrics and health together. Does not own any counting decision (the
//! source, pipeline and importer say what happened) nor metric names
//! ([`super::names`]).
//!
//! Order: install the recorder ([`super::install`]) before [`Obs::new`],
//! or the handles resolved here stay no-ops.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use url::Url;

use super::health::{Health, NotReady, Unhealthy};
use super::labels::{CursorRejection, DropReason, ReceivedKind, SEQ_FORMATS, endpoint_label};
use super::names::{
    BATCH_COMMIT_SECONDS, BATCH_SIZE, CURSOR, DB_ERRORS, EVENTS_DROPPED, EVENTS_FILTERED,
    EVENTS_RECEIVED, LAG_SECONDS, RECORDS_WRITTEN, SOURCE_CONNECTED, SOURCE_CURSOR_REJECTED,
    SOURCE_RECONNECTS, SOURCE_STARTS_WITHOUT_CURSOR,
};
use crate::store::{CommitStats, StoreError};

/// Counters, health and metric handles of one running command.
#[derive(Debug)]
pub struct Obs {
    pub commits_received: AtomicU64,
    pub identities_received: AtomicU64,
    pub accounts_received: AtomicU64,
    pub others_received: AtomicU64,
    pub filtered: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
    pub rows_upserted: AtomicU64,
    pub rows_deleted: AtomicU64,
    pub batches: AtomicU64,
    pub reconnects: AtomicU64,
    /// Cursors a server could not serve, by [`CursorRejection`].
    cursor_rejected: [AtomicU64; 2],
    /// Failover starts without a cursor of the new host.
    pub starts_without_cursor: AtomicU64,
    /// Last committed cursor.
    pub cursor: AtomicI64,
    /// Event time (µs since the Unix epoch) of the last committed event
    /// that had one; 0 before the first.
    committed_time_us: AtomicI64,
    health: Health,
    exported: Exported,
}

/// Prometheus handles, resolved once (no-ops without a recorder).
#[derive(Debug)]
struct Exported {
    received: [Counter; 4],
    filtered: Counter,
    dropped: [Counter; DropReason::ALL.len()],
    batch_size: Histogram,
    commit_seconds: Histogram,
    cursor: Gauge,
    lag: Gauge,
}

impl Exported {
    fn resolve() -> Exported {
        Exported {
            received: ReceivedKind::ALL.map(|k| counter!(EVENTS_RECEIVED, "kind" => k.as_str())),
            filtered: counter!(EVENTS_FILTERED),
            dropped: DropReason::ALL.map(|r| {
                let intentional = if r.intentional() { "true" } else { "false" };
                counter!(EVENTS_DROPPED, "reason" => r.as_str(), "intentional" => intentional)
            }),
            batch_size: histogram!(BATCH_SIZE),
            commit_seconds: histogram!(BATCH_COMMIT_SECONDS),
            cursor: gauge!(CURSOR),
            lag: gauge!(LAG_SECONDS),
        }
    }
}

impl Obs {
    /// `/health` turns `stale` after `max_stale` without progress.
    pub fn new(max_stale: Duration) -> Obs {
        Obs {
            commits_received: AtomicU64::new(0),
            identities_received: AtomicU64::new(0),
            accounts_received: AtomicU64::new(0),
            others_received: AtomicU64::new(0),
            filtered: AtomicU64::new(0),
            dropped: Default::default(),
            rows_upserted: AtomicU64::new(0),
            rows_deleted: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            cursor_rejected: Default::default(),
            starts_without_cursor: AtomicU64::new(0),
            cursor: AtomicI64::new(0),
            committed_time_us: AtomicI64::new(0),
            health: Health::new(max_stale),
            exported: Exported::resolve(),
        }
    }

    // What the source reports.

    /// One event decoded from the stream.
    pub fn record_received(&self, kind: ReceivedKind) {
        let c = match kind {
            ReceivedKind::Commit => &self.commits_received,
            ReceivedKind::Identity => &self.identities_received,
            ReceivedKind::Account => &self.accounts_received,
            ReceivedKind::Other => &self.others_received,
        };
        c.fetch_add(1, Relaxed);
        self.exported.received[kind as usize].increment(1);
    }

    /// One event kept out of the database (filter, or no mapper).
    pub fn record_filtered(&self) {
        self.filtered.fetch_add(1, Relaxed);
        self.exported.filtered.increment(1);
    }

    /// One event or message dropped.
    pub fn record_drop(&self, reason: DropReason) {
        self.dropped[reason as usize].fetch_add(1, Relaxed);
        self.exported.dropped[reason as usize].increment(1);
    }

    /// One connection lost; `reason` is a fixed label.
    pub fn record_reconnect(&self, reason: &'static str) {
        debug_assert!(
            super::labels::RECONNECT_REASONS.contains(&reason),
            "reconnect reason {reason} missing from RECONNECT_REASONS"
        );
        self.reconnects.fetch_add(1, Relaxed);
        counter!(SOURCE_RECONNECTS, "reason" => reason).increment(1);
    }

    /// A server could not serve the cursor asked for.
    pub fn record_cursor_rejected(&self, r: CursorRejection) {
        self.cursor_rejected[r as usize].fetch_add(1, Relaxed);
        counter!(SOURCE_CURSOR_REJECTED, "reason" => r.as_str()).increment(1);
    }

    /// Cursors rejected for reason `r` so far.
    pub fn cursor_rejected(&self, r: CursorRejection) -> u64 {
        self.cursor_rejected[r as usize].load(Relaxed)
    }

    /// A connection of `format` (one of [`SEQ_FORMATS`]) started live for
    /// want of a cursor of its host while another host had one.
    pub fn record_start_without_cursor(&self, format: &'static str) {
        debug_assert!(
            SEQ_FORMATS.contains(&format),
            "format {format} missing from SEQ_FORMATS"
        );
        self.starts_without_cursor.fetch_add(1, Relaxed);
        counter!(SOURCE_STARTS_WITHOUT_CURSOR, "format" => format).increment(1);
    }

    /// The connection to `endpoint` came up (counts as progress) or went
    /// down: `/health` and the `parity_source_connected` gauge.
    pub fn set_connected(&self, endpoint: &Url, up: bool) {
        self.health.set_connected(up);
        gauge!(SOURCE_CONNECTED, "endpoint" => endpoint_label(endpoint)).set(if up {
            1.0
        } else {
            0.0
        });
    }

    /// Something arrived or was done: a message, a ping, a fetched page.
    pub fn touch(&self) {
        self.health.touch();
    }

    // Lifecycle.

    /// Migrations ran.
    pub fn mark_migrated(&self) {
        self.health.mark_migrated();
    }

    /// For commands without a stream (`import`): migrated, started and
    /// making progress from now on. Keep calling [`Obs::touch`] or
    /// [`Obs::on_commit`] as work completes.
    pub fn mark_ready(&self) {
        self.health.mark_ready();
    }

    // What the writer reports.

    /// One batch committed: `rows` written, `events` in it, the commit took
    /// `took`, it stored `cursor` (none for an import page) and its last
    /// event happened at `time_us` (0: unknown, the lag stays as it was).
    /// Updates the counters, the metrics and `/health` in one go.
    pub fn on_commit(
        &self,
        rows: &CommitStats,
        events: usize,
        took: Duration,
        cursor: Option<i64>,
        time_us: i64,
    ) {
        for (table, n) in &rows.upserted {
            counter!(RECORDS_WRITTEN, "table" => table.clone(), "op" => "upsert").increment(*n);
        }
        for (table, n) in &rows.deleted {
            counter!(RECORDS_WRITTEN, "table" => table.clone(), "op" => "delete").increment(*n);
        }
        self.exported.batch_size.record(events as f64);
        self.exported.commit_seconds.record(took.as_secs_f64());
        self.rows_upserted.fetch_add(rows.upserted_total(), Relaxed);
        self.rows_deleted.fetch_add(rows.deleted_total(), Relaxed);
        self.batches.fetch_add(1, Relaxed);
        self.on_checkpoint(cursor, time_us);
        self.health.committed();
    }

    /// The stored position moved: every writer has committed up to
    /// `cursor` (none for an import page), whose last event happened at
    /// `time_us` (0: unknown, the lag stays as it was). With several
    /// writers this is the low watermark, reported apart from each
    /// writer's [`Obs::on_commit`], so the cursor gauge and `/health`'s lag
    /// never run ahead of what a restart resumes from.
    pub fn on_checkpoint(&self, cursor: Option<i64>, time_us: i64) {
        if let Some(c) = cursor {
            self.cursor.store(c, Relaxed);
            // Exact: cursors (µs or seq) stay far below 2^53.
            self.exported.cursor.set(c as f64);
        }
        if time_us > 0 {
            self.committed_time_us.store(time_us, Relaxed);
        }
    }

    /// A failed database operation (commit, sweep), counted by kind.
    pub fn record_db_error(&self, e: &StoreError) {
        counter!(DB_ERRORS, "kind" => e.kind()).increment(1);
    }

    /// A commit failed and is being retried (`false`), so `/health` says
    /// `database_unreachable` until the next commit succeeds.
    pub fn set_database_reachable(&self, ok: bool) {
        self.health.set_database_reachable(ok);
    }

    // Reads.

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize].load(Relaxed)
    }

    /// Events decoded from the stream, of every kind.
    pub fn received(&self) -> u64 {
        self.commits_received.load(Relaxed)
            + self.identities_received.load(Relaxed)
            + self.accounts_received.load(Relaxed)
            + self.others_received.load(Relaxed)
    }

    /// Seconds between now and the event time of the last committed event;
    /// `None` before the first. The one lag computation: the progress log
    /// and the `parity_lag_seconds` gauge both read it.
    pub fn lag_seconds(&self) -> Option<f64> {
        let t = self.committed_time_us.load(Relaxed);
        (t > 0).then(|| (chrono::Utc::now().timestamp_micros() - t) as f64 / 1e6)
    }

    /// Refreshes the lag gauge (it grows while nothing commits); the
    /// listener calls this before rendering `/metrics`.
    pub fn publish_lag(&self) {
        if let Some(s) = self.lag_seconds() {
            self.exported.lag.set(s);
        }
    }

    /// `Ok` while healthy; otherwise the first reason, in the order
    /// disconnected, database unreachable, stale.
    pub fn check(&self) -> Result<(), Unhealthy> {
        self.health.check()
    }

    /// `Ok` once migrations ran and the first connection came up.
    pub fn ready(&self) -> Result<(), NotReady> {
        self.health.ready()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusRecorder;

    fn now_us() -> i64 {
        chrono::Utc::now().timestamp_micros()
    }

    /// An `Obs` whose handles feed a private recorder (not the global one).
    fn with_recorder() -> (Obs, PrometheusRecorder) {
        let recorder = super::super::recorder::builder().build_recorder();
        let obs = metrics::with_local_recorder(&recorder, || Obs::new(Duration::from_secs(60)));
        (obs, recorder)
    }

    fn rows() -> CommitStats {
        let mut s = CommitStats::default();
        CommitStats::add(&mut s.upserted, "posts", 3);
        CommitStats::add(&mut s.deleted, "likes", 1);
        s
    }

    #[test]
    fn lag_is_measured_from_the_last_committed_event() {
        let obs = Obs::new(Duration::from_secs(60));
        assert_eq!(obs.lag_seconds(), None);
        obs.on_commit(&rows(), 4, Duration::ZERO, Some(7), now_us() - 5_000_000);
        let lag = obs.lag_seconds().unwrap();
        assert!((5.0..6.0).contains(&lag), "{lag}");
        // A batch without event times (an import page) keeps the last lag.
        obs.on_commit(&rows(), 4, Duration::ZERO, None, 0);
        let again = obs.lag_seconds().unwrap();
        assert!(again >= lag && again < 6.0, "{again}");
    }

    #[test]
    fn on_commit_updates_counters_health_and_metrics() {
        let (obs, recorder) = with_recorder();
        let text = metrics::with_local_recorder(&recorder, || {
            obs.mark_migrated();
            obs.set_connected(&Url::parse("wss://h.example/subscribe").unwrap(), true);
            obs.set_database_reachable(false);
            assert_eq!(obs.check(), Err(Unhealthy::DatabaseUnreachable));

            let time_us = now_us() - 2_000_000;
            obs.on_commit(&rows(), 4, Duration::from_millis(20), Some(1_700), time_us);
            assert_eq!(obs.check(), Ok(()), "a commit proves the database is back");
            obs.publish_lag();
            recorder.handle().render()
        });
        assert_eq!(obs.ready(), Ok(()));
        assert_eq!(obs.rows_upserted.load(Relaxed), 3);
        assert_eq!(obs.rows_deleted.load(Relaxed), 1);
        assert_eq!(obs.batches.load(Relaxed), 1);
        assert_eq!(obs.cursor.load(Relaxed), 1_700);
        for line in [
            "parity_records_written_total{table=\"posts\",op=\"upsert\"} 3",
            "parity_records_written_total{table=\"likes\",op=\"delete\"} 1",
            "parity_batch_size_sum 4",
            "parity_batch_commit_seconds_count 1",
            "parity_cursor 1700",
            "parity_source_connected{endpoint=\"h.example\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        let lag = text
            .lines()
            .find_map(|l| l.strip_prefix("parity_lag_seconds "))
            .and_then(|v| v.parse::<f64>().ok())
            .expect("lag gauge");
        assert!((2.0..3.0).contains(&lag), "{lag}");
    }

    #[test]
    fn counts_events_once_in_the_counter_and_the_metric() {
        let (obs, recorder) = with_recorder();
        obs.record_received(ReceivedKind::Commit);
        obs.record_received(ReceivedKind::Identity);
        obs.record_filtered();
        obs.record_drop(DropReason::StaleRev);
        assert_eq!(obs.received(), 2);
        assert_eq!(obs.filtered.load(Relaxed), 1);
        assert_eq!(obs.dropped(DropReason::StaleRev), 1);
        assert_eq!(obs.dropped(DropReason::Malformed), 0);
        let text = recorder.handle().render();
        for line in [
            "parity_events_received_total{kind=\"commit\"} 1",
            "parity_events_filtered_total 1",
            "parity_events_dropped_total{reason=\"stale_rev\",intentional=\"true\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
