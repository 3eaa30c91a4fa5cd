//! Replication, the primary's side and what both sides share: the replicas a primary
//! streams to, the replication id, the replica's link state, and the commands that read
//! them (WAIT, ROLE, INFO replication, REPLICAOF).
//!
//! A replica connects to the client port and sends `REPLSYNC` (see [`crate::repl`]); the
//! core that accepted the connection turns it into a stream: a full sync (every shard's
//! forkless capture, one shard after another) unless the replica's offsets are all still in
//! the rings, then each shard's ring records from there on, read with a hop to the shard's
//! core, batched up to [`limits::REPL_BATCH_BYTES`]. The replica acknowledges what it has
//! applied; WAIT and `min-replicas-to-write` count those acknowledgements.
//!
//! Once a replica has connected, every ring keeps its records (as Redis keeps its backlog),
//! so a replica that reconnects within the rings' bounds (`wal-ring-entries`,
//! `wal-ring-bytes`) resumes where it stopped.

use super::core::Core;
use crate::cmd::Args;
use crate::limits;
use crate::repl::{self, Frame, SyncReply, SyncRequest};
use crate::resp::Out;
use arc_swap::{ArcSwap, ArcSwapOption};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tessera_shards::wal::WalError;

/// A replica's place in the primary's table.
pub struct ReplicaSlot {
    state: AtomicU8,
    /// The address it announced: IP and client port.
    addr: ArcSwapOption<(String, u16)>,
    /// What it has applied, per shard of this node.
    acked: Box<[AtomicU64]>,
    /// Node time (ms) of its last acknowledgement.
    last_ack_ms: AtomicU64,
    /// Records it had yet to apply at its last acknowledgement, over all shards.
    lag_entries: AtomicU64,
}

const FREE: u8 = 0;
const SYNCING: u8 = 1;
const ONLINE: u8 = 2;

/// The replica side's link to its primary, as ROLE and INFO name it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Link {
    Connect = 0,
    Connecting = 1,
    Sync = 2,
    Connected = 3,
}

impl Link {
    fn from_u8(v: u8) -> Link {
        match v {
            1 => Link::Connecting,
            2 => Link::Sync,
            3 => Link::Connected,
            _ => Link::Connect,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Link::Connect => "connect",
            Link::Connecting => "connecting",
            Link::Sync => "sync",
            Link::Connected => "connected",
        }
    }
}

/// What the node's cores share about replication.
pub struct Replication {
    /// This node's replication id; a new one whenever it becomes a primary.
    replid: ArcSwap<String>,
    /// The primary this node follows (host, port); `None` on a primary.
    primary: ArcSwapOption<(String, u16)>,
    /// Whether `primary` is set, read on every write command.
    following: AtomicBool,
    /// Bumped by every REPLICAOF: a replica task whose generation is stale stops.
    pub generation: AtomicU64,
    /// The generation of the replica task now running (0: none).
    pub running: AtomicU64,
    link: AtomicU8,
    /// Node time (ms) of the last frame from the primary.
    pub last_io_ms: AtomicU64,
    /// Replica side: the primary's replication id and the offsets applied, per primary shard.
    pub followed: ArcSwapOption<(String, Vec<u64>)>,
    /// Replica side: the primary's ring heads, from its last ping.
    pub primary_heads: ArcSwap<Vec<u64>>,
    /// Primary side: the replicas streamed to.
    slots: Box<[ReplicaSlot]>,
    pub full_syncs: AtomicU64,
    pub partial_syncs: AtomicU64,
    pub partial_refused: AtomicU64,
    /// Connections closed because `repl-ack-replicas` replicas did not acknowledge in time.
    pub ack_timeouts: AtomicU64,
    /// Primary side, after a promotion: the stream this node followed (replication id and
    /// offsets applied) and its own ring heads then. A replica that had exactly that much of
    /// the old stream goes on from those heads instead of syncing in full.
    continuation: ArcSwapOption<(String, Vec<u64>, Vec<u64>)>,
    /// Replica side, set when this node starts following: the stream it had (a replica's
    /// followed one, or a primary's own), to ask the new primary to continue.
    resume_from: ArcSwapOption<(String, Vec<u64>)>,
    /// Primary side: records that replicas returning from the old stream had and this node
    /// did not (lost to the failover, discarded by their full sync).
    pub discarded_records: AtomicU64,
    /// Replica side: READONLY connections sent to the primary for good (out of sync once).
    pub readonly_moved: AtomicU64,
    /// Primary side, a manual failover: writes wait until this node time (ms).
    pause_until_ms: AtomicU64,
    /// Writes admitted and not yet applied (see [`Replication::open_write`]).
    writes_open: AtomicU64,
}

impl Replication {
    pub fn new(shards: usize, seed: u64) -> Replication {
        Replication {
            replid: ArcSwap::from_pointee(repl::new_replid(seed)),
            primary: ArcSwapOption::empty(),
            following: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            running: AtomicU64::new(0),
            link: AtomicU8::new(Link::Connect as u8),
            last_io_ms: AtomicU64::new(0),
            followed: ArcSwapOption::empty(),
            primary_heads: ArcSwap::from_pointee(Vec::new()),
            slots: (0..limits::REPL_MAX_REPLICAS)
                .map(|_| ReplicaSlot {
                    state: AtomicU8::new(FREE),
                    addr: ArcSwapOption::empty(),
                    acked: (0..shards).map(|_| AtomicU64::new(0)).collect(),
                    last_ack_ms: AtomicU64::new(0),
                    lag_entries: AtomicU64::new(0),
                })
                .collect(),
            full_syncs: AtomicU64::new(0),
            partial_syncs: AtomicU64::new(0),
            partial_refused: AtomicU64::new(0),
            ack_timeouts: AtomicU64::new(0),
            continuation: ArcSwapOption::empty(),
            resume_from: ArcSwapOption::empty(),
            discarded_records: AtomicU64::new(0),
            readonly_moved: AtomicU64::new(0),
            pause_until_ms: AtomicU64::new(0),
            writes_open: AtomicU64::new(0),
        }
    }

