//! A local relay's repository listing for `parity import --all` tests and
//! benchmarks: one HTTP server on `127.0.0.1:0` answering
//! `com.atproto.sync.listRepos` and `com.atproto.sync.listReposByCollection`
//! with the real XRPC shapes.
//!
//! - listRepos: `limit` 1–1000 (default 500), answers
//!   `{cursor?, repos: [{did, head, rev, active, status?}]}` (the reference
//!   PDS's recorded page, `xrpc/rsky-ts-pds-0.5.27/listRepos.json`, has the
//!   same shape) in the order repos were added, inactive ones included.
//! - listReposByCollection: `collection` (required), `limit` 1–2000
//!   (default 500), answers `{cursor?, repos: [{did}]}`: the active repos
//!   that have a record of the collection.
//! - The cursor is opaque to clients: here the decimal position of the
//!   next entry. Like indigo's relay, a page carries a cursor only when it
//!   is full, so the end is a short page without one (or, after
//!   [`Relay::set_cursor_on_every_page`], the reference PDS's way: a cursor
//!   on every non-empty page and an empty last page). [`Relay::set_max_page`]
//!   caps pages below the asked `limit`, as real relays may.
//! - A bad `limit`, `cursor` or missing `collection` is 400
//!   `InvalidRequest`.
//!
//! Data: repos added one by one ([`Relay::add_repo`]), every repo of a
//! [`Pds`] ([`Relay::add_pds`], active iff the PDS serves it), or raw JSON
//! entries ([`Relay::add_raw`], served verbatim: malformed relay data).
//! Control: faults per method ([`Relay::inject`], consumed in order), a
//! gate holding list requests after the first `n` until opened, latency.
//! Observation: every request (method, cursor, limit, collection) and a
//! count with waiters that wake on arrival (no polling).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, RawQuery, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::pds::Pds;

pub const LIST_REPOS: &str = "com.atproto.sync.listRepos";
pub const LIST_REPOS_BY_COLLECTION: &str = "com.atproto.sync.listReposByCollection";

/// A misbehaviour for the next request of a method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayFault {
    /// The normal answer (to let earlier requests through).
    Pass,
    /// This status with an XRPC error body.
    Status(u16),
    /// 200 with this body instead of the page.
    Body(String),
    /// The normal page with its `cursor` replaced by this JSON value.
    WithCursor(Value),
}

/// One request received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayReq {
    pub method: String,
    pub cursor: Option<String>,
    pub limit: Option<String>,
    pub collection: Option<String>,
    /// The status answered (0 while held by the gate or in flight).
    pub status: u16,
}

struct Entry {
    /// The listRepos entry as served.
    value: Value,
    /// Collections listReposByCollection lists it under (active only).
    collections: Vec<String>,
}

struct State {
    entries: Vec<Entry>,
    faults: BTreeMap<String, VecDeque<RelayFault>>,
    max_page: usize,
    cursor_on_every_page: bool,
    latency: Duration,
    /// `(pass, admitted)`: list requests past `pass` wait for the gate.
    gate: Option<(usize, usize)>,
    log: Vec<RelayReq>,
}

