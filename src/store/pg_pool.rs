//! The options every PostgreSQL pool of parity is built with: what happens
//! when a connection is opened and when an idle one is handed out.
//!
//! - Opened: `TCP_NODELAY` on its socket (see `tcp_nodelay`).
//! - Handed out: sqlx pings every idle connection before returning it by
//!   default (`test_before_acquire`: a `Sync` and a wait for the server's
//!   `ReadyForQuery`), one extra round trip in front of every autocommit
//!   statement and every transaction. An import ran about nine such pings
//!   per repository. Here only a connection idle for longer than
//!   [`IDLE_TEST`] is pinged: one that has just been used is alive, and
//!   one that the server or the network dropped while it sat in the pool
//!   is still found and replaced before it is handed out. (A connection
//!   that dies within [`IDLE_TEST`] of its last use fails its next
//!   statement, as a connection dropping mid-statement would: a transient
//!   error, which the commit paths retry.)

use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// Idle time past which a pooled connection is pinged before use.
pub(super) const IDLE_TEST: Duration = Duration::from_secs(1);

/// Whether a connection idle for `idle_for` is pinged before it is handed
/// out.
pub(super) fn needs_ping(idle_for: Duration, idle_test: Duration) -> bool {
    idle_for >= idle_test
}

/// Pool options for `opts`' server: `TCP_NODELAY` on each new connection,
/// and a ping only for connections idle at least `idle_test`.
pub(super) fn options(opts: &PgConnectOptions, idle_test: Duration) -> PgPoolOptions {
    let port = opts.get_port();
    PgPoolOptions::new()
        .after_connect(move |_, _| {
            Box::pin(async move {
                if let Err(e) = super::tcp_nodelay::set_on_connections_to(port) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY on the PostgreSQL connections");
                }
                Ok(())
            })
        })
        .test_before_acquire(false)
        .before_acquire(move |conn, meta| {
            Box::pin(async move {
                if needs_ping(meta.idle_for, idle_test) {
                    // An error closes the connection; the pool opens another.
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}

#[cfg(test)]
#[path = "pg_pool_tests.rs"]
mod tests;
