//! Cross-core calls: the only code that touches glommio's channel mesh.
//!
//! The vocabulary is small: [`Core::invoke_on`] runs a closure on another core's state and
//! returns its result; [`Core::invoke_all`] does it on every core; [`Core::start_on`] sends
//! without waiting, so a connection can have batches in flight to several cores at once.
//! Transactions lock whole shards through each core's [`Gate`] (`acquire`/`release`).
//!
//! Requests and replies travel on two separate meshes. A core's reply receivers never
//! wait on anything, so replies always drain, and a request receiver that is briefly
//! blocked sending a reply cannot close a cycle of full channels.

use super::core::Core;
use futures_channel::oneshot;
use glommio::channels::channel_mesh::{Receivers, Senders};
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

/// Capacity of each directed request or reply channel, in messages. A message is a whole
/// pipeline batch, so this bounds in-flight batches from one core to another.
pub const MESH_CHANNEL_CAPACITY: usize = 1024;

/// A transaction's identity: a per-core sequence number and the coordinating core.
pub type TxId = u64;

/// Passed as the transaction of a job that reads or writes no shard data (connection
/// registry, configuration, counters): such a job never waits for a shard lock, so it can
/// run from inside EXEC, whose own locks would otherwise block it.
pub const BYPASS_LOCKS: TxId = u64::MAX;

pub type AnyBox = Box<dyn Any + Send>;
pub type Job = Box<dyn FnOnce(&Core) -> AnyBox + Send>;

pub enum Request {
    /// Run `job` on the receiving core, inside transaction `tx` if one is given.
    Run {
        ticket: u64,
        tx: Option<TxId>,
        job: Job,
    },
    /// Lock the receiving core's shard for `tx`; the reply comes once it holds.
    Acquire { ticket: u64, tx: TxId },
    /// Unlock the shard `tx` holds. No reply.
    Release { tx: TxId },
}

pub struct Reply {
    ticket: u64,
    value: AnyBox,
}

/// The mesh endpoints of one core, and its calls waiting for replies.
pub struct Mesh {
    requests: Senders<Request>,
    replies: Rc<Senders<Reply>>,
    /// Our core index → the peer index glommio gave that core in the mesh.
    peer_of_core: Vec<usize>,
    pending: RefCell<HashMap<u64, oneshot::Sender<AnyBox>>>,
    next_ticket: Cell<u64>,
}

impl Mesh {
    pub fn new(
        requests: Senders<Request>,
        replies: Senders<Reply>,
        peer_of_core: Vec<usize>,
    ) -> Mesh {
        Mesh {
            requests,
            replies: Rc::new(replies),
            peer_of_core,
            pending: RefCell::new(HashMap::new()),
            next_ticket: Cell::new(1),
        }
    }

    fn ticket(&self) -> (u64, oneshot::Receiver<AnyBox>) {
        let t = self.next_ticket.get();
        self.next_ticket.set(t + 1);
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(t, tx);
        (t, rx)
    }

    fn core_of_peer(&self, peer: usize) -> usize {
        self.peer_of_core
            .iter()
            .position(|&p| p == peer)
            .expect("every mesh peer is one of our cores")
    }

    /// Sends a reply without waiting when the channel has room (the common case), else
    /// from a small task, so the caller never blocks on a full reply channel.
    fn reply(&self, to_core: usize, ticket: u64, value: AnyBox) {
        let peer = self.peer_of_core[to_core];
        if let Err(e) = self.replies.try_send_to(peer, Reply { ticket, value }) {
            let msg = match e {
                glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(m)) => m,
                other => {
                    tracing::error!("reply to core {to_core} failed: {other}");
                    return;
                }
            };
            let senders = self.replies.clone();
            glommio::spawn_local(async move {
                let _ = senders.send_to(peer, msg).await;
            })
            .detach();
        }
    }
}

/// Whether a shard is locked by a transaction, and who waits for it.
///
/// A shard locked by transaction T runs only T's operations; everything else queues here
/// in arrival order and runs when T releases. Transactions lock shards in ascending core
/// order, so two transactions never wait for each other in a cycle.
#[derive(Default)]
pub struct Gate {
    holder: Cell<Option<TxId>>,
    queue: RefCell<VecDeque<Waiter>>,
}

