//! A local AT Protocol network for `parity import` tests and benchmarks:
//! one HTTP server on `127.0.0.1:0` that plays an account's **PDS** (XRPC
//! `com.atproto.repo.listRecords`, `repo.describeRepo`,
//! `sync.getLatestCommit`, `sync.getRepo`: a CAR signed with the account's
//! test key, see `car_out`), the **PLC directory** (`GET /<did>`) and a
//! **did:web / handle host** (`/.well-known/did.json`,
//! `/.well-known/atproto-did`). DNS handle records are in [`crate::dns`].
//!
//! Data: repositories read from CAR fixtures ([`Pds::add_car`], MST walk in
//! `mst`) or built by the test ([`Pds::add_repo`]), stored as one `BTreeMap`
//! per (DID, collection). Every hosted DID gets a generated DID document
//! whose `#atproto_pds` endpoint is this server. Semantics of each role are
//! in `xrpc` and `identity`.
//!
//! Control: faults queued per method ([`Pds::inject`], consumed in order by
//! the next requests of that method), latency and rate-limit headers on XRPC
//! answers, and a gate that holds listRecords (or another method's)
//! requests until the test opens it. Observation: a request log, per-method counts with waiters that wake
//! on arrival (no polling), and the listRecords pages served.
//!
//! Method keys (for faults, counts and the log): the XRPC NSID, or [`PLC`],
//! [`DID_WEB`], [`ATPROTO_DID`].

#![allow(dead_code)]

pub(crate) mod car_out;
mod identity;
pub mod mst;
mod serve;
mod state;
mod types;
mod xrpc;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mst::read_car;
use state::{Doc, Gate, Repo, Shared};
// Not every test binary uses every item.
#[allow(unused_imports)]
pub use types::*;

