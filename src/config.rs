//! Configuration: defaults, the redis.conf-style file, command-line flags, and the
//! parameters CONFIG GET/SET reach.
//!
//! Precedence: defaults, then the file named by the first argument, then flags.

use crate::limits;
use clap::Parser;
use std::path::PathBuf;
use tessera_shards::evict::Policy;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub bind: Vec<String>,
    pub port: u16,
    pub requirepass: Option<String>,
    /// Where ACL users are loaded from at start and saved by ACL SAVE ("": none).
    pub aclfile: String,
    /// ACL LOG keeps this many entries.
    pub acllog_max_len: usize,
    pub maxclients: usize,
    pub databases: usize,
    pub dir: PathBuf,
    /// The snapshot's file name in `dir`.
    pub dbfilename: String,
    /// Longest bulk string a client may send, and longest string value, in bytes.
    pub proto_max_bulk_len: usize,
    /// Most arguments in one command.
    pub proto_max_multibulk_len: usize,
    /// Bytes a client may have buffered in an incomplete command before it is closed.
    pub client_query_buffer_limit: usize,
    pub enable_debug_command: bool,
    /// Data cores (one glommio executor each).
    pub cores: usize,
    /// CPUs to pin data cores to, in order; empty: not pinned.
    pub cpus: Vec<usize>,
    pub loglevel: String,
    /// `log-format`: plain lines, or one JSON object per line.
    pub log_json: bool,
    /// `maxmemory`: bytes the dataset may use over all cores (each core gets an equal
    /// share); 0 means no limit.
    pub maxmemory: usize,
    pub maxmemory_policy: Policy,
    /// Keys sampled per database for each eviction.
    pub maxmemory_samples: usize,
    pub lfu_log_factor: u32,
    /// Minutes per point an LFU counter loses while its key is not read.
    pub lfu_decay_time: u32,
    /// Background tasks (active expiry) run this many times a second.
    pub hz: usize,
    /// Commands that run longer than this many microseconds go to the slow log (0: every
    /// command, negative: none), which keeps the newest `slowlog_max_len`.
    pub slowlog_log_slower_than: i64,
    pub slowlog_max_len: usize,
    /// Events (expiry and eviction cycles, fsyncs, commands...) that take at least this many
    /// milliseconds are sampled for LATENCY; 0: off.
    pub latency_monitor_threshold: u64,
    /// Each core's write-ahead ring keeps at most this many records and bytes.
    pub wal_ring_entries: usize,
    pub wal_ring_bytes: usize,
    /// Keep ring records even while nothing reads them (else only once a reader exists).
    pub wal_ring_keep: bool,
    /// `save` rules: a background save starts once `changes` keys have changed and
    /// `seconds` have passed since the last save. Empty: never.
    pub save: Vec<SaveRule>,
    /// Microseconds a background save waits per key written (Redis's test hook
    /// `rdb-key-save-delay`: slows a save down so tests can write during it). 0: none.
    pub rdb_key_save_delay: u64,
    /// The primary to follow at start (`replicaof host port`); REPLICAOF changes it live.
    pub replicaof: Option<(String, u16)>,
    /// The password a replica gives its primary.
    pub masterauth: Option<String>,
    /// The IP a replica announces to its primary (INFO, ROLE) instead of its source address.
    pub replica_announce_ip: Option<String>,
    /// Seconds without a frame before a replication link is declared lost.
    pub repl_timeout: u64,
    /// Writes are refused unless this many replicas acknowledged within
    /// `min_replicas_max_lag` seconds (0: off).
    pub min_replicas_to_write: usize,
    pub min_replicas_max_lag: u64,
    /// A write is acknowledged only once this many replicas have it (0: at once, as Redis).
    pub repl_ack_replicas: usize,
    /// How long (ms) such an acknowledgement may wait; past it the connection is closed
    /// without the replies (0: no limit).
    pub repl_ack_timeout: u64,
    /// A replica is in sync while it is at most this many records and ms behind its
    /// primary: only then does it serve READONLY reads or stand in a failover election.
    pub repl_max_lag_entries: u64,
    pub repl_max_lag_ms: u64,
    /// Failover elections: a replica stands this long after its primary is declared dead,
    /// plus up to the jitter (ms).
    pub cluster_failover_delay_ms: u64,
    /// Replica migration: a primary with more than `cluster_migration_barrier` replicas
    /// gives one to a primary left with none.
    pub cluster_allow_replica_migration: bool,
    pub cluster_migration_barrier: usize,
    /// Redis's `cluster-require-full-coverage`: with `no`, a node keeps serving the slots of
    /// live primaries while some primary is dead (its slots answer CLUSTERDOWN).
    pub cluster_require_full_coverage: bool,
    /// tessera's own: the most of a busy core's time a background save or rewrite may take
    /// (percent; on an idle core it takes what it needs).
    pub save_cpu_percent: usize,
    /// `appendonly`: each core logs its changes to `dir/appendonlydir`.
    pub appendonly: bool,
    pub appendfsync: AppendFsync,
    /// Load an append-only file damaged before its end up to the damage (a torn last
    /// record is always dropped and reported).
    pub aof_load_truncated: bool,
    /// Rewrite a core's log once it has grown by this percentage of its base (0: never)
    /// and is at least `auto_aof_rewrite_min_size` bytes.
    pub auto_aof_rewrite_percentage: usize,
    pub auto_aof_rewrite_min_size: usize,
    /// `cluster-enabled`: run as a node of a cluster (slots, the bus, CLUSTER commands).
    pub cluster_enabled: bool,
    /// The cluster bus's TCP port; 0: the client port + 10000 (as Redis).
    pub cluster_port: u16,
    /// The Prometheus endpoint's TCP port (GET /metrics) on the first bind address; 0: off.
    pub metrics_port: u16,
    /// TLS: the port clients connect to with TLS (0: none), beside the plaintext `port`;
    /// the server's certificate chain and key (PEM), the CA that client certificates must
    /// chain to, whether clients must present one, and the protocol versions allowed.
    pub tls_port: u16,
    pub tls_cert_file: String,
    pub tls_key_file: String,
    pub tls_ca_cert_file: String,
    pub tls_auth_clients: TlsAuthClients,
    pub tls_protocols: String,
    /// Node-to-node TLS: the cluster bus and forwarded commands (`tls_cluster`), and this
    /// node's link to its primary (`tls_replication`) go over TLS, checked against
    /// `tls_ca_cert_file`; the node shows `tls_client_cert_file` and `tls_client_key_file`
    /// to its peers (empty: the server certificate and key).
    pub tls_cluster: bool,
    pub tls_replication: bool,
    pub tls_client_cert_file: String,
    pub tls_client_key_file: String,
    /// Where the node keeps its cluster configuration, in `dir`.
    pub cluster_config_file: String,
    /// Nodes to join through at start: `host:port` (client port; the bus is port + 10000)
    /// or `host:port@busport`.
    pub cluster_seeds: Vec<String>,
    pub cluster_routing: ClusterRouting,
    /// The IP other nodes and clients are told to reach this node at; unset: the bind
    /// address, or (bound to a wildcard) the address peers reach it at.
    pub cluster_announce_ip: Option<String>,
    /// The CPU the control core is pinned to; None: it shares the data cores' CPUs.
    pub control_cpu: Option<usize>,
    /// Membership: ms between probes, ms a suspicion (pdead) lasts before a node is dead,
    /// and the phi-accrual detector's threshold, window (samples) and least deviation (ms).
    pub cluster_probe_interval_ms: u64,
    pub cluster_suspect_timeout_ms: u64,
    pub cluster_phi_threshold: f64,
    pub cluster_phi_window: usize,
    pub cluster_phi_min_std_ms: f64,
}

