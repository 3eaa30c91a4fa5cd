//! The slot table: which primary owns each of Redis Cluster's 16384 slots, with the epoch of
//! the configuration, and how it changes when primaries come and go.
//!
//! The first placement is Jump Consistent Hashing (Lamping & Veach) of each slot over the
//! primaries sorted by id. JCH alone re-places keys only for a bucket added at the end;
//! removing a primary from the middle of the sorted list would shift every bucket after it.
//! So the table, not the formula, is the truth once made, and changes move only the slots
//! that must move:
//! - removing a primary hands each of its slots to the least-loaded primary left;
//! - adding one gives it its fair share, 16384/(n+1) slots, taken one at a time from the
//!   most-loaded primary; nothing else moves.
//!
//! Slots move in groups of [`GROUP_SLOTS`] contiguous slots (the logical buckets JCH places):
//! a table has at most 1024 runs, so CLUSTER SLOTS stays short and a client's slot table
//! small, while 1024 buckets still spread evenly over tens of primaries. Which of a
//! primary's groups go is decided by a hash of the group and the node arriving or leaving,
//! so the choice is spread over the slot space and the same inputs give the same table.
//!
//! A change gets the next epoch; the higher epoch wins wherever two tables meet.

use super::membership::NodeId;

pub const SLOTS: usize = 16384;
/// Contiguous slots placed and moved together.
pub const GROUP_SLOTS: usize = 16;
const GROUPS: usize = SLOTS / GROUP_SLOTS;
const _: () = assert!(SLOTS % GROUP_SLOTS == 0);

