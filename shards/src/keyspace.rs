//! The keyspace of one database on one shard: an extendible hash table made of small
//! segments, each a hashbrown table of [`Item`]s (8 bytes per slot).
//!
//! Why segments and not one big table:
//! - a resize touches one segment of at most [`SEGMENT_MAX_ENTRIES`] entries, so a growing
//!   keyspace never stalls the core for a whole-table rehash;
//! - segments cover contiguous ranges of the 64-bit hash space (by its high bits), so a SCAN
//!   cursor can be a position in hash order: it stays valid across splits, and a key that is
//!   present for the whole of a scan is returned at least once, as Redis promises.
//!
//! The directory has `2^global_depth` entries, indexed by the top `global_depth` bits of a
//! key's hash; a segment of local depth `d` is pointed to by `2^(global_depth - d)`
//! consecutive entries.

use crate::item::Item;
use crate::value::Entry;
use hashbrown::HashTable;
use std::hash::BuildHasher;

/// A segment splits once it holds more entries than this. Bounds the work of a split, of a
/// SCAN step and of a random-key pick.
pub const SEGMENT_MAX_ENTRIES: usize = 2048;

/// Tables smaller than this (in slots) are never shrunk: not worth a rehash.
pub const SEGMENT_SHRINK_MIN_CAPACITY: usize = 64;

/// SCAN positions are kept at this granularity: the low bits of a hash are ignored when
/// deciding where a scan step stops, so a cursor fits beside a core index in 64 bits.
pub const SCAN_POSITION_SHIFT: u32 = 8;

/// What [`Keyspace::find_or_remove`] found.
pub enum Found<'a> {
    Live(&'a mut Item),
    Removed(Item),
    Missing,
}

struct Segment {
    depth: u32,
    table: HashTable<Item>,
}

pub struct Keyspace {
    hasher: foldhash::fast::RandomState,
    global_depth: u32,
    directory: Vec<u32>,
    segments: Vec<Segment>,
    len: usize,
    /// Bytes allocated by all segments' tables (slots used or not, control bytes), for
    /// memory accounting.
    table_bytes: usize,
}

impl Default for Keyspace {
    fn default() -> Self {
        Self::new()
    }
}

/// Halves a segment's table once it is less than a quarter full, so memory freed by deletes
/// and evictions is given back (hashbrown never shrinks by itself). Keeps `table_bytes`
/// right.
fn shrink_if_sparse(
    table: &mut HashTable<Item>,
    table_bytes: &mut usize,
    hasher: &foldhash::fast::RandomState,
) {
    let slots = table.allocation_size() / crate::memory::TABLE_SLOT_BYTES;
    if slots < SEGMENT_SHRINK_MIN_CAPACITY || table.len() * 4 >= slots {
        return;
    }
    let before = table.allocation_size();
    table.shrink_to(table.len() * 2, |it| hasher.hash_one(it.key()));
    *table_bytes = *table_bytes + table.allocation_size() - before;
}

impl Keyspace {
    pub fn new() -> Self {
        Keyspace {
            hasher: foldhash::fast::RandomState::default(),
            global_depth: 0,
            directory: vec![0],
            segments: vec![Segment {
                depth: 0,
                table: HashTable::new(),
            }],
            len: 0,
            table_bytes: 0,
        }
    }