/// What a node does with a key another node owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterRouting {
    /// Runs the command on the owner and relays the reply: plain clients just work.
    Forward,
    /// Answers `-MOVED slot host:port`, as Redis Cluster (for cluster-aware clients).
    Redirect,
}

impl Config {
    /// The membership protocol's settings.
    pub fn membership(&self) -> crate::cluster::membership::Config {
        let d = crate::cluster::membership::Config::default();
        crate::cluster::membership::Config {
            probe_interval_ms: self.cluster_probe_interval_ms,
            suspect_timeout_ms: self.cluster_suspect_timeout_ms,
            phi: crate::cluster::phi::PhiConfig {
                threshold: self.cluster_phi_threshold,
                window: self.cluster_phi_window,
                min_std_dev_ms: self.cluster_phi_min_std_ms,
                ..d.phi
            },
            ..d
        }
    }

    /// The cluster bus port.
    pub fn bus_port(&self) -> u16 {
        match self.cluster_port {
            0 => self.port.wrapping_add(10_000),
            p => p,
        }
    }
}

/// When the append-only file is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendFsync {
    /// Before a write is acknowledged (one fsync for all the writes waiting: group commit).
    Always,
    /// Once a second.
    Everysec,
    /// When the kernel decides.
    No,
}

impl AppendFsync {
    pub fn as_str(self) -> &'static str {
        match self {
            AppendFsync::Always => "always",
            AppendFsync::Everysec => "everysec",
            AppendFsync::No => "no",
        }
    }
}

/// One `save <seconds> <changes>` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaveRule {
    pub seconds: u64,
    pub changes: u64,
}

/// Redis 7's default rules: after an hour with 1 change, 5 minutes with 100, a minute
/// with 10000.
pub const SAVE_RULES_DEFAULT: [SaveRule; 3] = [
    SaveRule {
        seconds: 3600,
        changes: 1,
    },
    SaveRule {
        seconds: 300,
        changes: 100,
    },
    SaveRule {
        seconds: 60,
        changes: 10_000,
    },
];

/// Parses `save`'s value: pairs of positive numbers, or nothing.
pub fn parse_save_rules(v: &str) -> Result<Vec<SaveRule>, String> {
    let words: Vec<&str> = v.split_whitespace().collect();
    if words.len() % 2 != 0 {
        return Err("Invalid save parameters".into());
    }
    words
        .chunks(2)
        .map(
            |pair| match (pair[0].parse::<u64>(), pair[1].parse::<u64>()) {
                (Ok(seconds), Ok(changes)) if seconds > 0 && changes > 0 => {
                    Ok(SaveRule { seconds, changes })
                }
                _ => Err("Invalid save parameters".into()),
            },
        )
        .collect()
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: vec!["127.0.0.1".into()],
            port: 6379,
            requirepass: None,
            aclfile: String::new(),
            acllog_max_len: limits::ACL_LOG_MAX_LEN_DEFAULT,
            maxclients: limits::MAXCLIENTS_DEFAULT,
            databases: limits::DATABASES_DEFAULT,
            dir: PathBuf::from("."),
            dbfilename: limits::DBFILENAME_DEFAULT.into(),
            proto_max_bulk_len: limits::PROTO_MAX_BULK_LEN_BYTES,
            proto_max_multibulk_len: limits::PROTO_MAX_MULTIBULK_LEN,
            client_query_buffer_limit: limits::CLIENT_QUERY_BUFFER_LIMIT_BYTES,
            enable_debug_command: false,
            cores: available_cpus().len().clamp(1, limits::MAX_DATA_CORES),
            cpus: Vec::new(),
            loglevel: "notice".into(),
            log_json: false,
            maxmemory: 0,
            maxmemory_policy: Policy::NoEviction,
            maxmemory_samples: 5,
            lfu_log_factor: 10,
            lfu_decay_time: 1,
            hz: limits::HZ_DEFAULT,
            slowlog_log_slower_than: limits::SLOWLOG_SLOWER_THAN_US_DEFAULT,
            slowlog_max_len: limits::SLOWLOG_MAX_LEN_DEFAULT,
            latency_monitor_threshold: 0,
            wal_ring_entries: tessera_shards::wal::WAL_MAX_ENTRIES_DEFAULT,
            wal_ring_bytes: tessera_shards::wal::WAL_MAX_BYTES_DEFAULT,
            wal_ring_keep: false,
            save: SAVE_RULES_DEFAULT.to_vec(),
            rdb_key_save_delay: 0,
            replicaof: None,
            masterauth: None,
            replica_announce_ip: None,
            repl_timeout: 60,
            min_replicas_to_write: 0,
            min_replicas_max_lag: 10,
            repl_ack_replicas: 0,
            repl_ack_timeout: 5000,
            repl_max_lag_entries: 100_000,
            repl_max_lag_ms: 10_000,
            cluster_failover_delay_ms: 100,
            cluster_allow_replica_migration: true,
            cluster_require_full_coverage: true,
            cluster_migration_barrier: 1,
            save_cpu_percent: limits::SAVE_CPU_PERCENT_DEFAULT,
            appendonly: false,
            appendfsync: AppendFsync::Everysec,
            aof_load_truncated: false,
            auto_aof_rewrite_percentage: 100,
            auto_aof_rewrite_min_size: 64 << 20,
            cluster_enabled: false,
            cluster_port: 0,
            metrics_port: 0,
            tls_port: 0,
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            tls_ca_cert_file: String::new(),
            tls_auth_clients: TlsAuthClients::Yes,
            tls_protocols: String::new(),
            tls_cluster: false,
            tls_replication: false,
            tls_client_cert_file: String::new(),
            tls_client_key_file: String::new(),
            cluster_config_file: "nodes.conf".into(),
            cluster_seeds: Vec::new(),
            cluster_routing: ClusterRouting::Forward,
            cluster_announce_ip: None,
            control_cpu: None,
            cluster_probe_interval_ms: 200,
            cluster_suspect_timeout_ms: 2000,
            cluster_phi_threshold: 8.0,
            cluster_phi_window: 100,
            cluster_phi_min_std_ms: 10.0,
        }
    }
}

