//! The change feed's serving side against a real change log: WebSocket,
//! SSE and long-poll clients over real sockets, on SQLite and PostgreSQL.
//! Changes are written into `parity_changes` as the committing process
//! writes them (rows in seq order), and the feed's tail is woken the way
//! the writer wakes it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use parity::feed::{self, FeedConfig};
use parity::store::{DatabaseConfig, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::common::TestDb;

const LIKE: &str = "app.bsky.feed.like";
const POST: &str = "app.bsky.feed.post";
const DID: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
const SUBJECT: &str = "at://did:plc:z72i7hdynmk6r22z27h6tvur/app.bsky.feed.post/3lbyl2hd5n22x";
const WAIT: Duration = Duration::from_secs(20);

pub(crate) struct Feed {
    pub(crate) addr: SocketAddr,
    wake: Arc<Notify>,
    token: CancellationToken,
    store: Store,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

pub(crate) async fn start(db: &TestDb, tweak: impl FnOnce(&mut FeedConfig)) -> Feed {
    let store = Store::connect(&DatabaseConfig {
        url: db.url.clone(),
        ..DatabaseConfig::default()
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut cfg = FeedConfig {
        enabled: true,
        poll_interval_ms: 20,
        ..FeedConfig::default()
    };
    tweak(&mut cfg);
    let wake = Arc::new(Notify::new());
    let token = CancellationToken::new();
    tokio::spawn(feed::run(
        store.clone(),
        cfg,
        listener,
        wake.clone(),
        token.clone(),
    ));
    Feed {
        addr,
        wake,
        token,
        store,
    }
}

/// Appends `n` changes to `table`'s collection, `age_hours` old, as one
/// transaction, and wakes the tail.
async fn append(db: &TestDb, feed: &Feed, collection: &str, n: usize, age_hours: i64) {
    let table = collection.replace('.', "_");
    let at = (chrono::Utc::now() - chrono::Duration::hours(age_hours))
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let mut values = Vec::new();
    for i in 0..n {
        let rkey = format!("3lc{:010}", rand::random::<u32>() as usize + i);
        let record = format!(
            r#"{{"$type":"{collection}","createdAt":"{at}","subject":{{"cid":"bafyreib","uri":"{SUBJECT}"}}}}"#
        );
        let ts = if db.is_pg() {
            format!("'{at}'::timestamptz")
        } else {
            format!("'{at}'")
        };
        values.push(format!(
            "('{table}', 'upsert', 'at://{DID}/{collection}/{rkey}', '{DID}', '{collection}', '{rkey}', 'bafyreia', '3lc2aaaaaaa22', '{record}', {ts})"
        ));
    }
    let sql = format!(
        "INSERT INTO parity_changes (table_name, op, uri, did, collection, rkey, cid, rev, record, committed_at) VALUES {}",
        values.join(", ")
    );
    db.exec(&sql).await;
    feed.wake.notify_one();
}

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) async fn ws(feed: &Feed) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/feed", feed.addr))
        .await
        .unwrap();
    ws
}

/// The next JSON text message (pings skipped).
pub(crate) async fn next_json(ws: &mut Ws) -> serde_json::Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time")
            .expect("the connection stays open")
            .unwrap();
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

pub(crate) async fn send(ws: &mut Ws, v: serde_json::Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// A plain HTTP/1.1 GET; returns the status and the body read until the
/// server closes or `until` appears in it.
async fn get(feed: &Feed, path: &str, headers: &str, until: Option<&str>) -> (u16, String) {
    let (status, _, body) = get_with_head(feed, path, headers, until).await;
    (status, body)
}

/// [`get`], also returning the response head (status line and headers).
async fn get_with_head(
    feed: &Feed,
    path: &str,
    headers: &str,
    until: Option<&str>,
) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(feed.addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = tokio::time::timeout(WAIT, s.read(&mut chunk))
            .await
            .expect("an answer in time")
            .unwrap();
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if n == 0 || until.is_some_and(|u| text.contains(u)) {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text[9..12].parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_ascii_lowercase(), body.to_owned())
}

backend_tests!(
    websocket_replays_from_a_cursor_then_goes_live_without_gap_or_duplicate,
    |db| async move {
        let feed = start(&db, |_| {}).await;
        append(&db, &feed, LIKE, 30, 0).await;
        let mut client = ws(&feed).await;
        send(
            &mut client,
            serde_json::json!({"op": "subscribe", "channels": ["all"], "cursor": 10}),
        )
        .await;
        assert_eq!(next_json(&mut client).await["op"], "subscribed");
        // More changes commit while the replay runs.
        for _ in 0..3 {
            append(&db, &feed, LIKE, 10, 0).await;
        }
        let mut seqs = Vec::new();
        while seqs.len() < 50 {
            let m = next_json(&mut client).await;
            assert_eq!(m["channel"], "all");
            assert_eq!(m["did"], DID);
            seqs.push(m["seq"].as_i64().unwrap());
        }
        assert_eq!(seqs, (11..=60).collect::<Vec<_>>());
        // And then live, one by one.
        append(&db, &feed, POST, 1, 0).await;
        let m = next_json(&mut client).await;
        assert_eq!(
            (m["seq"].as_i64(), m["collection"].as_str()),
            (Some(61), Some(POST))
        );
    }
);

backend_tests!(channels_pick_their_changes, |db| async move {
    let feed = start(&db, |_| {}).await;
    let mut client = ws(&feed).await;
    send(
        &mut client,
        serde_json::json!({"op": "subscribe", "channels": ["collection:app.bsky.feed.post", format!("subject:{SUBJECT}")]}),
    )
    .await;
    assert_eq!(next_json(&mut client).await["op"], "subscribed");
    append(&db, &feed, "app.bsky.graph.follow", 2, 0).await; // neither channel (no subject uri? it has one)
    append(&db, &feed, POST, 1, 0).await;
    let first = next_json(&mut client).await;
    // The follows carry the subject uri in this fixture, so they come
    // through the subject channel; the post through both, sent once.
    assert_eq!(first["channel"], format!("subject:{SUBJECT}"));
    let second = next_json(&mut client).await;
    assert_eq!(second["channel"], format!("subject:{SUBJECT}"));
    let third = next_json(&mut client).await;
    assert_eq!(third["collection"], POST);
    assert_eq!(third["channel"], "collection:app.bsky.feed.post");
    send(
        &mut client,
        serde_json::json!({"op": "unsubscribe", "channels": [format!("subject:{SUBJECT}")]}),
    )
    .await;
    assert_eq!(next_json(&mut client).await["op"], "unsubscribed");
    append(&db, &feed, LIKE, 1, 0).await;
    append(&db, &feed, POST, 1, 0).await;
    let m = next_json(&mut client).await;
    assert_eq!(
        (m["collection"].as_str(), m["seq"].as_i64()),
        (Some(POST), Some(5))
    );
});

backend_tests!(sse_resumes_after_last_event_id, |db| async move {
    let feed = start(&db, |_| {}).await;
    append(&db, &feed, LIKE, 5, 0).await;
    append(&db, &feed, POST, 1, 0).await;
    let (status, body) = get(
        &feed,
        "/feed/sse?channels=table:app_bsky_feed_like",
        "Last-Event-ID: 2\r\n",
        Some("id: 5"),
    )
    .await;
    assert_eq!(status, 200);
    let ids: Vec<i64> = body
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|v| v.trim().parse().unwrap())
        .collect();
    assert_eq!(ids, [3, 4, 5]);
    let data: Vec<serde_json::Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|v| serde_json::from_str(v).unwrap())
        .collect();
    assert!(
        data.iter()
            .all(|d| d["channel"] == "table:app_bsky_feed_like")
    );
});

backend_tests!(
    long_poll_answers_changes_and_the_next_cursor,
    |db| async move {
        let feed = start(&db, |_| {}).await;
        append(&db, &feed, LIKE, 3, 0).await;
        append(&db, &feed, POST, 2, 0).await;
        let (status, body) = get(
            &feed,
            "/feed/poll?channels=table:app_bsky_feed_like&cursor=0",
            "",
            None,
        )
        .await;
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let seqs: Vec<i64> = v["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["seq"].as_i64().unwrap())
            .collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(v["cursor"], 3);
        // Nothing new on the channel: an empty answer when the wait runs out,
        // and the cursor that was sent.
        let (_, body) = get(
            &feed,
            "/feed/poll?channels=table:app_bsky_feed_like&cursor=3&wait=200ms",
            "",
            None,
        )
        .await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v, serde_json::json!({"changes": [], "cursor": 3}));
        // A poll that is waiting gets the change as soon as it commits.
        let waiting = {
            let addr = feed.addr;
            let probe = Feed {
                addr,
                wake: feed.wake.clone(),
                token: CancellationToken::new(),
                store: feed.store.clone(),
            };
            tokio::spawn(async move {
                get(
                    &probe,
                    "/feed/poll?channels=table:app_bsky_feed_like&cursor=3&wait=20s",
                    "",
                    None,
                )
                .await
            })
        };
        // Whether the change commits before or after the poll first reads the
        // log, the poll returns it: it subscribes to the hub before reading.
        append(&db, &feed, LIKE, 1, 0).await;
        let (_, body) = waiting.await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["changes"][0]["seq"], 6);
        assert_eq!(v["cursor"], 6);
    }
);

