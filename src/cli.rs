//! The command line: global options and subcommands (clap derive).
//!
//! Owns: the subcommand names and their one-line help, and the global
//! `--config` option. The flags of each subcommand are derived on the option
//! type its command takes (`pipeline::ConsumeOptions`,
//! `import::{ImportOptions, ResumeOptions, StatusOptions}`,
//! `cmd::health::HealthOptions`), and the global flags that override config
//! keys on [`Flags`]; nothing is copied field by field. Runtime-only knobs
//! live on the command line, not in the config file.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::cmd::health::HealthOptions;
use crate::config::Flags;
use crate::import::{ImportOptions, ResumeOptions, StatusOptions};
use crate::pipeline::ConsumeOptions;

/// Keeps a SQL database in sync with the AT Protocol network.
#[derive(Debug, Parser)]
#[command(name = "parity", version, about, propagate_version = true)]
pub struct Cli {
    /// Config file (TOML). Every key can also be set as PARITY_SECTION_KEY.
    #[arg(long, global = true, env = "PARITY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub flags: Flags,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read the network stream and keep the database in sync (runs until stopped).
    Consume(ConsumeOptions),
    /// Backfill existing records from each account's PDS (listRecords).
    Import(ImportOptions),
    /// Show the state of imports: a summary and a table, or one DID's collections.
    ImportStatus(StatusOptions),
    /// Continue every interrupted or failed import (or one DID's) from its saved cursor.
    Resume(ResumeOptions),
    /// Run the database migrations and exit.
    Migrate,
    /// Check the configuration, or print the example one.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Serve the change feed (WebSocket, SSE, long-poll) on feed.addr until stopped.
    Serve,
    /// Ask a running parity's /health: exit 0 when healthy, else print why and exit 1.
    Health(HealthOptions),
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

impl Cli {
    /// The flags that override config keys: the global ones, plus
    /// `import --plc-url`.
    pub fn flags(&self) -> Flags {
        let mut flags = self.flags.clone();
        if let Command::Import(o) = &self.command {
            flags.plc_url = o.plc_url.clone();
        }
        flags
    }
}
