//! One client connection: read, decode every complete command, run them in order
//! (batching across cores), write the replies once per read.

use super::core::{ClientHandle, ClientRecord, Core};
use super::forward::Forwarder;
use super::metrics;
use super::node_cmds;
use super::pipeline::{is_error_reply, note_error, Pipeline};
use super::session::{Queued, Session};
use super::tx;
use crate::cluster::membership::Health;
use crate::cluster::view::View;
use crate::cmd::table::{CrossCore, Exec, NodeCmd};
use crate::cmd::{self, errors, Args, CommandSpec, ShardCtx};
use crate::config::ClusterRouting;
use crate::limits;
use crate::resp::{Decoded, Limits, Out, Protocol, RequestDecoder};
use crate::slot::{key_core, key_slot};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

/// Runs one command as the client sent it: lookup, checks, MULTI queuing, then dispatch.
pub async fn run_command(
    core: &Rc<Core>,
    s: &mut Session,
    pipe: &mut Pipeline,
    args: Args<'_>,
    out: &mut Vec<u8>,
) {
    core.bump(|st| st.total_commands_processed += 1);
    let proto = s.proto;
    let Some(spec) = cmd::lookup(args.get(0)) else {
        s.multi_failed |= s.in_multi();
        return pipe.reply_here(out, proto, |o| {
            o.error_bytes(&cmd::unknown_command_error(&args))
        });
    };
    s.record.borrow_mut().last_cmd = spec.name;
    if !spec.arity_ok(args.len()) {
        let msg = cmd::arity_error(spec.name);
        if matches!(spec.exec, Exec::Node(NodeCmd::Exec)) {
            // Redis aborts the transaction (if any) when EXEC itself is refused.
            pipe.flush(core, s, out).await;
            tx::discard_transaction(core, s).await;
            let why = msg.strip_prefix("ERR ").unwrap_or(&msg);
            let text = format!("EXECABORT Transaction discarded because of: {why}");
            metrics::reject(spec, &args);
            return pipe.reply_here(out, proto, |o| o.error(&text));
        }
        s.multi_failed |= s.in_multi();
        metrics::reject(spec, &args);
        return pipe.reply_here(out, proto, |o| o.error(&msg));
    }
    if let Some(err) = check_subcommand(s, spec, &args) {
        s.multi_failed |= s.in_multi();
        metrics::reject(spec, &args);
        return pipe.reply_here(out, proto, |o| o.error_bytes(&err));
    }
    if !s.authenticated && !spec.has_flag("no_auth") {
        s.multi_failed |= s.in_multi();
        metrics::reject(spec, &args);
        return pipe.reply_here(out, proto, |o| o.error(errors::NOAUTH));
    }
    if !s.user_unrestricted
        || core
            .node
            .acl_generation
            .load(std::sync::atomic::Ordering::Relaxed)
            != s.acl_generation
    {
        if let Some(err) = acl_denied(core, s, spec, &args) {
            metrics::reject(spec, &args);
            s.multi_failed |= s.in_multi();
            return pipe.reply_here(out, proto, |o| o.error(&err));
        }
    }
    if s.in_multi() && spec.has_flag("no_multi") {
        s.multi_failed = true;
        metrics::reject(spec, &args);
        return pipe.reply_here(out, proto, |o| {
            o.error("ERR Command not allowed inside a transaction")
        });
    }
    if spec.is_write() {
        // (In a cluster a replica owns no slots: routing forwards or redirects writes.)
        let refused = if core.node.repl.is_replica() && core.node.cluster.get().is_none() {
            Some("READONLY You can't write against a read only replica.")
        } else {
            super::replication::refuse_write(core)
        };
        if let Some(err) = refused {
            s.multi_failed |= s.in_multi();
            metrics::reject(spec, &args);
            return pipe.reply_here(out, proto, |o| o.error(err));
        }
        s.wrote = true;
    }
    let writes_now = if s.in_multi() {
        matches!(spec.exec, Exec::Node(NodeCmd::Exec)) && s.wrote
    } else {
        spec.is_write()
    };
    if writes_now && !s.write_open {
        admit_write(core, s, pipe, out).await;
    }
    super::monitor::feed(core, s, spec, &args);
    if s.in_multi() && !runs_inside_multi(spec) {
        // In a cluster a transaction runs on one node: a key elsewhere is refused when it
        // is queued (with MOVED, whatever the routing mode) and EXEC aborts.
        if let Exec::Shard(..) = spec.exec {
            if let Some(err) = refused_here(core, s, spec, &args) {
                s.multi_failed = true;
                metrics::reject(spec, &args);
                return pipe.reply_here(out, proto, |o| o.error(&err));
            }
        }
        let queue = s.multi.as_mut().expect("in multi");
        if queue.len() >= limits::MULTI_MAX_QUEUED {
            s.multi_failed = true;
            metrics::reject(spec, &args);
            return pipe.reply_here(out, proto, |o| {
                o.error("ERR too many commands queued in MULTI")
            });
        }
        let queued = Queued::new(spec, args);
        let bytes =
            queued.data.len() + queued.ranges.len() * std::mem::size_of::<std::ops::Range<usize>>();
        queue.push(queued);
        let mut r = s.record.borrow_mut();
        r.multi = Some(queue.len());
        r.multi_bytes += bytes;
        return pipe.reply_here(out, proto, |o| o.simple("QUEUED"));
    }
    if let Exec::Node(NodeCmd::Watch) = spec.exec {
        // Watched keys must be on this node, as the transaction's.
        if let Some(err) = refused_here(core, s, spec, &args) {
            metrics::reject(spec, &args);
            return pipe.reply_here(out, proto, |o| o.error(&err));
        }
    }
    dispatch(core, s, pipe, spec, args, out).await
}

