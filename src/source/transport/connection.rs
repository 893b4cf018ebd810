//! The websocket connection loop: connect, read, reconnect.
//!
//! Owns: failover through the endpoints, capped exponential backoff with
//! jitter, the connect timeout, the liveness watchdog (no message, not even
//! a ping, for `idle_timeout_seconds`: reconnect), fetching the Jetstream v2
//! dictionary before connecting, and handing every data message to the
//! [`Decoder`] and its events to the pipeline. Reports through [`Report`]
//! only. Does not own: what messages mean (`formats`), the subscribe URL
//! (`subscribe`), where to resume (`stream::Resume`), or the stored cursor
//! (the pipeline passes the start point in).
//!
//! Resume rule (`stream::Positions`): every connection to an endpoint
//! starts from that endpoint's own position: the last event received from
//! it in this run (everything received is already in the pipeline and will
//! be committed or replayed), else its stored cursor, else live. A `seq`
//! position never moves to another host; when a failover reaches a host
//! with none, it starts live with one warning and
//! `parity_source_starts_without_cursor_total`. Jetstream v1 `time_us` is
//! shared by all v1 hosts. A cursor the server refuses (`FutureCursor`)
//! makes that endpoint go on live (counted, warned once).

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::dictionary;
use super::report::{After, Escaped, Report};
use super::subscribe::{self, Pushdown};
use crate::event::{Cursor, Event};
use crate::obs::Obs;
use crate::source::SourceConfig;
use crate::source::formats::Fault;
use crate::source::formats::{Decoder, Message, Output};
use crate::source::stream::{Endpoint, Origin, Positions, WireFormat};

/// Hard cap for tungstenite; larger messages are a broken upstream.
const WS_MAX_MESSAGE: usize = 64 << 20;

/// One decoded event and the stream it came from.
#[derive(Debug)]
pub struct Item {
    pub stream: Arc<str>,
    pub event: Event,
    /// The last event of its websocket message (a raw firehose `#commit`
    /// gives one event per op, all with the frame's `seq`; every other
    /// message gives one). The stream's cursor may pass a frame only at its
    /// end (see `batch`).
    pub frame_end: bool,
    /// On the first item of a firehose `#commit` when `source.verify` is
    /// on: what the verifier checks before the frame's items go on.
    pub proof: Option<Box<crate::source::formats::firehose::Proof>>,
}

/// Reads events from the endpoints until cancelled.
pub struct Reader {
    endpoints: Vec<Endpoint>,
    cfg: SourceConfig,
    pushdown: Pushdown,
    /// Where each endpoint starts (stored or asked-for cursors).
    positions: Positions,
    report: Report,
}

enum Outcome {
    /// The token was cancelled or the pipeline is gone: stop.
    Stop,
    /// The connection ended; `got_events` says whether it was useful.
    Lost {
        reason: &'static str,
        got_events: bool,
    },
    /// The server cannot serve the cursor (`FutureCursor`) and closed:
    /// reconnect to the same endpoint, live.
    CursorRefused,
}

