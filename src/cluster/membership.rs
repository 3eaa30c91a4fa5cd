//! Cluster membership as a state machine without I/O: the control core feeds it ticks and
//! messages and sends what it returns. SWIM (Das et al.) with suspicion and incarnation
//! numbers, indirect probes, gossip piggybacked on probes, and a periodic full-state sync:
//!
//! - Every `probe_interval_ms` a node pings the next member of a shuffled round (dead ones
//!   excluded). When the link's phi-accrual detector (`super::phi`) says the silence is
//!   suspicious, it asks `indirect_probes` other members to ping the target for it, so one
//!   bad link does not condemn a node. With no answer at all by the end of the round's slot
//!   the target becomes `pdead` (suspect), which is gossiped.
//! - A suspect that hears of it refutes with a higher incarnation number (`alive` wins over
//!   `pdead` and `dead` of a lower incarnation). A suspicion not refuted within
//!   `suspect_timeout_ms` becomes `dead`, which is gossiped too.
//! - Dead members are remembered until forgotten (`forget`), and one of them is pinged every
//!   `dead_probe_interval_ms` with the news of its death, so after a partition heals the two
//!   sides find each other: the "dead" node refutes, and its `alive` spreads.
//! - Every `sync_interval_ms` a node swaps its whole member list with a random member, which
//!   is also how a joining node (given seeds) learns the cluster.
//!
//! Gossip: each change is queued and rides on the next messages, up to `max_piggyback` per
//! message, each sent `retransmit_mult * ceil(log10(n + 1))` times, fewest-sent first.

use super::phi::{Phi, PhiConfig};
use std::collections::{BTreeMap, HashMap};
use tessera_shards::evict::Rng;

/// A node's id: 160 bits, shown as 40 hex digits as Redis Cluster shows its node ids.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct NodeId(pub [u8; 20]);

impl NodeId {
    /// An id from a random source (the node makes its own at first start).
    pub fn random(rng: &mut Rng) -> NodeId {
        let mut id = [0u8; 20];
        for chunk in id.chunks_mut(8) {
            let bytes = rng.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        NodeId(id)
    }
}

impl NodeId {
    /// Reads the 40 hex digits that Display writes.
    pub fn from_hex(text: &str) -> Option<NodeId> {
        let text = text.as_bytes();
        if text.len() != 40 || !text.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let mut id = [0u8; 20];
        for (i, pair) in text.chunks(2).enumerate() {
            let pair = std::str::from_utf8(pair).ok()?;
            id[i] = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(NodeId(id))
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", &self.to_string()[..8])
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Health {
    Alive,
    /// Suspected: no answer to a direct or indirect probe (Redis's PFAIL).
    Pdead,
    /// Declared dead after a suspicion that nobody refuted in time (Redis's FAIL).
    Dead,
}

/// What a node believes of one member, as gossiped.
#[derive(Clone, Copy, PartialEq, Eq, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Update {
    pub id: NodeId,
    pub incarnation: u64,
    pub health: Health,
    /// Where the member is reached (as the member itself announced it).
    pub addr: Addr,
}

/// A node's addresses: its IP (IPv4 mapped into IPv6), client port and bus port. The
/// membership protocol carries them and never looks inside; the driver connects to them.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct Addr {
    pub ip: [u8; 16],
    pub port: u16,
    pub bus_port: u16,
    /// The TLS client port (0: none).
    pub tls_port: u16,
}

impl Addr {
    /// Not known yet (a member heard of before any news of where it lives).
    pub const UNKNOWN: Addr = Addr {
        ip: [0; 16],
        port: 0,
        bus_port: 0,
        tls_port: 0,
    };

    pub fn new(ip: std::net::IpAddr, port: u16, bus_port: u16) -> Addr {
        let v6 = match ip {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            std::net::IpAddr::V6(v6) => v6,
        };
        Addr {
            ip: v6.octets(),
            port,
            bus_port,
            tls_port: 0,
        }
    }

    /// This address with TLS clients taken on `tls_port` (0: none).
    pub fn with_tls_port(self, tls_port: u16) -> Addr {
        Addr { tls_port, ..self }
    }

    pub fn is_known(&self) -> bool {
        self.port != 0
    }

    pub fn ip(&self) -> std::net::IpAddr {
        let v6 = std::net::Ipv6Addr::from(self.ip);
        match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => std::net::IpAddr::V6(v6),
        }
    }

