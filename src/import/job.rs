//! Imports one claimed (did, collection): pin the repo rev, then page
//! through `listRecords`, writing each page's rows with its cursor.
//!
//! Owns: the page loop and the cut-over rule. Every imported row carries
//! the repo rev read from `com.atproto.sync.getLatestCommit` *before* the
//! first page, so the store's rev and tombstone guards let a live update or
//! delete newer than the import win, whichever is written first.
//!
//! Each page is one `Batch` with an `ImportPage` (built by `page`): its
//! rows, its cursor, the pinned rev and its counters commit together and
//! only while our lease holds; the last page also completes the pair. The last page of a listing read from its first page, every
//! record mapped, also carries the [`Sweep`] that removes the rows the repo
//! no longer has (older than the pinned rev, so not in the listing). A crash loses at most the page in flight; the next run
//! starts at the saved cursor. A busy database is retried here, a few
//! times, before the page fails the pair.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::config::ImportMethod;
use super::lease::Lease;
use super::page::{self, Page, PageOf};
use super::progress::PairBar;
use super::repo_job::CAR_CURSOR_PREFIX;
use super::snapshot::NoGetRepo;
use super::xrpc::{Xrpc, XrpcError};
use crate::batch::{Batch, Checkpoint, Sweep};
use crate::event::{Did, Nsid};
use crate::mapper::Registry;
use crate::obs::{Obs, names};
use crate::store::{ImportState, Store, StoreError};

/// Attempts at committing one page when the database hiccups.
const COMMIT_ATTEMPTS: u32 = 5;

/// What one pair's run added.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub synced: u64,
    pub skipped: u64,
    pub failed: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.synced += o.synced;
        self.skipped += o.skipped;
        self.failed += o.failed;
    }
}

/// Longest listRecords cursor accepted. Real ones are record keys or
/// timestamps (a record key is at most 512 characters).
pub const MAX_CURSOR_BYTES: usize = 1_024;

/// Whether a PDS's listRecords cursor may be stored and sent back.
fn valid_cursor(c: &str) -> bool {
    c.len() <= MAX_CURSOR_BYTES && !c.chars().any(char::is_control)
}

/// Why a pair stopped before its last page.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The PDS refused or kept failing: the pair is marked failed (or, if
    /// the run is being cancelled, released for the next run).
    #[error(transparent)]
    Remote(#[from] XrpcError),
    /// The PDS handed out a cursor it had already given in this run (A, A
    /// or A, B, A, …): paging would never end, so the pair is marked failed.
    #[error("the PDS returned a cursor it had already given (a cycle): listing stopped")]
    RepeatedCursor,
    /// The PDS handed out a cursor longer than [`MAX_CURSOR_BYTES`] or
    /// with control characters (NUL among them):
    /// it would be stored with the page and sent back in a URL, so the
    /// pair is marked failed instead, the same on both backends.
    #[error(
        "the PDS returned an invalid cursor (over {MAX_CURSOR_BYTES} bytes or with control characters): listing stopped"
    )]
    BadCursor,
    /// Another importer holds the lease now: leave the pair to it.
    #[error("the lease was taken over by another importer")]
    LeaseLost,
    /// A page could not be committed (after retries, if transient): the
    /// pair is marked failed and resumes from its last committed page.
    #[error(transparent)]
    Store(StoreError),
    /// The run was cancelled between pages: the pair is released.
    #[error("interrupted")]
    Cancelled,
    /// The PDS reported a repo rev that is not a TID: nothing it lists can
    /// be ordered against the stream, so the pair is marked failed.
    #[error("the PDS reported a repo rev that is not a TID")]
    BadRev,
}

impl From<StoreError> for JobError {
    fn from(e: StoreError) -> JobError {
        match e {
            StoreError::LeaseLost => JobError::LeaseLost,
            e => JobError::Store(e),
        }
    }
}

