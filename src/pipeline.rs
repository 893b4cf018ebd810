//! The consume pipeline: wires reader → processor → writer and drains them
//! on shutdown.
//!
//! Owns: the metrics and health listener's lifetime during a run, opening
//! the store (connect, migrate, prepare the mapped tables), the start
//! cursor, the processing task (filter, dispatch, batch), the writer task
//! (commit with retry on transient errors, quarantine of refused records), the progress log and shutdown
//! order. Does not own the configuration: `cmd::consume` builds its
//! [`Parts`] (registry, filter, purge policy, endpoints, sections) from the
//! `Config`. Does not own any wire format, SQL or mapping rule.
//!
//! Writers: `database.writers` writer tasks, each committing the share of
//! every batch whose DIDs hash to it (`writers.rs`: dispatch, the commit
//! loop, the low watermark); one on SQLite. The stream cursor stored is the
//! low watermark of what every writer committed, so a restart replays at
//! most what some writer had not committed yet. Before the writers start,
//! the per-writer positions of an earlier run are forgotten (its writer
//! count may partition DIDs differently); the stream's cursor then stays
//! where this run started until every writer has committed once.
//!
//! With `source.verify` on, the verification stage (`source::verify`)
//! sits between the reader and the processor, on its own bounded queue.
//!
//! Channels are bounded ([`EVENT_QUEUE`], [`BATCH_QUEUE`], a
//! [`writers::SHARE_QUEUE`] per writer), so a slow database fills the
//! writers' queues, the dispatcher and then the processor block, the event
//! queue fills and the reader stops reading the socket: memory stays flat.
//!
//! Shutdown: cancel the token; the reader stops between two websocket
//! messages (never inside one: a firehose frame's ops go whole) and drops
//! its sender; the
//! processor flushes its partial batch and drops its sender; the writer
//! commits what is queued and returns. Any task failing cancels the rest.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::batch::{Batch, BatchConfig, Batcher, PurgePolicy, Pushed};
use crate::event::{Cursor, EventKind};
use crate::filter::Filter;
use crate::mapper::{Dispatch, Registry};
use crate::obs::{self, DropReason, Escaped, Obs, ServeError};
use crate::source::SourceConfig;
use crate::source::verify::Verifier;
use crate::source::{Endpoint, Item, Origin, Positions, Pushdown, Reader};
use crate::store::{ChangeLog, DatabaseConfig, Quarantined, Store, StoreError};

mod writers;
pub use writers::SHARE_QUEUE;
use writers::Watermark;

/// Events buffered between reader and processor: about a second of
/// firehose at peak, a few MB.
pub const EVENT_QUEUE: usize = 4_096;
/// Batches buffered between processor and dispatcher: the writers' own
/// queues ([`writers::SHARE_QUEUE`]) hold the rest, so the processor never
/// idles on a commit and memory stays at a few batches.
pub const BATCH_QUEUE: usize = 1;

/// Per-run choices from the command line (`parity consume`'s flags).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConsumeOptions {
    /// Endpoint URL; repeat for failover order (replaces source.endpoints).
    #[arg(long = "endpoint", value_name = "URL")]
    pub endpoints: Vec<String>,
    /// Start from this cursor instead of the stored one.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(0..), conflicts_with = "fresh")]
    pub cursor: Option<i64>,
    /// Forget the stored cursor and start live.
    #[arg(long)]
    pub fresh: bool,
    /// Collections to keep, comma-separated (exact, prefix.* or *); replaces filter.collections.
    #[arg(long, value_name = "NSID,…", value_delimiter = ',')]
    pub collections: Option<Vec<String>>,
}

/// Why a consume run stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The database refused a statement or went away for good: stop.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The metrics and health listener could not start.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// A pipeline task panicked or was aborted: a bug, stop loudly.
    #[error("internal error: {0}")]
    Internal(String),
}

/// What one consume run is made of, built from the configuration by
/// `cmd::consume`.
pub struct Parts {
    pub database: DatabaseConfig,
    pub source: SourceConfig,
    /// In failover order; never empty (the config is validated).
    pub endpoints: Vec<Endpoint>,
    pub batch: BatchConfig,
    pub purge: PurgePolicy,
    pub filter: Filter,
    pub registry: Registry,
    /// Where `/metrics`, `/health` and `/ready` listen, if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    /// Seconds between progress lines (0: none).
    pub progress_interval_seconds: u64,
    /// Counters, health and metric handles this run updates.
    pub obs: Arc<Obs>,
    /// The live verification stage (`source.verify` on), run between the
    /// reader and the processor.
    pub verifier: Option<Verifier>,
    /// What commits append to the change log (`[feed]`).
    pub change_log: ChangeLog,
    /// Called once the store is migrated and prepared, before the first
    /// event is read, with a handle sharing its connections (the change
    /// feed's server and relay run on it).
    pub on_store: Option<Box<dyn FnOnce(Store) + Send>>,
}

