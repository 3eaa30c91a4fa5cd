//! INFO, with Redis's section and field names.

use super::core::{Core, CoreStats};
use super::mesh::BYPASS_LOCKS;
use super::metrics;
use crate::cmd::Args;
use crate::resp::Out;
use std::fmt::Write;
use std::rc::Rc;
use std::sync::atomic::Ordering;

/// The Redis version whose behaviour we follow; reported as `redis_version` so clients that
/// check it enable the features we have.
pub const REDIS_COMPAT_VERSION: &str = "7.2.0";

const DEFAULT_SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "cluster",
    "keyspace",
];

/// What every core reports for INFO.
struct CoreReport {
    stats: CoreStats,
    clients: usize,
    heap_bytes: i64,
    shard_stats: tessera_shards::db::DbStats,
    evict_stats: tessera_shards::shard::ShardStats,
    changes_at_save: u64,
    /// Bytes of this core's dataset (tables, keys, values, the volatile index), and its
    /// share of maxmemory.
    dataset_bytes: usize,
    limit_bytes: usize,
    /// The write-ahead ring: head and tail sequence numbers, records, bytes, and the
    /// largest reader lag (0 without readers).
    wal: (u64, u64, usize, usize, u64),
    /// Per database: (keys, keys with a TTL).
    keyspace: Vec<(usize, usize)>,
    /// The append-only log, when on: total and base bytes, last write ok, durable sequence.
    aof: Option<(u64, u64, bool, u64)>,
}

pub fn human_bytes(n: u64) -> String {
    let units = ["B", "K", "M", "G", "T"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.2}{}", units[u])
    }
}

pub fn rss_bytes() -> u64 {
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * page)
}

fn rusage() -> (f64, f64) {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(ru.ru_stime), secs(ru.ru_utime))
}

pub async fn info(core: &Rc<Core>, args: Args<'_>, o: &mut Out<'_>) {
    let mut wanted: Vec<String> = args
        .iter()
        .skip(1)
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    if wanted.is_empty() || wanted.iter().any(|w| w == "default") {
        wanted.extend(DEFAULT_SECTIONS.iter().map(|s| s.to_string()));
    }
    if wanted.iter().any(|w| w == "all" || w == "everything") {
        wanted.extend(DEFAULT_SECTIONS.iter().map(|s| s.to_string()));
        wanted.extend(STATS_SECTIONS.iter().map(|s| s.to_string()));
        wanted.push("tessera".to_string());
    }
    let metrics = if wanted.iter().any(|w| STATS_SECTIONS.contains(&w.as_str())) {
        Some(merged_metrics(core).await)
    } else {
        None
    };
    let reports = core
        .invoke_all(Some(BYPASS_LOCKS), |c| {
            let shard = c.shard.borrow();
            CoreReport {
                stats: c.stats.get(),
                clients: c.clients.borrow().len(),
                heap_bytes: crate::alloc::thread_bytes(),
                shard_stats: shard.stats(),
                evict_stats: shard.stats,
                changes_at_save: c.changes_at_save.get(),
                dataset_bytes: shard.data_bytes(),
                limit_bytes: shard.memory_policy().limit_bytes,
                wal: {
                    let w = shard.wal();
                    (
                        w.head(),
                        w.tail(),
                        w.len(),
                        w.bytes(),
                        w.lags().max().unwrap_or(0),
                    )
                },
                keyspace: (0..shard.databases())
                    .map(|db| (shard.db_ref(db).len(), shard.db_ref(db).volatile_len()))
                    .collect(),
                aof: c.aof.borrow().as_ref().map(|a| {
                    let (total, base) = a.sizes();
                    (total, base, a.write_ok(), a.durable())
                }),
            }
        })
        .await;
    let mut text = render(core, &wanted, &reports);
    if let Some(m) = &metrics {
        // Redis prints these after CPU and before Cluster.
        let at = text
            .find("# Cluster\r\n")
            .or_else(|| text.find("# Keyspace\r\n"));
        let mut sections = render_stats(&wanted, m);
        match at {
            Some(at) => text.insert_str(at, &sections),
            None => {
                if !text.is_empty() {
                    text.push_str("\r\n");
                }
                while sections.ends_with("\r\n\r\n") {
                    sections.truncate(sections.len() - 2);
                }
                text.push_str(&sections);
            }
        }
    }
    o.verbatim(&text);
}

