//! One numbered database on one shard: the keyspace, expiry (lazy and sampled), eviction
//! metadata, memory accounting and WATCH bookkeeping.
//!
//! Every change to a key goes through [`Db::update`], [`Db::set`], [`Db::remove`],
//! [`Db::set_expiry`] or [`Db::flush`], so that a client watching the key is marked dirty,
//! the volatile index and the byte count stay right, in exactly one place each.

use crate::capture::Capture;
use crate::evict::{self, Rng, Tracking};
use crate::item::Item;
use crate::keyspace::{Found, Keyspace};
use crate::memory;
use crate::value::Entry;
use crate::wal::{DelReason, Op, WalRing};
use hashbrown::{HashMap, HashSet};
use indexmap::IndexSet;
use std::cell::RefCell;
use std::rc::Rc;

/// A client's identity as the connection layer numbers it.
pub type ClientId = u64;

#[derive(Default, Debug, Clone, Copy)]
pub struct DbStats {
    /// Keys removed because their TTL had passed.
    pub expired_keys: u64,
    pub keyspace_hits: u64,
    pub keyspace_misses: u64,
    /// Keys written or removed (Redis's `dirty`); CONFIG RESETSTAT leaves it alone.
    pub changes: u64,
}

#[derive(Debug, Clone, Copy)]
struct Watcher {
    client: ClientId,
    /// Redis 7: deleting a key that had already expired when it was watched is no change.
    expired_at_watch: bool,
}

/// How reads and writes stamp an entry's `access` field (the shard's policy, copied).
#[derive(Debug, Clone, Copy)]
pub struct AccessRules {
    pub tracking: Tracking,
    pub lfu_log_factor: u32,
    pub lfu_decay_minutes: u32,
}

impl Default for AccessRules {
    fn default() -> Self {
        AccessRules {
            tracking: Tracking::Lru,
            lfu_log_factor: 10,
            lfu_decay_minutes: 1,
        }
    }
}

/// How an eviction candidate ranks: higher goes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rank {
    Idle,
    Frequency,
    WriteAge,
    Ttl,
}

pub struct Db {
    keys: Keyspace,
    /// Keys with a TTL, for sampling by active expiry and the volatile-* policies, and for
    /// INFO keyspace's `expires=`.
    volatile: IndexSet<Box<[u8]>, foldhash::fast::RandomState>,
    /// Heap bytes of every key, value and volatile-index entry (the table is counted by
    /// the keyspace).
    heap_bytes: usize,
    rules: AccessRules,
    /// Writes so far, wrapping: the FIFO stamp.
    write_seq: u32,
    rng: Rng,
    /// Key → clients that WATCH it, each with whether the key was already expired (but
    /// not yet deleted) when it was watched. Empty for nearly every workload, so a write
    /// pays one `is_empty` check.
    watchers: HashMap<Box<[u8]>, Vec<Watcher>>,
    /// Clients one of whose watched keys has changed since they watched it.
    dirty: HashSet<ClientId>,
    pub stats: DbStats,
    /// This database's number, for the records it logs.
    index: u32,
    /// The shard's ring, shared by its databases: every change is logged there.
    wal: Rc<RefCell<WalRing>>,
    /// The shard's point-in-time capture: an item still in a running capture's image is
    /// handed to it before it changes.
    capture: Rc<Capture>,
}

/// What a rewrite logs: the whole new entry, or only its new expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relog {
    Entry,
    Expiry,
}

/// What a probe counts: nothing, a read, a read that also counts a hit or miss, a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    None,
    Read,
    ReadCounted,
    Write,
}

/// The `access` stamp of an entry just read or written, under `rules`.
fn stamp(
    rules: &AccessRules,
    rng: &mut Rng,
    write_seq: &mut u32,
    access: u32,
    now_ms: u64,
    write: bool,
) -> u32 {
    match rules.tracking {
        Tracking::Lru => evict::lru_clock(now_ms),
        Tracking::Lfu => {
            let counter = evict::lfu_decayed(access, now_ms, rules.lfu_decay_minutes);
            evict::lfu_pack(
                now_ms,
                evict::lfu_log_incr(counter, rules.lfu_log_factor, rng.next_f64()),
            )
        }
        Tracking::Fifo if write => {
            *write_seq = write_seq.wrapping_add(1);
            *write_seq
        }
        Tracking::Fifo => access,
    }
}

