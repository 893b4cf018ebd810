//! The `parity` binary: parse the command line, load config, start logging,
//! dispatch. No logic lives here.

use std::process::ExitCode;

use clap::Parser;
use parity::cli::{Cli, Command, ConfigCommand};
use parity::config::Config;
use parity::obs::Escaped;
use parity::ops::{check, probe};
use parity::pipeline::Consumer;
use parity::store::Store;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Config(ConfigCommand::Example) = cli.command {
        // Needs no config: it is what you start one from.
        print!("{}", Config::example());
        return ExitCode::SUCCESS;
    }
    let mut cfg = match Config::load(cli.config.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => return fail(&e, 2),
    };
    cli.apply(&mut cfg);
    if let Err(e) = cfg.validate() {
        return fail(&e, 2);
    }
    parity::obs::init_logging(&cfg.log.level, cfg.log.format == "json");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&e, 1),
    };
    let result: Result<ExitCode, parity::Error> = rt.block_on(async move {
        match cli.command {
            Command::Consume(args) => {
                let token = parity::shutdown::on_signals();
                Consumer::new(cfg).run(args.options(), token).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Import(args) => {
                let token = parity::shutdown::on_signals();
                let summary = parity::import::import(&cfg, args.options(), token).await?;
                println!("{}", summary.line());
                if !summary.is_success() {
                    return Ok(ExitCode::FAILURE);
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::Resume(args) => {
                let token = parity::shutdown::on_signals();
                let summary = parity::import::resume(
                    &cfg,
                    args.did.clone(),
                    args.progress,
                    args.concurrency,
                    token,
                )
                .await?;
                println!("{}", summary.line());
                if !summary.is_success() {
                    return Ok(ExitCode::FAILURE);
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::ImportStatus(args) => {
                let out = parity::import::import_status(
                    &cfg,
                    args.did.as_deref(),
                    args.filter(),
                    args.json,
                )
                .await?;
                print!("{out}");
                if !out.ends_with('\n') {
                    println!();
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::Migrate => {
                let store = Store::connect(&cfg.database).await?;
                store.migrate().await?;
                store.close().await;
                eprintln!("Migrations are up to date.");
                Ok(ExitCode::SUCCESS)
            }
            Command::Config(ConfigCommand::Check) => {
                print!("{}", check::effective_toml(&cfg));
                let findings = check::check_database(&cfg).await?;
                for f in &findings {
                    eprintln!("{}", Escaped(f));
                }
                let failed = findings.iter().any(|f| f.level == check::Level::Error);
                Ok(ExitCode::from(if failed { 2 } else { 0 }))
            }
            // Printed above, before loading the config.
            Command::Config(ConfigCommand::Example) => Ok(ExitCode::SUCCESS),
            Command::Health(args) => {
                let url = args.url.unwrap_or_else(|| probe::default_url(&cfg.metrics));
                match probe::probe(&url).await {
                    Ok(()) => {
                        println!("healthy");
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(why) => {
                        println!("unhealthy: {why}");
                        Ok(ExitCode::FAILURE)
                    }
                }
            }
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
