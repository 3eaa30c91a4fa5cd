//! A shard: the numbered databases one core owns, its share of `maxmemory`, eviction and
//! active expiry.

use crate::capture::Capture;
use crate::db::{AccessRules, Db, DbStats, Rank};
use crate::evict::{MemoryPolicy, Policy, EVICT_MAX_KEYS_PER_CALL, POOL_SIZE};
use crate::wal::{DelReason, Op, WalLimits, WalRing};
use std::cell::{Ref, RefCell, RefMut};
use std::rc::Rc;

/// Keys checked per database per round of active expiry (Redis's
/// ACTIVE_EXPIRE_CYCLE_KEYS_PER_LOOP).
pub const EXPIRE_KEYS_PER_ROUND: usize = 20;

/// Active expiry goes on sampling a database while more than this percentage of the keys it
/// checked had expired (Redis's ACTIVE_EXPIRE_CYCLE_ACCEPTABLE_STALE).
pub const EXPIRE_ACCEPTABLE_STALE_PERCENT: usize = 10;

/// Rounds of active expiry between checks of the caller's time budget.
pub const EXPIRE_ROUNDS_PER_BUDGET_CHECK: usize = 16;

/// An eviction candidate in the pool: higher scores go first.
#[derive(Debug, Clone)]
struct Candidate {
    score: u64,
    db: usize,
    key: Box<[u8]>,
}

/// Counters of the shard as a whole (the databases keep their own).
#[derive(Debug, Default, Clone, Copy)]
pub struct ShardStats {
    pub evicted_keys: u64,
    /// Running estimate of the percentage of volatile keys that have expired but are not
    /// yet deleted (Redis's `expired_stale_perc`).
    pub expired_stale_perc: f64,
}

/// What one call of [`Shard::make_room`] could do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// Under the limit (or no limit).
    Fits,
    /// Still over the limit after evicting as many keys as one call may; the write may go
    /// ahead, the next ones go on evicting.
    Evicting,
    /// Over the limit and nothing can be evicted: writes that need memory are refused.
    Full,
}

pub struct Shard {
    dbs: Vec<Db>,
    /// Every change to any of the databases, in order; shared with them.
    wal: Rc<RefCell<WalRing>>,
    /// The point-in-time capture, shared with the databases (see [`Capture`]).
    capture: Rc<Capture>,
    /// Where the capture's walk is: the core the image is written for, a database and a
    /// position in it.
    walk: Walk,
    /// The number of the latest capture started.
    capture_id: u64,
    memory: MemoryPolicy,
    pool: Vec<Candidate>,
    /// The next database the random policies draw from (round robin, as Redis).
    next_random_db: usize,
    pub stats: ShardStats,
}

#[derive(Debug, Default, Clone, Copy)]
struct Walk {
    core: usize,
    db: usize,
    pos: u64,
}

/// Why a capture could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a capture of this shard is already running")]
pub struct CaptureBusy;

/// A writer's capture was aborted (by someone else) or replaced by a newer one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the capture was aborted")]
pub struct CaptureLost;

/// A started capture, as its writer holds it: every later call names it, so a writer never
/// steps, takes from or aborts a capture that is not its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureTicket {
    id: u64,
    /// The ring's sequence number the image corresponds to.
    pub seq: u64,
}

impl Shard {
    /// A shard with `databases` empty databases (Redis's `databases`, 16 by default).
    pub fn new(databases: usize) -> Shard {
        assert!(databases > 0, "at least one database");
        let wal = Rc::new(RefCell::new(WalRing::default()));
        let capture = Rc::new(Capture::default());
        Shard {
            dbs: (0..databases)
                .map(|i| Db::of_shard(i, wal.clone(), capture.clone()))
                .collect(),
            wal,
            capture,
            walk: Walk::default(),
            capture_id: 0,
            memory: MemoryPolicy::default(),
            pool: Vec::with_capacity(POOL_SIZE),
            next_random_db: 0,
            stats: ShardStats::default(),
        }
    }

    pub fn databases(&self) -> usize {
        self.dbs.len()
    }

    /// The database `index`; the caller has checked it against [`Shard::databases`].
    pub fn db(&mut self, index: usize) -> &mut Db {
        &mut self.dbs[index]
    }

    pub fn db_ref(&self, index: usize) -> &Db {
        &self.dbs[index]
    }

