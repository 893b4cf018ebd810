//! The commit of one [`Batch`]: the statement order of `plan.rs`, written
//! once for both backends.
//!
//! Owns: walking a [`Plan`] in its documented order inside one transaction,
//! the statements that are the same on both backends (account, identity and
//! resync changes to `parity_repos`, the resync import request, the stream
//! cursors, the import page and the published outbox rows), the [`CommitStats`] of the batch, the
//! lease check of an import page, and collecting the batch's row changes
//! for the change log (`change_log.rs`), appended last. Does not own: beginning the transaction
//! (SQLite takes the write lock up front, PostgreSQL relaxes
//! `synchronous_commit`), nor the bulk steps whose SQL genuinely differs per
//! backend (purges, tombstones, deletes, upserts, sweeps with their
//! floors, revs: cached single-row statements on SQLite's writer thread,
//! one statement per table on PostgreSQL).
//! Those are the [`Steps`] a backend transaction implements.
//!
//! Invariants: the checkpoint (stream cursors, one writer's share of them,
//! or an import page) is written after the rows, in the same transaction as
//! the rows it covers; the change log's rows (when the log is on) are the
//! very last statement, under the append lock, so their `seq`s follow
//! commit order; a writer's share moves the stream cursor only to the lowest
//! position every writer has committed (the low watermark); any error returns
//! before `COMMIT`, and dropping the transaction rolls the batch back as a
//! whole; statements run in the plan's deterministic (sorted) order, so the
//! lock order is stable across concurrent writers.

use chrono::{DateTime, Utc};

use super::change_log::{self, Logged};
use super::dialect::{Arg, Sql};
use super::imports::{LAST_PAGE_DONE, PAGE_DONE, QUEUE_RESYNC};
use super::outbox::MARK_PUBLISHED;
use super::plan::{Plan, status_text};
use super::{CommitStats, StoreError};
use crate::batch::{Batch, Checkpoint, ImportPage, Sweep};
use crate::event::Did;
use crate::mapper::Row;

/// An identity event: the handle (if it came with one) and a stale cached
/// identity. `$1` did, `$2` handle, `$3` now.
static SET_IDENTITY: Sql = Sql::new(
    "INSERT INTO parity_repos (did, handle, updated_at) VALUES ($1, $2, $3) \
     ON CONFLICT (did) DO UPDATE SET handle = COALESCE(excluded.handle, parity_repos.handle), \
     identity_resolved_at = NULL, updated_at = excluded.updated_at",
);

/// An account event. `$1` did, `$2` status, `$3` active, `$4` now.
static SET_ACCOUNT: Sql = Sql::new(
    "INSERT INTO parity_repos (did, status, active, updated_at) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (did) DO UPDATE SET status = excluded.status, active = excluded.active, updated_at = excluded.updated_at",
);

/// The stream asked for a re-import of the repo as of a rev; ignored (no
/// row changed) unless that rev is newer than the last one applied for the
/// DID. `$1` did, `$2` now, `$3` the `#sync` rev.
static MARK_RESYNC: Sql = Sql::new(
    "INSERT INTO parity_repos (did, resync_requested_at, updated_at) VALUES ($1, $2, $2) \
     ON CONFLICT (did) DO UPDATE SET resync_requested_at = excluded.resync_requested_at, updated_at = excluded.updated_at \
     WHERE parity_repos.rev IS NULL OR parity_repos.rev < $3",
);

/// One stream's cursor. `$1` stream key, `$2` cursor, `$3` now.
static SAVE_CURSOR: Sql = Sql::new(
    "INSERT INTO parity_cursors (stream, cursor, updated_at) VALUES ($1, $2, $3) \
     ON CONFLICT (stream) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
);

/// One writer's position in one stream (several writers). `$1` stream
/// key, `$2` writer, `$3` cursor, `$4` now.
static SAVE_WRITER_CURSOR: Sql = Sql::new(
    "INSERT INTO parity_writer_cursors (stream, writer, cursor, updated_at) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (stream, writer) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
);

