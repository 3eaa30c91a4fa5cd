//! Replication, the replica's side: one task (on core 0) that connects to the primary,
//! asks to resume from the offsets it has applied, and applies what the primary streams —
//! snapshot images on a full sync, then ring records — to this node's shards, each key on
//! the core its slot maps to here (the primary's core count may differ).
//!
//! Offsets are the primary's ring positions, one per primary shard; they advance only
//! after the records up to them are applied here, and they are what the replica
//! acknowledges. Records are applied as logged (results, not commands), with expiry taken
//! from the primary: this node never expires or evicts a replicated key on its own.

use super::core::Core;
use super::replication::Link;
use super::tls::PeerStream;
use crate::limits;
use crate::repl::{self, Frame, SyncReply, SyncRequest};
use crate::slot::key_core;
use futures_lite::AsyncReadExt;
use glommio::net::TcpStream;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_shards::snapshot::{self, Frame as SnapFrame};
use tessera_shards::wal::Op;

/// Runs until a REPLICAOF replaces `generation` or the node shuts down.
pub async fn run(core: Rc<Core>, generation: u64, host: String, port: u16) {
    let r = &core.node.repl;
    r.running.store(generation, Ordering::Release);
    let current = || r.generation.load(Ordering::Acquire) == generation;
    let mut retry = limits::REPL_RETRY_MIN_MS;
    while current() && !core.node.shutting_down() {
        r.set_link(Link::Connecting);
        let started = Instant::now();
        match follow(&core, generation, &host, port).await {
            Ok(()) => {}
            Err(e) => tracing::warn!(%host, port, "replication link: {e}"),
        }
        if !current() {
            break;
        }
        // A link that was streaming (100 ms at least: no spinning on one that breaks at once)
        // is tried again at once — a dead primary's refusal is then news for membership
        // within milliseconds; failed attempts back off.
        let was_up = r.link() == Link::Connected && started.elapsed() >= Duration::from_millis(100);
        r.set_link(Link::Connect);
        if was_up {
            retry = limits::REPL_RETRY_MIN_MS;
            continue;
        }
        let until = Instant::now() + Duration::from_millis(retry);
        while current() && Instant::now() < until && !core.node.shutting_down() {
            glommio::timer::sleep(Duration::from_millis(limits::REPL_READ_POLL_MS)).await;
        }
        retry = (retry * 2).min(limits::REPL_RETRY_MAX_MS);
    }
    let _ = r
        .running
        .compare_exchange(generation, 0, Ordering::AcqRel, Ordering::Acquire);
}

async fn resolve(host: &str, port: u16) -> Result<std::net::SocketAddr, String> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok((ip, port).into());
    }
    let name = host.to_string();
    glommio::executor()
        .spawn_blocking(move || {
            use std::net::ToSocketAddrs;
            (name.as_str(), port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
        })
        .await
        .ok_or_else(|| format!("cannot resolve {host}"))
}

/// The connection's read side: a buffer that grows to hold one whole frame.
struct Reader {
    buf: Vec<u8>,
    start: usize,
    filled: usize,
}

impl Reader {
    /// Reads more, waiting at most [`limits::REPL_READ_POLL_MS`]; `Ok(false)` on a timeout.
    async fn fill(&mut self, stream: &mut PeerStream) -> Result<bool, String> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.filled, 0);
            self.filled -= self.start;
            self.start = 0;
        }
        if self.filled == self.buf.len() {
            let grown = (self.buf.len() * 2).min(repl::FRAME_MAX_BYTES + repl::FRAME_HEADER_BYTES);
            if grown == self.buf.len() {
                return Err("a frame larger than the largest allowed".into());
            }
            self.buf.resize(grown, 0);
        }
        let read = futures_lite::future::or(
            async { stream.read(&mut self.buf[self.filled..]).await.map(Some) },
            async {
                glommio::timer::sleep(Duration::from_millis(limits::REPL_READ_POLL_MS)).await;
                Ok(None)
            },
        )
        .await
        .map_err(|e| format!("read: {e}"))?;
        match read {
            None => Ok(false),
            Some(0) => Err("the primary closed the connection".into()),
            Some(n) => {
                self.filled += n;
                Ok(true)
            }
        }
    }

    fn line(&mut self) -> Result<Option<String>, String> {
        let data = &self.buf[self.start..self.filled];
        match data.windows(2).position(|w| w == b"\r\n") {
            Some(end) => {
                let text = String::from_utf8_lossy(&data[..end]).into_owned();
                self.start += end + 2;
                Ok(Some(text))
            }
            None if data.len() > limits::REPL_LINE_MAX_BYTES => {
                Err("the primary's answer line is too long".into())
            }
            None => Ok(None),
        }
    }

    fn frame(&mut self) -> Result<Option<Frame>, String> {
        match repl::decode(&self.buf[self.start..self.filled]).map_err(|e| e.to_string())? {
            Some((frame, used)) => {
                self.start += used;
                Ok(Some(frame))
            }
            None => Ok(None),
        }
    }
}

