//! The live side of the feed: each committed change routed to the clients
//! whose channels it matches, fed from the database log.
//!
//! Owns: the [`Hub`] (a routing table from channel name to the inboxes of
//! the clients subscribed to it; a change is offered only to the inboxes of
//! the channels it matches, looked up by the handful of channel names a
//! change can match, so a client costs nothing for the changes it does not
//! read) and [`tail`], the task that reads `parity_changes` after the last
//! seq it saw and publishes each row to the hub, woken by the committing
//! writer in the same process or by a poll interval. Because `seq` is
//! strictly increasing in commit order, reading after the last seen seq
//! never skips a committed change.
//!
//! Invariants: the hub publishes changes in seq order, each once; an inbox
//! receives each matching change once (a change matching two of a client's
//! channels is offered once) and in seq order. An inbox holds at most
//! `feed.client_buffer` changes (those the hub queued plus those the client
//! took but has not read yet): a client that falls that far behind is cut
//! off (it sees [`Recv::Lagged`]) and resumes with its cursor.
//! Registering a channel and reading [`Hub::latest`] happen under the same
//! lock as publishing, so every change above the returned seq reaches the
//! inbox.
//!
//! Cost per delivery: the hub publishes a page of the log at a time
//! ([`Hub::publish_all`]); a change is pushed onto each matching inbox's
//! queue, and each inbox is woken once per page, not once per change. The
//! client takes the whole queue in one lock (swapping buffers, so neither
//! side allocates in the steady state) and reads it without the hub.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::change::{Change, ChangeOp, Rendered, subjects_of};
use super::channel::Channel;
use crate::store::{ChangeRow, Store, StoreError};

/// Changes read from the log per query.
pub const PAGE: i64 = 1_000;

/// Where committed changes are routed to clients.
pub struct Hub {
    capacity: usize,
    latest: AtomicI64,
    routes: Mutex<Routes>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct Routes {
    /// Channel name (`Channel`'s display form) → the inboxes reading it.
    by_channel: HashMap<String, Vec<Arc<Inbox>>>,
}

/// The hub's side of one client's inbox.
struct Inbox {
    id: u64,
    capacity: usize,
    /// Changes queued by the hub, not yet taken by the client.
    queued: Mutex<VecDeque<Arc<Rendered>>>,
    /// Woken when `queued` stops being empty (and when the client is cut
    /// off); a wake with nothing queued is harmless.
    ready: Notify,
    /// How many changes the client has taken and not read yet.
    in_hand: AtomicUsize,
    /// The newest seq offered: a change matching several channels goes in
    /// once.
    last: AtomicI64,
    lagged: AtomicBool,
}

impl Hub {
    /// A hub whose inboxes hold `capacity` changes each
    /// (`feed.client_buffer`).
    pub fn new(capacity: usize, latest: i64) -> Arc<Hub> {
        Arc::new(Hub {
            capacity: capacity.max(1),
            latest: AtomicI64::new(latest),
            routes: Mutex::default(),
            next_id: AtomicU64::new(0),
        })
    }

    /// A new client's inbox, reading no channel yet.
    pub fn inbox(self: &Arc<Hub>) -> Live {
        Live {
            hub: self.clone(),
            inbox: Arc::new(Inbox {
                id: self.next_id.fetch_add(1, Ordering::Relaxed),
                capacity: self.capacity,
                queued: Mutex::new(VecDeque::new()),
                ready: Notify::new(),
                in_hand: AtomicUsize::new(0),
                last: AtomicI64::new(0),
                lagged: AtomicBool::new(false),
            }),
            hand: VecDeque::new(),
            channels: HashMap::new(),
        }
    }

