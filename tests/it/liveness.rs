//! Liveness: a silent stream is detected by the watchdog and reconnected
//! from the last event received; a dead endpoint fails over to the next.

use crate::common;

use std::sync::atomic::Ordering::Relaxed;

use common::jetstream::{JetstreamServer, Line};
use common::{TestDb, config, fixture_lines, last_time_us, start};
use parity::cmd::consume::{ConsumeOptions, Consumer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_stream_reconnects_and_resumes() {
    let db = TestDb::sqlite();
    let server = JetstreamServer::start(
        fixture_lines(common::RELAY_JSONL)
            .iter()
            .map(|l| Line::new(l))
            .collect(),
    )
    .await;
    let mut cfg = config(&db, &server.url());
    cfg.source.idle_timeout_seconds = 1;
    cfg.source.rewind_seconds = 0;
    let run = start(Consumer::new(cfg), ConsumeOptions::default());
    server.wait_connections(1).await;
    server.publish(20);
    let c20 = server.lines()[19].cursor.unwrap();
    run.wait_cursor(c20).await;

    server.set_silent(true);
    run.wait_for("a watchdog reconnect", |s| s.reconnects.load(Relaxed) >= 1)
        .await;
    server.wait_connections(2).await;
    server.set_silent(false);
    server.publish_all();
    run.wait_cursor(last_time_us(&server.lines())).await;
    run.stop().await.unwrap();
    let second = server.requests.lock().unwrap()[1].clone();
    assert!(second.contains(&format!("cursor={c20}")), "{second}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_endpoint_fails_over_to_the_next() {
    let db = TestDb::sqlite();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let server = JetstreamServer::start(
        fixture_lines(common::GOLDEN_JSONL)
            .iter()
            .map(|l| Line::new(l))
            .collect(),
    )
    .await;
    let run = start(
        Consumer::new(config(&db, "ws://unused/subscribe")),
        ConsumeOptions {
            endpoints: vec![format!("ws://{dead}/subscribe"), server.url()],
            ..Default::default()
        },
    );
    server.wait_connections(1).await;
    server.publish_all();
    run.wait_cursor(last_time_us(&server.lines())).await;
    assert!(run.stats.reconnects.load(Relaxed) >= 1);
    run.stop().await.unwrap();
    assert_eq!(db.count("posts").await, 1);
}
