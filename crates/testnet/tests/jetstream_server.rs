//! The local Jetstream server keeps the upstream cursor rules the consumer
//! tests rely on, checked here with a plain websocket client (no parity
//! code): events in `time_us` order, `cursor` replays from the first event
//! at or after it, no cursor means live only, `wantedCollections` filters
//! commits but never identity or account events, and relay frames are sent
//! as binary messages by `seq`, only those after the cursor (`seq >
//! cursor`, the reference PDS), with `FutureCursor` for a cursor past the
//! head.

use std::time::Duration;

use futures_util::StreamExt;
use testnet::jetstream::{JetstreamServer, Line};
use testnet::{GOLDEN_JSONL, fixture_lines};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// The next `n` messages (5 s at most each).
async fn take(ws: &mut Ws, n: usize) -> Vec<Message> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message within 5 s")
            .expect("stream open")
            .unwrap();
        if matches!(m, Message::Text(_) | Message::Binary(_)) {
            out.push(m);
        }
    }
    out
}

/// Nothing more arrives for 200 ms.
async fn quiet(ws: &mut Ws) {
    let r = tokio::time::timeout(Duration::from_millis(200), ws.next()).await;
    assert!(r.is_err(), "unexpected message: {r:?}");
}

fn texts(msgs: &[Message]) -> Vec<String> {
    msgs.iter()
        .map(|m| m.to_text().unwrap().to_owned())
        .collect()
}

fn golden() -> Vec<Line> {
    fixture_lines(GOLDEN_JSONL)
        .iter()
        .map(|l| Line::new(l))
        .collect()
}

/// Golden lines in `time_us` order (the order the server serves).
fn sorted() -> Vec<Line> {
    let mut lines = golden();
    lines.sort_by_key(|l| l.cursor.unwrap());
    lines
}

#[tokio::test]
async fn cursor_replays_in_time_order_from_the_first_event_at_or_after_it() {
    let server = JetstreamServer::start(golden()).await;
    server.publish_all();
    let lines = sorted();
    let from = lines[3].cursor.unwrap();
    let mut ws = connect(&format!("{}?cursor={from}", server.url())).await;
    let got = texts(&take(&mut ws, lines.len() - 3).await);
    let want: Vec<String> = lines[3..].iter().map(|l| l.text.to_string()).collect();
    assert_eq!(got, want);
    quiet(&mut ws).await;
}

#[tokio::test]
async fn without_cursor_only_events_published_after_connecting_arrive() {
    let server = JetstreamServer::start(golden()).await;
    server.publish(2);
    let mut ws = connect(&server.url()).await;
    server.wait_connections(1).await;
    quiet(&mut ws).await;
    server.publish(5);
    let got = texts(&take(&mut ws, 3).await);
    let want: Vec<String> = sorted()[2..5].iter().map(|l| l.text.to_string()).collect();
    assert_eq!(got, want);
    quiet(&mut ws).await;
}

