//! The node's runtime: one glommio executor per data core, each accepting on the client
//! port (SO_REUSEPORT) and owning one shard; cores reach each other only over the mesh.
//!
//! - [`core`]: what a core owns (shard, gate, connections, stats) and what cores share.
//! - [`mesh`]: cross-core calls and shard locks; the only user of the channel mesh.
//! - [`conn`]: a connection's read–decode–run–write loop.
//! - [`pipeline`]: reply ordering and per-core batching of a pipeline.
//! - [`session`]: a connection's state (database, protocol, MULTI queue, watches).
//! - [`tx`]: atomic work across cores: multi-key commands and MULTI/EXEC.
//! - [`node_cmds`], [`admin`], [`info`]: commands that run on the connection's core.

pub mod acl;
pub mod acl_cmd;
pub mod admin;
pub mod aof;
pub mod cluster_cmd;
pub mod conn;
pub mod control;
pub mod core;
pub mod cron;
pub mod forward;
pub mod info;
pub mod memory_cmd;
pub mod mesh;
pub mod metrics;
pub mod monitor;
pub mod node_cmds;
pub mod observe;
pub mod persist;
pub mod pipeline;
pub mod prometheus;
pub mod replica;
pub mod replication;
pub mod session;
pub mod tls;
pub mod topology;
pub mod tx;

use self::core::{Core, NodeShared};
use crate::config::Config;
use crate::limits;
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("memlock limit {have_kib} KiB is too low for glommio's io_uring buffers; raise it with `ulimit -l {need_kib}` (or LimitMEMLOCK= in a systemd unit; need at least {need_kib} KiB)")]
    Memlock { have_kib: u64, need_kib: u64 },
    #[error("io_uring is not available ({0}); tessera needs Linux 5.8 or newer with io_uring enabled (check the sysctl kernel.io_uring_disabled and seccomp profiles of containers)")]
    NoIoUring(std::io::Error),
    #[error("core {core}: cannot listen on {addr}: {err}")]
    Bind {
        core: usize,
        addr: String,
        err: String,
    },
    #[error("the {cores} cores did not join the channel mesh within {ms} ms; try fewer cores (--cores) than CPUs")]
    MeshTimeout { cores: usize, ms: u64 },
    #[error("cannot start executor for core {core}: {err}")]
    Executor { core: usize, err: String },
    #[error("{0} (move the file away to start empty)")]
    Load(String),
    #[error("cannot listen on {addr} for the cluster bus: {err} (the bus port is the client port + 10000 unless --cluster-port says otherwise)")]
    BusBind { addr: String, err: String },
    #[error("cannot start the control core: {0}")]
    ControlCore(String),
    #[error("cannot serve metrics on {addr}: {err} (--metrics-port)")]
    MetricsBind { addr: String, err: String },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("ACL: {0} (fix the aclfile or move it away)")]
    Acl(String),
}

/// Checks that the process may lock enough memory for glommio.
pub fn check_memlock(cores: usize) -> Result<(), StartError> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return Ok(());
    }
    let need = limits::MEMLOCK_MIN_BYTES;
    let is_root = unsafe { libc::geteuid() } == 0;
    if lim.rlim_cur != libc::RLIM_INFINITY && lim.rlim_cur < need && !is_root {
        return Err(StartError::Memlock {
            have_kib: lim.rlim_cur / 1024,
            need_kib: need * cores as u64 / 1024,
        });
    }
    Ok(())
}

/// Checks that the kernel lets us create an io_uring.
pub fn check_io_uring() -> Result<(), StartError> {
    // io_uring_setup(2) with 1 entry: params is 120 bytes, all zero.
    let mut params = [0u8; 120];
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(StartError::NoIoUring(std::io::Error::last_os_error()));
    }
    unsafe { libc::close(fd as i32) };
    Ok(())
}

