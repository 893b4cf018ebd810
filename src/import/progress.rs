//! Progress of an import run: indicatif bars on a terminal, periodic log
//! lines elsewhere.
//!
//! Owns: the overall bar (DIDs done / total, records/s, ETA; for
//! `import --all` also the relay listing's repos listed, queued, inactive
//! and malformed, and DIDs failed), one bar per
//! running DID (collection, records and pages), and the plain log line used
//! when `--progress` is given without a TTY (every
//! `log.progress_interval_seconds`, or [`LOG_EVERY`] when that is 0).
//! Without `--progress` nothing is drawn; the run still logs one line per
//! DID and the final summary.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use super::job::Counts;

/// Interval of the plain progress line when none is configured.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

struct Inner {
    bars: Option<(MultiProgress, ProgressBar)>,
    /// Interval of the plain progress line, when it is on.
    log: Option<Duration>,
    dids_total: AtomicU64,
    dids_done: AtomicU64,
    records: AtomicU64,
    started: Instant,
    /// `import --all`: what the relay listing has found so far.
    relay: Option<RelayCounts>,
}

/// Counters of an `import --all` run's listing and queue.
#[derive(Default)]
struct RelayCounts {
    listed: AtomicU64,
    queued: AtomicU64,
    inactive: AtomicU64,
    malformed: AtomicU64,
    failed: AtomicU64,
}

/// Shared by every task of one run.
#[derive(Clone)]
pub struct Progress(Arc<Inner>);

impl Progress {
    /// `enabled`: the `--progress` flag; `log_every`: the plain line's
    /// interval without a TTY.
    pub fn new(enabled: bool, dids_total: u64, log_every: Duration) -> Progress {
        Progress::build(enabled, dids_total, log_every, false)
    }

    /// The progress of `import --all`: `queued` DIDs waiting at the start;
    /// the relay listing's counters (repos listed, queued, inactive,
    /// malformed), DIDs done and failed, records/s and an ETA.
    pub fn for_all(enabled: bool, queued: u64, log_every: Duration) -> Progress {
        Progress::build(enabled, queued, log_every, true)
    }

    fn build(enabled: bool, dids_total: u64, log_every: Duration, relay: bool) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let bars = (enabled && tty).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let overall = multi.add(ProgressBar::new(dids_total));
            overall.set_style(
                ProgressStyle::with_template(
                    "{prefix:.bold} [{bar:30}] {pos}/{len} DIDs · {msg} · ETA {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            overall.set_prefix("import");
            (multi, overall)
        });
        Progress(Arc::new(Inner {
            bars,
            log: (enabled && !tty).then_some(log_every),
            dids_total: AtomicU64::new(dids_total),
            dids_done: AtomicU64::new(0),
            records: AtomicU64::new(0),
            started: Instant::now(),
            relay: relay.then(RelayCounts::default),
        }))
    }

    /// One relay page committed: `queued` of its `listed` repos were new.
    pub fn listed(&self, listed: u64, queued: u64, inactive: u64, malformed: u64) {
        if let Some(r) = &self.0.relay {
            r.listed.fetch_add(listed, Relaxed);
            r.queued.fetch_add(queued, Relaxed);
            r.inactive.fetch_add(inactive, Relaxed);
            r.malformed.fetch_add(malformed, Relaxed);
        }
        self.add_total(queued);
        self.refresh_overall();
    }

    /// One DID of an `import --all` run failed.
    pub fn did_failed(&self) {
        if let Some(r) = &self.0.relay {
            r.failed.fetch_add(1, Relaxed);
        }
        self.refresh_overall();
    }

    /// Seconds left at the current rate of DIDs done, once one is done.
    fn eta(&self) -> Option<Duration> {
        let done = self.0.dids_done.load(Relaxed);
        let total = self.0.dids_total.load(Relaxed);
        if done == 0 {
            return None;
        }
        let per_did = self.0.started.elapsed().as_secs_f64() / done as f64;
        Some(Duration::from_secs_f64(
            per_did * total.saturating_sub(done) as f64,
        ))
    }

    /// The overall bar's message.
    fn overall_message(&self) -> String {
        let inner = &self.0;
        let records = format!(
            "{} records, {:.0}/s",
            inner.records.load(Relaxed),
            self.records_per_second()
        );
        match &inner.relay {
            None => records,
            Some(r) => format!(
                "relay: {} listed, {} queued, {} inactive, {} malformed · {} failed · {records}",
                r.listed.load(Relaxed),
                r.queued.load(Relaxed),
                r.inactive.load(Relaxed),
                r.malformed.load(Relaxed),
                r.failed.load(Relaxed),
            ),
        }
    }

    fn refresh_overall(&self) {
        if let Some((_, o)) = &self.0.bars {
            o.set_message(self.overall_message());
        }
    }

    /// Adds DIDs discovered after the start (resume expanding requests).
    pub fn add_total(&self, n: u64) {
        let total = self.0.dids_total.fetch_add(n, Relaxed) + n;
        if let Some((_, o)) = &self.0.bars {
            o.set_length(total);
        }
    }

    /// A bar for one DID while it runs.
    pub fn did(&self, did: &str) -> DidBar {
        let bar = self.0.bars.as_ref().map(|(m, _)| {
            let b = m.add(ProgressBar::new_spinner());
            b.set_style(
                ProgressStyle::with_template("  {spinner} {prefix} {msg}").expect("valid template"),
            );
            b.set_prefix(did.to_owned());
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        DidBar {
            progress: self.clone(),
            bar,
        }
    }

    fn records_per_second(&self) -> f64 {
        let secs = self.0.started.elapsed().as_secs_f64().max(0.001);
        self.0.records.load(Relaxed) as f64 / secs
    }

    fn line(&self) -> String {
        if self.0.relay.is_some() {
            let eta = self.eta().map_or_else(
                || "unknown".to_owned(),
                |d| indicatif::HumanDuration(d).to_string(),
            );
            return format!(
                "{}/{} DIDs done, {}, ETA {eta}",
                self.0.dids_done.load(Relaxed),
                self.0.dids_total.load(Relaxed),
                self.overall_message()
            );
        }
        format!(
            "{}/{} DIDs, {} records ({:.0}/s)",
            self.0.dids_done.load(Relaxed),
            self.0.dids_total.load(Relaxed),
            self.0.records.load(Relaxed),
            self.records_per_second()
        )
    }

    /// Starts the periodic log line when `--progress` has no TTY.
    pub fn spawn_logger(&self, token: CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
        let every = self.0.log?;
        let me = self.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => tracing::info!(progress = %me.line(), "import progress"),
                    _ = token.cancelled() => return,
                }
            }
        }))
    }

    /// Clears the bars.
    pub fn finish(&self) {
        if let Some((_, o)) = &self.0.bars {
            o.finish_and_clear();
        }
    }

    /// Prints above the bars (or to stderr without them).
    pub fn println(&self, msg: &str) {
        match &self.0.bars {
            Some((m, _)) => {
                let _ = m.println(msg);
            }
            None => eprintln!("{msg}"),
        }
    }
}

