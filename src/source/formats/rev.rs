//! The one rev check every format applies to a repo revision (`rev` of a
//! commit or a `#sync`), before the rev reaches the chain check or the
//! store's rev guards.
//!
//! A rev is a TID ([`crate::event::is_tid`]): 13 base32-sortable
//! characters, which compare in time order as strings, which is what the
//! firehose chain check and the SQL guards rely on. Anything else (empty,
//! longer, a NUL, another alphabet) is not a rev, and the event carrying it
//! is dropped as malformed before it can reach SQL.

/// Whether `rev` is acceptable as a repo revision.
pub fn valid_rev(rev: &str) -> bool {
    crate::event::is_tid(rev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revs_are_tids() {
        assert!(valid_rev("3mvan7ylpmc2w"));
        assert!(!valid_rev("r"));
        assert!(!valid_rev(""));
        assert!(!valid_rev("3mpt1783175888000001"));
        assert!(!valid_rev("3mvan7ylpmc2\0"));
        assert!(!valid_rev(&"3".repeat(64)));
    }
}