    /// The client address.
    pub fn client(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.ip(), self.port)
    }

    /// The address a client reaches the node at: the TLS port for a TLS client when the
    /// node has one, as Redis 7 answers each client in its own kind.
    pub fn client_for(&self, tls: bool) -> std::net::SocketAddr {
        let port = if tls && self.tls_port != 0 {
            self.tls_port
        } else {
            self.port
        };
        std::net::SocketAddr::new(self.ip(), port)
    }

    /// The cluster bus address.
    pub fn bus(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.ip(), self.bus_port)
    }
}

#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Message {
    Ping {
        seq: u64,
        /// The sender's slot-table epoch: a receiver behind it fetches the table.
        map_epoch: u64,
        updates: Vec<Update>,
    },
    /// The answer to a ping; `about` is the node that answered (relayed answers to an
    /// indirect probe carry the target's id).
    Ack {
        seq: u64,
        about: NodeId,
        map_epoch: u64,
        updates: Vec<Update>,
    },
    /// "Ping `target` for me and relay its answer."
    PingReq {
        seq: u64,
        target: NodeId,
        updates: Vec<Update>,
    },
    /// The sender's whole member list (itself included); `reply` asks for the receiver's.
    Sync { reply: bool, members: Vec<Update> },
}

/// A message to send.
#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing {
    pub to: NodeId,
    pub msg: Message,
}

/// A change of what this node believes about a member.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Event {
    pub id: NodeId,
    pub health: Health,
    pub incarnation: u64,
    pub at_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Config {
    pub probe_interval_ms: u64,
    pub indirect_probes: usize,
    pub suspect_timeout_ms: u64,
    pub retransmit_mult: usize,
    pub max_piggyback: usize,
    pub sync_interval_ms: u64,
    pub dead_probe_interval_ms: u64,
    pub phi: PhiConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            probe_interval_ms: 200,
            indirect_probes: 3,
            suspect_timeout_ms: 2000,
            retransmit_mult: 4,
            max_piggyback: 8,
            sync_interval_ms: 10_000,
            dead_probe_interval_ms: 1000,
            phi: PhiConfig::default(),
        }
    }
}

struct Member {
    incarnation: u64,
    addr: Addr,
    health: Health,
    /// When the health last changed (a suspicion's start).
    since_ms: u64,
    link: Phi,
}

struct Probe {
    target: NodeId,
    seq: u64,
    sent_ms: u64,
    indirect: bool,
    acked: bool,
}

/// A ping sent for another node's indirect probe.
struct Relay {
    origin: NodeId,
    origin_seq: u64,
    expires_ms: u64,
}

pub struct Membership {
    me: NodeId,
    addr: Addr,
    incarnation: u64,
    cfg: Config,
    members: BTreeMap<NodeId, Member>,
    round: Vec<NodeId>,
    next_in_round: usize,
    probe: Option<Probe>,
    next_probe_ms: u64,
    next_sync_ms: u64,
    next_dead_probe_ms: u64,
    relays: HashMap<u64, Relay>,
    /// Changes to gossip, with the sends each has left.
    gossip: Vec<(Update, usize)>,
    seq: u64,
    rng: Rng,
    out: Vec<Outgoing>,
    events: Vec<Event>,
    /// Members now `pdead` (so a tick scans for timed-out suspicions only when there are).
    suspects: usize,
    /// The epoch of the slot table this node holds, and the newest one heard of (with a
    /// node that has it) and not yet reported.
    map_epoch: u64,
    map_news: Option<(NodeId, u64)>,
    map_asked: (u64, u64),
    /// Forgotten members and when news of them is believed again.
    banned: HashMap<NodeId, u64>,
    /// When `tick` last ran: a longer gap than half a probe interval means this node was
    /// not running (its CPU taken), not that its peers were silent.
    last_tick_ms: u64,
}

/// How long a forgotten member stays forgotten whatever others say (Redis: 60 s).
pub const FORGET_BAN_MS: u64 = 60_000;

/// A node that asked for a newer slot table and did not get it asks again after this long.
pub const MAP_FETCH_RETRY_MS: u64 = 1000;