/// A stream's cursor becomes the lowest position of its writers, once
/// every one of them has a row (before that, a writer that has committed
/// nothing would be skipped over). Runs under the watermark lock
/// ([`Steps::lock_watermark`]), so it sees every other writer's committed
/// row. `$1` stream key, `$2` now, `$3` writer count.
static SAVE_WATERMARK: Sql = Sql::new(
    "INSERT INTO parity_cursors (stream, cursor, updated_at) \
     SELECT $1, MIN(cursor), $2 FROM parity_writer_cursors WHERE stream = $1 AND writer < $3 \
     HAVING COUNT(*) = $3 \
     ON CONFLICT (stream) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
);

/// One open commit transaction of a backend: the steps the walk calls.
/// Tables are indexed by `TableId`, as in the [`Plan`].
///
/// The steps that change mapped rows take a change-log sink: `None` when
/// the table is not logged (the step then runs exactly as without a log),
/// otherwise the step pushes one [`Logged`] per row it actually inserted,
/// rewrote or removed, in the order it did so.
pub(super) trait Steps {
    /// Mapper tables this store writes.
    fn table_count(&self) -> usize;
    fn table_name(&self, table: usize) -> &str;
    /// Whether changes of `table` are appended to the change log.
    fn logged(&self, table: usize) -> bool;
    /// Runs one shared statement; returns the rows it affected. A shared
    /// statement that writes `parity_repos` takes the DID as `$1`: SQLite's
    /// writer then forgets what it remembered of that DID.
    async fn run(&mut self, sql: &'static Sql, args: Vec<Arg>) -> Result<u64, StoreError>;
    /// Deletes every row of these DIDs from every table (non-empty); with a
    /// log, the removed rows of the logged tables go to it.
    async fn purge<'b>(
        &mut self,
        dids: &[&'b Did],
        stats: &mut CommitStats,
        log: Option<&mut Vec<Logged<'b>>>,
    ) -> Result<(), StoreError>;
    /// Writes a tombstone per `(uri, rev)` (non-empty), newer revs winning;
    /// returns the tombstones written or moved to a newer rev (a delete
    /// whose URI already had a tombstone at its rev or a newer one writes
    /// nothing).
    async fn tombstones(
        &mut self,
        deletes: &[(&str, &str)],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError>;
    /// Deletes rows no newer than their tombstone (non-empty); returns the
    /// rows deleted.
    async fn delete<'b>(
        &mut self,
        table: usize,
        deletes: &[(&'b str, &'b str)],
        log: Option<&mut Vec<Logged<'b>>>,
    ) -> Result<u64, StoreError>;
    /// Upserts rows under the rev, tombstone and status guards (non-empty);
    /// returns the rows written.
    async fn upsert<'b>(
        &mut self,
        table: usize,
        rows: &[&'b Row],
        now: DateTime<Utc>,
        log: Option<&mut Vec<Logged<'b>>>,
    ) -> Result<u64, StoreError>;
    /// Removes the rows of the sweep's table in its repo's collection
    /// (URIs in [`Sweep::uri_range`]) whose rev is older than the sweep's,
    /// each leaving a tombstone at that rev (newer tombstones win), and
    /// records the sweep's rev as the pair's floor (newer floors win);
    /// returns the rows removed.
    async fn sweep<'b>(
        &mut self,
        sweep: &'b Sweep,
        now: DateTime<Utc>,
        log: Option<&mut Vec<Logged<'b>>>,
    ) -> Result<u64, StoreError>;
    /// [`Steps::sweep`], then the last page's state statement `done` with
    /// `args`; returns the rows removed and the state rows updated. One
    /// round trip where the backend can (PostgreSQL), else the two in turn.
    async fn sweep_last_page<'b>(
        &mut self,
        sweep: &'b Sweep,
        now: DateTime<Utc>,
        log: Option<&mut Vec<Logged<'b>>>,
        done: &'static Sql,
        args: Vec<Arg>,
    ) -> Result<(u64, u64), StoreError> {
        let removed = self.sweep(sweep, now, log).await?;
        Ok((removed, self.run(done, args).await?))
    }
    /// Records each DID's newest commit rev (non-empty).
    async fn revs(&mut self, revs: &[(&Did, &str)], now: DateTime<Utc>) -> Result<(), StoreError>;
    /// Waits until no other writer's transaction can still change its
    /// position, and holds that until this transaction ends: the stream
    /// watermark statement that follows, with a fresh snapshot, sees every
    /// other writer's committed position (PostgreSQL: a transaction-scoped
    /// advisory lock taken just before; SQLite: nothing, its writer
    /// already holds the database lock).
    async fn lock_watermark(&mut self) -> Result<(), StoreError>;
    /// Appends `changes` (non-empty) to `parity_changes` in this order, with
    /// `seq`s above every seq any committed or later-committing transaction
    /// holds: PostgreSQL first takes the append lock (the watermark lock,
    /// held until this transaction ends), SQLite's writer holds the
    /// database lock already. Returns the newest seq.
    async fn append(&mut self, changes: &[Logged<'_>]) -> Result<i64, StoreError>;
    async fn commit(self) -> Result<(), StoreError>;
    async fn rollback(self) -> Result<(), StoreError>;
}

/// An import page's state statement and its arguments: its cursor and
/// counters (the rows offered, written and skipped by this transaction's
/// upserts), or on the last page the pair `completed`. Refused (no row
/// updated) if the page's lease was taken over.
fn page_state(
    page: &ImportPage,
    plan: &Plan<'_>,
    stats: &CommitStats,
    now: DateTime<Utc>,
) -> (&'static Sql, Vec<Arg>) {
    let offered = plan.upsert_count() as u64;
    let synced = stats.upserted_total() as i64;
    let skipped = offered.saturating_sub(synced as u64) as i64;
    let failed = page.failed as i64;
    if page.last {
        let args = vec![
            synced.into(),
            skipped.into(),
            failed.into(),
            now.into(),
            page.state_id.into(),
            page.owner.clone().into(),
            page.rev.clone().into(),
        ];
        (&LAST_PAGE_DONE, args)
    } else {
        let args = vec![
            page.cursor.clone().into(),
            synced.into(),
            skipped.into(),
            failed.into(),
            page.lease_until.clone().into(),
            now.into(),
            page.state_id.into(),
            page.owner.clone().into(),
            page.rev.clone().into(),
        ];
        (&PAGE_DONE, args)
    }
}

/// How the transaction of [`commit`] ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Finish {
    Commit,
    /// A trial (quarantine's bisection): every statement runs, so the
    /// database checks every row, then nothing is kept.
    Rollback,
}