/// The NOPERM error if the connection's user may not run `spec` on these keys (logged in
/// ACL LOG). Looks the user up again first if the users changed; a user that was deleted
/// closes the connection.
fn acl_denied(core: &Core, s: &mut Session, spec: &CommandSpec, args: &Args) -> Option<String> {
    let generation = core
        .node
        .acl_generation
        .load(std::sync::atomic::Ordering::Acquire);
    if generation != s.acl_generation {
        let users = core.node.acl.load();
        match users.users.get(&s.user.name) {
            Some(u) => s.set_user(u.clone(), generation),
            None => {
                s.closing = true;
                return Some(format!("NOPERM user '{}' was deleted", s.user.name));
            }
        }
    }
    if s.user_unrestricted || super::acl::exempt(spec) {
        return None;
    }
    let (reason, object, err) = match s.user.check(spec, args) {
        Ok(()) => return None,
        Err(super::acl::Denied::Command(name)) => (
            "command",
            name.to_string(),
            format!(
                "NOPERM User {} has no permissions to run the '{name}' command",
                s.user.name
            ),
        ),
        Err(super::acl::Denied::Key(k)) => (
            "key",
            String::from_utf8_lossy(&k).into_owned(),
            "NOPERM No permissions to access a key".to_string(),
        ),
    };
    let context = if s.in_multi() { "multi" } else { "toplevel" };
    super::acl_cmd::log(
        core,
        reason,
        context,
        object,
        s.user.name.clone(),
        &s.record.borrow(),
    );
    Some(err)
}

/// Admits a write that runs now (see [`super::replication::Replication::open_write`]).
/// While a manual failover holds writes, the commands before it are finished first (so the
/// pause does not wait for this connection), then it waits; afterwards routing decides
/// again, so once this node is a replica the write goes to the new primary.
async fn admit_write(core: &Rc<Core>, s: &mut Session, pipe: &mut Pipeline, out: &mut Vec<u8>) {
    let r = &core.node.repl;
    if !promoting(core) && r.open_write(core.now_ms()) {
        s.write_open = true;
        return;
    }
    pipe.flush(core, s, out).await;
    let give_up = Instant::now() + std::time::Duration::from_millis(limits::REPL_STOP_WAIT_MS);
    while (promoting(core) && Instant::now() < give_up) || !r.open_write(core.now_ms()) {
        glommio::timer::sleep(std::time::Duration::from_millis(
            limits::REPL_POLL_INTERVAL_MS,
        ))
        .await;
    }
    s.write_open = true;
    s.batch_now_ms = None;
}

/// The table has made this replica a primary and its replica task is still stopping: a
/// write now could land between the records it applies, and the point where its old
/// stream ends (which its siblings continue from) would not be clean.
fn promoting(core: &Core) -> bool {
    core.node.repl.is_replica()
        && core
            .node
            .cluster
            .get()
            .is_some_and(|h| h.view.load().my_primary().is_none())
}

/// The writes admitted for this batch are applied: a pause need not wait for them.
fn settle_writes(core: &Core, s: &mut Session) {
    if std::mem::take(&mut s.write_open) {
        core.node.repl.close_write();
    }
}

