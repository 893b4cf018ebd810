//! Quarantine: when the database refuses a batch's data, find the records
//! it refuses, leave them out, and commit the rest with the checkpoint.
//!
//! Owns: the bisection ([`bisect`], pure over a trial function) and
//! [`Store::quarantine`], which runs it with trial commits (every statement
//! of the real commit, then rolled back) and makes the one real commit.
//! Does not own: deciding that an error is a rejection
//! ([`StoreError::is_rejection`]), counting and logging what was left out
//! (the writer and the importer do).
//!
//! Units are the batch's mutations (one record each) and its per-DID repo
//! changes (account, identity, resync, rev). The checkpoint is part of
//! every trial: if it fails alone, the fault is ours (a negative cursor, a
//! lost lease), nothing is left out, and the original error stops the
//! caller. Rows, cursor and import page still commit in one transaction,
//! so the stored cursor never passes rows that were not written; a crash
//! during the trials replays the batch and bisects again.
//!
//! Cost: one trial per node of the bisection tree, about `2·k·log2(n)`
//! trials for `k` refused units among `n`, only when a batch is refused.

use std::collections::HashMap;
use std::future::Future;

use super::commit::Finish;
use super::{CommitStats, Store, StoreError};
use crate::batch::{Batch, Checkpoint};
use crate::event::Did;

/// One unit the database refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The record's at-uri, or `at://DID` for a repo change.
    pub uri: String,
}

/// A refused batch, committed without what the database refused.
#[derive(Debug)]
pub struct Quarantined {
    pub stats: CommitStats,
    /// In batch order: mutations first, then repo changes by DID.
    pub rejected: Vec<Rejected>,
    /// The error that made the batch fail first.
    pub error: StoreError,
}

/// Indices (into `0..n`) of the units whose trial fails on its own, given
/// that the whole set fails. `fails(set)`: `Ok(true)` when the database
/// refuses that subset, `Ok(false)` when it takes it, `Err` for any other
/// error (the search stops with it). Splits in halves, depth first; a
/// subset that passes is never split.
pub async fn bisect<E, F, Fut>(n: usize, mut fails: F) -> Result<Vec<usize>, E>
where
    F: FnMut(Vec<usize>) -> Fut,
    Fut: Future<Output = Result<bool, E>>,
{
    let mut bad = Vec::new();
    // The whole set is known to fail: start with it split (or settled).
    let mut todo: Vec<Vec<usize>> = vec![(0..n).collect()];
    let mut first = true;
    while let Some(set) = todo.pop() {
        if set.is_empty() {
            continue;
        }
        if !first && !fails(set.clone()).await? {
            continue;
        }
        first = false;
        if set.len() == 1 {
            bad.push(set[0]);
            continue;
        }
        let right = set[set.len() / 2..].to_vec();
        let left = set[..set.len() / 2].to_vec();
        // Popped left first, so offenders come out in order.
        todo.push(right);
        todo.push(left);
    }
    bad.sort_unstable();
    Ok(bad)
}

/// The units of `batch`: mutation indices, then DIDs of repo changes.
fn repo_dids(batch: &Batch) -> Vec<&Did> {
    let mut dids: Vec<&Did> = batch.repos.keys().collect();
    dids.sort();
    dids
}

/// `batch` with only the units in `keep` (sorted indices: mutations are
/// `0..m`, repo changes `m..`), and its checkpoint; an import page counts
/// the `dropped` records as failed.
fn subset(batch: &Batch, dids: &[&Did], keep: &[usize], dropped: u64) -> Batch {
    let m = batch.mutations.len();
    let mutations = keep
        .iter()
        .filter(|&&i| i < m)
        .map(|&i| batch.mutations[i].clone())
        .collect();
    let repos: HashMap<_, _> = keep
        .iter()
        .filter(|&&i| i >= m)
        .map(|&i| (dids[i - m].clone(), batch.repos[dids[i - m]].clone()))
        .collect();
    let mut checkpoint = batch.checkpoint.clone();
    if let Checkpoint::ImportPage(page) = &mut checkpoint {
        page.failed += dropped;
    }
    Batch {
        mutations,
        repos,
        last_time_us: batch.last_time_us,
        events: batch.events,
        checkpoint,
    }
}

