//! The HTTP clients for untrusted and operator-configured servers.
//!
//! Owns: [`guarded`] (PDS, did:web and handle well-known requests: no
//! redirects, and unless `identity.allow_private_addresses` every
//! connection goes through [`PublicResolver`], so the address connected to
//! is a checked one; IP literals, which skip DNS, are checked by
//! [`super::origin::check`] before the request) and [`trusted`] (the PLC
//! directory the operator configured: any address, still no redirects).

use std::sync::Arc;
use std::time::Duration;

use super::address::{Policy, PublicResolver};

fn base(timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("parity/", env!("CARGO_PKG_VERSION")))
        // A redirect would choose the next request's host and scheme.
        .redirect(reqwest::redirect::Policy::none())
}

/// A client for servers named by DID documents and handles.
pub fn guarded(policy: Policy, timeout: Duration) -> Result<reqwest::Client, String> {
    let mut b = base(timeout);
    if !policy.allow_private {
        b = b.dns_resolver(Arc::new(PublicResolver));
    }
    b.build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// A client for the servers the operator configured.
pub fn trusted(timeout: Duration) -> Result<reqwest::Client, String> {
    base(timeout)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}
