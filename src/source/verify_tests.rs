//! Tests of the verification stage with real relay commits and keys from
//! their DID documents, served by a fake key source whose fetches the test
//! holds or releases.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use tokio::sync::{Notify, mpsc};

use super::*;
use crate::source::formats::firehose::tests::relay_frames;
use crate::source::formats::{Decoder, Message, Output};
use crate::source::stream::WireFormat;

#[derive(Default)]
struct FakeKeys {
    cache: Mutex<HashMap<Did, PublicKey>>,
    /// What a fetch finds.
    docs: Mutex<HashMap<Did, PublicKey>>,
    /// Fetches of these DIDs wait for the notify.
    held: Mutex<HashMap<Did, Arc<Notify>>>,
    fetches: AtomicUsize,
    fresh_fetches: AtomicUsize,
    /// Signalled after each completed fetch.
    done: Arc<Notify>,
}

impl Keys for Arc<FakeKeys> {
    fn cached(&self, did: &Did) -> Option<PublicKey> {
        self.cache.lock().unwrap().get(did).cloned()
    }
    fn fetch(&self, did: &Did, fresh: bool) -> BoxFuture<'static, Result<PublicKey, String>> {
        let me = self.clone();
        let did = did.clone();
        Box::pin(async move {
            me.fetches.fetch_add(1, SeqCst);
            if fresh {
                me.fresh_fetches.fetch_add(1, SeqCst);
            }
            let gate = me.held.lock().unwrap().get(&did).cloned();
            if let Some(g) = gate {
                g.notified().await;
            }
            let key = me.docs.lock().unwrap().get(&did).cloned();
            let r = match key {
                Some(k) => {
                    me.cache.lock().unwrap().insert(did, k.clone());
                    Ok(k)
                }
                None => Err("no document".into()),
            };
            me.done.notify_one();
            r
        })
    }
    fn invalidate(&self, did: &Did) {
        self.cache.lock().unwrap().remove(did);
    }
}

fn doc_keys() -> HashMap<Did, PublicKey> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/firehose/bsky-relay-2026-07-04-seq-31527015372-31527015471/did_docs.json"
    ))
    .unwrap();
    let docs: HashMap<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    docs.into_iter()
        .map(|(did, doc)| {
            (
                Did::parse(&did).unwrap(),
                PublicKey::from_did_document(&doc).unwrap(),
            )
        })
        .collect()
}

/// The items the reader hands on for each of the first `n` commit frames.
fn commit_frames(n: usize) -> Vec<Vec<Item>> {
    let mut d = Decoder::new(5_000_000);
    d.set_verify(true);
    d.connect(WireFormat::Firehose, None, None).unwrap();
    let mut out = Output::default();
    let mut frames = Vec::new();
    for msg in relay_frames() {
        d.decode(Message::Binary(&msg), &mut out).unwrap();
        let Some(proof) = out.proof.take() else {
            continue;
        };
        let n_events = out.events.len();
        let mut proof = Some(Box::new(proof));
        let items = out
            .events
            .drain(..)
            .enumerate()
            .map(|(i, event)| Item {
                stream: "firehose:test".into(),
                event,
                frame_end: i + 1 == n_events,
                proof: proof.take(),
            })
            .collect();
        frames.push(items);
        if frames.len() == n {
            break;
        }
    }
    frames
}

fn did_of(frame: &[Item]) -> Did {
    frame[0].event.did.clone()
}

struct Stage {
    tx: mpsc::Sender<Item>,
    rx: mpsc::Receiver<Item>,
    obs: Arc<Obs>,
    task: tokio::task::JoinHandle<()>,
}

fn stage(keys: Arc<FakeKeys>, full: bool, key_timeout: Duration) -> Stage {
    let (tx, in_rx) = mpsc::channel(64);
    let (out_tx, rx) = mpsc::channel(1024);
    let obs = Arc::new(Obs::new(Duration::from_secs(60)));
    let v = Verifier::new(full, Arc::new(keys), obs.clone(), key_timeout);
    let task = tokio::spawn(v.run(in_rx, out_tx, CancellationToken::new()));
    Stage { tx, rx, obs, task }
}

impl Stage {
    async fn send(&self, frame: Vec<Item>) {
        for i in frame {
            self.tx.send(i).await.unwrap();
        }
    }

    /// Closes the input and collects everything that came out.
    async fn finish(mut self) -> (Vec<Item>, Arc<Obs>) {
        drop(self.tx);
        let mut out = Vec::new();
        while let Some(i) = self.rx.recv().await {
            out.push(i);
        }
        self.task.await.unwrap();
        (out, self.obs)
    }
}

fn seqs(items: &[Item]) -> Vec<i64> {
    items.iter().map(|i| i.event.cursor.0).collect()
}

