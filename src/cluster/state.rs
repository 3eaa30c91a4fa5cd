//! One node's whole view of the cluster, without I/O: membership, the slot table and the
//! coordinator's rule for changing it. The control core's driver feeds it frames and ticks
//! and sends what it returns; data cores see it only as a published [`View`].
//!
//! The coordinator is the live (alive or suspected) primary (a node owning slots) with the
//! lowest id. It changes the table only while a majority of the table's primaries answer it
//! (alive, not suspected), so the minority side of a partition does not re-place the
//! majority's slots:
//! - a primary declared dead (or forgotten) loses its slots to the others ([`SlotMap::without`]);
//! - a live node that owns no slots gets its fair share ([`SlotMap::with`]).
//!
//! One change per tick; each gets the next epoch and is pushed to every live member, and the
//! epoch carried by every ping lets a node that missed it fetch it.

use super::bus::{Body, Frame};
use super::election::{Candidate, ElectionConfig, Standing, Step, Voter};
use super::map::{self, SlotMap, SLOTS};
use super::membership::{Addr, Config, Event, Health, Membership, NodeId, Update};
use super::view::{View, ViewNode, NO_OWNER};
use std::collections::BTreeSet;
use std::net::SocketAddr;

/// A frame to send and where: a member's bus address, or an address whose node is not
/// known yet (a seed or a CLUSTER MEET target).
#[derive(Debug)]
pub struct Send {
    pub to: SocketAddr,
    pub frame: Frame,
}

/// Counters shown by CLUSTER INFO.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub frames_sent: u64,
    pub frames_received: u64,
}

pub struct ClusterState {
    me: NodeId,
    addr: Addr,
    members: Membership,
    map: Option<SlotMap>,
    /// The primaries of `map` (cached: the coordinator asks every tick).
    owners: BTreeSet<NodeId>,
    out: Vec<Send>,
    events: Vec<Event>,
    view_stale: bool,
    config_stale: bool,
    /// A frame arrived since start: until then a restarted node does not trust its saved
    /// table (the others may have moved on) and says the cluster is down.
    heard: bool,
    pub stats: Stats,
    /// What this node granted in elections (saved: a restart must not grant an epoch twice).
    voter: Voter,
    /// This node's side of failover elections, when it is a replica.
    candidate: Candidate,
    /// What this node has applied from its primary (per primary shard), once fully synced,
    /// and whether it was in sync when it last heard from it; set by the driver.
    repl_offsets: Option<Vec<u64>>,
    repl_in_sync: bool,
    /// CLUSTER REPLICATE requests for the coordinator: (replica, primary).
    pending_replicate: Vec<(NodeId, NodeId)>,
    /// When each table primary was first seen dead; a dead primary whose replicas have not
    /// taken over within [`FAILOVER_GRACE_MS`] loses its slots to the others.
    owner_dead_since: std::collections::BTreeMap<NodeId, u64>,
    /// Elections this node won: (the primary it replaced, the epoch).
    promotions: Vec<(NodeId, u64)>,
    /// The primary CLUSTER REPLICATE asked this node to follow, until the table says so.
    want_primary: Option<NodeId>,
    next_replicate_ask_ms: u64,
    /// Replica migration: `Some(barrier)` lets a primary with more than `barrier` live
    /// replicas give one to a primary with none (cluster-allow-replica-migration,
    /// cluster-migration-barrier); `None` turns it off.
    migration_barrier: Option<usize>,
    /// Whether a dead primary's slots put the whole view down (Redis's default, yes).
    require_full_coverage: bool,
}

/// A node asks the coordinator again this often (ms) until CLUSTER REPLICATE is in the table.
pub const REPLICATE_RETRY_MS: u64 = 500;

/// How long the coordinator leaves a dead primary's slots to its replicas' election before
/// it re-places them, in ms.
pub const FAILOVER_GRACE_MS: u64 = 5_000;

impl ClusterState {
    pub fn new(me: NodeId, addr: Addr, cfg: Config, seed: u64, now_ms: u64) -> ClusterState {
        ClusterState {
            me,
            addr,
            members: Membership::new(me, addr, cfg, seed, now_ms),
            map: None,
            owners: BTreeSet::new(),
            out: Vec::new(),
            events: Vec::new(),
            view_stale: true,
            config_stale: true,
            heard: false,
            stats: Stats::default(),
            voter: Voter::default(),
            candidate: Candidate::new(me, ElectionConfig::default(), seed ^ 0xe1ec),
            repl_offsets: None,
            repl_in_sync: false,
            pending_replicate: Vec::new(),
            owner_dead_since: Default::default(),
            promotions: Vec::new(),
            want_primary: None,
            next_replicate_ask_ms: 0,
            migration_barrier: Some(1),
            require_full_coverage: true,
        }
    }

