//! The subscribe handshake of each wire format, pure: the URL of one
//! connection attempt (cursor and server-side filters), the optional first
//! message, and the websocket request.
//!
//! Owns: [`Pushdown`] (what the server is asked to filter) and the limits of
//! each server's filters. Jetstream v1 takes `wantedCollections` /
//! `wantedDids` / `cursor` / `compress` in the URL, and many DIDs in an
//! `options_update` message; Jetstream v2 takes the lexicon parameters of
//! `subscribe_v2`; the firehose takes only `cursor`. Does not own: sending
//! anything (`connection`).

use std::collections::HashSet;

use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use url::Url;

use super::subscribe_v2;
use crate::event::CollectionPattern;
use crate::event::{Cursor, Did};
use crate::source::stream::{Endpoint, WireFormat};

/// Jetstream v1 accepts at most this many `wantedCollections`.
const MAX_WANTED_COLLECTIONS: usize = 100;
/// Jetstream v1 accepts at most this many `wantedDids`.
const MAX_WANTED_DIDS: usize = 10_000;
/// More DIDs than this go in an `options_update` message, not the URL.
const MAX_URL_DIDS: usize = 50;

/// What the server is asked to filter.
#[derive(Debug, Clone, Default)]
pub struct Pushdown {
    /// Collections (none: all).
    pub collections: Vec<CollectionPattern>,
    /// DIDs (none: all).
    pub dids: Option<HashSet<Did>>,
}

impl Pushdown {
    /// The collections to name to the server; empty means all (a wildcard
    /// `*` or more than the server accepts).
    fn wanted_collections(&self) -> Vec<String> {
        let cols = &self.collections;
        if cols.contains(&CollectionPattern::All) || cols.len() > MAX_WANTED_COLLECTIONS {
            Vec::new()
        } else {
            cols.iter().map(ToString::to_string).collect()
        }
    }
}