    /// Bytes of the tables (every allocated slot) and the directory.
    pub fn table_bytes(&self) -> usize {
        self.table_bytes
            + self.directory.len() * std::mem::size_of::<u32>()
            + self.segments.len() * std::mem::size_of::<Segment>()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn segment_index(&self, hash: u64) -> usize {
        if self.global_depth == 0 {
            0
        } else {
            self.directory[(hash >> (64 - self.global_depth)) as usize] as usize
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<&Item> {
        self.get_hashed(self.hash(key), key)
    }

    /// [`Keyspace::get`] with the key's hash already computed by [`Keyspace::hash`].
    pub fn get_hashed(&self, hash: u64, key: &[u8]) -> Option<&Item> {
        let seg = &self.segments[self.segment_index(hash)];
        seg.table.find(hash, |it| it.key() == key)
    }

    pub fn get_mut_hashed(&mut self, hash: u64, key: &[u8]) -> Option<&mut Item> {
        let idx = self.segment_index(hash);
        self.segments[idx]
            .table
            .find_mut(hash, |it| it.key() == key)
    }

    /// Inserts or replaces; returns the item that was there.
    pub fn insert(&mut self, key: &[u8], entry: Entry) -> Option<Item> {
        self.insert_item(self.hash(key), Item::new(key, entry))
    }

    /// Inserts or replaces `item` (whose key hashes to `hash`); returns the item that was
    /// there.
    pub fn insert_item(&mut self, hash: u64, item: Item) -> Option<Item> {
        let idx = self.segment_index(hash);
        let hasher = self.hasher;
        let seg = &mut self.segments[idx];
        // `entry` reserves room before it looks, so it may grow the table even when the
        // key is already there: count from here, in both cases.
        let before = seg.table.allocation_size();
        let old = match seg.table.entry(
            hash,
            |it| it.key() == item.key(),
            |it| hasher.hash_one(it.key()),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut o) => {
                Some(std::mem::replace(o.get_mut(), item))
            }
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(item);
                self.len += 1;
                None
            }
        };
        self.table_bytes += self.segments[idx].table.allocation_size();
        self.table_bytes -= before;
        if old.is_none() && self.segments[idx].table.len() > SEGMENT_MAX_ENTRIES {
            self.split(idx);
        }
        old
    }

    /// Finds `key` and, in the same probe, removes it if `remove_if` says so (an expired
    /// key on its way to being read).
    pub fn find_or_remove(
        &mut self,
        hash: u64,
        key: &[u8],
        remove_if: impl FnOnce(&Item) -> bool,
    ) -> Found<'_> {
        let idx = self.segment_index(hash);
        match self.segments[idx]
            .table
            .find_entry(hash, |it| it.key() == key)
        {
            Err(_) => Found::Missing,
            Ok(o) if remove_if(o.get()) => {
                let (item, vacant) = o.remove();
                self.len -= 1;
                shrink_if_sparse(vacant.into_table(), &mut self.table_bytes, &self.hasher);
                Found::Removed(item)
            }
            Ok(o) => Found::Live(o.into_mut()),
        }
    }

