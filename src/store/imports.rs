//! `parity_import_states` and the identity cache in `parity_repos`: the
//! statements behind `parity import`, `import-status` and `resume`.
//!
//! Owns: claiming a (did, collection) pair under a lease, renewing and
//! releasing it, finishing it, listing states, and the shared identity
//! cache, and the typed [`ImportStatus`] of a state. The page writes
//! themselves (rows + cursor + counters in one transaction) are the
//! checkpoint step of `commit.rs`, guarded by [`PAGE_DONE`].
//!
//! Every statement is written once in PostgreSQL syntax and translated for
//! SQLite by `dialect.rs`. Timestamps are bound as RFC 3339 text (UTC, µs)
//! and read back as the same text on both backends, so lexical order is time
//! order.
//!
//! Lease invariant: a pair is worked on only by the process named in
//! `lease_owner`, and only while `lease_expires_at` is in the future; every
//! write of a running import checks the owner, so a process that lost its
//! lease (paused past expiry, then woke up) cannot overwrite the new owner's
//! progress. On PostgreSQL the claim uses `FOR UPDATE SKIP LOCKED`, so
//! importers on several machines share the queue without waiting on each
//! other.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

use super::dialect::{Arg, Dialect, Sql, did_is};
use super::sqlite_exec::{WriterRow, bad_column};
use super::{Store, StoreError};
use crate::mapper::table::timestamp_text;

/// Queues a full re-import of a DID (collection `*`: discover them) when the
/// stream says the repo is out of sync. `$1` did, `$2` now.
pub(super) static QUEUE_RESYNC: Sql = Sql::new(
    "INSERT INTO parity_import_states (did, collection, status, created_at, updated_at) \
     VALUES ($1, '*', 'pending', $2, $2) \
     ON CONFLICT (did, collection) DO UPDATE SET status = 'pending', updated_at = excluded.updated_at \
     WHERE parity_import_states.status <> 'in_progress'",
);

/// Records one committed import page, in the page's transaction. Matches no
/// row (and the batch is rolled back) if the lease was taken over. The
/// run's rev is written with the cursor it belongs to: a run that commits
/// no page leaves the earlier run's (rev, cursor) pair as it was.
/// `$1` cursor, `$2` synced, `$3` skipped, `$4` failed, `$5` lease until,
/// `$6` now, `$7` id, `$8` owner, `$9` rev.
pub(super) static PAGE_DONE: Sql = Sql::new(
    "UPDATE parity_import_states SET cursor = $1, rev = $9, pages = pages + 1, \
     records_synced = records_synced + $2, records_skipped = records_skipped + $3, \
     records_failed = records_failed + $4, lease_expires_at = $5::timestamptz, updated_at = $6 \
     WHERE id = $7 AND lease_owner = $8 AND status = 'in_progress'",
);

/// [`PAGE_DONE`] for a run's last page: the same counters, and the pair
/// ends `completed` (cursor cleared, lease released) in the same
/// transaction, so no separate finishing write follows.
/// `$1` synced, `$2` skipped, `$3` failed, `$4` now, `$5` id, `$6` owner,
/// `$7` rev.
pub(super) static LAST_PAGE_DONE: Sql = Sql::new(
    "UPDATE parity_import_states SET cursor = NULL, rev = $7, pages = pages + 1, \
     records_synced = records_synced + $1, records_skipped = records_skipped + $2, \
     records_failed = records_failed + $3, status = 'completed', error = NULL, \
     completed_at = $4::timestamptz, lease_owner = NULL, lease_expires_at = NULL, updated_at = $4::timestamptz \
     WHERE id = $5 AND lease_owner = $6 AND status = 'in_progress'",
);

/// Where a (did, collection) import stands: `parity_import_states.status`,
/// stored as the stable strings of [`ImportStatus::as_str`] (the column's
/// CHECK constraint lists the same five).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportStatus {
    /// Waiting to be claimed (new, forced again, or a queued resync).
    Pending,
    /// Claimed under a lease; continued by `resume` once the lease expires.
    InProgress,
    /// Every page imported.
    Completed,
    /// Stopped with an error; `resume` retries it.
    Failed,
    /// The repo can never be imported: the account was deleted, or its PDS
    /// answers `RepoNotFound` / `RepoDeactivated` (the `error` column says
    /// which). Terminal: `resume` leaves it; a newer `#sync` or
    /// `import --force` queues the pair again.
    Gone,
}

/// The SQL form of [`ImportStatus::is_resumable`], written once for every
/// query that picks what `parity resume` continues (a unit test keeps the
/// two in step).
const RESUMABLE: &str = "status NOT IN ('completed', 'gone')";