/// Sections made from the command statistics (not in the default INFO, as in Redis).
const STATS_SECTIONS: &[&str] = &["commandstats", "errorstats", "latencystats"];

/// Every core's command statistics, merged.
pub async fn merged_metrics(core: &Rc<Core>) -> metrics::Metrics {
    let all = core
        .invoke_all(Some(BYPASS_LOCKS), |_| metrics::snapshot())
        .await;
    let mut m = metrics::Metrics::empty();
    for one in &all {
        m.merge(one);
    }
    m
}

/// commandstats, errorstats and latencystats as Redis 7 prints them.
fn render_stats(wanted: &[String], m: &metrics::Metrics) -> String {
    let want = |s: &str| wanted.iter().any(|w| w == s);
    let mut t = String::new();
    if want("commandstats") {
        t.push_str("# Commandstats\r\n");
        for (name, st) in m.used() {
            let usec = st.nanos / 1000;
            let per_call = if st.calls > 0 {
                st.nanos as f64 / 1000.0 / st.calls as f64
            } else {
                0.0
            };
            let _ = write!(
                t,
                "cmdstat_{}:calls={},usec={usec},usec_per_call={per_call:.2},rejected_calls={},failed_calls={}\r\n",
                name, st.calls, st.rejected, st.failed
            );
        }
        t.push_str("\r\n");
    }
    if want("errorstats") {
        t.push_str("# Errorstats\r\n");
        for (prefix, n) in &m.errors {
            let _ = write!(t, "errorstat_{prefix}:count={n}\r\n");
        }
        t.push_str("\r\n");
    }
    if want("latencystats") {
        t.push_str("# Latencystats\r\n");
        for (name, st) in m.used() {
            if let Some(h) = &st.hist {
                let _ = write!(
                    t,
                    "latency_percentiles_usec_{}:p50={:.3},p99={:.3},p99.9={:.3}\r\n",
                    name,
                    metrics::percentile_us(h, 50.0),
                    metrics::percentile_us(h, 99.0),
                    metrics::percentile_us(h, 99.9)
                );
            }
        }
        t.push_str("\r\n");
    }
    t
}

