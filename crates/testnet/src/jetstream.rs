//! A local Jetstream v1 server for tests and benchmarks: speaks the real
//! wire protocol (websocket text frames on `/subscribe`) and replays
//! recorded events.
//!
//! Semantics modelled on the real server: events are served in `time_us`
//! order; a connection without `cursor` is live (it gets only events
//! published after it connected); with `cursor` it gets every published
//! event with `time_us >= cursor`, then the live tail. `wantedCollections`
//! (exact and `prefix.*`) filters commits; `wantedDids` filters everything.
//! Identity and account events ignore `wantedCollections`, as upstream.
//! Lines that are not JSON events (malformed input under test) carry no
//! `time_us` and are sent to every connection at their position.
//!
//! The same server plays a relay (`subscribeRepos`): [`Line::frame`] holds
//! one binary firehose message whose stream position is its `seq`, with the
//! reference PDS's cursor rules (`packages/pds` `subscribeRepos` and its
//! sequencer): a cursor resends only frames with `seq > cursor`; a cursor
//! past the newest published seq gets the `FutureCursor` error frame
//! (`{op: -1}` then `{error: "FutureCursor", message: "Cursor in the
//! future."}`) and the stream closes; a cursor older than the retention
//! window ([`JetstreamServer::set_window_start`]) gets `#info
//! OutdatedCursor`, then the window. Jetstream v2 keeps its inclusive
//! `seq >= cursor`.
//!
//! [`v1_to_v2`] rewrites a recorded v1 line as the Jetstream v2 frame the
//! server then serves on the v2 path.

#![allow(dead_code)]
// tungstenite fixes the callback signature (its error is a full HTTP response).
#![allow(clippy::result_large_err)]

use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

/// One message to serve.
#[derive(Clone, Debug)]
pub struct Line {
    pub text: Arc<str>,
    /// A binary message to send instead of `text` (firehose frames).
    pub binary: Option<Arc<[u8]>>,
    /// The stream position: `time_us` for Jetstream lines, `seq` for frames.
    pub cursor: Option<i64>,
    pub did: Option<String>,
    pub collection: Option<String>,
}

impl Line {
    pub fn new(text: &str) -> Line {
        let v: Option<serde_json::Value> = serde_json::from_str(text).ok();
        let get = |p: &str| {
            v.as_ref()
                .and_then(|v| v.pointer(p))
                .and_then(|x| x.as_str())
                .map(str::to_owned)
        };
        Line {
            text: text.into(),
            binary: None,
            cursor: v
                .as_ref()
                .and_then(|v| v.get("time_us"))
                .and_then(|t| t.as_i64()),
            did: get("/did"),
            collection: get("/commit/collection"),
        }
    }

    /// A Jetstream v2 (`subscribeEvents`) text frame; its position is `seq`.
    pub fn v2(text: &str) -> Line {
        let v: serde_json::Value = serde_json::from_str(text).expect("v2 frame is JSON");
        let p = &v["payload"];
        Line {
            text: text.into(),
            binary: None,
            cursor: p["seq"].as_i64(),
            did: p["did"].as_str().map(str::to_owned),
            collection: p["collection"].as_str().map(str::to_owned),
        }
    }

    /// A binary firehose message at stream position `seq`.
    pub fn frame(bytes: &[u8], seq: i64) -> Line {
        Line {
            text: "".into(),
            binary: Some(bytes.into()),
            cursor: Some(seq),
            did: None,
            collection: None,
        }
    }
}

struct State {
    lines: Vec<Line>,
    /// How many lines are published (visible to connections).
    published: usize,
    /// When true, connections stop sending (a silent server).
    silent: bool,
    /// When true, the server is down: open connections close, new ones
    /// are refused.
    stopped: bool,
    /// Firehose: the oldest seq still kept (older frames have expired).
    window_start: Option<i64>,
}

