//! `parity health`: asks a running parity's `/health` whether it is
//! healthy; the container HEALTHCHECK runs it (the runtime image has no
//! curl).
//!
//! Owns: the default URL (derived from `metrics.addr`), the request with a
//! timeout, and turning the answer into one short, escaped line. Does not
//! own what healthy means (`obs::Obs`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use crate::config::Config;
use crate::obs::{Escaped, MetricsConfig};

/// `parity health` arguments.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct HealthOptions {
    /// The health URL [default: http://127.0.0.1:PORT/health, PORT from metrics.addr, else 9464].
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
}

/// `parity health`: prints `healthy` (exit 0) or `unhealthy: WHY` (exit 1).
pub async fn run(cfg: &Config, opts: HealthOptions) -> ExitCode {
    let url = opts.url.unwrap_or_else(|| default_url(&cfg.metrics));
    match probe(&url).await {
        Ok(()) => {
            println!("healthy");
            ExitCode::SUCCESS
        }
        Err(why) => {
            println!("unhealthy: {why}");
            ExitCode::FAILURE
        }
    }
}

/// Longer than any healthy answer takes; shorter than a HEALTHCHECK
/// interval.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where parity listens by default.
pub const DEFAULT_URL: &str = "http://127.0.0.1:9464/health";

/// `http://HOST:PORT/health` for the configured `metrics.addr`, with an
/// unspecified address (`0.0.0.0`, `[::]`) replaced by loopback; the
/// default URL when metrics are off or the address is not valid.
pub fn default_url(cfg: &MetricsConfig) -> String {
    match cfg.listen_addr() {
        Ok(Some(addr)) => {
            let ip = match addr.ip() {
                IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                ip => ip,
            };
            format!("http://{}/health", SocketAddr::new(ip, addr.port()))
        }
        _ => DEFAULT_URL.to_owned(),
    }
}

/// `Ok` on 200; otherwise one line saying why (the server's reason, the
/// status, or why it could not be reached), with control characters
/// escaped.
pub async fn probe(url: &str) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {}", Escaped(&e)))?;
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("cannot reach {}: {}", Escaped(url), Escaped(chain(&e))))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body = resp.text().await.unwrap_or_default();
    let reason = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_owned));
    Err(match reason {
        Some(r) => format!("{} ({})", Escaped(&r), status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    })
}

/// An error and its sources on one line (reqwest's own message names
/// only the URL; the cause, e.g. "Connection refused", is a source).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        next = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_url_follows_metrics_addr() {
        let mut m = MetricsConfig::default();
        assert_eq!(default_url(&m), DEFAULT_URL);
        m.addr = "0.0.0.0:9000".into();
        assert_eq!(default_url(&m), "http://127.0.0.1:9000/health");
        m.addr = "[::]:9000".into();
        assert_eq!(default_url(&m), "http://127.0.0.1:9000/health");
        m.addr = "10.0.0.5:9464".into();
        assert_eq!(default_url(&m), "http://10.0.0.5:9464/health");
        m.addr = "off".into();
        assert_eq!(default_url(&m), DEFAULT_URL);
    }
}
