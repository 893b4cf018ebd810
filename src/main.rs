//! The `parity` binary: parse the command line, load config, start logging,
//! dispatch. No logic lives here.

use std::process::ExitCode;

use clap::Parser;
use parity::cli::{Cli, Command};
use parity::config::Config;
use parity::pipeline::Consumer;
use parity::store::Store;
use parity::telemetry::Escaped;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut cfg = match Config::load(cli.config.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => return fail(&e, 2),
    };
    cli.apply(&mut cfg);
    if let Err(e) = cfg.validate() {
        return fail(&e, 2);
    }
    parity::telemetry::init_logging(&cfg.log.level, cfg.log.format == "json");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&e, 1),
    };
    let result: Result<(), parity::Error> = rt.block_on(async move {
        match cli.command {
            Command::Consume(args) => {
                let token = parity::shutdown::on_signals();
                Consumer::new(cfg).run(args.options(), token).await
            }
            Command::Migrate => {
                let store = Store::connect(&cfg.database).await?;
                store.migrate().await?;
                store.close().await;
                eprintln!("Migrations are up to date.");
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ parity::Error::Config(_)) => fail(&e, 2),
        Err(e) => fail(&e, 1),
    }
}

/// One line on stderr, with any text that came from outside escaped.
fn fail(e: &dyn std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("error: {}", Escaped(e));
    ExitCode::from(code)
}