/// Everything a pair run needs, shared by all runs.
pub struct Ctx {
    pub store: Store,
    pub xrpc: Arc<Xrpc>,
    pub registry: Arc<Registry>,
    /// Our owner name and lease length, for every claim and page.
    pub lease: Lease,
    pub page_size: u32,
    /// Records of a verified snapshot per page (`import.getrepo_page_size`).
    pub getrepo_page_size: u32,
    pub page_delay: Duration,
    /// Told about every committed page (metrics, `/health` staleness).
    pub obs: Arc<Obs>,
    /// `import.method` (or `--method`).
    pub method: ImportMethod,
    /// `import.max_repo_bytes`.
    pub max_repo_bytes: u64,
    /// PDS hosts `auto` no longer asks for getRepo.
    pub no_getrepo: NoGetRepo,
}

/// `getLatestCommit` and `getRepoStatus` both carry the rev.
#[derive(Deserialize)]
pub(super) struct LatestCommit {
    #[serde(default)]
    rev: String,
}

/// Runs one claimed pair (`state`, the row claimed for `did` and
/// `collection`) to its last page, whose commit completes the state; the
/// caller records a failure from the result.
pub async fn run(
    ctx: &Ctx,
    pds: &str,
    did: &Did,
    collection: &Nsid,
    state: &ImportState,
    bar: &PairBar,
    token: &CancellationToken,
) -> Result<Counts, JobError> {
    let latest = repo_rev(ctx, pds, did, token).await?;
    // Empty: the PDS reports none (see `repo_rev`).
    if !(latest.rev.is_empty() || crate::event::is_tid(&latest.rev)) {
        return Err(JobError::BadRev);
    }
    // A cursor left by a whole-repo run of this pair is no listRecords
    // cursor: list from the first page.
    let mut cursor = state
        .cursor
        .clone()
        .filter(|c| !c.starts_with(CAR_CURSOR_PREFIX));
    // Only a listing this run reads from its first page is known complete
    // (pages of an earlier run carry that run's rev); a resumed one removes
    // nothing, and the next full re-import does.
    let from_first_page = cursor.is_none();
    // Every cursor of this run: one page's worth of text each, as many as
    // the pages already fetched.
    let mut seen: HashSet<String> = cursor.iter().cloned().collect();
    let mut total = Counts::default();
    let limit = ctx.page_size.to_string();
    loop {
        let mut params = vec![
            ("repo", did.as_str()),
            ("collection", collection.as_str()),
            ("limit", limit.as_str()),
        ];
        if let Some(c) = &cursor {
            params.push(("cursor", c.as_str()));
        }
        let page: Page = ctx
            .xrpc
            .get(pds, "com.atproto.repo.listRecords", &params, token)
            .await?;
        if page.cursor.as_deref().is_some_and(|c| !valid_cursor(c)) {
            return Err(JobError::BadCursor);
        }
        let next = match page.cursor.filter(|c| !c.is_empty()) {
            Some(c) if page.records.is_empty() => {
                tracing::debug!(did = %did, cursor = ?c, "empty page with a cursor: treating as the end");
                None
            }
            Some(c) if !seen.insert(c.clone()) => return Err(JobError::RepeatedCursor),
            c => c,
        };
        let of = PageOf {
            did,
            collection,
            rev: &latest.rev,
            state_id: state.id,
        };
        let page::MappedPage {
            mut batch,
            offered,
            failed,
        } = page::map(
            &of,
            &ctx.registry,
            &ctx.lease,
            page.records.iter(),
            next.clone(),
        );
        // A record that did not map leaves its old row at an old rev: the
        // listing is not a full picture, so nothing is removed.
        let all_mapped = state.records_failed == 0 && total.failed + failed == 0;
        if next.is_none()
            && from_first_page
            && all_mapped
            && !latest.rev.is_empty()
            && let Checkpoint::ImportPage(p) = &mut batch.checkpoint
        {
            p.sweep = sweep(ctx, did, collection, &latest.rev);
        }
        let started = std::time::Instant::now();
        let batch = Arc::new(batch);
        let (stats, rejected) = commit(ctx, &batch, token).await?;
        ctx.obs
            .on_commit(&stats, batch.events, started.elapsed(), None, 0);
        let synced = stats.upserted_total();
        let counts = Counts {
            synced,
            skipped: offered.saturating_sub(synced + rejected),
            failed: failed + rejected,
        };
        record_metrics(counts);
        total += counts;
        bar.page(counts);
        cursor = next;
        if cursor.is_none() {
            return Ok(total);
        }
        if !ctx.page_delay.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(ctx.page_delay) => {}
                _ = token.cancelled() => return Err(JobError::Cancelled),
            }
        }
    }
}

