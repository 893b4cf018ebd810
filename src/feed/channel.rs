//! Channels a feed client subscribes to, and the patterns tokens grant.
//!
//! Owns: parsing a channel name (`table:<name>`, `collection:<nsid>` with a
//! `.*` prefix wildcard, `did:<did>`, `subject:<at-uri>`, `all`), deciding
//! whether a [`Change`] belongs to it, and matching a channel name against
//! an access pattern (exact, or a trailing `*` wildcard). Pure: no IO.
//!
//! Channel names come from clients: every part is validated (table names as
//! identifiers, NSIDs and DIDs by their syntax, at-uris bounded) before it is
//! kept, and an error names what is wrong without echoing more than a
//! bounded prefix of the input.

use super::change::Change;
use crate::event::{Did, Nsid};

/// Longest channel name accepted (an at-uri may be 8 KiB by spec).
pub const MAX_CHANNEL_LEN: usize = 8_300;

/// One subscribable channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    All,
    Table(String),
    /// An exact NSID, or with `prefix` every NSID starting with `nsid`
    /// (which then ends in `.`; `app.bsky.feed.*` → `app.bsky.feed.`).
    Collection {
        nsid: String,
        prefix: bool,
    },
    Did(String),
    Subject(String),
}

/// Why a channel name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("channel name is empty or longer than {MAX_CHANNEL_LEN} bytes")]
    Length,
    #[error("unknown channel kind {0:?}: expected table:, collection:, did:, subject: or all")]
    Kind(String),
    #[error("bad table name in channel: letters, digits and _ only")]
    Table,
    #[error("bad NSID in collection channel (exact, or a prefix ending in .*)")]
    Collection,
    #[error("bad DID in did channel")]
    Did,
    #[error("bad at-uri in subject channel")]
    Subject,
}

fn bounded(s: &str) -> String {
    let mut end = s.len().min(32);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

impl Channel {
    pub fn parse(name: &str) -> Result<Channel, ChannelError> {
        if name.is_empty() || name.len() > MAX_CHANNEL_LEN {
            return Err(ChannelError::Length);
        }
        if name == "all" {
            return Ok(Channel::All);
        }
        let (kind, rest) = name
            .split_once(':')
            .ok_or_else(|| ChannelError::Kind(bounded(name)))?;
        match kind {
            "table" => {
                let ok = !rest.is_empty()
                    && rest.len() <= 63
                    && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                ok.then(|| Channel::Table(rest.to_owned()))
                    .ok_or(ChannelError::Table)
            }
            "collection" => {
                if let Some(stem) = rest.strip_suffix(".*") {
                    // The stem must be the start of a valid NSID: check it
                    // with a placeholder name segment.
                    Nsid::parse(&format!("{stem}.x")).ok_or(ChannelError::Collection)?;
                    Ok(Channel::Collection {
                        nsid: format!("{stem}."),
                        prefix: true,
                    })
                } else if rest == "*" {
                    Ok(Channel::Collection {
                        nsid: String::new(),
                        prefix: true,
                    })
                } else {
                    Nsid::parse(rest).ok_or(ChannelError::Collection)?;
                    Ok(Channel::Collection {
                        nsid: rest.to_owned(),
                        prefix: false,
                    })
                }
            }
            // `did:did:plc:…` as the contract spells it; `did:plc:…` (the
            // DID's own prefix not repeated) is read the same way.
            "did" => Did::parse(rest)
                .or_else(|| Did::parse(&format!("did:{rest}")))
                .map(|d| Channel::Did(d.as_str().to_owned()))
                .ok_or(ChannelError::Did),
            "subject" => {
                let ok = rest.starts_with("at://")
                    && rest.len() > 5
                    && !rest.bytes().any(|b| b.is_ascii_control() || b == b' ');
                ok.then(|| Channel::Subject(rest.to_owned()))
                    .ok_or(ChannelError::Subject)
            }
            other => Err(ChannelError::Kind(bounded(other))),
        }
    }

    /// Whether `change` belongs to this channel.
    pub fn matches(&self, change: &Change) -> bool {
        match self {
            Channel::All => true,
            Channel::Table(t) => change.table_name == *t,
            Channel::Collection { nsid, prefix } => {
                if *prefix {
                    change.collection.starts_with(nsid.as_str())
                } else {
                    change.collection == *nsid
                }
            }
            Channel::Did(d) => change.did == *d,
            Channel::Subject(uri) => change.subjects.iter().any(|s| s == uri),
        }
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Channel::All => f.write_str("all"),
            Channel::Table(t) => write!(f, "table:{t}"),
            Channel::Collection { nsid, prefix: true } if nsid.is_empty() => {
                f.write_str("collection:*")
            }
            Channel::Collection { nsid, prefix: true } => write!(f, "collection:{nsid}*"),
            Channel::Collection { nsid, .. } => write!(f, "collection:{nsid}"),
            Channel::Did(d) => write!(f, "did:{d}"),
            Channel::Subject(s) => write!(f, "subject:{s}"),
        }
    }
}

