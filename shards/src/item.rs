//! A stored key: one heap block holding its metadata, key and value, owned through a thin
//! pointer, so the hash table spends 8 bytes (and a control byte) per key.
//!
//! ## Layout and byte budget
//!
//! ```text
//! offset 0   flags: u8       bits 0-1 value kind (int, inline string, boxed string),
//!                            bit 2 has an expiry, bit 3 string was changed in place (raw),
//!                            bit 4 snapshot mark (see `capture`)
//!        1   access: u32     eviction stamp (LRU clock, LFU counter, FIFO sequence)
//!        5   key length      LEB128 varint (1 byte below 128)
//!            expire_at: u64  only with the expiry flag (Unix ms)
//!            key bytes
//!            value           int: 8 bytes; inline string: varint length + bytes;
//!                            boxed string: 8-byte pointer to a `Vec<u8>` (see below)
//! ```
//!
//! A 16-byte key with a 32-byte value and no TTL takes 1 + 4 + 1 + 16 + 1 + 32 = 55 bytes:
//! malloc hands out a 64-byte chunk, so the overhead is 16 bytes in the block plus the
//! table's slot (8 bytes and a control byte, at a load between 44% and 87%). The key's hash
//! is not stored: splits and SCAN compute it again.
//!
//! Strings changed in place (APPEND, SETRANGE) move out of line into a `Vec<u8>` that keeps
//! spare capacity, as Redis's `raw` strings do, so repeated appends cost amortized O(1)
//! instead of a copy of the whole item each time.

use crate::value::{Entry, Value};
use std::alloc::{alloc, dealloc, Layout};
use std::ptr::NonNull;

const KIND_MASK: u8 = 0b11;
const KIND_INT: u8 = 0;
const KIND_INLINE: u8 = 1;
const KIND_BOXED: u8 = 2;
const FLAG_EXPIRY: u8 = 1 << 2;
const FLAG_RAW: u8 = 1 << 3;
const FLAG_SNAP_MARK: u8 = 1 << 4;

const ACCESS_AT: usize = 1;
const KEY_LEN_AT: usize = 5;

/// Longest key or inline value length a varint here may carry (u32).
const VARINT_MAX_BYTES: usize = 5;

/// A key's stored form. Dropping it frees the block (and a boxed string).
pub struct Item(NonNull<u8>);

/// A read-only view of a stored value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    Int(i64),
    /// `raw` is set once the string has been changed in place.
    Str {
        bytes: &'a [u8],
        raw: bool,
    },
}

fn varint_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

/// Writes `n` at `p`; returns the bytes written.
unsafe fn write_varint(p: *mut u8, mut n: usize) -> usize {
    let mut i = 0;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            p.add(i).write(byte);
            return i + 1;
        }
        p.add(i).write(byte | 0x80);
        i += 1;
    }
}

/// Reads a varint at `p`: (value, bytes read).
unsafe fn read_varint(p: *const u8) -> (usize, usize) {
    let mut n = 0usize;
    let mut shift = 0;
    let mut i = 0;
    loop {
        let byte = p.add(i).read();
        n |= ((byte & 0x7f) as usize) << shift;
        i += 1;
        if byte & 0x80 == 0 || i == VARINT_MAX_BYTES {
            return (n, i);
        }
        shift += 7;
    }
}

/// The parts of a block, as offsets from its start.
struct Parts {
    flags: u8,
    expire_at: Option<usize>,
    key: usize,
    key_len: usize,
    value: usize,
}

