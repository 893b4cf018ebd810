//! `import.auto_resync`: the bounded re-import worker inside `parity
//! consume`. It takes the repos the stream flagged for a re-import (a
//! `#sync`, a commit that does not follow the last rev, a commit that
//! failed `source.verify`) and re-imports each whole, the way `parity
//! resume` would (getRepo, falling back per `import.method`), so nobody
//! has to run `parity resume` by hand.
//!
//! Owns: the loop (every [`POLL`], up to [`BATCH`] flagged DIDs, then the
//! next batch right away while there are more), its metric
//! (`parity_auto_resync_dids_total{outcome}`) and log lines. Everything
//! else is the importer's: the runner's `import.concurrency` bound, the
//! per-PDS request rate (`import.requests_per_second`), leases (a `parity
//! resume` elsewhere shares the queue), the state rows `import-status`
//! shows, the `parity_import_*` metrics.
//!
//! A re-import that fails leaves its state `failed` (shown by
//! `import-status`, retried by `parity resume`) and is not retried here
//! until the stream flags the DID again, so a broken PDS cannot make the
//! worker spin.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::runner::Work;
use super::{ImportError, Settings, progress};
use crate::obs::{Obs, names};

/// How often the queue is looked at when it was empty.
pub const POLL: Duration = Duration::from_secs(2);
/// Flagged DIDs taken per round.
pub const BATCH: i64 = 100;

/// Runs until `token` is cancelled.
pub async fn run(s: Settings, obs: Arc<Obs>, token: CancellationToken) -> Result<(), ImportError> {
    let concurrency = s.import.concurrency;
    let store = super::open(&s, concurrency).await?;
    let progress = progress::Progress::new(false, 0, super::log_every(&s));
    let runner = super::runner(
        &s.import,
        &s.identity,
        store.clone(),
        s.registry,
        progress,
        Some(concurrency),
        obs,
    )?;
    tracing::info!(concurrency, "Automatic re-imports on (import.auto_resync).");
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = POLL;
        let dids = match store.queued_resyncs(BATCH).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "auto_resync: cannot read the re-import queue; trying again.");
                continue;
            }
        };
        if dids.is_empty() {
            continue;
        }
        let n = dids.len() as u64;
        tracing::info!(dids = n, "auto_resync: re-importing flagged repos.");
        let summary = runner
            .run(futures_util::stream::iter(dids), n, Work::Resume, &token)
            .await;
        for (outcome, count) in [
            ("completed", summary.completed + summary.skipped),
            ("failed", summary.failed),
            ("gone", summary.gone),
            ("interrupted", summary.interrupted),
        ] {
            metrics::counter!(names::AUTO_RESYNC_DIDS, "outcome" => outcome).increment(count);
        }
        tracing::info!(
            completed = summary.completed,
            failed = summary.failed,
            gone = summary.gone,
            records = summary.records.synced,
            "auto_resync: round done."
        );
        if n as i64 == BATCH {
            wait = Duration::ZERO; // more may be waiting
        }
    }
    store.close().await;
    Ok(())
}
