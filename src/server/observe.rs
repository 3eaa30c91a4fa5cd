//! SLOWLOG: the slow calls every core kept (src/server/metrics.rs), merged newest first.

use super::core::Core;
use super::mesh::BYPASS_LOCKS;
use super::metrics::{self, SlowEntry};
use crate::cmd::parse::{eq, int};
use crate::cmd::{unknown_subcommand_error, Args};
use crate::resp::Out;
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
