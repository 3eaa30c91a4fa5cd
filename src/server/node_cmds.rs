//! Commands that run on the connection's core: connection state, transactions, and
//! commands over the whole keyspace (which reach every core).

use super::core::Core;
use super::mesh::BYPASS_LOCKS;
use super::session::Session;
use super::{admin, cluster_cmd, info, memory_cmd, persist, replication, tx};
use crate::cmd::parse::{eq, int};
use crate::cmd::table::NodeCmd;
use crate::cmd::{arity_error, errors, unknown_subcommand_error, Args};
use crate::limits;
use crate::resp::{Out, Protocol};
use std::rc::Rc;
use tessera_shards::glob;

pub async fn run(
    core: &Rc<Core>,
    s: &mut Session,
    which: NodeCmd,
    args: Args<'_>,
    out: &mut Vec<u8>,
) {
    let proto = s.proto;
    let mut o = Out::new(out, proto);
    match which {
        NodeCmd::Ping => match args.len() {
            1 => o.simple("PONG"),
            2 => o.bulk(args.get(1)),
            _ => o.error(&arity_error("ping")),
        },
        NodeCmd::Echo => o.bulk(args.get(1)),
        NodeCmd::Hello => hello(core, s, args, out),
        NodeCmd::Auth => auth(core, s, args, &mut o),
        NodeCmd::Select => match int(args.get(1)) {
            None => o.error(errors::NOT_INTEGER),
            Some(n) if n < 0 || n as usize >= core.config.borrow().databases => {
                o.error(errors::DB_RANGE)
            }
            Some(n) if n != 0 && core.node.cluster.get().is_some() => {
                o.error("ERR SELECT is not allowed in cluster mode")
            }
            Some(n) => {
                s.db = n as usize;
                s.record.borrow_mut().db = s.db;
                o.ok()
            }
        },
        NodeCmd::Quit => {
            o.ok();
            s.closing = true;
        }
        NodeCmd::Reset => {
            if s.in_multi() {
                s.multi = None;
                s.multi_failed = false;
            }
            tx::unwatch_all(core, s).await;
            s.db = 0;
            s.proto = Protocol::Resp2;
            let default = super::acl::default_of(&core.node.acl.load());
            s.authenticated = default.enabled && default.nopass;
            s.set_user(default, super::acl_cmd::generation(core));
            {
                let mut r = s.record.borrow_mut();
                r.db = 0;
                r.name.clear();
                r.resp = 2;
                r.multi = None;
                r.multi_bytes = 0;
            }
            Out::new(out, Protocol::Resp2).simple("RESET");
        }
        NodeCmd::Client => admin::client(core, s, args, &mut o).await,
        NodeCmd::Command => admin::command(args, &mut o),
        NodeCmd::Config => admin::config(core, args, &mut o).await,
        NodeCmd::Info => info::info(core, args, &mut o).await,
        NodeCmd::Slowlog => super::observe::slowlog(core, args, &mut o).await,
        NodeCmd::Latency => super::observe::latency(core, args, &mut o).await,
        NodeCmd::Acl => super::acl_cmd::acl(core, s, args, &mut o).await,
        NodeCmd::Monitor => {
            // (Refused inside MULTI by its no_multi flag.)
            s.monitor = Some(core.node.monitors.attach(s.id));
            s.closing = true;
            o.ok()
        }
        NodeCmd::Time => {
            let us = core.node.now_us();
            o.array(2);
            o.bulk_int((us / 1_000_000) as i64);
            o.bulk_int((us % 1_000_000) as i64);
        }
        NodeCmd::Lastsave => o.int(core.node.last_save_unix_s() as i64),
        NodeCmd::Bgsave => {
            if args.len() > 2 || (args.len() == 2 && !eq(args.get(1), "SCHEDULE")) {
                return o.error("ERR syntax error");
            }
            let schedule = args.len() == 2;
            match persist::bgsave(core, s.tx, schedule).await {
                Ok(persist::Bgsave::Started) => o.simple("Background saving started"),
                Ok(persist::Bgsave::Scheduled) => o.simple("Background saving scheduled"),
                Err(e) => o.error(&format!("ERR {e}")),
            }
        }
        NodeCmd::Bgrewriteaof => {
            if !core.config.borrow().appendonly {
                return o.error("ERR Append only file is off: turn it on with CONFIG SET appendonly yes (which rewrites it)");
            }
            if core
                .node
                .aof_rewrites_running
                .load(std::sync::atomic::Ordering::Acquire)
                > 0
            {
                return o.error("ERR Background append only file rewriting already in progress");
            }
            let saving = core.node.saves.running();
            core.invoke_all(None, |c| super::aof::rewrite(c.rc())).await;
            if saving {
                o.simple("Background append only file rewriting scheduled")
            } else {
                o.simple("Background append only file rewriting started")
            }
        }
        NodeCmd::Save if core.node.saves.running() => {
            o.error("ERR Background save already in progress")
        }
        NodeCmd::Save => match save_locked(core, s).await {
            Ok(_) => o.ok(),
            Err(e) => {
                tracing::warn!("SAVE failed: {e}");
                o.error(&format!("ERR {e}"))
            }
        },
        NodeCmd::Shutdown => shutdown(core, s, args, &mut o).await,
        NodeCmd::Debug => debug(core, args, &mut o).await,
        NodeCmd::Memory => memory_cmd::memory(core, s, args, &mut o).await,
        NodeCmd::Multi => tx::multi(s, &mut o),
        NodeCmd::Exec => tx::exec(core, s, out).await,
        NodeCmd::Discard => tx::discard(core, s, &mut o).await,
        NodeCmd::Watch => tx::watch(core, s, args, &mut o).await,
        NodeCmd::Unwatch => {
            tx::unwatch_all(core, s).await;
            o.ok()
        }
        NodeCmd::Dbsize => {
            let db = s.db;
            let counts = with_all_locked(core, s, move |c| c.shard.borrow().db_ref(db).len()).await;
            o.int(counts.iter().sum::<usize>() as i64)
        }
        NodeCmd::Flushdb | NodeCmd::Flushall => flush(core, s, which, args, &mut o).await,
        NodeCmd::Keys => keys(core, s, args.get(1).to_vec(), &mut o).await,
        NodeCmd::Scan => scan(core, s, args, &mut o).await,
        NodeCmd::Randomkey => randomkey(core, s, &mut o).await,
        NodeCmd::Cluster => cluster_cmd::cluster(core, s, args, &mut o).await,
        NodeCmd::Replicaof => replication::replicaof(core, &args, &mut o).await,
        NodeCmd::Role => replication::role(core, &mut o).await,
        NodeCmd::Wait => {
            if s.in_multi() || s.tx.is_some() {
                // Inside a transaction WAIT does not block (as in Redis): it counts now.
                replication::wait_now(core, &args, &mut o).await
            } else {
                replication::wait(core, &args, &mut o).await
            }
        }
        NodeCmd::Replsync => {
            let words: Vec<&[u8]> = args.iter().skip(1).collect();
            match crate::repl::SyncRequest::parse(&words) {
                Ok(req) => {
                    s.replica_stream = Some(req);
                    s.closing = true;
                }
                Err(e) => o.error(&e),
            }
        }
        NodeCmd::Replpause => replication::replpause(core, &args, &mut o).await,
        NodeCmd::Readonly => cluster_cmd::readonly(core, s, true, &mut o),
        NodeCmd::Readwrite => cluster_cmd::readonly(core, s, false, &mut o),
        NodeCmd::Asking => cluster_cmd::asking(core, &mut o),
    }
}

