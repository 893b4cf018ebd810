//! `parity import-status`: a summary line, the `import --all` runs
//! (`status_all`), and a table of import states, or every collection of
//! one DID; or all of it as one JSON object.
//!
//! Owns: presentation only. Text from the network (DIDs are validated, but
//! error messages may quote a peer) is escaped before it reaches the
//! terminal.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};

use super::status_all;
use crate::store::{ImportState, StatusFilter, Store, StoreError};

/// Rows shown in the table without a DID.
pub const TABLE_CAP: i64 = 50;

/// Renders the status report as the command prints it.
pub async fn report(
    store: &Store,
    did: Option<&str>,
    filter: StatusFilter,
    json: bool,
) -> Result<String, StoreError> {
    let limit = if json || did.is_some() {
        i64::MAX
    } else {
        TABLE_CAP + 1
    };
    let mut rows = store.import_states(did, filter, limit).await?;
    let runs = status_all::runs(store).await?;
    if json {
        let report = serde_json::json!({ "states": rows, "import_all": runs });
        return Ok(serde_json::to_string_pretty(&report).expect("states serialize"));
    }
    let counts = store.import_counts(did).await?;
    let count = |s: &str| {
        counts
            .iter()
            .find(|(k, _)| k == s)
            .map(|(_, n)| *n)
            .unwrap_or(0)
    };
    let mut out = format!(
        "pending: {}, in_progress: {}, completed: {}, failed: {}",
        count("pending"),
        count("in_progress"),
        count("completed"),
        count("failed")
    );
    // Only shown once there is one, so the usual line stays as it was.
    if count("gone") > 0 {
        out.push_str(&format!(", gone: {}", count("gone")));
    }
    out.push('\n');
    if did.is_none() {
        out.push_str(&status_all::render(&runs, clean));
    }
    if rows.is_empty() {
        out.push_str(match did {
            Some(_) => "No imports recorded for this DID.\n",
            None => "No imports match.\n",
        });
        return Ok(out);
    }
    let capped = did.is_none() && rows.len() as i64 > TABLE_CAP;
    if capped {
        rows.truncate(TABLE_CAP as usize);
    }
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    match did {
        None => {
            t.set_header([
                "DID",
                "collection",
                "status",
                "synced",
                "skipped",
                "failed",
                "updated",
            ]);
            for r in &rows {
                t.add_row([
                    clean(&r.did),
                    clean(&r.collection),
                    r.status.as_str().to_owned(),
                    r.records_synced.to_string(),
                    r.records_skipped.to_string(),
                    r.records_failed.to_string(),
                    short_time(Some(&r.updated_at)),
                ]);
            }
        }
        Some(_) => {
            t.set_header([
                "collection",
                "status",
                "synced",
                "skipped",
                "failed",
                "pages",
                "started",
                "completed",
                "updated",
                "error",
            ]);
            for r in &rows {
                t.add_row([
                    clean(&r.collection),
                    r.status.as_str().to_owned(),
                    r.records_synced.to_string(),
                    r.records_skipped.to_string(),
                    r.records_failed.to_string(),
                    r.pages.to_string(),
                    short_time(r.started_at.as_deref()),
                    short_time(r.completed_at.as_deref()),
                    short_time(Some(&r.updated_at)),
                    r.error.as_deref().map(clean).unwrap_or_default(),
                ]);
            }
        }
    }
    out.push_str(&t.to_string());
    out.push('\n');
    if capped {
        out.push_str(&format!(
            "Showing the {TABLE_CAP} most recently updated; use --json for all, or give a DID.\n"
        ));
    }
    if count("failed") > 0 {
        out.push_str("Some imports failed: run `parity resume` to retry them.\n");
    }
    Ok(out)
}

/// Escapes control characters so a stored error cannot drive the terminal.
fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn short_time(t: Option<&str>) -> String {
    t.map(|t| t.get(..19).unwrap_or(t).replace('T', " "))
        .unwrap_or_default()
}

/// The rows a status filter selects, for tests and library users.
pub async fn states(
    store: &Store,
    did: Option<&str>,
    filter: StatusFilter,
) -> Result<Vec<ImportState>, StoreError> {
    store.import_states(did, filter, i64::MAX).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(clean("a\u{1b}[31mb\n"), "a\\u{1b}[31mb\\n");
        assert_eq!(clean("it's \"gone\" ✓"), "it's \"gone\" ✓");
    }

    #[test]
    fn times_are_shortened() {
        assert_eq!(
            short_time(Some("2026-11-30T06:13:38.123456Z")),
            "2026-11-30 06:13:38"
        );
        assert_eq!(short_time(None), "");
    }
}
