//! The served data and the test's knobs, shared by the HTTP handlers and
//! the [`super::Pds`] handle: one mutex (never held across an await) plus
//! two watch channels that wake waiters without polling.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::watch;

use super::{Fault, Req, SynthRecord};

/// One record as served: its CID text and its JSON value.
pub(super) struct Rec {
    pub cid: String,
    pub value: Box<RawValue>,
}

/// One account's repository.
pub(super) struct Repo {
    pub rev: String,
    pub commit_cid: String,
    /// `None` when active; else `deactivated`, `takendown` or `suspended`.
    pub status: Option<String>,
    /// collection → rkey → record; rkeys sort as the reference PDS's SQL
    /// `ORDER BY rkey` does (byte order).
    pub collections: BTreeMap<String, BTreeMap<String, Rec>>,
    /// Record blocks read from a CAR fixture, by CID text: getRepo serves
    /// them as they were (other records are encoded from their JSON).
    pub blocks: HashMap<String, Vec<u8>>,
    /// The fixture CAR as read, served verbatim by getRepo until the repo
    /// changes (`Pds::add_car_verbatim`).
    pub verbatim: Option<Vec<u8>>,
}

impl Repo {
    pub fn insert(&mut self, r: SynthRecord) {
        let value = RawValue::from_string(r.json)
            .unwrap_or_else(|e| panic!("record {}/{} is not JSON: {e}", r.collection, r.rkey));
        self.collections
            .entry(r.collection)
            .or_default()
            .insert(r.rkey, Rec { cid: r.cid, value });
    }
}

/// What the PLC directory (or the did:web host) says about a DID.
pub(super) enum Doc {
    /// Built from the fixture template, the handle and the server URL.
    Generated,
    /// A given document (its PDS endpoint already rewritten).
    Json(Value),
    /// Unknown to the directory: 404.
    Absent,
    /// Tombstoned: 410.
    Tombstoned,
}

pub(super) struct Identity {
    /// The account's handle (lower case), as the PDS and the DID doc know it.
    pub handle: Option<String>,
    pub doc: Doc,
}

/// Requests of `method` (listRecords unless set otherwise) answered
/// normally pass while `admitted < pass`; later ones wait for `open_gate`.
pub(super) struct Gate {
    pub method: String,
    pub pass: usize,
    pub admitted: usize,
}

pub(super) struct State {
    /// `http://127.0.0.1:PORT`, the PDS endpoint written into DID docs.
    pub url: String,
    pub repos: HashMap<String, Repo>,
    pub identities: HashMap<String, Identity>,
    /// handle → DID answered by `/.well-known/atproto-did`.
    pub well_known: HashMap<String, String>,
    /// The DID whose document `/.well-known/did.json` serves.
    pub did_web: Option<String>,
    pub faults: HashMap<String, VecDeque<Fault>>,
    pub latency: Duration,
    /// `(limit, remaining, reset)` sent on every normal XRPC response.
    pub rate_limit: Option<(u64, u64, u64)>,
    /// Omit `cursor` on a page after which nothing remains (the reference
    /// PDS sends one on every non-empty page).
    pub omit_final_cursor: bool,
    pub gate: Option<Gate>,
    pub log: Vec<Req>,
    /// `(did, collection, cursor)` of every listRecords page served normally.
    pub pages: Vec<(String, String, Option<String>)>,
}

impl State {
    /// The DID of a hosted repo named by DID or handle (any case).
    pub fn resolve_repo(&self, repo: &str) -> Option<String> {
        if repo.starts_with("did:") {
            return self.repos.contains_key(repo).then(|| repo.to_owned());
        }
        let handle = repo.to_ascii_lowercase();
        self.identities
            .iter()
            .find(|(did, id)| {
                id.handle.as_deref() == Some(handle.as_str()) && self.repos.contains_key(*did)
            })
            .map(|(did, _)| did.clone())
    }

    /// The identity of `did`, created (generated doc, no handle) if new.
    pub fn identity(&mut self, did: &str) -> &mut Identity {
        self.identities.entry(did.to_owned()).or_insert(Identity {
            handle: None,
            doc: Doc::Generated,
        })
    }

    pub fn repo(&mut self, did: &str) -> &mut Repo {
        self.repos
            .get_mut(did)
            .unwrap_or_else(|| panic!("no repo {did} on this PDS"))
    }
}

pub(super) struct Shared {
    pub state: Mutex<State>,
    /// Requests received per method key (bumped on arrival).
    pub counts: watch::Sender<HashMap<String, usize>>,
    /// Bumped when the gate opens.
    pub gate_tick: watch::Sender<u64>,
}

impl Shared {
    pub fn new(url: String) -> Shared {
        Shared {
            state: Mutex::new(State {
                url,
                repos: HashMap::new(),
                identities: HashMap::new(),
                well_known: HashMap::new(),
                did_web: None,
                faults: HashMap::new(),
                latency: Duration::ZERO,
                rate_limit: None,
                omit_final_cursor: false,
                gate: None,
                log: Vec::new(),
                pages: Vec::new(),
            }),
            counts: watch::channel(HashMap::new()).0,
            gate_tick: watch::channel(0).0,
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}
