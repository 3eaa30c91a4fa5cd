//! Command statistics: per command, calls, time spent, rejected and failed calls and a
//! latency histogram; error replies by their prefix. Each data core keeps its own in a
//! thread-local (nothing shared on the data path); INFO and /metrics merge them on demand.
//!
//! As in Redis: a call is counted where the command runs (a batch for another core counts
//! there, a forwarded command on the node that runs it), its time is the time it ran (not
//! the time it waited in a pipeline or for a lock), `rejected_calls` are refused before they
//! run (arity, NOAUTH, READONLY, OOM before the shard is touched...) and `failed_calls` ran
//! and answered an error. Container commands (CLIENT, CONFIG...) are counted as a whole.

use crate::cmd::table::{subcommand_index, subcommand_of, SUBCOMMANDS, TABLE};
use crate::cmd::{Args, CommandSpec};
use crate::limits;
use hdrhistogram::Histogram;
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

/// The histogram's range: 1 ns to 100 s (longer calls count as 100 s), 2 significant
/// digits, as Redis's latency histograms.
const HIST_LOW_NS: u64 = 1;
const HIST_HIGH_NS: u64 = 100_000_000_000;
const HIST_DIGITS: u8 = 2;
/// Distinct error prefixes tracked per core; past it, errors count under `ERRORSTATS_FULL`
/// (Redis stops at 128 too, so a client cannot grow the table with made-up errors).
pub const ERRORSTATS_MAX_PREFIXES: usize = 128;
const ERRORSTATS_FULL: &str = "ERRORSTATS_DISABLED";

#[derive(Clone, Default)]
pub struct CommandStat {
    pub calls: u64,
    pub nanos: u64,
    pub rejected: u64,
    pub failed: u64,
    /// Made on the first call: most commands are never called.
    pub hist: Option<Box<Histogram<u64>>>,
}

#[derive(Clone, Default)]
pub struct Metrics {
    /// Indexed as the command table, then the subcommand table: a container's calls are
    /// kept per subcommand (`config|get`), as Redis's commandstats show them.
    pub commands: Vec<CommandStat>,
    /// Error replies by prefix ("ERR", "WRONGTYPE", ...).
    pub errors: BTreeMap<String, u64>,
}

thread_local! {
    static LOCAL: RefCell<Metrics> = RefCell::new(Metrics::empty());
}

impl Metrics {
    pub fn empty() -> Metrics {
        Metrics {
            commands: vec![CommandStat::default(); TABLE.len() + SUBCOMMANDS.len()],
            errors: BTreeMap::new(),
        }
    }

    /// Adds another core's figures to these.
    pub fn merge(&mut self, other: &Metrics) {
        for (a, b) in self.commands.iter_mut().zip(&other.commands) {
            a.calls += b.calls;
            a.nanos += b.nanos;
            a.rejected += b.rejected;
            a.failed += b.failed;
            if let Some(h) = &b.hist {
                match &mut a.hist {
                    Some(mine) => {
                        let _ = mine.add(&**h);
                    }
                    None => a.hist = Some(h.clone()),
                }
            }
        }
        for (prefix, n) in &other.errors {
            *self.errors.entry(prefix.clone()).or_default() += n;
        }
    }

    /// The commands and subcommands with any call or rejection, by name (`get`,
    /// `config|get`).
    pub fn used(&self) -> impl Iterator<Item = (&'static str, &CommandStat)> {
        TABLE
            .iter()
            .map(|c| c.name)
            .chain(SUBCOMMANDS.iter().map(|s| s.name))
            .zip(&self.commands)
            .filter(|(_, s)| s.calls > 0 || s.rejected > 0)
    }
}

/// Where a call of `spec` with `args` is counted: its subcommand's entry for a container's
/// known subcommand, else the command's.
fn index_of(spec: &CommandSpec, args: &Args) -> Option<usize> {
    let base = TABLE.as_ptr() as usize;
    let at = spec as *const CommandSpec as usize;
    let i = at.checked_sub(base)? / std::mem::size_of::<CommandSpec>();
    if i >= TABLE.len() {
        return None;
    }
    Some(match subcommand_of(spec, args) {
        Some(sub) => TABLE.len() + subcommand_index(sub),
        None => i,
    })
}