    /// Sets the election timing (cluster-election-* settings).
    pub fn set_election_config(&mut self, cfg: ElectionConfig, seed: u64) {
        self.candidate = Candidate::new(self.me, cfg, seed ^ 0xe1ec);
    }

    /// `cluster-require-full-coverage`: with `false` the view stays ok while a primary is
    /// dead (its slots alone are refused).
    pub fn set_require_full_coverage(&mut self, require: bool) {
        self.require_full_coverage = require;
    }

    /// Replica migration's setting (see `migration_barrier`).
    pub fn set_migration_barrier(&mut self, barrier: Option<usize>) {
        self.migration_barrier = barrier;
    }

    /// What the replication side reports: the offsets applied from the primary (`None`
    /// before a full sync completed) and whether they were in sync at the last contact.
    pub fn set_replication(&mut self, offsets: Option<Vec<u64>>, in_sync: bool) {
        self.repl_offsets = offsets;
        self.repl_in_sync = in_sync;
    }

    /// CLUSTER REPLICATE: asks the coordinator to make this node follow `primary`.
    pub fn replicate(&mut self, primary: NodeId) -> Result<(), String> {
        if primary == self.me {
            return Err("ERR Can't replicate myself".into());
        }
        let Some(map) = &self.map else {
            return Err("ERR the cluster has no slot table yet".into());
        };
        if self.members.health(primary).is_none() {
            return Err(format!("ERR Unknown node {primary}"));
        }
        if !self.owners.contains(&primary) {
            return Err("ERR I can only replicate a master, not a replica.".into());
        }
        if map.primary_of(self.me) == Some(primary) {
            return Ok(());
        }
        self.want_primary = Some(primary);
        self.ask_to_replicate(0);
        Ok(())
    }

    /// Asks the coordinator (again) to make this node follow the primary CLUSTER REPLICATE
    /// named, until the table says so (the coordinator may change on the way).
    fn ask_to_replicate(&mut self, now_ms: u64) {
        let (Some(primary), Some(map)) = (self.want_primary, &self.map) else {
            return;
        };
        if map.primary_of(self.me) == Some(primary) || !self.owners.contains(&primary) {
            self.want_primary = None;
            return;
        }
        if now_ms < self.next_replicate_ask_ms {
            return;
        }
        self.next_replicate_ask_ms = now_ms + REPLICATE_RETRY_MS;
        let owners: Vec<NodeId> = self.owners.iter().copied().collect();
        match map::coordinator(&self.live(&owners)) {
            Some(c) if c == self.me && !self.pending_replicate.contains(&(self.me, primary)) => {
                self.pending_replicate.push((self.me, primary));
            }
            Some(c) if c == self.me => {}
            Some(c) => self.send_to(
                c,
                Body::Replicate {
                    replica: self.me,
                    primary,
                },
            ),
            None => {}
        }
    }

    /// CLUSTER FAILOVER FORCE (stand now, granted while the primary lives) or TAKEOVER
    /// (take the slots under a new epoch without a vote, as Redis's TAKEOVER: for when no
    /// majority can be had; two takeovers at once are the operator's to avoid).
    pub fn failover(&mut self, takeover: bool, now_ms: u64) -> Result<(), String> {
        let Some(map) = self.map.clone() else {
            return Err("ERR the cluster has no slot table yet".into());
        };
        let Some(primary) = map.primary_of(self.me) else {
            return Err("ERR You should send CLUSTER FAILOVER to a replica".into());
        };
        if takeover {
            let epoch = self.voter.voted.max(map.epoch) + 1;
            self.promotions.push((primary, epoch));
            let next = map.promote(primary, self.me, epoch);
            self.adopt(next, now_ms);
            return Ok(());
        }
        if self.repl_offsets.is_none() {
            return Err("ERR this replica has not completed a full sync".into());
        }
        if let Some((step, map)) =
            self.with_standing(|c, s, v| c.stand(now_ms, s, v, primary, true))
        {
            self.election_step(step, &map, now_ms);
        }
        self.after_step(now_ms);
        Ok(())
    }

    /// Runs `f` on this node's candidate with what it knows for an election — its table's
    /// roles, who is dead, what it has applied — and returns the result with the table it
    /// was judged against; `None` before the cluster has a table.
    fn with_standing<R>(
        &mut self,
        f: impl FnOnce(&mut Candidate, &Standing, &Voter) -> R,
    ) -> Option<(R, SlotMap)> {
        let map = self.map.clone()?;
        let roles = map.roles();
        let down = self.dead_members();
        let is_down = |id: NodeId| down.contains(&id);
        let standing = Standing {
            roles: &roles,
            down: &is_down,
            offsets: self.repl_offsets.as_deref(),
            in_sync: self.repl_in_sync,
            rank: 0,
        };
        Some((f(&mut self.candidate, &standing, &self.voter), map))
    }