/// The bar of one running DID.
pub struct DidBar {
    progress: Progress,
    bar: Option<ProgressBar>,
}

impl DidBar {
    /// Progress of one collection of this DID.
    pub fn pair(&self, collection: &str) -> PairBar {
        if let Some(b) = &self.bar {
            b.set_message(format!("{collection}: starting"));
        }
        PairBar {
            progress: self.progress.clone(),
            bar: self.bar.clone(),
            collection: collection.to_owned(),
            records: AtomicU64::new(0),
            pages: AtomicU64::new(0),
        }
    }

    /// The DID is done (either way).
    pub fn finish(self) {
        let inner = &self.progress.0;
        inner.dids_done.fetch_add(1, Relaxed);
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if let Some((_, o)) = &inner.bars {
            o.inc(1);
            o.set_message(self.progress.overall_message());
        }
    }
}

/// Progress of one (did, collection).
pub struct PairBar {
    progress: Progress,
    bar: Option<ProgressBar>,
    collection: String,
    records: AtomicU64,
    pages: AtomicU64,
}

impl PairBar {
    /// One page committed.
    pub fn page(&self, c: Counts) {
        let n = c.synced + c.skipped + c.failed;
        let records = self.records.fetch_add(n, Relaxed) + n;
        let pages = self.pages.fetch_add(1, Relaxed) + 1;
        let inner = &self.progress.0;
        inner.records.fetch_add(n, Relaxed);
        if let Some(b) = &self.bar {
            b.set_message(format!(
                "{}: {records} records, {pages} pages",
                self.collection
            ));
        }
        if inner.bars.is_some() {
            self.progress.refresh_overall();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_all_line_counts_the_listing_and_estimates_what_is_left() {
        let p = Progress::for_all(true, 2, Duration::from_secs(10));
        assert!(p.line().ends_with("ETA unknown"), "{}", p.line());
        p.listed(10, 6, 3, 1);
        p.did("did:plc:a").finish();
        p.did_failed();
        let line = p.line();
        assert!(
            line.starts_with("1/8 DIDs done, relay: 10 listed, 6 queued, 3 inactive, 1 malformed · 1 failed · 0 records"),
            "{line}"
        );
        assert!(!line.ends_with("ETA unknown"), "{line}");
        // The plain import line is unchanged.
        let plain = Progress::new(true, 3, Duration::from_secs(10));
        assert_eq!(plain.line(), "0/3 DIDs, 0 records (0/s)");
    }
}
