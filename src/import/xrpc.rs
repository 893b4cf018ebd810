//! The XRPC client of `parity import`: paced per PDS host, patient with
//! rate limits, retrying transient faults.
//!
//! Owns: one GCRA limiter per host (`import.requests_per_second`, shared by
//! every DID on that host), the host's "not before" time set by `429` +
//! `Retry-After` / `ratelimit-reset` or by `ratelimit-remaining: 0`,
//! exponential backoff with jitter on 5xx, timeouts, cut-off bodies and
//! malformed JSON (at most `import.max_retries` attempts), and the
//! `parity_import_requests_total{status}` / `parity_import_rate_limited_total`
//! metrics. Error bodies from peers are reduced to their XRPC error name
//! (letters only), never echoed.
//!
//! The PDS is named by a stranger's DID document: requests go only to an
//! https origin at a public address (checked before sending and again at
//! connect time, see `net`), redirects are answers (never followed), a
//! rate-limit header can pause a host for at most
//! `import.max_rate_limit_wait_seconds`, and bodies are read with a size
//! limit per method ([`body_limit`]), enforced while they stream; a
//! `getRepo` CAR ([`Xrpc::get_repo`]) is indexed as it streams and bounded
//! by `import.max_repo_bytes`.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rand::Rng;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::ImportConfig;
use super::identity::describe;
use crate::net::{self, BodyError, Policy};
use crate::obs::names;
use crate::source::codecs::repo::{Blocks, CarStream, RepoError};

/// `com.atproto.sync.getRepo`: the whole repository as a CAR.
pub const GET_REPO: &str = "com.atproto.sync.getRepo";

/// Why a 2xx answer's body was not usable.
enum BodyFault {
    /// Breaks a rule that protects us (too large): not retried.
    Reject(String),
    /// Cut off or malformed: retried like a 5xx.
    Retry(String),
}

/// 429s in a row on one request before giving up on it.
const MAX_RATE_LIMITED: u32 = 50;

/// Largest `listRecords` answer read: 100 records of at most 1 MiB each
/// would be 100 MiB; real pages are well under 1 MiB, so 16 MiB leaves
/// room for big records without letting one page exhaust memory.
pub const MAX_LIST_RECORDS_BYTES: usize = 16 << 20;
/// Largest answer of every other method (describeRepo, getLatestCommit,
/// getRepoStatus): a few KB in practice.
pub const MAX_OTHER_BYTES: usize = 1 << 20;

/// The body limit of one XRPC method.
pub fn body_limit(method: &str) -> usize {
    match method {
        "com.atproto.repo.listRecords" => MAX_LIST_RECORDS_BYTES,
        _ => MAX_OTHER_BYTES,
    }
}

/// Why a request did not produce an answer.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum XrpcError {
    /// A definitive answer (4xx other than 429, or 501): retrying will not
    /// help.
    #[error("{method} answered HTTP {status}{}", .error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default())]
    Refused {
        method: String,
        status: u16,
        /// The XRPC `error` name (letters only), e.g. `RepoNotFound`.
        error: Option<String>,
    },
    /// Transient faults until the retry budget ran out.
    #[error("{method}: {detail} (gave up after {attempts} attempts)")]
    Exhausted {
        method: String,
        detail: String,
        attempts: u32,
    },
    /// The request or its answer breaks a rule that protects us (an
    /// address that is not public, an oversized body): not retried.
    #[error("{method}: {detail}")]
    Rejected { method: String, detail: String },
    #[error("interrupted")]
    Cancelled,
}

/// A paced XRPC client shared by every import task.
pub struct Xrpc {
    http: reqwest::Client,
    limiter: DefaultKeyedRateLimiter<String>,
    not_before: Mutex<HashMap<String, Instant>>,
    max_retries: u32,
    backoff_initial: Duration,
    backoff_max: Duration,
    /// Longest pause one rate-limit header can impose.
    max_wait: Duration,
    policy: Policy,
}

impl Xrpc {
    pub fn new(cfg: &ImportConfig, policy: Policy) -> Result<Xrpc, String> {
        let http = net::client::guarded(policy, Duration::from_secs(cfg.timeout_seconds))?;
        let rps = NonZeroU32::new(cfg.requests_per_second).unwrap_or(NonZeroU32::MIN);
        // Burst of one: requests are spread evenly, never bunched.
        let quota = Quota::per_second(rps).allow_burst(NonZeroU32::MIN);
        Ok(Xrpc {
            http,
            limiter: RateLimiter::keyed(quota),
            not_before: Mutex::new(HashMap::new()),
            max_retries: cfg.max_retries.max(1),
            backoff_initial: Duration::from_millis(cfg.backoff_initial_ms.max(1)),
            backoff_max: Duration::from_millis(cfg.backoff_max_ms.max(1)),
            max_wait: Duration::from_secs(cfg.max_rate_limit_wait_seconds.max(1)),
            policy,
        })
    }