impl Item {
    /// Builds the item for `key` holding `entry`.
    pub fn new(key: &[u8], entry: Entry) -> Item {
        assert!(
            key.len() <= u32::MAX as usize,
            "keys are limited by proto-max-bulk-len"
        );
        let volatile = entry.is_volatile();
        let (kind, raw) = match &entry.value {
            Value::Int(_) => (KIND_INT, false),
            Value::Str { raw: true, .. } => (KIND_BOXED, true),
            Value::Str { raw: false, .. } => (KIND_INLINE, false),
        };
        let value_len = match &entry.value {
            Value::Int(_) => 8,
            Value::Str { bytes, .. } if kind == KIND_INLINE => {
                varint_len(bytes.len()) + bytes.len()
            }
            Value::Str { .. } => std::mem::size_of::<*mut Vec<u8>>(),
        };
        let size = KEY_LEN_AT
            + varint_len(key.len())
            + if volatile { 8 } else { 0 }
            + key.len()
            + value_len;
        let layout = Layout::from_size_align(size, 1).expect("item size fits a layout");
        // SAFETY: `size` is at least KEY_LEN_AT + 1 + 8 > 0; every byte is written below.
        unsafe {
            let p = alloc(layout);
            let Some(block) = NonNull::new(p) else {
                std::alloc::handle_alloc_error(layout);
            };
            let flags =
                kind | if volatile { FLAG_EXPIRY } else { 0 } | if raw { FLAG_RAW } else { 0 };
            p.write(flags);
            p.add(ACCESS_AT)
                .cast::<[u8; 4]>()
                .write(entry.access.to_le_bytes());
            let mut at = KEY_LEN_AT + write_varint(p.add(KEY_LEN_AT), key.len());
            if volatile {
                p.add(at)
                    .cast::<[u8; 8]>()
                    .write(entry.expire_at_ms.to_le_bytes());
                at += 8;
            }
            std::ptr::copy_nonoverlapping(key.as_ptr(), p.add(at), key.len());
            at += key.len();
            match entry.value {
                Value::Int(n) => p.add(at).cast::<[u8; 8]>().write(n.to_le_bytes()),
                Value::Str { bytes, .. } if kind == KIND_INLINE => {
                    at += write_varint(p.add(at), bytes.len());
                    std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.add(at), bytes.len());
                }
                Value::Str { bytes, .. } => {
                    let boxed = Box::into_raw(Box::new(bytes));
                    p.add(at).cast::<*mut Vec<u8>>().write_unaligned(boxed);
                }
            }
            Item(block)
        }
    }

    fn parts(&self) -> Parts {
        let p = self.0.as_ptr();
        // SAFETY: the block was laid out by `new`.
        unsafe {
            let flags = p.read();
            let (key_len, n) = read_varint(p.add(KEY_LEN_AT));
            let mut at = KEY_LEN_AT + n;
            let expire_at = if flags & FLAG_EXPIRY != 0 {
                at += 8;
                Some(at - 8)
            } else {
                None
            };
            Parts {
                flags,
                expire_at,
                key: at,
                key_len,
                value: at + key_len,
            }
        }
    }

    /// The block's size in bytes (what it was allocated with).
    pub fn block_bytes(&self) -> usize {
        let parts = self.parts();
        parts.value
            + match parts.flags & KIND_MASK {
                KIND_INT => 8,
                KIND_INLINE => {
                    // SAFETY: an inline value starts with its varint length.
                    let (len, n) = unsafe { read_varint(self.0.as_ptr().add(parts.value)) };
                    n + len
                }
                _ => std::mem::size_of::<*mut Vec<u8>>(),
            }
    }

    /// The out-of-line string of a boxed value, if any.
    fn boxed(&self, parts: &Parts) -> Option<*mut Vec<u8>> {
        (parts.flags & KIND_MASK == KIND_BOXED).then(|| {
            // SAFETY: a boxed value holds the pointer written by `new`.
            unsafe {
                self.0
                    .as_ptr()
                    .add(parts.value)
                    .cast::<*mut Vec<u8>>()
                    .read_unaligned()
            }
        })
    }

    /// Heap bytes beyond the block: a boxed string's Vec header and its buffer.
    pub fn boxed_capacity(&self) -> Option<usize> {
        let parts = self.parts();
        // SAFETY: the pointer is live while the item is.
        self.boxed(&parts).map(|b| unsafe { (*b).capacity() })
    }

    pub fn key(&self) -> &[u8] {
        let parts = self.parts();
        // SAFETY: the key bytes live as long as the block.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().add(parts.key), parts.key_len) }
    }

    pub fn value(&self) -> ValueRef<'_> {
        let parts = self.parts();
        let p = self.0.as_ptr();
        // SAFETY: the value was laid out by `new` for this kind.
        unsafe {
            match parts.flags & KIND_MASK {
                KIND_INT => ValueRef::Int(i64::from_le_bytes(
                    p.add(parts.value).cast::<[u8; 8]>().read(),
                )),
                KIND_INLINE => {
                    let (len, n) = read_varint(p.add(parts.value));
                    ValueRef::Str {
                        bytes: std::slice::from_raw_parts(p.add(parts.value + n), len),
                        raw: parts.flags & FLAG_RAW != 0,
                    }
                }
                _ => {
                    let v = &*self.boxed(&parts).expect("boxed kind");
                    ValueRef::Str {
                        bytes: v.as_slice(),
                        raw: true,
                    }
                }
            }
        }
    }

    /// Unix time in ms at which the key expires; 0 when it never does.
    pub fn expire_at_ms(&self) -> u64 {
        match self.parts().expire_at {
            // SAFETY: eight bytes at that offset hold the expiry.
            Some(at) => {
                u64::from_le_bytes(unsafe { self.0.as_ptr().add(at).cast::<[u8; 8]>().read() })
            }
            None => 0,
        }
    }

    pub fn is_volatile(&self) -> bool {
        // SAFETY: byte 0 is the flags.
        unsafe { self.0.as_ptr().read() & FLAG_EXPIRY != 0 }
    }

    /// Expired once the clock has passed the expiry time (Redis's `now > when`).
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.is_volatile() && now_ms > self.expire_at_ms()
    }

    pub fn access(&self) -> u32 {
        // SAFETY: bytes 1..5 are the access stamp.
        u32::from_le_bytes(unsafe { self.0.as_ptr().add(ACCESS_AT).cast::<[u8; 4]>().read() })
    }

    pub fn set_access(&mut self, access: u32) {
        // SAFETY: as in `access`; the item is borrowed mutably.
        unsafe {
            self.0
                .as_ptr()
                .add(ACCESS_AT)
                .cast::<[u8; 4]>()
                .write(access.to_le_bytes())
        }
    }

    /// The snapshot mark: which capture last accounted for this item (see
    /// [`crate::capture`]).
    pub fn snap_mark(&self) -> bool {
        // SAFETY: byte 0 is the flags.
        unsafe { self.0.as_ptr().read() & FLAG_SNAP_MARK != 0 }
    }

    pub fn set_snap_mark(&mut self, mark: bool) {
        // SAFETY: byte 0 is the flags; the item is borrowed mutably.
        unsafe {
            let p = self.0.as_ptr();
            let flags = p.read() & !FLAG_SNAP_MARK;
            p.write(flags | if mark { FLAG_SNAP_MARK } else { 0 });
        }
    }

    /// The entry as an owned value, taking the item apart (a boxed string's buffer moves
    /// out without a copy).
    pub fn into_entry(self) -> Entry {
        let parts = self.parts();
        let expire_at_ms = self.expire_at_ms();
        let access = self.access();
        let value = match self.boxed(&parts) {
            Some(b) => {
                // SAFETY: the box was made by `new`; forget the item so it is not freed twice.
                let bytes = unsafe { *Box::from_raw(b) };
                let block = self.0;
                let size = self.block_bytes();
                std::mem::forget(self);
                // SAFETY: the block's own memory, laid out with this size.
                unsafe { dealloc(block.as_ptr(), Layout::from_size_align_unchecked(size, 1)) };
                return Entry {
                    value: Value::Str { bytes, raw: true },
                    expire_at_ms,
                    access,
                };
            }
            None => match self.value() {
                ValueRef::Int(n) => Value::Int(n),
                ValueRef::Str { bytes, raw } => Value::Str {
                    bytes: bytes.to_vec(),
                    raw,
                },
            },
        };
        Entry {
            value,
            expire_at_ms,
            access,
        }
    }

    /// A copy of the entry.
    pub fn to_entry(&self) -> Entry {
        Entry {
            value: self.value().to_owned(),
            expire_at_ms: self.expire_at_ms(),
            access: self.access(),
        }
    }
}

