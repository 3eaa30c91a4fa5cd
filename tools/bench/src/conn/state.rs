//! One connection's load, without I/O: which requests to send now, and what the replies
//! that arrived mean. Times are the caller's (nanoseconds on the run's clock), so tests
//! drive it with a simulated server and clock.
//!
//! Every request remembers the time it was *meant* to be sent. In closed loop that is the
//! moment it is written. In open loop it is its slot in the [`Schedule`]: a request whose
//! slot has come while the connection already has `cap` requests in flight waits, and is
//! sent as soon as a reply makes room, with its latency still counted from its slot. Slots
//! are never skipped, so a stall delays every request scheduled during it and the
//! percentiles say so (no coordinated omission).
//!
//! With `--set-on-miss` a GET answered nil queues a SET of its key, and the queued SETs go
//! before any new GET: in closed loop as soon as there is room, in open loop in the
//! connection's next slots. They are requests like any other (they spend the budget and
//! the schedule); those still queued when the run ends are not sent.

use std::collections::VecDeque;

use tessera::resp::frame::{self, Decoded, Kind};

use crate::error::ConnError;
use crate::schedule::Schedule;
use crate::stats::Recorder;
use crate::workload::RequestGen;

/// How requests are paced.
#[derive(Debug)]
pub enum Pace {
    /// Keep `cap` requests in flight.
    Closed,
    /// Send on this schedule while fewer than `cap` are in flight.
    Open(Schedule),
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    intended_ns: u64,
    /// The key number, for the SET that follows a miss.
    key: u64,
    row: u16,
}

/// The budget that means "no limit".
pub const UNLIMITED: u64 = u64::MAX;

#[derive(Debug)]
pub struct ConnState {
    gen: RequestGen,
    pace: Pace,
    cap: usize,
    in_flight: VecDeque<Pending>,
    /// `--set-on-miss`: keys whose GET missed, to SET before anything else. Never longer
    /// than `cap`: a key moves here from `in_flight` and back, and no new GET is sent
    /// while one waits.
    miss_sets: VecDeque<u64>,
    /// Requests this connection may still send.
    budget: u64,
    sending: bool,
    /// Open loop: when a reply last made room on a full connection. A request sent late
    /// because the connection was full is late by the server's doing; only the delay since
    /// then (or since its slot, if later) is the client's own send lag.
    room_since_ns: u64,
}

impl ConnState {
    pub fn new(gen: RequestGen, pace: Pace, cap: usize) -> ConnState {
        assert!(cap > 0, "a connection needs room for one request");
        let miss_cap = if gen.has_set_on_miss() { cap } else { 0 };
        ConnState {
            gen,
            pace,
            cap,
            in_flight: VecDeque::with_capacity(cap),
            miss_sets: VecDeque::with_capacity(miss_cap),
            budget: UNLIMITED,
            sending: true,
            room_since_ns: 0,
        }
    }

    /// Switches to another load (after populating). Requests still in flight keep their
    /// place; the queue is resized here, outside the hot loop.
    pub fn switch(&mut self, gen: RequestGen, pace: Pace, cap: usize) {
        assert!(cap > 0, "a connection needs room for one request");
        self.gen = gen;
        self.pace = pace;
        self.cap = cap;
        self.in_flight
            .reserve(cap.saturating_sub(self.in_flight.len()));
        self.miss_sets.clear();
        if self.gen.has_set_on_miss() {
            self.miss_sets.reserve(cap);
        }
        self.budget = UNLIMITED;
        self.sending = true;
    }