/// For a container command (CLIENT, CONFIG, COMMAND, OBJECT): the error for an
/// unknown subcommand or a wrong number of arguments to it, checked when the command
/// arrives (so also while MULTI queues), as Redis's command lookup does.
fn check_subcommand(s: &Session, spec: &CommandSpec, args: &Args) -> Option<Vec<u8>> {
    let container = match spec.exec {
        Exec::Node(
            NodeCmd::Client
            | NodeCmd::Config
            | NodeCmd::Command
            | NodeCmd::Memory
            | NodeCmd::Cluster
            | NodeCmd::Slowlog
            | NodeCmd::Latency
            | NodeCmd::Acl,
        ) => spec.name,
        _ if spec.name == "object" => spec.name,
        _ => return None,
    };
    if args.len() < 2 {
        return None;
    }
    let Some(sub) = cmd::table::lookup_subcommand(container, args.get(1)) else {
        return Some(cmd::unknown_subcommand_error(container, args.get(1)));
    };
    s.record.borrow_mut().last_cmd = sub.name;
    let argc = args.len() as i32;
    let ok = if sub.arity >= 0 {
        argc == sub.arity
    } else {
        argc >= -sub.arity
    };
    (!ok).then(|| cmd::arity_error(sub.name).into_bytes())
}

/// Commands that act at once inside MULTI instead of being queued.
fn runs_inside_multi(spec: &CommandSpec) -> bool {
    matches!(
        spec.exec,
        Exec::Node(
            NodeCmd::Exec
                | NodeCmd::Discard
                | NodeCmd::Multi
                | NodeCmd::Watch
                | NodeCmd::Quit
                | NodeCmd::Reset
        )
    )
}

/// Runs a checked command: on this core, batched for its owner core, or across cores.
pub async fn dispatch(
    core: &Rc<Core>,
    s: &mut Session,
    pipe: &mut Pipeline,
    spec: &'static CommandSpec,
    args: Args<'_>,
    out: &mut Vec<u8>,
) {
    match spec.exec {
        Exec::Shard(f, cross) => {
            if let Some(h) = core.node.cluster.get() {
                let routing = if s.forwarded {
                    Routing::Forwarded
                } else if core.config.borrow().cluster_routing == ClusterRouting::Redirect {
                    Routing::Redirect
                } else {
                    Routing::Forward
                };
                let view = h.view.load();
                let reads_for = if s.readonly && !spec.is_write() {
                    replica_reads_for(core, s, &view)
                } else {
                    None
                };
                match route_reads(&view, spec, &args, routing, ports(core, s), reads_for) {
                    Route::Here => {}
                    Route::Refuse(err) => {
                        metrics::reject(spec, &args);
                        return pipe.reply_here(out, s.proto, |o| o.error(&err));
                    }
                    Route::Forward(to) => {
                        let mut request = Vec::new();
                        Forwarder::encode_command(args.iter(), &mut request);
                        let proto = wire_proto(s.proto);
                        match core.forwarder.send_now(to, proto, &request) {
                            // An open link: the command goes now and its reply takes its
                            // place in the pipeline, so a pipeline forwards as one.
                            Some(Ok(reply)) => {
                                let pending = pipe.push_forwarded(to, reply);
                                if pending >= limits::PIPELINE_BATCH_MAX_COMMANDS {
                                    pipe.flush(core, s, out).await;
                                    s.batch_now_ms = None;
                                }
                            }
                            Some(Err(e)) => {
                                let msg = format!("TRYAGAIN forwarding to {to} failed: {e}");
                                pipe.reply_here(out, s.proto, |o| o.error(&msg));
                            }
                            // No link yet: everything before it first, then open one.
                            None => {
                                pipe.flush(core, s, out).await;
                                forward(core, s, to, &request, out).await;
                                s.batch_now_ms = None;
                            }
                        }
                        return;
                    }
                    Route::FanOut(kind) => {
                        pipe.flush(core, s, out).await;
                        let view = h.view.load_full();
                        fan_out(core, s, &view, spec, kind, &args, out).await;
                        s.batch_now_ms = None;
                        return;
                    }
                }
            }
            let mut owner = None;
            let mut spans = false;
            for i in spec.key_positions(args.len()) {
                let c = key_core(args.get(i), core.cores);
                match owner {
                    None => owner = Some(c),
                    Some(o) if o != c => spans = true,
                    _ => {}
                }
            }
            if spans {
                pipe.flush(core, s, out).await;
                let kind = cross.expect("only multi-key commands can span cores");
                let (start, began) = (out.len(), Instant::now());
                tx::run_cross_core(core, s, spec, kind, args, out).await;
                s.batch_now_ms = None;
                let failed = note_error(&out[start..]);
                if failed {
                    core.bump(|st| st.total_error_replies += 1);
                }
                ran(core, s, spec, args, began, failed);
                return;
            }
            let owner = owner.unwrap_or(core.id);
            if owner != core.id {
                if pipe.push_remote(owner, spec, args) >= limits::PIPELINE_BATCH_MAX_COMMANDS {
                    pipe.flush(core, s, out).await;
                }
                return;
            }
            if !core.gate.admits(s.tx) {
                pipe.flush(core, s, out).await;
                core.wait_admitted(s.tx).await;
                s.batch_now_ms = None;
            }
            let (db, now_ms, limits) = (s.db, s.now_ms(|| core.now_ms()), core.shard_limits());
            let began = Instant::now();
            let failed = pipe.write_here(out, s.proto, |o| {
                let mut shard = core.shard.borrow_mut();
                let mut ctx = ShardCtx {
                    shard: &mut shard,
                    db,
                    now_ms,
                    limits,
                };
                cmd::run_on_shard(spec, f, &mut ctx, args, o)
            });
            ran(core, s, spec, args, began, failed);
        }
        Exec::Node(which) => {
            pipe.flush(core, s, out).await;
            let start = out.len();
            let began = Instant::now();
            node_cmds::run(core, s, which, args, out).await;
            s.batch_now_ms = None;
            let failed = note_error(&out[start..]);
            if failed {
                core.bump(|st| st.total_error_replies += 1);
            }
            ran(core, s, spec, args, began, failed);
        }
    }
}