    fn live(&self, ids: &[NodeId]) -> Vec<NodeId> {
        ids.iter()
            .filter(|id| {
                **id == self.me
                    || matches!(
                        self.members.health(**id),
                        Some(Health::Alive | Health::Pdead)
                    )
            })
            .copied()
            .collect()
    }

    fn is_dead(&self, id: NodeId) -> bool {
        id != self.me && matches!(self.members.health(id), Some(Health::Dead) | None)
    }

    /// Takes back a saved configuration (a restart): its members as last known alive, its
    /// table, and an incarnation above anything others may believe of this node.
    pub fn restore(&mut self, saved: &Saved, now_ms: u64) {
        self.members.set_incarnation(saved.incarnation + 1);
        for (id, addr) in &saved.members {
            let u = Update {
                id: *id,
                incarnation: 0,
                health: Health::Alive,
                addr: *addr,
            };
            self.members.remember(u, now_ms);
        }
        if let Some(map) = &saved.map {
            self.set_map(map.clone());
        }
        self.voter.adopted(saved.voted);
        self.view_stale = true;
        self.config_stale = true;
    }

    pub fn me(&self) -> NodeId {
        self.me
    }

    /// Members known (this node not counted).
    pub fn member_count(&self) -> usize {
        self.members.members().count()
    }

    pub fn map(&self) -> Option<&SlotMap> {
        self.map.as_ref()
    }

    pub fn health(&self, id: NodeId) -> Option<Health> {
        self.members.health(id)
    }

    /// This node learned the address its peers reach it at (its bind address was a
    /// wildcard). Affects what it announces from now on.
    pub fn set_ip(&mut self, ip: std::net::IpAddr) {
        self.addr =
            Addr::new(ip, self.addr.port, self.addr.bus_port).with_tls_port(self.addr.tls_port);
        self.members.set_addr(self.addr);
        self.view_stale = true;
    }

    pub fn addr(&self) -> Addr {
        self.addr
    }

    /// Asks the node at `bus` to take this one in (a seed, CLUSTER MEET).
    pub fn meet(&mut self, bus: SocketAddr) {
        self.push(bus, Body::Join { addr: self.addr });
    }

    /// CLUSTER FORGET.
    pub fn forget(&mut self, id: NodeId, now_ms: u64) -> Result<(), String> {
        if id == self.me {
            return Err("ERR I tried hard but I can't forget myself...".into());
        }
        if self.members.health(id).is_none() {
            return Err(format!("ERR Unknown node {id}"));
        }
        self.members.forget(id, now_ms);
        self.view_stale = true;
        self.config_stale = true;
        Ok(())
    }

    /// Forms the cluster: the first slot table, by Jump Consistent Hashing over this node
    /// and every member it sees alive. Returns the table's epoch.
    pub fn create(&mut self, now_ms: u64) -> Result<u64, String> {
        if let Some(map) = &self.map {
            return Err(format!(
                "ERR the cluster already has a slot table (epoch {})",
                map.epoch
            ));
        }
        let mut primaries: Vec<NodeId> = self
            .members
            .members()
            .filter(|u| u.health == Health::Alive && u.addr.is_known())
            .map(|u| u.id)
            .collect();
        primaries.push(self.me);
        let table = SlotMap::initial(&primaries);
        let epoch = table.epoch;
        self.adopt(table, now_ms);
        Ok(epoch)
    }

    /// Handles a frame from the bus.
    pub fn receive(&mut self, frame: Frame, now_ms: u64) {
        self.stats.frames_received += 1;
        if !self.heard {
            self.heard = true;
            self.view_stale = true;
        }
        let from = frame.from;
        match frame.body {
            Body::Member(msg) => self.members.receive(from, msg, now_ms),
            Body::Join { addr } => {
                if addr.is_known() {
                    self.members.join(from, addr, now_ms);
                }
            }
            Body::MapRequest => {
                if let Some(map) = &self.map {
                    let body = map_body(map);
                    self.send_to(from, body);
                }
            }
            Body::Map {
                epoch,
                nodes,
                runs,
                replicas,
            } => {
                if let Ok(theirs) =
                    SlotMap::from_wire_with_replicas(epoch, &nodes, &runs, &replicas)
                {
                    let wins = self.map.as_ref().is_none_or(|ours| theirs.beats(ours));
                    if wins {
                        self.set_map(theirs);
                    }
                }
            }
            Body::Replicate { replica, primary } => {
                // (A request that crossed the table it asked for is stale: dropping it keeps
                // it from undoing a later change, such as a donation.)
                let done = self
                    .map
                    .as_ref()
                    .is_some_and(|m| m.primary_of(replica) == Some(primary));
                if replica == from && !done && !self.pending_replicate.contains(&(replica, primary))
                {
                    self.pending_replicate.push((replica, primary));
                }
            }
            Body::Ballot(ballot) => {
                if let Some(map) = &self.map {
                    let roles = map.roles();
                    let failed_down = self.is_dead(ballot.failed);
                    let offsets = self.repl_offsets.clone();
                    let vote = self.voter.consider(
                        self.me,
                        &ballot,
                        &roles,
                        failed_down,
                        offsets.as_deref(),
                    );
                    self.send_to(from, Body::Vote(vote));
                }
            }
            Body::Vote(vote) => {
                if let Some((step, map)) =
                    self.with_standing(|c, s, _| c.on_vote(now_ms, from, &vote, s))
                {
                    self.election_step(step, &map, now_ms);
                }
            }
        }
        self.after_step(now_ms);
    }

