//! [`Control`]: a frame that carries no event, only a word from the server
//! about the stream itself. Jetstream v2 and the firehose both send them
//! (`#info`, error frames) and both decode into this one type.
//!
//! Owns: the three kinds and their fields. Does not own: what the
//! connection does about them (`transport` logs an info and keeps reading,
//! reconnects on an error, counts an unknown frame as `unknown_type`).

/// Longest upstream `message` text kept in a log line, in characters.
pub const MAX_LOGGED_MESSAGE_CHARS: usize = 200;

/// A frame without an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// `#info` (e.g. `OutdatedCursor`): an advisory; log it, keep reading.
    /// Never moves the cursor.
    Info {
        name: String,
        message: Option<String>,
    },
    /// An error frame (firehose `op = -1`, v2 `$type: error`), e.g.
    /// `FutureCursor`, `ConsumerTooSlow`: the server closes the stream right
    /// after it. Log it and reconnect from the last position.
    Error {
        error: String,
        message: Option<String>,
    },
    /// A message type this version does not know: skip and count it, so
    /// additive protocol changes do not count as malformed. `op` is the
    /// firehose header `op` (none for v2); `t` the message type, if any.
    Unknown { op: Option<i64>, t: Option<String> },
}

impl Control {
    /// The upstream `message`, cut to [`MAX_LOGGED_MESSAGE_CHARS`] for logs.
    pub fn short_message(&self) -> Option<String> {
        match self {
            Control::Info { message, .. } | Control::Error { message, .. } => message
                .as_deref()
                .map(|m| m.chars().take(MAX_LOGGED_MESSAGE_CHARS).collect()),
            Control::Unknown { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_cut_for_logs() {
        let long = "é".repeat(500);
        let info = Control::Info {
            name: "OutdatedCursor".into(),
            message: Some(long),
        };
        let short = info.short_message().unwrap();
        assert_eq!(short.chars().count(), MAX_LOGGED_MESSAGE_CHARS);
        let err = Control::Error {
            error: "FutureCursor".into(),
            message: Some("soon".into()),
        };
        assert_eq!(err.short_message().as_deref(), Some("soon"));
        let none = Control::Error {
            error: "X".into(),
            message: None,
        };
        assert_eq!(none.short_message(), None);
        let unknown = Control::Unknown {
            op: Some(2),
            t: None,
        };
        assert_eq!(unknown.short_message(), None);
    }
}
