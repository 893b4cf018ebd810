//! `parity_outbox`: the publish queue's SQL.
//!
//! Owns: claiming a DID's next rows under a lease, storing an assigned
//! rkey, the terminal and retry transitions, pending-auth moves, the status
//! views and the `outbox add/retry` statements, and [`MARK_PUBLISHED`],
//! which the commit walker runs for a `Checkpoint::Publish` in the same
//! transaction as the written-back rows. Does not own when to claim or what
//! an error means (`publish::worker`).
//!
//! Claim rule (both backends, one statement): a DID is claimable when its
//! first open row (lowest id among pending, in_flight, pending_auth) is due
//! and either pending or in flight under an expired lease (or our own).
//! That head row is locked `FOR UPDATE SKIP LOCKED` on PostgreSQL, so two
//! processes never claim the same DID; SQLite serialises writers. The claim
//! takes the DID's first `limit` open rows in id order, so per-DID order
//! holds, and counts an attempt on each.

use chrono::{DateTime, Utc};

use super::dialect::{Dialect, Sql, did_is};
use super::{Store, StoreError};
use crate::mapper::table::timestamp_text;

/// Marks one claimed row published with what the PDS returned. `$1` id,
/// `$2` owner, `$3` uri, `$4` cid, `$5` rev, `$6` now (RFC 3339).
pub(super) static MARK_PUBLISHED: Sql = Sql::new(
    "UPDATE parity_outbox SET status = 'published', uri = $3, cid = $4, rev = $5, error = NULL, \
     lease_owner = NULL, lease_expires_at = NULL, published_at = $6::timestamptz, updated_at = $6::timestamptz \
     WHERE id = $1 AND status = 'in_flight' AND lease_owner = $2",
);

/// One outbox row. Timestamps are RFC 3339 text.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct OutboxRow {
    pub id: i64,
    pub did: String,
    pub collection: String,
    pub rkey: Option<String>,
    pub op: String,
    /// atproto JSON; `None` for a delete.
    pub record: Option<String>,
    pub swap_cid: Option<String>,
    pub status: String,
    pub attempts: i64,
    pub error: Option<String>,
    pub uri: Option<String>,
    pub cid: Option<String>,
    pub rev: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[cfg(test)]
impl OutboxRow {
    /// A claimed (`in_flight`) row of `did:plc:x`'s posts, for the publish
    /// tests: `op`, no rkey or record, one attempt; set the rest on it.
    pub fn in_flight(id: i64, op: &str) -> OutboxRow {
        OutboxRow {
            id,
            did: "did:plc:x".into(),
            collection: "app.bsky.feed.post".into(),
            rkey: None,
            op: op.into(),
            record: None,
            swap_cid: None,
            status: "in_flight".into(),
            attempts: 1,
            error: None,
            uri: None,
            cid: None,
            rev: None,
            created_at: String::new(),
            updated_at: String::new(),
        }
    }
}

const STATUSES: [&str; 6] = [
    "pending",
    "in_flight",
    "published",
    "pending_auth",
    "conflict",
    "failed",
];

fn columns(dialect: Dialect) -> String {
    let ts = |c: &str| match dialect {
        Dialect::Postgres => {
            format!("to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS {c}")
        }
        Dialect::Sqlite => c.to_owned(),
    };
    let record = match dialect {
        Dialect::Postgres => "record::text AS record",
        Dialect::Sqlite => "record",
    };
    format!(
        "id, did, collection, rkey, op, {record}, swap_cid, status, attempts, error, uri, cid, rev, {}, {}",
        ts("created_at"),
        ts("updated_at")
    )
}

fn now_text() -> String {
    timestamp_text(&Utc::now())
}

/// Which rows `outbox status` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxFilter {
    All,
    /// Not finished: pending, in flight, pending auth.
    Pending,
    /// Needs a person: failed and conflict.
    Failed,
}

/// What `outbox retry` re-queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryTarget {
    Id(i64),
    Did(String),
    AllFailed,
}

impl Store {
    /// Claims the next claimable DID's first `limit` open rows for `owner`
    /// until `lease_until`; empty when nothing is due. Sorted by id.
    pub async fn claim_outbox(
        &self,
        owner: &str,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let sql = format!(
            "UPDATE parity_outbox SET status = 'in_flight', lease_owner = $1, lease_expires_at = $2::timestamptz, \
             attempts = attempts + 1, updated_at = $3::timestamptz \
             WHERE id IN (SELECT o.id FROM parity_outbox o WHERE o.did = ( \
                 SELECT h.did FROM parity_outbox h \
                 WHERE h.id IN (SELECT MIN(id) FROM parity_outbox \
                                WHERE status IN ('pending', 'in_flight', 'pending_auth') GROUP BY did) \
                   AND h.next_attempt_at <= $3::timestamptz \
                   AND (h.status = 'pending' OR (h.status = 'in_flight' \
                        AND (h.lease_expires_at < $3::timestamptz OR h.lease_owner = $1))) \
                 ORDER BY h.id LIMIT 1 FOR UPDATE SKIP LOCKED) \
               AND o.status IN ('pending', 'in_flight') ORDER BY o.id LIMIT $4) \
             RETURNING {}",
            columns(self.dialect())
        );
        let mut rows: Vec<OutboxRow> = self
            .fetch_all(
                &sql,
                vec![
                    owner.into(),
                    timestamp_text(&lease_until).into(),
                    now_text().into(),
                    limit.into(),
                ],
            )
            .await?;
        rows.sort_by_key(|r| r.id);
        Ok(rows)
    }