    /// A connection to the member whose client address is `client` was refused: suspect it
    /// now (see [`crate::cluster::membership::Membership::suspect`]).
    pub fn link_refused(&mut self, client: std::net::SocketAddr, now_ms: u64) {
        let id = self
            .members
            .members()
            .find(|u| u.addr.client() == client)
            .map(|u| u.id);
        if let Some(id) = id {
            self.members.suspect(id, now_ms);
        }
    }

    /// Whether this node's primary is alive as membership sees it; `None` on a primary.
    pub fn primary_alive(&self) -> Option<bool> {
        let primary = self.map.as_ref()?.primary_of(self.me)?;
        Some(self.members.health(primary) == Some(Health::Alive))
    }

    fn dead_members(&self) -> Vec<NodeId> {
        self.members
            .members()
            .filter(|u| u.health == Health::Dead)
            .map(|u| u.id)
            .collect()
    }

    /// Runs the replica's side of elections for this tick.
    fn elect(&mut self, now_ms: u64) {
        if self
            .map
            .as_ref()
            .and_then(|m| m.primary_of(self.me))
            .is_none()
        {
            return;
        }
        if let Some((step, map)) = self.with_standing(|c, s, v| c.tick(now_ms, s, v)) {
            self.election_step(step, &map, now_ms);
        }
    }

    fn election_step(&mut self, step: Step, map: &SlotMap, now_ms: u64) {
        match step {
            Step::Nothing => {}
            Step::Ask(ballot, to) => {
                for id in to {
                    self.send_to(id, Body::Ballot(ballot.clone()));
                }
            }
            Step::Won(roles) => {
                let Some(failed) = map.primary_of(self.me) else {
                    return;
                };
                if self.map.as_ref().map(|m| m.epoch) != Some(map.epoch) {
                    return;
                }
                self.promotions.push((failed, roles.epoch));
                let next = map.promote(failed, self.me, roles.epoch);
                self.adopt(next, now_ms);
            }
        }
    }

    /// Advances time: membership's probes and timeouts, then the coordinator's rule.
    pub fn tick(&mut self, now_ms: u64) {
        self.members.tick(now_ms);
        self.after_step(now_ms);
        self.ask_to_replicate(now_ms);
        self.coordinate(now_ms);
        self.elect(now_ms);
        self.after_step(now_ms);
    }

    /// Frames to send, in order.
    pub fn take_outgoing(&mut self) -> Vec<Send> {
        std::mem::take(&mut self.out)
    }

    /// Changes of belief about members since the last call (for the log).
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Elections won since the last call: (the primary replaced, the epoch).
    pub fn take_promotions(&mut self) -> Vec<(NodeId, u64)> {
        std::mem::take(&mut self.promotions)
    }

    /// Whether the view changed since the last call.
    pub fn take_view_stale(&mut self) -> bool {
        std::mem::take(&mut self.view_stale)
    }

    /// Whether the configuration to save changed since the last call.
    pub fn take_config_stale(&mut self) -> bool {
        std::mem::take(&mut self.config_stale)
    }

    fn after_step(&mut self, now_ms: u64) {
        for o in self.members.take_outgoing() {
            self.send_to(o.to, Body::Member(o.msg));
        }
        if let Some((holder, _)) = self.members.take_map_news(now_ms) {
            self.send_to(holder, Body::MapRequest);
        }
        let events = self.members.take_events();
        if !events.is_empty() {
            self.view_stale = true;
            self.config_stale = true;
            self.events.extend(events);
        }
    }