/// The CPUs this process may run on.
pub fn available_cpus() -> Vec<usize> {
    core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|c| c.id).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| vec![0])
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("{file}:{line}: {msg}\n>>> '{text}'")]
    File {
        file: String,
        line: usize,
        text: String,
        msg: String,
    },
    #[error("cannot read config file {file}: {msg}")]
    Read { file: String, msg: String },
    #[error("--{name}: {msg}")]
    Flag { name: String, msg: String },
}

/// `tessera [CONFIG_FILE] [--flag value]…` — a Redis-protocol key-value server,
/// thread-per-core on io_uring.
#[derive(Parser, Debug, Default)]
#[command(name = "tessera", version, about, long_about = None)]
pub struct Cli {
    /// A config file in redis.conf syntax (`port 6380`, `bind 0.0.0.0`, …). Flags override it.
    pub config_file: Option<PathBuf>,
    /// TCP port to listen on [default: 6379].
    #[arg(long)]
    pub port: Option<u16>,
    /// Addresses to listen on, space- or comma-separated [default: 127.0.0.1].
    #[arg(long)]
    pub bind: Option<String>,
    /// Password clients must give with AUTH or HELLO before other commands.
    #[arg(long)]
    pub requirepass: Option<String>,
    /// Most connected clients at once; further connections get an error and are closed
    /// [default: 10000].
    #[arg(long)]
    pub maxclients: Option<usize>,
    /// Number of databases (SELECT 0..N-1) [default: 16].
    #[arg(long)]
    pub databases: Option<usize>,
    /// Working directory for files the server writes [default: .].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Longest bulk string a client may send, e.g. 512mb [default: 512mb].
    #[arg(long)]
    pub proto_max_bulk_len: Option<String>,
    /// Most arguments in one command [default: 16777216].
    #[arg(long)]
    pub proto_max_multibulk_len: Option<String>,
    /// Most bytes of one incomplete command buffered per client, e.g. 1gb [default: 1gb].
    #[arg(long)]
    pub client_query_buffer_limit: Option<String>,
    /// yes: allow DEBUG (tessera's test hooks, e.g. DEBUG ADVANCE-CLOCK) [default: no].
    #[arg(long)]
    pub enable_debug_command: Option<String>,
    /// Data cores, one pinned io_uring executor each [default: the CPUs this process may use].
    #[arg(long)]
    pub cores: Option<usize>,
    /// CPUs to pin data cores to, e.g. `1` or `0-3,8`; without it cores are not pinned.
    #[arg(long)]
    pub cpus: Option<String>,
    /// Log level: debug, verbose, notice or warning [default: notice].
    #[arg(long)]
    pub loglevel: Option<String>,
    /// Log lines as plain text or one JSON object each: plain or json [default: plain].
    #[arg(long)]
    pub log_format: Option<String>,
    /// Memory limit for the dataset, e.g. 100mb; 0 for none [default: 0].
    #[arg(long)]
    pub maxmemory: Option<String>,
    /// What to evict at the limit: noeviction, allkeys-lru, allkeys-lfu, allkeys-random,
    /// allkeys-fifo, volatile-lru, volatile-lfu, volatile-random, volatile-ttl,
    /// volatile-fifo [default: noeviction].
    #[arg(long)]
    pub maxmemory_policy: Option<String>,
    /// Background save rules, "<seconds> <changes> ..."; "" for none
    /// [default: "3600 1 300 100 60 10000"].
    #[arg(long, allow_hyphen_values = true)]
    pub save: Option<String>,
    /// The snapshot's file name in --dir [default: dump.tsnap].
    #[arg(long)]
    pub dbfilename: Option<String>,
    /// yes: log every change to --dir/appendonlydir and load it at start [default: no].
    #[arg(long)]
    pub appendonly: Option<String>,
    /// When the append-only file is fsynced: always, everysec or no [default: everysec].
    #[arg(long)]
    pub appendfsync: Option<String>,
    /// yes: load an append-only file damaged before its end up to the damage [default: no].
    #[arg(long)]
    pub aof_load_truncated: Option<String>,
    /// Follow a primary from the start: "host port" [default: none, a primary].
    #[arg(long)]
    pub replicaof: Option<String>,
    /// yes: run as a cluster node (slots, the cluster bus, CLUSTER commands) [default: no].
    #[arg(long)]
    pub cluster_enabled: Option<String>,
    /// The cluster bus port [default: the client port + 10000].
    #[arg(long)]
    pub cluster_port: Option<u16>,
    /// Serve Prometheus metrics (HTTP GET /metrics) on this port of the first bind address
    /// [default: 0, off].
    #[arg(long)]
    pub metrics_port: Option<u16>,
    /// ACL users: loaded from this file at start, written by ACL SAVE.
    #[arg(long)]
    pub aclfile: Option<String>,
    /// Accept TLS clients on this port, beside the plaintext port [default: 0, none].
    #[arg(long)]
    pub tls_port: Option<u16>,
    /// The server's certificate chain, PEM.
    #[arg(long)]
    pub tls_cert_file: Option<String>,
    /// The server's private key, PEM.
    #[arg(long)]
    pub tls_key_file: Option<String>,
    /// CA certificates (PEM) that client certificates must chain to.
    #[arg(long)]
    pub tls_ca_cert_file: Option<String>,
    /// Client certificates: yes (required), no, or optional [default: yes].
    #[arg(long)]
    pub tls_auth_clients: Option<String>,
    /// TLS versions to allow, e.g. "TLSv1.2 TLSv1.3" [default: both].
    #[arg(long)]
    pub tls_protocols: Option<String>,
    /// The cluster bus and forwarded commands over TLS: yes or no [default: no].
    #[arg(long)]
    pub tls_cluster: Option<String>,
    /// The link to the primary over TLS: yes or no [default: no].
    #[arg(long)]
    pub tls_replication: Option<String>,
    /// The certificate chain (PEM) this node shows as a TLS client of its peers
    /// [default: tls-cert-file].
    #[arg(long)]
    pub tls_client_cert_file: Option<String>,
    /// The private key (PEM) for tls-client-cert-file [default: tls-key-file].
    #[arg(long)]
    pub tls_client_key_file: Option<String>,
    /// Nodes to join through at start, comma-separated host:port (client ports) or
    /// host:port@busport.
    #[arg(long)]
    pub cluster_seeds: Option<String>,
    /// For keys another node owns: forward (run there, relay the reply) or redirect
    /// (answer -MOVED) [default: forward].
    #[arg(long)]
    pub cluster_routing: Option<String>,
    /// The IP announced to other nodes and clients [default: the bind address].
    #[arg(long)]
    pub cluster_announce_ip: Option<String>,
    /// The cluster configuration file in --dir [default: nodes.conf].
    #[arg(long)]
    pub cluster_config_file: Option<String>,
    /// The CPU for the control core (gossip, the cluster map), or `shared` to run it
    /// alongside the data cores [default: shared].
    #[arg(long)]
    pub control_cpu: Option<String>,
    /// ms between membership probes [default: 200].
    #[arg(long)]
    pub cluster_probe_interval_ms: Option<u64>,
    /// ms a suspected (pdead) node has to answer before it is declared dead [default: 2000].
    #[arg(long)]
    pub cluster_suspect_timeout_ms: Option<u64>,
    /// The phi-accrual detector's suspicion threshold [default: 8].
    #[arg(long)]
    pub cluster_phi_threshold: Option<f64>,
}

