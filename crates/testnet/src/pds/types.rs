//! The values tests build and read: method keys, records, faults, the
//! request log entry, and helpers for synthetic data (TIDs, CIDs).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::mst::cid_text;

pub const LIST_RECORDS: &str = "com.atproto.repo.listRecords";
pub const DESCRIBE_REPO: &str = "com.atproto.repo.describeRepo";
pub const GET_LATEST_COMMIT: &str = "com.atproto.sync.getLatestCommit";
pub const GET_REPO: &str = "com.atproto.sync.getRepo";
/// Method key of `GET /<did>` (the PLC directory).
pub const PLC: &str = "plc";
/// Method key of `GET /.well-known/did.json`.
pub const DID_WEB: &str = "did-web";
/// Method key of `GET /.well-known/atproto-did`.
pub const ATPROTO_DID: &str = "atproto-did";

/// One record to serve. `json` is the record value in atproto JSON form;
/// `cid` is what listRecords reports (not checked against `json`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SynthRecord {
    pub collection: String,
    pub rkey: String,
    pub cid: String,
    pub json: String,
}

impl SynthRecord {
    /// A record whose CID is the sha-256 DAG-CBOR CID of `json` encoded
    /// with `serde_ipld_dagcbor` (`$link`/`$bytes` objects are hashed as
    /// plain maps, so it is stable and distinct per value, not necessarily
    /// what a PDS would compute).
    pub fn new(collection: &str, rkey: &str, json: &str) -> SynthRecord {
        let value: serde_json::Value = serde_json::from_str(json).expect("record JSON");
        let cbor = serde_ipld_dagcbor::to_vec(&value).expect("JSON encodes as DAG-CBOR");
        SynthRecord {
            collection: collection.to_owned(),
            rkey: rkey.to_owned(),
            cid: dag_cbor_cid(&cbor),
            json: json.to_owned(),
        }
    }
}

/// The CIDv1 text (dag-cbor, sha-256) of `bytes`.
pub fn dag_cbor_cid(bytes: &[u8]) -> String {
    let mut cid = vec![0x01, 0x71, 0x12, 0x20];
    cid.extend_from_slice(&Sha256::digest(bytes));
    cid_text(&cid)
}

/// A TID (13 chars, base32-sortable): `micros` since the epoch and a 10-bit
/// clock id. TIDs sort like their timestamps.
pub fn tid(micros: u64, clock_id: u16) -> String {
    const ALPHABET: &[u8; 32] = b"234567abcdefghijklmnopqrstuvwxyz";
    let v = ((micros & ((1 << 53) - 1)) << 10) | u64::from(clock_id & 0x3ff);
    (0..13)
        .map(|i| ALPHABET[((v >> (60 - 5 * i)) & 31) as usize] as char)
        .collect()
}

/// What [`Pds::add_car`] loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoInfo {
    pub did: String,
    pub rev: String,
    /// The CAR root (the commit block's CID), as getLatestCommit reports it.
    pub commit_cid: String,
    /// Records served.
    pub records: usize,
    /// Records the MST lists whose block is not in the CAR (not served).
    pub missing: usize,
    /// MST nodes absent from the CAR (their subtrees are not served).
    pub missing_nodes: usize,
}

/// One repository as a relay lists it ([`Pds::hosted`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hosted {
    pub did: String,
    pub rev: String,
    /// The commit CID.
    pub head: String,
    /// `None` when active; else `deactivated`, `takendown`, `suspended`.
    pub status: Option<String>,
    /// Collections with at least one record.
    pub collections: Vec<String>,
}

/// A misbehaviour for the next request of a method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 429 `RateLimitExceeded` with `Retry-After` and `ratelimit-remaining` /
    /// `ratelimit-reset` when given (`ratelimit-limit` and
    /// `ratelimit-policy` accompany those two; the limit is the one from
    /// [`Pds::set_rate_limit_headers`], else 3000).
    RateLimited {
        retry_after_secs: Option<u64>,
        remaining: Option<u64>,
        reset_epoch_secs: Option<u64>,
    },
    /// This status with the role's error body (XRPC `{"error","message"}`).
    Status(u16),
    /// The normal answer, sent only after this delay.
    Hang(Duration),
    /// 200 with the first half of the normal body.
    MalformedJson,
    /// 200 with an HTML page.
    NotJson,
    /// `302 Found` with this `Location` (an absolute URL, or a path on this
    /// server), as a compromised or hostile server could answer.
    Redirect(String),
    /// The normal answer with its `cursor` replaced by this value (a
    /// listRecords page that points back at an earlier page).
    WithCursor(String),
    /// The normal answer preceded by this many bytes of JSON whitespace,
    /// sent chunked (no `Content-Length`): a body of any size that still
    /// parses.
    Padded(usize),
}

/// One request received.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    pub query: BTreeMap<String, String>,
    /// 0 while no answer has been sent (in flight, or the client left).
    pub status: u16,
    pub at: Instant,
}