    /// Admits a write that runs now, unless a manual failover holds writes (then the caller
    /// waits and asks again). An admitted write counts until [`Replication::close_write`],
    /// so a pause can wait for those already past this gate. (Both sides use `SeqCst`: a
    /// write either sees the pause or is seen by it.)
    pub fn open_write(&self, now_ms: u64) -> bool {
        self.writes_open.fetch_add(1, Ordering::SeqCst);
        if now_ms < self.pause_until_ms.load(Ordering::SeqCst) {
            self.writes_open.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// An admitted write has been applied (or its connection is gone).
    pub fn close_write(&self) {
        self.writes_open.fetch_sub(1, Ordering::SeqCst);
    }

    /// Whether writes are held now.
    pub fn writes_paused(&self, now_ms: u64) -> bool {
        now_ms < self.pause_until_ms.load(Ordering::SeqCst)
    }

    /// Holds writes until `until_ms` (node time); 0 lets them go.
    fn pause_writes(&self, until_ms: u64) {
        self.pause_until_ms.store(until_ms, Ordering::SeqCst);
    }

    pub fn replid(&self) -> Arc<String> {
        self.replid.load_full()
    }

    pub fn primary(&self) -> Option<Arc<(String, u16)>> {
        self.primary.load_full()
    }

    pub fn is_replica(&self) -> bool {
        self.following.load(Ordering::Acquire)
    }

    fn set_primary(&self, primary: Option<(String, u16)>) {
        if primary.is_some() {
            // A primary that became a replica lets its held writes go: routing sends them on.
            self.pause_writes(0);
        }
        self.following.store(primary.is_some(), Ordering::Release);
        self.primary.store(primary.map(Arc::new));
    }

    pub fn link(&self) -> Link {
        Link::from_u8(self.link.load(Ordering::Relaxed))
    }

    pub fn set_link(&self, link: Link) {
        self.link.store(link as u8, Ordering::Relaxed);
    }

    /// Whether this replica is in sync: fully synced, at most `max_entries` records behind
    /// the primary's heads as last reported, and heard from within `max_ms`.
    pub fn in_sync(&self, now_ms: u64, max_entries: u64, max_ms: u64) -> bool {
        let Some(f) = self.followed.load_full() else {
            return false;
        };
        let heads = self.primary_heads.load();
        let behind: u64 = heads
            .iter()
            .zip(f.1.iter().chain(std::iter::repeat(&0)))
            .map(|(h, o)| h.saturating_sub(*o))
            .sum();
        behind <= max_entries
            && now_ms.saturating_sub(self.last_io_ms.load(Ordering::Relaxed)) <= max_ms
    }

    /// The stream to ask a new primary to continue: what this node follows, or had when
    /// it started following (see `resume_from`).
    pub fn stream_had(&self) -> Option<(String, Vec<u64>)> {
        match self.followed.load_full() {
            Some(f) => Some((f.0.clone(), f.1.clone())),
            None => self
                .resume_from
                .load_full()
                .map(|r| (r.0.clone(), r.1.clone())),
        }
    }

    /// A new primary continued the stream: what it had is no longer needed.
    pub fn forget_resume(&self) {
        self.resume_from.store(None);
    }

    /// What this replica has applied, once fully synced.
    pub fn applied(&self) -> Option<Vec<u64>> {
        self.followed.load_full().map(|f| f.1.clone())
    }

    fn attach(&self, addr: (String, u16)) -> Option<usize> {
        let i = self.slots.iter().position(|s| {
            s.state
                .compare_exchange(FREE, SYNCING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        })?;
        let slot = &self.slots[i];
        slot.addr.store(Some(Arc::new(addr)));
        for a in slot.acked.iter() {
            a.store(0, Ordering::Relaxed);
        }
        slot.lag_entries.store(0, Ordering::Relaxed);
        Some(i)
    }

    fn detach(&self, i: usize) {
        self.slots[i].addr.store(None);
        self.slots[i].state.store(FREE, Ordering::Release);
    }

    /// Replicas that are streaming and acknowledged within `max_lag_ms` of `now_ms`
    /// (Redis's "good replicas" for `min-replicas-to-write`).
    pub fn good_replicas(&self, now_ms: u64, max_lag_ms: u64) -> usize {
        self.slots
            .iter()
            .filter(|s| {
                s.state.load(Ordering::Acquire) == ONLINE
                    && now_ms.saturating_sub(s.last_ack_ms.load(Ordering::Relaxed)) <= max_lag_ms
            })
            .count()
    }

    /// Replicas whose acknowledged offsets reach `targets` on every shard.
    pub fn acked_at_least(&self, targets: &[u64]) -> usize {
        self.slots
            .iter()
            .filter(|s| {
                s.state.load(Ordering::Acquire) == ONLINE
                    && targets
                        .iter()
                        .zip(s.acked.iter())
                        .all(|(t, a)| a.load(Ordering::Acquire) >= *t)
            })
            .count()
    }

    /// The replicas now attached: address, state, offsets acknowledged, last ack time.
    fn replicas(&self) -> Vec<ReplicaView> {
        self.slots
            .iter()
            .filter_map(|s| {
                let state = s.state.load(Ordering::Acquire);
                let addr = s.addr.load_full()?;
                (state != FREE).then(|| ReplicaView {
                    ip: addr.0.clone(),
                    port: addr.1,
                    online: state == ONLINE,
                    acked: s.acked.iter().map(|a| a.load(Ordering::Relaxed)).collect(),
                    last_ack_ms: s.last_ack_ms.load(Ordering::Relaxed),
                    lag_entries: s.lag_entries.load(Ordering::Relaxed),
                })
            })
            .collect()
    }
}

struct ReplicaView {
    ip: String,
    port: u16,
    online: bool,
    acked: Vec<u64>,
    last_ack_ms: u64,
    lag_entries: u64,
}

/// Each shard's ring: newest and oldest record held.
async fn ring_bounds(core: &Rc<Core>) -> Vec<(u64, u64)> {
    core.invoke_all(Some(super::mesh::BYPASS_LOCKS), |c| {
        let shard = c.shard.borrow();
        let w = shard.wal();
        (w.head(), w.tail())
    })
    .await
}

/// Serves a replica on a connection that sent `REPLSYNC`, until it goes away, falls off a
/// ring, or this node stops being a primary.
pub async fn serve_replica<S: super::conn::ClientStream>(
    core: &Rc<Core>,
    stream: &mut S,
    peer: Option<std::net::SocketAddr>,
    req: SyncRequest,
    killed: &Cell<bool>,
) {
    let node = &core.node;
    if node.repl.is_replica() {
        let _ = stream
            .write_all(b"-ERR this node is a replica: chained replication is not supported\r\n")
            .await;
        let _ = stream.flush().await;
        return;
    }
    let ip = req
        .announce_ip
        .clone()
        .or_else(|| peer.map(|p| p.ip().to_string()))
        .unwrap_or_default();
    let Some(slot) = node.repl.attach((ip.clone(), req.listening_port)) else {
        let msg = format!(
            "-ERR this primary already streams to {} replicas\r\n",
            limits::REPL_MAX_REPLICAS
        );
        let _ = stream.write_all(msg.as_bytes()).await;
        let _ = stream.flush().await;
        return;
    };
    // From now on every ring keeps its records for this replica and any that reconnects.
    core.invoke_all(Some(super::mesh::BYPASS_LOCKS), |c| {
        c.shard.borrow().wal_mut().set_keep_always(true)
    })
    .await;
    let outcome = stream_to(core, stream, slot, &req, killed).await;
    node.repl.detach(slot);
    match outcome {
        Ok(()) => tracing::info!(replica = %ip, port = req.listening_port, "replica stream ended"),
        Err(e) => {
            tracing::warn!(replica = %ip, port = req.listening_port, "replica stream ended: {e}")
        }
    }
}

async fn stream_to<S: super::conn::ClientStream>(
    core: &Rc<Core>,
    stream: &mut S,
    slot: usize,
    req: &SyncRequest,
    killed: &Cell<bool>,
) -> Result<(), String> {
    let node = &core.node;
    let shards = core.cores;
    let replid = node.repl.replid();
    let bounds = ring_bounds(core).await;
    let resumable = req.replid.as_deref() == Some(replid.as_str())
        && req.offsets.len() == shards
        && req
            .offsets
            .iter()
            .zip(&bounds)
            .all(|(off, (head, tail))| *off + 1 >= *tail && *off <= *head);
    // A replica with exactly the stream this node followed before its promotion goes on
    // from this node's ring heads of that moment.
    let continued = node.repl.continuation.load_full().and_then(|c| {
        let (old, had, heads) = &*c;
        (req.replid.as_deref() == Some(old.as_str())
            && req.offsets == *had
            && heads.len() == shards
            && heads
                .iter()
                .zip(&bounds)
                .all(|(off, (head, tail))| *off + 1 >= *tail && *off <= *head))
        .then(|| heads.clone())
    });
    let resumable = resumable || continued.is_some();
    if req.replid.is_some() && !resumable {
        node.repl.partial_refused.fetch_add(1, Ordering::Relaxed);
        // A node of the stream this one took over (its old primary, most likely) with
        // records this node never had: they go with its data in the full sync.
        if let Some(c) = node.repl.continuation.load_full() {
            let discarded: u64 = if req.replid.as_deref() == Some(c.0.as_str()) {
                req.offsets
                    .iter()
                    .zip(c.1.iter())
                    .map(|(theirs, ours)| theirs.saturating_sub(*ours))
                    .sum()
            } else {
                0
            };
            if discarded > 0 {
                node.repl
                    .discarded_records
                    .fetch_add(discarded, Ordering::Relaxed);
                tracing::warn!(
                    replica = %req.announce_ip.as_deref().unwrap_or("?"),
                    port = req.listening_port,
                    discarded,
                    "a replica returns with writes of the old stream this node never had: they are discarded (it syncs in full)"
                );
            }
        }
    }
    let io = |e: std::io::Error| format!("write: {e}");
    let mut next: Vec<u64>;
    if resumable {
        node.repl.partial_syncs.fetch_add(1, Ordering::Relaxed);
        let line = SyncReply::Continue {
            replid: replid.to_string(),
            shards,
            from: continued.clone(),
        }
        .line();
        stream.write_all(line.as_bytes()).await.map_err(io)?;
        stream.flush().await.map_err(io)?;
        let from = continued.unwrap_or_else(|| req.offsets.clone());
        next = from.iter().map(|o| o + 1).collect();
        for (i, off) in from.iter().enumerate() {
            node.repl.slots[slot].acked[i].store(*off, Ordering::Relaxed);
        }
    } else {
        node.repl.full_syncs.fetch_add(1, Ordering::Relaxed);
        let line = SyncReply::FullSync {
            replid: replid.to_string(),
            shards,
        }
        .line();
        stream.write_all(line.as_bytes()).await.map_err(io)?;
        next = full_sync(core, stream, &replid).await?;
    }
    node.repl.slots[slot]
        .last_ack_ms
        .store(core.now_ms(), Ordering::Relaxed);
    node.repl.slots[slot].state.store(ONLINE, Ordering::Release);
    tracing::info!(
        replica_slot = slot,
        partial = resumable,
        "replica in sync; streaming the rings"
    );
    let (mut r, mut w) = futures_lite::io::split(stream);
    let heads = Rc::new(Cell::new(0u64));
    let acks = read_acks(core, &mut r, slot, &heads);
    let records = stream_records(core, &mut w, &mut next, &heads, killed);
    futures_lite::future::or(acks, records).await
}

/// Sends every shard's image, one shard at a time, each as of the moment its capture
/// starts; returns the ring position each image stands at, plus one.
async fn full_sync<S: super::conn::ClientStream>(
    core: &Rc<Core>,
    stream: &mut S,
    replid: &str,
) -> Result<Vec<u64>, String> {
    let io = |e: std::io::Error| format!("write: {e}");
    let mut buf = Vec::new();
    repl::encode(
        &Frame::Header {
            replid: replid.to_string(),
            shards: core.cores as u32,
            databases: core.config.borrow().databases as u32,
        },
        &mut buf,
    );
    stream.write_all(&buf).await.map_err(io)?;
    let mut next = Vec::with_capacity(core.cores);
    for shard in 0..core.cores {
        let ticket = start_capture(core, shard).await?;
        let sent = send_image(core, stream, shard, ticket).await;
        if sent.is_err() {
            core.invoke_on(shard, None, move |c| {
                c.shard.borrow_mut().capture_abort(ticket)
            })
            .await;
        }
        sent?;
        buf.clear();
        repl::encode(
            &Frame::SnapshotEnd {
                shard: shard as u32,
                seq: ticket.seq,
            },
            &mut buf,
        );
        stream.write_all(&buf).await.map_err(io)?;
        // Out now (TLS holds what it encrypted until flushed).
        stream.flush().await.map_err(io)?;
        next.push(ticket.seq + 1);
    }
    Ok(next)
}

/// Starts a capture of `shard`, waiting while a save or rewrite holds its capture.
async fn start_capture(
    core: &Rc<Core>,
    shard: usize,
) -> Result<tessera_shards::shard::CaptureTicket, String> {
    let deadline =
        std::time::Instant::now() + Duration::from_secs(core.config.borrow().repl_timeout);
    loop {
        let now = core.now_ms();
        let started = core
            .invoke_on(shard, None, move |c| {
                c.shard.borrow_mut().capture_start(c.id, now).ok()
            })
            .await;
        if let Some(t) = started {
            return Ok(t);
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "shard {shard}'s capture stayed busy (a save or rewrite) past repl-timeout"
            ));
        }
        glommio::timer::sleep(Duration::from_millis(limits::REPL_CAPTURE_RETRY_MS)).await;
    }
}

async fn send_image<S: super::conn::ClientStream>(
    core: &Rc<Core>,
    stream: &mut S,
    shard: usize,
    ticket: tessera_shards::shard::CaptureTicket,
) -> Result<(), String> {
    let mut frame = Vec::new();
    loop {
        if core.node.shutting_down() {
            return Err("the server is shutting down".into());
        }
        let (chunk, done) = core
            .invoke_on(shard, None, move |c| {
                let mut s = c.shard.borrow_mut();
                let mut done = false;
                while !done && s.capture().pending_bytes() < limits::SNAPSHOT_CHUNK_BYTES {
                    done = s.capture_step(ticket, limits::SNAPSHOT_STEP_BYTES)?;
                }
                Ok::<_, tessera_shards::shard::CaptureLost>((s.capture_take(ticket)?, done))
            })
            .await
            .map_err(|_| format!("shard {shard}'s capture was lost"))?;
        if !chunk.is_empty() {
            frame.clear();
            repl::encode_raw_snapshot(shard as u32, &chunk, &mut frame);
            stream
                .write_all(&frame)
                .await
                .map_err(|e| format!("write: {e}"))?;
        }
        if done {
            return Ok(());
        }
    }
}

/// Reads the replica's acknowledgements until the connection ends.
async fn read_acks(
    core: &Rc<Core>,
    r: &mut (impl futures_lite::AsyncRead + Unpin),
    slot: usize,
    heads: &Cell<u64>,
) -> Result<(), String> {
    let s = &core.node.repl.slots[slot];
    let mut buf = vec![0u8; limits::REPL_ACK_BUFFER_BYTES];
    let mut filled = 0;
    loop {
        let n = r
            .read(&mut buf[filled..])
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the replica closed the connection".into());
        }
        filled += n;
        let mut at = 0;
        while let Some((frame, used)) = repl::decode(&buf[at..filled]).map_err(|e| e.to_string())? {
            at += used;
            let Frame::Ack { offsets } = frame else {
                return Err("the replica sent something other than an acknowledgement".into());
            };
            if offsets.len() != s.acked.len() {
                return Err(format!(
                    "the replica acknowledged {} shards, this node has {}",
                    offsets.len(),
                    s.acked.len()
                ));
            }
            let mut total = 0;
            for (a, o) in s.acked.iter().zip(&offsets) {
                a.store(*o, Ordering::Release);
                total += o;
            }
            s.lag_entries
                .store(heads.get().saturating_sub(total), Ordering::Relaxed);
            s.last_ack_ms.store(core.now_ms(), Ordering::Relaxed);
        }
        buf.copy_within(at..filled, 0);
        filled -= at;
        if filled == buf.len() {
            return Err("an acknowledgement larger than the ack buffer".into());
        }
    }
}

