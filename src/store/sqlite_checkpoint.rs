//! WAL checkpoints off the writer's thread: a second thread with its own
//! connection copies committed WAL frames back into the database file
//! while the writer commits the next batch.
//!
//! Owns: that thread, its connection and when it runs (after the writer's
//! commits, at most one pending request and one checkpoint per
//! [`MIN_INTERVAL`]). Does not own: anything the
//! data depends on. A checkpoint only moves committed pages from the WAL
//! into the main file; `PASSIVE` never waits for or blocks the writer or
//! readers, and a checkpoint cut short is simply continued by the next one.
//!
//! Why: SQLite's automatic checkpoint (every 1,000 WAL pages) runs inside
//! the committing connection's `COMMIT`, and was about a sixth of the
//! writer thread's time. The writer connection raises its own threshold
//! ([`WRITER_AUTOCHECKPOINT`]); parity's pool connections take the same
//! threshold (their small bookkeeping commits otherwise paid for whole
//! checkpoints); other processes keep theirs.
//!
//! The threshold is not only a fallback: the WAL restarts from its start
//! only when a write transaction begins after a checkpoint that copied
//! every frame, and a writer that commits back to back has always added
//! frames by the time this thread finishes. So under a steady load the WAL
//! grows to the threshold and the writer checkpoints in its own `COMMIT`
//! each time (copying what this thread has not, and syncing the file). At
//! 10,000 pages that was 13 % of the writer's samples with the feed on,
//! with the writer stalled in `fsync`; at 40,000 the consumer wrote 30–42 %
//! more rows/s over 1M events (100,000 gained nothing more; BENCHMARKS.md,
//! session 10). The price is a larger WAL: up to about 160 MB between
//! restarts, more while a reader holds an old snapshot (0.3–0.6 GB at the
//! end of the 1M-event bench, whose cursor poll reads every 50 ms), cut
//! back to [`WAL_SIZE_LIMIT`] at the next restart.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::sqlite_writer::WriterConfig;

/// The writer connection's `wal_autocheckpoint`, in pages (4 KiB each):
/// forty times SQLite's default, so the writer's own checkpoints (see the
/// module doc) come every 160 MB of WAL instead of every 40.
pub const WRITER_AUTOCHECKPOINT: u32 = 40_000;

/// `PRAGMA journal_size_limit` of parity's connections, in bytes: the WAL
/// file is cut back to this size (the threshold's worth of 4 KiB pages)
/// whenever it restarts from its start. SQLite otherwise keeps the file at
/// its high-water mark: while a reader holds an old snapshot no checkpoint
/// can restart the WAL, the file grows past the threshold, and it stayed
/// that size (1.56 GB on a 10M-event run whose live WAL was 235 MB;
/// BENCHMARKS.md, session 11).
pub const WAL_SIZE_LIMIT: u64 = WRITER_AUTOCHECKPOINT as u64 * 4096;

/// The least time between two checkpoints of the thread. After every
/// commit, small commits (an import's pages of ~100 rows) had it copy
/// nearly every WAL frame on its own: as many page writes as the writer's.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The handle the writer keeps; dropping it ends the thread.
pub(super) struct Checkpointer {
    kick: mpsc::SyncSender<()>,
}

impl Checkpointer {
    pub(super) fn spawn(cfg: &WriterConfig) -> std::io::Result<Checkpointer> {
        // One pending request is enough: a checkpoint covers every frame
        // committed before it starts.
        let (kick, rx) = mpsc::sync_channel(1);
        let cfg = cfg.clone();
        std::thread::Builder::new()
            .name("parity-sqlite-checkpoint".into())
            .spawn(move || run(cfg, rx))?;
        Ok(Checkpointer { kick })
    }

    /// Asks for a checkpoint after a commit; never waits.
    pub(super) fn request(&self) {
        let _ = self.kick.try_send(());
    }
}

fn run(cfg: WriterConfig, kicks: mpsc::Receiver<()>) {
    let mut conn: Option<Connection> = None;
    let mut last: Option<Instant> = None;
    while kicks.recv().is_ok() {
        // At most one checkpoint per interval: the commits in between
        // collapse into one request, and a page they all changed is
        // copied once.
        if let Some(wait) = last.map(|t| MIN_INTERVAL.saturating_sub(t.elapsed()))
            && !wait.is_zero()
        {
            std::thread::sleep(wait);
        }
        last = Some(Instant::now());
        if conn.is_none() {
            conn = Connection::open(&cfg.path)
                .and_then(|c| c.busy_timeout(cfg.busy_timeout).map(|()| c))
                .map_err(|e| tracing::warn!(error = %e, "Cannot open the SQLite checkpoint connection; SQLite's own checkpoints continue."))
                .ok();
        }
        let Some(c) = &conn else { continue };
        if let Err(e) = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "SQLite WAL checkpoint failed; it is tried again after the next commit.");
        }
    }
}