    /// The coordinator's rule (see the module's doc).
    fn coordinate(&mut self, now_ms: u64) {
        let Some(map) = &self.map else {
            return;
        };
        let owners = &self.owners;
        let live = |id: &NodeId| {
            *id == self.me
                || matches!(
                    self.members.health(*id),
                    Some(Health::Alive | Health::Pdead)
                )
        };
        let live_owners: Vec<NodeId> = owners.iter().filter(|id| live(id)).copied().collect();
        // The majority counts only members answering now: a suspect may be on the far side
        // of a partition this node is about to find itself alone in.
        let answering = owners
            .iter()
            .filter(|id| **id == self.me || self.members.health(**id) == Some(Health::Alive))
            .count();
        if !live_owners.contains(&self.me)
            || map::coordinator(&live_owners) != Some(self.me)
            || answering * 2 <= owners.len()
        {
            return;
        }
        self.pending_replicate
            .retain(|(r, p)| map.primary_of(*r) != Some(*p));
        // A dead primary with replicas is left to their election for a grace period.
        let dead_since = &mut self.owner_dead_since;
        dead_since.retain(|id, _| owners.contains(id) && !live(id));
        for id in owners.iter().filter(|id| !live(id)) {
            dead_since.entry(*id).or_insert(now_ms);
        }
        let replicated = |id: &NodeId| map.replicas().values().any(|p| p == id);
        let next = if let Some(gone) = owners.iter().find(|id| {
            !live(id)
                && (!replicated(id) || now_ms.saturating_sub(dead_since[*id]) >= FAILOVER_GRACE_MS)
        }) {
            map.without(*gone, &live_owners)
        } else if let Some(&(replica, primary)) = self.pending_replicate.iter().find(|(r, p)| {
            owners.contains(p)
                && map.primary_of(*r) != Some(*p)
                && (*r == self.me || self.members.health(*r) == Some(Health::Alive))
        }) {
            self.pending_replicate.retain(|x| *x != (replica, primary));
            if !live_owners.iter().any(|o| *o != replica) {
                return;
            }
            map.with_replica(replica, primary, &live_owners)
        } else if let Some((replica, orphan)) = self.donation(map, &live_owners) {
            map.with_replica(replica, orphan, &live_owners)
        } else if let Some(new) = self
            .members
            .members()
            .filter(|u| {
                u.health == Health::Alive
                    && u.addr.is_known()
                    && !owners.contains(&u.id)
                    && map.primary_of(u.id).is_none()
                    && !self.pending_replicate.iter().any(|(r, _)| *r == u.id)
            })
            .map(|u| u.id)
            .min()
        {
            map.with(new, &live_owners)
        } else {
            return;
        };
        self.adopt(next, now_ms);
    }

    /// Replica migration: a live primary left without a live replica gets one from the
    /// primary with the most live replicas, if that one keeps more than the migration
    /// barrier. Returns (the replica to move, the primary it goes to).
    fn donation(&self, map: &SlotMap, live_owners: &[NodeId]) -> Option<(NodeId, NodeId)> {
        let barrier = self.migration_barrier?;
        // A suspected replica still counts: only one declared dead leaves its primary
        // orphaned (a moved replica costs a full sync).
        let live_replicas = |p: &NodeId| -> Vec<NodeId> {
            map.replicas()
                .iter()
                .filter(|(r, q)| {
                    *q == p
                        && (**r == self.me
                            || matches!(
                                self.members.health(**r),
                                Some(Health::Alive | Health::Pdead)
                            ))
                })
                .map(|(r, _)| *r)
                .collect()
        };
        let orphan = live_owners
            .iter()
            .filter(|p| **p == self.me || self.members.health(**p) == Some(Health::Alive))
            .find(|p| live_replicas(p).is_empty())?;
        let (donor, replicas) = live_owners
            .iter()
            .map(|p| (*p, live_replicas(p)))
            .max_by(|a, b| a.1.len().cmp(&b.1.len()).then(b.0.cmp(&a.0)))?;
        if donor == *orphan || replicas.len() <= barrier {
            return None;
        }
        let given = replicas
            .iter()
            .filter(|r| self.members.health(**r) == Some(Health::Alive))
            .min()?;
        Some((*given, *orphan))
    }

    /// Makes `table` this node's and pushes it to every live member.
    fn adopt(&mut self, table: SlotMap, _now_ms: u64) {
        let body = map_body(&table);
        self.set_map(table);
        let live: Vec<NodeId> = self
            .members
            .members()
            .filter(|u| u.health == Health::Alive)
            .map(|u| u.id)
            .collect();
        for id in live {
            self.send_to(id, body.clone());
        }
    }

    fn set_map(&mut self, table: SlotMap) {
        self.voter.adopted(table.epoch);
        self.members.set_map_epoch(table.epoch);
        self.owners = table.counts().keys().copied().collect();
        self.map = Some(table);
        self.view_stale = true;
        self.config_stale = true;
    }

    fn send_to(&mut self, id: NodeId, body: Body) {
        // A member whose address is not known yet gets nothing: gossip will bring it.
        if let Some(addr) = self.members.addr_of(id) {
            self.push(addr.bus(), body);
        }
    }

    fn push(&mut self, to: SocketAddr, body: Body) {
        self.stats.frames_sent += 1;
        self.out.push(Send {
            to,
            frame: Frame {
                from: self.me,
                body,
            },
        });
    }