/// Where the stream stands.
struct Follow {
    replid: String,
    offsets: Vec<u64>,
    /// During a full sync: which shards' images are complete.
    imaged: Option<Vec<bool>>,
}

/// Connects to `addr` from this node's first bind address when that is a specific one, as
/// Redis binds its replication link: on a host with several addresses the primary (and any
/// firewall between) sees the replica's own address, not whichever the route picks.
async fn connect_from_bind(
    core: &Rc<Core>,
    addr: std::net::SocketAddr,
    limit: Duration,
) -> std::io::Result<TcpStream> {
    let source = core
        .config
        .borrow()
        .bind
        .first()
        .and_then(|b| b.parse::<std::net::IpAddr>().ok())
        .filter(|ip| !ip.is_unspecified() && ip.is_ipv4() == addr.is_ipv4());
    let Some(source) = source else {
        return Ok(TcpStream::connect_timeout(addr, limit).await?);
    };
    let fd = glommio::executor()
        .spawn_blocking(move || -> std::io::Result<std::os::fd::OwnedFd> {
            use socket2::{Domain, Protocol, Socket, Type};
            let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
            s.bind(&std::net::SocketAddr::new(source, 0).into())?;
            s.connect_timeout(&addr.into(), limit)?;
            Ok(s.into())
        })
        .await?;
    use std::os::fd::{FromRawFd, IntoRawFd};
    // SAFETY: the descriptor is a connected TCP socket this function owns and hands over.
    Ok(unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) })
}

/// Connects to the primary, authenticates with `masterauth`, sends `words` and reads its
/// one-line answer, within `timeout_ms`; `Ok(None)` if `stopped()` says so first.
async fn ask(
    core: &Rc<Core>,
    host: &str,
    port: u16,
    words: &[Vec<u8>],
    timeout_ms: u64,
    stopped: impl Fn() -> bool,
) -> Result<Option<(PeerStream, Reader, String)>, String> {
    let addr = resolve(host, port).await?;
    let limit = Duration::from_millis(limits::REPL_CONNECT_TIMEOUT_MS.min(timeout_ms));
    let stream = match connect_from_bind(core, addr, limit).await {
        Ok(stream) => stream,
        Err(e) => {
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                // Nothing listens there: in a cluster, membership suspects the node now.
                if let Some(h) = core.node.cluster.get() {
                    let _ = h.request(super::control::Request::LinkRefused { client: addr });
                }
            }
            return Err(format!("cannot connect to {addr}: {e}"));
        }
    };
    let _ = stream.set_nodelay(true);
    // tls-replication: the primary's port is its TLS port (CLUSTER's table gives that one).
    let tls = core
        .config
        .borrow()
        .tls_replication
        .then(|| core.node.tls_client.load_full())
        .flatten();
    let mut stream = PeerStream::dial(stream, addr.ip(), tls)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let mut reader = Reader {
        buf: vec![0u8; limits::READ_CHUNK_BYTES],
        start: 0,
        filled: 0,
    };
    let auth = core.config.borrow().masterauth.clone();
    let mut request = Vec::new();
    if let Some(pass) = &auth {
        crate::resp::request::encode_into(
            [b"AUTH".as_slice(), pass.as_bytes()].into_iter(),
            &mut request,
        );
    }
    crate::resp::request::encode_into(words.iter().map(Vec::as_slice), &mut request);
    super::tls::write_flushed(&mut stream, &request)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let mut lines = Vec::new();
    let want_lines = if auth.is_some() { 2 } else { 1 };
    let command = String::from_utf8_lossy(&words[0]).into_owned();
    while lines.len() < want_lines {
        match reader.line()? {
            Some(l) => lines.push(l),
            None => {
                if stopped() {
                    return Ok(None);
                }
                if Instant::now() > deadline {
                    return Err(format!("no answer to {command} in time"));
                }
                reader.fill(&mut stream).await?;
            }
        }
    }
    if want_lines == 2 && lines[0] != "+OK" {
        return Err(format!("the primary refused masterauth: {}", lines[0]));
    }
    let answer = lines.pop().expect("a line");
    Ok(Some((stream, reader, answer)))
}