impl Membership {
    /// `addr` is where other nodes reach this one.
    pub fn new(me: NodeId, addr: Addr, cfg: Config, seed: u64, now_ms: u64) -> Membership {
        let mut rng = Rng::new(seed);
        // Spread the nodes' rounds over the interval.
        let offset = rng.below(cfg.probe_interval_ms.max(1) as usize) as u64;
        Membership {
            me,
            addr,
            incarnation: 0,
            cfg,
            members: BTreeMap::new(),
            round: Vec::new(),
            next_in_round: 0,
            probe: None,
            next_probe_ms: now_ms + offset,
            next_sync_ms: now_ms + offset + cfg.sync_interval_ms,
            next_dead_probe_ms: now_ms + offset + cfg.dead_probe_interval_ms,
            relays: HashMap::new(),
            gossip: Vec::new(),
            seq: 0,
            rng,
            out: Vec::new(),
            events: Vec::new(),
            suspects: 0,
            map_epoch: 0,
            map_news: None,
            map_asked: (0, 0),
            banned: HashMap::new(),
            last_tick_ms: now_ms,
        }
    }

    /// The epoch of the slot table this node now holds (the driver owns the table).
    pub fn set_map_epoch(&mut self, epoch: u64) {
        self.map_epoch = epoch;
        if self.map_news.is_some_and(|(_, e)| e <= epoch) {
            self.map_news = None;
        }
    }

    /// A node that holds a newer slot table than this one, and its epoch: the driver
    /// fetches the table from it. Each newer epoch is reported once.
    /// The same epoch is reported again only after `MAP_FETCH_RETRY_MS` (the fetch may be
    /// lost).
    pub fn take_map_news(&mut self, now_ms: u64) -> Option<(NodeId, u64)> {
        let news = self.map_news.take();
        if let Some((_, e)) = news {
            self.map_asked = (e, now_ms);
        }
        news
    }

    fn heard_map_epoch(&mut self, from: NodeId, epoch: u64, now_ms: u64) {
        let (asked, at) = self.map_asked;
        let retry = now_ms.saturating_sub(at) >= MAP_FETCH_RETRY_MS;
        if epoch > self.map_epoch
            && (epoch > asked || retry)
            && self.map_news.is_none_or(|(_, e)| epoch > e)
        {
            self.map_news = Some((from, epoch));
        }
    }

    /// Takes a member as known without news to gossip (a restarting node reading its saved
    /// cluster configuration).
    pub fn remember(&mut self, u: Update, now_ms: u64) {
        if u.id == self.me || self.members.contains_key(&u.id) {
            return;
        }
        self.insert_member(u, now_ms);
    }

    /// A member not known before, as `u` says.
    fn insert_member(&mut self, u: Update, now_ms: u64) {
        if u.health == Health::Pdead {
            self.suspects += 1;
        }
        self.members.insert(
            u.id,
            Member {
                incarnation: u.incarnation,
                addr: u.addr,
                health: u.health,
                since_ms: now_ms,
                link: Phi::default(),
            },
        );
    }

    pub fn me(&self) -> NodeId {
        self.me
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// What this node believes of `id`.
    pub fn health(&self, id: NodeId) -> Option<Health> {
        self.members.get(&id).map(|m| m.health)
    }

    /// Every member known, with its health and incarnation (this node excluded).
    pub fn members(&self) -> impl Iterator<Item = Update> + '_ {
        self.members.iter().map(|(id, m)| Update {
            id: *id,
            incarnation: m.incarnation,
            health: m.health,
            addr: m.addr,
        })
    }

    /// Joins through a known node (a seed, CLUSTER MEET): asks it for its member list.
    pub fn join(&mut self, seed: NodeId, addr: Addr, now_ms: u64) {
        if seed == self.me {
            return;
        }
        // Joining is deliberate: it ends a ban from an earlier FORGET.
        self.banned.remove(&seed);
        self.learn(
            Update {
                id: seed,
                incarnation: 0,
                health: Health::Alive,
                addr,
            },
            now_ms,
        );
        let members = self.full_state();
        self.send(
            seed,
            Message::Sync {
                reply: true,
                members,
            },
        );
    }

    /// Drops a member from the list (CLUSTER FORGET). News of it is ignored for
    /// `FORGET_BAN_MS` (as Redis does), so gossip from nodes that have not forgotten it yet
    /// does not bring it back; after that it comes back if it is heard from.
    pub fn forget(&mut self, id: NodeId, now_ms: u64) {
        self.banned.retain(|_, until| *until > now_ms);
        self.banned.insert(id, now_ms + FORGET_BAN_MS);
        if let Some(m) = self.members.remove(&id) {
            if m.health == Health::Pdead {
                self.suspects -= 1;
            }
        }
        self.round.retain(|r| *r != id);
        self.gossip.retain(|(u, _)| u.id != id);
    }

