//! The control core: the executor that owns the node's cluster state and does its I/O.
//!
//! It runs [`ClusterState`] (membership, the slot table, the coordinator) and is the only
//! thing that speaks the cluster bus: it listens on the bus port, keeps one outgoing link
//! per peer (a bounded queue of frames and a writer that reconnects with backoff), ticks
//! the state machine every `BUS_TICK_MS`, saves `nodes.conf` when the configuration
//! changes, and publishes a new [`View`] for the data cores after every change. Data cores
//! never wait on it: they read the latest view with one atomic load, and send it the few
//! admin requests (MEET, FORGET, CREATE) over a bounded channel.
//!
//! It runs on its own CPU (`--control-cpu N`) or unpinned beside the data cores
//! (`--control-cpu shared`, the default: on a small machine its few messages a second
//! cost less than a CPU kept from the data path).

use super::core::NodeShared;
use super::tls::PeerStream;
use super::StartError;
use crate::cluster::bus::{self, Body, BUS_FRAME_MAX_BYTES};
use crate::cluster::membership::{Addr, Health, NodeId};
use crate::cluster::state::{ClusterState, Saved};
use crate::cluster::view::View;
use crate::config::Config;
use crate::limits::{
    self, BUS_CONNECT_TIMEOUT_MS, BUS_INBOUND_IDLE_MS, BUS_LINK_QUEUE_FRAMES, BUS_MAX_INBOUND,
    BUS_READ_CHUNK_BYTES, BUS_RECONNECT_MAX_MS, BUS_RECONNECT_MIN_MS, BUS_TICK_MS,
    BUS_WRITE_BATCH_BYTES, BUS_WRITE_TIMEOUT_MS, CONTROL_QUEUE_REQUESTS, SEED_RETRY_MS,
};
use arc_swap::ArcSwap;
use futures_channel::{mpsc, oneshot};
use futures_lite::{AsyncReadExt, StreamExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An admin request from a data core, answered with a reply line or an error text.
pub enum Request {
    Meet {
        ip: IpAddr,
        bus_port: u16,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Forget {
        id: NodeId,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Create {
        reply: oneshot::Sender<Result<u64, String>>,
    },
    /// CLUSTER FAILOVER FORCE | TAKEOVER.
    Failover {
        takeover: bool,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// CLUSTER REPLICATE: follow this primary.
    Replicate {
        primary: NodeId,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// A data core's connection to this client address was refused: a hint for membership.
    LinkRefused { client: SocketAddr },
}

/// What data cores hold of the control core.
pub struct ClusterHandle {
    /// The latest view; replaced whole on every change.
    pub view: ArcSwap<View>,
    /// Bus frames sent and received (CLUSTER INFO), kept current between views.
    pub frames_sent: std::sync::atomic::AtomicU64,
    pub frames_received: std::sync::atomic::AtomicU64,
    /// Frames dropped because a peer's link queue was full.
    pub frames_dropped: std::sync::atomic::AtomicU64,
    requests: mpsc::Sender<Request>,
}

impl ClusterHandle {
    /// Hands a request to the control core; errors when its queue is full or it stopped.
    pub fn request(&self, req: Request) -> Result<(), String> {
        self.requests.clone().try_send(req).map_err(|e| {
            if e.is_full() {
                "ERR the cluster control queue is full, try again".to_string()
            } else {
                "ERR the cluster control core has stopped".to_string()
            }
        })
    }
}

/// Reads (or makes) this node's identity and configuration, binds the bus and starts the
/// control core. Returns once the bus listens.
pub fn start(
    config: &Config,
    node: Arc<NodeShared>,
) -> Result<(Arc<ClusterHandle>, glommio::ExecutorJoinHandle<()>), StartError> {
    let path = config.dir.join(&config.cluster_config_file);
    let saved = match std::fs::read_to_string(&path) {
        Ok(text) => Some(Saved::parse(&text).map_err(|e| {
            StartError::Load(format!("cluster config file {}: {e}", path.display()))
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(StartError::Load(format!(
                "cannot read cluster config file {}: {e}",
                path.display()
            )))
        }
    };
    let ip = announce_ip(config);
    let addr = Addr::new(ip, config.port, config.bus_port()).with_tls_port(config.tls_port);
    let me = match &saved {
        Some(s) => s.me,
        None => new_node_id(),
    };
    let seed = u64::from_le_bytes(me.0[..8].try_into().expect("8 bytes"));
    let now_ms = 0;
    let mut state = ClusterState::new(me, addr, config.membership(), seed, now_ms);
    let election = crate::cluster::election::ElectionConfig {
        delay_ms: config.cluster_failover_delay_ms,
        jitter_ms: config.cluster_failover_delay_ms,
        ..Default::default()
    };
    state.set_election_config(election, seed);
    state.set_migration_barrier(
        config
            .cluster_allow_replica_migration
            .then_some(config.cluster_migration_barrier),
    );
    state.set_require_full_coverage(config.cluster_require_full_coverage);
    if let Some(s) = &saved {
        state.restore(s, now_ms);
    }
    let (tx, rx) = mpsc::channel(CONTROL_QUEUE_REQUESTS);
    let handle = Arc::new(ClusterHandle {
        view: ArcSwap::from_pointee(state.view()),
        frames_sent: Default::default(),
        frames_received: Default::default(),
        frames_dropped: Default::default(),
        requests: tx,
    });
    let placement = match config.control_cpu {
        Some(cpu) => Placement::Fixed(cpu),
        None => Placement::Unbound,
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), StartError>>();
    let setup = Setup {
        state,
        handle: handle.clone(),
        node,
        path,
        bind: config.bind.clone(),
        bus_port: config.bus_port(),
        seeds: config.cluster_seeds.clone(),
        learn_ip: ip.is_unspecified(),
        max_lag: (config.repl_max_lag_entries, config.repl_max_lag_ms),
        tls: config.tls_cluster,
    };
    let thread = LocalExecutorBuilder::new(placement)
        .name("control")
        .io_memory(limits::IO_MEMORY_BYTES)
        .spawn(move || async move { run(setup, rx, ready_tx).await })
        .map_err(|e| StartError::ControlCore(e.to_string()))?;
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(StartError::ControlCore("it stopped while starting".into())),
    }
    tracing::info!(
        "cluster node {me}, bus port {}, control core {}",
        config.bus_port(),
        config
            .control_cpu
            .map_or("shared".to_string(), |c| format!("on cpu {c}"))
    );
    Ok((handle, thread))
}

/// The IP this node announces: the configured one, else the first bind address unless it
/// is a wildcard (then unspecified until a peer shows which address reaches this node).
fn announce_ip(config: &Config) -> IpAddr {
    if let Some(ip) = config
        .cluster_announce_ip
        .as_deref()
        .and_then(|s| s.parse().ok())
    {
        return ip;
    }
    config
        .bind
        .iter()
        .filter_map(|b| b.trim_start_matches('-').parse::<IpAddr>().ok())
        .find(|ip| !ip.is_unspecified())
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

/// A fresh node id: 160 random bits from the kernel (the time and pid if it has none).
fn new_node_id() -> NodeId {
    let mut id = [0u8; 20];
    let got = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut id));
    if got.is_err() {
        let mut rng = tessera_shards::evict::Rng::new(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
                ^ std::process::id() as u64,
        );
        return NodeId::random(&mut rng);
    }
    NodeId(id)
}

struct Setup {
    state: ClusterState,
    handle: Arc<ClusterHandle>,
    node: Arc<NodeShared>,
    path: PathBuf,
    bind: Vec<String>,
    bus_port: u16,
    seeds: Vec<String>,
    learn_ip: bool,
    /// The in-sync bounds (repl-max-lag-entries, repl-max-lag-ms) as of start.
    max_lag: (u64, u64),
    /// `tls-cluster`: links to and from peers are TLS.
    tls: bool,
}

struct Driver {
    state: RefCell<ClusterState>,
    links: RefCell<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>,
    handle: Arc<ClusterHandle>,
    started: Instant,
    path: PathBuf,
    learn_ip: std::cell::Cell<bool>,
    inbound: std::cell::Cell<usize>,
    /// What `nodes.conf` holds: it is rewritten (and fsynced) only when this changes, not
    /// at every change of a member's health.
    saved: RefCell<Option<Saved>>,
    /// Where the TLS configurations are when the bus is TLS (`tls-cluster`).
    tls: Option<Arc<NodeShared>>,
}

impl Driver {
    /// The configuration inbound links are accepted with; `None`: plain TCP.
    fn tls_server(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.as_ref().and_then(|n| n.tls.load_full())
    }
}

impl Driver {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Sends what the state machine wants sent, then logs, publishes and saves what
    /// changed. Call after every step.
    fn flush(&self) {
        let (sends, events, view, saved) = {
            let mut st = self.state.borrow_mut();
            let sends = st.take_outgoing();
            let events = st.take_events();
            let view = st.take_view_stale().then(|| st.view());
            let saved = st.take_config_stale().then(|| st.saved());
            let relaxed = std::sync::atomic::Ordering::Relaxed;
            self.handle.frames_sent.store(st.stats.frames_sent, relaxed);
            self.handle
                .frames_received
                .store(st.stats.frames_received, relaxed);
            (sends, events, view, saved)
        };
        for s in sends {
            let mut wire = Vec::new();
            bus::encode(&s.frame, &mut wire);
            let mut links = self.links.borrow_mut();
            let link = links.entry(s.to).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(BUS_LINK_QUEUE_FRAMES);
                let local = self.state.borrow().addr().ip();
                let tls = self.tls.clone();
                glommio::spawn_local(link_writer(local, s.to, rx, tls)).detach();
                tx
            });
            if link.try_send(wire).is_err() {
                self.handle
                    .frames_dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        for e in events {
            let state = match e.health {
                Health::Alive => "alive",
                Health::Pdead => "pdead (suspected)",
                Health::Dead => "dead",
            };
            tracing::info!(
                "cluster: node {} is {state} (incarnation {})",
                e.id,
                e.incarnation
            );
        }
        if let Some(v) = view {
            self.handle.view.store(Arc::new(v));
        }
        let unchanged = saved.is_none() || *self.saved.borrow() == saved;
        if let (Some(saved), false) = (saved, unchanged) {
            match save_config(&self.path, &saved) {
                Ok(()) => *self.saved.borrow_mut() = Some(saved),
                // Tried again at the next change.
                Err(e) => tracing::warn!(
                    "cannot save the cluster config {}: {e}",
                    self.path.display()
                ),
            }
        }
    }
}

/// Writes `nodes.conf` whole: a temporary file, fsync, rename.
fn save_config(path: &std::path::Path, saved: &Saved) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, saved.to_text().as_bytes())?;
        f.sync_data()?;
    }
    std::fs::rename(&tmp, path)
}

async fn run(
    setup: Setup,
    requests: mpsc::Receiver<Request>,
    ready: std::sync::mpsc::Sender<Result<(), StartError>>,
) {
    let mut listeners = Vec::new();
    for b in &setup.bind {
        let b = b.trim_start_matches('-');
        let target = if b.contains(':') {
            format!("[{b}]:{}", setup.bus_port)
        } else {
            format!("{b}:{}", setup.bus_port)
        };
        match TcpListener::bind(&target) {
            Ok(l) => listeners.push(l),
            Err(e) => {
                let _ = ready.send(Err(StartError::BusBind {
                    addr: target,
                    err: e.to_string(),
                }));
                return;
            }
        }
    }
    let driver = Rc::new(Driver {
        state: RefCell::new(setup.state),
        links: RefCell::new(HashMap::new()),
        handle: setup.handle,
        started: Instant::now(),
        path: setup.path,
        learn_ip: std::cell::Cell::new(setup.learn_ip),
        inbound: std::cell::Cell::new(0),
        saved: RefCell::new(None),
        tls: setup.tls.then(|| setup.node.clone()),
    });
    let _ = ready.send(Ok(()));
    drop(ready);
    for l in listeners {
        glommio::spawn_local(accept_loop(driver.clone(), l)).detach();
    }
    glommio::spawn_local(serve_requests(driver.clone(), requests)).detach();
    driver.flush();
    let node = setup.node;
    let mut next_seed_try = 0;
    // Node time at which membership first suspected this replica's primary (see below).
    let mut primary_quiet_since: Option<u64> = None;
    while !node.shutting_down() {
        let now = driver.now_ms();
        if now >= next_seed_try && !setup.seeds.is_empty() {
            next_seed_try = now + SEED_RETRY_MS;
            let alone = driver.state.borrow().member_count() == 0;
            if alone {
                for seed in &setup.seeds {
                    match resolve_seed(seed) {
                        Ok(bus) => driver.state.borrow_mut().meet(bus),
                        Err(e) => tracing::warn!("cluster seed {seed}: {e}"),
                    }
                }
            }
        }
        {
            let r = &node.repl;
            // Whether this replica may stand is judged as of when its primary fell silent:
            // once membership suspects the primary, the time since its last word is the
            // primary's death, not this replica's lag (else a `repl-max-lag-ms` shorter
            // than detection would leave no replica able to stand).
            let wall = node.now_ms();
            match driver.state.borrow().primary_alive() {
                Some(false) => {
                    primary_quiet_since.get_or_insert(wall);
                }
                _ => primary_quiet_since = None,
            }
            let as_of = primary_quiet_since.map_or(wall, |q| q.min(wall));
            let in_sync = r.in_sync(as_of, setup.max_lag.0, setup.max_lag.1);
            let mut st = driver.state.borrow_mut();
            st.set_replication(r.applied(), in_sync);
            st.tick(now);
            for (failed, epoch) in st.take_promotions() {
                tracing::warn!(%failed, epoch, "failover: this replica won the election and takes over its primary's slots");
            }
        }
        driver.flush();
        glommio::timer::sleep(Duration::from_millis(BUS_TICK_MS)).await;
    }
}

fn resolve_seed(seed: &str) -> Result<SocketAddr, String> {
    let (host, _port, bus) = crate::config::parse_seed(seed)?;
    (host.as_str(), bus)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| "resolves to no address".to_string())
}

async fn serve_requests(driver: Rc<Driver>, mut requests: mpsc::Receiver<Request>) {
    while let Some(req) = requests.next().await {
        let now = driver.now_ms();
        match req {
            Request::Meet {
                ip,
                bus_port,
                reply,
            } => {
                driver
                    .state
                    .borrow_mut()
                    .meet(SocketAddr::new(ip, bus_port));
                let _ = reply.send(Ok(()));
            }
            Request::Forget { id, reply } => {
                let r = driver.state.borrow_mut().forget(id, now);
                let _ = reply.send(r);
            }
            Request::Create { reply } => {
                let r = driver.state.borrow_mut().create(now);
                let _ = reply.send(r);
            }
            Request::Failover { takeover, reply } => {
                let r = driver.state.borrow_mut().failover(takeover, now);
                let _ = reply.send(r);
            }
            Request::Replicate { primary, reply } => {
                let r = driver.state.borrow_mut().replicate(primary);
                let _ = reply.send(r);
            }
            Request::LinkRefused { client } => {
                let now = driver.now_ms();
                driver.state.borrow_mut().link_refused(client, now);
            }
        }
        driver.flush();
    }
}

async fn accept_loop(driver: Rc<Driver>, listener: TcpListener) {
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cluster bus accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if driver.inbound.get() >= BUS_MAX_INBOUND {
            tracing::warn!(
                "cluster bus: {BUS_MAX_INBOUND} inbound links already; closing one more"
            );
            continue;
        }
        if driver.learn_ip.get() {
            if let Ok(local) = stream.local_addr() {
                if !local.ip().is_unspecified() {
                    driver.learn_ip.set(false);
                    driver.state.borrow_mut().set_ip(local.ip());
                    tracing::info!("cluster: this node is reached at {}", local.ip());
                }
            }
        }
        driver.inbound.set(driver.inbound.get() + 1);
        let d = driver.clone();
        glommio::spawn_local(async move {
            let peer = stream.peer_addr().ok();
            if let Err(e) = read_peer(&d, stream).await {
                tracing::debug!("cluster bus link from {peer:?} closed: {e}");
            }
            d.inbound.set(d.inbound.get() - 1);
        })
        .detach();
    }
}