/// Streams every shard's new records to the replica; pings when there are none.
async fn stream_records(
    core: &Rc<Core>,
    w: &mut (impl futures_lite::AsyncWrite + Unpin),
    next: &mut [u64],
    heads_total: &Cell<u64>,
    killed: &Cell<bool>,
) -> Result<(), String> {
    let mut buf = Vec::new();
    let mut last_sent = std::time::Instant::now();
    loop {
        if core.node.shutting_down() {
            return Ok(());
        }
        if killed.get() {
            return Err("killed by CLIENT KILL".into());
        }
        if core.node.repl.is_replica() {
            return Err("this node became a replica".into());
        }
        let mut sent = false;
        let mut heads = Vec::with_capacity(next.len());
        for (shard, from) in next.iter_mut().enumerate() {
            let at = *from;
            let (read, head) = core
                .invoke_on(shard, Some(super::mesh::BYPASS_LOCKS), move |c| {
                    let shard = c.shard.borrow();
                    let w = shard.wal();
                    let mut out = Vec::new();
                    let read = w
                        .read_framed_from(at, limits::REPL_BATCH_BYTES, &mut out)
                        .map(|last| last.map(|l| (l, out)));
                    (read, w.head())
                })
                .await;
            heads.push(head);
            match read {
                Ok(Some((last, records))) => {
                    buf.clear();
                    repl::encode(
                        &Frame::Records {
                            shard: shard as u32,
                            bytes: records,
                        },
                        &mut buf,
                    );
                    w.write_all(&buf).await.map_err(|e| format!("write: {e}"))?;
                    *from = last + 1;
                    sent = true;
                }
                Ok(None) => {}
                Err(WalError::FellBehind { wanted, oldest }) => {
                    return Err(format!(
                        "the replica fell off shard {shard}'s ring (wanted {wanted}, oldest {oldest}); it must sync in full"
                    ))
                }
                Err(e) => return Err(format!("shard {shard}: {e}")),
            }
        }
        heads_total.set(heads.iter().sum());
        if sent {
            // The heads go after every round, so the replica knows how far behind it is.
            buf.clear();
            repl::encode(&Frame::Ping { heads }, &mut buf);
            w.write_all(&buf).await.map_err(|e| format!("write: {e}"))?;
            last_sent = std::time::Instant::now();
            w.flush().await.map_err(|e| format!("write: {e}"))?;
            continue;
        }
        if last_sent.elapsed() >= Duration::from_millis(limits::REPL_PING_INTERVAL_MS) {
            buf.clear();
            repl::encode(&Frame::Ping { heads }, &mut buf);
            w.write_all(&buf).await.map_err(|e| format!("write: {e}"))?;
            w.flush().await.map_err(|e| format!("write: {e}"))?;
            last_sent = std::time::Instant::now();
        }
        glommio::timer::sleep(Duration::from_millis(limits::REPL_POLL_INTERVAL_MS)).await;
    }
}

