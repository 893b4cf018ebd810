//! The feed's HTTP server: routes, shared state, connection limit, CORS,
//! bearer tokens and the demo page.
//!
//! Owns: the router (`/feed` WebSocket, `/feed/sse`, `/feed/poll`, `/` demo
//! page when `feed.demo`), the state every handler shares ([`FeedState`]),
//! the per-client guard that counts clients by transport and holds a
//! connection slot, and how a request names its token (`Authorization:
//! Bearer …`, or `token=` in the query for `EventSource`, which cannot set
//! headers). Each transport is its own file.

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::access::Access;
use super::config::FeedConfig;
use super::hub::Hub;
use super::session::FeedError;
use super::{poll, sse, ws};
use crate::obs::names;
use crate::store::Store;

/// The demo page (`examples/feed/index.html`), served at `/` with `feed.demo`.
const DEMO_PAGE: &str = include_str!("../../examples/feed/index.html");

/// What every handler shares.
#[derive(Clone)]
pub struct FeedState {
    pub store: Store,
    pub hub: Arc<Hub>,
    pub access: Arc<Access>,
    pub cfg: Arc<FeedConfig>,
    slots: Arc<Semaphore>,
    pub token: CancellationToken,
}

impl FeedState {
    pub fn new(
        store: Store,
        hub: Arc<Hub>,
        cfg: FeedConfig,
        token: CancellationToken,
    ) -> FeedState {
        FeedState {
            store,
            hub,
            access: Arc::new(Access::from_config(&cfg)),
            slots: Arc::new(Semaphore::new(cfg.max_connections)),
            cfg: Arc::new(cfg),
            token,
        }
    }

    /// A connection slot for a client of `transport`, or `None` at the limit.
    pub fn admit(&self, transport: &'static str) -> Option<Client> {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => {
                metrics::gauge!(names::FEED_CLIENTS, "transport" => transport).increment(1.0);
                Some(Client {
                    _permit: permit,
                    transport,
                    messages: metrics::counter!(names::FEED_MESSAGES_SENT, "transport" => transport),
                    lag: metrics::histogram!(names::FEED_LAG_SECONDS),
                })
            }
            Err(_) => {
                metrics::counter!(names::FEED_CLIENTS_DROPPED, "reason" => "limit").increment(1);
                None
            }
        }
    }
}

/// A connected client: holds its slot and its count in `parity_feed_clients`.
pub struct Client {
    _permit: OwnedSemaphorePermit,
    pub transport: &'static str,
    /// Metric handles, looked up once per client rather than per message.
    messages: metrics::Counter,
    lag: metrics::Histogram,
}

impl Client {
    /// Counts one message sent and its commit → send lag.
    pub fn sent(&self, committed_us: i64) {
        self.sent_all(&[committed_us]);
    }

    /// Counts messages sent together (one write) and each one's lag.
    pub fn sent_all(&self, committed_us: &[i64]) {
        self.messages.increment(committed_us.len() as u64);
        let now = chrono::Utc::now().timestamp_micros();
        for c in committed_us {
            self.lag.record((now - c).max(0) as f64 / 1e6);
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        metrics::gauge!(names::FEED_CLIENTS, "transport" => self.transport).decrement(1.0);
    }
}

/// The bearer token of a request: the `Authorization` header, else `query`.
pub fn bearer(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
        .or_else(|| query.map(str::to_owned))
}

/// An error answer for a plain HTTP request.
pub fn error_response(e: &FeedError) -> Response {
    let status = match e {
        FeedError::Forbidden(_) => StatusCode::FORBIDDEN,
        FeedError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        FeedError::CursorTooOld { .. } => StatusCode::GONE,
        _ => StatusCode::BAD_REQUEST,
    };
    let body = match e {
        FeedError::CursorTooOld { oldest, .. } => {
            serde_json::json!({"error": e.to_string(), "oldest": oldest})
        }
        _ => serde_json::json!({"error": e.to_string()}),
    };
    (status, axum::Json(body)).into_response()
}

fn too_many() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({"error": "too many feed clients; try again later"})),
    )
        .into_response()
}

pub(super) fn at_limit() -> Response {
    too_many()
}

fn cors(cfg: &FeedConfig) -> Option<CorsLayer> {
    if cfg.cors_origins.is_empty() {
        return None;
    }
    let origin = if cfg.cors_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            cfg.cors_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(origin)
            .allow_headers([
                header::AUTHORIZATION,
                axum::http::HeaderName::from_static("last-event-id"),
            ])
            .allow_methods([axum::http::Method::GET]),
    )
}

pub fn router(state: FeedState) -> Router {
    let demo = state.cfg.demo;
    let cors = cors(&state.cfg);
    let mut r = Router::new()
        .route("/feed", get(ws::handler))
        .route("/feed/sse", get(sse::handler))
        .route("/feed/poll", get(poll::handler));
    if demo {
        r = r.route("/", get(|| async { Html(DEMO_PAGE) }));
    }
    let r = r.with_state(state);
    match cors {
        Some(layer) => r.layer(layer),
        None => r,
    }
}

/// Serves the feed on `listener` until `state.token` is cancelled.
pub async fn serve(listener: TcpListener, state: FeedState) -> std::io::Result<()> {
    let token = state.token.clone();
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { token.cancelled().await })
        .await
}
