//! Forwarding to other nodes: a per-core, multiplexed RESP link to each node's client port,
//! for commands whose keys another node owns.
//!
//! Each data core has one [`Forwarder`], holding at most one link per (node address,
//! protocol). [`Forwarder::call`] sends one whole encoded command and returns the node's whole
//! reply as bytes, which the caller relays to its client.
//!
//! - **Ordering.** A call appends its request to the link's outbox and queues its waiter in
//!   one step, with no await between, so waiters are queued in the order their requests go
//!   on the wire. One writer task flushes the outbox, so requests never interleave; one
//!   reader task cuts replies out of the byte stream and hands them to waiters in order (a
//!   RESP server answers a connection's commands in order).
//! - **Bounds.** Per link, [`FORWARD_LINK_MAX_INFLIGHT`] requests and
//!   [`FORWARD_OUTBOX_MAX_BYTES`] unsent bytes: past them a call fails at once rather than
//!   waits. Replies up to [`FORWARD_REPLY_MAX_BYTES`]. Connecting, AUTH and HELLO take at
//!   most [`FORWARD_CONNECT_TIMEOUT_MS`]; a request waits at most
//!   [`FORWARD_REPLY_TIMEOUT_MS`] for its reply.
//! - **Failure.** End of stream, an I/O error, bytes that are not RESP, a reply too large,
//!   a reply nobody asked for or an overdue reply kill the link: every queued call gets the
//!   error, the link leaves the map and the next call connects afresh. A failed connect
//!   leaves nothing behind, so each call to a node that is down waits at most the connect
//!   timeout (calls arriving during one attempt share it).
//!
//! A link carries request/response commands only. A command after which the node pushes
//! messages nobody asked for (SUBSCRIBE, MONITOR, CLIENT TRACKING) must not be forwarded:
//! it would shift every later reply to the wrong caller.

use super::core::NodeShared;
use super::tls::PeerStream;
use crate::limits::{
    self, FORWARD_CONNECT_TIMEOUT_MS, FORWARD_LINK_MAX_INFLIGHT, FORWARD_OUTBOX_MAX_BYTES,
    FORWARD_READ_CHUNK_BYTES, FORWARD_REPLY_MAX_BYTES, FORWARD_REPLY_TIMEOUT_MS,
};
use crate::resp::frame::{self, Decoded, FrameError, MAX_DEPTH};
use futures_channel::oneshot;
use futures_lite::future::{or, poll_fn};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite};
use glommio::net::TcpStream;
use glommio::sync::Semaphore;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A read buffer or write batch larger than this, in bytes, is given back once empty.
const BUFFER_KEEP_BYTES: usize = 4 * FORWARD_READ_CHUNK_BYTES;

const _: () = assert!(FORWARD_REPLY_MAX_BYTES > limits::PROTO_MAX_BULK_LEN_BYTES);
// glommio refuses a zero connect timeout.
const _: () = assert!(FORWARD_CONNECT_TIMEOUT_MS > 0);

/// Why a forwarded call failed. Each message is one line: it ends up in a client's error
/// reply after "forwarding to <node> failed: ".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    #[error("cannot connect: {reason}")]
    Connect { reason: String },
    #[error("no connection within {ms} ms (connect, AUTH, HELLO); is the node up and reachable?")]
    ConnectTimeout { ms: u64 },
    #[error("the node refused AUTH ({reply}); give every node the same password")]
    AuthRefused { reply: String },
    #[error("the node refused HELLO 3 ({reply}); it must speak RESP3 (Redis 6 or later)")]
    HelloRefused { reply: String },
    #[error("link lost: {reason}")]
    LinkLost { reason: String },
    #[error("no reply within {ms} ms; the link was closed")]
    ReplyTimeout { ms: u64 },
    #[error("{max} requests already in flight on the link; retry later")]
    TooManyInFlight { max: usize },
    #[error("{max_bytes} bytes already waiting to be sent on the link; retry later")]
    OutboxFull { max_bytes: usize },
    #[error("a reply grew past {max_bytes} bytes; the link was closed")]
    ReplyTooLarge { max_bytes: usize },
    #[error("the node sent bytes that are not a RESP reply ({reason}); the link was closed")]
    BadReply { reason: String },
    #[error("the link was closed (shutdown, or the node left the cluster map)")]
    Closed,
}

/// Makes text from a peer or the OS fit in one line of an error reply: runs of spaces and
/// control bytes (CR, LF) become one space, and it is cut to a readable length.
fn one_line(text: &str) -> String {
    const MAX_CHARS: usize = 128;
    let words = text.split(|c: char| c.is_whitespace() || c.is_control());
    let line = words
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    line.chars().take(MAX_CHARS).collect()
}

fn lost(what: &str, err: io::Error) -> ForwardError {
    ForwardError::LinkLost {
        reason: one_line(&format!("{what}: {err}")),
    }
}

/// Limits of a [`Forwarder`]'s links: the constants, or smaller ones in tests.
#[derive(Debug, Clone, Copy)]
struct Settings {
    max_inflight: usize,
    reply_max_bytes: usize,
    reply_timeout: Duration,
    /// Send CLUSTER FORWARDED on each new link, so the node never forwards what it gets
    /// on it again (two nodes with different tables would bounce a command forever).
    mark_forwarded: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_inflight: FORWARD_LINK_MAX_INFLIGHT,
            reply_max_bytes: FORWARD_REPLY_MAX_BYTES,
            reply_timeout: Duration::from_millis(FORWARD_REPLY_TIMEOUT_MS),
            mark_forwarded: false,
        }
    }
}

/// A link is per node and per protocol: a RESP3 reply cannot be relayed to a RESP2 client.
type LinkKey = (SocketAddr, u8);
type Links = RefCell<HashMap<LinkKey, Slot>>;
type ConnectResult = Result<Rc<Link>, ForwardError>;

enum Slot {
    Connecting(Rc<Connecting>),
    /// A live link: a link that fails removes itself from the map.
    Ready(Rc<Link>),
}

/// Calls waiting for a link being connected; they share the one attempt.
#[derive(Default)]
struct Connecting {
    waiters: RefCell<Vec<oneshot::Sender<ConnectResult>>>,
}