enum Waiter {
    /// A task on this core waiting to run non-transactional work.
    Wake(oneshot::Sender<()>),
    /// A job from another core, deferred until the shard is free.
    Run { from: usize, ticket: u64, job: Job },
    /// A transaction waiting to lock the shard.
    Acquire { tx: TxId, grant: Grant },
}

enum Grant {
    Local(oneshot::Sender<()>),
    Remote { from: usize, ticket: u64 },
}

impl Gate {
    pub fn admits(&self, tx: Option<TxId>) -> bool {
        if tx == Some(BYPASS_LOCKS) {
            return true;
        }
        match self.holder.get() {
            None => true,
            Some(h) => tx == Some(h),
        }
    }
}

impl Core {
    fn mesh(&self) -> &Mesh {
        self.mesh
            .get()
            .expect("mesh is joined before any task runs")
    }

    /// Waits (yielding) until this core's shard admits work of `tx`.
    pub async fn wait_admitted(&self, tx: Option<TxId>) {
        while !self.gate.admits(tx) {
            let (s, r) = oneshot::channel();
            self.gate.queue.borrow_mut().push_back(Waiter::Wake(s));
            let _ = r.await;
        }
    }

    /// Sends `f` to run on core `target` and returns the receiver for its result. On this
    /// core it runs at once (after waiting for the gate).
    pub async fn start_on<T, F>(&self, target: usize, tx: Option<TxId>, f: F) -> Pending<T>
    where
        T: Send + 'static,
        F: FnOnce(&Core) -> T + Send + 'static,
    {
        if target == self.id {
            self.wait_admitted(tx).await;
            return Pending::Ready(f(self));
        }
        self.bump(|st| st.cross_core_hops += 1);
        let mesh = self.mesh();
        let (ticket, rx) = mesh.ticket();
        let job: Job = Box::new(move |c: &Core| Box::new(f(c)) as AnyBox);
        let peer = mesh.peer_of_core[target];
        if mesh
            .requests
            .send_to(peer, Request::Run { ticket, tx, job })
            .await
            .is_err()
        {
            panic!("core {target} has stopped; the node cannot serve without it");
        }
        Pending::Remote(rx, std::marker::PhantomData)
    }