impl ImportStatus {
    pub const ALL: [ImportStatus; 5] = [
        ImportStatus::Pending,
        ImportStatus::InProgress,
        ImportStatus::Completed,
        ImportStatus::Failed,
        ImportStatus::Gone,
    ];

    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            ImportStatus::Pending => "pending",
            ImportStatus::InProgress => "in_progress",
            ImportStatus::Completed => "completed",
            ImportStatus::Failed => "failed",
            ImportStatus::Gone => "gone",
        }
    }

    /// Whether this run of the pair is over (`completed`, `failed` or
    /// `gone`); a failed pair stays resumable, since `resume` starts a new
    /// run.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ImportStatus::Completed | ImportStatus::Failed | ImportStatus::Gone
        )
    }

    /// Whether `parity resume` continues a pair in this state.
    pub fn is_resumable(self) -> bool {
        !matches!(self, ImportStatus::Completed | ImportStatus::Gone)
    }
}

impl fmt::Display for ImportStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored status parity does not write: corruption.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown import status {0:?}")]
pub struct UnknownImportStatus(pub String);

impl FromStr for ImportStatus {
    type Err = UnknownImportStatus;

    fn from_str(s: &str) -> Result<ImportStatus, UnknownImportStatus> {
        ImportStatus::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownImportStatus(s.to_owned()))
    }
}

impl TryFrom<String> for ImportStatus {
    type Error = UnknownImportStatus;

    fn try_from(s: String) -> Result<ImportStatus, UnknownImportStatus> {
        s.parse()
    }
}

/// One row of `parity_import_states`. Timestamps are RFC 3339 text.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct ImportState {
    pub id: i64,
    pub did: String,
    pub collection: String,
    #[sqlx(try_from = "String")]
    pub status: ImportStatus,
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

impl WriterRow for ImportState {
    fn from_writer_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        let status: String = r.get("status")?;
        Ok(ImportState {
            id: r.get("id")?,
            did: r.get("did")?,
            collection: r.get("collection")?,
            status: status.parse().map_err(|e| bad_column("status", e))?,
            cursor: r.get("cursor")?,
            rev: r.get("rev")?,
            records_synced: r.get("records_synced")?,
            records_skipped: r.get("records_skipped")?,
            records_failed: r.get("records_failed")?,
            pages: r.get("pages")?,
            started_at: r.get("started_at")?,
            completed_at: r.get("completed_at")?,
            error: r.get("error")?,
            lease_owner: r.get("lease_owner")?,
            lease_expires_at: r.get("lease_expires_at")?,
            created_at: r.get("created_at")?,
            updated_at: r.get("updated_at")?,
        })
    }
}

impl WriterRow for CachedIdentity {
    fn from_writer_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(CachedIdentity {
            pds: r.get("pds")?,
            handle: r.get("handle")?,
            identity_resolved_at: r.get("identity_resolved_at")?,
        })
    }
}

/// Which states `import-status` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    All,
    /// Everything `resume` would continue: pending, in progress and failed
    /// (not completed, not gone).
    Pending,
    Failed,
    Completed,
}

