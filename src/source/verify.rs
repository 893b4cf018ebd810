//! The live verification stage (`source.verify`): between the reader and
//! the processor, each firehose `#commit` is checked against its DID's
//! `#atproto` key (and, `full`, its Sync 1.1 MST proof) before any of its
//! events go on.
//!
//! Owns: the ordered window of frames waiting for a key or a check,
//! fetching keys in parallel off the path of frames whose key is cached,
//! handing checks to the worker pool (`verify_pool`), the refresh-once
//! rule, a short memory of DIDs whose key could not be fetched, the rev
//! chain for verified commits (moved here from the decoder so that a
//! forged commit never advances it), and what a failing commit becomes.
//! Does not own: key resolution and its TTL cache ([`Keys`], implemented
//! over the identity resolver by the importer), the checks themselves
//! (`formats::firehose::Proof`).
//!
//! Order: frames leave in the order they came, so cursors stay exact. A
//! frame whose key is not cached waits while later frames are read and
//! verified (up to [`WINDOW`] events, [`MAX_FETCHES`] documents fetched at
//! once); a document slower than the key timeout fails its commits as
//! `unverifiable`, so one slow DID holds the stream at most that long.
//! Checks run on `Verifier::workers` blocking threads and finish in any
//! order; a frame leaves only once it and every frame before it are
//! decided, and the rev chain is applied then, in arrival order.
//!
//! A failing commit is dropped (`parity_events_dropped_total{reason=
//! "bad_signature" | "bad_mst" | "unverifiable"}`, once per op) and
//! replaced by a `Sync` event at its seq, which flags the DID for a
//! re-import (`parity_repos.resync_requested_at`) and moves the cursor.
//! A signature that fails with a cached key is tried again with the key
//! fetched afresh (it may have rotated) before the commit is rejected; an
//! `#identity` event forgets the DID's key.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use hashlink::LruCache;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::event::{Cursor, Did, Event, EventKind};
use crate::obs::{DropReason, Escaped, Obs};
use crate::source::Item;
use crate::source::codecs::repo::PublicKey;
use crate::source::formats::firehose::chain::RevChain;
use crate::source::formats::firehose::{Proof, ProofError};
use crate::source::verify_pool::{CheckFn, Checked, Job, Pool, default_workers};

/// Events held while frames wait for keys (about a second of firehose at
/// peak); past this the stage stops reading and the reader backs up.
pub const WINDOW: usize = 8_192;
/// DID documents fetched at once.
pub const MAX_FETCHES: usize = 64;
/// How long a DID whose key could not be fetched fails its commits
/// without asking again.
pub const KEY_RETRY_AFTER: Duration = Duration::from_secs(60);
/// DIDs remembered as failing.
const MAX_FAILING: usize = 100_000;

/// Where signing keys come from.
pub trait Keys: Send + Sync {
    /// The key in cache, if any (no IO: this is the hot path).
    fn cached(&self, did: &Did) -> Option<PublicKey>;
    /// Fetches (`fresh`: bypassing the cache) and caches the key.
    fn fetch(&self, did: &Did, fresh: bool) -> BoxFuture<'static, Result<PublicKey, String>>;
    /// Forgets the DID's key (an `#identity` event).
    fn invalidate(&self, did: &Did);
}

/// The stage's settings.
pub struct Verifier {
    /// `full`: the MST proof too.
    pub full: bool,
    pub keys: Arc<dyn Keys>,
    pub obs: Arc<Obs>,
    /// Longest wait for one DID's key.
    pub key_timeout: Duration,
    /// Batches of checks running at once (blocking threads).
    pub workers: usize,
    /// What checks a commit ([`Proof::check`]).
    pub check: CheckFn,
}

impl Verifier {
    /// A stage with one worker per core and [`Proof::check`].
    pub fn new(full: bool, keys: Arc<dyn Keys>, obs: Arc<Obs>, key_timeout: Duration) -> Verifier {
        Verifier {
            full,
            keys,
            obs,
            key_timeout,
            workers: default_workers(),
            check: Proof::check,
        }
    }
}

