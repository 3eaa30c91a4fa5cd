//! Pipelined execution: a connection's commands run in arrival order of their replies,
//! local ones at once, others batched per owning core so that a pipeline of many commands
//! for another core crosses the mesh once per batch, not once per command.

use super::core::Core;
use super::forward::PendingReply;
use super::mesh::Pending;
use super::metrics;
use super::session::Session;
use crate::cmd::table::Exec;
use crate::cmd::{Args, CommandSpec, ShardCtx};
use crate::resp::{Out, Protocol};
use std::ops::Range;
use std::time::Instant;

/// A batch's replies, concatenated, where each one ends, and its slow calls (for the
/// connection's core to log with the client's address and name).
type BatchReply = (Vec<u8>, Vec<usize>, Vec<metrics::SlowCall>);

/// Commands for one other core, with their arguments copied into one buffer.
#[derive(Default)]
pub struct RemoteBatch {
    data: Vec<u8>,
    ranges: Vec<Range<usize>>,
    cmds: Vec<(&'static CommandSpec, Range<usize>)>,
}

impl RemoteBatch {
    fn push(&mut self, spec: &'static CommandSpec, args: Args) {
        let first = self.ranges.len();
        for a in args.iter() {
            let start = self.data.len();
            self.data.extend_from_slice(a);
            self.ranges.push(start..self.data.len());
        }
        self.cmds.push((spec, first..self.ranges.len()));
    }

    /// Runs on the owning core: every command against its shard, replies concatenated.
    /// Returns the replies and where each ends.
    fn run(self, core: &Core, db: usize, proto: Protocol) -> BatchReply {
        let mut buf = Vec::with_capacity(64 * self.cmds.len());
        let mut ends = Vec::with_capacity(self.cmds.len());
        let mut shard = core.shard.borrow_mut();
        let mut ctx = ShardCtx {
            shard: &mut shard,
            db,
            now_ms: core.now_ms(),
            limits: core.shard_limits(),
        };
        let mut errors = 0;
        let mut slow = Vec::new();
        let threshold = core.config.borrow().slowlog_log_slower_than;
        for (spec, r) in &self.cmds {
            let start = buf.len();
            if let Exec::Shard(f, _) = spec.exec {
                let began = Instant::now();
                let args = Args::new(&self.data, &self.ranges[r.clone()]);
                crate::cmd::run_on_shard(spec, f, &mut ctx, args, &mut Out::new(&mut buf, proto));
                let failed = note_error(&buf[start..]);
                let took = began.elapsed();
                let nanos = took.as_nanos() as u64;
                metrics::record(spec, &args, nanos, failed);
                metrics::command_latency(spec, took);
                slow.extend(metrics::slow_call(spec, args, threshold, nanos));
                errors += failed as u64;
            }
            ends.push(buf.len());
        }
        drop(shard);
        core.bump(|st| st.total_error_replies += errors);
        (buf, ends, slow)
    }
}

/// Whether an encoded reply is an error reply.
pub fn is_error_reply(reply: &[u8]) -> bool {
    reply.first() == Some(&b'-')
}

/// Whether a reply is an error; if so it is counted in this core's error statistics.
pub fn note_error(reply: &[u8]) -> bool {
    let error = is_error_reply(reply);
    if error {
        metrics::error_reply(reply);
    }
    error
}

enum Seg {
    /// A reply produced here while remote replies were pending: `side[range]`.
    Side(Range<usize>),
    /// The `idx`-th reply of the batch sent to `core`.
    Remote { core: usize, idx: usize },
    /// The `idx`-th command forwarded to another node.
    Forwarded(usize),
}

/// Reply ordering and per-core batches of one connection.
pub struct Pipeline {
    segs: Vec<Seg>,
    side: Vec<u8>,
    batches: Vec<RemoteBatch>,
    /// Commands forwarded to other nodes, in order: where to, and the reply to come.
    forwarded: Vec<(std::net::SocketAddr, PendingReply)>,
    remote_cmds: usize,
    errors: u64,
}

impl Pipeline {
    pub fn new(cores: usize) -> Pipeline {
        Pipeline {
            segs: Vec::new(),
            side: Vec::new(),
            batches: (0..cores).map(|_| RemoteBatch::default()).collect(),
            forwarded: Vec::new(),
            remote_cmds: 0,
            errors: 0,
        }
    }

    pub fn has_remote(&self) -> bool {
        self.remote_cmds > 0
    }

