//! The live side of the feed: a broadcast of committed changes to every
//! connected client, fed from the database log.
//!
//! Owns: the [`Hub`] (a bounded broadcast ring; a client that falls a whole
//! ring behind is told so by the channel and is dropped with its resume
//! cursor) and [`tail`], the task that reads `parity_changes` after the last
//! seq it saw and publishes each row to the hub, woken by the committing
//! writer in the same process or by a poll interval. Because `seq` is
//! strictly increasing in commit order, reading after the last seen seq
//! never skips a committed change.
//!
//! Invariant: the hub publishes changes in seq order, each once.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use super::change::{Change, ChangeOp, Rendered, subjects_of};
use crate::store::{ChangeRow, Store, StoreError};

/// Changes read from the log per query.
pub const PAGE: i64 = 1_000;

/// The broadcast of committed changes.
pub struct Hub {
    tx: broadcast::Sender<Arc<Rendered>>,
    latest: AtomicI64,
}

impl Hub {
    /// A hub whose ring holds `capacity` changes (`feed.client_buffer`).
    pub fn new(capacity: usize, latest: i64) -> Arc<Hub> {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Arc::new(Hub {
            tx,
            latest: AtomicI64::new(latest),
        })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Rendered>> {
        self.tx.subscribe()
    }

    /// The newest seq published.
    pub fn latest(&self) -> i64 {
        self.latest.load(Ordering::Acquire)
    }

    /// Publishes a change newer than every one before (an older or equal
    /// seq is a duplicate and is dropped). Callers publish from one task.
    pub fn publish(&self, change: Arc<Rendered>) {
        let seq = change.change.seq;
        if seq <= self.latest() {
            return;
        }
        self.latest.store(seq, Ordering::Release);
        // No receiver is fine: nobody is listening.
        let _ = self.tx.send(change);
    }

    /// Publishes every logged change after [`Hub::latest`] up to `upto`
    /// (all of them with `None`), in order; returns how many.
    pub async fn catch_up(&self, store: &Store, upto: Option<i64>) -> Result<usize, StoreError> {
        let mut n = 0;
        loop {
            let rows = store.changes_after(self.latest(), PAGE).await?;
            let full = rows.len() as i64 == PAGE;
            for row in rows {
                if upto.is_some_and(|u| row.seq > u) {
                    return Ok(n);
                }
                self.publish(Rendered::new(change_from_row(row)?));
                n += 1;
            }
            if !full {
                return Ok(n);
            }
        }
    }
}

/// A stored row as a [`Change`]. A row parity wrote that does not read back
/// (unknown op, record that is not JSON) is our own corruption.
pub fn change_from_row(row: ChangeRow) -> Result<Change, StoreError> {
    let corrupt = |what: &str| {
        StoreError::Sql(sqlx::Error::Decode(
            format!("parity_changes seq {}: {what}", row.seq).into(),
        ))
    };
    let op = ChangeOp::parse(&row.op).ok_or_else(|| corrupt("unknown op"))?;
    let record = match &row.record {
        Some(r) => {
            Some(RawValue::from_string(r.clone()).map_err(|_| corrupt("record is not JSON"))?)
        }
        None => None,
    };
    let subjects = match (&row.subjects, &record) {
        (Some(s), _) => {
            serde_json::from_str(s).map_err(|_| corrupt("subjects is not a JSON array"))?
        }
        (None, Some(r)) => serde_json::from_str(r.get())
            .map(|v| subjects_of(&v))
            .unwrap_or_default(),
        (None, None) => Vec::new(),
    };
    Ok(Change {
        seq: row.seq,
        table_name: row.table_name,
        op,
        uri: row.uri,
        did: row.did,
        collection: row.collection,
        rkey: row.rkey,
        cid: row.cid,
        rev: row.rev,
        record,
        committed_at: row.committed_at,
        subjects,
    })
}

/// Publishes every change after the hub's latest to `hub`, in order, until
/// cancelled: after reading to the end of the log it waits for `wake` (the
/// writer in this process) or `interval`.
pub async fn tail(
    store: Store,
    hub: Arc<Hub>,
    wake: Arc<Notify>,
    interval: Duration,
    token: CancellationToken,
) -> Result<(), StoreError> {
    loop {
        hub.catch_up(&store, None).await?;
        tokio::select! {
            _ = token.cancelled() => return Ok(()),
            _ = wake.notified() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
