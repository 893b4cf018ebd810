//! `parity_sessions`: one publish session per DID.
//!
//! Owns: the SQL of sessions (save on login, read, list, delete, mark
//! expired, swap tokens after a refresh) and the cross-process refresh
//! lock. Does not own: what the token columns contain. They are sealed by
//! `auth::Sealer` before they get here and opened after; this module only
//! moves ciphertext, so a token in clear never reaches SQL.
//!
//! Refresh single-flight: refresh tokens are single-use, so two processes
//! refreshing the same session would make one of them fail and expire a
//! good session. [`Store::lock_session_refresh`] takes a short lease on the
//! row (`refresh_owner`, `refresh_until`) with a conditional UPDATE; the
//! loser waits and re-reads the tokens the winner stored. Storing new
//! tokens and expiring a refused session are both compare-and-swaps on the
//! refresh token that was spent, so even a refresh that outlived its lock
//! never overwrites or expires a session another process refreshed.

use chrono::{DateTime, Utc};

use super::{Store, StoreError};
use crate::mapper::table::timestamp_text;

/// One row of `parity_sessions` (tokens still sealed). Timestamps are RFC
/// 3339 text.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionRow {
    pub did: String,
    pub handle: Option<String>,
    pub pds: String,
    pub auth_kind: String,
    pub access_token: String,
    pub refresh_token: String,
    /// `active` or `expired`.
    pub state: String,
    pub error: Option<String>,
    pub refreshed_at: Option<String>,
    pub updated_at: String,
}

fn columns(store: &Store) -> &'static str {
    match store.dialect() {
        super::dialect::Dialect::Sqlite => {
            "did, handle, pds, auth_kind, access_token, refresh_token, state, error, refreshed_at, updated_at"
        }
        super::dialect::Dialect::Postgres => {
            "did, handle, pds, auth_kind, access_token, refresh_token, state, error, \
             to_char(refreshed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS refreshed_at, \
             to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS updated_at"
        }
    }
}

fn now_text() -> String {
    timestamp_text(&Utc::now())
}

impl Store {
    /// Stores a new session for `did` (replacing any), `active`.
    pub async fn save_session(
        &self,
        did: &str,
        handle: Option<&str>,
        pds: &str,
        sealed_access: &str,
        sealed_refresh: &str,
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO parity_sessions (did, handle, pds, auth_kind, access_token, refresh_token, state, \
             error, refreshed_at, created_at, updated_at) \
             VALUES ($1, $2, $3, 'app_password', $4, $5, 'active', NULL, $6::timestamptz, $6::timestamptz, $6::timestamptz) \
             ON CONFLICT (did) DO UPDATE SET handle = excluded.handle, pds = excluded.pds, \
             auth_kind = excluded.auth_kind, access_token = excluded.access_token, \
             refresh_token = excluded.refresh_token, state = 'active', error = NULL, \
             refresh_owner = NULL, refresh_until = NULL, refreshed_at = excluded.refreshed_at, \
             updated_at = excluded.updated_at",
            vec![
                did.into(),
                handle.into(),
                pds.into(),
                sealed_access.into(),
                sealed_refresh.into(),
                now_text().into(),
            ],
        )
        .await?;
        Ok(())
    }

    /// The session of `did`, if any.
    pub async fn session(&self, did: &str) -> Result<Option<SessionRow>, StoreError> {
        let sql = format!(
            "SELECT {} FROM parity_sessions WHERE did = $1",
            columns(self)
        );
        self.fetch_optional(&sql, vec![did.into()]).await
    }

    /// Every session, by DID.
    pub async fn sessions(&self) -> Result<Vec<SessionRow>, StoreError> {
        let sql = format!("SELECT {} FROM parity_sessions ORDER BY did", columns(self));
        self.fetch_all(&sql, vec![]).await
    }

    /// Forgets the session of `did`; `false` if there was none.
    pub async fn delete_session(&self, did: &str) -> Result<bool, StoreError> {
        Ok(self
            .execute(
                "DELETE FROM parity_sessions WHERE did = $1",
                vec![did.into()],
            )
            .await?
            > 0)
    }

    /// Marks the session expired (the PDS refused its refresh) with a
    /// bounded reason, unless its refresh token is no longer
    /// `sealed_refresh`, the one the PDS refused: then another process
    /// refreshed (or someone logged in) meanwhile and the stored session is
    /// good. `false` when it was not marked.
    pub async fn expire_session(
        &self,
        did: &str,
        sealed_refresh: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        Ok(self
            .execute(
                "UPDATE parity_sessions SET state = 'expired', error = $3, refresh_owner = NULL, \
                 refresh_until = NULL, updated_at = $4::timestamptz WHERE did = $1 AND refresh_token = $2",
                vec![
                    did.into(),
                    sealed_refresh.into(),
                    reason.into(),
                    now_text().into(),
                ],
            )
            .await?
            > 0)
    }

    /// Takes the refresh lock of `did`'s active session for `holder` until
    /// `until`; `false` when another holder has a live one (or there is no
    /// active session).
    pub async fn lock_session_refresh(
        &self,
        did: &str,
        holder: &str,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let now = now_text();
        Ok(self
            .execute(
                "UPDATE parity_sessions SET refresh_owner = $2, refresh_until = $3::timestamptz \
                 WHERE did = $1 AND state = 'active' \
                 AND (refresh_owner IS NULL OR refresh_owner = $2 OR refresh_until < $4::timestamptz)",
                vec![
                    did.into(),
                    holder.into(),
                    timestamp_text(&until).into(),
                    now.into(),
                ],
            )
            .await?
            > 0)
    }

    /// Releases the refresh lock if `holder` still has it.
    pub async fn unlock_session_refresh(&self, did: &str, holder: &str) -> Result<(), StoreError> {
        self.execute(
            "UPDATE parity_sessions SET refresh_owner = NULL, refresh_until = NULL \
             WHERE did = $1 AND refresh_owner = $2",
            vec![did.into(), holder.into()],
        )
        .await?;
        Ok(())
    }

    /// Stores the tokens a refresh returned, in place of the refresh token
    /// it spent (`spent`, sealed as stored), and releases the refresh lock.
    /// A compare-and-swap on the spent token: only one refresh with a
    /// single-use token can succeed, so its tokens are stored even if the
    /// lock expired meanwhile; `false` if the session was replaced (a new
    /// login) or removed.
    pub async fn store_refreshed_session(
        &self,
        did: &str,
        spent: &str,
        sealed_access: &str,
        sealed_refresh: &str,
    ) -> Result<bool, StoreError> {
        Ok(self
            .execute(
                "UPDATE parity_sessions SET access_token = $3, refresh_token = $4, \
                 refresh_owner = NULL, refresh_until = NULL, refreshed_at = $5::timestamptz, \
                 updated_at = $5::timestamptz WHERE did = $1 AND refresh_token = $2",
                vec![
                    did.into(),
                    spent.into(),
                    sealed_access.into(),
                    sealed_refresh.into(),
                    now_text().into(),
                ],
            )
            .await?
            > 0)
    }
}
