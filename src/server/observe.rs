//! SLOWLOG and LATENCY: the slow calls and the latency samples every core kept
//! (src/server/metrics.rs), merged.

use super::core::Core;
use super::mesh::BYPASS_LOCKS;
use super::metrics::{self, EventSeries, SlowEntry};
use crate::cmd::parse::{eq, int};
use crate::cmd::{unknown_subcommand_error, Args};
use crate::resp::Out;
use std::collections::BTreeMap;
use std::rc::Rc;

const SLOWLOG_HELP: &[&str] = &[
    "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GET [<count>]",
    "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
    "    Entries are made of:",
    "    id, timestamp, time in microseconds, arguments array, client IP and port,",
    "    client name",
    "LEN",
    "    Return the length of the slowlog.",
    "RESET",
    "    Reset the slowlog.",
    "HELP",
    "    Print this help.",
];

/// How many entries SLOWLOG GET returns without a count, as Redis.
const SLOWLOG_GET_DEFAULT: usize = 10;

pub async fn slowlog(core: &Rc<Core>, args: Args<'_>, o: &mut Out<'_>) {
    let sub = args.get(1);
    let max_len = core.config.borrow().slowlog_max_len;
    if eq(sub, "GET") && args.len() <= 3 {
        let count = match args.len() {
            2 => SLOWLOG_GET_DEFAULT,
            _ => match int(args.get(2)) {
                Some(-1) => usize::MAX,
                Some(n) if n >= 0 => n as usize,
                _ => return o.error("ERR count should be greater than or equal to -1"),
            },
        };
        let mut all: Vec<SlowEntry> = core
            .invoke_all(Some(BYPASS_LOCKS), |_| metrics::slowlog_entries())
            .await
            .into_iter()
            .flatten()
            .collect();
        // Each core keeps its newest `max_len`; the node's log is the newest of those.
        all.sort_unstable_by_key(|e| std::cmp::Reverse(e.id));
        all.truncate(max_len.min(count));
        o.array(all.len());
        for e in &all {
            o.array(6);
            o.int(e.id as i64);
            o.int(e.call.unix_secs as i64);
            o.int(e.call.micros as i64);
            o.array(e.call.args.len());
            for a in &e.call.args {
                o.bulk(a);
            }
            o.bulk(e.client_addr.as_bytes());
            o.bulk(e.client_name.as_bytes());
        }
    } else if eq(sub, "LEN") {
        let lens = core
            .invoke_all(Some(BYPASS_LOCKS), |_| metrics::slowlog_len())
            .await;
        o.int(lens.iter().sum::<usize>().min(max_len) as i64);
    } else if eq(sub, "RESET") {
        core.invoke_all(Some(BYPASS_LOCKS), |_| metrics::slowlog_reset())
            .await;
        o.ok();
    } else if eq(sub, "HELP") {
        o.array(SLOWLOG_HELP.len());
        for l in SLOWLOG_HELP {
            o.simple(l);
        }
    } else {
        o.error_bytes(&unknown_subcommand_error("SLOWLOG", sub));
    }
}

const LATENCY_HELP: &[&str] = &[
    "LATENCY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "HISTORY <event>",
    "    Return time-latency samples for the <event> class.",
    "LATEST",
    "    Return the latest latency samples for all events.",
    "RESET [<event> ...]",
    "    Reset latency data of one or more <event> classes.",
    "    (default: reset all data for all event classes)",
    "HISTOGRAM [COMMAND ...]",
    "    Return a cumulative distribution of latencies in the format of a histogram for the specified command names.",
    "    If no commands are specified then all histograms are replied.",
    "HELP",
    "    Prints this help.",
];

