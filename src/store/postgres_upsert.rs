//! PostgreSQL's upsert of one table's rows: the statement texts and their
//! binding.
//!
//! Owns: the two shapes of the upsert (each with a `RETURNING` twin for the
//! change log) and which one a step's rows take. Both write the rows of an
//! `UNNEST` under the same three guards (a tombstone at the row's rev or
//! newer, a sweep floor of the row's repo and collection newer than the
//! row, an account status that purges) and `ON CONFLICT … WHERE
//! excluded.rev > rev`:
//!
//! - **any rows**: each guard is a look-up per row by key (`OFFSET 0` keeps
//!   it a correlated subplan; see [`upsert`]);
//! - **one repo's collection** (every row of the step has the same DID and
//!   collection: every import page, and many small batches): the guards
//!   are asked once per statement first. The account status names one DID,
//!   so it is one look-up; the floor and the tombstones are asked per row
//!   only when the repo's collection has a floor at all, or a tombstone in
//!   its URI range. An import writes mostly repos that have neither, and
//!   three look-ups per row were a third of the upsert's time on the server
//!   (BENCHMARKS.md, issue 15 b, session 23). The per-row checks and their
//!   comparisons are the same text in both shapes, so both answer alike.
//!
//! Does not own: the other bulk steps (`postgres.rs`) or the commit order
//! (`commit.rs`).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgArguments;
use sqlx::{AssertSqlSafe, Postgres};

use super::schema;
use crate::event::AccountStatus;
use crate::mapper::{ColumnType, Row, TableSchema, Value};

pub(super) type Query = sqlx::query::Query<'static, Postgres, PgArguments>;

/// A table's upsert statements.
pub(super) struct UpsertSql {
    any: Arc<str>,
    any_returning: Arc<str>,
    one: Arc<str>,
    one_returning: Arc<str>,
}

/// The element type an extra column's values are bound as.
fn array_type(t: ColumnType) -> &'static str {
    match t {
        ColumnType::Text | ColumnType::Json => "text[]",
        ColumnType::Integer => "int8[]",
        ColumnType::Boolean => "bool[]",
        ColumnType::Timestamp => "timestamptz[]",
    }
}

impl UpsertSql {
    /// The statements of table `t`, refusing the rows of accounts whose
    /// status is one of `purge`.
    pub(super) fn new(t: &TableSchema, purge: &[AccountStatus]) -> UpsertSql {
        let n_extra = t.columns.len();
        // $1..$6 standard text arrays, $7 synced_at, then one array per
        // extra column; one repo's collection adds, after those, its URI
        // range (lo, hi), DID and collection.
        let mut unnest: Vec<String> = (1..=6).map(|i| format!("${i}::text[]")).collect();
        let mut select: Vec<String> = vec![
            "v.uri".into(),
            "v.did".into(),
            "v.rkey".into(),
            "v.cid".into(),
            "v.rev".into(),
            "v.record::json".into(),
            "$7::timestamptz".into(),
        ];
        for (i, c) in t.columns.iter().enumerate() {
            unnest.push(format!("${}::{}", 8 + i, array_type(c.ty)));
            select.push(if c.ty == ColumnType::Json {
                format!("v.{}::json", c.name)
            } else {
                format!("v.{}", c.name)
            });
        }
        let mut alias: Vec<&str> = vec!["uri", "did", "rkey", "cid", "rev", "record"];
        alias.extend(t.columns.iter().map(|c| c.name.as_str()));
        debug_assert_eq!(unnest.len(), 6 + n_extra);
        let [lo, hi, did, collection] = [8, 9, 10, 11].map(|i| format!("${}", i + n_extra));

        // Each per-row guard is a look-up by key (`OFFSET 0` keeps it a
        // correlated subplan). As a join, the planner costs a batch's
        // 1,250 index probes above one sequential scan of the guard's
        // table and hashes the whole table for every statement: with
        // 63,000 tombstones that was 27 ms against 5 ms a statement,
        // growing with the table, and at 10M events parity fell to 29 %
        // of the multi-row upsert baseline (BENCHMARKS.md, session 11).
        let tomb = "NOT EXISTS (SELECT 1 FROM parity_tombstones ts WHERE ts.uri = v.uri AND ts.rev >= v.rev OFFSET 0)";
        let floor = "NOT EXISTS (SELECT 1 FROM parity_sweep_floors f WHERE f.did = v.did AND f.collection = split_part(v.uri, '/', 4) AND f.rev > v.rev OFFSET 0)";
        let statuses = schema::status_list(purge);
        let status = statuses.as_ref().map(|l| {
            format!(" AND NOT EXISTS (SELECT 1 FROM parity_repos r WHERE r.did = v.did AND r.status IN ({l}) OFFSET 0)")
        });
        let any_guards = format!("{tomb} AND {floor}{}", status.unwrap_or_default());
        // Uncorrelated, so PostgreSQL answers each once per statement.
        let one_status = statuses.as_ref().map(|l| {
            format!(" AND NOT EXISTS (SELECT 1 FROM parity_repos r WHERE r.did = {did} AND r.status IN ({l}))")
        });
        let one_guards = format!(
            "((SELECT NOT EXISTS (SELECT 1 FROM parity_tombstones t1 WHERE t1.uri >= {lo} AND t1.uri < {hi})) OR {tomb}) \
             AND ((SELECT NOT EXISTS (SELECT 1 FROM parity_sweep_floors f1 WHERE f1.did = {did} AND f1.collection = {collection})) OR {floor}){}",
            one_status.unwrap_or_default()
        );
        let upsert = |guards: &str| {
            format!(
                "INSERT INTO {name} ({cols}) SELECT {select} FROM UNNEST({unnest}) AS v({alias}) \
                 WHERE {guards} \
                 ON CONFLICT (uri) DO UPDATE SET {set} WHERE excluded.rev > {name}.rev",
                name = t.name,
                cols = schema::all_columns(t).join(", "),
                select = select.join(", "),
                unnest = unnest.join(", "),
                alias = alias.join(", "),
                set = schema::update_set(t),
            )
        };
        // One row back, not one per row written: NULL when every row
        // offered was written (the usual case), else the URIs written.
        let returning = |upsert: &str| -> Arc<str> {
            format!(
                "WITH w AS ({upsert} RETURNING {name}.uri) SELECT CASE WHEN COUNT(*) < cardinality($1::text[]) \
                 THEN COALESCE(array_agg(w.uri), '{{}}') END FROM w",
                name = t.name
            )
            .into()
        };
        let (any, one) = (upsert(&any_guards), upsert(&one_guards));
        UpsertSql {
            any_returning: returning(&any),
            one_returning: returning(&one),
            any: any.into(),
            one: one.into(),
        }
    }
}

