//! The `[import]` and `[identity]` config sections.
//!
//! Owns: defaults and checks of every import and identity knob. Used by
//! `parity import` and `parity resume`; `parity consume` uses them for its
//! re-import worker (`import.auto_resync`) and, with `source.verify`, for
//! the DID documents whose keys it checks commits with.

use serde::{Deserialize, Serialize};

/// How `parity import` pages, paces and retries.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImportConfig {
    /// Records per `listRecords` page (1–100).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Records of a verified whole-repo snapshot written per transaction
    /// (1–10,000): they are in memory, so not bound by listRecords' 100.
    #[serde(default = "default_getrepo_page_size")]
    pub getrepo_page_size: u32,
    /// Pause between two pages of one (did, collection), in milliseconds.
    #[serde(default)]
    pub page_delay: u64,
    /// DIDs fetched in parallel (flag `--concurrency`); see `slots` for
    /// the DIDs in flight beyond them.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Requests per second to one PDS host, however many DIDs live there.
    #[serde(default = "default_rps")]
    pub requests_per_second: u32,
    /// Give up one HTTP request after this many seconds (then retry).
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Attempts per request on 5xx, timeouts and malformed answers before
    /// the (did, collection) is marked failed. 429s wait and do not count.
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    /// Retry delay: starts here, doubles per attempt (with jitter)...
    #[serde(default = "default_backoff_initial")]
    pub backoff_initial_ms: u64,
    /// ...up to this.
    #[serde(default = "default_backoff_max")]
    pub backoff_max_ms: u64,
    /// How long a claimed (did, collection) stays reserved for its importer
    /// without a renewal (renewed every third of it while running).
    #[serde(default = "default_lease")]
    pub lease_seconds: u64,
    /// Longest pause one `Retry-After` or `ratelimit-reset` header can put
    /// on a PDS host, in seconds; a longer demand is cut to this (a server
    /// cannot park a host for an hour with one header).
    #[serde(default = "default_max_rate_limit_wait")]
    pub max_rate_limit_wait_seconds: u64,
    /// How records are fetched (flag `--method`): `auto` (one verified
    /// `getRepo` per DID, falling back to `listRecords` for that PDS when
    /// getRepo is refused, not implemented or too big), `getrepo` (never
    /// fall back) or `listrecords` (page each collection).
    #[serde(default)]
    pub method: ImportMethod,
    /// Largest repository CAR held in memory while it is verified; a bigger
    /// one falls back to listRecords (`auto`) or fails the DID (`getrepo`).
    #[serde(default = "default_max_repo_bytes")]
    pub max_repo_bytes: u64,
    /// The relay `parity import --all` lists repositories from (flag
    /// `--relay`): an https URL (plain http only with
    /// `identity.allow_private_addresses`).
    #[serde(default = "default_relay")]
    pub relay: String,
    /// `parity consume` re-imports, whole and by itself, every repo the
    /// stream flags (`#sync`, a broken rev chain, a commit that failed
    /// `source.verify`), with this section's limits.
    #[serde(default)]
    pub auto_resync: bool,
}

/// How `parity import` fetches a repository's records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ImportMethod {
    /// getRepo, falling back to listRecords per PDS.
    #[default]
    Auto,
    /// getRepo only.
    Getrepo,
    /// listRecords only.
    Listrecords,
}

/// 1 GiB: a 128k-record repo is about 45 MB, so only outliers fall back.
const fn default_max_repo_bytes() -> u64 {
    1 << 30
}

fn default_relay() -> String {
    "https://bsky.network".into()
}

const fn default_page_size() -> u32 {
    100
}
const fn default_concurrency() -> usize {
    8
}
/// A snapshot's records per write transaction: ten listRecords pages.
/// A repo of 1,000 records a collection wrote 12–51 % more records/s into
/// PostgreSQL with pages of 1,000 than of 100 (one page a collection
/// instead of ten; BENCHMARKS.md, issue 15 b, session 28).
const fn default_getrepo_page_size() -> u32 {
    1000
}

/// The largest `import.getrepo_page_size`: a page's rows are mapped and
/// bound at once (about 1 KB a row).
pub const MAX_GETREPO_PAGE_SIZE: u32 = 10_000;

