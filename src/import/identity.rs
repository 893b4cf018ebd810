//! DID and handle resolution: DID → document → PDS, handle → DID.
//!
//! Owns: did:plc through the PLC directory (404 unknown, 410 tombstoned),
//! did:web through `/.well-known/did.json`, handles through DNS TXT
//! `_atproto.<handle>` then `https://<handle>/.well-known/atproto-did`,
//! checked both ways against the document's `alsoKnownAs` (a handle a
//! document claims is kept only if it resolves back to that DID); and the
//! cache: in memory (at most `identity.cache_max_entries`, least recently
//! used evicted), then the shared `parity_repos` columns (TTL
//! `identity.cache_ttl_seconds`), which an `#identity` event from the
//! stream clears.
//!
//! Everything but the PLC directory is named by strangers: the PDS
//! endpoint is reduced to an https origin at a public address, did:web and
//! handle hosts are fetched over https at public addresses only (checked at
//! connect time, see `net`), nothing follows redirects, and every body is
//! read with a size limit. `identity.allow_private_addresses` lifts the
//! address rule (and allows plain http to such addresses) for local tests.
//!
//! Error strings from peers are never echoed whole: statuses and our own
//! descriptions only, so a hostile server cannot write to the terminal.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use serde::Deserialize;

use super::config::{IdentityConfig, parse_dns_server};
use crate::event::Did;
use crate::net::{self, BodyError, Policy};
use crate::source::codecs::repo::PublicKey;
use crate::store::Store;

/// Largest DID document read (real ones are 1–3 KB).
pub const MAX_DOC_BYTES: usize = 64 << 10;
/// Largest `/.well-known/atproto-did` body read (a DID is at most 2 KB).
pub const MAX_WELL_KNOWN_BYTES: usize = 4 << 10;

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

/// An identity the network answered that is not yet in the store's
/// cache (`None`: it came from a cache); [`Resolver::save`] writes it.
#[must_use = "an identity resolved from the network is saved with Resolver::save"]
pub struct Unsaved(Option<Identity>);

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
    /// The `#atproto_pds` endpoint is not an https URL at a public address.
    #[error("the DID document of {did}: {detail}")]
    UnsafePds { did: String, detail: String },
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
    /// Kept raw: only the `#atproto` key is read, on demand.
    #[serde(default, rename = "verificationMethod")]
    verification_method: serde_json::Value,
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
    /// The endpoint of the first `#atproto_pds` service of type
    /// `AtprotoPersonalDataServer`, as written.
    fn pds_endpoint(&self) -> Option<&str> {
        self.service
            .iter()
            .find(|s| {
                s.id.ends_with("#atproto_pds")
                    && (s.id == "#atproto_pds" || s.id == format!("{}#atproto_pds", self.id))
                    && s.kind.as_str() == Some("AtprotoPersonalDataServer")
            })
            .and_then(|s| s.endpoint.as_str())
    }

    /// The PDS origin requests go to (`net::origin::pds_origin`).
    fn pds(&self, policy: Policy) -> Result<String, IdentityError> {
        let e = self
            .pds_endpoint()
            .ok_or_else(|| IdentityError::NoPds(self.id.clone()))?;
        net::origin::pds_origin(e, policy).map_err(|detail| IdentityError::UnsafePds {
            did: self.id.clone(),
            detail,
        })
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
    /// did:web and handle hosts (untrusted).
    http: reqwest::Client,
    /// The PLC directory (trusted: configured by the operator).
    plc_http: reqwest::Client,
    plc_url: String,
    policy: Policy,
    ttl: Duration,
    dns: Option<TokioResolver>,
    store: Option<Store>,
    cache: moka::sync::Cache<String, Identity>,
    /// `#atproto` signing keys (whole-repo imports verify commits with them).
    keys: moka::sync::Cache<String, PublicKey>,
}