/// Whether `channel` (a channel's name) is granted by `pattern`: equal, or
/// `pattern` ends in `*` and the name starts with what comes before it.
pub fn pattern_allows(pattern: &str, channel: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(stem) => channel.starts_with(stem),
        None => pattern == channel,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::change::tests::change;

    #[test]
    fn parses_every_kind_and_refuses_the_rest() {
        assert_eq!(Channel::parse("all"), Ok(Channel::All));
        assert_eq!(
            Channel::parse("table:app_bsky_feed_like"),
            Ok(Channel::Table("app_bsky_feed_like".into()))
        );
        assert_eq!(
            Channel::parse("collection:app.bsky.feed.*"),
            Ok(Channel::Collection {
                nsid: "app.bsky.feed.".into(),
                prefix: true
            })
        );
        assert_eq!(
            Channel::parse("collection:app.bsky.feed.like"),
            Ok(Channel::Collection {
                nsid: "app.bsky.feed.like".into(),
                prefix: false
            })
        );
        let did = Channel::Did("did:plc:ewvi7nxzyoun6zhxrhs64oiz".into());
        assert_eq!(
            Channel::parse("did:did:plc:ewvi7nxzyoun6zhxrhs64oiz"),
            Ok(did.clone())
        );
        assert_eq!(Channel::parse("did:plc:ewvi7nxzyoun6zhxrhs64oiz"), Ok(did));
        assert!(matches!(
            Channel::parse("subject:at://did:plc:x/app.bsky.feed.post/3k"),
            Ok(Channel::Subject(_))
        ));
        for bad in [
            "",
            "nope",
            "table:",
            "table:a;drop",
            "collection:app..x",
            "collection:*.feed",
            "did:nope",
            "subject:http://x",
            "subject:at://a b",
            "foo:bar",
        ] {
            assert!(Channel::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            Channel::parse(&"x".repeat(MAX_CHANNEL_LEN + 1)),
            Err(ChannelError::Length)
        );
        // The error never carries more than a bounded prefix of the input.
        let long = format!("{}:x", "k".repeat(500));
        assert!(Channel::parse(&long).unwrap_err().to_string().len() < 120);
    }

    #[test]
    fn names_round_trip() {
        for name in [
            "all",
            "table:app_bsky_feed_like",
            "collection:app.bsky.feed.*",
            "collection:app.bsky.feed.like",
            "collection:*",
            "did:did:plc:ewvi7nxzyoun6zhxrhs64oiz",
            "subject:at://did:plc:x/app.bsky.feed.post/3k",
        ] {
            assert_eq!(Channel::parse(name).unwrap().to_string(), name);
        }
    }

    #[test]
    fn matches_changes() {
        let c = change(7, "app_bsky_feed_like", "app.bsky.feed.like");
        let yes = [
            "all",
            "table:app_bsky_feed_like",
            "collection:app.bsky.feed.like",
            "collection:app.bsky.feed.*",
            "collection:app.bsky.*",
            "collection:*",
            "did:did:plc:ewvi7nxzyoun6zhxrhs64oiz",
            "subject:at://did:plc:z72i7hdynmk6r22z27h6tvur/app.bsky.feed.post/3lbyl2hd5n22x",
        ];
        let no = [
            "table:app_bsky_feed_post",
            "collection:app.bsky.feed.likes",
            "collection:app.bsky.graph.*",
            "did:did:plc:z72i7hdynmk6r22z27h6tvur",
            "subject:at://did:plc:z72i7hdynmk6r22z27h6tvur/app.bsky.feed.post/other",
        ];
        for name in yes {
            assert!(Channel::parse(name).unwrap().matches(&c), "{name}");
        }
        for name in no {
            assert!(!Channel::parse(name).unwrap().matches(&c), "{name}");
        }
    }

    #[test]
    fn patterns_grant_exact_names_and_prefixes() {
        assert!(pattern_allows(
            "table:app_bsky_feed_like",
            "table:app_bsky_feed_like"
        ));
        assert!(!pattern_allows(
            "table:app_bsky_feed_like",
            "table:app_bsky_feed_post"
        ));
        assert!(pattern_allows(
            "collection:app.bsky.*",
            "collection:app.bsky.feed.like"
        ));
        assert!(pattern_allows("*", "all"));
        assert!(!pattern_allows("did:*", "all"));
    }
}
