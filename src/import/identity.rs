//! DID and handle resolution: DID → document → PDS, handle → DID.
//!
//! Owns: did:plc through the PLC directory (404 unknown, 410 tombstoned),
//! did:web through `/.well-known/did.json`, handles through DNS TXT
//! `_atproto.<handle>` then `https://<handle>/.well-known/atproto-did`,
//! checked both ways against the document's `alsoKnownAs`; and the cache:
//! in memory, then the shared `parity_repos` columns (TTL
//! `identity.cache_ttl_seconds`), which an `#identity` event from the
//! stream clears.
//!
//! Error strings from peers are never echoed whole: statuses and our own
//! descriptions only, so a hostile server cannot write to the terminal.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use serde::Deserialize;

use super::config::{IdentityConfig, parse_dns_server};
use crate::event::Did;
use crate::store::Store;

/// Attempts at fetching one DID document.
const DOC_ATTEMPTS: u32 = 4;
/// First retry delay of a DID document fetch (doubles).
const DOC_BACKOFF: Duration = Duration::from_millis(100);

/// A resolved account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub did: Did,
    /// The verified handle, if the document claims one.
    pub handle: Option<String>,
    /// PDS base URL (`https://host`), no trailing slash.
    pub pds: String,
}

/// Why an account could not be resolved. Each is a per-DID failure.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("{0} is not a DID or a handle")]
    Invalid(String),
    #[error("{0} is not known to the PLC directory (404)")]
    NotFound(String),
    #[error("{0} is tombstoned in the PLC directory (410): the account no longer exists")]
    Tombstoned(String),
    #[error("the DID document of {0} names no #atproto_pds service")]
    NoPds(String),
    #[error(
        "handle {0} does not resolve to a DID (no _atproto TXT record, no /.well-known/atproto-did)"
    )]
    HandleNotFound(String),
    #[error("handle {handle} resolves to {did}, whose DID document does not claim that handle")]
    HandleMismatch { handle: String, did: String },
    #[error("resolving {what}: {detail}")]
    Fetch { what: String, detail: String },
    /// A fault that may pass (timeout, 429, 5xx): retried a few times.
    #[error("resolving {what}: {detail}")]
    Unavailable { what: String, detail: String },
}

#[derive(Debug, Deserialize)]
struct DidDoc {
    id: String,
    #[serde(default, rename = "alsoKnownAs")]
    also_known_as: Vec<String>,
    #[serde(default)]
    service: Vec<Service>,
}

#[derive(Debug, Deserialize)]
struct Service {
    id: String,
    #[serde(rename = "type")]
    kind: serde_json::Value,
    #[serde(rename = "serviceEndpoint")]
    endpoint: serde_json::Value,
}

impl DidDoc {
    /// The first `#atproto_pds` service of type `AtprotoPersonalDataServer`.
    fn pds(&self) -> Option<String> {
        self.service
            .iter()
            .find(|s| {
                s.id.ends_with("#atproto_pds")
                    && (s.id == "#atproto_pds" || s.id == format!("{}#atproto_pds", self.id))
                    && s.kind.as_str() == Some("AtprotoPersonalDataServer")
            })
            .and_then(|s| s.endpoint.as_str())
            .and_then(|e| url::Url::parse(e).ok())
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .map(|u| u.as_str().trim_end_matches('/').to_owned())
    }

    /// The first valid `at://` handle in `alsoKnownAs`, lowercased.
    fn handle(&self) -> Option<String> {
        self.also_known_as
            .iter()
            .filter_map(|a| a.strip_prefix("at://"))
            .map(str::to_ascii_lowercase)
            .find(|h| is_handle(h))
    }
}

/// Handle syntax: one definition for the stream and the importer.
pub use crate::event::is_handle;

/// Resolves and caches identities.
pub struct Resolver {
    http: reqwest::Client,
    plc_url: String,
    ttl: Duration,
    dns: Option<TokioResolver>,
    store: Option<Store>,
    cache: Mutex<HashMap<String, (Instant, Identity)>>,
}

