//! Failover elections in cache mode, without I/O: who may stand, who votes for whom, and
//! when a candidate has won.
//!
//! Every change of the cluster's table is made under an epoch that a majority of the
//! table's primaries granted, and a node grants an epoch at most once:
//! - A ballot names the epoch it wants (`epoch`) and the table epoch it starts from
//!   (`base`). A primary grants it only if `base` is its own table's epoch and `epoch` is
//!   above every epoch it has granted or adopted ([`Voter::voted`]); granting raises that
//!   mark. So two tables of one epoch would need two majorities of the same primaries, each
//!   granting once: there is at most one table per epoch, hence never two primaries for a
//!   slot in one epoch.
//! - A failover ballot also names the failed primary and the candidate's applied offsets
//!   (one per shard of the failed primary). Primaries grant it only if they see the failed
//!   primary down (or the ballot is a planned switchover) and the candidate is its replica.
//! - The failed primary's other replicas answer too, and grant only a candidate whose
//!   offsets are at least their own on every shard. A candidate wins with a majority of the
//!   primaries (the failed one counted in the total) and the grant of every sibling it sees
//!   alive, so it never has fewer writes than a replica that voted for it.
//!
//! Candidates stand in order of their offsets: each waits `delay + jitter + rank * rank_ms`
//! after seeing its primary dead, where rank counts the siblings known to be further
//! ahead, so the most up-to-date replica usually asks first and its siblings grant it. A
//! replica that has never completed a full sync, or was out of the in-sync set, does not
//! stand. An election not won within `timeout_ms` is tried again under a higher epoch.

use super::membership::NodeId;
use std::collections::{BTreeMap, BTreeSet};
use tessera_shards::evict::Rng;

/// Which replicas follow which primary, under which epoch (the replica half of the table).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Roles {
    pub epoch: u64,
    /// Each primary and its replicas.
    pub groups: BTreeMap<NodeId, BTreeSet<NodeId>>,
}

impl Roles {
    pub fn primary_of(&self, replica: NodeId) -> Option<NodeId> {
        self.groups
            .iter()
            .find(|(_, r)| r.contains(&replica))
            .map(|(p, _)| *p)
    }

    pub fn is_primary(&self, id: NodeId) -> bool {
        self.groups.contains_key(&id)
    }

    /// The table after `winner` took over from `failed` at `epoch`: the winner is the
    /// primary, the failed primary and the other replicas follow it.
    pub fn promote(&self, failed: NodeId, winner: NodeId, epoch: u64) -> Roles {
        let mut groups = self.groups.clone();
        let mut replicas = groups.remove(&failed).unwrap_or_default();
        replicas.remove(&winner);
        replicas.insert(failed);
        groups.insert(winner, replicas);
        Roles { epoch, groups }
    }
}