impl NodeShared {
    /// Counts a new connection; false if `maxclients` are already connected.
    pub fn client_opened(&self, maxclients: usize) -> bool {
        if CONNECTED.fetch_add(1, Ordering::AcqRel) >= maxclients {
            CONNECTED.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    pub fn client_closed(&self) {
        CONNECTED.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Connections open on the node (for `maxclients`); touched on connect and close only.
static CONNECTED: AtomicUsize = AtomicUsize::new(0);

/// Runs a node until it is shut down. Returns once every core has stopped.
pub fn run(config: Config, node: Arc<NodeShared>) -> Result<(), StartError> {
    check_memlock(config.cores)?;
    check_io_uring()?;
    let cores = config.cores;
    // Bound before the cores start, so it is there when they answer (a scrape before
    // they tick waits for them).
    prometheus::start(&config, node.clone())?;
    if config.tls_port != 0 {
        node.tls
            .store(Some(tls::server_config(&config).map_err(StartError::Tls)?));
    }
    if config.tls_cluster && config.tls_port == 0 {
        return Err(StartError::Tls(
            "tls-cluster yes needs a tls-port: peers forward to it and the bus takes TLS".into(),
        ));
    }
    if tls::dials_tls(&config) {
        node.tls_client
            .store(Some(tls::client_config(&config).map_err(StartError::Tls)?));
    }
    // The users: from the aclfile if there is one, else the default user as requirepass
    // makes it.
    let users = if config.aclfile.is_empty() {
        acl::Users::new(config.requirepass.as_deref())
    } else {
        acl_cmd::load_file(&config.aclfile, config.requirepass.as_deref())
            .map_err(StartError::Acl)?
    };
    node.set_users(users);
    let topo = Arc::new(topology::Topology::read(&topology::Topology::root()));
    let (line, warnings) = topology::describe(
        &topo,
        &topology::Layout {
            cores,
            data: &config.cpus[..cores.min(config.cpus.len())],
            control: config.control_cpu,
            clustered: config.cluster_enabled,
            nics: topology::bind_interfaces(&config.bind),
        },
    );
    tracing::info!("{line}");
    for w in warnings {
        tracing::warn!("{w}");
    }
    let control = if config.cluster_enabled {
        let (handle, thread) = control::start(&config, node.clone())?;
        let _ = node.cluster.set(handle);
        Some(thread)
    } else {
        None
    };
    let requests = MeshBuilder::full(cores, mesh::MESH_CHANNEL_CAPACITY);
    let replies = MeshBuilder::full(cores, mesh::MESH_CHANNEL_CAPACITY);
    let peers = Arc::new(Mutex::new(vec![None; cores]));
    let (ready_tx, ready_rx) = mpsc::channel::<Result<usize, StartError>>();
    let mut handles = Vec::new();
    for id in 0..cores {
        let placement = match config.cpus.get(id) {
            Some(&cpu) => Placement::Fixed(cpu),
            None => Placement::Unbound,
        };
        let (cfg, node, requests, replies, peers, ready) = (
            config.clone(),
            node.clone(),
            requests.clone(),
            replies.clone(),
            peers.clone(),
            ready_tx.clone(),
        );
        // On a host with more than one node, a pinned core prefers its node's memory.
        let node_of_core = config
            .cpus
            .get(id)
            .filter(|_| topo.nodes.len() > 1)
            .and_then(|cpu| topo.node_of.get(cpu).copied());
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("core-{id}"))
            .io_memory(limits::IO_MEMORY_BYTES)
            .spawn(move || async move {
                if let Some(numa) = node_of_core {
                    match topology::prefer_node(numa) {
                        Ok(()) => tracing::info!("core {id}: memory from NUMA node {numa}"),
                        Err(e) => tracing::warn!(
                            "core {id}: cannot prefer NUMA node {numa}'s memory: {e} (it comes from wherever the kernel finds it)"
                        ),
                    }
                }
                let setup = CoreSetup {
                    id,
                    config: cfg,
                    node,
                    requests,
                    replies,
                    peers,
                };
                core_main(setup, ready).await;
            })
            .map_err(|e| StartError::Executor {
                core: id,
                err: e.to_string(),
            })?;
        handles.push(handle);
    }
    drop(ready_tx);
    let mut result = Ok(());
    for _ in 0..cores {
        match ready_rx.recv() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                node.request_shutdown();
                result = Err(e);
                break;
            }
            Err(_) => break,
        }
    }
    if result.is_ok() {
        tracing::info!("Ready to accept connections");
    }
    crate::alloc::publish_thread_bytes();
    for h in handles {
        let _ = h.join();
    }
    if let Some(thread) = control {
        node.request_shutdown();
        let _ = thread.join();
    }
    result
}

thread_local! {
    /// When this core last logged that it refused a client at maxclients.
    static MAXCLIENTS_LOGGED_MS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Each core's peer index in the request and reply meshes, filled in as cores join.
type PeerIds = Arc<Mutex<Vec<Option<(usize, usize)>>>>;

struct CoreSetup {
    id: usize,
    config: Config,
    node: Arc<NodeShared>,
    requests: MeshBuilder<mesh::Request, glommio::channels::channel_mesh::Full>,
    replies: MeshBuilder<mesh::Reply, glommio::channels::channel_mesh::Full>,
    peers: PeerIds,
}

async fn core_main(setup: CoreSetup, ready: mpsc::Sender<Result<usize, StartError>>) {
    let CoreSetup {
        id,
        config,
        node,
        requests,
        replies,
        peers,
    } = setup;
    let cores = config.cores;
    let deadline = Duration::from_millis(limits::MESH_JOIN_TIMEOUT_MS);
    let joined = glommio::timer::timeout(deadline, async {
        let rq = requests.join().await;
        let rp = replies.join().await;
        Ok((rq, rp))
    })
    .await;
    let ((rq_tx, rq_rx), (rp_tx, rp_rx)) = match joined {
        Ok((Ok(rq), Ok(rp))) => (rq, rp),
        _ => {
            let _ = ready.send(Err(StartError::MeshTimeout {
                cores,
                ms: limits::MESH_JOIN_TIMEOUT_MS,
            }));
            return;
        }
    };
    peers.lock().expect("setup lock")[id] = Some((rq_tx.peer_id(), rp_tx.peer_id()));
    // Wait, with the same deadline, until every core has published its peer ids.
    let mut waited_ms = 0;
    let peer_ids: Vec<(usize, usize)> = loop {
        let ids = peers.lock().expect("setup lock").clone();
        if ids.iter().all(Option::is_some) {
            break ids.into_iter().flatten().collect();
        }
        if waited_ms >= limits::MESH_JOIN_TIMEOUT_MS {
            let _ = ready.send(Err(StartError::MeshTimeout {
                cores,
                ms: limits::MESH_JOIN_TIMEOUT_MS,
            }));
            return;
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
        waited_ms += 1;
    };
    let peer_of_core: Vec<usize> = peer_ids.iter().map(|(requests, _)| *requests).collect();
    if peer_ids.iter().any(|(a, b)| a != b) {
        panic!("the request and reply meshes numbered the cores differently: {peer_ids:?}");
    }
    let core = Core::new(id, cores, config.clone(), node.clone());
    // As Redis: with appendonly on and append-only files present, they are the data;
    // otherwise the snapshot is.
    let mut manifest = None;
    if config.appendonly && aof::manifests_exist(&config) {
        match aof::load(&core, &config) {
            Ok(loaded) => {
                tracing::info!(
                    core = id,
                    keys = loaded.keys_from_base,
                    records = loaded.records,
                    "loaded the append-only files"
                );
                manifest = loaded.manifest;
            }
            Err(e) => {
                let _ = ready.send(Err(StartError::Load(e)));
                return;
            }
        }
    } else {
        match persist::load(&core, &config) {
            Ok(keys) => {
                if keys > 0 {
                    tracing::info!(core = id, keys, "loaded keys from the snapshot");
                }
            }
            Err(e) => {
                let _ = ready.send(Err(StartError::Load(e.to_string())));
                return;
            }
        }
    }
    core.changes_at_save
        .set(core.shard.borrow().stats().changes);
    core.set_mesh(mesh::Mesh::new(rq_tx, rp_tx, peer_of_core));
    mesh::spawn_receivers(core.clone(), rq_rx, rp_rx);
    if config.appendonly {
        if let Err(e) = aof::start(&core, manifest).await {
            let _ = ready.send(Err(StartError::Load(e)));
            return;
        }
    }

    let mut listeners = Vec::new();
    let ports = std::iter::once((config.port, false))
        .chain((config.tls_port != 0).then_some((config.tls_port, true)));
    for (port, tls) in ports {
        for addr in &config.bind {
            let addr = addr.trim_start_matches('-');
            let target = if addr.contains(':') {
                format!("[{addr}]:{port}")
            } else {
                format!("{addr}:{port}")
            };
            match TcpListener::bind(&target) {
                Ok(l) => listeners.push((l, tls)),
                Err(e) => {
                    let _ = ready.send(Err(StartError::Bind {
                        core: id,
                        addr: target,
                        err: e.to_string(),
                    }));
                    return;
                }
            }
        }
    }
    if id == 0 {
        let cpus = config
            .cpus
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>();
        tracing::info!(
            "tessera {} listening on {} port {}; {} data cores, cpus: {}",
            env!("CARGO_PKG_VERSION"),
            config.bind.join(" "),
            config.port,
            cores,
            if cpus.is_empty() {
                "unpinned".to_string()
            } else {
                cpus.join(",")
            }
        );
    }
    let _ = ready.send(Ok(id));
    drop(ready);
    glommio::spawn_local(cron::run(core.clone())).detach();
    if let (0, Some((host, port))) = (id, config.replicaof.clone()) {
        replication::follow(&core, host, port).await;
    }
    if id == 0 && core.node.cluster.get().is_some() {
        glommio::spawn_local(replication::follow_view_loop(core.clone())).detach();
    }
    let accepts: Vec<_> = listeners
        .into_iter()
        .map(|(l, tls)| glommio::spawn_local(accept_loop(core.clone(), l, tls)))
        .collect();
    for a in accepts {
        a.await;
    }
    drain(&core).await;
    aof::flush_at_exit(&core).await;
    if core.id == 0 && core.node.signalled() && !core.config.borrow().save.is_empty() {
        // As Redis on SIGTERM with save rules: a last snapshot (the connections are closed,
        // the other cores wait below until this one is done).
        tracing::info!("Saving the final snapshot before exiting.");
        if let Err(e) = persist::save(&core, None).await {
            tracing::warn!("Error trying to save the DB before exiting: {e}");
        }
    }
    // Stay up, answering other cores' calls, until every core has drained its clients.
    DRAINED.fetch_add(1, Ordering::AcqRel);
    while DRAINED.load(Ordering::Acquire) < cores {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    crate::alloc::publish_thread_bytes();
}

/// Cores that have closed all their connections during shutdown.
static DRAINED: AtomicUsize = AtomicUsize::new(0);

async fn wait_for_shutdown(core: &Core) {
    while !core.node.shutting_down() {
        glommio::timer::sleep(Duration::from_millis(limits::SHUTDOWN_POLL_MS)).await;
    }
}

async fn accept_loop(core: std::rc::Rc<Core>, listener: TcpListener, tls: bool) {
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            wait_for_shutdown(&core).await;
            None
        })
        .await;
        let stream = match accepted {
            None => return,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                tracing::warn!("accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        core.bump(|s| s.total_connections_received += 1);
        let maxclients = core.config.borrow().maxclients;
        if !core.node.client_opened(maxclients) {
            core.bump(|s| s.rejected_connections += 1);
            // One line a second at most: a flood of refusals is one event.
            let now = core.now_ms();
            if now >= MAXCLIENTS_LOGGED_MS.get() + 1000 {
                MAXCLIENTS_LOGGED_MS.set(now);
                tracing::warn!(
                    maxclients,
                    "max number of clients reached: refusing connections"
                );
            }
            glommio::spawn_local(async move {
                use futures_lite::AsyncWriteExt;
                let mut stream = stream;
                let _ = stream
                    .write_all(b"-ERR max number of clients reached\r\n")
                    .await;
                let _ = stream.close().await;
            })
            .detach();
            continue;
        }
        if tls {
            glommio::spawn_local(serve_tls(core.clone(), stream)).detach();
        } else {
            glommio::spawn_local(conn::serve(core.clone(), stream)).detach();
        }
    }
}

/// A connection on the TLS port: the handshake (within `limits::TLS_HANDSHAKE_MS`), then
/// the same service as plaintext.
async fn serve_tls(core: std::rc::Rc<Core>, stream: glommio::net::TcpStream) {
    let (Ok(addr), Ok(laddr)) = (stream.peer_addr(), stream.local_addr()) else {
        core.node.client_closed();
        return;
    };
    let _ = stream.set_nodelay(true);
    let Some(config) = core.node.tls.load_full() else {
        core.node.client_closed();
        return;
    };
    let handshake = futures_rustls::TlsAcceptor::from(config).accept(stream);
    let done = futures_lite::future::or(async { Some(handshake.await) }, async {
        glommio::timer::sleep(Duration::from_millis(limits::TLS_HANDSHAKE_MS)).await;
        None
    })
    .await;
    match done {
        Some(Ok(tls)) => conn::serve_stream(core, tls, addr, laddr, true).await,
        Some(Err(e)) => {
            tracing::debug!(%addr, "TLS handshake failed: {e}");
            core.bump(|s| s.tls_handshake_failures += 1);
            core.node.client_closed();
        }
        None => {
            tracing::debug!(%addr, "TLS handshake timed out");
            core.bump(|s| s.tls_handshake_failures += 1);
            core.node.client_closed();
        }
    }
}

/// Closes this core's connections (each finishes the replies it is writing) and waits a
/// bounded time for them to go.
async fn drain(core: &Core) {
    core.kill_clients(None, |_| true);
    let deadline = std::time::Instant::now() + Duration::from_millis(limits::SHUTDOWN_DRAIN_MS);
    while !core.clients.borrow().is_empty() && std::time::Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}