/// Why a commit was rejected.
#[derive(Debug, Clone)]
enum Failure {
    Proof(ProofError),
    NoKey(String),
}

impl Failure {
    fn reason(&self) -> DropReason {
        match self {
            Failure::Proof(ProofError::BadSignature(_)) => DropReason::BadSignature,
            Failure::Proof(ProofError::BadMst(_)) => DropReason::BadMst,
            Failure::NoKey(_) => DropReason::Unverifiable,
        }
    }
}

enum State {
    Pass,
    Fail(Failure),
    /// Waiting for the DID's key; `fresh`: the cached key failed, this is
    /// the refresh.
    Waiting {
        fresh: bool,
    },
    /// With the worker pool (which holds its proof meanwhile).
    Checking,
}

impl State {
    fn decided(&self) -> bool {
        matches!(self, State::Pass | State::Fail(_))
    }
}

/// One websocket message's items.
struct Group {
    items: Vec<Item>,
    proof: Option<Box<Proof>>,
    state: State,
}

type Fetched = (Did, bool, Result<PublicKey, String>);

struct Window {
    v: Verifier,
    queue: VecDeque<Group>,
    /// Number of the group at the front of `queue` (groups are numbered in
    /// arrival order, so group `n` is at `n - front`).
    front: u64,
    /// Groups waiting for each DID's key, by number.
    waiting: HashMap<Did, Vec<u64>>,
    events: usize,
    fetching: FuturesUnordered<BoxFuture<'static, Fetched>>,
    /// DIDs being fetched, and whether that fetch is a refresh.
    in_flight: HashMap<Did, bool>,
    /// Fetches waiting for a slot.
    to_fetch: VecDeque<(Did, bool)>,
    queued: HashSet<Did>,
    failing: LruCache<Did, (Instant, String)>,
    chain: RevChain,
    pool: Pool,
}

impl Verifier {
    /// Runs until the reader is done (then drains) or `token` is cancelled
    /// (then frames still waiting are left: their cursor was not passed, so
    /// the next run reads them again).
    pub async fn run(
        self,
        mut rx: mpsc::Receiver<Item>,
        tx: mpsc::Sender<Item>,
        token: CancellationToken,
    ) {
        let pool = Pool::new(self.workers, self.full, self.check);
        let mut w = Window {
            pool,
            v: self,
            queue: VecDeque::new(),
            front: 0,
            waiting: HashMap::new(),
            events: 0,
            fetching: FuturesUnordered::new(),
            in_flight: HashMap::new(),
            to_fetch: VecDeque::new(),
            queued: HashSet::new(),
            failing: LruCache::new(MAX_FAILING),
            chain: RevChain::default(),
        };
        let mut open: Vec<Item> = Vec::new();
        let mut reading = true;
        loop {
            w.pool.dispatch();
            if !w.flush(&tx).await {
                return;
            }
            if !reading && w.queue.is_empty() {
                return;
            }
            let can_read = reading && w.events < WINDOW;
            tokio::select! {
                _ = token.cancelled(), if !reading => return,
                item = rx.recv(), if can_read => match item {
                    None => reading = false,
                    Some(item) => {
                        let end = item.frame_end;
                        open.push(item);
                        if end {
                            w.add(std::mem::take(&mut open));
                        }
                    }
                },
                Some((did, fresh, key)) = w.fetching.next(), if !w.fetching.is_empty() => {
                    w.fetched(did, fresh, key);
                }
                done = w.pool.next(), if w.pool.busy() => w.checked(done),
                // Unreachable: a full window starts with a frame waiting
                // for a fetch or a check (queued checks are dispatched at
                // the top of the loop), so one branch is always enabled.
                else => return,
            }
        }
    }
}