    /// Messages to send, in order.
    pub fn take_outgoing(&mut self) -> Vec<Outgoing> {
        std::mem::take(&mut self.out)
    }

    /// Changes of belief since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Advances time: suspicions that timed out, the running probe, the next probe, the
    /// periodic dead-member probe and sync.
    pub fn tick(&mut self, now_ms: u64) {
        let gap = now_ms.saturating_sub(self.last_tick_ms);
        self.last_tick_ms = now_ms;
        if gap > self.cfg.probe_interval_ms / 2 {
            // This node was paused (starved of CPU, stopped): answers may be waiting unread,
            // so the time it lost counts for nobody's silence. The running probe and every
            // suspicion get the gap back (Lifeguard's local-health idea, in its simplest form).
            if let Some(p) = self.probe.as_mut() {
                p.sent_ms += gap;
            }
            self.next_probe_ms += gap;
            for m in self.members.values_mut() {
                if m.health == Health::Pdead {
                    m.since_ms += gap;
                }
            }
        }
        let timed_out: Vec<Update> = if self.suspects == 0 {
            Vec::new()
        } else {
            self.members
                .iter()
                .filter(|(_, m)| {
                    m.health == Health::Pdead
                        && now_ms.saturating_sub(m.since_ms) >= self.cfg.suspect_timeout_ms
                })
                .map(|(id, m)| Update {
                    id: *id,
                    incarnation: m.incarnation,
                    health: Health::Dead,
                    addr: m.addr,
                })
                .collect()
        };
        for u in timed_out {
            self.learn(u, now_ms);
        }
        self.relays.retain(|_, r| r.expires_ms > now_ms);
        self.maybe_go_indirect(now_ms);
        if now_ms >= self.next_probe_ms {
            self.next_probe_ms = now_ms + self.cfg.probe_interval_ms;
            self.conclude_probe(now_ms);
            self.start_probe(now_ms);
        }
        if now_ms >= self.next_dead_probe_ms {
            self.next_dead_probe_ms = now_ms + self.cfg.dead_probe_interval_ms;
            self.probe_a_dead_member();
        }
        if now_ms >= self.next_sync_ms {
            self.next_sync_ms = now_ms + self.cfg.sync_interval_ms;
            let ids: Vec<NodeId> = self.members.keys().copied().collect();
            if !ids.is_empty() {
                let to = ids[self.rng.below(ids.len())];
                let members = self.full_state();
                self.send(
                    to,
                    Message::Sync {
                        reply: true,
                        members,
                    },
                );
            }
        }
    }

    /// Handles a message from `from`.
    pub fn receive(&mut self, from: NodeId, msg: Message, now_ms: u64) {
        if from == self.me {
            return;
        }
        match msg {
            Message::Ping {
                seq,
                map_epoch,
                updates,
            } => {
                self.merge(&updates, now_ms);
                self.heard_from(from, now_ms);
                self.heard_map_epoch(from, map_epoch, now_ms);
                let updates = self.piggyback(Some(from));
                self.send(
                    from,
                    Message::Ack {
                        seq,
                        about: self.me,
                        map_epoch: self.map_epoch,
                        updates,
                    },
                );
            }
            Message::PingReq {
                seq,
                target,
                updates,
            } => {
                self.merge(&updates, now_ms);
                self.heard_from(from, now_ms);
                let relay_seq = self.next_seq();
                self.relays.insert(
                    relay_seq,
                    Relay {
                        origin: from,
                        origin_seq: seq,
                        expires_ms: now_ms + self.cfg.probe_interval_ms,
                    },
                );
                let updates = self.piggyback(Some(target));
                self.send(
                    target,
                    Message::Ping {
                        seq: relay_seq,
                        map_epoch: self.map_epoch,
                        updates,
                    },
                );
            }
            Message::Ack {
                seq,
                about,
                map_epoch,
                updates,
            } => {
                self.merge(&updates, now_ms);
                self.heard_from(from, now_ms);
                self.heard_map_epoch(from, map_epoch, now_ms);
                if let Some(relay) = self.relays.remove(&seq) {
                    let updates = self.piggyback(Some(relay.origin));
                    self.send(
                        relay.origin,
                        Message::Ack {
                            seq: relay.origin_seq,
                            about,
                            map_epoch: self.map_epoch,
                            updates,
                        },
                    );
                    return;
                }
                let cfg = self.cfg.phi;
                if let Some(p) = self.probe.as_mut() {
                    if p.seq == seq && p.target == about && !p.acked {
                        p.acked = true;
                        if from == about {
                            // A direct answer: one more sample of this link's delay.
                            let delay = now_ms.saturating_sub(p.sent_ms) as f64;
                            if let Some(m) = self.members.get_mut(&about) {
                                m.link.sample(delay, &cfg);
                            }
                        }
                    }
                }
            }
            Message::Sync { reply, members } => {
                self.merge(&members, now_ms);
                self.heard_from(from, now_ms);
                if reply {
                    let members = self.full_state();
                    self.send(
                        from,
                        Message::Sync {
                            reply: false,
                            members,
                        },
                    );
                }
            }
        }
    }

