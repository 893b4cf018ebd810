//! The SQLite writer's page-cache size, and why it starts small.
//!
//! Owns: the size the writer's connection asks for (`PRAGMA cache_size`)
//! and when it changes. Does not own the connection (`sqlite_writer.rs`).
//!
//! `database.sqlite_cache_mib = 0` (the default) sizes the cache from the
//! machine's memory ([`default_cache_kib`]), which keeps a large
//! database's index pages in the process (worth a fifth of the rate at 10M
//! random keys, BENCHMARKS.md session 20). Below 1 GiB that size costs
//! instead: when a page split reorders its pages, SQLite passes a page
//! through the temporary number `PENDING_BYTE / page_size + 1`, the first
//! page past 1 GiB, and every `COMMIT` after it walks the cache's hash
//! table (`pcache1TruncateUnsafe`, as many slots as the cache holds pages,
//! up to that number). With a cache sized for a big database that walk was
//! a fifth of the writer's time in `import --all` (BENCHMARKS.md, issue 15,
//! session 22). So the default cache is held at [`SMALL_DB_CACHE_KIB`]
//! while the database is under [`SMALL_DB_BYTES`] (a file that small stays
//! in the kernel's page cache, so a miss is a copy, not a disk read) and
//! grows to its full size once the database is past it, where the walk
//! costs nothing. An explicit `sqlite_cache_mib` is used as given.

use rusqlite::Connection;

/// Below this size the commit-time walk costs (`PENDING_BYTE`: 1 GiB).
pub(super) const SMALL_DB_BYTES: u64 = 1 << 30;

/// The default cache while the database is under [`SMALL_DB_BYTES`].
pub(super) const SMALL_DB_CACHE_KIB: u64 = 64 * 1024;

/// Transactions between two looks at the database's size while it is
/// small (each look reads two header fields).
const CHECK_EVERY: u64 = 64;

/// The writer's page cache when `sqlite_cache_mib` is 0: 1/32 of the
/// machine's memory, at least the 32 MiB parity used before, at most 1 GiB
/// (an index working set larger than that is disk-bound anyway); held at
/// [`SMALL_DB_CACHE_KIB`] while the database is small (module doc).
pub fn default_cache_kib() -> u64 {
    const MIN_KIB: u64 = 32 * 1024;
    const MAX_KIB: u64 = 1024 * 1024;
    let total_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    (total_kib / 32).clamp(MIN_KIB, MAX_KIB)
}

/// What the writer's cache is sized by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CachePlan {
    /// The size once the database is large (or always, if explicit).
    pub(super) full_kib: u64,
    /// The smaller size and the database size below which it holds;
    /// `None` for an explicit `sqlite_cache_mib`.
    pub(super) small: Option<(u64, u64)>,
}

impl CachePlan {
    /// The plan for `sqlite_cache_mib` (0: the default).
    pub(super) fn new(sqlite_cache_mib: u64) -> CachePlan {
        match sqlite_cache_mib {
            0 => {
                let full_kib = default_cache_kib();
                CachePlan {
                    full_kib,
                    small: (full_kib > SMALL_DB_CACHE_KIB)
                        .then_some((SMALL_DB_CACHE_KIB, SMALL_DB_BYTES)),
                }
            }
            mib => CachePlan {
                full_kib: mib.saturating_mul(1024),
                small: None,
            },
        }
    }

    /// The cache for a database of `db_bytes`.
    pub(super) fn kib_for(&self, db_bytes: u64) -> u64 {
        match self.small {
            Some((kib, below)) if db_bytes < below => kib,
            _ => self.full_kib,
        }
    }
}

/// The cache of one open connection, following its database's size.
pub(super) struct Cache {
    plan: CachePlan,
    /// The size set now, in KiB.
    kib: u64,
    commits: u64,
}

impl Cache {
    /// Sets `conn`'s cache for its database's size now.
    pub(super) fn open(plan: &CachePlan, conn: &Connection) -> rusqlite::Result<Cache> {
        let kib = plan.kib_for(db_bytes(conn)?);
        conn.pragma_update(None, "cache_size", format!("-{kib}"))?;
        Ok(Cache {
            plan: plan.clone(),
            kib,
            commits: 0,
        })
    }

    /// After a commit: grows the cache once the database has grown past
    /// the small size (looked at every [`CHECK_EVERY`] commits; never
    /// again once it is full size).
    pub(super) fn committed(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        if self.kib == self.plan.full_kib {
            return Ok(());
        }
        self.commits += 1;
        if !self.commits.is_multiple_of(CHECK_EVERY) {
            return Ok(());
        }
        let kib = self.plan.kib_for(db_bytes(conn)?);
        if kib != self.kib {
            conn.pragma_update(None, "cache_size", format!("-{kib}"))?;
            self.kib = kib;
        }
        Ok(())
    }
}

/// The database's size in bytes, from its header.
fn db_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    Ok((pages.max(0) as u64).saturating_mul(size.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_size(c: &Connection) -> i64 {
        c.query_row("PRAGMA cache_size", [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn an_explicit_size_is_used_as_given_and_the_default_starts_small() {
        let explicit = CachePlan::new(48);
        assert_eq!(explicit.small, None);
        assert_eq!(explicit.kib_for(0), 48 * 1024);
        let default = CachePlan::new(0);
        assert_eq!(default.full_kib, default_cache_kib());
        if default.full_kib > SMALL_DB_CACHE_KIB {
            assert_eq!(default.kib_for(0), SMALL_DB_CACHE_KIB);
            assert_eq!(default.kib_for(SMALL_DB_BYTES - 1), SMALL_DB_CACHE_KIB);
            assert_eq!(default.kib_for(SMALL_DB_BYTES), default.full_kib);
        } else {
            assert_eq!(default.kib_for(0), default.full_kib);
        }
    }

    /// The cache grows to its full size once the database passes the
    /// threshold (here 256 KiB instead of 1 GiB), and stays there.
    #[test]
    fn the_cache_grows_when_the_database_passes_the_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("t.db")).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (v BLOB NOT NULL);")
            .unwrap();
        let plan = CachePlan {
            full_kib: 8 * 1024,
            small: Some((1024, 256 * 1024)),
        };
        let mut cache = Cache::open(&plan, &conn).unwrap();
        assert_eq!(cache_size(&conn), -1024);
        let mut commits = 0;
        while cache_size(&conn) == -1024 {
            conn.execute("INSERT INTO t VALUES (randomblob(4000))", [])
                .unwrap();
            cache.committed(&conn).unwrap();
            commits += 1;
            assert!(commits < 10_000, "the cache never grew");
        }
        assert_eq!(cache_size(&conn), -8 * 1024);
        assert!(db_bytes(&conn).unwrap() >= 256 * 1024);
        // Grown before the database had passed it: not allowed.
        assert!(commits as u64 >= 256 * 1024 / 4096);
        // A connection opened on the big database starts full size.
        let again = Connection::open(dir.path().join("t.db")).unwrap();
        Cache::open(&plan, &again).unwrap();
        assert_eq!(cache_size(&again), -8 * 1024);
    }
}
