//! The final table and the JSON document of a run.

use serde::{Deserialize, Serialize};

use crate::config::{Arrival, Config, Stop};
use crate::run::Outcome;
use crate::stats::{ns_to_ms, CmdStats};
use crate::workload::{KeyDist, ValueSize};

/// Quantiles in the table and the JSON, with their column names.
pub const QUANTILES: [(&str, f64); 5] = [
    ("p50", 0.5),
    ("p90", 0.9),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("p99.99", 0.9999),
];
/// Client CPU use per thread above which the client may be what limits throughput.
pub const CLIENT_BUSY_FRACTION: f64 = 0.9;
/// Open-loop send lag (p99) above which the client is not keeping its own schedule.
pub const SEND_LAG_WARN_MS: f64 = 1.0;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub p99_99: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CmdReport {
    pub name: String,
    pub ops: u64,
    pub ops_per_sec: f64,
    pub hits: u64,
    pub misses: u64,
    pub errors: u64,
    pub latency_ms: Latency,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkloadReport {
    /// `weight command`, e.g. `10 GET __key__`.
    pub mix: Vec<String>,
    pub keys: u64,
    pub distribution: String,
    pub value_bytes: String,
    pub ttl_s: Option<u64>,
    pub populate: bool,
    /// `--set-on-miss`: GETs only, each miss followed by a SET of its key.
    #[serde(default)]
    pub set_on_miss: bool,
}

/// The `--json` document. `percentiles` holds `[quantile, ms]` pairs of all commands
/// together, at HdrHistogram's percentile steps: what `plot` draws.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub tool: String,
    pub version: String,
    pub label: String,
    pub target: String,
    pub mode: String,
    pub rate: Option<f64>,
    pub arrival: Option<String>,
    pub threads: usize,
    pub connections: usize,
    pub pipeline: usize,
    pub resp: u8,
    pub workload: WorkloadReport,
    pub warmup_s: f64,
    pub window_s: f64,
    pub ops_per_sec: f64,
    pub commands: Vec<CmdReport>,
    pub total: CmdReport,
    /// GET hits / (hits + misses) in the window; `None` without GET replies.
    #[serde(default)]
    pub hit_ratio: Option<f64>,
    pub unsent: u64,
    pub timed_out: u64,
    pub client_cpu_s: f64,
    pub client_cpu_us_per_op: f64,
    pub send_lag_ms: Option<Latency>,
    pub first_error: Option<String>,
    pub percentiles: Vec<[f64; 2]>,
}

fn latency(c: &CmdStats) -> Latency {
    Latency {
        mean: c.hist.mean() / 1e6,
        p50: c.ms_at(0.5),
        p90: c.ms_at(0.9),
        p99: c.ms_at(0.99),
        p99_9: c.ms_at(0.999),
        p99_99: c.ms_at(0.9999),
        max: ns_to_ms(c.hist.max()),
    }
}

fn cmd_report(c: &CmdStats, window_s: f64) -> CmdReport {
    CmdReport {
        name: c.name.clone(),
        ops: c.ops(),
        ops_per_sec: if window_s > 0.0 {
            c.ops() as f64 / window_s
        } else {
            0.0
        },
        hits: c.hits,
        misses: c.misses,
        errors: c.errors,
        latency_ms: latency(c),
    }
}

/// Hits / (hits + misses) of the rows named GET; `None` when no GET got a value or nil.
pub fn get_hit_ratio(rows: &[CmdStats]) -> Option<f64> {
    let (hits, misses) = rows
        .iter()
        .filter(|c| c.name == "GET")
        .fold((0, 0), |(h, m), c| (h + c.hits, m + c.misses));
    (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64)
}

pub fn describe_dist(d: KeyDist) -> String {
    match d {
        KeyDist::Uniform => "uniform".into(),
        KeyDist::Zipf { exponent } => format!("zipf:{exponent}"),
        KeyDist::Sequential => "sequential".into(),
    }
}

pub fn describe_value(v: ValueSize) -> String {
    if v.min_bytes == v.max_bytes {
        v.min_bytes.to_string()
    } else {
        format!("{}-{}", v.min_bytes, v.max_bytes)
    }
}

/// `[quantile, ms]` at HdrHistogram's percentile steps (5 per halving of the distance
/// to 100%), ending with the maximum.
pub fn percentile_points(c: &CmdStats) -> Vec<[f64; 2]> {
    if c.hist.is_empty() {
        return Vec::new();
    }
    c.hist
        .iter_quantiles(crate::hgrm::TICKS_PER_HALF_DISTANCE)
        .map(|v| [v.quantile_iterated_to(), ns_to_ms(v.value_iterated_to())])
        .collect()
}