impl Store {
    /// Commits `batch`, which the database refused with `error` (a
    /// rejection), without the units it refuses; see the module doc.
    /// `Err`: the checkpoint alone is refused (returns `error`), no unit is
    /// refused on its own, or another error (transient ones included, so
    /// the caller retries the whole batch).
    pub async fn quarantine(
        &self,
        batch: &Batch,
        error: StoreError,
    ) -> Result<Quarantined, StoreError> {
        let dids = repo_dids(batch);
        let n = batch.mutations.len() + dids.len();
        let trial = |keep: Vec<usize>| {
            let b = std::sync::Arc::new(subset(batch, &dids, &keep, 0));
            async move {
                match self
                    .run_commit(super::Held::Shared(&b), Finish::Rollback)
                    .await
                {
                    Ok(_) => Ok(false),
                    Err(e) if e.is_rejection() => Ok(true),
                    Err(e) => Err(e),
                }
            }
        };
        if trial(Vec::new()).await? {
            return Err(error);
        }
        let bad = bisect(n, trial).await?;
        if bad.is_empty() {
            return Err(error);
        }
        let keep: Vec<usize> = (0..n).filter(|i| bad.binary_search(i).is_err()).collect();
        let m = batch.mutations.len();
        let dropped = bad.iter().filter(|&&i| i < m).count() as u64;
        let stats = self
            .run_commit(
                super::Held::Shared(&std::sync::Arc::new(subset(batch, &dids, &keep, dropped))),
                Finish::Commit,
            )
            .await?;
        let rejected = bad
            .iter()
            .map(|&i| Rejected {
                uri: match batch.mutations.get(i) {
                    Some(mutation) => mutation.uri().to_owned(),
                    None => format!("at://{}", dids[i - m]),
                },
            })
            .collect();
        Ok(Quarantined {
            stats,
            rejected,
            error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// Runs [`bisect`] with `bad` as the refused units; returns what it
    /// found and how many trials it made.
    fn run(n: usize, bad: &[usize]) -> (Vec<usize>, usize) {
        let trials = Cell::new(0);
        let found = futures_executor(bisect(n, |set: Vec<usize>| {
            trials.set(trials.get() + 1);
            let hit = set.iter().any(|i| bad.contains(i));
            async move { Ok::<_, ()>(hit) }
        }))
        .unwrap();
        (found, trials.get())
    }

    /// A tiny executor: the futures here never wait.
    fn futures_executor<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn finds_every_refused_unit() {
        assert_eq!(run(1, &[0]).0, vec![0]);
        assert_eq!(run(50, &[17]).0, vec![17]);
        assert_eq!(run(50, &[0, 49]).0, vec![0, 49]);
        assert_eq!(run(7, &[1, 2, 3, 4, 5]).0, vec![1, 2, 3, 4, 5]);
        let all: Vec<usize> = (0..9).collect();
        assert_eq!(run(9, &all).0, all);
    }

    #[test]
    fn one_refused_unit_among_5000_takes_few_trials() {
        let (found, trials) = run(5_000, &[4_321]);
        assert_eq!(found, vec![4_321]);
        // Two trials per level of a 13-level tree.
        assert!(trials <= 2 * 13, "{trials} trials");
    }

    #[test]
    fn other_errors_stop_the_search() {
        let r = futures_executor(bisect(8, |set: Vec<usize>| async move {
            if set.len() == 2 {
                Err("connection lost")
            } else {
                Ok(true)
            }
        }));
        assert_eq!(r, Err("connection lost"));
    }

    #[test]
    fn no_unit_refused_alone_finds_nothing() {
        // The set fails only as a whole (two rows that clash).
        let (found, _) = {
            let f = futures_executor(bisect(4, |set: Vec<usize>| async move {
                Ok::<_, ()>(set.len() == 4)
            }));
            (f.unwrap(), 0)
        };
        assert!(found.is_empty());
    }
}
