//! `parity_import_states` and the identity cache in `parity_repos`: the
//! statements behind `parity import`, `import-status` and `resume`.
//!
//! Owns: claiming a (did, collection) pair under a lease, renewing and
//! releasing it, finishing it, listing states, and the shared identity
//! cache. The page writes themselves (rows + cursor + counters in one
//! transaction) live in each backend's `commit`, guarded by
//! [`PAGE_DONE_SQLITE`] / [`PAGE_DONE_PG`].
//!
//! Every statement is written once in PostgreSQL syntax and translated for
//! SQLite by [`lite`] (`$N` → `?N`, casts dropped). Timestamps are bound as
//! RFC 3339 text (UTC, µs) and read back as the same text on both backends,
//! so lexical order is time order.
//!
//! Lease invariant: a pair is worked on only by the process named in
//! `lease_owner`, and only while `lease_expires_at` is in the future; every
//! write of a running import checks the owner, so a process that lost its
//! lease (paused past expiry, then woke up) cannot overwrite the new owner's
//! progress. On PostgreSQL the claim uses `FOR UPDATE SKIP LOCKED`, so
//! importers on several machines share the queue without waiting on each
//! other.

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;

use super::{Store, StoreError};
use crate::mapper::table::timestamp_text;

/// Queues a full re-import of a DID (collection `*`: discover them) when the
/// stream says the repo is out of sync. `$1` did, `$2` now.
pub(super) const QUEUE_RESYNC_SQLITE: &str = "INSERT INTO parity_import_states (did, collection, status, created_at, updated_at) \
     VALUES (?1, '*', 'pending', ?2, ?2) \
     ON CONFLICT(did, collection) DO UPDATE SET status = 'pending', updated_at = excluded.updated_at \
     WHERE parity_import_states.status <> 'in_progress'";
pub(super) const QUEUE_RESYNC_PG: &str = "INSERT INTO parity_import_states (did, collection, status, created_at, updated_at) \
     VALUES ($1, '*', 'pending', $2, $2) \
     ON CONFLICT (did, collection) DO UPDATE SET status = 'pending', updated_at = excluded.updated_at \
     WHERE parity_import_states.status <> 'in_progress'";

/// Records one committed import page, in the page's transaction. Matches no
/// row (and the batch is rolled back) if the lease was taken over.
/// `$1` cursor, `$2` synced, `$3` skipped, `$4` failed, `$5` lease until,
/// `$6` now, `$7` id, `$8` owner.
pub(super) const PAGE_DONE_SQLITE: &str = "UPDATE parity_import_states SET cursor = ?1, pages = pages + 1, \
     records_synced = records_synced + ?2, records_skipped = records_skipped + ?3, \
     records_failed = records_failed + ?4, lease_expires_at = ?5, updated_at = ?6 \
     WHERE id = ?7 AND lease_owner = ?8 AND status = 'in_progress'";
pub(super) const PAGE_DONE_PG: &str = "UPDATE parity_import_states SET cursor = $1, pages = pages + 1, \
     records_synced = records_synced + $2, records_skipped = records_skipped + $3, \
     records_failed = records_failed + $4, lease_expires_at = $5::timestamptz, updated_at = $6 \
     WHERE id = $7 AND lease_owner = $8 AND status = 'in_progress'";

/// One row of `parity_import_states`. Timestamps are RFC 3339 text.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct ImportState {
    pub id: i64,
    pub did: String,
    pub collection: String,
    pub status: String,
    pub cursor: Option<String>,
    pub rev: Option<String>,
    pub records_synced: i64,
    pub records_skipped: i64,
    pub records_failed: i64,
    pub pages: i64,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub error: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// Which states `import-status` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    All,
    /// Everything not completed: pending, in progress and failed.
    Pending,
    Failed,
    Completed,
}

impl StatusFilter {
    fn sql(self) -> &'static str {
        match self {
            StatusFilter::All => "TRUE",
            StatusFilter::Pending => "status <> 'completed'",
            StatusFilter::Failed => "status = 'failed'",
            StatusFilter::Completed => "status = 'completed'",
        }
    }
}

/// The identity cache entry of a DID.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CachedIdentity {
    pub pds: Option<String>,
    pub handle: Option<String>,
    /// `None` when an `#identity` event invalidated the entry.
    pub identity_resolved_at: Option<String>,
}

const TS_COLUMNS: [&str; 6] = [
    "started_at",
    "completed_at",
    "lease_expires_at",
    "created_at",
    "updated_at",
    "identity_resolved_at",
];