/// Counts a run of `spec` that began at `began`, and keeps it in the slow log if it was
/// slow.
fn ran(core: &Core, s: &Session, spec: &CommandSpec, args: Args, began: Instant, failed: bool) {
    let took = began.elapsed();
    let nanos = took.as_nanos() as u64;
    metrics::record(spec, &args, nanos, failed);
    metrics::command_latency(spec, took);
    let (threshold, max_len) = {
        let c = core.config.borrow();
        (c.slowlog_log_slower_than, c.slowlog_max_len)
    };
    if let Some(call) = metrics::slow_call(spec, args, threshold, nanos) {
        let r = s.record.borrow();
        metrics::slowlog_push(call, r.addr.to_string(), r.name.clone(), max_len);
    }
}

/// On a replica that is in sync, the index of its primary in the view: its slots may be
/// read here by READONLY clients. A replica out of sync sends them to the primary, and
/// keeps sending that connection there: it has read the primary's newer data and must not
/// read this replica's older data after it (one client's reads never go back in time).
fn replica_reads_for(core: &Core, s: &mut Session, view: &View) -> Option<u16> {
    let primary = view.nodes[0].primary?;
    if s.reads_from_primary {
        return None;
    }
    let (entries, ms) = {
        let c = core.config.borrow();
        (c.repl_max_lag_entries, c.repl_max_lag_ms)
    };
    if core.node.repl.in_sync(core.now_ms(), entries, ms) {
        return Some(primary);
    }
    s.reads_from_primary = true;
    core.node
        .repl
        .readonly_moved
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    None
}

/// Where a keyed command runs in a cluster.
enum Route {
    /// This node owns every key.
    Here,
    /// An error reply instead (MOVED, CROSSSLOT, CLUSTERDOWN).
    Refuse(String),
    /// Another node owns every key: run it there (cluster-routing forward).
    Forward(SocketAddr),
    /// The keys live on several nodes: split by node, run the parts there, combine the
    /// replies (MGET, MSET, DEL, UNLINK, EXISTS, TOUCH under cluster-routing forward).
    FanOut(CrossCore),
}

/// Inside MULTI every key must be on this node (MOVED otherwise, whatever the routing
/// mode): a transaction runs on one node. Keys in several of its slots are fine unless the
/// node redirects as Redis does.
fn multi_routing(core: &Core, s: &Session) -> Routing {
    if !s.forwarded && core.config.borrow().cluster_routing == ClusterRouting::Redirect {
        Routing::Redirect
    } else {
        Routing::Forwarded
    }
}

/// How a node treats a keyed command for slots it does not own.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Routing {
    /// cluster-routing forward: run it on the owner(s).
    Forward,
    /// cluster-routing redirect: MOVED, and CROSSSLOT for keys in several slots, as Redis.
    Redirect,
    /// A command another node forwarded: never forwarded again (MOVED), but keys in several
    /// slots of this node are fine (the other node split a multi-key command by owner).
    Forwarded,
}