#[tokio::test]
async fn wanted_collections_filter_commits_but_not_identity_or_account() {
    let server = JetstreamServer::start(golden()).await;
    server.publish_all();
    let url = format!(
        "{}?cursor=0&wantedCollections=app.bsky.feed.like&wantedCollections=app.bsky.graph.*",
        server.url()
    );
    let want: Vec<String> = sorted()
        .iter()
        .filter(|l| match l.collection.as_deref() {
            None => true,
            Some(c) => c == "app.bsky.feed.like" || c.starts_with("app.bsky.graph."),
        })
        .map(|l| l.text.to_string())
        .collect();
    // like, follow, block, identity, account.
    assert_eq!(want.len(), 5);
    let mut ws = connect(&url).await;
    assert_eq!(texts(&take(&mut ws, want.len()).await), want);
    quiet(&mut ws).await;
    assert_eq!(server.requests.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn relay_frames_are_binary_messages_served_by_seq() {
    let frames = testnet::frames::relay_frames();
    assert_eq!(frames.len(), 100);
    let lines: Vec<Line> = frames.iter().map(|(seq, b)| Line::frame(b, *seq)).collect();
    let server = JetstreamServer::start(lines).await;
    server.publish_all();
    // Like the reference PDS: only frames with `seq > cursor` come back.
    let from = frames[90].0;
    let mut ws = connect(&format!("{}?cursor={from}", server.firehose_url())).await;
    let got = take(&mut ws, 9).await;
    for (m, (_, bytes)) in got.iter().zip(&frames[91..]) {
        assert_eq!(m, &Message::binary(bytes.clone()));
    }
    quiet(&mut ws).await;
}

/// A cursor past the newest seq gets the reference PDS's answer: one
/// `{op: -1}` error frame `FutureCursor`, then the stream closes. The head
/// itself is a valid cursor (nothing to send).
#[tokio::test]
async fn a_cursor_past_the_head_gets_future_cursor_and_a_close() {
    let frames = testnet::frames::relay_frames();
    let lines: Vec<Line> = frames.iter().map(|(seq, b)| Line::frame(b, *seq)).collect();
    let server = JetstreamServer::start(lines).await;
    server.publish_all();
    let head = frames.iter().map(|f| f.0).max().unwrap();
    let mut ws = connect(&format!("{}?cursor={}", server.firehose_url(), head + 1)).await;
    let got = take(&mut ws, 1).await;
    let Message::Binary(b) = &got[0] else {
        panic!("binary error frame")
    };
    let mut de = serde_ipld_dagcbor::de::Deserializer::from_slice(b);
    let header: ipld_core::ipld::Ipld = serde::Deserialize::deserialize(&mut de).unwrap();
    let body: ipld_core::ipld::Ipld = serde::Deserialize::deserialize(&mut de).unwrap();
    use ipld_core::ipld::Ipld;
    let map = |i: &Ipld| match i {
        Ipld::Map(m) => m.clone(),
        _ => panic!("map"),
    };
    assert_eq!(map(&header).get("op"), Some(&Ipld::Integer(-1)));
    assert_eq!(
        map(&body).get("error"),
        Some(&Ipld::String("FutureCursor".into()))
    );
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("closed within 5 s");
    assert!(
        matches!(end, None | Some(Ok(Message::Close(_))) | Some(Err(_))),
        "{end:?}"
    );
    let mut ws = connect(&format!("{}?cursor={head}", server.firehose_url())).await;
    quiet(&mut ws).await;
}

/// A cursor older than the window gets the reference PDS's `#info
/// OutdatedCursor` first, then every frame of the window.
#[tokio::test]
async fn a_cursor_before_the_window_gets_outdated_cursor_then_the_window() {
    let frames = testnet::frames::relay_frames();
    let lines: Vec<Line> = frames.iter().map(|(seq, b)| Line::frame(b, *seq)).collect();
    let server = JetstreamServer::start(lines).await;
    server.set_window_start(frames[95].0);
    server.publish_all();
    let url = format!("{}?cursor={}", server.firehose_url(), frames[10].0);
    let mut ws = connect(&url).await;
    let got = take(&mut ws, 6).await;
    let Message::Binary(b) = &got[0] else {
        panic!("binary #info frame")
    };
    use ipld_core::ipld::Ipld;
    let mut de = serde_ipld_dagcbor::de::Deserializer::from_slice(b);
    let header: Ipld = serde::Deserialize::deserialize(&mut de).unwrap();
    let body: Ipld = serde::Deserialize::deserialize(&mut de).unwrap();
    let (Ipld::Map(h), Ipld::Map(m)) = (header, body) else {
        panic!("maps")
    };
    assert_eq!(h.get("t"), Some(&Ipld::String("#info".into())));
    assert_eq!(m.get("name"), Some(&Ipld::String("OutdatedCursor".into())));
    for (m, (_, bytes)) in got[1..].iter().zip(&frames[95..]) {
        assert_eq!(m, &Message::binary(bytes.clone()));
    }
    quiet(&mut ws).await;
}
