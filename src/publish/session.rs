//! The session a worker publishes with: read and opened from
//! `parity_sessions`, refreshed once on `ExpiredToken` with a refresh that
//! is single-flight across processes (refresh tokens are single-use), and
//! marked expired when the PDS refuses the refresh, so the DID's rows wait
//! in `pending_auth` until `parity auth login`.

use std::time::Duration;

use chrono::Utc;

use super::xrpc::{CallError, Client, Tokens};
use crate::auth::{SealError, Sealer};
use crate::store::{Store, StoreError};

/// How long one refresh may hold a DID's refresh lock: twice the default
/// call timeout (`publish.timeout_seconds`), so a slow refreshSession still
/// holds it when it answers.
const REFRESH_LOCK: Duration = Duration::from_secs(60);
/// How often a process waiting for another's refresh looks again.
const REFRESH_WAIT_STEP: Duration = Duration::from_millis(200);

/// An usable session.
#[derive(Debug, Clone)]
pub struct Live {
    pub pds: String,
    /// The access token in clear (memory only).
    pub access: String,
}

/// Why no session could be produced.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The PDS could not be asked (5xx, timeout, rate limit): retry later.
    #[error(transparent)]
    Call(CallError),
}

/// Sessions of one process.
#[derive(Clone)]
pub struct Sessions {
    store: Store,
    sealer: Sealer,
    client: Client,
    owner: String,
}

impl Sessions {
    pub fn new(store: Store, sealer: Sealer, client: Client, owner: String) -> Sessions {
        Sessions {
            store,
            sealer,
            client,
            owner,
        }
    }

    /// The active session of `did`, or `None` (none stored, or expired).
    pub async fn get(&self, did: &str) -> Result<Option<Live>, SessionError> {
        let Some(row) = self.store.session(did).await? else {
            return Ok(None);
        };
        if row.state != "active" {
            return Ok(None);
        }
        Ok(Some(Live {
            access: self.sealer.open(did, "access_token", &row.access_token)?,
            pds: row.pds,
        }))
    }

    /// A fresh session after `stale` was refused as expired: another
    /// process's refresh if one happened meanwhile, else ours. `None` when
    /// the PDS refused the refresh (the session is now expired).
    ///
    /// Cross-process: the lock is taken before the tokens are read, so the
    /// refresh token sent is the one stored after the previous holder
    /// released the lock (it releases in the statement that stores its
    /// tokens); a refresh token another process already spent is never sent
    /// again. Each call holds the lock under its own name, so two tasks of
    /// one process exclude each other as two processes do.
    pub async fn refresh(&self, did: &str, stale: &str) -> Result<Option<Live>, SessionError> {
        let holder = format!("{}#{:016x}", self.owner, rand::random::<u64>());
        loop {
            let until = Utc::now() + chrono::Duration::from_std(REFRESH_LOCK).unwrap_or_default();
            let locked = self.store.lock_session_refresh(did, &holder, until).await?;
            let Some(row) = self.store.session(did).await? else {
                return Ok(None);
            };
            if row.state != "active" {
                return Ok(None);
            }
            let access = self.sealer.open(did, "access_token", &row.access_token)?;
            if access != stale {
                if locked {
                    self.store.unlock_session_refresh(did, &holder).await?;
                }
                return Ok(Some(Live {
                    access,
                    pds: row.pds,
                }));
            }
            if !locked {
                tokio::time::sleep(REFRESH_WAIT_STEP).await;
                continue;
            }
            let refresh = self.sealer.open(did, "refresh_token", &row.refresh_token)?;
            let answer = self
                .client
                .post_empty(&row.pds, "com.atproto.server.refreshSession", &refresh)
                .await;
            match answer.and_then(|v| Tokens::from_answer(&v)) {
                Ok(t) => {
                    let a = self.sealer.seal(did, "access_token", &t.access);
                    let r = self.sealer.seal(did, "refresh_token", &t.refresh);
                    if self
                        .store
                        .store_refreshed_session(did, &row.refresh_token, &a, &r)
                        .await?
                    {
                        tracing::info!(did, "Refreshed the publish session.");
                    } else {
                        tracing::warn!(
                            did,
                            "The publish session was replaced while refreshing it; using the refreshed tokens for this call only."
                        );
                    }
                    return Ok(Some(Live {
                        access: t.access,
                        pds: row.pds,
                    }));
                }
                Err(
                    e @ (CallError::Transient(_)
                    | CallError::Unreachable(_)
                    | CallError::RateLimited { .. }),
                ) => {
                    self.store.unlock_session_refresh(did, &holder).await?;
                    return Err(SessionError::Call(e));
                }
                Err(e) => {
                    let reason = format!("refreshSession refused: {e}");
                    if self
                        .store
                        .expire_session(did, &row.refresh_token, &reason)
                        .await?
                    {
                        tracing::warn!(did, reason = %reason, "Publish session expired: run parity auth login for this DID.");
                        return Ok(None);
                    }
                    // Refused because the token was spent by a refresh
                    // that stored its tokens meanwhile: use those.
                    self.store.unlock_session_refresh(did, &holder).await?;
                }
            }
        }
    }
}