/// The DID and collection every row shares, if they share one: each row
/// of that DID with a URI under `at://<did>/<collection>/` (the range the
/// statement asks about for tombstones).
fn one_repo_collection<'r>(rows: &[&'r Row]) -> Option<(&'r str, &'r str)> {
    let first = rows.first()?;
    let did = first.did.as_str();
    let collection = first.uri.split('/').nth(3)?;
    let prefix = format!("at://{did}/{collection}/");
    rows.iter()
        .all(|r| r.did == first.did && r.uri.starts_with(&prefix))
        .then_some((did, collection))
}

/// The upsert of `rows` (non-empty) into table `t`, in the shape they
/// take; `returning` for the change log's twin.
pub(super) fn query(
    t: &TableSchema,
    sql: &UpsertSql,
    rows: &[&Row],
    now: DateTime<Utc>,
    returning: bool,
) -> Query {
    query_with(t, sql, rows, now, returning, Arc::clone)
}

/// [`query`] with its text passed through `text` (tests prefix `EXPLAIN`).
pub(super) fn query_with(
    t: &TableSchema,
    sql: &UpsertSql,
    rows: &[&Row],
    now: DateTime<Utc>,
    returning: bool,
    text: impl FnOnce(&Arc<str>) -> Arc<str>,
) -> Query {
    let one = one_repo_collection(rows);
    let shape = match (one.is_some(), returning) {
        (false, false) => &sql.any,
        (false, true) => &sql.any_returning,
        (true, false) => &sql.one,
        (true, true) => &sql.one_returning,
    };
    let q = bind_rows(t, text(shape), rows, now);
    match one {
        None => q,
        Some((did, collection)) => {
            let base = format!("at://{did}/{collection}");
            q.bind(format!("{base}/"))
                .bind(format!("{base}0"))
                .bind(did.to_owned())
                .bind(collection.to_owned())
        }
    }
}

/// `sql` with the rows' arrays bound, `$1` to `$7 + extra columns`.
fn bind_rows(t: &TableSchema, sql: Arc<str>, rows: &[&Row], now: DateTime<Utc>) -> Query {
    // Borrowed: each array is encoded as it is bound, so no row's text is
    // copied into owned strings first (those copies and their frees were
    // about 7 % of `consume`'s CPU samples on PostgreSQL, session 10's
    // profile in BENCHMARKS.md).
    let col = |f: for<'x> fn(&'x Row) -> &'x str| rows.iter().map(|r| f(r)).collect::<Vec<&str>>();
    let mut q: Query = sqlx::query(AssertSqlSafe(sql))
        .bind(col(|r| &r.uri))
        .bind(col(|r| r.did.as_str()))
        .bind(col(|r| &r.rkey))
        .bind(col(|r| &r.cid))
        .bind(col(|r| &r.rev))
        .bind(col(|r| r.record.get()))
        .bind(now);
    for (i, c) in t.columns.iter().enumerate() {
        let values = rows.iter().map(|r| r.values.get(i).unwrap_or(&Value::Null));
        q = match c.ty {
            ColumnType::Text | ColumnType::Json => q.bind(
                values
                    .map(|v| match v {
                        Value::Text(s) | Value::Json(s) => Some(s.as_str()),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            ),
            ColumnType::Integer => q.bind(
                values
                    .map(|v| match v {
                        Value::Integer(i) => Some(*i),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            ),
            ColumnType::Boolean => q.bind(
                values
                    .map(|v| match v {
                        Value::Boolean(b) => Some(*b),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            ),
            ColumnType::Timestamp => q.bind(
                values
                    .map(|v| match v {
                        Value::Timestamp(t) => Some(*t),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            ),
        };
    }
    q
}

#[cfg(test)]
#[path = "postgres_upsert_tests.rs"]
pub(super) mod tests;