/// `WAIT numreplicas timeout`: blocks until `numreplicas` replicas have acknowledged every
/// write made before it, on every shard, or `timeout` ms pass (0: no limit); replies with
/// the number that had.
pub async fn wait(core: &Rc<Core>, args: &Args<'_>, o: &mut Out<'_>) {
    wait_for(core, args, o, true).await
}

/// WAIT inside a transaction: counts the replicas that have everything, without blocking.
pub async fn wait_now(core: &Rc<Core>, args: &Args<'_>, o: &mut Out<'_>) {
    wait_for(core, args, o, false).await
}

async fn wait_for(core: &Rc<Core>, args: &Args<'_>, o: &mut Out<'_>, block: bool) {
    use crate::cmd::parse::int;
    let (Some(want), Some(timeout)) = (int(args.get(1)), int(args.get(2))) else {
        return o.error(crate::cmd::errors::NOT_INTEGER);
    };
    if timeout < 0 {
        return o.error("ERR timeout is negative");
    }
    if core.node.repl.is_replica() {
        return o.error("ERR WAIT cannot be used with replica instances. Please also note that since Redis 4.0 if a replica is configured to be writable (which is not the default) writes to replicas are just local and are not propagated.");
    }
    let targets: Vec<u64> = ring_bounds(core).await.iter().map(|(h, _)| *h).collect();
    let deadline =
        (timeout > 0).then(|| std::time::Instant::now() + Duration::from_millis(timeout as u64));
    loop {
        let acked = core.node.repl.acked_at_least(&targets);
        if !block
            || acked as i64 >= want
            || deadline.is_some_and(|d| std::time::Instant::now() >= d)
        {
            return o.int(acked as i64);
        }
        glommio::timer::sleep(Duration::from_millis(limits::REPL_POLL_INTERVAL_MS)).await;
    }
}