    /// Writes a reply produced on this core, in order: straight into `out` when nothing
    /// is pending elsewhere (the common case), else aside until [`Pipeline::flush`].
    pub fn reply_here(&mut self, out: &mut Vec<u8>, proto: Protocol, f: impl FnOnce(&mut Out)) {
        self.write_here(out, proto, f);
    }

    /// [`Pipeline::reply_here`], saying whether the reply is an error.
    pub fn write_here(
        &mut self,
        out: &mut Vec<u8>,
        proto: Protocol,
        f: impl FnOnce(&mut Out),
    ) -> bool {
        let target = if self.has_remote() {
            &mut self.side
        } else {
            out
        };
        let start = target.len();
        f(&mut Out::new(target, proto));
        let failed = note_error(&target[start..]);
        self.errors += failed as u64;
        if self.has_remote() {
            self.segs.push(Seg::Side(start..self.side.len()));
        }
        failed
    }

    /// Error replies written here since the last call (for INFO's `total_error_replies`).
    pub fn take_errors(&mut self) -> u64 {
        std::mem::take(&mut self.errors)
    }

    /// Queues a command for another core; returns that core's batch length.
    pub fn push_remote(&mut self, core: usize, spec: &'static CommandSpec, args: Args) -> usize {
        if !self.has_remote() {
            self.segs.clear();
            self.side.clear();
        }
        let batch = &mut self.batches[core];
        batch.push(spec, args);
        self.remote_cmds += 1;
        self.segs.push(Seg::Remote {
            core,
            idx: batch.cmds.len() - 1,
        });
        batch.cmds.len()
    }

    /// Holds the place of a command already sent to another node; returns how many are
    /// pending.
    pub fn push_forwarded(&mut self, to: std::net::SocketAddr, reply: PendingReply) -> usize {
        if !self.has_remote() {
            self.segs.clear();
            self.side.clear();
        }
        self.forwarded.push((to, reply));
        self.remote_cmds += 1;
        self.segs.push(Seg::Forwarded(self.forwarded.len() - 1));
        self.forwarded.len()
    }

    /// Sends every pending batch (all at once), waits for their replies and appends all
    /// replies to `out` in command order.
    pub async fn flush(&mut self, core: &Core, s: &Session, out: &mut Vec<u8>) {
        if !self.has_remote() {
            return;
        }
        let mut pending: Vec<(usize, Pending<BatchReply>)> = Vec::new();
        for target in 0..self.batches.len() {
            if self.batches[target].cmds.is_empty() {
                continue;
            }
            let batch = std::mem::take(&mut self.batches[target]);
            let (db, proto) = (s.db, s.proto);
            let p = core
                .start_on(target, s.tx, move |c| batch.run(c, db, proto))
                .await;
            pending.push((target, p));
        }
        let mut results: Vec<BatchReply> =
            vec![(Vec::new(), Vec::new(), Vec::new()); self.batches.len()];
        for (target, p) in pending {
            results[target] = p.wait().await;
        }
        if results.iter().any(|r| !r.2.is_empty()) {
            let max_len = core.config.borrow().slowlog_max_len;
            let r = s.record.borrow();
            for call in results.iter_mut().flat_map(|r| r.2.drain(..)) {
                metrics::slowlog_push(call, r.addr.to_string(), r.name.clone(), max_len);
            }
        }
        let mut relayed: Vec<Vec<u8>> = Vec::with_capacity(self.forwarded.len());
        for (to, reply) in self.forwarded.drain(..) {
            let bytes = match reply.wait().await {
                Ok(bytes) => bytes,
                Err(e) => {
                    let mut b = Vec::new();
                    let msg = format!("TRYAGAIN forwarding to {to} failed: {e}");
                    Out::new(&mut b, s.proto).error(&msg);
                    b
                }
            };
            if note_error(&bytes) {
                core.bump(|st| st.total_error_replies += 1);
            }
            relayed.push(bytes);
        }
        for seg in self.segs.drain(..) {
            match seg {
                Seg::Side(r) => out.extend_from_slice(&self.side[r]),
                Seg::Remote { core, idx } => {
                    let (buf, ends, _) = &results[core];
                    let start = if idx == 0 { 0 } else { ends[idx - 1] };
                    out.extend_from_slice(&buf[start..ends[idx]]);
                }
                Seg::Forwarded(idx) => out.extend_from_slice(&relayed[idx]),
            }
        }
        self.side.clear();
        self.remote_cmds = 0;
    }
}
