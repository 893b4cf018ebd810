//! `parity resume [DID]`: continues every pending, failed or interrupted
//! import (or one DID's) from its saved cursor.
//!
//! Owns: nothing of its own beyond the wiring: the settings and the summary
//! line are `cmd::import`'s, the work is `import::resume`.

use std::process::ExitCode;

use super::import::{report, settings};
use crate::config::Config;
use crate::error::Error;
use crate::import::{self, ResumeOptions};

/// `parity resume [DID] [--progress] [--concurrency N]`.
pub async fn run(cfg: Config, opts: ResumeOptions) -> Result<ExitCode, Error> {
    let token = crate::shutdown::on_signals();
    let summary = import::resume(settings(cfg)?, opts, token).await?;
    Ok(report(&summary))
}
