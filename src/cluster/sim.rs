//! A seeded simulation of many nodes running [`Membership`] over a network that delays,
//! loses and partitions messages, with simulated time (1 ms steps, a tick every
//! `TICK_MS`). The same seed gives the same run; a failing test prints its seed.

use super::map::SlotMap;
use super::membership::{Addr, Config, Event, Health, Membership, Message, NodeId, Update};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use tessera_shards::evict::Rng;

/// Each node's control loop ticks this often (simulated ms).
const TICK_MS: u64 = 10;

pub struct Net {
    /// One-way delay: at least this, plus an exponential jitter of this mean (ms).
    pub delay_ms: u64,
    pub jitter_ms: f64,
    /// Probability that a message is lost.
    pub loss: f64,
}

impl Default for Net {
    fn default() -> Self {
        Net {
            delay_ms: 1,
            jitter_ms: 2.0,
            loss: 0.0,
        }
    }
}

/// What travels between simulated nodes: membership messages, and slot-table fetches
/// (which the control core's driver does beside the state machine).
#[derive(Clone, Debug)]
pub enum Wire {
    Member(Message),
    MapRequest,
    Map(Rc<SlotMap>),
}

pub struct Sim {
    pub nodes: Vec<Membership>,
    pub ids: Vec<NodeId>,
    index: HashMap<NodeId, usize>,
    pub now: u64,
    rng: Rng,
    pub net: Net,
    /// Crashed nodes neither tick nor receive.
    pub down: Vec<bool>,
    /// Each node's side of a partition: messages between sides are dropped.
    pub side: Vec<u8>,
    /// In flight, by delivery time: (to, from, message).
    queue: BTreeMap<u64, Vec<(usize, usize, Wire)>>,
    /// Each node's slot table.
    pub maps: Vec<Rc<SlotMap>>,
    /// Every belief change: (observer, event).
    pub events: Vec<(usize, Event)>,
    pub messages: u64,
}

/// Simulated node `i`'s address: 127.0.0.1, client port 10000 + i.
fn sim_addr(i: usize) -> Addr {
    let port = 10_000 + i as u16;
    Addr::new(std::net::Ipv4Addr::LOCALHOST.into(), port, port + 10_000)
}

impl Sim {
    /// `n` nodes that already know each other as alive (as nodes restarting from a saved
    /// cluster configuration do).
    pub fn formed(n: usize, cfg: Config, net: Net, seed: u64) -> Sim {
        let mut sim = Sim::empty(n, cfg, net, seed);
        for i in 0..n {
            for j in 0..n {
                let u = Update {
                    id: sim.ids[j],
                    incarnation: 0,
                    health: Health::Alive,
                    addr: sim_addr(j),
                };
                sim.nodes[i].remember(u, 0);
            }
        }
        sim
    }