    /// What data cores and CLUSTER commands read.
    pub fn view(&self) -> View {
        let mut nodes = vec![ViewNode {
            id: self.me,
            addr: self.addr,
            health: Health::Alive,
            myself: true,
            slots: 0,
            primary: None,
        }];
        let mut members: Vec<Update> = self.members.members().collect();
        members.sort_by_key(|u| u.id);
        nodes.extend(members.iter().map(|u| ViewNode {
            id: u.id,
            addr: u.addr,
            health: u.health,
            myself: false,
            slots: 0,
            primary: None,
        }));
        let mut owners = Vec::new();
        let mut state_ok = false;
        let epoch = self.map.as_ref().map_or(0, |m| m.epoch);
        if let Some(map) = &self.map {
            owners = vec![NO_OWNER; SLOTS];
            let index: std::collections::HashMap<NodeId, u16> = nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (n.id, i as u16))
                .collect();
            for (r, p) in map.replicas() {
                if let (Some(&ri), Some(&pi)) = (index.get(r), index.get(p)) {
                    nodes[ri as usize].primary = Some(pi);
                }
            }
            for (s, owner) in owners.iter_mut().enumerate() {
                if let Some(&i) = index.get(&map.owner(s)) {
                    *owner = i;
                    nodes[i as usize].slots += 1;
                }
            }
            let counts = map.counts();
            let reachable = counts
                .keys()
                .filter(|id| {
                    index
                        .get(id)
                        .is_some_and(|&i| nodes[i as usize].health != Health::Dead)
                })
                .count();
            // Every slot is served by a node not dead here (unless full coverage is not
            // required: then dead owners' slots alone are refused), this node sees a
            // majority of the primaries (Redis's cluster_state:ok), and it has heard from
            // the cluster since it started.
            let covered = owners.iter().all(|&o| {
                o != NO_OWNER
                    && nodes[o as usize].health != Health::Dead
                    && nodes[o as usize].addr.is_known()
            });
            state_ok = (covered || !self.require_full_coverage)
                && reachable * 2 > counts.len()
                && (self.heard || nodes.len() == 1);
        }
        View {
            me: self.me,
            epoch,
            state_ok,
            nodes,
            owners,
        }
    }

    /// What to save so that a restart comes back as the same node.
    pub fn saved(&self) -> Saved {
        Saved {
            me: self.me,
            incarnation: self.members.incarnation(),
            members: self
                .members
                .members()
                .filter(|u| u.addr.is_known())
                .map(|u| (u.id, u.addr))
                .collect(),
            map: self.map.clone(),
            voted: self.voter.voted,
        }
    }
}

fn map_body(map: &SlotMap) -> Body {
    let (epoch, nodes, runs) = map.to_wire();
    Body::Map {
        epoch,
        nodes,
        runs,
        replicas: map.replicas().iter().map(|(r, p)| (*r, *p)).collect(),
    }
}

/// A node's saved cluster configuration (`nodes.conf`).
#[derive(Clone, Debug, PartialEq)]
pub struct Saved {
    pub me: NodeId,
    pub incarnation: u64,
    pub members: Vec<(NodeId, Addr)>,
    pub map: Option<SlotMap>,
    /// The highest epoch this node granted or adopted.
    pub voted: u64,
}

const SAVED_HEADER: &str = "tessera-cluster-config 1";