/// Runs `f` on every core with all shards locked (or under the session's transaction).
async fn with_all_locked<T, F>(core: &Rc<Core>, s: &Session, f: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(&Core) -> T + Send + Sync + Clone + 'static,
{
    if s.tx.is_some() || core.cores == 1 {
        return core.invoke_all(s.tx, f).await;
    }
    let locks = core.acquire((0..core.cores).collect()).await;
    let r = core.invoke_all(Some(locks.tx), f).await;
    core.release(locks).await;
    r
}

fn auth(core: &Core, s: &mut Session, args: Args, o: &mut Out) {
    let (user, pass) = match args.len() {
        2 => (&b"default"[..], args.get(1)),
        3 => (args.get(1), args.get(2)),
        _ => return o.error(errors::SYNTAX),
    };
    if args.len() == 2 && super::acl::default_of(&core.node.acl.load()).nopass {
        return o.error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
    }
    match super::acl_cmd::authenticate(core, s, user, pass) {
        Some(u) => {
            s.set_user(u, super::acl_cmd::generation(core));
            s.authenticated = true;
            s.record.borrow_mut().authenticated = true;
            o.ok()
        }
        None => o.error(errors::WRONGPASS),
    }
}

/// Client names, library names and versions: printable ASCII without spaces, as Redis
/// checks them.
pub fn valid_name(name: &[u8]) -> bool {
    name.iter().all(|&c| (b'!'..=b'~').contains(&c))
}

fn hello(core: &Core, s: &mut Session, args: Args, out: &mut Vec<u8>) {
    let mut o = Out::new(out, s.proto);
    let mut proto = s.proto;
    let mut i = 1;
    if args.len() > 1 {
        match int(args.get(1)) {
            Some(2) => proto = Protocol::Resp2,
            Some(3) => proto = Protocol::Resp3,
            Some(_) => return o.error("NOPROTO unsupported protocol version"),
            None => return o.error("ERR Protocol version is not an integer or out of range"),
        }
        i = 2;
    }
    let mut name = None;
    let mut authed = false;
    let mut user = None;
    while i < args.len() {
        let a = args.get(i);
        if eq(a, "AUTH") && i + 2 < args.len() {
            match super::acl_cmd::authenticate(core, s, args.get(i + 1), args.get(i + 2)) {
                Some(u) => user = Some(u),
                None => return o.error(errors::WRONGPASS),
            }
            authed = true;
            i += 3;
        } else if eq(a, "SETNAME") && i + 1 < args.len() {
            if !valid_name(args.get(i + 1)) {
                return o.error(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
            }
            name = Some(String::from_utf8_lossy(args.get(i + 1)).into_owned());
            i += 2;
        } else {
            return o.error(&format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(a)
            ));
        }
    }
    if !s.authenticated && !authed {
        return o.error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
    }
    if let Some(u) = user {
        s.set_user(u, super::acl_cmd::generation(core));
    }
    s.authenticated = true;
    s.proto = proto;
    {
        let mut r = s.record.borrow_mut();
        r.authenticated = true;
        r.resp = if proto == Protocol::Resp3 { 3 } else { 2 };
        if let Some(n) = name {
            r.name = n;
        }
    }
    let mut o = Out::new(out, proto);
    o.map(7);
    o.bulk(b"server");
    o.bulk(b"redis");
    o.bulk(b"version");
    o.bulk(info::REDIS_COMPAT_VERSION.as_bytes());
    o.bulk(b"proto");
    o.int(if proto == Protocol::Resp3 { 3 } else { 2 });
    o.bulk(b"id");
    o.int(s.id as i64);
    o.bulk(b"mode");
    o.bulk(b"standalone");
    o.bulk(b"role");
    o.bulk(b"master");
    o.bulk(b"modules");
    o.array(0);
}

/// SAVE with every shard locked, so the image is one point in time across cores; each
/// core's change count restarts for `rdb_changes_since_last_save`.
pub async fn save_locked(core: &Rc<Core>, s: &Session) -> Result<u64, persist::SaveError> {
    let locks = match s.tx {
        Some(_) => None,
        None if core.cores == 1 => None,
        None => Some(core.acquire((0..core.cores).collect()).await),
    };
    let tx = s.tx.or(locks.as_ref().map(|l| l.tx));
    let saved = persist::save(core, tx).await;
    if saved.is_ok() {
        core.node
            .saves
            .completed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        core.invoke_all(tx, |c| {
            c.changes_at_save.set(c.shard.borrow().stats().changes)
        })
        .await;
    }
    if let Some(l) = locks {
        core.release(l).await;
    }
    saved
}

async fn shutdown(core: &Rc<Core>, s: &mut Session, args: Args<'_>, o: &mut Out<'_>) {
    // As Redis: without SAVE or NOSAVE, save when `save` rules are set.
    let mut save = !core.config.borrow().save.is_empty();
    let mut force = false;
    for a in args.iter().skip(1) {
        if eq(a, "ABORT") {
            return o.error("ERR No shutdown in progress.");
        }
        if eq(a, "SAVE") {
            save = true;
        } else if eq(a, "NOSAVE") {
            save = false;
        } else if eq(a, "FORCE") {
            force = true;
        } else if !eq(a, "NOW") {
            return o.error(errors::SYNTAX);
        }
    }
    tracing::warn!(client = s.id, "User requested shutdown...");
    if save {
        if let Err(e) = save_locked(core, s).await {
            tracing::warn!("Error trying to save the DB, can't exit: {e}");
            if !force {
                return o.error("ERR Errors trying to SHUTDOWN. Check logs.");
            }
        }
    }
    core.node.request_shutdown();
    s.closing = true;
}

async fn debug(core: &Rc<Core>, args: Args<'_>, o: &mut Out<'_>) {
    if !core.config.borrow().enable_debug_command {
        return o.error("ERR DEBUG command not allowed. If the enable-debug-command option is set to \"local\", you can run it from a local connection, otherwise you need to set this option in the configuration file, and then restart the server.");
    }
    let sub = args.get(1);
    if eq(sub, "ADVANCE-CLOCK") && args.len() == 3 {
        match int(args.get(2)) {
            Some(ms) => {
                core.node.advance_clock(ms);
                o.ok()
            }
            None => o.error(errors::NOT_INTEGER),
        }
    } else if eq(sub, "SET-ACTIVE-EXPIRE") && args.len() == 3 {
        match int(args.get(2)) {
            Some(n @ (0 | 1)) => {
                let on = n == 1;
                core.invoke_all(Some(BYPASS_LOCKS), move |c| c.active_expire.set(on))
                    .await;
                o.ok()
            }
            _ => o.error(errors::SYNTAX),
        }
    } else if eq(sub, "HELP") {
        o.array(4);
        o.simple("DEBUG ADVANCE-CLOCK <milliseconds>");
        o.simple("    Move the server's clock forward (tests of TTLs without sleeping).");
        o.simple("DEBUG SET-ACTIVE-EXPIRE <0|1>");
        o.simple("    Stop or start the background deletion of expired keys.");
    } else {
        o.error_bytes(&unknown_subcommand_error("DEBUG", sub))
    }
}

async fn flush(core: &Rc<Core>, s: &Session, which: NodeCmd, args: Args<'_>, o: &mut Out<'_>) {
    let mode_ok = |a: &[u8]| eq(a, "ASYNC") || eq(a, "SYNC");
    if args.len() > 2 || (args.len() == 2 && !mode_ok(args.get(1))) {
        return o.error(errors::SYNTAX);
    }
    let db = (which == NodeCmd::Flushdb).then_some(s.db);
    with_all_locked(core, s, move |c| {
        let mut shard = c.shard.borrow_mut();
        match db {
            Some(db) => shard.db(db).flush(),
            None => shard.flush_all(),
        }
    })
    .await;
    o.ok()
}

async fn keys(core: &Rc<Core>, s: &Session, pattern: Vec<u8>, o: &mut Out<'_>) {
    let db = s.db;
    let per_core = with_all_locked(core, s, move |c| {
        let now = c.now_ms();
        let shard = c.shard.borrow();
        shard
            .db_ref(db)
            .live_items(now)
            .filter(|item| glob::matches(&pattern, item.key()))
            .map(|item| item.key().to_vec())
            .collect::<Vec<_>>()
    })
    .await;
    o.array(per_core.iter().map(Vec::len).sum());
    for k in per_core.iter().flatten() {
        o.bulk(k);
    }
}

/// A SCAN cursor: the core in the top 8 bits, the hash position (without its low 8 bits,
/// see `keyspace::SCAN_POSITION_SHIFT`) below. 0 starts and ends a scan.
fn split_cursor(cursor: u64) -> (usize, u64) {
    (
        (cursor >> 56) as usize,
        (cursor & ((1 << 56) - 1)) << tessera_shards::keyspace::SCAN_POSITION_SHIFT,
    )
}

fn join_cursor(core: usize, pos: u64) -> u64 {
    ((core as u64) << 56) | (pos >> tessera_shards::keyspace::SCAN_POSITION_SHIFT)
}

async fn scan(core: &Rc<Core>, s: &Session, args: Args<'_>, o: &mut Out<'_>) {
    // Any unsigned 64-bit number is a cursor, as Redis's strtoull reads it.
    let Some(cursor) = std::str::from_utf8(args.get(1))
        .ok()
        .and_then(|t| t.parse::<u64>().ok())
    else {
        return o.error("ERR invalid cursor");
    };
    let mut count = limits::SCAN_DEFAULT_COUNT;
    let mut pattern: Option<Vec<u8>> = None;
    let mut type_filter: Option<Vec<u8>> = None;
    let mut i = 2;
    while i < args.len() {
        let a = args.get(i);
        if i + 1 >= args.len() {
            return o.error(errors::SYNTAX);
        }
        if eq(a, "COUNT") {
            match int(args.get(i + 1)) {
                None => return o.error(errors::NOT_INTEGER),
                Some(n) if n < 1 => return o.error(errors::SYNTAX),
                Some(n) => count = n as usize,
            }
        } else if eq(a, "MATCH") {
            pattern = Some(args.get(i + 1).to_vec());
        } else if eq(a, "TYPE") {
            type_filter = Some(args.get(i + 1).to_ascii_lowercase());
        } else {
            return o.error(errors::SYNTAX);
        }
        i += 2;
    }
    let (mut target, mut pos) = split_cursor(cursor);
    let (db, n) = (s.db, core.cores);
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut next = 0;
    while target < n {
        let (pattern, type_filter) = (pattern.clone(), type_filter.clone());
        let want = count.saturating_sub(keys.len()).max(1);
        let (found, step) = core
            .invoke_on(target, s.tx, move |c| {
                let now = c.now_ms();
                let shard = c.shard.borrow();
                let mut found = Vec::new();
                let step = shard.db_ref(db).scan(pos, want, now, |slot| {
                    let type_ok = type_filter
                        .as_deref()
                        .is_none_or(|t| t == slot.value().type_name().as_bytes());
                    let match_ok = pattern
                        .as_deref()
                        .is_none_or(|p| glob::matches(p, slot.key()));
                    if type_ok && match_ok {
                        found.push(slot.key().to_vec());
                    }
                });
                (found, step)
            })
            .await;
        keys.extend(found);
        match step {
            Some(p) => {
                next = join_cursor(target, p);
                break;
            }
            None if target + 1 < n => {
                target += 1;
                pos = 0;
                next = join_cursor(target, 0);
                // An exhausted core with room left in this page: go on to the next core.
                if keys.len() >= count {
                    break;
                }
            }
            None => {
                next = 0;
                break;
            }
        }
    }
    o.array(2);
    o.bulk_int(next as i64);
    o.array(keys.len());
    for k in &keys {
        o.bulk(k);
    }
}

async fn randomkey(core: &Rc<Core>, s: &Session, o: &mut Out<'_>) {
    let db = s.db;
    let counts = core
        .invoke_all(s.tx, move |c| c.shard.borrow().db_ref(db).len())
        .await;
    let total: usize = counts.iter().sum();
    if total > 0 {
        // Pick a core in proportion to its keys, then a key on it; try the others if the
        // pick finds only expired keys.
        let mut pick = (core.random() % total as u64) as usize;
        let mut first = 0;
        for (c, &n) in counts.iter().enumerate() {
            if pick < n {
                first = c;
                break;
            }
            pick -= n;
        }
        for step in 0..core.cores {
            let target = (first + step) % core.cores;
            let seed = core.random();
            let key = core
                .invoke_on(target, s.tx, move |c| {
                    let now = c.now_ms();
                    c.shard.borrow_mut().db(db).random_key(now, seed)
                })
                .await;
            if let Some(k) = key {
                return o.bulk(&k);
            }
        }
    }
    o.null()
}
