//! `parity import`: builds the import's [`Settings`] from the configuration
//! and backfills the given DIDs and handles.
//!
//! Owns: turning the config into what `import` takes (its sections, the
//! registry, the purge policy, the listener address), printing the
//! summary line and the exit code (1 when any DID failed). Does not own
//! the import itself (`import`).

use std::process::ExitCode;
use std::time::Duration;

use crate::batch::PurgePolicy;
use crate::config::{Config, ConfigError};
use crate::error::Error;
use crate::import::{self, ImportOptions, Settings, Summary};
use crate::mapper::Registry;

/// `parity import DID|HANDLE… [--file FILE]`.
pub async fn run(cfg: Config, opts: ImportOptions) -> Result<ExitCode, Error> {
    let token = crate::shutdown::on_signals();
    let summary = import::import(settings(cfg)?, opts, token).await?;
    Ok(report(&summary))
}

/// What `import` and `resume` take from the configuration.
pub(super) fn settings(cfg: Config) -> Result<Settings, Error> {
    Ok(Settings {
        registry: Registry::from_config(&cfg.mappers, &[])?,
        purge: PurgePolicy::from_config(&cfg.accounts).map_err(ConfigError)?,
        metrics_addr: cfg.metrics.listen_addr().map_err(ConfigError)?,
        health_max_stale: Duration::from_secs(cfg.health.max_stale),
        progress_interval_seconds: cfg.log.progress_interval_seconds,
        change_log: cfg.feed.change_log(),
        import: cfg.import,
        identity: cfg.identity,
        database: cfg.database,
    })
}

/// Prints the summary line; exit 1 when it is not a success.
pub(super) fn report(summary: &Summary) -> ExitCode {
    println!("{}", summary.line());
    if summary.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