impl Connecting {
    fn join(&self, max: usize) -> Result<oneshot::Receiver<ConnectResult>, ForwardError> {
        let mut waiters = self.waiters.borrow_mut();
        if waiters.len() >= max {
            return Err(ForwardError::TooManyInFlight { max });
        }
        let (tx, rx) = oneshot::channel();
        waiters.push(tx);
        Ok(rx)
    }

    fn finish(&self, result: &ConnectResult) {
        for waiter in self.waiters.take() {
            let _ = waiter.send(result.clone());
        }
    }
}

/// A reply on its way from a node (see [`Forwarder::send_now`]).
pub struct PendingReply {
    rx: ReplyReceiver,
}

impl PendingReply {
    /// Waits for the reply (at most [`FORWARD_REPLY_TIMEOUT_MS`]: the link's watchdog fails
    /// overdue calls).
    pub async fn wait(self) -> Result<Vec<u8>, ForwardError> {
        self.rx.await.unwrap_or_else(|_| {
            Err(ForwardError::LinkLost {
                reason: "the link dropped the request".to_string(),
            })
        })
    }
}

/// One data core's links to other nodes. Not `Send`: it lives on its core.
pub struct Forwarder {
    auth: Option<Rc<str>>,
    settings: Settings,
    links: Rc<Links>,
    /// `tls-cluster`: where the TLS client configuration new links dial with is.
    tls: Option<Arc<NodeShared>>,
}

impl Forwarder {
    /// `auth`: the password sent with AUTH on each new link, if the nodes require one;
    /// `tls`: the node whose TLS client configuration links use (`tls-cluster`; the
    /// addresses given are then the nodes' TLS ports), none for plain TCP.
    pub fn new(auth: Option<String>, tls: Option<Arc<NodeShared>>) -> Forwarder {
        let settings = Settings {
            mark_forwarded: true,
            ..Settings::default()
        };
        let mut forwarder = Forwarder::with_settings(auth, settings);
        forwarder.tls = tls;
        forwarder
    }

    fn with_settings(auth: Option<String>, settings: Settings) -> Forwarder {
        Forwarder {
            auth: auth.map(Rc::from),
            settings,
            links: Rc::default(),
            tls: None,
        }
    }

    /// Sends `request`, exactly one whole encoded command, to the node at `to` on the link
    /// for protocol `proto` (2 or 3), and returns the node's whole reply. Yields: it may
    /// connect first (at most [`FORWARD_CONNECT_TIMEOUT_MS`]), then waits for the reply (at
    /// most [`FORWARD_REPLY_TIMEOUT_MS`]). Concurrent calls share the link, pipelined.
    /// Dropping the future abandons the reply, not the request: it is sent regardless.
    pub async fn call(
        &self,
        to: SocketAddr,
        proto: u8,
        request: &[u8],
    ) -> Result<Vec<u8>, ForwardError> {
        assert!(proto == 2 || proto == 3, "no RESP protocol {proto}");
        let link = self.link((to, proto)).await?;
        let reply = link.send(request)?;
        reply.await.unwrap_or_else(|_| {
            Err(ForwardError::LinkLost {
                reason: "the link dropped the request".to_string(),
            })
        })
    }

    /// If the link to `to` for `proto` is open, queues `request` on it at once (no yield)
    /// and returns its reply to come: requests queued this way go out in call order, so a
    /// connection's pipeline can have many in flight. `None` when there is no open link
    /// yet: use [`Forwarder::call`], which opens one.
    pub fn send_now(
        &self,
        to: SocketAddr,
        proto: u8,
        request: &[u8],
    ) -> Option<Result<PendingReply, ForwardError>> {
        assert!(proto == 2 || proto == 3, "no RESP protocol {proto}");
        let link = match self.links.borrow().get(&(to, proto)) {
            Some(Slot::Ready(link)) => link.clone(),
            _ => return None,
        };
        Some(link.send(request).map(|rx| PendingReply { rx }))
    }

    /// Appends a command, as a client sends it, to `out`: a RESP array of bulk strings.
    pub fn encode_command<'a>(args: impl ExactSizeIterator<Item = &'a [u8]>, out: &mut Vec<u8>) {
        crate::resp::request::encode_into(args, out)
    }

    /// Closes every link: their queued calls fail with [`ForwardError::Closed`], as do the
    /// calls waiting for a connect. Later calls connect afresh.
    pub fn close_all(&self) {
        let slots: Vec<Slot> = self.links.borrow_mut().drain().map(|(_, s)| s).collect();
        for slot in slots {
            match slot {
                Slot::Ready(link) => link.fail(ForwardError::Closed),
                Slot::Connecting(attempt) => attempt.finish(&Err(ForwardError::Closed)),
            }
        }
    }

    /// The live link for `key`, connecting it if there is none (yields).
    async fn link(&self, key: LinkKey) -> ConnectResult {
        let (pending, attempt) = {
            let mut links = self.links.borrow_mut();
            match links.get(&key) {
                Some(Slot::Ready(link)) => return Ok(link.clone()),
                Some(Slot::Connecting(attempt)) => {
                    (attempt.join(self.settings.max_inflight)?, None)
                }
                None => {
                    let attempt = Rc::new(Connecting::default());
                    let pending = attempt.join(self.settings.max_inflight)?;
                    links.insert(key, Slot::Connecting(attempt.clone()));
                    (pending, Some(attempt))
                }
            }
        };
        if let Some(attempt) = attempt {
            // In a task of its own, so the attempt completes, and leaves the map, even if
            // the call that started it is dropped.
            let job = ConnectJob {
                key,
                attempt,
                auth: self.auth.clone(),
                tls: self.tls.as_ref().and_then(|n| n.tls_client.load_full()),
                settings: self.settings,
                links: Rc::downgrade(&self.links),
            };
            glommio::spawn_local(job.run()).detach();
        }
        pending.await.unwrap_or(Err(ForwardError::Closed))
    }

    #[cfg(test)]
    fn slots(&self) -> usize {
        self.links.borrow().len()
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.close_all();
    }
}

struct ConnectJob {
    key: LinkKey,
    attempt: Rc<Connecting>,
    auth: Option<Rc<str>>,
    tls: Option<Arc<rustls::ClientConfig>>,
    settings: Settings,
    links: Weak<Links>,
}

