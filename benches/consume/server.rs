//! The bench's upstream: a websocket server on 127.0.0.1 that streams
//! generated events (Jetstream v1 text frames or firehose binary frames)
//! to the first connection. Events are made on a thread of their own as
//! they are sent (constant memory, any N), through a bounded queue, so the
//! socket's back-pressure reaches the generator.
//!
//! With `live` on, an event whose clock is ahead of the wall clock waits
//! for it: the server sends the backlog as fast as it can, then becomes a
//! live stream at the generator's rate (the catch-up scenario).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use workload::Generator;

/// Messages in flight between the generating thread and the socket.
const QUEUE: usize = 1024;

/// Which wire the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Jetstream,
    Firehose,
}

impl Wire {
    pub fn path(self) -> &'static str {
        match self {
            Wire::Jetstream => "/subscribe",
            Wire::Firehose => "/xrpc/com.atproto.sync.subscribeRepos",
        }
    }

    /// The stream cursor of event `i` (`time_us`, or firehose `seq`).
    pub fn cursor(self, g: &Generator, i: u64) -> i64 {
        match self {
            Wire::Jetstream => g.time_us(i) as i64,
            Wire::Firehose => i as i64 + 1,
        }
    }
}

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// A running server.
pub struct Server {
    pub url: String,
    /// When the consumer connected.
    pub started: tokio::sync::oneshot::Receiver<Instant>,
    /// Events handed to the socket so far.
    pub sent: Arc<AtomicU64>,
}

/// Serves events `from..to` of `g` as `wire`.
pub async fn serve(g: Arc<Generator>, wire: Wire, from: u64, to: u64, live: bool) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}{}", listener.local_addr().unwrap(), wire.path());
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        let _ = started_tx.send(Instant::now());
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Message>(QUEUE);
        let producer = std::thread::spawn(move || {
            for i in from..to {
                let e = g.event(i);
                if live {
                    let ahead = e.time_us.saturating_sub(now_us());
                    if ahead > 0 {
                        std::thread::sleep(Duration::from_micros(ahead));
                    }
                }
                let m = match wire {
                    Wire::Jetstream => Message::text(workload::jetstream::message(&e)),
                    Wire::Firehose => Message::binary(workload::firehose::message(&e)),
                };
                if tx.blocking_send(m).is_err() {
                    return;
                }
            }
        });
        while let Some(m) = rx.recv().await {
            // Flush only when the queue is empty: batches frames into writes.
            let res = if rx.is_empty() {
                ws.send(m).await
            } else {
                ws.feed(m).await
            };
            if res.is_err() {
                return;
            }
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let _ = ws.flush().await;
        let _ = producer.join();
        while ws.next().await.is_some() {}
    });
    Server { url, started, sent }
}
