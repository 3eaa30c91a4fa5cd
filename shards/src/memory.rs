//! Memory accounting: the bytes a key costs as the allocator sees them.
//!
//! A shard counts its data exactly as it changes, so eviction can compare it with the
//! shard's share of `maxmemory` on every write without asking the allocator:
//!
//! - the hash table: every slot of every segment's table, used or not
//!   ([`TABLE_SLOT_BYTES`] each), and the segment directory;
//! - per key: the key's allocation and the value's (integers need none);
//! - per key with a TTL: its place in the database's index of volatile keys.
//!
//! Allocation sizes are rounded the way glibc's malloc rounds them ([`alloc_bytes`]).

use crate::keyspace::Slot;
use crate::value::{Entry, Value};

/// malloc's bookkeeping before each chunk, its alignment, and its smallest chunk (glibc,
/// 64-bit).
pub const MALLOC_HEADER_BYTES: usize = 8;
pub const MALLOC_ALIGN_BYTES: usize = 16;
pub const MALLOC_MIN_CHUNK_BYTES: usize = 32;

/// One slot of a segment's table: the slot itself and its control byte.
pub const TABLE_SLOT_BYTES: usize = std::mem::size_of::<Slot>() + 1;

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

/// The heap a value owns.
pub fn value_heap_bytes(value: &Value) -> usize {
    match value {
        Value::Int(_) => 0,
        Value::Str { bytes, .. } => alloc_bytes(bytes.capacity()),
    }
}

/// The heap one key owns outside the table: its key, its value, and its volatile-index
/// entry if it has a TTL.
pub fn entry_heap_bytes(key_len: usize, entry: &Entry) -> usize {
    let volatile = if entry.is_volatile() {
        alloc_bytes(key_len) + VOLATILE_INDEX_ENTRY_BYTES
    } else {
        0
    };
    alloc_bytes(key_len) + value_heap_bytes(&entry.value) + volatile
}

/// `MEMORY USAGE`: a key's heap and one table slot.
pub fn key_usage_bytes(key_len: usize, entry: &Entry) -> usize {
    entry_heap_bytes(key_len, entry) + TABLE_SLOT_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malloc_rounding() {
        assert_eq!(alloc_bytes(0), 0);
        assert_eq!(alloc_bytes(1), 32);
        assert_eq!(alloc_bytes(24), 32);
        assert_eq!(alloc_bytes(25), 48);
        assert_eq!(alloc_bytes(40), 48);
        assert_eq!(alloc_bytes(41), 64);
    }

    #[test]
    fn integers_cost_no_value_heap() {
        let int = Entry::new(Value::Int(42));
        let text = Entry::new(Value::from_bytes(b"forty-two"));
        assert_eq!(entry_heap_bytes(16, &int), alloc_bytes(16));
        assert_eq!(
            entry_heap_bytes(16, &text),
            alloc_bytes(16) + alloc_bytes(9)
        );
        let volatile = Entry::with_expiry(Value::Int(1), 5);
        assert_eq!(
            entry_heap_bytes(16, &volatile),
            2 * alloc_bytes(16) + VOLATILE_INDEX_ENTRY_BYTES
        );
    }
}