/// Parses a memory amount the way Redis's `memtoll` does: `1k` is 1000, `1kb` 1024, and so
/// on for m/mb and g/gb.
pub fn parse_memory(s: &str) -> Option<usize> {
    let lower = s.trim().to_ascii_lowercase();
    let (num, mult) = [
        ("gb", 1usize << 30),
        ("mb", 1 << 20),
        ("kb", 1 << 10),
        ("g", 1_000_000_000),
        ("m", 1_000_000),
        ("k", 1_000),
        ("b", 1),
    ]
    .iter()
    .find_map(|(suffix, m)| lower.strip_suffix(suffix).map(|n| (n.to_string(), *m)))
    .unwrap_or((lower.clone(), 1));
    num.parse::<usize>().ok()?.checked_mul(mult)
}

fn parse_yes_no(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

/// Parses a CPU list such as `1`, `0-3,8`.
pub fn parse_cpu_list(s: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if a > b {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    (!out.is_empty()).then_some(out)
}

/// A seed's client and bus addresses, from `host:port` (bus: port + 10000) or
/// `host:port@busport`. The host is resolved when the node starts, not here.
/// `tls-auth-clients`: whether a TLS client must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsAuthClients {
    Yes,
    No,
    Optional,
}

impl TlsAuthClients {
    pub fn name(self) -> &'static str {
        match self {
            TlsAuthClients::Yes => "yes",
            TlsAuthClients::No => "no",
            TlsAuthClients::Optional => "optional",
        }
    }
}