    pub fn wal(&self) -> Ref<'_, WalRing> {
        self.wal.borrow()
    }

    pub fn wal_mut(&self) -> RefMut<'_, WalRing> {
        self.wal.borrow_mut()
    }

    pub fn set_wal_limits(&mut self, limits: WalLimits) {
        self.wal.borrow_mut().set_limits(limits);
    }

    /// Applies a change read from a ring (a follower's catch-up, a log replay), logged again
    /// here as any change. Applied as given, whatever this node's clock says: a key the
    /// leader still holds is never expired here first, since the leader's expiry deletions
    /// arrive as records of their own (the clock is taken as 0, before every expiry).
    pub fn apply(&mut self, op: &Op) {
        let now_ms = 0;
        match op {
            Op::Set {
                db,
                key,
                value,
                expire_at_ms,
            } => {
                let entry = Op::entry(value, *expire_at_ms);
                self.dbs[*db as usize].set(key, entry, now_ms);
            }
            Op::Del { db, key, why } => {
                self.dbs[*db as usize].remove_for(key, now_ms, *why);
            }
            Op::Expire { db, key, at_ms } => {
                self.dbs[*db as usize].set_expiry(key, *at_ms, now_ms);
            }
            Op::FlushDb { db } => self.dbs[*db as usize].flush(),
        }
    }

    /// This shard's part of a snapshot: an entry frame for every live key, then the core's
    /// end frame, written to `out` one frame at a time. Returns the keys written.
    pub fn snapshot_to(
        &self,
        core: usize,
        now_ms: u64,
        out: &mut impl std::io::Write,
    ) -> std::io::Result<u64> {
        let mut keys = 0u64;
        let mut frame = Vec::new();
        for (db, d) in self.dbs.iter().enumerate() {
            for item in d.live_items(now_ms) {
                frame.clear();
                crate::snapshot::encode_frame(&crate::snapshot::Frame::entry(db, item), &mut frame);
                out.write_all(&frame)?;
                keys += 1;
            }
        }
        frame.clear();
        crate::snapshot::encode_frame(
            &crate::snapshot::Frame::CoreEnd {
                core: core as u32,
                keys,
            },
            &mut frame,
        );
        out.write_all(&frame)?;
        Ok(keys)
    }

    /// Starts a point-in-time image of this shard as of `now_ms`, to be written as core
    /// `core`'s part of a snapshot, while the shard keeps serving. Returns the ring's
    /// sequence number the image corresponds to, in the ticket for the other calls.
    pub fn capture_start(
        &mut self,
        core: usize,
        now_ms: u64,
    ) -> Result<CaptureTicket, CaptureBusy> {
        if self.capture.is_active() {
            return Err(CaptureBusy);
        }
        self.capture.start(now_ms);
        self.walk = Walk {
            core,
            db: 0,
            pos: 0,
        };
        self.capture_id += 1;
        Ok(CaptureTicket {
            id: self.capture_id,
            seq: self.wal.borrow().head(),
        })
    }

    fn check(&self, ticket: CaptureTicket) -> Result<(), CaptureLost> {
        if ticket.id == self.capture_id {
            Ok(())
        } else {
            Err(CaptureLost)
        }
    }

    /// Hands the capture's output so far to its writer.
    pub fn capture_take(&self, ticket: CaptureTicket) -> Result<Vec<u8>, CaptureLost> {
        self.check(ticket)?;
        Ok(self.capture.take_output())
    }

    pub fn capture(&self) -> &Capture {
        &self.capture
    }

    /// Walks the capture on until it has written at least `max_bytes` more of output (or
    /// the walk ends). Returns true once the image is complete: its last frame (the core's
    /// end) is in the output, and the capture has stopped.
    pub fn capture_step(
        &mut self,
        ticket: CaptureTicket,
        max_bytes: usize,
    ) -> Result<bool, CaptureLost> {
        self.check(ticket)?;
        if !self.capture.is_active() {
            return Ok(true);
        }
        let stop = self.capture.pending_bytes() + max_bytes;
        while self.capture.pending_bytes() < stop {
            if self.capture.walk_detached() {
                continue;
            }
            let Some(db) = self.dbs.get_mut(self.walk.db) else {
                self.capture.finish(self.walk.core);
                return Ok(true);
            };
            match db.capture_walk(self.walk.pos, true) {
                Some(next) => self.walk.pos = next,
                None => {
                    self.walk.db += 1;
                    self.walk.pos = 0;
                }
            }
        }
        Ok(false)
    }

    /// Stops the ticket's capture, if it still runs, and drops its output. The walk still
    /// goes to the end (only marking), so that the next capture finds every item with the
    /// same mark.
    pub fn capture_abort(&mut self, ticket: CaptureTicket) {
        if self.check(ticket).is_err() || !self.capture.is_active() {
            return;
        }
        for db in self.walk.db..self.dbs.len() {
            let mut pos = if db == self.walk.db { self.walk.pos } else { 0 };
            while let Some(next) = self.dbs[db].capture_walk(pos, false) {
                pos = next;
            }
        }
        self.capture.abort();
    }

    pub fn flush_all(&mut self) {
        for db in &mut self.dbs {
            db.flush();
        }
        self.pool.clear();
    }

    pub fn memory_policy(&self) -> &MemoryPolicy {
        &self.memory
    }

    /// Takes new memory settings at once; the next write evicts down to a lower limit.
    pub fn set_memory_policy(&mut self, memory: MemoryPolicy) {
        if memory.policy != self.memory.policy {
            self.pool.clear();
        }
        self.memory = memory;
        let rules = AccessRules {
            tracking: memory.policy.tracking(),
            lfu_log_factor: memory.lfu_log_factor,
            lfu_decay_minutes: memory.lfu_decay_minutes,
        };
        for db in &mut self.dbs {
            db.set_access_rules(rules);
        }
    }

    /// Bytes the shard's data uses: every database's tables, keys and values.
    pub fn data_bytes(&self) -> usize {
        self.dbs.iter().map(Db::used_bytes).sum::<usize>()
            + self.dbs.capacity() * std::mem::size_of::<Db>()
    }

    /// Bytes counted against the shard's share of maxmemory: its data and its write-ahead
    /// ring.
    pub fn used_bytes(&self) -> usize {
        self.data_bytes() + self.wal.borrow().bytes()
    }

    pub fn over_limit(&self) -> bool {
        self.memory.limit_bytes != 0 && self.used_bytes() > self.memory.limit_bytes
    }

    /// Evicts keys by the policy until the data fits the shard's share of `maxmemory`, or
    /// [`EVICT_MAX_KEYS_PER_CALL`] keys are gone.
    pub fn make_room(&mut self, now_ms: u64) -> Room {
        if !self.over_limit() {
            return Room::Fits;
        }
        if self.memory.policy == Policy::NoEviction {
            return Room::Full;
        }
        for _ in 0..EVICT_MAX_KEYS_PER_CALL {
            let Some((db, key)) = self.pick_victim(now_ms) else {
                return Room::Full;
            };
            self.dbs[db].remove_for(&key, now_ms, DelReason::Evicted);
            self.stats.evicted_keys += 1;
            if !self.over_limit() {
                return Room::Fits;
            }
        }
        Room::Evicting
    }

    fn pick_victim(&mut self, now_ms: u64) -> Option<(usize, Box<[u8]>)> {
        let policy = self.memory.policy;
        let volatile_only = policy.volatile_only();
        let rank = match policy {
            Policy::NoEviction => return None,
            Policy::AllKeysRandom | Policy::VolatileRandom => {
                for _ in 0..self.dbs.len() {
                    let db = self.next_random_db % self.dbs.len();
                    self.next_random_db = self.next_random_db.wrapping_add(1);
                    if let Some(key) = self.dbs[db].random_victim(volatile_only) {
                        return Some((db, key));
                    }
                }
                return None;
            }
            Policy::AllKeysLru | Policy::VolatileLru => Rank::Idle,
            Policy::AllKeysLfu | Policy::VolatileLfu => Rank::Frequency,
            Policy::AllKeysFifo | Policy::VolatileFifo => Rank::WriteAge,
            Policy::VolatileTtl => Rank::Ttl,
        };
        loop {
            let samples = self.memory.samples;
            let mut any = false;
            for (i, db) in self.dbs.iter_mut().enumerate() {
                let pool = &mut self.pool;
                db.eviction_candidates(samples, volatile_only, rank, now_ms, |score, key| {
                    any = true;
                    offer(pool, i, score, key);
                });
            }
            // The best candidate that still exists as sampled; stale ones are dropped.
            while let Some(best) = self.pool.pop() {
                let db = &mut self.dbs[best.db];
                let live = match db.peek(&best.key, now_ms) {
                    Some(e) => !volatile_only || e.is_volatile(),
                    // Gone, or expired and deleted just now: that freed memory too.
                    None => false,
                };
                if live {
                    return Some((best.db, best.key));
                }
            }
            if !any {
                return None;
            }
            if !self.over_limit() {
                return None;
            }
        }
    }

    /// One pass of active expiry over every database: rounds of
    /// [`EXPIRE_KEYS_PER_ROUND`] sampled keys with a TTL, repeated on a database while more
    /// than [`EXPIRE_ACCEPTABLE_STALE_PERCENT`]% of them had expired, for as long as
    /// `keep_going` (asked every [`EXPIRE_ROUNDS_PER_BUDGET_CHECK`] rounds) allows.
    /// Returns (keys checked, keys deleted).
    pub fn active_expire(
        &mut self,
        now_ms: u64,
        mut keep_going: impl FnMut() -> bool,
    ) -> (u64, u64) {
        let (mut checked, mut deleted) = (0u64, 0u64);
        let mut rounds = 0usize;
        'dbs: for db in &mut self.dbs {
            loop {
                if db.volatile_len() == 0 {
                    break;
                }
                let (c, d) = db.expire_sample(EXPIRE_KEYS_PER_ROUND, now_ms);
                checked += c as u64;
                deleted += d as u64;
                rounds += 1;
                if rounds % EXPIRE_ROUNDS_PER_BUDGET_CHECK == 0 && !keep_going() {
                    break 'dbs;
                }
                if d * 100 <= c * EXPIRE_ACCEPTABLE_STALE_PERCENT {
                    break;
                }
            }
        }
        if checked > 0 {
            let current = deleted as f64 * 100.0 / checked as f64;
            self.stats.expired_stale_perc = current * 0.05 + self.stats.expired_stale_perc * 0.95;
        }
        (checked, deleted)
    }

    pub fn stats(&self) -> DbStats {
        self.dbs.iter().fold(DbStats::default(), |mut acc, db| {
            acc.expired_keys += db.stats.expired_keys;
            acc.keyspace_hits += db.stats.keyspace_hits;
            acc.keyspace_misses += db.stats.keyspace_misses;
            acc.changes += db.stats.changes;
            acc
        })
    }

    pub fn reset_stats(&mut self) {
        for db in &mut self.dbs {
            db.stats = DbStats {
                changes: db.stats.changes,
                ..DbStats::default()
            };
        }
        self.stats = ShardStats::default();
    }
}