    /// `GET {base}/xrpc/{method}?{params}`, decoded as `T`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        base: &str,
        method: &str,
        params: &[(&str, &str)],
        token: &CancellationToken,
    ) -> Result<T, XrpcError> {
        let limit = body_limit(method);
        self.request(base, method, params, token, |resp| async move {
            match net::read_limited(resp, limit).await {
                Ok(body) => serde_json::from_slice::<T>(&body)
                    .map_err(|_| BodyFault::Retry("the answer is not the expected JSON".into())),
                Err(e @ BodyError::TooLarge { .. }) => Err(BodyFault::Reject(e.to_string())),
                Err(BodyError::Transport(e)) => Err(BodyFault::Retry(describe(&e))),
            }
        })
        .await
    }

    /// `com.atproto.sync.getRepo` for `did`, read into a [`CarStream`] as
    /// it arrives: at most `max_bytes` are held. The inner result is the
    /// CAR's own verdict (too big, malformed), which no retry changes.
    pub async fn get_repo(
        &self,
        base: &str,
        did: &str,
        max_bytes: u64,
        token: &CancellationToken,
    ) -> Result<Result<Blocks, RepoError>, XrpcError> {
        let params = [("did", did)];
        self.request(base, GET_REPO, &params, token, |mut resp| async move {
            if resp.content_length().is_some_and(|l| l > max_bytes) {
                return Ok(Err(RepoError::TooBig(max_bytes)));
            }
            let mut car = CarStream::new(max_bytes);
            loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        if let Err(e) = car.push(&chunk) {
                            return Ok(Err(e));
                        }
                    }
                    Ok(None) => return Ok(car.finish()),
                    Err(e) => return Err(BodyFault::Retry(describe(&e))),
                }
            }
        })
        .await
    }

    /// One paced, retried request; `read` turns a 2xx answer into `T`.
    async fn request<T, F, Fut>(
        &self,
        base: &str,
        method: &str,
        params: &[(&str, &str)],
        token: &CancellationToken,
        read: F,
    ) -> Result<T, XrpcError>
    where
        F: Fn(reqwest::Response) -> Fut,
        Fut: std::future::Future<Output = Result<T, BodyFault>>,
    {
        let url = format!("{base}/xrpc/{method}");
        let rejected = |detail: String| XrpcError::Rejected {
            method: method.into(),
            detail,
        };
        let parsed = url::Url::parse(&url).map_err(|_| rejected("not a URL".into()))?;
        net::origin::check(&parsed, self.policy).map_err(rejected)?;
        let host = host_key(base);
        let mut attempts = 0u32;
        let mut limited = 0u32;
        loop {
            self.pace(&host, token).await?;
            let sent = self.http.get(&url).query(params).send();
            let result = tokio::select! {
                r = sent => r,
                _ = token.cancelled() => return Err(XrpcError::Cancelled),
            };
            let fault = match result {
                Err(e) => {
                    count(if e.is_timeout() { "timeout" } else { "error" });
                    if let Some(refused) = net::address::refusal(&e) {
                        return Err(rejected(refused));
                    }
                    describe(&e)
                }
                Ok(resp) => {
                    let status = resp.status();
                    count(status_label(status));
                    self.note_headers(&host, resp.headers());
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        metrics::counter!(names::IMPORT_RATE_LIMITED).increment(1);
                        limited += 1;
                        if limited > MAX_RATE_LIMITED {
                            return Err(XrpcError::Exhausted {
                                method: method.into(),
                                detail: "rate limited (429) too many times".into(),
                                attempts: attempts + limited,
                            });
                        }
                        let wait = retry_after(resp.headers())
                            .unwrap_or_else(|| self.backoff(limited))
                            .min(self.max_wait);
                        tracing::info!(host = %host, wait_ms = wait.as_millis() as u64, "PDS rate limit (429): waiting");
                        self.block(&host, wait);
                        continue;
                    }
                    if status.is_success() {
                        match read(resp).await {
                            Ok(v) => return Ok(v),
                            Err(BodyFault::Reject(detail)) => return Err(rejected(detail)),
                            Err(BodyFault::Retry(detail)) => detail,
                        }
                    } else if status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED {
                        format!("HTTP {}", status.as_u16())
                    } else {
                        let body = net::read_limited(resp, MAX_OTHER_BYTES)
                            .await
                            .unwrap_or_default();
                        return Err(XrpcError::Refused {
                            method: method.into(),
                            status: status.as_u16(),
                            error: xrpc_error_name(&body),
                        });
                    }
                }
            };
            attempts += 1;
            if attempts >= self.max_retries {
                return Err(XrpcError::Exhausted {
                    method: method.into(),
                    detail: fault,
                    attempts,
                });
            }
            let wait = self.backoff(attempts);
            tracing::debug!(host = %host, method, attempt = attempts, fault = %fault, "retrying");
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = token.cancelled() => return Err(XrpcError::Cancelled),
            }
        }
    }

    /// Waits for the host's rate-limit window and then for a limiter slot.
    async fn pace(&self, host: &str, token: &CancellationToken) -> Result<(), XrpcError> {
        loop {
            let until = self
                .not_before
                .lock()
                .expect("not_before lock")
                .get(host)
                .copied();
            match until {
                Some(t) if t > Instant::now() => tokio::select! {
                    _ = tokio::time::sleep_until(t) => {}
                    _ = token.cancelled() => return Err(XrpcError::Cancelled),
                },
                _ => break,
            }
        }
        let key = host.to_owned();
        tokio::select! {
            _ = self.limiter.until_key_ready(&key) => Ok(()),
            _ = token.cancelled() => Err(XrpcError::Cancelled),
        }
    }

    fn block(&self, host: &str, wait: Duration) {
        if wait > self.max_wait {
            tracing::info!(host = %host, asked_s = wait.as_secs(), capped_s = self.max_wait.as_secs(), "PDS asked for a longer pause than import.max_rate_limit_wait_seconds: capped");
        }
        let until = Instant::now() + wait.min(self.max_wait);
        let mut map = self.not_before.lock().expect("not_before lock");
        let e = map.entry(host.to_owned()).or_insert(until);
        if *e < until {
            *e = until;
        }
    }

    /// `ratelimit-remaining: 0` means the next request would be refused:
    /// wait for `ratelimit-reset` instead of provoking a 429.
    fn note_headers(&self, host: &str, h: &HeaderMap) {
        let remaining = header_u64(h, "ratelimit-remaining");
        if remaining == Some(0)
            && let Some(wait) = reset_wait(h)
        {
            self.block(host, wait);
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .backoff_initial
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.backoff_max);
        // Full jitter on the upper half: spread retries of many tasks.
        let half = base / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }
}

