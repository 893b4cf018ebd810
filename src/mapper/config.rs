//! The `[mappers]` config section and the registry it builds.
//!
//! Owns: [`MappersConfig`] (which built-ins run, which collections go to the
//! generic `records` table, the declarative mappers), its checks, and
//! [`Registry::from_config`], the one place the registration order is
//! written: built-ins, declarative, custom (library users), then generic.
//! Does not own what any mapper does with a record. Pure: no IO.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::builtin::{self, Builtin};
use super::declarative::{DeclarativeConfig, DeclarativeMapper};
use super::{Mapper, Registry, RegistryError, generic};
use crate::event::CollectionPattern;

/// Which mappers run (the `[mappers]` section).
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
    builtin::ALL
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

/// Why the mappers could not be built.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MappersError {
    /// A value in `[mappers]` is wrong; the message names the key and value
    /// (the caller reports it as a configuration mistake).
    #[error("{0}")]
    Config(String),
    /// Two mappers clash (same table with other columns, same collection).
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl MappersConfig {
    /// Checks every value without building the registry.
    pub fn validate(&self) -> Result<(), String> {
        self.builtins()?;
        self.generic_patterns()?;
        for d in &self.declarative {
            CollectionPattern::parse(&d.collection)
                .map_err(|e| format!("mappers.declarative: {e}"))?;
            DeclarativeMapper::new(d).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// `builtin`, parsed.
    pub fn builtins(&self) -> Result<Vec<Builtin>, String> {
        self.builtin
            .iter()
            .map(|b| {
                Builtin::from_table_name(b).ok_or_else(|| {
                    format!(
                        "mappers.builtin: unknown mapper {b:?}; use posts, likes, reposts, follows, blocks, profiles"
                    )
                })
            })
            .collect()
    }

    /// `generic`, parsed.
    pub fn generic_patterns(&self) -> Result<Vec<CollectionPattern>, String> {
        self.generic
            .iter()
            .map(|c| CollectionPattern::parse(c).map_err(|e| format!("mappers.generic: {e}")))
            .collect()
    }
}

impl Registry {
    /// Built-ins, declarative, `custom`, then generic: the first registered
    /// pattern that matches wins, exact collections before patterns.
    pub fn from_config(
        cfg: &MappersConfig,
        custom: &[(CollectionPattern, Arc<dyn Mapper>)],
    ) -> Result<Registry, MappersError> {
        let mut reg = Registry::new();
        builtin::register_all(&mut reg, &cfg.builtins().map_err(MappersError::Config)?)?;
        for d in &cfg.declarative {
            let pattern = CollectionPattern::parse(&d.collection).map_err(MappersError::Config)?;
            let m = DeclarativeMapper::new(d).map_err(|e| MappersError::Config(e.to_string()))?;
            reg.register(pattern, Arc::new(m))?;
        }
        for (p, m) in custom {
            reg.register(p.clone(), m.clone())?;
        }
        generic::register(
            &mut reg,
            &cfg.generic_patterns().map_err(MappersError::Config)?,
        )?;
        Ok(reg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_registers_every_builtin() {
        let reg = Registry::from_config(&MappersConfig::default(), &[]).unwrap();
        assert_eq!(reg.tables().len(), builtin::ALL.len());
        assert!(reg.handles("app.bsky.feed.post"));
        assert!(!reg.handles("com.example.thing"));
    }

    #[test]
    fn bad_values_name_the_key() {
        let cfg = MappersConfig {
            builtin: vec!["tweets".into()],
            ..MappersConfig::default()
        };
        let e = Registry::from_config(&cfg, &[]).err().unwrap();
        assert!(e.to_string().contains("mappers.builtin"), "{e}");
        assert!(cfg.validate().unwrap_err().contains("tweets"));
        let cfg = MappersConfig {
            generic: vec!["*".into()],
            ..MappersConfig::default()
        };
        assert!(
            Registry::from_config(&cfg, &[])
                .unwrap()
                .handles("com.example.thing")
        );
    }
}