/// Whether a replica that applied offsets `a` is at least as far as one that applied `b`.
/// Offsets are per shard of the primary, and two replicas may each be ahead on a different
/// shard; they are ordered by the records applied in all, so that some replica always
/// qualifies (whichever wins, the other's extra records on its shard are lost).
pub fn at_least(a: &[u64], b: &[u64]) -> bool {
    a.len() == b.len() && a.iter().sum::<u64>() >= b.iter().sum::<u64>()
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Ballot {
    pub epoch: u64,
    pub base: u64,
    pub failed: NodeId,
    pub candidate: NodeId,
    pub offsets: Vec<u64>,
    /// A planned switchover (CLUSTER FAILOVER [FORCE]): granted while the primary lives.
    pub planned: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Vote {
    pub epoch: u64,
    pub granted: bool,
    /// The voter's highest granted or adopted epoch, so a refused candidate asks above it.
    pub voted: u64,
    /// A sibling refused because it has applied more than the candidate.
    pub ahead: bool,
}

/// A node's voting memory.
#[derive(Clone, Debug, Default)]
pub struct Voter {
    /// The highest epoch granted or adopted.
    pub voted: u64,
    /// The last grant: asked again (its answer lost), the same ballot is granted again.
    pub granted: Option<(u64, NodeId)>,
}

impl Voter {
    /// Notes a table this node adopted.
    pub fn adopted(&mut self, epoch: u64) {
        self.voted = self.voted.max(epoch);
    }

    /// Answers a ballot. `roles` is this node's table, `failed_down` whether it sees the
    /// failed primary down, `offsets` what this node has applied from it (a sibling).
    pub fn consider(
        &mut self,
        me: NodeId,
        b: &Ballot,
        roles: &Roles,
        failed_down: bool,
        offsets: Option<&[u64]>,
    ) -> Vote {
        let deny = |voted, ahead| Vote {
            epoch: b.epoch,
            granted: false,
            voted,
            ahead,
        };
        let candidate_follows = roles
            .groups
            .get(&b.failed)
            .is_some_and(|r| r.contains(&b.candidate));
        if roles.is_primary(me) && me != b.failed {
            if self.granted == Some((b.epoch, b.candidate)) && self.voted == b.epoch {
                return Vote {
                    epoch: b.epoch,
                    granted: true,
                    voted: self.voted,
                    ahead: false,
                };
            }
            if b.base != roles.epoch
                || b.epoch <= self.voted
                || !candidate_follows
                || !(failed_down || b.planned)
            {
                return deny(self.voted, false);
            }
            self.voted = b.epoch;
            self.granted = Some((b.epoch, b.candidate));
            return Vote {
                epoch: b.epoch,
                granted: true,
                voted: self.voted,
                ahead: false,
            };
        }
        if roles.primary_of(me) == Some(b.failed) && me != b.candidate {
            let ahead = offsets.is_some_and(|mine| !at_least(&b.offsets, mine));
            return Vote {
                epoch: b.epoch,
                granted: candidate_follows && !ahead,
                voted: self.voted,
                ahead,
            };
        }
        deny(self.voted, false)
    }
}

#[derive(Clone, Copy, Debug)]
pub struct ElectionConfig {
    /// After seeing its primary dead, a replica waits this long before standing (ms)…
    pub delay_ms: u64,
    /// …plus a random part up to this (ms)…
    pub jitter_ms: u64,
    /// …plus this per sibling known to be further ahead (ms).
    pub rank_ms: u64,
    /// Voters that have not answered are asked again this often (ms).
    pub resend_ms: u64,
    /// An election not won by then is tried again under a higher epoch (ms).
    pub timeout_ms: u64,
}

impl Default for ElectionConfig {
    fn default() -> Self {
        ElectionConfig {
            delay_ms: 100,
            jitter_ms: 100,
            rank_ms: 300,
            resend_ms: 100,
            timeout_ms: 1000,
        }
    }
}

/// What a replica knows when it considers standing.
pub struct Standing<'a> {
    pub roles: &'a Roles,
    /// Whether this node sees `id` down (dead).
    pub down: &'a dyn Fn(NodeId) -> bool,
    /// What this node has applied from its primary; `None` before its first full sync.
    pub offsets: Option<&'a [u64]>,
    /// Whether it was in the primary's in-sync set when it last heard from it.
    pub in_sync: bool,
    /// Siblings known to be further ahead (offsets from gossip), for the rank delay.
    pub rank: usize,
}

#[derive(Debug)]
enum Phase {
    Idle,
    /// Will stand at `at` against `failed`.
    Waiting {
        at: u64,
        failed: NodeId,
    },
    Running {
        ballot: Ballot,
        primaries: BTreeSet<NodeId>,
        refused: BTreeSet<NodeId>,
        siblings: BTreeSet<NodeId>,
        /// Everyone asked; those that have not answered are asked again at `resend_at`.
        asked: Vec<NodeId>,
        answered: BTreeSet<NodeId>,
        resend_at: u64,
        deadline: u64,
    },
    /// A sibling is further ahead: let it win; look again at `until`.
    StoodDown {
        until: u64,
    },
}

/// What a candidate does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Nothing,
    /// Send this ballot to these nodes.
    Ask(Ballot, Vec<NodeId>),
    /// The election is won: adopt these roles (and move the failed primary's slots).
    Won(Roles),
}

/// One replica's side of elections.
pub struct Candidate {
    me: NodeId,
    cfg: ElectionConfig,
    phase: Phase,
    rng: Rng,
    /// Epochs refused by voters are jumped past.
    highest_seen: u64,
}

impl Candidate {
    pub fn new(me: NodeId, cfg: ElectionConfig, seed: u64) -> Candidate {
        Candidate {
            me,
            cfg,
            phase: Phase::Idle,
            rng: Rng::new(seed),
            highest_seen: 0,
        }
    }