/// Under `repl-ack-replicas k`: waits until `k` replicas have every write made so far, at
/// most `repl-ack-timeout` ms. False when the time ran out (the replies must not go out).
pub async fn await_acks(core: &Rc<Core>) -> bool {
    let (k, timeout) = {
        let c = core.config.borrow();
        (c.repl_ack_replicas, c.repl_ack_timeout)
    };
    if k == 0 || core.node.repl.is_replica() {
        return true;
    }
    let targets: Vec<u64> = ring_bounds(core).await.iter().map(|(h, _)| *h).collect();
    let deadline =
        (timeout > 0).then(|| std::time::Instant::now() + Duration::from_millis(timeout));
    loop {
        if core.node.repl.acked_at_least(&targets) >= k {
            return true;
        }
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            core.node.repl.ack_timeouts.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        glommio::timer::sleep(Duration::from_millis(limits::REPL_POLL_INTERVAL_MS)).await;
    }
}

/// `REPLPAUSE ms`, sent by a replica starting a manual CLUSTER FAILOVER: holds this
/// primary's writes for `ms` (at most [`limits::REPL_MANUAL_FAILOVER_MS`]), waits until the
/// writes already admitted are applied, and answers `+PAUSED <head>,...` — every shard's
/// ring head, which the replica reaches before it stands. `REPLPAUSE 0` lets writes go.
pub async fn replpause(core: &Rc<Core>, args: &Args<'_>, o: &mut Out<'_>) {
    let Some(ms) = crate::cmd::parse::int(args.get(1)).filter(|ms| *ms >= 0) else {
        return o.error("ERR REPLPAUSE wants a pause in milliseconds, 0 or more");
    };
    let r = &core.node.repl;
    if r.is_replica() {
        return o.error("ERR REPLPAUSE is sent to a primary");
    }
    if ms == 0 {
        r.pause_writes(0);
        tracing::info!("manual failover: writes let go");
        return o.ok();
    }
    let ms = (ms as u64).min(limits::REPL_MANUAL_FAILOVER_MS);
    let until = core.now_ms() + ms;
    r.pause_writes(until);
    tracing::info!(
        ms,
        "manual failover: writes held while a replica catches up"
    );
    while r.writes_open.load(Ordering::SeqCst) > 0 {
        if core.now_ms() >= until {
            r.pause_writes(0);
            return o.error("ERR the writes under way did not finish within the pause");
        }
        glommio::timer::sleep(Duration::from_millis(limits::REPL_POLL_INTERVAL_MS)).await;
    }
    let heads: Vec<String> = ring_bounds(core)
        .await
        .iter()
        .map(|(h, _)| h.to_string())
        .collect();
    o.simple(&format!("PAUSED {}", heads.join(",")));
}

