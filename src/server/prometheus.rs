//! The Prometheus endpoint: HTTP `GET /metrics` on `--metrics-port`, served by a thread of
//! its own so a scrape never runs on a data core. A scrape raises the wanted generation;
//! each data core, on its next tick (`hz` times a second), leaves a sample of its figures
//! here; the thread waits for all of them (at most `SCRAPE_WAIT_MS`), merges them and
//! encodes the text with prometheus-client. Idle, it costs the cores one atomic load a tick.

use super::core::{Core, CoreStats};
use super::metrics::{self, Metrics};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a scrape waits for every core's sample before it answers 503.
const SCRAPE_WAIT_MS: u64 = 2_000;
/// A request's head (request line and headers) may be this long; longer is refused.
const REQUEST_MAX_BYTES: usize = 8 * 1024;
/// A client that sends its request or reads the answer slower than this is dropped.
const IO_TIMEOUT_MS: u64 = 5_000;
/// After refusing a request that is too long: how long, and how much of the rest, is read
/// and thrown away before the connection closes.
const DRAIN_MS: u64 = 200;
const DRAIN_MAX_BYTES: usize = 1 << 20;
/// Upper bounds of the command-duration histogram's buckets, in seconds.
const DURATION_BUCKETS_S: &[f64] = &[
    1e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2,
    0.1, 0.25, 0.5, 1.0,
];

/// One data core's figures at a tick.
#[derive(Clone)]
pub struct Sample {
    stats: CoreStats,
    clients: usize,
    heap_bytes: i64,
    dataset_bytes: usize,
    limit_bytes: usize,
    hits: u64,
    misses: u64,
    expired: u64,
    evicted: u64,
    wal_records: usize,
    wal_bytes: usize,
    wal_lag: u64,
    keys: Vec<(usize, usize)>,
    metrics: Metrics,
}

/// Where scrapes and cores meet.
pub struct Hub {
    wanted: AtomicU64,
    samples: Mutex<Vec<Option<(u64, Sample)>>>,
    ready: Condvar,
}

impl Hub {
    pub fn new(cores: usize) -> Hub {
        Hub {
            wanted: AtomicU64::new(0),
            samples: Mutex::new(vec![None; cores]),
            ready: Condvar::new(),
        }
    }
}

thread_local! {
    /// The generation this core last sampled for.
    static DONE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Called by every core's tick: leaves a sample if a scrape wants one.
pub fn sample_if_wanted(core: &Core) {
    let hub = &core.node.scrape;
    let wanted = hub.wanted.load(Ordering::Acquire);
    if wanted == DONE.with(|d| d.get()) {
        return;
    }
    DONE.with(|d| d.set(wanted));
    let shard = core.shard.borrow();
    let db_stats = shard.stats();
    let wal = shard.wal();
    let sample = Sample {
        stats: core.stats.get(),
        clients: core.clients.borrow().len(),
        heap_bytes: crate::alloc::thread_bytes(),
        dataset_bytes: shard.data_bytes(),
        limit_bytes: shard.memory_policy().limit_bytes,
        hits: db_stats.keyspace_hits,
        misses: db_stats.keyspace_misses,
        expired: db_stats.expired_keys,
        evicted: shard.stats.evicted_keys,
        wal_records: wal.len(),
        wal_bytes: wal.bytes(),
        wal_lag: wal.lags().max().unwrap_or(0),
        keys: (0..shard.databases())
            .map(|db| (shard.db_ref(db).len(), shard.db_ref(db).volatile_len()))
            .collect(),
        metrics: metrics::snapshot(),
    };
    drop(wal);
    drop(shard);
    let mut samples = hub.samples.lock().expect("scrape lock");
    samples[core.id] = Some((wanted, sample));
    hub.ready.notify_all();
}

/// Asks every core for a sample and waits for all of them.
fn collect(hub: &Hub) -> Option<Vec<Sample>> {
    let generation = hub.wanted.fetch_add(1, Ordering::AcqRel) + 1;
    let deadline = Instant::now() + Duration::from_millis(SCRAPE_WAIT_MS);
    let mut samples = hub.samples.lock().expect("scrape lock");
    loop {
        if samples
            .iter()
            .all(|s| s.as_ref().is_some_and(|(g, _)| *g >= generation))
        {
            return Some(
                samples
                    .iter()
                    .map(|s| s.as_ref().expect("all").1.clone())
                    .collect(),
            );
        }
        let left = deadline.checked_duration_since(Instant::now())?;
        samples = hub
            .ready
            .wait_timeout(samples, left)
            .expect("scrape lock")
            .0;
    }
}

/// A metric family drawn from each of many things: name, help, and the value of one.
type Family<T, V> = (&'static str, &'static str, fn(&T) -> V);

/// The merged figures a scrape encodes.
struct Scrape {
    cores: Vec<Sample>,
    merged: Metrics,
    other_heap_bytes: i64,
    maxclients: usize,
}

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scrape of {} cores", self.cores.len())
    }
}

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(e.encode_descriptor(name, help, unit, g.metric_type())?)
}

