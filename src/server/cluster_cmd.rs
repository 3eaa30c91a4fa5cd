//! CLUSTER and its subcommands, READONLY, READWRITE and ASKING, with Redis 7's reply
//! shapes (cluster clients parse them), plus tessera's own CLUSTER CREATE (forms a cluster
//! from the nodes that have met) and CLUSTER FORWARDED (marks a node-to-node link).
//!
//! Everything here reads the control core's latest [`View`]; MEET, FORGET and CREATE are
//! handed to the control core and answered when it has acted.

use super::control::{ClusterHandle, Request};
use super::core::Core;
use super::session::Session;
use super::{replica, replication};
use crate::cluster::membership::{Health, NodeId};
use crate::cluster::view::{View, ViewNode};
use crate::cmd::parse::{eq, int};
use crate::cmd::{errors, unknown_subcommand_error, Args};
use crate::limits;
use crate::resp::Out;
use crate::slot::{key_slot, slot_core, SLOTS};
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const CLUSTER_DISABLED: &str = "ERR This instance has cluster support disabled";

/// Most keys GETKEYSINSLOT returns in one reply.
pub const GETKEYSINSLOT_MAX_KEYS: usize = 1 << 20;

const CLUSTER_HELP: &[&str] = &[
    "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "COUNTKEYSINSLOT <slot>",
    "    Return the number of keys in <slot>.",
    "CREATE",
    "    (tessera) Form the cluster: place all slots over the nodes that have met,",
    "    by Jump Consistent Hashing.",
    "FAILOVER [FORCE|TAKEOVER]",
    "    Promote current replica node to being a master: FORCE without its primary's",
    "    agreement (the other primaries vote), TAKEOVER without any vote.",
    "FORGET <node-id>",
    "    Remove a node from the cluster.",
    "GETKEYSINSLOT <slot> <count>",
    "    Return key names stored by current node in a slot.",
    "INFO",
    "    Return information about the cluster.",
    "KEYSLOT <key>",
    "    Return the hash slot for <key>.",
    "MEET <ip> <port> [<bus-port>]",
    "    Connect nodes into a working cluster.",
    "MYID",
    "    Return the node id.",
    "REPLICATE <node-id>",
    "    Configure current node as replica to <node-id>.",
    "NODES",
    "    Return cluster configuration seen by node. Output format:",
    "    <id> <ip:port@bus-port> <flags> <master> <pings> <pongs> <epoch> <link> <slot> ...",
    "SHARDS",
    "    Return information about slot range mappings and the nodes associated with them.",
    "SLOTS",
    "    Return information about slots range mappings. Each range is made of:",
    "    start, end, master and replicas IP addresses, ports and ids",
    "HELP",
    "    Print this help.",
];

fn handle(core: &Core) -> Option<&Arc<ClusterHandle>> {
    core.node.cluster.get()
}

/// READONLY, READWRITE and ASKING.
pub fn readonly(core: &Core, s: &mut Session, on: bool, o: &mut Out<'_>) {
    if handle(core).is_none() {
        return o.error(CLUSTER_DISABLED);
    }
    s.readonly = on;
    o.ok()
}

pub fn asking(core: &Core, o: &mut Out<'_>) {
    if handle(core).is_none() {
        return o.error(CLUSTER_DISABLED);
    }
    // No slot is ever migrating yet, so nothing answers -ASK; the flag has nothing to do.
    o.ok()
}

