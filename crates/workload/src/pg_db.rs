//! A fresh PostgreSQL database for one benchmark run, on the server of
//! `TEST_PG_URL` (the test suite's by default).

/// Drops `name` if it exists (closing its connections) and creates it
/// again; returns its URL.
pub async fn fresh(name: &str) -> String {
    let base = std::env::var("TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://parity_test:parity_test@127.0.0.1:5432/parity_test".into());
    let admin = sqlx::PgPool::connect(&base)
        .await
        .expect("PostgreSQL reachable at TEST_PG_URL");
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&admin)
            .await
            .unwrap();
    }
    admin.close().await;
    format!("{}/{name}", base.rsplit_once('/').unwrap().0)
}
