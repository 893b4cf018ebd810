//! Outbound HTTP to servers that strangers name: the address policy and the
//! body size limit.
//!
//! Owns: which addresses a request to an untrusted server may reach
//! ([`address`]: public unicast only, checked on the address actually
//! connected to, unless `identity.allow_private_addresses` is on), how a
//! PDS endpoint from a DID document is reduced to an origin ([`origin`]),
//! the HTTP clients built on that policy ([`client`]), and reading a
//! response body with a size limit while it streams ([`body`]). Does not
//! own what is fetched (`import::identity`, `import::xrpc`,
//! `source::transport::dictionary`).

pub mod address;
pub mod body;
pub mod client;
pub mod origin;

pub use address::{Policy, is_public};
pub use body::{BodyError, read_limited};