/// A manual CLUSTER FAILOVER's first half, on a replica: asks the primary to hold its
/// writes (REPLPAUSE) and waits until this node has applied everything the primary had by
/// then. Returns the primary's address, to let its writes go if the failover gives up.
pub async fn catch_up_held(
    core: &Rc<Core>,
    deadline: std::time::Instant,
) -> Result<(String, u16), String> {
    let r = &core.node.repl;
    let Some(p) = r.primary() else {
        return Err("ERR You should send CLUSTER FAILOVER to a replica".into());
    };
    if r.applied().is_none() {
        return Err("ERR this replica has not completed a full sync".into());
    }
    if r.link() != Link::Connected {
        return Err("ERR Master is down or failed, please use CLUSTER FAILOVER FORCE".into());
    }
    let (host, port) = (p.0.clone(), p.1);
    let hold = limits::REPL_MANUAL_FAILOVER_MS;
    let heads = super::replica::pause_primary(core, &host, port, hold)
        .await
        .map_err(|e| format!("ERR the primary did not hold its writes: {e}"))?;
    tracing::info!(%host, port, ?heads, "manual failover: the primary holds its writes");
    loop {
        let caught_up = r
            .applied()
            .is_some_and(|a| a.len() == heads.len() && a.iter().zip(&heads).all(|(a, h)| a >= h));
        if caught_up {
            return Ok((host, port));
        }
        let same_primary = r.primary().is_some_and(|q| *q == *p);
        if std::time::Instant::now() >= deadline || !same_primary {
            let _ = super::replica::unpause_primary(core, &host, port).await;
            return Err(
                "ERR manual failover timed out: this replica did not catch up with its primary"
                    .into(),
            );
        }
        glommio::timer::sleep(Duration::from_millis(limits::REPL_POLL_INTERVAL_MS)).await;
    }
}

/// `ROLE`, as Redis answers it.
pub async fn role(core: &Rc<Core>, o: &mut Out<'_>) {
    let r = &core.node.repl;
    match r.primary() {
        Some(p) => {
            let offset: u64 = r.followed.load().as_ref().map_or(0, |f| f.1.iter().sum());
            o.array(5);
            o.bulk(b"slave");
            o.bulk(p.0.as_bytes());
            o.int(p.1 as i64);
            o.bulk(r.link().name().as_bytes());
            o.int(offset as i64);
        }
        None => {
            let offset: u64 = ring_bounds(core).await.iter().map(|(h, _)| h).sum();
            let replicas: Vec<ReplicaView> =
                r.replicas().into_iter().filter(|v| v.online).collect();
            o.array(3);
            o.bulk(b"master");
            o.int(offset as i64);
            o.array(replicas.len());
            for v in replicas {
                o.array(3);
                o.bulk(v.ip.as_bytes());
                o.bulk(v.port.to_string().as_bytes());
                o.bulk(v.acked.iter().sum::<u64>().to_string().as_bytes());
            }
        }
    }
}

