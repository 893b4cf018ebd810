//! Whole-repo import, fetching half: one `com.atproto.sync.getRepo` per
//! DID, streamed under `import.max_repo_bytes`, verified completely
//! (signature with the DID's `#atproto` key, MST structure, every record
//! CID), then split into the mapped collections' records.
//!
//! Owns: the method decision (`auto` falls back to listRecords for a repo
//! that is too big, and for every later DID of a PDS that refused or does
//! not implement getRepo; `getrepo` never falls back), refreshing the key
//! once when the signature fails, and the [`Snapshot`] handed to `repo_job`.
//! Does not own writing (`repo_job`), verification itself
//! (`source::codecs::repo`).
//!
//! A repo that fails verification fails its DID with the reason (`bad
//! signature`, `MST root mismatch`, `record CID mismatch`, `missing
//! block`) before anything of it is written. The snapshot's rev is the
//! signed commit's: no separate `getLatestCommit`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use super::config::ImportMethod;
use super::failure::DidError;
use super::identity::{Identity, Resolver};
use super::job::Ctx;
use super::page::Listed;
use super::xrpc::XrpcError;
use crate::event::is_tid;
use crate::source::codecs::dagcbor::{Transcoder, push_cid_base32};
use crate::source::codecs::repo::{RepoError, VerifiedRepo, verify_repo};

/// A verified repository, its mapped records grouped by collection.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The signed commit's rev: every row written from it carries it.
    pub rev: String,
    /// Mapped collections present in the repo, records in rkey order.
    pub collections: BTreeMap<String, Collected>,
}

/// One collection of a snapshot.
#[derive(Debug, Default)]
pub struct Collected {
    /// `(rkey, record as listRecords would list it)`, rkeys ascending.
    pub records: Vec<(String, Listed)>,
    /// Records that could not be turned into JSON (not written; their
    /// collection is then not swept).
    pub failed: u64,
}

impl Snapshot {
    /// The records of `collection` (none if the repo has none).
    pub fn collection(&self, collection: &str) -> Option<&Collected> {
        self.collections.get(collection)
    }

    /// About how many bytes its records hold in memory.
    pub fn bytes(&self) -> u64 {
        let per_record = std::mem::size_of::<(String, Listed)>() + 16;
        self.collections
            .values()
            .flat_map(|c| &c.records)
            .map(|(rkey, l)| {
                (per_record + rkey.len() + l.uri.len() + l.cid.len() + l.value.get().len()) as u64
            })
            .sum()
    }
}

/// PDS hosts that refused getRepo or do not implement it: `auto` lists
/// their repos instead for the rest of the run.
#[derive(Debug, Default)]
pub struct NoGetRepo(Mutex<HashSet<String>>);

impl NoGetRepo {
    fn contains(&self, pds: &str) -> bool {
        self.0.lock().expect("no_getrepo lock").contains(pds)
    }
    fn insert(&self, pds: &str) {
        self.0
            .lock()
            .expect("no_getrepo lock")
            .insert(pds.to_owned());
    }
}

/// What to do with one DID.
pub enum Fetched {
    Verified(Snapshot),
    /// Use listRecords (auto only); the reason was logged.
    ListRecords,
}

/// Fetches and verifies `id`'s repository.
pub async fn fetch(
    ctx: &Ctx,
    resolver: &Resolver,
    id: &Identity,
    token: &CancellationToken,
) -> Result<Fetched, DidError> {
    let auto = ctx.method == ImportMethod::Auto;
    if auto && ctx.no_getrepo.contains(&id.pds) {
        return Ok(Fetched::ListRecords);
    }
    let did = id.did.as_str();
    let blocks = match ctx
        .xrpc
        .get_repo(&id.pds, did, ctx.max_repo_bytes, token)
        .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(RepoError::TooBig(limit))) if auto => {
            tracing::info!(did = %did, limit, "the repository is larger than import.max_repo_bytes: listing its records instead");
            return Ok(Fetched::ListRecords);
        }
        Ok(Err(e)) => return Err(DidError::Repo(e)),
        Err(e) if auto && falls_back(&e) => {
            tracing::info!(pds = %id.pds, error = %e, "the PDS does not serve getRepo: listing records for its repos instead");
            ctx.no_getrepo.insert(&id.pds);
            return Ok(Fetched::ListRecords);
        }
        Err(e) => return Err(DidError::Discover(e)),
    };
    let key = resolver.signing_key(&id.did, false).await?;
    let verified = match verify_repo(&blocks, did, Some(&key)) {
        Err(RepoError::BadSignature) => {
            // The key may have rotated since it was cached: ask once more.
            let key = resolver.signing_key(&id.did, true).await?;
            verify_repo(&blocks, did, Some(&key))
        }
        r => r,
    }
    .map_err(DidError::Repo)?;
    if !is_tid(verified.commit.rev) {
        return Err(DidError::Repo(RepoError::Malformed(
            "the commit's rev is not a TID",
        )));
    }
    Ok(Fetched::Verified(split(&verified, did, |c| {
        ctx.registry.handles(c)
    })))
}

/// A refusal that means "this PDS will not serve getRepo" (not the repo's
/// own state, such as `RepoTakendown`, which fails the DID as listRecords
/// would): not implemented, not found as a route, auth required,
/// forbidden, or a redirect (never followed).
fn falls_back(e: &XrpcError) -> bool {
    match e {
        XrpcError::Refused { error: Some(n), .. } if n == "MethodNotImplemented" => true,
        XrpcError::Refused { status, .. } => {
            matches!(status, 300..=399 | 401 | 403 | 404 | 405 | 501) && !super::failure::is_gone(e)
        }
        _ => false,
    }
}

/// Groups the verified records of mapped collections, as listRecords
/// items; keys that are not `collection/rkey` are skipped (counted in no
/// collection: the MST checks passed, but parity cannot name them).
pub fn split(repo: &VerifiedRepo<'_>, did: &str, mapped: impl Fn(&str) -> bool) -> Snapshot {
    let mut out = Snapshot {
        rev: repo.commit.rev.to_owned(),
        collections: BTreeMap::new(),
    };
    let mut transcoder = Transcoder::new();
    let mut cid_text = Vec::with_capacity(64);
    for r in &repo.records {
        let Some((collection, rkey)) = std::str::from_utf8(&r.key)
            .ok()
            .and_then(|k| k.split_once('/'))
        else {
            tracing::warn!(key = ?String::from_utf8_lossy(&r.key[..r.key.len().min(300)]), "import: MST key is not collection/rkey; skipped");
            continue;
        };
        if !mapped(collection) {
            continue;
        }
        let entry = out.collections.entry(collection.to_owned()).or_default();
        let json = match transcoder
            .record_to_json(r.block)
            .ok()
            .and_then(|j| RawValue::from_string(j).ok())
        {
            Some(v) => v,
            None => {
                entry.failed += 1;
                tracing::warn!(did = %did, collection = %collection, rkey = ?rkey, "import: record is not valid atproto data; skipped");
                continue;
            }
        };
        cid_text.clear();
        push_cid_base32(&mut cid_text, r.cid);
        entry.records.push((
            rkey.to_owned(),
            Listed {
                uri: format!("at://{did}/{collection}/{rkey}"),
                cid: String::from_utf8_lossy(&cid_text).into_owned(),
                value: json,
            },
        ));
    }
    out
}