struct Shared {
    state: Mutex<State>,
    count: watch::Sender<usize>,
    gate_tick: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

/// A running relay; stops accepting when dropped.
pub struct Relay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start() -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                entries: Vec::new(),
                faults: BTreeMap::new(),
                max_page: usize::MAX,
                cursor_on_every_page: false,
                latency: Duration::ZERO,
                gate: None,
                log: Vec::new(),
            }),
            count: watch::channel(0).0,
            gate_tick: watch::channel(0).0,
        });
        let app = Router::new()
            .route("/xrpc/{nsid}", get(route))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        Relay { addr, shared, task }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    // ---- data ----

    /// Lists one repo. `status` is sent only for inactive repos, as the
    /// reference implementations do.
    pub fn add_repo(
        &self,
        did: &str,
        head: &str,
        rev: &str,
        active: bool,
        status: Option<&str>,
        collections: &[String],
    ) {
        let mut value = json!({"did": did, "head": head, "rev": rev, "active": active});
        if let Some(s) = status.filter(|_| !active) {
            value["status"] = json!(s);
        }
        self.shared.lock().entries.push(Entry {
            value,
            collections: if active {
                collections.to_vec()
            } else {
                Vec::new()
            },
        });
    }

    /// Lists every repo `pds` hosts (DID order): active unless the PDS
    /// reports a status.
    pub fn add_pds(&self, pds: &Pds) {
        for h in pds.hosted() {
            self.add_repo(
                &h.did,
                &h.head,
                &h.rev,
                h.status.is_none(),
                h.status.as_deref(),
                &h.collections,
            );
        }
    }

    /// Lists `value` verbatim in listRepos, and as `{"did": value.did}`
    /// in listReposByCollection of `collections`.
    pub fn add_raw(&self, value: Value, collections: &[&str]) {
        self.shared.lock().entries.push(Entry {
            value,
            collections: collections.iter().map(|c| (*c).to_owned()).collect(),
        });
    }

    // ---- behaviour ----

    /// Pages hold at most `n` repos, whatever `limit` asks.
    pub fn set_max_page(&self, n: usize) {
        self.shared.lock().max_page = n.max(1);
    }

    /// A cursor on every non-empty page (the reference PDS), instead of
    /// only on full ones (indigo's relay).
    pub fn set_cursor_on_every_page(&self, on: bool) {
        self.shared.lock().cursor_on_every_page = on;
    }

    /// Delay before every answer.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().latency = latency;
    }

    /// Queues `faults` for the next requests of `method`.
    pub fn inject(&self, method: &str, faults: Vec<RelayFault>) {
        self.shared
            .lock()
            .faults
            .entry(method.to_owned())
            .or_default()
            .extend(faults);
    }

    /// The first `n` list requests answered normally pass; later ones wait
    /// until [`Relay::open_gate`].
    pub fn gate_after(&self, n: usize) {
        self.shared.lock().gate = Some((n, 0));
    }

    pub fn open_gate(&self) {
        self.shared.lock().gate = None;
        self.shared.gate_tick.send_modify(|t| *t += 1);
    }

    // ---- observation ----

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RelayReq> {
        self.shared.lock().log.clone()
    }

    /// List requests received so far.
    pub fn count(&self) -> usize {
        *self.shared.count.borrow()
    }

    /// Resolves once `n` list requests have arrived. Panics after 30 s.
    pub async fn wait_for_requests(&self, n: usize) {
        let mut rx = self.shared.count.subscribe();
        let reached = rx.wait_for(|c| *c >= n);
        tokio::time::timeout(Duration::from_secs(30), reached)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {n} relay requests"))
            .expect("relay state alive");
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn xrpc_error(status: u16, error: &str, message: &str) -> (u16, String) {
    (
        status,
        json!({"error": error, "message": message}).to_string(),
    )
}

async fn route(
    AxState(sh): AxState<Arc<Shared>>,
    Path(nsid): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let query: BTreeMap<String, String> =
        url::form_urlencoded::parse(q.as_deref().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let (idx, latency, fault) = {
        let mut s = sh.lock();
        s.log.push(RelayReq {
            method: nsid.clone(),
            cursor: query.get("cursor").cloned(),
            limit: query.get("limit").cloned(),
            collection: query.get("collection").cloned(),
            status: 0,
        });
        let fault = s.faults.get_mut(&nsid).and_then(VecDeque::pop_front);
        (s.log.len() - 1, s.latency, fault)
    };
    sh.count.send_modify(|c| *c += 1);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let (status, body) = match fault {
        Some(RelayFault::Status(code)) => xrpc_error(code, "InternalServerError", "injected"),
        Some(RelayFault::Body(b)) => (200, b),
        Some(RelayFault::WithCursor(c)) => {
            pass_gate(&sh).await;
            let (status, body) = page(&sh.lock(), &nsid, &query);
            let mut v: Value = serde_json::from_str(&body).unwrap();
            if status == 200 {
                v["cursor"] = c;
            }
            (status, v.to_string())
        }
        None | Some(RelayFault::Pass) => {
            pass_gate(&sh).await;
            page(&sh.lock(), &nsid, &query)
        }
    };
    sh.lock().log[idx].status = status;
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn pass_gate(sh: &Shared) {
    let mut tick = sh.gate_tick.subscribe();
    loop {
        {
            let mut s = sh.lock();
            match s.gate.as_mut() {
                None => return,
                Some((pass, admitted)) if *admitted < *pass => {
                    *admitted += 1;
                    return;
                }
                Some(_) => {}
            }
        }
        if tick.changed().await.is_err() {
            return;
        }
    }
}

/// The normal answer to one list request.
fn page(s: &State, nsid: &str, q: &BTreeMap<String, String>) -> (u16, String) {
    let invalid = |detail: &str| xrpc_error(400, "InvalidRequest", detail);
    let max = match nsid {
        LIST_REPOS => 1000,
        LIST_REPOS_BY_COLLECTION => 2000,
        _ => return xrpc_error(501, "MethodNotImplemented", "Method Not Implemented"),
    };
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 500,
        Some(Ok(n)) if (1..=max).contains(&n) => n,
        Some(_) => return invalid(&format!("limit must be an integer from 1 to {max}")),
    };
    let start = match q.get("cursor").map(|c| c.parse::<usize>()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return invalid("malformed cursor"),
    };
    let listed: Vec<Value> = if nsid == LIST_REPOS {
        s.entries.iter().map(|e| e.value.clone()).collect()
    } else {
        let Some(c) = q.get("collection") else {
            return invalid("missing required property \"collection\"");
        };
        s.entries
            .iter()
            .filter(|e| e.collections.iter().any(|x| x == c))
            .map(|e| json!({"did": e.value.get("did").cloned().unwrap_or(Value::Null)}))
            .collect()
    };
    let size = limit.min(s.max_page);
    let repos: Vec<Value> = listed.iter().skip(start).take(size).cloned().collect();
    let end = start + repos.len();
    let cursor = if repos.is_empty() {
        None
    } else if repos.len() == size || s.cursor_on_every_page {
        Some(end.to_string())
    } else {
        None
    };
    let mut body = json!({"repos": repos});
    if let Some(c) = cursor {
        body["cursor"] = json!(c);
    }
    (200, body.to_string())
}
