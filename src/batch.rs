//! The batcher: collects mutations, repo changes and cursors until a batch is
//! due, then hands over one [`Batch`] that the store commits in one
//! transaction.
//!
//! Owns: flush limits (`max_events`, `max_age`), in-batch convergence (one
//! mutation per URI, the newest rev; account purges drop what they would
//! delete anyway) and the cursor of the last event seen per stream. Does not
//! own: SQL, or convergence against what is already stored (store does that
//! with rev, tombstone and repo-status guards). Pure: no IO, no clocks except
//! the `Instant` passed in.
//!
//! Also owns the `[batch]` and `[accounts]` config sections ([`BatchConfig`],
//! [`AccountsConfig`] → [`PurgePolicy`]).
//!
//! Invariants: every event pushed, filtered or not, is covered by the batch
//! cursor, so the stored cursor covers exactly the events whose effects are
//! in the same transaction. A batch never splits a **frame** (one raw
//! firehose `#commit` carries up to 200 ops that share one `seq`, and a
//! relay resends only `seq > cursor`): the limits close a batch only at a
//! frame's end, so a batch can exceed `max_events` by the rest of one frame
//! (at most 199 events). A stream's cursor moves only when a frame ends,
//! so even a batch taken mid-frame (the reader died mid-message) stores
//! the previous frame's cursor and the cut frame is sent again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::event::{AccountStatus, Cursor, Did};
use crate::mapper::Mutation;

/// Flush limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Flush after this many events (filtered ones count too), at the end
    /// of the frame in progress (a firehose `#commit` is never split).
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Flush when the oldest event in the batch is this old, in milliseconds.
    #[serde(default = "default_max_age_ms")]
    pub max_age_ms: u64,
}

/// Large enough to amortise a transaction, small enough that a batch is
/// under a second of firehose at peak and a few MB of memory.
const fn default_max_events() -> usize {
    5_000
}

/// Bounds how stale the database is on a quiet stream.
const fn default_max_age_ms() -> u64 {
    500
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_events: default_max_events(),
            max_age_ms: default_max_age_ms(),
        }
    }
}

/// What happens to an account's rows on an `#account` event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PurgePolicy {
    /// Statuses whose arrival deletes every row of the DID.
    pub statuses: Vec<AccountStatus>,
}

impl PurgePolicy {
    /// The statuses `cfg` names: `deleted` unless `on_delete = "keep"`,
    /// plus `purge_on`. The message names the key and the bad value.
    pub fn from_config(cfg: &AccountsConfig) -> Result<PurgePolicy, String> {
        let mut statuses = match cfg.on_delete.as_str() {
            "purge" => vec![AccountStatus::Deleted],
            "keep" => Vec::new(),
            other => {
                return Err(format!(
                    "accounts.on_delete is {other:?}; use purge or keep"
                ));
            }
        };
        for s in &cfg.purge_on {
            match AccountStatus::parse(s) {
                st @ (AccountStatus::Takendown
                | AccountStatus::Suspended
                | AccountStatus::Deactivated) => statuses.push(st),
                _ => {
                    return Err(format!(
                        "accounts.purge_on: {s:?} is not a status; use takendown, suspended, deactivated"
                    ));
                }
            }
        }
        Ok(PurgePolicy { statuses })
    }

    pub fn purges(&self, active: bool, status: Option<AccountStatus>) -> bool {
        !active && status.is_some_and(|s| self.statuses.contains(&s))
    }
}

/// What account events do to stored rows (the `[accounts]` section; built
/// into a [`PurgePolicy`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccountsConfig {
    /// `purge` (delete every row of a deleted account) or `keep`.
    #[serde(default = "default_on_delete")]
    pub on_delete: String,
    /// Other statuses that purge too: takendown, suspended, deactivated.
    #[serde(default)]
    pub purge_on: Vec<String>,
}

fn default_on_delete() -> String {
    "purge".into()
}

impl Default for AccountsConfig {
    fn default() -> Self {
        AccountsConfig {
            on_delete: default_on_delete(),
            purge_on: Vec::new(),
        }
    }
}

/// Changes to one row of `parity_repos`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RepoChange {
    /// Newest commit rev seen in this batch.
    pub rev: Option<String>,
    /// New handle from an identity event.
    pub handle: Option<String>,
    /// An identity event arrived: the cached identity (PDS) is stale.
    pub identity: bool,
    /// `(active, status)` from the last account event.
    pub account: Option<(bool, Option<AccountStatus>)>,
    /// Delete every row of this DID before applying the batch's mutations.
    pub purge: bool,
    /// The stream says this repo must be fetched again (`#sync`, broken
    /// `since` chain): the newest such rev. The store queues the re-import
    /// only if it is newer than the DID's stored rev.
    pub resync: Option<String>,
}

