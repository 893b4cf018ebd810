//! A TCP proxy in front of a real server whose traffic can be stalled: a
//! stand-in for a broker link that stops answering. Stalling `Replies`
//! keeps forwarding what the client sends but holds back everything the
//! server sends (acknowledgements included) until [`StallProxy::release`]:
//! the broker took the messages, the client never learns it. Stalling
//! `Both` cuts the link: what the client sends is lost and the server's
//! replies are held. Meant for clients that die (`kill -9`) before the
//! release; their replacements connect afresh.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Which directions a stall holds back.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stall {
    Replies,
    Both,
}

pub struct StallProxy {
    pub addr: SocketAddr,
    /// `None`: flowing; `Some(mode)`: stalled.
    state: watch::Sender<Option<Stall>>,
    /// Bytes the client sent that reached the server while `Replies` was
    /// stalled.
    pub sent_while_stalled: Arc<AtomicU64>,
}

impl StallProxy {
    /// Listens on a free loopback port; each connection is forwarded to
    /// `target` (`host:port`).
    pub async fn start(target: &str) -> StallProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (state, _) = watch::channel(None);
        let sent = Arc::new(AtomicU64::new(0));
        let (tx, target, counter) = (state.clone(), target.to_owned(), sent.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(&target).await.unwrap();
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, tx.subscribe(), Some(counter.clone())));
                tokio::spawn(pump(sr, cw, tx.subscribe(), None));
            }
        });
        StallProxy {
            addr,
            state,
            sent_while_stalled: sent,
        }
    }

    pub fn stall(&self, mode: Stall) {
        self.state.send_replace(Some(mode));
    }

    pub fn release(&self) {
        self.state.send_replace(None);
    }
}

/// Copies `from` to `to`. Client → server (`upstream`): dropped while
/// `Both` is on, counted in `sent_while_stalled` while `Replies` is on.
/// Server → client: held while any stall is on.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut state: watch::Receiver<Option<Stall>>,
    upstream: Option<Arc<AtomicU64>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let now = *state.borrow();
        match &upstream {
            Some(sent) => match now {
                Some(Stall::Both) => continue,
                Some(Stall::Replies) => {
                    sent.fetch_add(n as u64, Relaxed);
                }
                None => {}
            },
            None => {
                if state.wait_for(Option::is_none).await.is_err() {
                    return;
                }
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