/// Reads frames from one inbound link until it closes, goes silent or sends a bad frame.
async fn read_peer(driver: &Driver, stream: TcpStream) -> Result<(), String> {
    stream
        .set_read_timeout(Some(Duration::from_millis(BUS_INBOUND_IDLE_MS)))
        .map_err(|e| e.to_string())?;
    // A peer that does not speak TLS on a TLS bus fails here, before any frame is read.
    let mut stream = PeerStream::accept(stream, driver.tls_server())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf: Vec<u8> = Vec::with_capacity(BUS_READ_CHUNK_BYTES);
    let mut chunk = vec![0u8; BUS_READ_CHUNK_BYTES];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut used = 0;
        loop {
            match bus::decode(&buf[used..]) {
                Ok(Some((frame, len))) => {
                    used += len;
                    if matches!(frame.body, Body::Join { .. }) {
                        tracing::info!("cluster: node {} asks to join", frame.from);
                    }
                    let now = driver.now_ms();
                    driver.state.borrow_mut().receive(frame, now);
                    driver.flush();
                }
                Ok(None) => break,
                Err(e) => return Err(e.to_string()),
            }
        }
        buf.drain(..used);
        if buf.len() > BUS_FRAME_MAX_BYTES + BUS_READ_CHUNK_BYTES {
            return Err("a frame larger than the bus allows".into());
        }
    }
}

