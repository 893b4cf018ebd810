//! The `parity` binary: parse the command line, resolve the configuration,
//! start logging, dispatch to the command in `cmd/`, and map the result to
//! an exit code. No command logic lives here.

use std::process::ExitCode;

use clap::Parser;
use parity::cli::{Cli, Command, ConfigCommand};
use parity::cmd;
use parity::config::Config;
use parity::obs::Escaped;

/// mimalloc, not glibc's malloc: see its entry in Cargo.toml.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Config(ConfigCommand::Example) = cli.command {
        // Needs no config: it is what you start one from.
        return cmd::config_example::run();
    }
    let cfg = match Config::resolve(cli.config.as_deref(), std::env::vars(), &cli.flags()) {
        Ok(c) => c,
        Err(e) => return fail(&e, 2),
    };
    parity::obs::init_logging(&cfg.log.level, cfg.log.format == "json");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&e, 1),
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Consume(opts) => cmd::consume::run(cfg, opts).await,
            Command::Import(opts) => cmd::import::run(cfg, opts).await,
            Command::Resume(opts) => cmd::resume::run(cfg, opts).await,
            Command::ImportStatus(opts) => cmd::import_status::run(&cfg, opts).await,
            Command::Migrate => cmd::migrate::run(&cfg).await,
            Command::Auth(c) => cmd::auth::run(&cfg, c).await,
            Command::Publish(o) => cmd::publish::run(cfg, o).await,
            Command::Outbox(c) => cmd::outbox::run(&cfg, c).await,
            Command::Serve => cmd::serve::run(cfg).await,
            Command::Config(ConfigCommand::Check) => cmd::config_check::run(&cfg).await,
            // Run above, before loading the config.
            Command::Config(ConfigCommand::Example) => Ok(ExitCode::SUCCESS),
            Command::Health(opts) => Ok(cmd::health::run(&cfg, opts).await),
        }
    });
    match result {
        Ok(code) => code,
        Err(e @ parity::Error::Config(_)) => fail(&e, 2),
        Err(e) => fail(&e, 1),
    }
}

/// One line on stderr, with any text that came from outside escaped.
fn fail(e: &dyn std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("error: {}", Escaped(e));
    ExitCode::from(code)
}