    /// Advances time. `voter` is this node's voting memory (its epoch mark).
    pub fn tick(&mut self, now: u64, s: &Standing, voter: &Voter) -> Step {
        let Some(primary) = s.roles.primary_of(self.me) else {
            self.phase = Phase::Idle;
            return Step::Nothing;
        };
        let primary_down = (s.down)(primary);
        match self.phase {
            Phase::Idle | Phase::StoodDown { .. } if !primary_down => {
                self.phase = Phase::Idle;
                Step::Nothing
            }
            Phase::Idle => {
                if s.offsets.is_none() || !s.in_sync {
                    return Step::Nothing;
                }
                let jitter = self.rng.next_u64() % (self.cfg.jitter_ms + 1);
                let at = now + self.cfg.delay_ms + jitter + s.rank as u64 * self.cfg.rank_ms;
                self.phase = Phase::Waiting {
                    at,
                    failed: primary,
                };
                Step::Nothing
            }
            Phase::StoodDown { until } => {
                if now >= until {
                    self.phase = Phase::Idle;
                }
                Step::Nothing
            }
            Phase::Waiting { at, failed } => {
                if failed != primary || !primary_down {
                    self.phase = Phase::Idle;
                    return Step::Nothing;
                }
                if now < at {
                    return Step::Nothing;
                }
                self.stand(now, s, voter, failed, false)
            }
            Phase::Running {
                deadline,
                ref ballot,
                ref asked,
                ref answered,
                ref mut resend_at,
                ..
            } => {
                if !primary_down && !ballot.planned {
                    self.phase = Phase::Idle;
                    return Step::Nothing;
                }
                if now >= *resend_at && now < deadline {
                    *resend_at = now + self.cfg.resend_ms;
                    let silent: Vec<NodeId> = asked
                        .iter()
                        .filter(|id| !answered.contains(id) && !(s.down)(**id))
                        .copied()
                        .collect();
                    if !silent.is_empty() {
                        return Step::Ask(ballot.clone(), silent);
                    }
                }
                if now >= deadline {
                    // Try again a little later, under a higher epoch.
                    let jitter = self.rng.next_u64() % (self.cfg.jitter_ms + 1);
                    self.phase = Phase::Waiting {
                        at: now + jitter,
                        failed: primary,
                    };
                }
                Step::Nothing
            }
        }
    }

    /// Stands now (also for a planned switchover: `planned`).
    pub fn stand(
        &mut self,
        now: u64,
        s: &Standing,
        voter: &Voter,
        failed: NodeId,
        planned: bool,
    ) -> Step {
        let Some(offsets) = s.offsets else {
            self.phase = Phase::Idle;
            return Step::Nothing;
        };
        let epoch = voter.voted.max(self.highest_seen).max(s.roles.epoch) + 1;
        self.highest_seen = epoch;
        let ballot = Ballot {
            epoch,
            base: s.roles.epoch,
            failed,
            candidate: self.me,
            offsets: offsets.to_vec(),
            planned,
        };
        let mut to: Vec<NodeId> = s
            .roles
            .groups
            .keys()
            .filter(|p| **p != failed)
            .copied()
            .collect();
        let siblings: Vec<NodeId> = s.roles.groups[&failed]
            .iter()
            .filter(|r| **r != self.me)
            .copied()
            .collect();
        to.extend(&siblings);
        self.phase = Phase::Running {
            ballot: ballot.clone(),
            primaries: BTreeSet::new(),
            refused: BTreeSet::new(),
            siblings: BTreeSet::new(),
            asked: to.clone(),
            answered: BTreeSet::new(),
            resend_at: now + self.cfg.resend_ms,
            deadline: now + self.cfg.timeout_ms,
        };
        Step::Ask(ballot, to)
    }

