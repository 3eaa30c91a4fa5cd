//! The command line. `tessera-bench [FLAGS]` runs a benchmark; `tessera-bench plot OUT.svg
//! RUN.json…` draws several runs' percentiles on one chart.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{self, Arrival, Auth, Config, Resp, Stop};
use crate::encode::Template;
use crate::workload::{KeyDist, ValueSize, Weighted, Workload};

/// Default Zipf exponent when `--distribution zipf` gives none (YCSB's).
pub const ZIPF_DEFAULT_EXPONENT: f64 = 0.99;
/// Largest weight of one command in the mix.
pub const WEIGHT_MAX: u32 = 1_000_000;
/// Most commands in the mix.
pub const MIX_MAX: usize = 64;

#[derive(Parser, Debug)]
#[command(
    name = "tessera-bench",
    version,
    about = "Load generator for tessera, Redis and any RESP server: closed or open loop, \
             latency measured from each request's intended send time, HdrHistogram percentiles.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Option<Sub>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Sub {
    /// Draw the latency percentiles of one or more --json results on one SVG chart.
    Plot {
        /// The SVG file to write.
        out: PathBuf,
        /// --json results, one line each.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        #[arg(long, default_value = "Latency by percentile")]
        title: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ArrivalArg {
    Uniform,
    Poisson,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Server host.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Server port.
    #[arg(short, long, default_value_t = 6379)]
    pub port: u16,
    /// AUTH with this password.
    #[arg(short = 'a', long = "pass")]
    pub pass: Option<String>,
    /// AUTH as this ACL user (needs --pass).
    #[arg(long, requires = "pass")]
    pub user: Option<String>,
    /// Speak RESP3 (HELLO 3 on connect).
    #[arg(long)]
    pub resp3: bool,
    /// SELECT this database.
    #[arg(long)]
    pub db: Option<u32>,
    /// Worker threads; connections are dealt to them round-robin.
    #[arg(short, long, default_value_t = 1)]
    pub threads: usize,
    /// Connections in all (not per thread).
    #[arg(short, long, default_value_t = 50)]
    pub connections: usize,
    /// Requests in flight per connection: kept full in closed loop; the most an open-loop
    /// connection has out before later requests wait (their latency still counts).
    #[arg(short = 'P', long, default_value_t = 1)]
    pub pipeline: usize,
    /// Open loop: total requests per second across all connections.
    #[arg(long, value_name = "OPS")]
    pub rate: Option<f64>,
    /// Open-loop spacing of requests.
    #[arg(long, value_enum, default_value = "uniform", requires = "rate")]
    pub arrival: ArrivalArg,
    /// How long to measure (10s, 500ms, 2m; a bare number is seconds).
    #[arg(short, long, value_parser = parse_duration, conflicts_with = "requests")]
    pub duration: Option<Duration>,
    /// Measure this many requests in all instead of a duration.
    #[arg(short = 'n', long)]
    pub requests: Option<u64>,
    /// Run the load this long before measuring.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub warmup: Duration,
    /// SET:GET ratio of the default workload.
    #[arg(long, default_value = "1:10", value_parser = parse_ratio)]
    pub ratio: (u32, u32),
    /// A weighted command, `WEIGHT:COMMAND ARGS` with __key__ and __data__ placeholders
    /// (e.g. `5:INCR __key__`); repeat for a mix. Replaces --ratio.
    #[arg(long = "command", value_name = "WEIGHT:COMMAND", value_parser = parse_weighted)]
    pub commands: Vec<Weighted>,
    /// Size of the key space: keys key:000000000000 up to keys-1.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    #[arg(long, default_value = "key:")]
    pub key_prefix: String,
    /// Key distribution: uniform, zipf[:EXPONENT] (default 0.99) or sequential.
    #[arg(long, default_value = "uniform", value_parser = parse_dist)]
    pub distribution: KeyDist,
    /// Value size in bytes: N, or MIN-MAX for sizes uniform in the range.
    #[arg(long, default_value = "32", value_parser = parse_size)]
    pub value_size: ValueSize,
    /// Give SET keys this time to live, seconds (the --ratio workload, --populate and
    /// --set-on-miss).
    #[arg(long, value_name = "SECS")]
    pub ttl: Option<u64>,
    /// SET every key once before the run.
    #[arg(long)]
    pub populate: bool,
    /// Cache-aside load: every request is a GET of a key from --distribution, and a GET
    /// answered nil is followed on its connection by a SET of that key (--value-size
    /// value, --ttl if given), counted as a SET. Reports the GET hit ratio.
    #[arg(long, conflicts_with_all = ["commands", "ratio"])]
    pub set_on_miss: bool,
    /// Pin worker thread i to the i-th CPU of this list (e.g. 0-3,8), cycling.
    #[arg(long, value_parser = parse_cpus)]
    pub cpus: Option<CpuList>,
    /// Seed of every random choice (keys, values, mix, Poisson gaps).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub connect_timeout: Duration,
    /// Fail the run when a connection waits this long for any reply.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub timeout: Duration,
    /// Write the results as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write all commands' latency distribution in HdrHistogram's .hgrm format (ms).
    #[arg(long, value_name = "FILE")]
    pub hdr: Option<PathBuf>,
    /// Draw this run's latency percentiles as SVG.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Name of this run in the JSON and on plots.
    #[arg(long, default_value = "")]
    pub label: String,
    /// No progress line.
    #[arg(short, long)]
    pub quiet: bool,
}

/// A `--cpus` list (a newtype, so clap takes it as one value rather than many).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

fn parse_cpus(s: &str) -> Result<CpuList, String> {
    crate::cpu::parse_list(s).map(CpuList)
}

/// `10s`, `250ms`, `2m`, `1h`, `100us`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 10s, 500ms)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "unknown unit `{unit}` in `{s}` (use us, ms, s, m or h)"
            ))
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("`{s}`: {e}"))
}