    /// `n` nodes that know nobody yet.
    pub fn empty(n: usize, cfg: Config, net: Net, seed: u64) -> Sim {
        let mut rng = Rng::new(seed);
        let ids: Vec<NodeId> = (0..n).map(|_| NodeId::random(&mut rng)).collect();
        let nodes = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let mut m = Membership::new(*id, sim_addr(i), cfg, rng.next_u64(), 0);
                m.set_map_epoch(1);
                m
            })
            .collect();
        let map = Rc::new(SlotMap::initial(&ids));
        Sim {
            maps: vec![map; n],
            index: ids.iter().enumerate().map(|(i, id)| (*id, i)).collect(),
            nodes,
            ids,
            now: 0,
            rng,
            net,
            down: vec![false; n],
            side: vec![0; n],
            queue: BTreeMap::new(),
            events: Vec::new(),
            messages: 0,
        }
    }

    fn post(&mut self, from: usize, to: usize, wire: Wire) {
        self.messages += 1;
        if self.side[from] != self.side[to] || self.rng.next_f64() < self.net.loss {
            return;
        }
        let jitter = -self.net.jitter_ms * (1.0 - self.rng.next_f64()).ln();
        let at = self.now + self.net.delay_ms + jitter as u64;
        self.queue.entry(at).or_default().push((to, from, wire));
    }

    fn flush(&mut self, from: usize) {
        let out = self.nodes[from].take_outgoing();
        for o in out {
            let Some(&to) = self.index.get(&o.to) else {
                continue;
            };
            self.post(from, to, Wire::Member(o.msg));
        }
        if let Some((holder, _)) = self.nodes[from].take_map_news(self.now) {
            if let Some(&to) = self.index.get(&holder) {
                self.post(from, to, Wire::MapRequest);
            }
        }
        for e in self.nodes[from].take_events() {
            self.events.push((from, e));
        }
    }

    /// Runs until simulated time `until_ms`.
    pub fn run_until(&mut self, until_ms: u64) {
        while self.now < until_ms {
            self.now += 1;
            if let Some(batch) = self.queue.remove(&self.now) {
                for (to, from, wire) in batch {
                    if self.down[to] {
                        continue;
                    }
                    match wire {
                        Wire::Member(msg) => {
                            let id = self.ids[from];
                            self.nodes[to].receive(id, msg, self.now);
                        }
                        Wire::MapRequest => {
                            let map = self.maps[to].clone();
                            self.post(to, from, Wire::Map(map));
                        }
                        Wire::Map(map) => {
                            if map.epoch > self.maps[to].epoch {
                                self.nodes[to].set_map_epoch(map.epoch);
                                self.maps[to] = map;
                            }
                        }
                    }
                    self.flush(to);
                }
            }
            if self.now % TICK_MS == 0 {
                for i in 0..self.nodes.len() {
                    if !self.down[i] {
                        self.nodes[i].tick(self.now);
                        self.flush(i);
                    }
                }
            }
        }
    }

    /// Runs until `done(self)` holds (checked every tick) or `limit_ms` passes; returns
    /// whether it held.
    pub fn run_while_not(&mut self, limit_ms: u64, done: impl Fn(&Sim) -> bool) -> bool {
        let end = self.now + limit_ms;
        while self.now < end {
            if done(self) {
                return true;
            }
            let next = self.now + TICK_MS;
            self.run_until(next);
        }
        done(self)
    }

    /// Whether every live node believes `id` has `health`.
    pub fn all_see(&self, id: usize, health: Health) -> bool {
        (0..self.nodes.len())
            .filter(|&i| i != id && !self.down[i])
            .all(|i| self.nodes[i].health(self.ids[id]) == Some(health))
    }

    /// The first time, at or after `since`, a live node other than `about` came to
    /// believe `about` has `health`.
    pub fn first(&self, about: usize, health: Health, since: u64) -> Option<u64> {
        self.events
            .iter()
            .filter(|(obs, e)| {
                *obs != about && e.id == self.ids[about] && e.health == health && e.at_ms >= since
            })
            .map(|(_, e)| e.at_ms)
            .min()
    }
}

/// Forms `n` nodes, lets them run, has the coordinator (the lowest id) publish a new table
/// without one primary, and returns how long until every node holds it (ms).
pub fn map_convergence(n: usize, net: Net, seed: u64) -> u64 {
    let mut sim = Sim::formed(n, Config::default(), net, seed);
    sim.run_until(3_000);
    let lowest = super::map::coordinator(&sim.ids).expect("nodes");
    let coordinator = sim.index[&lowest];
    let gone = (coordinator + 1) % n;
    let rest: Vec<NodeId> = (0..n).filter(|&i| i != gone).map(|i| sim.ids[i]).collect();
    let next = Rc::new(sim.maps[coordinator].without(sim.ids[gone], &rest));
    let epoch = next.epoch;
    sim.maps[coordinator] = next;
    sim.nodes[coordinator].set_map_epoch(epoch);
    let start = sim.now;
    let done = sim.run_while_not(60_000, |s| s.maps.iter().all(|m| m.epoch == epoch));
    assert!(
        done,
        "seed {seed}: {n} nodes did not converge on the new table in 60 s"
    );
    sim.now - start
}

/// Times from a crash to: the first suspicion, the first `dead`, every live node seeing
/// `dead` (ms).
#[derive(Debug, Clone, Copy)]
pub struct Detection {
    pub first_pdead_ms: u64,
    pub first_dead_ms: u64,
    pub all_dead_ms: u64,
}

/// Forms `n` nodes, lets them run `warm_ms` (links learn their delays), crashes one and
/// measures how long the others take to see it dead.
pub fn detection(n: usize, cfg: Config, net: Net, seed: u64, warm_ms: u64) -> Detection {
    let mut sim = Sim::formed(n, cfg, net, seed);
    sim.run_until(warm_ms);
    let victim = (seed as usize) % n;
    let crashed = sim.now;
    sim.down[victim] = true;
    let seen = sim.run_while_not(60_000, |s| s.all_see(victim, Health::Dead));
    assert!(
        seen,
        "seed {seed}: {n} nodes did not all see the crash within 60 s"
    );
    Detection {
        first_pdead_ms: sim.first(victim, Health::Pdead, crashed).unwrap() - crashed,
        first_dead_ms: sim.first(victim, Health::Dead, crashed).unwrap() - crashed,
        all_dead_ms: sim.now - crashed,
    }
}