    /// A vote arrived from `from`. Returns `Won` once the election is won.
    pub fn on_vote(&mut self, now: u64, from: NodeId, vote: &Vote, s: &Standing) -> Step {
        self.highest_seen = self.highest_seen.max(vote.voted);
        let Phase::Running {
            ballot,
            primaries,
            refused,
            siblings,
            answered,
            ..
        } = &mut self.phase
        else {
            return Step::Nothing;
        };
        if vote.epoch != ballot.epoch {
            return Step::Nothing;
        }
        answered.insert(from);
        let sibling = s
            .roles
            .groups
            .get(&ballot.failed)
            .is_some_and(|r| r.contains(&from));
        if vote.ahead {
            self.phase = Phase::StoodDown {
                until: now + 2 * self.cfg.timeout_ms,
            };
            return Step::Nothing;
        }
        let total = s.roles.groups.len();
        if !vote.granted {
            if !sibling && s.roles.is_primary(from) {
                refused.insert(from);
                // A majority can no longer be had (voters that do not see the primary down
                // yet, or granted a rival): ask again soon under a higher epoch rather than
                // wait for the timeout.
                if (total - 1 - refused.len()) * 2 <= total {
                    let failed = ballot.failed;
                    let jitter = self.rng.next_u64() % (self.cfg.jitter_ms + 1);
                    self.phase = Phase::Waiting {
                        at: now + self.cfg.delay_ms / 2 + jitter,
                        failed,
                    };
                }
            }
            return Step::Nothing;
        }
        if sibling {
            siblings.insert(from);
        } else if s.roles.is_primary(from) {
            primaries.insert(from);
        }
        let all_siblings = s.roles.groups[&ballot.failed]
            .iter()
            .filter(|r| **r != self.me && !(s.down)(**r))
            .all(|r| siblings.contains(r));
        if primaries.len() * 2 > total && all_siblings {
            let roles = s.roles.promote(ballot.failed, self.me, ballot.epoch);
            self.phase = Phase::Idle;
            return Step::Won(roles);
        }
        Step::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> NodeId {
        NodeId([n; 20])
    }

    /// Primaries 1, 2, 3; 1 has replicas 11 and 12.
    fn roles() -> Roles {
        let mut groups = BTreeMap::new();
        groups.insert(id(1), [id(11), id(12)].into_iter().collect());
        groups.insert(id(2), BTreeSet::new());
        groups.insert(id(3), BTreeSet::new());
        Roles { epoch: 5, groups }
    }

    fn ballot(epoch: u64, candidate: u8, offsets: Vec<u64>) -> Ballot {
        Ballot {
            epoch,
            base: 5,
            failed: id(1),
            candidate: id(candidate),
            offsets,
            planned: false,
        }
    }

    #[test]
    fn a_primary_grants_an_epoch_once_and_only_from_its_own_table() {
        let r = roles();
        let mut v = Voter::default();
        v.adopted(5);
        let b = ballot(6, 11, vec![10]);
        assert!(
            !v.consider(id(2), &b, &r, false, None).granted,
            "primary not seen down"
        );
        assert!(v.consider(id(2), &b, &r, true, None).granted);
        // The same ballot again (its answer lost): granted again.
        assert!(v.consider(id(2), &b, &r, true, None).granted);
        // A rival in the same epoch, or an older one: refused, with the mark to jump past.
        let rival = ballot(6, 12, vec![10]);
        let no = v.consider(id(2), &rival, &r, true, None);
        assert!(!no.granted);
        assert_eq!(no.voted, 6);
        assert!(
            !v.consider(id(2), &ballot(7, 12, vec![1]), &roles_at(4), true, None)
                .granted
        );
        // Not a replica of the failed primary.
        assert!(
            !v.consider(id(3), &ballot(9, 2, vec![1]), &r, true, None)
                .granted
        );
        // A planned switchover is granted while the primary lives.
        let mut planned = ballot(8, 12, vec![1]);
        planned.planned = true;
        assert!(v.consider(id(2), &planned, &r, false, None).granted);
    }

    fn roles_at(epoch: u64) -> Roles {
        Roles { epoch, ..roles() }
    }

    #[test]
    fn a_sibling_grants_only_a_candidate_at_least_as_far() {
        let r = roles();
        let mut v = Voter::default();
        let mine = vec![10, 20];
        let behind = v.consider(id(12), &ballot(6, 11, vec![15, 14]), &r, true, Some(&mine));
        assert!(!behind.granted && behind.ahead);
        assert!(
            v.consider(id(12), &ballot(6, 11, vec![5, 25]), &r, true, Some(&mine))
                .granted
        );
        // A sibling that never synced has nothing to lose.
        assert!(
            v.consider(id(12), &ballot(6, 11, vec![0, 0]), &r, true, None)
                .granted
        );
        // The failed primary itself, and outsiders, do not vote.
        assert!(
            !v.consider(id(1), &ballot(7, 11, vec![1, 1]), &r, true, None)
                .granted
        );
        assert!(
            !v.consider(id(40), &ballot(7, 11, vec![1, 1]), &r, true, None)
                .granted
        );
    }

    #[test]
    fn promotion_moves_the_group_to_the_winner() {
        let r = roles().promote(id(1), id(12), 6);
        assert_eq!(r.epoch, 6);
        assert!(r.is_primary(id(12)) && !r.is_primary(id(1)));
        assert_eq!(r.primary_of(id(1)), Some(id(12)));
        assert_eq!(r.primary_of(id(11)), Some(id(12)));
        assert_eq!(r.groups.len(), 3);
    }

    #[test]
    fn a_replica_out_of_sync_or_never_synced_does_not_stand() {
        let r = roles();
        let v = Voter::default();
        let down = |n: NodeId| n == id(1);
        for (offsets, in_sync) in [(None, true), (Some(&[5u64][..]), false)] {
            let mut c = Candidate::new(id(11), ElectionConfig::default(), 1);
            let s = Standing {
                roles: &r,
                down: &down,
                offsets,
                in_sync,
                rank: 0,
            };
            for t in 0..100 {
                assert_eq!(c.tick(t * 10, &s, &v), Step::Nothing);
            }
        }
    }
}

/// A seeded simulation of elections: groups of a primary and its replicas, failure
/// detection as a delay after a crash or a partition, and a network that delays, loses and
/// partitions messages. Checks that there is one table per epoch, that no winner has
/// applied less than a sibling that voted for it, and how long a failover takes.
#[cfg(test)]
mod sim {
    use super::*;
    use std::collections::HashMap;

