//! The phi-accrual failure detector (Hayashibara et al.), per link.
//!
//! Instead of a fixed timeout, a link keeps the history of how long its peer took to answer
//! (a window of recent samples) and turns "no answer for `t` ms" into a suspicion level
//! phi = -log10(P(an answer still comes after t)), modelling the delays as a normal
//! distribution. phi 1 means a 10% chance the peer is just slow, phi 8 one in 10^8. A link
//! with steady, fast answers is suspected after a short silence; a jittery one gets more
//! room. `min_std_dev_ms` keeps a perfectly steady link from being suspected at the first
//! microsecond of extra delay.

use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhiConfig {
    /// Suspect once phi reaches this.
    pub threshold: f64,
    /// Samples kept per link.
    pub window: usize,
    /// The smallest standard deviation assumed, in ms.
    pub min_std_dev_ms: f64,
    /// Before a link has samples, this many ms of silence is the suspicion point.
    pub first_timeout_ms: u64,
}

impl Default for PhiConfig {
    fn default() -> Self {
        PhiConfig {
            threshold: 8.0,
            window: 100,
            min_std_dev_ms: 10.0,
            first_timeout_ms: 100,
        }
    }
}

/// One link's history of answer delays.
#[derive(Debug, Clone, Default)]
pub struct Phi {
    samples: VecDeque<f64>,
    sum: f64,
    sum_sq: f64,
}

impl Phi {
    /// Records how long an answer took.
    pub fn sample(&mut self, delay_ms: f64, cfg: &PhiConfig) {
        self.samples.push_back(delay_ms);
        self.sum += delay_ms;
        self.sum_sq += delay_ms * delay_ms;
        while self.samples.len() > cfg.window.max(1) {
            let old = self.samples.pop_front().expect("not empty");
            self.sum -= old;
            self.sum_sq -= old * old;
        }
    }

    pub fn samples(&self) -> usize {
        self.samples.len()
    }

    /// The suspicion after `silence_ms` without an answer.
    pub fn phi(&self, silence_ms: f64, cfg: &PhiConfig) -> f64 {
        let n = self.samples.len() as f64;
        if n == 0.0 {
            return if silence_ms >= cfg.first_timeout_ms as f64 {
                f64::INFINITY
            } else {
                0.0
            };
        }
        let mean = self.sum / n;
        let var = (self.sum_sq / n - mean * mean).max(0.0);
        let std = var.sqrt().max(cfg.min_std_dev_ms);
        let y = (silence_ms - mean) / std;
        // The logistic approximation of the normal CDF's tail (as Akka's detector uses).
        let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
        if silence_ms > mean {
            -(e / (1.0 + e)).log10()
        } else {
            -(1.0 - 1.0 / (1.0 + e)).log10()
        }
    }

    /// Whether `silence_ms` without an answer reaches the threshold.
    pub fn suspects(&self, silence_ms: f64, cfg: &PhiConfig) -> bool {
        self.phi(silence_ms, cfg) >= cfg.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phi_grows_with_silence_and_adapts_to_the_link() {
        let cfg = PhiConfig::default();
        let mut steady = Phi::default();
        let mut jittery = Phi::default();
        for i in 0..100 {
            steady.sample(2.0, &cfg);
            jittery.sample(if i % 2 == 0 { 5.0 } else { 95.0 }, &cfg);
        }
        // Rises monotonically with silence.
        let mut last = 0.0;
        for t in (0..300).step_by(5) {
            let p = steady.phi(t as f64, &cfg);
            assert!(p >= last, "phi fell at {t}");
            last = p;
        }
        // The steady link is suspected far sooner than the jittery one.
        let first = |link: &Phi| {
            (0..10_000)
                .find(|&t| link.suspects(t as f64, &cfg))
                .unwrap()
        };
        assert!(first(&steady) < 60, "steady: {}", first(&steady));
        assert!(
            first(&jittery) > 2 * first(&steady),
            "jittery: {}",
            first(&jittery)
        );
        // No history: the first timeout.
        let fresh = Phi::default();
        assert!(!fresh.suspects(99.0, &cfg) && fresh.suspects(100.0, &cfg));
    }

    #[test]
    fn the_window_forgets_old_samples() {
        let cfg = PhiConfig {
            window: 10,
            ..PhiConfig::default()
        };
        let mut link = Phi::default();
        for _ in 0..10 {
            link.sample(500.0, &cfg);
        }
        let slow = link.phi(100.0, &cfg);
        for _ in 0..10 {
            link.sample(1.0, &cfg);
        }
        assert_eq!(link.samples(), 10);
        assert!(link.phi(100.0, &cfg) > slow);
    }
}