impl Resolver {
    pub fn new(cfg: &IdentityConfig, store: Option<Store>) -> Result<Resolver, String> {
        let policy = Policy {
            allow_private: cfg.allow_private_addresses,
        };
        let timeout = Duration::from_secs(cfg.timeout_seconds);
        let http = net::client::guarded(policy, timeout)?;
        let plc_http = net::client::trusted(timeout)?;
        let ttl = Duration::from_secs(cfg.cache_ttl_seconds);
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
            plc_http,
            plc_url: cfg.plc_url.trim_end_matches('/').to_owned(),
            policy,
            ttl,
            dns,
            store,
            cache: moka::sync::Cache::builder()
                .max_capacity(cfg.cache_max_entries)
                .time_to_live(ttl.max(Duration::from_millis(1)))
                .build(),
            keys: moka::sync::Cache::builder()
                .max_capacity(cfg.cache_max_entries)
                .time_to_live(ttl.max(Duration::from_millis(1)))
                .build(),
        })
    }

    /// The `#atproto` signing key of `did`'s document, cached for the
    /// identity TTL; `fresh` fetches the document again (a signature
    /// failed: the key may have rotated, so refresh once before rejecting).
    /// A document fetched to resolve the DID fills this cache too, so an
    /// import asks the directory once per DID, not twice.
    pub async fn signing_key(&self, did: &Did, fresh: bool) -> Result<PublicKey, IdentityError> {
        if !fresh && let Some(k) = self.keys.get(did.as_str()) {
            return Ok(k);
        }
        let doc = self.fetch_doc(did).await?;
        match self.keys.get(did.as_str()) {
            Some(k) => Ok(k),
            // Unusable (nothing was cached), or evicted meanwhile.
            None => key_of(did, &doc),
        }
    }

    /// The cached `#atproto` key of `did`, without IO.
    pub fn cached_key(&self, did: &Did) -> Option<PublicKey> {
        self.keys.get(did.as_str())
    }

    /// Forgets a cached identity (an `#identity` event arrived).
    pub fn invalidate(&self, did: &str) {
        self.cache.invalidate(did);
        self.keys.invalidate(did);
    }

    /// Identities held in memory (after pending evictions ran).
    pub fn cached_len(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    /// Resolves a DID or a handle to a verified identity.
    pub async fn resolve(&self, input: &str) -> Result<Identity, IdentityError> {
        let (id, unsaved) = self.resolve_unsaved(input).await?;
        self.save(unsaved).await;
        Ok(id)
    }

    /// [`Resolver::resolve`], leaving an identity the network answered
    /// for the caller to [`save`](Resolver::save) to the store's cache:
    /// the import writes it while it fetches the repo, so a DID's fetching
    /// slot waits for the network only, not for the writer's turn.
    pub async fn resolve_unsaved(&self, input: &str) -> Result<(Identity, Unsaved), IdentityError> {
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
        let (id, unsaved) = self.resolve_did(&did).await?;
        if id.handle.as_deref() != Some(handle.as_str()) {
            return Err(IdentityError::HandleMismatch {
                handle,
                did: did.to_string(),
            });
        }
        Ok((id, unsaved))
    }

    /// Writes an identity the network answered to the store's cache (the
    /// `parity_repos` columns); a failure only costs a later lookup, so it
    /// is logged, not returned.
    pub async fn save(&self, unsaved: Unsaved) {
        let (Some(store), Some(id)) = (&self.store, unsaved.0) else {
            return;
        };
        if let Err(e) = store
            .save_identity(id.did.as_str(), &id.pds, id.handle.as_deref())
            .await
        {
            tracing::warn!(did = %id.did, error = %e, "cannot cache the identity");
        }
    }

    /// DID → document → PDS, through the caches.
    async fn resolve_did(&self, did: &Did) -> Result<(Identity, Unsaved), IdentityError> {
        if let Some(id) = self.cache.get(did.as_str()) {
            return Ok((id, Unsaved(None)));
        }
        if let Some(id) = self.stored_identity(did).await {
            self.remember(id.clone());
            return Ok((id, Unsaved(None)));
        }
        let doc = self.fetch_doc(did).await?;
        let pds = doc.pds(self.policy)?;
        let handle = match doc.handle() {
            Some(h) => self.verified_handle(h, did).await,
            None => None,
        };
        let id = Identity {
            did: did.clone(),
            handle,
            pds,
        };
        self.remember(id.clone());
        Ok((id.clone(), Unsaved(Some(id))))
    }

    /// The handle a document claims, if it resolves back to `did`; a
    /// handle anyone can write into their document is not proof.
    async fn verified_handle(&self, handle: String, did: &Did) -> Option<String> {
        match self.resolve_handle(&handle).await {
            Ok(back) if back == *did => Some(handle),
            Ok(_) | Err(_) => {
                tracing::info!(did = %did, handle = %handle, "the handle in the DID document does not resolve back to the DID; not stored");
                None
            }
        }
    }

    pub(crate) fn remember(&self, id: Identity) {
        self.cache.insert(id.did.to_string(), id);
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
        // Rows written before the address rules (or by another tool) are
        // checked again.
        let pds = net::origin::pds_origin(&c.pds?, self.policy).ok()?;
        (age < self.ttl).then_some(Identity {
            did: did.clone(),
            handle: c.handle,
            pds,
        })
    }

    /// Fetches the DID document, retrying transport faults, 429 and 5xx
    /// answers a few times (the directory is one shared service; a blip
    /// must not fail every DID of a run).
    /// The document's signing key replaces the cached one (or, if it has
    /// none usable, the cached one is forgotten).
    async fn fetch_doc(&self, did: &Did) -> Result<DidDoc, IdentityError> {
        let mut attempt = 0;
        let doc = loop {
            attempt += 1;
            match self.fetch_doc_once(did).await {
                Err(IdentityError::Unavailable { .. }) if attempt < DOC_ATTEMPTS => {
                    tokio::time::sleep(DOC_BACKOFF * (1 << attempt)).await;
                }
                r => break r?,
            }
        };
        match key_of(did, &doc) {
            Ok(key) => self.keys.insert(did.to_string(), key),
            Err(_) => self.keys.invalidate(did.as_str()),
        }
        Ok(doc)
    }

    async fn fetch_doc_once(&self, did: &Did) -> Result<DidDoc, IdentityError> {
        let fetch = |detail: String| IdentityError::Fetch {
            what: did.to_string(),
            detail,
        };
        let (http, url) = if did.as_str().starts_with("did:plc:") {
            (&self.plc_http, format!("{}/{}", self.plc_url, did))
        } else {
            let url = did_web_url(did.as_str(), self.policy).ok_or_else(|| {
                if did_web_url(did.as_str(), Policy { allow_private: true }).is_some() {
                    fetch(
                        "did:web on localhost is plain http to this machine: refused (see identity.allow_private_addresses)"
                            .into(),
                    )
                } else {
                    IdentityError::Invalid(did.to_string())
                }
            })?;
            let parsed =
                url::Url::parse(&url).map_err(|_| IdentityError::Invalid(did.to_string()))?;
            net::origin::check(&parsed, self.policy).map_err(fetch)?;
            (&self.http, url)
        };
        let unavailable = |detail: String| IdentityError::Unavailable {
            what: did.to_string(),
            detail,
        };
        let resp = match http.get(&url).send().await {
            Ok(r) => r,
            Err(e) => match net::address::refusal(&e) {
                Some(refused) => return Err(fetch(refused)),
                None => return Err(unavailable(describe(&e))),
            },
        };
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
        let body = match net::read_limited(resp, MAX_DOC_BYTES).await {
            Ok(b) => b,
            Err(BodyError::TooLarge { limit }) => {
                return Err(fetch(format!(
                    "the DID document is larger than {limit} bytes (refused)"
                )));
            }
            Err(BodyError::Transport(e)) => return Err(unavailable(describe(&e))),
        };
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
        let body = match net::read_limited(resp, MAX_WELL_KNOWN_BYTES).await {
            Ok(b) => b,
            Err(e) => {
                tracing::info!(handle = %handle, error = %e, "handle well-known answer not read");
                return None;
            }
        };
        Did::parse(std::str::from_utf8(&body).ok()?.trim())
    }
}