impl Window {
    /// A whole frame arrived.
    fn add(&mut self, mut items: Vec<Item>) {
        self.events += items.len();
        let proof = items.first_mut().and_then(|i| i.proof.take());
        for i in &items {
            if matches!(i.event.kind, EventKind::Identity { .. }) {
                self.v.keys.invalidate(&i.event.did);
            }
        }
        let n = self.front + self.queue.len() as u64;
        let checked = proof.is_some();
        self.queue.push_back(Group {
            items,
            proof,
            state: State::Pass,
        });
        if checked {
            self.first_try(n);
        }
    }

    /// The group numbered `n` (still in the window: only decided groups
    /// leave it).
    fn group(&mut self, n: u64) -> Option<&mut Group> {
        let i = usize::try_from(n.checked_sub(self.front)?).ok()?;
        self.queue.get_mut(i)
    }

    /// Checks group `n` with the cached key, or asks for the key.
    fn first_try(&mut self, n: u64) {
        let Some(did) = self
            .group(n)
            .and_then(|g| g.proof.as_ref())
            .map(|p| p.meta.did.clone())
        else {
            return;
        };
        if let Some((at, why)) = self.failing.get(&did) {
            if at.elapsed() < KEY_RETRY_AFTER {
                let why = why.clone();
                if let Some(g) = self.group(n) {
                    g.state = State::Fail(Failure::NoKey(why));
                }
                return;
            }
            self.failing.remove(&did);
        }
        match self.v.keys.cached(&did) {
            Some(key) => self.submit(n, key, false),
            None => {
                self.want(&did, false);
                self.wait(n, did, false);
            }
        }
    }

    /// Hands group `n` to the worker pool with `key`.
    fn submit(&mut self, n: u64, key: PublicKey, fresh: bool) {
        let Some(g) = self.group(n) else { return };
        let Some(proof) = g.proof.take() else { return };
        g.state = State::Checking;
        self.pool.push(Job {
            n,
            proof,
            key,
            fresh,
        });
    }

    /// Group `n` waits for `did`'s key (`fresh`: a refresh).
    fn wait(&mut self, n: u64, did: Did, fresh: bool) {
        if let Some(g) = self.group(n) {
            g.state = State::Waiting { fresh };
            self.waiting.entry(did).or_default().push(n);
        }
    }

    /// Verdicts from the pool. A bad signature with a key that was not
    /// just refreshed asks for a refresh instead.
    fn checked(&mut self, done: Vec<Checked>) {
        for c in done {
            let did = c.proof.meta.did.clone();
            let Some(g) = self.group(c.n) else { continue };
            g.proof = Some(c.proof);
            match c.result {
                Ok(()) => g.state = State::Pass,
                Err(ProofError::BadSignature(_)) if !c.fresh => {
                    self.want(&did, true);
                    self.wait(c.n, did, true);
                }
                Err(e) => g.state = State::Fail(Failure::Proof(e)),
            }
        }
    }

    /// Starts (or queues) a fetch of `did`'s key unless one that serves is
    /// already under way.
    fn want(&mut self, did: &Did, fresh: bool) {
        match self.in_flight.get(did) {
            Some(&f) if f || !fresh => return,
            _ => {}
        }
        if self.in_flight.len() < MAX_FETCHES {
            self.start(did.clone(), fresh);
        } else if self.queued.insert(did.clone()) {
            self.to_fetch.push_back((did.clone(), fresh));
        }
    }

    fn start(&mut self, did: Did, fresh: bool) {
        self.in_flight.insert(did.clone(), fresh);
        let fetch = self.v.keys.fetch(&did, fresh);
        let timeout = self.v.key_timeout;
        self.fetching.push(Box::pin(async move {
            let key = match tokio::time::timeout(timeout, fetch).await {
                Ok(k) => k,
                Err(_) => Err(format!("no DID document within {}s", timeout.as_secs())),
            };
            (did, fresh, key)
        }));
    }

