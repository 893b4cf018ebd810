//! `parity config example`: prints the example configuration (every key,
//! its default and a comment). Needs no configuration itself: it is what
//! you start one from, so `main` runs it before loading any.

use std::process::ExitCode;

use crate::config::Config;

/// Prints `config/parity.example.toml` (embedded at build time).
pub fn run() -> ExitCode {
    print!("{}", Config::example());
    ExitCode::SUCCESS
}
