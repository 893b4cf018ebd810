//! PostgreSQL's write of fresh repositories: verified whole-repo snapshots
//! of repos this database holds nothing of, several in one transaction,
//! their rows by `COPY` and their bookkeeping one statement for all.
//!
//! Why: a whole-repo import of 200 records a repo spent more of the
//! server's CPU on each repo's own statements (its pairs' claims, each
//! collection's page transaction, sweep and state) than on its rows, and
//! its rows went through the upsert at twice `COPY`'s cost (BENCHMARKS.md,
//! issue 15 b, sessions 27–29). A network backfill into an empty database
//! is all such repos.
//!
//! Owns: which repos of a group are fresh and the group's transaction.
//! A repo is fresh when, asked under the group's DID locks (taken shared,
//! as an import page's: a live batch of the DID waits for the commit, and
//! one that committed first is seen), it has no import state (no pair
//! claimed, queued, completed or failed), and each collection written has
//! no row in its table's URI range, no tombstone in that range, no floor
//! and no account status that purges: then the upsert would write every
//! row and the sweep would remove nothing, so `COPY` writes exactly what
//! pages would. The transaction then writes each collection's state
//! `completed` (one page, the snapshot's rev, the page's counters), the
//! floor of each collection written completely (as its sweep would), and
//! the rows; a state that another importer inserted meanwhile (its
//! `INSERT` conflicts) rolls the whole group back. Repos not fresh, and
//! every repo of a group that failed, are the caller's to write page by
//! page. Does not own grouping or the import's reports (`import::fresh`).

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;

use super::postgres::{PgStore, begin_sql};
use super::{CommitStats, Store, StoreError, did_locks, postgres_copy};
use crate::batch::Sweep;
use crate::event::{Did, Nsid};
use crate::mapper::{Row, TableId};

/// One verified repository to write whole.
#[derive(Debug)]
pub struct FreshRepo {
    pub did: Did,
    /// The signed commit's rev, on every row, state and floor.
    pub rev: String,
    pub collections: Vec<FreshCollection>,
}

/// One collection of a [`FreshRepo`]: all its records, mapped, and
/// already in `COPY`'s format ([`Store::fresh_collection`], run by the
/// repo's own import task, so the group writer only sends bytes).
#[derive(Debug)]
pub struct FreshCollection {
    pub(super) collection: Nsid,
    /// The table its records are written to.
    pub(super) table: TableId,
    /// Its rows (one per distinct URI) in `COPY`'s text format.
    pub(super) copy: Vec<u8>,
    /// How many rows `copy` holds.
    pub(super) rows: u64,
    /// Records that did not map (the state's `records_failed`).
    pub(super) failed: u64,
    /// Every record of the collection is among the rows: the floor is
    /// written, as a complete listing's sweep writes it.
    pub(super) complete: bool,
}

impl FreshCollection {
    /// The rows written and the records that did not map.
    pub fn counts(&self) -> (u64, u64) {
        (self.rows, self.failed)
    }

    pub fn collection(&self) -> &Nsid {
        &self.collection
    }
}

impl Store {
    /// `rows` of `collection` (one per distinct URI, all of `table`) as a
    /// [`FreshCollection`] for [`Store::commit_fresh`], encoded for
    /// `COPY` with `synced_at` now; `None` where [`Store::writes_fresh`]
    /// is false. `failed` records did not map; `complete`: every record of
    /// the collection is among `rows`.
    pub fn fresh_collection(
        &self,
        collection: Nsid,
        table: TableId,
        rows: &[Row],
        failed: u64,
        complete: bool,
    ) -> Option<FreshCollection> {
        let Store::Postgres(p) = self else {
            return None;
        };
        if !self.writes_fresh() {
            return None;
        }
        Some(FreshCollection {
            collection,
            table,
            copy: postgres_copy::encode(p.schema(table.0), rows, Utc::now()),
            rows: rows.len() as u64,
            failed,
            complete,
        })
    }
}

/// The group's inserts of states and floors; the count of states inserted.
/// `$1`..`$5` did, collection, rev, synced, failed per state; `$6` now;
/// `$7`..`$9` did, collection, rev per floor.
const STATES_AND_FLOORS: &str = "WITH st AS (\
     INSERT INTO parity_import_states (did, collection, status, rev, records_synced, \
     records_skipped, records_failed, pages, started_at, completed_at, created_at, updated_at) \
     SELECT v.d, v.c, 'completed', v.r, v.n, 0, v.f, 1, $6, $6, $6, $6 \
     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[]) AS v(d, c, r, n, f) \
     ON CONFLICT (did, collection) DO NOTHING RETURNING 1), \
     fl AS (INSERT INTO parity_sweep_floors (did, collection, rev) \
     SELECT * FROM UNNEST($7::text[], $8::text[], $9::text[]) \
     ON CONFLICT (did, collection) DO UPDATE SET rev = excluded.rev \
     WHERE excluded.rev > parity_sweep_floors.rev) \
     SELECT count(*) FROM st";

