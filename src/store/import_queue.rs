//! `parity_import_listings` and `parity_import_queue`: the statements
//! behind `parity import --all`.
//!
//! Owns: claiming a relay listing under a lease, committing one listed
//! page (its DIDs queued and the listing's cursor and counters saved in one
//! transaction, only while the lease holds), finishing a listing; claiming
//! the next queued DID under a lease (`FOR UPDATE SKIP LOCKED` on
//! PostgreSQL, so several importers share the queue), finishing or
//! releasing it, renewing every lease of one owner, and freeing the leases
//! of dead local owners. Does not own what a run is (`import::all`) or the
//! listing itself (`import::listing`).
//!
//! Statements are written once in PostgreSQL form (see `dialect.rs`);
//! timestamps are RFC 3339 text, as in `imports.rs`.

use chrono::{DateTime, Utc};

use super::dialect::{Arg, bind_args};
use super::sqlite_exec::WriterRow;
use super::{Store, StoreError};
use crate::mapper::table::timestamp_text;

/// One listing of a run as claimed.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ListingState {
    pub id: i64,
    /// `*` (listRepos) or the NSID listed with listReposByCollection.
    pub collection: String,
    pub status: String,
    /// Where the next page starts (`None`: the first page).
    pub cursor: Option<String>,
    pub pages: i64,
}

/// One listing as `import-status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ListingRow {
    pub run: String,
    pub collection: String,
    /// `listing`, `completed` or `failed`.
    pub status: String,
    pub cursor: Option<String>,
    pub pages: i64,
    pub repos_listed: i64,
    pub repos_queued: i64,
    pub error: Option<String>,
}

/// One listed page, as committed.
#[derive(Debug, Clone, Default)]
pub struct ListedPage<'a> {
    /// Valid, active DIDs of the page, to queue.
    pub dids: &'a [String],
    /// The cursor of the next page (`None` with `last`).
    pub next: Option<&'a str>,
    pub last: bool,
    /// Entries the relay listed (all of them, bad ones too).
    pub listed: u64,
    pub inactive: u64,
    pub malformed: u64,
}

/// One DID claimed from the queue.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct QueuedDid {
    pub id: i64,
    pub did: String,
}

impl WriterRow for QueuedDid {
    fn from_writer_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(QueuedDid {
            id: r.get("id")?,
            did: r.get("did")?,
        })
    }
}

/// How a queued DID ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueOutcome {
    Completed,
    Failed,
}

/// Listing and queue counts of a run (for progress and the summary).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunCounts {
    pub listed: i64,
    pub queued: i64,
    pub inactive: i64,
    pub malformed: i64,
    /// Queue rows by status.
    pub pending: i64,
    pub in_progress: i64,
    pub completed: i64,
    pub failed: i64,
    /// Listings not completed yet.
    pub listings_open: i64,
}

/// Queue rows inserted per statement (two parameters each, far below
/// SQLite's limit of 32,766).
const INSERT_CHUNK: usize = 1_000;

fn now_text() -> String {
    timestamp_text(&Utc::now())
}

/// `claim_queued`'s statement: $1 run, $2 owner, $3 lease end, $4 now,
/// $5 the run's start, $6 how many. Each kind of claimable DID is its own
/// index range, read up to $6 rows (`FOR UPDATE SKIP LOCKED` on
/// PostgreSQL, so concurrent claims take different DIDs); the union keeps
/// the kinds in order and the first $6 are taken.
const CLAIM_QUEUED: &str = "WITH expired AS ( \
               SELECT id FROM parity_import_queue WHERE run = $1 AND status = 'in_progress' \
                 AND lease_expires_at < $4::timestamptz ORDER BY id LIMIT $6 FOR UPDATE SKIP LOCKED), \
             pending AS ( \
               SELECT id FROM parity_import_queue WHERE run = $1 AND status = 'pending' \
                 ORDER BY id LIMIT $6 FOR UPDATE SKIP LOCKED), \
             failed AS ( \
               SELECT id FROM parity_import_queue WHERE run = $1 AND status = 'failed' \
                 AND updated_at < $5::timestamptz ORDER BY updated_at LIMIT $6 FOR UPDATE SKIP LOCKED) \
             UPDATE parity_import_queue SET status = 'in_progress', lease_owner = $2, \
             lease_expires_at = $3::timestamptz, error = NULL, updated_at = $4::timestamptz \
             WHERE id IN (SELECT id FROM expired UNION ALL SELECT id FROM pending \
                          UNION ALL SELECT id FROM failed LIMIT $6) \
             RETURNING id, did";

