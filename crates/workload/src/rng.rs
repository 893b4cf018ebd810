//! A small deterministic random number stream (SplitMix64).
//!
//! Owns: turning `(seed, event index)` into an independent stream, so event
//! `i` of a run is a pure function of the seed and `i`: the generator can
//! re-create any earlier event (a delete finds the record it deletes that
//! way) and streams without keeping history. Not cryptographic.

/// One stream of pseudo-random numbers.
#[derive(Debug, Clone)]
pub struct Rng(u64);

/// The SplitMix64 output function (Steele, Lea, Flood 2014).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    /// The stream of item `index` under `seed` (`domain` keeps streams used
    /// for different purposes apart).
    pub fn for_item(seed: u64, domain: u64, index: u64) -> Rng {
        Rng(mix(seed ^ mix(domain.wrapping_add(mix(index)))))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is below 2^-40 for the
    /// ranges used here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_item_same_stream_other_items_differ() {
        let a: Vec<u64> = (0..4).map(|_| Rng::for_item(7, 1, 42).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            Rng::for_item(7, 1, 42).next_u64(),
            Rng::for_item(7, 1, 43).next_u64()
        );
        assert_ne!(
            Rng::for_item(7, 1, 42).next_u64(),
            Rng::for_item(8, 1, 42).next_u64()
        );
        assert_ne!(
            Rng::for_item(7, 1, 42).next_u64(),
            Rng::for_item(7, 2, 42).next_u64()
        );
    }

    #[test]
    fn below_and_unit_stay_in_range_and_spread() {
        let mut r = Rng::for_item(1, 0, 0);
        let mut buckets = [0u32; 10];
        for _ in 0..100_000 {
            let u = r.unit();
            assert!((0.0..1.0).contains(&u));
            buckets[r.below(10) as usize] += 1;
        }
        // Each bucket near 10,000 (binomial sd ≈ 95).
        assert!(
            buckets.iter().all(|&b| (9_500..10_500).contains(&b)),
            "{buckets:?}"
        );
    }
}
