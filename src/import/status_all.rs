//! The `import --all` part of `parity import-status`: each run's relay
//! listings (collection, done or not, the saved relay cursor, pages) and
//! its queue of DIDs (pending / in progress / completed / failed), as text
//! lines under the summary and as the `import_all` array of `--json`.
//!
//! Owns: gathering a run's listings and counts from the store and their
//! presentation. Does not own the tables (`store::import_queue`) or what a
//! run is (`import::all`, whose key is `<relay> <collections>`).

use serde::Serialize;

use crate::store::{Store, StoreError};

/// One `import --all` run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunStatus {
    pub relay: String,
    /// `*` (every repository, listRepos) or the NSIDs, comma-separated.
    pub collections: String,
    pub listings: Vec<ListingStatus>,
    pub queue: QueueCounts,
    /// Repositories the relay listed, and of them skipped as inactive or
    /// malformed.
    pub repos_listed: i64,
    pub repos_inactive: i64,
    pub repos_malformed: i64,
}

/// One listing of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListingStatus {
    pub collection: String,
    /// `listing` (not done), `completed` or `failed`.
    pub status: String,
    pub done: bool,
    /// Where the listing continues (`null`: the first page, or done).
    pub cursor: Option<String>,
    pub pages: i64,
    pub repos_queued: i64,
    pub error: Option<String>,
}

/// The queue of a run by status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct QueueCounts {
    pub pending: i64,
    pub in_progress: i64,
    pub completed: i64,
    pub failed: i64,
}

/// Every run recorded, by key.
pub async fn runs(store: &Store) -> Result<Vec<RunStatus>, StoreError> {
    let mut out: Vec<(String, RunStatus)> = Vec::new();
    for l in store.all_listings().await? {
        if out.last().is_none_or(|(run, _)| *run != l.run) {
            let (relay, collections) = l.run.rsplit_once(' ').unwrap_or((&l.run, "*"));
            let c = store.run_counts(&l.run).await?;
            out.push((
                l.run.clone(),
                RunStatus {
                    relay: relay.to_owned(),
                    collections: collections.to_owned(),
                    listings: Vec::new(),
                    queue: QueueCounts {
                        pending: c.pending,
                        in_progress: c.in_progress,
                        completed: c.completed,
                        failed: c.failed,
                    },
                    repos_listed: c.listed,
                    repos_inactive: c.inactive,
                    repos_malformed: c.malformed,
                },
            ));
        }
        let run = &mut out.last_mut().expect("pushed above").1;
        run.listings.push(ListingStatus {
            done: l.status == "completed",
            collection: l.collection,
            status: l.status,
            cursor: l.cursor,
            pages: l.pages,
            repos_queued: l.repos_queued,
            error: l.error,
        });
    }
    Ok(out.into_iter().map(|(_, r)| r).collect())
}

/// The text lines of the runs (none without a run), each field escaped
/// with `clean` (relay cursors and errors come from the network).
pub fn render(runs: &[RunStatus], clean: fn(&str) -> String) -> String {
    let mut out = String::new();
    for r in runs {
        let q = r.queue;
        out.push_str(&format!(
            "import --all from {} ({}): queue pending: {}, in_progress: {}, completed: {}, failed: {}; \
             {} repos listed ({} inactive, {} malformed skipped)\n",
            clean(&r.relay),
            clean(&r.collections),
            q.pending,
            q.in_progress,
            q.completed,
            q.failed,
            r.repos_listed,
            r.repos_inactive,
            r.repos_malformed,
        ));
        for l in &r.listings {
            let state = match l.status.as_str() {
                "completed" => "done".to_owned(),
                "failed" => format!(
                    "failed ({})",
                    clean(l.error.as_deref().unwrap_or("no error recorded"))
                ),
                _ => "not done".to_owned(),
            };
            out.push_str(&format!(
                "  listing {}: {state}, {} pages, cursor: {}\n",
                clean(&l.collection),
                l.pages,
                l.cursor.as_deref().map(clean).unwrap_or_else(|| "-".into()),
            ));
        }
    }
    out
}
