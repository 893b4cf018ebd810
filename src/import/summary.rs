//! The outcome of each account of an import run, and of the whole run.
//!
//! Owns: how one DID ended ([`DidStatus`]), how that is reported (the
//! `DID: failed: …` line above the progress bars and the per-DID log line),
//! and the run's totals with the final summary line that `parity import`
//! and `parity resume` print. Does not own the exit code's meaning beyond
//! [`Summary::is_success`], nor any IO besides printing and logging.

use std::fmt;

use super::discover::Collection;
use super::failure::DidError;
use super::job::Counts;
use super::pair::NotClaimed;
use super::progress::Progress;

/// One reason per collection of a DID, shown as `COLLECTION: WHY; …` in
/// run order.
#[derive(Debug)]
pub struct PerCollection<T>(pub Vec<(Collection, T)>);

impl<T> Default for PerCollection<T> {
    fn default() -> Self {
        PerCollection(Vec::new())
    }
}

impl<T: fmt::Display> fmt::Display for PerCollection<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (c, why)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{c}: {why}")?;
        }
        Ok(())
    }
}

/// How one DID ended.
#[derive(Debug)]
pub enum DidStatus {
    Completed,
    /// Nothing to do: already imported, or another importer has it.
    Skipped(PerCollection<NotClaimed>),
    Failed(DidError),
    /// The repo can never be imported (account deleted, `RepoNotFound`,
    /// `RepoDeactivated`): its pending work ended `gone`, with this reason.
    Gone(String),
    Interrupted,
}

/// One DID's result.
#[derive(Debug)]
pub struct DidOutcome {
    /// The DID, or the input as given when it did not resolve to one.
    pub did: String,
    pub counts: Counts,
    pub status: DidStatus,
}

impl DidOutcome {
    /// A DID (or input) that failed before any of its collections ran.
    pub fn failed(did: &str, error: DidError) -> DidOutcome {
        DidOutcome {
            did: did.to_owned(),
            counts: Counts::default(),
            status: DidStatus::Failed(error),
        }
    }

    /// A DID (or input) interrupted before any of its collections ran.
    pub fn interrupted(did: &str) -> DidOutcome {
        DidOutcome {
            did: did.to_owned(),
            counts: Counts::default(),
            status: DidStatus::Interrupted,
        }
    }

    /// Prints a failure above the bars and logs the outcome (one line per
    /// DID; an interruption is reported by the summary only).
    pub fn report(&self, progress: &Progress) {
        match &self.status {
            DidStatus::Failed(e) => {
                let line = format!("{}: failed: {e}", self.did);
                progress.println(&crate::obs::Escaped(&line).to_string());
                tracing::warn!(did = ?self.did, error = %e, "import failed");
            }
            DidStatus::Skipped(why) => {
                tracing::info!(did = ?self.did, why = %why, "import skipped")
            }
            DidStatus::Gone(why) => {
                tracing::info!(did = ?self.did, why = %crate::obs::Escaped(why), "repo gone; its pending imports are ended")
            }
            DidStatus::Completed => tracing::info!(
                did = ?self.did, synced = self.counts.synced, skipped = self.counts.skipped,
                failed = self.counts.failed, "import completed"
            ),
            DidStatus::Interrupted => {}
        }
    }
}

/// The whole run's result.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub records: Counts,
    pub completed: u64,
    pub skipped: u64,
    pub failed: u64,
    /// DIDs whose repo is gone (their pending work ended, not failed).
    pub gone: u64,
    pub interrupted: u64,
    /// Input lines that were not a DID or handle (reported and skipped).
    pub invalid_inputs: u64,
    /// `import --all`: the relay listing, as far as the database knows.
    pub relay: Option<RelayTotals>,
}

/// The listing side of an `import --all` run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RelayTotals {
    /// Repos the relay listed for this command, over every run of it.
    pub listed: i64,
    pub queued: i64,
    pub inactive: i64,
    pub malformed: i64,
    /// Queued DIDs not completed yet (pending, in progress, failed).
    pub left: i64,
    /// Whether every listing of the command is complete.
    pub complete: bool,
    /// `collection: error` of the listings that failed in this run.
    pub failures: Vec<String>,
}

impl RelayTotals {
    /// The line printed before the summary.
    pub fn line(&self) -> String {
        let mut s = format!(
            "relay listing {}: {} repos listed, {} queued, {} inactive skipped, {} malformed skipped; {} queued DIDs not completed",
            if self.complete {
                "complete"
            } else {
                "incomplete (run the same command again to continue)"
            },
            self.listed,
            self.queued,
            self.inactive,
            self.malformed,
            self.left
        );
        for f in &self.failures {
            s.push_str(&format!("; failed: {f}"));
        }
        s
    }
}