/// Bluesky's PDSes allow 3000 requests / 5 min per IP (10/s).
const fn default_rps() -> u32 {
    10
}
const fn default_timeout() -> u64 {
    30
}
const fn default_retries() -> u32 {
    5
}
const fn default_backoff_initial() -> u64 {
    500
}
const fn default_backoff_max() -> u64 {
    30_000
}
const fn default_lease() -> u64 {
    60
}
/// Bluesky's rate-limit windows are 5 minutes; one minute of waiting per
/// answer, then ask again.
const fn default_max_rate_limit_wait() -> u64 {
    60
}

impl Default for ImportConfig {
    fn default() -> Self {
        ImportConfig {
            page_size: default_page_size(),
            getrepo_page_size: default_getrepo_page_size(),
            page_delay: 0,
            concurrency: default_concurrency(),
            requests_per_second: default_rps(),
            timeout_seconds: default_timeout(),
            max_retries: default_retries(),
            backoff_initial_ms: default_backoff_initial(),
            backoff_max_ms: default_backoff_max(),
            lease_seconds: default_lease(),
            max_rate_limit_wait_seconds: default_max_rate_limit_wait(),
            method: ImportMethod::default(),
            max_repo_bytes: default_max_repo_bytes(),
            relay: default_relay(),
            auto_resync: false,
        }
    }
}

impl ImportConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=100).contains(&self.page_size) {
            return Err(format!(
                "import.page_size is {}; listRecords accepts 1 to 100",
                self.page_size
            ));
        }
        if !(1..=MAX_GETREPO_PAGE_SIZE).contains(&self.getrepo_page_size) {
            return Err(format!(
                "import.getrepo_page_size is {}; use 1 to {MAX_GETREPO_PAGE_SIZE}",
                self.getrepo_page_size
            ));
        }
        if self.concurrency == 0 {
            return Err("import.concurrency must be at least 1".into());
        }
        if self.requests_per_second == 0 {
            return Err("import.requests_per_second must be at least 1".into());
        }
        if self.timeout_seconds == 0 {
            return Err("import.timeout_seconds must be at least 1".into());
        }
        if self.lease_seconds < 3 {
            return Err("import.lease_seconds must be at least 3".into());
        }
        if self.max_rate_limit_wait_seconds == 0 {
            return Err("import.max_rate_limit_wait_seconds must be at least 1".into());
        }
        if self.max_repo_bytes < 1024 {
            return Err("import.max_repo_bytes must be at least 1024".into());
        }
        relay_base(&self.relay, true).map_err(|e| format!("import.relay: {e}"))?;
        Ok(())
    }
}

/// The base URL of a relay (`import.relay`, `--relay`), without a
/// trailing slash: http(s), a host, no credentials, query or fragment, no
/// path. Plain http only when `allow_http` (the
/// `identity.allow_private_addresses` opt-in): the relay is where every DID
/// of the run comes from.
pub fn relay_base(raw: &str, allow_http: bool) -> Result<String, String> {
    let shown: String = raw.chars().take(200).collect();
    let u = url::Url::parse(raw).map_err(|e| format!("{shown:?} is not a URL: {e}"))?;
    match u.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => {
            return Err(format!(
                "{shown:?} must be https:// (plain http only with identity.allow_private_addresses, for local testing)"
            ));
        }
        _ => return Err(format!("{shown:?} must be an https:// URL")),
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("{shown:?} has no host"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(format!("{shown:?} must not carry credentials"));
    }
    if u.query().is_some() || u.fragment().is_some() || !matches!(u.path(), "" | "/") {
        return Err(format!(
            "{shown:?} must be the relay's origin only (no path, query or fragment), e.g. https://bsky.network"
        ));
    }
    Ok(u.origin().ascii_serialization())
}

/// Where DIDs and handles are resolved.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// PLC directory for did:plc (flag `--plc-url`, env `PARITY_PLC_URL`).
    #[serde(default = "default_plc")]
    pub plc_url: String,
    /// How long a resolved identity is trusted, in seconds. An `#identity`
    /// event from the stream ends it early.
    #[serde(default = "default_ttl")]
    pub cache_ttl_seconds: u64,
    /// DNS servers for handle TXT lookups (`IP` or `IP:PORT`); empty: the
    /// system resolver.
    #[serde(default)]
    pub dns_servers: Vec<String>,
    /// Give up one resolution request after this many seconds.
    #[serde(default = "default_identity_timeout")]
    pub timeout_seconds: u64,
    /// Most identities kept in memory (least recently used ones go first;
    /// the `parity_repos` columns keep the rest).
    #[serde(default = "default_cache_max_entries")]
    pub cache_max_entries: u64,
    /// For local testing only: let PDS, did:web and handle requests reach
    /// loopback, private, link-local and other non-public addresses, and
    /// plain-http PDS endpoints on them. Endpoints are still reduced to
    /// their origin and redirects are still not followed. The PLC directory
    /// (`plc_url`) is trusted either way.
    #[serde(default)]
    pub allow_private_addresses: bool,
}