    /// Runs `f` on core `target` and returns its result.
    pub async fn invoke_on<T, F>(&self, target: usize, tx: Option<TxId>, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(&Core) -> T + Send + 'static,
    {
        self.start_on(target, tx, f).await.wait().await
    }

    /// Runs `f` on every core, concurrently, and returns the results in core order.
    pub async fn invoke_all<T, F>(&self, tx: Option<TxId>, f: F) -> Vec<T>
    where
        T: Send + 'static,
        F: Fn(&Core) -> T + Send + Sync + Clone + 'static,
    {
        let mut pending = Vec::with_capacity(self.cores);
        for c in 0..self.cores {
            pending.push(self.start_on(c, tx, f.clone()).await);
        }
        let mut out = Vec::with_capacity(self.cores);
        for p in pending {
            out.push(p.wait().await);
        }
        out
    }

    /// Locks the shards of `cores` for a new transaction, in ascending order.
    pub async fn acquire(&self, mut cores: Vec<usize>) -> Locks {
        cores.sort_unstable();
        cores.dedup();
        let seq = self.tx_seq.get();
        self.tx_seq.set(seq + 1);
        let tx = (seq << 8) | self.id as u64;
        for &c in &cores {
            if c == self.id {
                self.acquire_local(tx).await;
            } else {
                let mesh = self.mesh();
                let (ticket, rx) = mesh.ticket();
                let peer = mesh.peer_of_core[c];
                if mesh
                    .requests
                    .send_to(peer, Request::Acquire { ticket, tx })
                    .await
                    .is_err()
                {
                    panic!("core {c} has stopped");
                }
                let _ = rx.await;
            }
        }
        Locks { tx, cores }
    }

    async fn acquire_local(&self, tx: TxId) {
        if self.gate.holder.get().is_none() {
            self.gate.holder.set(Some(tx));
            return;
        }
        let (s, r) = oneshot::channel();
        self.gate.queue.borrow_mut().push_back(Waiter::Acquire {
            tx,
            grant: Grant::Local(s),
        });
        let _ = r.await;
        debug_assert_eq!(self.gate.holder.get(), Some(tx));
    }

    /// Unlocks what [`Core::acquire`] locked.
    pub async fn release(&self, locks: Locks) {
        for &c in &locks.cores {
            if c == self.id {
                self.release_local(locks.tx);
            } else {
                let mesh = self.mesh();
                let peer = mesh.peer_of_core[c];
                if mesh
                    .requests
                    .send_to(peer, Request::Release { tx: locks.tx })
                    .await
                    .is_err()
                {
                    panic!("core {c} has stopped");
                }
            }
        }
    }

    fn release_local(&self, tx: TxId) {
        assert_eq!(
            self.gate.holder.get(),
            Some(tx),
            "release by the holder only"
        );
        self.gate.holder.set(None);
        loop {
            let Some(w) = self.gate.queue.borrow_mut().pop_front() else {
                return;
            };
            match w {
                Waiter::Wake(s) => {
                    let _ = s.send(());
                }
                Waiter::Run { from, ticket, job } => {
                    let value = job(self);
                    self.reply_run(from, ticket, value);
                }
                Waiter::Acquire { tx, grant } => {
                    self.gate.holder.set(Some(tx));
                    match grant {
                        Grant::Local(s) => {
                            let _ = s.send(());
                        }
                        Grant::Remote { from, ticket } => {
                            self.mesh().reply(from, ticket, Box::new(()))
                        }
                    }
                    return;
                }
            }
        }
    }

    /// Answers a call; under `appendfsync always`, once this core's records are on disk.
    fn reply_run(&self, from: usize, ticket: u64, value: AnyBox) {
        match super::aof::must_wait(self) {
            Some((aof, seq)) => aof.after_durable(
                seq,
                Box::new(move |c: &Core| c.mesh().reply(from, ticket, value)),
            ),
            None => self.mesh().reply(from, ticket, value),
        }
    }

    fn handle_request(&self, from: usize, req: Request) {
        match req {
            Request::Run { ticket, tx, job } => {
                if self.gate.admits(tx) {
                    let value = job(self);
                    self.reply_run(from, ticket, value);
                } else {
                    self.gate
                        .queue
                        .borrow_mut()
                        .push_back(Waiter::Run { from, ticket, job });
                }
            }
            Request::Acquire { ticket, tx } => {
                if self.gate.holder.get().is_none() {
                    self.gate.holder.set(Some(tx));
                    self.mesh().reply(from, ticket, Box::new(()));
                } else {
                    self.gate.queue.borrow_mut().push_back(Waiter::Acquire {
                        tx,
                        grant: Grant::Remote { from, ticket },
                    });
                }
            }
            Request::Release { tx } => self.release_local(tx),
        }
    }
}

/// Shards locked by one transaction.
pub struct Locks {
    pub tx: TxId,
    cores: Vec<usize>,
}

/// A cross-core call in flight.
pub enum Pending<T> {
    Ready(T),
    Remote(oneshot::Receiver<AnyBox>, std::marker::PhantomData<T>),
}

impl<T: 'static> Pending<T> {
    pub async fn wait(self) -> T {
        match self {
            Pending::Ready(v) => v,
            Pending::Remote(rx, _) => {
                let value = rx.await.expect("a core answers every request it receives");
                *value
                    .downcast::<T>()
                    .expect("a reply has the type its request asked for")
            }
        }
    }
}

/// Spawns the receive loops of one core: a task per peer for requests and one per peer
/// for replies. Reply loops never wait on anything but their channel.
pub fn spawn_receivers(
    core: Rc<Core>,
    mut requests: Receivers<Request>,
    mut replies: Receivers<Reply>,
) {
    for (peer, rx) in requests.streams() {
        let c = core.clone();
        glommio::spawn_local(async move {
            let from = c.mesh().core_of_peer(peer);
            while let Some(req) = rx.recv().await {
                c.handle_request(from, req);
            }
        })
        .detach();
    }
    for (_, rx) in replies.streams() {
        let c = core.clone();
        glommio::spawn_local(async move {
            while let Some(Reply { ticket, value }) = rx.recv().await {
                let waiter = c.mesh().pending.borrow_mut().remove(&ticket);
                if let Some(w) = waiter {
                    let _ = w.send(value);
                }
            }
        })
        .detach();
    }
}