    /// The newest seq published.
    pub fn latest(&self) -> i64 {
        self.latest.load(Ordering::Acquire)
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes a change newer than every one before (an older or equal
    /// seq is a duplicate and is dropped). Callers publish from one task.
    pub fn publish(&self, change: Arc<Rendered>) {
        self.publish_all(std::slice::from_ref(&change));
    }

    /// Publishes `changes` (in seq order) like [`Hub::publish`] each, but
    /// wakes each client once for all of them.
    pub fn publish_all(&self, changes: &[Arc<Rendered>]) {
        let mut wake: Vec<Arc<Inbox>> = Vec::new();
        {
            let routes = self.routes();
            for change in changes {
                let seq = change.change.seq;
                if seq <= self.latest() {
                    continue;
                }
                if !routes.by_channel.is_empty() {
                    for_each_channel_of(&change.change, |name| {
                        for inbox in routes.by_channel.get(name).into_iter().flatten() {
                            if inbox.offer(change) {
                                wake.push(inbox.clone());
                            }
                        }
                    });
                }
                self.latest.store(seq, Ordering::Release);
            }
        }
        for inbox in wake {
            inbox.ready.notify_one();
        }
    }

    /// Publishes every logged change after [`Hub::latest`] up to `upto`
    /// (all of them with `None`), in order, a page at a time; returns how
    /// many.
    pub async fn catch_up(&self, store: &Store, upto: Option<i64>) -> Result<usize, StoreError> {
        let mut n = 0;
        loop {
            let rows = store.changes_after(self.latest(), PAGE).await?;
            let full = rows.len() as i64 == PAGE;
            let mut page = Vec::with_capacity(rows.len());
            let mut past = false;
            for row in rows {
                if upto.is_some_and(|u| row.seq > u) {
                    past = true;
                    break;
                }
                page.push(Rendered::new(change_from_row(row)?));
            }
            n += page.len();
            self.publish_all(&page);
            if past || !full {
                return Ok(n);
            }
        }
    }
}

impl Inbox {
    fn queued(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Rendered>>> {
        self.queued.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Offers `change` once; an inbox that would hold more than its
    /// capacity is marked lagged and offered nothing more. Returns whether
    /// the client must be woken (its queue was empty, or it was cut off).
    fn offer(&self, change: &Arc<Rendered>) -> bool {
        let seq = change.change.seq;
        if self.lagged.load(Ordering::Relaxed) || self.last.load(Ordering::Relaxed) >= seq {
            return false;
        }
        self.last.store(seq, Ordering::Relaxed);
        let mut queued = self.queued();
        if queued.len() + self.in_hand.load(Ordering::Relaxed) >= self.capacity {
            self.lagged.store(true, Ordering::Release);
            return true;
        }
        queued.push_back(change.clone());
        queued.len() == 1
    }
}

/// Calls `f` with the name of every channel `change` matches (see
/// [`Channel::matches`]): `all`, its table, its collection and every
/// `collection:<prefix>.*` above it, its DID and each subject.
fn for_each_channel_of(change: &Change, mut f: impl FnMut(&str)) {
    let mut name = String::with_capacity(128);
    let mut emit = |name: &mut String, parts: std::fmt::Arguments<'_>| {
        name.clear();
        let _ = name.write_fmt(parts);
        f(name);
    };
    emit(&mut name, format_args!("all"));
    emit(&mut name, format_args!("table:{}", change.table_name));
    let c = change.collection.as_str();
    emit(&mut name, format_args!("collection:{c}"));
    emit(&mut name, format_args!("collection:*"));
    for (i, _) in c.match_indices('.') {
        emit(&mut name, format_args!("collection:{}*", &c[..=i]));
    }
    emit(&mut name, format_args!("did:{}", change.did));
    for s in &change.subjects {
        emit(&mut name, format_args!("subject:{s}"));
    }
}

/// What [`Live::try_recv`] and [`Live::recv`] return besides a change.
#[derive(Debug, PartialEq, Eq)]
pub enum Recv {
    /// Nothing waiting now.
    Empty,
    /// The inbox overflowed: changes were left out; the client must resume
    /// from its cursor.
    Lagged,
}

/// One client's inbox: the changes of the channels it reads, in seq order.
/// Dropping it unregisters it.
pub struct Live {
    hub: Arc<Hub>,
    inbox: Arc<Inbox>,
    /// The changes taken from the inbox at once, not read yet.
    hand: VecDeque<Arc<Rendered>>,
    /// Channel name → how many of the client's subscriptions use it.
    channels: HashMap<String, usize>,
}

impl Live {
    /// Routes `channels` to this inbox; returns the hub's latest seq at
    /// that moment: every change above it that matches reaches the inbox.
    pub fn add<'a>(&mut self, channels: impl IntoIterator<Item = &'a Channel>) -> i64 {
        let mut routes = self.hub.routes();
        for c in channels {
            let name = c.to_string();
            let uses = self.channels.entry(name.clone()).or_default();
            *uses += 1;
            if *uses == 1 {
                routes
                    .by_channel
                    .entry(name)
                    .or_default()
                    .push(self.inbox.clone());
            }
        }
        self.hub.latest()
    }

    /// Stops routing `channels` here (each once per [`Live::add`]).
    pub fn remove<'a>(&mut self, channels: impl IntoIterator<Item = &'a Channel>) {
        let mut routes = self.hub.routes();
        for c in channels {
            let name = c.to_string();
            let Some(uses) = self.channels.get_mut(&name) else {
                continue;
            };
            *uses -= 1;
            if *uses == 0 {
                self.channels.remove(&name);
                unroute(&mut routes, &name, self.inbox.id);
            }
        }
    }

    /// The hub's newest seq.
    pub fn latest(&self) -> i64 {
        self.hub.latest()
    }

    /// The next change, waiting for one. Cancel-safe: nothing is taken
    /// until it is returned.
    pub async fn recv(&mut self) -> Result<Arc<Rendered>, Recv> {
        loop {
            match self.try_recv() {
                Err(Recv::Empty) => self.inbox.ready.notified().await,
                r => return r,
            }
        }
    }

    /// The next change if one is waiting.
    pub fn try_recv(&mut self) -> Result<Arc<Rendered>, Recv> {
        if self.inbox.lagged.load(Ordering::Acquire) {
            return Err(Recv::Lagged);
        }
        if self.hand.is_empty() && !self.take() {
            return Err(Recv::Empty);
        }
        let change = self.hand.pop_front().ok_or(Recv::Empty)?;
        self.inbox.in_hand.store(self.hand.len(), Ordering::Relaxed);
        Ok(change)
    }

    /// Takes everything the hub queued (swapping buffers: the read one goes
    /// back to the hub to fill); false if nothing was queued.
    fn take(&mut self) -> bool {
        let mut queued = self.inbox.queued();
        std::mem::swap(&mut *queued, &mut self.hand);
        self.inbox.in_hand.store(self.hand.len(), Ordering::Relaxed);
        !self.hand.is_empty()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let mut routes = self.hub.routes();
        for name in self.channels.keys() {
            unroute(&mut routes, name, self.inbox.id);
        }
    }
}

fn unroute(routes: &mut Routes, name: &str, id: u64) {
    if let Some(v) = routes.by_channel.get_mut(name) {
        v.retain(|i| i.id != id);
        if v.is_empty() {
            routes.by_channel.remove(name);
        }
    }
}

/// A stored row as a [`Change`]. A row parity wrote that does not read back
/// (unknown op, record that is not JSON) is our own corruption.
pub fn change_from_row(row: ChangeRow) -> Result<Change, StoreError> {
    let corrupt = |what: &str| {
        StoreError::Sql(sqlx::Error::Decode(
            format!("parity_changes seq {}: {what}", row.seq).into(),
        ))
    };
    let op = ChangeOp::parse(&row.op).ok_or_else(|| corrupt("unknown op"))?;
    let record = match &row.record {
        Some(r) => {
            Some(RawValue::from_string(r.clone()).map_err(|_| corrupt("record is not JSON"))?)
        }
        None => None,
    };
    let subjects = match (&row.subjects, &record) {
        (Some(s), _) => {
            serde_json::from_str(s).map_err(|_| corrupt("subjects is not a JSON array"))?
        }
        (None, Some(r)) => serde_json::from_str(r.get())
            .map(|v| subjects_of(&v))
            .unwrap_or_default(),
        (None, None) => Vec::new(),
    };
    Ok(Change {
        seq: row.seq,
        table_name: row.table_name,
        op,
        uri: row.uri,
        did: row.did,
        collection: row.collection,
        rkey: row.rkey,
        cid: row.cid,
        rev: row.rev,
        record,
        committed_at: row.committed_at,
        subjects,
    })
}

/// Publishes every change after the hub's latest to `hub`, in order, until
/// cancelled: after reading to the end of the log it waits for `wake` (the
/// writer in this process) or `interval`.
pub async fn tail(
    store: Store,
    hub: Arc<Hub>,
    wake: Arc<Notify>,
    interval: Duration,
    token: CancellationToken,
) -> Result<(), StoreError> {
    loop {
        hub.catch_up(&store, None).await?;
        tokio::select! {
            _ = token.cancelled() => return Ok(()),
            _ = wake.notified() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