pub async fn cluster(core: &Rc<Core>, s: &mut Session, args: Args<'_>, o: &mut Out<'_>) {
    let Some(h) = handle(core) else {
        return o.error(CLUSTER_DISABLED);
    };
    let sub = args.get(1);
    let view = h.view.load_full();
    if eq(sub, "INFO") {
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        let frames = (
            h.frames_sent.load(relaxed),
            h.frames_received.load(relaxed),
            h.frames_dropped.load(relaxed),
        );
        o.verbatim(&info_text(&view, frames))
    } else if eq(sub, "MYID") {
        o.bulk(view.me.to_string().as_bytes())
    } else if eq(sub, "NODES") {
        o.verbatim(&nodes_text(&view, s.tls))
    } else if eq(sub, "SLOTS") {
        slots(&view, s.tls, o)
    } else if eq(sub, "SHARDS") {
        shards(&view, o)
    } else if eq(sub, "KEYSLOT") {
        o.int(key_slot(args.get(2)) as i64)
    } else if eq(sub, "COUNTKEYSINSLOT") {
        let Some(slot) = int(args.get(2)) else {
            return o.error(errors::NOT_INTEGER);
        };
        if !(0..SLOTS as i64).contains(&slot) {
            return o.error("ERR Invalid slot");
        }
        let keys = keys_in_slot(core, s, slot as u16, usize::MAX).await;
        o.int(keys.len() as i64)
    } else if eq(sub, "GETKEYSINSLOT") {
        let (Some(slot), Some(count)) = (int(args.get(2)), int(args.get(3))) else {
            return o.error(errors::NOT_INTEGER);
        };
        if !(0..SLOTS as i64).contains(&slot) || count < 0 {
            return o.error("ERR Invalid slot or number of keys");
        }
        let max = (count as usize).min(GETKEYSINSLOT_MAX_KEYS);
        let keys = keys_in_slot(core, s, slot as u16, max).await;
        o.array(keys.len());
        for k in &keys {
            o.bulk(k);
        }
    } else if eq(sub, "MEET") {
        meet(h, args, o).await
    } else if eq(sub, "FORGET") {
        let id = match node_id(args.get(2)) {
            Ok(id) => id,
            Err(e) => return o.error(&e),
        };
        let (tx, rx) = futures_channel::oneshot::channel();
        reply_from(h.request(Request::Forget { id, reply: tx }), rx, o).await
    } else if eq(sub, "CREATE") {
        let (tx, rx) = futures_channel::oneshot::channel();
        reply_from(h.request(Request::Create { reply: tx }), rx, o).await
    } else if eq(sub, "FAILOVER") {
        let takeover = match args.len() {
            3 if eq(args.get(2), "FORCE") => false,
            3 if eq(args.get(2), "TAKEOVER") => true,
            2 => return manual_failover(core, h, o).await,
            _ => return o.error("ERR syntax error"),
        };
        let (tx, rx) = futures_channel::oneshot::channel();
        reply_from(
            h.request(Request::Failover {
                takeover,
                reply: tx,
            }),
            rx,
            o,
        )
        .await
    } else if eq(sub, "REPLICATE") {
        let primary = match node_id(args.get(2)) {
            Ok(id) => id,
            Err(e) => return o.error(&e),
        };
        let (tx, rx) = futures_channel::oneshot::channel();
        reply_from(h.request(Request::Replicate { primary, reply: tx }), rx, o).await
    } else if eq(sub, "FORWARDED") {
        s.forwarded = true;
        o.ok()
    } else if eq(sub, "HELP") {
        o.array(CLUSTER_HELP.len());
        for l in CLUSTER_HELP {
            o.simple(l);
        }
    } else {
        o.error_bytes(&unknown_subcommand_error("CLUSTER", sub))
    }
}

/// A node id argument, or Redis's error for one it does not know.
fn node_id(arg: &[u8]) -> Result<NodeId, String> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(NodeId::from_hex)
        .ok_or_else(|| format!("ERR Unknown node {}", String::from_utf8_lossy(arg)))
}

/// Waits for the control core's answer to a request it accepted.
/// Plain CLUSTER FAILOVER, on a replica: its primary holds writes, this replica catches
/// up, then stands in a planned election; answers once the table makes it the primary (the
/// held writes then go to it). Anything failing or late lets the primary's writes go.
async fn manual_failover(core: &Rc<Core>, h: &ClusterHandle, o: &mut Out<'_>) {
    let deadline = Instant::now() + Duration::from_millis(limits::REPL_MANUAL_FAILOVER_MS);
    let (host, port) = match replication::catch_up_held(core, deadline).await {
        Ok(primary) => primary,
        Err(e) => return o.error(&e),
    };
    let (tx, rx) = futures_channel::oneshot::channel();
    let stood = match h.request(Request::Failover {
        takeover: false,
        reply: tx,
    }) {
        Ok(()) => rx
            .await
            .unwrap_or_else(|_| Err("ERR the cluster control core has stopped".into())),
        Err(e) => Err(e),
    };
    let outcome = match stood {
        Err(e) => Err(e),
        Ok(()) => loop {
            if h.view.load().my_primary().is_none() {
                break Ok(());
            }
            if Instant::now() >= deadline {
                break Err("ERR manual failover timed out: the election was not won in time");
            }
            glommio::timer::sleep(Duration::from_millis(limits::REPL_POLL_INTERVAL_MS)).await;
        }
        .map_err(String::from),
    };
    match outcome {
        Ok(()) => {
            tracing::info!("manual failover: this replica is the primary now");
            o.ok()
        }
        Err(e) => {
            if let Err(why) = replica::unpause_primary(core, &host, port).await {
                tracing::warn!(%host, port, "manual failover: could not let the primary's writes go: {why}");
            }
            o.error(&e)
        }
    }
}

