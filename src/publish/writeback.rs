//! Write-back: the records a publish call wrote, as one [`Batch`] for the
//! store, so the mapped tables show the change at once, at the commit's
//! rev, through the same mappers and guards as the stream. The same change
//! arriving later from the firehose or Jetstream is then not newer, so it
//! is a no-op (counted as stale), and a row never goes back.
//!
//! Pure: no IO. Several writes of one commit to the same URI keep the last
//! (a batch holds at most one mutation per URI).

use std::collections::HashMap;

use serde_json::value::RawValue;

use crate::batch::{Batch, Checkpoint, Published, PublishedRow, RepoChange};
use crate::event::{Commit, CommitOp, Cursor, Did, Event, EventKind, Nsid, RecordKey};
use crate::mapper::{Dispatch, Registry};
use crate::store::OutboxRow;

/// One outbox row the PDS accepted.
#[derive(Debug, Clone)]
pub struct Written<'a> {
    pub row: &'a OutboxRow,
    /// The record's CID (`None` for a delete).
    pub cid: Option<String>,
    /// The rev of the commit that wrote it.
    pub rev: String,
}

impl Written<'_> {
    pub fn uri(&self) -> String {
        format!(
            "at://{}/{}/{}",
            self.row.did,
            self.row.collection,
            self.row.rkey.as_deref().unwrap_or("")
        )
    }
}

/// The batch that marks `written` published (lease `owner`) and applies
/// their records locally. Records no mapper takes are only marked.
pub fn batch(registry: &Registry, did: &Did, owner: &str, written: &[Written<'_>]) -> Batch {
    let mut mutations = Vec::new();
    let mut by_uri: HashMap<String, usize> = HashMap::new();
    let mut rows = Vec::with_capacity(written.len());
    let mut newest: Option<&str> = None;
    for w in written {
        let uri = w.uri();
        rows.push(PublishedRow {
            id: w.row.id,
            uri: uri.clone(),
            cid: w.cid.clone(),
            rev: w.rev.clone(),
        });
        if newest.is_none_or(|n| w.rev.as_str() > n) {
            newest = Some(&w.rev);
        }
        let (Some(collection), Some(rkey)) = (
            Nsid::parse(&w.row.collection),
            w.row.rkey.as_deref().and_then(RecordKey::parse),
        ) else {
            continue;
        };
        let op = match w.row.op.as_str() {
            "create" => CommitOp::Create,
            "update" => CommitOp::Update,
            _ => CommitOp::Delete,
        };
        let record = match (&op, &w.row.record) {
            (CommitOp::Delete, _) | (_, None) => None,
            (_, Some(text)) => RawValue::from_string(text.clone()).ok(),
        };
        let event = Event {
            cursor: Cursor(0),
            time_us: chrono::Utc::now().timestamp_micros(),
            did: did.clone(),
            kind: EventKind::Commit(Commit {
                collection,
                rkey,
                rev: w.rev.clone(),
                op,
                cid: w.cid.clone(),
                record,
            }),
        };
        match registry.dispatch(&event) {
            Dispatch::Mutation(m) => match by_uri.get(&uri) {
                Some(&i) => mutations[i] = m,
                None => {
                    by_uri.insert(uri, mutations.len());
                    mutations.push(m);
                }
            },
            Dispatch::Unmapped => {}
            Dispatch::Failed { uri, error } => {
                tracing::warn!(uri = %uri, error = %error, "Published record does not fit its mapper; not written back.");
            }
        }
    }
    let mut repos = HashMap::new();
    if let Some(rev) = newest {
        repos.insert(
            did.clone(),
            RepoChange {
                rev: Some(rev.to_owned()),
                ..RepoChange::default()
            },
        );
    }
    Batch {
        events: written.len(),
        mutations,
        repos,
        last_time_us: chrono::Utc::now().timestamp_micros(),
        checkpoint: Checkpoint::Publish(Published {
            owner: owner.to_owned(),
            rows,
        }),
    }
}
