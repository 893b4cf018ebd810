//! Imports one claimed (did, collection): pin the repo rev, then page
//! through `listRecords`, writing each page's rows with its cursor.
//!
//! Owns: the page loop and the cut-over rule. Every imported row carries
//! the repo rev read from `com.atproto.sync.getLatestCommit` *before* the
//! first page, so the store's rev and tombstone guards let a live update or
//! delete newer than the import win, whichever is written first.
//!
//! Each page is one [`Batch`] with an [`ImportPage`]: its rows, its cursor
//! and its counters commit together and only while our lease holds. A crash
//! loses at most the page in flight; the next run starts at the saved
//! cursor.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use super::progress::PairBar;
use super::xrpc::{Xrpc, XrpcError};
use crate::batch::{Batch, Checkpoint, ImportPage};
use crate::event::{Commit, CommitOp, Cursor, Did, Event, EventKind, Nsid, RecordKey};
use crate::mapper::{Dispatch, Registry};
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

/// Why a pair stopped before its last page.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The PDS refused or kept failing: the pair is marked failed.
    #[error(transparent)]
    Remote(#[from] XrpcError),
    #[error("{0}")]
    Protocol(String),
    /// Another importer holds the lease now: leave the pair to it.
    #[error("the lease was taken over by another importer")]
    LeaseLost,
    #[error(transparent)]
    Store(StoreError),
    #[error("interrupted")]
    Cancelled,
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
    pub owner: String,
    pub page_size: u32,
    pub page_delay: Duration,
    pub lease: Duration,
    /// Touched after every committed page (`/health` staleness).
    pub health: Arc<crate::ops::Health>,
}

/// `getLatestCommit` and `getRepoStatus` both carry the rev.
#[derive(Deserialize)]
struct LatestCommit {
    #[serde(default)]
    rev: String,
}

#[derive(Deserialize)]
struct Page {
    cursor: Option<String>,
    records: Vec<Listed>,
}

#[derive(Deserialize)]
struct Listed {
    uri: String,
    cid: String,
    value: Box<RawValue>,
}