/// `1:10` → (1, 10).
pub fn parse_ratio(s: &str) -> Result<(u32, u32), String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not SET:GET (e.g. 1:10)"))?;
    let n = |x: &str| x.trim().parse::<u32>().ok().filter(|&w| w <= WEIGHT_MAX);
    match (n(a), n(b)) {
        (Some(a), Some(b)) if a + b > 0 => Ok((a, b)),
        _ => Err(format!(
            "`{s}` is not SET:GET with weights up to {WEIGHT_MAX}, not both 0"
        )),
    }
}

/// `5:INCR __key__`.
pub fn parse_weighted(s: &str) -> Result<Weighted, String> {
    let (w, cmd) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not WEIGHT:COMMAND (e.g. `5:INCR __key__`)"))?;
    let weight = w
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|&w| (1..=WEIGHT_MAX).contains(&w));
    let weight = weight.ok_or_else(|| format!("weight `{w}` must be 1 to {WEIGHT_MAX}"))?;
    Ok(Weighted {
        weight,
        template: Template::parse(cmd)?,
    })
}

pub fn parse_dist(s: &str) -> Result<KeyDist, String> {
    let (name, arg) = s.split_once(':').map_or((s, None), |(a, b)| (a, Some(b)));
    match (name, arg) {
        ("uniform", None) => Ok(KeyDist::Uniform),
        ("sequential", None) => Ok(KeyDist::Sequential),
        ("zipf" | "zipfian", None) => Ok(KeyDist::Zipf {
            exponent: ZIPF_DEFAULT_EXPONENT,
        }),
        ("zipf" | "zipfian", Some(e)) => match e.parse::<f64>() {
            Ok(exponent) if exponent.is_finite() && exponent > 0.0 => {
                Ok(KeyDist::Zipf { exponent })
            }
            _ => Err(format!("zipf exponent `{e}` must be a number above 0")),
        },
        _ => Err(format!("`{s}`: use uniform, zipf[:EXPONENT] or sequential")),
    }
}

/// `32` or `16-64`.
pub fn parse_size(s: &str) -> Result<ValueSize, String> {
    let n = |x: &str| {
        x.trim()
            .parse::<usize>()
            .map_err(|_| format!("`{s}` is not a size in bytes (N or MIN-MAX)"))
    };
    let (min, max) = match s.split_once('-') {
        Some((a, b)) => (n(a)?, n(b)?),
        None => (n(s)?, n(s)?),
    };
    if min > max || max > config::VALUE_MAX_BYTES {
        return Err(format!(
            "`{s}`: need MIN <= MAX <= {} bytes",
            config::VALUE_MAX_BYTES
        ));
    }
    Ok(ValueSize {
        min_bytes: min,
        max_bytes: max,
    })
}

fn check(ok: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(msg())
    }
}