/// A manual failover's first step: asks the primary to hold its writes for `ms` and
/// returns its ring heads once the writes already admitted are applied (REPLPAUSE).
pub async fn pause_primary(
    core: &Rc<Core>,
    host: &str,
    port: u16,
    ms: u64,
) -> Result<Vec<u64>, String> {
    let words = [b"REPLPAUSE".to_vec(), ms.to_string().into_bytes()];
    let (_, _, answer) = ask(core, host, port, &words, ms, || false)
        .await?
        .ok_or("stopped")?;
    answer
        .strip_prefix("+PAUSED ")
        .and_then(|heads| heads.split(',').map(|h| h.parse().ok()).collect())
        .ok_or_else(|| format!("the primary answered REPLPAUSE with {answer}"))
}

/// Lets the primary's held writes go (REPLPAUSE 0), when a manual failover gives up.
pub async fn unpause_primary(core: &Rc<Core>, host: &str, port: u16) -> Result<(), String> {
    let words = [b"REPLPAUSE".to_vec(), b"0".to_vec()];
    let timeout = limits::REPL_CONNECT_TIMEOUT_MS;
    match ask(core, host, port, &words, timeout, || false).await? {
        Some((_, _, answer)) if answer == "+OK" => Ok(()),
        Some((_, _, answer)) => Err(format!("the primary answered REPLPAUSE 0 with {answer}")),
        None => Err("stopped".into()),
    }
}