/// The `#atproto` signing key of `did`'s document.
fn key_of(did: &Did, doc: &DidDoc) -> Result<PublicKey, IdentityError> {
    let doc_value = serde_json::json!({ "verificationMethod": doc.verification_method.clone() });
    PublicKey::from_did_document(&doc_value).map_err(|e| IdentityError::Fetch {
        what: did.to_string(),
        detail: format!("the DID document's signing key: {e}"),
    })
}

/// `did:web:host` → `https://host/.well-known/did.json`. Only hostname-level
/// DIDs. `did:web:localhost%3APORT` (plain http on this machine) only with
/// `identity.allow_private_addresses`, the local-testing opt-in.
pub fn did_web_url(did: &str, policy: Policy) -> Option<String> {
    let rest = did.strip_prefix("did:web:")?;
    if rest.contains(':') {
        return None;
    }
    let host = rest.replace("%3A", ":").replace("%3a", ":");
    match host.split_once(':') {
        Some(("localhost", port)) if policy.allow_private && port.parse::<u16>().is_ok() => {
            Some(format!("http://{host}/.well-known/did.json"))
        }
        Some(_) => None,
        None if is_handle(&host.to_ascii_lowercase()) => {
            Some(format!("https://{host}/.well-known/did.json"))
        }
        None => None,
    }
}

