//! Whole-repo import, writing half: one claimed (did, collection) written
//! from a verified [`Snapshot`] in pages of `import.getrepo_page_size`
//! records (in memory already, so larger than listRecords' 100: fewer
//! transactions and statements a collection),
//! through the same mapping (`page::map`), batches, guards and commit path
//! as a listRecords page.
//!
//! Every row carries the snapshot's rev (the signed commit's). Each page's
//! checkpoint cursor is `car:<last rkey written>`. **Resume strategy:
//! refetch the CAR and skip committed pages.** A crashed run kept nothing
//! but its committed pages, so the next run fetches the repo again; when
//! the new snapshot has the same rev as the state's, the records up to the
//! cursor are already written at that rev and are skipped (the state's
//! rev is written by each page's commit with its cursor, never ahead of
//! it, so a run that committed nothing cannot make an older run's cursor
//! look like this snapshot's), else (the repo
//! moved on) the collection is written again from its first record at the
//! new rev. Holding CARs across runs would cost disk for every repo in
//! flight to save one request per interrupted repo.
//!
//! `import.page_delay` pauses between pages as it does between listRecords
//! pages. The last page carries the [`Sweep`](crate::batch::Sweep) (rows
//! of the collection's table older than the snapshot rev are tombstoned
//! and removed: the import is a true resync) when every record of the
//! collection in this snapshot was written at its rev and none failed to
//! map.

use tokio_util::sync::CancellationToken;

use super::job::{self, Counts, Ctx, JobError};
use super::page::{self, PageOf};
use super::progress::PairBar;
use super::snapshot::Snapshot;
use crate::batch::Checkpoint;
use crate::event::{Did, Nsid};
use crate::store::ImportState;

/// Cursor prefix of a whole-repo import page (told apart from listRecords
/// cursors, which a resumed pair must not mix with).
pub const CAR_CURSOR_PREFIX: &str = "car:";

/// Writes `collection` of `snap` for the claimed `state`.
pub async fn run(
    ctx: &Ctx,
    snap: &Snapshot,
    did: &Did,
    collection: &Nsid,
    state: &ImportState,
    bar: &PairBar,
    token: &CancellationToken,
) -> Result<Counts, JobError> {
    let empty = Default::default();
    let collected = snap.collection(collection.as_str()).unwrap_or(&empty);
    let records = &collected.records;
    // Skip what an earlier run of this same snapshot committed.
    let resumed_after = match (&state.cursor, &state.rev) {
        (Some(c), Some(rev)) if *rev == snap.rev => c.strip_prefix(CAR_CURSOR_PREFIX),
        _ => None,
    };
    let start = resumed_after.map_or(0, |after| {
        records.partition_point(|(rkey, _)| rkey.as_str() <= after)
    });
    let earlier_failed = if resumed_after.is_some() {
        state.records_failed as u64
    } else {
        0
    };
    let page_size = ctx.getrepo_page_size.max(1) as usize;
    let mut total = Counts::default();
    let mut pos = start;
    loop {
        if token.is_cancelled() {
            return Err(JobError::Cancelled);
        }
        let end = (pos + page_size).min(records.len());
        let chunk = &records[pos..end];
        let last = end == records.len();
        let next = (!last).then(|| format!("{CAR_CURSOR_PREFIX}{}", chunk[chunk.len() - 1].0));
        let of = PageOf {
            did,
            collection,
            rev: &snap.rev,
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
            chunk.iter().map(|(_, l)| l),
            next,
        );
        let all_mapped = collected.failed + earlier_failed + total.failed + failed == 0;
        if last
            && all_mapped
            && let Checkpoint::ImportPage(p) = &mut batch.checkpoint
        {
            p.sweep = job::sweep(ctx, did, collection, &snap.rev);
        }
        let started = std::time::Instant::now();
        let batch = std::sync::Arc::new(batch);
        let (stats, rejected) = job::commit(ctx, &batch, token).await?;
        ctx.obs
            .on_commit(&stats, batch.events, started.elapsed(), None, 0);
        let synced = stats.upserted_total();
        let counts = Counts {
            synced,
            skipped: offered.saturating_sub(synced + rejected),
            failed: failed + rejected,
        };
        job::record_metrics(counts);
        total += counts;
        bar.page(counts);
        if last {
            // Transcoding failures are the snapshot's, counted once.
            total.failed += collected.failed;
            return Ok(total);
        }
        pos = end;
        if !ctx.page_delay.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(ctx.page_delay) => {}
                _ = token.cancelled() => return Err(JobError::Cancelled),
            }
        }
    }
}