impl PgStore {
    /// Writes the fresh repos of `repos` in one transaction: which were
    /// written (the others, all when the group rolled back, are the
    /// caller's to write page by page) and the rows written per table.
    pub(super) async fn commit_fresh(
        &self,
        repos: &[&FreshRepo],
    ) -> Result<(Vec<bool>, CommitStats), StoreError> {
        let mut keys: Vec<i32> = repos.iter().map(|r| did_locks::bucket(&r.did)).collect();
        keys.sort_unstable();
        keys.dedup();
        let mut tx = self
            .pool()
            .begin_with(AssertSqlSafe(begin_sql(&keys, true)))
            .await?;
        let stale = self.stale(&mut tx, repos).await?;
        let fresh: Vec<bool> = (0..repos.len()).map(|i| !stale.contains(&i)).collect();
        let written: Vec<&FreshRepo> = repos
            .iter()
            .zip(&fresh)
            .filter_map(|(r, f)| f.then_some(*r))
            .collect();
        let mut stats = CommitStats::default();
        if written.is_empty() {
            return Ok((fresh, stats));
        }
        let now = Utc::now();
        let states: usize = written.iter().map(|r| r.collections.len()).sum();
        if states_and_floors(&mut tx, &written, now).await? != states as i64 {
            // Another importer queued or claimed one of them meanwhile.
            return Ok((vec![false; repos.len()], stats));
        }
        for (t, sql) in self.copy_tables() {
            let parts: Vec<&[u8]> = written
                .iter()
                .flat_map(|r| r.collections.iter())
                .filter(|c| c.table.0 == t && c.rows > 0)
                .map(|c| c.copy.as_slice())
                .collect();
            if parts.is_empty() {
                continue;
            }
            let mut sink = tx.copy_in_raw(sql).await?;
            for part in parts {
                sink.send(part).await?;
            }
            let n = sink.finish().await?;
            CommitStats::add(&mut stats.upserted, &self.schema(t).name, n);
        }
        tx.commit().await?;
        Ok((fresh, stats))
    }

    /// Indexes of the repos of `repos` that are not fresh (the module doc).
    async fn stale(
        &self,
        tx: &mut sqlx::PgConnection,
        repos: &[&FreshRepo],
    ) -> Result<Vec<usize>, StoreError> {
        let mut v = CheckArgs::default();
        for (i, r) in repos.iter().enumerate() {
            for c in &r.collections {
                let (lo, hi) = Sweep::range_of(&r.did, &c.collection);
                v.repo.push(i as i32);
                v.did.push(r.did.as_str().to_owned());
                v.collection.push(c.collection.as_str().to_owned());
                v.lo.push(lo);
                v.hi.push(hi);
                v.table.push(c.table.0 as i32);
            }
        }
        let mut tables: Vec<i32> = v.table.clone();
        tables.sort_unstable();
        tables.dedup();
        let sql = self.stale_sql(&tables);
        let stale: Vec<i32> = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(v.repo)
            .bind(v.did)
            .bind(v.collection)
            .bind(v.lo)
            .bind(v.hi)
            .bind(v.table)
            .fetch_all(&mut *tx)
            .await?;
        Ok(stale.into_iter().map(|i| i as usize).collect())
    }

    /// The check's statement for a group writing into `tables`: the repo
    /// index of every (repo, collection) with something stored.
    fn stale_sql(&self, tables: &[i32]) -> String {
        let mut sql = String::from(
            "SELECT DISTINCT v.i FROM UNNEST($1::int4[], $2::text[], $3::text[], $4::text[], \
             $5::text[], $6::int4[]) AS v(i, d, c, lo, hi, t) \
             WHERE EXISTS (SELECT 1 FROM parity_import_states s WHERE s.did = v.d) \
             OR EXISTS (SELECT 1 FROM parity_sweep_floors f WHERE f.did = v.d AND f.collection = v.c) \
             OR EXISTS (SELECT 1 FROM parity_tombstones ts WHERE ts.uri >= v.lo AND ts.uri < v.hi)",
        );
        if let Some(list) = self.purging_statuses() {
            sql.push_str(&format!(
                " OR EXISTS (SELECT 1 FROM parity_repos r WHERE r.did = v.d AND r.status IN ({list}))"
            ));
        }
        for &t in tables {
            sql.push_str(&format!(
                " OR (v.t = {t} AND EXISTS (SELECT 1 FROM {} x WHERE x.uri >= v.lo AND x.uri < v.hi))",
                self.schema(t as usize).name
            ));
        }
        sql
    }
}

/// The check's arrays, one element per (repo, collection).
#[derive(Default)]
struct CheckArgs {
    repo: Vec<i32>,
    did: Vec<String>,
    collection: Vec<String>,
    lo: Vec<String>,
    hi: Vec<String>,
    table: Vec<i32>,
}

/// Inserts the states of `repos`' collections and the floors of the
/// complete ones; how many states were inserted.
async fn states_and_floors(
    tx: &mut sqlx::PgConnection,
    repos: &[&FreshRepo],
    now: DateTime<Utc>,
) -> Result<i64, StoreError> {
    // In one order (did, collection) in every group: two groups inserting
    // the same states wait for each other instead of deadlocking.
    let mut states: Vec<(&str, &str, &str, i64, i64, bool)> = repos
        .iter()
        .flat_map(|repo| {
            repo.collections.iter().map(|col| {
                (
                    repo.did.as_str(),
                    col.collection.as_str(),
                    repo.rev.as_str(),
                    col.rows as i64,
                    col.failed as i64,
                    col.complete,
                )
            })
        })
        .collect();
    states.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let (mut d, mut c, mut r, mut n, mut f) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut fd, mut fc, mut fr) = (vec![], vec![], vec![]);
    for (did, collection, rev, synced, failed, complete) in states {
        d.push(did.to_owned());
        c.push(collection.to_owned());
        r.push(rev.to_owned());
        n.push(synced);
        f.push(failed);
        if complete {
            fd.push(did.to_owned());
            fc.push(collection.to_owned());
            fr.push(rev.to_owned());
        }
    }
    Ok(sqlx::query_scalar(STATES_AND_FLOORS)
        .bind(d)
        .bind(c)
        .bind(r)
        .bind(n)
        .bind(f)
        .bind(now)
        .bind(fd)
        .bind(fc)
        .bind(fr)
        .fetch_one(&mut *tx)
        .await?)
}

#[cfg(test)]
#[path = "postgres_fresh_tests.rs"]
pub(super) mod tests;