backend_tests!(
    a_cursor_older_than_retention_names_the_oldest_seq,
    |db| async move {
        // The feed's own sweep keeps 30 days; the test sweeps at 24 h itself.
        let feed = start(&db, |c| c.retention = "30d".into()).await;
        append(&db, &feed, LIKE, 10, 48).await;
        append(&db, &feed, LIKE, 5, 0).await;
        assert_eq!(
            feed.store
                .sweep_changes(Duration::from_secs(86_400))
                .await
                .unwrap(),
            10
        );
        assert_eq!(db.count("parity_changes").await, 5);
        let mut client = ws(&feed).await;
        send(
            &mut client,
            serde_json::json!({"op": "subscribe", "channels": ["all"], "cursor": 3}),
        )
        .await;
        let e = next_json(&mut client).await;
        assert_eq!(e["op"], "error");
        assert_eq!(e["oldest"], 11);
        assert!(
            e["error"]
                .as_str()
                .unwrap()
                .contains("oldest available seq is 11"),
            "{e}"
        );
        // The connection stays usable: a cursor inside retention works.
        send(
            &mut client,
            serde_json::json!({"op": "subscribe", "channels": ["all"], "cursor": 10}),
        )
        .await;
        assert_eq!(next_json(&mut client).await["op"], "subscribed");
        assert_eq!(next_json(&mut client).await["seq"], 11);
        let (status, body) = get(&feed, "/feed/poll?channels=all&cursor=2", "", None).await;
        assert_eq!(status, 410);
        assert!(body.contains("\"oldest\":11"), "{body}");
    }
);

