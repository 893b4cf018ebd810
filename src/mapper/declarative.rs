//! Declarative mappers: a table defined in config, with columns taken from
//! the record by JSON pointer.
//!
//! Owns: the config shape of one declarative mapper and turning a record into
//! its column values. Does not own: creating the table or checking an
//! existing one (store does that from the [`TableSchema`]).
//!
//! Type rules: `text` needs a JSON string, `integer` a JSON integer that fits
//! i64, `boolean` a JSON boolean, `timestamp` a string (an unparseable
//! datetime becomes NULL, as for the built-ins), `json` any value. A missing
//! or `null` value is NULL, or a failed record when the column is
//! `required`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::builtin::shape_error;
use super::table::{self, ColumnType, TableSchema, Value};
use super::{MapError, Mapper, RecordRef};

/// One column of a declarative mapper.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnConfig {
    /// JSON pointer into the record, e.g. `/subject/uri`.
    pub pointer: String,
    /// text, integer, boolean, timestamp or json.
    pub r#type: ColumnType,
    /// A record without this value fails its mapper instead of storing NULL.
    #[serde(default)]
    pub required: bool,
}

/// A mapper defined in config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeclarativeConfig {
    /// The collection NSID (or `prefix.*`).
    pub collection: String,
    /// The table to write; created if missing.
    pub table: String,
    /// Column name → where its value comes from.
    #[serde(default)]
    pub columns: BTreeMap<String, ColumnConfig>,
}

/// Why a declarative mapper's config is unusable.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DeclarativeError {
    #[error(
        "declarative mapper for {collection}: invalid table name {table:?} (use lowercase letters, digits and _, not starting with parity_)"
    )]
    Table { collection: String, table: String },
    #[error(
        "declarative mapper table {table}: invalid column name {column:?} (use lowercase letters, digits and _; the standard columns are added for you)"
    )]
    Column { table: String, column: String },
    #[error(
        "declarative mapper for {collection}: {what} name {name:?} is an SQL reserved word; pick another (for example {name}s or {name}_name)"
    )]
    Reserved {
        collection: String,
        what: &'static str,
        name: String,
    },
    #[error(
        "declarative mapper table {table}, column {column}: pointer {pointer:?} must be empty or start with /"
    )]
    Pointer {
        table: String,
        column: String,
        pointer: String,
    },
}

/// A mapper built from a [`DeclarativeConfig`].
pub struct DeclarativeMapper {
    schema: TableSchema,
    columns: Vec<ColumnConfig>,
}

impl DeclarativeMapper {
    pub fn new(cfg: &DeclarativeConfig) -> Result<DeclarativeMapper, DeclarativeError> {
        let reserved = |what, name: &str| DeclarativeError::Reserved {
            collection: cfg.collection.clone(),
            what,
            name: name.to_owned(),
        };
        if table::is_reserved(&cfg.table) {
            return Err(reserved("table", &cfg.table));
        }
        if let Some(name) = cfg.columns.keys().find(|n| table::is_reserved(n)) {
            return Err(reserved("column", name));
        }
        if !table::valid_identifier(&cfg.table) {
            return Err(DeclarativeError::Table {
                collection: cfg.collection.clone(),
                table: cfg.table.clone(),
            });
        }
        let mut cols = Vec::new();
        for (name, col) in &cfg.columns {
            if !table::valid_identifier(name) || table::STANDARD_COLUMNS.contains(&name.as_str()) {
                return Err(DeclarativeError::Column {
                    table: cfg.table.clone(),
                    column: name.clone(),
                });
            }
            if !(col.pointer.is_empty() || col.pointer.starts_with('/')) {
                return Err(DeclarativeError::Pointer {
                    table: cfg.table.clone(),
                    column: name.clone(),
                    pointer: col.pointer.clone(),
                });
            }
            cols.push((name.as_str(), col.r#type));
        }
        Ok(DeclarativeMapper {
            schema: TableSchema::new(&cfg.table, &cols),
            columns: cfg.columns.values().cloned().collect(),
        })
    }
}

fn convert(
    v: Option<&serde_json::Value>,
    col: &ColumnConfig,
    name: &str,
) -> Result<Value, MapError> {
    use serde_json::Value as J;
    let wrong = |expected| MapError::WrongType {
        field: name.to_owned(),
        expected,
    };
    match v {
        None | Some(J::Null) if col.required => Err(MapError::Missing(col.pointer.clone())),
        None | Some(J::Null) => Ok(Value::Null),
        Some(v) => match col.r#type {
            ColumnType::Text => v.as_str().map(Value::text).ok_or_else(|| wrong("string")),
            ColumnType::Integer => v
                .as_i64()
                .map(Value::Integer)
                .ok_or_else(|| wrong("integer")),
            ColumnType::Boolean => v
                .as_bool()
                .map(Value::Boolean)
                .ok_or_else(|| wrong("boolean")),
            ColumnType::Timestamp => v
                .as_str()
                .map(Value::timestamp)
                .ok_or_else(|| wrong("datetime string")),
            ColumnType::Json => Ok(Value::Json(v.to_string())),
        },
    }
}

impl Mapper for DeclarativeMapper {
    fn table(&self) -> &TableSchema {
        &self.schema
    }

