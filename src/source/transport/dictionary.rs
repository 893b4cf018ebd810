//! The Jetstream v2 zstd dictionary: fetched over HTTP from the endpoint's
//! `network.bsky.jetstream.getZstdDictionary` and cached on disk by host and
//! ID, so a restart does not fetch it again. This file does IO (HTTP and
//! the file system); that is why it sits in `transport`.
//!
//! Owns: the HTTP fetch (no redirects; the body is read with the
//! [`MAX_DICTIONARY_LEN`] limit while it streams, chunked or not) and the
//! cache files
//! (`CACHE_DIR/jetstream-v2/<host>_<port>/<id>.zdict`, written to a temp
//! file and renamed). Does not own: decompression (`codecs::zstd_frames`)
//! or the response format (`subscribe_v2::parse_zstd_dictionary`).
//!
//! Dictionaries are immutable per ID. If the server no longer accepts a
//! cached ID, the caller calls [`forget`] and the next attempt fetches the
//! current one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use super::subscribe_v2::{GET_ZSTD_DICTIONARY_PATH, MAX_DICTIONARY_LEN, parse_zstd_dictionary};
use crate::source::codecs::zstd_frames::dictionary_id;

/// Longest wait for the dictionary download.
const FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// Why no dictionary could be had; the caller connects uncompressed.
#[derive(Debug, thiserror::Error)]
pub enum DictionaryError {
    #[error("dictionary request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("dictionary request answered HTTP {0}")]
    Status(u16),
    #[error("bad dictionary response: {0}")]
    Body(#[from] super::subscribe_v2::DictionaryError),
    #[error("dictionary cache: {0}")]
    Io(#[from] std::io::Error),
}

fn host_dir(cache: &Path, endpoint: &Url) -> PathBuf {
    let host = endpoint
        .host_str()
        .unwrap_or("unknown")
        .replace(['/', '\\', ':'], "_");
    let port = endpoint.port_or_known_default().unwrap_or(0);
    cache.join("jetstream-v2").join(format!("{host}_{port}"))
}

/// The newest cached dictionary for this endpoint, if any.
fn cached(dir: &Path) -> Option<(u32, Vec<u8>)> {
    let mut best: Option<u32> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let name = entry.file_name();
        let id = name.to_str()?.strip_suffix(".zdict")?.parse::<u32>().ok()?;
        best = best.max(Some(id));
    }
    let id = best?;
    let bytes = std::fs::read(dir.join(format!("{id}.zdict"))).ok()?;
    (dictionary_id(&bytes) == Some(id)).then_some((id, bytes))
}

/// The dictionary to use with `endpoint`: from the cache, else fetched.
pub async fn get(endpoint: &Url, cache: &Path) -> Result<(u32, Vec<u8>), DictionaryError> {
    let dir = host_dir(cache, endpoint);
    if let Some(hit) = cached(&dir) {
        return Ok(hit);
    }
    let mut url = endpoint.clone();
    let scheme = if endpoint.scheme() == "wss" {
        "https"
    } else {
        "http"
    };
    url.set_scheme(scheme).ok();
    url.set_path(GET_ZSTD_DICTIONARY_PATH);
    url.set_query(None);
    let client = reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let resp = client.get(url).send().await?;
    if !resp.status().is_success() {
        return Err(DictionaryError::Status(resp.status().as_u16()));
    }
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match crate::net::read_limited(resp, MAX_DICTIONARY_LEN).await {
        Ok(b) => b,
        Err(crate::net::BodyError::TooLarge { .. }) => {
            return Err(
                super::subscribe_v2::DictionaryError::TooLarge(MAX_DICTIONARY_LEN + 1).into(),
            );
        }
        Err(crate::net::BodyError::Transport(e)) => return Err(e.into()),
    };
    let (id, dict) = parse_zstd_dictionary(content_type.as_deref(), &body, None)?;
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!(".{id}.zdict.tmp"));
    std::fs::write(&tmp, dict)?;
    std::fs::rename(&tmp, dir.join(format!("{id}.zdict")))?;
    Ok((id, dict.to_vec()))
}

/// Drops a cached dictionary the server no longer accepts.
pub fn forget(endpoint: &Url, cache: &Path, id: u32) {
    let _ = std::fs::remove_file(host_dir(cache, endpoint).join(format!("{id}.zdict")));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_round_trip_checks_the_id() {
        let dir = tempfile::tempdir().unwrap();
        let ep = Url::parse("wss://jetstream.example/xrpc/network.bsky.jetstream.subscribeEvents")
            .unwrap();
        let hd = host_dir(dir.path(), &ep);
        assert!(hd.ends_with("jetstream-v2/jetstream.example_443"));
        assert!(cached(&hd).is_none());
        std::fs::create_dir_all(&hd).unwrap();
        let v2 = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/jetstream/zstd/subscribe_events_20260811.zdict"
        ))
        .unwrap();
        std::fs::write(hd.join("20260811.zdict"), &v2).unwrap();
        // A file whose name lies about its ID is not used.
        std::fs::write(hd.join("20270101.zdict"), &v2).unwrap();
        assert!(cached(&hd).is_none());
        forget(&ep, dir.path(), 20270101);
        assert_eq!(cached(&hd).map(|(id, _)| id), Some(20260811));
    }

    /// A local Jetstream v2 endpoint whose dictionary answer is a chunked
    /// body of `len` bytes (no Content-Length); returns the endpoint and
    /// the bytes the server managed to send.
    async fn chunked_server(len: usize) -> (Url, tokio::task::JoinHandle<usize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ep = Url::parse(&format!(
            "ws://{}/xrpc/network.bsky.jetstream.subscribeEvents",
            l.local_addr().unwrap()
        ))
        .unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await.unwrap();
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                        X-Zstd-Dictionary-Id: 20260811\r\nTransfer-Encoding: chunked\r\n\r\n";
            s.write_all(head.as_bytes()).await.unwrap();
            let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
            let mut sent = 0;
            while sent < len && s.write_all(chunk.as_bytes()).await.is_ok() {
                sent += 0x10000;
            }
            let _ = s.write_all(b"0\r\n\r\n").await;
            sent
        });
        (ep, task)
    }

    #[tokio::test]
    async fn an_oversized_chunked_dictionary_is_refused_while_streaming() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let (ep, server) = chunked_server(1 << 30).await;
        let e = get(&ep, dir.path()).await.unwrap_err();
        assert!(
            matches!(
                e,
                DictionaryError::Body(super::super::subscribe_v2::DictionaryError::TooLarge(_))
            ),
            "{e}"
        );
        let sent = server.await.unwrap();
        assert!(sent < 256 << 20, "the client read {sent} bytes");
    }
}