impl Resolver {
    pub fn new(cfg: &IdentityConfig, store: Option<Store>) -> Result<Resolver, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.timeout_seconds))
            .user_agent(concat!("parity/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let dns = if cfg.dns_servers.is_empty() {
            TokioResolver::builder_tokio().and_then(|b| b.build()).ok()
        } else {
            let servers = cfg
                .dns_servers
                .iter()
                .map(|s| {
                    let addr = parse_dns_server(s)?;
                    let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                    for c in &mut ns.connections {
                        c.port = addr.port();
                    }
                    Ok(ns)
                })
                .collect::<Result<Vec<_>, String>>()?;
            Some(
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(servers),
                    TokioRuntimeProvider::default(),
                )
                .build()
                .map_err(|e| format!("cannot build the DNS resolver: {e}"))?,
            )
        };
        Ok(Resolver {
            http,
            plc_url: cfg.plc_url.trim_end_matches('/').to_owned(),
            ttl: Duration::from_secs(cfg.cache_ttl_seconds),
            dns,
            store,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Forgets a cached identity (an `#identity` event arrived).
    pub fn invalidate(&self, did: &str) {
        self.cache.lock().expect("cache lock").remove(did);
    }

    /// Resolves a DID or a handle to a verified identity.
    pub async fn resolve(&self, input: &str) -> Result<Identity, IdentityError> {
        let input = input.trim();
        if input.starts_with("did:") {
            let did = Did::parse(input).ok_or_else(|| IdentityError::Invalid(input.into()))?;
            return self.resolve_did(&did).await;
        }
        let handle = input.trim_start_matches('@').to_ascii_lowercase();
        if !is_handle(&handle) {
            return Err(IdentityError::Invalid(input.into()));
        }
        let did = self.resolve_handle(&handle).await?;
        let id = self.resolve_did(&did).await?;
        if id.handle.as_deref() != Some(handle.as_str()) {
            return Err(IdentityError::HandleMismatch {
                handle,
                did: did.to_string(),
            });
        }
        Ok(id)
    }

    /// DID → document → PDS, through the caches.
    pub async fn resolve_did(&self, did: &Did) -> Result<Identity, IdentityError> {
        if let Some((at, id)) = self.cache.lock().expect("cache lock").get(did.as_str())
            && at.elapsed() < self.ttl
        {
            return Ok(id.clone());
        }
        if let Some(id) = self.stored_identity(did).await {
            self.remember(id.clone());
            return Ok(id);
        }
        let doc = self.fetch_doc(did).await?;
        let pds = doc
            .pds()
            .ok_or_else(|| IdentityError::NoPds(did.to_string()))?;
        let id = Identity {
            did: did.clone(),
            handle: doc.handle(),
            pds,
        };
        if let Some(store) = &self.store
            && let Err(e) = store
                .save_identity(did.as_str(), &id.pds, id.handle.as_deref())
                .await
        {
            tracing::warn!(did = %did, error = %e, "cannot cache the identity");
        }
        self.remember(id.clone());
        Ok(id)
    }

    fn remember(&self, id: Identity) {
        self.cache
            .lock()
            .expect("cache lock")
            .insert(id.did.to_string(), (Instant::now(), id));
    }

    async fn stored_identity(&self, did: &Did) -> Option<Identity> {
        let c = self
            .store
            .as_ref()?
            .cached_identity(did.as_str())
            .await
            .ok()??;
        let at: DateTime<Utc> = c.identity_resolved_at?.parse().ok()?;
        let age = (Utc::now() - at).to_std().ok()?;
        (age < self.ttl).then_some(Identity {
            did: did.clone(),
            handle: c.handle,
            pds: c.pds?,
        })
    }

    /// Fetches the DID document, retrying transport faults, 429 and 5xx
    /// answers a few times (the directory is one shared service; a blip
    /// must not fail every DID of a run).
    async fn fetch_doc(&self, did: &Did) -> Result<DidDoc, IdentityError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.fetch_doc_once(did).await {
                Err(IdentityError::Unavailable { .. }) if attempt < DOC_ATTEMPTS => {
                    tokio::time::sleep(DOC_BACKOFF * (1 << attempt)).await;
                }
                r => return r,
            }
        }
    }

    async fn fetch_doc_once(&self, did: &Did) -> Result<DidDoc, IdentityError> {
        let url = if did.as_str().starts_with("did:plc:") {
            format!("{}/{}", self.plc_url, did)
        } else {
            did_web_url(did.as_str()).ok_or_else(|| IdentityError::Invalid(did.to_string()))?
        };
        let fetch = |detail: String| IdentityError::Fetch {
            what: did.to_string(),
            detail,
        };
        let unavailable = |detail: String| IdentityError::Unavailable {
            what: did.to_string(),
            detail,
        };
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| unavailable(describe(&e)))?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Err(IdentityError::NotFound(did.to_string())),
            410 => return Err(IdentityError::Tombstoned(did.to_string())),
            s @ (429 | 500..=599) => {
                return Err(unavailable(format!(
                    "the DID document request answered HTTP {s}"
                )));
            }
            s => return Err(fetch(format!("the DID document request answered HTTP {s}"))),
        }
        let body = resp.bytes().await.map_err(|e| unavailable(describe(&e)))?;
        let doc: DidDoc = serde_json::from_slice(&body)
            .map_err(|_| fetch("the DID document is not valid JSON".into()))?;
        if doc.id != did.as_str() {
            return Err(fetch("the DID document is for another DID".into()));
        }
        Ok(doc)
    }

    /// Handle → DID: DNS TXT first (preferred when both answer), then the
    /// HTTPS well-known file.
    pub async fn resolve_handle(&self, handle: &str) -> Result<Did, IdentityError> {
        if let Some(did) = self.handle_dns(handle).await? {
            return Ok(did);
        }
        if let Some(did) = self.handle_well_known(handle).await {
            return Ok(did);
        }
        Err(IdentityError::HandleNotFound(handle.into()))
    }

    async fn handle_dns(&self, handle: &str) -> Result<Option<Did>, IdentityError> {
        let Some(dns) = &self.dns else {
            return Ok(None);
        };
        let Ok(lookup) = dns.txt_lookup(format!("_atproto.{handle}.")).await else {
            return Ok(None);
        };
        let mut found: Vec<Did> = Vec::new();
        for r in lookup.answers() {
            let hickory_resolver::proto::rr::RData::TXT(txt) = &r.data else {
                continue;
            };
            let text: Vec<u8> = txt
                .txt_data
                .iter()
                .flat_map(|c| c.iter().copied())
                .collect();
            if let Some(did) = std::str::from_utf8(&text)
                .ok()
                .and_then(|t| t.strip_prefix("did="))
                .and_then(Did::parse)
                && !found.contains(&did)
            {
                found.push(did);
            }
        }
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            _ => Err(IdentityError::Fetch {
                what: handle.into(),
                detail: "more than one distinct _atproto TXT record".into(),
            }),
        }
    }

    async fn handle_well_known(&self, handle: &str) -> Option<Did> {
        let resp = self
            .http
            .get(format!("https://{handle}/.well-known/atproto-did"))
            .send()
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let body = resp.text().await.ok()?;
        Did::parse(body.trim())
    }
}

