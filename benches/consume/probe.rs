//! What the bench reads about the consumer and its database: CPU time and
//! peak RSS from `/proc`, the stored cursor, row counts and database size.

use sqlx::{PgPool, SqlitePool};

/// `(user + sys CPU seconds, VmHWM kB, VmRSS kB)` of process `pid`.
pub fn proc_stats(pid: u32) -> (f64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are
    // the 14th and 15th fields of the whole line.
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // /proc reports in USER_HZ, which Linux fixes at 100 for user space.
    let ticks = 100.0;
    let cpu = f
        .get(11)
        .zip(f.get(12))
        .map(|(u, s)| (u.parse::<f64>().unwrap_or(0.0) + s.parse::<f64>().unwrap_or(0.0)) / ticks)
        .unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (cpu, kb("VmHWM:"), kb("VmRSS:"))
}

/// The 1-minute load average.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A read connection to a bench database.
pub enum Db {
    Sqlite(SqlitePool, String),
    Pg(PgPool),
}

const ROWS: &str = "SELECT (SELECT COUNT(*) FROM posts) + (SELECT COUNT(*) FROM likes) + (SELECT COUNT(*) FROM reposts) \
     + (SELECT COUNT(*) FROM follows) + (SELECT COUNT(*) FROM blocks) + (SELECT COUNT(*) FROM profiles)";

impl Db {
    pub async fn open(url: &str) -> Db {
        if url.starts_with("postgres") {
            Db::Pg(PgPool::connect(url).await.expect("PostgreSQL reachable"))
        } else {
            let path = url.trim_start_matches("sqlite://").to_owned();
            Db::Sqlite(SqlitePool::connect(url).await.expect("SQLite file"), path)
        }
    }

    /// The largest stored cursor of `stream` prefix (any when empty).
    pub async fn cursor(&self) -> Option<i64> {
        let sql = "SELECT MAX(cursor) FROM parity_cursors WHERE stream <> 'baseline'";
        match self {
            Db::Pg(p) => sqlx::query_scalar(sql).fetch_one(p).await.ok().flatten(),
            Db::Sqlite(p, _) => sqlx::query_scalar(sql).fetch_one(p).await.ok().flatten(),
        }
    }

    /// Rows in the change log (`[feed] enabled`).
    pub async fn changes(&self) -> i64 {
        let sql = "SELECT COUNT(*) FROM parity_changes";
        match self {
            Db::Pg(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
            Db::Sqlite(p, _) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
        }
    }

    pub async fn rows(&self) -> i64 {
        match self {
            Db::Pg(p) => sqlx::query_scalar(ROWS).fetch_one(p).await.unwrap(),
            Db::Sqlite(p, _) => sqlx::query_scalar(ROWS).fetch_one(p).await.unwrap(),
        }
    }

    /// Bytes on disk: the SQLite file and its WAL, or the PostgreSQL
    /// database.
    pub async fn bytes(&self) -> u64 {
        match self {
            Db::Pg(p) => {
                sqlx::query_scalar::<_, i64>("SELECT pg_database_size(current_database())")
                    .fetch_one(p)
                    .await
                    .unwrap() as u64
            }
            Db::Sqlite(_, path) => [path.clone(), format!("{path}-wal")]
                .iter()
                .filter_map(|f| std::fs::metadata(f).ok())
                .map(|m| m.len())
                .sum(),
        }
    }

    pub async fn close(self) {
        match self {
            Db::Pg(p) => p.close().await,
            Db::Sqlite(p, _) => p.close().await,
        }
    }
}

/// CPU seconds the whole machine spent busy (all cores, every process)
/// since boot, from `/proc/stat`.
pub fn machine_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    let total: f64 = f.iter().sum();
    let idle = f.get(3).copied().unwrap_or(0.0) + f.get(4).copied().unwrap_or(0.0);
    (total - idle) / 100.0
}
