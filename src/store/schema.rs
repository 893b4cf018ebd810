//! DDL and statement text generated from [`TableSchema`]s, per backend.
//!
//! Owns: the SQL type of each column type, `CREATE TABLE IF NOT EXISTS` for
//! mapper tables the migrations do not create, and the guard fragments the
//! upserts share. Identifiers come from validated schemas
//! (`table::valid_identifier`) and statuses from a fixed enum, so the text is
//! safe to assemble.

use super::dialect::Dialect;
use crate::event::AccountStatus;
use crate::mapper::table::STANDARD_COLUMNS;
use crate::mapper::{ColumnType, TableSchema};

pub fn sql_type(b: Dialect, t: ColumnType) -> &'static str {
    match (b, t) {
        (Dialect::Sqlite, ColumnType::Text | ColumnType::Timestamp | ColumnType::Json) => "TEXT",
        (Dialect::Sqlite, ColumnType::Integer | ColumnType::Boolean) => "INTEGER",
        (Dialect::Postgres, ColumnType::Text) => "TEXT",
        (Dialect::Postgres, ColumnType::Integer) => "BIGINT",
        (Dialect::Postgres, ColumnType::Boolean) => "BOOLEAN",
        (Dialect::Postgres, ColumnType::Timestamp) => "TIMESTAMPTZ",
        (Dialect::Postgres, ColumnType::Json) => "JSON",
    }
}

/// `CREATE TABLE IF NOT EXISTS` plus its indexes.
pub fn create_table(b: Dialect, t: &TableSchema) -> Vec<String> {
    // PostgreSQL: keys and revs compare bytewise (TIDs sort as bytes) and
    // skip locale-aware collation in every index comparison.
    let (json, ts, key) = match b {
        Dialect::Sqlite => ("TEXT", "TEXT", "TEXT"),
        Dialect::Postgres => ("JSON", "TIMESTAMPTZ", "TEXT COLLATE \"C\""),
    };
    let mut cols = vec![
        format!("uri {key} PRIMARY KEY NOT NULL"),
        format!("did {key} NOT NULL"),
        format!("rkey {key} NOT NULL"),
        format!("cid {key} NOT NULL"),
        format!("rev {key} NOT NULL"),
        format!("record {json} NOT NULL"),
        format!("synced_at {ts} NOT NULL"),
    ];
    cols.extend(
        t.columns
            .iter()
            .map(|c| format!("{} {}", c.name, sql_type(b, c.ty))),
    );
    let mut out = vec![format!(
        "CREATE TABLE IF NOT EXISTS {} ({})",
        t.name,
        cols.join(", ")
    )];
    for idx in &t.indexes {
        out.push(format!(
            "CREATE INDEX IF NOT EXISTS {}_{}_idx ON {} ({})",
            t.name,
            idx.join("_"),
            t.name,
            idx.join(", ")
        ));
    }
    out
}

/// Every column of the table, standard first, in write order.
pub fn all_columns(t: &TableSchema) -> Vec<&str> {
    STANDARD_COLUMNS
        .iter()
        .copied()
        .chain(t.columns.iter().map(|c| c.name.as_str()))
        .collect()
}

/// The first column the table lacks, comparing case-insensitively.
pub fn missing_column<'a>(t: &'a TableSchema, existing: &[String]) -> Option<&'a str> {
    all_columns(t)
        .into_iter()
        .find(|c| !existing.iter().any(|e| e.eq_ignore_ascii_case(c)))
}

/// `'deleted', 'takendown'` for use in `status IN (…)`; `None` when empty.
pub fn status_list(statuses: &[AccountStatus]) -> Option<String> {
    if statuses.is_empty() {
        return None;
    }
    Some(
        statuses
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// `SET` list for the upsert's `DO UPDATE`: every column from `excluded`,
/// except that an unchanged CID keeps the stored `synced_at`.
pub fn update_set(t: &TableSchema) -> String {
    all_columns(t)
        .into_iter()
        .filter(|c| *c != "uri")
        .map(|c| {
            if c == "synced_at" {
                format!(
                    "synced_at = CASE WHEN {t}.cid = excluded.cid THEN {t}.synced_at ELSE excluded.synced_at END",
                    t = t.name
                )
            } else {
                format!("{c} = excluded.{c}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapper::builtin;

    #[test]
    fn ddl_lists_every_column() {
        let posts = builtin::Builtin::Posts.schema();
        let ddl = create_table(Dialect::Postgres, &posts);
        assert!(
            ddl[0].starts_with(
                "CREATE TABLE IF NOT EXISTS posts (uri TEXT COLLATE \"C\" PRIMARY KEY"
            )
        );
        assert!(ddl[0].contains("created_at TIMESTAMPTZ"));
        assert!(
            ddl.iter()
                .any(|s| s.contains("posts_did_idx ON posts (did)"))
        );
        let existing: Vec<String> = all_columns(&posts)
            .iter()
            .map(|s| s.to_uppercase())
            .collect();
        assert_eq!(missing_column(&posts, &existing), None);
        assert_eq!(
            missing_column(&posts, &existing[..existing.len() - 1]),
            Some("langs")
        );
    }

    #[test]
    fn statuses() {
        assert_eq!(status_list(&[]), None);
        assert_eq!(
            status_list(&[AccountStatus::Deleted, AccountStatus::Takendown]).unwrap(),
            "'deleted', 'takendown'"
        );
    }
}