/// A running server.
pub struct JetstreamServer {
    pub addr: std::net::SocketAddr,
    state: Arc<Mutex<State>>,
    tick: watch::Sender<u64>,
    /// Request URIs (path + query) of every connection, in order.
    pub requests: Arc<Mutex<Vec<String>>>,
    /// Frames sent zstd-compressed (to clients that asked `compress=true`
    /// or `zstdDictionary=20260811`).
    pub compressed: Arc<std::sync::atomic::AtomicUsize>,
    /// `getZstdDictionary` requests answered.
    pub dictionary_fetches: Arc<std::sync::atomic::AtomicUsize>,
    connections: watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

/// The Jetstream v1 zstd dictionary parity ships (`assets/`), read here
/// directly rather than through parity's modules.
const V1_DICTIONARY: &[u8] = include_bytes!("../../../assets/jetstream_v1.zdict");

/// The Jetstream v2 zstd dictionary from the fixtures (ID 20260811).
pub fn v2_dictionary() -> Vec<u8> {
    std::fs::read(crate::fixture(
        "jetstream/zstd/subscribe_events_20260811.zdict",
    ))
    .unwrap()
}

/// Answers `GET …/getZstdDictionary` on the websocket port, as Jetstream v2
/// does (raw dictionary, `application/octet-stream`). Returns false, having
/// read nothing, for any other request.
async fn serve_dictionary(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const PREFIX: &[u8] = b"GET /xrpc/network.bsky.jetstream.getZstdDictionary";
    let mut head = vec![0u8; PREFIX.len()];
    match stream.peek(&mut head).await {
        Ok(n) if n == PREFIX.len() && head == PREFIX => {}
        _ => return false,
    }
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return true,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let dict = v2_dictionary();
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nX-Zstd-Dictionary-Id: 20260811\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        dict.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(&dict).await;
    let _ = stream.shutdown().await;
    true
}

fn query_values(uri: &str, key: &str) -> Vec<String> {
    let Some((_, q)) = uri.split_once('?') else {
        return vec![];
    };
    url::form_urlencoded::parse(q.as_bytes())
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .collect()
}

fn wanted(line: &Line, cols: &[String], dids: &[String]) -> bool {
    if !dids.is_empty() && line.did.as_ref().is_some_and(|d| !dids.contains(d)) {
        return false;
    }
    match &line.collection {
        Some(c) if !cols.is_empty() => cols.iter().any(|w| match w.strip_suffix(".*") {
            Some(p) => c.starts_with(p) && c.as_bytes().get(p.len()) == Some(&b'.'),
            None => w == c,
        }),
        _ => true,
    }
}

impl JetstreamServer {
    /// Starts a server holding `lines` (sorted by `time_us`, stable), with
    /// none published yet.
    pub async fn start(lines: Vec<Line>) -> JetstreamServer {
        let mut lines = lines;
        lines.sort_by_key(|l| l.cursor.unwrap_or(i64::MIN));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            lines,
            published: 0,
            silent: false,
            stopped: false,
            window_start: None,
        }));
        let (tick, _) = watch::channel(0u64);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (conn_tx, connections) = watch::channel(0usize);
        let compressed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (st, tk, rq, cz) = (
            state.clone(),
            tick.clone(),
            requests.clone(),
            compressed.clone(),
        );
        let dictionary_fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let dict_fetches = dictionary_fetches.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                if st.lock().unwrap().stopped {
                    drop(stream);
                    continue;
                }
                if serve_dictionary(&mut stream).await {
                    dict_fetches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    continue;
                }
                let (st, mut rx, rq, conn_tx, compressed) = (
                    st.clone(),
                    tk.subscribe(),
                    rq.clone(),
                    conn_tx.clone(),
                    cz.clone(),
                );
                tokio::spawn(async move {
                    let mut uri = String::new();
                    let cb = |req: &Request, mut resp: Response| {
                        uri = req.uri().to_string();
                        // Agree to the subprotocol the client asks for (v2: xrpc.v1.json).
                        if let Some(p) = req.headers().get("Sec-WebSocket-Protocol") {
                            resp.headers_mut()
                                .insert("Sec-WebSocket-Protocol", p.clone());
                        }
                        Ok(resp)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, cb).await else {
                        return;
                    };
                    let cursor: Option<i64> = query_values(&uri, "cursor")
                        .first()
                        .and_then(|c| c.parse().ok());
                    let mut cols = query_values(&uri, "wantedCollections");
                    cols.extend(query_values(&uri, "collections"));
                    let mut dids = query_values(&uri, "wantedDids");
                    dids.extend(query_values(&uri, "dids"));
                    let compress = query_values(&uri, "compress").iter().any(|v| v == "true");
                    let v2_dict = query_values(&uri, "zstdDictionary")
                        .iter()
                        .any(|v| v == "20260811");
                    let mut zstd = match (compress, v2_dict) {
                        (true, _) => {
                            Some(zstd::bulk::Compressor::with_dictionary(3, V1_DICTIONARY).unwrap())
                        }
                        (_, true) => Some(
                            zstd::bulk::Compressor::with_dictionary(3, &v2_dictionary()).unwrap(),
                        ),
                        _ => None,
                    };
                    let firehose = uri.contains("/xrpc/com.atproto.sync.subscribeRepos");
                    let (mut pos, future, outdated) = {
                        let s = st.lock().unwrap();
                        let head = s.lines[..s.published]
                            .iter()
                            .filter_map(|l| l.cursor)
                            .max()
                            .unwrap_or(0);
                        // Expired frames are gone: a cursor before the window
                        // replays from its start, after an OutdatedCursor #info.
                        let floor = s.window_start.filter(|_| firehose);
                        let outdated = matches!((cursor, floor), (Some(c), Some(w)) if c + 1 < w);
                        let pos = match cursor {
                            None => s.published,
                            Some(c) => s.lines[..s.published]
                                .iter()
                                .position(|l| {
                                    l.cursor.is_some_and(|t| {
                                        floor.is_none_or(|w| t >= w)
                                            && if firehose { t > c } else { t >= c }
                                    })
                                })
                                .unwrap_or(s.published),
                        };
                        (pos, firehose && cursor.is_some_and(|c| c > head), outdated)
                    };
                    rq.lock().unwrap().push(uri.clone());
                    conn_tx.send_modify(|n| *n += 1);
                    if future {
                        // The reference PDS: `cursor > curr` → FutureCursor
                        // error frame ({op: -1}), then the stream closes.
                        let frame = crate::frames::message(
                            &serde_json::json!({"op": -1}),
                            &serde_json::json!({"error": "FutureCursor", "message": "Cursor in the future."}),
                        );
                        let _ = ws.send(Message::binary(frame)).await;
                        let _ = ws.close(None).await;
                        return;
                    }
                    if outdated {
                        // The reference PDS, before replaying the window.
                        let frame = crate::frames::message(
                            &serde_json::json!({"op": 1, "t": "#info"}),
                            &serde_json::json!({"name": "OutdatedCursor", "message": "Requested cursor exceeded limit. Possibly missing events"}),
                        );
                        if ws.send(Message::binary(frame)).await.is_err() {
                            return;
                        }
                    }
                    loop {
                        if st.lock().unwrap().stopped {
                            let _ = ws.close(None).await;
                            return;
                        }
                        let batch: Vec<Message> = {
                            let s = st.lock().unwrap();
                            if s.silent {
                                Vec::new()
                            } else {
                                let out = s.lines[pos..s.published]
                                    .iter()
                                    .filter(|l| wanted(l, &cols, &dids))
                                    .map(|l| match (&l.binary, zstd.as_mut()) {
                                        (Some(b), _) => Message::binary(b.to_vec()),
                                        (None, Some(z)) if l.cursor.is_some() => {
                                            compressed
                                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                            Message::binary(z.compress(l.text.as_bytes()).unwrap())
                                        }
                                        (None, _) => Message::text(l.text.to_string()),
                                    })
                                    .collect();
                                pos = s.published;
                                out
                            }
                        };
                        for msg in batch {
                            if ws.send(msg).await.is_err() {
                                return;
                            }
                        }
                        tokio::select! {
                            r = rx.changed() => if r.is_err() { return },
                            m = ws.next() => match m {
                                Some(Ok(_)) => {}
                                _ => return,
                            },
                        }
                    }
                });
            }
        });
        JetstreamServer {
            addr,
            state,
            tick,
            requests,
            compressed,
            dictionary_fetches,
            connections,
            task,
        }
    }

    /// `ws://127.0.0.1:PORT/subscribe`
    pub fn url(&self) -> String {
        format!("ws://{}/subscribe", self.addr)
    }

    /// `ws://127.0.0.1:PORT/xrpc/network.bsky.jetstream.subscribeEvents`
    pub fn v2_url(&self) -> String {
        format!(
            "ws://{}/xrpc/network.bsky.jetstream.subscribeEvents",
            self.addr
        )
    }

    /// `ws://127.0.0.1:PORT/xrpc/com.atproto.sync.subscribeRepos`
    pub fn firehose_url(&self) -> String {
        format!("ws://{}/xrpc/com.atproto.sync.subscribeRepos", self.addr)
    }

    /// Makes the first `n` lines visible (live events arriving).
    pub fn publish(&self, n: usize) {
        {
            let mut s = self.state.lock().unwrap();
            s.published = n.min(s.lines.len());
        }
        self.tick.send_modify(|t| *t += 1);
    }

    pub fn publish_all(&self) {
        self.publish(usize::MAX);
    }

    /// Stops (or resumes) sending anything, keeping sockets open.
    pub fn set_silent(&self, silent: bool) {
        self.state.lock().unwrap().silent = silent;
        self.tick.send_modify(|t| *t += 1);
    }

    /// Goes down: every open connection is closed and new ones are
    /// refused (the host is gone, for failover tests).
    pub fn stop(&self) {
        self.state.lock().unwrap().stopped = true;
        self.tick.send_modify(|t| *t += 1);
    }

    /// Firehose: frames with `seq < start` have expired. A cursor before
    /// `start - 1` gets `#info OutdatedCursor`, then frames from `start`.
    pub fn set_window_start(&self, start: i64) {
        self.state.lock().unwrap().window_start = Some(start);
    }

    /// The lines in serving order.
    pub fn lines(&self) -> Vec<Line> {
        self.state.lock().unwrap().lines.clone()
    }

    /// Waits until at least `n` connections have been accepted.
    pub async fn wait_connections(&self, n: usize) {
        let mut rx = self.connections.clone();
        tokio::time::timeout(std::time::Duration::from_secs(30), rx.wait_for(|c| *c >= n))
            .await
            .expect("timed out waiting for a connection")
            .expect("server alive");
    }
}

