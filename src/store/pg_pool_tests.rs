//! What a pooled connection costs before it is handed out: nothing when
//! it was just used, a ping when it sat idle (so one the server dropped
//! meanwhile is replaced, not handed out).

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool};

use super::{needs_ping, options};
use crate::store::StoreError;

#[test]
fn only_connections_idle_past_the_limit_are_pinged() {
    let limit = Duration::from_secs(1);
    assert!(!needs_ping(Duration::from_millis(3), limit));
    assert!(!needs_ping(Duration::from_millis(999), limit));
    assert!(needs_ping(limit, limit));
    assert!(needs_ping(Duration::from_secs(60), limit));
}

fn url() -> String {
    std::env::var("TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://parity_test:parity_test@127.0.0.1:5432/parity_test".into())
}

/// A one-connection pool built with parity's options, pinging connections
/// idle for `idle_test` or more; the server's pid of its connection.
async fn pool(idle_test: Duration) -> (PgPool, i32) {
    let opts = PgConnectOptions::from_str(&url()).unwrap();
    let pool = options(&opts, idle_test)
        .max_connections(1)
        .connect_with(opts)
        .await
        .unwrap();
    let pid = backend_pid(&pool).await.unwrap();
    (pool, pid)
}

async fn backend_pid(pool: &PgPool) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(pool)
        .await
}

/// Ends the server side of connection `pid` and waits until it is gone.
async fn terminate(pid: i32) {
    let admin = PgPool::connect(&url()).await.unwrap();
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 10000)")
        .bind(pid)
        .fetch_one(&admin)
        .await
        .unwrap();
    assert!(ended);
    admin.close().await;
}

/// A connection used a moment ago is handed out as it is, without a round
/// trip to the server: one the server has just dropped fails its next
/// statement (with sqlx's default ping on every hand-out it would be
/// replaced, and the statement would succeed). The error is one the
/// commit paths retry.
#[tokio::test]
async fn a_connection_just_used_is_handed_out_without_a_ping() {
    let (pool, pid) = pool(Duration::from_secs(3_600)).await;
    terminate(pid).await;
    let err = backend_pid(&pool).await.unwrap_err();
    // An error the commit paths retry.
    assert!(StoreError::Sql(err).is_transient());
    // The broken connection was closed; the next statement opens another.
    assert_ne!(backend_pid(&pool).await.unwrap(), pid);
    pool.close().await;
}

/// A connection idle past the limit is pinged first: one the server
/// dropped meanwhile is replaced, and the statement runs on a new one.
#[tokio::test]
async fn a_connection_idle_past_the_limit_is_pinged_and_replaced_if_dead() {
    let (pool, pid) = pool(Duration::ZERO).await;
    terminate(pid).await;
    let now = backend_pid(&pool).await.unwrap();
    assert_ne!(now, pid);
    pool.close().await;
}