/// A command ran for `nanos` and answered an error or not.
pub fn record(spec: &CommandSpec, args: &Args, nanos: u64, failed: bool) {
    let Some(i) = index_of(spec, args) else {
        return;
    };
    LOCAL.with(|m| {
        let mut m = m.borrow_mut();
        let s = &mut m.commands[i];
        s.calls += 1;
        s.nanos += nanos;
        s.failed += failed as u64;
        let h = s.hist.get_or_insert_with(|| {
            Box::new(
                Histogram::new_with_bounds(HIST_LOW_NS, HIST_HIGH_NS, HIST_DIGITS)
                    .expect("valid histogram bounds"),
            )
        });
        h.saturating_record(nanos.max(HIST_LOW_NS));
    });
}

/// A command refused before it ran.
pub fn reject(spec: &CommandSpec, args: &Args) {
    let Some(i) = index_of(spec, args) else {
        return;
    };
    LOCAL.with(|m| m.borrow_mut().commands[i].rejected += 1);
}

/// Counts an error reply under its prefix (the first word after '-').
pub fn error_reply(reply: &[u8]) {
    let body = reply.strip_prefix(b"-").unwrap_or(reply);
    let end = body
        .iter()
        .position(|&b| b == b' ' || b == b'\r')
        .unwrap_or(body.len());
    let prefix = &body[..end];
    LOCAL.with(|m| {
        let mut m = m.borrow_mut();
        let known = std::str::from_utf8(prefix)
            .ok()
            .filter(|p| m.errors.contains_key(*p));
        if let Some(p) = known {
            let p = p.to_string();
            *m.errors.get_mut(&p).expect("present") += 1;
            return;
        }
        let key = if m.errors.len() >= ERRORSTATS_MAX_PREFIXES {
            ERRORSTATS_FULL.to_string()
        } else {
            String::from_utf8_lossy(prefix).into_owned()
        };
        *m.errors.entry(key).or_default() += 1;
    });
}

/// A slow command, as the slow log keeps it: when it ended (Unix seconds), how long it ran
/// (µs), and its arguments (cut and redacted as Redis does).
#[derive(Clone, Debug)]
pub struct SlowCall {
    pub unix_secs: u64,
    pub micros: u64,
    pub args: Vec<Vec<u8>>,
}

/// A slow-log entry: the call, its id (increasing over the node) and the client's address
/// and name.
#[derive(Clone, Debug)]
pub struct SlowEntry {
    pub id: u64,
    pub call: SlowCall,
    pub client_addr: String,
    pub client_name: String,
}

thread_local! {
    static SLOWLOG: RefCell<VecDeque<SlowEntry>> = const { RefCell::new(VecDeque::new()) };
}
static SLOWLOG_NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// The slow-log record of a call that took `nanos`, if it is slow: `threshold_us` or more
/// (negative: nothing is), and not a command Redis keeps out (EXEC and the like).
pub fn slow_call(
    spec: &CommandSpec,
    args: Args,
    threshold_us: i64,
    nanos: u64,
) -> Option<SlowCall> {
    let micros = nanos / 1000;
    if threshold_us < 0 || micros < threshold_us as u64 || spec.has_flag("skip_slowlog") {
        return None;
    }
    let n = args.len();
    let kept = n.min(limits::SLOWLOG_ENTRY_MAX_ARGS);
    let mut out = Vec::with_capacity(kept);
    let redacted = redacted_from(spec, &args);
    for i in 0..kept {
        if kept < n && i == kept - 1 {
            out.push(format!("... ({} more arguments)", n - kept + 1).into_bytes());
            break;
        }
        if redacted.contains(&i) {
            out.push(b"(redacted)".to_vec());
            continue;
        }
        let a = args.get(i);
        if a.len() > limits::SLOWLOG_ENTRY_MAX_ARG_BYTES {
            let mut cut = a[..limits::SLOWLOG_ENTRY_MAX_ARG_BYTES].to_vec();
            let more = a.len() - limits::SLOWLOG_ENTRY_MAX_ARG_BYTES;
            cut.extend_from_slice(format!("... ({more} more bytes)").as_bytes());
            out.push(cut);
        } else {
            out.push(a.to_vec());
        }
    }
    let unix_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Some(SlowCall {
        unix_secs,
        micros,
        args: out,
    })
}

