//! The websocket connection loop: connect, read, decode, reconnect.
//!
//! Owns: building the subscribe URL (cursor and server-side filters),
//! failover through the endpoints, capped exponential backoff with jitter,
//! the liveness watchdog, the size limit, and counting what it cannot
//! decode. Reports connection state, every message (pings included) and
//! every drop to [`Obs`], so a silent stream shows as `stale` before the watchdog
//! reconnects it. Does not own: what events mean (decoders are pure
//! functions in the sibling modules) or the stored cursor (the pipeline
//! passes the start point in).
//!
//! Resume rule: the first connection starts at the cursor it is given; every
//! later connection resumes from the last event received (rewound by
//! `rewind_seconds` for time-based cursors), because everything received is
//! already in the pipeline and will be committed or replayed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::dagcbor::Transcoder;
use super::dictionary;
use super::firehose::{self, Frame as FirehoseFrame};
use super::jetstream_v2::{self, V2Frame};
use super::zstd_frames::FrameDecompressor;
use super::{SourceConfig, jetstream, parse_endpoint};
use crate::event::{Cursor, Did, Event, EventKind};
use crate::filter::CollectionPattern;
use crate::obs::{DropReason, Escaped, Obs, ReceivedKind};
use crate::store::cursor::{WireFormat, stream_key};

/// Jetstream v1 accepts at most this many `wantedCollections`.
const MAX_WANTED_COLLECTIONS: usize = 100;
/// Jetstream v1 accepts at most this many `wantedDids`.
const MAX_WANTED_DIDS: usize = 10_000;
/// More DIDs than this go in an `options_update` message, not the URL.
const MAX_URL_DIDS: usize = 50;
/// Most DIDs whose last firehose rev is remembered; past this the memory is
/// cleared (chain checks pause for those DIDs; the SQL rev guards still keep
/// stale data out).
const MAX_TRACKED_REPOS: usize = 2_000_000;
/// Hard cap for tungstenite; larger messages are a broken upstream.
const WS_MAX_MESSAGE: usize = 64 << 20;

/// One endpoint of the failover list.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: Url,
    pub format: WireFormat,
    /// The stream key its cursor is stored under.
    pub key: Arc<str>,
}

impl Endpoint {
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        let (url, format) = parse_endpoint(s)?;
        let key = stream_key(format, &url).into();
        Ok(Endpoint { url, format, key })
    }
}

/// One decoded event and the stream it came from.
#[derive(Debug)]
pub struct Item {
    pub stream: Arc<str>,
    pub event: Event,
}

/// What the server is asked to filter.
#[derive(Debug, Clone, Default)]
pub struct Pushdown {
    /// Collections (none: all).
    pub collections: Vec<CollectionPattern>,
    /// DIDs (none: all).
    pub dids: Option<HashSet<Did>>,
}

/// Reads events from the endpoints until cancelled.
pub struct Reader {
    endpoints: Vec<Endpoint>,
    cfg: SourceConfig,
    pushdown: Pushdown,
    start: Option<Cursor>,
    /// Counters, connection state and last message time (`/health`).
    obs: Arc<Obs>,
    /// Last firehose commit rev seen per DID (this process's lifetime).
    revs: std::sync::Mutex<HashMap<Did, String>>,
    /// The start cursor is the stored one (already applied), not one the
    /// user asked to start from.
    start_is_stored: bool,
}

enum Outcome {
    /// The token was cancelled or the pipeline is gone: stop.
    Stop,
    /// The connection ended; `got_events` says whether it was useful.
    Lost {
        reason: &'static str,
        got_events: bool,
    },
}

impl Reader {
    pub fn new(
        endpoints: Vec<Endpoint>,
        cfg: SourceConfig,
        pushdown: Pushdown,
        start: Option<Cursor>,
        obs: Arc<Obs>,
    ) -> Reader {
        Reader {
            endpoints,
            cfg,
            pushdown,
            start,
            obs,
            revs: std::sync::Mutex::new(HashMap::new()),
            start_is_stored: false,
        }
    }

