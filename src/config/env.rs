//! The environment layer of the configuration: `PARITY_*` variables on
//! top of the file.
//!
//! Owns: the naming rule (every key `section.key` is `PARITY_SECTION_KEY`:
//! upper case, dots to underscores, derived from the default config so a
//! new key gets its variable for free), short aliases such as
//! `PARITY_PLC_URL`, typing a raw value after the key's default, and
//! rejecting unknown `PARITY_*` names. Does not own the keys themselves
//! (each stage's config section) or the order of the layers (`config.rs`).
//!
//! A value is read as a TOML value when it parses as one of the key's type
//! (`5000`, `true`, `["a","b"]`), and as a plain string otherwise; a list of
//! strings may also be given comma-separated.

use std::collections::BTreeMap;

use super::{Config, ConfigError, err};

/// Environment variables parity reads that are not config keys.
/// (The app password and the session key are secrets: read by `auth`,
/// never part of the configuration, so never printed by `config check`.)
const EXTRA_ENV: &[&str] = &["PARITY_CONFIG", "PARITY_APP_PASSWORD", "PARITY_AUTH_KEY"];

/// Short names for keys operators set often: `(alias, canonical)`.
const ENV_ALIASES: &[(&str, &str)] = &[("PARITY_PLC_URL", "PARITY_IDENTITY_PLC_URL")];

/// Sets every `PARITY_*` variable of `env` in `table` (the file's keys).
pub(super) fn apply(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
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
        set_path(table, path, env_value(&name, &raw, default)?)?;
    }
    Ok(())
}

/// Every `PARITY_*` variable name that sets a config key, aliases included.
pub(super) fn names() -> Vec<String> {
    let mut names: Vec<String> = env_keys().into_keys().collect();
    names.extend(ENV_ALIASES.iter().map(|(a, _)| (*a).to_owned()));
    names
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