    /// Hearing from a node is news of it, when its own updates (every message carries
    /// them) did not already say more.
    fn heard_from(&mut self, from: NodeId, now_ms: u64) {
        if !self.members.contains_key(&from) {
            self.learn(
                Update {
                    id: from,
                    incarnation: 0,
                    health: Health::Alive,
                    addr: Addr::UNKNOWN,
                },
                now_ms,
            );
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn send(&mut self, to: NodeId, msg: Message) {
        self.out.push(Outgoing { to, msg });
    }

    fn full_state(&self) -> Vec<Update> {
        let mut all: Vec<Update> = self.members().collect();
        all.push(self.my_update());
        all
    }

    /// When the running probe's silence is suspicious: asks others to probe the target.
    fn maybe_go_indirect(&mut self, now_ms: u64) {
        let Some(p) = &self.probe else {
            return;
        };
        if p.acked || p.indirect {
            return;
        }
        let silence = now_ms.saturating_sub(p.sent_ms) as f64;
        let suspicious = self
            .members
            .get(&p.target)
            .is_none_or(|m| m.link.suspects(silence, &self.cfg.phi));
        if !suspicious {
            return;
        }
        let (target, seq) = (p.target, p.seq);
        if let Some(p) = self.probe.as_mut() {
            p.indirect = true;
        }
        let helpers: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(id, m)| **id != target && m.health == Health::Alive)
            .map(|(id, _)| *id)
            .collect();
        for _ in 0..self.cfg.indirect_probes.min(helpers.len()) {
            let helper = helpers[self.rng.below(helpers.len())];
            let updates = self.piggyback(Some(helper));
            self.send(
                helper,
                Message::PingReq {
                    seq,
                    target,
                    updates,
                },
            );
        }
    }

    /// Another path to `id` failed outright (its client port refused a connection): the
    /// member becomes a suspect now instead of when its turn to be probed comes. As any
    /// suspicion it is gossiped, and a member that is in fact alive refutes it.
    pub fn suspect(&mut self, id: NodeId, now_ms: u64) {
        let Some(m) = self.members.get(&id) else {
            return;
        };
        if m.health == Health::Alive {
            let u = Update {
                id,
                incarnation: m.incarnation,
                health: Health::Pdead,
                addr: m.addr,
            };
            self.learn(u, now_ms);
        }
    }

    /// The end of a probe's slot: no answer at all makes the target a suspect.
    fn conclude_probe(&mut self, now_ms: u64) {
        let Some(p) = self.probe.take() else {
            return;
        };
        if p.acked {
            return;
        }
        if let Some(m) = self.members.get(&p.target) {
            if m.health == Health::Alive {
                let u = Update {
                    id: p.target,
                    incarnation: m.incarnation,
                    health: Health::Pdead,
                    addr: m.addr,
                };
                self.learn(u, now_ms);
            }
        }
    }

    fn start_probe(&mut self, now_ms: u64) {
        if self.next_in_round >= self.round.len() {
            self.round = self
                .members
                .iter()
                .filter(|(_, m)| m.health != Health::Dead)
                .map(|(id, _)| *id)
                .collect();
            // Fisher-Yates: a fresh order every round.
            for i in (1..self.round.len()).rev() {
                let j = self.rng.below(i + 1);
                self.round.swap(i, j);
            }
            self.next_in_round = 0;
        }
        while self.next_in_round < self.round.len() {
            let target = self.round[self.next_in_round];
            self.next_in_round += 1;
            if self
                .members
                .get(&target)
                .is_some_and(|m| m.health != Health::Dead)
            {
                let seq = self.next_seq();
                let updates = self.piggyback(Some(target));
                self.send(
                    target,
                    Message::Ping {
                        seq,
                        map_epoch: self.map_epoch,
                        updates,
                    },
                );
                self.probe = Some(Probe {
                    target,
                    seq,
                    sent_ms: now_ms,
                    indirect: false,
                    acked: false,
                });
                return;
            }
        }
    }

    /// Pings a random dead member with the news of its death, so that a node cut off by a
    /// partition that has healed can refute it.
    fn probe_a_dead_member(&mut self) {
        let dead: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(_, m)| m.health == Health::Dead)
            .map(|(id, _)| *id)
            .collect();
        if dead.is_empty() {
            return;
        }
        let target = dead[self.rng.below(dead.len())];
        let seq = self.next_seq();
        let updates = self.piggyback(Some(target));
        self.send(
            target,
            Message::Ping {
                seq,
                map_epoch: self.map_epoch,
                updates,
            },
        );
    }

