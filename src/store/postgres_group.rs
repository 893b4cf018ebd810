//! Group commit on PostgreSQL for import pages: the pages waiting to be
//! committed at once are written in one transaction, each table's rows of
//! all of them in one statement, and each caller hears back once that
//! transaction has committed.
//!
//! Owns: the queue of pages, the committer tasks that drain it, which
//! pages form a group (import pages of distinct DIDs, `commit::groups`,
//! up to [`MAX_PAGES`] pages or [`MAX_ROWS`] rows), and what happens when
//! a group fails (each of its pages is committed again alone, so a page
//! whose lease was taken over or whose row the database refuses fails
//! alone, and its caller handles that as before). Does not own: the
//! statements (`commit.rs`, `postgres.rs`).
//!
//! Why: an import of many small repos commits a transaction per page of
//! about a hundred rows, and on PostgreSQL each transaction and each
//! statement costs the server about as much as hundreds of rows do (the
//! COPY baseline at 100 rows per transaction or per statement runs at
//! 55-70 % of its speed at 5,000, BENCHMARKS.md session 23). A group of
//! k pages is one `BEGIN`, one upsert per table, one revs statement and one
//! `COMMIT` instead of k of each.
//!
//! Invariants: a page is acknowledged only after the `COMMIT` that holds
//! it; the pages of one group touch distinct repos (a page of a DID already
//! in the group waits for the next group), so writing them step by step
//! over all of them is the result each would have alone; the DID locks of
//! every page are taken, sorted, when the transaction begins, as for a
//! single page. With the change log on, pages are not grouped.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::commit;
use super::did_locks;
use super::postgres::PgStore;
use super::{CommitStats, StoreError};
use crate::batch::Batch;

/// Most pages in one group.
pub(super) const MAX_PAGES: usize = 16;
/// A group stops taking pages once it holds this many rows.
pub(super) const MAX_ROWS: usize = 10_000;

type Reply = oneshot::Sender<Result<CommitStats, StoreError>>;

struct Job {
    batch: Arc<Batch>,
    reply: Reply,
}

/// The queues of the committer tasks, one each. Dropping the last clone
/// of the store that holds them closes the queues, and the tasks end.
pub(super) struct PgGroup {
    queues: Vec<mpsc::UnboundedSender<Job>>,
}

impl PgGroup {
    /// Starts `committers` tasks writing through `store` (which must not
    /// itself group: the tasks would keep their own queues open).
    pub(super) fn start(store: &PgStore, committers: usize) -> PgGroup {
        let queues = (0..committers.max(1))
            .map(|_| {
                let (queue, rx) = mpsc::unbounded_channel();
                tokio::spawn(run(store.clone(), rx));
                queue
            })
            .collect();
        PgGroup { queues }
    }

