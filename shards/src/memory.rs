//! Memory accounting: the bytes a key costs as the allocator sees them.
//!
//! A shard counts its data exactly as it changes, so eviction can compare it with the
//! shard's share of `maxmemory` on every write without asking the allocator:
//!
//! - the hash table: every slot of every segment's table, used or not
//!   ([`TABLE_SLOT_BYTES`] each), and the segment directory;
//! - per key: its item's block (see [`crate::item`]) and, for a string changed in place,
//!   the out-of-line buffer;
//! - per key with a TTL: its place in the database's index of volatile keys.
//!
//! Allocation sizes are rounded the way glibc's malloc rounds them ([`alloc_bytes`]).

use crate::item::Item;

/// malloc's bookkeeping before each chunk, its alignment, and its smallest chunk (glibc,
/// 64-bit).
pub const MALLOC_HEADER_BYTES: usize = 8;
pub const MALLOC_ALIGN_BYTES: usize = 16;
pub const MALLOC_MIN_CHUNK_BYTES: usize = 32;

/// One slot of a segment's table: the item pointer and its control byte.
pub const TABLE_SLOT_BYTES: usize = std::mem::size_of::<Item>() + 1;

/// A volatile key's place in the volatile index: the index's entry (hash and boxed key)
/// and its hash-table slot, not counting the copy of the key.
pub const VOLATILE_INDEX_ENTRY_BYTES: usize = 24 + 8;

/// What malloc hands out for a request of `n` bytes (0 for none).
pub fn alloc_bytes(n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    let chunk = (n + MALLOC_HEADER_BYTES).div_ceil(MALLOC_ALIGN_BYTES) * MALLOC_ALIGN_BYTES;
    chunk.max(MALLOC_MIN_CHUNK_BYTES)
}

/// The heap one key owns outside the table: its block, an out-of-line string (its `Vec`
/// header and buffer), and its volatile-index entry if it has a TTL.
pub fn item_heap_bytes(item: &Item) -> usize {
    let boxed = item.boxed_capacity().map_or(0, |cap| {
        alloc_bytes(std::mem::size_of::<Vec<u8>>()) + alloc_bytes(cap)
    });
    let volatile = if item.is_volatile() {
        alloc_bytes(item.key().len()) + VOLATILE_INDEX_ENTRY_BYTES
    } else {
        0
    };
    alloc_bytes(item.block_bytes()) + boxed + volatile
}

/// `MEMORY USAGE`: a key's heap and one table slot.
pub fn key_usage_bytes(item: &Item) -> usize {
    item_heap_bytes(item) + TABLE_SLOT_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{Entry, Value};

    #[test]
    fn malloc_rounding() {
        assert_eq!(alloc_bytes(0), 0);
        assert_eq!(alloc_bytes(1), 32);
        assert_eq!(alloc_bytes(24), 32);
        assert_eq!(alloc_bytes(25), 48);
        assert_eq!(alloc_bytes(40), 48);
        assert_eq!(alloc_bytes(41), 64);
        assert_eq!(alloc_bytes(56), 64);
    }

    #[test]
    fn a_small_key_costs_one_chunk() {
        let small = Item::new(
            b"key:000000000001",
            Entry::new(Value::from_bytes(&[b'v'; 32])),
        );
        assert_eq!(item_heap_bytes(&small), 64);
        assert_eq!(key_usage_bytes(&small), 64 + 9);
        let int = Item::new(b"key:000000000001", Entry::new(Value::Int(42)));
        assert_eq!(item_heap_bytes(&int), alloc_bytes(1 + 4 + 1 + 16 + 8));
        let volatile = Item::new(b"key:000000000001", Entry::with_expiry(Value::Int(1), 5));
        assert_eq!(
            item_heap_bytes(&volatile),
            alloc_bytes(1 + 4 + 1 + 8 + 16 + 8) + alloc_bytes(16) + VOLATILE_INDEX_ENTRY_BYTES
        );
    }
}