/// Which arguments hold secrets: AUTH's, HELLO's after AUTH, CONFIG SET's values of
/// requirepass and masterauth.
fn redacted_from(spec: &CommandSpec, args: &Args) -> Vec<usize> {
    let eq = |i: usize, s: &str| args.get(i).eq_ignore_ascii_case(s.as_bytes());
    match spec.name {
        "auth" => (1..args.len()).collect(),
        "hello" => (1..args.len())
            .find(|&i| eq(i, "auth"))
            .map_or_else(Vec::new, |i| (i + 1..(i + 3).min(args.len())).collect()),
        "config" if args.len() > 1 && eq(1, "set") => (2..args.len())
            .step_by(2)
            .filter(|&i| eq(i, "requirepass") || eq(i, "masterauth"))
            .map(|i| i + 1)
            .filter(|&i| i < args.len())
            .collect(),
        _ => Vec::new(),
    }
}

/// Adds a slow call to this core's log, which keeps the newest `max_len`.
pub fn slowlog_push(call: SlowCall, client_addr: String, client_name: String, max_len: usize) {
    let id = SLOWLOG_NEXT_ID.fetch_add(1, Ordering::Relaxed);
    SLOWLOG.with(|l| {
        let mut l = l.borrow_mut();
        l.push_front(SlowEntry {
            id,
            call,
            client_addr,
            client_name,
        });
        l.truncate(max_len);
    });
}

/// This core's slow log, newest first.
pub fn slowlog_entries() -> Vec<SlowEntry> {
    SLOWLOG.with(|l| l.borrow().iter().cloned().collect())
}

pub fn slowlog_len() -> usize {
    SLOWLOG.with(|l| l.borrow().len())
}

pub fn slowlog_reset() {
    SLOWLOG.with(|l| l.borrow_mut().clear());
}

/// The latency monitor: per event, samples of the events that took at least
/// `latency-monitor-threshold` ms, one per second (the worst of that second), the newest
/// `LATENCY_HISTORY_LEN`, and the worst ever.
#[derive(Clone, Debug, Default)]
pub struct EventSeries {
    /// (Unix seconds, ms), oldest first.
    pub samples: VecDeque<(u64, u64)>,
    pub max_ms: u64,
}