/// Which of a node's ports a route names: the TLS one for a TLS client's MOVED (as Redis 7
/// answers each client in its own kind), and for forwarding when nodes talk TLS to each
/// other (`tls-cluster`).
#[derive(Clone, Copy)]
struct Ports {
    moved_tls: bool,
    forward_tls: bool,
}

fn ports(core: &Core, s: &Session) -> Ports {
    Ports {
        moved_tls: s.tls,
        forward_tls: core.config.borrow().tls_cluster,
    }
}

/// In a cluster, the error for a command whose keys are not all on this node, routed as
/// inside a transaction (MOVED, whatever the routing mode).
fn refused_here(core: &Core, s: &Session, spec: &CommandSpec, args: &Args) -> Option<String> {
    let h = core.node.cluster.get()?;
    match route(
        &h.view.load(),
        spec,
        args,
        multi_routing(core, s),
        ports(core, s),
    ) {
        Route::Refuse(err) => Some(err),
        _ => None,
    }
}

/// Decides where a keyed command runs, as Redis Cluster's `getNodeByQuery` does, or
/// (forwarding) where to send it.
fn route(view: &View, spec: &CommandSpec, args: &Args, routing: Routing, ports: Ports) -> Route {
    route_reads(view, spec, args, routing, ports, None)
}

/// [`route`], on a replica that may serve reads of its primary's slots (`reads_for`: the
/// primary's index in the view; READONLY clients of an in-sync replica).
fn route_reads(
    view: &View,
    spec: &CommandSpec,
    args: &Args,
    routing: Routing,
    ports: Ports,
    reads_for: Option<u16>,
) -> Route {
    let local = |slot: u16| {
        view.is_mine(slot) || reads_for.is_some_and(|p| view.owners.get(slot as usize) == Some(&p))
    };
    let mut first = None;
    let mut cross_slot = false;
    let mut owners = (false, None::<SocketAddr>, false);
    // A key whose owner is dead (seen only with cluster-require-full-coverage no).
    let mut dead_owner = false;
    for i in spec.key_positions(args.len()) {
        let slot = key_slot(args.get(i));
        match first {
            None => first = Some(slot),
            Some(f) if f != slot => cross_slot = true,
            _ => {}
        }
        // (any key here, the one other owner, keys on several other owners)
        match view.owner(slot) {
            Some(_) if local(slot) => owners.0 = true,
            Some(n) if n.health == Health::Dead => dead_owner = true,
            Some(n) => {
                let at = n.addr.client_for(ports.forward_tls);
                match owners.1 {
                    None => owners.1 = Some(at),
                    Some(a) if a != at => owners.2 = true,
                    _ => {}
                }
            }
            None => return Route::Refuse("CLUSTERDOWN Hash slot not served".into()),
        }
    }
    if first.is_none() {
        return Route::Here;
    }
    if !view.state_ok {
        return Route::Refuse("CLUSTERDOWN The cluster is down".into());
    }
    if dead_owner {
        return Route::Refuse("CLUSTERDOWN Hash slot not served".into());
    }
    let crossslot =
        || Route::Refuse("CROSSSLOT Keys in request don't hash to the same slot".into());
    if routing == Routing::Redirect && cross_slot {
        return crossslot();
    }
    if routing != Routing::Forward {
        // MOVED to the owner of the first key this node does not own.
        for i in spec.key_positions(args.len()) {
            let slot = key_slot(args.get(i));
            match view.owner(slot) {
                Some(_) if local(slot) => {}
                Some(n) => {
                    let at = n.addr.client_for(ports.moved_tls);
                    return Route::Refuse(format!("MOVED {slot} {at}"));
                }
                None => return Route::Refuse("CLUSTERDOWN Hash slot not served".into()),
            }
        }
        return Route::Here;
    }
    match owners {
        (true, None, _) => Route::Here,
        (false, Some(to), false) => Route::Forward(to),
        _ => match spec.exec {
            Exec::Shard(
                _,
                Some(kind @ (CrossCore::Gather | CrossCore::Sum | CrossCore::SetAll)),
            ) => Route::FanOut(kind),
            _ => crossslot(),
        },
    }
}