/// Runs one claimed pair to its last page. The caller finishes the state
/// (completed or failed) from the result.
pub async fn run(
    ctx: &Ctx,
    pds: &str,
    state: &ImportState,
    bar: &PairBar,
    token: &CancellationToken,
) -> Result<Counts, JobError> {
    let did = Did::parse(&state.did).ok_or_else(|| JobError::Protocol("invalid DID".into()))?;
    let collection = Nsid::parse(&state.collection)
        .ok_or_else(|| JobError::Protocol(format!("invalid collection {:?}", state.collection)))?;
    let latest = repo_rev(ctx, pds, &did, token).await?;
    if !ctx
        .store
        .set_import_rev(state.id, &ctx.owner, &latest.rev)
        .await?
    {
        return Err(JobError::LeaseLost);
    }
    let mut cursor = state.cursor.clone();
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
        let next = match page.cursor {
            Some(c) if page.records.is_empty() => {
                tracing::debug!(did = %did, cursor = ?c, "empty page with a cursor: treating as the end");
                None
            }
            Some(c) if Some(&c) == cursor.as_ref() => {
                return Err(JobError::Protocol(
                    "the PDS returned the same cursor twice".into(),
                ));
            }
            c => c,
        };
        let (batch, offered, failed) = page_batch(
            ctx,
            &did,
            &collection,
            &latest.rev,
            page.records,
            next.clone(),
            state.id,
        );
        let started = std::time::Instant::now();
        let stats = commit(ctx, &batch, token).await?;
        crate::ops::metrics::record_commit(&stats, batch.events, started.elapsed(), None);
        ctx.health.committed(0);
        let synced = stats.upserted_total();
        let counts = Counts {
            synced,
            skipped: offered.saturating_sub(synced),
            failed,
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
async fn repo_rev(
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

fn record_metrics(c: Counts) {
    for (outcome, n) in [
        ("synced", c.synced),
        ("skipped", c.skipped),
        ("failed", c.failed),
    ] {
        if n > 0 {
            metrics::counter!("parity_import_records_total", "outcome" => outcome).increment(n);
        }
    }
}

/// Maps one page through the registry, exactly as live commits are mapped.
/// Returns the batch, the number of rows offered to the store and the
/// number of records that failed.
fn page_batch(
    ctx: &Ctx,
    did: &Did,
    collection: &Nsid,
    rev: &str,
    records: Vec<Listed>,
    next: Option<String>,
    state_id: i64,
) -> (Batch, u64, u64) {
    let mut mutations = Vec::with_capacity(records.len());
    let mut seen: HashSet<String> = HashSet::with_capacity(records.len());
    let mut failed = 0u64;
    let events = records.len();
    for r in records {
        let Some(rkey) = record_key(&r.uri, did, collection) else {
            failed += 1;
            tracing::warn!(uri = ?truncate(&r.uri), "import: record URI does not belong to this repo and collection");
            continue;
        };
        let event = Event {
            cursor: Cursor(0),
            time_us: 0,
            did: did.clone(),
            kind: EventKind::Commit(Commit {
                collection: collection.clone(),
                rkey,
                rev: rev.to_owned(),
                op: CommitOp::Create,
                cid: Some(r.cid),
                record: Some(r.value),
            }),
        };
        match ctx.registry.dispatch(&event) {
            Dispatch::Mutation(m) => {
                if seen.insert(m.uri().to_owned()) {
                    mutations.push(m);
                }
            }
            Dispatch::Failed { uri, error } => {
                failed += 1;
                tracing::warn!(uri = ?uri, error = %error, "import: record does not fit its mapper");
            }
            Dispatch::Unmapped => failed += 1,
        }
    }
    let offered = mutations.len() as u64;
    let lease_until = crate::mapper::table::timestamp_text(
        &(Utc::now() + chrono::Duration::from_std(ctx.lease).unwrap_or_default()),
    );
    let batch = Batch {
        mutations,
        repos: HashMap::new(),
        last_time_us: 0,
        events,
        checkpoint: Checkpoint::ImportPage(ImportPage {
            state_id,
            owner: ctx.owner.clone(),
            cursor: next,
            failed,
            lease_until,
        }),
    };
    (batch, offered, failed)
}

/// The rkey of `at://DID/COLLECTION/RKEY` if DID and collection match.
fn record_key(uri: &str, did: &Did, collection: &Nsid) -> Option<RecordKey> {
    let rest = uri.strip_prefix("at://")?;
    let (d, rest) = rest.split_once('/')?;
    let (c, rkey) = rest.split_once('/')?;
    (d == did.as_str() && c == collection.as_str())
        .then(|| RecordKey::parse(rkey))
        .flatten()
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(200) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

async fn commit(
    ctx: &Ctx,
    batch: &Batch,
    token: &CancellationToken,
) -> Result<crate::store::CommitStats, JobError> {
    let mut attempt = 0;
    loop {
        match ctx.store.commit(batch).await {
            Ok(s) => return Ok(s),
            Err(e) if e.is_transient() && attempt + 1 < COMMIT_ATTEMPTS => {
                crate::ops::metrics::record_db_error(&e);
                ctx.health.set_database_reachable(false);
                attempt += 1;
                tracing::warn!(error = %e, attempt, "import: database busy, retrying the page");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200 << attempt)) => {}
                    _ = token.cancelled() => return Err(JobError::Cancelled),
                }
            }
            Err(e) => {
                if !matches!(e, StoreError::LeaseLost) {
                    crate::ops::metrics::record_db_error(&e);
                }
                return Err(e.into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_must_match_repo_and_collection() {
        let did = Did::parse("did:plc:abc").unwrap();
        let c = Nsid::parse("app.bsky.feed.post").unwrap();
        assert_eq!(
            record_key("at://did:plc:abc/app.bsky.feed.post/3k2", &did, &c).map(|k| k.to_string()),
            Some("3k2".into())
        );
        assert!(record_key("at://did:plc:xyz/app.bsky.feed.post/3k2", &did, &c).is_none());
        assert!(record_key("at://did:plc:abc/app.bsky.feed.like/3k2", &did, &c).is_none());
        assert!(record_key("https://x/y", &did, &c).is_none());
    }
}
