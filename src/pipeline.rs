//! `parity consume`: wires reader → processor → writer and drains them on
//! shutdown.
//!
//! Owns: building the registry, filter and start cursor from config; the
//! processing task (filter, dispatch, batch); the writer task (commit with
//! retry on transient errors); the progress log; the metrics and health
//! listener's lifetime; shutdown order. Does not own any wire format, SQL
//! or mapping rule.
//!
//! Channels are bounded ([`EVENT_QUEUE`], [`BATCH_QUEUE`]), so a slow
//! database fills the batch queue, the processor blocks, the event queue
//! fills and the reader stops reading the socket: memory stays flat.
//!
//! Shutdown: cancel the token; the reader stops and drops its sender; the
//! processor flushes its partial batch and drops its sender; the writer
//! commits what is queued and returns. Any task failing cancels the rest.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::batch::{Batch, Batcher, PurgePolicy, Pushed};
use crate::config::Config;
use crate::error::Error;
use crate::event::{Cursor, EventKind};
use crate::filter::{CollectionPattern, Filter};
use crate::mapper::{Dispatch, Mapper, Registry, builtin, declarative::DeclarativeMapper, generic};
use crate::obs::{self, DropReason, Escaped, Obs};
use crate::source::{Endpoint, Item, Pushdown, Reader, WireFormat};
use crate::store::{Store, StoreError};

/// Events buffered between reader and processor: about a second of
/// firehose at peak, a few MB.
pub const EVENT_QUEUE: usize = 4_096;
/// Batches buffered between processor and writer: one committing, one
/// waiting, so the processor never idles on a commit and memory stays at
/// two batches.
pub const BATCH_QUEUE: usize = 2;
/// How often expired delete tombstones are removed.
const TOMBSTONE_SWEEP: Duration = Duration::from_secs(3_600);
/// Longest wait between retries of a batch after a transient DB error.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Per-run choices from the command line.
#[derive(Debug, Clone, Default)]
pub struct ConsumeOptions {
    /// Replaces `source.endpoints` when not empty.
    pub endpoints: Vec<String>,
    /// Start here instead of the stored cursor.
    pub cursor: Option<i64>,
    /// Forget the stored cursor and start live.
    pub fresh: bool,
    /// Replaces `filter.collections` when set.
    pub collections: Option<Vec<String>>,
}

/// The consume pipeline, with any mappers a library user registered.
pub struct Consumer {
    config: Config,
    custom: Vec<(CollectionPattern, Arc<dyn Mapper>)>,
    obs: Arc<Obs>,
}

impl Consumer {
    /// With `metrics.addr` set, installs the Prometheus recorder first so
    /// the counters created here feed it.
    pub fn new(config: Config) -> Consumer {
        if matches!(config.metrics.listen_addr(), Ok(Some(_))) {
            obs::install();
        }
        let obs = Obs::new(Duration::from_secs(config.health.max_stale));
        Consumer {
            config,
            custom: Vec::new(),
            obs: Arc::new(obs),
        }
    }

    /// Adds a mapper of your own for `pattern`. Built-in and declarative
    /// mappers win for the collections they name; yours win over the
    /// generic catch-all.
    pub fn register(
        &mut self,
        pattern: CollectionPattern,
        mapper: Arc<dyn Mapper>,
    ) -> &mut Consumer {
        self.custom.push((pattern, mapper));
        self
    }

    /// The counters, health and metrics this run updates (what `/health`
    /// and `/ready` report).
    pub fn obs(&self) -> Arc<Obs> {
        self.obs.clone()
    }

    /// Builds the registry: built-ins, declarative, custom, then generic.
    pub fn registry(&self) -> Result<Registry, Error> {
        build_registry(&self.config, &self.custom)
    }