/// One unit of work for the store: everything in it commits together.
#[derive(Debug)]
pub struct Batch {
    /// At most one mutation per URI.
    pub mutations: Vec<Mutation>,
    pub repos: HashMap<Did, RepoChange>,
    /// Event time of the last event, µs since the epoch (for lag).
    pub last_time_us: i64,
    /// Events seen, filtered ones included.
    pub events: usize,
    /// Where the source stands once this batch is durable.
    pub checkpoint: Checkpoint,
}

impl Batch {
    /// A copy of every row and the checkpoint. Not `Clone`: a batch is
    /// large, and the hot paths share one (`Store::commit_shared`) instead.
    pub fn copy(&self) -> Batch {
        Batch {
            mutations: self.mutations.clone(),
            repos: self.repos.clone(),
            last_time_us: self.last_time_us,
            events: self.events,
            checkpoint: self.checkpoint.clone(),
        }
    }
}

/// What a batch moves forward, written in the same transaction as its rows,
/// so it is never ahead of them. A batch has exactly one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checkpoint {
    /// The last cursor seen per stream key (a consumed batch; empty when the
    /// batch moves no stream).
    Stream(Vec<(String, Cursor)>),
    /// One page of an import: its listRecords cursor and counters.
    ImportPage(ImportPage),
    /// Outbox rows the PDS accepted: their rows move to `published` in the
    /// same transaction as the records written back.
    Publish(Published),
    /// One writer's share of a consumed batch when several writers commit
    /// in parallel (`database.writers` > 1): the writer's own position per
    /// stream, from which the store derives the stream's low watermark.
    Shard(Shard),
}

/// Where one of several writers stands once its share of a batch is
/// durable: the same stream cursors as the whole batch, stored under the
/// writer's index. The stream's cursor (`parity_cursors`) is the lowest
/// position of all `writers`, so it never passes rows a writer has not
/// committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// This writer, `0..writers`.
    pub writer: u32,
    /// How many writers share the stream.
    pub writers: u32,
    /// The last cursor seen per stream key, as in [`Checkpoint::Stream`].
    pub cursors: Vec<(String, Cursor)>,
}

impl Checkpoint {
    /// The cursor of the stream written last, for a stream checkpoint.
    pub fn last_cursor(&self) -> Option<Cursor> {
        match self {
            Checkpoint::Stream(cursors) => cursors.last().map(|(_, c)| *c),
            Checkpoint::Shard(shard) => shard.cursors.last().map(|(_, c)| *c),
            Checkpoint::ImportPage(_) | Checkpoint::Publish(_) => None,
        }
    }
}

/// One page of an import: its rows commit in the same transaction as the
/// page's cursor, the run's rev and the counters, so a crash loses at most
/// the page in flight; the last page also ends the run (`completed`, lease
/// released) in that transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportPage {
    /// `parity_import_states.id`.
    pub state_id: i64,
    /// The lease owner; the page is refused if the lease was taken over.
    pub owner: String,
    /// Where the next page starts; `None` after the last page.
    pub cursor: Option<String>,
    /// The repo rev this run imports at (every row of it carries it):
    /// stored with the cursor, so the two always describe the same run.
    pub rev: String,
    /// The run's last page: the pair is `completed` by this commit.
    pub last: bool,
    /// Records that failed their mapper (not in `mutations`).
    pub failed: u64,
    /// New lease expiry, RFC 3339.
    pub lease_until: String,
    /// Set on the last page of a complete listing: remove what the repo no
    /// longer has.
    pub sweep: Option<Sweep>,
}

#[cfg(test)]
impl ImportPage {
    /// A last page of state 1, owner `me`, at rev `3a`, lease far ahead.
    pub(crate) fn for_test() -> ImportPage {
        ImportPage {
            state_id: 1,
            owner: "me".into(),
            cursor: None,
            rev: "3a".into(),
            last: true,
            failed: 0,
            lease_until: "2100-01-01T00:00:00Z".into(),
            sweep: None,
        }
    }
}

/// Outbox rows one publish call wrote: the batch's mutations are those
/// records applied locally at the commit's rev, so the local tables show
/// the change at once and the same change arriving later from the stream
/// is stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The lease owner that claimed the rows; refused if the lease moved.
    pub owner: String,
    pub rows: Vec<PublishedRow>,
}