impl Report {
    pub fn new(cfg: &Config, o: &Outcome) -> Report {
        let w = &cfg.workload;
        let ops = o.total.ops();
        Report {
            tool: "tessera-bench".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            label: cfg.label.clone(),
            target: cfg.addr.clone(),
            mode: if cfg.is_open_loop() { "open" } else { "closed" }.into(),
            rate: cfg.rate,
            arrival: cfg.rate.map(|_| {
                match cfg.arrival {
                    Arrival::Uniform => "uniform",
                    Arrival::Poisson => "poisson",
                }
                .into()
            }),
            threads: cfg.threads,
            connections: cfg.connections,
            pipeline: cfg.pipeline,
            resp: match cfg.resp {
                crate::config::Resp::V2 => 2,
                crate::config::Resp::V3 => 3,
            },
            workload: WorkloadReport {
                mix: w
                    .mix
                    .iter()
                    .map(|m| format!("{} {}", m.weight, m.template))
                    .collect(),
                keys: w.keys,
                distribution: describe_dist(w.dist),
                value_bytes: describe_value(w.value),
                ttl_s: w.ttl_s,
                populate: cfg.populate,
                set_on_miss: w.set_on_miss,
            },
            warmup_s: cfg.warmup.as_secs_f64(),
            window_s: o.window_s,
            ops_per_sec: o.ops_per_sec(),
            commands: o
                .commands
                .iter()
                .map(|c| cmd_report(c, o.window_s))
                .collect(),
            total: cmd_report(&o.total, o.window_s),
            hit_ratio: get_hit_ratio(&o.commands),
            unsent: o.unsent,
            timed_out: o.timed_out,
            client_cpu_s: o.client_cpu_s,
            client_cpu_us_per_op: if ops > 0 {
                o.client_cpu_s * 1e6 / ops as f64
            } else {
                0.0
            },
            send_lag_ms: cfg.rate.map(|_| {
                let mut lag = CmdStats::new("lag");
                lag.hist = o.send_lag.clone();
                latency(&lag)
            }),
            first_error: o.first_error.clone(),
            percentiles: percentile_points(&o.total),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serialises")
    }

    /// The human-readable summary: a header line, one row per command and ALL, and
    /// warnings about anything that makes the figures doubtful.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let mode = match self.rate {
            Some(r) => format!(
                "open loop at {} ops/s ({})",
                group(r as u64),
                self.arrival.as_deref().unwrap_or("")
            ),
            None => "closed loop".into(),
        };
        let mode = if self.workload.set_on_miss {
            mode + ", GET with SET on miss"
        } else {
            mode
        };
        s += &format!(
            "{}: {}, {} connection(s), pipeline {}, {} thread(s), RESP{}; {} keys {}, {}-byte values; {:.1} s measured\n",
            self.target, mode, self.connections, self.pipeline, self.threads, self.resp,
            group(self.workload.keys), self.workload.distribution, self.workload.value_bytes, self.window_s,
        );
        s += &format!(
            "{:<8} {:>12} {:>12} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  (latency ms)\n",
            "command",
            "ops/s",
            "hits",
            "misses",
            "errors",
            "p50",
            "p90",
            "p99",
            "p99.9",
            "p99.99",
            "max"
        );
        for c in self.commands.iter().chain(std::iter::once(&self.total)) {
            let l = &c.latency_ms;
            s += &format!(
                "{:<8} {:>12} {:>12} {:>10} {:>8} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}\n",
                c.name, group(c.ops_per_sec.round() as u64), c.hits, c.misses, c.errors,
                l.p50, l.p90, l.p99, l.p99_9, l.p99_99, l.max
            );
        }
        if let Some(ratio) = self.hit_ratio {
            let (hits, misses) = self
                .commands
                .iter()
                .filter(|c| c.name == "GET")
                .fold((0, 0), |(h, m), c| (h + c.hits, m + c.misses));
            s += &format!(
                "GET hit ratio: {ratio:.4} ({} hits, {} misses)\n",
                group(hits),
                group(misses)
            );
        }
        let busy = self.client_cpu_s / (self.window_s.max(1e-9) * self.threads as f64);
        s += &format!(
            "client: {:.2} CPU s, {:.0}% of its {} thread(s), {:.2} µs per request\n",
            self.client_cpu_s,
            busy * 100.0,
            self.threads,
            self.client_cpu_us_per_op
        );
        if let Some(lag) = &self.send_lag_ms {
            s += &format!(
                "client send lag: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms\n",
                lag.p50, lag.p99, lag.max
            );
        }
        for w in self.warnings(busy) {
            s += &format!("warning: {w}\n");
        }
        s
    }

    fn warnings(&self, busy: f64) -> Vec<String> {
        let mut w = Vec::new();
        if self.unsent > 0 {
            w.push(format!(
                "{} requests scheduled in the window were never sent: the server did not keep up with --rate (raise --pipeline or --connections, or lower --rate)",
                self.unsent
            ));
        }
        if self.timed_out > 0 {
            w.push(format!(
                "{} requests were still unanswered 2 s after the end",
                self.timed_out
            ));
        }
        if let Some(e) = &self.first_error {
            w.push(format!(
                "{} error replies; the first: {e}",
                self.total.errors
            ));
        }
        if busy > CLIENT_BUSY_FRACTION && self.rate.is_none() {
            w.push("the client threads were busy nearly all the time: it may be the bottleneck (add --threads)".into());
        }
        if self
            .send_lag_ms
            .as_ref()
            .is_some_and(|l| l.p99 > SEND_LAG_WARN_MS)
        {
            w.push("the client sent requests late by its own doing: add --threads, or pin them with --cpus".into());
        }
        w
    }
}