impl RunArgs {
    /// The run these flags ask for, checked against the limits in [`config`].
    pub fn to_config(&self) -> Result<Config, String> {
        check((1..=config::THREADS_MAX).contains(&self.threads), || {
            format!("--threads must be 1 to {}", config::THREADS_MAX)
        })?;
        check(
            (self.threads..=config::CONNECTIONS_MAX).contains(&self.connections),
            || {
                format!(
                    "--connections must be at least --threads ({}) and at most {}",
                    self.threads,
                    config::CONNECTIONS_MAX
                )
            },
        )?;
        check((1..=config::PIPELINE_MAX).contains(&self.pipeline), || {
            format!("--pipeline must be 1 to {}", config::PIPELINE_MAX)
        })?;
        check((1..=config::KEYS_MAX).contains(&self.keys), || {
            format!("--keys must be 1 to {}", config::KEYS_MAX)
        })?;
        if let Some(r) = self.rate {
            check(r.is_finite() && r > 0.0, || "--rate must be above 0".into())?;
        }
        check(self.requests != Some(0), || {
            "--requests must be at least 1".into()
        })?;
        check(self.duration != Some(Duration::ZERO), || {
            "--duration must be above 0".into()
        })?;
        check(self.commands.len() <= MIX_MAX, || {
            format!("at most {MIX_MAX} --command")
        })?;
        if let Some(CpuList(cpus)) = &self.cpus {
            let allowed = crate::cpu::allowed();
            if let Some(c) = cpus.iter().find(|c| !allowed.contains(c)) {
                return Err(format!(
                    "--cpus: this process may not run on CPU {c} (allowed: {allowed:?})"
                ));
            }
        }
        let mix = if self.set_on_miss {
            Workload::set_get(0, 1, self.ttl)
        } else if self.commands.is_empty() {
            Workload::set_get(self.ratio.0, self.ratio.1, self.ttl)
        } else {
            self.commands.clone()
        };
        // An IPv6 address needs brackets before the port.
        let host = if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let mut cfg = Config::new(
            format!("{host}:{}", self.port),
            Workload {
                mix,
                keys: self.keys,
                key_prefix: self.key_prefix.clone(),
                dist: self.distribution,
                value: self.value_size,
                ttl_s: self.ttl,
                set_on_miss: self.set_on_miss,
            },
        );
        cfg.auth = self.pass.clone().map(|password| Auth {
            user: self.user.clone(),
            password,
        });
        cfg.resp = if self.resp3 { Resp::V3 } else { Resp::V2 };
        cfg.db = self.db;
        cfg.threads = self.threads;
        cfg.connections = self.connections;
        cfg.pipeline = self.pipeline;
        cfg.rate = self.rate;
        cfg.arrival = match self.arrival {
            ArrivalArg::Uniform => Arrival::Uniform,
            ArrivalArg::Poisson => Arrival::Poisson,
        };
        cfg.stop = match (self.requests, self.duration) {
            (Some(n), _) => Stop::Requests(n),
            (None, d) => Stop::After(d.unwrap_or(Duration::from_secs(10))),
        };
        cfg.warmup = self.warmup;
        cfg.cpus = self.cpus.clone().map(|c| c.0);
        cfg.populate = self.populate;
        cfg.seed = self.seed;
        cfg.connect_timeout = self.connect_timeout;
        cfg.reply_timeout = self.timeout;
        cfg.label = self.label.clone();
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(args: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["tessera-bench"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        cli.run.to_config()
    }

    #[test]
    fn defaults() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.addr, "127.0.0.1:6379");
        assert_eq!((c.threads, c.connections, c.pipeline), (1, 50, 1));
        assert_eq!(c.stop, Stop::After(Duration::from_secs(10)));
        assert_eq!(c.workload.mix.len(), 2);
        assert_eq!(c.workload.mix[1].weight, 10);
        assert!(!c.is_open_loop());
    }