    /// The connection to `ep` came up or went down: `/health` and the
    /// `parity_source_connected` gauge.
    fn set_connected(&self, ep: &Endpoint, up: bool) {
        self.obs.set_connected(&ep.url, up);
    }

    /// Marks the start cursor as the stored one: on Jetstream v2, whose
    /// cursor replays its own event, that event is then skipped.
    pub fn start_is_stored(mut self) -> Reader {
        self.start_is_stored = true;
        self
    }

    /// The URL for one connection attempt.
    /// `dict_id`: the Jetstream v2 zstd dictionary to ask for.
    pub fn subscribe_url(
        &self,
        ep: &Endpoint,
        cursor: Option<Cursor>,
        dict_id: Option<u32>,
    ) -> (Url, Option<String>) {
        let mut url = ep.url.clone();
        let mut hello = None;
        if ep.format == WireFormat::JetstreamV2 {
            let cols = &self.pushdown.collections;
            let collections: Vec<String> =
                if cols.contains(&CollectionPattern::All) || cols.len() > MAX_WANTED_COLLECTIONS {
                    Vec::new()
                } else {
                    cols.iter().map(ToString::to_string).collect()
                };
            let mut dids: Vec<String> = match &self.pushdown.dids {
                Some(d) if d.len() <= MAX_URL_DIDS => {
                    d.iter().map(|d| d.as_str().to_owned()).collect()
                }
                _ => Vec::new(),
            };
            dids.sort_unstable();
            let q = jetstream_v2::subscribe_query(
                &collections,
                &dids,
                &[],
                cursor.map(|c| c.0),
                dict_id,
            );
            url.query_pairs_mut().extend_pairs(q);
            if url.query() == Some("") {
                url.set_query(None);
            }
            return (url, None);
        }
        if ep.format == WireFormat::Firehose {
            // subscribeRepos has no server-side filters; only the cursor.
            if let Some(c) = cursor {
                url.query_pairs_mut()
                    .append_pair("cursor", &c.0.to_string());
            }
            return (url, None);
        }
        {
            let mut q = url.query_pairs_mut();
            let cols = &self.pushdown.collections;
            if !cols.is_empty()
                && cols.len() <= MAX_WANTED_COLLECTIONS
                && !cols.contains(&CollectionPattern::All)
            {
                for c in cols {
                    q.append_pair("wantedCollections", &c.to_string());
                }
            }
            if let Some(dids) = &self.pushdown.dids {
                let mut sorted: Vec<&str> = dids.iter().map(Did::as_str).collect();
                sorted.sort_unstable();
                if sorted.len() <= MAX_URL_DIDS {
                    for d in sorted {
                        q.append_pair("wantedDids", d);
                    }
                } else if sorted.len() <= MAX_WANTED_DIDS {
                    q.append_pair("requireHello", "true");
                    let collections: Vec<String> = if cols.contains(&CollectionPattern::All)
                        || cols.len() > MAX_WANTED_COLLECTIONS
                    {
                        Vec::new()
                    } else {
                        cols.iter().map(ToString::to_string).collect()
                    };
                    hello = Some(
                        serde_json::json!({
                            "type": "options_update",
                            "payload": {"wantedCollections": collections, "wantedDids": sorted}
                        })
                        .to_string(),
                    );
                }
            }
            if let Some(c) = cursor {
                q.append_pair("cursor", &c.0.to_string());
            }
            if self.cfg.compress {
                q.append_pair("compress", "true");
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        (url, hello)
    }

    fn rewind(&self, format: WireFormat, c: Cursor) -> Cursor {
        if format.time_based() {
            Cursor(
                c.0.saturating_sub(self.cfg.rewind_seconds as i64 * 1_000_000)
                    .max(0),
            )
        } else {
            c
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .cfg
            .backoff_initial_ms
            .saturating_mul(1u64 << attempt.min(20))
            .min(self.cfg.backoff_max_ms);
        // Full jitter on the upper half: spreads reconnect storms.
        let ms = rand::rng().random_range(base / 2..=base.max(1));
        Duration::from_millis(ms)
    }

    /// Runs until `token` is cancelled or the receiver is dropped.
    pub async fn run(self, tx: mpsc::Sender<Item>, token: CancellationToken) {
        let mut idx = 0usize;
        let mut attempt = 0u32;
        let mut last_seen: Option<(WireFormat, Cursor)> = None;
        loop {
            let ep = &self.endpoints[idx % self.endpoints.len()];
            // `floor`: events at or below it were already received. seq
            // cursors replay inclusively; on a restart only Jetstream v2's
            // one-event-per-seq makes the stored cursor safe to skip.
            let (cursor, floor) = match last_seen {
                Some((fmt, c)) if fmt == ep.format => {
                    (Some(self.rewind(fmt, c)), (!fmt.time_based()).then_some(c))
                }
                _ => (
                    self.start,
                    self.start
                        .filter(|_| self.start_is_stored && ep.format == WireFormat::JetstreamV2),
                ),
            };
            let dict = if ep.format == WireFormat::JetstreamV2 && self.cfg.compress {
                let cache = std::path::PathBuf::from(&self.cfg.cache_dir);
                tokio::select! {
                    _ = token.cancelled() => return,
                    r = dictionary::get(&ep.url, &cache) => match r {
                        Ok(d) => Some(d),
                        Err(e) => {
                            tracing::warn!(endpoint = %ep.url, error = %Escaped(&e), "No zstd dictionary; connecting uncompressed.");
                            None
                        }
                    },
                }
            } else {
                None
            };
            let (url, hello) = self.subscribe_url(ep, cursor, dict.as_ref().map(|d| d.0));
            tracing::info!(endpoint = %ep.url, cursor = ?cursor.map(|c| c.0), "Connecting.");
            let dict_id = dict.as_ref().map(|d| d.0);
            let plan = Attempt {
                url,
                hello,
                floor,
                dict,
            };
            let outcome = self.session(ep, plan, &tx, &token, &mut last_seen).await;
            self.set_connected(ep, false);
            match outcome {
                Outcome::Stop => return,
                Outcome::Lost { reason, got_events } => {
                    self.obs.record_reconnect(reason);
                    if let (Some(id), false) = (dict_id, got_events) {
                        // The server may no longer accept this dictionary ID.
                        dictionary::forget(&ep.url, std::path::Path::new(&self.cfg.cache_dir), id);
                    }
                    if got_events {
                        attempt = 0;
                    } else {
                        attempt = attempt.saturating_add(1);
                        idx += 1;
                    }
                    let delay = self.backoff(attempt);
                    tracing::warn!(endpoint = %ep.url, reason, delay_ms = delay.as_millis() as u64, "Connection lost; reconnecting.");
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    async fn session(
        &self,
        ep: &Endpoint,
        plan: Attempt,
        tx: &mpsc::Sender<Item>,
        token: &CancellationToken,
        last_seen: &mut Option<(WireFormat, Cursor)>,
    ) -> Outcome {
        let ws_cfg = WebSocketConfig::default()
            .max_message_size(Some(WS_MAX_MESSAGE))
            .max_frame_size(Some(WS_MAX_MESSAGE));
        let Attempt {
            url,
            hello,
            floor,
            dict,
        } = plan;
        let mut request = match url.as_str().into_client_request() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(endpoint = %ep.url, error = %Escaped(&e), "Bad endpoint URL.");
                return Outcome::Lost {
                    reason: "connect_failed",
                    got_events: false,
                };
            }
        };
        if ep.format == WireFormat::JetstreamV2 {
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                tokio_tungstenite::tungstenite::http::HeaderValue::from_static(
                    jetstream_v2::subscribe::SUBPROTOCOL,
                ),
            );
        }
        let connect = tokio_tungstenite::connect_async_with_config(request, Some(ws_cfg), false);
        let timeout = Duration::from_secs(self.cfg.connect_timeout_seconds.max(1));
        let mut ws = tokio::select! {
            _ = token.cancelled() => return Outcome::Stop,
            r = tokio::time::timeout(timeout, connect) => match r {
                Ok(Ok((ws, _))) => ws,
                Ok(Err(e)) => {
                    tracing::warn!(endpoint = %ep.url, error = %Escaped(&e), "Connect failed.");
                    return Outcome::Lost { reason: "connect_failed", got_events: false };
                }
                Err(_) => return Outcome::Lost { reason: "connect_timeout", got_events: false },
            },
        };
        if let Some(h) = hello
            && ws.send(Message::text(h)).await.is_err()
        {
            return Outcome::Lost {
                reason: "send_failed",
                got_events: false,
            };
        }
        tracing::info!(endpoint = %ep.url, "Connected.");
        self.set_connected(ep, true);
        let idle = Duration::from_secs(self.cfg.idle_timeout_seconds);
        let mut got_events = false;
        let mut codec = Codec {
            transcoder: Transcoder::new(),
            zstd: match dict {
                Some((_, bytes)) => match FrameDecompressor::new(&bytes) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        tracing::warn!(endpoint = %ep.url, error = %Escaped(&e), "Unusable zstd dictionary.");
                        None
                    }
                },
                None => None,
            },
        };
        let mut events = Vec::new();
        loop {
            let msg = tokio::select! {
                _ = token.cancelled() => {
                    let _ = tokio::time::timeout(Duration::from_millis(200), ws.close(None)).await;
                    return Outcome::Stop;
                }
                r = tokio::time::timeout(idle, ws.next()) => r,
            };
            if let Ok(Some(Ok(_))) = &msg {
                // Any message counts, pings included: a quiet stream is alive.
                self.obs.touch();
            }
            let data = match msg {
                Err(_) => {
                    return Outcome::Lost {
                        reason: "idle_timeout",
                        got_events,
                    };
                }
                Ok(None) => {
                    return Outcome::Lost {
                        reason: "closed",
                        got_events,
                    };
                }
                Ok(Some(Err(e))) => {
                    tracing::warn!(endpoint = %ep.url, error = %Escaped(&e), "Websocket error.");
                    return Outcome::Lost {
                        reason: "error",
                        got_events,
                    };
                }
                Ok(Some(Ok(Message::Close(_)))) => {
                    return Outcome::Lost {
                        reason: "closed",
                        got_events,
                    };
                }
                Ok(Some(Ok(Message::Text(t)))) => Msg::Text(t),
                Ok(Some(Ok(Message::Binary(b)))) => Msg::Binary(b),
                Ok(Some(Ok(_))) => continue,
            };
            if let Err(reason) = self.decode(ep, data, &mut codec, &mut events) {
                return Outcome::Lost { reason, got_events };
            }
            for event in events.drain(..) {
                if floor.is_some_and(|f| event.cursor <= f) {
                    continue;
                }
                got_events = true;
                *last_seen = Some((ep.format, event.cursor));
                self.count(&event);
                let item = Item {
                    stream: ep.key.clone(),
                    event,
                };
                tokio::select! {
                    _ = token.cancelled() => return Outcome::Stop,
                    r = tx.send(item) => if r.is_err() { return Outcome::Stop },
                }
            }
        }
    }

    /// Decodes one message into `out`. Undecodable input is counted and
    /// skipped; `Err` means upstream asked us to go away (an error frame),
    /// so the caller reconnects.
    fn decode(
        &self,
        ep: &Endpoint,
        msg: Msg,
        codec: &mut Codec,
        out: &mut Vec<Event>,
    ) -> Result<(), &'static str> {
        let len = msg.len();
        if len > self.cfg.max_message_bytes {
            self.obs.record_drop(DropReason::Oversized);
            tracing::debug!(len, "Oversized message skipped.");
            return Ok(());
        }
        match (ep.format, msg) {
            (WireFormat::JetstreamV1, Msg::Text(t)) => self.decode_json_v1(t.as_bytes(), out),
            (WireFormat::JetstreamV1, Msg::Binary(b)) => {
                if codec.zstd.is_none() {
                    match FrameDecompressor::v1() {
                        Ok(d) => codec.zstd = Some(d),
                        Err(e) => {
                            tracing::error!(error = %Escaped(&e), "Bundled zstd dictionary unusable.");
                            return Err("zstd_dictionary");
                        }
                    }
                }
                if let Some(text) = self.inflate(codec, &b) {
                    self.decode_json_v1(&text, out);
                }
            }
            (WireFormat::JetstreamV2, Msg::Binary(b)) => {
                if let Some(text) = self.inflate(codec, &b) {
                    return self.decode_json_v2(&text, out);
                }
            }
            (WireFormat::JetstreamV2, Msg::Text(t)) => {
                return self.decode_json_v2(t.as_bytes(), out);
            }
            (WireFormat::Firehose, Msg::Binary(b)) => {
                return self.decode_firehose(&b, &mut codec.transcoder, out);
            }
            _ => {
                self.obs.record_drop(DropReason::Malformed);
                tracing::debug!(len, "Message of the wrong frame type skipped.");
            }
        }
        Ok(())
    }

    /// Decompresses one zstd frame with the connection's dictionary; counts
    /// and skips what cannot be (no dictionary, corrupt, over the size limit).
    fn inflate(&self, codec: &mut Codec, frame: &[u8]) -> Option<Vec<u8>> {
        let Some(d) = codec.zstd.as_mut() else {
            self.obs.record_drop(DropReason::Malformed);
            tracing::debug!(
                len = frame.len(),
                "Compressed frame without a dictionary skipped."
            );
            return None;
        };
        match d.decompress(frame, self.cfg.max_message_bytes) {
            Ok(text) => Some(text.to_vec()),
            Err(e) => {
                let reason = if e.reason() == "too_large" {
                    DropReason::Oversized
                } else {
                    DropReason::Malformed
                };
                self.obs.record_drop(reason);
                tracing::debug!(error = %Escaped(&e), len = frame.len(), "Undecompressable frame skipped.");
                None
            }
        }
    }

    fn decode_json_v1(&self, bytes: &[u8], out: &mut Vec<Event>) {
        match jetstream::decode_v1(bytes) {
            Ok(ev) => out.push(ev),
            Err(e) => self.undecodable(&e, bytes.len()),
        }
    }

    fn undecodable(&self, e: &jetstream::DecodeError, len: usize) {
        let reason = match e.reason() {
            "unknown_type" => DropReason::UnknownType,
            _ => DropReason::Malformed,
        };
        self.obs.record_drop(reason);
        tracing::debug!(error = %Escaped(e), len, "Undecodable message skipped.");
    }

    fn decode_json_v2(&self, bytes: &[u8], out: &mut Vec<Event>) -> Result<(), &'static str> {
        match jetstream_v2::decode_v2(bytes) {
            Ok(V2Frame::Event(ev)) => out.push(ev),
            Ok(V2Frame::Info { name, message }) => {
                self.obs.record_received(ReceivedKind::Other);
                tracing::warn!(name = %Escaped(&name), message = ?message.as_deref().map(|m| m.chars().take(200).collect::<String>()), "Upstream info message.");
            }
            Ok(V2Frame::Error { error, message }) => {
                tracing::warn!(error = %Escaped(&error), message = ?message.as_deref().map(|m| m.chars().take(200).collect::<String>()), "Upstream error frame; reconnecting from the stored position.");
                return Err("upstream_error");
            }
            Ok(V2Frame::Unknown { .. }) => self.obs.record_drop(DropReason::UnknownType),
            Err(e) => self.undecodable(&e, bytes.len()),
        }
        Ok(())
    }