    fn map(&self, r: &RecordRef<'_>) -> Result<Vec<Value>, MapError> {
        let record: serde_json::Value = serde_json::from_str(r.json).map_err(shape_error)?;
        if !record.is_object() {
            return Err(MapError::Json("record is not an object".into()));
        }
        self.columns
            .iter()
            .zip(&self.schema.columns)
            .map(|(col, c)| convert(record.pointer(&col.pointer), col, &c.name))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Did, Nsid, RecordKey};

    fn cfg(cols: &[(&str, &str, ColumnType, bool)]) -> DeclarativeConfig {
        DeclarativeConfig {
            collection: "com.example.thing".into(),
            table: "things".into(),
            columns: cols
                .iter()
                .map(|(n, p, t, r)| {
                    (
                        (*n).to_owned(),
                        ColumnConfig {
                            pointer: (*p).to_owned(),
                            r#type: *t,
                            required: *r,
                        },
                    )
                })
                .collect(),
        }
    }

    fn map(m: &DeclarativeMapper, json: &str) -> Result<Vec<Value>, MapError> {
        let did = Did::parse("did:plc:a").unwrap();
        let nsid = Nsid::parse("com.example.thing").unwrap();
        let rkey = RecordKey::parse("k").unwrap();
        m.map(&RecordRef {
            did: &did,
            collection: &nsid,
            rkey: &rkey,
            uri: "at://x",
            json,
        })
    }

    #[test]
    fn columns_by_pointer_and_type() {
        let m = DeclarativeMapper::new(&cfg(&[
            ("a_text", "/name", ColumnType::Text, true),
            ("b_int", "/count", ColumnType::Integer, false),
            ("c_bool", "/flag", ColumnType::Boolean, false),
            ("d_time", "/at", ColumnType::Timestamp, false),
            ("e_json", "/tags", ColumnType::Json, false),
        ]))
        .unwrap();
        let v = map(
            &m,
            r#"{"name":"x","count":3,"flag":true,"at":"2026-01-01T00:00:00Z","tags":["a",1]}"#,
        )
        .unwrap();
        assert_eq!(v[0], Value::Text("x".into()));
        assert_eq!(v[1], Value::Integer(3));
        assert_eq!(v[2], Value::Boolean(true));
        assert!(matches!(v[3], Value::Timestamp(_)));
        assert_eq!(v[4], Value::Json(r#"["a",1]"#.into()));
        assert_eq!(map(&m, r#"{"name":"x"}"#).unwrap()[1], Value::Null);
        assert_eq!(
            map(&m, r#"{"count":1}"#),
            Err(MapError::Missing("/name".into()))
        );
        assert!(matches!(
            map(&m, r#"{"name":"x","count":"3"}"#),
            Err(MapError::WrongType { .. })
        ));
        assert!(matches!(
            map(&m, r#"{"name":"x","count":1.5}"#),
            Err(MapError::WrongType { .. })
        ));
        assert!(map(&m, "[]").is_err());
    }

    #[test]
    fn bad_names_are_config_errors() {
        let mut c = cfg(&[("uri", "/x", ColumnType::Text, false)]);
        assert!(matches!(
            DeclarativeMapper::new(&c),
            Err(DeclarativeError::Column { .. })
        ));
        c = cfg(&[("ok", "x", ColumnType::Text, false)]);
        assert!(matches!(
            DeclarativeMapper::new(&c),
            Err(DeclarativeError::Pointer { .. })
        ));
        c = cfg(&[]);
        c.table = "parity_cursors".into();
        assert!(matches!(
            DeclarativeMapper::new(&c),
            Err(DeclarativeError::Table { .. })
        ));
    }
}
