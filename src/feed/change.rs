//! One committed change: a `parity_changes` row, and the JSON message a
//! client receives for it.
//!
//! Owns: the in-memory [`Change`] and rendering a change as the flat JSON
//! object every transport sends (the row's columns plus `channel`). The
//! row part is rendered once per change and shared by every client; only
//! the channel is added per delivery. Pure: no IO.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// What happened to the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeOp {
    Upsert,
    Delete,
}

impl ChangeOp {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeOp::Upsert => "upsert",
            ChangeOp::Delete => "delete",
        }
    }

    pub fn parse(s: &str) -> Option<ChangeOp> {
        match s {
            "upsert" => Some(ChangeOp::Upsert),
            "delete" => Some(ChangeOp::Delete),
            _ => None,
        }
    }
}

/// A row of `parity_changes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Change {
    pub seq: i64,
    pub table_name: String,
    pub op: ChangeOp,
    pub uri: String,
    pub did: String,
    pub collection: String,
    pub rkey: String,
    pub cid: Option<String>,
    pub rev: Option<String>,
    /// The record as stored (atproto JSON); `None` for a delete.
    pub record: Option<Box<RawValue>>,
    /// RFC 3339, UTC.
    pub committed_at: String,
    /// The at-uris the record points at (see the module doc).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<String>,
}

/// A change ready to fan out: the change and its JSON without the closing
/// brace, so each delivery appends only `,"channel":…}`.
#[derive(Debug)]
pub struct Rendered {
    pub change: Change,
    /// `committed_at` in µs since the epoch, for the commit → send lag.
    pub committed_us: i64,
    head: String,
    /// Each channel's message, rendered once and shared by every client
    /// that reads the change through that channel. Kept as text known to
    /// be UTF-8, so a WebSocket frame is made of it without checking again.
    messages: Mutex<Vec<(Box<str>, Utf8Bytes)>>,
}

/// Most channels whose messages one change keeps rendered.
const RENDERED_CHANNELS: usize = 16;

impl Rendered {
    pub fn new(change: Change) -> Arc<Rendered> {
        let mut head = serde_json::to_string(&change).unwrap_or_else(|_| "{".to_owned());
        head.pop(); // the closing brace
        let committed_us = chrono::DateTime::parse_from_rfc3339(&change.committed_at)
            .map(|t| t.timestamp_micros())
            .unwrap_or_else(|_| chrono::Utc::now().timestamp_micros());
        Arc::new(Rendered {
            change,
            committed_us,
            head,
            messages: Mutex::default(),
        })
    }

    /// The message for a client subscribed through `channel`.
    pub fn message(&self, channel: &str) -> String {
        // A channel name is validated text; serde escapes it all the same.
        let value = serde_json::to_string(channel).unwrap_or_else(|_| "\"\"".to_owned());
        self.with_field("channel", &value)
    }

    /// [`Rendered::message`] as shared bytes, rendered once per channel.
    pub fn message_bytes(&self, channel: &str) -> Bytes {
        self.message_text(channel).into()
    }

    /// [`Rendered::message`] as shared text, rendered once per channel.
    pub fn message_text(&self, channel: &str) -> Utf8Bytes {
        let mut cache = self.messages.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, b)) = cache.iter().find(|(c, _)| **c == *channel) {
            return b.clone();
        }
        let b = Utf8Bytes::from(self.message(channel));
        if cache.len() < RENDERED_CHANNELS {
            cache.push((channel.into(), b.clone()));
        }
        b
    }

    /// The row's JSON with one more field, `value` being JSON already.
    pub fn with_field(&self, key: &str, value: &str) -> String {
        let mut out = String::with_capacity(self.head.len() + key.len() + value.len() + 8);
        out.push_str(&self.head);
        out.push_str(",\"");
        out.push_str(key);
        out.push_str("\":");
        out.push_str(value);
        out.push('}');
        out
    }
}

/// The at-uris a record points at (`subject:` channels); the store
/// computes them for each change it logs.
pub use crate::store::subjects_of;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A like by did:plc:ewvi… of a post by did:plc:z72i….
    pub fn change(seq: i64, table: &str, collection: &str) -> Change {
        let record = r#"{"$type":"app.bsky.feed.like","createdAt":"2026-12-01T10:00:00.000Z","subject":{"cid":"bafyreib","uri":"at://did:plc:z72i7hdynmk6r22z27h6tvur/app.bsky.feed.post/3lbyl2hd5n22x"}}"#;
        let value: serde_json::Value = serde_json::from_str(record).unwrap();
        Change {
            seq,
            table_name: table.into(),
            op: ChangeOp::Upsert,
            uri: format!("at://did:plc:ewvi7nxzyoun6zhxrhs64oiz/{collection}/3lc2"),
            did: "did:plc:ewvi7nxzyoun6zhxrhs64oiz".into(),
            collection: collection.into(),
            rkey: "3lc2".into(),
            cid: Some("bafyreia".into()),
            rev: Some("3lc2aaaaaaa22".into()),
            record: Some(RawValue::from_string(record.into()).unwrap()),
            committed_at: "2026-12-01T10:00:00.000000Z".into(),
            subjects: subjects_of(&value),
        }
    }

    #[test]
    fn a_message_is_the_row_plus_its_channel() {
        let r = Rendered::new(change(42, "app_bsky_feed_like", "app.bsky.feed.like"));
        let msg: serde_json::Value = serde_json::from_str(&r.message("table:x\"y")).unwrap();
        assert_eq!(msg["seq"], 42);
        assert_eq!(msg["op"], "upsert");
        assert_eq!(msg["table_name"], "app_bsky_feed_like");
        assert_eq!(msg["channel"], "table:x\"y");
        assert_eq!(msg["record"]["subject"]["cid"], "bafyreib");
        assert_eq!(msg["committed_at"], "2026-12-01T10:00:00.000000Z");
    }

    #[test]
    fn each_channel_message_is_rendered_once_and_shared() {
        let r = Rendered::new(change(7, "likes", "app.bsky.feed.like"));
        let a = r.message_bytes("table:likes");
        let b = r.message_bytes("table:likes");
        let c = r.message_bytes("all");
        assert_eq!(a, r.message("table:likes").as_bytes());
        assert_eq!(c, r.message("all").as_bytes());
        assert_eq!(
            a.as_ptr(),
            b.as_ptr(),
            "the second client shares the first rendering"
        );
        assert_ne!(a.as_ptr(), c.as_ptr());
    }
}