backend_tests!(
    the_sweep_removes_only_the_prefix_before_the_first_change_kept,
    |db| async move {
        // A clock stepped back between commits: seqs 1-3 and 6-8 look 48 h
        // old, 4-5 new. The sweep removes a prefix of the log, never a
        // change still inside retention, so it stops at seq 4.
        let feed = start(&db, |c| c.retention = "30d".into()).await;
        append(&db, &feed, LIKE, 3, 48).await;
        append(&db, &feed, LIKE, 2, 0).await;
        append(&db, &feed, LIKE, 3, 48).await;
        let swept = feed
            .store
            .sweep_changes(Duration::from_secs(86_400))
            .await
            .unwrap();
        assert_eq!(swept, 3);
        assert_eq!(db.count("parity_changes").await, 5);
        let (status, body) = get(&feed, "/feed/poll?channels=all&cursor=2", "", None).await;
        assert_eq!(status, 410);
        assert!(body.contains("\"oldest\":4"), "{body}");
    }
);

backend_tests!(
    tokens_guard_channels_and_bad_requests_get_errors,
    |db| async move {
        use sha2::{Digest, Sha256};
        let hash: String = Sha256::digest(b"t0ken")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let feed = start(&db, |c| {
            c.tokens = vec![parity::feed::config::TokenConfig {
                sha256: hash,
                channels: vec!["table:app_bsky_feed_like".into()],
            }]
        })
        .await;
        let mut client = ws(&feed).await;
        for bad in [
            "{nope".to_owned(),
            serde_json::json!({"op": "subscribe", "channels": ["nope:x"]}).to_string(),
            serde_json::json!({"op": "subscribe", "channels": []}).to_string(),
            serde_json::json!({"op": "dance"}).to_string(),
            serde_json::json!({"op": "subscribe", "channels": ["all"], "cursor": -4}).to_string(),
        ] {
            client.send(Message::text(bad.clone())).await.unwrap();
            let e = next_json(&mut client).await;
            assert_eq!(e["op"], "error", "{bad}: {e}");
        }
        send(&mut client, serde_json::json!({"op": "subscribe", "channels": ["table:app_bsky_feed_post"], "token": "t0ken"})).await;
        let e = next_json(&mut client).await;
        assert_eq!(
            (e["op"].as_str(), e["channel"].as_str()),
            (Some("error"), Some("table:app_bsky_feed_post"))
        );
        send(&mut client, serde_json::json!({"op": "subscribe", "channels": ["table:app_bsky_feed_like"], "token": "wrong"})).await;
        assert_eq!(next_json(&mut client).await["op"], "error");
        send(&mut client, serde_json::json!({"op": "subscribe", "channels": ["table:app_bsky_feed_like"], "token": "t0ken"})).await;
        assert_eq!(next_json(&mut client).await["op"], "subscribed");
        append(&db, &feed, LIKE, 1, 0).await;
        assert_eq!(next_json(&mut client).await["seq"], 1);
        // Plain HTTP transports take the token as a bearer header or query.
        let (status, _) = get(
            &feed,
            "/feed/poll?channels=table:app_bsky_feed_like&cursor=0",
            "",
            None,
        )
        .await;
        assert_eq!(status, 403);
        let (status, body) = get(
            &feed,
            "/feed/poll?channels=table:app_bsky_feed_like&cursor=0",
            "Authorization: Bearer t0ken\r\n",
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
);

backend_tests!(
    a_slow_client_is_dropped_with_its_resume_cursor_while_a_fast_one_keeps_up,
    |db| async move {
        let feed = start(&db, |c| c.client_buffer = 2_000).await;
        let mut fast = ws(&feed).await;
        let mut slow = ws(&feed).await;
        for c in [&mut fast, &mut slow] {
            send(
                c,
                serde_json::json!({"op": "subscribe", "channels": ["all"]}),
            )
            .await;
            assert_eq!(next_json(c).await["op"], "subscribed");
        }
        // Commits of 1,000 changes each, the next once the fast client has read
        // the last: far more than the slow client's socket buffers hold.
        let (batches, per) = (40usize, 1_000usize);
        let mut last = 0i64;
        for _ in 0..batches {
            append(&db, &feed, LIKE, per, 0).await;
            for _ in 0..per {
                let seq = next_json(&mut fast).await["seq"].as_i64().unwrap();
                assert_eq!(seq, last + 1, "the fast client misses nothing");
                last = seq;
            }
        }
        let total = (batches * per) as i64;
        // The slow client now reads: what it got, then a close naming where to
        // resume, at or below the last change it received.
        let mut got = 0;
        let reason = loop {
            match tokio::time::timeout(WAIT, slow.next()).await.unwrap() {
                Some(Ok(Message::Text(t))) => {
                    let m: serde_json::Value = serde_json::from_str(&t).unwrap();
                    got = m["seq"].as_i64().unwrap();
                }
                Some(Ok(Message::Close(Some(frame)))) => break frame.reason.to_string(),
                Some(Ok(_)) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        };
        let v: serde_json::Value = serde_json::from_str(&reason).unwrap();
        assert_eq!(v["error"], "slow client");
        let cursor = v["cursor"].as_i64().unwrap();
        assert!(
            cursor <= got && got < total,
            "cursor {cursor}, last received {got}"
        );
    }
);

backend_tests!(connection_limit_cors_and_demo_page, |db| async move {
    let feed = start(&db, |c| {
        c.max_connections = 1;
        c.cors_origins = vec!["https://app.example".into()];
        c.demo = true;
    })
    .await;
    // One client holds the only slot: the next is refused with 503, and
    // admitted again once the first leaves.
    let mut first = ws(&feed).await;
    send(
        &mut first,
        serde_json::json!({"op": "subscribe", "channels": ["all"]}),
    )
    .await;
    assert_eq!(next_json(&mut first).await["op"], "subscribed");
    let (status, body) = get(&feed, "/feed/poll?channels=all&wait=1ms", "", None).await;
    assert_eq!(status, 503, "{body}");
    drop(first);
    let mut admitted = false;
    for _ in 0..200 {
        let (status, _) = get(&feed, "/feed/poll?channels=all&wait=1ms", "", None).await;
        if status == 200 {
            admitted = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(admitted, "the slot is given back when the client leaves");
    // The demo page, with CORS headers for an allowed origin only.
    let (status, head, body) =
        get_with_head(&feed, "/", "Origin: https://app.example\r\n", None).await;
    assert_eq!(status, 200);
    assert!(body.contains("EventSource"), "{body}");
    assert!(
        head.contains("access-control-allow-origin: https://app.example"),
        "{head}"
    );
    let (_, head, _) = get_with_head(&feed, "/", "Origin: https://evil.example\r\n", None).await;
    assert!(!head.contains("access-control-allow-origin"), "{head}");
});
