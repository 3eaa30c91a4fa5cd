//! One client connection: read, decode every complete command, run them in order
//! (batching across cores), write the replies once per read.

use super::core::{ClientHandle, ClientRecord, Core};
use super::node_cmds;
use super::pipeline::{is_error_reply, Pipeline};
use super::session::{Queued, Session};
use super::tx;
use crate::cmd::table::{Exec, NodeCmd};
use crate::cmd::{self, errors, Args, CommandSpec, ShardCtx};
use crate::limits;
use crate::resp::{Decoded, Limits, Out, RequestDecoder};
use crate::slot::key_core;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use std::cell::{Cell, RefCell};
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
            return pipe.reply_here(out, proto, |o| o.error(&text));
        }
        s.multi_failed |= s.in_multi();
        return pipe.reply_here(out, proto, |o| o.error(&msg));
    }
    if let Some(err) = check_subcommand(s, spec, &args) {
        s.multi_failed |= s.in_multi();
        return pipe.reply_here(out, proto, |o| o.error_bytes(&err));
    }
    if !s.authenticated && !spec.has_flag("no_auth") {
        s.multi_failed |= s.in_multi();
        return pipe.reply_here(out, proto, |o| o.error(errors::NOAUTH));
    }
    if s.in_multi() && spec.has_flag("no_multi") {
        s.multi_failed = true;
        return pipe.reply_here(out, proto, |o| {
            o.error("ERR Command not allowed inside a transaction")
        });
    }
    if s.in_multi() && !runs_inside_multi(spec) {
        let queue = s.multi.as_mut().expect("in multi");
        if queue.len() >= limits::MULTI_MAX_QUEUED {
            s.multi_failed = true;
            return pipe.reply_here(out, proto, |o| {
                o.error("ERR too many commands queued in MULTI")
            });
        }
        queue.push(Queued::new(spec, args));
        s.record.borrow_mut().multi = Some(queue.len());
        return pipe.reply_here(out, proto, |o| o.simple("QUEUED"));
    }
    dispatch(core, s, pipe, spec, args, out).await
}

/// For a container command (CLIENT, CONFIG, COMMAND, OBJECT): the error for an
/// unknown subcommand or a wrong number of arguments to it, checked when the command
/// arrives (so also while MULTI queues), as Redis's command lookup does.
fn check_subcommand(s: &Session, spec: &CommandSpec, args: &Args) -> Option<Vec<u8>> {
    let container = match spec.exec {
        Exec::Node(NodeCmd::Client | NodeCmd::Config | NodeCmd::Command | NodeCmd::Memory) => {
            spec.name
        }
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
                tx::run_cross_core(core, s, spec, kind, args, out).await;
                s.batch_now_ms = None;
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
            pipe.reply_here(out, s.proto, |o| {
                let mut shard = core.shard.borrow_mut();
                let mut ctx = ShardCtx {
                    shard: &mut shard,
                    db,
                    now_ms,
                    limits,
                };
                cmd::run_on_shard(spec, f, &mut ctx, args, o)
            });
        }
        Exec::Node(which) => {
            pipe.flush(core, s, out).await;
            let start = out.len();
            node_cmds::run(core, s, which, args, out).await;
            s.batch_now_ms = None;
            if is_error_reply(&out[start..]) {
                core.bump(|st| st.total_error_replies += 1);
            }
        }
    }
}

/// Reads from the socket unless the connection is killed first. `Ok(0)` is end of stream.
async fn read_or_killed(
    stream: &mut TcpStream,
    buf: &mut [u8],
    kill_rx: &mut futures_channel::oneshot::Receiver<()>,
) -> std::io::Result<usize> {
    futures_lite::future::or(stream.read(buf), async {
        let _ = kill_rx.await;
        Ok(0)
    })
    .await
}

/// Serves one connection until it closes, is killed, or the node shuts down.
pub async fn serve(core: Rc<Core>, mut stream: TcpStream) {
    let (Ok(addr), Ok(laddr)) = (stream.peer_addr(), stream.local_addr()) else {
        return;
    };
    let _ = stream.set_nodelay(true);
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
        authenticated: false,
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
    let needs_auth = core.config.borrow().requirepass.is_some();
    let mut s = Session::new(id, record.clone(), needs_auth);
    serve_loop(&core, &mut stream, &mut s, &kill, &mut kill_rx).await;
    if !s.watched.is_empty() {
        tx::unwatch_all(&core, &mut s).await;
    }
    core.clients.borrow_mut().remove(&id);
    core.node.client_closed();
    let _ = stream.close().await;
}

async fn serve_loop(
    core: &Rc<Core>,
    stream: &mut TcpStream,
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
        let errors = pipe.take_errors();
        core.bump(|st| st.total_error_replies += errors);
        await_durable(core, head_before).await;
        if !out.is_empty() && write_out(core, stream, &mut out).await.is_err() {
            return;
        }
        rbuf.copy_within(pos..filled, 0);
        filled -= pos;
        s.record.borrow_mut().query_buffer_bytes = filled;
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

async fn write_out(core: &Core, stream: &mut TcpStream, out: &mut Vec<u8>) -> std::io::Result<()> {
    stream.write_all(out).await?;
    core.bump(|st| st.total_net_output_bytes += out.len() as u64);
    if out.capacity() > limits::READ_BUFFER_KEEP_BYTES * 16 {
        *out = Vec::with_capacity(limits::READ_CHUNK_BYTES);
    } else {
        out.clear();
    }
    Ok(())
}
