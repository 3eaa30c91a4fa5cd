//! Latency histograms and counters: per command for the final report, and per interval
//! for the progress line. Latencies are recorded in nanoseconds.

use std::sync::Mutex;

use hdrhistogram::Histogram;
use tessera::resp::frame::Kind;

use crate::config::{HIST_MAX_NS, HIST_SIGFIG};

/// First bytes kept of the first error reply, to show the operator.
pub const ERROR_SAMPLE_BYTES: usize = 200;

/// An empty latency histogram: 1 ns to [`HIST_MAX_NS`], [`HIST_SIGFIG`] digits.
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_NS, HIST_SIGFIG).expect("constant bounds are valid")
}

/// One command's results.
#[derive(Debug, Clone)]
pub struct CmdStats {
    pub name: String,
    /// Every reply's latency, errors included.
    pub hist: Histogram<u64>,
    /// Replies that were values, nils (a GET of a missing key) and errors.
    pub hits: u64,
    pub misses: u64,
    pub errors: u64,
}

impl CmdStats {
    pub fn new(name: impl Into<String>) -> CmdStats {
        CmdStats {
            name: name.into(),
            hist: new_hist(),
            hits: 0,
            misses: 0,
            errors: 0,
        }
    }

    pub fn ops(&self) -> u64 {
        self.hits + self.misses + self.errors
    }

    fn record(&mut self, latency_ns: u64, kind: Kind) {
        self.hist.saturating_record(latency_ns.max(1));
        match kind {
            Kind::Value => self.hits += 1,
            Kind::Null => self.misses += 1,
            Kind::Error => self.errors += 1,
        }
    }

    pub fn add(&mut self, other: &CmdStats) {
        self.hist.add(&other.hist).expect("histograms share bounds");
        self.hits += other.hits;
        self.misses += other.misses;
        self.errors += other.errors;
    }

    /// Milliseconds at quantile `q` (0..=1).
    pub fn ms_at(&self, q: f64) -> f64 {
        ns_to_ms(self.hist.value_at_quantile(q))
    }
}

pub fn ns_to_ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// What the progress line shows for a stretch of time, all commands together.
#[derive(Debug, Clone)]
pub struct Interval {
    pub hist: Histogram<u64>,
    pub errors: u64,
}

impl Default for Interval {
    fn default() -> Self {
        Interval {
            hist: new_hist(),
            errors: 0,
        }
    }
}

impl Interval {
    pub fn ops(&self) -> u64 {
        self.hist.len()
    }

    pub fn add(&mut self, other: &Interval) {
        self.hist.add(&other.hist).expect("histograms share bounds");
        self.errors += other.errors;
    }

    pub fn clear(&mut self) {
        self.hist.reset();
        self.errors = 0;
    }
}

/// One worker thread's recording: everything the hot loop writes, owned by the thread.
#[derive(Debug)]
pub struct Recorder {
    pub cmds: Vec<CmdStats>,
    /// Replies to requests meant to be sent before this are not counted (warm-up, or
    /// recording off while it is `u64::MAX`). Nanoseconds on the run's clock.
    pub measure_from_ns: u64,
    /// When the last counted reply arrived.
    pub last_reply_ns: u64,
    /// Since the last [`Recorder::publish`]; counts warm-up replies too.
    pub interval: Interval,
    /// Open loop: how late the client itself sent requests (see `conn::state`).
    pub send_lag: Histogram<u64>,
    pub first_error: Option<Vec<u8>>,
}

impl Recorder {
    pub fn new(names: &[String]) -> Recorder {
        Recorder {
            cmds: names.iter().map(CmdStats::new).collect(),
            measure_from_ns: u64::MAX,
            last_reply_ns: 0,
            interval: Interval::default(),
            send_lag: new_hist(),
            first_error: None,
        }
    }

    /// A reply of `kind` arrived at `now_ns` for a request of row `row` meant to be sent
    /// at `intended_ns`.
    #[inline]
    pub fn record(&mut self, row: u16, intended_ns: u64, now_ns: u64, kind: Kind) {
        let latency = now_ns.saturating_sub(intended_ns);
        self.interval.hist.saturating_record(latency.max(1));
        self.interval.errors += u64::from(kind == Kind::Error);
        if intended_ns >= self.measure_from_ns {
            self.cmds[row as usize].record(latency, kind);
            self.last_reply_ns = now_ns;
        }
    }

    /// Keeps the start of the first error reply.
    pub fn note_error(&mut self, reply: &[u8]) {
        if self.first_error.is_none() {
            self.first_error = Some(reply[..reply.len().min(ERROR_SAMPLE_BYTES)].to_vec());
        }
    }

    #[inline]
    pub fn record_send_lag(&mut self, lag_ns: u64) {
        if lag_ns > 0 {
            self.send_lag.saturating_record(lag_ns);
        } else {
            self.send_lag.saturating_record(1);
        }
    }

    /// Forgets what was measured (the end of populate, the end of warm-up).
    pub fn reset_measurement(&mut self, measure_from_ns: u64) {
        for c in &mut self.cmds {
            let name = std::mem::take(&mut c.name);
            *c = CmdStats {
                name,
                ..CmdStats::new("")
            };
        }
        self.send_lag.reset();
        self.measure_from_ns = measure_from_ns;
        self.first_error = None;
    }

    /// Adds the interval so far to the progress line's share and starts a new one.
    pub fn publish(&mut self, shared: &Mutex<Interval>) {
        let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
        s.add(&self.interval);
        self.interval.clear();
    }
}

/// Adds `from`'s rows into `into`, matching by name.
pub fn merge(into: &mut Vec<CmdStats>, from: &[CmdStats]) {
    for c in from {
        match into.iter_mut().find(|x| x.name == c.name) {
            Some(x) => x.add(c),
            None => into.push(c.clone()),
        }
    }
}

/// All rows together.
pub fn total(rows: &[CmdStats]) -> CmdStats {
    let mut t = CmdStats::new("ALL");
    for r in rows {
        t.add(r);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_replies_show_in_progress_but_not_in_results() {
        let names = vec!["GET".to_string(), "SET".to_string()];
        let mut r = Recorder::new(&names);
        r.reset_measurement(1_000);
        r.record(0, 999, 2_000, Kind::Value); // meant before the measured window
        r.record(0, 1_000, 3_000, Kind::Null);
        r.record(1, 1_500, 4_000, Kind::Error);
        assert_eq!(r.interval.ops(), 3);
        assert_eq!(r.interval.errors, 1);
        assert_eq!(
            (r.cmds[0].hits, r.cmds[0].misses, r.cmds[0].errors),
            (0, 1, 0)
        );
        assert_eq!(r.cmds[1].errors, 1);
        assert_eq!(
            r.cmds[0].hist.max(),
            r.cmds[0].hist.highest_equivalent(2_000)
        );
        assert_eq!(r.last_reply_ns, 4_000);

        let shared = Mutex::new(Interval::default());
        r.publish(&shared);
        assert_eq!(shared.lock().unwrap().ops(), 3);
        assert_eq!(r.interval.ops(), 0);

        let mut all = vec![CmdStats::new("SET")];
        merge(&mut all, &r.cmds);
        assert_eq!(all.len(), 2);
        assert_eq!(total(&all).ops(), 2);
    }
}