/// A running server; stops accepting when dropped.
pub struct Pds {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Pds {
    pub async fn start() -> Pds {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::new(format!("http://{addr}")));
        let app = serve::router(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        Pds { addr, shared, task }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    // ---- repositories ----

    /// Serves the repository in the CAR file at `path` (replacing any repo
    /// of that DID) and registers a DID document for it if it has none.
    pub fn add_car(&self, path: impl AsRef<Path>) -> RepoInfo {
        let path = path.as_ref();
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let car = read_car(&bytes);
        let info = RepoInfo {
            did: car.did.clone(),
            rev: car.rev.clone(),
            commit_cid: car.commit_cid.clone(),
            records: car.records.len(),
            missing: car.missing_records,
            missing_nodes: car.missing_nodes,
        };
        let mut s = self.shared.lock();
        let mut repo = Repo {
            rev: car.rev,
            commit_cid: car.commit_cid,
            status: None,
            collections: BTreeMap::new(),
            blocks: car.record_blocks.into_iter().collect(),
            verbatim: None,
        };
        for r in car.records {
            repo.insert(r);
        }
        s.repos.insert(car.did.clone(), repo);
        s.identity(&car.did);
        info
    }

    /// Like [`add_car`](Self::add_car), but getRepo answers the file's own
    /// bytes (its real signature) until the repo changes, and the DID's
    /// document is `doc` (the fixture document holding the real key; its
    /// PDS endpoint is pointed here).
    pub fn add_car_verbatim(&self, path: impl AsRef<Path>, doc: serde_json::Value) -> RepoInfo {
        let path = path.as_ref();
        let info = self.add_car(path);
        let bytes = std::fs::read(path).expect("CAR fixture");
        self.shared.lock().repo(&info.did).verbatim = Some(bytes);
        self.add_did_doc_json(doc);
        info
    }

    /// Serves `bytes` as `did`'s getRepo answer until the repo changes
    /// (a tampered copy, say).
    pub fn set_repo_car(&self, did: &str, bytes: Vec<u8>) {
        self.shared.lock().repo(did).verbatim = Some(bytes);
    }

    /// The CAR getRepo answers for `did` now (built and signed, or verbatim).
    pub fn repo_car(&self, did: &str) -> Vec<u8> {
        let s = self.shared.lock();
        let q = [("did".to_owned(), did.to_owned())].into_iter().collect();
        car_out::get_repo(&s, &q).binary.expect("a CAR")
    }

    /// The multikey (`z…`) of the key getRepo signs `did`'s commits with;
    /// generated DID documents carry it as their `#atproto` key.
    pub fn signing_multikey(did: &str) -> String {
        car_out::multikey(did)
    }

    /// Serves a synthetic repository (replacing any repo of that DID); its
    /// commit CID is derived from `did` and `rev`. Registers a DID document
    /// if the DID has none, and sets the account's handle when given.
    pub fn add_repo(&self, did: &str, rev: &str, handle: Option<&str>, records: Vec<SynthRecord>) {
        let mut repo = Repo {
            rev: rev.to_owned(),
            commit_cid: synthetic_commit(did, rev),
            status: None,
            collections: BTreeMap::new(),
            blocks: Default::default(),
            verbatim: None,
        };
        for r in records {
            repo.insert(r);
        }
        let mut s = self.shared.lock();
        s.repos.insert(did.to_owned(), repo);
        let id = s.identity(did);
        if let Some(h) = handle {
            id.handle = Some(h.to_ascii_lowercase());
        }
    }

    /// Creates or replaces one record.
    pub fn update_record(&self, did: &str, record: SynthRecord) {
        let mut s = self.shared.lock();
        let repo = s.repo(did);
        repo.verbatim = None;
        repo.insert(record);
    }

    /// Deletes one record; false if it was not there.
    pub fn delete_record(&self, did: &str, collection: &str, rkey: &str) -> bool {
        let mut s = self.shared.lock();
        let repo = s.repo(did);
        repo.verbatim = None;
        let Some(recs) = repo.collections.get_mut(collection) else {
            return false;
        };
        let found = recs.remove(rkey).is_some();
        if recs.is_empty() {
            repo.collections.remove(collection);
        }
        found
    }

    /// Changes the rev (and so the commit CID) getLatestCommit reports.
    pub fn set_rev(&self, did: &str, rev: &str) {
        let mut s = self.shared.lock();
        let repo = s.repo(did);
        repo.verbatim = None;
        repo.rev = rev.to_owned();
        repo.commit_cid = synthetic_commit(did, rev);
    }

    /// `None`: active. Else `deactivated`, `takendown` or `suspended`: the
    /// PDS no longer lists the repo (400, as the reference PDS does).
    pub fn set_account_status(&self, did: &str, status: Option<&str>) {
        self.shared.lock().repo(did).status = status.map(str::to_owned);
    }

    /// Every record of `did` as served, in (collection, rkey) order.
    pub fn records(&self, did: &str) -> Vec<SynthRecord> {
        let s = self.shared.lock();
        let Some(repo) = s.repos.get(did) else {
            return Vec::new();
        };
        repo.collections
            .iter()
            .flat_map(|(c, recs)| {
                recs.iter().map(move |(rkey, r)| SynthRecord {
                    collection: c.clone(),
                    rkey: rkey.clone(),
                    cid: r.cid.clone(),
                    json: r.value.get().to_owned(),
                })
            })
            .collect()
    }

    /// Every hosted repository (sorted by DID): what a relay lists.
    pub fn hosted(&self) -> Vec<Hosted> {
        let s = self.shared.lock();
        let mut out: Vec<Hosted> = s
            .repos
            .iter()
            .map(|(did, r)| Hosted {
                did: did.clone(),
                rev: r.rev.clone(),
                head: r.commit_cid.clone(),
                status: r.status.clone(),
                collections: r.collections.keys().cloned().collect(),
            })
            .collect();
        out.sort_by(|a, b| a.did.cmp(&b.did));
        out
    }

    // ---- identity ----

    /// Serves a generated current-format document for `did` with
    /// `alsoKnownAs: ["at://<handle>"]`, and makes `handle` the account's
    /// handle (describeRepo; listRecords by handle).
    pub fn add_did_doc(&self, did: &str, handle: &str) {
        let mut s = self.shared.lock();
        let id = s.identity(did);
        id.handle = Some(handle.to_ascii_lowercase());
        id.doc = Doc::Generated;
    }

    /// Serves a given (e.g. recorded) document with only its `#atproto_pds`
    /// endpoint rewritten to this server; the handle is its first `at://`
    /// alias. Returns its DID (`id`).
    pub fn add_did_doc_json(&self, mut doc: serde_json::Value) -> String {
        let did = doc["id"].as_str().expect("DID doc has an id").to_owned();
        let mut s = self.shared.lock();
        let url = s.url.clone();
        identity::rewrite_pds_endpoint(&mut doc, &url);
        let id = s.identity(&did);
        id.handle = identity::handle_in(&doc);
        id.doc = Doc::Json(doc);
        did
    }

    /// Serves a generated document for `did` whose `#atproto_pds` endpoint
    /// is `endpoint` verbatim (any scheme, host, path, query or fragment).
    pub fn set_pds_endpoint(&self, did: &str, endpoint: &str) {
        let mut s = self.shared.lock();
        let url = s.url.clone();
        let handle = s.identity(did).handle.clone();
        let mut doc = identity::generated(did, handle.as_deref(), &url);
        identity::rewrite_pds_endpoint(&mut doc, endpoint);
        s.identity(did).doc = Doc::Json(doc);
    }

    /// The document currently served for `did`, if any.
    pub fn did_doc(&self, did: &str) -> Option<serde_json::Value> {
        identity::document(&self.shared.lock(), did).ok()
    }

    /// The directory forgets `did`: 404.
    pub fn remove_did_doc(&self, did: &str) {
        self.shared.lock().identity(did).doc = Doc::Absent;
    }

    /// The directory answers 410 for `did`.
    pub fn tombstone(&self, did: &str) {
        self.shared.lock().identity(did).doc = Doc::Tombstoned;
    }

    /// `/.well-known/did.json` serves the document of `did` (registered
    /// with a generated document if new).
    pub fn set_did_web(&self, did: &str) {
        let mut s = self.shared.lock();
        s.identity(did);
        s.did_web = Some(did.to_owned());
    }

    /// `did:web:localhost%3APORT`, the did:web this server can host.
    pub fn local_did_web(&self) -> String {
        format!("did:web:localhost%3A{}", self.addr.port())
    }

    /// `/.well-known/atproto-did` answers `did` to requests whose `Host`
    /// (port ignored, any case) is `handle`.
    pub fn add_handle(&self, handle: &str, did: &str) {
        self.shared
            .lock()
            .well_known
            .insert(handle.to_ascii_lowercase(), did.to_owned());
    }

    // ---- faults and pacing ----

    /// Queues `faults` for the next requests of `method` (one each, in
    /// order).
    pub fn inject(&self, method: &str, faults: Vec<Fault>) {
        self.shared
            .lock()
            .faults
            .entry(method.to_owned())
            .or_default()
            .extend(faults);
    }

    /// Drops the faults still queued for `method`.
    pub fn clear_faults(&self, method: &str) {
        self.shared.lock().faults.remove(method);
    }

    /// Delay before every XRPC answer.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().latency = latency;
    }