/// One connection to the primary: handshake, then frames until it fails or is stopped.
async fn follow(core: &Rc<Core>, generation: u64, host: &str, port: u16) -> Result<(), String> {
    let r = &core.node.repl;
    let timeout_ms = core.config.borrow().repl_timeout * 1000;
    let (announce_ip, listening_port) = {
        let c = core.config.borrow();
        // In a cluster the replica announces the address it has there.
        let cluster_ip = if c.cluster_enabled {
            c.cluster_announce_ip
                .clone()
                .or_else(|| c.bind.first().cloned())
                .filter(|ip| ip != "0.0.0.0" && ip != "::")
        } else {
            None
        };
        (c.replica_announce_ip.clone().or(cluster_ip), c.port)
    };
    // What this node follows, or had when it started following (to continue it here).
    let had = r.stream_had();
    let ask_for = SyncRequest {
        replid: had.as_ref().map(|f| f.0.clone()),
        offsets: had.as_ref().map(|f| f.1.clone()).unwrap_or_default(),
        listening_port,
        announce_ip,
    };
    let mut words: Vec<Vec<u8>> = vec![b"REPLSYNC".to_vec()];
    words.extend(ask_for.to_args().into_iter().map(String::into_bytes));
    let stopped = || r.generation.load(Ordering::Acquire) != generation;
    let Some((mut stream, mut reader, answer)) =
        ask(core, host, port, &words, timeout_ms, stopped).await?
    else {
        return Ok(());
    };
    let reply = answer
        .strip_prefix('+')
        .and_then(SyncReply::parse)
        .ok_or_else(|| format!("the primary answered REPLSYNC with {answer}"))?;
    let mut state = match reply {
        SyncReply::Continue {
            replid,
            shards,
            from,
        } => {
            let offsets = match (from, &had) {
                // The primary followed the stream this node had and goes on from its own
                // positions of the moment it was promoted.
                (Some(from), Some(_)) => {
                    tracing::info!(%host, port, "replication continues the stream this node had under a new primary");
                    from
                }
                (None, Some(f)) if f.0 == replid && f.1.len() == shards => {
                    tracing::info!(%host, port, "replication resumed where it stopped");
                    f.1.clone()
                }
                _ => {
                    return Err(
                        "the primary offered to continue a stream this node did not follow".into(),
                    )
                }
            };
            r.followed
                .store(Some(Arc::new((replid.clone(), offsets.clone()))));
            r.forget_resume();
            r.set_link(Link::Connected);
            Follow {
                replid,
                offsets,
                imaged: None,
            }
        }
        SyncReply::FullSync { replid, shards } => {
            tracing::info!(%host, port, shards, "full sync from the primary");
            r.followed.store(None);
            // The data is about to go: there is nothing left to continue.
            r.forget_resume();
            r.set_link(Link::Sync);
            Follow {
                replid,
                offsets: vec![0; shards],
                imaged: Some(vec![false; shards]),
            }
        }
    };
    let mut header_seen = state.imaged.is_none();
    let mut acked = state.offsets.clone();
    let mut last_ack = Instant::now();
    r.last_io_ms.store(core.now_ms(), Ordering::Relaxed);
    loop {
        while let Some(frame) = reader.frame()? {
            if r.generation.load(Ordering::Acquire) != generation {
                return Ok(());
            }
            r.last_io_ms.store(core.now_ms(), Ordering::Relaxed);
            match frame {
                Frame::Header {
                    replid,
                    shards,
                    databases,
                } => {
                    if header_seen
                        || replid != state.replid
                        || shards as usize != state.offsets.len()
                    {
                        return Err("an unexpected full-sync header".into());
                    }
                    let ours = core.config.borrow().databases;
                    if databases as usize > ours {
                        return Err(format!(
                            "the primary has {databases} databases, this node {ours}: raise `databases`"
                        ));
                    }
                    header_seen = true;
                    empty_all(core).await;
                }
                Frame::Snapshot { shard, bytes } => {
                    let imaged = state
                        .imaged
                        .as_ref()
                        .ok_or("a snapshot outside a full sync")?;
                    if !header_seen || imaged.get(shard as usize) != Some(&false) {
                        return Err(format!("an unexpected snapshot chunk for shard {shard}"));
                    }
                    let frames = snapshot::decode_frames(&bytes).map_err(|e| e.to_string())?;
                    let mut ops = Vec::with_capacity(frames.len());
                    for f in frames {
                        match f {
                            SnapFrame::Entry {
                                db,
                                key,
                                value,
                                expire_at_ms,
                            } => ops.push(Op::Set {
                                db,
                                key,
                                value,
                                expire_at_ms,
                            }),
                            SnapFrame::CoreEnd { .. } => {}
                            _ => return Err("an unexpected frame inside a snapshot chunk".into()),
                        }
                    }
                    apply(core, ops, state.offsets.len(), shard as usize).await?;
                }
                Frame::SnapshotEnd { shard, seq } => {
                    let imaged = state
                        .imaged
                        .as_mut()
                        .ok_or("a snapshot end outside a full sync")?;
                    match imaged.get_mut(shard as usize) {
                        Some(done @ false) => *done = true,
                        _ => return Err(format!("an unexpected snapshot end for shard {shard}")),
                    }
                    state.offsets[shard as usize] = seq;
                    if imaged.iter().all(|d| *d) {
                        state.imaged = None;
                        r.followed.store(Some(Arc::new((
                            state.replid.clone(),
                            state.offsets.clone(),
                        ))));
                        r.set_link(Link::Connected);
                        tracing::info!("full sync done; following the primary's rings");
                    }
                }
                Frame::Records { shard, bytes } => {
                    let s = shard as usize;
                    if s >= state.offsets.len() || state.imaged.as_ref().is_some_and(|im| !im[s]) {
                        return Err(format!("records for shard {shard} before its image"));
                    }
                    let records = tessera_shards::aof::decode_records(&bytes)
                        .map_err(|e| format!("shard {shard}: {e}"))?;
                    let Some(&(first, _)) = records.first() else {
                        continue;
                    };
                    if first != state.offsets[s] + 1 {
                        return Err(format!(
                            "shard {shard}: record {first} follows {} (a gap)",
                            state.offsets[s]
                        ));
                    }
                    let last = records.last().expect("not empty").0;
                    apply(
                        core,
                        records.into_iter().map(|(_, op)| op).collect(),
                        state.offsets.len(),
                        s,
                    )
                    .await?;
                    state.offsets[s] = last;
                    if state.imaged.is_none() {
                        r.followed.store(Some(Arc::new((
                            state.replid.clone(),
                            state.offsets.clone(),
                        ))));
                    }
                }
                Frame::Ping { heads } => {
                    r.primary_heads.store(Arc::new(heads));
                }
                Frame::Ack { .. } => return Err("the primary sent an acknowledgement".into()),
            }
        }
        if state.imaged.is_none()
            && (acked != state.offsets
                || last_ack.elapsed() >= Duration::from_millis(limits::REPL_PING_INTERVAL_MS))
        {
            let mut out = Vec::new();
            repl::encode(
                &Frame::Ack {
                    offsets: state.offsets.clone(),
                },
                &mut out,
            );
            super::tls::write_flushed(&mut stream, &out)
                .await
                .map_err(|e| format!("write: {e}"))?;
            acked.clone_from(&state.offsets);
            last_ack = Instant::now();
        }
        if r.generation.load(Ordering::Acquire) != generation || core.node.shutting_down() {
            return Ok(());
        }
        if !reader.fill(&mut stream).await? {
            let idle = core
                .now_ms()
                .saturating_sub(r.last_io_ms.load(Ordering::Relaxed));
            if idle > timeout_ms {
                return Err(format!(
                    "nothing from the primary for {idle} ms (repl-timeout)"
                ));
            }
        }
    }
}