impl Saved {
    /// The text of `nodes.conf`: a header, this node, one line per member, and the table as
    /// runs of slots per node.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut t = String::new();
        let _ = writeln!(t, "{SAVED_HEADER}");
        let _ = writeln!(
            t,
            "# written by the node on every change; do not edit it while the node runs"
        );
        let _ = writeln!(t, "myself {} {}", self.me, self.incarnation);
        for (id, a) in &self.members {
            let _ = writeln!(
                t,
                "member {id} {} {} {} {}",
                a.ip(),
                a.port,
                a.bus_port,
                a.tls_port
            );
        }
        if let Some(map) = &self.map {
            let (epoch, nodes, runs) = map.to_wire();
            let _ = writeln!(t, "epoch {epoch}");
            for (a, b, i) in runs {
                let _ = writeln!(t, "slots {a} {b} {}", nodes[i as usize]);
            }
            for (r, p) in map.replicas() {
                let _ = writeln!(t, "replica {r} {p}");
            }
        }
        let _ = writeln!(t, "voted {}", self.voted);
        t
    }

    pub fn parse(text: &str) -> Result<Saved, String> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.starts_with('#'));
        match lines.next() {
            Some((_, l)) if l.trim() == SAVED_HEADER => {}
            _ => return Err(format!("the first line is not \"{SAVED_HEADER}\"")),
        }
        let mut me = None;
        let mut incarnation = 0;
        let mut members = Vec::new();
        let mut epoch = None;
        let mut replicas = Vec::new();
        let mut voted = 0;
        let (mut nodes, mut runs): (Vec<NodeId>, Vec<(u16, u16, u32)>) = (Vec::new(), Vec::new());
        for (n, line) in lines {
            let bad = || format!("line {}: cannot read \"{line}\"", n + 1);
            let f: Vec<&str> = line.split_whitespace().collect();
            let id = |i: usize| f.get(i).and_then(|t| NodeId::from_hex(t)).ok_or_else(bad);
            let num = |i: usize| f.get(i).and_then(|t| t.parse::<u64>().ok()).ok_or_else(bad);
            match f.first().copied() {
                None => {}
                Some("myself") => {
                    me = Some(id(1)?);
                    incarnation = num(2)?;
                }
                Some("member") => {
                    let ip: std::net::IpAddr =
                        f.get(2).and_then(|t| t.parse().ok()).ok_or_else(bad)?;
                    let (port, bus) = (num(3)?, num(4)?);
                    if port == 0 || port > 65535 || bus == 0 || bus > 65535 {
                        return Err(bad());
                    }
                    // The TLS port came later: a file without it means none.
                    let tls = if f.len() > 5 { num(5)? } else { 0 };
                    if tls > 65535 {
                        return Err(bad());
                    }
                    members.push((
                        id(1)?,
                        Addr::new(ip, port as u16, bus as u16).with_tls_port(tls as u16),
                    ));
                }
                Some("epoch") => epoch = Some(num(1)?),
                Some("replica") => replicas.push((id(1)?, id(2)?)),
                Some("voted") => voted = num(1)?,
                Some("slots") => {
                    let (a, b, owner) = (num(1)?, num(2)?, id(3)?);
                    if a > b || b >= SLOTS as u64 {
                        return Err(bad());
                    }
                    let i = match nodes.iter().position(|x| *x == owner) {
                        Some(i) => i,
                        None => {
                            nodes.push(owner);
                            nodes.len() - 1
                        }
                    };
                    runs.push((a as u16, b as u16, i as u32));
                }
                Some(_) => return Err(bad()),
            }
        }
        let me = me.ok_or("no \"myself\" line")?;
        let map = match epoch {
            None if runs.is_empty() => None,
            None => return Err("slot runs without an \"epoch\" line".into()),
            Some(e) => Some(SlotMap::from_wire_with_replicas(
                e, &nodes, &runs, &replicas,
            )?),
        };
        Ok(Saved {
            me,
            incarnation,
            members,
            map,
            voted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_shards::evict::Rng;

    /// `n` nodes on a perfect in-memory network, stepped in lockstep.
    struct Net {
        nodes: Vec<ClusterState>,
        now: u64,
        /// Stopped: no ticks, no frames.
        down: Vec<bool>,
        /// Running, but cut off from every other node.
        cut: Vec<bool>,
    }

    fn addr(i: usize) -> Addr {
        Addr::new([127, 0, 0, 1 + i as u8].into(), 7000, 17000)
    }

    impl Net {
        fn new(n: usize, seed: u64) -> Net {
            let mut rng = Rng::new(seed);
            let nodes = (0..n)
                .map(|i| {
                    let id = NodeId::random(&mut rng);
                    ClusterState::new(id, addr(i), Config::default(), rng.next_u64(), 0)
                })
                .collect();
            Net {
                nodes,
                now: 0,
                down: vec![false; n],
                cut: vec![false; n],
            }
        }

        fn index(&self, to: SocketAddr) -> usize {
            (0..self.nodes.len())
                .find(|&i| addr(i).bus() == to)
                .expect("a known address")
        }

        /// Delivers every frame (through the codec) until the network is quiet.
        fn deliver(&mut self) {
            loop {
                let mut moved = false;
                for i in 0..self.nodes.len() {
                    for s in self.nodes[i].take_outgoing() {
                        let j = self.index(s.to);
                        if self.down[i] || self.down[j] || self.cut[i] || self.cut[j] {
                            continue;
                        }
                        let mut wire = Vec::new();
                        super::super::bus::encode(&s.frame, &mut wire);
                        let (frame, _) = super::super::bus::decode(&wire).unwrap().unwrap();
                        self.nodes[j].receive(frame, self.now);
                        moved = true;
                    }
                }
                if !moved {
                    return;
                }
            }
        }

        fn run_ms(&mut self, ms: u64) {
            for _ in 0..ms / 10 {
                self.now += 10;
                for i in 0..self.nodes.len() {
                    if !self.down[i] {
                        self.nodes[i].tick(self.now);
                    }
                }
                self.deliver();
            }
        }
    }

    #[test]
    fn a_cluster_forms_loses_a_primary_and_takes_it_back() {
        let mut net = Net::new(3, 11);
        for i in 1..3 {
            net.nodes[i].meet(addr(0).bus());
        }
        net.deliver();
        net.run_ms(2_000);
        let epoch = net.nodes[0].create(net.now).expect("no table yet");
        assert_eq!(epoch, 1);
        assert!(net.nodes[0].create(net.now).is_err(), "a second CREATE");
        net.run_ms(1_000);
        for n in &net.nodes {
            let v = n.view();
            assert_eq!(v.epoch, 1);
            assert!(v.state_ok, "{:?}", v.nodes);
            assert_eq!(v.nodes.iter().map(|n| n.slots).sum::<usize>(), SLOTS);
        }
        // Node 2 stops: the others declare it dead and take its slots, at the next epoch.
        let gone = net.nodes[2].me();
        net.down[2] = true;
        net.run_ms(10_000);
        for n in &net.nodes[..2] {
            let v = n.view();
            assert_eq!(n.health(gone), Some(Health::Dead));
            assert_eq!(v.epoch, 2, "the table without the dead primary");
            assert!(v.state_ok);
            assert!(v.nodes.iter().all(|x| x.id != gone || x.slots == 0));
        }
        // It comes back: alive again, and it gets its share back under epoch 3.
        net.down[2] = false;
        net.run_ms(10_000);
        for n in &net.nodes {
            let v = n.view();
            assert_eq!(v.epoch, 3, "{:?}", n.me());
            assert!(v.state_ok);
            assert!(v.nodes.iter().all(|x| x.slots > 5000), "{:?}", v.nodes);
        }
    }

    #[test]
    fn a_lone_minority_does_not_take_the_slots() {
        let mut net = Net::new(3, 5);
        for i in 1..3 {
            net.nodes[i].meet(addr(0).bus());
        }
        net.run_ms(2_000);
        net.nodes[1].create(net.now).unwrap();
        net.run_ms(1_000);
        // Cut node 0 off from both others (both ways).
        net.cut[0] = true;
        net.run_ms(10_000);
        let lone = net.nodes[0].view();
        assert_eq!(lone.epoch, 1, "the minority changed nothing");
        assert!(!lone.state_ok, "the minority says the cluster is down");
        let majority = net.nodes[1].view();
        assert_eq!(majority.epoch, 2);
        assert!(majority.state_ok);
    }

    /// A dead primary whose replica cannot stand keeps its slots for the grace: with full
    /// coverage required the whole view is down meanwhile; without, only those slots are.
    #[test]
    fn without_full_coverage_a_dead_primary_downs_only_its_slots() {
        for require in [true, false] {
            let mut net = Net::new(4, 21);
            for n in &mut net.nodes {
                n.set_require_full_coverage(require);
            }
            for i in 1..4 {
                net.nodes[i].meet(addr(0).bus());
            }
            net.run_ms(2_000);
            net.nodes[0].create(net.now).unwrap();
            net.run_ms(1_000);
            // Node 3 follows node 0 but never synced (no offsets): it cannot stand.
            let dead = net.nodes[0].me();
            net.nodes[3].replicate(dead).unwrap();
            net.run_ms(3_000);
            net.down[0] = true;
            let health = |net: &Net| {
                let v = net.nodes[1].view();
                v.nodes
                    .iter()
                    .find(|n| n.id == dead)
                    .map(|n| (n.health, n.slots))
            };
            let give_up = net.now + 20_000;
            while health(&net).map(|h| h.0) != Some(Health::Dead) {
                assert!(net.now < give_up, "node 0 never declared dead");
                net.run_ms(10);
            }
            assert!(health(&net).unwrap().1 > 0, "the dead primary's slots wait");
            assert_eq!(net.nodes[1].view().state_ok, !require, "require: {require}");
            net.run_ms(FAILOVER_GRACE_MS + 2_000);
            let v = net.nodes[1].view();
            assert!(v.state_ok);
            assert_eq!(health(&net).unwrap().1, 0, "the others took the slots");
        }
    }

    #[test]
    fn the_saved_configuration_reads_back() {
        let mut net = Net::new(3, 3);
        for i in 1..3 {
            net.nodes[i].meet(addr(0).bus());
        }
        net.run_ms(2_000);
        net.nodes[0].create(net.now).unwrap();
        net.run_ms(1_000);
        let saved = net.nodes[1].saved();
        assert_eq!(saved.members.len(), 2);
        let text = saved.to_text();
        assert_eq!(Saved::parse(&text), Ok(saved));
        // With a replica and a vote remembered.
        let me = net.nodes[1].me();
        let other = net.nodes[2].me();
        net.nodes[1].replicate(other).unwrap();
        net.run_ms(3_000);
        let saved = net.nodes[1].saved();
        assert_eq!(saved.map.as_ref().unwrap().primary_of(me), Some(other));
        assert!(saved.voted >= saved.map.as_ref().unwrap().epoch);
        assert!(saved.to_text().contains(&format!("replica {me} {other}")));
        assert_eq!(Saved::parse(&saved.to_text()), Ok(saved));
        assert!(Saved::parse("tessera-cluster-config 1\nmyself zz 1\n").is_err());
        assert!(Saved::parse("something else\n").is_err());
        let no_table = format!("tessera-cluster-config 1\nmyself {} 4\n", net.nodes[0].me());
        assert_eq!(Saved::parse(&no_table).unwrap().map, None);
    }
}