    /// Replaces a stored item by `change(item)` in the same place (for a change of the
    /// value's size or form); false if the key is missing.
    pub fn replace_with(
        &mut self,
        hash: u64,
        key: &[u8],
        change: impl FnOnce(Item) -> Item,
    ) -> bool {
        let idx = self.segment_index(hash);
        match self.segments[idx]
            .table
            .find_entry(hash, |it| it.key() == key)
        {
            Err(_) => false,
            Ok(o) => {
                let (item, vacant) = o.remove();
                let new = change(item);
                debug_assert_eq!(new.key(), key);
                vacant.insert(new);
                true
            }
        }
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<Item> {
        self.remove_hashed(self.hash(key), key)
    }

    pub fn remove_hashed(&mut self, hash: u64, key: &[u8]) -> Option<Item> {
        let idx = self.segment_index(hash);
        let found = self.segments[idx]
            .table
            .find_entry(hash, |it| it.key() == key)
            .ok()?;
        let (item, _) = found.remove();
        self.len -= 1;
        shrink_if_sparse(
            &mut self.segments[idx].table,
            &mut self.table_bytes,
            &self.hasher,
        );
        Some(item)
    }

    pub fn clear(&mut self) {
        *self = Keyspace {
            hasher: self.hasher,
            ..Keyspace::new()
        };
    }

    fn split(&mut self, idx: usize) {
        let depth = self.segments[idx].depth;
        if depth == 63 {
            return; // 2^63 segments is not a real case; keep the segment oversized.
        }
        if depth == self.global_depth {
            let doubled = self.directory.iter().flat_map(|&s| [s, s]).collect();
            self.directory = doubled;
            self.global_depth += 1;
        }
        let bit = 63 - depth;
        let old = std::mem::take(&mut self.segments[idx].table);
        self.table_bytes -= old.allocation_size();
        let mut low = HashTable::with_capacity(old.len());
        let mut high = HashTable::with_capacity(old.len() / 2 + 1);
        let hasher = self.hasher;
        let rehash = |it: &Item| hasher.hash_one(it.key());
        for item in old {
            let hash = rehash(&item);
            let target = if hash >> bit & 1 == 1 {
                &mut high
            } else {
                &mut low
            };
            target.insert_unique(hash, item, rehash);
        }
        low.shrink_to_fit(rehash);
        self.table_bytes += low.allocation_size() + high.allocation_size();
        let new_idx = self.segments.len() as u32;
        self.segments[idx] = Segment {
            depth: depth + 1,
            table: low,
        };
        self.segments.push(Segment {
            depth: depth + 1,
            table: high,
        });
        // The old segment's directory range; its upper half now points at the new one.
        let span = 1usize << (self.global_depth - depth);
        let first = self
            .directory
            .iter()
            .position(|&s| s as usize == idx)
            .expect("a segment is always reachable from the directory");
        for e in &mut self.directory[first + span / 2..first + span] {
            *e = new_idx;
        }
    }

    /// The hash range `[start, end)` covered by the segment that holds `hash`; `end` is
    /// `None` at the top of the hash space.
    fn segment_range(&self, hash: u64) -> (usize, u64, Option<u64>) {
        let idx = self.segment_index(hash);
        let depth = self.segments[idx].depth;
        if depth == 0 {
            return (idx, 0, None);
        }
        let shift = 64 - depth;
        let prefix = hash >> shift;
        let start = prefix << shift;
        let end = if prefix + 1 == 1u64 << depth {
            None
        } else {
            Some((prefix + 1) << shift)
        };
        (idx, start, end)
    }

    /// One step of a scan from hash position `pos`: visits keys in hash order, at least
    /// `count` of them unless the keyspace ends first, never splitting a group of keys that
    /// share a scan position. Returns the position to resume from, or `None` when done.
    pub fn scan(&self, mut pos: u64, count: usize, mut visit: impl FnMut(&Item)) -> Option<u64> {
        let granule = !((1u64 << SCAN_POSITION_SHIFT) - 1);
        let mut visited = 0usize;
        // The segment's keys with their hashes, which items do not keep.
        let mut batch: Vec<(u64, &Item)> = Vec::new();
        loop {
            let (idx, _, end) = self.segment_range(pos);
            batch.clear();
            batch.extend(
                self.segments[idx]
                    .table
                    .iter()
                    .map(|it| (self.hash(it.key()), it))
                    .filter(|&(h, _)| h >= pos),
            );
            batch.sort_unstable_by_key(|&(h, _)| h);
            let mut i = 0;
            while i < batch.len() {
                if visited >= count {
                    return Some(batch[i].0 & granule);
                }
                let group = batch[i].0 & granule;
                while i < batch.len() && batch[i].0 & granule == group {
                    visit(batch[i].1);
                    visited += 1;
                    i += 1;
                }
            }
            match end {
                None => return None,
                Some(e) if visited >= count => return Some(e),
                Some(e) => pos = e,
            }
        }
    }

    /// Visits, mutably, every item of the segment that holds hash position `pos` (0 or a
    /// position this returned), and returns the next segment's start, or `None` after the
    /// last. Segments only split, so a walk from 0 to `None` visits every item present
    /// throughout; an item may be visited twice when a position falls inside a segment.
    pub fn walk_segment(&mut self, pos: u64, visit: impl FnMut(&mut Item)) -> Option<u64> {
        let (idx, _, end) = self.segment_range(pos);
        self.segments[idx].table.iter_mut().for_each(visit);
        end
    }

    /// Every stored slot, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Item> {
        self.segments.iter().flat_map(|s| s.table.iter())
    }

    /// Up to `count` keys from one place picked at random: a random segment (weighted by
    /// its directory share), from a random position on, wrapping round the segment (as
    /// Redis's dictGetSomeKeys takes neighbouring buckets). `seed` is any random number.
    pub fn sample(&self, seed: u64, count: usize, mut visit: impl FnMut(&Item)) {
        if self.len == 0 || count == 0 {
            return;
        }
        let mut seed = seed;
        for _ in 0..64 {
            let d = (seed % self.directory.len() as u64) as usize;
            let table = &self.segments[self.directory[d] as usize].table;
            if !table.is_empty() {
                let start = (seed.rotate_right(17) % table.len() as u64) as usize;
                let take = count.min(table.len());
                table
                    .iter()
                    .skip(start)
                    .chain(table.iter())
                    .take(take)
                    .for_each(&mut visit);
                return;
            }
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
        }
        self.iter().take(count).for_each(visit);
    }