/// Jump Consistent Hashing: the bucket in `0..buckets` for `key`.
pub fn jump_hash(mut key: u64, buckets: usize) -> usize {
    let (mut b, mut j) = (-1i64, 0i64);
    while j < buckets as i64 {
        b = j;
        key = key.wrapping_mul(2862933555777941757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as usize
}

/// A slot's key for JCH: the slot number, mixed.
fn slot_key(slot: usize) -> u64 {
    let mut x = slot as u64 ^ 0x5851_f42d_4c95_7f2d;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A group and the slots in it that one node owns (all of them, unless a table from
/// elsewhere split the group).
type Unit = (usize, Vec<usize>);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotMap {
    pub epoch: u64,
    owners: Vec<NodeId>,
    /// Each replica and the primary it follows.
    replicas: std::collections::BTreeMap<NodeId, NodeId>,
}

impl SlotMap {
    /// The first table, epoch 1: JCH over the primaries sorted by id.
    pub fn initial(primaries: &[NodeId]) -> SlotMap {
        assert!(!primaries.is_empty(), "a cluster needs a primary");
        let sorted = sorted(primaries);
        SlotMap {
            epoch: 1,
            owners: (0..SLOTS)
                .map(|s| sorted[jump_hash(slot_key(s / GROUP_SLOTS), sorted.len())])
                .collect(),
            replicas: Default::default(),
        }
    }

    pub fn owner(&self, slot: usize) -> NodeId {
        self.owners[slot]
    }

    /// Each primary's slot count.
    pub fn counts(&self) -> std::collections::BTreeMap<NodeId, usize> {
        let mut c = std::collections::BTreeMap::new();
        for o in &self.owners {
            *c.entry(*o).or_default() += 1;
        }
        c
    }

    /// Contiguous ranges `(first, last, owner)`, as CLUSTER SLOTS lists them.
    pub fn ranges(&self) -> Vec<(usize, usize, NodeId)> {
        let mut out: Vec<(usize, usize, NodeId)> = Vec::new();
        for (s, o) in self.owners.iter().enumerate() {
            match out.last_mut() {
                Some((_, last, owner)) if owner == o && *last + 1 == s => *last = s,
                _ => out.push((s, s, *o)),
            }
        }
        out
    }

    /// The table without `gone`: each of its slots goes to the least-loaded of `remaining`
    /// (the primaries left); no other slot moves.
    pub fn without(&self, gone: NodeId, remaining: &[NodeId]) -> SlotMap {
        let sorted = sorted(remaining);
        assert!(!sorted.is_empty() && !sorted.contains(&gone));
        let held = self.counts();
        let mut counts: Vec<(usize, NodeId)> = sorted
            .iter()
            .map(|id| (held.get(id).copied().unwrap_or(0), *id))
            .collect();
        let mut orphans = self.units_of(gone);
        orphans.sort_by_cached_key(|u| (mix(slot_key(u.0), &gone), u.0));
        let mut owners = self.owners.clone();
        for (_, slots) in orphans {
            let least = counts.iter_mut().min().expect("a primary is left");
            least.0 += slots.len();
            for s in slots {
                owners[s] = least.1;
            }
        }
        // Its replicas follow nobody now (they get slots as any new node), and a replica
        // that goes is simply gone.
        let mut replicas = self.replicas.clone();
        replicas.retain(|r, p| *r != gone && *p != gone);
        SlotMap {
            epoch: self.epoch + 1,
            owners,
            replicas,
        }
    }

    /// The slots `id` owns, by group.
    fn units_of(&self, id: NodeId) -> Vec<Unit> {
        let mut units: Vec<Unit> = Vec::new();
        for g in 0..GROUPS {
            let slots: Vec<usize> = (g * GROUP_SLOTS..(g + 1) * GROUP_SLOTS)
                .filter(|&s| self.owners[s] == id)
                .collect();
            if !slots.is_empty() {
                units.push((g, slots));
            }
        }
        units
    }

    /// The table with `new` added to `primaries` (the current ones): it takes 16384/(n+1)
    /// slots, one at a time from the most-loaded primary; no other slot moves.
    pub fn with(&self, new: NodeId, primaries: &[NodeId]) -> SlotMap {
        let sorted = sorted(primaries);
        // Each primary's groups, in the order it gives them up (last first), and its count.
        let mut held: Vec<(NodeId, Vec<Unit>, usize)> = sorted
            .iter()
            .map(|id| {
                let mut units = self.units_of(*id);
                units.sort_by_cached_key(|u| std::cmp::Reverse((mix(slot_key(u.0), &new), u.0)));
                let count = units.iter().map(|u| u.1.len()).sum();
                (*id, units, count)
            })
            .collect();
        let mut owners = self.owners.clone();
        let share = SLOTS / (sorted.len() + 1);
        let mut moved = 0;
        // Whole groups, until the share is met to within half a group.
        while moved + GROUP_SLOTS / 2 < share {
            let most = held
                .iter_mut()
                .filter(|h| !h.1.is_empty())
                .max_by(|a, b| a.2.cmp(&b.2).then(b.0.cmp(&a.0)));
            let Some(most) = most else {
                break;
            };
            let (_, slots) = most.1.pop().expect("a primary with groups");
            most.2 -= slots.len();
            moved += slots.len();
            for s in slots {
                owners[s] = new;
            }
        }
        SlotMap {
            epoch: self.epoch + 1,
            owners,
            replicas: self.replicas.clone(),
        }
    }

    /// The primary `replica` follows, if it is a replica.
    pub fn primary_of(&self, replica: NodeId) -> Option<NodeId> {
        self.replicas.get(&replica).copied()
    }

    /// The replicas and whom they follow.
    pub fn replicas(&self) -> &std::collections::BTreeMap<NodeId, NodeId> {
        &self.replicas
    }

    /// The table with `replica` following `primary`: its slots, if it had any, go to the
    /// least loaded of `live` (the live primaries) but itself, and its own replicas follow
    /// `primary` too.
    pub fn with_replica(&self, replica: NodeId, primary: NodeId, live: &[NodeId]) -> SlotMap {
        let mut next = if self.counts().contains_key(&replica) {
            let others: Vec<NodeId> = live.iter().filter(|id| **id != replica).copied().collect();
            self.without(replica, &others)
        } else {
            SlotMap {
                epoch: self.epoch + 1,
                ..self.clone()
            }
        };
        for p in next.replicas.values_mut() {
            if *p == replica {
                *p = primary;
            }
        }
        next.replicas.insert(replica, primary);
        next
    }

    /// The table after `winner` (a replica of `failed`) took its place at `epoch`: it owns
    /// `failed`'s slots, and `failed` and the other replicas follow it.
    pub fn promote(&self, failed: NodeId, winner: NodeId, epoch: u64) -> SlotMap {
        let owners = self
            .owners
            .iter()
            .map(|o| if *o == failed { winner } else { *o })
            .collect();
        let mut replicas = self.replicas.clone();
        replicas.remove(&winner);
        for p in replicas.values_mut() {
            if *p == failed {
                *p = winner;
            }
        }
        replicas.insert(failed, winner);
        SlotMap {
            epoch,
            owners,
            replicas,
        }
    }

    /// The table's primaries and their replicas, as elections see them.
    pub fn roles(&self) -> super::election::Roles {
        let mut groups: std::collections::BTreeMap<NodeId, std::collections::BTreeSet<NodeId>> =
            self.counts()
                .keys()
                .map(|p| (*p, Default::default()))
                .collect();
        for (r, p) in &self.replicas {
            if let Some(g) = groups.get_mut(p) {
                g.insert(*r);
            }
        }
        super::election::Roles {
            epoch: self.epoch,
            groups,
        }
    }

    /// Takes `other` if it wins: the higher epoch, or at the same epoch (two coordinators
    /// on either side of a partition) the lower digest, so every node settles on one table.
    pub fn merge(&mut self, other: &SlotMap) -> bool {
        if other.beats(self) {
            *self = other.clone();
            true
        } else {
            false
        }
    }
}

impl SlotMap {
    /// Whether this table wins over `other` where they meet.
    pub fn beats(&self, other: &SlotMap) -> bool {
        (self.epoch, std::cmp::Reverse(self.digest()))
            > (other.epoch, std::cmp::Reverse(other.digest()))
    }

    /// A checksum of the owners, for telling two tables of one epoch apart.
    pub fn digest(&self) -> u32 {
        let mut h = crc32fast::Hasher::new();
        for o in &self.owners {
            h.update(&o.0);
        }
        for (r, p) in &self.replicas {
            h.update(&r.0);
            h.update(&p.0);
        }
        h.finalize()
    }

    /// The table as the bus carries it: its nodes, and runs of slots (first, last, node).
    pub fn to_wire(&self) -> (u64, Vec<NodeId>, Vec<(u16, u16, u32)>) {
        let mut nodes: Vec<NodeId> = Vec::new();
        let runs = self
            .ranges()
            .into_iter()
            .map(|(a, b, owner)| {
                let i = match nodes.iter().position(|n| *n == owner) {
                    Some(i) => i,
                    None => {
                        nodes.push(owner);
                        nodes.len() - 1
                    }
                };
                (a as u16, b as u16, i as u32)
            })
            .collect();
        (self.epoch, nodes, runs)
    }

    /// A table from the bus; refused unless its runs cover every slot once, in order, and
    /// name nodes it lists.
    pub fn from_wire(
        epoch: u64,
        nodes: &[NodeId],
        runs: &[(u16, u16, u32)],
    ) -> Result<SlotMap, String> {
        Self::from_wire_with_replicas(epoch, nodes, runs, &[])
    }

    /// A table from the bus, with its replicas as (replica, primary); a replica must follow
    /// a node that owns slots and own none itself.
    pub fn from_wire_with_replicas(
        epoch: u64,
        nodes: &[NodeId],
        runs: &[(u16, u16, u32)],
        replicas: &[(NodeId, NodeId)],
    ) -> Result<SlotMap, String> {
        let mut map = Self::owners_from_wire(epoch, nodes, runs)?;
        let counts = map.counts();
        for (r, p) in replicas {
            if !counts.contains_key(p) || counts.contains_key(r) || map.replicas.contains_key(r) {
                return Err(format!("a replica {r} of {p} that does not fit the table"));
            }
            map.replicas.insert(*r, *p);
        }
        Ok(map)
    }

    fn owners_from_wire(
        epoch: u64,
        nodes: &[NodeId],
        runs: &[(u16, u16, u32)],
    ) -> Result<SlotMap, String> {
        let mut owners = Vec::with_capacity(SLOTS);
        for &(a, b, i) in runs {
            if a as usize != owners.len() || b < a || b as usize >= SLOTS {
                return Err(format!("a run {a}-{b} where slot {} was due", owners.len()));
            }
            let node = *nodes
                .get(i as usize)
                .ok_or_else(|| format!("a run names node {i} of {}", nodes.len()))?;
            owners.extend(std::iter::repeat_n(node, (b - a) as usize + 1));
        }
        if owners.len() != SLOTS {
            return Err(format!(
                "the runs cover {} slots, not {SLOTS}",
                owners.len()
            ));
        }
        Ok(SlotMap {
            epoch,
            owners,
            replicas: Default::default(),
        })
    }
}

/// A slot key mixed with a node's id: the order a change takes a primary's slots in.
fn mix(key: u64, id: &NodeId) -> u64 {
    let mut h = key;
    for chunk in id.0.chunks(8) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        h = slot_key((h ^ u64::from_le_bytes(b)) as usize);
    }
    h
}

fn sorted(ids: &[NodeId]) -> Vec<NodeId> {
    let mut v = ids.to_vec();
    v.sort();
    v.dedup();
    v
}

/// The node that proposes map changes: the live primary with the lowest id.
pub fn coordinator(live_primaries: &[NodeId]) -> Option<NodeId> {
    live_primaries.iter().min().copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_shards::evict::Rng;

    fn ids(rng: &mut Rng, n: usize) -> Vec<NodeId> {
        (0..n).map(|_| NodeId::random(rng)).collect()
    }

    /// Every primary holds its share within `tolerance` (a fraction of the share).
    fn balanced(map: &SlotMap, primaries: &[NodeId], tolerance: f64) {
        let counts = map.counts();
        assert_eq!(counts.len(), primaries.len(), "every primary holds slots");
        let share = SLOTS as f64 / primaries.len() as f64;
        for (id, c) in counts {
            assert!(primaries.contains(&id));
            assert!(
                (c as f64 - share).abs() <= share * tolerance,
                "{id:?} holds {c}, share {share:.0}"
            );
        }
    }

    #[test]
    fn jump_hash_matches_the_paper_and_spreads_evenly() {
        // Values from the reference implementation.
        assert_eq!(jump_hash(0, 1), 0);
        assert_eq!(jump_hash(0xDEAD_BEEF, 1), 0);
        let mut counts = [0usize; 10];
        for k in 0..100_000u64 {
            counts[jump_hash(slot_key(k as usize), 10)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
        // Growing from n to n+1 buckets moves keys only into the new bucket.
        for k in 0..10_000u64 {
            let (a, b) = (jump_hash(k, 7), jump_hash(k, 8));
            assert!(a == b || b == 7);
        }
    }

    #[test]
    fn initial_placement_covers_every_slot_evenly() {
        let mut rng = Rng::new(1);
        for n in [1, 3, 6, 50] {
            let p = ids(&mut rng, n);
            let map = SlotMap::initial(&p);
            assert_eq!(map.epoch, 1);
            balanced(&map, &p, 0.15 + 0.02 * n as f64);
            // The order the primaries are given in does not matter.
            let mut rev = p.clone();
            rev.reverse();
            assert_eq!(SlotMap::initial(&rev), map);
            let covered: usize = map.ranges().iter().map(|(a, b, _)| b - a + 1).sum();
            assert_eq!(covered, SLOTS);
        }
    }

    #[test]
    fn removing_a_primary_moves_only_its_slots() {
        let mut rng = Rng::new(2);
        let p = ids(&mut rng, 6);
        let map = SlotMap::initial(&p);
        let gone = p[2];
        let rest: Vec<NodeId> = p.iter().copied().filter(|x| *x != gone).collect();
        let next = map.without(gone, &rest);
        assert_eq!(next.epoch, 2);
        for s in 0..SLOTS {
            if map.owner(s) != gone {
                assert_eq!(next.owner(s), map.owner(s), "slot {s} moved");
            }
        }
        balanced(&next, &rest, 0.25);
    }

    #[test]
    fn adding_a_primary_moves_only_its_fair_share() {
        let mut rng = Rng::new(3);
        let p = ids(&mut rng, 5);
        let map = SlotMap::initial(&p);
        let new = NodeId::random(&mut rng);
        let next = map.with(new, &p);
        let moved = (0..SLOTS)
            .filter(|&s| next.owner(s) != map.owner(s))
            .count();
        assert!((0..SLOTS).all(|s| next.owner(s) == map.owner(s) || next.owner(s) == new));
        assert!(
            moved.abs_diff(SLOTS / 6) <= GROUP_SLOTS / 2,
            "{moved} moved"
        );
        // Groups stay whole: the table has at most one run per group.
        assert!(next.ranges().len() <= SLOTS / GROUP_SLOTS);
        let mut all = p.clone();
        all.push(new);
        balanced(&next, &all, 0.25);
    }

    /// Random joins and leaves (seeded) keep every slot owned by a current primary, the
    /// table near balance, and each change's moves to what it must.
    #[test]
    fn churn_keeps_coverage_and_balance() {
        for seed in 1..=5 {
            let mut rng = Rng::new(seed);
            let mut p = ids(&mut rng, 4);
            let mut map = SlotMap::initial(&p);
            for step in 0..40 {
                if p.len() > 2 && rng.below(2) == 0 {
                    let gone = p.remove(rng.below(p.len()));
                    let next = map.without(gone, &p);
                    let moved = (0..SLOTS)
                        .filter(|&s| next.owner(s) != map.owner(s))
                        .count();
                    assert_eq!(moved, map.counts()[&gone], "seed {seed} step {step}");
                    map = next;
                } else if p.len() < 12 {
                    let new = NodeId::random(&mut rng);
                    map = map.with(new, &p);
                    p.push(new);
                }
                balanced(&map, &p, 0.2);
            }
        }
    }

    #[test]
    fn replicas_join_follow_and_take_over() {
        let mut rng = Rng::new(11);
        let p = ids(&mut rng, 4);
        let map = SlotMap::initial(&p);
        // p[3] becomes p[0]'s replica: its slots go to the others.
        let m = map.with_replica(p[3], p[0], &p);
        assert_eq!(m.epoch, 2);
        assert!(!m.counts().contains_key(&p[3]));
        assert_eq!(m.primary_of(p[3]), Some(p[0]));
        let roles = m.roles();
        assert_eq!(roles.groups.len(), 3);
        assert!(roles.groups[&p[0]].contains(&p[3]));
        // Promotion: the replica owns exactly what its primary owned; the old primary follows.
        let before = m.counts()[&p[0]];
        let after = m.promote(p[0], p[3], 7);
        assert_eq!(after.epoch, 7);
        assert_eq!(after.counts()[&p[3]], before);
        assert!(!after.counts().contains_key(&p[0]));
        assert_eq!(after.primary_of(p[0]), Some(p[3]));
        assert_eq!(after.primary_of(p[3]), None);
        // Across the bus with its replicas; a replica that owns slots is refused.
        let (epoch, nodes, runs) = after.to_wire();
        let pairs: Vec<(NodeId, NodeId)> = after.replicas().iter().map(|(r, q)| (*r, *q)).collect();
        assert_eq!(
            SlotMap::from_wire_with_replicas(epoch, &nodes, &runs, &pairs),
            Ok(after.clone())
        );
        assert!(SlotMap::from_wire_with_replicas(epoch, &nodes, &runs, &[(p[1], p[3])]).is_err());
        // Two tables that differ only in replicas have different digests.
        assert_ne!(m.digest(), map.with_replica(p[3], p[1], &p).digest());
        // A gone primary's replicas follow nobody.
        let gone = m.without(p[0], &[p[1], p[2]]);
        assert_eq!(gone.primary_of(p[3]), None);
    }

    #[test]
    fn a_table_crosses_the_bus_and_a_bad_one_is_refused() {
        let mut rng = Rng::new(5);
        let p = ids(&mut rng, 7);
        let map = SlotMap::initial(&p).without(p[3], &[p[0], p[1], p[2], p[4], p[5], p[6]]);
        let (epoch, nodes, runs) = map.to_wire();
        assert_eq!(SlotMap::from_wire(epoch, &nodes, &runs), Ok(map));
        let mut gap = runs.clone();
        gap.remove(1);
        assert!(SlotMap::from_wire(epoch, &nodes, &gap).is_err());
        let mut short = runs.clone();
        short.pop();
        assert!(SlotMap::from_wire(epoch, &nodes, &short).is_err());
        let mut unknown = runs;
        unknown[0].2 = 99;
        assert!(SlotMap::from_wire(epoch, &nodes, &unknown).is_err());
    }

    #[test]
    fn the_higher_epoch_wins_and_the_lowest_live_id_coordinates() {
        let mut rng = Rng::new(4);
        let p = ids(&mut rng, 3);
        let mut a = SlotMap::initial(&p);
        let b = a.with(NodeId::random(&mut rng), &p);
        assert!(!b.clone().merge(&a));
        assert!(a.merge(&b));
        assert_eq!(a, b);
        assert_eq!(coordinator(&p), p.iter().min().copied());
        assert_eq!(coordinator(&[]), None);
    }
}
