//! HTTP plumbing: routes, and the path every request takes — logged and
//! counted on arrival, XRPC latency, the next queued fault for its method,
//! the listRecords gate, the handler, rate-limit headers.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State as AxState};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;

use super::state::{Shared, State};
use super::{ATPROTO_DID, DID_WEB, Fault, PLC, Req, identity, xrpc};

/// A response before it becomes HTTP.
pub(super) struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    pub headers: Vec<(&'static str, String)>,
    /// Bytes of whitespace streamed (chunked) before `body`.
    pub padding: usize,
    /// A binary answer (a CAR) sent instead of `body`.
    pub binary: Option<Vec<u8>>,
}

impl Reply {
    pub fn json(status: u16, body: String) -> Reply {
        Reply {
            status,
            content_type: "application/json; charset=utf-8",
            body,
            headers: Vec::new(),
            padding: 0,
            binary: None,
        }
    }

    /// A `com.atproto.sync.getRepo` answer.
    pub fn car(bytes: Vec<u8>) -> Reply {
        Reply {
            content_type: "application/vnd.ipld.car",
            binary: Some(bytes),
            ..Reply::json(200, String::new())
        }
    }

    pub fn text(status: u16, body: &str) -> Reply {
        Reply {
            content_type: "text/plain; charset=utf-8",
            ..Reply::json(status, body.to_owned())
        }
    }

    /// The XRPC error body `{"error": …, "message": …}`.
    pub fn xrpc_error(status: u16, error: &str, message: &str) -> Reply {
        Reply::json(
            status,
            serde_json::json!({"error": error, "message": message}).to_string(),
        )
    }

    fn into_response(self) -> Response {
        let mut b = Response::builder()
            .status(self.status)
            .header("content-type", self.content_type);
        for (k, v) in self.headers {
            b = b.header(k, v);
        }
        if let Some(bytes) = self.binary {
            return b.body(Body::from(bytes)).unwrap();
        }
        if self.padding == 0 {
            return b.body(Body::from(self.body)).unwrap();
        }
        // Chunked: the size is known only once the last chunk has gone.
        const CHUNK: usize = 64 << 10;
        let full = self.padding / CHUNK;
        let rest = self.padding % CHUNK;
        let chunks = std::iter::repeat_n(CHUNK, full)
            .chain((rest > 0).then_some(rest))
            .map(|n| Ok::<_, std::convert::Infallible>(vec![b' '; n]))
            .chain(std::iter::once(Ok(self.body.into_bytes())));
        b.body(Body::from_stream(futures_util::stream::iter(chunks)))
            .unwrap()
    }
}

/// Which peer a route plays (error body format, latency).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Xrpc,
    Plc,
    WellKnown,
}

/// The XRPC error name and message the reference server uses for a status.
fn xrpc_error_name(status: u16) -> (&'static str, &'static str) {
    match status {
        400 => ("InvalidRequest", "Invalid Request"),
        401 => ("AuthenticationRequired", "Authentication Required"),
        403 => ("Forbidden", "Forbidden"),
        404 => ("XRPCNotSupported", "XRPC Not Supported"),
        413 => ("PayloadTooLarge", "Payload Too Large"),
        429 => ("RateLimitExceeded", "Rate Limit Exceeded"),
        501 => ("MethodNotImplemented", "Method Not Implemented"),
        502 => ("UpstreamFailure", "Upstream Failure"),
        503 => ("NotEnoughResources", "Not Enough Resources"),
        504 => ("UpstreamTimeout", "Upstream Timeout"),
        _ => ("InternalServerError", "Internal Server Error"),
    }
}

fn status_fault(role: Role, status: u16) -> Reply {
    let (error, message) = xrpc_error_name(status);
    match role {
        Role::Xrpc => Reply::xrpc_error(status, error, message),
        // The PLC directory's error body is `{"message": …}`.
        Role::Plc => Reply::json(
            status,
            serde_json::json!({ "message": message }).to_string(),
        ),
        Role::WellKnown => Reply::text(status, message),
    }
}

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/xrpc/{nsid}", get(xrpc_route))
        .route("/.well-known/did.json", get(did_web_route))
        .route("/.well-known/atproto-did", get(atproto_did_route))
        .route("/{did}", get(plc_route))
        .with_state(shared)
}

fn parse_query(q: Option<&str>) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

async fn xrpc_route(
    AxState(sh): AxState<Arc<Shared>>,
    Path(nsid): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let query = parse_query(q.as_deref());
    let params = query.clone();
    let method = nsid.clone();
    run(&sh, &method, Role::Xrpc, query, move |s, live| {
        xrpc::dispatch(s, &nsid, &params, live)
    })
    .await
}

async fn plc_route(AxState(sh): AxState<Arc<Shared>>, Path(did): Path<String>) -> Response {
    run(&sh, PLC, Role::Plc, BTreeMap::new(), move |s, _| {
        identity::plc(s, &did)
    })
    .await
}

async fn did_web_route(AxState(sh): AxState<Arc<Shared>>) -> Response {
    run(&sh, DID_WEB, Role::WellKnown, BTreeMap::new(), |s, _| {
        identity::did_web(s)
    })
    .await
}