    /// Stores the rkey assigned to a claimed create, before the PDS is
    /// called, so a retry reuses it. `false` if the row is no longer ours.
    pub async fn set_outbox_rkey(
        &self,
        id: i64,
        owner: &str,
        rkey: &str,
    ) -> Result<bool, StoreError> {
        Ok(self
            .execute(
                "UPDATE parity_outbox SET rkey = $3 WHERE id = $1 AND lease_owner = $2 AND rkey IS NULL",
                vec![id.into(), owner.into(), rkey.into()],
            )
            .await?
            > 0)
    }

    /// Extends the lease of `owner`'s in-flight rows of `did` to `until`;
    /// `false` when none is ours any more (another process took them over
    /// after the lease expired).
    pub async fn renew_outbox_lease(
        &self,
        did: &str,
        owner: &str,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Ok(self
            .execute(
                "UPDATE parity_outbox SET lease_expires_at = $3::timestamptz \
                 WHERE did = $1 AND lease_owner = $2 AND status = 'in_flight'",
                vec![did.into(), owner.into(), timestamp_text(&until).into()],
            )
            .await?
            > 0)
    }

    /// Puts claimed rows back to `pending`, due at `next_at`, with a reason.
    /// A transient failure keeps the attempt counted (the write may have
    /// been applied); with `refund` (a 429: it was not) it is given back.
    pub async fn retry_outbox_later(
        &self,
        ids: &[i64],
        owner: &str,
        error: &str,
        next_at: DateTime<Utc>,
        refund: bool,
    ) -> Result<(), StoreError> {
        for id in ids {
            self.execute(
                "UPDATE parity_outbox SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL, \
                 attempts = attempts - $6, error = $3, next_attempt_at = $4::timestamptz, updated_at = $5::timestamptz \
                 WHERE id = $1 AND lease_owner = $2 AND status = 'in_flight'",
                vec![
                    (*id).into(),
                    owner.into(),
                    error.into(),
                    timestamp_text(&next_at).into(),
                    now_text().into(),
                    i64::from(refund).into(),
                ],
            )
            .await?;
        }
        Ok(())
    }

    /// Ends claimed rows as `conflict` or `failed` with a reason.
    pub async fn finish_outbox(
        &self,
        ids: &[i64],
        owner: &str,
        status: &str,
        error: &str,
    ) -> Result<(), StoreError> {
        debug_assert!(matches!(status, "conflict" | "failed"));
        for id in ids {
            self.execute(
                "UPDATE parity_outbox SET status = $3, error = $4, lease_owner = NULL, lease_expires_at = NULL, \
                 updated_at = $5::timestamptz WHERE id = $1 AND lease_owner = $2 AND status = 'in_flight'",
                vec![
                    (*id).into(),
                    owner.into(),
                    status.into(),
                    error.into(),
                    now_text().into(),
                ],
            )
            .await?;
        }
        Ok(())
    }

    /// The DID's session is gone: its open rows wait in `pending_auth`;
    /// rows this claim counted an attempt on get it back (auth failures do
    /// not spend attempts). Returns the rows moved.
    pub async fn outbox_pending_auth(
        &self,
        did: &str,
        owner: &str,
        error: &str,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let sql = format!(
            "UPDATE parity_outbox SET status = 'pending_auth', error = $3, \
             attempts = CASE WHEN lease_owner = $2 AND status = 'in_flight' THEN attempts - 1 ELSE attempts END, \
             lease_owner = NULL, lease_expires_at = NULL, updated_at = $4::timestamptz \
             WHERE did = $1 AND (status = 'pending' OR (status = 'in_flight' AND lease_owner = $2)) \
             RETURNING {}",
            columns(self.dialect())
        );
        self.fetch_all(
            &sql,
            vec![did.into(), owner.into(), error.into(), now_text().into()],
        )
        .await
    }

    /// A new session for `did`: its `pending_auth` rows are due again.
    pub async fn resume_pending_auth(&self, did: &str) -> Result<u64, StoreError> {
        let now = now_text();
        self.execute(
            "UPDATE parity_outbox SET status = 'pending', error = NULL, next_attempt_at = $2::timestamptz, \
             updated_at = $2::timestamptz WHERE did = $1 AND status = 'pending_auth'",
            vec![did.into(), now.into()],
        )
        .await
    }

