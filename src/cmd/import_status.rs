//! `parity import-status [DID]`: prints the state of imports, as a summary
//! and a table or as JSON lines.
//!
//! Owns: printing the report with exactly one trailing newline. Does not
//! own the report (`import::status`).

use std::process::ExitCode;

use crate::config::Config;
use crate::error::Error;
use crate::import::{self, StatusOptions};

/// `parity import-status [DID] [--pending|--failed|--completed] [--json]`.
pub async fn run(cfg: &Config, opts: StatusOptions) -> Result<ExitCode, Error> {
    let out =
        import::import_status(&cfg.database, opts.did.as_deref(), opts.filter(), opts.json).await?;
    print!("{out}");
    if !out.ends_with('\n') {
        println!();
    }
    Ok(ExitCode::SUCCESS)
}