    const TICK_MS: u64 = 10;
    const GOSSIP_MS: u64 = 100;

    #[derive(Clone, Debug)]
    enum M {
        Ballot(Ballot),
        Vote(Vote),
        Table(Roles),
        Epoch(u64),
    }

    struct Node {
        id: NodeId,
        up: bool,
        side: u8,
        roles: Roles,
        voter: Voter,
        cand: Candidate,
        offsets: Option<Vec<u64>>,
        in_sync: bool,
    }

    struct Sim {
        nodes: Vec<Node>,
        index: HashMap<NodeId, usize>,
        now: u64,
        rng: Rng,
        loss: f64,
        /// (i, j): from when i sees j down.
        down_from: HashMap<(usize, usize), u64>,
        queue: BTreeMap<u64, Vec<(usize, usize, M)>>,
        /// Every table adopted anywhere, by epoch.
        tables: BTreeMap<u64, Roles>,
        /// Granted sibling votes: (epoch, candidate) -> voters.
        sibling_grants: HashMap<(u64, usize), Vec<usize>>,
        /// (time, winner, failed) of every win.
        wins: Vec<(u64, usize, NodeId)>,
    }

    impl Sim {
        /// `groups` primaries with `replicas` each; replica lags drawn at random, those
        /// further than `max_lag` behind are out of sync.
        fn new(groups: usize, replicas: usize, seed: u64, loss: f64) -> Sim {
            let mut rng = Rng::new(seed);
            let n = groups * (1 + replicas);
            let ids: Vec<NodeId> = (0..n).map(|_| NodeId::random(&mut rng)).collect();
            let mut roles = Roles {
                epoch: 1,
                groups: BTreeMap::new(),
            };
            for g in 0..groups {
                let base = g * (1 + replicas);
                roles
                    .groups
                    .insert(ids[base], (1..=replicas).map(|r| ids[base + r]).collect());
            }
            let cfg = ElectionConfig::default();
            let nodes = ids
                .iter()
                .enumerate()
                .map(|(i, id)| {
                    let lag: Vec<u64> = (0..2).map(|_| rng.next_u64() % 30).collect();
                    let replica = i % (1 + replicas) != 0;
                    Node {
                        id: *id,
                        up: true,
                        side: 0,
                        roles: roles.clone(),
                        voter: Voter {
                            voted: 1,
                            granted: None,
                        },
                        cand: Candidate::new(*id, cfg, seed ^ i as u64),
                        offsets: replica.then(|| lag.iter().map(|l| 1000 - l).collect()),
                        in_sync: lag.iter().sum::<u64>() <= 40,
                    }
                })
                .collect();
            let mut tables = BTreeMap::new();
            tables.insert(1, roles);
            Sim {
                nodes,
                index: ids.iter().enumerate().map(|(i, id)| (*id, i)).collect(),
                now: 0,
                rng,
                loss,
                down_from: HashMap::new(),
                queue: BTreeMap::new(),
                tables,
                sibling_grants: HashMap::new(),
                wins: Vec::new(),
            }
        }

        fn detect(&mut self) -> u64 {
            // Membership declares a silent node dead 0.5–0.9 s after it goes quiet.
            500 + self.rng.next_u64() % 400
        }

        fn crash(&mut self, j: usize) {
            self.nodes[j].up = false;
            for i in 0..self.nodes.len() {
                let at = self.now + self.detect();
                self.down_from.insert((i, j), at);
            }
        }

        fn restart(&mut self, j: usize) {
            self.nodes[j].up = true;
            for i in 0..self.nodes.len() {
                self.down_from.remove(&(i, j));
            }
        }

        fn partition(&mut self, sides: &[u8]) {
            for (i, s) in sides.iter().enumerate() {
                self.nodes[i].side = *s;
            }
            for i in 0..self.nodes.len() {
                for j in 0..self.nodes.len() {
                    if sides[i] != sides[j] && self.nodes[j].up {
                        let at = self.now + self.detect();
                        self.down_from.insert((i, j), at);
                    }
                }
            }
        }