/// The `# Replication` section of INFO. `rings` is each shard's (head, tail, records held,
/// bytes held).
pub fn info_section(core: &Core, rings: &[(u64, u64, usize, usize)]) -> String {
    use std::fmt::Write;
    let r = &core.node.repl;
    let now = core.now_ms();
    let mut t = String::from("# Replication\r\n");
    let head_total: u64 = rings.iter().map(|w| w.0).sum();
    let replid = r.replid();
    match r.primary() {
        Some(p) => {
            let followed = r.followed.load_full();
            let offsets = followed.as_ref().map(|f| f.1.clone()).unwrap_or_default();
            let offset: u64 = offsets.iter().sum();
            let link = r.link();
            let last_io = r.last_io_ms.load(Ordering::Relaxed);
            let heads = r.primary_heads.load_full();
            let _ = write!(
                t,
                "role:slave\r\nmaster_host:{}\r\nmaster_port:{}\r\nmaster_link_status:{}\r\nmaster_last_io_seconds_ago:{}\r\nmaster_sync_in_progress:{}\r\nslave_read_repl_offset:{offset}\r\nslave_repl_offset:{offset}\r\nslave_priority:100\r\nslave_read_only:1\r\nreplica_announced:1\r\nconnected_slaves:0\r\nmaster_failover_state:no-failover\r\nmaster_replid:{}\r\nmaster_repl_offset:{offset}\r\n",
                p.0,
                p.1,
                if link == Link::Connected { "up" } else { "down" },
                if last_io == 0 { -1 } else { (now.saturating_sub(last_io) / 1000) as i64 },
                u8::from(link == Link::Sync),
                followed.as_ref().map_or(replid.as_str(), |f| f.0.as_str()),
            );
            let shard_offsets: Vec<String> = offsets.iter().map(u64::to_string).collect();
            let lag: u64 = heads
                .iter()
                .zip(offsets.iter().chain(std::iter::repeat(&0)))
                .map(|(h, o)| h.saturating_sub(*o))
                .sum();
            let _ = write!(
                t,
                "tessera_primary_shards:{}\r\ntessera_shard_offsets:{}\r\ntessera_lag_entries:{lag}\r\ntessera_readonly_clients_moved:{}\r\n",
                offsets.len(),
                shard_offsets.join(","),
                r.readonly_moved.load(Ordering::Relaxed),
            );
        }
        None => {
            let replicas = r.replicas();
            let _ = write!(t, "role:master\r\nconnected_slaves:{}\r\n", replicas.len());
            for (i, v) in replicas.iter().enumerate() {
                let offset: u64 = v.acked.iter().sum();
                let _ = write!(
                    t,
                    "slave{i}:ip={},port={},state={},offset={offset},lag={},lag_entries={}\r\n",
                    v.ip,
                    v.port,
                    if v.online { "online" } else { "wait_bgsave" },
                    now.saturating_sub(v.last_ack_ms) / 1000,
                    v.lag_entries,
                );
            }
            let tail_total: u64 = rings.iter().map(|w| w.1).sum();
            let held: usize = rings.iter().map(|w| w.2).sum();
            let bytes: usize = rings.iter().map(|w| w.3).sum();
            let active = rings.iter().any(|w| w.2 > 0);
            let _ = write!(
                t,
                "master_failover_state:no-failover\r\nmaster_replid:{replid}\r\nmaster_replid2:0000000000000000000000000000000000000000\r\nmaster_repl_offset:{head_total}\r\nsecond_repl_offset:-1\r\nrepl_backlog_active:{}\r\nrepl_backlog_size:{}\r\nrepl_backlog_first_byte_offset:{}\r\nrepl_backlog_histlen:{held}\r\n",
                u8::from(active),
                core.config.borrow().wal_ring_bytes * rings.len(),
                if active { tail_total } else { 0 },
            );
            let _ = bytes;
            let heads: Vec<String> = rings.iter().map(|w| w.0.to_string()).collect();
            let _ = write!(
                t,
                "tessera_shard_offsets:{}\r\ntessera_full_syncs:{}\r\ntessera_partial_syncs:{}\r\ntessera_partial_syncs_refused:{}\r\ntessera_repl_ack_timeouts:{}\r\ntessera_replica_records_discarded:{}\r\n",
                heads.join(","),
                r.full_syncs.load(Ordering::Relaxed),
                r.partial_syncs.load(Ordering::Relaxed),
                r.partial_refused.load(Ordering::Relaxed),
                r.ack_timeouts.load(Ordering::Relaxed),
                r.discarded_records.load(Ordering::Relaxed),
            );
        }
    }
    t.push_str("\r\n");
    t
}