    /// Up to `max_piggyback` queued changes, fewest-sent first; a message to a member this
    /// node suspects or thinks dead carries that news first, so it can refute.
    fn piggyback(&mut self, to: Option<NodeId>) -> Vec<Update> {
        let mut out = Vec::with_capacity(self.cfg.max_piggyback + 2);
        // This node's own state, always: a node is the authority on its incarnation.
        out.push(self.my_update());
        if let Some(to) = to {
            if let Some(m) = self.members.get(&to) {
                if m.health != Health::Alive {
                    out.push(Update {
                        id: to,
                        incarnation: m.incarnation,
                        health: m.health,
                        addr: m.addr,
                    });
                }
            }
        }
        // Most sends left = newest first.
        self.gossip.sort_by_key(|g| std::cmp::Reverse(g.1));
        for (u, left) in self.gossip.iter_mut().take(self.cfg.max_piggyback) {
            out.push(*u);
            *left -= 1;
        }
        self.gossip.retain(|(_, left)| *left > 0);
        out
    }

    fn merge(&mut self, updates: &[Update], now_ms: u64) {
        for u in updates {
            self.learn(*u, now_ms);
        }
    }

    /// Applies one piece of news under SWIM's rules; a change is gossiped and reported.
    fn learn(&mut self, u: Update, now_ms: u64) {
        if self.banned.get(&u.id).is_some_and(|until| *until > now_ms) {
            return;
        }
        if u.id == self.me {
            if u.health != Health::Alive && u.incarnation >= self.incarnation {
                // Refute: a higher incarnation than any suspicion of this node.
                self.incarnation = u.incarnation + 1;
                self.spread(self.my_update());
            }
            return;
        }
        let changed = match self.members.get_mut(&u.id) {
            None => {
                self.insert_member(u, now_ms);
                true
            }
            Some(m) => {
                // An address is news when it comes with an incarnation at least as new
                // (a member's own word at restart, or an address first heard of).
                let moved = u.addr.is_known() && u.addr != m.addr && u.incarnation >= m.incarnation;
                if moved {
                    m.addr = u.addr;
                }
                let wins = match (u.health, m.health) {
                    (Health::Alive, _) => u.incarnation > m.incarnation,
                    (Health::Pdead, Health::Alive) => u.incarnation >= m.incarnation,
                    (Health::Pdead, _) => u.incarnation > m.incarnation,
                    (Health::Dead, Health::Dead) => u.incarnation > m.incarnation,
                    (Health::Dead, _) => u.incarnation >= m.incarnation,
                };
                if wins {
                    if m.health != u.health {
                        m.since_ms = now_ms;
                        if m.health == Health::Pdead {
                            self.suspects -= 1;
                        }
                        if u.health == Health::Pdead {
                            self.suspects += 1;
                        }
                    }
                    m.health = u.health;
                    m.incarnation = u.incarnation;
                }
                if moved && !wins {
                    // Pass the address on, without a change of belief to report.
                    let known = Update {
                        id: u.id,
                        incarnation: m.incarnation,
                        health: m.health,
                        addr: m.addr,
                    };
                    self.spread(known);
                }
                wins
            }
        };
        if changed {
            self.spread(u);
            self.events.push(Event {
                id: u.id,
                health: u.health,
                incarnation: u.incarnation,
                at_ms: now_ms,
            });
        }
    }

