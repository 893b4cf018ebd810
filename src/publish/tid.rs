//! Record keys for creates: TIDs (timestamp identifiers), 13 characters of
//! base32-sortable over 53 bits of microseconds since the epoch and 10
//! bits of clock id, strictly increasing within this process.

use std::sync::Mutex;

const ALPHABET: &[u8; 32] = b"234567abcdefghijklmnopqrstuvwxyz";

static LAST: Mutex<u64> = Mutex::new(0);

/// A new TID, greater than every TID this process made before.
pub fn next() -> String {
    let now_us = chrono::Utc::now().timestamp_micros().max(0) as u64;
    let clock_id: u64 = rand::random::<u64>() & 0x3ff;
    let mut v = ((now_us & ((1 << 53) - 1)) << 10) | clock_id;
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    if v <= *last {
        v = *last + 1;
    }
    *last = v;
    encode(v)
}

fn encode(v: u64) -> String {
    (0..13)
        .rev()
        .map(|i| ALPHABET[((v >> (i * 5)) & 31) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tids_are_13_chars_valid_record_keys_and_increase() {
        let a = next();
        let b = next();
        assert_eq!(a.len(), 13);
        assert!(a < b, "{a} < {b}");
        assert!(crate::event::RecordKey::parse(&a).is_some());
        // The first character carries the top bit, which is always 0.
        assert!("234567abcdefghij".contains(&a[..1]));
        assert_eq!(encode(0), "2222222222222");
    }
}