fn default_plc() -> String {
    "https://plc.directory".into()
}
/// Tap and goat cache identities for 24 h.
const fn default_ttl() -> u64 {
    86_400
}
const fn default_identity_timeout() -> u64 {
    10
}
const fn default_cache_max_entries() -> u64 {
    100_000
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            plc_url: default_plc(),
            cache_ttl_seconds: default_ttl(),
            dns_servers: Vec::new(),
            timeout_seconds: default_identity_timeout(),
            cache_max_entries: default_cache_max_entries(),
            allow_private_addresses: false,
        }
    }
}

impl IdentityConfig {
    pub fn validate(&self) -> Result<(), String> {
        let u = url::Url::parse(&self.plc_url)
            .map_err(|e| format!("identity.plc_url {:?} is not a URL: {e}", self.plc_url))?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err(format!(
                "identity.plc_url {:?} must be http:// or https://",
                self.plc_url
            ));
        }
        for s in &self.dns_servers {
            parse_dns_server(s)?;
        }
        if self.cache_max_entries == 0 {
            return Err("identity.cache_max_entries must be at least 1".into());
        }
        Ok(())
    }
}

/// `IP` or `IP:PORT` (port 53 by default).
pub fn parse_dns_server(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse::<std::net::SocketAddr>()
        .or_else(|_| {
            s.parse::<std::net::IpAddr>()
                .map(|ip| std::net::SocketAddr::new(ip, 53))
        })
        .map_err(|_| format!("identity.dns_servers: {s:?} is not IP or IP:PORT"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_urls_are_origins_and_https_unless_opted_in() {
        assert_eq!(ImportConfig::default().relay, "https://bsky.network");
        assert_eq!(
            relay_base("https://bsky.network/", false).unwrap(),
            "https://bsky.network"
        );
        assert_eq!(
            relay_base("http://127.0.0.1:2470", true).unwrap(),
            "http://127.0.0.1:2470"
        );
        let e = relay_base("http://relay.example.com", false).unwrap_err();
        assert!(e.contains("must be https://"), "{e}");
        for bad in [
            "ftp://relay.example.com",
            "https://relay.example.com/xrpc",
            "https://relay.example.com?x=1",
            "https://user:pw@relay.example.com",
            "relay.example.com",
        ] {
            assert!(relay_base(bad, true).is_err(), "{bad}");
        }
        let cfg = ImportConfig {
            relay: "wss://bsky.network".into(),
            ..ImportConfig::default()
        };
        assert!(cfg.validate().unwrap_err().starts_with("import.relay: "));
    }

    #[test]
    fn method_and_repo_bound_parse_and_validate() {
        let c: ImportConfig =
            toml::from_str("method = \"getrepo\"\nmax_repo_bytes = 4096").unwrap();
        assert_eq!(c.method, ImportMethod::Getrepo);
        assert_eq!(c.max_repo_bytes, 4096);
        assert!(c.validate().is_ok());
        assert_eq!(ImportConfig::default().method, ImportMethod::Auto);
        assert_eq!(ImportConfig::default().max_repo_bytes, 1 << 30);
        assert!(toml::from_str::<ImportConfig>("method = \"car\"").is_err());
        let tiny = ImportConfig {
            max_repo_bytes: 10,
            ..ImportConfig::default()
        };
        assert_eq!(
            tiny.validate().unwrap_err(),
            "import.max_repo_bytes must be at least 1024"
        );
    }

    #[test]
    fn getrepo_pages_are_bounded_apart_from_list_records_pages() {
        let c: ImportConfig = toml::from_str("getrepo_page_size = 10000").unwrap();
        assert!(c.validate().is_ok());
        assert_eq!(ImportConfig::default().getrepo_page_size, 1000);
        for bad in [0, MAX_GETREPO_PAGE_SIZE + 1] {
            let c = ImportConfig {
                getrepo_page_size: bad,
                ..ImportConfig::default()
            };
            assert_eq!(
                c.validate().unwrap_err(),
                format!("import.getrepo_page_size is {bad}; use 1 to 10000")
            );
        }
    }
}
