//! The state one data core owns, and what the node's cores share.

use super::mesh::{Gate, Mesh};
use crate::cmd::ShardLimits;
use crate::config::Config;
use crate::limits;
use std::cell::{Cell, OnceCell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tessera_shards::evict::MemoryPolicy;
use tessera_shards::wal::WalLimits;
use tessera_shards::{ClientId, Shard};

/// What all cores of the node share: read-mostly facts and a few atomics that are touched
/// outside the data path (shutdown, the test clock).
pub struct NodeShared {
    pub started: Instant,
    pub started_unix_s: u64,
    pub run_id: String,
    pub config_file: Option<std::path::PathBuf>,
    pub executable: String,
    pub cpus: Vec<Option<usize>>,
    shutdown: AtomicBool,
    /// The shutdown was asked for by a signal (which saves when `save` rules are set).
    signalled: AtomicBool,
    /// Added to the wall clock; moved only by `DEBUG ADVANCE-CLOCK` in tests.
    clock_offset_ms: AtomicI64,
    next_client_id: AtomicU64,
    /// Unix time (s) of the last successful SAVE; the start time before one.
    last_save_unix_s: AtomicU64,
    /// Background saves: running, last outcome, counts (INFO persistence).
    pub saves: super::persist::SaveState,
    /// Each core's changes since the last save, published by its tick for the save rules.
    pub dirty: Vec<AtomicU64>,
    /// Append-only rewrites: running (per core), done, and the last one's outcome.
    pub aof_rewrites_running: AtomicUsize,
    pub aof_rewrites: AtomicU64,
    pub aof_last_rewrite_ok: AtomicBool,
    pub aof_last_rewrite_secs: AtomicI64,
    /// The control core's handle, when the node runs in a cluster (set once at start).
    pub cluster: std::sync::OnceLock<Arc<super::control::ClusterHandle>>,
    /// Replication: this node's id, its replicas (as a primary), its link (as a replica).
    pub repl: super::replication::Replication,
    /// Where /metrics scrapes collect the cores' samples.
    pub scrape: super::prometheus::Hub,
    /// The TLS server configuration new TLS connections get (None: no tls-port).
    pub tls: arc_swap::ArcSwapOption<rustls::ServerConfig>,
    /// The TLS client configuration this node dials its peers with (None: it dials them
    /// in plain TCP): set when `tls-cluster` or `tls-replication` is on.
    pub tls_client: arc_swap::ArcSwapOption<rustls::ClientConfig>,
    /// ACL users, swapped whole on each change; the generation moves with every swap so
    /// connections know to look their user up again.
    pub acl: arc_swap::ArcSwap<super::acl::Users>,
    pub acl_generation: AtomicU64,
    pub acl_log: std::sync::Mutex<super::acl::Log>,
    /// MONITOR clients.
    pub monitors: super::monitor::Monitors,
}

impl NodeShared {
    /// Replaces the ACL users; every connection looks its user up again.
    pub fn set_users(&self, users: super::acl::Users) {
        self.acl.store(Arc::new(users));
        self.acl_generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn new(config_file: Option<std::path::PathBuf>, cpus: Vec<Option<usize>>) -> NodeShared {
        let cores = cpus.len();
        let started_unix_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let seed = started_unix_s ^ (std::process::id() as u64) << 32;
        let run_id = (0..5)
            .map(|i| format!("{:08x}", splitmix(seed.wrapping_add(i)) as u32))
            .collect::<String>();
        NodeShared {
            started: Instant::now(),
            started_unix_s,
            last_save_unix_s: AtomicU64::new(started_unix_s),
            run_id,
            config_file,
            executable: std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            cpus,
            shutdown: AtomicBool::new(false),
            signalled: AtomicBool::new(false),
            clock_offset_ms: AtomicI64::new(0),
            next_client_id: AtomicU64::new(0),
            saves: Default::default(),
            dirty: (0..cores).map(|_| AtomicU64::new(0)).collect(),
            scrape: super::prometheus::Hub::new(cores),
            tls: arc_swap::ArcSwapOption::empty(),
            tls_client: arc_swap::ArcSwapOption::empty(),
            acl: arc_swap::ArcSwap::from_pointee(super::acl::Users::new(None)),
            acl_generation: AtomicU64::new(0),
            acl_log: Default::default(),
            monitors: Default::default(),
            aof_rewrites_running: AtomicUsize::new(0),
            aof_rewrites: AtomicU64::new(0),
            aof_last_rewrite_ok: AtomicBool::new(true),
            aof_last_rewrite_secs: AtomicI64::new(-1),
            cluster: std::sync::OnceLock::new(),
            repl: super::replication::Replication::new(cores, seed ^ 0x7265_706c),
        }
    }

    pub fn request_shutdown(&self) {
        self.shutdown.store(true, Ordering::Release);
    }

    /// A shutdown asked for by SIGTERM or SIGINT.
    pub fn request_shutdown_by_signal(&self) {
        self.signalled.store(true, Ordering::Release);
        self.request_shutdown();
    }

    pub fn signalled(&self) -> bool {
        self.signalled.load(Ordering::Acquire)
    }

    pub fn shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    /// Unix time in milliseconds, as the node sees it.
    pub fn now_ms(&self) -> u64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        (wall + self.clock_offset_ms.load(Ordering::Relaxed)).max(0) as u64
    }

    /// Unix time in microseconds (TIME, server_time_usec).
    pub fn now_us(&self) -> u64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        (wall + self.clock_offset_ms.load(Ordering::Relaxed) * 1000).max(0) as u64
    }

    /// Records a successful save taken at `at_ms` (node clock).
    pub fn saved(&self, at_ms: u64) {
        self.last_save_unix_s.store(at_ms / 1000, Ordering::Relaxed);
    }

    pub fn last_save_unix_s(&self) -> u64 {
        self.last_save_unix_s.load(Ordering::Relaxed)
    }

    pub fn advance_clock(&self, ms: i64) {
        self.clock_offset_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e3779b97f4a7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
    x ^ (x >> 31)
}

/// Counters one core keeps; INFO adds them up over all cores.
#[derive(Default, Debug, Clone, Copy)]
pub struct CoreStats {
    pub total_connections_received: u64,
    pub total_commands_processed: u64,
    pub total_net_input_bytes: u64,
    pub total_net_output_bytes: u64,
    pub rejected_connections: u64,
    pub total_error_replies: u64,
    /// Requests this core sent to another over the channel mesh.
    pub cross_core_hops: u64,
    /// TLS connections dropped in their handshake (failed or too slow).
    pub tls_handshake_failures: u64,
    /// Time spent in active expiry, in microseconds.
    pub expire_cycle_cpu_us: u64,
}

/// What CLIENT LIST shows of a connection; the connection task keeps it current.
#[derive(Debug, Clone)]
pub struct ClientRecord {
    pub id: ClientId,
    pub addr: SocketAddr,
    pub laddr: SocketAddr,
    pub name: String,
    pub created: Instant,
    pub last_active: Instant,
    pub db: usize,
    pub multi: Option<usize>,
    pub watching: usize,
    pub last_cmd: &'static str,
    pub resp: u8,
    pub lib_name: String,
    pub lib_ver: String,
    pub query_buffer_bytes: usize,
    /// The ACL user the connection acts as.
    pub user: String,
    /// The connection's read and output buffers' sizes and the commands queued in MULTI,
    /// in bytes (CLIENT LIST's rbs, omem and multi-mem; tot-mem adds them up).
    pub read_buffer_bytes: usize,
    pub output_buffer_bytes: usize,
    pub multi_bytes: usize,
    pub authenticated: bool,
    /// The connection streams to a replica (flag S).
    pub replica: bool,
}

impl ClientRecord {
    /// One line of CLIENT LIST / CLIENT INFO, with Redis's field names.
    pub fn line(&self) -> String {
        let age = self.created.elapsed().as_secs();
        let idle = self.last_active.elapsed().as_secs();
        let flags = if self.replica {
            "S"
        } else if self.multi.is_some() {
            "x"
        } else {
            "N"
        };
        format!(
            "id={} addr={} laddr={} fd=-1 name={} age={} idle={} flags={} db={} sub=0 psub=0 ssub=0 multi={} watch={} qbuf={} qbuf-free={} argv-mem=0 multi-mem={} rbs={} rbp=0 obl=0 oll=0 omem={} tot-mem={} events=r cmd={} user={} redir=-1 resp={} lib-name={} lib-ver={}",
            self.id,
            self.addr,
            self.laddr,
            self.name,
            age,
            idle,
            flags,
            self.db,
            self.multi.map_or(-1, |n| n as i64),
            self.watching,
            self.query_buffer_bytes,
            self.read_buffer_bytes.saturating_sub(self.query_buffer_bytes),
            self.multi_bytes,
            self.read_buffer_bytes,
            self.output_buffer_bytes,
            self.read_buffer_bytes
                + self.output_buffer_bytes
                + self.multi_bytes
                + std::mem::size_of::<ClientRecord>(),
            self.last_cmd,
            self.user,
            self.resp,
            self.lib_name,
            self.lib_ver,
        )
    }
}

/// A connection as its core's registry knows it: its record and a way to close it.
pub struct ClientHandle {
    pub record: Rc<RefCell<ClientRecord>>,
    pub kill: Rc<Cell<bool>>,
    pub wake: RefCell<Option<futures_channel::oneshot::Sender<()>>>,
}

/// One data core: its shard, its lock gate, its connections and its mesh endpoints.
pub struct Core {
    pub id: usize,
    pub cores: usize,
    pub shard: RefCell<Shard>,
    pub gate: Gate,
    pub config: RefCell<Config>,
    pub clients: RefCell<BTreeMap<ClientId, ClientHandle>>,
    pub stats: Cell<CoreStats>,
    pub node: Arc<NodeShared>,
    pub(super) mesh: OnceCell<Mesh>,
    pub(super) tx_seq: Cell<u64>,
    rng: Cell<u64>,
    /// DEBUG SET-ACTIVE-EXPIRE: whether the background tick deletes expired keys.
    pub active_expire: Cell<bool>,
    /// The shard's change count at the last save (or load), for
    /// `rdb_changes_since_last_save`.
    pub changes_at_save: Cell<u64>,
    /// The shard's change count when the running background save's image was taken.
    pub changes_at_capture: Cell<u64>,
    /// This core's append-only log, while `appendonly` is on.
    pub aof: RefCell<Option<Rc<super::aof::Aof>>>,
    /// The task queue of background work (snapshot and rewrite writers): fewer shares than
    /// the connections' queue, so under load a save slows down rather than the clients.
    background: OnceCell<glommio::TaskQueueHandle>,
    /// Links to other nodes for forwarded commands (cluster mode).
    pub forwarder: super::forward::Forwarder,
    /// Cluster mode: the slot-table epoch this core last acted on, and which of its slots
    /// it held then (None before the first table: it assumes it holds whatever it has).
    pub cluster_epoch_seen: Cell<u64>,
    pub slots_held: RefCell<Option<Vec<bool>>>,
    me: Weak<Core>,
}

impl Core {
    pub fn new(id: usize, cores: usize, config: Config, node: Arc<NodeShared>) -> Rc<Core> {
        let core = Rc::new_cyclic(|me| Core {
            me: me.clone(),
            id,
            cores,
            shard: RefCell::new(Shard::new(config.databases)),
            gate: Gate::default(),
            forwarder: super::forward::Forwarder::new(
                config.requirepass.clone(),
                config.tls_cluster.then(|| node.clone()),
            ),
            cluster_epoch_seen: Cell::new(0),
            slots_held: RefCell::new(None),
            config: RefCell::new(config),
            clients: RefCell::new(BTreeMap::new()),
            stats: Cell::new(CoreStats::default()),
            node: node.clone(),
            mesh: OnceCell::new(),
            tx_seq: Cell::new(1),
            rng: Cell::new(splitmix(node.started_unix_s ^ id as u64)),
            active_expire: Cell::new(true),
            changes_at_save: Cell::new(0),
            changes_at_capture: Cell::new(0),
            aof: RefCell::new(None),
            background: OnceCell::new(),
        });
        core.apply_memory_config();
        core
    }

    /// Gives the shard its settings from the configuration: an equal share of `maxmemory`
    /// per core, the policy, the ring's bounds. Called at start and after CONFIG SET.
    pub fn apply_memory_config(&self) {
        let c = self.config.borrow();
        let share = if c.maxmemory == 0 {
            0
        } else {
            (c.maxmemory / self.cores).max(1)
        };
        let mut shard = self.shard.borrow_mut();
        shard.set_memory_policy(MemoryPolicy {
            limit_bytes: share,
            policy: c.maxmemory_policy,
            samples: c.maxmemory_samples,
            lfu_log_factor: c.lfu_log_factor,
            lfu_decay_minutes: c.lfu_decay_time,
        });
        // Under maxmemory the ring counts against the core's share, and takes at most an
        // eighth of it.
        let ring_bytes = if share == 0 {
            c.wal_ring_bytes
        } else {
            c.wal_ring_bytes.min(share / limits::WAL_RING_SHARE_DIVISOR)
        };
        shard.set_wal_limits(WalLimits {
            max_entries: c.wal_ring_entries,
            max_bytes: ring_bytes,
        });
        shard.wal_mut().set_keep_always(c.wal_ring_keep);
    }

    /// Runs `work` in this core's background task queue (created on first use, on this
    /// core's executor).
    pub fn spawn_background(&self, work: impl std::future::Future<Output = ()> + 'static) {
        let queue = *self.background.get_or_init(|| {
            glommio::executor().create_task_queue(
                glommio::Shares::Static(limits::BACKGROUND_SHARES),
                glommio::Latency::NotImportant,
                "background",
            )
        });
        match glommio::spawn_local_into(work, queue) {
            Ok(task) => task.detach(),
            Err(e) => panic!("the background task queue refused a task: {e}"),
        };
    }

    /// This core, owned: for a task spawned from a call that only has `&Core`.
    pub fn rc(&self) -> Rc<Core> {
        self.me.upgrade().expect("a core outlives its calls")
    }

    pub fn set_mesh(&self, mesh: Mesh) {
        if self.mesh.set(mesh).is_err() {
            panic!("mesh joined twice");
        }
    }

    /// Client ids are unique across the node and grow in connection order, as Redis
    /// promises; one shared counter, touched once per connection.
    pub fn next_client_id(&self) -> ClientId {
        self.node.next_client_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn random(&self) -> u64 {
        let v = splitmix(self.rng.get());
        self.rng.set(v);
        v
    }

    pub fn now_ms(&self) -> u64 {
        self.node.now_ms()
    }

    pub fn shard_limits(&self) -> ShardLimits {
        ShardLimits {
            max_string_bytes: self.config.borrow().proto_max_bulk_len,
        }
    }

    pub fn bump(&self, f: impl FnOnce(&mut CoreStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    /// Closes every connection on this core that `matches`, except `skip`; returns how
    /// many it closed.
    pub fn kill_clients(
        &self,
        skip: Option<ClientId>,
        matches: impl Fn(&ClientRecord) -> bool,
    ) -> usize {
        let clients = self.clients.borrow();
        let mut n = 0;
        for (id, h) in clients.iter() {
            if Some(*id) == skip || !matches(&h.record.borrow()) {
                continue;
            }
            h.kill.set(true);
            if let Some(w) = h.wake.borrow_mut().take() {
                let _ = w.send(());
            }
            n += 1;
        }
        n
    }
}
