//! WAL checkpoints off the writer's thread: a second thread with its own
//! connection copies committed WAL frames back into the database file
//! while the writer commits the next batch.
//!
//! Owns: that thread, its connection and when it runs (after each commit
//! of the writer, at most one pending request). Does not own: anything the
//! data depends on. A checkpoint only moves committed pages from the WAL
//! into the main file; `PASSIVE` never waits for or blocks the writer or
//! readers, and a checkpoint cut short is simply continued by the next one.
//!
//! Why: SQLite's automatic checkpoint (every 1,000 WAL pages) runs inside
//! the committing connection's `COMMIT`, and was about a sixth of the
//! writer thread's time. The writer connection raises its own threshold
//! tenfold ([`WRITER_AUTOCHECKPOINT`]), so it checkpoints itself only if
//! this thread falls behind or cannot open its connection; parity's pool
//! connections take the same threshold (their small bookkeeping commits
//! otherwise paid for whole checkpoints); other processes keep theirs.

use std::sync::mpsc;

use rusqlite::Connection;

use super::sqlite_writer::WriterConfig;

/// The writer connection's `wal_autocheckpoint`, in pages: ten times
/// SQLite's default, a fallback that bounds the WAL (about 40 MB) if
/// checkpoints here fall behind.
pub(super) const WRITER_AUTOCHECKPOINT: u32 = 10_000;

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
    while kicks.recv().is_ok() {
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
