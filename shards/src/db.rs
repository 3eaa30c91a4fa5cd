//! One numbered database on one shard: the keyspace, lazy expiry and WATCH bookkeeping.
//!
//! Every change to a key goes through [`Db::lookup_mut`], [`Db::set`], [`Db::remove`] or
//! [`Db::flush`], so that a client watching the key is marked dirty in exactly one place.

use crate::keyspace::{Keyspace, Slot};
use crate::value::Entry;
use hashbrown::{HashMap, HashSet};

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

#[derive(Default)]
pub struct Db {
    keys: Keyspace,
    /// Keys with a TTL; kept so INFO keyspace can report `expires=` without a walk.
    volatile: usize,
    /// Key → clients that WATCH it, each with whether the key was already expired (but
    /// not yet deleted) when it was watched. Empty for nearly every workload, so a write
    /// pays one `is_empty` check.
    watchers: HashMap<Box<[u8]>, Vec<Watcher>>,
    /// Clients one of whose watched keys has changed since they watched it.
    dirty: HashSet<ClientId>,
    pub stats: DbStats,
}

impl Db {
    pub fn new() -> Db {
        Db::default()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn volatile_len(&self) -> usize {
        self.volatile
    }

    /// Reads a key; an expired key is deleted on the way and reported missing.
    pub fn lookup(&mut self, key: &[u8], now_ms: u64) -> Option<&Entry> {
        let hash = self.expire_if_due(key, now_ms);
        self.keys.get_hashed(hash, key).map(|s| &s.entry)
    }

    /// Like [`Db::lookup`], and counts a keyspace hit or miss (for reads by GET-like commands).
    pub fn lookup_counted(&mut self, key: &[u8], now_ms: u64) -> Option<&Entry> {
        let hash = self.expire_if_due(key, now_ms);
        match self.keys.get_hashed(hash, key) {
            Some(s) => {
                self.stats.keyspace_hits += 1;
                Some(&s.entry)
            }
            None => {
                self.stats.keyspace_misses += 1;
                None
            }
        }
    }

    pub fn exists(&mut self, key: &[u8], now_ms: u64) -> bool {
        self.lookup(key, now_ms).is_some()
    }

    /// A key about to be changed in place: this counts as a change for WATCH, so call it
    /// only once the write is certain to happen (check with [`Db::lookup`] first). The caller must keep `volatile` right: use
    /// [`Db::set_expiry`] to change a TTL, not this.
    pub fn lookup_mut(&mut self, key: &[u8], now_ms: u64) -> Option<&mut Entry> {
        let hash = self.expire_if_due(key, now_ms);
        if !self.watchers.is_empty() && self.keys.get_hashed(hash, key).is_some() {
            self.touch(key);
        }
        self.keys.get_mut_hashed(hash, key).map(|s| &mut s.entry)
    }

    /// Stores `entry` under `key`; returns the live entry it replaced.
    pub fn set(&mut self, key: &[u8], entry: Entry, now_ms: u64) -> Option<Entry> {
        if entry.is_volatile() {
            self.volatile += 1;
        }
        let old = self.keys.insert(key, entry);
        self.touch(key);
        let old = old?;
        if old.is_volatile() {
            self.volatile -= 1;
        }
        if old.is_expired(now_ms) {
            self.stats.expired_keys += 1;
            return None;
        }
        Some(old)
    }

    /// Removes a key; returns its entry if it was live.
    pub fn remove(&mut self, key: &[u8], now_ms: u64) -> Option<Entry> {
        let old = self.keys.remove(key)?;
        self.touch(key);
        if old.is_volatile() {
            self.volatile -= 1;
        }
        if old.is_expired(now_ms) {
            self.stats.expired_keys += 1;
            return None;
        }
        Some(old)
    }

    /// Sets or clears (`0`) a live key's expiry time. Returns false if the key is missing.
    pub fn set_expiry(&mut self, key: &[u8], expire_at_ms: u64, now_ms: u64) -> bool {
        let Some(e) = self.lookup_mut(key, now_ms) else {
            return false;
        };
        let was = e.is_volatile();
        e.expire_at_ms = expire_at_ms;
        match (was, expire_at_ms != 0) {
            (false, true) => self.volatile += 1,
            (true, false) => self.volatile -= 1,
            _ => {}
        }
        true
    }

    /// Drops every key. Watchers of keys that existed are marked dirty, except where the
    /// key had already expired when watched (Redis 7's rule).
    pub fn flush(&mut self) {
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
        self.keys.clear();
        self.volatile = 0;
    }

    /// Deletes `key` if its TTL has passed; returns the key's hash for the caller's lookup.
    fn expire_if_due(&mut self, key: &[u8], now_ms: u64) -> u64 {
        let hash = self.keys.hash(key);
        let due = matches!(self.keys.get_hashed(hash, key), Some(s) if s.entry.is_expired(now_ms));
        if due {
            self.remove(key, now_ms);
        }
        hash
    }

    /// Marks the watchers of `key` dirty; called after a key is written or removed.
    fn touch(&mut self, key: &[u8]) {
        self.stats.changes += 1;
        if self.watchers.is_empty() {
            return;
        }
        let gone = self.keys.get(key).is_none();
        if let Some(watchers) = self.watchers.get_mut(key) {
            for w in watchers {
                if w.expired_at_watch && gone {
                    // The expired key was deleted: logically no change.
                    w.expired_at_watch = false;
                } else {
                    self.dirty.insert(w.client);
                }
            }
        }
    }

    /// One SCAN step; see [`Keyspace::scan`]. Expired keys are skipped, not returned.
    pub fn scan(
        &self,
        pos: u64,
        count: usize,
        now_ms: u64,
        mut visit: impl FnMut(&Slot),
    ) -> Option<u64> {
        self.keys.scan(pos, count, |s| {
            if !s.entry.is_expired(now_ms) {
                visit(s)
            }
        })
    }

    /// Every live key. For KEYS and FLUSH-time bookkeeping; O(n).
    pub fn live_slots(&self, now_ms: u64) -> impl Iterator<Item = &Slot> {
        self.keys
            .iter()
            .filter(move |s| !s.entry.is_expired(now_ms))
    }

    /// A random live key, deleting expired ones it meets (bounded tries, as Redis does).
    pub fn random_key(&mut self, now_ms: u64, mut seed: u64) -> Option<Box<[u8]>> {
        for _ in 0..100 {
            let slot = self.keys.random(seed)?;
            if !slot.entry.is_expired(now_ms) {
                return Some(slot.key.clone());
            }
            let key = slot.key.clone();
            self.remove(&key, now_ms);
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
        }
        None
    }

    /// Starts watching `key` for `client`.
    pub fn watch(&mut self, key: &[u8], client: ClientId, now_ms: u64) {
        let expired_at_watch = matches!(self.keys.get(key), Some(s) if s.entry.is_expired(now_ms));
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
            !expired_at_watch && matches!(self.keys.get(k), Some(s) if s.entry.is_expired(now_ms))
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
