//! SQL words parity refuses as table or column names.
//!
//! parity writes identifiers unquoted into the DDL and statements it
//! generates, so a name that is a keyword of either backend would be accepted
//! by `config check` and then break table creation or every upsert. The list
//! is the union of the keywords that fail unquoted as a table or column name
//! in PostgreSQL (its reserved words, `pg_get_keywords()` categories R and
//! T that the generated SQL trips on) and in SQLite (keywords without an
//! identifier fallback). The integration test
//! `mappers::every_accepted_keyword_works_as_a_table_and_column_name` checks
//! the list against the live servers: every keyword either backend knows is
//! refused here or works end to end.

/// Sorted, lowercase.
const RESERVED: &[&str] = &[
    "add",
    "all",
    "alter",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "autoincrement",
    "between",
    "binary",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "collation",
    "column",
    "commit",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "delete",
    "desc",
    "distinct",
    "do",
    "drop",
    "else",
    "end",
    "escape",
    "except",
    "exists",
    "false",
    "fetch",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "group",
    "having",
    "if",
    "ilike",
    "in",
    "index",
    "initially",
    "inner",
    "insert",
    "intersect",
    "into",
    "is",
    "isnull",
    "join",
    "lateral",
    "leading",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "natural",
    "not",
    "nothing",
    "notnull",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "outer",
    "overlaps",
    "placing",
    "primary",
    "raise",
    "references",
    "returning",
    "right",
    "select",
    "session_user",
    "set",
    "similar",
    "some",
    "symmetric",
    "table",
    "tablesample",
    "then",
    "to",
    "trailing",
    "transaction",
    "true",
    "union",
    "unique",
    "update",
    "user",
    "using",
    "values",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
];

/// Whether `s` (lowercase) is a word parity refuses as an identifier.
pub fn is_reserved(s: &str) -> bool {
    RESERVED.binary_search(&s).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_so_binary_search_works() {
        assert!(RESERVED.windows(2).all(|w| w[0] < w[1]));
        assert!(is_reserved("user") && is_reserved("order"));
        assert!(!is_reserved("users") && !is_reserved("timestamp"));
    }
}