    #[test]
    fn every_flag_reaches_the_config() {
        let c = cfg(&[
            "--host",
            "::1",
            "-p",
            "7000",
            "-a",
            "pw",
            "--user",
            "u",
            "--resp3",
            "--db",
            "3",
            "-t",
            "2",
            "-c",
            "8",
            "-P",
            "4",
            "--rate",
            "5000",
            "--arrival",
            "poisson",
            "-n",
            "1000",
            "--warmup",
            "500ms",
            "--command",
            "3:INCR __key__",
            "--command",
            "1:GET __key__",
            "--keys",
            "77",
            "--distribution",
            "zipf:1.2",
            "--value-size",
            "10-20",
            "--ttl",
            "9",
            "--populate",
            "--seed",
            "5",
            "--timeout",
            "2s",
            "--label",
            "x",
            "--cpus",
            "0",
        ])
        .unwrap();
        assert_eq!(c.addr, "[::1]:7000");
        assert_eq!(c.auth.as_ref().unwrap().user.as_deref(), Some("u"));
        assert_eq!(
            (c.resp, c.db, c.threads, c.connections, c.pipeline),
            (Resp::V3, Some(3), 2, 8, 4)
        );
        assert_eq!(
            (c.rate, c.arrival, c.stop),
            (Some(5000.0), Arrival::Poisson, Stop::Requests(1000))
        );
        assert_eq!(c.warmup, Duration::from_millis(500));
        assert_eq!(c.workload.mix[0].template.to_string(), "INCR __key__");
        assert_eq!(c.workload.dist, KeyDist::Zipf { exponent: 1.2 });
        assert_eq!(
            c.workload.value,
            ValueSize {
                min_bytes: 10,
                max_bytes: 20
            }
        );
        assert_eq!(
            (c.workload.keys, c.workload.ttl_s, c.populate, c.seed),
            (77, Some(9), true, 5)
        );
        assert_eq!(c.reply_timeout, Duration::from_secs(2));
        assert_eq!(c.label, "x");
        assert_eq!(c.cpus, Some(vec![0]));
    }

    #[test]
    fn bad_flags_say_what_is_wrong() {
        for (args, want) in [
            (&["-c", "1", "-t", "2"][..], "--connections"),
            (&["-P", "0"], "--pipeline"),
            (&["--keys", "0"], "--keys"),
            (&["--rate", "0"], "--rate"),
            (&["--ratio", "0:0"], "not both 0"),
            (&["--ratio", "1-10"], "SET:GET"),
            (&["--command", "GET __key__"], "WEIGHT:COMMAND"),
            (&["--command", "0:GET __key__"], "weight"),
            (&["--distribution", "zipf:-1"], "above 0"),
            (&["--distribution", "normal"], "uniform, zipf"),
            (&["--value-size", "9-3"], "MIN <= MAX"),
            (&["-d", "5parsecs"], "unknown unit"),
            (&["-d", "1s", "-n", "5"], "cannot be used with"),
            (&["--arrival", "poisson"], "--rate"),
            (&["--user", "u"], "--pass"),
            (&["--cpus", "100000"], "--cpus"),
        ] {
            let e = cfg(args).unwrap_err();
            assert!(e.contains(want), "{args:?}: `{e}` lacks `{want}`");
        }
    }

    #[test]
    fn set_on_miss_is_a_get_only_mix() {
        let c = cfg(&["--set-on-miss", "--distribution", "zipf:0.99", "--ttl", "7"]).unwrap();
        assert!(c.workload.set_on_miss);
        assert_eq!(c.workload.ttl_s, Some(7));
        let mix: Vec<String> = c
            .workload
            .mix
            .iter()
            .map(|m| m.template.to_string())
            .collect();
        assert_eq!(mix, ["GET __key__"]);
        assert!(!cfg(&[]).unwrap().workload.set_on_miss);
        for other in [&["--ratio", "1:1"][..], &["--command", "1:GET __key__"]] {
            let mut args = vec!["--set-on-miss"];
            args.extend_from_slice(other);
            let e = cfg(&args).unwrap_err();
            assert!(e.contains("cannot be used with"), "{other:?}: {e}");
        }
    }

    #[test]
    fn durations_ratios_sizes() {
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("100us").unwrap(), Duration::from_micros(100));
        assert_eq!(parse_ratio("1:0").unwrap(), (1, 0));
        assert_eq!(
            parse_size("7").unwrap(),
            ValueSize {
                min_bytes: 7,
                max_bytes: 7
            }
        );
        assert_eq!(
            parse_dist("zipf").unwrap(),
            KeyDist::Zipf { exponent: 0.99 }
        );
        assert_eq!(parse_dist("sequential").unwrap(), KeyDist::Sequential);
    }

    #[test]
    fn plot_subcommand() {
        let cli =
            Cli::try_parse_from(["tessera-bench", "plot", "o.svg", "a.json", "b.json"]).unwrap();
        match cli.cmd {
            Some(Sub::Plot { out, runs, .. }) => {
                assert_eq!(out, PathBuf::from("o.svg"));
                assert_eq!(runs.len(), 2);
            }
            None => panic!("no subcommand"),
        }
    }
}