/// The URL for one connection attempt, and the first message to send
/// (`options_update` with many DIDs). `compress`: ask Jetstream v1 for zstd
/// frames; `dict_id`: the Jetstream v2 zstd dictionary to ask for.
pub fn subscribe_url(
    ep: &Endpoint,
    pushdown: &Pushdown,
    compress: bool,
    cursor: Option<Cursor>,
    dict_id: Option<u32>,
) -> (Url, Option<String>) {
    let mut url = ep.url.clone();
    let mut hello = None;
    match ep.format {
        WireFormat::JetstreamV2 => {
            let mut dids: Vec<String> = match &pushdown.dids {
                Some(d) if d.len() <= MAX_URL_DIDS => {
                    d.iter().map(|d| d.as_str().to_owned()).collect()
                }
                _ => Vec::new(),
            };
            dids.sort_unstable();
            let q = subscribe_v2::subscribe_query(
                &pushdown.wanted_collections(),
                &dids,
                &[],
                cursor.map(|c| c.0),
                dict_id,
            );
            url.query_pairs_mut().extend_pairs(q);
        }
        WireFormat::Firehose => {
            // subscribeRepos has no server-side filters; only the cursor.
            if let Some(c) = cursor {
                url.query_pairs_mut()
                    .append_pair("cursor", &c.0.to_string());
            }
        }
        WireFormat::JetstreamV1 => {
            let mut q = url.query_pairs_mut();
            let cols = &pushdown.collections;
            if !cols.is_empty()
                && cols.len() <= MAX_WANTED_COLLECTIONS
                && !cols.contains(&CollectionPattern::All)
            {
                for c in cols {
                    q.append_pair("wantedCollections", &c.to_string());
                }
            }
            if let Some(dids) = &pushdown.dids {
                let mut sorted: Vec<&str> = dids.iter().map(Did::as_str).collect();
                sorted.sort_unstable();
                if sorted.len() <= MAX_URL_DIDS {
                    for d in sorted {
                        q.append_pair("wantedDids", d);
                    }
                } else if sorted.len() <= MAX_WANTED_DIDS {
                    q.append_pair("requireHello", "true");
                    hello = Some(
                        serde_json::json!({
                            "type": "options_update",
                            "payload": {"wantedCollections": pushdown.wanted_collections(), "wantedDids": sorted}
                        })
                        .to_string(),
                    );
                }
            }
            if let Some(c) = cursor {
                q.append_pair("cursor", &c.0.to_string());
            }
            if compress {
                q.append_pair("compress", "true");
            }
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    (url, hello)
}

/// The websocket request for `url`; Jetstream v2 offers its subprotocol.
pub fn request(
    url: &Url,
    format: WireFormat,
) -> Result<tungstenite::handshake::client::Request, tungstenite::Error> {
    let mut request = url.as_str().into_client_request()?;
    if format == WireFormat::JetstreamV2 {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            tungstenite::http::HeaderValue::from_static(subscribe_v2::SUBPROTOCOL),
        );
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(collections: &[&str], dids: usize) -> (Endpoint, Pushdown) {
        let dids = (dids > 0).then(|| {
            (0..dids)
                .map(|i| Did::parse(&format!("did:plc:{i:04}")).unwrap())
                .collect()
        });
        let pushdown = Pushdown {
            collections: collections
                .iter()
                .map(|c| CollectionPattern::parse(c).unwrap())
                .collect(),
            dids,
        };
        (
            Endpoint::parse("wss://h.example/subscribe").unwrap(),
            pushdown,
        )
    }

    #[test]
    fn url_carries_filters_and_cursor() {
        let (ep, p) = setup(&["app.bsky.feed.post", "app.bsky.graph.*"], 2);
        let (url, hello) = subscribe_url(&ep, &p, true, Some(Cursor(1700)), None);
        assert_eq!(
            url.as_str(),
            "wss://h.example/subscribe?wantedCollections=app.bsky.feed.post&wantedCollections=app.bsky.graph.*&wantedDids=did%3Aplc%3A0000&wantedDids=did%3Aplc%3A0001&cursor=1700&compress=true"
        );
        assert!(hello.is_none());
        let (ep, p) = setup(&["*"], 0);
        assert_eq!(
            subscribe_url(&ep, &p, true, None, None).0.as_str(),
            "wss://h.example/subscribe?compress=true"
        );
    }

    #[test]
    fn many_dids_go_in_a_hello_message() {
        let (ep, p) = setup(&["app.bsky.feed.post"], 500);
        let (url, hello) = subscribe_url(&ep, &p, true, None, None);
        assert!(url.as_str().contains("requireHello=true"));
        let hello: serde_json::Value = serde_json::from_str(&hello.unwrap()).unwrap();
        assert_eq!(
            hello["payload"]["wantedDids"].as_array().unwrap().len(),
            500
        );
        let (ep, p) = setup(&[], 20_000);
        let (url, hello) = subscribe_url(&ep, &p, true, None, None);
        assert!(hello.is_none() && !url.as_str().contains("wantedDids"));
    }

    #[test]
    fn v2_and_firehose_urls() {
        let (_, p) = setup(&["app.bsky.feed.post"], 1);
        let v2 = Endpoint::parse("ws://h:1/xrpc/network.bsky.jetstream.subscribeEvents").unwrap();
        assert_eq!(
            subscribe_url(&v2, &p, true, Some(Cursor(9)), Some(7))
                .0
                .as_str(),
            "ws://h:1/xrpc/network.bsky.jetstream.subscribeEvents?collections=app.bsky.feed.post&dids=did%3Aplc%3A0000&cursor=9&zstdDictionary=7"
        );
        let fh = Endpoint::parse("ws://h:1/xrpc/com.atproto.sync.subscribeRepos").unwrap();
        assert_eq!(
            subscribe_url(&fh, &p, true, None, None).0.as_str(),
            "ws://h:1/xrpc/com.atproto.sync.subscribeRepos"
        );
        assert_eq!(
            subscribe_url(&fh, &p, true, Some(Cursor(3)), None)
                .0
                .as_str(),
            "ws://h:1/xrpc/com.atproto.sync.subscribeRepos?cursor=3"
        );
        let req = request(&v2.url, WireFormat::JetstreamV2).unwrap();
        assert_eq!(
            req.headers()["Sec-WebSocket-Protocol"],
            subscribe_v2::SUBPROTOCOL
        );
        let req = request(&fh.url, WireFormat::Firehose).unwrap();
        assert!(req.headers().get("Sec-WebSocket-Protocol").is_none());
    }
}