impl Drop for JetstreamServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The Jetstream v2 frame for a v1 line (subscribeEvents lexicon): `seq` as
/// given, `time` from `time_us` (RFC 3339, µs), commit fields moved up into
/// the payload with the record copied byte for byte, identity/account
/// objects nested as they are.
pub fn v1_to_v2(line: &str, seq: i64) -> String {
    #[derive(serde::Deserialize)]
    struct V1<'a> {
        did: String,
        time_us: i64,
        kind: String,
        #[serde(borrow)]
        commit: Option<std::collections::BTreeMap<String, &'a serde_json::value::RawValue>>,
        #[serde(borrow)]
        identity: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow)]
        account: Option<&'a serde_json::value::RawValue>,
    }
    let v1: V1<'_> = serde_json::from_str(line).unwrap();
    let time = chrono::DateTime::from_timestamp_micros(v1.time_us)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let mut fields = vec![
        format!(
            r#""$type":"network.bsky.jetstream.subscribeEvents#{}""#,
            v1.kind
        ),
        format!(r#""seq":{seq}"#),
        format!(r#""did":{}"#, serde_json::to_string(&v1.did).unwrap()),
        format!(r#""time":"{time}""#),
    ];
    match (v1.commit, v1.identity, v1.account) {
        (Some(c), _, _) => fields.extend(c.iter().map(|(k, v)| format!(r#""{k}":{}"#, v.get()))),
        (_, Some(i), _) => fields.push(format!(r#""identity":{}"#, i.get())),
        (_, _, Some(a)) => fields.push(format!(r#""account":{}"#, a.get())),
        _ => panic!("unexpected v1 event"),
    }
    format!(
        r#"{{"$type":"message","payload":{{{}}}}}"#,
        fields.join(",")
    )
}
