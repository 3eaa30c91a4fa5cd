//! MEMORY USAGE, STATS, PURGE and HELP, with Redis's reply shapes and field names (and a
//! per-core breakdown of our own in STATS).

use super::core::Core;
use super::info::rss_bytes;
use super::mesh::BYPASS_LOCKS;
use super::session::Session;
use crate::cmd::parse::{eq, int};
use crate::cmd::{errors, unknown_subcommand_error, Args};
use crate::resp::Out;
use crate::slot::key_core;
use std::rc::Rc;
use tessera_shards::memory::{self, VOLATILE_INDEX_ENTRY_BYTES};

const MEMORY_HELP: &[&str] = &[
    "MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "PURGE",
    "    Return free memory to the operating system (malloc_trim).",
    "STATS",
    "    Return information about the memory usage of the server.",
    "USAGE <key> [SAMPLES <count>]",
    "    Return memory in bytes used by <key> and its value. Nested values are",
    "    sampled up to <count> times (default: 5, 0 means sample all).",
    "HELP",
    "    Print this help.",
];

pub async fn memory(core: &Rc<Core>, s: &Session, args: Args<'_>, o: &mut Out<'_>) {
    let sub = args.get(1);
    if eq(sub, "USAGE") {
        usage(core, s, args, o).await
    } else if eq(sub, "STATS") {
        stats(core, o).await
    } else if eq(sub, "PURGE") {
        // SAFETY: malloc_trim only walks the allocator's own arenas.
        unsafe { libc::malloc_trim(0) };
        o.ok()
    } else if eq(sub, "HELP") {
        o.array(MEMORY_HELP.len());
        for l in MEMORY_HELP {
            o.simple(l);
        }
    } else {
        o.error_bytes(&unknown_subcommand_error("MEMORY", sub))
    }
}

async fn usage(core: &Rc<Core>, s: &Session, args: Args<'_>, o: &mut Out<'_>) {
    // Strings have nothing nested to sample, but the option is checked as Redis does.
    let mut i = 3;
    while i < args.len() {
        if eq(args.get(i), "SAMPLES") && i + 1 < args.len() {
            match int(args.get(i + 1)) {
                Some(n) if n >= 0 => {}
                _ => return o.error(errors::NOT_INTEGER),
            }
            i += 2;
        } else {
            return o.error(errors::SYNTAX);
        }
    }
    let key = args.get(2).to_vec();
    let db = s.db;
    let owner = key_core(&key, core.cores);
    let bytes = core
        .invoke_on(owner, s.tx, move |c| {
            let now = c.now_ms();
            let mut shard = c.shard.borrow_mut();
            shard.db(db).peek(&key, now).map(memory::key_usage_bytes)
        })
        .await;
    match bytes {
        Some(n) => o.int(n as i64),
        None => o.null(),
    }
}

/// What one core reports for MEMORY STATS.
struct CoreMemory {
    heap_bytes: i64,
    dataset_bytes: usize,
    limit_bytes: usize,
    keys: usize,
    /// Per database with keys: (index, keys, table bytes, volatile index bytes).
    dbs: Vec<(usize, usize, usize, usize)>,
}

async fn stats(core: &Rc<Core>, o: &mut Out<'_>) {
    let reports = core
        .invoke_all(Some(BYPASS_LOCKS), |c| {
            let shard = c.shard.borrow();
            let dbs: Vec<_> = (0..shard.databases())
                .map(|i| (i, shard.db_ref(i)))
                .filter(|(_, d)| !d.is_empty())
                .map(|(i, d)| {
                    let volatile = d.volatile_len() * VOLATILE_INDEX_ENTRY_BYTES;
                    (i, d.len(), d.table_bytes(), volatile)
                })
                .collect();
            CoreMemory {
                heap_bytes: crate::alloc::thread_bytes(),
                dataset_bytes: shard.data_bytes(),
                limit_bytes: shard.memory_policy().limit_bytes,
                keys: dbs.iter().map(|d| d.1).sum(),
                dbs,
            }
        })
        .await;
    let used = (reports.iter().map(|r| r.heap_bytes).sum::<i64>() + crate::alloc::published_bytes())
        .max(0) as u64;
    let dataset = reports.iter().map(|r| r.dataset_bytes).sum::<usize>() as u64;
    let keys = reports.iter().map(|r| r.keys).sum::<usize>() as u64;
    let rss = rss_bytes();
    let mut dbs: Vec<(usize, usize, usize)> = Vec::new();
    for r in &reports {
        for &(i, _, table, volatile) in &r.dbs {
            match dbs.iter_mut().find(|d| d.0 == i) {
                Some(d) => {
                    d.1 += table;
                    d.2 += volatile;
                }
                None => dbs.push((i, table, volatile)),
            }
        }
    }
    dbs.sort_unstable();
    o.map(9 + dbs.len() + reports.len());
    o.bulk(b"total.allocated");
    o.int(used as i64);
    o.bulk(b"overhead.total");
    o.int(used.saturating_sub(dataset) as i64);
    o.bulk(b"keys.count");
    o.int(keys as i64);
    o.bulk(b"keys.bytes-per-key");
    o.int(used.checked_div(keys).unwrap_or(0) as i64);
    o.bulk(b"dataset.bytes");
    o.int(dataset as i64);
    o.bulk(b"dataset.percentage");
    o.double(if used > 0 {
        dataset as f64 * 100.0 / used as f64
    } else {
        0.0
    });
    o.bulk(b"allocator.resident");
    o.int(rss as i64);
    o.bulk(b"fragmentation");
    o.double(if used > 0 {
        rss as f64 / used as f64
    } else {
        0.0
    });
    o.bulk(b"fragmentation.bytes");
    o.int(rss as i64 - used as i64);
    for (i, table, volatile) in dbs {
        o.bulk(format!("db.{i}").as_bytes());
        o.map(2);
        o.bulk(b"overhead.hashtable.main");
        o.int(table as i64);
        o.bulk(b"overhead.hashtable.expires");
        o.int(volatile as i64);
    }
    // tessera's own: each data core's dataset, keys and share of maxmemory.
    for (i, r) in reports.iter().enumerate() {
        o.bulk(format!("core.{i}").as_bytes());
        o.map(3);
        o.bulk(b"dataset.bytes");
        o.int(r.dataset_bytes as i64);
        o.bulk(b"keys.count");
        o.int(r.keys as i64);
        o.bulk(b"maxmemory.share");
        o.int(r.limit_bytes as i64);
    }
}