    /// Commits `batch` (one that [`commit::groups`]) in the next group of
    /// the committer its DID's lock bucket belongs to: two committers
    /// never hold the same DID lock, so their transactions never wait for
    /// each other (with one shared queue, the two collections of a repo
    /// went to two groups, and each group waited for the other's repos:
    /// 13 s of lock waits in a 10 s import of 2,000 repos).
    pub(super) async fn commit(&self, batch: Arc<Batch>) -> Result<CommitStats, StoreError> {
        let (reply, answer) = oneshot::channel();
        let closed = || {
            StoreError::Sql(sqlx::Error::Configuration(
                "the group committer has stopped".into(),
            ))
        };
        let bucket = commit::page_did(&batch).map_or(0, |d| did_locks::bucket(d) as usize);
        self.queues[bucket % self.queues.len()]
            .send(Job { batch, reply })
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

/// One committer: takes every page waiting in its queue (up to a group's
/// bounds), commits them together, answers each. Pages passed over (their
/// DID was in the group) go first into the next group, before the queue
/// is waited on.
async fn run(store: PgStore, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut deferred: VecDeque<Job> = VecDeque::new();
    loop {
        if deferred.is_empty() {
            match rx.recv().await {
                Some(job) => deferred.push_back(job),
                None => return,
            }
        }
        let group = take_group(&mut deferred, || rx.try_recv().ok());
        commit_group(&store, group).await;
    }
}

/// The next group: the pages of `deferred` first, then those waiting in
/// `next`, until a bound is reached or nothing waits. A page whose DID is
/// already in the group is passed over and left in `deferred` (in order,
/// ahead of the rest) for a later group: the two collections of a repo
/// arrive together, and stopping at the first repeat made groups of two.
fn take_group(deferred: &mut VecDeque<Job>, mut next: impl FnMut() -> Option<Job>) -> Vec<Job> {
    let mut group: Vec<Job> = Vec::new();
    let mut passed = VecDeque::new();
    let mut rows = 0;
    while group.len() < MAX_PAGES && rows < MAX_ROWS {
        let Some(job) = deferred.pop_front().or_else(&mut next) else {
            break;
        };
        let did = commit::page_did(&job.batch);
        if group.iter().any(|j| commit::page_did(&j.batch) == did) {
            passed.push_back(job);
            continue;
        }
        rows += job.batch.mutations.len();
        group.push(job);
    }
    passed.append(deferred);
    *deferred = passed;
    group
}

/// Commits `group` as one transaction; if that fails and it held more than
/// one page, each page again alone.
async fn commit_group(store: &PgStore, group: Vec<Job>) {
    if group.len() > 1 {
        let batches: Vec<&Batch> = group.iter().map(|j| &*j.batch).collect();
        if let Ok(all) = store.commit_group(&batches).await {
            for (job, stats) in group.into_iter().zip(all) {
                let _ = job.reply.send(Ok(stats));
            }
            return;
        }
    }
    for job in group {
        let result = store.commit(&job.batch, commit::Finish::Commit).await;
        let _ = job.reply.send(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{Checkpoint, ImportPage};
    use crate::event::Did;
    use crate::mapper::{Mutation, Row, TableId};

    fn page(did: &str, rows: usize) -> Job {
        let mutations = (0..rows)
            .map(|i| {
                Mutation::Upsert(Row {
                    table: TableId(0),
                    uri: format!("at://{did}/app.bsky.feed.like/{i}"),
                    did: Did::parse(did).unwrap(),
                    rkey: i.to_string(),
                    cid: "bafy".into(),
                    rev: "3aaa".into(),
                    record: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
                    values: vec![],
                })
            })
            .collect();
        let batch = Batch {
            mutations,
            repos: Default::default(),
            last_time_us: 0,
            events: rows,
            checkpoint: Checkpoint::ImportPage(ImportPage {
                state_id: 1,
                owner: "o".into(),
                cursor: None,
                rev: "3aaa".into(),
                last: true,
                failed: 0,
                lease_until: String::new(),
                sweep: None,
            }),
        };
        Job {
            batch: Arc::new(batch),
            reply: oneshot::channel().0,
        }
    }

    fn dids(group: &[Job]) -> Vec<&str> {
        group
            .iter()
            .map(|j| commit::page_did(&j.batch).unwrap().as_str())
            .collect()
    }

    #[test]
    fn a_group_passes_over_a_repo_it_holds_and_keeps_its_pages_in_order() {
        let mut waiting: Vec<Job> = ["a", "a", "b", "c", "a", "b"]
            .iter()
            .map(|d| page(&format!("did:plc:{d}"), 1))
            .collect();
        waiting.reverse();
        let mut deferred = VecDeque::new();
        let group = take_group(&mut deferred, || waiting.pop());
        assert_eq!(dids(&group), ["did:plc:a", "did:plc:b", "did:plc:c"]);
        let left: Vec<&str> = deferred
            .iter()
            .map(|j| commit::page_did(&j.batch).unwrap().as_str())
            .collect();
        assert_eq!(left, ["did:plc:a", "did:plc:a", "did:plc:b"]);
        let group = take_group(&mut deferred, || None);
        assert_eq!(dids(&group), ["did:plc:a", "did:plc:b"]);
        let group = take_group(&mut deferred, || None);
        assert_eq!(dids(&group), ["did:plc:a"]);
        assert!(deferred.is_empty());
    }

    #[test]
    fn a_group_stops_at_its_bounds_and_when_nothing_waits() {
        let mut waiting: Vec<Job> = (0..MAX_PAGES + 3)
            .map(|i| page(&format!("did:plc:p{i}"), 1))
            .collect();
        let mut deferred = VecDeque::new();
        assert_eq!(take_group(&mut deferred, || waiting.pop()).len(), MAX_PAGES);
        assert!(deferred.is_empty());
        assert_eq!(waiting.len(), 3);

        let mut big = vec![page("did:plc:b", MAX_ROWS), page("did:plc:a", MAX_ROWS / 2)];
        assert_eq!(
            take_group(&mut deferred, || big.pop()).len(),
            2,
            "the page that crosses the row bound is taken"
        );
        let mut more = vec![page("did:plc:c", 1), page("did:plc:a", MAX_ROWS)];
        assert_eq!(
            take_group(&mut deferred, || more.pop()).len(),
            1,
            "a full group takes no more"
        );
        assert_eq!(more.len(), 1);
        assert!(take_group(&mut deferred, || None).is_empty());
    }
}
