//! `parity consume` with `feed.broker` killed (`kill -9`) after committing
//! changes the broker never acknowledged, then started again: every logged
//! change reaches the broker, in NATS JetStream exactly once.
//!
//! The broker link goes through a proxy that stalls, so the first run
//! commits the whole recorded window while its relay waits for
//! acknowledgements that never come; the kill lands with every change
//! committed and none recorded as published. With NATS only the replies
//! are held: the messages did reach JetStream, and the restart's republish
//! must be dropped by message id. With Redis and RabbitMQ nothing gets
//! through, so only the restart's republish can deliver them.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy};
use futures_util::StreamExt;
use parity::feed::FeedConfig;
use parity::feed::broker::Broker;

use crate::common::jetstream::JetstreamServer;
use crate::common::process::Parity;
use crate::common::stall_proxy::{Stall, StallProxy};
use crate::common::{TestDb, last_time_us};
use crate::resume_after_crash::mapped_lines;

const WAIT: Duration = Duration::from_secs(60);

/// `scheme://[user@]host:port[/rest]` split around `host:port`.
fn split(url: &str) -> (&str, &str, &str) {
    let start = url.find("://").unwrap() + 3;
    let start = url[start..].rfind('@').map_or(start, |i| start + i + 1);
    let end = url[start..].find('/').map_or(url.len(), |i| start + i);
    (&url[..start], &url[start..end], &url[end..])
}

/// Polls `done` until it holds; on time-out, fails with `what` and the
/// process's log.
async fn wait_until(what: &str, run: &Parity, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out: {what}\n{}",
            run.lines().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn scalar(db: &TestDb, sql: &str) -> i64 {
    db.scalar(sql)
        .await
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn toml(endpoint: &str, broker: &str) -> String {
    format!(
        "[source]\nendpoints = [\"{endpoint}\"]\n[batch]\nmax_age_ms = 20\n\
         [feed]\nenabled = true\naddr = \"off\"\nbroker = \"{broker}\"\n\
         poll_interval_ms = 50\n\
         [log]\nprogress_interval_seconds = 0\n"
    )
}

/// The stream parity publishes into (created by the broker connection).
async fn nats_stream(url: &str) -> jetstream::stream::Stream {
    let cfg = FeedConfig {
        broker: url.to_owned(),
        ..FeedConfig::default()
    };
    Broker::connect(url, &cfg).await.unwrap();
    let js = jetstream::new(async_nats::connect(url).await.unwrap());
    js.get_stream("PARITY").await.unwrap()
}

/// This database's seqs among broker message bodies.
fn seqs_of(bodies: &[Vec<u8>], database_id: &str) -> Vec<i64> {
    bodies
        .iter()
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        .filter(|v| v["database_id"] == database_id)
        .map(|v| v["seq"].as_i64().unwrap())
        .collect()
}

async fn crash_between_commit_and_publish(db: TestDb, url: &str, stall: Stall) {
    let first_stored = match url.starts_with("nats://") {
        true => {
            nats_stream(url)
                .await
                .info()
                .await
                .unwrap()
                .state
                .last_sequence
                + 1
        }
        false => 0,
    };
    // Redis and RabbitMQ keep nothing for late subscribers: subscribe first.
    let cfg = FeedConfig {
        broker: url.to_owned(),
        ..FeedConfig::default()
    };
    let listener = Broker::connect(url, &cfg).await.unwrap();
    let mut live = listener.subscribe().await.unwrap();

    let (head, target, tail) = split(url);
    let proxy = StallProxy::start(target).await;
    let proxied = format!("{head}{}{tail}", proxy.addr);
    let lines = mapped_lines();
    let last = last_time_us(&lines);
    let server = JetstreamServer::start(lines).await;
    let (mut first, _cfg) = Parity::consume(&toml(&server.url(), &proxied), &db.url);
    first
        .wait_log("Relaying the change log to the broker.")
        .await;
    proxy.stall(stall);
    server.wait_connections(1).await;
    server.publish_all();
    wait_until("the first run commits the window", &first, async || {
        db.cursor().await == Some(last)
    })
    .await;
    let logged = scalar(&db, "SELECT CAST(MAX(seq) AS TEXT) FROM parity_changes").await;
    assert!(logged > 20, "the window logs changes: {logged}");
    if stall == Stall::Replies {
        wait_until("the messages reach the broker", &first, async || {
            proxy
                .sent_while_stalled
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
        })
        .await;
    }
    first.kill9();
    let published = scalar(
        &db,
        "SELECT CAST(published_seq AS TEXT) FROM parity_feed_state",
    )
    .await;
    assert_eq!(published, 0, "killed before any acknowledgement arrived");

    proxy.release();
    let (second, _cfg2) = Parity::consume(&toml(&server.url(), &proxied), &db.url);
    wait_until("the restart publishes the log", &second, async || {
        scalar(
            &db,
            "SELECT CAST(published_seq AS TEXT) FROM parity_feed_state",
        )
        .await
            == logged
    })
    .await;
    second.stop();
    let database_id = db
        .scalar("SELECT database_id FROM parity_feed_state")
        .await
        .unwrap();
    let want: Vec<i64> = (1..=logged).collect();

    // Every change reached the broker's live subscribers.
    let mut bodies = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got: BTreeSet<i64> = seqs_of(&bodies, &database_id).into_iter().collect();
        if got.len() as i64 == logged {
            assert_eq!(got.into_iter().collect::<Vec<_>>(), want);
            break;
        }
        let next = tokio::time::timeout_at(deadline, live.next())
            .await
            .unwrap_or_else(|_| panic!("broker delivered {} of {logged}", got.len()));
        bodies.push(next.expect("subscription open"));
    }

    if url.starts_with("nats://") {
        // The stream holds each change once, in seq order, though every one
        // of them was sent twice.
        let mut stream = nats_stream(url).await;
        let end = stream.info().await.unwrap().state.last_sequence;
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: first_stored,
                },
                filter_subject: "parity.>".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut messages = consumer.messages().await.unwrap();
        let mut stored = Vec::new();
        loop {
            let m = tokio::time::timeout(WAIT, messages.next())
                .await
                .expect("stream message in time")
                .unwrap()
                .unwrap();
            stored.push(m.payload.to_vec());
            if m.info().unwrap().stream_sequence >= end {
                break;
            }
        }
        assert_eq!(seqs_of(&stored, &database_id), want);
    }
}

backend_tests!(nats_gets_each_change_once_after_kill9, |db| {
    crash_between_commit_and_publish(db, "nats://127.0.0.1:4222", Stall::Replies)
});
backend_tests!(redis_gets_every_change_after_kill9, |db| {
    crash_between_commit_and_publish(db, "redis://127.0.0.1:6379", Stall::Both)
});
backend_tests!(rabbitmq_gets_every_change_after_kill9, |db| {
    crash_between_commit_and_publish(db, "amqp://guest:guest@127.0.0.1:5672/%2f", Stall::Both)
});