/// Marks the watchers of a changed key dirty. A watcher that saw the key already expired
/// is not disturbed when that expired key is deleted (`gone`): logically no change.
fn touch(
    watchers: &mut HashMap<Box<[u8]>, Vec<Watcher>>,
    dirty: &mut HashSet<ClientId>,
    key: &[u8],
    gone: bool,
) {
    if watchers.is_empty() {
        return;
    }
    if let Some(list) = watchers.get_mut(key) {
        for w in list {
            if w.expired_at_watch && gone {
                w.expired_at_watch = false;
            } else {
                dirty.insert(w.client);
            }
        }
    }
}

impl Default for Db {
    fn default() -> Self {
        Db::new()
    }
}

impl Db {
    /// A database logging to a ring of its own (for tests and tools).
    pub fn new() -> Db {
        Db::of_shard(
            0,
            Rc::new(RefCell::new(WalRing::default())),
            Rc::new(Capture::default()),
        )
    }

    /// Database number `index` of a shard whose ring is `wal` and capture `capture`.
    pub fn of_shard(index: usize, wal: Rc<RefCell<WalRing>>, capture: Rc<Capture>) -> Db {
        Db {
            index: index as u32,
            wal,
            capture,
            keys: Keyspace::new(),
            volatile: IndexSet::default(),
            heap_bytes: 0,
            rules: AccessRules::default(),
            write_seq: 0,
            rng: Rng::new(0x9e37_79b9_7f4a_7c15),
            watchers: HashMap::new(),
            dirty: HashSet::new(),
            stats: DbStats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn volatile_len(&self) -> usize {
        self.volatile.len()
    }

    /// Bytes this database's data uses: tables, keys, values, the volatile index.
    pub fn used_bytes(&self) -> usize {
        self.keys.table_bytes() + self.heap_bytes
    }

    /// Bytes of the hash table alone (MEMORY STATS's `overhead.hashtable.main`).
    pub fn table_bytes(&self) -> usize {
        self.keys.table_bytes()
    }

    pub fn set_access_rules(&mut self, rules: AccessRules) {
        self.rules = rules;
    }

    /// Reads a key and counts the access for eviction; an expired key is deleted on the way
    /// and reported missing.
    pub fn lookup(&mut self, key: &[u8], now_ms: u64) -> Option<&Item> {
        self.find(key, now_ms, Access::Read).map(|e| &*e)
    }

    /// Reads a key without counting an access (OBJECT, TYPE-like introspection); an expired
    /// key is still deleted on the way.
    pub fn peek(&mut self, key: &[u8], now_ms: u64) -> Option<&Item> {
        self.find(key, now_ms, Access::None).map(|e| &*e)
    }

    /// Like [`Db::lookup`], and counts a keyspace hit or miss (for reads by GET-like commands).
    pub fn lookup_counted(&mut self, key: &[u8], now_ms: u64) -> Option<&Item> {
        let found = self.find(key, now_ms, Access::ReadCounted);
        found.map(|e| &*e)
    }

    pub fn exists(&mut self, key: &[u8], now_ms: u64) -> bool {
        self.lookup(key, now_ms).is_some()
    }

    /// The one probe behind every read and in-place write: finds the key, deletes it if it
    /// has expired, and stamps the access.
    fn find(&mut self, key: &[u8], now_ms: u64, access: Access) -> Option<&mut Item> {
        let hash = self.keys.hash(key);
        match self
            .keys
            .find_or_remove(hash, key, |s| s.is_expired(now_ms))
        {
            Found::Live(slot) => {
                if access == Access::ReadCounted {
                    self.stats.keyspace_hits += 1;
                }
                if access != Access::None {
                    slot.set_access(stamp(
                        &self.rules,
                        &mut self.rng,
                        &mut self.write_seq,
                        slot.access(),
                        now_ms,
                        access == Access::Write,
                    ));
                }
                Some(slot)
            }
            Found::Removed(old) => {
                self.capture.preserve(self.index as usize, &old);
                let index = self.index;
                self.wal.borrow_mut().log(|| Op::Del {
                    db: index,
                    key: key.to_vec(),
                    why: DelReason::Expired,
                });
                self.stats.expired_keys += 1;
                self.stats.changes += 1;
                self.heap_bytes -= memory::item_heap_bytes(&old);
                self.volatile.swap_remove(key);
                touch(&mut self.watchers, &mut self.dirty, key, true);
                if access == Access::ReadCounted {
                    self.stats.keyspace_misses += 1;
                }
                None
            }
            Found::Missing => {
                if access == Access::ReadCounted {
                    self.stats.keyspace_misses += 1;
                }
                None
            }
        }
    }

    /// Changes a live key; returns `None` (and calls nothing) if it is missing. This counts
    /// as a write for WATCH, so call it only once the change is certain (check with
    /// [`Db::lookup`] first). Do not change `expire_at_ms` here: use [`Db::set_expiry`].
    pub fn update<R>(
        &mut self,
        key: &[u8],
        now_ms: u64,
        change: impl FnOnce(&mut Entry) -> R,
    ) -> Option<R> {
        self.rewrite(key, now_ms, Relog::Entry, |e| {
            let expiry = e.expire_at_ms;
            let r = change(e);
            debug_assert_eq!(expiry, e.expire_at_ms, "use set_expiry");
            r
        })
    }

    /// Takes a live key's item apart, lets `change` edit the entry, and stores it again in
    /// the same place, keeping the byte count, the volatile index and WATCH right.
    fn rewrite<R>(
        &mut self,
        key: &[u8],
        now_ms: u64,
        relog: Relog,
        change: impl FnOnce(&mut Entry) -> R,
    ) -> Option<R> {
        self.find(key, now_ms, Access::Write)?;
        let hash = self.keys.hash(key);
        let mut result = None;
        let (mut before, mut after) = (0, 0);
        let (mut was_volatile, mut is_volatile) = (false, false);
        let mut op = None;
        let index = self.index as usize;
        let keeping = self.wal.borrow().keeping();
        let capture = &self.capture;
        self.keys.replace_with(hash, key, |item| {
            capture.preserve(index, &item);
            before = memory::item_heap_bytes(&item);
            was_volatile = item.is_volatile();
            let mut entry = item.into_entry();
            result = Some(change(&mut entry));
            is_volatile = entry.is_volatile();
            op = keeping.then(|| match relog {
                Relog::Entry => Op::set(index, key, &entry),
                Relog::Expiry => Op::Expire {
                    db: index as u32,
                    key: key.to_vec(),
                    at_ms: entry.expire_at_ms,
                },
            });
            let mut new = Item::new(key, entry);
            new.set_snap_mark(capture.mark());
            after = memory::item_heap_bytes(&new);
            new
        });
        match op {
            Some(op) => {
                self.wal.borrow_mut().append(&op);
            }
            None => {
                self.wal.borrow_mut().skip();
            }
        }
        self.heap_bytes = self.heap_bytes + after - before;
        match (was_volatile, is_volatile) {
            (false, true) => {
                self.volatile.insert(key.into());
            }
            (true, false) => {
                self.volatile.swap_remove(key);
            }
            _ => {}
        }
        self.stats.changes += 1;
        touch(&mut self.watchers, &mut self.dirty, key, false);
        result
    }

    /// Stores `entry` under `key`; returns the live item it replaced.
    pub fn set(&mut self, key: &[u8], mut entry: Entry, now_ms: u64) -> Option<Item> {
        let hash = self.keys.hash(key);
        // Only LFU carries anything over from the entry being replaced.
        let previous = match self.rules.tracking {
            Tracking::Lfu => self.keys.get_hashed(hash, key).map(Item::access),
            _ => None,
        };
        entry.access = match (self.rules.tracking, previous) {
            (Tracking::Lfu, None) => evict::lfu_pack(now_ms, evict::LFU_INIT_VAL),
            // Redis keeps the frequency of a key that is overwritten, and counts the write.
            (_, old) => stamp(
                &self.rules,
                &mut self.rng,
                &mut self.write_seq,
                old.unwrap_or(0),
                now_ms,
                true,
            ),
        };
        let index = self.index as usize;
        self.wal.borrow_mut().log(|| Op::set(index, key, &entry));
        let mut item = Item::new(key, entry);
        item.set_snap_mark(self.capture.mark());
        self.heap_bytes += memory::item_heap_bytes(&item);
        if item.is_volatile() {
            self.volatile.insert(key.into());
        }
        let old = self.keys.insert_item(hash, item);
        self.touch(key);
        let old = old?;
        self.capture.preserve(index, &old);
        self.forget(key, &old);
        if old.is_expired(now_ms) {
            self.stats.expired_keys += 1;
            return None;
        }
        Some(old)
    }

    /// Undoes the accounting of an item that has left the table (removed or replaced).
    fn forget(&mut self, key: &[u8], old: &Item) {
        self.heap_bytes -= memory::item_heap_bytes(old);
        if old.is_volatile() && !matches!(self.keys.get(key), Some(s) if s.is_volatile()) {
            self.volatile.swap_remove(key);
        }
    }

    /// Removes a key; returns its item if it was live.
    pub fn remove(&mut self, key: &[u8], now_ms: u64) -> Option<Item> {
        self.remove_for(key, now_ms, DelReason::Command)
    }

    /// Removes a key for the reason given (an expired key is logged as expired whatever
    /// the reason); returns its item if it was live.
    pub fn remove_for(&mut self, key: &[u8], now_ms: u64, why: DelReason) -> Option<Item> {
        let old = self.keys.remove(key)?;
        self.capture.preserve(self.index as usize, &old);
        let why = if old.is_expired(now_ms) {
            DelReason::Expired
        } else {
            why
        };
        let index = self.index;
        self.wal.borrow_mut().log(|| Op::Del {
            db: index,
            key: key.to_vec(),
            why,
        });
        self.touch(key);
        self.forget(key, &old);
        if old.is_expired(now_ms) {
            self.stats.expired_keys += 1;
            return None;
        }
        Some(old)
    }

    /// Sets or clears (`0`) a live key's expiry time. Returns false if the key is missing.
    pub fn set_expiry(&mut self, key: &[u8], expire_at_ms: u64, now_ms: u64) -> bool {
        self.rewrite(key, now_ms, Relog::Expiry, |e| {
            e.expire_at_ms = expire_at_ms
        })
        .is_some()
    }

    /// Drops every key. Watchers of keys that existed are marked dirty, except where the
    /// key had already expired when watched (Redis 7's rule).
    pub fn flush(&mut self) {
        self.wal.borrow_mut().log(|| Op::FlushDb { db: self.index });
        self.stats.changes += self.keys.len() as u64;
        for (key, watchers) in &mut self.watchers {
            if self.keys.get(key).is_none() {
                continue;
            }
            for w in watchers {
                if w.expired_at_watch {
                    w.expired_at_watch = false;
                } else {
                    self.dirty.insert(w.client);
                }
            }
        }
        if self.capture.is_active() {
            // What the running capture has not written yet goes on being written from the
            // detached table.
            let old = std::mem::take(&mut self.keys);
            self.capture.detach(self.index as usize, old);
        } else {
            self.keys.clear();
        }
        self.volatile = IndexSet::default();
        self.heap_bytes = 0;
    }

    /// Counts a change to `key` and marks its watchers dirty; called after a key is written
    /// or removed.
    fn touch(&mut self, key: &[u8]) {
        self.stats.changes += 1;
        if self.watchers.is_empty() {
            return;
        }
        let gone = self.keys.get(key).is_none();
        touch(&mut self.watchers, &mut self.dirty, key, gone);
    }

    /// One round of active expiry: checks up to `count` keys with a TTL picked at random
    /// and deletes those whose time has passed. Returns (checked, deleted).
    pub fn expire_sample(&mut self, count: usize, now_ms: u64) -> (usize, usize) {
        let mut checked = 0;
        let mut expired = 0;
        while checked < count && !self.volatile.is_empty() {
            let i = self.rng.below(self.volatile.len());
            let key = self.volatile[i].clone();
            checked += 1;
            if matches!(self.keys.get(&key), Some(s) if s.is_expired(now_ms)) {
                self.remove(&key, now_ms);
                expired += 1;
            }
        }
        (checked, expired)
    }

    /// Offers eviction candidates: `samples` keys picked at random (only keys with a TTL
    /// when `volatile_only`), each with its rank score (higher: evict sooner). An expired
    /// key scores highest of all.
    pub fn eviction_candidates(
        &mut self,
        samples: usize,
        volatile_only: bool,
        rank: Rank,
        now_ms: u64,
        mut offer: impl FnMut(u64, &[u8]),
    ) {
        let decay = self.rules.lfu_decay_minutes;
        let seq = self.write_seq;
        let score = move |e: &Item| -> u64 {
            if e.is_expired(now_ms) {
                return u64::MAX;
            }
            match rank {
                Rank::Idle => evict::lru_idle_ms(e.access(), now_ms),
                Rank::Frequency => 255 - evict::lfu_decayed(e.access(), now_ms, decay) as u64,
                Rank::WriteAge => seq.wrapping_sub(e.access()) as u64,
                Rank::Ttl => u64::MAX - 1 - e.expire_at_ms(),
            }
        };
        if volatile_only {
            for _ in 0..samples.min(self.volatile.len()) {
                let key = &self.volatile[self.rng.below(self.volatile.len())];
                if let Some(s) = self.keys.get(key) {
                    offer(score(s), s.key());
                }
            }
        } else {
            let seed = self.rng.next_u64();
            self.keys
                .sample(seed, samples, |s| offer(score(s), s.key()));
        }
    }

    /// A key picked at random for the random policies (only among keys with a TTL when
    /// `volatile_only`).
    pub fn random_victim(&mut self, volatile_only: bool) -> Option<Box<[u8]>> {
        if volatile_only {
            if self.volatile.is_empty() {
                return None;
            }
            let i = self.rng.below(self.volatile.len());
            return Some(self.volatile[i].clone());
        }
        let seed = self.rng.next_u64();
        self.keys.random(seed).map(|s| s.key().into())
    }

    /// One SCAN step; see [`Keyspace::scan`]. Expired keys are skipped, not returned.
    pub fn scan(
        &self,
        pos: u64,
        count: usize,
        now_ms: u64,
        mut visit: impl FnMut(&Item),
    ) -> Option<u64> {
        self.keys.scan(pos, count, |s| {
            if !s.is_expired(now_ms) {
                visit(s)
            }
        })
    }

    /// Every live key. For KEYS and FLUSH-time bookkeeping; O(n).
    /// One step of the shard's capture walk over this database (see [`Capture`]).
    pub(crate) fn capture_walk(&mut self, pos: u64, write: bool) -> Option<u64> {
        self.capture
            .walk(self.index as usize, &mut self.keys, pos, write)
    }

    pub fn live_items(&self, now_ms: u64) -> impl Iterator<Item = &Item> {
        self.keys.iter().filter(move |s| !s.is_expired(now_ms))
    }

    /// A random live key, deleting expired ones it meets (bounded tries, as Redis does).
    pub fn random_key(&mut self, now_ms: u64, mut seed: u64) -> Option<Box<[u8]>> {
        for _ in 0..100 {
            let slot = self.keys.random(seed)?;
            if !slot.is_expired(now_ms) {
                return Some(slot.key().into());
            }
            let key: Box<[u8]> = slot.key().into();
            self.remove(&key, now_ms);
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
        }
        None
    }

    /// Starts watching `key` for `client`.
    pub fn watch(&mut self, key: &[u8], client: ClientId, now_ms: u64) {
        let expired_at_watch = matches!(self.keys.get(key), Some(s) if s.is_expired(now_ms));
        let list = self.watchers.entry(key.into()).or_default();
        if !list.iter().any(|w| w.client == client) {
            list.push(Watcher {
                client,
                expired_at_watch,
            });
        }
    }

    /// Stops all of `client`'s watches on the given keys and forgets whether it was dirty.
    pub fn unwatch(&mut self, keys: &[Vec<u8>], client: ClientId) {
        for key in keys {
            if let Some(list) = self.watchers.get_mut(key.as_slice()) {
                list.retain(|w| w.client != client);
                if list.is_empty() {
                    self.watchers.remove(key.as_slice());
                }
            }
        }
        self.dirty.remove(&client);
    }

    /// Whether a key `client` watches has changed, or has expired by `now_ms` (a key that
    /// was already expired when watched does not count).
    pub fn watch_broken(&mut self, keys: &[Vec<u8>], client: ClientId, now_ms: u64) -> bool {
        if self.dirty.contains(&client) {
            return true;
        }
        keys.iter().any(|k| {
            let expired_at_watch = self
                .watchers
                .get(k.as_slice())
                .is_some_and(|ws| ws.iter().any(|w| w.client == client && w.expired_at_watch));
            !expired_at_watch && matches!(self.keys.get(k), Some(s) if s.is_expired(now_ms))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    fn e(v: i64, exp: u64) -> Entry {
        Entry::with_expiry(Value::Int(v), exp)
    }

    /// The byte count and the volatile index always match the keys actually stored, through
    /// a seeded mix of every kind of change.
    #[test]
    fn accounting_follows_every_change() {
        let mut db = Db::new();
        let mut rng = Rng::new(42);
        for step in 0..20_000u64 {
            let now = step;
            let key = format!("k{}", rng.below(500)).into_bytes();
            match rng.below(8) {
                0 | 1 => {
                    let len = rng.below(100);
                    let ttl = if rng.below(3) == 0 {
                        now + 1 + rng.below(50) as u64
                    } else {
                        0
                    };
                    db.set(
                        &key,
                        Entry::with_expiry(Value::from_bytes(&vec![b'x'; len]), ttl),
                        now,
                    );
                }
                2 => {
                    db.remove(&key, now);
                }
                3 => {
                    db.update(&key, now, |e| e.value.make_raw().extend_from_slice(b"more"));
                }
                4 => {
                    let at = if rng.below(2) == 0 { 0 } else { now + 10 };
                    db.set_expiry(&key, at, now);
                }
                5 => {
                    db.lookup(&key, now);
                }
                6 => {
                    db.expire_sample(5, now);
                }
                _ if rng.below(500) == 0 => db.flush(),
                _ => {}
            }
            if step % 1000 == 0 || step == 19_999 {
                let heap: usize = db.keys.iter().map(memory::item_heap_bytes).sum();
                assert_eq!(db.heap_bytes, heap, "step {step}");
                let volatile = db.keys.iter().filter(|s| s.is_volatile()).count();
                assert_eq!(db.volatile.len(), volatile, "step {step}");
                assert!(db.volatile.iter().all(|k| db.keys.get(k).is_some()));
            }
        }
    }

    #[test]
    fn lazy_expiry_hides_and_counts() {
        let mut db = Db::new();
        db.set(b"a", e(1, 100), 0);
        assert_eq!(db.volatile_len(), 1);
        // Redis: a key is expired once now > its expiry time.
        assert!(db.lookup(b"a", 100).is_some());
        assert!(db.lookup(b"a", 101).is_none());
        assert_eq!(db.len(), 0);
        assert_eq!(db.volatile_len(), 0);
        assert_eq!(db.stats.expired_keys, 1);
    }

    #[test]
    fn set_over_expired_reports_nothing_replaced() {
        let mut db = Db::new();
        db.set(b"a", e(1, 100), 0);
        assert!(db.set(b"a", e(2, 0), 200).is_none());
        assert_eq!(db.volatile_len(), 0);
    }

    #[test]
    fn watch_marks_dirty_on_every_kind_of_change() {
        let mut db = Db::new();
        let keys = vec![b"w".to_vec()];
        db.watch(b"w", 7, 0);
        assert!(!db.watch_broken(&keys, 7, 0));
        db.set(b"other", e(1, 0), 0);
        assert!(!db.watch_broken(&keys, 7, 0));
        db.set(b"w", e(1, 0), 0);
        assert!(db.watch_broken(&keys, 7, 0));
        db.unwatch(&keys, 7);
        db.watch(b"w", 7, 0);
        db.remove(b"w", 0);
        assert!(db.watch_broken(&keys, 7, 0));
        db.unwatch(&keys, 7);
        db.watch(b"w", 7, 0);
        db.flush(); // the key does not exist: nothing changed
        assert!(!db.watch_broken(&keys, 7, 0));
        db.set(b"w", e(1, 0), 0);
        db.unwatch(&keys, 7);
        db.watch(b"w", 7, 0);
        db.flush();
        assert!(db.watch_broken(&keys, 7, 0));
    }

    #[test]
    fn a_key_already_expired_when_watched_does_not_break_the_watch() {
        // Redis 7 (multi.c, isWatchedKeyExpired and touchWatchedKey).
        let mut db = Db::new();
        let keys = vec![b"w".to_vec()];
        db.set(b"w", e(1, 50), 0);
        db.watch(b"w", 1, 60);
        assert!(!db.watch_broken(&keys, 1, 70));
        assert!(db.lookup(b"w", 70).is_none()); // lazily deleted: still no change
        assert!(!db.watch_broken(&keys, 1, 70));
        db.set(b"w", e(2, 0), 70); // written afterwards: a change
        assert!(db.watch_broken(&keys, 1, 70));
    }

    #[test]
    fn watched_key_that_expires_breaks_the_watch() {
        let mut db = Db::new();
        let keys = vec![b"w".to_vec()];
        db.set(b"w", e(1, 50), 0);
        db.watch(b"w", 1, 0);
        assert!(!db.watch_broken(&keys, 1, 10));
        assert!(db.watch_broken(&keys, 1, 60));
    }
}
