//! The change feed's subscribers in the feed scenario: WebSocket clients
//! that subscribe to one channel each and record, per message, the time
//! from the change's `committed_at` to its arrival; and idle clients that
//! only hold a subscription open.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures_util::{SinkExt, StreamExt};
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::server::now_us;

/// Bytes each client reads into at a time.
const CLIENT_READ_BUFFER: usize = 16 * 1024;

/// How often a client with no message looks at the stop flag.
const STOP_CHECK: std::time::Duration = std::time::Duration::from_millis(200);

/// What one client saw while recording.
#[derive(Default)]
pub struct Seen {
    pub deliveries: u64,
    /// Commit → arrival, µs (every message while recording).
    pub latencies_us: Vec<u32>,
}

/// Opens a subscription to `channel` on `addr`; returns once subscribed.
pub async fn connect(
    addr: &str,
    channel: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!("ws://{addr}/feed");
    // tungstenite zeroes its whole read buffer before each read: with the
    // default 128 KiB that memset was the clients' largest cost (12 % of
    // the bench process). 16 KiB still takes about 25 messages a read.
    let config = WebSocketConfig::default().read_buffer_size(CLIENT_READ_BUFFER);
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), false)
            .await
            .unwrap_or_else(|e| panic!("feed client connect to {url}: {e}"));
    let sub = serde_json::json!({"op": "subscribe", "channels": [channel]}).to_string();
    ws.send(Message::Text(sub.into())).await.unwrap();
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.contains("\"subscribed\"") => return ws,
            Some(Ok(Message::Text(t))) if t.contains("\"error\"") => {
                panic!("subscribe {channel}: {t}")
            }
            Some(Ok(_)) => {}
            other => panic!("feed connection ended while subscribing: {other:?}"),
        }
    }
}

/// Reads messages until `stop`; counts and times them while `recording`.
pub async fn run(
    mut ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    recording: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
) -> Seen {
    let mut seen = Seen::default();
    // One timer per client for its whole life, not one per message: a new
    // `sleep` in every `select!` registered and removed a timer-wheel entry
    // per delivery.
    let mut check = tokio::time::interval(STOP_CHECK);
    check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        let m = tokio::select! {
            biased;
            m = ws.next() => m,
            _ = check.tick() => continue,
        };
        match m {
            Some(Ok(Message::Text(t))) => {
                if !recording.load(Ordering::Relaxed) {
                    continue;
                }
                if let Some(at) = committed_at_us(&t) {
                    seen.deliveries += 1;
                    let lat = now_us().saturating_sub(at);
                    seen.latencies_us.push(lat.min(u32::MAX as u64) as u32);
                }
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                dropped.fetch_add(1, Ordering::Relaxed);
                return seen;
            }
            Some(Ok(_)) => {}
        }
    }
    seen
}

/// `committed_at` of a feed message as µs since the Unix epoch, read
/// without a JSON parser (the bench must stay cheaper than what it
/// measures): `"committed_at":"YYYY-MM-DDTHH:MM:SS.ffffffZ"`. The key is
/// looked for from the end: the row's `committed_at` follows its record
/// (which may hold a key of that name), and only `subjects` and `channel`
/// come after it, so the scan is short.
pub fn committed_at_us(msg: &str) -> Option<u64> {
    const KEY: &[u8] = b"\"committed_at\":\"";
    let b = msg.as_bytes();
    // Step back from one `_` to the next (few in the message's tail) and
    // compare the key there: cheaper than comparing at every position.
    let mut end = b.len();
    let at = loop {
        let i = b[..end].iter().rposition(|&c| c == b'_')?;
        if i >= 10 && b[i - 10..].starts_with(KEY) {
            break i - 10 + KEY.len();
        }
        end = i;
    };
    let ts = b.get(at..at + 27)?;
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        ts[r].iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    if ts[4] != b'-' || ts[10] != b'T' || ts[19] != b'.' || ts[26] != b'Z' {
        return None;
    }
    let day = chrono::NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    let secs = day.and_hms_opt(num(11..13)?, num(14..16)?, num(17..19)?)?;
    let us = secs.and_utc().timestamp_micros() + i64::from(num(20..26)?);
    u64::try_from(us).ok()
}

/// Checks [`committed_at_us`] against chrono's RFC 3339 parser once, so a
/// mistake in the hand-rolled parse cannot skew the latencies unnoticed.
pub fn check_committed_at_parse() {
    let ts = "2026-12-01T19:08:27.123456Z";
    let msg = format!(
        r#"{{"seq":1,"record":{{"committed_at":"1999-01-01T00:00:00.000000Z"}},"committed_at":"{ts}","subjects":["at://x"],"channel":"all"}}"#
    );
    let want = chrono::DateTime::parse_from_rfc3339(ts)
        .unwrap()
        .timestamp_micros() as u64;
    assert_eq!(committed_at_us(&msg), Some(want));
}

/// Percentile `p` (0–100) of sorted `v`, in ms.
pub fn percentile_ms(v: &[u32], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() - 1) as f64 * p / 100.0).round() as usize;
    v[i] as f64 / 1000.0
}