/// Runs a multi-key command whose keys live on several nodes: one part per node (this
/// node's part too, through its own client port, so that it spans cores as any command
/// does), then one reply from the parts. MSET this way is not atomic across nodes (Redis
/// refuses it with CROSSSLOT; plain clients of a forwarding cluster get it done).
async fn fan_out(
    core: &Rc<Core>,
    s: &Session,
    view: &View,
    spec: &CommandSpec,
    kind: CrossCore,
    args: &Args<'_>,
    out: &mut Vec<u8>,
) {
    let width = if kind == CrossCore::SetAll { 2 } else { 1 };
    // Per node: its address and the positions of its keys, in the order given.
    let mut parts: Vec<(SocketAddr, Vec<usize>)> = Vec::new();
    let mut keys: Vec<(usize, usize)> = Vec::new();
    let tls = core.config.borrow().tls_cluster;
    for i in spec.key_positions(args.len()) {
        let Some(owner) = view.owner(key_slot(args.get(i))) else {
            return Out::new(out, s.proto).error("CLUSTERDOWN Hash slot not served");
        };
        let to = owner.addr.client_for(tls);
        let p = match parts.iter().position(|(a, _)| *a == to) {
            Some(p) => p,
            None => {
                parts.push((to, Vec::new()));
                parts.len() - 1
            }
        };
        keys.push((p, parts[p].1.len()));
        parts[p].1.push(i);
    }
    let proto = wire_proto(s.proto);
    // Every part whose link is open goes out at once; the others open theirs in turn.
    let mut sent = Vec::with_capacity(parts.len());
    for (to, positions) in &parts {
        let part = std::iter::once(args.get(0)).chain(
            positions
                .iter()
                .flat_map(|&i| (0..width).map(move |w| args.get(i + w))),
        );
        let mut request = Vec::new();
        Forwarder::encode_command(part.collect::<Vec<_>>().into_iter(), &mut request);
        let now = core.forwarder.send_now(*to, proto, &request);
        sent.push((*to, request, now));
    }
    let mut replies: Vec<Vec<u8>> = Vec::with_capacity(parts.len());
    let mut failed = None;
    for (to, request, now) in sent {
        let reply = match now {
            Some(Ok(pending)) => pending.wait().await,
            Some(Err(e)) => Err(e),
            None => core.forwarder.call(to, proto, &request).await,
        };
        match reply {
            Ok(reply) if is_error_reply(&reply) => failed = failed.or(Some(reply)),
            Ok(reply) => replies.push(reply),
            Err(e) => {
                let mut b = Vec::new();
                let msg = format!("TRYAGAIN forwarding to {to} failed: {e}");
                Out::new(&mut b, s.proto).error(&msg);
                failed = failed.or(Some(b));
            }
        }
    }
    if let Some(err) = failed {
        out.extend_from_slice(&err);
        return;
    }
    let mut o = Out::new(out, s.proto);
    match kind {
        CrossCore::Sum => {
            let mut total = 0i64;
            for r in &replies {
                match std::str::from_utf8(r)
                    .ok()
                    .and_then(|t| t.strip_prefix(':'))
                    .and_then(|t| t.trim_end().parse::<i64>().ok())
                {
                    Some(n) => total += n,
                    None => return o.error("ERR a node answered a count with something else"),
                }
            }
            o.int(total)
        }
        CrossCore::SetAll => o.ok(),
        _ => {
            // Each part's reply is an array of its keys' values: cut it into elements and
            // put them back in the order the keys were given.
            let mut elements: Vec<Vec<&[u8]>> = Vec::with_capacity(replies.len());
            for r in &replies {
                match array_elements(r) {
                    Some(e) => elements.push(e),
                    None => return o.error("ERR a node answered MGET with something else"),
                }
            }
            o.array(keys.len());
            for (p, k) in keys {
                match elements[p].get(k) {
                    Some(e) => out.extend_from_slice(e),
                    None => return,
                }
            }
        }
    }
}

