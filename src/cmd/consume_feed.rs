//! The change feed inside `parity consume`: with `[feed] enabled`, the feed
//! server on `feed.addr` (unless `off`) and, with `feed.broker`, the relay
//! that publishes the log after commit, both on the pipeline's own store,
//! so a one-process set-up needs no `parity serve`.
//!
//! Owns: binding the listener before the pipeline starts (a taken port is a
//! configuration error at start-up, not a surprise later), starting the
//! server and relay once the store is migrated, and how they ended. A feed
//! task that fails stops the whole process, like any other part of it.

use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::ConfigError;
use crate::error::Error;
use crate::feed::{self, FeedConfig, FeedRunError};
use crate::store::Store;

type Task = JoinHandle<Result<(), FeedRunError>>;

/// The feed's parts of one consume run, before and after they start.
pub struct FeedSide {
    cfg: FeedConfig,
    listener: Option<TcpListener>,
    tasks: Arc<Mutex<Vec<Task>>>,
}

impl FeedSide {
    /// `None` when the feed is off, or on with neither a server nor a
    /// broker (the log is still written; `parity serve` reads it).
    pub async fn bind(cfg: &FeedConfig) -> Result<Option<FeedSide>, Error> {
        if !cfg.enabled {
            return Ok(None);
        }
        let listener = match cfg.listen_addr().map_err(ConfigError)? {
            None => None,
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
                ConfigError(format!(
                    "feed.addr {addr}: cannot listen ({e}); choose a free port or set it to off"
                ))
            })?),
        };
        if listener.is_none() && cfg.broker.is_empty() {
            return Ok(None);
        }
        if let Some(l) = &listener {
            let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
            tracing::info!(addr = %addr, "Serving the change feed.");
        }
        Ok(Some(FeedSide {
            cfg: cfg.clone(),
            listener,
            tasks: Arc::new(Mutex::new(Vec::new())),
        }))
    }

    /// What the pipeline calls with its store once it is ready: starts the
    /// server and the relay, each woken by `wake` (one per task) or its poll
    /// interval. A failed task cancels `token`, stopping the run.
    pub fn starter(
        &mut self,
        wakes: [Arc<Notify>; 2],
        token: CancellationToken,
    ) -> Box<dyn FnOnce(Store) + Send> {
        let cfg = self.cfg.clone();
        let listener = self.listener.take();
        let tasks = self.tasks.clone();
        let [serve_wake, relay_wake] = wakes;
        Box::new(move |store: Store| {
            let mut started = Vec::new();
            if let Some(listener) = listener {
                let run = feed::run(
                    store.clone(),
                    cfg.clone(),
                    listener,
                    serve_wake,
                    token.clone(),
                );
                started.push(tokio::spawn(stop_on_error(run, token.clone())));
            }
            if !cfg.broker.is_empty() {
                let run = feed::relay(store, cfg, relay_wake, token.clone());
                started.push(tokio::spawn(stop_on_error(run, token.clone())));
            }
            tasks.lock().expect("feed task list").extend(started);
        })
    }

    /// Waits for the started tasks (the run's token is cancelled by then);
    /// the first failure is the run's error.
    pub async fn finish(self) -> Result<(), Error> {
        let tasks = std::mem::take(&mut *self.tasks.lock().expect("feed task list"));
        let mut first = Ok(());
        for t in tasks {
            let r = match t.await {
                Ok(r) => r.map_err(Error::from),
                Err(e) => Err(Error::Internal(format!("change feed task: {e}"))),
            };
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

async fn stop_on_error(
    run: impl Future<Output = Result<(), FeedRunError>>,
    token: CancellationToken,
) -> Result<(), FeedRunError> {
    let r = run.await;
    if let Err(e) = &r {
        tracing::error!(error = %e, "The change feed stopped; stopping.");
        token.cancel();
    }
    r
}