impl Summary {
    /// Counts one DID's outcome.
    pub fn add(&mut self, o: &DidOutcome) {
        self.records += o.counts;
        match o.status {
            DidStatus::Completed => self.completed += 1,
            DidStatus::Skipped(_) => self.skipped += 1,
            DidStatus::Failed(_) => self.failed += 1,
            DidStatus::Gone(_) => self.gone += 1,
            DidStatus::Interrupted => self.interrupted += 1,
        }
    }

    /// Whether the exit code should say something went wrong.
    pub fn is_success(&self) -> bool {
        self.failed == 0
            && self.interrupted == 0
            && self.relay.as_ref().is_none_or(|r| r.failures.is_empty())
    }

    /// The final summary line.
    pub fn line(&self) -> String {
        let mut s = format!(
            "import finished: {} records synced, {} skipped, {} failed; {} DIDs completed, {} skipped, {} failed",
            self.records.synced,
            self.records.skipped,
            self.records.failed,
            self.completed,
            self.skipped,
            self.failed
        );
        if self.gone > 0 {
            s.push_str(&format!(", {} gone", self.gone));
        }
        if self.interrupted > 0 {
            s.push_str(&format!(", {} interrupted", self.interrupted));
        }
        if self.invalid_inputs > 0 {
            s.push_str(&format!(
                "; {} invalid input lines skipped",
                self.invalid_inputs
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Nsid;
    use crate::import::failure::PairError;
    use crate::import::identity::IdentityError;

    fn col(s: &str) -> Collection {
        Collection::Nsid(Nsid::parse(s).unwrap())
    }

    fn outcome(status: DidStatus, synced: u64) -> DidOutcome {
        DidOutcome {
            did: "did:plc:a".into(),
            counts: Counts {
                synced,
                skipped: 1,
                failed: 0,
            },
            status,
        }
    }

    #[test]
    fn the_line_names_every_total() {
        let mut s = Summary::default();
        s.add(&outcome(DidStatus::Completed, 10));
        s.add(&outcome(
            DidStatus::Skipped(PerCollection(vec![(
                col("app.bsky.feed.post"),
                NotClaimed::AlreadyImported,
            )])),
            0,
        ));
        assert!(s.is_success());
        assert_eq!(
            s.line(),
            "import finished: 10 records synced, 2 skipped, 0 failed; 1 DIDs completed, 1 skipped, 0 failed"
        );
        s.add(&outcome(
            DidStatus::Failed(DidError::Identity(IdentityError::Invalid("x".into()))),
            0,
        ));
        s.add(&outcome(DidStatus::Interrupted, 3));
        s.invalid_inputs = 2;
        assert!(!s.is_success());
        assert_eq!(
            s.line(),
            "import finished: 13 records synced, 4 skipped, 0 failed; 1 DIDs completed, 1 skipped, 1 failed, 1 interrupted; 2 invalid input lines skipped"
        );
    }

    #[test]
    fn an_interruption_alone_is_not_a_success() {
        let mut s = Summary::default();
        s.add(&outcome(DidStatus::Interrupted, 0));
        assert!(!s.is_success());
        assert_eq!(s.interrupted, 1);
    }

    #[test]
    fn per_collection_reasons_join_in_run_order() {
        let skipped = PerCollection(vec![
            (col("app.bsky.feed.post"), NotClaimed::AlreadyImported),
            (col("app.bsky.feed.like"), NotClaimed::Busy),
        ]);
        assert_eq!(
            skipped.to_string(),
            "app.bsky.feed.post: already imported (use --force to import again); app.bsky.feed.like: being imported by another process"
        );
        let failed = DidError::Collections(PerCollection(vec![
            (
                Collection::Unreadable("bad name".into()),
                PairError::InvalidCollection("bad name".into()),
            ),
            (
                col("app.bsky.feed.like"),
                PairError::Job(super::super::job::JobError::RepeatedCursor),
            ),
        ]));
        assert_eq!(
            failed.to_string(),
            "bad name: invalid collection \"bad name\"; app.bsky.feed.like: the PDS returned a cursor it had already given (a cycle): listing stopped"
        );
        assert_eq!(PerCollection::<NotClaimed>::default().to_string(), "");
    }
}
