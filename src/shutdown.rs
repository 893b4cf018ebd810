//! Shutdown on SIGINT/SIGTERM through one `CancellationToken`.
//!
//! The first signal cancels the token: the reader stops, the partial batch is
//! flushed and committed, and the process exits 0. A second signal exits at
//! once (the batch in flight rolls back as a whole; nothing is half-written).

use tokio_util::sync::CancellationToken;

/// Spawns the signal watcher and returns the token it cancels.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("Shutting down: finishing the current batch.");
        t.cancel();
        wait_for_signal().await;
        tracing::warn!(
            "Second signal: exiting now; the uncommitted batch will be replayed on restart."
        );
        std::process::exit(130);
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            // Without signal handlers the process can still be killed; just never cancel.
            std::future::pending::<()>().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
