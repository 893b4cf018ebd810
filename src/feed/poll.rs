//! The long-poll transport, `/feed/poll?channels=a,b&cursor=N&wait=30s`.
//!
//! Answers `{"changes": [...], "cursor": N}`: the changes after `cursor` on
//! those channels (at most one page), as soon as there is at least one or
//! when `wait` (default 30 s, at most 120 s) runs out; `cursor` is what to
//! send next time (the last seq returned, or the one sent when nothing
//! came). Without `cursor` the poll starts at the newest change.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::config::parse_duration;
use super::feeder::{End, Feeder};
use super::server::{FeedState, at_limit, bearer, error_response};
use super::session::{FeedError, Subscription, check_cursor};
use super::sse::split_channels;

const MAX_WAIT: Duration = Duration::from_secs(120);
/// Most changes in one answer.
const MAX_ANSWER: usize = 1_000;

#[derive(Deserialize)]
pub struct PollQuery {
    channels: Option<String>,
    cursor: Option<i64>,
    wait: Option<String>,
    token: Option<String>,
}

pub async fn handler(
    State(st): State<FeedState>,
    Query(q): Query<PollQuery>,
    headers: HeaderMap,
) -> Response {
    let token = bearer(&headers, q.token.as_deref());
    let Some(client) = st.admit("poll") else {
        return at_limit();
    };
    match answer(&st, &q, token.as_deref(), &client).await {
        Ok(body) => axum::Json(body).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn answer(
    st: &FeedState,
    q: &PollQuery,
    token: Option<&str>,
    client: &super::server::Client,
) -> Result<serde_json::Value, FeedError> {
    let names = split_channels(q.channels.as_deref());
    if names.is_empty() {
        return Err(FeedError::NoChannels);
    }
    let max = st.cfg.max_channels_per_client;
    if names.len() > max {
        return Err(FeedError::TooManyChannels(max));
    }
    let wait = match &q.wait {
        Some(w) => parse_duration(w)
            .map_err(FeedError::BadRequest)?
            .min(MAX_WAIT),
        None => Duration::from_secs(30),
    };
    let parsed = Subscription::parse(&names, token, &st.access)?;
    // Subscribed before the log is read: nothing committed in between is missed.
    let mut feeder = Feeder::new(st.store.clone(), &st.hub, st.cfg.client_buffer);
    let cursor = match q.cursor {
        Some(c) => {
            check_cursor(&st.store, c).await?;
            feeder.subscribe_from(parsed, c, max)?;
            c
        }
        None => {
            let latest = st.store.change_bounds().await?.latest.max(st.hub.latest());
            feeder.subscribe_from(parsed, latest, max)?;
            latest
        }
    };
    let mut changes = Vec::new();
    let mut next = cursor;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let got = if changes.is_empty() {
            tokio::select! {
                r = feeder.next() => Some(r),
                _ = tokio::time::sleep_until(deadline) => None,
                _ = st.token.cancelled() => None,
            }
        } else {
            // Take what is ready now, without waiting again.
            tokio::select! {
                biased;
                r = feeder.next() => Some(r),
                _ = tokio::task::yield_now() => None,
            }
        };
        match got {
            Some(Ok((change, channel))) => {
                next = next.max(change.change.seq);
                client.sent(change.committed_us);
                let v: serde_json::Value = serde_json::from_str(&change.message(&channel))
                    .unwrap_or(serde_json::Value::Null);
                changes.push(v);
                if changes.len() >= MAX_ANSWER {
                    break;
                }
            }
            Some(Err(End::Slow { .. })) | Some(Err(End::Closed)) | None => break,
            Some(Err(End::Failed(e))) => return Err(e),
        }
    }
    Ok(serde_json::json!({"changes": changes, "cursor": next}))
}