    /// Where this node is reached from now on (it learned its IP from a peer).
    pub fn set_addr(&mut self, addr: Addr) {
        self.addr = addr;
        let me = self.my_update();
        self.spread(me);
    }

    /// This node as it announces itself.
    fn my_update(&self) -> Update {
        Update {
            id: self.me,
            incarnation: self.incarnation,
            health: Health::Alive,
            addr: self.addr,
        }
    }

    /// Where `id` is reached, if known.
    pub fn addr_of(&self, id: NodeId) -> Option<Addr> {
        self.members.get(&id).map(|m| m.addr).filter(Addr::is_known)
    }

    /// This node's incarnation when it restarts from a saved configuration: above any
    /// suspicion others may hold of its past life.
    pub fn set_incarnation(&mut self, incarnation: u64) {
        self.incarnation = incarnation;
    }

    fn spread(&mut self, u: Update) {
        let n = self.members.len() + 1;
        let sends = self.cfg.retransmit_mult * ((n + 1) as f64).log10().ceil().max(1.0) as usize;
        self.gossip.retain(|(g, _)| g.id != u.id);
        self.gossip.push((u, sends));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two members that know each other; `a` sends `b` whatever `b` answers, by hand.
    fn pair() -> (Membership, Membership) {
        let mut rng = Rng::new(3);
        let (ia, ib) = (NodeId::random(&mut rng), NodeId::random(&mut rng));
        let addr = |port| Addr::new([127, 0, 0, 1].into(), port, port + 10_000);
        let mut a = Membership::new(ia, addr(1), Config::default(), 1, 0);
        let mut b = Membership::new(ib, addr(2), Config::default(), 2, 0);
        let know = |m: &mut Membership, id, port| {
            m.remember(
                Update {
                    id,
                    incarnation: 0,
                    health: Health::Alive,
                    addr: addr(port),
                },
                0,
            )
        };
        know(&mut a, ib, 2);
        know(&mut b, ia, 1);
        (a, b)
    }

    /// A refused connection makes a suspect at once; the suspect, alive, refutes it, and the
    /// refutation wins everywhere.
    #[test]
    fn a_hint_makes_a_suspect_that_an_alive_member_refutes() {
        let (mut a, mut b) = pair();
        let ib = b.me();
        a.suspect(ib, 5);
        assert_eq!(a.health(ib), Some(Health::Pdead));
        assert!(a
            .take_events()
            .iter()
            .any(|e| e.id == ib && e.health == Health::Pdead));
        // `a` tells `b` (its pings carry the suspicion); `b` answers alive, incarnation 1.
        let mut now = 5;
        while a.health(ib) != Some(Health::Alive) && now < 2_000 {
            now += 10;
            a.tick(now);
            b.tick(now);
            for o in a.take_outgoing() {
                b.receive(a.me(), o.msg, now);
            }
            for o in b.take_outgoing() {
                a.receive(ib, o.msg, now);
            }
        }
        assert_eq!(a.health(ib), Some(Health::Alive), "the suspect refuted");
        assert_eq!(b.incarnation(), 1);
        // A hint about an unknown node or one already suspected changes nothing.
        a.suspect(NodeId::random(&mut Rng::new(9)), now);
        assert_eq!(a.members().count(), 1);
    }

    /// A node that was not running (its CPU taken) does not blame the silence of that time
    /// on its peers: the probe it had out when it stopped gets the lost time back.
    #[test]
    fn a_paused_node_does_not_suspect_its_peers() {
        let (mut a, _b) = pair();
        let mut now = 0;
        // Run until `a` has a probe out (its answers are never delivered).
        while a.probe.is_none() {
            now += 10;
            a.tick(now);
        }
        a.take_outgoing();
        // Three seconds without a tick, then one.
        now += 3_000;
        a.tick(now);
        assert!(
            a.take_events().iter().all(|e| e.health == Health::Alive),
            "a pause is not a peer's silence"
        );
        // Ticking on, the silence is real: suspicion after one probe interval.
        let until = now + 2 * Config::default().probe_interval_ms;
        while now < until {
            now += 10;
            a.tick(now);
        }
        assert!(a.take_events().iter().any(|e| e.health == Health::Pdead));
    }
}
