//! `parity migrate`: runs the database migrations and exits.
//!
//! Owns: the one line it prints. Does not own the migrations (`store`).

use std::process::ExitCode;

use crate::config::Config;
use crate::error::Error;
use crate::store::Store;

/// Connects (creating a SQLite file if missing), migrates, closes.
pub async fn run(cfg: &Config) -> Result<ExitCode, Error> {
    let store = Store::connect(&cfg.database).await?;
    store.migrate().await?;
    store.close().await;
    eprintln!("Migrations are up to date.");
    Ok(ExitCode::SUCCESS)
}