/// Describes the stop condition for messages.
pub fn describe_stop(s: Stop) -> String {
    match s {
        Stop::After(d) => format!("{:.1} s", d.as_secs_f64()),
        Stop::Requests(n) => format!("{n} requests"),
    }
}

/// 1234567 → "1,234,567".
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_hist;
    use crate::workload::Workload;

    fn outcome() -> Outcome {
        let mut get = CmdStats::new("GET");
        for i in 1..=1000u64 {
            get.hist.record(i * 1_000).unwrap();
        }
        (get.hits, get.misses) = (900, 100);
        let mut set = CmdStats::new("SET");
        set.hist.record(5_000_000).unwrap();
        set.hits = 1;
        let commands = vec![set, get];
        Outcome {
            total: crate::stats::total(&commands),
            commands,
            window_s: 2.0,
            send_lag: new_hist(),
            unsent: 3,
            timed_out: 0,
            client_cpu_s: 0.5,
            threads: 1,
            populated_keys: 0,
            populate_s: 0.0,
            first_error: None,
        }
    }

    #[test]
    fn json_round_trips_and_the_table_has_every_row() {
        let mut cfg = Config::new("127.0.0.1:1", Workload::simple(1, 10, 100, 32));
        cfg.rate = Some(1000.0);
        let r = Report::new(&cfg, &outcome());
        assert_eq!(r.total.ops, 1001);
        assert!((r.ops_per_sec - 500.5).abs() < 1e-9);
        let get = &outcome().commands[1];
        assert_eq!(
            r.commands[1].latency_ms.p50,
            get.hist.value_at_quantile(0.5) as f64 / 1e6
        );
        assert!((r.total.latency_ms.max - 5.0).abs() < 0.005);
        assert_eq!(r.workload.mix, ["1 SET __key__ __data__", "10 GET __key__"]);
        let back: Report = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(
            (back.total.ops, back.unsent, &back.workload),
            (r.total.ops, r.unsent, &r.workload)
        );
        assert_eq!(back.percentiles.len(), r.percentiles.len());
        let t = r.table();
        assert!(t.contains("open loop at 1,000 ops/s"), "{t}");
        for row in ["\nSET ", "\nGET ", "\nALL ", "3 requests scheduled"] {
            assert!(t.contains(row), "{row} missing from\n{t}");
        }
        let last = r.percentiles.last().unwrap();
        assert_eq!((last[0], last[1]), (1.0, r.total.latency_ms.max));
        // 900 hits and 100 misses of GET; SET's hit does not count.
        assert_eq!(r.hit_ratio, Some(0.9));
        assert_eq!(back.hit_ratio, Some(0.9));
        assert!(
            t.contains("GET hit ratio: 0.9000 (900 hits, 100 misses)"),
            "{t}"
        );
        let doc: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(doc["hit_ratio"], serde_json::json!(0.9));
    }

    #[test]
    fn hit_ratio_needs_a_get_and_set_on_miss_shows_in_the_header() {
        let mut o = outcome();
        o.commands.truncate(1);
        let cfg = Config::new("127.0.0.1:1", Workload::cache_aside(100, 32));
        assert_eq!(Report::new(&cfg, &o).hit_ratio, None);
        let mut get = CmdStats::new("GET");
        (get.hits, get.misses, get.errors) = (1, 3, 5);
        assert_eq!(get_hit_ratio(&[get]), Some(0.25));
        let r = Report::new(&cfg, &outcome());
        assert!(r.workload.set_on_miss);
        assert!(r.table().contains("closed loop, GET with SET on miss"));
        // Files written before these fields existed still load.
        let mut doc: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        doc.as_object_mut().unwrap().remove("hit_ratio");
        doc["workload"]
            .as_object_mut()
            .unwrap()
            .remove("set_on_miss");
        let old: Report = serde_json::from_value(doc).unwrap();
        assert_eq!((old.hit_ratio, old.workload.set_on_miss), (None, false));
    }

    #[test]
    fn grouping() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1_000), "1,000");
        assert_eq!(group(1_234_567), "1,234,567");
    }
}
