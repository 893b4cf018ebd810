//! `parity config check`: the checks that need the database, made
//! read-only, and the effective configuration with secrets masked.
//!
//! Owns: what the check reports (migrations pending, each mapper table
//! ready, absent or missing a column) and masking secrets in URLs. Does not
//! own validation of single values (`Config::validate`, run before this)
//! or any DDL: nothing here creates a file, a table or a row.

use std::fmt;

use url::Url;

use std::process::ExitCode;

use crate::config::Config;
use crate::error::Error;
use crate::mapper::Registry;
use crate::obs::Escaped;
use crate::store::{Store, StoreError, TableState};

/// `parity config check`: the effective configuration on stdout, one
/// finding per line on stderr; exit 2 when a finding is an error.
pub async fn run(cfg: &Config) -> Result<ExitCode, Error> {
    print!("{}", effective_toml(cfg));
    let findings = check_database(cfg).await?;
    for f in &findings {
        eprintln!("{}", Escaped(f));
    }
    let failed = findings.iter().any(|f| f.level == Level::Error);
    Ok(ExitCode::from(if failed { 2 } else { 0 }))
}

/// Replaces a password wherever it appears.
const MASK: &str = "****";

/// How bad one finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// As it should be.
    Ok,
    /// Fine, but `consume` will change something (create a table, migrate).
    Note,
    /// `consume` would stop on this.
    Error,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub message: String,
}

impl Finding {
    fn new(level: Level, message: impl Into<String>) -> Finding {
        Finding {
            level,
            message: message.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.level {
            Level::Ok => "ok",
            Level::Note => "note",
            Level::Error => "error",
        };
        write!(f, "{tag}: {}", self.message)
    }
}

/// Checks the mappers and migrations against the database without
/// changing it. `Err` when the mappers cannot be built or the database
/// cannot be reached.
pub async fn check_database(cfg: &Config) -> Result<Vec<Finding>, Error> {
    let registry = Registry::from_config(&cfg.mappers, &[])?;
    let url = mask_url(&cfg.database.url);
    let Some(store) = Store::connect_read_only(&cfg.database).await? else {
        return Ok(vec![Finding::new(
            Level::Note,
            format!(
                "database {url} does not exist yet; consume and migrate create it with every table"
            ),
        )]);
    };
    let mut out = vec![Finding::new(
        Level::Ok,
        format!("database {url} is reachable"),
    )];
    match store.pending_migrations().await? {
        0 => out.push(Finding::new(Level::Ok, "migrations are up to date")),
        n => out.push(Finding::new(
            Level::Note,
            format!("{n} migration(s) not applied yet; consume and migrate apply them"),
        )),
    }
    let tables = registry.tables();
    for (t, state) in tables.iter().zip(store.inspect(tables).await?) {
        out.push(match state {
            TableState::Ready => Finding::new(
                Level::Ok,
                format!("table {} has every mapped column", t.name),
            ),
            TableState::Absent => Finding::new(
                Level::Note,
                format!("table {} does not exist yet; consume creates it", t.name),
            ),
            TableState::MissingColumn(column) => Finding::new(
                Level::Error,
                StoreError::MissingColumn {
                    table: t.name.clone(),
                    column,
                }
                .to_string(),
            ),
        });
    }
    store.close().await;
    Ok(out)
}

/// The configuration as TOML, with passwords in URLs masked.
pub fn effective_toml(cfg: &Config) -> String {
    let mut shown = cfg.clone();
    shown.database.url = mask_url(&shown.database.url);
    for e in &mut shown.source.endpoints {
        *e = mask_url(e);
    }
    let body = toml::to_string_pretty(&shown).expect("the config serialises to TOML");
    format!(
        "# Effective configuration: file, then PARITY_* variables, then flags; secrets masked.\n{body}"
    )
}

/// `postgres://user:****@host/db?sslpassword=****`: the password in the
/// user info and any `*password*` query parameter replaced by `****`.
/// Text that is not a URL but looks like it has user info is masked from
/// the first `:` after the scheme to the last `@`.
pub fn mask_url(s: &str) -> String {
    let Ok(mut url) = Url::parse(s) else {
        return mask_unparsed(s);
    };
    let mut changed = false;
    if url.password().is_some() {
        let _ = url.set_password(Some(MASK));
        changed = true;
    }
    if url.query_pairs().any(|(k, _)| is_secret(&k)) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_secret(&k) {
                    MASK.to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        changed = true;
    }
    if changed {
        url.to_string()
    } else {
        s.to_owned()
    }
}

fn is_secret(key: &str) -> bool {
    key.to_ascii_lowercase().contains("password")
}

fn mask_unparsed(s: &str) -> String {
    let Some((scheme, rest)) = s.split_once("://") else {
        return s.to_owned();
    };
    match (rest.rfind('@'), rest.find(':')) {
        (Some(at), Some(colon)) if colon < at => {
            format!("{scheme}://{}:{MASK}{}", &rest[..colon], &rest[at..])
        }
        _ => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask_url("postgres://parity:s3cret@db:5432/parity"),
            "postgres://parity:****@db:5432/parity"
        );
        assert_eq!(
            mask_url("postgres://parity@db/parity?sslmode=require&password=s3cret"),
            "postgres://parity@db/parity?sslmode=require&password=****"
        );
        assert_eq!(mask_url("sqlite://parity.db"), "sqlite://parity.db");
        assert_eq!(
            mask_url("postgres://parity@db/parity"),
            "postgres://parity@db/parity"
        );
        assert_eq!(mask_url("x://u:p@ss@h[/d"), "x://u:****@h[/d");
    }

    #[test]
    fn effective_config_round_trips_with_the_mask() {
        let mut cfg = Config::default();
        cfg.database.url = "postgres://parity:s3cret@db/parity".into();
        let text = effective_toml(&cfg);
        assert!(!text.contains("s3cret"), "{text}");
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back.database.url, "postgres://parity:****@db/parity");
        assert_eq!(back.source, cfg.source);
        assert_eq!(back.metrics, cfg.metrics);
    }
}