#[tokio::test]
async fn frames_leave_in_order_while_a_slow_document_is_fetched() {
    let frames = commit_frames(4);
    let keys = Arc::new(FakeKeys::default());
    *keys.docs.lock().unwrap() = doc_keys();
    let slow = did_of(&frames[0]);
    let gate = Arc::new(Notify::new());
    keys.held.lock().unwrap().insert(slow.clone(), gate.clone());
    let s = stage(keys.clone(), true, Duration::from_secs(600));
    let want: Vec<i64> = frames.iter().flat_map(|f| seqs(f)).collect();
    for f in frames {
        s.send(f).await;
    }
    // The three other documents are fetched while the first one is held.
    let done = keys.done.clone();
    while keys.cache.lock().unwrap().len() < 3 {
        done.notified().await;
    }
    assert!(!keys.cache.lock().unwrap().contains_key(&slow));
    gate.notify_one();
    let (out, obs) = s.finish().await;
    assert_eq!(seqs(&out), want, "same frames, same order");
    assert!(
        out.iter()
            .all(|i| matches!(i.event.kind, EventKind::Commit(_)))
    );
    assert_eq!(keys.fetches.load(SeqCst), 4);
    assert_eq!(obs.dropped(DropReason::BadSignature), 0);
}

#[tokio::test]
async fn a_document_past_the_timeout_fails_only_its_commits() {
    let frames = commit_frames(3);
    let keys = Arc::new(FakeKeys::default());
    *keys.docs.lock().unwrap() = doc_keys();
    let slow = did_of(&frames[1]);
    keys.held
        .lock()
        .unwrap()
        .insert(slow.clone(), Arc::new(Notify::new()));
    let s = stage(keys, false, Duration::from_millis(200));
    let want: Vec<i64> = frames.iter().flat_map(|f| seqs(f)).collect();
    for f in frames {
        s.send(f).await;
    }
    let (out, obs) = s.finish().await;
    assert_eq!(seqs(&out), want);
    let kinds: Vec<bool> = out
        .iter()
        .map(|i| matches!(i.event.kind, EventKind::Sync { .. }))
        .collect();
    assert_eq!(
        kinds,
        [false, true, false],
        "the held DID's commit became a resync"
    );
    assert_eq!(out[1].event.did, slow);
    assert_eq!(obs.dropped(DropReason::Unverifiable), 1);
}

#[tokio::test]
async fn a_stale_cached_key_is_refreshed_once_before_rejecting() {
    let frames = commit_frames(3);
    let real = doc_keys();
    let keys = Arc::new(FakeKeys::default());
    let (a, b) = (did_of(&frames[0]), did_of(&frames[1]));
    let wrong = real[&did_of(&frames[2])].clone();
    // A: cached key is old, the document has the new one: accepted.
    // B: cached key is wrong and so is the document: rejected.
    keys.cache.lock().unwrap().insert(a.clone(), wrong.clone());
    keys.cache.lock().unwrap().insert(b.clone(), wrong.clone());
    keys.docs
        .lock()
        .unwrap()
        .insert(a.clone(), real[&a].clone());
    keys.docs.lock().unwrap().insert(b.clone(), wrong);
    let s = stage(keys.clone(), true, Duration::from_secs(600));
    let (fa, fb) = (frames[0].clone_items(), frames[1].clone_items());
    s.send(fa).await;
    s.send(fb).await;
    let (out, obs) = s.finish().await;
    assert!(matches!(out[0].event.kind, EventKind::Commit(_)));
    assert_eq!(out[1].event.did, b);
    assert!(matches!(out[1].event.kind, EventKind::Sync { .. }));
    assert_eq!(out.len(), 2);
    assert_eq!(keys.fresh_fetches.load(SeqCst), 2, "one refresh per DID");
    assert_eq!(obs.dropped(DropReason::BadSignature), 1);
}

#[tokio::test]
async fn an_identity_event_forgets_the_key() {
    let frames = commit_frames(2);
    let real = doc_keys();
    let keys = Arc::new(FakeKeys::default());
    let a = did_of(&frames[0]);
    let other = real[&did_of(&frames[1])].clone();
    // The cached key is right, but an #identity says the document changed:
    // the new document's key (here, another one) is the one used.
    keys.cache
        .lock()
        .unwrap()
        .insert(a.clone(), real[&a].clone());
    keys.docs.lock().unwrap().insert(a.clone(), other);
    let s = stage(keys.clone(), false, Duration::from_secs(600));
    let first = &frames[0][0];
    s.send(vec![Item {
        stream: first.stream.clone(),
        event: Event {
            cursor: Cursor(first.event.cursor.0 - 1),
            time_us: first.event.time_us,
            did: a.clone(),
            kind: EventKind::Identity { handle: None },
        },
        frame_end: true,
        proof: None,
    }])
    .await;
    s.send(frames[0].clone_items()).await;
    let (out, obs) = s.finish().await;
    assert_eq!(out.len(), 2);
    assert!(matches!(out[1].event.kind, EventKind::Sync { .. }));
    assert_eq!(obs.dropped(DropReason::BadSignature), 1);
    assert!(keys.fetches.load(SeqCst) >= 1);
}

