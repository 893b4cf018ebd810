//! The change feed: every row change parity commits, as a log in the
//! database (`parity_changes`) and as a live stream to browsers and
//! services over WebSocket, Server-Sent Events and long-poll.
//!
//! Owns: channels and access, the in-process hub and the task that feeds it
//! from the log, each client's replay-then-live stream, the HTTP server and
//! its transports, and the retention sweep. Does not own appending to the
//! log: that happens in each commit's transaction (`store`).
//!
//! # Layout
//! - `config.rs`: the `[feed]` section;
//! - `channel.rs`: channel names and matching, token patterns;
//! - `change.rs`: a change and the JSON message it becomes;
//! - `access.rs`: bearer tokens (stored as SHA-256) and public channels;
//! - `hub.rs`: the live broadcast and the log tail feeding it;
//! - `broker/`: NATS JetStream, Redis and RabbitMQ: the relay that
//!   publishes the log after commit, and serve nodes following it;
//! - `session.rs`: subscriptions, cursor checks, log replay pages, errors;
//! - `feeder.rs`: one client's ordered stream (replay, hand-over, live);
//! - `server.rs`: router, state, limits, CORS, demo page;
//! - `ws.rs`, `sse.rs`, `poll.rs`: the three transports.

pub mod access;
pub mod broker;
pub mod change;
pub mod channel;
pub mod config;
mod feeder;
pub mod hub;
#[cfg(test)]
mod hub_tests;
mod poll;
pub mod server;
pub mod session;
mod sse;
mod ws;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use config::FeedConfig;
use hub::Hub;
use server::FeedState;

use crate::store::{Store, StoreError};

/// How often the retention sweep runs.
const SWEEP_EVERY: Duration = Duration::from_secs(300);

/// Why the feed stopped.
#[derive(Debug, thiserror::Error)]
pub enum FeedRunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("feed server: {0}")]
    Io(#[from] std::io::Error),
    #[error("feed configuration: {0}")]
    Config(String),
}

/// Serves the feed on `listener` until `token` is cancelled: the log tail
/// (woken by `wake`, or every `feed.poll_interval_ms`), the retention sweep
/// and the HTTP server.
pub async fn run(
    store: Store,
    cfg: FeedConfig,
    listener: TcpListener,
    wake: Arc<Notify>,
    token: CancellationToken,
) -> Result<(), FeedRunError> {
    let retention = cfg.retention().map_err(FeedRunError::Config)?;
    // With a broker, subscribe before reading where the log ends: a change
    // committed after that read is then on the subscription.
    let follow = match cfg.broker.as_str() {
        "" => None,
        url => {
            let broker = broker::Broker::connect(url, &cfg)
                .await
                .map_err(|e| FeedRunError::Config(e.to_string()))?;
            let messages = broker
                .subscribe()
                .await
                .map_err(|e| FeedRunError::Config(e.to_string()))?;
            Some((broker.kind(), messages))
        }
    };
    let latest = store.change_bounds().await?.latest;
    let hub = Hub::new(cfg.client_buffer, latest);
    let interval = Duration::from_millis(cfg.poll_interval_ms);
    let tail = match follow {
        None => tokio::spawn(hub::tail(
            store.clone(),
            hub.clone(),
            wake,
            interval,
            token.clone(),
        )),
        Some((kind, messages)) => tokio::spawn(broker::follow(
            messages,
            kind,
            store.feed_state().await?.0,
            store.clone(),
            hub.clone(),
            interval * 5,
            token.clone(),
        )),
    };
    let sweep = tokio::spawn(sweep_loop(store.clone(), retention, token.clone()));
    let state = FeedState::new(store, hub, cfg, token.clone());
    let served = server::serve(listener, state).await;
    token.cancel();
    let tailed = tail.await.unwrap_or(Ok(()));
    let swept = sweep.await.unwrap_or(Ok(()));
    served?;
    tailed?;
    swept?;
    Ok(())
}

/// Publishes the change log to `feed.broker` after commit, from the seq
/// last handed over, until `token` is cancelled: the relay the committing
/// process runs (`parity consume`). Woken by `wake` or every
/// `feed.poll_interval_ms`.
pub async fn relay(
    store: Store,
    cfg: FeedConfig,
    wake: Arc<Notify>,
    token: CancellationToken,
) -> Result<(), FeedRunError> {
    let broker = broker::Broker::connect(&cfg.broker, &cfg)
        .await
        .map_err(|e| FeedRunError::Config(e.to_string()))?;
    tracing::info!(
        broker = broker.kind(),
        "Relaying the change log to the broker."
    );
    let interval = Duration::from_millis(cfg.poll_interval_ms);
    broker::relay(store, Arc::new(broker), wake, interval, token).await?;
    Ok(())
}

/// Removes changes older than `retention`, now and every few minutes.
async fn sweep_loop(
    store: Store,
    retention: Duration,
    token: CancellationToken,
) -> Result<(), StoreError> {
    loop {
        let n = store.sweep_changes(retention).await?;
        if n > 0 {
            tracing::debug!(removed = n, "change log swept");
        }
        tokio::select! {
            _ = token.cancelled() => return Ok(()),
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
        }
    }
}