pub fn parse_seed(seed: &str) -> Result<(String, u16, u16), String> {
    let bad_seed = || format!("a seed must be host:port or host:port@busport, not '{seed}'");
    let (hostport, bus) = match seed.split_once('@') {
        Some((hp, b)) => (hp, Some(b.parse::<u16>().map_err(|_| bad_seed())?)),
        None => (seed, None),
    };
    let (host, port) = hostport.rsplit_once(':').ok_or_else(bad_seed)?;
    let port: u16 = port.parse().map_err(|_| bad_seed())?;
    if host.is_empty() || port == 0 {
        return Err(bad_seed());
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((
        host.to_string(),
        port,
        bus.unwrap_or(port.wrapping_add(10_000)),
    ))
}

/// A parameter as CONFIG GET/SET and the config file see it.
pub struct Param {
    pub name: &'static str,
    pub get: fn(&Config) -> String,
    pub set: fn(&mut Config, &str) -> Result<(), String>,
    /// May CONFIG SET change it while running?
    pub mutable: bool,
}

fn bad(what: &str) -> String {
    format!("argument must be {what}")
}

/// Redis's wording for a number outside a parameter's range.
fn out_of_range(min: usize, max: u64) -> String {
    format!("argument must be between {min} and {max} inclusive")
}

fn set_memory(v: &str, min: usize) -> Result<usize, String> {
    match parse_memory(v) {
        Some(n) if n >= min => Ok(n),
        Some(_) => Err(out_of_range(min, i64::MAX as u64)),
        None => Err(bad("a memory value")),
    }
}

fn set_int(v: &str, min: usize, max: u64) -> Result<usize, String> {
    match v.parse::<i64>() {
        Ok(n) if n >= min as i64 && n as u64 <= max => Ok(n as usize),
        Ok(_) => Err(out_of_range(min, max)),
        Err(_) => Err("argument couldn't be parsed into an integer".into()),
    }
}

pub static PARAMS: &[Param] = &[
    Param {
        name: "bind",
        get: |c| c.bind.join(" "),
        set: |c, v| {
            let addrs: Vec<String> = v
                .split([' ', ','])
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            if addrs.is_empty() {
                return Err(bad("one or more addresses"));
            }
            c.bind = addrs;
            Ok(())
        },
        mutable: false,
    },
    Param {
        name: "port",
        get: |c| c.port.to_string(),
        set: |c, v| {
            c.port = v.parse().map_err(|_| bad("a port number"))?;
            Ok(())
        },
        mutable: false,
    },
    Param {
        name: "aclfile",
        get: |c| c.aclfile.clone(),
        set: |c, v| {
            c.aclfile = v.to_string();
            Ok(())
        },
        mutable: false,
    },
    Param {
        name: "acllog-max-len",
        get: |c| c.acllog_max_len.to_string(),
        set: |c, v| {
            c.acllog_max_len = set_int(v, 0, i32::MAX as u64)?;
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "requirepass",
        get: |c| c.requirepass.clone().unwrap_or_default(),
        set: |c, v| {
            c.requirepass = (!v.is_empty()).then(|| v.to_string());
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "maxclients",
        get: |c| c.maxclients.to_string(),
        set: |c, v| {
            c.maxclients = set_int(v, 1, u32::MAX as u64)?;
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "databases",
        get: |c| c.databases.to_string(),
        set: |c, v| {
            match v.parse::<usize>() {
                Ok(n) if (1..=limits::MAX_DATABASES).contains(&n) => c.databases = n,
                _ => {
                    return Err(format!(
                        "argument must be between 1 and {}",
                        limits::MAX_DATABASES
                    ))
                }
            }
            Ok(())
        },
        mutable: false,
    },
    Param {
        name: "dir",
        get: |c| c.dir.display().to_string(),
        set: |c, v| {
            c.dir = PathBuf::from(v);
            Ok(())
        },
        mutable: false,
    },
    Param {
        name: "dbfilename",
        get: |c| c.dbfilename.clone(),
        set: |c, v| {
            if v.is_empty() || v.contains('/') {
                return Err("dbfilename can't be a path, just a filename".into());
            }
            c.dbfilename = v.to_string();
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "proto-max-bulk-len",
        get: |c| c.proto_max_bulk_len.to_string(),
        set: |c, v| {
            c.proto_max_bulk_len = set_memory(v, 1024 * 1024)?;
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "proto-max-multibulk-len",
        get: |c| c.proto_max_multibulk_len.to_string(),
        set: |c, v| {
            c.proto_max_multibulk_len = set_memory(v, 1024)?;
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "client-query-buffer-limit",
        get: |c| c.client_query_buffer_limit.to_string(),
        set: |c, v| {
            c.client_query_buffer_limit = set_memory(v, 1024 * 1024)?;
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "enable-debug-command",
        get: |c| if c.enable_debug_command { "yes" } else { "no" }.into(),
        set: |c, v| {
            c.enable_debug_command = parse_yes_no(v).ok_or_else(|| bad("yes or no"))?;
            Ok(())
        },
        mutable: false,
    },
    Param {
        name: "cores",
        get: |c| c.cores.to_string(),
        set: |c, v| {
            match v.parse::<usize>() {
                Ok(n) if (1..=limits::MAX_DATA_CORES).contains(&n) => c.cores = n,
                _ => {
                    return Err(format!(
                        "argument must be between 1 and {}",
                        limits::MAX_DATA_CORES
                    ))
                }
            }
            Ok(())
        },
        mutable: false,
    },
    Param {
        name: "cpus",
        get: |c| {
            c.cpus
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(",")
        },
        set: |c, v| {
            c.cpus = parse_cpu_list(v).ok_or_else(|| bad("a CPU list such as 0-3,8"))?;
            Ok(())
        },
        mutable: false,
    },
    Param {
        name: "loglevel",
        get: |c| c.loglevel.clone(),
        set: |c, v| {
            let v = v.to_ascii_lowercase();
            if !["debug", "verbose", "notice", "warning"].contains(&v.as_str()) {
                return Err(bad("one of debug, verbose, notice, warning"));
            }
            c.loglevel = v;
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "log-format",
        get: |c| if c.log_json { "json" } else { "plain" }.into(),
        set: |c, v| {
            c.log_json = match v.to_ascii_lowercase().as_str() {
                "plain" => false,
                "json" => true,
                _ => return Err(bad("plain or json")),
            };
            Ok(())
        },
        mutable: false,
    },
    Param {
        name: "maxmemory",
        get: |c| c.maxmemory.to_string(),
        set: |c, v| {
            c.maxmemory = set_memory(v, 0)?;
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "maxmemory-policy",
        get: |c| c.maxmemory_policy.name().into(),
        set: |c, v| {
            c.maxmemory_policy = Policy::parse(v).ok_or_else(|| {
                format!(
                    "argument(s) must be one of the following: {}",
                    Policy::names().collect::<Vec<_>>().join(", ")
                )
            })?;
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "maxmemory-samples",
        get: |c| c.maxmemory_samples.to_string(),
        set: |c, v| {
            c.maxmemory_samples = set_int(v, 1, limits::MAXMEMORY_SAMPLES_MAX as u64)?;
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "lfu-log-factor",
        get: |c| c.lfu_log_factor.to_string(),
        set: |c, v| {
            c.lfu_log_factor = set_int(v, 0, i32::MAX as u64)? as u32;
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "lfu-decay-time",
        get: |c| c.lfu_decay_time.to_string(),
        set: |c, v| {
            c.lfu_decay_time = set_int(v, 0, i32::MAX as u64)? as u32;
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "wal-ring-entries",
        get: |c| c.wal_ring_entries.to_string(),
        set: |c, v| {
            c.wal_ring_entries = set_int(v, 1, i64::MAX as u64)?;
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "wal-ring-bytes",
        get: |c| c.wal_ring_bytes.to_string(),
        set: |c, v| {
            c.wal_ring_bytes = set_memory(v, 1024)?;
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "save",
        get: |c| {
            c.save
                .iter()
                .map(|r| format!("{} {}", r.seconds, r.changes))
                .collect::<Vec<_>>()
                .join(" ")
        },
        set: |c, v| {
            let v = v.trim_matches('"');
            c.save = parse_save_rules(v)?;
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "appendonly",
        get: |c| if c.appendonly { "yes" } else { "no" }.into(),
        set: |c, v| {
            c.appendonly = parse_yes_no(v).ok_or_else(|| bad("yes or no"))?;
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "appendfsync",
        get: |c| c.appendfsync.as_str().into(),
        set: |c, v| {
            c.appendfsync = match v.to_ascii_lowercase().as_str() {
                "always" => AppendFsync::Always,
                "everysec" => AppendFsync::Everysec,
                "no" => AppendFsync::No,
                _ => {
                    return Err(
                        "argument(s) must be one of the following: always, everysec, no".into(),
                    )
                }
            };
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "aof-load-truncated",
        get: |c| if c.aof_load_truncated { "yes" } else { "no" }.into(),
        set: |c, v| {
            c.aof_load_truncated = parse_yes_no(v).ok_or_else(|| bad("yes or no"))?;
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "auto-aof-rewrite-percentage",
        get: |c| c.auto_aof_rewrite_percentage.to_string(),
        set: |c, v| {
            c.auto_aof_rewrite_percentage = set_int(v, 0, i32::MAX as u64)?;
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "auto-aof-rewrite-min-size",
        get: |c| c.auto_aof_rewrite_min_size.to_string(),
        set: |c, v| {
            c.auto_aof_rewrite_min_size = set_memory(v, 0)?;
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "save-cpu-percent",
        get: |c| c.save_cpu_percent.to_string(),
        set: |c, v| {
            c.save_cpu_percent = set_int(v, 1, 100)?;
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "rdb-key-save-delay",
        get: |c| c.rdb_key_save_delay.to_string(),
        set: |c, v| {
            c.rdb_key_save_delay = set_int(v, 0, 10_000_000)? as u64;
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "replicaof",
        get: |c| {
            c.replicaof
                .as_ref()
                .map_or(String::new(), |(h, p)| format!("{h} {p}"))
        },
        set: |c, v| {
            let words: Vec<&str> = v.split_whitespace().collect();
            c.replicaof = match words[..] {
                [] => None,
                [host, port] => match port.parse::<u16>() {
                    Ok(p) if p > 0 => Some((host.to_string(), p)),
                    _ => return Err(bad("a host and a port")),
                },
                _ => return Err(bad("a host and a port")),
            };
            Ok(())
        },
        mutable: false,
    },
    Param {
        name: "masterauth",
        get: |c| c.masterauth.clone().unwrap_or_default(),
        set: |c, v| {
            c.masterauth = (!v.is_empty()).then(|| v.to_string());
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "replica-announce-ip",
        get: |c| c.replica_announce_ip.clone().unwrap_or_default(),
        set: |c, v| {
            c.replica_announce_ip = (!v.is_empty()).then(|| v.to_string());
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "repl-timeout",
        get: |c| c.repl_timeout.to_string(),
        set: |c, v| {
            c.repl_timeout = set_int(v, 1, 86_400)? as u64;
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "min-replicas-to-write",
        get: |c| c.min_replicas_to_write.to_string(),
        set: |c, v| {
            c.min_replicas_to_write = set_int(v, 0, crate::limits::REPL_MAX_REPLICAS as u64)?;
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "min-replicas-max-lag",
        get: |c| c.min_replicas_max_lag.to_string(),
        set: |c, v| {
            c.min_replicas_max_lag = set_int(v, 0, 86_400)? as u64;
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "repl-ack-replicas",
        get: |c| c.repl_ack_replicas.to_string(),
        set: |c, v| {
            c.repl_ack_replicas = set_int(v, 0, crate::limits::REPL_MAX_REPLICAS as u64)?;
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "repl-ack-timeout",
        get: |c| c.repl_ack_timeout.to_string(),
        set: |c, v| {
            c.repl_ack_timeout = set_int(v, 0, 86_400_000)? as u64;
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "repl-max-lag-entries",
        get: |c| c.repl_max_lag_entries.to_string(),
        set: |c, v| {
            c.repl_max_lag_entries = set_int(v, 0, i64::MAX as u64)? as u64;
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "repl-max-lag-ms",
        get: |c| c.repl_max_lag_ms.to_string(),
        set: |c, v| {
            c.repl_max_lag_ms = set_int(v, 0, 86_400_000)? as u64;
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "cluster-failover-delay-ms",
        get: |c| c.cluster_failover_delay_ms.to_string(),
        set: |c, v| {
            c.cluster_failover_delay_ms = set_int(v, 0, 60_000)? as u64;
            Ok(())
        },
        mutable: false,
    },
    Param {
        name: "cluster-allow-replica-migration",
        get: |c| {
            if c.cluster_allow_replica_migration {
                "yes"
            } else {
                "no"
            }
            .into()
        },
        set: |c, v| {
            c.cluster_allow_replica_migration = parse_yes_no(v).ok_or_else(|| bad("yes or no"))?;
            Ok(())
        },
        mutable: false,
    },
    Param {
        name: "cluster-require-full-coverage",
        get: |c| {
            if c.cluster_require_full_coverage {
                "yes"
            } else {
                "no"
            }
            .into()
        },
        set: |c, v| {
            c.cluster_require_full_coverage = parse_yes_no(v).ok_or_else(|| bad("yes or no"))?;
            Ok(())
        },
        mutable: false,
    },
    Param {
        name: "cluster-migration-barrier",
        get: |c| c.cluster_migration_barrier.to_string(),
        set: |c, v| {
            c.cluster_migration_barrier = set_int(v, 0, 1000)?;
            Ok(())
        },
        mutable: false,
    },
    Param {
        name: "wal-ring-keep",
        get: |c| if c.wal_ring_keep { "yes" } else { "no" }.into(),
        set: |c, v| {
            c.wal_ring_keep = parse_yes_no(v).ok_or_else(|| bad("yes or no"))?;
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "slowlog-log-slower-than",
        get: |c| c.slowlog_log_slower_than.to_string(),
        set: |c, v| {
            c.slowlog_log_slower_than = v
                .parse::<i64>()
                .map_err(|_| "argument couldn't be parsed into an integer".to_string())?;
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "slowlog-max-len",
        get: |c| c.slowlog_max_len.to_string(),
        set: |c, v| {
            c.slowlog_max_len = set_int(v, 0, limits::SLOWLOG_MAX_LEN_MAX as u64)?;
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "latency-monitor-threshold",
        get: |c| c.latency_monitor_threshold.to_string(),
        set: |c, v| {
            c.latency_monitor_threshold = set_int(v, 0, i64::MAX as u64)? as u64;
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "hz",
        get: |c| c.hz.to_string(),
        set: |c, v| {
            // Redis accepts any positive number and clamps it to 1..=500.
            c.hz = set_int(v, 0, i32::MAX as u64)?.clamp(1, limits::HZ_MAX);
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "cluster-enabled",
        get: |c| if c.cluster_enabled { "yes" } else { "no" }.into(),
        set: |c, v| {
            c.cluster_enabled = parse_yes_no(v).ok_or_else(|| bad("yes or no"))?;
            Ok(())
        },
        mutable: false,
    },
    Param {
        name: "cluster-port",
        get: |c| c.cluster_port.to_string(),
        set: |c, v| {
            c.cluster_port = v.parse().map_err(|_| bad("a port number"))?;
            Ok(())
        },
        mutable: false,
    },
    Param {
        name: "tls-port",
        get: |c| c.tls_port.to_string(),
        set: |c, v| {
            c.tls_port = v.parse().map_err(|_| bad("a port number"))?;
            Ok(())
        },
        mutable: false,
    },
    Param {
        name: "tls-cert-file",
        get: |c| c.tls_cert_file.clone(),
        set: |c, v| {
            c.tls_cert_file = v.to_string();
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "tls-key-file",
        get: |c| c.tls_key_file.clone(),
        set: |c, v| {
            c.tls_key_file = v.to_string();
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "tls-ca-cert-file",
        get: |c| c.tls_ca_cert_file.clone(),
        set: |c, v| {
            c.tls_ca_cert_file = v.to_string();
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "tls-auth-clients",
        get: |c| c.tls_auth_clients.name().into(),
        set: |c, v| {
            c.tls_auth_clients = match v.to_ascii_lowercase().as_str() {
                "yes" => TlsAuthClients::Yes,
                "no" => TlsAuthClients::No,
                "optional" => TlsAuthClients::Optional,
                _ => return Err(bad("yes, no or optional")),
            };
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "tls-protocols",
        get: |c| c.tls_protocols.clone(),
        set: |c, v| {
            for p in v.split_whitespace() {
                if !p.eq_ignore_ascii_case("TLSv1.2") && !p.eq_ignore_ascii_case("TLSv1.3") {
                    return Err(bad("TLSv1.2 and/or TLSv1.3"));
                }
            }
            c.tls_protocols = v.to_string();
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "tls-cluster",
        get: |c| if c.tls_cluster { "yes" } else { "no" }.into(),
        set: |c, v| {
            c.tls_cluster = parse_yes_no(v).ok_or_else(|| bad("yes or no"))?;
            Ok(())
        },
        mutable: false,
    },
    Param {
        name: "tls-replication",
        get: |c| if c.tls_replication { "yes" } else { "no" }.into(),
        set: |c, v| {
            c.tls_replication = parse_yes_no(v).ok_or_else(|| bad("yes or no"))?;
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "tls-client-cert-file",
        get: |c| c.tls_client_cert_file.clone(),
        set: |c, v| {
            c.tls_client_cert_file = v.to_string();
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "tls-client-key-file",
        get: |c| c.tls_client_key_file.clone(),
        set: |c, v| {
            c.tls_client_key_file = v.to_string();
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "metrics-port",
        get: |c| c.metrics_port.to_string(),
        set: |c, v| {
            c.metrics_port = v.parse().map_err(|_| bad("a port number"))?;
            Ok(())
        },
        mutable: false,
    },
    Param {
        name: "cluster-config-file",
        get: |c| c.cluster_config_file.clone(),
        set: |c, v| {
            if v.is_empty() || v.contains('/') {
                return Err("cluster-config-file can't be a path, just a filename".into());
            }
            c.cluster_config_file = v.to_string();
            Ok(())
        },
        mutable: false,
    },
    Param {
        name: "cluster-seeds",
        get: |c| c.cluster_seeds.join(","),
        set: |c, v| {
            let seeds: Vec<String> = v
                .split([' ', ','])
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            for seed in &seeds {
                parse_seed(seed)?;
            }
            c.cluster_seeds = seeds;
            Ok(())
        },
        mutable: false,
    },
    Param {
        name: "cluster-routing",
        get: |c| match c.cluster_routing {
            ClusterRouting::Forward => "forward".into(),
            ClusterRouting::Redirect => "redirect".into(),
        },
        set: |c, v| {
            c.cluster_routing = match v.to_ascii_lowercase().as_str() {
                "forward" => ClusterRouting::Forward,
                "redirect" => ClusterRouting::Redirect,
                _ => return Err(bad("forward or redirect")),
            };
            Ok(())
        },
        mutable: true,
    },
    Param {
        name: "cluster-announce-ip",
        get: |c| c.cluster_announce_ip.clone().unwrap_or_default(),
        set: |c, v| {
            if v.is_empty() {
                c.cluster_announce_ip = None;
                return Ok(());
            }
            v.parse::<std::net::IpAddr>()
                .map_err(|_| bad("an IP address"))?;
            c.cluster_announce_ip = Some(v.to_string());
            Ok(())
        },
        mutable: false,
    },
    Param {
        name: "control-cpu",
        get: |c| c.control_cpu.map_or("shared".into(), |n| n.to_string()),
        set: |c, v| {
            c.control_cpu = match v {
                "shared" => None,
                n => Some(n.parse().map_err(|_| bad("a CPU number or shared"))?),
            };
            Ok(())
        },
        mutable: false,
    },
    Param {
        name: "cluster-probe-interval-ms",
        get: |c| c.cluster_probe_interval_ms.to_string(),
        set: |c, v| {
            c.cluster_probe_interval_ms = set_int(v, 10, 60_000)? as u64;
            Ok(())
        },
        mutable: false,
    },
    Param {
        name: "cluster-suspect-timeout-ms",
        get: |c| c.cluster_suspect_timeout_ms.to_string(),
        set: |c, v| {
            c.cluster_suspect_timeout_ms = set_int(v, 10, 3_600_000)? as u64;
            Ok(())
        },
        mutable: false,
    },
    Param {
        name: "cluster-phi-threshold",
        get: |c| c.cluster_phi_threshold.to_string(),
        set: |c, v| {
            match v.parse::<f64>() {
                Ok(t) if (1.0..=50.0).contains(&t) => c.cluster_phi_threshold = t,
                _ => return Err("argument must be a number between 1 and 50".into()),
            }
            Ok(())
        },
        mutable: false,
    },
    Param {
        name: "cluster-phi-window",
        get: |c| c.cluster_phi_window.to_string(),
        set: |c, v| {
            c.cluster_phi_window = set_int(v, 2, 10_000)?;
            Ok(())
        },
        mutable: false,
    },
    Param {
        name: "cluster-phi-min-std-ms",
        get: |c| c.cluster_phi_min_std_ms.to_string(),
        set: |c, v| {
            match v.parse::<f64>() {
                Ok(t) if (0.1..=10_000.0).contains(&t) => c.cluster_phi_min_std_ms = t,
                _ => return Err("argument must be a number between 0.1 and 10000".into()),
            }
            Ok(())
        },
        mutable: false,
    },
];

pub fn param(name: &str) -> Option<&'static Param> {
    PARAMS.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}

/// Splits a config file line into words, honouring double and single quotes.
fn split_line(line: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut ranges = Vec::new();
    crate::resp::request::split_args(line.as_bytes(), &mut out, &mut ranges).ok()?;
    Some(
        ranges
            .into_iter()
            .map(|r| String::from_utf8_lossy(&out[r]).into_owned())
            .collect(),
    )
}

/// Applies a redis.conf-style text. An unknown directive is an error naming the line.
pub fn apply_file_text(cfg: &mut Config, file: &str, text: &str) -> Result<(), ConfigError> {
    let mut saw_save = false;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let err = |msg: String| ConfigError::File {
            file: file.into(),
            line: i + 1,
            text: trimmed.into(),
            msg,
        };
        let words = split_line(trimmed).ok_or_else(|| err("unbalanced quotes".into()))?;
        let name = words[0].to_ascii_lowercase();
        let p = param(&name).ok_or_else(|| {
            err(format!(
                "Bad directive or wrong number of arguments: unknown directive '{name}'"
            ))
        })?;
        if words.len() < 2 {
            return Err(err("wrong number of arguments".into()));
        }
        let mut value = words[1..].join(" ");
        if name == "save" {
            // As in redis.conf: the first `save` line replaces the defaults, later ones add.
            if saw_save {
                value = format!("{} {value}", (p.get)(cfg));
            }
            saw_save = true;
        }
        (p.set)(cfg, &value).map_err(err)?;
    }
    Ok(())
}

impl Cli {
    /// The configuration this command line asks for.
    pub fn into_config(self) -> Result<(Config, Option<PathBuf>), ConfigError> {
        let mut cfg = Config::default();
        if let Some(path) = &self.config_file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
                file: path.display().to_string(),
                msg: e.to_string(),
            })?;
            apply_file_text(&mut cfg, &path.display().to_string(), &text)?;
        }
        let flags: [(&str, Option<String>); 44] = [
            ("port", self.port.map(|v| v.to_string())),
            ("bind", self.bind),
            ("requirepass", self.requirepass),
            ("maxclients", self.maxclients.map(|v| v.to_string())),
            ("databases", self.databases.map(|v| v.to_string())),
            ("dir", self.dir.map(|d| d.display().to_string())),
            ("proto-max-bulk-len", self.proto_max_bulk_len),
            ("proto-max-multibulk-len", self.proto_max_multibulk_len),
            ("client-query-buffer-limit", self.client_query_buffer_limit),
            ("enable-debug-command", self.enable_debug_command),
            ("cores", self.cores.map(|v| v.to_string())),
            ("cpus", self.cpus),
            ("loglevel", self.loglevel),
            ("log-format", self.log_format),
            ("maxmemory", self.maxmemory),
            ("maxmemory-policy", self.maxmemory_policy),
            ("save", self.save),
            ("dbfilename", self.dbfilename),
            ("appendonly", self.appendonly),
            ("appendfsync", self.appendfsync),
            ("aof-load-truncated", self.aof_load_truncated),
            ("replicaof", self.replicaof),
            ("cluster-enabled", self.cluster_enabled),
            ("cluster-port", self.cluster_port.map(|v| v.to_string())),
            ("metrics-port", self.metrics_port.map(|v| v.to_string())),
            ("aclfile", self.aclfile),
            ("tls-port", self.tls_port.map(|v| v.to_string())),
            ("tls-cert-file", self.tls_cert_file),
            ("tls-key-file", self.tls_key_file),
            ("tls-ca-cert-file", self.tls_ca_cert_file),
            ("tls-auth-clients", self.tls_auth_clients),
            ("tls-protocols", self.tls_protocols),
            ("tls-cluster", self.tls_cluster),
            ("tls-replication", self.tls_replication),
            ("tls-client-cert-file", self.tls_client_cert_file),
            ("tls-client-key-file", self.tls_client_key_file),
            ("cluster-seeds", self.cluster_seeds),
            ("cluster-routing", self.cluster_routing),
            ("cluster-announce-ip", self.cluster_announce_ip),
            ("cluster-config-file", self.cluster_config_file),
            ("control-cpu", self.control_cpu),
            (
                "cluster-probe-interval-ms",
                self.cluster_probe_interval_ms.map(|v| v.to_string()),
            ),
            (
                "cluster-suspect-timeout-ms",
                self.cluster_suspect_timeout_ms.map(|v| v.to_string()),
            ),
            (
                "cluster-phi-threshold",
                self.cluster_phi_threshold.map(|v| v.to_string()),
            ),
        ];
        for (name, value) in flags {
            if let Some(v) = value {
                let p = param(name).expect("every flag is a parameter");
                (p.set)(&mut cfg, &v).map_err(|msg| ConfigError::Flag {
                    name: name.into(),
                    msg,
                })?;
            }
        }
        if cfg.cluster_enabled && cfg.replicaof.is_some() {
            return Err(ConfigError::Flag {
                name: "replicaof".into(),
                msg: "not in cluster mode: use CLUSTER REPLICATE <primary-id>".into(),
            });
        }
        if !cfg.cpus.is_empty() && cfg.cpus.len() < cfg.cores {
            // Pinning fewer CPUs than cores would put two executors on one CPU, which glommio
            // handles badly; run as many cores as CPUs were given.
            cfg.cores = cfg.cpus.len();
        }
        Ok((cfg, self.config_file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_units_as_redis() {
        assert_eq!(parse_memory("1k"), Some(1000));
        assert_eq!(parse_memory("1kb"), Some(1024));
        assert_eq!(parse_memory("512mb"), Some(512 << 20));
        assert_eq!(parse_memory("1GB"), Some(1 << 30));
        assert_eq!(parse_memory("123"), Some(123));
        assert_eq!(parse_memory("x"), None);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("1"), Some(vec![1]));
        assert_eq!(parse_cpu_list("0-3,8"), Some(vec![0, 1, 2, 3, 8]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list(""), None);
    }

    #[test]
    fn save_rules_as_redis() {
        assert_eq!(Config::default().save, SAVE_RULES_DEFAULT.to_vec());
        let get = |c: &Config| (param("save").unwrap().get)(c);
        assert_eq!(get(&Config::default()), "3600 1 300 100 60 10000");
        // In a file the first `save` line replaces the defaults and later ones add to it.
        let mut c = Config::default();
        apply_file_text(&mut c, "t.conf", "save 900 1\nsave 60 5\n").unwrap();
        assert_eq!(get(&c), "900 1 60 5");
        apply_file_text(&mut c, "t.conf", "save \"\"\n").unwrap();
        assert!(c.save.is_empty());
        for bad in ["1", "1 2 3", "0 5", "x 1", "5 -1"] {
            assert_eq!(
                parse_save_rules(bad),
                Err("Invalid save parameters".into()),
                "{bad}"
            );
        }
    }

    #[test]
    fn file_directives_and_errors() {
        let mut c = Config::default();
        apply_file_text(
            &mut c,
            "t.conf",
            "# comment\nport 7000\nbind 0.0.0.0 ::1\nrequirepass \"a b\"\n",
        )
        .unwrap();
        assert_eq!(c.port, 7000);
        assert_eq!(c.bind, vec!["0.0.0.0", "::1"]);
        assert_eq!(c.requirepass.as_deref(), Some("a b"));
        let e = apply_file_text(&mut c, "t.conf", "port 1\nfrobnicate yes\n").unwrap_err();
        assert!(e.to_string().starts_with("t.conf:2:"), "{e}");
        assert!(e.to_string().contains("frobnicate"));
    }
}
