//! `parity serve`: the change feed server on `feed.addr` (WebSocket `/feed`,
//! `/feed/sse`, `/feed/poll`), reading the change log the committing
//! process writes, until stopped.
//!
//! Owns: turning the config into the feed's parts and the one line it
//! prints. Does not own the feed (`feed`).

use std::process::ExitCode;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::config::{Config, ConfigError};
use crate::error::Error;
use crate::feed;
use crate::store::Store;

pub async fn run(cfg: Config) -> Result<ExitCode, Error> {
    let Some(addr) = cfg.feed.listen_addr().map_err(config_error)? else {
        return Err(config_error(
            "feed.addr is off: set it (e.g. 127.0.0.1:9465) for parity serve".into(),
        ));
    };
    let store = Store::connect(&cfg.database).await?;
    store.migrate().await?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| config_error(format!("feed.addr {addr}: cannot listen ({e})")))?;
    let bound = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    eprintln!("Serving the change feed on http://{bound}/feed (WebSocket), /feed/sse, /feed/poll");
    let token = crate::shutdown::on_signals();
    let result = feed::run(
        store.clone(),
        cfg.feed.clone(),
        listener,
        Arc::new(Notify::new()),
        token,
    )
    .await;
    store.close().await;
    result?;
    Ok(ExitCode::SUCCESS)
}

fn config_error(msg: String) -> Error {
    Error::Config(ConfigError(msg))
}