#[tokio::test]
async fn verified_commits_keep_the_rev_chain_and_forged_ones_do_not_move_it() {
    let frames = commit_frames(1);
    let real = doc_keys();
    let a = did_of(&frames[0]);
    let keys = Arc::new(FakeKeys::default());
    keys.cache
        .lock()
        .unwrap()
        .insert(a.clone(), real[&a].clone());
    keys.docs
        .lock()
        .unwrap()
        .insert(a.clone(), real[&a].clone());
    let s = stage(keys, false, Duration::from_secs(600));
    // A forged copy (bad signature) first, then the real one, then the
    // real one again (a replay: stale).
    let forged = forged_copy(&frames[0]);
    s.send(forged).await;
    s.send(frames[0].clone_items()).await;
    s.send(frames[0].clone_items()).await;
    let (out, obs) = s.finish().await;
    let kinds: Vec<&str> = out
        .iter()
        .map(|i| match i.event.kind {
            EventKind::Sync { .. } => "sync",
            EventKind::Commit(_) => "commit",
            EventKind::Skip => "skip",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["sync", "commit", "skip"]);
    assert_eq!(obs.dropped(DropReason::BadSignature), 1);
    assert_eq!(obs.dropped(DropReason::StaleRev), 1);
}

/// The frame decoded again from a copy whose signature was tampered with.
fn forged_copy(frame: &[Item]) -> Vec<Item> {
    let seq = frame[0].event.cursor.0;
    let msg = relay_frames()
        .into_iter()
        .find(|m| {
            let mut d = Decoder::new(5_000_000);
            d.set_verify(true);
            d.connect(WireFormat::Firehose, None, None).unwrap();
            let mut out = Output::default();
            d.decode(Message::Binary(m), &mut out).unwrap();
            out.proof.is_some_and(|p| p.meta.seq == seq)
        })
        .unwrap();
    let bad = testnet::tamper::signature(&msg);
    let mut d = Decoder::new(5_000_000);
    d.set_verify(true);
    d.connect(WireFormat::Firehose, None, None).unwrap();
    let mut out = Output::default();
    d.decode(Message::Binary(&bad), &mut out).unwrap();
    let mut proof = out.proof.take().map(Box::new);
    let n = out.events.len();
    out.events
        .drain(..)
        .enumerate()
        .map(|(i, event)| Item {
            stream: "firehose:test".into(),
            event,
            frame_end: i + 1 == n,
            proof: proof.take(),
        })
        .collect()
}

trait CloneItems {
    fn clone_items(&self) -> Vec<Item>;
}

impl CloneItems for Vec<Item> {
    fn clone_items(&self) -> Vec<Item> {
        self.iter()
            .map(|i| Item {
                stream: i.stream.clone(),
                event: i.event.clone(),
                frame_end: i.frame_end,
                proof: i.proof.clone(),
            })
            .collect()
    }
}

/// The items the reader hands on for one firehose message.
fn items_of(msg: &[u8]) -> Vec<Item> {
    let mut d = Decoder::new(5_000_000);
    d.set_verify(true);
    d.connect(WireFormat::Firehose, None, None).unwrap();
    let mut out = Output::default();
    d.decode(Message::Binary(msg), &mut out).unwrap();
    let mut proof = out.proof.take().map(Box::new);
    let n = out.events.len();
    out.events
        .drain(..)
        .enumerate()
        .map(|(i, event)| Item {
            stream: "firehose:test".into(),
            event,
            frame_end: i + 1 == n,
            proof: proof.take(),
        })
        .collect()
}

fn signed_key(account: usize) -> PublicKey {
    let did = testnet::signed::did(account);
    PublicKey::from_multikey(&testnet::pds::Pds::signing_multikey(&did)).unwrap()
}

/// What leaves the stage, one `(seq, kind)` per item.
fn kinds(items: &[Item]) -> Vec<(i64, &'static str)> {
    items
        .iter()
        .map(|i| {
            let k = match i.event.kind {
                EventKind::Sync { .. } => "sync",
                EventKind::Commit(_) => "commit",
                EventKind::Skip => "skip",
                _ => "other",
            };
            (i.event.cursor.0, k)
        })
        .collect()
}

/// A thousand signed commits (40 accounts × 25 chained likes, interleaved),
/// every seventh with a forged signature, checked by four workers with
/// hundreds of frames in the window: frames leave in arrival order, each
/// forged one is a `Sync` at its seq (dropped, counted, flagged), and the
/// account's next commit, whose `since` names the forged rev, is preceded
/// by the chain's `Sync` — the same verdicts the single-task stage gave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_frames_in_flight_keep_order_and_verdicts() {
    let (accounts, per) = (40, 25);
    let msgs = testnet::signed::likes(accounts, per, 1);
    let keys = Arc::new(FakeKeys::default());
    for a in 0..accounts {
        let did = Did::parse(&testnet::signed::did(a)).unwrap();
        keys.docs.lock().unwrap().insert(did.clone(), signed_key(a));
        // Half the keys are cached, half fetched.
        if a % 2 == 0 {
            keys.cache.lock().unwrap().insert(did, signed_key(a));
        }
    }
    let (in_tx, in_rx) = mpsc::channel(4096);
    let (out_tx, mut out_rx) = mpsc::channel(8192);
    let obs = Arc::new(Obs::new(Duration::from_secs(60)));
    let mut v = Verifier::new(false, Arc::new(keys), obs.clone(), Duration::from_secs(600));
    v.workers = 4;
    let task = tokio::spawn(v.run(in_rx, out_tx, CancellationToken::new()));

    let mut want = Vec::new();
    let mut last: HashMap<Did, String> = HashMap::new();
    let mut forged = 0;
    for (i, (seq, msg)) in msgs.iter().enumerate() {
        let bad = i % 7 == 3;
        let items = if bad {
            items_of(&testnet::tamper::signature(msg))
        } else {
            items_of(msg)
        };
        let p = items[0].proof.as_ref().unwrap();
        let (did, rev, since) = (p.meta.did.clone(), p.meta.rev.clone(), p.meta.since.clone());
        if bad {
            forged += 1;
            want.push((*seq, "sync"));
        } else {
            if last
                .get(&did)
                .is_some_and(|known| since.as_ref() != Some(known))
            {
                want.push((*seq, "sync"));
            }
            want.extend(items.iter().map(|_| (*seq, "commit")));
            last.insert(did, rev);
        }
        for item in items {
            in_tx.send(item).await.unwrap();
        }
    }
    drop(in_tx);
    let mut out = Vec::new();
    while let Some(i) = out_rx.recv().await {
        out.push(i);
    }
    task.await.unwrap();
    assert_eq!(kinds(&out), want);
    assert_eq!(obs.dropped(DropReason::BadSignature), forged);
    assert_eq!(obs.dropped(DropReason::Unverifiable), 0);
    assert!(forged > 100);
}