/// `did:web:host` → `https://host/.well-known/did.json`. Only hostname-level
/// DIDs; a percent-encoded port only for `localhost` (served over plain
/// HTTP, for local development and tests).
pub fn did_web_url(did: &str) -> Option<String> {
    let rest = did.strip_prefix("did:web:")?;
    if rest.contains(':') {
        return None;
    }
    let host = rest.replace("%3A", ":").replace("%3a", ":");
    match host.split_once(':') {
        Some(("localhost", port)) if port.parse::<u16>().is_ok() => {
            Some(format!("http://{host}/.well-known/did.json"))
        }
        Some(_) => None,
        None if is_handle(&host.to_ascii_lowercase()) || host == "localhost" => {
            Some(format!("https://{host}/.well-known/did.json"))
        }
        None => None,
    }
}

/// A transport error as our own words: timeouts and connection failures
/// are named, anything else is generic.
pub(super) fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else if e.is_decode() || e.is_body() {
        "the response body was cut off".into()
    } else {
        "request failed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_web_urls_are_hostname_level() {
        assert_eq!(
            did_web_url("did:web:discover.bsky.social").as_deref(),
            Some("https://discover.bsky.social/.well-known/did.json")
        );
        assert_eq!(
            did_web_url("did:web:localhost%3A8080").as_deref(),
            Some("http://localhost:8080/.well-known/did.json")
        );
        assert_eq!(did_web_url("did:web:example.com:user:alice"), None);
        assert_eq!(did_web_url("did:web:example.com%3A8080"), None);
    }

    #[test]
    fn handles_follow_the_syntax() {
        assert!(is_handle("alice.bsky.social"));
        assert!(is_handle("xn--ls8h.test"));
        assert!(!is_handle("alice"));
        assert!(!is_handle("-a.test"));
        assert!(!is_handle("a.1test"));
        assert!(!is_handle("a..test"));
        assert!(!is_handle("al ice.test"));
    }

    #[test]
    fn documents_give_pds_and_handle() {
        for f in ["indigo_did_plc_doc.json", "indigo_did_plc_doc_legacy.json"] {
            let text =
                std::fs::read_to_string(format!("tests/fixtures/identity/did-docs/{f}")).unwrap();
            let doc: DidDoc = serde_json::from_str(&text).unwrap();
            assert_eq!(doc.id, "did:plc:ewvi7nxzyoun6zhxrhs64oiz", "{f}");
            assert_eq!(doc.handle().as_deref(), Some("atproto.com"), "{f}");
            let pds = doc.pds().unwrap();
            assert!(pds.starts_with("https://"), "{f}: {pds}");
            assert!(!pds.ends_with('/'));
        }
        let doc: DidDoc = serde_json::from_str(
            r##"{"id":"did:plc:x","service":[{"id":"#atproto_labeler","type":"AtprotoLabeler","serviceEndpoint":"https://l.example"}]}"##,
        )
        .unwrap();
        assert_eq!(doc.pds(), None);
    }
}