/// The state columns, with timestamps read as RFC 3339 text.
fn state_columns(pg: bool) -> String {
    [
        "id",
        "did",
        "collection",
        "status",
        "cursor",
        "rev",
        "records_synced",
        "records_skipped",
        "records_failed",
        "pages",
        "started_at",
        "completed_at",
        "error",
        "lease_owner",
        "lease_expires_at",
        "created_at",
        "updated_at",
    ]
    .iter()
    .map(|c| column(c, pg))
    .collect::<Vec<_>>()
    .join(", ")
}

fn column(c: &str, pg: bool) -> String {
    if pg && TS_COLUMNS.contains(&c) {
        format!("to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS {c}")
    } else {
        c.to_owned()
    }
}

/// PostgreSQL statement text → SQLite: `$N` → `?N`, casts dropped,
/// `FOR UPDATE SKIP LOCKED` dropped (SQLite serialises writers anyway).
fn lite(sql: &str) -> String {
    sql.replace("::timestamptz", "")
        .replace("::text", "")
        .replace(" FOR UPDATE SKIP LOCKED", "")
        .replace('$', "?")
}

/// A bound argument (both backends decode these the same way).
#[derive(Debug, Clone)]
enum Arg {
    Text(Option<String>),
    Int(i64),
}

impl From<&str> for Arg {
    fn from(s: &str) -> Arg {
        Arg::Text(Some(s.to_owned()))
    }
}
impl From<String> for Arg {
    fn from(s: String) -> Arg {
        Arg::Text(Some(s))
    }
}
impl From<Option<&str>> for Arg {
    fn from(s: Option<&str>) -> Arg {
        Arg::Text(s.map(str::to_owned))
    }
}
impl From<i64> for Arg {
    fn from(i: i64) -> Arg {
        Arg::Int(i)
    }
}

macro_rules! bind_all {
    ($q:expr, $args:expr) => {{
        let mut q = $q;
        for a in $args {
            q = match a {
                Arg::Text(t) => q.bind(t),
                Arg::Int(i) => q.bind(i),
            };
        }
        q
    }};
}

fn now_text() -> String {
    timestamp_text(&Utc::now())
}

