//! Table schemas and column values: what a mapper produces and the store
//! writes.
//!
//! Owns: [`TableSchema`] (the standard columns every mapped table has plus
//! the mapper's own columns), [`ColumnType`] and [`Value`]. Does not own: SQL
//! (the store turns a schema into DDL and statements per backend).
//!
//! Standard columns, in this order, on every table: `uri` (unique), `did`,
//! `rkey`, `cid`, `rev`, `record` (full record JSON), `synced_at`.

use chrono::{DateTime, Datelike, Utc};

pub use super::reserved::is_reserved;

/// The names of the standard columns, in storage order.
pub const STANDARD_COLUMNS: [&str; 7] = ["uri", "did", "rkey", "cid", "rev", "record", "synced_at"];

/// The SQL type family of a mapped column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    Text,
    Integer,
    Boolean,
    Timestamp,
    Json,
}

impl ColumnType {
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::Integer => "integer",
            ColumnType::Boolean => "boolean",
            ColumnType::Timestamp => "timestamp",
            ColumnType::Json => "json",
        }
    }
}

/// One mapper-specific column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
}

/// A mapped table: its name and the columns beyond the standard ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    pub name: String,
    pub columns: Vec<Column>,
    /// Secondary indexes to create with the table (column lists).
    pub indexes: Vec<Vec<String>>,
}

impl TableSchema {
    pub fn new(name: &str, columns: &[(&str, ColumnType)]) -> TableSchema {
        TableSchema {
            name: name.to_owned(),
            columns: columns
                .iter()
                .map(|(n, t)| Column {
                    name: (*n).to_owned(),
                    ty: *t,
                })
                .collect(),
            indexes: vec![vec!["did".to_owned()]],
        }
    }

    /// Adds an index on the given columns.
    pub fn with_index(mut self, cols: &[&str]) -> TableSchema {
        self.indexes
            .push(cols.iter().map(|c| (*c).to_owned()).collect());
        self
    }
}

/// Whether `s` is a safe SQL identifier for a table or column we create:
/// lowercase ASCII letters, digits and underscores, starting with a letter,
/// at most 63 bytes (PostgreSQL's limit), not one of parity's own tables and
/// not an SQL reserved word ([`is_reserved`]).
pub fn valid_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.as_bytes()[0].is_ascii_lowercase()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.starts_with("parity_")
        && !s.starts_with("sqlite_")
        && !is_reserved(s)
}

/// A value for one mapper-specific column.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Text(String),
    Integer(i64),
    Boolean(bool),
    Timestamp(DateTime<Utc>),
    /// JSON text.
    Json(String),
}

impl Value {
    /// Text with NUL characters removed: PostgreSQL text cannot hold them,
    /// and both backends must store the same value.
    pub fn text(s: &str) -> Value {
        if s.contains('\0') {
            Value::Text(s.replace('\0', ""))
        } else {
            Value::Text(s.to_owned())
        }
    }

    /// Parses an atproto datetime (RFC 3339 with a timezone). Values that do
    /// not parse, or lie outside what PostgreSQL can store, become `Null`:
    /// the record is still stored whole in `record`.
    pub fn timestamp(s: &str) -> Value {
        match DateTime::parse_from_rfc3339(s) {
            Ok(t) if (-4712..=9999).contains(&t.year()) => Value::Timestamp(t.with_timezone(&Utc)),
            _ => Value::Null,
        }
    }
}

/// Renders a timestamp the way SQLite stores it (RFC 3339, µs, `Z`).
pub fn timestamp_text(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(valid_identifier("my_table2"));
        for bad in [
            "",
            "2x",
            "Upper",
            "a-b",
            "parity_cursors",
            "a b",
            "x;drop",
            "user",
            "order",
        ] {
            assert!(!valid_identifier(bad), "{bad}");
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            Value::timestamp("2026-07-04T14:38:07.513Z"),
            Value::Timestamp("2026-07-04T14:38:07.513Z".parse().unwrap())
        );
        assert_eq!(
            Value::timestamp("2026-07-04T14:38:07+02:00").clone(),
            Value::Timestamp("2026-07-04T12:38:07Z".parse().unwrap())
        );
        assert_eq!(Value::timestamp("yesterday"), Value::Null);
        assert_eq!(Value::timestamp("2026-07-04"), Value::Null);
    }

    #[test]
    fn text_drops_nul() {
        assert_eq!(Value::text("a\0b"), Value::Text("ab".into()));
    }
}
