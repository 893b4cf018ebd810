//! The re-import queue `import.auto_resync` works through: repos the stream
//! flagged (`parity_repos.resync_requested_at`: a `#sync`, a broken
//! `since` chain, a commit that failed verification) whose re-import is
//! still pending in `parity_import_states`.
//!
//! Owns: that one query. Does not own flagging (the commit's resync step)
//! or clearing the flag (a completed discovery, see `imports`).

use super::{Store, StoreError};

impl Store {
    /// Up to `limit` flagged DIDs with a pending import state, the longest
    /// waiting first. A DID whose re-import failed has no pending state
    /// left and is not returned again until the stream flags it anew.
    pub async fn queued_resyncs(&self, limit: i64) -> Result<Vec<String>, StoreError> {
        let sql = "SELECT r.did FROM parity_repos r \
                   WHERE r.resync_requested_at IS NOT NULL AND EXISTS (\
                   SELECT 1 FROM parity_import_states s WHERE s.did = r.did AND s.status = 'pending') \
                   ORDER BY r.resync_requested_at, r.did LIMIT $1";
        let rows: Vec<(String,)> = self.fetch_all(sql, vec![limit.into()]).await?;
        Ok(rows.into_iter().map(|(d,)| d).collect())
    }
}