    /// A key picked at random: a random segment (weighted by directory share), then a
    /// random entry in it. Not exactly uniform, as in Redis; `seed` is any random number.
    pub fn random(&self, seed: u64) -> Option<&Item> {
        if self.len == 0 {
            return None;
        }
        let mut seed = seed;
        for _ in 0..64 {
            let d = (seed % self.directory.len() as u64) as usize;
            let seg = &self.segments[self.directory[d] as usize];
            if !seg.table.is_empty() {
                let n = (seed.rotate_right(17) % seg.table.len() as u64) as usize;
                return seg.table.iter().nth(n);
            }
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
        }
        self.iter().next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{Entry, Value};
    use std::collections::HashSet;

    /// The byte count behind `table_bytes` matches the tables through growth, splits,
    /// shrinking and clearing.
    #[test]
    fn table_bytes_follow_the_tables() {
        let recount = |ks: &Keyspace| -> usize {
            ks.segments.iter().map(|s| s.table.allocation_size()).sum()
        };
        let mut ks = Keyspace::new();
        for i in 0..20_000 {
            ks.insert(format!("key{i}").as_bytes(), entry(i));
            // Overwrites too: hashbrown may grow a table on an overwrite.
            ks.insert(format!("key{}", i / 2).as_bytes(), entry(i));
        }
        assert_eq!(ks.table_bytes, recount(&ks));
        assert!(ks.segments.len() > 8);
        let grown = ks.table_bytes();
        for i in 0..19_000 {
            ks.remove(format!("key{i}").as_bytes());
        }
        assert_eq!(ks.table_bytes, recount(&ks));
        assert!(
            ks.table_bytes() < grown / 2,
            "{} vs {grown}",
            ks.table_bytes()
        );
        ks.clear();
        assert_eq!(ks.table_bytes, 0);
    }

    fn entry(n: i64) -> Entry {
        Entry::new(Value::Int(n))
    }

    #[test]
    fn insert_get_remove_across_splits() {
        let mut ks = Keyspace::new();
        for i in 0..20_000 {
            assert!(ks.insert(format!("k{i}").as_bytes(), entry(i)).is_none());
        }
        assert_eq!(ks.len(), 20_000);
        assert!(ks.segments.len() > 8);
        for i in 0..20_000 {
            let s = ks.get(format!("k{i}").as_bytes()).expect("present");
            assert_eq!(s.value(), crate::item::ValueRef::Int(i));
        }
        for i in (0..20_000).step_by(2) {
            assert!(ks.remove(format!("k{i}").as_bytes()).is_some());
        }
        assert_eq!(ks.len(), 10_000);
        assert!(ks.get(b"k0").is_none() && ks.get(b"k1").is_some());
    }

    #[test]
    fn scan_returns_every_key_present_throughout_even_while_growing() {
        let mut ks = Keyspace::new();
        for i in 0..3000 {
            ks.insert(format!("old{i}").as_bytes(), entry(i));
        }
        let mut seen = HashSet::new();
        let mut pos = Some(0);
        let mut step = 0;
        while let Some(p) = pos {
            pos = ks.scan(p, 10, |s| {
                seen.insert(s.key().to_vec());
            });
            // Grow the table between steps so segments split under the cursor.
            for j in 0..20 {
                ks.insert(format!("new{step}-{j}").as_bytes(), entry(0));
            }
            step += 1;
        }
        for i in 0..3000 {
            assert!(seen.contains(format!("old{i}").as_bytes()), "old{i} missed");
        }
    }

    #[test]
    fn scan_positions_are_granular_and_monotonic() {
        let mut ks = Keyspace::new();
        for i in 0..5000 {
            ks.insert(format!("{i}").as_bytes(), entry(i));
        }
        let mut pos = Some(0u64);
        let mut total = 0;
        while let Some(p) = pos {
            let next = ks.scan(p, 7, |_| total += 1);
            if let Some(n) = next {
                assert!(n > p);
                assert_eq!(n & 0xff, 0);
            }
            pos = next;
        }
        assert_eq!(total, 5000);
    }

    #[test]
    fn random_finds_a_key() {
        let mut ks = Keyspace::new();
        assert!(ks.random(1).is_none());
        for i in 0..5000 {
            ks.insert(format!("{i}").as_bytes(), entry(i));
        }
        for seed in 0..100 {
            assert!(ks.random(seed * 7919).is_some());
        }
    }
}