impl ConnectJob {
    async fn run(self) {
        let mut result = establish(
            self.key,
            self.auth.as_deref(),
            self.tls.clone(),
            self.settings,
            self.links.clone(),
        )
        .await;
        if let Ok(link) = &result {
            if let Some(failure) = link.failure() {
                result = Err(failure);
            }
        }
        let ours = self.links.upgrade().is_some_and(|links| {
            let mut links = links.borrow_mut();
            let ours = matches!(links.get(&self.key),
                Some(Slot::Connecting(a)) if Rc::ptr_eq(a, &self.attempt));
            if ours {
                match &result {
                    Ok(link) => links.insert(self.key, Slot::Ready(link.clone())),
                    Err(_) => links.remove(&self.key),
                };
            }
            ours
        });
        if !ours {
            // close_all ran, or the Forwarder went away, while this attempt was connecting.
            if let Ok(link) = &result {
                link.fail(ForwardError::Closed);
            }
            result = Err(ForwardError::Closed);
        }
        if let Err(e) = &result {
            tracing::debug!(node = %self.key.0, "cannot open a forwarding link: {e}");
        }
        self.attempt.finish(&result);
    }
}

/// Connects, sets TCP_NODELAY, does the TLS handshake (with `tls`), authenticates and
/// switches protocol, all within the connect timeout, then starts the link's tasks.
async fn establish(
    key: LinkKey,
    auth: Option<&str>,
    tls: Option<Arc<rustls::ClientConfig>>,
    settings: Settings,
    links: Weak<Links>,
) -> ConnectResult {
    let (to, proto) = key;
    let limit = Duration::from_millis(FORWARD_CONNECT_TIMEOUT_MS);
    let deadline = Instant::now() + limit;
    let timed_out = ForwardError::ConnectTimeout {
        ms: FORWARD_CONNECT_TIMEOUT_MS,
    };
    let stream = match TcpStream::connect_timeout(to, limit).await {
        Ok(stream) => stream,
        Err(e) => {
            let e = io::Error::from(e);
            return Err(if e.kind() == io::ErrorKind::TimedOut {
                timed_out
            } else {
                ForwardError::Connect {
                    reason: one_line(&e.to_string()),
                }
            });
        }
    };
    stream
        .set_nodelay(true)
        .map_err(|e| ForwardError::Connect {
            reason: one_line(&format!("cannot set TCP_NODELAY: {}", io::Error::from(e))),
        })?;
    let mut replies = ReplyReader::new(settings.reply_max_bytes);
    let left = deadline.saturating_duration_since(Instant::now());
    let mark = settings.mark_forwarded;
    let greeted = or(
        async {
            let stream = PeerStream::dial(stream, to.ip(), tls).await.map_err(|e| {
                ForwardError::Connect {
                    reason: one_line(&e.to_string()),
                }
            })?;
            let mut stream = SharedStream(Rc::new(RefCell::new(stream)));
            handshake(&mut stream, &mut replies, auth, proto, mark).await?;
            Ok(stream)
        },
        async {
            glommio::timer::sleep(left).await;
            Err(timed_out)
        },
    );
    let stream = greeted.await?;
    let link = Rc::new(Link {
        key,
        links,
        settings,
        waiters: RefCell::default(),
        outbox: RefCell::default(),
        failure: RefCell::default(),
        stopped: Semaphore::new(0),
        outbox_ready: Wakeup::default(),
        first_waiter: Wakeup::default(),
    });
    glommio::spawn_local(read_replies(link.clone(), stream.clone(), replies)).detach();
    glommio::spawn_local(write_requests(link.clone(), stream)).detach();
    glommio::spawn_local(watch_deadlines(link.clone())).detach();
    Ok(link)
}

/// AUTH, if a password is set, then HELLO 3 for a RESP3 link, then CLUSTER FORWARDED if
/// `mark`, pipelined.
async fn handshake(
    stream: &mut SharedStream,
    replies: &mut ReplyReader,
    auth: Option<&str>,
    proto: u8,
    mark: bool,
) -> Result<(), ForwardError> {
    let mut hello = Vec::new();
    if let Some(password) = auth {
        let args: [&[u8]; 2] = [b"AUTH", password.as_bytes()];
        Forwarder::encode_command(args.into_iter(), &mut hello);
    }
    if proto == 3 {
        let args: [&[u8]; 2] = [b"HELLO", b"3"];
        Forwarder::encode_command(args.into_iter(), &mut hello);
    }
    if mark {
        let args: [&[u8]; 2] = [b"CLUSTER", b"FORWARDED"];
        Forwarder::encode_command(args.into_iter(), &mut hello);
    }
    if hello.is_empty() {
        return Ok(());
    }
    super::tls::write_flushed(stream, &hello)
        .await
        .map_err(|e| lost("write failed", e))?;
    if auth.is_some() {
        let reply = replies.next_reply(stream).await?;
        if reply != b"+OK\r\n" {
            return Err(ForwardError::AuthRefused {
                reply: one_line(&String::from_utf8_lossy(&reply)),
            });
        }
    }
    if proto == 3 {
        let reply = replies.next_reply(stream).await?;
        if !reply.starts_with(b"%") {
            return Err(ForwardError::HelloRefused {
                reply: one_line(&String::from_utf8_lossy(&reply)),
            });
        }
    }
    if mark {
        let reply = replies.next_reply(stream).await?;
        if reply != b"+OK\r\n" {
            return Err(ForwardError::Connect {
                reason: one_line(&format!(
                    "the node refused CLUSTER FORWARDED ({}); is it a cluster node?",
                    String::from_utf8_lossy(&reply)
                )),
            });
        }
    }
    Ok(())
}

/// One connection to a node, shared by the calls to it and served by three tasks: a writer
/// that flushes the outbox, a reader that hands replies to waiters, and a watchdog that
/// enforces the reply deadline.
struct Link {
    key: LinkKey,
    links: Weak<Links>,
    settings: Settings,
    /// The calls waiting for replies, in the order of their requests on the wire.
    waiters: RefCell<VecDeque<Waiter>>,
    /// Requests not yet taken by the writer.
    outbox: RefCell<Vec<u8>>,
    /// Why the link died: set once; calls that reach a dead link get a copy.
    failure: RefCell<Option<ForwardError>>,
    /// Never signalled, only closed: closing it wakes the link's tasks to exit.
    stopped: Semaphore,
    outbox_ready: Wakeup,
    /// Woken when a request is queued on an idle link, so the watchdog starts a deadline.
    first_waiter: Wakeup,
}

