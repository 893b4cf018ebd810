//! Configuration: the TOML file, then `PARITY_*` environment variables, then
//! command-line flags, composed from each stage's own config type.
//!
//! Owns: loading and layering, the env-variable naming rule, reading DID
//! list files, and `validate()`. Does not own the meaning of each key: that
//! lives with the stage that uses it (`BatchConfig` in `batch`,
//! `DatabaseConfig` in `store`, …).
//!
//! Env rule: every key `section.key` can be set as `PARITY_SECTION_KEY`
//! (upper case, dots to underscores). The value is read as a TOML value when
//! it parses as one of the key's type (`5000`, `true`, `["a","b"]`), and as
//! a plain string otherwise; a list of strings may also be given
//! comma-separated. Unknown keys in the file and unknown `PARITY_*`
//! variables are errors that name them.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::batch::BatchConfig;
use crate::event::{AccountStatus, CommitOp, Did};
use crate::filter::CollectionPattern;
use crate::import::{IdentityConfig, ImportConfig};
use crate::mapper::builtin::Builtin;
use crate::mapper::declarative::{DeclarativeConfig, DeclarativeMapper};
use crate::obs::{HealthConfig, LogConfig, MetricsConfig};
use crate::source::SourceConfig;
use crate::store::DatabaseConfig;

/// Environment variables parity reads that are not config keys.
const EXTRA_ENV: &[&str] = &["PARITY_CONFIG"];

/// Short names for keys operators set often: `(alias, canonical)`.
const ENV_ALIASES: &[(&str, &str)] = &[("PARITY_PLC_URL", "PARITY_IDENTITY_PLC_URL")];

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
}

/// Which events reach the mappers.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Collections to keep (`app.bsky.feed.post`, `app.bsky.*`, `*`).
    /// Empty: every collection that has a mapper.
    #[serde(default)]
    pub collections: Vec<String>,
    /// Only these DIDs (empty: every DID).
    #[serde(default)]
    pub dids: Vec<String>,
    /// File with more allowed DIDs, one per line, `#` comments.
    #[serde(default)]
    pub dids_file: String,
    /// Never these DIDs.
    #[serde(default)]
    pub exclude_dids: Vec<String>,
    /// File with more excluded DIDs.
    #[serde(default)]
    pub exclude_dids_file: String,
    /// Commit operations to apply.
    #[serde(default = "default_operations")]
    pub operations: Vec<String>,
}

fn default_operations() -> Vec<String> {
    vec!["create".into(), "update".into(), "delete".into()]
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig {
            collections: Vec::new(),
            dids: Vec::new(),
            dids_file: String::new(),
            exclude_dids: Vec::new(),
            exclude_dids_file: String::new(),
            operations: default_operations(),
        }
    }
}

/// Which mappers run.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MappersConfig {
    /// Built-in mappers to enable, by table name.
    #[serde(default = "default_builtin")]
    pub builtin: Vec<String>,
    /// Collections stored whole in the `records` table (`*` for all).
    #[serde(default)]
    pub generic: Vec<String>,
    /// Mappers defined here: collection, table, columns.
    #[serde(default)]
    pub declarative: Vec<DeclarativeConfig>,
}

fn default_builtin() -> Vec<String> {
    crate::mapper::builtin::ALL
        .iter()
        .map(|b| b.table_name().to_owned())
        .collect()
}

impl Default for MappersConfig {
    fn default() -> Self {
        MappersConfig {
            builtin: default_builtin(),
            generic: Vec::new(),
            declarative: Vec::new(),
        }
    }
}

/// What account events do to stored rows.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccountsConfig {
    /// `purge` (delete every row of a deleted account) or `keep`.
    #[serde(default = "default_on_delete")]
    pub on_delete: String,
    /// Other statuses that purge too: takendown, suspended, deactivated.
    #[serde(default)]
    pub purge_on: Vec<String>,
}

fn default_on_delete() -> String {
    "purge".into()
}

impl Default for AccountsConfig {
    fn default() -> Self {
        AccountsConfig {
            on_delete: default_on_delete(),
            purge_on: Vec::new(),
        }
    }
}

