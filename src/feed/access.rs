//! Who may read which channel: bearer tokens stored as SHA-256 hashes, each
//! with the channel patterns it grants, and the channels left public.
//!
//! Owns: that decision. With no token configured every channel is public.
//! A token is compared by its hash, so the configuration never holds a
//! usable secret.

use sha2::{Digest, Sha256};

use super::channel::pattern_allows;
use super::config::FeedConfig;

#[derive(Debug, Clone, Default)]
pub struct Access {
    tokens: Vec<([u8; 32], Vec<String>)>,
    public: Vec<String>,
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let text = std::str::from_utf8(chunk).ok()?;
        *out.get_mut(i)? = u8::from_str_radix(text, 16).ok()?;
    }
    (s.len() == 64).then_some(out)
}

impl Access {
    pub fn from_config(cfg: &FeedConfig) -> Access {
        Access {
            tokens: cfg
                .tokens
                .iter()
                .filter_map(|t| Some((unhex(&t.sha256.to_ascii_lowercase())?, t.channels.clone())))
                .collect(),
            public: cfg.public_channels.clone(),
        }
    }

    /// Whether the holder of `token` (if any) may read `channel` (a name).
    pub fn allows(&self, token: Option<&str>, channel: &str) -> bool {
        if self.tokens.is_empty() || self.public.iter().any(|p| pattern_allows(p, channel)) {
            return true;
        }
        let Some(token) = token else {
            return false;
        };
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.tokens
            .iter()
            .any(|(h, patterns)| *h == hash && patterns.iter().any(|p| pattern_allows(p, channel)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::config::TokenConfig;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn tokens_grant_their_patterns_only() {
        let open = Access::from_config(&FeedConfig::default());
        assert!(open.allows(None, "all"));

        let cfg = FeedConfig {
            tokens: vec![TokenConfig {
                sha256: hex(&Sha256::digest(b"s3cret")).to_uppercase(),
                channels: vec!["table:app_bsky_feed_like".into(), "did:*".into()],
            }],
            public_channels: vec!["collection:app.bsky.feed.post".into()],
            ..FeedConfig::default()
        };
        let a = Access::from_config(&cfg);
        assert!(a.allows(Some("s3cret"), "table:app_bsky_feed_like"));
        assert!(a.allows(Some("s3cret"), "did:plc:abc"));
        assert!(!a.allows(Some("s3cret"), "table:app_bsky_feed_post"));
        assert!(!a.allows(Some("wrong"), "table:app_bsky_feed_like"));
        assert!(!a.allows(None, "did:plc:abc"));
        assert!(a.allows(None, "collection:app.bsky.feed.post"));
    }
}