    fn decode_firehose(
        &self,
        bytes: &[u8],
        tc: &mut Transcoder,
        out: &mut Vec<Event>,
    ) -> Result<(), &'static str> {
        match firehose::decode_frame_with(bytes, tc) {
            Ok(FirehoseFrame::Commit(c)) => {
                let skip = Event {
                    cursor: Cursor(c.meta.seq),
                    time_us: c.meta.time_us,
                    did: c.meta.did.clone(),
                    kind: EventKind::Skip,
                };
                if !self.check_chain(&c.meta, out) {
                    for _ in &c.events {
                        self.obs.record_drop(DropReason::StaleRev);
                    }
                    tracing::debug!(did = %c.meta.did, seq = c.meta.seq, "Stale commit skipped (rev not newer).");
                    out.push(skip);
                    return Ok(());
                }
                if c.events.is_empty() {
                    out.push(skip);
                }
                for bad in &c.bad_ops {
                    self.obs.record_drop(DropReason::Malformed);
                    tracing::debug!(did = %c.meta.did, seq = c.meta.seq, op = bad.index, reason = bad.kind.label(), "Commit op skipped.");
                }
                out.extend(c.events);
            }
            Ok(FirehoseFrame::Event(ev)) => {
                if let EventKind::Sync { rev } = &ev.kind {
                    self.remember_rev(&ev.did, rev);
                }
                out.push(ev)
            }
            Ok(FirehoseFrame::Info { name, message }) => {
                self.obs.record_received(ReceivedKind::Other);
                tracing::warn!(name = %Escaped(&name), message = ?message.as_deref().map(|m| m.chars().take(200).collect::<String>()), "Upstream info message.");
            }
            Ok(FirehoseFrame::Error { error, message }) => {
                tracing::warn!(error = %Escaped(&error), message = ?message.as_deref().map(|m| m.chars().take(200).collect::<String>()), "Upstream error frame; reconnecting.");
                return Err("upstream_error");
            }
            Ok(FirehoseFrame::Unknown { .. }) => self.obs.record_drop(DropReason::UnknownType),
            Err(e) => {
                self.obs.record_drop(DropReason::Malformed);
                tracing::debug!(error = %Escaped(&e), len = bytes.len(), "Undecodable frame skipped.");
            }
        }
        Ok(())
    }

    /// The sync rules for one firehose commit: `false` when its rev is not
    /// newer than the last one seen for the DID (stale: skip it). When its
    /// `since` does not follow that rev, a `Sync` event is emitted first so
    /// the repo is recorded as needing a re-import; the commit still applies.
    fn check_chain(&self, meta: &firehose::CommitMeta, out: &mut Vec<Event>) -> bool {
        let known = self
            .revs
            .lock()
            .expect("rev map lock")
            .get(&meta.did)
            .cloned();
        if let Some(known) = known {
            if meta.rev <= known {
                return false;
            }
            if meta.since.as_deref().is_some_and(|s| s != known) {
                tracing::info!(did = %meta.did, seq = meta.seq, "Commit does not follow the last rev seen; repo out of sync.");
                out.push(Event {
                    cursor: Cursor(meta.seq),
                    time_us: meta.time_us,
                    did: meta.did.clone(),
                    kind: EventKind::Sync {
                        rev: meta.rev.clone(),
                    },
                });
            }
        }
        self.remember_rev(&meta.did, &meta.rev);
        true
    }

    fn remember_rev(&self, did: &Did, rev: &str) {
        let mut revs = self.revs.lock().expect("rev map lock");
        if revs.len() >= MAX_TRACKED_REPOS && !revs.contains_key(did) {
            revs.clear();
        }
        revs.insert(did.clone(), rev.to_owned());
    }

    fn count(&self, ev: &Event) {
        if let Some(kind) = ReceivedKind::of(&ev.kind) {
            self.obs.record_received(kind);
        }
    }
}

