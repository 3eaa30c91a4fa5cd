//! A connection's state, apart from its buffers.

use super::core::ClientRecord;
use super::mesh::TxId;
use crate::cmd::CommandSpec;
use crate::resp::Protocol;
use std::cell::RefCell;
use std::ops::Range;
use std::rc::Rc;
use tessera_shards::ClientId;

/// A command queued by MULTI: its arguments copied into one buffer.
pub struct Queued {
    pub spec: &'static CommandSpec,
    pub data: Vec<u8>,
    pub ranges: Vec<Range<usize>>,
}

impl Queued {
    pub fn new(spec: &'static CommandSpec, args: crate::cmd::Args) -> Queued {
        let mut data = Vec::with_capacity(args.ranges.iter().map(|r| r.len()).sum());
        let mut ranges = Vec::with_capacity(args.len());
        for a in args.iter() {
            let start = data.len();
            data.extend_from_slice(a);
            ranges.push(start..data.len());
        }
        Queued { spec, data, ranges }
    }
}

/// A key under WATCH: where it lives and in which database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    pub core: usize,
    pub db: usize,
    pub key: Vec<u8>,
}

pub struct Session {
    pub id: ClientId,
    /// The client came in on the TLS port: cluster replies name nodes' TLS ports.
    pub tls: bool,
    pub db: usize,
    pub proto: Protocol,
    pub authenticated: bool,
    /// Commands queued since MULTI; `None` outside a transaction.
    pub multi: Option<Vec<Queued>>,
    /// A command was refused while queuing: EXEC must abort.
    pub multi_failed: bool,
    pub watched: Vec<Watched>,
    /// The transaction whose locks this connection holds while EXEC runs.
    pub tx: Option<TxId>,
    /// Close after the replies so far are written (QUIT, protocol error, CLIENT KILL).
    pub closing: bool,
    pub record: Rc<RefCell<ClientRecord>>,
    /// The clock read once for the commands of one read (as Redis reads it once per event
    /// loop pass); cleared after each read and after anything that waits.
    pub batch_now_ms: Option<u64>,
    /// READONLY: the client accepts reads from replicas (cluster mode).
    pub readonly: bool,
    /// CLUSTER FORWARDED: this connection carries commands another node forwarded; keys
    /// this node does not own are answered with MOVED, never forwarded again.
    pub forwarded: bool,
    /// REPLSYNC: once the replies so far are written, the connection becomes a replica's
    /// stream.
    pub replica_stream: Option<crate::repl::SyncRequest>,
    /// MONITOR: once the replies so far are written, the connection streams the lines
    /// coming out of this receiver.
    pub monitor: Option<futures_channel::mpsc::Receiver<std::sync::Arc<str>>>,
    /// A write ran (or was queued) since the replies were last written: under
    /// `repl-ack-replicas` they wait for the replicas.
    pub wrote: bool,
    /// A write admitted by [`super::replication::Replication::open_write`] whose batch has
    /// not finished: a manual failover's pause waits for it.
    pub write_open: bool,
    /// READONLY on a replica that was out of sync once: this connection read its primary's
    /// newer data, so its reads stay with the primary (never back in time).
    pub reads_from_primary: bool,
    /// The ACL user this connection acts as, the users' generation it was looked up at,
    /// and whether it may run everything (then no check runs).
    pub user: std::sync::Arc<super::acl::User>,
    pub acl_generation: u64,
    pub user_unrestricted: bool,
}

impl Session {
    /// A connection as the default user: authenticated already if that user is on and has
    /// no password.
    pub fn new(
        id: ClientId,
        record: Rc<RefCell<ClientRecord>>,
        user: std::sync::Arc<super::acl::User>,
        acl_generation: u64,
    ) -> Session {
        let authenticated = user.enabled && user.nopass;
        let user_unrestricted = user.unrestricted();
        Session {
            id,
            tls: false,
            db: 0,
            proto: Protocol::Resp2,
            authenticated,
            multi: None,
            multi_failed: false,
            watched: Vec::new(),
            tx: None,
            closing: false,
            record,
            batch_now_ms: None,
            readonly: false,
            forwarded: false,
            replica_stream: None,
            monitor: None,
            wrote: false,
            write_open: false,
            reads_from_primary: false,
            user,
            acl_generation,
            user_unrestricted,
        }
    }

    /// Acts as `user` from now on.
    pub fn set_user(&mut self, user: std::sync::Arc<super::acl::User>, generation: u64) {
        self.user_unrestricted = user.unrestricted();
        self.record.borrow_mut().user = user.name.clone();
        self.user = user;
        self.acl_generation = generation;
    }

    /// The time the commands of this batch run at: the clock read once per batch.
    pub fn now_ms(&mut self, clock: impl FnOnce() -> u64) -> u64 {
        *self.batch_now_ms.get_or_insert_with(clock)
    }

    pub fn in_multi(&self) -> bool {
        self.multi.is_some()
    }
}