async fn reply_from<T>(
    sent: Result<(), String>,
    rx: futures_channel::oneshot::Receiver<Result<T, String>>,
    o: &mut Out<'_>,
) {
    if let Err(e) = sent {
        return o.error(&e);
    }
    match rx.await {
        Ok(Ok(_)) => o.ok(),
        Ok(Err(e)) => o.error(&e),
        Err(_) => o.error("ERR the cluster control core has stopped"),
    }
}

async fn meet(h: &ClusterHandle, args: Args<'_>, o: &mut Out<'_>) {
    if args.len() > 5 {
        return o.error(errors::SYNTAX);
    }
    let ip_text = String::from_utf8_lossy(args.get(2)).into_owned();
    let port_text = String::from_utf8_lossy(args.get(3)).into_owned();
    let Ok(ip) = ip_text.parse::<IpAddr>() else {
        return o.error(&format!(
            "ERR Invalid node address specified: {ip_text}:{port_text}"
        ));
    };
    let port = match int(args.get(3)) {
        Some(p) if (0..=65535).contains(&p) => p as u16,
        _ => return o.error(&format!("ERR Invalid base port specified: {port_text}")),
    };
    let bus_port = if args.len() == 5 {
        match int(args.get(4)) {
            Some(p) if (0..=65535).contains(&p) => p as u16,
            _ => {
                let text = String::from_utf8_lossy(args.get(4));
                return o.error(&format!("ERR Invalid bus port specified: {text}"));
            }
        }
    } else {
        port.wrapping_add(10_000)
    };
    let (tx, rx) = futures_channel::oneshot::channel();
    reply_from(
        h.request(Request::Meet {
            ip,
            bus_port,
            reply: tx,
        }),
        rx,
        o,
    )
    .await
}

/// Up to `max` live keys of database 0 in `slot`, from the core that holds the slot.
/// A scan of that core's keys: cost grows with the keys it holds (Redis keeps a per-slot
/// index; see the issue note).
async fn keys_in_slot(core: &Rc<Core>, s: &Session, slot: u16, max: usize) -> Vec<Vec<u8>> {
    let owner = slot_core(slot, core.cores);
    core.invoke_on(owner, s.tx, move |c| {
        let now = c.now_ms();
        let shard = c.shard.borrow();
        shard
            .db_ref(0)
            .live_items(now)
            .filter(|item| key_slot(item.key()) == slot)
            .take(max)
            .map(|item| item.key().to_vec())
            .collect::<Vec<_>>()
    })
    .await
}

/// Slots owned by nodes not known to be failing, counted as CLUSTER INFO reports them.
fn slot_health(view: &View) -> (usize, usize, usize, usize) {
    let (mut assigned, mut ok, mut pfail, mut fail) = (0, 0, 0, 0);
    for s in 0..SLOTS {
        if let Some(n) = view.owner(s) {
            assigned += 1;
            match n.health {
                Health::Alive => ok += 1,
                Health::Pdead => pfail += 1,
                Health::Dead => fail += 1,
            }
        }
    }
    (assigned, ok, pfail, fail)
}

/// CLUSTER INFO's text; `frames` are the bus frames sent, received and dropped at a full
/// link queue (Redis's `total_cluster_links_buffer_limit_exceeded`).
pub fn info_text(view: &View, frames: (u64, u64, u64)) -> String {
    let (assigned, ok, pfail, fail) = slot_health(view);
    let size = view.nodes.iter().filter(|n| n.slots > 0).count();
    let my_epoch = if view.nodes[0].slots > 0 {
        view.epoch
    } else {
        0
    };
    format!(
        "cluster_state:{}\r\n\
         cluster_slots_assigned:{assigned}\r\n\
         cluster_slots_ok:{ok}\r\n\
         cluster_slots_pfail:{pfail}\r\n\
         cluster_slots_fail:{fail}\r\n\
         cluster_known_nodes:{}\r\n\
         cluster_size:{size}\r\n\
         cluster_current_epoch:{}\r\n\
         cluster_my_epoch:{my_epoch}\r\n\
         cluster_stats_messages_sent:{}\r\n\
         cluster_stats_messages_received:{}\r\n\
         total_cluster_links_buffer_limit_exceeded:{}\r\n",
        if view.state_ok { "ok" } else { "fail" },
        view.nodes.len(),
        view.epoch,
        frames.0,
        frames.1,
        frames.2,
    )
}

