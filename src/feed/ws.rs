//! The WebSocket transport, `/feed`.
//!
//! A client sends `{"op":"subscribe","channels":[…],"cursor":N,"token":…}`
//! (cursor and token optional) and `{"op":"unsubscribe","channels":[…]}`;
//! it receives one JSON message per change (the log row plus `channel`),
//! `{"op":"subscribed",…}` acknowledgements, and `{"op":"error",
//! "error":…,"channel":…}` for a request it got wrong, after which the
//! connection stays open. The server pings every 30 s. A client that falls
//! `feed.client_buffer` changes behind is closed (1013) with a reason
//! `{"error":"slow client","cursor":N}` naming where to resume.
//!
//! The upgrade is done on the connection axum hands over, with the same
//! tokio-tungstenite the reader uses (axum's own `ws` feature would bring a
//! second tungstenite).

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

/// Bytes each connection reads into at a time.
const READ_BUFFER: usize = 4 * 1024;

use super::feeder::{End, Feeder};
use super::server::{Client, FeedState, at_limit, bearer};
use super::session::{FeedError, Subscription, check_cursor};
use crate::obs::names;

const PING_EVERY: Duration = Duration::from_secs(30);

/// Most changes written to one client in one flush.
const BURST: usize = 256;

#[derive(Deserialize)]
pub struct AuthQuery {
    token: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum Request_ {
    Subscribe {
        channels: Vec<String>,
        cursor: Option<i64>,
        token: Option<String>,
    },
    Unsubscribe {
        channels: Vec<String>,
    },
}

pub async fn handler(
    State(st): State<FeedState>,
    Query(q): Query<AuthQuery>,
    headers: HeaderMap,
    mut req: Request,
) -> Response {
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).filter(|_| upgrade) else {
        return (StatusCode::BAD_REQUEST, "expected a WebSocket upgrade").into_response();
    };
    let Some(client) = st.admit("websocket") else {
        return at_limit();
    };
    let accept = derive_accept_key(key.as_bytes());
    let token = bearer(&headers, q.token.as_deref());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        // Clients send only small control messages: a read buffer of the
        // default 128 KiB per connection made 10,000 idle subscribers cost
        // 1.3 GB; 4 KiB holds any subscribe in one or a few reads.
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .max_message_size(Some(st.cfg.max_message_bytes))
            .max_frame_size(Some(st.cfg.max_message_bytes));
        let ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        run(ws, st, token, client).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn error_message(e: &FeedError, channel: Option<&str>) -> Message {
    let mut v = serde_json::json!({"op": "error", "error": e.to_string(), "channel": channel});
    if let FeedError::CursorTooOld { oldest, .. } = e {
        v["oldest"] = (*oldest).into();
    }
    Message::text(v.to_string())
}

fn channel_of(e: &FeedError) -> Option<&str> {
    match e {
        FeedError::Forbidden(c) => Some(c),
        _ => None,
    }
}

async fn run<S>(ws: WebSocketStream<S>, st: FeedState, token: Option<String>, client: Client)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut tx, mut rx) = ws.split();
    let mut feeder = Feeder::new(st.store.clone(), &st.hub, st.cfg.client_buffer);
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let max = st.cfg.max_channels_per_client;
    loop {
        tokio::select! {
            incoming = rx.next() => {
                let text = match incoming {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                let reply = match serde_json::from_str::<Request_>(&text) {
                    Err(e) => {
                        let msg = format!("malformed request: {}", e.to_string().chars().take(120).collect::<String>());
                        error_message(&FeedError::BadRequest(msg), None)
                    }
                    Ok(Request_::Unsubscribe { channels }) => {
                        feeder.unsubscribe(&channels);
                        Message::text(serde_json::json!({"op": "unsubscribed", "channels": channels}).to_string())
                    }
                    Ok(Request_::Subscribe { channels, cursor, token: t }) => {
                        let t = t.or_else(|| token.clone());
                        match subscribe(&st, &mut feeder, &channels, cursor, t.as_deref(), max).await {
                            Ok(names) => Message::text(
                                serde_json::json!({"op": "subscribed", "channels": names, "cursor": cursor}).to_string(),
                            ),
                            Err(e) => error_message(&e, channel_of(&e)),
                        }
                    }
                };
                if tx.send(reply).await.is_err() {
                    return;
                }
            }
            next = feeder.next() => {
                // What else is ready goes out in the same write: one flush
                // (one syscall) per burst instead of one per change.
                let mut item = Some(next);
                let mut sent = Vec::new();
                let mut end = None;
                while let Some(r) = item.take() {
                    match r {
                        Ok((change, channel)) => {
                            if tx.feed(Message::Text(change.message_text(&channel))).await.is_err() {
                                return;
                            }
                            sent.push(change.committed_us);
                            if sent.len() < BURST {
                                item = feeder.try_next();
                            }
                        }
                        Err(e) => end = Some(e),
                    }
                }
                if tx.flush().await.is_err() {
                    return;
                }
                client.sent_all(&sent);
                if let Some(end) = end {
                    close_for(&mut tx, end).await;
                    return;
                }
            }
            _ = ping.tick() => {
                if tx.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
            }
            _ = st.token.cancelled() => {
                let _ = tx.send(Message::Close(Some(CloseFrame { code: CloseCode::Away, reason: "server shutting down".into() }))).await;
                return;
            }
        }
    }
}

/// Tells the client why its stream ended, then the connection closes.
async fn close_for<T>(tx: &mut T, end: End)
where
    T: futures_util::Sink<Message> + Unpin,
{
    match end {
        End::Slow { cursor } => {
            metrics::counter!(names::FEED_CLIENTS_DROPPED, "reason" => "slow").increment(1);
            let reason = serde_json::json!({"error": "slow client", "cursor": cursor}).to_string();
            let _ = tx
                .send(Message::Close(Some(CloseFrame {
                    code: CloseCode::Again,
                    reason: reason.into(),
                })))
                .await;
        }
        End::Closed => {
            let _ = tx
                .send(Message::Close(Some(CloseFrame {
                    code: CloseCode::Away,
                    reason: "server shutting down".into(),
                })))
                .await;
        }
        End::Failed(e) => {
            let _ = tx.send(error_message(&e, None)).await;
            let _ = tx
                .send(Message::Close(Some(CloseFrame {
                    code: CloseCode::Error,
                    reason: "change log unavailable".into(),
                })))
                .await;
        }
    }
}

async fn subscribe(
    st: &FeedState,
    feeder: &mut Feeder,
    channels: &[String],
    cursor: Option<i64>,
    token: Option<&str>,
    max: usize,
) -> Result<Vec<String>, FeedError> {
    if channels.is_empty() {
        return Err(FeedError::NoChannels);
    }
    if channels.len() > max {
        return Err(FeedError::TooManyChannels(max));
    }
    let parsed = Subscription::parse(channels, token, &st.access)?;
    let names: Vec<String> = parsed.iter().map(|(_, n)| n.clone()).collect();
    match cursor {
        Some(c) => {
            check_cursor(&st.store, c).await?;
            feeder.subscribe_from(parsed, c, max)?;
        }
        None => feeder.subscribe_live(parsed, max)?,
    }
    Ok(names)
}