fn count(status: &'static str) {
    metrics::counter!(names::IMPORT_REQUESTS, "status" => status).increment(1);
}

/// A bounded label: the code for the statuses that matter, else the class.
fn status_label(s: StatusCode) -> &'static str {
    match s.as_u16() {
        400 => "400",
        404 => "404",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        100..=299 => "2xx",
        300..=399 => "3xx",
        401..=499 => "4xx",
        _ => "5xx",
    }
}

/// `host[:port]` of a base URL: the unit of pacing.
fn host_key(base: &str) -> String {
    url::Url::parse(base)
        .ok()
        .and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_owned(),
            })
        })
        .unwrap_or_else(|| base.to_owned())
}

fn header_u64(h: &HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// `Retry-After` (seconds or an HTTP date), else `ratelimit-reset`.
fn retry_after(h: &HeaderMap) -> Option<Duration> {
    if let Some(v) = h.get("retry-after").and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if let Ok(secs) = v.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(t) = chrono::DateTime::parse_from_rfc2822(v) {
            let t: SystemTime = t.into();
            return Some(t.duration_since(SystemTime::now()).unwrap_or_default());
        }
    }
    reset_wait(h)
}

/// `ratelimit-reset`: an epoch time in seconds (Bluesky), or a delta in
/// seconds (IETF draft) when it is small.
fn reset_wait(h: &HeaderMap) -> Option<Duration> {
    let reset = header_u64(h, "ratelimit-reset")?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(Duration::from_secs(if reset > 1_000_000_000 {
        reset.saturating_sub(now)
    } else {
        reset
    }))
}

/// The `error` field of an XRPC error body, if it is a plain name.
fn xrpc_error_name(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct E {
        error: String,
    }
    let e: E = serde_json::from_slice(body).ok()?;
    (!e.error.is_empty() && e.error.len() <= 64 && e.error.bytes().all(|b| b.is_ascii_alphabetic()))
        .then_some(e.error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_reads_seconds_dates_and_reset() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let mut h = HeaderMap::new();
        let soon = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 30;
        h.insert(
            "ratelimit-reset",
            HeaderValue::from_str(&soon.to_string()).unwrap(),
        );
        let w = retry_after(&h).unwrap();
        assert!(
            w <= Duration::from_secs(30) && w >= Duration::from_secs(28),
            "{w:?}"
        );
        h.insert("ratelimit-reset", HeaderValue::from_static("12"));
        assert_eq!(reset_wait(&h), Some(Duration::from_secs(12)));
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn error_names_are_letters_only() {
        assert_eq!(
            xrpc_error_name(br#"{"error":"RepoNotFound","message":"x"}"#).as_deref(),
            Some("RepoNotFound")
        );
        assert_eq!(xrpc_error_name(br#"{"error":"\u001b[31mred"}"#), None);
        assert_eq!(xrpc_error_name(b"<html>"), None);
    }

    #[tokio::test]
    async fn one_header_cannot_park_a_host_past_the_cap() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cfg = ImportConfig {
            max_rate_limit_wait_seconds: 5,
            ..ImportConfig::default()
        };
        let x = Xrpc::new(&cfg, Policy::default()).unwrap();
        x.block("pds.example.com", Duration::from_secs(3600));
        let until = x.not_before.lock().unwrap()["pds.example.com"];
        assert!(
            until <= Instant::now() + Duration::from_secs(5),
            "parked past the cap"
        );
    }

    #[test]
    fn hosts_include_the_port() {
        assert_eq!(host_key("http://127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(host_key("https://pds.example.com"), "pds.example.com");
    }
}