/// A transport error as our own words: timeouts and connection failures
/// are named, anything else is generic.
pub(super) fn describe(e: &reqwest::Error) -> String {
    if let Some(refused) = net::address::refusal(e) {
        refused
    } else if e.is_timeout() {
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

    const OFF: Policy = Policy {
        allow_private: false,
    };
    const ON: Policy = Policy {
        allow_private: true,
    };

    #[test]
    fn did_web_urls_are_hostname_level() {
        for p in [OFF, ON] {
            assert_eq!(
                did_web_url("did:web:discover.bsky.social", p).as_deref(),
                Some("https://discover.bsky.social/.well-known/did.json")
            );
            assert_eq!(did_web_url("did:web:example.com:user:alice", p), None);
            assert_eq!(did_web_url("did:web:example.com%3A8080", p), None);
        }
        assert_eq!(
            did_web_url("did:web:localhost%3A8080", ON).as_deref(),
            Some("http://localhost:8080/.well-known/did.json")
        );
    }

    #[test]
    fn local_did_web_needs_the_opt_in() {
        assert_eq!(did_web_url("did:web:localhost%3A8080", OFF), None);
        assert_eq!(did_web_url("did:web:localhost", OFF), None);
    }

    fn resolver(max: u64) -> Resolver {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cfg = IdentityConfig {
            cache_max_entries: max,
            dns_servers: vec!["127.0.0.1:9".into()],
            ..IdentityConfig::default()
        };
        Resolver::new(&cfg, None).unwrap()
    }

    /// A resolver asking `pds`'s PLC directory.
    fn resolver_at(pds: &testnet::pds::Pds) -> Resolver {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cfg = IdentityConfig {
            plc_url: pds.url(),
            allow_private_addresses: true,
            dns_servers: vec!["127.0.0.1:9".into()],
            ..IdentityConfig::default()
        };
        Resolver::new(&cfg, None).unwrap()
    }

    #[tokio::test]
    async fn the_document_that_resolves_a_did_gives_its_key_and_one_without_forgets_it() {
        let pds = testnet::pds::Pds::start().await;
        let did = Did::parse("did:plc:keyskeyskeyskeyskeyskeys").unwrap();
        pds.add_repo(did.as_str(), "3lbbbbbbbbbbb", None, vec![]);
        let plc = testnet::pds::PLC;
        let r = resolver_at(&pds);
        let (id, _unsaved) = r.resolve_unsaved(did.as_str()).await.unwrap();
        assert_eq!(id.pds, pds.url());
        assert_eq!(pds.count(plc), 1);
        // The key comes from the document already fetched: no second request.
        let doc = pds.did_doc(did.as_str()).unwrap();
        let want = PublicKey::from_did_document(&doc).unwrap();
        assert_eq!(r.signing_key(&did, false).await.unwrap(), want);
        assert_eq!(pds.count(plc), 1);
        // The document now has no usable key: a fresh fetch forgets the
        // cached one rather than keep checking commits against it.
        let mut bare = doc.clone();
        bare["verificationMethod"] = serde_json::json!([]);
        pds.add_did_doc_json(bare);
        assert!(r.signing_key(&did, true).await.is_err());
        assert_eq!(pds.count(plc), 2);
        assert_eq!(r.cached_key(&did), None);
        assert!(r.signing_key(&did, false).await.is_err());
    }

    #[test]
    fn the_identity_cache_is_bounded() {
        let r = resolver(100);
        for i in 0..1_000 {
            r.remember(Identity {
                did: Did::parse(&format!("did:plc:a{i:023}")).unwrap(),
                handle: None,
                pds: "https://pds.example.com".into(),
            });
        }
        let n = r.cached_len();
        assert!(n <= 100, "{n} identities cached, limit 100");
        assert!(n > 0);
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
            let pds = doc.pds(OFF).unwrap();
            assert!(pds.starts_with("https://"), "{f}: {pds}");
            assert!(!pds.ends_with('/'));
        }
        let doc: DidDoc = serde_json::from_str(
            r##"{"id":"did:plc:x","service":[{"id":"#atproto_labeler","type":"AtprotoLabeler","serviceEndpoint":"https://l.example"}]}"##,
        )
        .unwrap();
        assert_eq!(doc.pds(OFF), Err(IdentityError::NoPds("did:plc:x".into())));
    }
}
