//! The one RFC 3339 → µs parser every format uses for its `time` fields
//! (Jetstream v2 payloads, firehose bodies).
//!
//! Invariant: a parsed time is never before the Unix epoch, because it
//! becomes `Event::time_us`, from which lag and time-based cursors are
//! computed, and those are never negative.

/// Why a `time` field was refused; the decoder drops the message as
/// malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// Not RFC 3339.
    #[error("{0}")]
    Syntax(#[from] chrono::ParseError),
    /// Before 1970-01-01T00:00:00Z.
    #[error("before the Unix epoch")]
    BeforeEpoch,
}

/// RFC 3339 (any offset, any fractional digits) → µs since the epoch.
pub fn parse_time_us(s: &str) -> Result<i64, TimeError> {
    let us = chrono::DateTime::parse_from_rfc3339(s)?.timestamp_micros();
    if us < 0 {
        return Err(TimeError::BeforeEpoch);
    }
    Ok(us)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `time_us` as upstream writes it (`wireTime`: UTC, six digits).
    fn wire_time(us: i64) -> String {
        let t = chrono::DateTime::from_timestamp_micros(us).unwrap();
        t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    }

    #[test]
    fn offsets_fractions_and_refusals() {
        assert_eq!(
            parse_time_us("2024-09-09T19:46:02.329308Z"),
            Ok(1_725_911_162_329_308)
        );
        assert_eq!(
            parse_time_us("2026-07-04T14:38:07.877Z"),
            Ok(1_783_175_887_877_000)
        );
        assert_eq!(
            parse_time_us("2026-07-04T16:38:07.877+02:00"),
            Ok(1_783_175_887_877_000)
        );
        assert_eq!(parse_time_us("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_time_us("1969-12-31T23:59:59.000000Z"),
            Err(TimeError::BeforeEpoch)
        );
        for bad in ["", "yesterday", "2026-07-04"] {
            assert!(
                matches!(parse_time_us(bad), Err(TimeError::Syntax(_))),
                "{bad}"
            );
        }
    }

    proptest! {
        #[test]
        fn time_round_trips(us in 0i64..4_102_444_800_000_000) {
            prop_assert_eq!(parse_time_us(&wire_time(us)), Ok(us));
        }
    }
}
