//! Configuration: the whole [`Config`], composed of each stage's own
//! section, layered file → `PARITY_*` environment → command-line flags once
//! ([`Config::resolve`]) and validated once.
//!
//! Owns: the composition (which section sits under which key), the layer
//! order, the flags that override keys ([`Flags`]), and `validate()`, which
//! calls each section's own checks. Does not own the meaning of any key:
//! that lives with the stage that uses it (`FilterConfig` in `filter`,
//! `MappersConfig` in `mapper`, `BatchConfig` and `AccountsConfig` in
//! `batch`, `DatabaseConfig` in `store`, `SourceConfig` in `source`, …).
//! The environment rule lives in [`env`]. Unknown keys in the file and
//! unknown `PARITY_*` variables are errors that name them.
//!
//! Only `cmd/` and `main` see the whole `Config`; components take their own
//! section.

mod env;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::batch::{AccountsConfig, BatchConfig, PurgePolicy};
use crate::feed::FeedConfig;
use crate::filter::FilterConfig;
use crate::import::{IdentityConfig, ImportConfig};
use crate::mapper::MappersConfig;
use crate::obs::{HealthConfig, LogConfig, MetricsConfig};
use crate::source::SourceConfig;
use crate::store::DatabaseConfig;

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub source: SourceConfig,
    #[serde(default)]
    pub filter: FilterConfig,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub mappers: MappersConfig,
    #[serde(default)]
    pub accounts: AccountsConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub import: ImportConfig,
    #[serde(default)]
    pub identity: IdentityConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub feed: FeedConfig,
}

/// Values given on the command line; each replaces its key after the file
/// and the environment. The global ones are clap arguments of every
/// subcommand (flattened into `cli::Cli`).
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct Flags {
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
    /// `identity.plc_url`, from `parity import --plc-url` (not a global flag).
    #[arg(skip)]
    pub plc_url: Option<String>,
}

/// A configuration mistake; the message says what to fix, on one line.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

fn one_line(e: &toml::de::Error, source: &str, text: Option<&str>) -> ConfigError {
    let msg = e.message().replace('\n', " ");
    match (e.span(), text) {
        (Some(span), Some(text)) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            err(format!("{source} line {line}: {msg}"))
        }
        _ => err(format!("{source}: {msg}")),
    }
}