        fn heal(&mut self) {
            for i in 0..self.nodes.len() {
                self.nodes[i].side = 0;
                for j in 0..self.nodes.len() {
                    if self.nodes[j].up {
                        self.down_from.remove(&(i, j));
                    }
                }
            }
        }

        fn sees_down(&self, i: usize, j: usize) -> bool {
            self.down_from.get(&(i, j)).is_some_and(|t| self.now >= *t)
        }

        fn post(&mut self, from: usize, to: usize, m: M) {
            if self.rng.next_f64() < self.loss {
                return;
            }
            let at = self.now + 1 + self.rng.next_u64() % 3;
            self.queue.entry(at).or_default().push((to, from, m));
        }

        fn rank(&self, i: usize) -> usize {
            let me = &self.nodes[i];
            let Some(mine) = &me.offsets else { return 0 };
            let Some(p) = me.roles.primary_of(me.id) else {
                return 0;
            };
            let key = |n: &Node| {
                (
                    n.offsets.as_ref().map_or(0, |o| o.iter().sum::<u64>()),
                    std::cmp::Reverse(n.id),
                )
            };
            me.roles.groups[&p]
                .iter()
                .map(|r| &self.nodes[self.index[r]])
                .filter(|n| {
                    n.id != me.id
                        && n.in_sync
                        && key(n) > (mine.iter().sum(), std::cmp::Reverse(me.id))
                })
                .count()
        }

        fn adopt(&mut self, i: usize, roles: Roles) {
            match self.tables.get(&roles.epoch) {
                Some(t) => assert_eq!(t, &roles, "two tables in epoch {}", roles.epoch),
                None => {
                    self.tables.insert(roles.epoch, roles.clone());
                }
            }
            self.nodes[i].voter.adopted(roles.epoch);
            self.nodes[i].roles = roles;
        }

        fn with_standing<R>(
            &mut self,
            i: usize,
            f: impl FnOnce(&mut Candidate, &Standing, &Voter) -> R,
        ) -> R {
            let rank = self.rank(i);
            let downs: BTreeSet<NodeId> = (0..self.nodes.len())
                .filter(|j| self.sees_down(i, *j))
                .map(|j| self.nodes[j].id)
                .collect();
            let node = &mut self.nodes[i];
            let down = |id: NodeId| downs.contains(&id);
            let s = Standing {
                roles: &node.roles,
                down: &down,
                offsets: node.offsets.as_deref(),
                in_sync: node.in_sync,
                rank,
            };
            f(&mut node.cand, &s, &node.voter)
        }

        fn handle(&mut self, i: usize, step: Step) {
            match step {
                Step::Nothing => {}
                Step::Ask(ballot, to) => {
                    if std::env::var("ELECTION_TRACE").is_ok() {
                        eprintln!(
                            "{} node {i} asks epoch {} base {}",
                            self.now, ballot.epoch, ballot.base
                        );
                    }
                    for id in to {
                        let j = self.index[&id];
                        self.post(i, j, M::Ballot(ballot.clone()));
                    }
                }
                Step::Won(roles) => {
                    let winner = &self.nodes[i];
                    let failed = winner.roles.primary_of(winner.id).expect("a replica won");
                    let mine = winner.offsets.clone().expect("a candidate has offsets");
                    for v in self
                        .sibling_grants
                        .get(&(roles.epoch, i))
                        .into_iter()
                        .flatten()
                    {
                        let theirs = self.nodes[*v].offsets.as_ref().expect("a replica");
                        assert!(
                            at_least(&mine, theirs),
                            "a winner behind a sibling that voted for it"
                        );
                    }
                    self.wins.push((self.now, i, failed));
                    self.adopt(i, roles.clone());
                    for j in 0..self.nodes.len() {
                        if j != i {
                            self.post(i, j, M::Table(roles.clone()));
                        }
                    }
                }
            }
        }

