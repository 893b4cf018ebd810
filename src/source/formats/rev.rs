//! The one rev check every format applies to a repo revision (`rev` of a
//! commit or a `#sync`), before the rev reaches the chain check or the
//! store's rev guards.
//!
//! A rev is a TID, and TIDs compare in time order as strings, which is what
//! the firehose chain check and the SQL guards rely on. The check is the
//! bound parity has always applied (not empty, at most [`MAX_REV_LEN`]
//! bytes), not full TID syntax: existing peers and fixtures send revs such
//! as `3mpt<digits>`, and refusing them would drop data that is applied
//! today.

/// Longest rev accepted, in bytes (a TID is 13; the slack keeps odd but
/// ordered revs from other implementations).
pub const MAX_REV_LEN: usize = 64;

/// Whether `rev` is acceptable as a repo revision.
pub fn valid_rev(rev: &str) -> bool {
    !rev.is_empty() && rev.len() <= MAX_REV_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert!(valid_rev("3mvan7ylpmc2w"));
        assert!(valid_rev("r"));
        assert!(valid_rev(&"3".repeat(MAX_REV_LEN)));
        assert!(!valid_rev(""));
        assert!(!valid_rev(&"3".repeat(MAX_REV_LEN + 1)));
    }
}
