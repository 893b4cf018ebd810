//! The change log's read side and upkeep: pages of `parity_changes` after a
//! cursor, the retention bounds, the sweep, and the feed state row (this
//! database's id and the seq last handed to a broker).
//!
//! Owns: those statements. Does not own appending changes, which happens
//! inside each commit's transaction (`commit.rs`), nor what a change means
//! to a client (`feed/`).

use std::time::Duration;

use chrono::Utc;

use super::dialect::Dialect;
use super::{Store, StoreError};

/// A `parity_changes` row as read.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChangeRow {
    pub seq: i64,
    pub table_name: String,
    pub op: String,
    pub uri: String,
    pub did: String,
    pub collection: String,
    pub rkey: String,
    pub cid: Option<String>,
    pub rev: Option<String>,
    pub record: Option<String>,
    pub subjects: Option<String>,
    /// RFC 3339, UTC, microseconds.
    pub committed_at: String,
}

/// What a cursor may ask for: changes after `swept` are all still there;
/// `latest` is the newest seq (0 when none was ever written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeBounds {
    pub swept: i64,
    pub latest: i64,
}

const COLUMNS: &str =
    "seq, table_name, op, uri, did, collection, rkey, cid, rev, record::text AS record, subjects";

impl Store {
    /// Up to `limit` changes with `seq > after`, oldest first.
    pub async fn changes_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<ChangeRow>, StoreError> {
        let at = match self.dialect() {
            Dialect::Postgres => {
                "to_char(committed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS committed_at"
            }
            Dialect::Sqlite => "committed_at",
        };
        let sql = format!(
            "SELECT {COLUMNS}, {at} FROM parity_changes WHERE seq > $1 ORDER BY seq LIMIT $2"
        );
        self.fetch_all(&sql, vec![after.into(), limit.into()]).await
    }

    /// The retention bounds of the log.
    pub async fn change_bounds(&self) -> Result<ChangeBounds, StoreError> {
        let swept: Option<(i64,)> = self
            .fetch_optional(
                "SELECT swept_seq FROM parity_feed_state WHERE id = 1",
                vec![],
            )
            .await?;
        let latest: Option<(Option<i64>,)> = self
            .fetch_optional("SELECT MAX(seq) FROM parity_changes", vec![])
            .await?;
        let swept = swept.map(|(s,)| s).unwrap_or(0);
        let latest = latest.and_then(|(l,)| l).unwrap_or(0).max(swept);
        Ok(ChangeBounds { swept, latest })
    }

    /// The feed state row, created on first use with a random database id;
    /// returns `(database_id, published_seq)`.
    pub async fn feed_state(&self) -> Result<(String, i64), StoreError> {
        let id = format!("{:016x}", rand::random::<u64>());
        self.execute(
            "INSERT INTO parity_feed_state (id, database_id, updated_at) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO NOTHING",
            vec![id.into(), Utc::now().into()],
        )
        .await?;
        let row: Option<(String, i64)> = self
            .fetch_optional(
                "SELECT database_id, published_seq FROM parity_feed_state WHERE id = 1",
                vec![],
            )
            .await?;
        row.ok_or(StoreError::Sql(sqlx::Error::RowNotFound))
    }

    /// Records that every change up to `seq` reached the broker.
    pub async fn set_published_seq(&self, seq: i64) -> Result<(), StoreError> {
        self.execute(
            "UPDATE parity_feed_state SET published_seq = $1, updated_at = $2 \
             WHERE id = 1 AND published_seq < $1",
            vec![seq.into(), Utc::now().into()],
        )
        .await?;
        Ok(())
    }

    /// Removes the changes committed more than `age` ago (a prefix of the
    /// log: everything before the oldest change still inside retention)
    /// and records the newest seq removed; returns the rows removed.
    ///
    /// `committed_at` grows with `seq` (it is taken under the append lock),
    /// so the prefix is found on the primary key: a scan from the oldest
    /// change to the first one to keep reads only what is removed anyway,
    /// and `committed_at` needs no index for every append to keep up.
    pub async fn sweep_changes(&self, age: Duration) -> Result<u64, StoreError> {
        let cutoff = Utc::now() - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
        let newest: Option<(Option<i64>,)> = self
            .fetch_optional(
                "SELECT MAX(seq) FROM parity_changes WHERE seq < COALESCE(\
                 (SELECT seq FROM parity_changes WHERE committed_at >= $1 ORDER BY seq LIMIT 1), \
                 9223372036854775807)",
                vec![cutoff.into()],
            )
            .await?;
        let Some(newest) = newest.and_then(|(n,)| n) else {
            return Ok(0);
        };
        self.feed_state().await?;
        self.execute(
            "UPDATE parity_feed_state SET swept_seq = $1, updated_at = $2 WHERE id = 1 AND swept_seq < $1",
            vec![newest.into(), Utc::now().into()],
        )
        .await?;
        self.execute(
            "DELETE FROM parity_changes WHERE seq <= $1",
            vec![newest.into()],
        )
        .await
    }
}
