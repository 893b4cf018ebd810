//! The change feed's subscribers in the feed scenario: WebSocket clients
//! that subscribe to one channel each and record, per message, the time
//! from the change's `committed_at` to its arrival; and idle clients that
//! only hold a subscription open.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::server::now_us;

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
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
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
    while !stop.load(Ordering::Relaxed) {
        let m = tokio::select! {
            m = ws.next() => m,
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => continue,
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
/// measures): `"committed_at":"YYYY-MM-DDTHH:MM:SS.ffffffZ"`.
pub fn committed_at_us(msg: &str) -> Option<u64> {
    const KEY: &str = "\"committed_at\":\"";
    let at = msg.find(KEY)? + KEY.len();
    let ts = msg.get(at..at + 27)?;
    chrono::DateTime::parse_from_rfc3339(ts)
        .ok()
        .map(|t| t.timestamp_micros() as u64)
}

/// Percentile `p` (0–100) of sorted `v`, in ms.
pub fn percentile_ms(v: &[u32], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() - 1) as f64 * p / 100.0).round() as usize;
    v[i] as f64 / 1000.0
}