/// `REPLICAOF host port` / `REPLICAOF NO ONE` (and SLAVEOF).
pub async fn replicaof(core: &Rc<Core>, args: &Args<'_>, o: &mut Out<'_>) {
    use crate::cmd::parse::eq;
    if core.node.cluster.get().is_some() {
        return o.error("ERR REPLICAOF not allowed in cluster mode.");
    }
    let r = &core.node.repl;
    if eq(args.get(1), "no") && eq(args.get(2), "one") {
        if r.is_replica() {
            become_primary(core).await;
        }
        return o.ok();
    }
    let host = String::from_utf8_lossy(args.get(1)).into_owned();
    let port = match std::str::from_utf8(args.get(2))
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
    {
        Some(p) if p > 0 => p,
        _ => return o.error("ERR Invalid master port"),
    };
    if r.primary().is_some_and(|p| p.0 == host && p.1 == port) {
        return o.simple("OK Already connected to specified master");
    }
    stop_replica(core).await;
    follow(core, host, port).await;
    o.ok()
}

/// A replica becomes a primary: its replica task stops after its last batch, and what it
/// followed is kept as the point its siblings (and its old primary) may continue from.
async fn become_primary(core: &Rc<Core>) {
    let r = &core.node.repl;
    stop_replica(core).await;
    let continuation = match r.followed.load_full() {
        Some(f) => {
            // Replicas that attach should find the rings from here on.
            core.invoke_all(Some(super::mesh::BYPASS_LOCKS), |c| {
                c.shard.borrow().wal_mut().set_keep_always(true)
            })
            .await;
            let heads = ring_bounds(core).await.iter().map(|(h, _)| *h).collect();
            Some(Arc::new((f.0.clone(), f.1.clone(), heads)))
        }
        None => None,
    };
    r.continuation.store(continuation);
    r.set_primary(None);
    r.followed.store(None);
    r.resume_from.store(None);
    r.replid.store(Arc::new(repl::new_replid(core.random())));
    r.set_link(Link::Connect);
    tracing::info!("this node is a primary now");
}

/// Where this node's data stands in a stream, for the primary it is about to follow: the
/// stream it follows, or — a primary now — its own replication id and ring heads once the
/// writes under way are applied (new ones are held meanwhile; following lets them go).
async fn stream_position(core: &Rc<Core>) -> Option<(String, Vec<u64>)> {
    let r = &core.node.repl;
    if r.is_replica() {
        return r.stream_had();
    }
    let until = core.now_ms() + limits::REPL_STOP_WAIT_MS;
    r.pause_writes(until);
    while r.writes_open.load(Ordering::SeqCst) > 0 {
        if core.now_ms() >= until {
            return None;
        }
        glommio::timer::sleep(Duration::from_millis(limits::REPL_POLL_INTERVAL_MS)).await;
    }
    let heads = ring_bounds(core).await.iter().map(|(h, _)| *h).collect();
    Some((r.replid().to_string(), heads))
}

/// Makes this node a replica of `host:port`: the replica task starts on core 0, and this
/// node's own replica streams end at their next pass.
pub async fn follow(core: &Rc<Core>, host: String, port: u16) {
    let r = &core.node.repl;
    let had = stream_position(core).await;
    r.resume_from.store(had.map(Arc::new));
    r.continuation.store(None);
    r.set_primary(Some((host.clone(), port)));
    r.followed.store(None);
    r.set_link(Link::Connect);
    let generation = r.generation.fetch_add(1, Ordering::AcqRel) + 1;
    tracing::info!(%host, port, "replicating from a primary");
    core.invoke_on(0, None, move |c| {
        let owner = c.rc();
        glommio::spawn_local(super::replica::run(owner, generation, host, port)).detach();
    })
    .await;
}

/// In a cluster, keeps replication matched to the table: checks it every
/// [`limits::REPL_VIEW_CHECK_MS`] (one atomic load when nothing changed).
pub async fn follow_view_loop(core: Rc<Core>) {
    while !core.node.shutting_down() {
        glommio::timer::sleep(Duration::from_millis(limits::REPL_VIEW_CHECK_MS)).await;
        follow_view(&core).await;
    }
}

/// In a cluster, the table says whom this node follows: start, switch or stop following
/// to match it.
pub async fn follow_view(core: &Rc<Core>) {
    let Some(h) = core.node.cluster.get() else {
        return;
    };
    // Over TLS, the primary's TLS port (tls-replication).
    let tls = core.config.borrow().tls_replication;
    let want = h.view.load().my_primary().map(|p| {
        let at = p.addr.client_for(tls);
        (at.ip().to_string(), at.port())
    });
    let have = core.node.repl.primary().map(|p| (p.0.clone(), p.1));
    if want == have {
        return;
    }
    match want {
        Some((host, port)) => {
            stop_replica(core).await;
            follow(core, host, port).await
        }
        None => become_primary(core).await,
    }
}

/// Stops the replica task, if one runs, and waits until it has applied its last batch.
async fn stop_replica(core: &Rc<Core>) {
    let r = &core.node.repl;
    r.generation.fetch_add(1, Ordering::AcqRel);
    let deadline = std::time::Instant::now() + Duration::from_millis(limits::REPL_STOP_WAIT_MS);
    while r.running.load(Ordering::Acquire) != 0 && std::time::Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
}

/// Whether a write may run now under `min-replicas-to-write`: the error to answer if not.
pub fn refuse_write(core: &Core) -> Option<&'static str> {
    let (need, max_lag_s) = {
        let c = core.config.borrow();
        (c.min_replicas_to_write, c.min_replicas_max_lag)
    };
    if need == 0 || core.node.repl.is_replica() {
        return None;
    }
    let good = core
        .node
        .repl
        .good_replicas(core.now_ms(), max_lag_s.saturating_mul(1000));
    (good < need).then_some("NOREPLICAS Not enough good replicas to write.")
}
