//! The signing keys the live verification stage (`source.verify`) checks
//! firehose commits with, served by the identity [`Resolver`]: its key
//! cache (TTL `identity.cache_ttl_seconds`, at most
//! `identity.cache_max_entries`), its DID document fetch (PLC directory,
//! did:web) and its `#identity` invalidation.
//!
//! Owns: only the adapter from [`Resolver`] to [`Keys`]. Does not own the
//! verification stage (`source::verify`) or resolution (`identity`).

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::identity::Resolver;
use crate::event::Did;
use crate::source::codecs::repo::PublicKey;
use crate::source::verify::Keys;

/// [`Keys`] over a shared resolver.
pub struct ResolverKeys(pub Arc<Resolver>);

impl Keys for ResolverKeys {
    fn cached(&self, did: &Did) -> Option<PublicKey> {
        self.0.cached_key(did)
    }

    fn fetch(&self, did: &Did, fresh: bool) -> BoxFuture<'static, Result<PublicKey, String>> {
        let resolver = self.0.clone();
        let did = did.clone();
        Box::pin(async move {
            resolver
                .signing_key(&did, fresh)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn invalidate(&self, did: &Did) {
        self.0.invalidate(did.as_str());
    }
}