/// What one connection attempt asks for.
struct Attempt {
    url: Url,
    /// First message to send (`options_update` with many DIDs).
    hello: Option<String>,
    /// Events at or below this cursor were already received: drop them.
    floor: Option<Cursor>,
    /// Jetstream v2 zstd dictionary `(id, bytes)` asked for, if any.
    dict: Option<(u32, Vec<u8>)>,
}

/// Per-connection decoding state.
struct Codec {
    transcoder: Transcoder,
    /// Created on the first compressed frame.
    zstd: Option<FrameDecompressor>,
}

/// One data message, as tungstenite hands it over (no copy).
enum Msg {
    Text(tokio_tungstenite::tungstenite::Utf8Bytes),
    Binary(tokio_tungstenite::tungstenite::Bytes),
}

impl Msg {
    fn len(&self) -> usize {
        match self {
            Msg::Text(t) => t.len(),
            Msg::Binary(b) => b.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(collections: &[&str], dids: usize) -> Reader {
        let dids = (dids > 0).then(|| {
            (0..dids)
                .map(|i| Did::parse(&format!("did:plc:{i:04}")).unwrap())
                .collect()
        });
        Reader::new(
            vec![Endpoint::parse("wss://h.example/subscribe").unwrap()],
            SourceConfig::default(),
            Pushdown {
                collections: collections
                    .iter()
                    .map(|c| CollectionPattern::parse(c).unwrap())
                    .collect(),
                dids,
            },
            None,
            Arc::new(Obs::new(Duration::from_secs(60))),
        )
    }

    #[test]
    fn url_carries_filters_and_cursor() {
        let r = reader(&["app.bsky.feed.post", "app.bsky.graph.*"], 2);
        let (url, hello) = r.subscribe_url(&r.endpoints[0], Some(Cursor(1700)), None);
        assert_eq!(
            url.as_str(),
            "wss://h.example/subscribe?wantedCollections=app.bsky.feed.post&wantedCollections=app.bsky.graph.*&wantedDids=did%3Aplc%3A0000&wantedDids=did%3Aplc%3A0001&cursor=1700&compress=true"
        );
        assert!(hello.is_none());
        let r = reader(&["*"], 0);
        assert_eq!(
            r.subscribe_url(&r.endpoints[0], None, None).0.as_str(),
            "wss://h.example/subscribe?compress=true"
        );
    }

    #[test]
    fn many_dids_go_in_a_hello_message() {
        let r = reader(&["app.bsky.feed.post"], 500);
        let (url, hello) = r.subscribe_url(&r.endpoints[0], None, None);
        assert!(url.as_str().contains("requireHello=true"));
        let hello: serde_json::Value = serde_json::from_str(&hello.unwrap()).unwrap();
        assert_eq!(
            hello["payload"]["wantedDids"].as_array().unwrap().len(),
            500
        );
        let r = reader(&[], 20_000);
        let (url, hello) = r.subscribe_url(&r.endpoints[0], None, None);
        assert!(hello.is_none() && !url.as_str().contains("wantedDids"));
    }

    #[test]
    fn rewind_and_backoff_are_bounded() {
        let r = reader(&[], 0);
        assert_eq!(
            r.rewind(WireFormat::JetstreamV1, Cursor(10_000_000)),
            Cursor(5_000_000)
        );
        assert_eq!(r.rewind(WireFormat::JetstreamV1, Cursor(3)), Cursor(0));
        assert_eq!(r.rewind(WireFormat::Firehose, Cursor(3)), Cursor(3));
        for attempt in 0..40 {
            let d = r.backoff(attempt);
            assert!(d <= Duration::from_millis(30_000), "{d:?}");
        }
        assert!(r.backoff(0) <= Duration::from_millis(250));
    }
}
