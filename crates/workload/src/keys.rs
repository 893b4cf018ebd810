//! The keys of generated events, in two modes.
//!
//! - [`KeyMode::Bench`]: sortable, counter-derived keys, as the original
//!   benchmark used: `did:plc:bench` + the account's rank in 19 digits, and
//!   rkeys and revs that are TID-shaped counters of the event index. Every
//!   index insert lands at the right edge of its B-tree (except the
//!   random subjects).
//! - [`KeyMode::Random`]: production-like: each account's DID is 24 random
//!   base32 characters (`did:plc:` as the PLC directory makes them), rkeys
//!   and revs are TIDs of the event's clock with a random 10-bit clock id,
//!   so URIs land anywhere in the `uri` and `did` indexes.
//!
//! Owns also the CID helpers: the real CID of DAG-CBOR bytes, and a random
//! one (a real CID of random bytes).

use sha2::Digest;

use crate::rng::Rng;

/// Which keys the generator makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMode {
    Bench,
    Random,
}

impl KeyMode {
    pub fn parse(s: &str) -> Option<KeyMode> {
        match s {
            "bench" => Some(KeyMode::Bench),
            "random" => Some(KeyMode::Random),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KeyMode::Bench => "bench",
            KeyMode::Random => "random",
        }
    }
}

const B32: &[u8] = b"234567abcdefghijklmnopqrstuvwxyz";

/// The TID of `micros` since the epoch and a 10-bit `clock_id`: 13
/// base32-sortable characters of (53-bit µs << 10 | clock id).
pub fn tid(micros: u64, clock_id: u64) -> String {
    let mut v = ((micros & ((1 << 53) - 1)) << 10) | (clock_id & 0x3ff);
    let mut out = [b'2'; 13];
    for c in out.iter_mut().rev() {
        *c = B32[(v & 31) as usize];
        v >>= 5;
    }
    String::from_utf8(out.to_vec()).expect("ascii")
}

/// A TID-shaped sortable counter (bench keys): `3` then `n` in 12 base32
/// digits, so `counter_tid(a) < counter_tid(b)` iff `a < b`.
pub fn counter_tid(mut n: u64) -> String {
    let mut out = [b'2'; 13];
    for c in out[1..].iter_mut().rev() {
        *c = B32[(n % 32) as usize];
        n /= 32;
    }
    out[0] = b'3';
    String::from_utf8(out.to_vec()).expect("ascii")
}

/// The DID of the account of rank `rank`.
pub fn did(mode: KeyMode, seed: u64, rank: usize) -> String {
    match mode {
        KeyMode::Bench => format!("did:plc:bench{rank:019}"),
        KeyMode::Random => {
            let mut rng = Rng::for_item(seed, DOMAIN_DID, rank as u64);
            let mut s = String::with_capacity(32);
            s.push_str("did:plc:");
            let mut v = rng.next_u64();
            for i in 0..24 {
                if i == 12 {
                    v = rng.next_u64();
                }
                s.push(B32[(v & 31) as usize] as char);
                v >>= 5;
            }
            s
        }
    }
}

/// Keeps the DID streams apart from the event streams.
const DOMAIN_DID: u64 = 0xD1D;

/// The CIDv1 (DAG-CBOR, sha2-256) of `bytes`.
pub fn dag_cid(bytes: &[u8]) -> cid::Cid {
    let digest = sha2::Sha256::digest(bytes);
    let mh = cid::multihash::Multihash::<64>::wrap(0x12, &digest).expect("sha2-256 fits");
    cid::Cid::new_v1(0x71, mh)
}

/// A random CID: the real CID of 16 random bytes.
pub fn random_cid(rng: &mut Rng) -> String {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    b[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
    dag_cid(&b).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tids_are_valid_and_follow_the_clock() {
        let a = tid(1_783_175_888_000_000, 5);
        let b = tid(1_783_175_888_000_001, 0);
        assert!(
            parity::event::is_tid(&a) && parity::event::is_tid(&b),
            "{a} {b}"
        );
        assert!(a < b);
        // A 2026 TID starts like real ones do (3m…).
        assert!(a.starts_with("3m"), "{a}");
    }

    #[test]
    fn counter_tids_are_valid_and_sortable() {
        let v: Vec<String> = [0u64, 1, 31, 32, 1_000_000, 10_000_000_000]
            .iter()
            .map(|&n| counter_tid(n))
            .collect();
        assert!(v.iter().all(|t| parity::event::is_tid(t)), "{v:?}");
        assert!(v.windows(2).all(|w| w[0] < w[1]), "{v:?}");
    }

    #[test]
    fn dids_per_mode() {
        let b = did(KeyMode::Bench, 1, 42);
        assert_eq!(b, "did:plc:bench0000000000000000042");
        assert!(did(KeyMode::Bench, 1, 41) < b);
        let r = did(KeyMode::Random, 1, 42);
        assert_eq!(r, did(KeyMode::Random, 1, 42), "stable per account");
        assert_ne!(r, did(KeyMode::Random, 1, 43));
        assert_ne!(r, did(KeyMode::Random, 2, 42), "the seed matters");
        let id = r.strip_prefix("did:plc:").unwrap();
        assert_eq!(id.len(), 24);
        assert!(id.bytes().all(|c| B32.contains(&c)), "{r}");
        assert!(parity::event::Did::parse(&r).is_some());
    }

    #[test]
    fn random_cids_parse_and_differ() {
        let mut rng = Rng::for_item(1, 0, 0);
        let a = random_cid(&mut rng);
        let b = random_cid(&mut rng);
        assert_ne!(a, b);
        assert!(parity::event::is_cid(&a), "{a}");
    }
}