        fn deliver(&mut self, to: usize, from: usize, m: M) {
            if !self.nodes[to].up || !self.nodes[from].up && !matches!(m, M::Table(_)) {
                return;
            }
            if self.nodes[to].side != self.nodes[from].side {
                return;
            }
            match m {
                M::Ballot(b) => {
                    let failed = self.index[&b.failed];
                    let failed_down = self.sees_down(to, failed);
                    let node = &mut self.nodes[to];
                    let vote = node.voter.consider(
                        node.id,
                        &b,
                        &node.roles,
                        failed_down,
                        node.offsets.as_deref(),
                    );
                    if vote.granted && node.roles.primary_of(node.id) == Some(b.failed) {
                        let c = self.index[&b.candidate];
                        self.sibling_grants
                            .entry((b.epoch, c))
                            .or_default()
                            .push(to);
                    }
                    if std::env::var("ELECTION_TRACE").is_ok() {
                        eprintln!(
                            "{} node {to} -> {from}: {vote:?} (sees down: {failed_down})",
                            self.now
                        );
                    }
                    self.post(to, from, M::Vote(vote));
                }
                M::Vote(v) => {
                    let now = self.now;
                    let from_id = self.nodes[from].id;
                    let step = self.with_standing(to, |c, s, _| c.on_vote(now, from_id, &v, s));
                    if std::env::var("ELECTION_TRACE").is_ok() {
                        eprintln!(
                            "{} node {to} got vote from {from}: {step:?} phase {:?}",
                            self.now, self.nodes[to].cand.phase
                        );
                    }
                    self.handle(to, step);
                }
                M::Table(r) => {
                    if r.epoch > self.nodes[to].roles.epoch {
                        self.adopt(to, r);
                    }
                }
                M::Epoch(e) => {
                    if e < self.nodes[to].roles.epoch {
                        let r = self.nodes[to].roles.clone();
                        self.post(to, from, M::Table(r));
                    }
                }
            }
        }

        fn run_until(&mut self, until: u64) {
            while self.now < until {
                self.now += 1;
                if let Some(batch) = self.queue.remove(&self.now) {
                    for (to, from, m) in batch {
                        self.deliver(to, from, m);
                    }
                }
                if self.now % TICK_MS == 0 {
                    for i in 0..self.nodes.len() {
                        if !self.nodes[i].up {
                            continue;
                        }
                        let now = self.now;
                        let step = self.with_standing(i, |c, s, v| c.tick(now, s, v));
                        self.handle(i, step);
                    }
                }
                if self.now % GOSSIP_MS == 0 {
                    for i in 0..self.nodes.len() {
                        if self.nodes[i].up {
                            let j = self.rng.next_u64() as usize % self.nodes.len();
                            let e = self.nodes[i].roles.epoch;
                            self.post(i, j, M::Epoch(e));
                        }
                    }
                }
            }
        }

        /// Whether every live node holds the same table.
        fn settled(&self) -> bool {
            let mut live = self.nodes.iter().filter(|n| n.up);
            let first = live.next().expect("a live node");
            live.all(|n| n.roles == first.roles)
        }

        fn best_in_sync_replica(&self, group_primary: usize) -> Option<usize> {
            let p = self.nodes[group_primary].id;
            self.nodes[group_primary].roles.groups[&p]
                .iter()
                .map(|r| self.index[r])
                .filter(|r| self.nodes[*r].in_sync)
                .max_by_key(|r| {
                    self.nodes[*r]
                        .offsets
                        .as_ref()
                        .map(|o| o.iter().sum::<u64>())
                })
        }
    }

    fn seeds() -> impl Iterator<Item = u64> {
        std::env::var("ELECTION_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .map_or_else(
                || (1..=100).map(|s| s * 7919).collect::<Vec<u64>>(),
                |s| vec![s],
            )
            .into_iter()
    }

    #[test]
    fn a_crashed_primary_is_replaced_by_an_in_sync_replica_in_time() {
        let mut times = Vec::new();
        for seed in seeds() {
            let mut sim = Sim::new(3, 2, seed, 0.01);
            sim.run_until(1000);
            let eligible = sim.best_in_sync_replica(0);
            sim.crash(0);
            let crashed_at = sim.now;
            sim.run_until(crashed_at + 6000);
            let failed = sim.nodes[0].id;
            let wins: Vec<_> = sim.wins.iter().filter(|w| w.2 == failed).collect();
            match eligible {
                None => assert!(wins.is_empty(), "seed {seed}: a replica out of sync won"),
                Some(_) => {
                    assert!(!wins.is_empty(), "seed {seed}: nobody won");
                    let (t, winner, _) = wins[0];
                    assert!(sim.nodes[*winner].in_sync, "seed {seed}");
                    times.push(t - crashed_at);
                    if t - crashed_at > 2000 {
                        eprintln!("slow seed {seed}: {} ms", t - crashed_at);
                    }
                    assert!(sim.settled(), "seed {seed}: tables differ");
                    let final_roles = &sim.nodes[*winner].roles;
                    assert!(final_roles.is_primary(sim.nodes[*winner].id));
                    assert_eq!(final_roles.primary_of(failed), Some(sim.nodes[*winner].id));
                }
            }
        }
        times.sort_unstable();
        let max = *times.last().unwrap();
        eprintln!(
            "failover (detection 0.5-0.9 s included), {} runs: median {} ms, max {} ms",
            times.len(),
            times[times.len() / 2],
            max
        );
        // The configured bound: detection (≤ 0.9 s here), the delay and its jitter, two
        // ranks, and one timed-out round.
        let c = ElectionConfig::default();
        let bound = 900 + c.delay_ms + c.jitter_ms + 2 * c.rank_ms + c.timeout_ms;
        assert!(max <= bound, "a failover took {max} ms (bound {bound})");
    }

