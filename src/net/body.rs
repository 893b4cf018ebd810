//! Reading a response body from an untrusted server, with a size limit
//! enforced while it streams.
//!
//! Owns: [`read_limited`]. A declared `Content-Length` over the limit is
//! refused before any byte is read; otherwise chunks are appended until the
//! limit would be passed, and the connection is dropped there, so a chunked
//! body of any length costs at most `limit` bytes of memory.

/// Why a body was not read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the answer is larger than {limit} bytes (refused)")]
    TooLarge { limit: usize },
    #[error(transparent)]
    Transport(#[from] reqwest::Error),
}

/// The whole body of `resp`, at most `limit` bytes.
pub async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    if resp.content_length().is_some_and(|l| l > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    let mut body = Vec::with_capacity(resp.content_length().unwrap_or(0) as usize);
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A local server that answers one request with an endless chunked
    /// body, and reports how many bytes it managed to send.
    async fn endless() -> (String, tokio::task::JoinHandle<usize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", l.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await
                .unwrap();
            let chunk = format!("10000\r\n{}\r\n", " ".repeat(0x10000));
            let mut sent = 0;
            // Stops when the client hangs up (or after 1 GiB).
            while sent < (1 << 30) && s.write_all(chunk.as_bytes()).await.is_ok() {
                sent += 0x10000;
            }
            sent
        });
        (url, task)
    }

    #[tokio::test]
    async fn an_endless_chunked_body_stops_at_the_limit() {
        let (url, server) = endless().await;
        let resp = reqwest::Client::new().get(&url).send().await.unwrap();
        let e = read_limited(resp, 1 << 20).await.unwrap_err();
        assert!(
            matches!(e, BodyError::TooLarge { limit } if limit == 1 << 20),
            "{e}"
        );
        let sent = server.await.unwrap();
        assert!(
            sent < 64 << 20,
            "the client kept reading: {sent} bytes sent"
        );
    }
}