    pub fn set_budget(&mut self, requests: u64) {
        self.budget = requests;
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// `--set-on-miss`: SETs of missed keys waiting to be sent.
    pub fn queued_miss_sets(&self) -> usize {
        self.miss_sets.len()
    }

    /// Nothing in flight and nothing more to send.
    pub fn is_done(&self) -> bool {
        (!self.sending || self.budget == 0) && self.in_flight.is_empty()
    }

    fn may_send(&self) -> bool {
        self.sending && self.budget > 0 && self.in_flight.len() < self.cap
    }

    pub fn wants_to_send(&self, now_ns: u64) -> bool {
        self.may_send()
            && match &self.pace {
                Pace::Closed => true,
                Pace::Open(s) => s.next_ns() <= now_ns,
            }
    }

    /// When the next request is due, if only the clock holds it back.
    pub fn next_due_ns(&self) -> Option<u64> {
        match &self.pace {
            Pace::Open(s) if self.may_send() => Some(s.next_ns()),
            _ => None,
        }
    }

    /// Appends to `out` every request to send at `now_ns`; returns how many.
    pub fn fill(&mut self, now_ns: u64, out: &mut Vec<u8>, rec: &mut Recorder) -> usize {
        let mut n = 0;
        while self.may_send() {
            let intended_ns = match &mut self.pace {
                Pace::Closed => now_ns,
                Pace::Open(s) if s.next_ns() <= now_ns => {
                    let t = s.pop();
                    rec.record_send_lag(now_ns.saturating_sub(t.max(self.room_since_ns)));
                    t
                }
                Pace::Open(_) => break,
            };
            let (row, key) = match self.miss_sets.pop_front() {
                Some(key) => (self.gen.write_miss_set(key, out), key),
                None => self.gen.write_next(out),
            };
            self.in_flight.push_back(Pending {
                intended_ns,
                key,
                row,
            });
            if self.budget != UNLIMITED {
                self.budget -= 1;
            }
            n += 1;
        }
        n
    }

    /// Takes the whole replies at the front of `buf`, received at `now_ns`, and records
    /// them; returns the bytes used (the rest is an incomplete reply).
    pub fn on_input(
        &mut self,
        buf: &[u8],
        now_ns: u64,
        rec: &mut Recorder,
    ) -> Result<usize, ConnError> {
        let was_full = self.in_flight.len() >= self.cap;
        let mut at = 0;
        loop {
            match frame::skip(&buf[at..]) {
                Decoded::Complete(kind, len) => {
                    // A RESP3 push (invalidation, pub/sub) answers no request.
                    if buf[at] != b'>' {
                        let p = self
                            .in_flight
                            .pop_front()
                            .ok_or(ConnError::UnexpectedReply)?;
                        if kind == Kind::Error {
                            rec.note_error(&buf[at..at + len]);
                        } else if kind == Kind::Null && self.gen.sets_on_miss(p.row) {
                            self.miss_sets.push_back(p.key);
                        }
                        rec.record(p.row, p.intended_ns, now_ns, kind);
                    }
                    at += len;
                }
                Decoded::Incomplete => break,
                Decoded::Invalid(e) => return Err(ConnError::Protocol(e)),
            }
        }
        if was_full && self.in_flight.len() < self.cap {
            self.room_since_ns = now_ns;
        }
        Ok(at)
    }

    /// Stops sending at `end_ns`; returns the open-loop requests scheduled before then
    /// that were never sent (the backlog of an overloaded server).
    pub fn stop(&mut self, end_ns: u64) -> u64 {
        self.sending = false;
        match &mut self.pace {
            Pace::Closed => 0,
            Pace::Open(s) => s.skip_until(end_ns),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Arrival;
    use crate::workload::{KeySampler, Prepared, Workload};

    const MS: u64 = 1_000_000;

    fn conn(pace: Pace, cap: usize) -> (ConnState, Recorder) {
        let w = Workload::simple(0, 1, 100, 8);
        let p = Prepared::new(&w, 1);
        let rec = Recorder::new(&p.names);
        let gen = RequestGen::new(p, KeySampler::new(w.dist, w.keys, 0, 1), 1);
        (ConnState::new(gen, pace, cap), rec)
    }

    /// A `--set-on-miss` connection over 1,000 keys, recording from time 0.
    fn cache_conn(pace: Pace, cap: usize) -> (ConnState, Recorder) {
        let w = Workload::cache_aside(1_000, 5);
        let p = Prepared::new(&w, 1);
        let mut rec = Recorder::new(&p.names);
        rec.reset_measurement(0);
        let gen = RequestGen::new(p, KeySampler::new(w.dist, w.keys, 0, 1), 1);
        (ConnState::new(gen, pace, cap), rec)
    }

    /// `out`'s requests as `NAME key` strings (the value, if any, left out).
    fn requests(out: &[u8]) -> Vec<String> {
        use tessera::resp::{Decoded, Limits, RequestDecoder};
        let limits = Limits {
            max_bulk_bytes: 1 << 20,
            max_multibulk_len: 64,
            unauthenticated: false,
        };
        let (mut d, mut at, mut v) = (RequestDecoder::default(), 0, Vec::new());
        while at < out.len() {
            match d.decode(&out[at..], &limits) {
                Decoded::Command { consumed, .. } => {
                    let b = &out[at..];
                    let arg =
                        |i: usize| String::from_utf8_lossy(&b[d.args()[i].clone()]).into_owned();
                    v.push(format!("{} {}", arg(0), arg(1)));
                    at += consumed;
                }
                other => panic!("{other:?}"),
            }
        }
        v
    }

    /// A one-connection FIFO server, simulated: each request takes `service_ns`, except
    /// the first one that arrives at or after `stall_at_ns`, which takes `stall_ns`.
    /// Runs `st` for `run_ns` and returns the recorder.
    fn simulate(
        mut st: ConnState,
        mut rec: Recorder,
        service_ns: u64,
        stall_at_ns: u64,
        stall_ns: u64,
        run_ns: u64,
    ) -> Recorder {
        rec.reset_measurement(0);
        let (mut now, mut free_at, mut stalled) = (0u64, 0u64, false);
        let mut replies: VecDeque<u64> = VecDeque::new();
        let mut out = Vec::new();
        while now < run_ns || st.in_flight() > 0 {
            if now >= run_ns {
                st.stop(run_ns);
            }
            for _ in 0..st.fill(now, &mut out, &mut rec) {
                let start = now.max(free_at);
                let took = if !stalled && start >= stall_at_ns {
                    stalled = true;
                    stall_ns
                } else {
                    service_ns
                };
                free_at = start + took;
                replies.push_back(free_at);
            }
            out.clear();
            let next = [replies.front().copied(), st.next_due_ns()]
                .into_iter()
                .flatten()
                .min();
            now = match next {
                Some(t) => t.max(now),
                None => break,
            };
            while replies.front().is_some_and(|&t| t <= now) {
                replies.pop_front();
                assert_eq!(st.on_input(b"$-1\r\n", now, &mut rec).unwrap(), 5);
            }
        }
        rec
    }

    #[test]
    fn open_loop_counts_a_stall_against_every_request_scheduled_during_it() {
        // 1,000 requests/s for 1 s, 50 µs each, one 200 ms stall at 300 ms: the ~200
        // requests scheduled during the stall wait for it, from 200 ms down to 0.
        let sched = Schedule::new(0, 1_000.0, Arrival::Uniform, 0.0, 1);
        let (st, rec) = conn(Pace::Open(sched), 1);
        let rec = simulate(st, rec, 50_000, 300 * MS, 200 * MS, 1_000 * MS);
        let get = &rec.cmds[0];
        assert_eq!(get.ops(), 1_000);
        assert_eq!(get.misses, 1_000);
        assert!(get.ms_at(0.5) < 0.06, "p50 {}", get.ms_at(0.5));
        // A fifth of the requests waited; their waits are spread evenly up to 200 ms.
        let p90 = get.ms_at(0.9);
        assert!((90.0..110.0).contains(&p90), "p90 {p90} ms");
        assert!(get.ms_at(1.0) >= 200.0);
        // The client itself was never late: the requests waited for the server.
        assert!(rec.send_lag.max() < 1_000, "lag {} ns", rec.send_lag.max());
    }

    #[test]
    fn closed_loop_hides_the_same_stall_in_one_sample() {
        // What coordinated omission looks like: the closed loop stops sending during the
        // stall, so only one request sees it.
        let (st, rec) = conn(Pace::Closed, 1);
        let rec = simulate(st, rec, 50_000, 300 * MS, 200 * MS, 1_000 * MS);
        let get = &rec.cmds[0];
        assert!(get.ops() > 10_000);
        assert!(get.ms_at(0.999) < 0.06, "p99.9 {}", get.ms_at(0.999));
        assert!(get.ms_at(1.0) >= 200.0);
    }

    #[test]
    fn an_overloaded_open_loop_shows_growing_latency_and_the_backlog() {
        // 2,000 requests/s offered, 1,000/s served, pipelined up to 64.
        let sched = Schedule::new(0, 2_000.0, Arrival::Uniform, 0.0, 1);
        let (mut st, rec) = conn(Pace::Open(sched), 64);
        st.set_budget(UNLIMITED);
        let rec = simulate(st, rec, MS, u64::MAX, 0, 1_000 * MS);
        let get = &rec.cmds[0];
        // ~1,000 served in the second plus those in flight at the end; the last waited
        // ~500 ms (half the run's offered load was still queued).
        assert!((1_000..=1_070).contains(&get.ops()), "{}", get.ops());
        assert!(get.ms_at(0.99) > 400.0, "p99 {}", get.ms_at(0.99));
    }

    #[test]
    fn closed_loop_keeps_cap_in_flight_and_spends_its_budget() {
        let (mut st, mut rec) = conn(Pace::Closed, 4);
        st.set_budget(6);
        let mut out = Vec::new();
        assert_eq!(st.fill(0, &mut out, &mut rec), 4);
        assert!(!st.wants_to_send(0));
        assert_eq!(
            st.on_input(b"$1\r\nx\r\n-ERR no\r\n$1\r", 10, &mut rec)
                .unwrap(),
            16
        );
        assert_eq!(st.fill(10, &mut out, &mut rec), 2);
        assert_eq!(st.fill(10, &mut out, &mut rec), 0);
        assert!(!st.is_done());
        st.on_input(b"_\r\n>2\r\n+a\r\n+b\r\n:1\r\n:2\r\n:3\r\n", 20, &mut rec)
            .unwrap();
        assert!(st.is_done());
        assert_eq!(rec.first_error.as_deref(), Some(&b"-ERR no\r\n"[..]));
        assert!(matches!(
            st.on_input(b"+x\r\n", 30, &mut rec),
            Err(ConnError::UnexpectedReply)
        ));
        assert!(matches!(
            st.on_input(b"?\r\n", 30, &mut rec),
            Err(ConnError::Protocol(_))
        ));
    }

    #[test]
    fn a_miss_sends_a_set_of_its_key_before_the_next_get() {
        let (mut st, mut rec) = cache_conn(Pace::Closed, 2);
        let mut out = Vec::new();
        assert_eq!(st.fill(0, &mut out, &mut rec), 2);
        let gets = requests(&out);
        assert!(gets.iter().all(|r| r.starts_with("GET key:")), "{gets:?}");
        // The first GET misses (RESP2 nil), the second hits.
        st.on_input(b"$-1\r\n$1\r\nx\r\n", 10, &mut rec).unwrap();
        assert_eq!(st.queued_miss_sets(), 1);
        out.clear();
        assert_eq!(st.fill(10, &mut out, &mut rec), 2);
        let next = requests(&out);
        assert_eq!(next[0], gets[0].replace("GET", "SET"));
        assert!(next[1].starts_with("GET "), "{next:?}");
        assert_eq!(st.queued_miss_sets(), 0);
        // SET answers OK, the GET misses again (RESP3 null): one more SET.
        st.on_input(b"+OK\r\n_\r\n", 20, &mut rec).unwrap();
        out.clear();
        st.fill(20, &mut out, &mut rec);
        assert_eq!(requests(&out)[0], next[1].replace("GET", "SET"));
        let (get, set) = (&rec.cmds[0], &rec.cmds[1]);
        assert_eq!((get.name.as_str(), get.hits, get.misses), ("GET", 1, 2));
        assert_eq!((set.name.as_str(), set.hits, set.misses), ("SET", 1, 0));
    }

    #[test]
    fn an_error_or_a_hit_sends_no_set() {
        let (mut st, mut rec) = cache_conn(Pace::Closed, 3);
        let mut out = Vec::new();
        st.fill(0, &mut out, &mut rec);
        st.on_input(b"-ERR x\r\n$0\r\n\r\n*0\r\n", 10, &mut rec)
            .unwrap();
        assert_eq!(st.queued_miss_sets(), 0);
        out.clear();
        st.fill(10, &mut out, &mut rec);
        assert!(requests(&out).iter().all(|r| r.starts_with("GET ")));
    }

    #[test]
    fn open_loop_sends_the_set_in_the_next_slot() {
        let sched = Schedule::new(0, 1_000.0, Arrival::Uniform, 0.0, 1);
        let (mut st, mut rec) = cache_conn(Pace::Open(sched), 4);
        let mut out = Vec::new();
        assert_eq!(st.fill(0, &mut out, &mut rec), 1);
        let get = requests(&out).remove(0);
        st.on_input(b"$-1\r\n", MS / 10, &mut rec).unwrap();
        // Room on the connection, but the next slot is at 1 ms.
        assert!(!st.wants_to_send(MS / 10));
        assert_eq!(st.next_due_ns(), Some(MS));
        out.clear();
        assert_eq!(st.fill(MS, &mut out, &mut rec), 1);
        assert_eq!(requests(&out), [get.replace("GET", "SET")]);
        out.clear();
        assert_eq!(st.fill(2 * MS, &mut out, &mut rec), 1);
        assert!(requests(&out)[0].starts_with("GET "));
    }

    #[test]
    fn the_sets_spend_the_budget_and_queued_ones_are_dropped_at_the_end() {
        let (mut st, mut rec) = cache_conn(Pace::Closed, 1);
        st.set_budget(3);
        let mut out = Vec::new();
        for reply in [&b"$-1\r\n"[..], b"+OK\r\n", b"$-1\r\n"] {
            assert_eq!(st.fill(0, &mut out, &mut rec), 1);
            st.on_input(reply, 1, &mut rec).unwrap();
        }
        assert_eq!(st.fill(2, &mut out, &mut rec), 0);
        assert_eq!(st.queued_miss_sets(), 1);
        assert!(st.is_done());
        let sent = requests(&out);
        assert_eq!(sent.len(), 3);
        assert!(
            sent[0].starts_with("GET ")
                && sent[1].starts_with("SET ")
                && sent[2].starts_with("GET ")
        );
    }

    #[test]
    fn stopping_counts_the_unsent_backlog() {
        let sched = Schedule::new(0, 1_000.0, Arrival::Uniform, 0.0, 1);
        let (mut st, mut rec) = conn(Pace::Open(sched), 1);
        let mut out = Vec::new();
        assert_eq!(st.fill(0, &mut out, &mut rec), 1);
        // No reply for 10 ms: slots 1..=9 are due and waiting.
        assert_eq!(st.fill(9 * MS, &mut out, &mut rec), 0);
        assert_eq!(st.stop(10 * MS), 9);
        assert!(!st.wants_to_send(20 * MS));
    }
}
