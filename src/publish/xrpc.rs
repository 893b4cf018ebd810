//! The XRPC calls of the publish direction, and what their answers mean.
//!
//! Owns: `createSession`, `refreshSession`, `deleteSession`,
//! `applyWrites`, `putRecord`, `deleteRecord`, `getLatestCommit`, each a
//! POST/GET with a bounded body, and [`CallError`], the classification the
//! worker acts on. Error names from the PDS are kept only if they look like
//! an XRPC error name; messages are cut to [`MAX_MESSAGE`] characters and
//! escaped when shown. Tokens go in the Authorization header only and are
//! never part of an error.

use std::time::Duration;

use serde_json::Value;

use crate::net::{self, Policy};
use crate::obs::Escaped;

/// Largest answer read from a PDS (an applyWrites result of 200 writes is
/// about 40 KB).
pub const MAX_BODY: usize = 1 << 20;
/// Longest PDS error message kept.
pub const MAX_MESSAGE: usize = 200;

/// What went wrong with one call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The access token expired: refresh the session and try again.
    #[error("ExpiredToken: the token expired")]
    ExpiredToken,
    /// The session is not usable (refused refresh, revoked app password,
    /// bad credentials): the DID waits for a new login.
    #[error("not authorized: {0}")]
    Auth(String),
    /// The account is taken down or deactivated: its writes fail.
    #[error("{0}: the account is taken down or deactivated")]
    AccountGone(String),
    /// The compare-and-swap failed: the record is not at the CID given.
    #[error("InvalidSwap: {0}")]
    InvalidSwap(String),
    /// The PDS refused the write for good (validation, InvalidRequest,
    /// account taken down or deactivated).
    #[error("{name}: {message}")]
    Refused { name: String, message: String },
    /// Rate limited; wait this long (from Retry-After or ratelimit-reset).
    #[error("rate limited by the PDS")]
    RateLimited { wait: Option<Duration> },
    /// 5xx, timeout, a connection lost mid-call: retry later.
    #[error("{0}")]
    Transient(String),
    /// The request never reached the PDS (no connection could be made):
    /// retry later; nothing was written or charged.
    #[error("{0}")]
    Unreachable(String),
}

/// A client for the PDSes of sessions.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    policy: Policy,
}

fn error_name(v: &Value) -> String {
    v.get("error")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or("Unknown")
        .to_owned()
}

fn error_message(v: &Value) -> String {
    let m = v.get("message").and_then(Value::as_str).unwrap_or("");
    let cut: String = m.chars().take(MAX_MESSAGE).collect();
    Escaped(cut).to_string()
}

/// Longest pause a 429 can ask for (the reference PDS's longest window is a
/// day).
pub const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(86_400);

/// How long a 429 asks us to wait: `Retry-After` (delay-seconds or an
/// HTTP date), else `ratelimit-reset` (the reference PDS sends epoch
/// seconds; the IETF draft delta seconds: a value below 10^9 is a delta).
/// `None` when neither header says.
pub fn rate_limit_wait(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let now = chrono::Utc::now();
    let secs = |s: i64| Some(Duration::from_secs(s.max(0) as u64).min(MAX_RATE_LIMIT_WAIT));
    if let Some(v) = text("retry-after") {
        if let Ok(s) = v.parse::<i64>() {
            return secs(s);
        }
        if let Ok(t) = chrono::DateTime::parse_from_rfc2822(v) {
            return secs((t.with_timezone(&chrono::Utc) - now).num_seconds() + 1);
        }
    }
    let reset = text("ratelimit-reset")?.parse::<i64>().ok()?;
    if reset >= 1_000_000_000 {
        secs(reset - now.timestamp())
    } else {
        secs(reset)
    }
}

/// Classifies a non-2xx answer.
fn classify(status: u16, headers: &reqwest::header::HeaderMap, body: &Value) -> CallError {
    let name = error_name(body);
    let message = error_message(body);
    match (status, name.as_str()) {
        (429, _) => CallError::RateLimited {
            wait: rate_limit_wait(headers),
        },
        (_, "ExpiredToken") if status == 400 || status == 401 => CallError::ExpiredToken,
        (
            _,
            "AccountTakedown" | "AccountDeactivated" | "RepoTakendown" | "RepoDeactivated"
            | "RepoSuspended",
        ) => CallError::AccountGone(name),
        (_, "InvalidToken" | "AuthRequired" | "AuthenticationRequired") | (401, _) => {
            CallError::Auth(name)
        }
        (_, "InvalidSwap") => CallError::InvalidSwap(message),
        (s, _) if s >= 500 => CallError::Transient(format!("the PDS answered {s} ({name})")),
        _ => CallError::Refused { name, message },
    }
}

