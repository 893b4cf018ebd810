//! DIDs drawn with a Zipf skew: account of rank `k` (1-based) in a pool of
//! `n` is chosen with probability `k^-s / H(n, s)`.
//!
//! Owns: the sampler (inverse CDF over a table of `n` cumulative weights,
//! 8 bytes per account: 8 MB for the default pool of 1,000,000) and the
//! closed-form share of the top `k` accounts that BENCHMARKS.md quotes.
//! With `s = 1` and `n = 1,000,000` the most active account sends 6.9 % of
//! the events, the top 10 20 %, the top 1,000 52 %; about a quarter of the
//! pool (roughly 250,000 accounts) appears in 1,000,000 events.

use crate::rng::Rng;

/// A Zipf(`n`, `s`) sampler of account ranks `0..n` (0 = most active).
#[derive(Debug, Clone)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// `n >= 1`, `s >= 0` (`s = 0` is uniform).
    pub fn new(n: usize, s: f64) -> Zipf {
        assert!(n >= 1 && s >= 0.0, "Zipf needs n >= 1 and s >= 0");
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 1..=n {
            total += (k as f64).powf(-s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Zipf { cdf }
    }

    pub fn len(&self) -> usize {
        self.cdf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cdf.is_empty()
    }

    /// A rank in `0..n`.
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }

    /// The probability that a draw is among the `k` most active accounts.
    pub fn top_share(&self, k: usize) -> f64 {
        if k == 0 {
            0.0
        } else {
            self.cdf[k.min(self.cdf.len()) - 1]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_follow_the_closed_form() {
        let z = Zipf::new(1_000_000, 1.0);
        // H(1e6) = 14.3927; rank 1 share = 1/H.
        assert!((z.top_share(1) - 1.0 / 14.3927).abs() < 1e-4);
        assert!((z.top_share(10) - 0.2034).abs() < 1e-3);
        let mut rng = Rng::for_item(3, 0, 0);
        let draws = 200_000;
        let mut top1 = 0;
        let mut top1000 = 0;
        for _ in 0..draws {
            let r = z.sample(&mut rng);
            assert!(r < 1_000_000);
            top1 += (r == 0) as usize;
            top1000 += (r < 1000) as usize;
        }
        let f1 = top1 as f64 / draws as f64;
        let f1000 = top1000 as f64 / draws as f64;
        assert!((f1 - z.top_share(1)).abs() < 0.005, "top-1 share {f1}");
        assert!(
            (f1000 - z.top_share(1000)).abs() < 0.01,
            "top-1000 share {f1000}"
        );
    }

    #[test]
    fn zero_exponent_is_uniform() {
        let z = Zipf::new(4, 0.0);
        let mut rng = Rng::for_item(1, 0, 0);
        let mut c = [0u32; 4];
        for _ in 0..40_000 {
            c[z.sample(&mut rng)] += 1;
        }
        assert!(c.iter().all(|&x| (9_500..10_500).contains(&x)), "{c:?}");
    }
}