struct Waiter {
    reply: oneshot::Sender<Result<Vec<u8>, ForwardError>>,
    queued_at: Instant,
}

type ReplyReceiver = oneshot::Receiver<Result<Vec<u8>, ForwardError>>;

impl Link {
    fn failure(&self) -> Option<ForwardError> {
        self.failure.borrow().clone()
    }

    /// Queues `request` and its waiter together; fails at once if the link is dead or full.
    fn send(&self, request: &[u8]) -> Result<ReplyReceiver, ForwardError> {
        if let Some(failure) = self.failure() {
            return Err(failure);
        }
        let mut waiters = self.waiters.borrow_mut();
        let max = self.settings.max_inflight;
        if waiters.len() >= max {
            return Err(ForwardError::TooManyInFlight { max });
        }
        let mut outbox = self.outbox.borrow_mut();
        if !outbox.is_empty() && outbox.len() + request.len() > FORWARD_OUTBOX_MAX_BYTES {
            return Err(ForwardError::OutboxFull {
                max_bytes: FORWARD_OUTBOX_MAX_BYTES,
            });
        }
        outbox.extend_from_slice(request);
        let (tx, rx) = oneshot::channel();
        let idle = waiters.is_empty();
        waiters.push_back(Waiter {
            reply: tx,
            queued_at: Instant::now(),
        });
        drop((waiters, outbox));
        self.outbox_ready.wake();
        if idle {
            self.first_waiter.wake();
        }
        Ok(rx)
    }

    /// Kills the link: stops its tasks, fails every queued call with `error` and takes the
    /// link out of the map. Only the first failure counts.
    fn fail(self: &Rc<Self>, error: ForwardError) {
        if self.failure.borrow().is_some() {
            return;
        }
        *self.failure.borrow_mut() = Some(error.clone());
        if error != ForwardError::Closed {
            tracing::warn!(node = %self.key.0, proto = self.key.1, "forwarding link lost: {error}");
        }
        self.stopped.close();
        *self.outbox.borrow_mut() = Vec::new();
        for waiter in self.waiters.take() {
            let _ = waiter.reply.send(Err(error.clone()));
        }
        if let Some(links) = self.links.upgrade() {
            let mut links = links.borrow_mut();
            if matches!(links.get(&self.key), Some(Slot::Ready(l)) if Rc::ptr_eq(l, self)) {
                links.remove(&self.key);
            }
        }
    }

    /// Resolves once the link is dead (yields).
    async fn until_stopped(&self) {
        // The semaphore is never signalled: acquiring fails, and returns, when it closes.
        let _ = self.stopped.acquire(1).await;
    }
}

async fn read_replies(link: Rc<Link>, mut stream: SharedStream, mut replies: ReplyReader) {
    let failure = loop {
        match replies.next_buffered() {
            Ok(Some(reply)) => {
                let waiter = link.waiters.borrow_mut().pop_front();
                let Some(waiter) = waiter else {
                    break ForwardError::BadReply {
                        reason: "a reply came with no request waiting for it".to_string(),
                    };
                };
                let _ = waiter.reply.send(Ok(reply));
            }
            Ok(None) => {
                let read = or(async { Some(replies.fill(&mut stream).await) }, async {
                    link.until_stopped().await;
                    None
                });
                match read.await {
                    None => return,
                    Some(Ok(())) => {}
                    Some(Err(e)) => break e,
                }
            }
            Err(e) => break e,
        }
    };
    link.fail(failure);
}

async fn write_requests(link: Rc<Link>, mut stream: SharedStream) {
    let mut batch = Vec::new();
    loop {
        let woken = or(
            async {
                link.outbox_ready.wait().await;
                true
            },
            async {
                link.until_stopped().await;
                false
            },
        );
        if !woken.await || link.failure.borrow().is_some() {
            return;
        }
        std::mem::swap(&mut batch, &mut *link.outbox.borrow_mut());
        if batch.is_empty() {
            continue;
        }
        let written = or(
            async { Some(super::tls::write_flushed(&mut stream, &batch).await) },
            async {
                link.until_stopped().await;
                None
            },
        );
        match written.await {
            None => return,
            Some(Ok(())) => {}
            Some(Err(e)) => return link.fail(lost("write failed", e)),
        }
        batch.clear();
        if batch.capacity() > BUFFER_KEEP_BYTES {
            batch = Vec::new();
        }
    }
}

/// Fails the link when its oldest request has waited longer than the reply timeout. Sleeps
/// to the oldest request's deadline, so it wakes about once per timeout while busy.
async fn watch_deadlines(link: Rc<Link>) {
    let limit = link.settings.reply_timeout;
    loop {
        let oldest = link.waiters.borrow().front().map(|w| w.queued_at);
        let wait = async {
            match oldest {
                None => link.first_waiter.wait().await,
                Some(at) => {
                    glommio::timer::sleep((at + limit).saturating_duration_since(Instant::now()))
                        .await
                }
            }
            true
        };
        let stopped = async {
            link.until_stopped().await;
            false
        };
        if !or(wait, stopped).await {
            return;
        }
        let overdue = link
            .waiters
            .borrow()
            .front()
            .is_some_and(|w| w.queued_at.elapsed() >= limit);
        if overdue {
            let ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
            return link.fail(ForwardError::ReplyTimeout { ms });
        }
    }
}