/// Checks inside the test's check function, and the most seen at once.
static INSIDE: Mutex<(usize, usize)> = Mutex::new((0, 0));
static INSIDE_CHANGED: std::sync::Condvar = std::sync::Condvar::new();

/// [`Proof::check`] that first waits (10 s at most) until another check is
/// running at the same time.
fn check_in_pairs(p: &Proof, key: &PublicKey, full: bool) -> Result<(), ProofError> {
    let mut g = INSIDE.lock().unwrap();
    g.0 += 1;
    g.1 = g.1.max(g.0);
    INSIDE_CHANGED.notify_all();
    let (mut g, _) = INSIDE_CHANGED
        .wait_timeout_while(g, Duration::from_secs(10), |g| g.1 < 2)
        .unwrap();
    g.0 -= 1;
    drop(g);
    p.check(key, full)
}

/// The checks run on several workers at once: with two workers, two
/// commits are checked at the same moment (the single-task stage checked
/// one at a time, and this test then fails at its 10 s wait).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_are_checked_on_several_workers_at_once() {
    let frames = commit_frames(8);
    let keys = Arc::new(FakeKeys::default());
    *keys.cache.lock().unwrap() = doc_keys();
    let (tx, in_rx) = mpsc::channel(64);
    let (out_tx, mut rx) = mpsc::channel(1024);
    let obs = Arc::new(Obs::new(Duration::from_secs(60)));
    let mut v = Verifier::new(true, Arc::new(keys), obs.clone(), Duration::from_secs(600));
    v.workers = 2;
    v.check = check_in_pairs;
    let task = tokio::spawn(v.run(in_rx, out_tx, CancellationToken::new()));
    let want: Vec<i64> = frames.iter().flat_map(|f| seqs(f)).collect();
    for f in frames {
        for i in f {
            tx.send(i).await.unwrap();
        }
    }
    drop(tx);
    let mut out = Vec::new();
    while let Some(i) = rx.recv().await {
        out.push(i);
    }
    task.await.unwrap();
    assert_eq!(INSIDE.lock().unwrap().1, 2, "two checks ran at once");
    assert_eq!(seqs(&out), want);
    assert_eq!(obs.dropped(DropReason::BadSignature), 0);
}
