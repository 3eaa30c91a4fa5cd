//! tessera-bench: a RESP load generator that reports honest latencies.
//!
//! - [`cli`]: the command line, parsed into a [`config::Config`].
//! - [`config`]: what one run does, and every limit with its unit.
//! - [`workload`]: which command, key and value comes next, per connection, seeded.
//! - [`zipf`]: the rejection-inversion Zipf sampler behind `--distribution zipf:S`.
//! - [`encode`]: requests pre-encoded as RESP templates that only have keys and values
//!   patched in, so the hot loop never allocates.
//! - [`schedule`]: open-loop intended send times (uniform or Poisson); pure.
//! - [`cpu`]: `--cpus` lists, pinning, thread CPU time.
//! - [`conn`]: connecting (AUTH, HELLO, SELECT), the sans-I/O connection state and the
//!   epoll loop one thread runs over its connections.
//! - [`stats`]: HdrHistograms and counters per command; [`hgrm`] writes `.hgrm` files.
//! - [`run`]: threads, phases (populate, warm-up, measure), progress, results.
//! - [`report`]: the final table and the JSON document; [`plot`]: the SVG percentile plot.
//!
//! Latency is always measured from the time a request was meant to be sent: in closed loop
//! that is when it was written, in open loop it is its slot in the schedule, so a server
//! that stalls delays every request scheduled during the stall and the percentiles show it
//! (no coordinated omission).

pub mod cli;
pub mod config;
pub mod conn;
pub mod cpu;
pub mod encode;
pub mod error;
pub mod hgrm;
pub mod plot;
pub mod report;
pub mod run;
pub mod schedule;
pub mod stats;
pub mod workload;
pub mod zipf;

pub use config::Config;
pub use error::BenchError;
pub use run::{run, Outcome};
