//! Zipf sampling by rejection-inversion (W. Hörmann and G. Derflinger, "Rejection-inversion
//! to generate variates from monotone discrete distributions", ACM TOMACS 6(3), 1996), as in
//! Apache Commons Math's `ZipfRejectionInversionSampler`.
//!
//! Rank `k` in `1..=n` comes up with probability `k^-s / H(n, s)`. Unlike the YCSB/Gray
//! method it needs no harmonic-number table or zeta precomputation, works for any exponent
//! `s > 0` (including 1 and above), and takes O(1) time and memory per sample: about 1.1
//! uniform draws on average.

/// Draws Zipf-distributed ranks in `1..=n`.
#[derive(Debug, Clone)]
pub struct Zipf {
    n: u64,
    exponent: f64,
    h_integral_x1: f64,
    h_integral_n: f64,
    s: f64,
}

impl Zipf {
    /// # Panics
    /// If `n` is 0 or the exponent is not finite and positive (the CLI checks both).
    pub fn new(n: u64, exponent: f64) -> Zipf {
        assert!(n > 0, "a Zipf distribution needs at least one rank");
        assert!(
            exponent.is_finite() && exponent > 0.0,
            "Zipf exponent must be > 0"
        );
        let mut z = Zipf {
            n,
            exponent,
            h_integral_x1: 0.0,
            h_integral_n: 0.0,
            s: 0.0,
        };
        z.h_integral_x1 = z.h_integral(1.5) - 1.0;
        z.h_integral_n = z.h_integral(n as f64 + 0.5);
        z.s = 2.0 - z.h_integral_inverse(z.h_integral(2.5) - z.h(2.0));
        z
    }

    pub fn n(&self) -> u64 {
        self.n
    }

    /// A rank in `1..=n`; `uniform` yields independent draws from `[0, 1)`.
    pub fn sample(&self, mut uniform: impl FnMut() -> f64) -> u64 {
        loop {
            // u is uniform in (h_integral_x1, h_integral_n].
            let u = self.h_integral_n + uniform() * (self.h_integral_x1 - self.h_integral_n);
            let x = self.h_integral_inverse(u);
            let k = ((x + 0.5) as u64).clamp(1, self.n);
            let kf = k as f64;
            // Accept at once when k is close to x (the common case), else compare u with
            // the area under the hat function.
            if kf - x <= self.s || u >= self.h_integral(kf + 0.5) - self.h(kf) {
                return k;
            }
        }
    }

    /// h(x) = x^-s, the unnormalised density.
    fn h(&self, x: f64) -> f64 {
        (-self.exponent * x.ln()).exp()
    }

    /// H(x), the integral of h from 1 to x, shifted so that it is continuous at s = 1.
    fn h_integral(&self, x: f64) -> f64 {
        let log_x = x.ln();
        expm1_over_x((1.0 - self.exponent) * log_x) * log_x
    }

    fn h_integral_inverse(&self, x: f64) -> f64 {
        // t may fall a little below -1 through rounding; the inverse is defined from -1 up.
        let t = (x * (1.0 - self.exponent)).max(-1.0);
        (ln1p_over_x(t) * x).exp()
    }
}

/// ln(1 + x) / x, accurate near 0 (Taylor series there).
fn ln1p_over_x(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - x * 0.25))
    }
}

/// (e^x - 1) / x, accurate near 0.
fn expm1_over_x(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + x * 0.25))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pmf(n: u64, s: f64) -> Vec<f64> {
        let w: Vec<f64> = (1..=n).map(|k| (k as f64).powf(-s)).collect();
        let total: f64 = w.iter().sum();
        w.into_iter().map(|x| x / total).collect()
    }

    /// Draws `draws` samples and checks them against the exact pmf with Pearson's
    /// chi-square, cells merged until each expects at least 50 draws. The bound is the
    /// mean plus 6 standard deviations of the chi-square distribution (a false alarm
    /// about once in 10^8 for a correct sampler); the seed is fixed, so the test is
    /// deterministic.
    fn check(n: u64, s: f64, draws: u64, seed: u64) {
        let z = Zipf::new(n, s);
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut counts = vec![0u64; n as usize];
        for _ in 0..draws {
            let k = z.sample(|| rng.f64());
            assert!((1..=n).contains(&k), "rank {k} outside 1..={n}");
            counts[(k - 1) as usize] += 1;
        }
        let p = pmf(n, s);
        // The head: each of the first 5 ranks within 5 standard deviations of its expected
        // count (binomial, sd ≈ sqrt(expected)).
        for k in 0..5usize.min(n as usize) {
            let want = p[k] * draws as f64;
            let off = (counts[k] as f64 - want).abs();
            assert!(
                off < 5.0 * want.sqrt(),
                "n={n} s={s} rank {}: saw {}, want {want:.0}",
                k + 1,
                counts[k]
            );
        }
        let (mut chi2, mut cells) = (0.0, 0usize);
        let (mut obs, mut exp) = (0.0, 0.0);
        for k in 0..n as usize {
            obs += counts[k] as f64;
            exp += p[k] * draws as f64;
            if exp >= 50.0 || k + 1 == n as usize {
                chi2 += (obs - exp) * (obs - exp) / exp;
                cells += 1;
                (obs, exp) = (0.0, 0.0);
            }
        }
        let dof = (cells - 1) as f64;
        let bound = dof + 6.0 * (2.0 * dof).sqrt();
        assert!(
            chi2 < bound,
            "n={n} s={s}: chi-square {chi2:.1} over {cells} cells, bound {bound:.1}"
        );
    }

    #[test]
    fn frequencies_match_the_distribution() {
        check(1_000, 0.99, 2_000_000, 7);
        check(1_000, 0.5, 2_000_000, 8);
        check(10_000, 1.0, 2_000_000, 9);
        check(100, 1.5, 1_000_000, 10);
        check(50, 3.0, 1_000_000, 11);
    }

    #[test]
    fn one_rank_and_tiny_exponents() {
        let z = Zipf::new(1, 0.99);
        assert!((0..100).all(|i| z.sample(|| i as f64 / 100.0) == 1));
        // An exponent near 0 is close to uniform.
        check(20, 1e-9, 400_000, 12);
    }

    #[test]
    fn the_extremes_of_the_uniform_draw_stay_in_range() {
        for s in [0.2, 0.99, 1.0, 1.01, 2.5] {
            let z = Zipf::new(1_000_000, s);
            for u in [0.0, 1e-300, 0.5, 1.0 - f64::EPSILON] {
                let mut once = Some(u);
                let k = z.sample(|| once.take().unwrap_or(0.5));
                assert!((1..=1_000_000).contains(&k));
            }
        }
    }
}
