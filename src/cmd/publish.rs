//! `parity publish`: drains the outbox until SIGINT/SIGTERM (calls in
//! flight finish, leases are released). Also builds the worker that
//! `parity consume` runs when `[publish] enabled = true`.

use std::process::ExitCode;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::batch::PurgePolicy;
use crate::config::{Config, ConfigError};
use crate::error::Error;
use crate::mapper::Registry;
use crate::obs::Obs;
use crate::publish::session::Sessions;
use crate::publish::worker::Worker;
use crate::store::Store;

/// `parity publish` arguments.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PublishOptions {}

/// A worker over its own store connection (migrated, mapper tables
/// prepared), with this process's unique lease owner.
pub async fn worker(
    cfg: &Config,
    registry: Arc<Registry>,
    obs: Option<(Arc<Obs>, bool)>,
) -> Result<Worker, Error> {
    let sealer = super::auth::sealer(cfg, false)?;
    let client = super::auth::client(cfg)?;
    let mut store = Store::connect(&cfg.database).await?;
    store.migrate().await?;
    let purge = PurgePolicy::from_config(&cfg.accounts).map_err(ConfigError)?;
    store.prepare(registry.tables(), &purge.statuses).await?;
    // Write-backs append to the change log like any other commit.
    store.set_change_log(cfg.feed.change_log());
    let owner = format!(
        "{}-{}-{:08x}",
        hostname(),
        std::process::id(),
        rand::random::<u32>()
    );
    Ok(Worker {
        sessions: Sessions::new(store.clone(), sealer, client.clone(), owner.clone()),
        store,
        registry,
        client,
        cfg: cfg.publish.clone(),
        owner,
        owns_progress: obs.as_ref().is_some_and(|(_, own)| *own),
        obs: obs.map(|(o, _)| o),
        max_outbox_age: std::time::Duration::from_secs(cfg.health.max_outbox_age),
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| {
            h.trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .take(32)
                .collect()
        })
        .unwrap_or_else(|_| "host".into())
}

/// Runs the worker until `token` is cancelled.
/// Runs the worker until `token` is cancelled. `obs`: the health the
/// worker reports to, and whether the worker owns its progress.
pub async fn run_until(
    cfg: &Config,
    registry: Arc<Registry>,
    obs: Option<(Arc<Obs>, bool)>,
    token: CancellationToken,
) -> Result<(), Error> {
    let w = worker(cfg, registry, obs).await?;
    let store = w.store.clone();
    let r = w.run(token).await;
    store.close().await;
    r.map_err(|e| Error::Publish(e.to_string()))
}

pub async fn run(cfg: Config, _opts: PublishOptions) -> Result<ExitCode, Error> {
    let token = crate::shutdown::on_signals();
    let registry = Arc::new(Registry::from_config(&cfg.mappers, &[])?);
    // /metrics and /health like the other commands (metrics.addr).
    let addr = cfg.metrics.listen_addr().map_err(ConfigError)?;
    if addr.is_some() {
        crate::obs::install();
    }
    let obs = Arc::new(Obs::new(std::time::Duration::from_secs(
        cfg.health.max_stale,
    )));
    let server = match addr {
        Some(a) => Some(
            crate::obs::serve(a, obs.clone(), token.clone())
                .await
                .map_err(Error::Serve)?,
        ),
        None => None,
    };
    obs.mark_ready();
    let result = run_until(&cfg, registry, Some((obs, true)), token.clone()).await;
    token.cancel();
    if let Some(s) = server {
        s.close().await;
    }
    result?;
    Ok(ExitCode::SUCCESS)
}
