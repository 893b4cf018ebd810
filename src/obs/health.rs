//! What `/health` and `/ready` answer, from state the running command
//! updates through [`super::Obs`].
//!
//! Owns: the liveness rules. Healthy means connected, the database
//! reachable, and progress within `max_stale`. Progress is any message or
//! ping from the stream, a new connection or a commit, so a quiet stream
//! whose pings still arrive stays healthy, and a silent one turns `stale`
//! before the source's idle watchdog reconnects it. Ready means migrations
//! ran and the first connection (or, for `import`, the first unit of work)
//! is up; it never goes back. Does not own HTTP (see `server`) or any
//! decision to reconnect (the source's watchdog does that).
//!
//! Everything is a relaxed atomic: writers are the hot path (one store per
//! message), readers are occasional probes that tolerate a stale view.
//! Only [`super::Obs`] holds a [`Health`]; everyone else reports through it.
//! The lag (event time of the last commit) lives in `Obs`, not here.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

/// Why `/health` answers 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unhealthy {
    /// No stream connection (connecting, backing off, or shutting down).
    Disconnected,
    /// The last commit failed and is being retried.
    DatabaseUnreachable,
    /// Connected, but nothing arrived or committed for `max_stale`.
    Stale,
    /// The publish worker runs, but the oldest open outbox row was
    /// enqueued longer than `health.max_outbox_age` ago.
    OutboxStuck,
}

impl Unhealthy {
    /// The `reason` in the JSON body; also what `parity health` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Unhealthy::Disconnected => "disconnected",
            Unhealthy::DatabaseUnreachable => "database_unreachable",
            Unhealthy::Stale => "stale",
            Unhealthy::OutboxStuck => "outbox_stuck",
        }
    }
}

/// Why `/ready` answers 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    /// Migrations have not finished.
    Migrating,
    /// Migrated, but the first connection is not up yet.
    Connecting,
}

impl NotReady {
    pub fn as_str(self) -> &'static str {
        match self {
            NotReady::Migrating => "migrating",
            NotReady::Connecting => "connecting",
        }
    }
}

/// Liveness state of one running command.
#[derive(Debug)]
pub(super) struct Health {
    max_stale: Duration,
    /// Reference point for `last_progress_ms`.
    epoch: Instant,
    migrated: AtomicBool,
    started: AtomicBool,
    connected: AtomicBool,
    database_ok: AtomicBool,
    /// Milliseconds after `epoch` of the last progress; 0 before any.
    last_progress_ms: AtomicU64,
    /// The publish worker found its oldest open row too old.
    outbox_stuck: AtomicBool,
}

impl Health {
    pub(super) fn new(max_stale: Duration) -> Health {
        Health {
            max_stale,
            epoch: Instant::now(),
            migrated: AtomicBool::new(false),
            started: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            database_ok: AtomicBool::new(true),
            last_progress_ms: AtomicU64::new(0),
            outbox_stuck: AtomicBool::new(false),
        }
    }

    /// Migrations ran.
    pub(super) fn mark_migrated(&self) {
        self.migrated.store(true, Relaxed);
    }

    /// For commands without a stream (`import`): migrated, started and
    /// making progress from now on. Keep calling [`Health::touch`] as work
    /// completes.
    pub(super) fn mark_ready(&self) {
        self.migrated.store(true, Relaxed);
        self.set_connected(true);
    }

    /// The stream connection came up (counts as progress) or went away.
    pub(super) fn set_connected(&self, up: bool) {
        if up {
            self.started.store(true, Relaxed);
            self.touch();
        }
        self.connected.store(up, Relaxed);
    }

    /// Something arrived or was done: a message, a ping, a fetched page.
    pub(super) fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_progress_ms.store(ms.max(1), Relaxed);
    }

    /// A commit succeeded (`true`) or failed and is being retried.
    pub(super) fn set_database_reachable(&self, ok: bool) {
        self.database_ok.store(ok, Relaxed);
    }

    /// Whether the oldest open outbox row is older than allowed.
    pub(super) fn set_outbox_stuck(&self, stuck: bool) {
        self.outbox_stuck.store(stuck, Relaxed);
    }

    /// A batch committed: the database is reachable and work progressed.
    pub(super) fn committed(&self) {
        self.set_database_reachable(true);
        self.touch();
    }

    /// `Ok` while healthy; otherwise the first reason, in the order
    /// disconnected, database unreachable, stale, outbox stuck.
    pub(super) fn check(&self) -> Result<(), Unhealthy> {
        self.check_at(self.epoch.elapsed())
    }

    /// [`Health::check`] as seen `now` after this state was created.
    pub(super) fn check_at(&self, now: Duration) -> Result<(), Unhealthy> {
        if !self.connected.load(Relaxed) {
            return Err(Unhealthy::Disconnected);
        }
        if !self.database_ok.load(Relaxed) {
            return Err(Unhealthy::DatabaseUnreachable);
        }
        let last = Duration::from_millis(self.last_progress_ms.load(Relaxed));
        if now.saturating_sub(last) > self.max_stale {
            return Err(Unhealthy::Stale);
        }
        if self.outbox_stuck.load(Relaxed) {
            return Err(Unhealthy::OutboxStuck);
        }
        Ok(())
    }

    /// `Ok` once migrations ran and the first connection came up.
    pub(super) fn ready(&self) -> Result<(), NotReady> {
        if !self.migrated.load(Relaxed) {
            Err(NotReady::Migrating)
        } else if !self.started.load(Relaxed) {
            Err(NotReady::Connecting)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disconnected_then_live_then_stale() {
        let h = Health::new(Duration::from_secs(60));
        assert_eq!(h.check(), Err(Unhealthy::Disconnected));
        assert_eq!(h.ready(), Err(NotReady::Migrating));
        h.mark_migrated();
        assert_eq!(h.ready(), Err(NotReady::Connecting));
        h.set_connected(true);
        assert_eq!(h.check(), Ok(()));
        assert_eq!(h.ready(), Ok(()));
        let later = h.epoch.elapsed() + Duration::from_secs(61);
        assert_eq!(h.check_at(later), Err(Unhealthy::Stale));
        h.touch();
        assert_eq!(h.check(), Ok(()));
        h.set_database_reachable(false);
        assert_eq!(h.check(), Err(Unhealthy::DatabaseUnreachable));
        h.committed();
        assert_eq!(h.check(), Ok(()));
        h.set_connected(false);
        assert_eq!(h.check(), Err(Unhealthy::Disconnected));
        assert_eq!(h.ready(), Ok(()), "ready never goes back");
    }
}
