//! The PDS's XRPC methods, answered from [`State`] as the reference PDS
//! (`atproto:packages/pds`) does.
//!
//! `com.atproto.repo.listRecords`: `repo` is a DID or a hosted account's
//! handle; `limit` 1–100 (default 50); records sorted by rkey descending,
//! ascending with `reverse=true`; `cursor` is an rkey and the page starts
//! strictly after it; the answer's `cursor` is the last record's rkey on
//! every non-empty page (so the end is an empty page without one), unless
//! `omit_final_cursor` drops it from a page after which nothing remains.
//! An unknown, deactivated or taken-down repo is 400 `InvalidRequest`
//! "Could not find repo: <repo>" (rsky's recordings of PDS 0.5.27).
//! `describeRepo` and `sync.getLatestCommit` follow the same sources.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::Serialize;
use serde_json::value::RawValue;

use super::serve::Reply;
use super::state::{Rec, State};
use super::{DESCRIBE_REPO, GET_LATEST_COMMIT, GET_REPO, LIST_RECORDS, identity};

type Params = BTreeMap<String, String>;

pub(super) fn dispatch(s: &mut State, nsid: &str, q: &Params, live: bool) -> Reply {
    match nsid {
        LIST_RECORDS => list_records(s, q, live),
        DESCRIBE_REPO => describe_repo(s, q),
        GET_LATEST_COMMIT => get_latest_commit(s, q),
        GET_REPO => super::car_out::get_repo(s, q),
        _ => Reply::xrpc_error(501, "MethodNotImplemented", "Method Not Implemented"),
    }
}

fn invalid_params(nsid: &str, detail: &str) -> Reply {
    Reply::xrpc_error(
        400,
        "InvalidRequest",
        &format!("Invalid {nsid} params: {detail}"),
    )
}

fn required<'q>(nsid: &str, q: &'q Params, key: &str) -> Result<&'q str, Reply> {
    q.get(key)
        .map(String::as_str)
        .ok_or_else(|| invalid_params(nsid, &format!("missing required property \"{key}\"")))
}

#[derive(Serialize)]
struct Page<'a> {
    records: Vec<Item<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cursor: Option<&'a str>,
}

#[derive(Serialize)]
struct Item<'a> {
    uri: String,
    cid: &'a str,
    value: &'a RawValue,
}

fn list_records(s: &mut State, q: &Params, live: bool) -> Reply {
    let reply = (|| {
        let repo = required(LIST_RECORDS, q, "repo")?;
        let collection = required(LIST_RECORDS, q, "collection")?;
        let limit = match q.get("limit") {
            None => 50,
            Some(l) => match l.parse::<i64>() {
                Err(_) => return Err(invalid_params(LIST_RECORDS, "expected an integer")),
                Ok(n) if n < 1 => {
                    let msg = format!("integer too small (minimum 1, got {n})");
                    return Err(invalid_params(LIST_RECORDS, &msg));
                }
                Ok(n) if n > 100 => {
                    let msg = format!("integer too big (maximum 100, got {n})");
                    return Err(invalid_params(LIST_RECORDS, &msg));
                }
                Ok(n) => n as usize,
            },
        };
        let reverse = match q.get("reverse").map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(invalid_params(LIST_RECORDS, "expected a boolean")),
        };
        let cursor = q.get("cursor").map(String::as_str);
        let did = s
            .resolve_repo(repo)
            .filter(|d| s.repos[d].status.is_none())
            .ok_or_else(|| {
                Reply::xrpc_error(
                    400,
                    "InvalidRequest",
                    &format!("Could not find repo: {repo}"),
                )
            })?;
        let empty = BTreeMap::new();
        let recs = s.repos[&did].collections.get(collection).unwrap_or(&empty);
        let mut rest: Box<dyn Iterator<Item = (&String, &Rec)>> = match (reverse, cursor) {
            (false, None) => Box::new(recs.iter().rev()),
            (false, Some(c)) => Box::new(
                recs.range::<str, _>((Bound::Unbounded, Bound::Excluded(c)))
                    .rev(),
            ),
            (true, None) => Box::new(recs.iter()),
            (true, Some(c)) => {
                Box::new(recs.range::<str, _>((Bound::Excluded(c), Bound::Unbounded)))
            }
        };
        let page: Vec<(&String, &Rec)> = rest.by_ref().take(limit).collect();
        let more = rest.next().is_some();
        let next = page
            .last()
            .map(|(rkey, _)| rkey.as_str())
            .filter(|_| more || !s.omit_final_cursor);
        let body = Page {
            records: page
                .iter()
                .map(|(rkey, r)| Item {
                    uri: format!("at://{did}/{collection}/{rkey}"),
                    cid: &r.cid,
                    value: &r.value,
                })
                .collect(),
            cursor: next,
        };
        let body = serde_json::to_string(&body).unwrap();
        Ok((did.clone(), collection.to_owned(), body))
    })();
    match reply {
        Err(r) => r,
        Ok((did, collection, body)) => {
            if live {
                s.pages.push((did, collection, q.get("cursor").cloned()));
            }
            Reply::json(200, body)
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Description {
    handle: String,
    did: String,
    did_doc: serde_json::Value,
    collections: Vec<String>,
    handle_is_correct: bool,
}

fn describe_repo(s: &State, q: &Params) -> Reply {
    let repo = match required(DESCRIBE_REPO, q, "repo") {
        Ok(r) => r,
        Err(e) => return e,
    };
    let Some(did) = s.resolve_repo(repo).filter(|d| s.repos[d].status.is_none()) else {
        return Reply::xrpc_error(
            400,
            "InvalidRequest",
            &format!("Could not find user: {repo}"),
        );
    };
    let doc = match identity::document(s, &did) {
        Ok(doc) => doc,
        Err(status) => {
            let msg = format!("Could not resolve DID: {did} (directory answered {status})");
            return Reply::xrpc_error(400, "InvalidRequest", &msg);
        }
    };
    let handle = s.identities.get(&did).and_then(|i| i.handle.clone());
    let body = Description {
        handle_is_correct: handle.is_some() && identity::handle_in(&doc) == handle,
        handle: handle.unwrap_or_else(|| "handle.invalid".to_owned()),
        did: did.clone(),
        did_doc: doc,
        collections: s.repos[&did].collections.keys().cloned().collect(),
    };
    Reply::json(200, serde_json::to_string(&body).unwrap())
}

fn get_latest_commit(s: &State, q: &Params) -> Reply {
    let did = match required(GET_LATEST_COMMIT, q, "did") {
        Ok(d) => d,
        Err(e) => return e,
    };
    let Some(repo) = s.repos.get(did) else {
        let msg = format!("Could not find repo for DID: {did}");
        return Reply::xrpc_error(400, "RepoNotFound", &msg);
    };
    match repo.status.as_deref() {
        None => Reply::json(
            200,
            serde_json::json!({"cid": repo.commit_cid, "rev": repo.rev}).to_string(),
        ),
        Some(status) => {
            let (error, what) = match status {
                "takendown" => ("RepoTakendown", "takendown"),
                "suspended" => ("RepoSuspended", "suspended"),
                _ => ("RepoDeactivated", "deactivated"),
            };
            Reply::xrpc_error(400, error, &format!("Repo has been {what}: {did}"))
        }
    }
}