    /// A key fetch ended: every frame of that DID waiting for it is decided.
    fn fetched(&mut self, did: Did, fresh: bool, key: Result<PublicKey, String>) {
        if self.in_flight.get(&did) == Some(&fresh) {
            self.in_flight.remove(&did);
        }
        if let Err(why) = &key {
            tracing::warn!(did = %did, error = %Escaped(why), "No signing key for the DID; its commits are not applied and a re-import is queued.");
            self.failing
                .insert(did.clone(), (Instant::now(), why.clone()));
        }
        let mut still = Vec::new();
        for n in self.waiting.remove(&did).unwrap_or_default() {
            let Some(g) = self.group(n) else { continue };
            let State::Waiting { fresh: wants_fresh } = g.state else {
                continue;
            };
            if wants_fresh && !fresh {
                // Waits for the refresh under way.
                still.push(n);
                continue;
            }
            match &key {
                Ok(k) => self.submit(n, k.clone(), fresh),
                Err(why) => g.state = State::Fail(Failure::NoKey(why.clone())),
            }
        }
        if !still.is_empty() {
            self.waiting.entry(did).or_default().extend(still);
        }
        while self.in_flight.len() < MAX_FETCHES {
            let Some((d, f)) = self.to_fetch.pop_front() else {
                break;
            };
            self.queued.remove(&d);
            self.start(d, f);
        }
    }

    /// Sends every decided frame at the front, in order. `false`: the
    /// processor is gone.
    async fn flush(&mut self, tx: &mpsc::Sender<Item>) -> bool {
        while self.queue.front().is_some_and(|g| g.state.decided()) {
            let g = self.queue.pop_front().expect("checked");
            self.front += 1;
            self.events -= g.items.len();
            for item in self.decide(g) {
                if tx.send(item).await.is_err() {
                    return false;
                }
            }
        }
        true
    }

    /// The items a decided frame becomes.
    fn decide(&mut self, g: Group) -> Vec<Item> {
        let Group {
            mut items,
            proof,
            state,
        } = g;
        let Some(p) = proof else {
            for i in &items {
                if let EventKind::Sync { rev } = &i.event.kind {
                    self.chain.remember(&i.event.did, rev);
                }
            }
            return items;
        };
        let ops = items
            .iter()
            .filter(|i| matches!(i.event.kind, EventKind::Commit(_)))
            .count();
        let stream = items[0].stream.clone();
        let one = |kind: EventKind| Item {
            stream: stream.clone(),
            event: Event {
                cursor: Cursor(p.meta.seq),
                time_us: p.meta.time_us,
                did: p.meta.did.clone(),
                kind,
            },
            frame_end: true,
            proof: None,
        };
        match state {
            State::Fail(f) => {
                for _ in 0..ops.max(1) {
                    self.v.obs.record_drop(f.reason());
                }
                let detail = match &f {
                    Failure::Proof(e) => e.to_string(),
                    Failure::NoKey(why) => why.clone(),
                };
                tracing::warn!(did = %p.meta.did, seq = p.meta.seq, reason = f.reason().as_str(), error = %Escaped(&detail), "Commit failed verification; dropped, re-import queued.");
                vec![one(EventKind::Sync {
                    rev: p.meta.rev.clone(),
                })]
            }
            State::Pass => {
                let mut pre = Vec::new();
                if !self.chain.check(&p.meta, &mut pre) {
                    for _ in 0..ops {
                        self.v.obs.record_drop(DropReason::StaleRev);
                    }
                    tracing::debug!(did = %p.meta.did, seq = p.meta.seq, "Stale commit skipped (rev not newer).");
                    return vec![one(EventKind::Skip)];
                }
                if pre.is_empty() {
                    return items;
                }
                let mut out: Vec<Item> = pre
                    .into_iter()
                    .map(|event| Item {
                        stream: stream.clone(),
                        event,
                        frame_end: false,
                        proof: None,
                    })
                    .collect();
                out.append(&mut items);
                out
            }
            State::Waiting { .. } | State::Checking => {
                unreachable!("only decided frames are sent")
            }
        }
    }
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