impl Drop for Item {
    fn drop(&mut self) {
        let parts = self.parts();
        if let Some(b) = self.boxed(&parts) {
            // SAFETY: the box was made by `new` and is dropped once, here.
            drop(unsafe { Box::from_raw(b) });
        }
        let size = self.block_bytes();
        // SAFETY: the block was allocated by `new` with this size and alignment 1.
        unsafe { dealloc(self.0.as_ptr(), Layout::from_size_align_unchecked(size, 1)) };
    }
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Item")
            .field("key", &String::from_utf8_lossy(self.key()))
            .field("value", &self.value())
            .field("expire_at_ms", &self.expire_at_ms())
            .field("access", &self.access())
            .finish()
    }
}

impl<'a> ValueRef<'a> {
    pub fn type_name(&self) -> &'static str {
        "string"
    }

    pub fn encoding(&self) -> &'static str {
        match self {
            ValueRef::Int(_) => "int",
            ValueRef::Str { bytes, raw }
                if !raw && bytes.len() <= crate::value::EMBSTR_MAX_BYTES =>
            {
                "embstr"
            }
            ValueRef::Str { .. } => "raw",
        }
    }

    /// Length in bytes of the string form.
    pub fn len(&self) -> usize {
        match self {
            ValueRef::Int(n) => itoa::Buffer::new().format(*n).len(),
            ValueRef::Str { bytes, .. } => bytes.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the string form to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            ValueRef::Int(n) => out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes()),
            ValueRef::Str { bytes, .. } => out.extend_from_slice(bytes),
        }
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        self.write_to(&mut v);
        v
    }

    pub fn to_owned(&self) -> Value {
        match *self {
            ValueRef::Int(n) => Value::Int(n),
            ValueRef::Str { bytes, raw } => Value::Str {
                bytes: bytes.to_vec(),
                raw,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(key: &[u8], entry: Entry) {
        let item = Item::new(key, entry.clone());
        assert_eq!(item.key(), key);
        assert_eq!(item.expire_at_ms(), entry.expire_at_ms);
        assert_eq!(item.access(), entry.access);
        assert_eq!(item.value().to_owned(), entry.value);
        assert_eq!(item.to_entry(), entry);
        assert_eq!(item.into_entry(), entry);
    }

    #[test]
    fn every_kind_round_trips() {
        let mut e = Entry::new(Value::Int(-42));
        e.access = 0xdead_beef;
        round_trip(b"k", e);
        round_trip(b"", Entry::with_expiry(Value::Int(i64::MIN), u64::MAX));
        round_trip(
            b"key:000000000001",
            Entry::new(Value::from_bytes(&[b'v'; 32])),
        );
        round_trip(
            &[b'k'; 300],
            Entry::with_expiry(Value::from_bytes(&[7u8; 200]), 12345),
        );
        round_trip(b"big", Entry::new(Value::from_bytes(&vec![1u8; 100_000])));
        round_trip(
            b"raw",
            Entry::with_expiry(
                Value::Str {
                    bytes: b"appended".to_vec(),
                    raw: true,
                },
                99,
            ),
        );
        round_trip(b"empty", Entry::new(Value::from_bytes(b"")));
    }

    #[test]
    fn the_budget_in_the_docs_holds() {
        let item = Item::new(
            b"key:000000000001",
            Entry::new(Value::from_bytes(&[b'v'; 32])),
        );
        assert_eq!(item.block_bytes(), 55);
        assert_eq!(std::mem::size_of::<Item>(), 8);
        assert_eq!(std::mem::size_of::<Option<Item>>(), 8);
        let volatile = Item::new(b"key:000000000001", Entry::with_expiry(Value::Int(1), 5));
        assert_eq!(volatile.block_bytes(), 1 + 4 + 1 + 8 + 16 + 8);
    }

    #[test]
    fn access_is_written_in_place() {
        let mut item = Item::new(b"k", Entry::new(Value::Int(1)));
        item.set_access(77);
        assert_eq!(item.access(), 77);
        assert_eq!(item.value(), ValueRef::Int(1));
    }

    #[test]
    fn varints_cover_the_range() {
        for n in [0usize, 1, 127, 128, 300, 16_383, 16_384, u32::MAX as usize] {
            let mut buf = [0u8; VARINT_MAX_BYTES];
            let w = unsafe { write_varint(buf.as_mut_ptr(), n) };
            assert_eq!(w, varint_len(n));
            assert_eq!(unsafe { read_varint(buf.as_ptr()) }, (n, w));
        }
    }
}
