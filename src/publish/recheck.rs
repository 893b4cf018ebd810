//! Creates an earlier claim may already have written (the worker died or
//! lost the answer mid-call: `attempts > 1`), looked up on the PDS with
//! `com.atproto.repo.getRecord` before they are sent again.
//!
//! Without the look-up each such row goes alone as a `putRecord` that must
//! not overwrite: after `kill -9` mid-batch that is up to 200 commits, one
//! `getLatestCommit` and one local write-back each, where one call did the
//! work before. With it, a few parallel reads decide most rows:
//! - [`Found::Absent`]: not on the PDS, so a plain create again, batched
//!   with its neighbours in one `applyWrites` (on the first retry only: if
//!   that batch fails too, the next retry sends each row alone);
//! - [`Found::Same`]: there with the very record parity would write, so
//!   published as it is (its CID from the PDS), with no write at all.
//!
//! Anything else (there with other content, an error, an answer that does
//! not parse) leaves the row undecided: it goes alone as before, and the
//! PDS's answer to the put decides (200 without a commit, or
//! `InvalidSwap` → conflict).
//!
//! Order: a row is only judged when no earlier row of the same claim
//! writes the same record, so nothing this claim sends before the row's
//! turn can change what was found.
//!
//! Owns: choosing the rows to look up ([`doubtful`]), the look-ups
//! ([`recheck`]) and the judgement. Does not own what the worker does with
//! it.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::xrpc::{CallError, Client};
use crate::store::OutboxRow;

/// getRecord calls in flight at once for one claim (a claim has at most
/// 200 rows: 25 rounds).
const PARALLEL_LOOKUPS: usize = 8;

/// What the PDS has for a doubtful create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// No record at that key: send the create again.
    Absent,
    /// The record parity would write, with this CID.
    Same { cid: String },
}

/// The rows of a claim (in id order) worth looking up: creates with an
/// assigned rkey and no `swap_cid` that an earlier claim may have sent,
/// whose record no earlier row of the claim writes.
pub fn doubtful(rows: &[OutboxRow]) -> Vec<&OutboxRow> {
    let mut touched: HashSet<(&str, &str)> = HashSet::new();
    let mut out = Vec::new();
    for r in rows {
        let Some(rkey) = r.rkey.as_deref() else {
            continue;
        };
        let first = touched.insert((r.collection.as_str(), rkey));
        if first && r.op == "create" && r.attempts > 1 && r.swap_cid.is_none() {
            out.push(r);
        }
    }
    out
}

/// What the PDS at `pds` has for each of `rows` of `repo`, by row id;
/// undecided rows are left out.
pub async fn recheck(
    client: &Client,
    pds: &str,
    repo: &str,
    rows: &[&OutboxRow],
) -> HashMap<i64, Found> {
    let mut found = HashMap::new();
    for chunk in rows.chunks(PARALLEL_LOOKUPS) {
        let answers =
            futures_util::future::join_all(chunk.iter().map(|r| look_up(client, pds, repo, r)))
                .await;
        for (r, answer) in chunk.iter().zip(answers) {
            if let Some(f) = judge(r, answer) {
                found.insert(r.id, f);
            }
        }
    }
    found
}

async fn look_up(
    client: &Client,
    pds: &str,
    repo: &str,
    r: &OutboxRow,
) -> Result<Value, CallError> {
    let rkey = r.rkey.as_deref().unwrap_or_default();
    let params = [
        ("repo", repo),
        ("collection", r.collection.as_str()),
        ("rkey", rkey),
    ];
    client.get(pds, "com.atproto.repo.getRecord", &params).await
}

/// One getRecord answer against the row: `None` when it does not decide.
fn judge(r: &OutboxRow, answer: Result<Value, CallError>) -> Option<Found> {
    match answer {
        // Trusted on the first retry only: should a batch of such creates
        // fail anyway (a PDS that hides a record it has, e.g. one taken
        // down, answers RecordNotFound), the next retry sends each alone.
        Err(CallError::Refused { name, .. }) if name == "RecordNotFound" && r.attempts == 2 => {
            Some(Found::Absent)
        }
        Err(_) => None,
        Ok(v) => {
            let cid = v.get("cid").and_then(Value::as_str)?;
            let mine: Value = serde_json::from_str(r.record.as_deref()?).ok()?;
            (v.get("value") == Some(&mine) && cid.len() <= 128).then(|| Found::Same {
                cid: cid.to_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn row(id: i64, op: &str, rkey: &str, attempts: i64) -> OutboxRow {
        OutboxRow {
            rkey: Some(rkey.into()),
            record: Some(json!({"$type": "app.bsky.feed.post", "text": "t"}).to_string()),
            attempts,
            ..OutboxRow::in_flight(id, op)
        }
    }

    #[test]
    fn only_retried_creates_no_earlier_row_touches_are_looked_up() {
        let rows = vec![
            row(1, "create", "a", 2),
            row(2, "create", "b", 1),
            row(3, "delete", "c", 2),
            row(4, "create", "c", 2),
            row(5, "update", "a", 2),
        ];
        let ids: Vec<i64> = doubtful(&rows).iter().map(|r| r.id).collect();
        assert_eq!(ids, [1]);
    }

    #[test]
    fn answers_decide_only_when_clear() {
        let r = row(1, "create", "a", 2);
        let not_found = CallError::Refused {
            name: "RecordNotFound".into(),
            message: "Could not locate record".into(),
        };
        assert_eq!(judge(&r, Err(not_found.clone())), Some(Found::Absent));
        assert_eq!(judge(&row(1, "create", "a", 3), Err(not_found)), None);
        let same = json!({"uri": "at://x", "cid": "bafyX",
            "value": {"text": "t", "$type": "app.bsky.feed.post"}});
        assert_eq!(
            judge(&r, Ok(same)),
            Some(Found::Same {
                cid: "bafyX".into()
            })
        );
        let other = json!({"cid": "bafyY", "value": {"$type": "app.bsky.feed.post", "text": "u"}});
        assert_eq!(judge(&r, Ok(other)), None);
        assert_eq!(judge(&r, Ok(json!({"value": {}}))), None);
        assert_eq!(judge(&r, Err(CallError::Transient("502".into()))), None);
    }
}