    /// Runs until `token` is cancelled (then drains) or a fatal error.
    pub async fn run(self, opts: ConsumeOptions, token: CancellationToken) -> Result<(), Error> {
        let mut cfg = self.config.clone();
        if !opts.endpoints.is_empty() {
            cfg.source.endpoints = opts.endpoints.clone();
        }
        if let Some(c) = &opts.collections {
            cfg.filter.collections = c.clone();
        }
        cfg.validate()?;
        let registry = build_registry(&cfg, &self.custom)?;
        let purge = cfg.purge_statuses()?;
        // The listener outlives the drain (its own token, cancelled on every
        // way out of this function) so the last batch is visible in metrics.
        let ops_token = CancellationToken::new();
        let ops_guard = ops_token.clone().drop_guard();
        let server = match cfg
            .metrics
            .listen_addr()
            .map_err(crate::config::ConfigError)?
        {
            Some(addr) => Some(obs::serve(addr, self.obs.clone(), ops_token).await?),
            None => None,
        };
        let mut store = Store::connect(&cfg.database).await?;
        store.migrate().await?;
        store.prepare(registry.tables(), &purge).await?;
        self.obs.mark_migrated();

        let mut collections = cfg.collection_patterns()?;
        for c in &collections {
            if let CollectionPattern::Exact(n) = c
                && !registry.handles(n)
            {
                tracing::warn!(collection = %n, "Collection has no mapper; its events only move the cursor.");
            }
        }
        if collections.is_empty() {
            collections = registry.patterns();
        }
        let filter = Filter::new(
            collections.clone(),
            cfg.allowed_dids()?,
            cfg.excluded_dids()?,
            &cfg.operations()?,
        );
        let endpoints: Vec<Endpoint> = cfg
            .source
            .endpoints
            .iter()
            .map(|e| Endpoint::parse(e).map_err(crate::config::ConfigError))
            .collect::<Result<_, _>>()?;
        let start = start_cursor(&store, &endpoints, &opts, cfg.source.rewind_seconds).await?;
        let table_names: Vec<&str> = registry.tables().iter().map(|t| t.name.as_str()).collect();
        tracing::info!(
            endpoint = %endpoints[0].url,
            cursor = ?start.map(|c| c.0),
            tables = ?table_names,
            collections = %collections.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            "Starting consumer."
        );

        let mut reader = Reader::new(
            endpoints,
            cfg.source.clone(),
            Pushdown {
                collections,
                dids: filter.allowed_dids().cloned(),
            },
            start,
            self.obs.clone(),
        );
        if opts.cursor.is_none() {
            reader = reader.start_is_stored();
        }
        let batcher = Batcher::new(&cfg.batch, PurgePolicy { statuses: purge });
        let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
        let (batch_tx, batch_rx) = mpsc::channel(BATCH_QUEUE);
        let retention = Duration::from_secs(cfg.database.tombstone_retention_hours * 3_600);

        let mut tasks: JoinSet<Result<(), Error>> = JoinSet::new();
        let t = token.clone();
        tasks.spawn(async move {
            reader.run(event_tx, t).await;
            Ok(())
        });
        let o = self.obs.clone();
        tasks.spawn(async move {
            process(event_rx, batch_tx, filter, registry, batcher, o).await;
            Ok(())
        });
        let (o, t) = (self.obs.clone(), token.clone());
        let writer_store = store.clone();
        tasks.spawn(async move {
            write(batch_rx, writer_store, o, t, retention)
                .await
                .map_err(Error::from)
        });
        let progress = spawn_progress(
            self.obs.clone(),
            cfg.log.progress_interval_seconds,
            token.clone(),
        );

        let mut result = Ok(());
        while let Some(joined) = tasks.join_next().await {
            let r = joined
                .map_err(|e| Error::Internal(e.to_string()))
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
            received = self.obs.received(),
            rows_upserted = self.obs.rows_upserted.load(Relaxed),
            rows_deleted = self.obs.rows_deleted.load(Relaxed),
            cursor = self.obs.cursor.load(Relaxed),
            "Consumer stopped."
        );
        result
    }
}