    /// `pending_auth` rows enqueued before `cutoff` become `failed`.
    pub async fn expire_pending_auth(
        &self,
        cutoff: DateTime<Utc>,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let sql = format!(
            "UPDATE parity_outbox SET status = 'failed', \
             error = 'no session for this DID within publish.pending_auth_ttl: run parity auth login', \
             updated_at = $2::timestamptz WHERE status = 'pending_auth' AND created_at < $1::timestamptz \
             RETURNING {}",
            columns(self.dialect())
        );
        self.fetch_all(
            &sql,
            vec![timestamp_text(&cutoff).into(), now_text().into()],
        )
        .await
    }

    /// Releases every row `owner` holds in flight (shutdown after the calls
    /// in flight finished): pending again, the attempt not counted.
    pub async fn release_outbox(&self, owner: &str) -> Result<u64, StoreError> {
        self.execute(
            "UPDATE parity_outbox SET status = 'pending', attempts = attempts - 1, lease_owner = NULL, \
             lease_expires_at = NULL, updated_at = $2::timestamptz \
             WHERE lease_owner = $1 AND status = 'in_flight'",
            vec![owner.into(), now_text().into()],
        )
        .await
    }

    /// Rows per status (every status, zeros included), optionally of one DID.
    pub async fn outbox_counts(&self, did: Option<&str>) -> Result<Vec<(String, i64)>, StoreError> {
        let rows: Vec<(String, i64)> = self
            .fetch_all(
                &format!(
                    "SELECT status, COUNT(*) FROM parity_outbox WHERE {} GROUP BY status",
                    did_is(1, did)
                ),
                vec![did.into()],
            )
            .await?;
        Ok(STATUSES
            .iter()
            .map(|s| {
                let n = rows.iter().find(|(st, _)| st == s).map_or(0, |(_, n)| *n);
                ((*s).to_owned(), n)
            })
            .collect())
    }

    /// Rows by id, optionally of one DID and filtered.
    pub async fn outbox_rows(
        &self,
        did: Option<&str>,
        filter: OutboxFilter,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let cond = match filter {
            OutboxFilter::All => "TRUE",
            OutboxFilter::Pending => "status IN ('pending', 'in_flight', 'pending_auth')",
            OutboxFilter::Failed => "status IN ('failed', 'conflict')",
        };
        let sql = format!(
            "SELECT {} FROM parity_outbox WHERE {} AND {cond} ORDER BY id LIMIT $2",
            columns(self.dialect()),
            did_is(1, did)
        );
        self.fetch_all(&sql, vec![did.into(), limit.into()]).await
    }

    /// Re-queues failed, conflicting or waiting rows: pending, due now,
    /// attempts reset. Returns how many.
    pub async fn retry_outbox(&self, target: &RetryTarget) -> Result<u64, StoreError> {
        let (cond, arg): (&str, super::dialect::Arg) = match target {
            RetryTarget::Id(id) => ("id = $2", (*id).into()),
            RetryTarget::Did(d) => ("did = $2", d.as_str().into()),
            RetryTarget::AllFailed => ("$2::text IS NULL", None::<String>.into()),
        };
        let sql = format!(
            "UPDATE parity_outbox SET status = 'pending', attempts = 0, error = NULL, \
             next_attempt_at = $1::timestamptz, updated_at = $1::timestamptz \
             WHERE status IN ('failed', 'conflict', 'pending_auth') AND {cond}"
        );
        self.execute(&sql, vec![now_text().into(), arg]).await
    }

    /// Enqueues one row (what an application's INSERT does); returns its id.
    pub async fn add_outbox(
        &self,
        did: &str,
        collection: &str,
        rkey: Option<&str>,
        op: &str,
        record: Option<&str>,
        swap_cid: Option<&str>,
    ) -> Result<i64, StoreError> {
        let record_expr = match self.dialect() {
            Dialect::Postgres => "$5::jsonb",
            Dialect::Sqlite => "$5",
        };
        let sql = format!(
            "INSERT INTO parity_outbox (did, collection, rkey, op, record, swap_cid) \
             VALUES ($1, $2, $3, $4, {record_expr}, $6) RETURNING id"
        );
        let row: Option<(i64,)> = self
            .fetch_optional(
                &sql,
                vec![
                    did.into(),
                    collection.into(),
                    rkey.into(),
                    op.into(),
                    record.into(),
                    swap_cid.into(),
                ],
            )
            .await?;
        Ok(row.map(|(id,)| id).unwrap_or_default())
    }

    /// Seconds since the oldest open row (pending or in flight) was
    /// enqueued; `None` when there is none.
    pub async fn oldest_open_outbox(&self) -> Result<Option<String>, StoreError> {
        let sql = match self.dialect() {
            Dialect::Postgres => {
                "SELECT to_char(MIN(created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
                 FROM parity_outbox WHERE status IN ('pending', 'in_flight')"
            }
            Dialect::Sqlite => {
                "SELECT MIN(created_at) FROM parity_outbox WHERE status IN ('pending', 'in_flight')"
            }
        };
        let row: Option<(Option<String>,)> = self.fetch_optional(sql, vec![]).await?;
        Ok(row.and_then(|(t,)| t))
    }
}
