//! Logging: the `[log]` config section, the tracing subscriber, and
//! [`Escaped`] for text that came from the network.
//!
//! Owns: [`LogConfig`] (`log.level`, `log.format`,
//! `log.progress_interval_seconds`), [`init_logging`] (text or JSON lines on
//! stderr) and [`Escaped`]. Does not own what is logged where: each
//! component logs its own lifecycle with `tracing` (fields first, message
//! last). Validation of `log.*` values stays in `Config::validate`.
//!
//! Logging rule: a field whose text may come from a peer (handles, record
//! text, upstream error messages, errors that quote input) is logged with
//! `?` or wrapped in [`Escaped`], never with a bare `%`, so it cannot
//! inject terminal escapes or fake log lines.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Logging.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A `RUST_LOG`-style filter, e.g. `info` or `parity=debug,sqlx=warn`.
    #[serde(default = "default_level")]
    pub level: String,
    /// `text` or `json`.
    #[serde(default = "default_format")]
    pub format: String,
    /// Seconds between progress lines while consuming (0: none).
    #[serde(default = "default_progress")]
    pub progress_interval_seconds: u64,
}

fn default_level() -> String {
    "info".into()
}
fn default_format() -> String {
    "text".into()
}
const fn default_progress() -> u64 {
    30
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_level(),
            format: default_format(),
            progress_interval_seconds: default_progress(),
        }
    }
}

/// Shows text from the network with control characters (C0, DEL, C1) and
/// bidirectional overrides escaped (`\u{1b}`, `\n`), so it can neither
/// drive the terminal nor start a fake log line.
pub struct Escaped<T>(pub T);

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Escaping<'a, 'b>(&'a mut fmt::Formatter<'b>);
        impl fmt::Write for Escaping<'_, '_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                for c in s.chars() {
                    if c.is_control()
                        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
                    {
                        write!(self.0, "{}", c.escape_debug())?;
                    } else {
                        fmt::Write::write_char(self.0, c)?;
                    }
                }
                Ok(())
            }
        }
        fmt::Write::write_fmt(&mut Escaping(f), format_args!("{}", self.0))
    }
}

/// Installs the global tracing subscriber. `filter` is a `RUST_LOG`-style
/// directive. Logs go to stderr:
/// - text: one line per event, coloured only when stderr is a terminal (a
///   file or journald gets no escape codes);
/// - JSON (`json`): one object per line with `timestamp` (RFC 3339, UTC),
///   `level`, `target` and `fields` (`message` plus the event's fields).
pub fn init_logging(filter: &str, json: bool) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true);
    let _ = if json {
        builder.json().with_ansi(false).try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_neutralises_control_characters() {
        let evil = "bob\u{1b}[31m.bsky.social\nINFO fake line\u{9b}\u{202e}";
        let shown = Escaped(evil).to_string();
        assert_eq!(
            shown,
            "bob\\u{1b}[31m.bsky.social\\nINFO fake line\\u{9b}\\u{202e}"
        );
        assert!(!shown.chars().any(char::is_control));
        assert_eq!(Escaped("plain ünïcode ✓").to_string(), "plain ünïcode ✓");
    }
}