impl Scrape {
    fn sum(&self, f: impl Fn(&Sample) -> u64) -> u64 {
        self.cores.iter().map(f).sum()
    }
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let st = |f: fn(&CoreStats) -> u64| self.sum(|c| f(&c.stats));
        counter(
            &mut e,
            "tessera_commands_processed",
            "Commands processed, as INFO's total_commands_processed.",
            st(|s| s.total_commands_processed),
        )?;
        counter(
            &mut e,
            "tessera_connections_received",
            "Connections accepted.",
            st(|s| s.total_connections_received),
        )?;
        counter(
            &mut e,
            "tessera_connections_rejected",
            "Connections refused at maxclients.",
            st(|s| s.rejected_connections),
        )?;
        counter(
            &mut e,
            "tessera_net_input_bytes",
            "Bytes read from clients.",
            st(|s| s.total_net_input_bytes),
        )?;
        counter(
            &mut e,
            "tessera_net_output_bytes",
            "Bytes written to clients.",
            st(|s| s.total_net_output_bytes),
        )?;
        counter(
            &mut e,
            "tessera_error_replies",
            "Error replies sent.",
            st(|s| s.total_error_replies),
        )?;
        counter(
            &mut e,
            "tessera_cross_core_hops",
            "Requests a data core sent to another over the channel mesh.",
            st(|s| s.cross_core_hops),
        )?;
        counter(
            &mut e,
            "tessera_keyspace_hits",
            "Reads that found their key.",
            self.sum(|c| c.hits),
        )?;
        counter(
            &mut e,
            "tessera_keyspace_misses",
            "Reads that did not find their key.",
            self.sum(|c| c.misses),
        )?;
        counter(
            &mut e,
            "tessera_expired_keys",
            "Keys deleted because their TTL passed.",
            self.sum(|c| c.expired),
        )?;
        counter(
            &mut e,
            "tessera_evicted_keys",
            "Keys evicted to stay under maxmemory.",
            self.sum(|c| c.evicted),
        )?;
        gauge(
            &mut e,
            "tessera_connected_clients",
            "Client connections open.",
            None,
            self.cores.iter().map(|c| c.clients as i64).sum(),
        )?;
        gauge(
            &mut e,
            "tessera_maxclients",
            "The maxclients setting.",
            None,
            self.maxclients as i64,
        )?;
        let heap: i64 =
            self.cores.iter().map(|c| c.heap_bytes).sum::<i64>() + self.other_heap_bytes;
        gauge(
            &mut e,
            "tessera_memory_used",
            "Heap bytes in use, as INFO's used_memory.",
            Some(&Unit::Bytes),
            heap.max(0),
        )?;
        gauge(
            &mut e,
            "tessera_memory_dataset",
            "Bytes of keys, values and their tables.",
            Some(&Unit::Bytes),
            self.cores.iter().map(|c| c.dataset_bytes as i64).sum(),
        )?;
        gauge(
            &mut e,
            "tessera_memory_max",
            "The maxmemory limit (0: none).",
            Some(&Unit::Bytes),
            self.cores.iter().map(|c| c.limit_bytes as i64).sum(),
        )?;
        gauge(
            &mut e,
            "tessera_memory_rss",
            "Resident set size of the process.",
            Some(&Unit::Bytes),
            super::info::rss_bytes() as i64,
        )?;

        // Per database.
        let dbs = self.cores.first().map_or(0, |c| c.keys.len());
        let per_db: [Family<(usize, usize), usize>; 2] = [
            ("tessera_keys", "Keys per database.", |k| k.0),
            (
                "tessera_keys_with_expiry",
                "Keys with a TTL per database.",
                |k| k.1,
            ),
        ];
        for (name, help, f) in per_db {
            let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for db in 0..dbs {
                let n: usize = self.cores.iter().map(|c| f(&c.keys[db])).sum();
                if n > 0 {
                    let labels = [("db", format!("db{db}"))];
                    ConstGauge::new(n as i64).encode(m.encode_family(&labels)?)?;
                }
            }
        }

        // Per core.
        let per_core: [Family<Sample, i64>; 5] = [
            (
                "tessera_core_commands_processed",
                "Commands processed per data core.",
                |c| c.stats.total_commands_processed as i64,
            ),
            (
                "tessera_core_connected_clients",
                "Client connections per data core.",
                |c| c.clients as i64,
            ),
            (
                "tessera_core_wal_ring_records",
                "Records in each core's write-ahead ring.",
                |c| c.wal_records as i64,
            ),
            (
                "tessera_core_wal_ring_bytes",
                "Bytes in each core's write-ahead ring.",
                |c| c.wal_bytes as i64,
            ),
            (
                "tessera_core_wal_ring_lag_records",
                "Records the slowest reader (replica, AOF) of each core's ring is behind.",
                |c| c.wal_lag as i64,
            ),
        ];
        for (name, help, f) in per_core {
            let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (i, c) in self.cores.iter().enumerate() {
                let labels = [("core", i.to_string())];
                ConstGauge::new(f(c)).encode(m.encode_family(&labels)?)?;
            }
        }

