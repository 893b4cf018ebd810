//! The at-uris a record points at, stored with each change of the change
//! log (`parity_changes.subjects`) so `subject:<at-uri>` channels route
//! without parsing records, and so a delete still routes by what the
//! removed row pointed at.
//!
//! Owns: which fields count (`subject.uri` of likes and reposts,
//! `reply.parent.uri` and `reply.root.uri`, `embed.record.uri` and
//! `embed.record.record.uri` of quotes with or without media) and reading
//! them. Only values that look like at-uris (and are no longer than a
//! channel name may be) are kept, without duplicates, in that order. Pure.
//!
//! Two readers with one answer: [`subjects_of`] on a parsed value (the
//! feed reads rows written before this column was filled), and
//! [`subjects_of_text`] on the record's text, which the commit path calls
//! once per logged row: it reads only those fields (borrowing, skipping
//! the rest of the record) and falls back to the parsed value when the
//! record is shaped unusually (a field of another type, a duplicate key).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// The longest subject kept: no `subject:` channel could name a longer one
/// (the feed's `channel::MAX_CHANNEL_LEN`).
pub const MAX_SUBJECT_LEN: usize = 8_300;

/// The paths read, in output order.
const PATHS: [&[&str]; 5] = [
    &["subject", "uri"],
    &["reply", "parent", "uri"],
    &["reply", "root", "uri"],
    &["embed", "record", "uri"],
    &["embed", "record", "record", "uri"],
];

fn keep(out: &mut Vec<String>, uri: Option<&str>) {
    if let Some(uri) = uri
        && uri.starts_with("at://")
        && uri.len() <= MAX_SUBJECT_LEN
        && !out.iter().any(|u| u == uri)
    {
        out.push(uri.to_owned());
    }
}

/// The at-uris `record` points at (see the module doc).
pub fn subjects_of(record: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for path in PATHS {
        let mut v = Some(record);
        for key in path {
            v = v.and_then(|v| v.get(key));
        }
        keep(&mut out, v.and_then(|v| v.as_str()));
    }
    out
}

/// A field that may hold anything: only a string is a uri.
type Any<'a> = Option<&'a RawValue>;

#[derive(Deserialize)]
struct Top<'a> {
    #[serde(borrow, default)]
    subject: Any<'a>,
    #[serde(borrow, default)]
    reply: Option<Reply<'a>>,
    #[serde(borrow, default)]
    embed: Option<Embed<'a>>,
}

#[derive(Deserialize)]
struct Reply<'a> {
    #[serde(borrow, default)]
    parent: Option<UriOf<'a>>,
    #[serde(borrow, default)]
    root: Option<UriOf<'a>>,
}

#[derive(Deserialize)]
struct Embed<'a> {
    #[serde(borrow, default)]
    record: Option<EmbedRecord<'a>>,
}

#[derive(Deserialize)]
struct EmbedRecord<'a> {
    #[serde(borrow, default)]
    uri: Any<'a>,
    #[serde(borrow, default)]
    record: Option<UriOf<'a>>,
}

#[derive(Deserialize)]
struct UriOf<'a> {
    #[serde(borrow, default)]
    uri: Any<'a>,
}

/// A raw JSON value as a string, if it is one.
fn text<'a>(v: Any<'a>) -> Option<Cow<'a, str>> {
    v.filter(|v| v.get().starts_with('"'))
        .and_then(|v| serde_json::from_str::<Cow<'a, str>>(v.get()).ok())
}

/// [`subjects_of`] of the record whose JSON text is `record`; empty when it
/// is not a JSON object.
pub fn subjects_of_text(record: &str) -> Vec<String> {
    // Records that point at nothing (most posts, profiles, follows) have no
    // at-uri anywhere in their text.
    if !record.contains("at://") {
        return Vec::new();
    }
    let Ok(top) = serde_json::from_str::<Top<'_>>(record) else {
        return serde_json::from_str(record)
            .map(|v| subjects_of(&v))
            .unwrap_or_default();
    };
    // `subject` is an object for likes and reposts, a DID for follows.
    let subject = top
        .subject
        .filter(|s| s.get().starts_with('{'))
        .and_then(|s| serde_json::from_str::<UriOf<'_>>(s.get()).ok())
        .and_then(|s| text(s.uri));
    let (parent, root) = match top.reply {
        Some(r) => (
            r.parent.and_then(|p| text(p.uri)),
            r.root.and_then(|p| text(p.uri)),
        ),
        None => (None, None),
    };
    let (quoted, quoted_inner) = match top.embed.and_then(|e| e.record) {
        Some(r) => (text(r.uri), r.record.and_then(|i| text(i.uri))),
        None => (None, None),
    };
    let mut out = Vec::new();
    for uri in [subject, parent, root, quoted, quoted_inner] {
        keep(&mut out, uri.as_deref());
    }
    out
}

/// The subjects as stored: a JSON array, or `None` when there are none.
pub(super) fn column(record: &str) -> Option<String> {
    let s = subjects_of_text(record);
    (!s.is_empty()).then(|| serde_json::to_string(&s).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(record: &str) -> Vec<String> {
        let by_text = subjects_of_text(record);
        let by_value = serde_json::from_str(record)
            .map(|v| subjects_of(&v))
            .unwrap_or_default();
        assert_eq!(by_text, by_value, "{record}");
        by_text
    }

    #[test]
    fn subjects_come_from_likes_replies_and_quotes() {
        assert_eq!(
            both(
                r#"{"reply":{"parent":{"uri":"at://a/p/1"},"root":{"uri":"at://a/p/0"}},
                "embed":{"record":{"record":{"uri":"at://b/p/2"}}},
                "subject":"did:plc:not-a-uri"}"#
            ),
            ["at://a/p/1", "at://a/p/0", "at://b/p/2"]
        );
        assert_eq!(
            both(r#"{"reply":{"parent":{"uri":"at://a/p/0"},"root":{"uri":"at://a/p/0"}}}"#),
            ["at://a/p/0"]
        );
        assert_eq!(
            both(
                r#"{"$type":"app.bsky.feed.like","subject":{"cid":"bafy","uri":"at://did:plc:b/app.bsky.feed.post/1"},"createdAt":"x"}"#
            ),
            ["at://did:plc:b/app.bsky.feed.post/1"]
        );
        assert_eq!(
            both(r#"{"embed":{"record":{"uri":"at://q/p/\u0031"}},"text":"at://no"}"#),
            ["at://q/p/1"]
        );
    }

    #[test]
    fn odd_shapes_answer_as_the_parsed_value_does() {
        for record in [
            r#"{"subject":{"uri":5},"reply":"x","embed":{"record":[1]}}"#,
            r#"{"subject":{"uri":"at://a/1"},"subject":{"uri":"at://b/2"}}"#,
            r#"{"reply":{"parent":null,"root":{"uri":"at://r/0"}},"embed":null}"#,
            r#"["at://x"]"#,
            r#"not json at://"#,
            r#"{"text":"at://a"}"#,
            r#"{"subject":{"uri":"at://too-long/"}}"#,
        ] {
            both(record);
        }
        let long = format!(
            r#"{{"subject":{{"uri":"at://{}"}}}}"#,
            "x".repeat(MAX_SUBJECT_LEN)
        );
        assert!(both(&long).is_empty());
        assert_eq!(column(r#"{"text":"hi"}"#), None);
        assert_eq!(
            column(r#"{"subject":{"uri":"at://a/b/c"}}"#).as_deref(),
            Some(r#"["at://a/b/c"]"#)
        );
    }
}