/// The repo's current rev: `getLatestCommit`, else (a PDS without that
/// route) `getRepoStatus`, else the empty rev. An empty rev sorts before
/// every real one, so such rows never overwrite a stored row nor pass a
/// tombstone: the import can only add records nobody has seen, and any live
/// event replaces them.
pub(super) async fn repo_rev(
    ctx: &Ctx,
    pds: &str,
    did: &Did,
    token: &CancellationToken,
) -> Result<LatestCommit, JobError> {
    let params = [("did", did.as_str())];
    let unimplemented = |e: &XrpcError| {
        matches!(
            e,
            XrpcError::Refused {
                status: 404 | 501,
                ..
            }
        ) || matches!(e, XrpcError::Refused { error: Some(n), .. } if n == "MethodNotImplemented")
    };
    let first = ctx
        .xrpc
        .get::<LatestCommit>(pds, "com.atproto.sync.getLatestCommit", &params, token)
        .await;
    match first {
        Err(e) if unimplemented(&e) => {}
        r => return Ok(r?),
    }
    match ctx
        .xrpc
        .get::<LatestCommit>(pds, "com.atproto.sync.getRepoStatus", &params, token)
        .await
    {
        Err(e) if unimplemented(&e) => {
            tracing::warn!(did = %did, "the PDS reports no repo rev; imported rows yield to every live change");
            Ok(LatestCommit { rev: String::new() })
        }
        r => Ok(r?),
    }
}

/// At most 300 characters of `s` (log fields from the network stay small).
fn truncate(s: &str) -> String {
    s.chars().take(300).collect()
}

pub(super) fn record_metrics(c: Counts) {
    for (outcome, n) in [
        ("synced", c.synced),
        ("skipped", c.skipped),
        ("failed", c.failed),
    ] {
        if n > 0 {
            metrics::counter!(names::IMPORT_RECORDS, "outcome" => outcome).increment(n);
        }
    }
}

/// What a complete listing of `collection` at `rev` removes: older rows of
/// its table (the only one its records are written to).
pub(super) fn sweep(ctx: &Ctx, did: &Did, collection: &Nsid, rev: &str) -> Option<Sweep> {
    Some(Sweep {
        did: did.clone(),
        collection: collection.clone(),
        table: ctx.registry.table_of(collection.as_str())?,
        rev: rev.to_owned(),
    })
}

/// Commits one page, retrying transient errors; when the database refuses
/// some records, commits the page without them (counted as failed, each
/// logged by URI). Returns the stats and how many records were refused.
pub(super) async fn commit(
    ctx: &Ctx,
    batch: &Arc<Batch>,
    token: &CancellationToken,
) -> Result<(crate::store::CommitStats, u64), JobError> {
    let mut attempt = 0;
    loop {
        let result = match ctx.store.commit_shared(batch).await {
            Err(e) if e.is_rejection() => {
                ctx.obs.record_db_error(&e);
                ctx.store.quarantine(batch, e).await.map(|q| {
                    for r in &q.rejected {
                        tracing::warn!(uri = ?truncate(&r.uri), error = ?truncate(&q.error.to_string()), "import: the database refused a record; skipped, the rest of the page committed");
                    }
                    (q.stats, q.rejected.len() as u64)
                })
            }
            r => r.map(|s| (s, 0)),
        };
        match result {
            Ok(s) => return Ok(s),
            Err(e) if e.is_transient() && attempt + 1 < COMMIT_ATTEMPTS => {
                ctx.obs.record_db_error(&e);
                ctx.obs.set_database_reachable(false);
                attempt += 1;
                tracing::warn!(error = %e, attempt, "import: database busy, retrying the page");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200 << attempt)) => {}
                    _ = token.cancelled() => return Err(JobError::Cancelled),
                }
            }
            Err(e) => {
                if !matches!(e, StoreError::LeaseLost) {
                    ctx.obs.record_db_error(&e);
                }
                return Err(e.into());
            }
        }
    }
}
