//! Open-loop arrival schedules: the times requests are meant to be sent, independent of
//! when replies come back. Pure: times are nanoseconds on the run's clock, passed in.

use crate::config::Arrival;

#[derive(Debug, Clone)]
pub struct Schedule {
    start_ns: u64,
    /// Mean gap between requests, ns.
    interval_ns: f64,
    arrival: Arrival,
    /// Uniform: index of the next request, so times are computed, never accumulated, and
    /// do not drift over a long run.
    index: u64,
    /// Uniform: offset of this connection's requests, as a fraction of the interval, so
    /// connections do not all send in the same instant.
    phase: f64,
    /// Poisson: the next time, accumulated in f64 ns (exact to well under 1 ns for years).
    at_ns: f64,
    rng: fastrand::Rng,
}

impl Schedule {
    /// `rate_per_s` requests per second starting at `start_ns`; `phase` in `[0, 1)`.
    pub fn new(start_ns: u64, rate_per_s: f64, arrival: Arrival, phase: f64, seed: u64) -> Self {
        assert!(
            rate_per_s > 0.0 && rate_per_s.is_finite(),
            "rate must be positive"
        );
        let mut s = Schedule {
            start_ns,
            interval_ns: 1e9 / rate_per_s,
            arrival,
            index: 0,
            phase: phase.clamp(0.0, 1.0),
            at_ns: start_ns as f64,
            rng: fastrand::Rng::with_seed(seed),
        };
        if arrival == Arrival::Poisson {
            s.at_ns += s.gap_ns();
        }
        s
    }

    fn gap_ns(&mut self) -> f64 {
        // 1 - U is in (0, 1], so the logarithm is finite.
        -(1.0 - self.rng.f64()).ln() * self.interval_ns
    }

    /// When the next request is due.
    pub fn next_ns(&self) -> u64 {
        match self.arrival {
            Arrival::Uniform => {
                self.start_ns + ((self.index as f64 + self.phase) * self.interval_ns) as u64
            }
            Arrival::Poisson => self.at_ns as u64,
        }
    }

    /// Takes the next slot and returns its time.
    pub fn pop(&mut self) -> u64 {
        let t = self.next_ns();
        match self.arrival {
            Arrival::Uniform => self.index += 1,
            Arrival::Poisson => self.at_ns += self.gap_ns(),
        }
        t
    }

    /// Takes every slot due before `end_ns` and returns how many there were: requests a
    /// run that ends at `end_ns` had scheduled but could not send.
    pub fn skip_until(&mut self, end_ns: u64) -> u64 {
        let mut n = 0;
        while self.next_ns() < end_ns {
            self.pop();
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_slots_are_evenly_spaced_and_do_not_drift() {
        let mut s = Schedule::new(1_000, 3.0, Arrival::Uniform, 0.5, 1);
        let first = s.pop();
        assert_eq!(first, 1_000 + 166_666_666);
        assert_eq!(s.pop(), 1_000 + 500_000_000);
        // After 3 million slots (a million seconds) the 3,000,001st is still on time.
        for _ in 0..3_000_000 - 2 {
            s.pop();
        }
        let t = s.pop() as f64;
        let want = 1_000.0 + (3_000_000.5 / 3.0) * 1e9;
        assert!((t - want).abs() < 1_000.0, "{t} vs {want}");
    }

    #[test]
    fn poisson_gaps_are_exponential() {
        let mut s = Schedule::new(0, 1_000.0, Arrival::Poisson, 0.0, 42);
        let mut prev = 0u64;
        let n = 200_000;
        let (mut sum, mut sum_sq, mut short) = (0.0, 0.0, 0);
        for _ in 0..n {
            let t = s.pop();
            assert!(t >= prev);
            let gap = (t - prev) as f64 / 1e6; // ms; mean 1
            (sum, sum_sq) = (sum + gap, sum_sq + gap * gap);
            short += usize::from(gap < 1.0);
            prev = t;
        }
        let mean = sum / n as f64;
        let sd = (sum_sq / n as f64 - mean * mean).sqrt();
        assert!((mean - 1.0).abs() < 0.01, "mean gap {mean} ms");
        assert!(
            (sd - 1.0).abs() < 0.02,
            "gap sd {sd} ms (exponential: sd = mean)"
        );
        // P(gap < mean) = 1 - 1/e.
        let frac = short as f64 / n as f64;
        assert!((frac - 0.632).abs() < 0.005, "{frac}");
    }

    #[test]
    fn skip_until_counts_the_slots_missed() {
        let mut s = Schedule::new(0, 1_000.0, Arrival::Uniform, 0.0, 1);
        s.pop();
        assert_eq!(s.skip_until(10_000_000), 9);
        assert_eq!(s.next_ns(), 10_000_000);
        assert_eq!(s.skip_until(10_000_000), 0);
    }
}