/// One outbox row as the PDS answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedRow {
    /// `parity_outbox.id`.
    pub id: i64,
    pub uri: String,
    /// The record's CID; `None` for a delete.
    pub cid: Option<String>,
    /// The commit rev that wrote it.
    pub rev: String,
}

/// After the last page of a complete listing of one (did, collection) at
/// `rev`: every row of that pair older than `rev` was not in the listing
/// (listed rows were just written at `rev`, or are newer), so the repo no
/// longer has it. Those rows are removed, each leaving a tombstone at `rev`
/// so a late replay of its old create cannot bring it back; rows newer than
/// `rev` (live events during the import) stay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sweep {
    pub did: Did,
    pub collection: crate::event::Nsid,
    /// The collection's table (its mapper's): the only one its URIs are
    /// written to.
    pub table: crate::mapper::TableId,
    /// The repo rev the listing was imported at (never empty).
    pub rev: String,
}

impl Sweep {
    /// The half-open URI range `[lo, hi)` of the pair's records
    /// (`at://DID/COLLECTION/` then every rkey; `0` follows `/` in byte
    /// order).
    pub fn uri_range(&self) -> (String, String) {
        Sweep::range_of(&self.did, &self.collection)
    }

    /// [`Sweep::uri_range`] of `did`'s `collection`.
    pub fn range_of(did: &Did, collection: &crate::event::Nsid) -> (String, String) {
        let base = format!("at://{did}/{collection}");
        (format!("{base}/"), format!("{base}0"))
    }
}

/// What the batcher did with a pushed mutation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Kept,
    /// An equal or newer rev of the same URI is already in the batch.
    Superseded,
    /// The DID was purged earlier in this batch.
    AccountGone,
}

/// Accumulates one batch at a time.
pub struct Batcher {
    max_events: usize,
    max_age: Duration,
    policy: PurgePolicy,
    slots: Vec<Option<Mutation>>,
    by_uri: HashMap<String, usize>,
    repos: HashMap<Did, RepoChange>,
    /// DIDs whose last account event in this batch purged them.
    gone: HashMap<Did, bool>,
    cursors: Vec<(String, Cursor)>,
    last_time_us: i64,
    events: usize,
    opened_at: Option<Instant>,
    /// The last event seen did not end its frame.
    mid_frame: bool,
}

impl Batcher {
    pub fn new(cfg: &BatchConfig, policy: PurgePolicy) -> Batcher {
        Batcher {
            max_events: cfg.max_events.max(1),
            max_age: Duration::from_millis(cfg.max_age_ms),
            policy,
            slots: Vec::new(),
            by_uri: HashMap::new(),
            repos: HashMap::new(),
            gone: HashMap::new(),
            cursors: Vec::new(),
            last_time_us: 0,
            events: 0,
            opened_at: None,
            mid_frame: false,
        }
    }

    /// Records that an event was seen (every event, filtered or not);
    /// `frame_end`: it is the last event of its frame (always, except for
    /// all but the last op of a firehose `#commit`). The stream's cursor
    /// moves to `cursor` only then.
    pub fn seen(
        &mut self,
        stream: &str,
        cursor: Cursor,
        time_us: i64,
        frame_end: bool,
        now: Instant,
    ) {
        self.opened_at.get_or_insert(now);
        self.events += 1;
        self.last_time_us = time_us;
        self.mid_frame = !frame_end;
        if !frame_end {
            return;
        }
        match self.cursors.iter_mut().find(|(s, _)| s == stream) {
            Some((_, c)) => *c = cursor,
            None => self.cursors.push((stream.to_owned(), cursor)),
        }
    }

    /// Adds a record mutation, keeping only the newest rev per URI.
    pub fn push(&mut self, m: Mutation) -> Pushed {
        if self.gone.get(m.did()).copied().unwrap_or(false) {
            return Pushed::AccountGone;
        }
        let repo = self.repos.entry(m.did().clone()).or_default();
        if repo.rev.as_deref().is_none_or(|r| r < m.rev()) {
            repo.rev = Some(m.rev().to_owned());
        }
        match self.by_uri.get(m.uri()) {
            Some(&i) => {
                let newer = self.slots[i]
                    .as_ref()
                    .is_none_or(|old| old.rev() <= m.rev());
                if newer {
                    self.slots[i] = Some(m);
                    Pushed::Kept
                } else {
                    Pushed::Superseded
                }
            }
            None => {
                self.by_uri.insert(m.uri().to_owned(), self.slots.len());
                self.slots.push(Some(m));
                Pushed::Kept
            }
        }
    }