impl Client {
    pub fn new(policy: Policy, timeout: Duration) -> Result<Client, String> {
        Ok(Client {
            http: net::client::guarded(policy, timeout)?,
            policy,
        })
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, CallError> {
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                CallError::Transient("the PDS did not answer in time".to_owned())
            } else if e.is_connect() {
                CallError::Unreachable("cannot reach the PDS".to_owned())
            } else {
                CallError::Transient("the connection to the PDS failed".to_owned())
            }
        })?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = net::body::read_limited(resp, MAX_BODY)
            .await
            .map_err(|e| CallError::Transient(format!("reading the PDS's answer: {e}")))?;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            Ok(v)
        } else {
            Err(classify(status, &headers, &v))
        }
    }

    /// The origin calls to `pds` go to (scheme, host, port): what a PDS
    /// host's rate limit is keyed by.
    pub fn origin(&self, pds: &str) -> Result<String, CallError> {
        net::origin::pds_origin(pds, self.policy).map_err(|e| CallError::Refused {
            name: "BadPds".into(),
            message: e,
        })
    }

    fn url(&self, pds: &str, nsid: &str) -> Result<String, CallError> {
        Ok(format!("{}/xrpc/{nsid}", self.origin(pds)?))
    }

    /// POSTs a procedure with an optional bearer.
    pub async fn post(
        &self,
        pds: &str,
        nsid: &str,
        bearer: Option<&str>,
        body: &Value,
    ) -> Result<Value, CallError> {
        let mut req = self
            .http
            .post(self.url(pds, nsid)?)
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        self.send(req).await
    }

    /// POSTs a procedure that takes no input (`refreshSession`,
    /// `deleteSession`): no body and no content type, which a PDS refuses
    /// on such procedures ("A request body was provided when none was
    /// expected").
    pub async fn post_empty(
        &self,
        pds: &str,
        nsid: &str,
        bearer: &str,
    ) -> Result<Value, CallError> {
        let req = self.http.post(self.url(pds, nsid)?).bearer_auth(bearer);
        self.send(req).await
    }

    /// GETs a query.
    pub async fn get(
        &self,
        pds: &str,
        nsid: &str,
        params: &[(&str, &str)],
    ) -> Result<Value, CallError> {
        let req = self.http.get(self.url(pds, nsid)?).query(params);
        self.send(req).await
    }
}

/// The tokens a session call returns.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub did: String,
    pub handle: Option<String>,
    pub access: String,
    pub refresh: String,
}

impl Tokens {
    /// From a createSession / refreshSession answer.
    pub fn from_answer(v: &Value) -> Result<Tokens, CallError> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        match (s("did"), s("accessJwt"), s("refreshJwt")) {
            (Some(did), Some(access), Some(refresh)) => Ok(Tokens {
                did,
                handle: s("handle"),
                access,
                refresh,
            }),
            _ => Err(CallError::Transient(
                "the PDS's session answer lacks did/accessJwt/refreshJwt".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_are_classified_and_peer_text_bounded() {
        let h = reqwest::header::HeaderMap::new();
        assert_eq!(
            classify(400, &h, &json!({"error": "ExpiredToken"})),
            CallError::ExpiredToken
        );
        assert_eq!(
            classify(400, &h, &json!({"error": "InvalidToken"})),
            CallError::Auth("InvalidToken".into())
        );
        assert!(matches!(
            classify(400, &h, &json!({"error": "InvalidSwap", "message": "Record was at bafyX"})),
            CallError::InvalidSwap(m) if m.contains("bafyX")
        ));
        assert_eq!(
            classify(401, &h, &json!({"error": "AccountDeactivated"})),
            CallError::AccountGone("AccountDeactivated".into())
        );
        assert!(matches!(
            classify(502, &h, &Value::Null),
            CallError::Transient(_)
        ));
        let long = "x".repeat(5000) + "\u{1b}[31m";
        match classify(
            400,
            &h,
            &json!({"error": "Bad name with spaces", "message": long}),
        ) {
            CallError::Refused { name, message } => {
                assert_eq!(name, "Unknown");
                assert!(message.chars().count() <= MAX_MESSAGE + 10);
                assert!(!message.contains('\u{1b}'));
            }
            other => panic!("{other:?}"),
        }
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(
            classify(429, &h, &Value::Null),
            CallError::RateLimited {
                wait: Some(Duration::from_secs(7))
            }
        );
    }

    #[test]
    fn rate_limit_headers_give_the_wait() {
        let wait = |pairs: &[(&'static str, String)]| {
            let mut h = reqwest::header::HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, v.parse().unwrap());
            }
            rate_limit_wait(&h)
        };
        let now = chrono::Utc::now();
        // The reference PDS: ratelimit-reset in epoch seconds.
        let epoch = wait(&[
            ("ratelimit-limit", "5000".into()),
            ("ratelimit-remaining", "0".into()),
            ("ratelimit-reset", (now.timestamp() + 120).to_string()),
            ("ratelimit-policy", "5000;w=3600".into()),
        ])
        .unwrap();
        assert!((118..=120).contains(&epoch.as_secs()), "{epoch:?}");
        // The IETF draft: delta seconds.
        assert_eq!(
            wait(&[("ratelimit-reset", "30".into())]),
            Some(Duration::from_secs(30))
        );
        // Retry-After wins, as seconds or as an HTTP date.
        assert_eq!(
            wait(&[
                ("retry-after", "5".into()),
                ("ratelimit-reset", "30".into())
            ]),
            Some(Duration::from_secs(5))
        );
        let date = (now + chrono::Duration::seconds(60)).to_rfc2822();
        let d = wait(&[("retry-after", date)]).unwrap();
        assert!((59..=61).contains(&d.as_secs()), "{d:?}");
        // Hostile values are bounded; nothing usable is None.
        assert_eq!(
            wait(&[("retry-after", "99999999999".into())]),
            Some(MAX_RATE_LIMIT_WAIT)
        );
        assert_eq!(wait(&[("retry-after", "-5".into())]), Some(Duration::ZERO));
        assert_eq!(wait(&[("retry-after", "soon".into())]), None);
        assert_eq!(wait(&[]), None);
    }
}