impl Store {
    /// Runs `stmts` (PostgreSQL form) in one transaction; returns the rows
    /// each affected. When `guard` (an index) affects no row, the
    /// transaction is rolled back and `None` returned. On SQLite the
    /// writer thread runs them (`sqlite_exec.rs`).
    pub(super) async fn in_transaction(
        &self,
        stmts: Vec<(String, Vec<Arg>)>,
        guard: Option<usize>,
    ) -> Result<Option<Vec<u64>>, StoreError> {
        if let Store::Sqlite(s) = self
            && let Some(w) = s.writer()
        {
            return w.exec(stmts, guard).await;
        }
        let dialect = self.dialect();
        let mut affected = Vec::with_capacity(stmts.len());
        macro_rules! run {
            ($backend:ident, $pool:expr) => {{
                let mut tx = $pool.begin().await?;
                for (i, (sql, args)) in stmts.into_iter().enumerate() {
                    let sql = sqlx::AssertSqlSafe(dialect.translate(&sql).into_owned());
                    let n = bind_args!($backend, sqlx::query(sql), args)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if guard == Some(i) && n == 0 {
                        tx.rollback().await?;
                        return Ok(None);
                    }
                    affected.push(n);
                }
                tx.commit().await?;
            }};
        }
        match self {
            Store::Sqlite(s) => run!(Sqlite, s.pool()),
            Store::Postgres(p) => run!(Postgres, p.pool()),
        }
        Ok(Some(affected))
    }