    /// Records a handle change.
    pub fn identity(&mut self, did: &Did, handle: Option<String>) {
        let repo = self.repos.entry(did.clone()).or_default();
        repo.identity = true;
        if let Some(h) = handle {
            repo.handle = Some(h);
        }
    }

    /// Records that the DID's repo must be fetched again, as of `rev`.
    /// Returns `false` (and records nothing) when a commit of this batch
    /// already applied that rev or a newer one: the reference PDS sends
    /// such a `#sync` after an account's first commit and on reactivation,
    /// and there is nothing to fetch. (Revs of earlier batches are compared
    /// in the store.)
    pub fn resync(&mut self, did: &Did, rev: &str) -> bool {
        let repo = self.repos.entry(did.clone()).or_default();
        if repo.rev.as_deref().is_some_and(|r| r >= rev) {
            return false;
        }
        if repo.resync.as_deref().is_none_or(|r| r < rev) {
            repo.resync = Some(rev.to_owned());
        }
        true
    }

    /// Records an account status change; returns whether it purges the DID.
    pub fn account(&mut self, did: &Did, active: bool, status: Option<AccountStatus>) -> bool {
        let purge = self.policy.purges(active, status);
        let repo = self.repos.entry(did.clone()).or_default();
        repo.account = Some((active, status));
        if purge {
            repo.purge = true;
            // Rows of this DID earlier in the batch would be purged anyway.
            for slot in &mut self.slots {
                if slot.as_ref().is_some_and(|m| m.did() == did) {
                    let m = slot.take().expect("checked");
                    self.by_uri.remove(m.uri());
                }
            }
        }
        self.gone.insert(did.clone(), purge);
        purge
    }

    /// Events in the open batch.
    pub fn len(&self) -> usize {
        self.events
    }

    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// Whether the batch is full (never in the middle of a frame).
    pub fn is_full(&self) -> bool {
        self.events >= self.max_events && !self.mid_frame
    }

    /// When the open batch must be flushed, if one is open and not in the
    /// middle of a frame (the rest of the frame is already decoded and on
    /// its way: the batch waits for it).
    pub fn deadline(&self) -> Option<Instant> {
        self.opened_at
            .filter(|_| !self.mid_frame)
            .map(|t| t + self.max_age)
    }