/// The elements of a whole array reply, as the bytes of each.
fn array_elements(reply: &[u8]) -> Option<Vec<&[u8]>> {
    let head_end = reply.windows(2).position(|w| w == b"\r\n")?;
    if reply.first() != Some(&b'*') {
        return None;
    }
    let n: usize = std::str::from_utf8(&reply[1..head_end])
        .ok()?
        .parse()
        .ok()?;
    let mut at = head_end + 2;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        match crate::resp::frame::skip(&reply[at..]) {
            crate::resp::frame::Decoded::Complete(_, len) => {
                out.push(&reply[at..at + len]);
                at += len;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// The RESP version a forwarding link speaks for a client of protocol `p`.
fn wire_proto(p: Protocol) -> u8 {
    match p {
        Protocol::Resp2 => 2,
        Protocol::Resp3 => 3,
    }
}

/// Runs an encoded command on the node at `to` (opening the link) and relays its reply.
async fn forward(core: &Rc<Core>, s: &Session, to: SocketAddr, request: &[u8], out: &mut Vec<u8>) {
    let proto = wire_proto(s.proto);
    match core.forwarder.call(to, proto, request).await {
        Ok(reply) => {
            if is_error_reply(&reply) {
                core.bump(|st| st.total_error_replies += 1);
            }
            out.extend_from_slice(&reply);
        }
        Err(e) => {
            core.bump(|st| st.total_error_replies += 1);
            Out::new(out, s.proto).error(&format!("TRYAGAIN forwarding to {to} failed: {e}"));
        }
    }
}

/// Reads from the socket unless the connection is killed first. `Ok(0)` is end of stream.
/// What a client connection runs over: a TCP stream, or TLS over one.
pub trait ClientStream: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin {}
impl<T: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin> ClientStream for T {}

async fn read_or_killed<S: ClientStream>(
    stream: &mut S,
    buf: &mut [u8],
    kill_rx: &mut futures_channel::oneshot::Receiver<()>,
) -> std::io::Result<usize> {
    futures_lite::future::or(stream.read(buf), async {
        let _ = kill_rx.await;
        Ok(0)
    })
    .await
}

/// Serves one plain TCP connection until it closes, is killed, or the node shuts down.
pub async fn serve(core: Rc<Core>, stream: TcpStream) {
    let (Ok(addr), Ok(laddr)) = (stream.peer_addr(), stream.local_addr()) else {
        return;
    };
    let _ = stream.set_nodelay(true);
    serve_stream(core, stream, addr, laddr, false).await;
}

/// Serves one connection, plain or TLS, from `addr` to this node's `laddr`.
pub async fn serve_stream<S: ClientStream>(
    core: Rc<Core>,
    mut stream: S,
    addr: SocketAddr,
    laddr: SocketAddr,
    tls: bool,
) {
    let id = core.next_client_id();
    let now = Instant::now();
    let record = Rc::new(RefCell::new(ClientRecord {
        id,
        addr,
        laddr,
        name: String::new(),
        created: now,
        last_active: now,
        db: 0,
        multi: None,
        watching: 0,
        last_cmd: "NULL",
        resp: 2,
        lib_name: String::new(),
        lib_ver: String::new(),
        query_buffer_bytes: 0,
        user: "default".to_string(),
        read_buffer_bytes: 0,
        output_buffer_bytes: 0,
        multi_bytes: 0,
        authenticated: false,
        replica: false,
    }));
    let kill = Rc::new(Cell::new(false));
    let (kill_tx, mut kill_rx) = futures_channel::oneshot::channel();
    core.clients.borrow_mut().insert(
        id,
        ClientHandle {
            record: record.clone(),
            kill: kill.clone(),
            wake: RefCell::new(Some(kill_tx)),
        },
    );
    let generation = core
        .node
        .acl_generation
        .load(std::sync::atomic::Ordering::Acquire);
    let default = super::acl::default_of(&core.node.acl.load());
    let mut s = Session::new(id, record.clone(), default, generation);
    s.tls = tls;
    serve_loop(&core, &mut stream, &mut s, &kill, &mut kill_rx).await;
    settle_writes(&core, &mut s);
    if let Some(lines) = s.monitor.take() {
        if !kill.get() {
            super::monitor::serve(&core, &mut stream, id, lines, &kill).await;
        } else {
            core.node.monitors.detach(id);
        }
    }
    if let Some(req) = s.replica_stream.take() {
        if !kill.get() {
            record.borrow_mut().replica = true;
            super::replication::serve_replica(&core, &mut stream, Some(addr), req, &kill).await;
        }
    }
    if !s.watched.is_empty() {
        tx::unwatch_all(&core, &mut s).await;
    }
    core.clients.borrow_mut().remove(&id);
    core.node.client_closed();
    let _ = stream.close().await;
}

async fn serve_loop<S: ClientStream>(
    core: &Rc<Core>,
    stream: &mut S,
    s: &mut Session,
    kill: &Cell<bool>,
    kill_rx: &mut futures_channel::oneshot::Receiver<()>,
) {
    let mut rbuf = vec![0u8; limits::READ_CHUNK_BYTES];
    let mut filled = 0usize;
    let mut out: Vec<u8> = Vec::with_capacity(limits::READ_CHUNK_BYTES);
    let mut dec = RequestDecoder::new();
    let mut pipe = Pipeline::new(core.cores);
    loop {
        if kill.get() || s.closing {
            return;
        }
        if rbuf.len() - filled < limits::READ_CHUNK_BYTES / 2 {
            let grown = (rbuf.len() * 2).max(filled + limits::READ_CHUNK_BYTES);
            rbuf.resize(grown, 0);
        }
        let n = match read_or_killed(stream, &mut rbuf[filled..], kill_rx).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        filled += n;
        s.batch_now_ms = None;
        let head_before = core.shard.borrow().wal().head();
        core.bump(|st| st.total_net_input_bytes += n as u64);
        s.record.borrow_mut().last_active = Instant::now();
        if kill.get() {
            return;
        }
        let (max_bulk, max_multibulk, query_limit) = {
            let c = core.config.borrow();
            (
                c.proto_max_bulk_len,
                c.proto_max_multibulk_len,
                c.client_query_buffer_limit,
            )
        };
        let mut pos = 0;
        loop {
            let limits = Limits {
                max_bulk_bytes: max_bulk,
                max_multibulk_len: max_multibulk,
                unauthenticated: !s.authenticated,
            };
            match dec.decode(&rbuf[pos..filled], &limits) {
                Decoded::Command { consumed, inline } => {
                    let args = if inline {
                        Args::new(dec.inline_bytes(), dec.args())
                    } else {
                        Args::new(&rbuf[pos..filled], dec.args())
                    };
                    run_command(core, s, &mut pipe, args, &mut out).await;
                    pos += consumed;
                    if s.closing || kill.get() {
                        break;
                    }
                    if out.len() >= limits::OUTPUT_FLUSH_BYTES && !pipe.has_remote() {
                        await_durable(core, head_before).await;
                        if !await_replicas(core, s).await {
                            return;
                        }
                        if write_out(core, stream, &mut out).await.is_err() {
                            return;
                        }
                    }
                }
                Decoded::Skip { consumed } => pos += consumed,
                Decoded::Incomplete => break,
                Decoded::Invalid(e) => {
                    pipe.flush(core, s, &mut out).await;
                    Out::new(&mut out, s.proto).error(&format!("ERR Protocol error: {e}"));
                    tracing::debug!(client = s.id, "protocol error: {e}");
                    s.closing = true;
                    break;
                }
            }
        }
        pipe.flush(core, s, &mut out).await;
        settle_writes(core, s);
        let errors = pipe.take_errors();
        core.bump(|st| st.total_error_replies += errors);
        await_durable(core, head_before).await;
        if !await_replicas(core, s).await {
            return;
        }
        if !out.is_empty() && write_out(core, stream, &mut out).await.is_err() {
            return;
        }
        rbuf.copy_within(pos..filled, 0);
        filled -= pos;
        {
            let mut r = s.record.borrow_mut();
            r.query_buffer_bytes = filled;
            r.read_buffer_bytes = rbuf.len();
            r.output_buffer_bytes = out.capacity();
        }
        if filled > query_limit {
            tracing::warn!(
                client = s.id,
                bytes = filled,
                "closing client that reached max query buffer length"
            );
            return;
        }
        if filled == 0 && rbuf.len() > limits::READ_BUFFER_KEEP_BYTES {
            rbuf = vec![0u8; limits::READ_CHUNK_BYTES];
        }
    }
}

/// Under `appendfsync always`: waits until what was written on this core since `since` (a
/// ring sequence number) is on disk, so no reply acknowledges a write that is not.
async fn await_durable(core: &Core, since: u64) {
    if let Some((aof, head)) = super::aof::must_wait(core) {
        if head > since {
            super::aof::wait_durable(&aof, head).await;
        }
    }
}

/// Under `repl-ack-replicas`: after a write, holds the replies until enough replicas have
/// it. False when they did not in time: the connection closes without the replies.
async fn await_replicas(core: &Rc<Core>, s: &mut Session) -> bool {
    if s.in_multi() || !std::mem::take(&mut s.wrote) {
        return true;
    }
    let ok = super::replication::await_acks(core).await;
    if !ok {
        tracing::warn!(
            client = s.id,
            "closing a client: its writes were not acknowledged by repl-ack-replicas replicas within repl-ack-timeout"
        );
    }
    ok
}

async fn write_out<S: ClientStream>(
    core: &Core,
    stream: &mut S,
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    stream.write_all(out).await?;
    // (TLS keeps records in its session until flushed; for TCP it is free.)
    stream.flush().await?;
    core.bump(|st| st.total_net_output_bytes += out.len() as u64);
    if out.capacity() > limits::READ_BUFFER_KEEP_BYTES * 16 {
        *out = Vec::with_capacity(limits::READ_CHUNK_BYTES);
    } else {
        out.clear();
    }
    Ok(())
}