impl Store {
    fn is_pg(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    async fn exec(&self, sql: &str, args: Vec<Arg>) -> Result<u64, StoreError> {
        Ok(match self {
            Store::Sqlite(s) => bind_all!(sqlx::query(AssertSqlSafe(lite(sql))), args)
                .execute(s.pool())
                .await?
                .rows_affected(),
            Store::Postgres(p) => bind_all!(sqlx::query(AssertSqlSafe(sql.to_owned())), args)
                .execute(p.pool())
                .await?
                .rows_affected(),
        })
    }

    async fn states(&self, sql: &str, args: Vec<Arg>) -> Result<Vec<ImportState>, StoreError> {
        Ok(match self {
            Store::Sqlite(s) => {
                bind_all!(sqlx::query_as(AssertSqlSafe(lite(sql))), args)
                    .fetch_all(s.pool())
                    .await?
            }
            Store::Postgres(p) => {
                bind_all!(sqlx::query_as(AssertSqlSafe(sql.to_owned())), args)
                    .fetch_all(p.pool())
                    .await?
            }
        })
    }

    /// Adds `pending` states for the pairs that have none. With `force`,
    /// resets every pair that is not being worked on (completed or failed
    /// ones start over from the first page with zeroed counters).
    pub async fn enqueue_imports(
        &self,
        did: &str,
        collections: &[String],
        force: bool,
    ) -> Result<(), StoreError> {
        let now = now_text();
        for c in collections {
            self.exec(
                "INSERT INTO parity_import_states (did, collection, status, created_at, updated_at) \
                 VALUES ($1, $2, 'pending', $3::timestamptz, $3::timestamptz) ON CONFLICT (did, collection) DO NOTHING",
                vec![did.into(), c.as_str().into(), now.clone().into()],
            )
            .await?;
            if force {
                self.exec(
                    "UPDATE parity_import_states SET status = 'pending', cursor = NULL, rev = NULL, \
                     records_synced = 0, records_skipped = 0, records_failed = 0, pages = 0, \
                     started_at = NULL, completed_at = NULL, error = NULL, updated_at = $3::timestamptz \
                     WHERE did = $1 AND collection = $2 AND (status <> 'in_progress' OR lease_expires_at < $3::timestamptz)",
                    vec![did.into(), c.as_str().into(), now.clone().into()],
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Takes the lease of a pair that is pending, failed, or in progress
    /// with an expired lease (or held by `steal_from`, a local owner known
    /// to be dead). Returns the state as claimed, or `None` if the pair is
    /// completed or leased by a live importer.
    pub async fn claim_import(
        &self,
        did: &str,
        collection: &str,
        owner: &str,
        lease_until: DateTime<Utc>,
        steal_from: Option<&str>,
    ) -> Result<Option<ImportState>, StoreError> {
        let sql = format!(
            "UPDATE parity_import_states SET status = 'in_progress', lease_owner = $3, \
             lease_expires_at = $4::timestamptz, started_at = COALESCE(started_at, $5::timestamptz), \
             completed_at = NULL, error = NULL, updated_at = $5::timestamptz \
             WHERE id = (SELECT id FROM parity_import_states WHERE did = $1 AND collection = $2 \
               AND (status IN ('pending', 'failed') OR (status = 'in_progress' \
                    AND (lease_expires_at IS NULL OR lease_expires_at < $5::timestamptz OR lease_owner = $6::text))) \
               FOR UPDATE SKIP LOCKED) \
             RETURNING {}",
            state_columns(self.is_pg())
        );
        let rows = self
            .states(
                &sql,
                vec![
                    did.into(),
                    collection.into(),
                    owner.into(),
                    timestamp_text(&lease_until).into(),
                    now_text().into(),
                    steal_from.into(),
                ],
            )
            .await?;
        Ok(rows.into_iter().next())
    }

    /// Extends a lease; `false` if it is no longer ours.
    pub async fn renew_import(
        &self,
        id: i64,
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let n = self
            .exec(
                "UPDATE parity_import_states SET lease_expires_at = $3::timestamptz \
                 WHERE id = $1 AND lease_owner = $2 AND status = 'in_progress'",
                vec![id.into(), owner.into(), timestamp_text(&lease_until).into()],
            )
            .await?;
        Ok(n == 1)
    }

    /// Records the repo rev this run imports at; `false` if the lease is lost.
    pub async fn set_import_rev(
        &self,
        id: i64,
        owner: &str,
        rev: &str,
    ) -> Result<bool, StoreError> {
        let n = self
            .exec(
                "UPDATE parity_import_states SET rev = $3, updated_at = $4::timestamptz \
                 WHERE id = $1 AND lease_owner = $2 AND status = 'in_progress'",
                vec![id.into(), owner.into(), rev.into(), now_text().into()],
            )
            .await?;
        Ok(n == 1)
    }

    /// Ends a run: `completed` (cursor cleared) or `failed` with its error.
    /// The lease is released either way.
    pub async fn finish_import(
        &self,
        id: i64,
        owner: &str,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        let sql = match error {
            None => {
                "UPDATE parity_import_states SET status = 'completed', cursor = NULL, error = NULL, \
                 completed_at = $3::timestamptz, lease_owner = NULL, lease_expires_at = NULL, updated_at = $3::timestamptz \
                 WHERE id = $1 AND lease_owner = $2 AND status = 'in_progress'"
            }
            Some(_) => {
                "UPDATE parity_import_states SET status = 'failed', error = $4, \
                 lease_owner = NULL, lease_expires_at = NULL, updated_at = $3::timestamptz \
                 WHERE id = $1 AND lease_owner = $2 AND status = 'in_progress'"
            }
        };
        let mut args: Vec<Arg> = vec![id.into(), owner.into(), now_text().into()];
        if let Some(e) = error {
            args.push(e.into());
        }
        Ok(self.exec(sql, args).await? == 1)
    }

    /// Gives a lease back without finishing (shutdown): the pair stays
    /// `in_progress` with an expired lease, which `parity resume` continues.
    pub async fn release_import(&self, id: i64, owner: &str) -> Result<(), StoreError> {
        self.exec(
            "UPDATE parity_import_states SET lease_expires_at = $3::timestamptz, updated_at = $3::timestamptz \
             WHERE id = $1 AND lease_owner = $2 AND status = 'in_progress'",
            vec![id.into(), owner.into(), now_text().into()],
        )
        .await?;
        Ok(())
    }

    /// Removes a claimed `*` (discover collections) request once expanded,
    /// and clears the repo's resync flag if no newer request arrived.
    pub async fn complete_discovery(
        &self,
        id: i64,
        owner: &str,
        did: &str,
        claimed_at: &str,
    ) -> Result<(), StoreError> {
        self.exec(
            "DELETE FROM parity_import_states WHERE id = $1 AND lease_owner = $2",
            vec![id.into(), owner.into()],
        )
        .await?;
        self.exec(
            "UPDATE parity_repos SET resync_requested_at = NULL \
             WHERE did = $1 AND resync_requested_at <= $2::timestamptz",
            vec![did.into(), claimed_at.into()],
        )
        .await?;
        Ok(())
    }

    /// Forgets a recorded failure to start a DID (a failed `*` state) once
    /// the DID resolves and its collections are known again.
    pub async fn clear_failed_discovery(&self, did: &str) -> Result<(), StoreError> {
        self.exec(
            "DELETE FROM parity_import_states WHERE did = $1 AND collection = '*' AND status = 'failed'",
            vec![did.into()],
        )
        .await?;
        Ok(())
    }

    /// States, most recently updated first.
    pub async fn import_states(
        &self,
        did: Option<&str>,
        filter: StatusFilter,
        limit: i64,
    ) -> Result<Vec<ImportState>, StoreError> {
        let sql = format!(
            "SELECT {} FROM parity_import_states WHERE ($1::text IS NULL OR did = $1::text) AND {} \
             ORDER BY updated_at DESC, id DESC LIMIT $2",
            state_columns(self.is_pg()),
            filter.sql()
        );
        self.states(&sql, vec![did.into(), limit.into()]).await
    }

    /// Number of states per status (optionally of one DID).
    pub async fn import_counts(&self, did: Option<&str>) -> Result<Vec<(String, i64)>, StoreError> {
        let sql = "SELECT status, COUNT(*) FROM parity_import_states \
                   WHERE ($1::text IS NULL OR did = $1::text) GROUP BY status ORDER BY status";
        let did = did.map(str::to_owned);
        Ok(match self {
            Store::Sqlite(s) => {
                sqlx::query_as(AssertSqlSafe(lite(sql)))
                    .bind(did)
                    .fetch_all(s.pool())
                    .await?
            }
            Store::Postgres(p) => sqlx::query_as(sql).bind(did).fetch_all(p.pool()).await?,
        })
    }

    /// Every state `parity resume` may continue (not completed), oldest
    /// first.
    pub async fn resumable_imports(
        &self,
        did: Option<&str>,
    ) -> Result<Vec<ImportState>, StoreError> {
        let sql = format!(
            "SELECT {} FROM parity_import_states WHERE ($1::text IS NULL OR did = $1::text) \
             AND status <> 'completed' ORDER BY id",
            state_columns(self.is_pg())
        );
        self.states(&sql, vec![did.into()]).await
    }

    /// The cached identity of a DID, if any.
    pub async fn cached_identity(&self, did: &str) -> Result<Option<CachedIdentity>, StoreError> {
        let sql = format!(
            "SELECT pds, handle, {} FROM parity_repos WHERE did = $1",
            column("identity_resolved_at", self.is_pg())
        );
        Ok(match self {
            Store::Sqlite(s) => {
                sqlx::query_as(AssertSqlSafe(lite(&sql)))
                    .bind(did.to_owned())
                    .fetch_optional(s.pool())
                    .await?
            }
            Store::Postgres(p) => {
                sqlx::query_as(AssertSqlSafe(sql))
                    .bind(did.to_owned())
                    .fetch_optional(p.pool())
                    .await?
            }
        })
    }

    /// Stores a resolved identity for other importers (and later runs).
    pub async fn save_identity(
        &self,
        did: &str,
        pds: &str,
        handle: Option<&str>,
    ) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO parity_repos (did, handle, pds, identity_resolved_at, updated_at) \
             VALUES ($1, $2, $3, $4::timestamptz, $4::timestamptz) \
             ON CONFLICT (did) DO UPDATE SET pds = excluded.pds, \
             handle = COALESCE(excluded.handle, parity_repos.handle), \
             identity_resolved_at = excluded.identity_resolved_at, updated_at = excluded.updated_at",
            vec![did.into(), handle.into(), pds.into(), now_text().into()],
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::lite;

    #[test]
    fn translates_statements_for_sqlite() {
        assert_eq!(
            lite("SELECT $1::text, $12::timestamptz FROM t FOR UPDATE SKIP LOCKED"),
            "SELECT ?1, ?12 FROM t"
        );
    }
}
