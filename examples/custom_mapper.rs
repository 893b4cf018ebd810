//! Using parity as a library with a mapper of your own.
//!
//! Stores every Statusphere status (`xyz.statusphere.status`) in a table
//! `statuses (…standard columns…, status TEXT, created_at TIMESTAMPTZ)`,
//! alongside the built-in tables. Run it with
//! `cargo run --example custom_mapper -- sqlite://statuses.db`.

use std::sync::Arc;

use parity::cmd::consume::{ConsumeOptions, Consumer};
use parity::config::Config;
use parity::event::CollectionPattern;
use parity::mapper::{ColumnType, MapError, Mapper, RecordRef, TableSchema, Value};
use serde::Deserialize;

/// The mapper: a table layout plus `map`, which returns the values of the
/// table's own columns. parity fills uri, did, rkey, cid, rev, record and
/// synced_at, applies deletes, and keeps the newest rev of each record.
struct StatusMapper {
    table: TableSchema,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status<'a> {
    status: &'a str,
    created_at: Option<&'a str>,
}

impl Mapper for StatusMapper {
    fn table(&self) -> &TableSchema {
        &self.table
    }

    fn map(&self, record: &RecordRef<'_>) -> Result<Vec<Value>, MapError> {
        let s: Status<'_> =
            serde_json::from_str(record.json).map_err(|e| MapError::Json(e.to_string()))?;
        Ok(vec![
            Value::text(s.status),
            s.created_at.map_or(Value::Null, Value::timestamp),
        ])
    }
}

#[tokio::main]
async fn main() -> Result<(), parity::Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    parity::obs::init_logging("info", false);
    let mut config = Config::load(None, std::env::vars())?;
    if let Some(url) = std::env::args().nth(1) {
        config.database.url = url;
    }
    let mut consumer = Consumer::new(config);
    consumer.register(
        CollectionPattern::parse("xyz.statusphere.status").expect("valid NSID"),
        Arc::new(StatusMapper {
            table: TableSchema::new(
                "statuses",
                &[
                    ("status", ColumnType::Text),
                    ("created_at", ColumnType::Timestamp),
                ],
            ),
        }),
    );
    // Stops on SIGINT/SIGTERM after committing what it has.
    consumer
        .run(ConsumeOptions::default(), parity::shutdown::on_signals())
        .await
}
