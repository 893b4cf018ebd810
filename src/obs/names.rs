//! Every metric parity exports: its name, type and help text.
//!
//! Owns: the names (`parity_<subsystem>_<name>_<unit>`, counters ending in
//! `_total`) as constants, and [`ALL`], the list the recorder describes and
//! the README documents. Every caller names a metric through these
//! constants, never a string literal. Does not own when to count (the
//! callers, through [`super::Obs`] or, in the importer, `metrics::counter!`
//! with a constant from here) nor the recorder ([`super::recorder`]).
//!
//! Labels are bounded: reasons and kinds are fixed sets, tables come from
//! the config, endpoints are configured hosts. Never a DID, URI or error
//! text.

/// Events decoded from the stream, by `kind` (commit, identity, account, other).
pub const EVENTS_RECEIVED: &str = "parity_events_received_total";
/// Events the filter (or the lack of a mapper) kept out of the database.
pub const EVENTS_FILTERED: &str = "parity_events_filtered_total";
/// Events or messages dropped, by `reason` and `intentional`.
pub const EVENTS_DROPPED: &str = "parity_events_dropped_total";
/// Rows written, by `table` and `op` (upsert, delete).
pub const RECORDS_WRITTEN: &str = "parity_records_written_total";
/// Events per committed batch.
pub const BATCH_SIZE: &str = "parity_batch_size";
/// Duration of one successful batch commit.
pub const BATCH_COMMIT_SECONDS: &str = "parity_batch_commit_seconds";
/// Failed database operations, by `kind` (transient, fatal).
pub const DB_ERRORS: &str = "parity_db_errors_total";
/// The last committed cursor.
pub const CURSOR: &str = "parity_cursor";
/// Now minus the event time of the last committed event.
pub const LAG_SECONDS: &str = "parity_lag_seconds";
/// Stream connections lost, by `reason`.
pub const SOURCE_RECONNECTS: &str = "parity_source_reconnects_total";
/// 1 while connected to `endpoint`, else 0.
pub const SOURCE_CONNECTED: &str = "parity_source_connected";
/// Cursors a server could not serve, by `reason`.
pub const SOURCE_CURSOR_REJECTED: &str = "parity_source_cursor_rejected_total";
/// Connections to a per-host-`seq` stream started live for want of a
/// cursor of that host while another host had one, by `format`.
pub const SOURCE_STARTS_WITHOUT_CURSOR: &str = "parity_source_starts_without_cursor_total";
/// Import: records by `outcome` (synced, skipped, failed).
pub const IMPORT_RECORDS: &str = "parity_import_records_total";
/// Import: HTTP requests by `status` (code or class).
pub const IMPORT_REQUESTS: &str = "parity_import_requests_total";
/// Import: DIDs by `status` (pending, in_progress, completed, failed).
pub const IMPORT_DIDS: &str = "parity_import_dids";
/// Import: repos written whole in a group transaction (PostgreSQL).
pub const IMPORT_FRESH_REPOS: &str = "parity_import_fresh_repos_total";
/// Import: requests answered 429 or held back by a rate limit.
pub const IMPORT_RATE_LIMITED: &str = "parity_import_rate_limited_total";
/// `import --all`: repos listed by the relay, by `result`.
pub const IMPORT_RELAY_REPOS: &str = "parity_import_relay_repos_total";
/// `import.auto_resync`: flagged repos re-imported inside `parity
/// consume`, by `outcome` (completed, failed, gone, interrupted).
pub const AUTO_RESYNC_DIDS: &str = "parity_auto_resync_dids_total";
/// Publish: outbox rows by `op` and `outcome`.
pub const PUBLISH_WRITES: &str = "parity_publish_writes_total";
/// Publish: outbox rows by `status`.
pub const PUBLISH_OUTBOX: &str = "parity_publish_outbox";
/// Publish: seconds from enqueue to published.
pub const PUBLISH_LATENCY: &str = "parity_publish_latency_seconds";
/// Publish: calls refused for authentication.
pub const PUBLISH_AUTH_FAILURES: &str = "parity_publish_auth_failures_total";
/// Publish: calls answered 429.
pub const PUBLISH_RATE_LIMITED: &str = "parity_publish_rate_limited_total";
/// Feed: changes appended to the change log, by `table` and `op` (counted
/// by the store after each commit; the name is defined there).
pub const FEED_CHANGES: &str = crate::store::FEED_CHANGES_METRIC;
/// Feed: clients connected, by `transport` (websocket, sse, poll).
pub const FEED_CLIENTS: &str = "parity_feed_clients";
/// Feed: change messages sent to clients, by `transport`.
pub const FEED_MESSAGES_SENT: &str = "parity_feed_messages_sent_total";
/// Feed: clients disconnected by the server, by `reason`.
pub const FEED_CLIENTS_DROPPED: &str = "parity_feed_clients_dropped_total";
/// Feed: the newest seq handed to the broker.
pub const FEED_BROKER_PUBLISHED_SEQ: &str = "parity_feed_broker_published_seq";
/// Feed: broker failures, by `broker` (nats, redis, rabbitmq).
pub const FEED_BROKER_ERRORS: &str = "parity_feed_broker_errors_total";
/// Feed: seconds from a change's commit to a client receiving it.
pub const FEED_LAG_SECONDS: &str = "parity_feed_lag_seconds";
/// Always 1, labelled with the `version`.
pub const BUILD_INFO: &str = "parity_build_info";