/// A configuration mistake; the message says what to fix, on one line.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// `section.key` → `PARITY_SECTION_KEY` for every key of the default config.
fn env_keys() -> BTreeMap<String, (Vec<String>, toml::Value)> {
    let value = toml::Value::try_from(Config::default()).expect("default config serialises");
    let mut out = BTreeMap::new();
    fn walk(
        prefix: &mut Vec<String>,
        v: &toml::Value,
        out: &mut BTreeMap<String, (Vec<String>, toml::Value)>,
    ) {
        match v {
            toml::Value::Table(t) if !prefix.is_empty() || !t.is_empty() => {
                for (k, v) in t {
                    prefix.push(k.clone());
                    if let toml::Value::Table(_) = v {
                        walk(prefix, v, out);
                    } else {
                        let name = format!("PARITY_{}", prefix.join("_").to_uppercase());
                        out.insert(name, (prefix.clone(), v.clone()));
                    }
                    prefix.pop();
                }
            }
            _ => {}
        }
    }
    walk(&mut Vec::new(), &value, &mut out);
    out
}

/// Parses an env value as the type of the key's default.
fn env_value(name: &str, raw: &str, default: &toml::Value) -> Result<toml::Value, ConfigError> {
    let parsed: Option<toml::Value> = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"));
    let same_type = |v: &toml::Value| std::mem::discriminant(v) == std::mem::discriminant(default);
    match (parsed, default) {
        (Some(v), _) if same_type(&v) => Ok(v),
        (_, toml::Value::String(_)) => Ok(toml::Value::String(raw.to_owned())),
        (_, toml::Value::Array(_)) => Ok(toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        )),
        _ => Err(err(format!(
            "{name}={raw:?} is not a valid {}; fix or unset it",
            default.type_str()
        ))),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], v: toml::Value) -> Result<(), ConfigError> {
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut t = table;
    for p in parents {
        let entry = t
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = entry
            .as_table_mut()
            .ok_or_else(|| err(format!("config key {p} must be a table")))?;
    }
    t.insert(last.clone(), v);
    Ok(())
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
    /// Loads the file (if any), then applies `PARITY_*` variables from
    /// `env`. Flags are applied by the caller afterwards.
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
        let keys = env_keys();
        for (name, raw) in env {
            if !name.starts_with("PARITY_") || EXTRA_ENV.contains(&name.as_str()) {
                continue;
            }
            let name = ENV_ALIASES
                .iter()
                .find(|(alias, _)| *alias == name)
                .map(|(_, canonical)| (*canonical).to_owned())
                .unwrap_or(name);
            let Some((path, default)) = keys.get(&name) else {
                return Err(err(format!(
                    "unknown environment variable {name}; config keys map to PARITY_SECTION_KEY, e.g. PARITY_DATABASE_URL"
                )));
            };
            set_path(&mut table, path, env_value(&name, &raw, default)?)?;
        }
        toml::Value::Table(table)
            .try_into::<Config>()
            .map_err(|e| one_line(&e, "environment", None))
    }

    /// Checks every value that can be checked without the network or the
    /// database.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.source.validate().map_err(err)?;
        self.collection_patterns()?;
        self.operations()?;
        self.purge_statuses()?;
        self.builtins()?;
        self.generic_patterns()?;
        for d in &self.mappers.declarative {
            CollectionPattern::parse(&d.collection)
                .map_err(|e| err(format!("mappers.declarative: {e}")))?;
            DeclarativeMapper::new(d).map_err(|e| err(e.to_string()))?;
        }
        for d in self.filter.dids.iter().chain(&self.filter.exclude_dids) {
            Did::parse(d).ok_or_else(|| {
                err(format!(
                    "filter: {d:?} is not a DID (did:plc:… or did:web:…)"
                ))
            })?;
        }
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
        tracing_subscriber::EnvFilter::try_new(&self.log.level).map_err(|e| {
            err(format!(
                "log.level {:?} is not a valid filter: {e}",
                self.log.level
            ))
        })?;
        Ok(())
    }

    pub fn collection_patterns(&self) -> Result<Vec<CollectionPattern>, ConfigError> {
        self.filter
            .collections
            .iter()
            .map(|c| {
                CollectionPattern::parse(c).map_err(|e| err(format!("filter.collections: {e}")))
            })
            .collect()
    }

    pub fn generic_patterns(&self) -> Result<Vec<CollectionPattern>, ConfigError> {
        self.mappers
            .generic
            .iter()
            .map(|c| CollectionPattern::parse(c).map_err(|e| err(format!("mappers.generic: {e}"))))
            .collect()
    }

    pub fn operations(&self) -> Result<Vec<CommitOp>, ConfigError> {
        self.filter
            .operations
            .iter()
            .map(|o| {
                CommitOp::parse(o).ok_or_else(|| {
                    err(format!(
                        "filter.operations: {o:?} is not an operation; use create, update, delete"
                    ))
                })
            })
            .collect()
    }

    pub fn builtins(&self) -> Result<Vec<Builtin>, ConfigError> {
        self.mappers
            .builtin
            .iter()
            .map(|b| {
                Builtin::from_table_name(b).ok_or_else(|| {
                    err(format!(
                        "mappers.builtin: unknown mapper {b:?}; use posts, likes, reposts, follows, blocks, profiles"
                    ))
                })
            })
            .collect()
    }

    /// Account statuses that delete a DID's rows.
    pub fn purge_statuses(&self) -> Result<Vec<AccountStatus>, ConfigError> {
        let mut out = match self.accounts.on_delete.as_str() {
            "purge" => vec![AccountStatus::Deleted],
            "keep" => Vec::new(),
            other => {
                return Err(err(format!(
                    "accounts.on_delete is {other:?}; use purge or keep"
                )));
            }
        };
        for s in &self.accounts.purge_on {
            match AccountStatus::parse(s) {
                st @ (AccountStatus::Takendown
                | AccountStatus::Suspended
                | AccountStatus::Deactivated) => out.push(st),
                _ => {
                    return Err(err(format!(
                        "accounts.purge_on: {s:?} is not a status; use takendown, suspended, deactivated"
                    )));
                }
            }
        }
        Ok(out)
    }

    /// The allow-list (inline plus file), or `None` for every DID.
    pub fn allowed_dids(&self) -> Result<Option<HashSet<Did>>, ConfigError> {
        let set = did_set(&self.filter.dids, &self.filter.dids_file)?;
        Ok((!set.is_empty()).then_some(set))
    }

    /// The deny-list (inline plus file).
    pub fn excluded_dids(&self) -> Result<HashSet<Did>, ConfigError> {
        did_set(&self.filter.exclude_dids, &self.filter.exclude_dids_file)
    }

    /// The example file shipped with parity.
    pub fn example() -> &'static str {
        include_str!("../config/parity.example.toml")
    }

    /// Every `PARITY_*` variable name that sets a config key.
    /// (Short aliases such as `PARITY_PLC_URL` included.)
    pub fn env_names() -> Vec<String> {
        let mut names: Vec<String> = env_keys().into_keys().collect();
        names.extend(ENV_ALIASES.iter().map(|(a, _)| (*a).to_owned()));
        names
    }
}

fn did_set(inline: &[String], file: &str) -> Result<HashSet<Did>, ConfigError> {
    let mut set = HashSet::new();
    for d in inline {
        set.insert(Did::parse(d).ok_or_else(|| err(format!("filter: {d:?} is not a DID")))?);
    }
    if !file.is_empty() {
        set.extend(read_did_file(&PathBuf::from(file))?);
    }
    Ok(set)
}

/// Reads one DID per line; blank lines and `#` comments are ignored.
pub fn read_did_file(path: &Path) -> Result<Vec<Did>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(format!("cannot read DID file {}: {e}", path.display())))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        out.push(Did::parse(line).ok_or_else(|| {
            err(format!(
                "{} line {}: {line:?} is not a DID",
                path.display(),
                i + 1
            ))
        })?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
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
    fn did_files_skip_comments_and_name_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dids.txt");
        std::fs::write(
            &p,
            "# allow\ndid:plc:a\n\n did:web:example.com # trailing\n",
        )
        .unwrap();
        assert_eq!(read_did_file(&p).unwrap().len(), 2);
        std::fs::write(&p, "did:plc:a\nbob\n").unwrap();
        assert!(read_did_file(&p).unwrap_err().0.contains("line 2"));
    }
}