/// Runs `n` healthy nodes for `run_ms` over a lossy network; returns how many suspicions
/// (`pdead`) and `dead` verdicts of nodes that were alive all along there were (each
/// counted once, however many nodes heard of it), and the messages sent.
pub fn false_alarms(
    n: usize,
    cfg: Config,
    loss: f64,
    seed: u64,
    run_ms: u64,
) -> (usize, usize, u64) {
    let net = Net {
        loss,
        ..Net::default()
    };
    let mut sim = Sim::formed(n, cfg, net, seed);
    sim.run_until(run_ms);
    let distinct = |health: Health| {
        sim.events
            .iter()
            .filter(|(_, e)| e.health == health)
            .map(|(_, e)| (e.id, e.incarnation))
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    (
        distinct(Health::Pdead),
        distinct(Health::Dead),
        sim.messages,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeds() -> impl Iterator<Item = u64> {
        1..=3
    }

    fn check_detection(n: usize, warm_ms: u64) -> Vec<Detection> {
        let mut all = Vec::new();
        for seed in seeds() {
            let d = detection(n, Config::default(), Net::default(), seed, warm_ms);
            assert!(
                d.all_dead_ms <= 5_000,
                "seed {seed}: {n} nodes took {} ms to all see a crashed node dead",
                d.all_dead_ms
            );
            assert!(d.first_pdead_ms <= d.first_dead_ms);
            all.push(d);
        }
        eprintln!("{n} nodes: {all:?}");
        all
    }

    #[test]
    fn five_nodes_see_a_crash_within_five_seconds() {
        check_detection(5, 5_000);
    }

    #[test]
    fn fifty_nodes_see_a_crash_within_five_seconds() {
        check_detection(50, 5_000);
    }

    #[test]
    fn five_hundred_nodes_see_a_crash_within_five_seconds() {
        check_detection(500, 3_000);
    }

    /// At 1% message loss, indirect probes keep a lost ping from making a suspect most of
    /// the time, and refutation keeps every suspicion from becoming `dead`.
    #[test]
    fn one_percent_loss_gives_no_false_dead() {
        for (n, run_ms) in [(5, 600_000), (50, 120_000), (500, 20_000)] {
            for seed in seeds() {
                let (pdead, dead, _) = false_alarms(n, Config::default(), 0.01, seed, run_ms);
                assert_eq!(
                    dead, 0,
                    "seed {seed}: {n} nodes, {pdead} suspicions, {dead} false dead"
                );
            }
        }
    }

    /// Without indirect probes the same loss makes many suspects: the indirect probes are
    /// what keeps them away.
    #[test]
    fn indirect_probes_are_what_prevents_suspicion() {
        let without = Config {
            indirect_probes: 0,
            ..Config::default()
        };
        let (with_k, _, _) = false_alarms(50, Config::default(), 0.01, 7, 120_000);
        let (without_k, _, _) = false_alarms(50, without, 0.01, 7, 120_000);
        assert!(
            without_k > 10 * with_k.max(1),
            "suspicions with indirect probes {with_k}, without {without_k}"
        );
    }

    /// Nodes that know only a seed learn the whole cluster.
    #[test]
    fn nodes_join_through_a_seed() {
        for seed in seeds() {
            let n = 20;
            let mut sim = Sim::empty(n, Config::default(), Net::default(), seed);
            for i in 1..n {
                let seed_id = sim.ids[0];
                sim.nodes[i].join(seed_id, sim_addr(0), 0);
                sim.flush(i);
            }
            let all_know = |s: &Sim| {
                (0..n).all(|i| {
                    (0..n).all(|j| i == j || s.nodes[i].health(s.ids[j]) == Some(Health::Alive))
                })
            };
            assert!(
                sim.run_while_not(30_000, all_know),
                "seed {seed}: the cluster did not converge in 30 s"
            );
            // Every node knows where every other lives, as that node announced it.
            for i in 0..n {
                for j in (0..n).filter(|&j| j != i) {
                    assert_eq!(
                        sim.nodes[i].addr_of(sim.ids[j]),
                        Some(sim_addr(j)),
                        "seed {seed}: node {i}'s address for node {j}"
                    );
                }
            }
            eprintln!("join of {n} nodes through one seed: {} ms", sim.now);
        }
    }

    /// A partition makes each side see the other dead; once it heals, everyone is alive
    /// again everywhere (the dead-member probes find the other side).
    #[test]
    fn a_partition_splits_the_view_and_heals() {
        for seed in seeds() {
            let n = 30;
            let mut sim = Sim::formed(n, Config::default(), Net::default(), seed);
            sim.run_until(3_000);
            for i in 0..n / 2 {
                sim.side[i] = 1;
            }
            let split = |s: &Sim| {
                (0..n).all(|i| {
                    (0..n).all(|j| {
                        let want = if s.side[i] == s.side[j] {
                            Health::Alive
                        } else {
                            Health::Dead
                        };
                        i == j || s.nodes[i].health(s.ids[j]) == Some(want)
                    })
                })
            };
            assert!(
                sim.run_while_not(20_000, split),
                "seed {seed}: no clean split"
            );
            let split_at = sim.now;
            sim.side = vec![0; n];
            let healed = |s: &Sim| {
                (0..n).all(|i| {
                    (0..n).all(|j| i == j || s.nodes[i].health(s.ids[j]) == Some(Health::Alive))
                })
            };
            assert!(
                sim.run_while_not(60_000, healed),
                "seed {seed}: did not heal in 60 s"
            );
            eprintln!(
                "partition healed {} ms after the network did",
                sim.now - split_at
            );
        }
    }

    /// A new slot table published by the coordinator reaches every node within a few
    /// probe rounds, with and without loss.
    #[test]
    fn a_map_change_converges() {
        for n in [5, 50, 500] {
            for seed in seeds() {
                let ms = map_convergence(n, Net::default(), seed);
                let lossy = map_convergence(
                    n,
                    Net {
                        loss: 0.01,
                        ..Net::default()
                    },
                    seed,
                );
                assert!(
                    ms <= 5_000 && lossy <= 5_000,
                    "seed {seed}: {n} nodes: {ms} / {lossy} ms"
                );
                eprintln!("map change, {n} nodes: {ms} ms, at 1% loss {lossy} ms");
            }
        }
    }

    /// A crashed node that comes back (same id, as after a restart that kept its
    /// configuration) refutes its death and is alive everywhere again.
    #[test]
    fn a_restarted_node_rejoins() {
        let n = 20;
        let mut sim = Sim::formed(n, Config::default(), Net::default(), 11);
        sim.run_until(3_000);
        sim.down[5] = true;
        assert!(sim.run_while_not(10_000, |s| s.all_see(5, Health::Dead)));
        sim.down[5] = false;
        assert!(sim.run_while_not(20_000, |s| s.all_see(5, Health::Alive)));
        assert!(sim.nodes[5].incarnation() > 0);
    }

    /// Figures for the issue note: `cargo test --release --lib membership_figures --
    /// --ignored --nocapture`.
    #[test]
    #[ignore]
    fn membership_figures() {
        for n in [5usize, 50, 500] {
            let mut d = Vec::new();
            for seed in 1..=10 {
                d.push(detection(n, Config::default(), Net::default(), seed, 5_000));
            }
            let avg = |f: fn(&Detection) -> u64| d.iter().map(f).sum::<u64>() / d.len() as u64;
            let max = |f: fn(&Detection) -> u64| d.iter().map(f).max().unwrap();
            eprintln!(
                "{n} nodes, 10 seeds: first pdead avg {} max {} ms; first dead avg {} max {} ms; all dead avg {} max {} ms",
                avg(|x| x.first_pdead_ms),
                max(|x| x.first_pdead_ms),
                avg(|x| x.first_dead_ms),
                max(|x| x.first_dead_ms),
                avg(|x| x.all_dead_ms),
                max(|x| x.all_dead_ms)
            );
        }
        for n in [5usize, 50, 500] {
            let times: Vec<u64> = (1..=10)
                .map(|seed| map_convergence(n, Net::default(), seed))
                .collect();
            eprintln!(
                "{n} nodes, 10 seeds: a map change reaches every node in avg {} max {} ms",
                times.iter().sum::<u64>() / 10,
                times.iter().max().unwrap()
            );
        }
        for (n, run_ms) in [(5usize, 3_600_000u64), (50, 3_600_000), (500, 600_000)] {
            let (pdead, dead, messages) = false_alarms(n, Config::default(), 0.01, 1, run_ms);
            let hours = run_ms as f64 / 3_600_000.0;
            eprintln!(
                "{n} nodes at 1% loss, {hours} h simulated: {:.1} suspicions/h, {dead} false dead, {:.0} messages/s per node",
                pdead as f64 / hours,
                messages as f64 / (run_ms as f64 / 1000.0) / n as f64
            );
        }
    }
}