/// Every metric with its type and help text, for `describe_*` and the
/// README (the unit follows from the name).
pub const ALL: &[(&str, Kind, &str)] = &[
    (
        PUBLISH_WRITES,
        Kind::Counter,
        "Outbox rows finished by the publish worker, by op (create, update, delete) and outcome (published, unpublished, pending_auth, conflict, failed).",
    ),
    (
        PUBLISH_OUTBOX,
        Kind::Gauge,
        "Outbox rows by status (pending, in_flight, published, pending_auth, conflict, failed).",
    ),
    (
        PUBLISH_LATENCY,
        Kind::Histogram,
        "Seconds from a row's enqueue (created_at) to its publication.",
    ),
    (
        PUBLISH_AUTH_FAILURES,
        Kind::Counter,
        "Publish calls refused for authentication after one refresh (the DID's rows wait in pending_auth).",
    ),
    (
        PUBLISH_RATE_LIMITED,
        Kind::Counter,
        "Publish calls answered 429 by a PDS (the DID pauses for Retry-After / ratelimit-reset).",
    ),
    (
        FEED_CHANGES,
        Kind::Counter,
        "Row changes appended to parity_changes (the change feed), by table and op (upsert, delete).",
    ),
    (
        FEED_CLIENTS,
        Kind::Gauge,
        "Change feed clients connected, by transport (websocket, sse, poll).",
    ),
    (
        FEED_MESSAGES_SENT,
        Kind::Counter,
        "Change messages sent to feed clients, by transport.",
    ),
    (
        FEED_CLIENTS_DROPPED,
        Kind::Counter,
        "Feed clients disconnected by parity, by reason (slow: fell behind feed.client_buffer; limit: too many connections).",
    ),
    (
        FEED_BROKER_PUBLISHED_SEQ,
        Kind::Gauge,
        "The newest change seq handed to the feed broker.",
    ),
    (
        FEED_BROKER_ERRORS,
        Kind::Counter,
        "Feed broker failures (publish or subscribe), by broker (nats, redis, rabbitmq).",
    ),
    (
        FEED_LAG_SECONDS,
        Kind::Histogram,
        "Seconds from a change's commit to its message being sent to a feed client.",
    ),
    (
        EVENTS_RECEIVED,
        Kind::Counter,
        "Events decoded from the stream, by kind (commit, identity, account, other).",
    ),
    (
        EVENTS_FILTERED,
        Kind::Counter,
        "Events kept out of the database by the filter or because no mapper handles their collection; they still move the cursor.",
    ),
    (
        EVENTS_DROPPED,
        Kind::Counter,
        "Events or messages dropped, by reason (malformed, oversized, unknown_type, mapper_failure, stale_rev, account_gone, db_rejected, bad_signature, bad_mst, unverifiable); intentional=true for the convergence rules, false for bad input.",
    ),
    (
        RECORDS_WRITTEN,
        Kind::Counter,
        "Rows written by committed batches, by table and op (upsert, delete).",
    ),
    (
        BATCH_SIZE,
        Kind::Histogram,
        "Events per committed batch, filtered ones included.",
    ),
    (
        BATCH_COMMIT_SECONDS,
        Kind::Histogram,
        "Seconds one successful batch commit (rows and cursor in one transaction) took; batches SQLite committed together in one transaction each count their share of it.",
    ),
    (
        DB_ERRORS,
        Kind::Counter,
        "Failed database operations, by kind (transient: retried; rejected: the database refused some records, which are left out and the rest committed; fatal: parity stops).",
    ),
    (
        CURSOR,
        Kind::Gauge,
        "The cursor of the last committed event (time_us for Jetstream v1, seq otherwise).",
    ),
    (
        LAG_SECONDS,
        Kind::Gauge,
        "Seconds between now and the event time of the last committed event.",
    ),
    (
        SOURCE_RECONNECTS,
        Kind::Counter,
        "Stream connections lost or failed, by reason (idle_timeout, closed, error, connect_failed, connect_timeout, upstream_error, ...).",
    ),
    (
        SOURCE_CONNECTED,
        Kind::Gauge,
        "1 while connected to the endpoint (configured host), 0 otherwise.",
    ),
    (
        SOURCE_CURSOR_REJECTED,
        Kind::Counter,
        "Cursors a server could not serve, by reason: future_cursor (past its newest event; parity goes on live) or outdated_cursor (older than it keeps; it replays from its oldest event). Events in between may be missing.",
    ),
    (
        SOURCE_STARTS_WITHOUT_CURSOR,
        Kind::Counter,
        "Connections to a host of a per-host seq format (jetstream-v2, firehose) started live because that host has no cursor of its own while another host had one (a failover to a host not consumed before); events in between may be missing. By format.",
    ),
    (
        IMPORT_RECORDS,
        Kind::Counter,
        "Records handled by parity import, by outcome (synced, skipped, failed).",
    ),
    (
        IMPORT_REQUESTS,
        Kind::Counter,
        "HTTP requests made by parity import, by status (HTTP status code or class, or error).",
    ),
    (
        IMPORT_DIDS,
        Kind::Gauge,
        "Repos (DIDs) known to parity import, by status (pending, in_progress, completed, failed).",
    ),
    (
        IMPORT_FRESH_REPOS,
        Kind::Counter,
        "Repos parity import wrote whole in one transaction with others (PostgreSQL: verified getRepo snapshots of repos the database held nothing of, each collection one page, rows by COPY); the other repos are written collection by collection.",
    ),
    (
        IMPORT_RATE_LIMITED,
        Kind::Counter,
        "parity import requests answered 429 or delayed by a rate limit.",
    ),
    (
        IMPORT_RELAY_REPOS,
        Kind::Counter,
        "Repos listed by the relay for parity import --all, by result: queued, already_queued, inactive (active: false; skipped) or malformed (no valid DID, bad fields, past the page size; skipped).",
    ),
    (
        AUTO_RESYNC_DIDS,
        Kind::Counter,
        "Repos the stream flagged for a re-import (#sync, broken rev chain, failed verification) re-imported by parity consume with import.auto_resync, by outcome (completed, failed, gone, interrupted).",
    ),
    (
        BUILD_INFO,
        Kind::Gauge,
        "Always 1; the version label says which parity is running.",
    ),
];

/// Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_convention() {
        let mut seen = std::collections::HashSet::new();
        for &(name, kind, help) in ALL {
            assert!(seen.insert(name), "{name} twice");
            assert!(name.starts_with("parity_"), "{name}");
            assert_eq!(kind == Kind::Counter, name.ends_with("_total"), "{name}");
            assert!(help.ends_with('.') && help.len() > 20, "{name}: {help}");
        }
    }

    #[test]
    fn readme_and_alerts_use_these_names() {
        let readme = include_str!("../../README.md");
        for &(name, _, help) in ALL {
            assert!(
                readme.contains(&format!("| `{name}` |")),
                "{name} not in the README"
            );
            assert!(
                readme.contains(help),
                "help of {name} differs in the README"
            );
        }
        let alerts = include_str!("../../deploy/prometheus/alerts.yml");
        let names = alerts
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("parity_"));
        for n in names {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .unwrap_or(n);
            assert!(
                ALL.iter().any(|(m, ..)| *m == base),
                "alerts.yml uses unknown {n}"
            );
        }
    }
}
