//! Reads a table's columns from the database, so the baselines write into
//! whatever layout the current migrations made and fail with a clear
//! message when the layout needs a column they cannot fill.

/// One column of an existing table.
#[derive(Debug, Clone, PartialEq)]
pub struct DbColumn {
    pub name: String,
    /// The declared type (PostgreSQL: `format_type`, for casts).
    pub ty: String,
    /// NOT NULL without a default: the baseline must fill it.
    pub required: bool,
}

/// The columns a baseline writes for a mapped table: those it has a value
/// for (the standard ones and the mapper's). Panics naming any required
/// column it cannot fill: a layout change the baseline must learn.
pub fn writable(table: &str, cols: &[DbColumn], mapper_cols: &[String]) -> Vec<DbColumn> {
    let known = |n: &str| super::STANDARD.contains(&n) || mapper_cols.iter().any(|m| m == n);
    for c in cols {
        assert!(
            known(&c.name) || !c.required,
            "the baseline cannot fill {table}.{}: teach crates/workload/src/baseline about the new layout",
            c.name
        );
    }
    cols.iter().filter(|c| known(&c.name)).cloned().collect()
}