    /// Closes the open batch and returns it, or `None` if nothing was seen.
    pub fn take(&mut self) -> Option<Batch> {
        if self.events == 0 {
            return None;
        }
        self.by_uri.clear();
        self.gone.clear();
        self.opened_at = None;
        self.mid_frame = false;
        let mutations = self.slots.drain(..).flatten().collect();
        Some(Batch {
            mutations,
            repos: std::mem::take(&mut self.repos),
            last_time_us: self.last_time_us,
            events: std::mem::take(&mut self.events),
            checkpoint: Checkpoint::Stream(std::mem::take(&mut self.cursors)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapper::{Row, TableId};
    use serde_json::value::RawValue;

    fn did(s: &str) -> Did {
        Did::parse(s).unwrap()
    }

    fn upsert(d: &str, uri: &str, rev: &str) -> Mutation {
        Mutation::Upsert(Row {
            table: TableId(0),
            uri: uri.into(),
            did: did(d),
            rkey: "k".into(),
            cid: format!("cid-{rev}"),
            rev: rev.into(),
            record: RawValue::from_string("{}".into()).unwrap(),
            values: vec![],
        })
    }

    fn delete(d: &str, uri: &str, rev: &str) -> Mutation {
        Mutation::Delete {
            table: TableId(0),
            uri: uri.into(),
            did: did(d),
            rev: rev.into(),
        }
    }

    fn batcher(max: usize) -> Batcher {
        Batcher::new(
            &BatchConfig {
                max_events: max,
                max_age_ms: 100,
            },
            PurgePolicy {
                statuses: vec![AccountStatus::Deleted],
            },
        )
    }

    #[test]
    fn newest_rev_per_uri_wins() {
        let mut b = batcher(10);
        let now = Instant::now();
        b.seen("s", Cursor(1), 1, true, now);
        assert_eq!(b.push(upsert("did:plc:a", "at://1", "2")), Pushed::Kept);
        assert_eq!(
            b.push(upsert("did:plc:a", "at://1", "1")),
            Pushed::Superseded
        );
        assert_eq!(b.push(delete("did:plc:a", "at://1", "3")), Pushed::Kept);
        assert_eq!(b.push(upsert("did:plc:a", "at://2", "1")), Pushed::Kept);
        b.seen("s", Cursor(7), 7, true, now);
        let batch = b.take().unwrap();
        assert_eq!(batch.mutations.len(), 2);
        assert!(matches!(batch.mutations[0], Mutation::Delete { .. }));
        assert_eq!(
            batch.checkpoint,
            Checkpoint::Stream(vec![("s".to_owned(), Cursor(7))])
        );
        assert_eq!(batch.repos[&did("did:plc:a")].rev.as_deref(), Some("3"));
        assert_eq!(batch.events, 2);
        assert!(b.take().is_none());
    }

    #[test]
    fn purge_drops_earlier_rows_and_blocks_later_ones_until_reactivated() {
        let mut b = batcher(10);
        b.push(upsert("did:plc:a", "at://a1", "1"));
        b.push(upsert("did:plc:b", "at://b1", "1"));
        assert!(b.account(&did("did:plc:a"), false, Some(AccountStatus::Deleted)));
        assert_eq!(
            b.push(upsert("did:plc:a", "at://a2", "2")),
            Pushed::AccountGone
        );
        assert!(!b.account(&did("did:plc:a"), true, None));
        assert_eq!(b.push(upsert("did:plc:a", "at://a3", "3")), Pushed::Kept);
        b.seen("s", Cursor(1), 1, true, Instant::now());
        let batch = b.take().unwrap();
        let uris: Vec<&str> = batch.mutations.iter().map(|m| m.uri()).collect();
        assert_eq!(uris, vec!["at://b1", "at://a3"]);
        assert!(batch.repos[&did("did:plc:a")].purge);
        assert_eq!(batch.repos[&did("did:plc:a")].account, Some((true, None)));
    }

    #[test]
    fn limits() {
        let mut b = batcher(2);
        let t0 = Instant::now();
        assert!(b.deadline().is_none());
        b.seen("s", Cursor(1), 1, true, t0);
        assert_eq!(b.deadline(), Some(t0 + Duration::from_millis(100)));
        assert!(!b.is_full());
        b.seen("s", Cursor(2), 2, true, t0);
        assert!(b.is_full());
        b.take();
        assert!(b.is_empty() && b.deadline().is_none());
    }

    #[test]
    fn cursors_are_kept_per_stream() {
        let mut b = batcher(10);
        let t = Instant::now();
        b.seen("a", Cursor(1), 1, true, t);
        b.seen("b", Cursor(9), 9, true, t);
        b.seen("a", Cursor(3), 3, true, t);
        let batch = b.take().unwrap();
        assert_eq!(
            batch.checkpoint,
            Checkpoint::Stream(vec![
                ("a".to_owned(), Cursor(3)),
                ("b".to_owned(), Cursor(9))
            ])
        );
        assert_eq!(batch.checkpoint.last_cursor(), Some(Cursor(9)));
    }

    /// A firehose frame of 5 ops with `max_events = 2`: the batch is not
    /// full and has no deadline until the frame ends, and only then does
    /// its cursor move.
    #[test]
    fn a_batch_never_splits_a_frame() {
        let mut b = batcher(2);
        let t = Instant::now();
        b.seen("s", Cursor(7), 7, true, t);
        for _ in 0..4 {
            b.seen("s", Cursor(8), 8, false, t);
            assert!(!b.is_full(), "mid-frame");
            assert_eq!(b.deadline(), None, "mid-frame");
        }
        b.seen("s", Cursor(8), 8, true, t);
        assert!(b.is_full());
        assert!(b.deadline().is_some());
        let batch = b.take().unwrap();
        assert_eq!(batch.events, 6);
        assert_eq!(
            batch.checkpoint,
            Checkpoint::Stream(vec![("s".to_owned(), Cursor(8))])
        );
    }

    /// Taken mid-frame anyway (the reader stopped inside a message): the
    /// cursor stays at the last whole frame, so the cut frame is resent.
    #[test]
    fn a_batch_taken_mid_frame_stores_the_last_whole_frame() {
        let mut b = batcher(100);
        let t = Instant::now();
        b.seen("s", Cursor(7), 7, true, t);
        b.seen("s", Cursor(8), 8, false, t);
        b.seen("s", Cursor(8), 8, false, t);
        let batch = b.take().unwrap();
        assert_eq!(
            batch.checkpoint,
            Checkpoint::Stream(vec![("s".to_owned(), Cursor(7))])
        );
        b.seen("s", Cursor(8), 8, false, t);
        let batch = b.take().unwrap();
        assert_eq!(batch.checkpoint, Checkpoint::Stream(vec![]));
        assert!(!b.is_full() && b.deadline().is_none());
    }
}