    #[test]
    fn the_most_up_to_date_sibling_wins_and_never_one_behind_a_voter() {
        for seed in seeds() {
            let mut sim = Sim::new(5, 3, seed, 0.05);
            sim.run_until(500);
            sim.crash(0);
            sim.crash(4);
            sim.run_until(10_000);
            // The sim itself asserts on every win that the winner is at least as far as
            // every sibling that voted for it, and one table per epoch.
            for (_, winner, failed) in &sim.wins {
                let w = &sim.nodes[*winner];
                let p = sim.index[failed];
                for r in sim.tables[&1].groups[&sim.nodes[p].id].iter() {
                    let other = &sim.nodes[sim.index[r]];
                    if other.in_sync && other.id != w.id {
                        let (a, b) = (w.offsets.as_ref().unwrap(), other.offsets.as_ref().unwrap());
                        assert!(at_least(a, b), "seed {seed}: a sibling further ahead lost");
                    }
                }
            }
        }
    }

    #[test]
    fn a_partitioned_primary_is_replaced_and_follows_after_the_heal() {
        for seed in seeds() {
            let mut sim = Sim::new(3, 1, seed, 0.0);
            if !sim.nodes[1].in_sync {
                sim.nodes[1].in_sync = true;
            }
            sim.run_until(500);
            // The first primary alone on one side; its replica with the majority.
            let mut sides = vec![0u8; sim.nodes.len()];
            sides[0] = 1;
            sim.partition(&sides);
            sim.run_until(5000);
            let failed = sim.nodes[0].id;
            assert!(
                sim.wins.iter().any(|w| w.2 == failed && w.1 == 1),
                "seed {seed}: the replica on the majority side did not take over"
            );
            // The old primary still believes its old table: an older epoch.
            assert!(sim.nodes[0].roles.epoch < sim.nodes[1].roles.epoch);
            sim.heal();
            sim.run_until(8000);
            assert!(sim.settled(), "seed {seed}: no single table after the heal");
            assert_eq!(sim.nodes[0].roles.primary_of(failed), Some(sim.nodes[1].id));
        }
    }

    #[test]
    fn a_replica_cut_off_with_its_primary_cannot_win() {
        for seed in seeds() {
            let mut sim = Sim::new(3, 1, seed, 0.0);
            sim.nodes[1].in_sync = true;
            sim.run_until(500);
            // The first group alone on one side: its replica sees the others down, and its
            // primary… the replica gets no majority.
            let mut sides = vec![0u8; sim.nodes.len()];
            sides[0] = 1;
            sides[1] = 1;
            sim.partition(&sides);
            sim.crash(0);
            sim.run_until(6000);
            assert!(sim.wins.is_empty(), "seed {seed}: a minority replica won");
        }
    }

    #[test]
    fn with_heavy_loss_there_is_still_one_table_per_epoch() {
        for seed in seeds() {
            let mut sim = Sim::new(4, 2, seed, 0.3);
            sim.run_until(300);
            let eligible = sim.best_in_sync_replica(0).is_some();
            sim.crash(0);
            sim.run_until(2000);
            // (node 3 is the second group's primary)
            sim.crash(3);
            sim.run_until(4000);
            sim.restart(0);
            sim.run_until(20_000);
            // adopt() asserted one table per epoch throughout; the cluster settles, with the
            // returned primary following its successor.
            assert!(sim.settled(), "seed {seed}: no single table");
            // Its group failed over if an in-sync replica won before the second crash took
            // the majority of primaries away (2 of 4 left cannot elect); then it follows.
            let failed = sim.nodes[0].id;
            let replaced = sim.wins.iter().any(|w| w.2 == failed);
            assert!(
                eligible || !replaced,
                "seed {seed}: an out-of-sync replica won"
            );
            assert_eq!(
                sim.nodes[0].roles.primary_of(failed).is_some(),
                replaced,
                "seed {seed}"
            );
        }
    }
}