/// Writes `batch` through `tx` in the order of `plan.rs` and commits (or,
/// for a trial, rolls back).
pub(super) async fn commit<S: Steps>(
    mut tx: S,
    batch: &Batch,
    finish: Finish,
) -> Result<CommitStats, StoreError> {
    let plan = Plan::new(batch, tx.table_count());
    let now = Utc::now();
    let mut stats = CommitStats::default();
    // The change log of this batch, if any table is logged.
    let mut log: Option<Vec<Logged<'_>>> =
        (0..tx.table_count()).any(|t| tx.logged(t)).then(Vec::new);

    // 1. Account and identity changes, resync requests, then purges.
    for (did, change) in &plan.account_changes {
        if change.identity || change.handle.is_some() {
            let args = vec![
                did.as_str().into(),
                change.handle.clone().into(),
                now.into(),
            ];
            tx.run(&SET_IDENTITY, args).await?;
        }
        if let Some((active, status)) = change.account {
            let args = vec![
                did.as_str().into(),
                status_text(active, status).into(),
                active.into(),
                now.into(),
            ];
            tx.run(&SET_ACCOUNT, args).await?;
        }
    }
    for (did, change) in &plan.account_changes {
        if let Some(rev) = &change.resync {
            let args = vec![did.as_str().into(), now.into(), rev.clone().into()];
            if tx.run(&MARK_RESYNC, args).await? > 0 {
                tx.run(&QUEUE_RESYNC, vec![did.as_str().into(), now.into()])
                    .await?;
            }
        }
    }
    if !plan.purges.is_empty() {
        tx.purge(&plan.purges, &mut stats, log.as_mut()).await?;
    }

    // 2. Tombstones for every delete, then the deletes.
    let deletes: Vec<(&str, &str)> = plan.all_deletes().collect();
    if !deletes.is_empty() {
        let written = tx.tombstones(&deletes, now).await?;
        stats.stale_deletes = (deletes.len() as u64).saturating_sub(written);
    }
    for (table, work) in plan.tables.iter().enumerate() {
        if !work.deletes.is_empty() {
            let sink = log.as_mut().filter(|_| tx.logged(table));
            let n = tx.delete(table, &work.deletes, sink).await?;
            CommitStats::add(&mut stats.deleted, tx.table_name(table), n);
        }
    }

    // 3. Upserts.
    for (table, work) in plan.tables.iter().enumerate() {
        if !work.upserts.is_empty() {
            let sink = log.as_mut().filter(|_| tx.logged(table));
            let n = tx.upsert(table, &work.upserts, now, sink).await?;
            CommitStats::add(&mut stats.upserted, tx.table_name(table), n);
        }
    }

    // 3b. After the last page of a complete import listing: what the repo
    // no longer has.
    // With nothing between them (no revs), the page's state (step 5) goes
    // with the sweep, in one round trip where the backend can.
    let mut page_recorded = false;
    if let Checkpoint::ImportPage(
        page @ ImportPage {
            sweep: Some(sweep), ..
        },
    ) = &batch.checkpoint
    {
        // Only the collection's own table holds its URIs; the sweep also
        // leaves the floor that keeps out what the listing did not have,
        // should an older write of it come later.
        let table = sweep.table.0;
        let sink = log.as_mut().filter(|_| tx.logged(table));
        let n = if page.last && plan.revs.is_empty() {
            let (sql, args) = page_state(page, &plan, &stats, now);
            let (n, updated) = tx.sweep_last_page(sweep, now, sink, sql, args).await?;
            if updated == 0 {
                return Err(StoreError::LeaseLost);
            }
            page_recorded = true;
            n
        } else {
            tx.sweep(sweep, now, sink).await?
        };
        CommitStats::add(&mut stats.deleted, tx.table_name(table), n);
    }

    // 4. Per-DID commit revs.
    if !plan.revs.is_empty() {
        tx.revs(&plan.revs, now).await?;
    }

    // 5. The checkpoint.
    match &batch.checkpoint {
        Checkpoint::Stream(cursors) => {
            for (stream, cursor) in cursors {
                let args = vec![stream.clone().into(), cursor.0.into(), now.into()];
                tx.run(&SAVE_CURSOR, args).await?;
            }
        }
        Checkpoint::Shard(shard) => {
            for (stream, cursor) in &shard.cursors {
                let args = vec![
                    stream.clone().into(),
                    i64::from(shard.writer).into(),
                    cursor.0.into(),
                    now.into(),
                ];
                tx.run(&SAVE_WRITER_CURSOR, args).await?;
            }
            if !shard.cursors.is_empty() {
                tx.lock_watermark().await?;
            }
            for (stream, _) in &shard.cursors {
                let args = vec![
                    stream.clone().into(),
                    now.into(),
                    i64::from(shard.writers).into(),
                ];
                tx.run(&SAVE_WATERMARK, args).await?;
            }
        }
        Checkpoint::ImportPage(page) if !page_recorded => {
            let (sql, args) = page_state(page, &plan, &stats, now);
            if tx.run(sql, args).await? == 0 {
                return Err(StoreError::LeaseLost);
            }
        }
        Checkpoint::ImportPage(_) => {}
        Checkpoint::Publish(published) => {
            let now = crate::mapper::table::timestamp_text(&now);
            for row in &published.rows {
                let args = vec![
                    row.id.into(),
                    published.owner.clone().into(),
                    row.uri.clone().into(),
                    row.cid.clone().into(),
                    row.rev.clone().into(),
                    now.clone().into(),
                ];
                if tx.run(&MARK_PUBLISHED, args).await? == 0 {
                    return Err(StoreError::LeaseLost);
                }
            }
        }
    }
    // 6. The change log, last: the append lock is held only for this
    // statement and the COMMIT.
    if let Some(log) = log.filter(|l| !l.is_empty()) {
        stats.last_seq = Some(tx.append(&log).await?);
        change_log::count(&mut stats, |t| tx.table_name(t).to_owned(), &log);
    }
    match finish {
        Finish::Commit => tx.commit().await?,
        Finish::Rollback => tx.rollback().await?,
    }
    Ok(stats)
}

#[cfg(test)]
pub(super) mod tests;