impl Outcome {
    fn lost(reason: &'static str) -> Outcome {
        Outcome::Lost {
            reason,
            got_events: false,
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
    /// Starts live only because this host has no position while another
    /// has one: warn and count once connected.
    without_cursor: bool,
}

impl Reader {
    pub fn new(
        endpoints: Vec<Endpoint>,
        cfg: SourceConfig,
        pushdown: Pushdown,
        positions: Positions,
        obs: Arc<Obs>,
    ) -> Reader {
        Reader {
            endpoints,
            cfg,
            pushdown,
            positions,
            report: Report::new(obs),
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

    /// The Jetstream v2 dictionary to ask `ep` for, if compression is on and
    /// one can be had; `Err(())`: cancelled.
    async fn dictionary(
        &self,
        ep: &Endpoint,
        token: &CancellationToken,
    ) -> Result<Option<(u32, Vec<u8>)>, ()> {
        if ep.format != WireFormat::JetstreamV2 || !self.cfg.compress {
            return Ok(None);
        }
        let cache = std::path::PathBuf::from(&self.cfg.cache_dir);
        tokio::select! {
            _ = token.cancelled() => Err(()),
            r = dictionary::get(&ep.url, &cache) => match r {
                Ok(d) => Ok(Some(d)),
                Err(e) => {
                    tracing::warn!(endpoint = %ep.url, error = %Escaped(&e), "No zstd dictionary; connecting uncompressed.");
                    Ok(None)
                }
            },
        }
    }

    /// Runs until `token` is cancelled or the receiver is dropped.
    pub async fn run(self, tx: mpsc::Sender<Item>, token: CancellationToken) {
        let mut decoder = Decoder::new(self.cfg.max_message_bytes);
        decoder.set_verify(self.cfg.verify.is_on());
        let mut idx = 0usize;
        let mut attempt = 0u32;
        let mut positions = self.positions.clone();
        loop {
            let ep = &self.endpoints[idx % self.endpoints.len()];
            let (resume, without_cursor) = positions.resume(ep, self.cfg.rewind_seconds);
            let Ok(dict) = self.dictionary(ep, &token).await else {
                return;
            };
            let dict_id = dict.as_ref().map(|d| d.0);
            let (url, hello) = subscribe::subscribe_url(
                ep,
                &self.pushdown,
                self.cfg.compress,
                resume.cursor,
                dict_id,
            );
            tracing::info!(endpoint = %ep.url, cursor = ?resume.cursor.map(|c| c.0), "Connecting.");
            let plan = Attempt {
                url,
                hello,
                floor: resume.floor,
                dict,
                without_cursor,
            };
            let outcome = self
                .session(ep, plan, &mut decoder, &tx, &token, &mut positions)
                .await;
            self.report.connected(ep, false);
            match outcome {
                Outcome::Stop => return,
                Outcome::CursorRefused if resume.cursor.is_some() => {
                    self.report.reconnect("upstream_error");
                    positions.go_live(ep);
                    attempt = 0;
                }
                Outcome::CursorRefused => {
                    // Refused without a cursor: a broken server. Back off as
                    // for any error, never loop at full speed.
                    self.report.reconnect("upstream_error");
                    attempt = attempt.saturating_add(1);
                    idx += 1;
                    let delay = self.backoff(attempt);
                    tracing::warn!(endpoint = %ep.url, delay_ms = delay.as_millis() as u64, "FutureCursor without a cursor; reconnecting.");
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                Outcome::Lost { reason, got_events } => {
                    self.report.reconnect(reason);
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
        decoder: &mut Decoder,
        tx: &mpsc::Sender<Item>,
        token: &CancellationToken,
        positions: &mut Positions,
    ) -> Outcome {
        let ws_cfg = WebSocketConfig::default()
            .max_message_size(Some(WS_MAX_MESSAGE))
            .max_frame_size(Some(WS_MAX_MESSAGE));
        let Attempt {
            url,
            hello,
            floor,
            dict,
            without_cursor,
        } = plan;
        let request = match subscribe::request(&url, ep.format) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(endpoint = %ep.url, error = %Escaped(&e), "Bad endpoint URL.");
                return Outcome::lost("connect_failed");
            }
        };
        let connect = tokio_tungstenite::connect_async_with_config(request, Some(ws_cfg), false);
        let timeout = Duration::from_secs(self.cfg.connect_timeout_seconds.max(1));
        let mut ws = tokio::select! {
            _ = token.cancelled() => return Outcome::Stop,
            r = tokio::time::timeout(timeout, connect) => match r {
                Ok(Ok((ws, _))) => ws,
                Ok(Err(e)) => {
                    tracing::warn!(endpoint = %ep.url, error = %Escaped(&e), "Connect failed.");
                    return Outcome::lost("connect_failed");
                }
                Err(_) => return Outcome::lost("connect_timeout"),
            },
        };
        if let Some(h) = hello
            && ws.send(WsMessage::text(h)).await.is_err()
        {
            return Outcome::lost("send_failed");
        }
        tracing::info!(endpoint = %ep.url, "Connected.");
        self.report.connected(ep, true);
        if without_cursor {
            self.report.started_without_cursor(ep);
        }
        let idle = Duration::from_secs(self.cfg.idle_timeout_seconds);
        let mut got_events = false;
        if let Err(e) = decoder.connect(ep.format, floor, dict.as_ref().map(|d| d.1.as_slice())) {
            tracing::warn!(endpoint = %ep.url, error = %Escaped(&e), "Unusable zstd dictionary.");
        }
        let mut out = Output::default();
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
                self.report.touch();
            }
            let lost = |reason| Outcome::Lost { reason, got_events };
            let decoded = match msg {
                Err(_) => return lost("idle_timeout"),
                Ok(None) | Ok(Some(Ok(WsMessage::Close(_)))) => return lost("closed"),
                Ok(Some(Err(e))) => {
                    tracing::warn!(endpoint = %ep.url, error = %Escaped(&e), "Websocket error.");
                    return lost("error");
                }
                Ok(Some(Ok(WsMessage::Text(t)))) => {
                    decoder.decode(Message::Text(t.as_bytes()), &mut out)
                }
                Ok(Some(Ok(WsMessage::Binary(b)))) => decoder.decode(Message::Binary(&b), &mut out),
                Ok(Some(Ok(_))) => continue,
            };
            if let Err(fault) = decoded {
                let Fault::BundledDictionary(e) = &fault;
                tracing::error!(error = %Escaped(e), "Bundled zstd dictionary unusable.");
                return lost(fault.reason());
            }
            for d in &out.dropped {
                self.report.dropped(d);
            }
            if let Some(c) = &out.control {
                match self.report.control(ep.format, c) {
                    After::Read => {}
                    After::Reconnect(reason) => return lost(reason),
                    After::GoLive => return Outcome::CursorRefused,
                }
            }
            // A message's events go to the pipeline whole, even when the
            // token is cancelled meanwhile: shutdown never cuts a frame. (The
            // processor drains its queue until this sender is gone, so the
            // sends complete; they fail only if the pipeline is gone.)
            let n = out.events.len();
            let mut proof = out.proof.take().map(Box::new);
            for (i, event) in out.events.drain(..).enumerate() {
                got_events = true;
                positions.set(ep, event.cursor, Origin::Received);
                self.report.received(&event);
                let item = Item {
                    stream: ep.key.clone(),
                    event,
                    frame_end: i + 1 == n,
                    proof: proof.take(),
                };
                if tx.send(item).await.is_err() {
                    return Outcome::Stop;
                }
            }
            if token.is_cancelled() {
                return Outcome::Stop;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded() {
        let r = Reader::new(
            vec![Endpoint::parse("wss://h.example/subscribe").unwrap()],
            SourceConfig::default(),
            Pushdown::default(),
            Positions::default(),
            Arc::new(Obs::new(Duration::from_secs(60))),
        );
        for attempt in 0..40 {
            let d = r.backoff(attempt);
            assert!(d <= Duration::from_millis(30_000), "{d:?}");
        }
        assert!(r.backoff(0) <= Duration::from_millis(250));
    }
}