/// Every core's series of each event, merged: a second's sample is the worst of the cores'.
async fn merged_latency(core: &Rc<Core>) -> BTreeMap<&'static str, EventSeries> {
    let all = core
        .invoke_all(Some(BYPASS_LOCKS), |_| metrics::latency_series())
        .await;
    let mut merged: BTreeMap<&'static str, (BTreeMap<u64, u64>, u64)> = BTreeMap::new();
    for series in all {
        for (event, s) in series {
            let (samples, max) = merged.entry(event).or_default();
            *max = (*max).max(s.max_ms);
            for (at, ms) in s.samples {
                let worst = samples.entry(at).or_default();
                *worst = (*worst).max(ms);
            }
        }
    }
    merged
        .into_iter()
        .map(|(event, (samples, max_ms))| {
            let skip = samples
                .len()
                .saturating_sub(crate::limits::LATENCY_HISTORY_LEN);
            let samples = samples.into_iter().skip(skip).collect();
            (event, EventSeries { samples, max_ms })
        })
        .collect()
}

pub async fn latency(core: &Rc<Core>, args: Args<'_>, o: &mut Out<'_>) {
    let sub = args.get(1);
    if eq(sub, "LATEST") && args.len() == 2 {
        let merged = merged_latency(core).await;
        o.array(merged.len());
        for (event, s) in &merged {
            let (at, ms) = s.samples.back().copied().unwrap_or((0, 0));
            o.array(4);
            o.bulk(event.as_bytes());
            o.int(at as i64);
            o.int(ms as i64);
            o.int(s.max_ms as i64);
        }
    } else if eq(sub, "HISTORY") && args.len() == 3 {
        let merged = merged_latency(core).await;
        let wanted = String::from_utf8_lossy(args.get(2)).to_ascii_lowercase();
        match merged.get(wanted.as_str()) {
            Some(s) => {
                o.array(s.samples.len());
                for (at, ms) in &s.samples {
                    o.array(2);
                    o.int(*at as i64);
                    o.int(*ms as i64);
                }
            }
            None => o.array(0),
        }
    } else if eq(sub, "RESET") {
        let events: Vec<String> = args
            .iter()
            .skip(2)
            .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
            .collect();
        // An event counts once however many cores had it.
        let before = merged_latency(core).await;
        let named = if events.is_empty() {
            before.len()
        } else {
            events
                .iter()
                .filter(|e| before.contains_key(e.as_str()))
                .count()
        };
        core.invoke_all(Some(BYPASS_LOCKS), move |_| metrics::latency_reset(&events))
            .await;
        o.int(named as i64);
    } else if eq(sub, "HISTOGRAM") {
        latency_histogram(core, args, o).await;
    } else if eq(sub, "HELP") && args.len() == 2 {
        o.array(LATENCY_HELP.len());
        for l in LATENCY_HELP {
            o.simple(l);
        }
    } else {
        o.error_bytes(&unknown_subcommand_error("LATENCY", sub));
    }
}

/// LATENCY HISTOGRAM [command ...]: per command (all that ran, or those named; unknown
/// names are skipped), its calls and the cumulative count of calls that took at most 1, 2,
/// 4, ... µs, up to the bucket that holds the slowest, from the cores' merged histograms.
async fn latency_histogram(core: &Rc<Core>, args: Args<'_>, o: &mut Out<'_>) {
    let merged = super::info::merged_metrics(core).await;
    let wanted: Vec<String> = args
        .iter()
        .skip(2)
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let chosen: Vec<_> = merged
        .used()
        .filter(|(name, st)| {
            // A container names all its subcommands (`config`: `config|get`, ...).
            let named = |w: &String| {
                *name == w
                    || name
                        .strip_prefix(w.as_str())
                        .is_some_and(|r| r.starts_with('|'))
            };
            st.hist.is_some() && (wanted.is_empty() || wanted.iter().any(named))
        })
        .collect();
    o.map(chosen.len());
    for (name, st) in chosen {
        let h = st.hist.as_ref().expect("filtered");
        o.bulk(name.as_bytes());
        o.map(2);
        o.bulk(b"calls");
        o.int(st.calls as i64);
        o.bulk(b"histogram_usec");
        let total = h.len();
        let mut buckets = Vec::new();
        let mut bound_us: u64 = 1;
        loop {
            let upto = h.count_between(0, bound_us.saturating_mul(1000));
            buckets.push((bound_us, upto));
            if upto >= total || bound_us >= 1 << 40 {
                break;
            }
            bound_us *= 2;
        }
        o.map(buckets.len());
        for (b, n) in buckets {
            o.int(b as i64);
            o.int(n as i64);
        }
    }
}