/// Built-ins, declarative, custom, then generic: the first registered
/// pattern that matches wins, exact collections before patterns.
pub fn build_registry(
    cfg: &Config,
    custom: &[(CollectionPattern, Arc<dyn Mapper>)],
) -> Result<Registry, Error> {
    let mut reg = Registry::new();
    builtin::register_all(&mut reg, &cfg.builtins()?)?;
    for d in &cfg.mappers.declarative {
        let pattern =
            CollectionPattern::parse(&d.collection).map_err(crate::config::ConfigError)?;
        let m = DeclarativeMapper::new(d).map_err(|e| crate::config::ConfigError(e.to_string()))?;
        reg.register(pattern, Arc::new(m))?;
    }
    for (p, m) in custom {
        reg.register(p.clone(), m.clone())?;
    }
    generic::register(&mut reg, &cfg.generic_patterns()?)?;
    Ok(reg)
}

/// The cursor of the first connection.
async fn start_cursor(
    store: &Store,
    endpoints: &[Endpoint],
    opts: &ConsumeOptions,
    rewind_seconds: u64,
) -> Result<Option<Cursor>, StoreError> {
    let first = &endpoints[0];
    if opts.fresh {
        for ep in endpoints {
            store.delete_cursors(&ep.key).await?;
        }
        if first.format.time_based() {
            store
                .delete_cursors(&format!("{}:", first.format.as_str()))
                .await?;
        }
    }
    if let Some(c) = opts.cursor {
        return Ok(Some(Cursor(c)));
    }
    if opts.fresh {
        return Ok(None);
    }
    let stored = if first.format == WireFormat::JetstreamV1 {
        // time_us cursors line up across v1 hosts: take the newest.
        store
            .cursors_with_prefix(&format!("{}:", first.format.as_str()))
            .await?
            .into_iter()
            .map(|(_, c)| c)
            .max()
    } else {
        store.load_cursor(&first.key).await?
    };
    Ok(stored.map(|c| first.format.rewind(c, rewind_seconds)))
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
        let Some(Item { stream, event }) = item else {
            break;
        };
        batcher.seen(&stream, event.cursor, event.time_us, Instant::now());
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
                EventKind::Sync { .. } => {
                    tracing::info!(did = %event.did, "Repo needs a full re-import; recorded.");
                    batcher.resync(&event.did);
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

/// Commits batches in order; retries transient errors, stops on fatal ones.
async fn write(
    mut rx: mpsc::Receiver<Batch>,
    store: Store,
    obs: Arc<Obs>,
    token: CancellationToken,
    retention: Duration,
) -> Result<(), StoreError> {
    let mut next_sweep = Instant::now();
    while let Some(batch) = rx.recv().await {
        let mut delay = Duration::from_millis(100);
        let (committed, took) = loop {
            let started = Instant::now();
            let result = store.commit(&batch).await;
            if let Err(e) = &result {
                obs.record_db_error(e);
            }
            match result {
                Ok(s) => break (s, started.elapsed()),
                Err(e) if e.is_transient() => {
                    obs.set_database_reachable(false);
                    tracing::warn!(error = %Escaped(&e), retry_in_ms = delay.as_millis() as u64, "Commit failed; retrying.");
                    tokio::select! {
                        // Shutting down while the database is away: the batch
                        // is not committed, so its events replay on restart.
                        _ = token.cancelled() => if rx.is_closed() || token.is_cancelled() {
                            tracing::warn!("Database unavailable at shutdown; the last batch will be replayed on restart.");
                            return Ok(());
                        },
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                }
                Err(e) => {
                    tracing::error!(error = %Escaped(&e), "Commit failed; stopping.");
                    return Err(e);
                }
            }
        };
        let cursor = batch.checkpoint.last_cursor().map(|c| c.0);
        obs.on_commit(&committed, batch.events, took, cursor, batch.last_time_us);
        if Instant::now() >= next_sweep {
            next_sweep = Instant::now() + TOMBSTONE_SWEEP;
            match store.expire_tombstones(retention).await {
                Ok(n) if n > 0 => tracing::info!(expired = n, "Expired delete tombstones."),
                Ok(_) => {}
                Err(e) if e.is_transient() => {
                    obs.record_db_error(&e);
                    tracing::warn!(error = %Escaped(&e), "Tombstone sweep failed; will retry.")
                }
                Err(e) => {
                    obs.record_db_error(&e);
                    return Err(e);
                }
            }
        }
    }
    Ok(())
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