/// Runs until `token` is cancelled (then drains) or a fatal error. `opts`
/// chooses the start cursor (`cursor`, `fresh`); its config overrides are
/// already in `parts`.
pub async fn run(
    parts: Parts,
    opts: &ConsumeOptions,
    token: CancellationToken,
) -> Result<(), PipelineError> {
    let Parts {
        database,
        source,
        endpoints,
        batch,
        purge,
        filter,
        registry,
        metrics_addr,
        progress_interval_seconds,
        obs,
        verifier,
        change_log,
        on_store,
    } = parts;
    // The listener outlives the drain (its own token, cancelled on every
    // way out of this function) so the last batch is visible in metrics.
    let ops_token = CancellationToken::new();
    let ops_guard = ops_token.clone().drop_guard();
    let server = match metrics_addr {
        Some(addr) => Some(obs::serve(addr, obs.clone(), ops_token).await?),
        None => None,
    };
    let mut store = Store::connect(&database).await?;
    store.migrate().await?;
    store.prepare(registry.tables(), &purge.statuses).await?;
    store.set_change_log(change_log);
    obs.mark_migrated();
    if let Some(start) = on_store {
        start(store.clone());
    }

    let collections = filter.collections().to_vec();
    let positions = start_positions(&store, &endpoints, opts).await?;
    let writer_count = database.writer_count() as usize;
    for ep in &endpoints {
        store.reset_writer_cursors(&ep.key).await?;
    }
    let table_names: Vec<&str> = registry.tables().iter().map(|t| t.name.as_str()).collect();
    tracing::info!(
        endpoint = %endpoints[0].url,
        cursor = ?positions.cursor(&endpoints[0]).map(|c| c.0),
        tables = ?table_names,
        writers = writer_count,
        collections = %collections.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        "Starting consumer."
    );

    let reader = Reader::new(
        endpoints,
        source,
        Pushdown {
            collections,
            dids: filter.allowed_dids().cloned(),
        },
        positions,
        obs.clone(),
    );
    let batcher = Batcher::new(&batch, purge);
    let (event_tx, mut event_rx) = mpsc::channel(EVENT_QUEUE);
    let (batch_tx, batch_rx) = mpsc::channel(BATCH_QUEUE);
    let retention = Duration::from_secs(database.tombstone_retention_hours * 3_600);

    let mut tasks: JoinSet<Result<(), PipelineError>> = JoinSet::new();
    let t = token.clone();
    tasks.spawn(async move {
        reader.run(event_tx, t).await;
        Ok(())
    });
    if let Some(verifier) = verifier {
        let (verified_tx, verified_rx) = mpsc::channel(EVENT_QUEUE);
        let unverified = std::mem::replace(&mut event_rx, verified_rx);
        let t = token.clone();
        tasks.spawn(async move {
            verifier.run(unverified, verified_tx, t).await;
            Ok(())
        });
    }
    let o = obs.clone();
    tasks.spawn(async move {
        process(event_rx, batch_tx, filter, registry, batcher, o).await;
        Ok(())
    });
    let watermark = Arc::new(Mutex::new(Watermark::new(writer_count)));
    let mut share_txs = Vec::with_capacity(writer_count);
    for writer in 0..writer_count {
        let (share_tx, share_rx) = mpsc::channel(writers::SHARE_QUEUE);
        share_txs.push(share_tx);
        let (o, t, w) = (obs.clone(), token.clone(), watermark.clone());
        let writer_store = store.clone();
        tasks.spawn(async move {
            writers::write(writer, share_rx, writer_store, o, w, t, retention)
                .await
                .map_err(PipelineError::from)
        });
    }
    tasks.spawn(async move {
        writers::dispatch(batch_rx, share_txs, watermark).await;
        Ok(())
    });
    let progress = spawn_progress(obs.clone(), progress_interval_seconds, token.clone());

    let mut result = Ok(());
    while let Some(joined) = tasks.join_next().await {
        let r = joined
            .map_err(|e| PipelineError::Internal(e.to_string()))
            .and_then(|r| r);
        if let Err(e) = r {
            token.cancel();
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    progress.abort();
    store.close().await;
    drop(ops_guard);
    if let Some(server) = server {
        server.close().await;
    }
    tracing::info!(
        received = obs.received(),
        rows_upserted = obs.rows_upserted.load(Relaxed),
        rows_deleted = obs.rows_deleted.load(Relaxed),
        cursor = obs.cursor.load(Relaxed),
        "Consumer stopped."
    );
    result
}

/// Where each endpoint starts: `--cursor` for the first endpoint (for
/// Jetstream v1, whose `time_us` is shared, for every v1 host), else the
/// stored cursors: per host for `seq` formats, the newest of any host for
/// Jetstream v1 (`stream::Positions` rewinds it). `--fresh` forgets them.
async fn start_positions(
    store: &Store,
    endpoints: &[Endpoint],
    opts: &ConsumeOptions,
) -> Result<Positions, StoreError> {
    let mut positions = Positions::default();
    if opts.fresh {
        for ep in endpoints {
            store.delete_cursors(&ep.key).await?;
            if ep.format.time_based() {
                store
                    .delete_cursors(&format!("{}:", ep.format.as_str()))
                    .await?;
            }
        }
        return Ok(positions);
    }
    for ep in endpoints {
        let stored = if ep.format.time_based() {
            // time_us cursors line up across v1 hosts: take the newest.
            store
                .cursors_with_prefix(&format!("{}:", ep.format.as_str()))
                .await?
                .into_iter()
                .map(|(_, c)| c)
                .max()
        } else {
            store.load_cursor(&ep.key).await?
        };
        if let Some(c) = stored {
            positions.set(ep, c, Origin::Stored);
        }
    }
    if let Some(c) = opts.cursor {
        positions.set(&endpoints[0], Cursor(c), Origin::Given);
    }
    Ok(positions)
}

/// Filters, maps and batches events until the reader is done, then flushes.
async fn process(
    mut rx: mpsc::Receiver<Item>,
    tx: mpsc::Sender<Batch>,
    filter: Filter,
    registry: Registry,
    mut batcher: Batcher,
    obs: Arc<Obs>,
) {
    loop {
        let deadline = batcher.deadline().map(tokio::time::Instant::from_std);
        let item = tokio::select! {
            item = rx.recv() => item,
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => {
                if let Some(b) = batcher.take() && tx.send(b).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let Some(Item {
            stream,
            event,
            frame_end,
            ..
        }) = item
        else {
            break;
        };
        batcher.seen(
            &stream,
            event.cursor,
            event.time_us,
            frame_end,
            Instant::now(),
        );
        if !filter.accepts(&event) {
            obs.record_filtered();
        } else {
            match &event.kind {
                EventKind::Commit(_) => match registry.dispatch(&event) {
                    Dispatch::Mutation(m) => match batcher.push(m) {
                        Pushed::Kept => {}
                        Pushed::Superseded => obs.record_drop(DropReason::StaleRev),
                        Pushed::AccountGone => obs.record_drop(DropReason::AccountGone),
                    },
                    Dispatch::Unmapped => obs.record_filtered(),
                    Dispatch::Failed { uri, error } => {
                        obs.record_drop(DropReason::MapperFailure);
                        tracing::warn!(uri = %Escaped(&uri), error = %Escaped(&error), "Record does not fit its mapper; skipped.");
                    }
                },
                EventKind::Identity { handle } => batcher.identity(&event.did, handle.clone()),
                EventKind::Account { active, status } => {
                    if batcher.account(&event.did, *active, *status) {
                        tracing::info!(did = %event.did, status = ?status.map(|s| s.as_str()), "Account purged.");
                    }
                }
                EventKind::Sync { rev } => {
                    if batcher.resync(&event.did, rev) {
                        tracing::info!(did = %event.did, rev = %Escaped(rev), "Repo sync: a full re-import is queued unless that rev is already applied.");
                    } else {
                        tracing::debug!(did = %event.did, "Repo sync at a rev already applied; nothing to re-import.");
                    }
                }
                EventKind::Info { .. } | EventKind::Skip => {}
            }
        }
        if batcher.is_full()
            && let Some(b) = batcher.take()
            && tx.send(b).await.is_err()
        {
            return;
        }
    }
    if let Some(b) = batcher.take() {
        let _ = tx.send(b).await;
    }
}

/// Counts and logs each record the database refused (URI bounded and
/// escaped; the error names no value).
pub(crate) fn report_rejected(q: &Quarantined, obs: &Obs) {
    for r in &q.rejected {
        obs.record_drop(DropReason::DbRejected);
        tracing::warn!(uri = %Escaped(bounded(&r.uri)), error = %Escaped(bounded(&q.error.to_string())), "Database refused a record; skipped, the rest of the batch committed.");
    }
}

/// At most 300 bytes of `s`, cut at a character boundary.
fn bounded(s: &str) -> &str {
    let mut end = s.len().min(300);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn spawn_progress(
    obs: Arc<Obs>,
    every: u64,
    token: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if every == 0 {
            return;
        }
        let period = Duration::from_secs(every);
        let mut last = (Instant::now(), obs.received());
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            let now = (Instant::now(), obs.received());
            let rate = (now.1 - last.1) as f64 / now.0.duration_since(last.0).as_secs_f64();
            tracing::info!(
                events_per_sec = rate.round() as u64,
                lag_seconds = obs.lag_seconds().map(|l| (l * 10.0).round() / 10.0),
                rows_upserted = obs.rows_upserted.load(Relaxed),
                rows_deleted = obs.rows_deleted.load(Relaxed),
                cursor = obs.cursor.load(Relaxed),
                "Progress."
            );
            last = now;
        }
    })
}