    /// Adds the listings of `run` that do not exist yet (`listing`, no
    /// cursor). With `restart`, every listing of the run starts again from
    /// the first page unless another live process holds it.
    pub async fn open_listings(
        &self,
        run: &str,
        collections: &[String],
        restart: bool,
    ) -> Result<(), StoreError> {
        let now = now_text();
        for c in collections {
            self.execute(
                "INSERT INTO parity_import_listings (run, collection, status, created_at, updated_at) \
                 VALUES ($1, $2, 'listing', $3::timestamptz, $3::timestamptz) ON CONFLICT (run, collection) DO NOTHING",
                vec![run.into(), c.as_str().into(), now.clone().into()],
            )
            .await?;
            if restart {
                self.execute(
                    "UPDATE parity_import_listings SET status = 'listing', cursor = NULL, pages = 0, \
                     error = NULL, completed_at = NULL, updated_at = $3::timestamptz \
                     WHERE run = $1 AND collection = $2 \
                     AND (lease_expires_at IS NULL OR lease_expires_at < $3::timestamptz)",
                    vec![run.into(), c.as_str().into(), now.clone().into()],
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Takes the lease of a listing of `run` that is still to list: one
    /// nobody holds (or whose lease expired, or held by `steal_from`), and
    /// not one that failed since `since` (this run already tried it).
    pub async fn claim_listing(
        &self,
        run: &str,
        collection: &str,
        owner: &str,
        lease_until: DateTime<Utc>,
        since: DateTime<Utc>,
        steal_from: Option<&str>,
    ) -> Result<Option<ListingState>, StoreError> {
        self.fetch_optional(
            "UPDATE parity_import_listings SET status = 'listing', lease_owner = $3, \
             lease_expires_at = $4::timestamptz, error = NULL, updated_at = $5::timestamptz \
             WHERE id = (SELECT id FROM parity_import_listings WHERE run = $1 AND collection = $2 \
               AND (status = 'listing' OR (status = 'failed' AND updated_at < $6::timestamptz)) \
               AND (lease_expires_at IS NULL OR lease_expires_at < $5::timestamptz \
                    OR lease_owner = $3 OR lease_owner = $7::text) \
               FOR UPDATE SKIP LOCKED) \
             RETURNING id, collection, status, cursor, pages",
            vec![
                run.into(),
                collection.into(),
                owner.into(),
                timestamp_text(&lease_until).into(),
                now_text().into(),
                timestamp_text(&since).into(),
                steal_from.into(),
            ],
        )
        .await
    }

    /// Commits one listed page: the listing's cursor, counters and lease
    /// (completed with `last`), and its DIDs queued as `pending` (with
    /// `requeue`, DIDs already queued and not in progress become pending
    /// again). Returns how many DIDs were newly queued, or `None` when the
    /// lease is no longer ours (nothing written).
    pub async fn save_listed_page(
        &self,
        run: &str,
        listing_id: i64,
        owner: &str,
        lease_until: DateTime<Utc>,
        page: &ListedPage<'_>,
        requeue: bool,
    ) -> Result<Option<u64>, StoreError> {
        let now = now_text();
        let mut stmts: Vec<(String, Vec<Arg>)> = Vec::new();
        let mut inserts = Vec::new();
        for chunk in page.dids.chunks(INSERT_CHUNK) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| {
                    format!(
                        "($1, ${}, 'pending', $2::timestamptz, $2::timestamptz)",
                        i + 3
                    )
                })
                .collect();
            let conflict = if requeue {
                "DO UPDATE SET status = 'pending', error = NULL, updated_at = excluded.updated_at \
                 WHERE parity_import_queue.status <> 'in_progress'"
            } else {
                "DO NOTHING"
            };
            let sql = format!(
                "INSERT INTO parity_import_queue (run, did, status, created_at, updated_at) VALUES {} \
                 ON CONFLICT (run, did) {conflict}",
                values.join(", ")
            );
            let mut args: Vec<Arg> = vec![run.into(), now.clone().into()];
            args.extend(chunk.iter().map(|d| Arg::from(d.as_str())));
            inserts.push((sql, args));
        }
        // The lease check first: when it matches nothing, nothing is queued.
        stmts.push((
            "UPDATE parity_import_listings SET cursor = $3, pages = pages + 1, \
             repos_listed = repos_listed + $4, repos_inactive = repos_inactive + $5, \
             repos_malformed = repos_malformed + $6, lease_expires_at = $7::timestamptz, \
             status = CASE WHEN $8 THEN 'completed' ELSE status END, \
             completed_at = CASE WHEN $8 THEN $9::timestamptz ELSE completed_at END, \
             updated_at = $9::timestamptz \
             WHERE id = $1 AND lease_owner = $2 AND status = 'listing'"
                .to_owned(),
            vec![
                listing_id.into(),
                owner.into(),
                page.next.into(),
                (page.listed as i64).into(),
                (page.inactive as i64).into(),
                (page.malformed as i64).into(),
                timestamp_text(&lease_until).into(),
                page.last.into(),
                now.clone().into(),
            ],
        ));
        let n_inserts = inserts.len();
        stmts.extend(inserts);
        let Some(affected) = self.in_transaction(stmts, Some(0)).await? else {
            return Ok(None);
        };
        let queued: u64 = affected[1..1 + n_inserts].iter().sum();
        self.execute(
            "UPDATE parity_import_listings SET repos_queued = repos_queued + $2 WHERE id = $1",
            vec![listing_id.into(), (queued as i64).into()],
        )
        .await?;
        Ok(Some(queued))
    }

    /// Ends a listing `failed` with `error` (lease released); its cursor
    /// stays, so the next run continues from it.
    pub async fn fail_listing(&self, id: i64, owner: &str, error: &str) -> Result<(), StoreError> {
        self.execute(
            "UPDATE parity_import_listings SET status = 'failed', error = $3, lease_owner = NULL, \
             lease_expires_at = NULL, updated_at = $4::timestamptz \
             WHERE id = $1 AND lease_owner = $2 AND status = 'listing'",
            vec![id.into(), owner.into(), error.into(), now_text().into()],
        )
        .await?;
        Ok(())
    }

    /// Gives a listing's lease back (shutdown): another process, or the
    /// next run, continues from its cursor at once.
    pub async fn release_listing(&self, id: i64, owner: &str) -> Result<(), StoreError> {
        self.execute(
            "UPDATE parity_import_listings SET lease_owner = NULL, lease_expires_at = NULL, \
             updated_at = $3::timestamptz WHERE id = $1 AND lease_owner = $2",
            vec![id.into(), owner.into(), now_text().into()],
        )
        .await?;
        Ok(())
    }

    /// `(collection, status, lease_owner)` of each listing of `run`.
    pub async fn listings(
        &self,
        run: &str,
    ) -> Result<Vec<(String, String, Option<String>)>, StoreError> {
        self.fetch_all(
            "SELECT collection, status, lease_owner FROM parity_import_listings WHERE run = $1 ORDER BY collection",
            vec![run.into()],
        )
        .await
    }

    /// Every listing of every run, by run and collection.
    pub async fn all_listings(&self) -> Result<Vec<ListingRow>, StoreError> {
        self.fetch_all(
            "SELECT run, collection, status, cursor, pages, repos_listed, repos_queued, error \
             FROM parity_import_listings ORDER BY run, collection",
            vec![],
        )
        .await
    }

    /// Takes the next DID of `run`'s queue: first one in progress with an
    /// expired lease (its process is gone), then the oldest pending one,
    /// then one that failed before `since` (an earlier run's failure; this
    /// run does not retry its own).
    ///
    /// Each case is its own index range (migration
    /// `20261201800000_import_queue_claim_indexes`), so a claim costs the
    /// same with millions of DIDs done as with none: 0.07 ms on SQLite and
    /// 0.24 ms on PostgreSQL with 200,000 queued, where one `ORDER BY id`
    /// over the three cases read every row of the run (37 and 44 ms).
    ///
    /// Up to `limit` DIDs are claimed in one statement, chosen in that
    /// order and returned by id: `import --all` claims `--concurrency` DIDs
    /// per write rather than making one write per DID.
    pub async fn claim_queued(
        &self,
        run: &str,
        owner: &str,
        lease_until: DateTime<Utc>,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<QueuedDid>, StoreError> {
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        let mut claimed: Vec<QueuedDid> = self
            .fetch_written(
                CLAIM_QUEUED,
                vec![
                    run.into(),
                    owner.into(),
                    timestamp_text(&lease_until).into(),
                    now_text().into(),
                    timestamp_text(&since).into(),
                    limit.into(),
                ],
            )
            .await?;
        claimed.sort_by_key(|q| q.id);
        Ok(claimed)
    }

    /// Ends a claimed DID (lease released).
    pub async fn finish_queued(
        &self,
        id: i64,
        owner: &str,
        outcome: QueueOutcome,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let status = match outcome {
            QueueOutcome::Completed => "completed",
            QueueOutcome::Failed => "failed",
        };
        self.execute(
            "UPDATE parity_import_queue SET status = $3, error = $4, lease_owner = NULL, \
             lease_expires_at = NULL, updated_at = $5::timestamptz WHERE id = $1 AND lease_owner = $2",
            vec![
                id.into(),
                owner.into(),
                status.into(),
                error.into(),
                now_text().into(),
            ],
        )
        .await?;
        Ok(())
    }

    /// Puts a claimed DID back (interrupted): `pending` again.
    pub async fn release_queued(&self, id: i64, owner: &str) -> Result<(), StoreError> {
        self.execute(
            "UPDATE parity_import_queue SET status = 'pending', lease_owner = NULL, \
             lease_expires_at = NULL, updated_at = $3::timestamptz \
             WHERE id = $1 AND lease_owner = $2 AND status = 'in_progress'",
            vec![id.into(), owner.into(), now_text().into()],
        )
        .await?;
        Ok(())
    }

    /// Extends every lease `owner` holds on listings and queued DIDs.
    pub async fn renew_run_leases(
        &self,
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let until = timestamp_text(&lease_until);
        self.execute(
            "UPDATE parity_import_listings SET lease_expires_at = $2::timestamptz \
             WHERE lease_owner = $1 AND status = 'listing'",
            vec![owner.into(), until.clone().into()],
        )
        .await?;
        self.execute(
            "UPDATE parity_import_queue SET lease_expires_at = $2::timestamptz \
             WHERE lease_owner = $1 AND status = 'in_progress'",
            vec![owner.into(), until.into()],
        )
        .await?;
        Ok(())
    }

    /// The owners holding leases on `run`'s listings and queue.
    pub async fn run_lease_owners(&self, run: &str) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = self
            .fetch_all(
                "SELECT DISTINCT lease_owner FROM parity_import_queue \
                 WHERE run = $1 AND status = 'in_progress' AND lease_owner IS NOT NULL \
                 UNION SELECT DISTINCT lease_owner FROM parity_import_listings \
                 WHERE run = $1 AND lease_owner IS NOT NULL",
                vec![run.into()],
            )
            .await?;
        Ok(rows.into_iter().map(|(o,)| o).collect())
    }

    /// Expires every lease of `owner` (a dead process) on `run`, so its
    /// listing and DIDs are taken over at once.
    pub async fn expire_run_leases(&self, run: &str, owner: &str) -> Result<(), StoreError> {
        let now = now_text();
        self.execute(
            "UPDATE parity_import_queue SET lease_expires_at = $3::timestamptz \
             WHERE run = $1 AND lease_owner = $2 AND status = 'in_progress'",
            vec![run.into(), owner.into(), now.clone().into()],
        )
        .await?;
        self.execute(
            "UPDATE parity_import_listings SET lease_owner = NULL, lease_expires_at = NULL \
             WHERE run = $1 AND lease_owner = $2",
            vec![run.into(), owner.into()],
        )
        .await?;
        Ok(())
    }

    /// The listing and queue counts of `run`.
    pub async fn run_counts(&self, run: &str) -> Result<RunCounts, StoreError> {
        let l: Vec<(i64, i64, i64, i64, i64)> = self
            .fetch_all(
                "SELECT CAST(COALESCE(SUM(repos_listed), 0) AS BIGINT), CAST(COALESCE(SUM(repos_queued), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(repos_inactive), 0) AS BIGINT), CAST(COALESCE(SUM(repos_malformed), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(CASE WHEN status = 'completed' THEN 0 ELSE 1 END), 0) AS BIGINT) \
                 FROM parity_import_listings WHERE run = $1",
                vec![run.into()],
            )
            .await?;
        let q: Vec<(String, i64)> = self
            .fetch_all(
                "SELECT status, COUNT(*) FROM parity_import_queue WHERE run = $1 GROUP BY status",
                vec![run.into()],
            )
            .await?;
        let mut c = RunCounts::default();
        if let Some((listed, queued, inactive, malformed, open)) = l.first().copied() {
            c.listed = listed;
            c.queued = queued;
            c.inactive = inactive;
            c.malformed = malformed;
            c.listings_open = open;
        }
        for (status, n) in q {
            match status.as_str() {
                "pending" => c.pending = n,
                "in_progress" => c.in_progress = n,
                "completed" => c.completed = n,
                _ => c.failed += n,
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
#[path = "import_queue_tests.rs"]
mod tests;