/// Puts a candidate into the pool (kept sorted by score, best last) if it beats the worst
/// or there is room; a key already pooled is not added twice.
fn offer(pool: &mut Vec<Candidate>, db: usize, score: u64, key: &[u8]) {
    if pool.iter().any(|c| c.db == db && *c.key == *key) {
        return;
    }
    if pool.len() == POOL_SIZE {
        if score <= pool[0].score {
            return;
        }
        pool.remove(0);
    }
    let at = pool.partition_point(|c| c.score <= score);
    pool.insert(
        at,
        Candidate {
            score,
            db,
            key: key.into(),
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{Entry, Value};

    fn key(i: usize) -> Vec<u8> {
        format!("key:{i:012}").into_bytes()
    }

    fn value() -> Value {
        Value::from_bytes(&[b'v'; 32])
    }

    /// A shard with `n` keys written one millisecond apart (from t = 1000), keys `0..n`,
    /// those in `volatile` with a TTL of `ttl_ms(i)`, and its limit set to what it holds now.
    fn filled(policy: Policy, n: usize, volatile: impl Fn(usize) -> Option<u64>) -> Shard {
        let mut shard = Shard::new(1);
        // A ring of one record: its bytes (counted against the limit) stay constant.
        shard.set_wal_limits(WalLimits {
            max_entries: 1,
            max_bytes: usize::MAX,
        });
        shard.set_memory_policy(MemoryPolicy {
            policy,
            ..MemoryPolicy::default()
        });
        for i in 0..n {
            let now = 1000 + i as u64;
            let entry = match volatile(i) {
                Some(at) => Entry::with_expiry(value(), at),
                None => Entry::new(value()),
            };
            shard.db(0).set(&key(i), entry, now);
        }
        let limit = shard.used_bytes();
        shard.set_memory_policy(MemoryPolicy {
            policy,
            limit_bytes: limit,
            ..MemoryPolicy::default()
        });
        shard
    }

    /// Writes `extra` new keys at time `now`, making room before each as a write would.
    fn write_more(shard: &mut Shard, from: usize, extra: usize, now: u64) -> Vec<Room> {
        (from..from + extra)
            .map(|i| {
                let room = shard.make_room(now);
                if room != Room::Full {
                    shard.db(0).set(&key(i), Entry::new(value()), now);
                }
                room
            })
            .collect()
    }

    fn alive(shard: &mut Shard, keys: impl Iterator<Item = usize>, now: u64) -> usize {
        keys.filter(|&i| shard.db(0).peek(&key(i), now).is_some())
            .count()
    }

    #[test]
    fn lru_keeps_the_keys_read_lately() {
        let mut shard = filled(Policy::AllKeysLru, 1000, |_| None);
        let now = 10_000;
        for i in 500..1000 {
            shard.db(0).lookup(&key(i), now);
        }
        write_more(&mut shard, 1000, 300, now + 1);
        assert!(shard.stats.evicted_keys >= 250, "{:?}", shard.stats);
        assert_eq!(shard.make_room(now + 1), Room::Fits);
        let hot = alive(&mut shard, 500..1000, now + 2);
        let cold = alive(&mut shard, 0..500, now + 2);
        assert!(hot >= 480, "hot survivors {hot}, cold {cold}");
        assert!(cold <= 250, "hot survivors {hot}, cold {cold}");
    }

    #[test]
    fn lfu_keeps_the_keys_read_often() {
        let mut shard = filled(Policy::AllKeysLfu, 1000, |_| None);
        let now = 10_000;
        for _ in 0..30 {
            for i in (0..1000).step_by(2) {
                shard.db(0).lookup(&key(i), now);
            }
        }
        write_more(&mut shard, 1000, 300, now);
        let hot = alive(&mut shard, (0..1000).step_by(2), now);
        let cold = alive(&mut shard, (1..1000).step_by(2), now);
        // New keys start with the same count as never-read ones, so the evictions fall on
        // the cold keys and the new ones alike.
        assert!(hot >= 480, "hot survivors {hot}, cold {cold}");
        assert!(cold <= 350, "hot survivors {hot}, cold {cold}");
    }

    #[test]
    fn fifo_evicts_the_oldest_writes_whatever_was_read() {
        let mut shard = filled(Policy::AllKeysFifo, 1000, |_| None);
        for i in 0..300 {
            shard.db(0).lookup(&key(i), 5000); // reads do not matter to FIFO
        }
        write_more(&mut shard, 1000, 300, 6000);
        let oldest = alive(&mut shard, 0..300, 6000);
        let newest = alive(&mut shard, 700..1300, 6000);
        assert!(oldest <= 100, "oldest survivors {oldest}");
        assert!(newest >= 590, "newest survivors {newest}");
    }

    #[test]
    fn volatile_policies_never_touch_keys_without_a_ttl() {
        for policy in [
            Policy::VolatileLru,
            Policy::VolatileLfu,
            Policy::VolatileRandom,
            Policy::VolatileTtl,
            Policy::VolatileFifo,
        ] {
            let mut shard = filled(policy, 1000, |i| (i % 4 == 0).then_some(1_000_000));
            let rooms = write_more(&mut shard, 1000, 600, 2000);
            assert_eq!(
                alive(&mut shard, (0..1000).filter(|i| i % 4 != 0), 2000),
                750,
                "{policy:?}"
            );
            assert_eq!(shard.db(0).volatile_len(), 0, "{policy:?}");
            assert_eq!(rooms.last(), Some(&Room::Full), "{policy:?}");
        }
    }

    #[test]
    fn volatile_ttl_evicts_the_nearest_expiry_first() {
        // Key i expires at 1_000_000 + i: the low ones go first.
        let mut shard = filled(Policy::VolatileTtl, 1000, |i| Some(1_000_000 + i as u64));
        // A key with a TTL frees about twice what a new key without one takes: some 300
        // evictions.
        write_more(&mut shard, 1000, 600, 2000);
        // Sampled, so approximate: the evictions fall mostly among the nearest expiries.
        let soonest = alive(&mut shard, 0..250, 2000);
        let latest = alive(&mut shard, 750..1000, 2000);
        assert!(
            soonest + 150 <= latest,
            "soonest {soonest}, latest {latest}"
        );
    }

    #[test]
    fn random_evicts_something_and_fits() {
        let mut shard = filled(Policy::AllKeysRandom, 1000, |_| None);
        write_more(&mut shard, 1000, 200, 2000);
        assert_eq!(shard.make_room(2000), Room::Fits);
        assert!(shard.stats.evicted_keys >= 150);
    }

    #[test]
    fn noeviction_refuses_and_keeps_everything() {
        let mut shard = filled(Policy::NoEviction, 100, |_| None);
        assert_eq!(shard.make_room(2000), Room::Fits);
        shard.db(0).set(&key(100), Entry::new(value()), 2000);
        assert_eq!(shard.make_room(2000), Room::Full);
        assert_eq!(shard.db(0).len(), 101);
        assert_eq!(shard.stats.evicted_keys, 0);
    }

    #[test]
    fn a_lower_limit_takes_effect_at_the_next_write() {
        let mut shard = filled(Policy::AllKeysLru, 1000, |_| None);
        let mut m = *shard.memory_policy();
        m.limit_bytes /= 2;
        shard.set_memory_policy(m);
        assert!(shard.over_limit());
        assert_eq!(shard.make_room(5000), Room::Fits);
        assert!(shard.used_bytes() <= m.limit_bytes);
        assert!(shard.db(0).len() < 600);
    }

    #[test]
    fn active_expiry_reclaims_keys_nobody_reads() {
        let mut shard = filled(Policy::NoEviction, 2000, |i| (i % 2 == 0).then_some(1500));
        let before = shard.used_bytes();
        let (checked, deleted) = shard.active_expire(10_000, || true);
        assert_eq!(deleted, 1000);
        assert!(checked >= 1000);
        assert_eq!(shard.db(0).len(), 1000);
        assert_eq!(shard.db(0).volatile_len(), 0);
        assert_eq!(shard.stats().expired_keys, 1000);
        assert!(shard.used_bytes() < before);
        assert!(shard.stats.expired_stale_perc > 0.0);
    }

    #[test]
    fn active_expiry_stops_when_few_keys_are_stale() {
        // 1 in 50 volatile keys expired: a pass checks a round or so and stops.
        let mut shard = filled(Policy::NoEviction, 5000, |i| {
            Some(if i % 50 == 0 { 1500 } else { 1_000_000 })
        });
        let (checked, _) = shard.active_expire(10_000, || true);
        assert!(checked <= 200, "checked {checked}");
        // Passes over time still reclaim them all.
        for _ in 0..2000 {
            shard.active_expire(10_000, || true);
        }
        assert_eq!(shard.db(0).len(), 4900);
    }

    #[test]
    fn active_expiry_respects_the_budget() {
        let mut shard = filled(Policy::NoEviction, 5000, |_| Some(1500));
        let mut asks = 0;
        let (checked, _) = shard.active_expire(10_000, || {
            asks += 1;
            false
        });
        assert_eq!(asks, 1);
        assert_eq!(
            checked as usize,
            EXPIRE_KEYS_PER_ROUND * EXPIRE_ROUNDS_PER_BUDGET_CHECK
        );
    }
}

/// The ring replayed into a fresh shard gives the same keys, values and expiry times: every
/// kind of change, including expiry and eviction deletions, is logged deterministically.
#[cfg(test)]
mod wal_tests {
    use super::*;
    use crate::evict::Rng;
    use crate::ops::{keys as key_ops, string as string_ops};
    use crate::value::{Entry, Value};
    use crate::wal::WalError;

    /// Every live key of every database: (db, key, value, expiry).
    fn contents(shard: &mut Shard, now: u64) -> Vec<(usize, Vec<u8>, Value, u64)> {
        let mut all = Vec::new();
        for db in 0..shard.databases() {
            for item in shard.db_ref(db).live_items(now) {
                all.push((
                    db,
                    item.key().to_vec(),
                    item.value().to_owned(),
                    item.expire_at_ms(),
                ));
            }
        }
        all.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        all
    }

    /// One random change (or read, or expiry cycle) of the kinds a client can make, on one
    /// of 300 keys in one of 4 databases, after making room under the shard's limit.
    fn churn(leader: &mut Shard, rng: &mut Rng, now: u64) {
        let db = rng.below(4);
        let key = format!("k{}", rng.below(300)).into_bytes();
        leader.make_room(now);
        let d = leader.db(db);
        match rng.below(11) {
            0 | 1 => {
                let ttl = match rng.below(3) {
                    0 => string_ops::Ttl::At(now + 1 + rng.below(200) as u64),
                    1 => string_ops::Ttl::Keep,
                    _ => string_ops::Ttl::Clear,
                };
                let value = vec![b'a' + rng.below(26) as u8; rng.below(80)];
                let opts = string_ops::SetOptions {
                    ttl,
                    ..Default::default()
                };
                let _ = string_ops::set(d, &key, &value, opts, now);
            }
            2 => {
                let _ = string_ops::incr_by(d, &key, rng.below(10) as i64 - 5, now);
            }
            3 => {
                let _ = string_ops::incr_by_float(d, &key, b"0.1", now);
            }
            4 => {
                let _ = string_ops::append(d, &key, b"tail", 1 << 20, now);
            }
            5 => {
                let _ = string_ops::setrange(d, &key, rng.below(10), b"xy", 1 << 20, now);
            }
            6 => {
                key_ops::del(d, &key, now);
            }
            7 => {
                let at = now + rng.below(100) as u64;
                key_ops::expire_at(d, &key, at, Default::default(), now);
            }
            8 => {
                key_ops::persist(d, &key, now);
            }
            9 => {
                let _ = string_ops::get(d, &key, now); // lazy expiry
            }
            _ if rng.below(200) == 0 => d.flush(),
            _ => {
                leader.active_expire(now, || true);
            }
        }
    }

    #[test]
    fn replaying_the_ring_rebuilds_the_same_data() {
        for seed in 1..=5u64 {
            let mut leader = Shard::new(4);
            // The ring counts against the limit: keep it to 500 records (read as we go) and
            // leave the data about 70 KB.
            leader.set_wal_limits(WalLimits {
                max_entries: 500,
                max_bytes: usize::MAX,
            });
            leader.set_memory_policy(MemoryPolicy {
                policy: Policy::AllKeysLru,
                limit_bytes: 110_000,
                ..MemoryPolicy::default()
            });
            let follower_ring = leader.wal_mut().register_reader_at(1);
            let mut records = Vec::new();
            let mut rng = Rng::new(seed);
            let mut now = 1_000_000u64;
            for step in 0..20_000 {
                if step % 100 == 0 {
                    records.extend(leader.wal_mut().read(follower_ring, usize::MAX).unwrap());
                }
                now += rng.below(3) as u64;
                churn(&mut leader, &mut rng, now);
            }
            assert!(leader.stats.evicted_keys > 100, "the limit was reached");
            assert!(leader.stats().expired_keys > 100, "keys expired");
            assert!(
                (0..4).map(|db| leader.db_ref(db).len()).sum::<usize>() > 300,
                "the data is not all evicted"
            );
            let mut follower = Shard::new(4);
            records.extend(leader.wal_mut().read(follower_ring, usize::MAX).unwrap());
            assert_eq!(records.len() as u64, leader.wal().head());
            assert!(records
                .iter()
                .enumerate()
                .all(|(i, (seq, _))| *seq == i as u64 + 1));
            for (_, op) in &records {
                follower.apply(op);
            }
            let (a, b) = (contents(&mut leader, now), contents(&mut follower, now));
            let first_difference = a.iter().zip(&b).find(|(x, y)| x != y);
            assert!(
                a.len() == b.len() && first_difference.is_none(),
                "seed {seed}: {} keys vs {}, first difference {first_difference:?}",
                a.len(),
                b.len()
            );
        }
    }

    #[test]
    fn a_reader_that_falls_behind_is_told() {
        let mut shard = Shard::new(1);
        shard.set_wal_limits(WalLimits {
            max_entries: 10,
            max_bytes: usize::MAX,
        });
        let reader = shard.wal_mut().register_reader();
        for i in 0..20 {
            shard
                .db(0)
                .set(format!("k{i}").as_bytes(), Entry::new(Value::Int(i)), 0);
        }
        assert!(matches!(
            shard.wal_mut().read(reader, 100),
            Err(WalError::FellBehind {
                wanted: 1,
                oldest: 11
            })
        ));
        assert_eq!(shard.wal().lags().collect::<Vec<_>>(), vec![20]);
    }

    /// Reads an image's frames (a core's capture output) back as sorted contents.
    fn read_image(part: &[u8], now: u64) -> Vec<(usize, Vec<u8>, Value, u64)> {
        let mut file = Vec::new();
        crate::snapshot::write_start(&mut file, 1, 4, 0, vec![0]).unwrap();
        file.extend_from_slice(part);
        let mut reader = crate::snapshot::SnapshotReader::open(&file[..]).unwrap().0;
        let mut all = Vec::new();
        let mut keys = 0;
        // No FileEnd: read entries until the core's end.
        while let Ok(Some(frame)) = reader.next_entry() {
            if let crate::snapshot::Frame::Entry {
                db,
                key,
                value,
                expire_at_ms,
            } = frame
            {
                let entry = crate::wal::Op::entry(&value, expire_at_ms);
                if !entry.is_expired(now) {
                    all.push((db as usize, key, entry.value, expire_at_ms));
                }
                keys += 1;
            }
        }
        assert!(keys >= all.len());
        all.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        all
    }

    /// A capture taken while the shard keeps changing (writes, deletes, expiry, eviction,
    /// FLUSHDB) holds exactly the data as it was when it started; the next capture, started
    /// after more changes, holds the data as it was then.
    #[test]
    fn a_capture_is_the_data_as_it_was_at_its_start() {
        for seed in 1..=5u64 {
            let mut shard = Shard::new(4);
            shard.set_memory_policy(MemoryPolicy {
                policy: Policy::AllKeysLru,
                limit_bytes: 150_000,
                ..MemoryPolicy::default()
            });
            let mut rng = Rng::new(seed);
            let mut now = 1_000_000u64;
            for round in 0..3 {
                for _ in 0..5_000 {
                    now += rng.below(3) as u64;
                    churn(&mut shard, &mut rng, now);
                }
                let want = contents(&mut shard, now);
                assert!(want.len() > 200, "seed {seed}: {} keys", want.len());
                let start = now;
                let ticket = shard.capture_start(0, now).unwrap();
                assert_eq!(shard.capture_start(0, now), Err(CaptureBusy));
                let mut image = Vec::new();
                let mut changes = 0;
                loop {
                    for _ in 0..rng.below(400) {
                        now += rng.below(3) as u64;
                        churn(&mut shard, &mut rng, now);
                        changes += 1;
                    }
                    let done = shard.capture_step(ticket, 64 + rng.below(2000)).unwrap();
                    image.extend(shard.capture_take(ticket).unwrap());
                    if done {
                        break;
                    }
                }
                assert!(
                    changes > 300,
                    "seed {seed} round {round}: {changes} changes"
                );
                let got = read_image(&image, start);
                assert_eq!(
                    got.len(),
                    want.len(),
                    "seed {seed} round {round}: image holds {} keys, wanted {}",
                    got.len(),
                    want.len()
                );
                assert!(got == want, "seed {seed} round {round}: image differs");
                assert!(!shard.capture().is_active());
            }
            // An aborted capture leaves the marks as a finished one does: the next image is
            // whole.
            let aborted = shard.capture_start(0, now).unwrap();
            shard.capture_step(aborted, 100).unwrap();
            churn(&mut shard, &mut rng, now);
            shard.capture_abort(aborted);
            let want = contents(&mut shard, now);
            let ticket = shard.capture_start(0, now).unwrap();
            // The aborted capture's writer can no longer touch the new one.
            assert_eq!(shard.capture_step(aborted, 100), Err(CaptureLost));
            shard.capture_abort(aborted);
            assert!(shard.capture().is_active());
            let mut image = Vec::new();
            while !shard.capture_step(ticket, 4096).unwrap() {
                image.extend(shard.capture_take(ticket).unwrap());
            }
            image.extend(shard.capture_take(ticket).unwrap());
            assert!(
                read_image(&image, now) == want,
                "seed {seed}: after an abort"
            );
        }
    }
}
