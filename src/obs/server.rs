//! The one HTTP listener for `/metrics`, `/health` and `/ready`.
//!
//! Owns: binding (a busy port is a start-up error, not a silent gap in
//! monitoring; only the default `127.0.0.1:9464`, when taken, falls back to
//! a free port on the same IP with one warning, so a second parity process
//! started with default settings runs), the three routes and their status codes, periodic
//! histogram upkeep, and stopping when the token is cancelled. Does not own
//! what is healthy or what is counted (both [`Obs`]).
//!
//! - `GET /metrics`: Prometheus text format.
//! - `GET /health`: 200 `{"status":"ok"}`, or 503
//!   `{"status":"unhealthy","reason":"disconnected"|"database_unreachable"|"stale"}`.
//! - `GET /ready`: 200 `{"status":"ready"}`, or 503
//!   `{"status":"not_ready","reason":"migrating"|"connecting"}`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Obs, recorder};

/// How often histogram samples are drained into buckets when nobody
/// scrapes: keeps memory flat at a few KB.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Prometheus text exposition format 0.0.4.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The listener could not start.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen on {addr} for metrics and health: {source}; choose another metrics.addr (--metrics-addr IP:PORT) or off"
)]
pub struct ServeError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// A running listener.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    /// The bound address (the real port when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for the listener to stop (after its token is cancelled).
    pub async fn close(self) {
        let _ = self.task.await;
    }
}

/// Installs the recorder if needed, binds `addr`, logs the bound address
/// and serves `obs` until `token` is cancelled.
pub async fn serve(
    addr: SocketAddr,
    obs: Arc<Obs>,
    token: CancellationToken,
) -> Result<Server, ServeError> {
    recorder::install();
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && is_default(addr) => {
            let any = SocketAddr::new(addr.ip(), 0);
            let l = TcpListener::bind(any)
                .await
                .map_err(|source| ServeError { addr: any, source })?;
            let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
            tracing::warn!(
                taken = %addr,
                port,
                "The default metrics address is taken (another parity?); serving on a free port instead. Set metrics.addr (--metrics-addr IP:PORT, or off) to choose."
            );
            l
        }
        Err(source) => return Err(ServeError { addr, source }),
    };
    let bound = listener
        .local_addr()
        .map_err(|source| ServeError { addr, source })?;
    tracing::info!(addr = %bound, "Serving /metrics, /health and /ready.");
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/health", get(health_status))
        .route("/ready", get(ready_status))
        .with_state(obs);
    let task = tokio::spawn(async move {
        let shutdown = token.clone().cancelled_owned();
        let server = axum::serve(listener, app).with_graceful_shutdown(shutdown);
        let upkeep = async {
            let mut every = tokio::time::interval(UPKEEP_EVERY);
            loop {
                every.tick().await;
                recorder::upkeep();
            }
        };
        tokio::select! {
            r = server => if let Err(e) = r {
                tracing::warn!(error = %e, "Metrics listener stopped.");
            },
            _ = upkeep => {}
        }
    });
    Ok(Server { addr: bound, task })
}

/// Whether `addr` is the built-in `metrics.addr` default.
fn is_default(addr: SocketAddr) -> bool {
    super::MetricsConfig::default().listen_addr() == Ok(Some(addr))
}

async fn render_metrics(State(obs): State<Arc<Obs>>) -> Response {
    obs.publish_lag();
    match recorder::render() {
        Some(text) => ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "another metrics recorder is installed\n",
        )
            .into_response(),
    }
}

async fn health_status(State(obs): State<Arc<Obs>>) -> Response {
    match obs.check() {
        Ok(()) => (StatusCode::OK, axum::Json(json!({"status": "ok"}))).into_response(),
        Err(r) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "unhealthy", "reason": r.as_str()})),
        )
            .into_response(),
    }
}

async fn ready_status(State(obs): State<Arc<Obs>>) -> Response {
    match obs.ready() {
        Ok(()) => (StatusCode::OK, axum::Json(json!({"status": "ready"}))).into_response(),
        Err(r) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "not_ready", "reason": r.as_str()})),
        )
            .into_response(),
    }
}