        // Per command.
        let used: Vec<_> = self.merged.used().collect();
        let per_cmd: [Family<metrics::CommandStat, u64>; 3] = [
            (
                "tessera_command_calls",
                "Calls of each command, as INFO commandstats.",
                |s| s.calls,
            ),
            (
                "tessera_command_rejected_calls",
                "Calls refused before they ran.",
                |s| s.rejected,
            ),
            (
                "tessera_command_failed_calls",
                "Calls that ran and answered an error.",
                |s| s.failed,
            ),
        ];
        for (name, help, f) in per_cmd {
            let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (name, s) in &used {
                let labels = [("cmd", *name)];
                ConstCounter::new(f(s)).encode(m.encode_family(&labels)?)?;
            }
        }
        let mut m = e.encode_descriptor(
            "tessera_command_duration",
            "Time each command ran, from the data cores' HdrHistograms.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (name, s) in &used {
            let Some(h) = &s.hist else { continue };
            let mut buckets: Vec<(f64, u64)> = DURATION_BUCKETS_S.iter().map(|b| (*b, 0)).collect();
            buckets.push((f64::MAX, 0));
            for v in h.iter_recorded() {
                let secs = v.value_iterated_to() as f64 / 1e9;
                let i = DURATION_BUCKETS_S
                    .iter()
                    .position(|b| secs <= *b)
                    .unwrap_or(DURATION_BUCKETS_S.len());
                buckets[i].1 += v.count_at_value();
            }
            let labels = [("cmd", *name)];
            m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                s.nanos as f64 / 1e9,
                h.len(),
                &buckets,
                None,
            )?;
        }
        let mut m = e.encode_descriptor(
            "tessera_errors",
            "Error replies by their prefix, as INFO errorstats.",
            None,
            MetricType::Counter,
        )?;
        for (prefix, n) in &self.merged.errors {
            let labels = [("prefix", prefix.as_str())];
            ConstCounter::new(*n).encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The text of one scrape, or None if a core did not answer in time.
fn render(hub: &Hub, maxclients: usize) -> Option<String> {
    let cores = collect(hub)?;
    let mut merged = Metrics::empty();
    for c in &cores {
        merged.merge(&c.metrics);
    }
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape {
        cores,
        merged,
        other_heap_bytes: crate::alloc::published_bytes(),
        maxclients,
    }));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).ok()?;
    Some(text)
}

/// Serves /metrics on `listener` until the process ends.
pub fn serve(listener: TcpListener, node: Arc<super::core::NodeShared>, maxclients: usize) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if node.shutting_down() {
            return;
        }
        if let Err(e) = answer(stream, &node.scrape, maxclients) {
            tracing::debug!("metrics request: {e}");
        }
    }
}

fn answer(mut stream: TcpStream, hub: &Hub, maxclients: usize) -> std::io::Result<()> {
    let timeout = Some(Duration::from_millis(IO_TIMEOUT_MS));
    stream.set_read_timeout(timeout)?;
    stream.set_write_timeout(timeout)?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > REQUEST_MAX_BYTES {
            reply(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "request too long\n",
            )?;
            // Read what the client is still sending (a little of it), so closing does not
            // reset the connection before it has read the answer.
            stream.shutdown(std::net::Shutdown::Write)?;
            stream.set_read_timeout(Some(Duration::from_millis(DRAIN_MS)))?;
            let mut drained = 0;
            while drained < DRAIN_MAX_BYTES {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => drained += n,
                }
            }
            return Ok(());
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let path = path.split(|&b| b == b'?').next().unwrap_or_default();
    if method != b"GET" && method != b"HEAD" {
        return reply(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n",
        );
    }
    if path != b"/metrics" {
        return reply(&mut stream, "404 Not Found", "text/plain", "try /metrics\n");
    }
    match render(hub, maxclients) {
        Some(text) => reply(
            &mut stream,
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            &text,
        ),
        None => reply(
            &mut stream,
            "503 Service Unavailable",
            "text/plain",
            "a data core did not answer in time\n",
        ),
    }
}

fn reply(stream: &mut TcpStream, status: &str, kind: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

/// Binds the endpoint (a start-up error if it cannot) and starts its thread.
pub fn start(
    config: &crate::config::Config,
    node: Arc<super::core::NodeShared>,
) -> Result<(), super::StartError> {
    if config.metrics_port == 0 {
        return Ok(());
    }
    let host = config
        .bind
        .first()
        .map(|b| b.trim_start_matches('-').to_string())
        .unwrap_or_else(|| "127.0.0.1".into());
    let addr = if host.contains(':') {
        format!("[{host}]:{}", config.metrics_port)
    } else {
        format!("{host}:{}", config.metrics_port)
    };
    let listener = TcpListener::bind(&addr).map_err(|e| super::StartError::MetricsBind {
        addr: addr.clone(),
        err: e.to_string(),
    })?;
    let maxclients = config.maxclients;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || serve(listener, node, maxclients))
        .map_err(|e| super::StartError::MetricsBind {
            addr: addr.clone(),
            err: e.to_string(),
        })?;
    tracing::info!("Prometheus metrics on http://{addr}/metrics");
    Ok(())
}