/// Connects to `to` from this node's own address `local` (so that peers, and firewall
/// rules, see the node's address, not whatever source the kernel picks), within
/// `BUS_CONNECT_TIMEOUT_MS`. The connect runs on glommio's blocking thread: binding before
/// connecting is not in glommio's API.
async fn connect_from(local: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let fd = glommio::executor()
        .spawn_blocking(move || -> std::io::Result<std::os::fd::RawFd> {
            let sock = socket2::Socket::new(
                socket2::Domain::for_address(to),
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            if !local.is_unspecified() && local.is_ipv4() == to.is_ipv4() {
                sock.bind(&SocketAddr::new(local, 0).into())?;
            }
            // Unacknowledged frames older than this abort the connection, so a link cut by
            // a partition fails and reconnects instead of waiting out TCP's growing
            // retransmission backoff after the partition heals.
            sock.set_tcp_user_timeout(Some(Duration::from_millis(BUS_WRITE_TIMEOUT_MS)))?;
            sock.connect_timeout(&to.into(), Duration::from_millis(BUS_CONNECT_TIMEOUT_MS))?;
            Ok(sock.into_raw_fd())
        })
        .await?;
    // SAFETY: `fd` is a connected TCP socket this function owns and hands over whole.
    Ok(unsafe { TcpStream::from_raw_fd(fd) })
}

/// Sends one peer's frames, connecting (and reconnecting, with backoff) as needed; over
/// TLS when `tls` is there.
async fn link_writer(
    local: IpAddr,
    to: SocketAddr,
    mut frames: mpsc::Receiver<Vec<u8>>,
    tls: Option<Arc<NodeShared>>,
) {
    let mut stream: Option<PeerStream> = None;
    let mut backoff_ms = BUS_RECONNECT_MIN_MS;
    let mut retry_at = Instant::now();
    while let Some(first) = frames.next().await {
        if stream.is_none() {
            if Instant::now() < retry_at {
                continue;
            }
            let client = tls.as_ref().and_then(|n| n.tls_client.load_full());
            let connected = match connect_from(local, to).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    let _ = s.set_write_timeout(Some(Duration::from_millis(BUS_WRITE_TIMEOUT_MS)));
                    PeerStream::dial(s, to.ip(), client).await
                }
                Err(e) => Err(e),
            };
            match connected {
                Ok(s) => {
                    stream = Some(s);
                    backoff_ms = BUS_RECONNECT_MIN_MS;
                }
                Err(e) => {
                    tracing::debug!("cluster bus: cannot connect to {to}: {e}");
                    retry_at = Instant::now() + Duration::from_millis(backoff_ms);
                    backoff_ms = (backoff_ms * 2).min(BUS_RECONNECT_MAX_MS);
                    continue;
                }
            }
        }
        let mut batch = first;
        while batch.len() < BUS_WRITE_BATCH_BYTES {
            match frames.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                _ => break,
            }
        }
        let s = stream.as_mut().expect("connected above");
        if let Err(e) = super::tls::write_flushed(s, &batch).await {
            tracing::debug!("cluster bus: write to {to} failed: {e}");
            stream = None;
        }
    }
}
