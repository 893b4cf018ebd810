//! The per-run choices of `parity import`, `parity resume` and `parity
//! import-status`, as given on the command line (clap derives their flags
//! and help text here; `cli` only names the subcommands).
//!
//! Owns: flag names, help text and the status filter a set of flags means.
//! Does not own anything read from the config file (`ImportConfig`,
//! `IdentityConfig`).

use std::path::PathBuf;

use crate::store::StatusFilter;

/// `parity import` arguments.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ImportOptions {
    /// DIDs (did:plc:…, did:web:…) and handles to import.
    #[arg(value_name = "DID|HANDLE")]
    pub targets: Vec<String>,
    /// Read more DIDs or handles from FILE, one per line (# comments).
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Every active repository the relay lists (listReposByCollection with
    /// --collection, listRepos otherwise); run again to resume.
    #[arg(long, conflicts_with_all = ["targets", "file"])]
    pub all: bool,
    /// The relay --all lists repositories from [default: import.relay,
    /// https://bsky.network].
    #[arg(long, value_name = "URL", requires = "all")]
    pub relay: Option<String>,
    /// Only this collection (repeatable); default: every collection with a mapper.
    #[arg(long = "collection", value_name = "NSID")]
    pub collections: Vec<String>,
    /// Progress bars on a terminal, periodic log lines otherwise.
    #[arg(long)]
    pub progress: bool,
    /// DIDs fetched in parallel [default: import.concurrency].
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Import collections again even if already completed.
    #[arg(long)]
    pub force: bool,
    /// How records are fetched [default: import.method, auto].
    #[arg(long, value_enum, value_name = "METHOD")]
    pub method: Option<super::config::ImportMethod>,
    // Applied to `identity.plc_url` with the other flags (`config::Flags`).
    /// PLC directory URL [env: PARITY_PLC_URL] [default: https://plc.directory].
    #[arg(long, value_name = "URL")]
    pub plc_url: Option<String>,
}

/// `parity resume` arguments.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ResumeOptions {
    /// Only this DID.
    #[arg(value_name = "DID")]
    pub did: Option<String>,
    /// Progress bars on a terminal, periodic log lines otherwise.
    #[arg(long)]
    pub progress: bool,
    /// DIDs fetched in parallel [default: import.concurrency].
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
}

/// `parity import-status` arguments.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StatusOptions {
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

impl StatusOptions {
    /// Which rows the flags ask for (they are mutually exclusive).
    pub fn filter(&self) -> StatusFilter {
        match (self.pending, self.failed, self.completed) {
            (true, _, _) => StatusFilter::Pending,
            (_, true, _) => StatusFilter::Failed,
            (_, _, true) => StatusFilter::Completed,
            _ => StatusFilter::All,
        }
    }
}