fn render(core: &Core, wanted: &[String], reports: &[CoreReport]) -> String {
    let want = |s: &str| wanted.iter().any(|w| w == s);
    let sum = |f: fn(&CoreStats) -> u64| reports.iter().map(|r| f(&r.stats)).sum::<u64>();
    let cfg = core.config.borrow();
    let node = &core.node;
    let mut t = String::new();
    if want("server") {
        let uptime = node.started.elapsed().as_secs();
        let cpus: Vec<String> = node
            .cpus
            .iter()
            .map(|c| c.map_or("unpinned".into(), |c| c.to_string()))
            .collect();
        let _ = write!(
            t,
            "# Server\r\nredis_version:{}\r\ntessera_version:{}\r\nredis_mode:standalone\r\nos:{} {}\r\narch_bits:64\r\nmultiplexing_api:io_uring\r\nprocess_id:{}\r\nrun_id:{}\r\ntcp_port:{}\r\nserver_time_usec:{}\r\nuptime_in_seconds:{}\r\nuptime_in_days:{}\r\nexecutable:{}\r\nconfig_file:{}\r\ndata_cores:{}\r\ndata_core_cpus:{}\r\n\r\n",
            REDIS_COMPAT_VERSION,
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH,
            std::process::id(),
            node.run_id,
            cfg.port,
            node.now_us(),
            uptime,
            uptime / 86400,
            node.executable,
            node.config_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            core.cores,
            cpus.join(","),
        );
    }
    if want("clients") {
        let _ = write!(
            t,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:0\r\n\r\n",
            reports.iter().map(|r| r.clients).sum::<usize>(),
            cfg.maxclients
        );
    }
    if want("memory") {
        let used = (reports.iter().map(|r| r.heap_bytes).sum::<i64>()
            + crate::alloc::published_bytes())
        .max(0) as u64;
        let rss = rss_bytes();
        let frag = if used > 0 {
            rss as f64 / used as f64
        } else {
            0.0
        };
        let dataset = reports.iter().map(|r| r.dataset_bytes).sum::<usize>() as u64;
        let _ = write!(
            t,
            "# Memory\r\nused_memory:{used}\r\nused_memory_human:{}\r\nused_memory_rss:{rss}\r\nused_memory_rss_human:{}\r\nused_memory_dataset:{dataset}\r\nused_memory_dataset_perc:{:.2}%\r\nmaxmemory:{}\r\nmaxmemory_human:{}\r\nmaxmemory_policy:{}\r\nmem_fragmentation_ratio:{frag:.2}\r\nmem_allocator:libc\r\n",
            human_bytes(used),
            human_bytes(rss),
            if used > 0 { dataset as f64 * 100.0 / used as f64 } else { 0.0 },
            cfg.maxmemory,
            human_bytes(cfg.maxmemory as u64),
            cfg.maxmemory_policy.name(),
        );
        // tessera's own: each core's heap, dataset and share of maxmemory.
        for (i, r) in reports.iter().enumerate() {
            let _ = write!(
                t,
                "core{i}_heap_bytes:{}\r\ncore{i}_dataset_bytes:{}\r\ncore{i}_maxmemory_share:{}\r\n",
                r.heap_bytes, r.dataset_bytes, r.limit_bytes
            );
        }
        t.push_str("\r\n");
    }
    if want("persistence") {
        let changes: u64 = reports
            .iter()
            .map(|r| r.shard_stats.changes.saturating_sub(r.changes_at_save))
            .sum();
        let saves = &node.saves;
        let now = node.now_ms();
        let _ = write!(
            t,
            "# Persistence\r\nloading:0\r\nasync_loading:0\r\ncurrent_cow_peak:0\r\ncurrent_cow_size:0\r\ncurrent_cow_size_age:0\r\ncurrent_fork_perc:0.00\r\ncurrent_save_keys_processed:{}\r\ncurrent_save_keys_total:{}\r\nrdb_changes_since_last_save:{changes}\r\nrdb_bgsave_in_progress:{}\r\nrdb_last_save_time:{}\r\nrdb_last_bgsave_status:{}\r\nrdb_last_bgsave_time_sec:{}\r\nrdb_current_bgsave_time_sec:{}\r\nrdb_saves:{}\r\nrdb_last_cow_size:0\r\n",
            if saves.running() { saves.keys_written.load(Ordering::Relaxed) } else { 0 },
            if saves.running() { saves.keys_total.load(Ordering::Relaxed) } else { 0 },
            u8::from(saves.running()),
            node.last_save_unix_s(),
            if saves.last_ok() { "ok" } else { "err" },
            saves.last_secs(),
            saves.current_secs(now),
            saves.completed.load(Ordering::Relaxed),
        );
        let aofs: Vec<_> = reports.iter().filter_map(|r| r.aof).collect();
        let rewriting = node.aof_rewrites_running.load(Ordering::Acquire) > 0;
        let _ = write!(
            t,
            "aof_enabled:{}\r\naof_rewrite_in_progress:{}\r\naof_rewrite_scheduled:0\r\naof_last_rewrite_time_sec:{}\r\naof_current_rewrite_time_sec:-1\r\naof_last_bgrewrite_status:{}\r\naof_rewrites:{}\r\naof_rewrites_consecutive_failures:0\r\naof_last_write_status:{}\r\naof_last_cow_size:0\r\nmodule_fork_in_progress:0\r\nmodule_fork_last_cow_size:0\r\n",
            u8::from(!aofs.is_empty()),
            u8::from(rewriting),
            node.aof_last_rewrite_secs.load(Ordering::Relaxed),
            if node.aof_last_rewrite_ok.load(Ordering::Relaxed) { "ok" } else { "err" },
            node.aof_rewrites.load(Ordering::Relaxed),
            if aofs.iter().all(|a| a.2) { "ok" } else { "err" },
        );
        if !aofs.is_empty() {
            let _ = write!(
                t,
                "aof_current_size:{}\r\naof_base_size:{}\r\naof_pending_rewrite:0\r\naof_buffer_length:0\r\naof_pending_bio_fsync:0\r\naof_delayed_fsync:0\r\n",
                aofs.iter().map(|a| a.0).sum::<u64>(),
                aofs.iter().map(|a| a.1).sum::<u64>(),
            );
        }
        // tessera's own: each core's write-ahead ring (head and tail sequence numbers,
        // records and bytes held, the largest reader lag in records), and the last record
        // its append-only log has on disk.
        for (i, r) in reports.iter().enumerate() {
            if let Some(a) = r.aof {
                let _ = write!(t, "core{i}_aof_durable_seq:{}\r\n", a.3);
            }
        }
        for (i, r) in reports.iter().enumerate() {
            let (head, tail, records, bytes, lag) = r.wal;
            let _ = write!(
                t,
                "core{i}_wal_head:{head}\r\ncore{i}_wal_tail:{tail}\r\ncore{i}_wal_records:{records}\r\ncore{i}_wal_bytes:{bytes}\r\ncore{i}_wal_reader_lag:{lag}\r\n"
            );
        }
        t.push_str("\r\n");
    }
    if want("stats") {
        let shard = reports.iter().fold((0, 0, 0), |acc, r| {
            (
                acc.0 + r.shard_stats.expired_keys,
                acc.1 + r.shard_stats.keyspace_hits,
                acc.2 + r.shard_stats.keyspace_misses,
            )
        });
        let evicted: u64 = reports.iter().map(|r| r.evict_stats.evicted_keys).sum();
        let stale = reports
            .iter()
            .map(|r| r.evict_stats.expired_stale_perc)
            .sum::<f64>()
            / reports.len().max(1) as f64;
        let _ = write!(
            t,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\ntotal_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\nrejected_connections:{}\r\nexpired_keys:{}\r\nexpired_stale_perc:{stale:.2}\r\nexpire_cycle_cpu_milliseconds:{}\r\nevicted_keys:{evicted}\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\ntotal_error_replies:{}\r\n\r\n",
            sum(|s| s.total_connections_received),
            sum(|s| s.total_commands_processed),
            sum(|s| s.total_net_input_bytes),
            sum(|s| s.total_net_output_bytes),
            sum(|s| s.rejected_connections),
            shard.0,
            sum(|s| s.expire_cycle_cpu_us) / 1000,
            shard.1,
            shard.2,
            sum(|s| s.total_error_replies),
        );
    }
    if want("replication") {
        let rings: Vec<(u64, u64, usize, usize)> = reports
            .iter()
            .map(|r| (r.wal.0, r.wal.1, r.wal.2, r.wal.3))
            .collect();
        t.push_str(&super::replication::info_section(core, &rings));
    }
    if want("cpu") {
        let (sys, user) = rusage();
        let _ = write!(
            t,
            "# CPU\r\nused_cpu_sys:{sys:.6}\r\nused_cpu_user:{user:.6}\r\nused_cpu_sys_children:0.000000\r\nused_cpu_user_children:0.000000\r\n\r\n"
        );
    }
    if want("cluster") {
        let enabled = u8::from(node.cluster.get().is_some());
        let _ = write!(t, "# Cluster\r\ncluster_enabled:{enabled}\r\n\r\n");
    }
    if want("keyspace") {
        t.push_str("# Keyspace\r\n");
        for db in 0..cfg.databases {
            let (keys, expires) = reports.iter().fold((0, 0), |acc, r| {
                (acc.0 + r.keyspace[db].0, acc.1 + r.keyspace[db].1)
            });
            if keys > 0 {
                let _ = write!(t, "db{db}:keys={keys},expires={expires},avg_ttl=0\r\n");
            }
        }
        t.push_str("\r\n");
    }
    if want("tessera") {
        // Per data core: what it served, holds and owes, and the hops it made to others.
        t.push_str("# Tessera\r\n");
        for (i, r) in reports.iter().enumerate() {
            let keys: usize = r.keyspace.iter().map(|k| k.0).sum();
            let _ = write!(
                t,
                "core{i}:cpu={},commands={},clients={},keys={keys},dataset_bytes={},heap_bytes={},hops={},error_replies={},wal_records={},wal_bytes={},wal_lag={}\r\n",
                node.cpus.get(i).copied().flatten().map_or("unpinned".to_string(), |c| c.to_string()),
                r.stats.total_commands_processed,
                r.clients,
                r.dataset_bytes,
                r.heap_bytes.max(0),
                r.stats.cross_core_hops,
                r.stats.total_error_replies,
                r.wal.2,
                r.wal.3,
                r.wal.4,
            );
        }
        t.push_str("\r\n");
    }
    while t.ends_with("\r\n\r\n") {
        t.truncate(t.len() - 2);
    }
    t
}