fn flags(n: &ViewNode) -> String {
    let mut f = Vec::new();
    if n.myself {
        f.push("myself");
    }
    f.push(if n.primary.is_some() {
        "slave"
    } else {
        "master"
    });
    match n.health {
        Health::Alive => {}
        Health::Pdead => f.push("fail?"),
        Health::Dead => f.push("fail"),
    }
    if !n.addr.is_known() {
        f.push("noaddr");
    }
    f.join(",")
}

fn endpoint(n: &ViewNode) -> String {
    if n.addr.is_known() {
        n.addr.client().ip().to_string()
    } else {
        String::new()
    }
}

/// CLUSTER NODES; `tls`: name the nodes' TLS ports (for a TLS client, as Redis 7).
pub fn nodes_text(view: &View, tls: bool) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    for (i, n) in view.nodes.iter().enumerate() {
        let epoch = if n.slots > 0 { view.epoch } else { 0 };
        let link = if n.health == Health::Dead {
            "disconnected"
        } else {
            "connected"
        };
        let master = n
            .primary
            .and_then(|p| view.nodes.get(p as usize))
            .map_or("-".to_string(), |p| p.id.to_string());
        let _ = write!(
            t,
            "{} {}:{}@{} {} {master} 0 0 {epoch} {link}",
            n.id,
            endpoint(n),
            n.addr.client_for(tls).port(),
            n.addr.bus_port,
            flags(n),
        );
        for (a, b) in view.ranges_of(i) {
            if a == b {
                let _ = write!(t, " {a}");
            } else {
                let _ = write!(t, " {a}-{b}");
            }
        }
        t.push('\n');
    }
    t
}

/// CLUSTER SLOTS: per run of slots, [first, last, [ip, port, id, {}]]; `tls`: the nodes'
/// TLS ports (for a TLS client, as Redis 7).
fn slots(view: &View, tls: bool, o: &mut Out<'_>) {
    let runs = view.runs();
    o.array(runs.len());
    for (a, b, i) in runs {
        let n = &view.nodes[i as usize];
        let replicas: Vec<&ViewNode> = view
            .replicas_of(i as usize)
            .filter(|r| r.health != Health::Dead && r.addr.is_known())
            .collect();
        o.array(3 + replicas.len());
        o.int(a as i64);
        o.int(b as i64);
        node_entry(n, tls, o);
        for r in replicas {
            node_entry(r, tls, o);
        }
    }
}

fn node_entry(n: &ViewNode, tls: bool, o: &mut Out<'_>) {
    o.array(4);
    o.bulk(endpoint(n).as_bytes());
    o.int(n.addr.client_for(tls).port() as i64);
    o.bulk(n.id.to_string().as_bytes());
    o.map(0);
}

/// CLUSTER SHARDS: every primary with its slot ranges, its node and its replicas.
fn shards(view: &View, o: &mut Out<'_>) {
    let primaries: Vec<usize> = (0..view.nodes.len())
        .filter(|i| view.nodes[*i].primary.is_none())
        .collect();
    o.array(primaries.len());
    for i in primaries {
        let ranges = view.ranges_of(i);
        o.map(2);
        o.bulk(b"slots");
        o.array(ranges.len() * 2);
        for (a, b) in ranges {
            o.int(a as i64);
            o.int(b as i64);
        }
        o.bulk(b"nodes");
        let members: Vec<&ViewNode> = std::iter::once(&view.nodes[i])
            .chain(view.replicas_of(i))
            .collect();
        o.array(members.len());
        for n in members {
            shard_node(n, o);
        }
    }
}

fn shard_node(n: &ViewNode, o: &mut Out<'_>) {
    {
        let tls = n.addr.tls_port != 0;
        o.map(7 + usize::from(tls));
        o.bulk(b"id");
        o.bulk(n.id.to_string().as_bytes());
        o.bulk(b"port");
        o.int(n.addr.port as i64);
        if tls {
            o.bulk(b"tls-port");
            o.int(n.addr.tls_port as i64);
        }
        o.bulk(b"ip");
        o.bulk(endpoint(n).as_bytes());
        o.bulk(b"endpoint");
        o.bulk(endpoint(n).as_bytes());
        o.bulk(b"role");
        o.bulk(if n.primary.is_some() {
            &b"replica"[..]
        } else {
            b"master"
        });
        o.bulk(b"replication-offset");
        o.int(0);
        o.bulk(b"health");
        o.bulk(match n.health {
            Health::Alive => b"online",
            Health::Pdead | Health::Dead => b"failed",
        });
    }
}