impl StatusFilter {
    fn sql(self) -> &'static str {
        match self {
            StatusFilter::All => "TRUE",
            StatusFilter::Pending => RESUMABLE,
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
fn state_columns(dialect: Dialect) -> String {
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
    .map(|c| column(c, dialect))
    .collect::<Vec<_>>()
    .join(", ")
}

fn column(c: &str, dialect: Dialect) -> String {
    if dialect == Dialect::Postgres && TS_COLUMNS.contains(&c) {
        format!("to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS {c}")
    } else {
        c.to_owned()
    }
}

fn now_text() -> String {
    timestamp_text(&Utc::now())
}

/// A DID's failed `*` state (it did not resolve in an earlier run).
/// `$1` did.
const CLEAR_FAILED_DISCOVERY: &str =
    "DELETE FROM parity_import_states WHERE did = $1 AND collection = '*' AND status = 'failed'";

/// The statements of [`Store::enqueue_imports`]: one multi-row insert, and
/// with `force` one reset of every pair not being worked on.
fn enqueue_statements(did: &str, collections: &[String], force: bool) -> Vec<(String, Vec<Arg>)> {
    if collections.is_empty() {
        return Vec::new();
    }
    // `$1` did, `$2` now, `$3..` the collections.
    let mut args: Vec<Arg> = vec![did.into(), now_text().into()];
    args.extend(collections.iter().map(|c| Arg::from(c.as_str())));
    let params = || (3..3 + collections.len()).map(|i| format!("${i}"));
    let values = params()
        .map(|p| format!("($1, {p}, 'pending', $2::timestamptz, $2::timestamptz)"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut stmts = vec![(
        format!(
            "INSERT INTO parity_import_states (did, collection, status, created_at, updated_at) \
             VALUES {values} ON CONFLICT (did, collection) DO NOTHING"
        ),
        args.clone(),
    )];
    if force {
        let list = params().collect::<Vec<_>>().join(", ");
        stmts.push((
            format!(
                "UPDATE parity_import_states SET status = 'pending', cursor = NULL, rev = NULL, \
                 records_synced = 0, records_skipped = 0, records_failed = 0, pages = 0, \
                 started_at = NULL, completed_at = NULL, error = NULL, updated_at = $2::timestamptz \
                 WHERE did = $1 AND collection IN ({list}) \
                 AND (status <> 'in_progress' OR lease_expires_at < $2::timestamptz)"
            ),
            args,
        ));
    }
    stmts
}

impl Store {
    /// Adds `pending` states for the pairs that have none. With `force`,
    /// resets every pair that is not being worked on (completed or failed
    /// ones start over from the first page with zeroed counters). One
    /// transaction, one statement for all `collections` (and one more with
    /// `force`): a DID of a network-sized run is queued in one write, not
    /// one per collection.
    pub async fn enqueue_imports(
        &self,
        did: &str,
        collections: &[String],
        force: bool,
    ) -> Result<(), StoreError> {
        let stmts = enqueue_statements(did, collections, force);
        self.in_transaction(stmts, None).await?;
        Ok(())
    }

    /// [`Store::enqueue_imports`] for a DID that resolved and whose
    /// collections are known, and, in the same transaction, forgets a
    /// recorded failure to start it (a failed `*` state).
    pub async fn queue_collections(
        &self,
        did: &str,
        collections: &[String],
        force: bool,
    ) -> Result<(), StoreError> {
        let mut stmts = enqueue_statements(did, collections, force);
        if matches!(self, Store::Postgres(_)) && stmts.len() == 1 {
            // One statement, so one round trip instead of four (`BEGIN`,
            // both statements, `COMMIT`): every DID of an import queues
            // its collections. A data-modifying `WITH` runs atomically
            // with its statement; both name the DID `$1`.
            let (insert, args) = stmts.remove(0);
            let sql = format!("WITH cleared AS ({CLEAR_FAILED_DISCOVERY}) {insert}");
            self.execute(&sql, args).await?;
            return Ok(());
        }
        stmts.push((CLEAR_FAILED_DISCOVERY.to_owned(), vec![did.into()]));
        self.in_transaction(stmts, None).await?;
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
            state_columns(self.dialect())
        );
        let rows = self
            .fetch_written(
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
            .execute(
                "UPDATE parity_import_states SET lease_expires_at = $3::timestamptz \
                 WHERE id = $1 AND lease_owner = $2 AND status = 'in_progress'",
                vec![id.into(), owner.into(), timestamp_text(&lease_until).into()],
            )
            .await?;
        Ok(n == 1)
    }

    /// Ends a run as `failed` with its error (lease released); `resume`
    /// starts it again. A run that succeeds is completed by its last
    /// page's commit (`LAST_PAGE_DONE`), not here.
    pub async fn fail_import(&self, id: i64, owner: &str, error: &str) -> Result<bool, StoreError> {
        let n = self
            .execute(
                "UPDATE parity_import_states SET status = 'failed', error = $4, \
                 lease_owner = NULL, lease_expires_at = NULL, updated_at = $3::timestamptz \
                 WHERE id = $1 AND lease_owner = $2 AND status = 'in_progress'",
                vec![id.into(), owner.into(), now_text().into(), error.into()],
            )
            .await?;
        Ok(n == 1)
    }

    /// Ends a claimed pair as `gone` with the reason (lease released).
    pub async fn finish_import_gone(
        &self,
        id: i64,
        owner: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let n = self
            .execute(
                "UPDATE parity_import_states SET status = 'gone', error = $4, cursor = NULL, \
                 completed_at = $3::timestamptz, lease_owner = NULL, lease_expires_at = NULL, updated_at = $3::timestamptz \
                 WHERE id = $1 AND lease_owner = $2 AND status = 'in_progress'",
                vec![id.into(), owner.into(), now_text().into(), reason.into()],
            )
            .await?;
        Ok(n == 1)
    }

    /// Ends every pair of `did` that `resume` would continue and nobody
    /// holds a live lease on (`owner`'s own leases included) as `gone`;
    /// returns how many.
    pub async fn abandon_imports(
        &self,
        did: &str,
        owner: &str,
        reason: &str,
    ) -> Result<u64, StoreError> {
        self.execute(
            "UPDATE parity_import_states SET status = 'gone', error = $3, cursor = NULL, \
             completed_at = $4::timestamptz, lease_owner = NULL, lease_expires_at = NULL, updated_at = $4::timestamptz \
             WHERE did = $1 AND (status IN ('pending', 'failed') OR (status = 'in_progress' \
               AND (lease_expires_at IS NULL OR lease_expires_at < $4::timestamptz OR lease_owner = $2)))",
            vec![did.into(), owner.into(), reason.into(), now_text().into()],
        )
        .await
    }

    /// The account status the stream last reported for `did` (`active`,
    /// `deleted`, …), if parity has a row for it.
    pub async fn account_status(&self, did: &str) -> Result<Option<String>, StoreError> {
        let rows: Vec<(String,)> = self
            .fetch_keyed(
                "SELECT status FROM parity_repos WHERE did = $1",
                vec![did.into()],
            )
            .await?;
        Ok(rows.into_iter().next().map(|r| r.0))
    }

    /// Gives a lease back without finishing (shutdown): the pair stays
    /// `in_progress` with an expired lease, which `parity resume` continues.
    pub async fn release_import(&self, id: i64, owner: &str) -> Result<(), StoreError> {
        self.execute(
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
        self.execute(
            "DELETE FROM parity_import_states WHERE id = $1 AND lease_owner = $2",
            vec![id.into(), owner.into()],
        )
        .await?;
        self.execute(
            "UPDATE parity_repos SET resync_requested_at = NULL \
             WHERE did = $1 AND resync_requested_at <= $2::timestamptz",
            vec![did.into(), claimed_at.into()],
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
        let sql = self.import_states_sql(did, filter, limit);
        let args = vec![did.into()];
        match did {
            Some(_) => self.fetch_keyed(&sql, args).await,
            None => self.fetch_all(&sql, args).await,
        }
    }

    /// [`Store::import_states`]' statement: $1 the DID. The limit is
    /// written into the text, not bound: SQLite plans a statement again
    /// each time a bound `LIMIT` changes (measured: every per-DID read of
    /// an import was prepared anew on the writer thread).
    pub(super) fn import_states_sql(
        &self,
        did: Option<&str>,
        filter: StatusFilter,
        limit: i64,
    ) -> String {
        format!(
            "SELECT {} FROM parity_import_states WHERE {} AND {} \
             ORDER BY updated_at DESC, id DESC LIMIT {limit}",
            state_columns(self.dialect()),
            did_is(1, did),
            filter.sql()
        )
    }

    /// Number of states per status (optionally of one DID).
    pub async fn import_counts(&self, did: Option<&str>) -> Result<Vec<(String, i64)>, StoreError> {
        let sql = format!(
            "SELECT status, COUNT(*) FROM parity_import_states \
             WHERE {} GROUP BY status ORDER BY status",
            did_is(1, did)
        );
        self.fetch_all(&sql, vec![did.into()]).await
    }

    /// Every state `parity resume` may continue (not completed nor gone),
    /// oldest first.
    pub async fn resumable_imports(
        &self,
        did: Option<&str>,
    ) -> Result<Vec<ImportState>, StoreError> {
        let sql = format!(
            "SELECT {} FROM parity_import_states WHERE {} \
             AND {RESUMABLE} ORDER BY id",
            state_columns(self.dialect()),
            did_is(1, did)
        );
        self.fetch_all(&sql, vec![did.into()]).await
    }

    /// Up to `limit` DIDs that have a state `parity resume` may continue
    /// (`ImportStatus::is_resumable`: not completed, not gone),
    /// in DID order after `after`: resume reads its work a page at a time.
    pub async fn resumable_dids(
        &self,
        did: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        let sql = format!(
            "SELECT DISTINCT did FROM parity_import_states \
             WHERE {} AND {RESUMABLE} AND {} ORDER BY did LIMIT $3",
            did_is(1, did),
            match after {
                Some(_) => "did > $2::text",
                None => "$2::text IS NULL",
            }
        );
        let rows: Vec<(String,)> = self
            .fetch_all(&sql, vec![did.into(), after.into(), limit.into()])
            .await?;
        Ok(rows.into_iter().map(|(d,)| d).collect())
    }

    /// How many DIDs have a state `parity resume` may continue.
    pub async fn count_resumable_dids(&self, did: Option<&str>) -> Result<i64, StoreError> {
        let sql = format!(
            "SELECT COUNT(DISTINCT did) FROM parity_import_states \
             WHERE {} AND {RESUMABLE}",
            did_is(1, did)
        );
        let rows: Vec<(i64,)> = self.fetch_all(&sql, vec![did.into()]).await?;
        Ok(rows.first().map_or(0, |r| r.0))
    }

    /// The cached identity of a DID, if any.
    pub async fn cached_identity(&self, did: &str) -> Result<Option<CachedIdentity>, StoreError> {
        let sql = format!(
            "SELECT pds, handle, {} FROM parity_repos WHERE did = $1",
            column("identity_resolved_at", self.dialect())
        );
        Ok(self
            .fetch_keyed(&sql, vec![did.into()])
            .await?
            .into_iter()
            .next())
    }

    /// Stores a resolved identity for other importers (and later runs).
    pub async fn save_identity(
        &self,
        did: &str,
        pds: &str,
        handle: Option<&str>,
    ) -> Result<(), StoreError> {
        self.execute(
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
    use super::{ImportStatus, RESUMABLE};
    use crate::store::StatusFilter;
    use crate::store::commit::tests::open;

    /// Queueing a resolved DID's collections adds their pending states and
    /// forgets a recorded failure to start it (a failed `*` state), in one
    /// write (one statement on PostgreSQL); a `*` state that did not fail
    /// stays.
    async fn queueing_collections_forgets_a_failed_start(pg: bool) {
        let (store, _dir) = open(pg).await;
        let until = chrono::Utc::now() + chrono::Duration::minutes(5);
        for did in ["did:plc:a", "did:plc:b"] {
            store
                .enqueue_imports(did, &["*".to_owned()], false)
                .await
                .unwrap();
        }
        let s = store
            .claim_import("did:plc:a", "*", "me", until, None)
            .await
            .unwrap()
            .unwrap();
        assert!(store.fail_import(s.id, "me", "no PDS").await.unwrap());
        let cols = [
            "app.bsky.feed.like".to_owned(),
            "app.bsky.feed.post".to_owned(),
        ];
        for did in ["did:plc:a", "did:plc:b"] {
            store.queue_collections(did, &cols, false).await.unwrap();
        }
        let states = |did: &'static str| {
            let store = &store;
            async move {
                let mut v: Vec<(String, ImportStatus)> = store
                    .import_states(Some(did), StatusFilter::All, 10)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|s| (s.collection, s.status))
                    .collect();
                v.sort_by(|a, b| a.0.cmp(&b.0));
                v
            }
        };
        let pending = |c: &str| (c.to_owned(), ImportStatus::Pending);
        assert_eq!(
            states("did:plc:a").await,
            [pending("app.bsky.feed.like"), pending("app.bsky.feed.post")]
        );
        assert_eq!(
            states("did:plc:b").await,
            [
                pending("*"),
                pending("app.bsky.feed.like"),
                pending("app.bsky.feed.post")
            ]
        );
    }

    #[tokio::test]
    async fn queueing_collections_forgets_a_failed_start_sqlite() {
        queueing_collections_forgets_a_failed_start(false).await;
    }

    #[tokio::test]
    async fn queueing_collections_forgets_a_failed_start_postgres() {
        queueing_collections_forgets_a_failed_start(true).await;
    }

    #[test]
    fn the_sql_resumable_predicate_is_is_resumable() {
        for st in ImportStatus::ALL {
            let excluded = RESUMABLE.contains(&format!("'{}'", st.as_str()));
            assert_eq!(!excluded, st.is_resumable(), "{st}");
        }
    }

    #[test]
    fn statuses_round_trip_their_stored_text() {
        for s in ImportStatus::ALL {
            assert_eq!(s.as_str().parse::<ImportStatus>(), Ok(s));
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::json!(s.as_str())
            );
        }
        assert_eq!(
            ["pending", "in_progress", "completed", "failed", "gone"],
            ImportStatus::ALL.map(ImportStatus::as_str)
        );
        assert!("done".parse::<ImportStatus>().is_err());
        let terminal: Vec<_> = ImportStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            [
                ImportStatus::Completed,
                ImportStatus::Failed,
                ImportStatus::Gone
            ]
        );
        let resumable: Vec<_> = ImportStatus::ALL
            .into_iter()
            .filter(|s| s.is_resumable())
            .collect();
        assert_eq!(
            resumable,
            [
                ImportStatus::Pending,
                ImportStatus::InProgress,
                ImportStatus::Failed
            ]
        );
    }
}