thread_local! {
    static LATENCY: RefCell<BTreeMap<&'static str, EventSeries>> = const { RefCell::new(BTreeMap::new()) };
    /// This core's copy of `latency-monitor-threshold` (ms; 0: off), kept by its tick.
    static LATENCY_THRESHOLD_MS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

pub fn set_latency_threshold(ms: u64) {
    LATENCY_THRESHOLD_MS.with(|t| t.set(ms));
}

/// Notes that `event` took `took`, if the monitor is on and it took long enough.
pub fn latency(event: &'static str, took: std::time::Duration) {
    let threshold = LATENCY_THRESHOLD_MS.with(|t| t.get());
    let ms = took.as_millis() as u64;
    if threshold == 0 || ms < threshold {
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    LATENCY.with(|l| {
        let mut l = l.borrow_mut();
        let series = l.entry(event).or_default();
        series.max_ms = series.max_ms.max(ms);
        match series.samples.back_mut() {
            Some((at, worst)) if *at == now => *worst = (*worst).max(ms),
            _ => {
                series.samples.push_back((now, ms));
                if series.samples.len() > limits::LATENCY_HISTORY_LEN {
                    series.samples.pop_front();
                }
            }
        }
    });
}

/// A command's run, for the monitor's "command" or "fast-command" event.
pub fn command_latency(spec: &CommandSpec, took: std::time::Duration) {
    let threshold = LATENCY_THRESHOLD_MS.with(|t| t.get());
    if threshold == 0 || (took.as_millis() as u64) < threshold {
        return;
    }
    latency(
        if spec.has_flag("fast") {
            "fast-command"
        } else {
            "command"
        },
        took,
    );
}

/// This core's latency series.
pub fn latency_series() -> BTreeMap<&'static str, EventSeries> {
    LATENCY.with(|l| l.borrow().clone())
}

/// Forgets the named events (all when `events` is empty); returns how many it forgot.
pub fn latency_reset(events: &[String]) -> usize {
    LATENCY.with(|l| {
        let mut l = l.borrow_mut();
        if events.is_empty() {
            let n = l.len();
            l.clear();
            return n;
        }
        events
            .iter()
            .filter(|e| l.remove(e.as_str()).is_some())
            .count()
    })
}

/// This core's figures.
pub fn snapshot() -> Metrics {
    LOCAL.with(|m| m.borrow().clone())
}

/// CONFIG RESETSTAT.
pub fn reset() {
    LOCAL.with(|m| *m.borrow_mut() = Metrics::empty());
}

/// Redis's percentile figure: the histogram's value at `p`, in microseconds.
pub fn percentile_us(h: &Histogram<u64>, p: f64) -> f64 {
    h.value_at_percentile(p) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_merge_across_cores_and_errors_count_by_prefix() {
        reset();
        let get = crate::cmd::lookup(b"get").unwrap();
        let set = crate::cmd::lookup(b"set").unwrap();
        let config = crate::cmd::lookup(b"config").unwrap();
        let words = crate::cmd::test_words;
        let (b, r) = words(&["GET", "k"]);
        let get_k = Args::new(&b, &r);
        record(get, &get_k, 1_000, false);
        record(get, &get_k, 3_000, true);
        let (b, r) = words(&["SET", "k", "v"]);
        reject(set, &Args::new(&b, &r));
        // A container counts per subcommand.
        let (b, r) = words(&["config", "GET", "port"]);
        record(config, &Args::new(&b, &r), 500, false);
        error_reply(b"-WRONGTYPE Operation against a key\r\n");
        error_reply(b"-ERR syntax error\r\n");
        error_reply(b"-ERR other\r\n");
        let one = snapshot();
        let mut all = Metrics::empty();
        all.merge(&one);
        all.merge(&one);
        let used: Vec<_> = all
            .used()
            .map(|(name, st)| (name, st.calls, st.failed, st.rejected))
            .collect();
        assert_eq!(
            used,
            vec![("get", 4, 2, 0), ("set", 0, 0, 2), ("config|get", 2, 0, 0)]
        );
        let g = &all.commands[index_of(get, &get_k).unwrap()];
        assert_eq!(g.nanos, 8_000);
        let h = g.hist.as_ref().unwrap();
        assert_eq!(h.len(), 4);
        assert!(
            (percentile_us(h, 50.0) - 1.0).abs() < 0.02,
            "{}",
            percentile_us(h, 50.0)
        );
        assert!((percentile_us(h, 99.0) - 3.0).abs() < 0.05);
        assert_eq!(all.errors.get("ERR"), Some(&4));
        assert_eq!(all.errors.get("WRONGTYPE"), Some(&2));
        reset();
        assert_eq!(snapshot().used().count(), 0);
    }

    #[test]
    fn made_up_error_prefixes_stop_at_the_limit() {
        reset();
        for i in 0..ERRORSTATS_MAX_PREFIXES + 10 {
            error_reply(format!("-E{i} x\r\n").as_bytes());
        }
        let m = snapshot();
        assert_eq!(m.errors.len(), ERRORSTATS_MAX_PREFIXES + 1);
        assert_eq!(m.errors.get(ERRORSTATS_FULL), Some(&10));
        reset();
    }
}