    /// `ratelimit-limit/-remaining/-reset/-policy` on every normal XRPC
    /// answer (values as given; nothing is enforced).
    pub fn set_rate_limit_headers(&self, limit: u64, remaining: u64, reset_epoch_secs: u64) {
        self.shared.lock().rate_limit = Some((limit, remaining, reset_epoch_secs));
    }

    /// true: listRecords omits `cursor` on a page after which nothing
    /// remains (some PDS implementations), instead of the reference's
    /// cursor-on-every-non-empty-page.
    pub fn set_omit_final_cursor(&self, omit: bool) {
        self.shared.lock().omit_final_cursor = omit;
    }

    // ---- synchronization ----

    /// From now on, the first `n` listRecords requests that get a normal
    /// answer pass; later ones wait until [`Pds::open_gate`]. Requests
    /// consumed by a fault neither count nor wait.
    pub fn gate_list_records_after(&self, n: usize) {
        self.gate_after(LIST_RECORDS, n);
    }

    /// Like [`Pds::gate_list_records_after`] for requests of `method`
    /// (e.g. [`GET_REPO`]): the first `n` pass, later ones wait until
    /// [`Pds::open_gate`].
    pub fn gate_after(&self, method: &str, n: usize) {
        self.shared.lock().gate = Some(Gate {
            method: method.to_owned(),
            pass: n,
            admitted: 0,
        });
    }

    /// Releases every waiting (gated) request and removes the gate.
    pub fn open_gate(&self) {
        self.shared.lock().gate = None;
        self.shared.gate_tick.send_modify(|t| *t += 1);
    }

    /// Resolves once `n` listRecords requests have arrived (counting faulted
    /// and gated ones). Panics after 30 s.
    pub async fn wait_for_list_records(&self, n: usize) {
        self.wait_for_requests(LIST_RECORDS, n).await;
    }

    /// Resolves once `n` requests of `method` have arrived. Panics after
    /// 30 s.
    pub async fn wait_for_requests(&self, method: &str, n: usize) {
        let mut rx = self.shared.counts.subscribe();
        let reached = rx.wait_for(|c| c.get(method).copied().unwrap_or(0) >= n);
        tokio::time::timeout(Duration::from_secs(30), reached)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "timed out waiting for {n} {method} requests (got {})",
                    self.count(method)
                )
            })
            .expect("server state alive");
    }

    // ---- observation ----

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Req> {
        self.shared.lock().log.clone()
    }

    /// Requests of `method` received so far.
    pub fn count(&self, method: &str) -> usize {
        self.shared
            .counts
            .borrow()
            .get(method)
            .copied()
            .unwrap_or(0)
    }

    /// `(did, collection, cursor sent)` of every listRecords page answered
    /// normally (200, not faulted), in order.
    pub fn list_records_pages(&self) -> Vec<(String, String, Option<String>)> {
        self.shared.lock().pages.clone()
    }
}

fn synthetic_commit(did: &str, rev: &str) -> String {
    dag_cbor_cid(format!("commit {did} {rev}").as_bytes())
}

impl Drop for Pds {
    fn drop(&mut self) {
        self.task.abort();
    }
}
