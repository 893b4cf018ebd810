//! The Server-Sent Events transport, `/feed/sse?channels=a,b[&cursor=N][&token=T]`.
//!
//! Each change is one event whose `id:` is its `seq`, so a browser's
//! `EventSource` that loses the connection reconnects with `Last-Event-ID`
//! and resumes after it by itself (the header wins over `cursor=`). A
//! client that falls `feed.client_buffer` behind gets an `event: error`
//! with `{"error":"slow client","cursor":N}` and the stream ends.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt, stream};
use serde::Deserialize;

use super::feeder::{End, Feeder};
use super::server::{FeedState, at_limit, bearer, error_response};
use super::session::{FeedError, Subscription, check_cursor};
use crate::obs::names;

#[derive(Deserialize)]
pub struct SseQuery {
    channels: Option<String>,
    cursor: Option<i64>,
    token: Option<String>,
}

/// The channel names of a `channels=a,b` query value.
pub fn split_channels(v: Option<&str>) -> Vec<String> {
    v.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

pub async fn handler(
    State(st): State<FeedState>,
    Query(q): Query<SseQuery>,
    headers: HeaderMap,
) -> Response {
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let cursor = last_event_id.or(q.cursor);
    let token = bearer(&headers, q.token.as_deref());
    let names = split_channels(q.channels.as_deref());
    let Some(client) = st.admit("sse") else {
        return at_limit();
    };
    let feeder = match start(&st, &names, cursor, token.as_deref()).await {
        Ok(f) => f,
        Err(e) => return error_response(&e),
    };
    let events = stream::unfold(Some((feeder, client)), |state| async move {
        let (mut feeder, client) = state?;
        match feeder.next().await {
            Ok((change, channel)) => {
                client.sent(change.committed_us);
                let ev = Event::default()
                    .id(change.change.seq.to_string())
                    .data(change.message(&channel));
                Some((Ok::<_, Infallible>(ev), Some((feeder, client))))
            }
            Err(End::Slow { cursor }) => {
                metrics::counter!(names::FEED_CLIENTS_DROPPED, "reason" => "slow").increment(1);
                let data =
                    serde_json::json!({"error": "slow client", "cursor": cursor}).to_string();
                Some((Ok(Event::default().event("error").data(data)), None))
            }
            Err(End::Closed) => None,
            Err(End::Failed(e)) => {
                let data = serde_json::json!({"error": e.to_string()}).to_string();
                Some((Ok(Event::default().event("error").data(data)), None))
            }
        }
    });
    // Shutdown ends the stream (the browser reconnects elsewhere, or later
    // with Last-Event-ID); an open stream otherwise held the server's
    // graceful shutdown, and `parity consume` with it, forever.
    let events = events.take_until(st.token.clone().cancelled_owned());
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

async fn start(
    st: &FeedState,
    names: &[String],
    cursor: Option<i64>,
    token: Option<&str>,
) -> Result<Feeder, FeedError> {
    if names.is_empty() {
        return Err(FeedError::NoChannels);
    }
    let max = st.cfg.max_channels_per_client;
    if names.len() > max {
        return Err(FeedError::TooManyChannels(max));
    }
    let parsed = Subscription::parse(names, token, &st.access)?;
    let mut feeder = Feeder::new(st.store.clone(), &st.hub, st.cfg.client_buffer);
    match cursor {
        Some(c) => {
            check_cursor(&st.store, c).await?;
            feeder.subscribe_from(parsed, c, max)?;
        }
        None => feeder.subscribe_live(parsed, max)?,
    }
    Ok(feeder)
}
