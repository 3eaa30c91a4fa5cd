//! What one run does ([`Config`], built by [`crate::cli`] or directly by tests) and every
//! limit of the generator, each with its unit.

use std::time::Duration;

use crate::workload::Workload;

/// Digits of the number in a generated key (`key:000000012345`), as redis-benchmark's
/// `-r`; fixed so a request's length never depends on its key.
pub const KEY_DIGITS: usize = 12;
/// Largest key space: every key number must fit in [`KEY_DIGITS`] digits.
pub const KEYS_MAX: u64 = 1_000_000_000_000;
/// Largest value; the value bytes are allocated once at this size at most.
pub const VALUE_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Most requests in flight on one connection.
pub const PIPELINE_MAX: usize = 65_536;
/// Most connections in one run (each is a file descriptor).
pub const CONNECTIONS_MAX: usize = 65_536;
/// Most worker threads.
pub const THREADS_MAX: usize = 1_024;
/// Requests in flight per connection while `--populate` fills the key space.
pub const POPULATE_PIPELINE: usize = 64;
/// Bytes read from a socket at once; a reply larger than this grows the buffer.
pub const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Largest reply accepted (Redis's default proto-max-bulk-len).
pub const REPLY_MAX_BYTES: usize = 512 * 1024 * 1024;
/// How long in-flight requests may take to answer once the run has ended; those still
/// outstanding then are reported as timed out.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(2);
/// How often worker threads hand their interval counts to the progress line.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(100);
/// How often the progress line is printed.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Below this wait the event loop polls instead of sleeping: a sleep that short overshoots
/// by about as much, and would send open-loop requests late. So at open-loop rates above
/// ~50,000/s per thread the thread is always busy and its CPU share says little; its send
/// lag is the measure of whether it keeps up. (Sleeping instead saved only ~20% CPU at
/// 55,000/s on a 2-CPU VM, where every wake-up costs ~10 µs, and doubled the lag's p50.)
pub const SPIN_BELOW: Duration = Duration::from_micros(20);
/// Events taken from epoll per wait.
pub const EPOLL_EVENTS: usize = 1_024;
/// Latencies above this are recorded as this (HdrHistogram range), in nanoseconds.
pub const HIST_MAX_NS: u64 = 3_600 * 1_000_000_000;
/// HdrHistogram precision: 3 significant digits (0.1% resolution).
pub const HIST_SIGFIG: u8 = 3;

/// The RESP version the connections speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resp {
    V2,
    /// Sends `HELLO 3` on connect.
    V3,
}

/// How open-loop requests are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Exactly 1/rate apart.
    Uniform,
    /// Exponential gaps with mean 1/rate (independent arrivals).
    Poisson,
}

/// When the measured phase ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    After(Duration),
    /// This many requests in all, split across connections.
    Requests(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// ACL user; `None` sends the one-argument AUTH.
    pub user: Option<String>,
    pub password: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `host:port`.
    pub addr: String,
    pub auth: Option<Auth>,
    pub resp: Resp,
    /// SELECT this database after connecting.
    pub db: Option<u32>,
    pub threads: usize,
    /// Connections in all, dealt round-robin to threads.
    pub connections: usize,
    /// Most requests in flight per connection. Closed loop keeps exactly this many in
    /// flight; open loop sends on schedule while fewer are in flight, and a request that
    /// finds the connection full waits (its latency still counts from its slot).
    pub pipeline: usize,
    /// Open loop: total requests per second across all connections. `None`: closed loop.
    pub rate: Option<f64>,
    pub arrival: Arrival,
    pub stop: Stop,
    /// Load before measuring; its replies are not recorded.
    pub warmup: Duration,
    /// Pin worker thread `i` to `cpus[i % len]`.
    pub cpus: Option<Vec<usize>>,
    pub workload: Workload,
    /// SET every key once before the warm-up.
    pub populate: bool,
    pub seed: u64,
    pub connect_timeout: Duration,
    /// Longest wait for any reply while requests are in flight; longer fails the run.
    pub reply_timeout: Duration,
    /// Free text carried into the JSON and used as the plot legend.
    pub label: String,
}

impl Config {
    /// A closed-loop run of `workload` against `addr` with one thread and connection.
    pub fn new(addr: impl Into<String>, workload: Workload) -> Config {
        Config {
            addr: addr.into(),
            auth: None,
            resp: Resp::V2,
            db: None,
            threads: 1,
            connections: 1,
            pipeline: 1,
            rate: None,
            arrival: Arrival::Uniform,
            stop: Stop::After(Duration::from_secs(10)),
            warmup: Duration::ZERO,
            cpus: None,
            workload,
            populate: false,
            seed: 1,
            connect_timeout: Duration::from_secs(5),
            reply_timeout: Duration::from_secs(30),
            label: String::new(),
        }
    }

    pub fn is_open_loop(&self) -> bool {
        self.rate.is_some()
    }
}