/// Wakes the one task that waits on it; a wake with nobody waiting is kept for the next wait.
#[derive(Default)]
struct Wakeup {
    pending: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Wakeup {
    fn wake(&self) {
        self.pending.set(true);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    async fn wait(&self) {
        poll_fn(|cx| {
            if self.pending.replace(false) {
                Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}

/// The link's socket, shared by its reader and writer tasks. Each borrows it only within
/// one poll, and glommio tracks read and write readiness separately, so a read and a write
/// can both be pending.
#[derive(Clone)]
struct SharedStream(Rc<RefCell<PeerStream>>);

impl AsyncRead for SharedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl AsyncWrite for SharedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_close(cx)
    }
}

/// A link's receive side: the bytes read from the node, cut into whole replies.
struct ReplyReader {
    /// Storage; bytes `start..end` are received and not yet handed out, the rest is room.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    scanner: ReplyScanner,
    max_bytes: usize,
}

impl ReplyReader {
    fn new(max_bytes: usize) -> Self {
        ReplyReader {
            buf: Vec::new(),
            start: 0,
            end: 0,
            scanner: ReplyScanner::default(),
            max_bytes,
        }
    }

    /// The next whole reply among the bytes received, if it is all there.
    fn next_buffered(&mut self) -> Result<Option<Vec<u8>>, ForwardError> {
        let pending = &self.buf[self.start..self.end];
        let too_large = ForwardError::ReplyTooLarge {
            max_bytes: self.max_bytes,
        };
        let len = match self.scanner.scan(pending) {
            Decoded::Complete((), len) if len <= self.max_bytes => len,
            Decoded::Complete(..) => return Err(too_large),
            Decoded::Incomplete if pending.len() > self.max_bytes => return Err(too_large),
            Decoded::Incomplete => return Ok(None),
            Decoded::Invalid(e) => {
                return Err(ForwardError::BadReply {
                    reason: e.to_string(),
                })
            }
        };
        let reply = if self.start == 0 && len > FORWARD_READ_CHUNK_BYTES {
            // A large reply keeps the storage it was read into; only what follows is copied.
            let rest = self.buf[len..self.end].to_vec();
            self.buf.truncate(len);
            self.end -= len;
            std::mem::replace(&mut self.buf, rest)
        } else {
            let reply = self.buf[self.start..self.start + len].to_vec();
            self.start += len;
            reply
        };
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > BUFFER_KEEP_BYTES {
                self.buf = Vec::new();
            }
        }
        Ok(Some(reply))
    }

    /// Reads more bytes from the node (yields). The end of the stream is an error: the
    /// link has no use once the node stops talking.
    async fn fill(&mut self, from: &mut (impl AsyncRead + Unpin)) -> Result<(), ForwardError> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let room = (self.end + FORWARD_READ_CHUNK_BYTES).max(self.buf.capacity());
        if self.buf.len() < room {
            self.buf.resize(room, 0);
        }
        let n = from
            .read(&mut self.buf[self.end..])
            .await
            .map_err(|e| lost("read failed", e))?;
        if n == 0 {
            return Err(ForwardError::LinkLost {
                reason: "the node closed the connection".to_string(),
            });
        }
        self.end += n;
        Ok(())
    }

    /// Reads until a whole reply is in, and returns it (yields).
    async fn next_reply(
        &mut self,
        from: &mut (impl AsyncRead + Unpin),
    ) -> Result<Vec<u8>, ForwardError> {
        loop {
            if let Some(reply) = self.next_buffered()? {
                return Ok(reply);
            }
            self.fill(from).await?;
        }
    }
}

/// Finds where a reply ends as its bytes arrive, resuming where the last look stopped.
///
/// `frame::skip` measures a reply from its first byte; asking it again after each read
/// would walk a large aggregate once per read, quadratic in its size, with the core stalled.
/// This walks aggregate headers itself and leaves every other value to `frame::skip`, so a
/// reply's bytes are walked once. It follows `frame`'s grammar exactly (the tests compare
/// the two on every prefix of every reply they use).
#[derive(Debug, Default)]
struct ReplyScanner {
    /// Where the next value to measure starts, from the reply's first byte.
    at: usize,
    /// Values still to come in each aggregate opened and not finished, outermost first.
    open: Vec<u64>,
}

impl ReplyScanner {
    /// Measures the reply at the front of `buf`, which holds the bytes given to earlier calls
    /// and perhaps more. Once it is `Complete`, the scanner starts over for the next reply.
    fn scan(&mut self, buf: &[u8]) -> Decoded<()> {
        loop {
            if self.open.len() > MAX_DEPTH {
                return Decoded::Invalid(FrameError::TooDeep);
            }
            let Some(&kind) = buf.get(self.at) else {
                return Decoded::Incomplete;
            };
            let measured = if matches!(kind, b'*' | b'~' | b'>' | b'%' | b'|') {
                aggregate_header(&buf[self.at..])
            } else {
                match frame::skip(&buf[self.at..]) {
                    Decoded::Complete(_, len) => Decoded::Complete(0, len),
                    Decoded::Incomplete => Decoded::Incomplete,
                    Decoded::Invalid(e) => Decoded::Invalid(e),
                }
            };
            let items = match measured {
                Decoded::Complete(items, len) => {
                    self.at += len;
                    items
                }
                Decoded::Incomplete => return Decoded::Incomplete,
                Decoded::Invalid(e) => return Decoded::Invalid(e),
            };
            if items > 0 {
                self.open.push(items);
                continue;
            }
            // A value ended: count it in its aggregate, and each aggregate it completes.
            loop {
                let Some(left) = self.open.last_mut() else {
                    let len = self.at;
                    self.at = 0;
                    return Decoded::Complete((), len);
                };
                *left -= 1;
                if *left > 0 {
                    break;
                }
                self.open.pop();
            }
        }
    }
}

/// Reads an aggregate's header line: how many values follow it, and the header's length.
/// A map's or attribute's pairs count twice, and an attribute also precedes the value it
/// describes; a null aggregate has none.
fn aggregate_header(buf: &[u8]) -> Decoded<u64> {
    let Some(cr) = buf
        .get(1..)
        .and_then(|rest| rest.windows(2).position(|w| w == b"\r\n"))
    else {
        return Decoded::Incomplete;
    };
    let digits = &buf[1..1 + cr];
    let Some(n) = std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
    else {
        return Decoded::Invalid(FrameError::BadNumber);
    };
    let len = 1 + cr + 2;
    let Ok(n) = u64::try_from(n) else {
        return Decoded::Complete(0, len);
    };
    // n <= i64::MAX, so neither of these overflows a u64.
    let items = match buf[0] {
        b'%' => 2 * n,
        b'|' => 2 * n + 1,
        _ => n,
    };
    Decoded::Complete(items, len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::frame::Frame;
    use futures_lite::AsyncWriteExt;
    use glommio::net::TcpListener;
    use glommio::{LocalExecutorBuilder, Placement};
    use std::future::Future;

    // Framing, without sockets.

    /// Replies of every RESP2 and RESP3 type, nested, as a node may send them.
    const REPLIES: &[&[u8]] = &[
        b"+OK\r\n",
        b"-ERR wrong\r\n",
        b":42\r\n",
        b"$5\r\nhe\r\no\r\n",
        b"$0\r\n\r\n",
        b"$-1\r\n",
        b"*-1\r\n",
        b"*0\r\n",
        b"_\r\n",
        b"*3\r\n$1\r\na\r\n*2\r\n:1\r\n:2\r\n*0\r\n",
        b"%2\r\n+a\r\n*1\r\n_\r\n$1\r\nb\r\n%1\r\n#t\r\n,1.5\r\n",
        b"~2\r\n(12345678901234567890\r\n=7\r\ntxt:abc\r\n",
        b">2\r\n+message\r\n!5\r\nERR x\r\n",
        b"|1\r\n+ttl\r\n:3600\r\n*2\r\n:1\r\n|0\r\n:2\r\n",
        b"|-1\r\n",
    ];

    /// Bytes that are not RESP, each wrong in a different way.
    fn not_resp() -> Vec<Vec<u8>> {
        let deep = "*1\r\n".repeat(MAX_DEPTH + 2) + ":1\r\n";
        vec![
            b"?\r\n".to_vec(),
            b"*x\r\n".to_vec(),
            b"*2\r\n:1\r\n$1\r\nab\r\n".to_vec(),
            b"%1\r\n+a\r\n$z\r\n".to_vec(),
            deep.into_bytes(),
        ]
    }

    fn bulk(data: &[u8]) -> Vec<u8> {
        let mut out = format!("${}\r\n", data.len()).into_bytes();
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
        out
    }

    /// A bulk larger than a read chunk, with CRLFs inside.
    fn big_bulk() -> Vec<u8> {
        bulk(&b"ab\r\n".repeat(10_000))
    }

    #[test]
    fn scanner_agrees_with_skip_on_every_prefix() {
        let inputs = REPLIES.iter().map(|r| r.to_vec()).chain(not_resp());
        for input in inputs {
            let mut resumed = ReplyScanner::default();
            let mut resumed_done = false;
            for cut in 0..=input.len() {
                let prefix = &input[..cut];
                let want = match frame::skip(prefix) {
                    Decoded::Complete(_, len) => Decoded::Complete((), len),
                    Decoded::Incomplete => Decoded::Incomplete,
                    Decoded::Invalid(e) => Decoded::Invalid(e),
                };
                let text = String::from_utf8_lossy(&input);
                let fresh = ReplyScanner::default().scan(prefix);
                assert_eq!(fresh, want, "from scratch: {text:?} cut at {cut}");
                if !resumed_done {
                    let got = resumed.scan(prefix);
                    resumed_done = got != Decoded::Incomplete;
                    assert_eq!(got, want, "resumed: {text:?} cut at {cut}");
                }
            }
        }
    }

    /// Hands out `bytes` at most `piece` bytes per read, then the end of the stream.
    struct Pieces {
        bytes: Vec<u8>,
        at: usize,
        piece: usize,
    }

    impl AsyncRead for Pieces {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let at = self.at;
            let n = self.piece.min(buf.len()).min(self.bytes.len() - at);
            buf[..n].copy_from_slice(&self.bytes[at..at + n]);
            self.at += n;
            Poll::Ready(Ok(n))
        }
    }

    fn read_all(
        bytes: Vec<u8>,
        piece: usize,
        max_bytes: usize,
    ) -> Vec<Result<Vec<u8>, ForwardError>> {
        let mut from = Pieces {
            bytes,
            at: 0,
            piece,
        };
        let mut replies = ReplyReader::new(max_bytes);
        futures_lite::future::block_on(async {
            let mut got = Vec::new();
            loop {
                let reply = replies.next_reply(&mut from).await;
                let last = reply.is_err();
                got.push(reply);
                if last {
                    return got;
                }
            }
        })
    }

    #[test]
    fn replies_come_whole_however_the_reads_cut_them() {
        let mut all: Vec<Vec<u8>> = REPLIES.iter().map(|r| r.to_vec()).collect();
        all.insert(3, big_bulk());
        all.insert(0, big_bulk());
        all.push(big_bulk());
        for piece in [1, 2, 3, 7, 64, 4096, 1 << 20] {
            let got = read_all(all.concat(), piece, FORWARD_REPLY_MAX_BYTES);
            let (last, replies) = got.split_last().expect("an end");
            let replies: Vec<Vec<u8>> = replies.iter().cloned().map(Result::unwrap).collect();
            assert_eq!(replies, all, "reads of {piece} bytes");
            let closed = ForwardError::LinkLost {
                reason: "the node closed the connection".to_string(),
            };
            assert_eq!(last, &Err(closed));
        }
    }

    #[test]
    fn a_reply_too_large_or_not_resp_is_an_error() {
        let too_large = Err(ForwardError::ReplyTooLarge { max_bytes: 64 });
        for piece in [1, 10, 1 << 20] {
            // Whether the reply is still coming or already whole, it is too large.
            let got = read_all(
                [b"+OK\r\n".to_vec(), bulk(&[b'x'; 100])].concat(),
                piece,
                64,
            );
            assert_eq!(got, vec![Ok(b"+OK\r\n".to_vec()), too_large.clone()]);
        }
        let got = read_all(b"?what\r\n".to_vec(), 1 << 20, 64);
        let bad = ForwardError::BadReply {
            reason: "unknown RESP type byte 0x3f".to_string(),
        };
        assert_eq!(got, vec![Err(bad)]);
    }

    #[test]
    fn encode_command_writes_what_clients_send() {
        let args: [&[u8]; 3] = [b"SET", b"k\r\n", b""];
        let mut out = b"prefix".to_vec();
        Forwarder::encode_command(args.iter().copied(), &mut out);
        assert_eq!(
            out,
            [&b"prefix"[..], &crate::resp::request::encode(&args)].concat()
        );
    }

    #[test]
    fn error_messages_are_one_line() {
        let e = ForwardError::AuthRefused {
            reply: one_line("-WRONGPASS bad\r\nsecond line\r\n"),
        };
        let text = e.to_string();
        assert!(!text.contains(['\r', '\n']), "{text:?}");
        assert!(text.contains("-WRONGPASS bad second line"), "{text:?}");
    }

    // A fake node on a real socket.

    /// Every wait in these tests ends by this many ms.
    const DEADLINE_MS: u64 = 10_000;

    fn run<F, Fut>(test: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(test)
            .expect("an executor starts")
            .join()
            .expect("the test passes");
    }

    async fn within<T>(ms: u64, f: impl Future<Output = T>) -> T {
        glommio::timer::timeout(Duration::from_millis(ms), async { Ok(f.await) })
            .await
            .expect("the test's deadline passed")
    }

    fn command(args: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        Forwarder::encode_command(args.iter().map(|a| a.as_bytes()), &mut out);
        out
    }

    /// A reply spanning many reads: a RESP3 map holding an array, an attribute, a set and
    /// a bulk larger than a read chunk.
    fn nested() -> Vec<u8> {
        let head = b"%2\r\n$4\r\nlist\r\n*3\r\n:1\r\n_\r\n=7\r\ntxt:abc\r\n+big\r\n|1\r\n+ttl\r\n:5\r\n~2\r\n#t\r\n";
        [&head[..], &big_bulk()].concat()
    }

    enum Act {
        Reply(Vec<u8>),
        Ignore,
        HangUp,
    }

    /// The fake node's commands.
    fn answer(args: &[Vec<u8>]) -> Act {
        let arg = |i: usize| args.get(i).map(Vec::as_slice).unwrap_or_default();
        match arg(0) {
            b"GET" => Act::Reply(bulk(arg(1))),
            b"AUTH" if arg(1) == b"secret" => Act::Reply(b"+OK\r\n".to_vec()),
            b"AUTH" => Act::Reply(b"-WRONGPASS invalid username-password pair\r\n".to_vec()),
            b"HELLO" => Act::Reply(b"%1\r\n$5\r\nproto\r\n:3\r\n".to_vec()),
            b"NESTED" => Act::Reply(nested()),
            b"BIG" => Act::Reply(bulk(&[b'x'; 1000])),
            b"BAD" => Act::Reply(b"?what\r\n".to_vec()),
            b"QUIT" => Act::HangUp,
            _ => Act::Ignore,
        }
    }

    /// Each connection's commands, in order.
    type Seen = Rc<RefCell<Vec<Vec<Vec<Vec<u8>>>>>>;

    /// Starts a fake node that writes its replies `piece` bytes at a time, yielding between
    /// pieces, so replies reach the link cut up and batched in varying ways.
    fn start_node(piece: usize) -> (SocketAddr, Seen) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("an address");
        let seen = Seen::default();
        let conns = seen.clone();
        glommio::spawn_local(async move {
            while let Ok(conn) = listener.accept().await {
                conns.borrow_mut().push(Vec::new());
                let index = conns.borrow().len() - 1;
                glommio::spawn_local(serve(conn, piece, conns.clone(), index)).detach();
            }
        })
        .detach();
        (addr, seen)
    }

    async fn serve(mut conn: TcpStream, piece: usize, seen: Seen, index: usize) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            let mut out = Vec::new();
            let mut hang_up = false;
            while let Decoded::Complete(Frame::Array(items), used) = frame::decode(&buf) {
                buf.drain(..used);
                let args: Vec<Vec<u8>> = items
                    .into_iter()
                    .map(|f| match f {
                        Frame::Bulk(b) => b,
                        other => panic!("a command of bulks, not {other:?}"),
                    })
                    .collect();
                let act = answer(&args);
                seen.borrow_mut()[index].push(args);
                match act {
                    Act::Reply(reply) => out.extend(reply),
                    Act::Ignore => {}
                    Act::HangUp => {
                        hang_up = true;
                        break;
                    }
                }
            }
            for p in out.chunks(piece) {
                if conn.write_all(p).await.is_err() {
                    return;
                }
                futures_lite::future::yield_now().await;
            }
            if hang_up {
                return;
            }
        }
    }

    fn spawn_call(
        fwd: &Rc<Forwarder>,
        to: SocketAddr,
        proto: u8,
        args: &[&str],
    ) -> glommio::Task<Result<Vec<u8>, ForwardError>> {
        let (fwd, request) = (fwd.clone(), command(args));
        glommio::spawn_local(async move { fwd.call(to, proto, &request).await })
    }

    impl Forwarder {
        fn in_flight(&self, key: LinkKey) -> usize {
            match self.links.borrow().get(&key) {
                Some(Slot::Ready(link)) => link.waiters.borrow().len(),
                Some(Slot::Connecting(attempt)) => attempt.waiters.borrow().len(),
                None => 0,
            }
        }
    }

    #[test]
    fn pipelined_calls_get_their_own_replies_in_order() {
        run(|| async {
            for piece in [1, 5, usize::MAX] {
                let (node, seen) = start_node(piece);
                let fwd = Rc::new(Forwarder::with_settings(None, Settings::default()));
                let keys: Vec<String> = (0..200).map(|i| format!("key{i}")).collect();
                let calls: Vec<_> = keys
                    .iter()
                    .map(|k| spawn_call(&fwd, node, 2, &["GET", k]))
                    .collect();
                for (key, call) in keys.iter().zip(calls) {
                    let reply = within(DEADLINE_MS, call).await;
                    assert_eq!(reply, Ok(bulk(key.as_bytes())), "pieces of {piece} bytes");
                }
                let seen = seen.borrow();
                assert_eq!(seen.len(), 1, "the calls share one link");
                let sent: Vec<&[u8]> = seen[0].iter().map(|c| c[1].as_slice()).collect();
                let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
                assert_eq!(sent, keys, "requests go out in the order of the calls");
            }
        });
    }

    #[test]
    fn a_resp3_reply_spanning_reads_comes_whole() {
        run(|| async {
            let (node, seen) = start_node(1000);
            let fwd = Forwarder::with_settings(None, Settings::default());
            let reply = within(DEADLINE_MS, fwd.call(node, 3, &command(&["NESTED"]))).await;
            assert_eq!(reply, Ok(nested()));
            let first = seen.borrow()[0][0].clone();
            assert_eq!(first, vec![b"HELLO".to_vec(), b"3".to_vec()]);
        });
    }

    #[test]
    fn auth_goes_first_and_a_refusal_leaves_no_link() {
        run(|| async {
            let (node, seen) = start_node(usize::MAX);
            let fwd = Forwarder::with_settings(Some("secret".to_string()), Settings::default());
            let reply = within(DEADLINE_MS, fwd.call(node, 3, &command(&["GET", "k"]))).await;
            assert_eq!(reply, Ok(bulk(b"k")));
            let sent: Vec<Vec<Vec<u8>>> = seen.borrow()[0].clone();
            let want: Vec<Vec<Vec<u8>>> = [["AUTH", "secret"], ["HELLO", "3"], ["GET", "k"]]
                .iter()
                .map(|c| c.iter().map(|a| a.as_bytes().to_vec()).collect())
                .collect();
            assert_eq!(sent, want);

            let fwd = Forwarder::with_settings(Some("wrong".to_string()), Settings::default());
            for attempt in 1..=2 {
                let reply = within(DEADLINE_MS, fwd.call(node, 2, &command(&["GET", "k"]))).await;
                let refused = ForwardError::AuthRefused {
                    reply: "-WRONGPASS invalid username-password pair".to_string(),
                };
                assert_eq!(reply, Err(refused));
                assert_eq!(fwd.slots(), 0);
                assert_eq!(
                    seen.borrow().len(),
                    1 + attempt,
                    "each call connects afresh"
                );
            }
        });
    }

    #[test]
    fn a_node_hanging_up_fails_pending_calls_and_the_next_call_reconnects() {
        run(|| async {
            let (node, seen) = start_node(usize::MAX);
            let fwd = Rc::new(Forwarder::with_settings(None, Settings::default()));
            let hang = spawn_call(&fwd, node, 2, &["HANG"]);
            let quit = spawn_call(&fwd, node, 2, &["QUIT"]);
            for call in [hang, quit] {
                let reply = within(DEADLINE_MS, call).await;
                assert!(
                    matches!(reply, Err(ForwardError::LinkLost { .. })),
                    "{reply:?}"
                );
            }
            assert_eq!(fwd.slots(), 0);
            let reply = within(DEADLINE_MS, fwd.call(node, 2, &command(&["GET", "k"]))).await;
            assert_eq!(reply, Ok(bulk(b"k")));
            assert_eq!(seen.borrow().len(), 2);
        });
    }

    #[test]
    fn a_closed_port_fails_within_the_connect_timeout() {
        run(|| async {
            // Bound and closed again: nothing listens on this port.
            let node = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port");
            let fwd = Forwarder::with_settings(None, Settings::default());
            for _ in 0..2 {
                let request = command(&["GET", "k"]);
                let call = fwd.call(node, 2, &request);
                let reply = within(FORWARD_CONNECT_TIMEOUT_MS + 500, call).await;
                assert!(
                    matches!(reply, Err(ForwardError::Connect { .. })),
                    "{reply:?}"
                );
                assert_eq!(fwd.slots(), 0, "a failed connect leaves no link");
            }
        });
    }

    #[test]
    fn a_reply_too_large_or_not_resp_kills_the_link() {
        run(|| async {
            let (node, seen) = start_node(100);
            let settings = Settings {
                reply_max_bytes: 64,
                ..Settings::default()
            };
            let fwd = Rc::new(Forwarder::with_settings(None, settings));
            let big = spawn_call(&fwd, node, 2, &["BIG"]);
            let after = spawn_call(&fwd, node, 2, &["GET", "k"]);
            for call in [big, after] {
                let reply = within(DEADLINE_MS, call).await;
                assert_eq!(reply, Err(ForwardError::ReplyTooLarge { max_bytes: 64 }));
            }
            assert_eq!(fwd.slots(), 0);
            let reply = within(DEADLINE_MS, fwd.call(node, 2, &command(&["BAD"]))).await;
            assert!(
                matches!(reply, Err(ForwardError::BadReply { .. })),
                "{reply:?}"
            );
            assert_eq!(fwd.slots(), 0);
            let reply = within(DEADLINE_MS, fwd.call(node, 2, &command(&["GET", "k"]))).await;
            assert_eq!(reply, Ok(bulk(b"k")));
            assert_eq!(seen.borrow().len(), 3);
        });
    }

    #[test]
    fn an_overdue_reply_kills_the_link() {
        run(|| async {
            let (node, _) = start_node(usize::MAX);
            let settings = Settings {
                reply_timeout: Duration::from_millis(50),
                ..Settings::default()
            };
            let fwd = Rc::new(Forwarder::with_settings(None, settings));
            let reply = within(DEADLINE_MS, fwd.call(node, 2, &command(&["HANG"]))).await;
            assert_eq!(reply, Err(ForwardError::ReplyTimeout { ms: 50 }));
            assert_eq!(fwd.slots(), 0);
            let reply = within(DEADLINE_MS, fwd.call(node, 2, &command(&["GET", "k"]))).await;
            assert_eq!(reply, Ok(bulk(b"k")));
        });
    }

    #[test]
    fn too_many_in_flight_fails_at_once_and_close_all_fails_the_rest() {
        run(|| async {
            let (node, seen) = start_node(usize::MAX);
            let settings = Settings {
                max_inflight: 2,
                ..Settings::default()
            };
            let fwd = Rc::new(Forwarder::with_settings(None, settings));
            let reply = within(DEADLINE_MS, fwd.call(node, 2, &command(&["GET", "k"]))).await;
            assert_eq!(reply, Ok(bulk(b"k")));
            let hanging = [
                spawn_call(&fwd, node, 2, &["HANG"]),
                spawn_call(&fwd, node, 2, &["HANG"]),
            ];
            within(DEADLINE_MS, async {
                while fwd.in_flight((node, 2)) < 2 {
                    futures_lite::future::yield_now().await;
                }
            })
            .await;
            let reply = fwd.call(node, 2, &command(&["GET", "k"])).await;
            assert_eq!(reply, Err(ForwardError::TooManyInFlight { max: 2 }));
            fwd.close_all();
            for call in hanging {
                assert_eq!(within(DEADLINE_MS, call).await, Err(ForwardError::Closed));
            }
            let reply = within(DEADLINE_MS, fwd.call(node, 2, &command(&["GET", "k"]))).await;
            assert_eq!(reply, Ok(bulk(b"k")));
            assert_eq!(seen.borrow().len(), 2);
        });
    }
}