/// Empties every database on every core, logged as flushes.
async fn empty_all(core: &Rc<Core>) {
    let databases = core.config.borrow().databases;
    core.invoke_all(None, move |c| {
        let mut shard = c.shard.borrow_mut();
        for db in 0..databases {
            shard.apply(&Op::FlushDb { db: db as u32 });
        }
    })
    .await;
}

/// One change as a core applies it.
enum Change {
    Op(Op),
    /// The primary's shard `shard` of `shards` emptied database `db`: remove the keys here
    /// that live on that shard there (the core counts differ).
    FlushPart {
        db: u32,
        shards: usize,
        shard: usize,
    },
}

/// Applies a primary shard's changes, each key on its core here, in order per core.
async fn apply(
    core: &Rc<Core>,
    ops: Vec<Op>,
    primary_shards: usize,
    primary_shard: usize,
) -> Result<(), String> {
    let databases = core.config.borrow().databases as u32;
    let mut per_core: Vec<Vec<Change>> = (0..core.cores).map(|_| Vec::new()).collect();
    for op in ops {
        let (db, key) = match &op {
            Op::Set { db, key, .. } | Op::Del { db, key, .. } | Op::Expire { db, key, .. } => {
                (*db, Some(key))
            }
            Op::FlushDb { db } => (*db, None),
        };
        if db >= databases {
            return Err(format!(
                "a change to database {db}; this node has {databases}"
            ));
        }
        match key {
            Some(k) => per_core[key_core(k, core.cores)].push(Change::Op(op)),
            None if primary_shards == core.cores => per_core[primary_shard].push(Change::Op(op)),
            None => {
                for changes in &mut per_core {
                    changes.push(Change::FlushPart {
                        db,
                        shards: primary_shards,
                        shard: primary_shard,
                    });
                }
            }
        }
    }
    let mut pending = Vec::new();
    for (c, changes) in per_core.into_iter().enumerate() {
        if changes.is_empty() {
            continue;
        }
        pending.push(
            core.start_on(c, None, move |cc| {
                let mut shard = cc.shard.borrow_mut();
                for change in changes {
                    match change {
                        Change::Op(op) => shard.apply(&op),
                        Change::FlushPart {
                            db,
                            shards,
                            shard: part,
                        } => {
                            let d = shard.db(db as usize);
                            let doomed: Vec<Vec<u8>> = d
                                .live_items(0)
                                .filter(|item| key_core(item.key(), shards) == part)
                                .map(|item| item.key().to_vec())
                                .collect();
                            for key in doomed {
                                d.remove(&key, 0);
                            }
                        }
                    }
                }
            })
            .await,
        );
    }
    for p in pending {
        p.wait().await;
    }
    Ok(())
}
