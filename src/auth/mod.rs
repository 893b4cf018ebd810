//! Publish sessions: how parity signs in as an account and keeps its tokens
//! secret at rest.
//!
//! Owns: the `[auth]` config section ([`AuthConfig`]), the sealing key and
//! the AEAD that seals tokens before they reach `parity_sessions`
//! ([`Sealer`]), and reading an app password from the environment, a file
//! or a TTY prompt ([`password`]). Does not own the SQL (`store::sessions`)
//! nor the XRPC calls (`publish::xrpc`).
//!
//! Session sources: today an app password (`createSession`, then
//! `refreshSession`). OAuth with DPoP-bound tokens fits as another
//! `auth_kind` in `parity_sessions`: the worker only needs "a bearer for
//! this DID, and a way to renew it".
//!
//! Invariants: a token or password is never logged, put in argv, a metric,
//! an error message or `config check` output; only ciphertext is stored.

mod crypto;
pub mod password;

use serde::{Deserialize, Serialize};

pub use crypto::{KEY_ENV, SealError, Sealer};

/// The `[auth]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// File holding the 32-byte key that seals session tokens (64 hex
    /// characters), created with mode 0600 on first use. `PARITY_AUTH_KEY`
    /// (64 hex characters) replaces it.
    #[serde(default = "default_key_file")]
    pub key_file: String,
}

fn default_key_file() -> String {
    "parity-auth.key".to_owned()
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            key_file: default_key_file(),
        }
    }
}
