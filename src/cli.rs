//! The command line: global options and subcommands (clap derive).
//!
//! Owns: flag names and help text, and applying flags on top of the loaded
//! config (flags win over file and environment). Runtime-only knobs live
//! here, not in the config file.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::pipeline::ConsumeOptions;

/// Keeps a SQL database in sync with the AT Protocol network.
#[derive(Debug, Parser)]
#[command(name = "parity", version, about, propagate_version = true)]
pub struct Cli {
    /// Config file (TOML). Every key can also be set as PARITY_SECTION_KEY.
    #[arg(long, global = true, env = "PARITY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Database URL: sqlite://FILE (created if missing) or postgres://USER@HOST/DB.
    /// [env: PARITY_DATABASE_URL] [default: sqlite://parity.db]
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Log filter, e.g. info or parity=debug [env: PARITY_LOG_LEVEL].
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log format: text or json [env: PARITY_LOG_FORMAT].
    #[arg(long, global = true, value_name = "FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    /// Where /metrics, /health and /ready listen: IP:PORT, or off
    /// [env: PARITY_METRICS_ADDR] [default: 127.0.0.1:9464].
    #[arg(long, global = true, value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read the network stream and keep the database in sync (runs until stopped).
    Consume(ConsumeArgs),
    /// Backfill existing records from each account's PDS (listRecords).
    Import(ImportArgs),
    /// Show the state of imports: a summary and a table, or one DID's collections.
    ImportStatus(ImportStatusArgs),
    /// Continue every interrupted or failed import (or one DID's) from its saved cursor.
    Resume(ResumeArgs),
    /// Run the database migrations and exit.
    Migrate,
    /// Check the configuration, or print the example one.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Ask a running parity's /health: exit 0 when healthy, else print why and exit 1.
    Health(HealthArgs),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration (file, then PARITY_* variables, then flags)
    /// and the mapper tables against the database, read-only; print the
    /// effective configuration as TOML with passwords masked.
    Check,
    /// Print the example configuration: every key, its default and a comment.
    Example,
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The health URL [default: http://127.0.0.1:PORT/health, PORT from metrics.addr, else 9464].
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// DIDs (did:plc:…, did:web:…) and handles to import.
    #[arg(value_name = "DID|HANDLE")]
    pub targets: Vec<String>,
    /// Read more DIDs or handles from FILE, one per line (# comments).
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Only this collection (repeatable); default: every collection with a mapper.
    #[arg(long = "collection", value_name = "NSID")]
    pub collections: Vec<String>,
    /// Progress bars on a terminal, periodic log lines otherwise.
    #[arg(long)]
    pub progress: bool,
    /// DIDs imported in parallel [default: import.concurrency].
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Import collections again even if already completed.
    #[arg(long)]
    pub force: bool,
    /// PLC directory URL [env: PARITY_PLC_URL] [default: https://plc.directory].
    #[arg(long, value_name = "URL")]
    pub plc_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct ImportStatusArgs {
    /// Show every collection of this DID.
    #[arg(value_name = "DID")]
    pub did: Option<String>,
    /// Only imports not completed (pending, in progress, failed).
    #[arg(long, group = "which")]
    pub pending: bool,
    /// Only failed imports.
    #[arg(long, group = "which")]
    pub failed: bool,
    /// Only completed imports.
    #[arg(long, group = "which")]
    pub completed: bool,
    /// Machine-readable rows (every column) instead of the table.
    #[arg(long)]
    pub json: bool,
}

impl ImportStatusArgs {
    pub fn filter(&self) -> crate::store::StatusFilter {
        use crate::store::StatusFilter;
        match (self.pending, self.failed, self.completed) {
            (true, _, _) => StatusFilter::Pending,
            (_, true, _) => StatusFilter::Failed,
            (_, _, true) => StatusFilter::Completed,
            _ => StatusFilter::All,
        }
    }
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// Only this DID.
    #[arg(value_name = "DID")]
    pub did: Option<String>,
    /// Progress bars on a terminal, periodic log lines otherwise.
    #[arg(long)]
    pub progress: bool,
    /// DIDs imported in parallel [default: import.concurrency].
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
}

impl ImportArgs {
    pub fn options(&self) -> crate::import::ImportOptions {
        crate::import::ImportOptions {
            targets: self.targets.clone(),
            file: self.file.clone(),
            collections: self.collections.clone(),
            progress: self.progress,
            concurrency: self.concurrency,
            force: self.force,
        }
    }
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
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

impl ConsumeArgs {
    pub fn options(&self) -> ConsumeOptions {
        ConsumeOptions {
            endpoints: self.endpoints.clone(),
            cursor: self.cursor,
            fresh: self.fresh,
            collections: self.collections.clone(),
        }
    }
}

impl Cli {
    /// Applies the global flags to a loaded config.
    pub fn apply(&self, cfg: &mut Config) {
        if let Some(u) = &self.database_url {
            cfg.database.url = u.clone();
        }
        if let Some(l) = &self.log_level {
            cfg.log.level = l.clone();
        }
        if let Some(f) = &self.log_format {
            cfg.log.format = f.clone();
        }
        if let Command::Import(a) = &self.command
            && let Some(u) = &a.plc_url
        {
            cfg.identity.plc_url = u.clone();
        }
        if let Some(a) = &self.metrics_addr {
            cfg.metrics.addr = a.clone();
        }
    }
}