impl Config {
    /// The configuration of one run: the file (if any), then `PARITY_*`
    /// variables from `env`, then `flags`; validated.
    pub fn resolve(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &Flags,
    ) -> Result<Config, ConfigError> {
        let mut cfg = Config::load(path, env)?;
        cfg.apply(flags);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Loads the file (if any), then applies `PARITY_*` variables from
    /// `env`. Neither flags nor validation: see [`Config::resolve`].
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (mut table, text, source) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| err(format!("cannot read config file {}: {e}", p.display())))?;
                let table: toml::Table = toml::from_str(&text)
                    .map_err(|e| one_line(&e, &p.display().to_string(), Some(&text)))?;
                (table, Some(text), p.display().to_string())
            }
            None => (toml::Table::new(), None, "config".to_owned()),
        };
        // Validate the file alone first, so errors point at file lines.
        if let Some(text) = &text {
            toml::from_str::<Config>(text).map_err(|e| one_line(&e, &source, Some(text)))?;
        }
        env::apply(&mut table, env)?;
        toml::Value::Table(table)
            .try_into::<Config>()
            .map_err(|e| one_line(&e, "environment", None))
    }

    /// Applies command-line values (flags win over file and environment).
    pub fn apply(&mut self, flags: &Flags) {
        if let Some(u) = &flags.database_url {
            self.database.url = u.clone();
        }
        if let Some(l) = &flags.log_level {
            self.log.level = l.clone();
        }
        if let Some(f) = &flags.log_format {
            self.log.format = f.clone();
        }
        if let Some(u) = &flags.plc_url {
            self.identity.plc_url = u.clone();
        }
        if let Some(a) = &flags.metrics_addr {
            self.metrics.addr = a.clone();
        }
    }

    /// Checks every value that can be checked without the network or the
    /// database, section by section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.source.validate().map_err(err)?;
        self.database.validate().map_err(err)?;
        self.filter.collection_patterns().map_err(err)?;
        self.filter.operations().map_err(err)?;
        PurgePolicy::from_config(&self.accounts).map_err(err)?;
        self.mappers.validate().map_err(err)?;
        self.filter.validate().map_err(err)?;
        self.import.validate().map_err(err)?;
        self.identity.validate().map_err(err)?;
        if self.batch.max_events == 0 {
            return Err(err("batch.max_events must be at least 1"));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(err(format!(
                "log.format is {:?}; use text or json",
                self.log.format
            )));
        }
        self.metrics.listen_addr().map_err(err)?;
        self.health.validate().map_err(err)?;
        self.feed.validate().map_err(err)?;
        tracing_subscriber::EnvFilter::try_new(&self.log.level).map_err(|e| {
            err(format!(
                "log.level {:?} is not a valid filter: {e}",
                self.log.level
            ))
        })?;
        Ok(())
    }

    /// The example file shipped with parity.
    pub fn example() -> &'static str {
        include_str!("../config/parity.example.toml")
    }

    /// Every `PARITY_*` variable name that sets a config key.
    /// (Short aliases such as `PARITY_PLC_URL` included.)
    pub fn env_names() -> Vec<String> {
        env::names()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn example_file_parses_to_the_defaults() {
        let cfg: Config = toml::from_str(Config::example()).expect("example parses");
        cfg.validate().unwrap();
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn env_names_are_unique_and_cover_database_url() {
        let names = Config::env_names();
        assert!(names.contains(&"PARITY_DATABASE_URL".to_owned()));
        assert!(names.contains(&"PARITY_BATCH_MAX_EVENTS".to_owned()));
        assert!(names.contains(&"PARITY_FILTER_DIDS_FILE".to_owned()));
        assert!(names.contains(&"PARITY_PLC_URL".to_owned()));
        let set: HashSet<&String> = names.iter().collect();
        assert_eq!(set.len(), names.len());
    }

    #[test]
    fn plc_url_has_a_short_env_name() {
        let c = Config::load(None, env(&[("PARITY_PLC_URL", "http://127.0.0.1:2582")])).unwrap();
        assert_eq!(c.identity.plc_url, "http://127.0.0.1:2582");
    }

    #[test]
    fn env_overrides_file_with_typed_values() {
        let cfg = Config::load(
            None,
            env(&[
                ("PARITY_DATABASE_URL", "postgres://x@h/db"),
                ("PARITY_BATCH_MAX_EVENTS", "42"),
                (
                    "PARITY_FILTER_COLLECTIONS",
                    "app.bsky.feed.post, app.bsky.graph.*",
                ),
                (
                    "PARITY_SOURCE_ENDPOINTS",
                    r#"["ws://127.0.0.1:1/subscribe"]"#,
                ),
                ("HOME", "/root"),
                ("PARITY_CONFIG", "ignored.toml"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.database.url, "postgres://x@h/db");
        assert_eq!(cfg.batch.max_events, 42);
        assert_eq!(
            cfg.filter.collections,
            vec!["app.bsky.feed.post", "app.bsky.graph.*"]
        );
        assert_eq!(cfg.source.endpoints, vec!["ws://127.0.0.1:1/subscribe"]);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = Config::load(None, env(&[("PARITY_DATABSE_URL", "x")])).unwrap_err();
        assert!(e.0.contains("PARITY_DATABSE_URL"), "{e}");
        let e = Config::load(None, env(&[("PARITY_BATCH_MAX_EVENTS", "lots")])).unwrap_err();
        assert!(
            e.0.contains("PARITY_BATCH_MAX_EVENTS") && e.0.contains("integer"),
            "{e}"
        );

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[batch]\nmax_events = 10\nmax_evnts = 3\n").unwrap();
        let e = Config::load(Some(&p), env(&[])).unwrap_err();
        assert!(e.0.contains("max_evnts") && e.0.contains("line 3"), "{e}");
        assert!(!e.0.contains('\n'));
        std::fs::write(&p, "[sauce]\nx = 1\n").unwrap();
        let e = Config::load(Some(&p), env(&[])).unwrap_err();
        assert!(e.0.contains("sauce"), "{e}");
    }

    #[test]
    fn validation_names_the_bad_value() {
        let mut c = Config::default();
        c.filter.collections = vec!["app.bsky.graph.fo*".into()];
        assert!(c.validate().unwrap_err().0.contains("fo*"));
        let mut c = Config::default();
        c.accounts.purge_on = vec!["banned".into()];
        assert!(c.validate().unwrap_err().0.contains("banned"));
        let mut c = Config::default();
        c.mappers.builtin = vec!["tweets".into()];
        assert!(c.validate().unwrap_err().0.contains("tweets"));
        let mut c = Config::default();
        c.filter.dids = vec!["*".into()];
        assert!(c.validate().unwrap_err().0.contains("not a DID"));
        let mut c = Config::default();
        c.source.endpoints = vec!["http://example.com/subscribe".into()];
        assert!(c.validate().unwrap_err().0.contains("http://example.com"));
    }

    #[test]
    fn resolve_layers_file_then_env_then_flags_and_validates() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[database]\nurl = \"sqlite://file.db\"\n[log]\nlevel = \"debug\"\nformat = \"json\"\n",
        )
        .unwrap();
        let flags = Flags {
            database_url: Some("sqlite://flag.db".into()),
            plc_url: Some("http://127.0.0.1:1".into()),
            ..Flags::default()
        };
        let c = Config::resolve(
            Some(&p),
            env(&[
                ("PARITY_DATABASE_URL", "sqlite://env.db"),
                ("PARITY_LOG_LEVEL", "warn"),
            ]),
            &flags,
        )
        .unwrap();
        assert_eq!(c.database.url, "sqlite://flag.db");
        assert_eq!(c.log.level, "warn");
        assert_eq!(c.log.format, "json");
        assert_eq!(c.identity.plc_url, "http://127.0.0.1:1");
        let bad = Flags {
            metrics_addr: Some("nowhere".into()),
            ..Flags::default()
        };
        let e = Config::resolve(None, env(&[]), &bad).unwrap_err();
        assert!(e.0.contains("metrics.addr"), "{e}");
    }
}