async fn atproto_did_route(AxState(sh): AxState<Arc<Shared>>, headers: HeaderMap) -> Response {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    run(
        &sh,
        ATPROTO_DID,
        Role::WellKnown,
        BTreeMap::new(),
        move |s, _| identity::atproto_did(s, host.as_deref()),
    )
    .await
}

/// Serves one request. `handler(state, live)` builds the normal answer;
/// `live` is false when the answer is only used to build a fault (it must
/// then record nothing).
async fn run<F>(
    sh: &Shared,
    method: &str,
    role: Role,
    query: BTreeMap<String, String>,
    handler: F,
) -> Response
where
    F: Fn(&mut State, bool) -> Reply,
{
    let (idx, latency, fault, limit) = {
        let mut s = sh.lock();
        s.log.push(Req {
            method: method.to_owned(),
            query,
            status: 0,
            at: Instant::now(),
        });
        let latency = if role == Role::Xrpc {
            s.latency
        } else {
            Duration::ZERO
        };
        let fault = s.faults.get_mut(method).and_then(VecDeque::pop_front);
        let limit = s.rate_limit.map_or(3000, |r| r.0);
        (s.log.len() - 1, latency, fault, limit)
    };
    sh.counts
        .send_modify(|c| *c.entry(method.to_owned()).or_default() += 1);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let reply = match fault {
        None => normal(sh, method, role, &handler).await,
        Some(Fault::Hang(d)) => {
            tokio::time::sleep(d).await;
            normal(sh, method, role, &handler).await
        }
        Some(Fault::RateLimited {
            retry_after_secs,
            remaining,
            reset_epoch_secs,
        }) => {
            let mut r = status_fault(role, 429);
            if let Some(s) = retry_after_secs {
                r.headers.push(("retry-after", s.to_string()));
            }
            if remaining.is_some() || reset_epoch_secs.is_some() {
                r.headers.push(("ratelimit-limit", limit.to_string()));
                r.headers
                    .push(("ratelimit-policy", format!("{limit};w=300")));
            }
            if let Some(n) = remaining {
                r.headers.push(("ratelimit-remaining", n.to_string()));
            }
            if let Some(t) = reset_epoch_secs {
                r.headers.push(("ratelimit-reset", t.to_string()));
            }
            r
        }
        Some(Fault::Status(code)) => status_fault(role, code),
        Some(Fault::MalformedJson) => {
            // The normal body cut in half, as if the connection dropped
            // mid-body behind a proxy that still said 200.
            let mut r = handler(&mut sh.lock(), false);
            let mut cut = r.body.len() / 2;
            while !r.body.is_char_boundary(cut) {
                cut -= 1;
            }
            r.body.truncate(cut);
            r.status = 200;
            r
        }
        Some(Fault::Redirect(to)) => {
            let mut r = Reply::text(302, "Found");
            r.headers.push(("location", to));
            r
        }
        Some(Fault::WithCursor(c)) => {
            let mut r = normal(sh, method, role, &handler).await;
            let mut v: serde_json::Value =
                serde_json::from_str(&r.body).expect("a JSON answer to re-cursor");
            v["cursor"] = serde_json::json!(c);
            r.body = v.to_string();
            r
        }
        Some(Fault::Padded(n)) => {
            let mut r = normal(sh, method, role, &handler).await;
            r.padding = n;
            r
        }
        Some(Fault::NotJson) => Reply {
            content_type: "text/html; charset=utf-8",
            ..Reply::json(
                200,
                "<!DOCTYPE html><html><head><title>Just a moment...</title></head>\
                 <body><h1>Checking your browser</h1></body></html>"
                    .to_owned(),
            )
        },
    };
    sh.lock().log[idx].status = reply.status;
    reply.into_response()
}

async fn normal<F>(sh: &Shared, method: &str, role: Role, handler: &F) -> Reply
where
    F: Fn(&mut State, bool) -> Reply,
{
    pass_gate(sh, method).await;
    let mut s = sh.lock();
    let mut r = handler(&mut s, true);
    if role == Role::Xrpc
        && let Some((limit, remaining, reset)) = s.rate_limit
    {
        r.headers.push(("ratelimit-limit", limit.to_string()));
        r.headers
            .push(("ratelimit-remaining", remaining.to_string()));
        r.headers.push(("ratelimit-reset", reset.to_string()));
        r.headers
            .push(("ratelimit-policy", format!("{limit};w=300")));
    }
    r
}

/// Waits while the gate is closed and its quota is used up.
async fn pass_gate(sh: &Shared, method: &str) {
    // Subscribed before checking, so an opening in between is not missed.
    let mut tick = sh.gate_tick.subscribe();
    loop {
        {
            let mut s = sh.lock();
            match s.gate.as_mut() {
                None => return,
                Some(g) if g.method != method => return,
                Some(g) if g.admitted < g.pass => {
                    g.admitted += 1;
                    return;
                }
                Some(_) => {}
            }
        }
        // The sender lives in `sh`, so this only fails if it is gone.
        if tick.changed().await.is_err() {
            return;
        }
    }
}
