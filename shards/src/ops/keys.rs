//! Generic key operations: existence, deletion, renaming, copying and TTLs.

use super::{OpError, OpResult};
use crate::db::Db;
use crate::item::Item;
use crate::value::Entry;

pub fn exists(db: &mut Db, key: &[u8], now_ms: u64) -> bool {
    db.exists(key, now_ms)
}

pub fn del(db: &mut Db, key: &[u8], now_ms: u64) -> bool {
    db.remove(key, now_ms).is_some()
}

/// TYPE: does not count as an access (Redis looks the key up with LOOKUP_NOTOUCH).
pub fn type_name(db: &mut Db, key: &[u8], now_ms: u64) -> &'static str {
    db.peek(key, now_ms)
        .map_or("none", |e| e.value().type_name())
}

pub fn encoding(db: &mut Db, key: &[u8], now_ms: u64) -> Option<&'static str> {
    db.peek(key, now_ms).map(|e| e.value().encoding())
}

/// Removes and returns a live key's entry (the first half of a RENAME across shards).
pub fn take(db: &mut Db, key: &[u8], now_ms: u64) -> Option<Entry> {
    db.remove(key, now_ms).map(Item::into_entry)
}

/// A copy of a live key's entry (the first half of a COPY across shards).
pub fn clone_entry(db: &mut Db, key: &[u8], now_ms: u64) -> Option<Entry> {
    db.lookup(key, now_ms).map(Item::to_entry)
}

/// Stores an entry taken from elsewhere, keeping its absolute expiry.
pub fn put(db: &mut Db, key: &[u8], entry: Entry, now_ms: u64) {
    if entry.is_expired(now_ms) {
        db.remove(key, now_ms);
    } else {
        db.set(key, entry, now_ms);
    }
}

/// RENAME / RENAMENX within one database of one shard. Returns whether it renamed
/// (false only for `only_if_new` with an existing destination).
pub fn rename(
    db: &mut Db,
    src: &[u8],
    dst: &[u8],
    only_if_new: bool,
    now_ms: u64,
) -> OpResult<bool> {
    if !db.exists(src, now_ms) {
        return Err(OpError::NoSuchKey);
    }
    if src == dst {
        return Ok(!only_if_new);
    }
    if only_if_new && db.exists(dst, now_ms) {
        return Ok(false);
    }
    let entry = db.remove(src, now_ms).expect("checked above").into_entry();
    db.set(dst, entry, now_ms);
    Ok(true)
}

/// The conditions EXPIRE and friends apply (Redis 7's NX, XX, GT, LT); all given ones
/// must hold. A key without a TTL counts as expiring infinitely late for GT and LT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExpireCondition {
    /// NX: only when the key has no TTL.
    pub if_none: bool,
    /// XX: only when the key has a TTL.
    pub if_some: bool,
    /// GT: only when the new time is later.
    pub if_later: bool,
    /// LT: only when the new time is earlier.
    pub if_earlier: bool,
}

/// Sets a key's expiry to `at_ms` (unix ms) if the condition holds. A time not in the
/// future deletes the key. Returns whether anything changed (Redis's 1 or 0).
pub fn expire_at(db: &mut Db, key: &[u8], at_ms: u64, cond: ExpireCondition, now_ms: u64) -> bool {
    let Some(e) = db.lookup(key, now_ms) else {
        return false;
    };
    let current = e.expire_at_ms();
    let allowed = (!cond.if_none || current == 0)
        && (!cond.if_some || current != 0)
        && (!cond.if_later || (current != 0 && at_ms > current))
        && (!cond.if_earlier || current == 0 || at_ms < current);
    if !allowed {
        return false;
    }
    if at_ms <= now_ms {
        db.remove(key, now_ms);
    } else {
        db.set_expiry(key, at_ms, now_ms);
    }
    true
}

/// The state of a key's TTL, for TTL, PTTL, EXPIRETIME and PEXPIRETIME.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlState {
    Missing,
    Persistent,
    /// Absolute expiry, unix ms.
    ExpiresAt(u64),
}

pub fn ttl(db: &mut Db, key: &[u8], now_ms: u64) -> TtlState {
    match db.lookup(key, now_ms) {
        None => TtlState::Missing,
        Some(e) if e.expire_at_ms() == 0 => TtlState::Persistent,
        Some(e) => TtlState::ExpiresAt(e.expire_at_ms()),
    }
}

pub fn persist(db: &mut Db, key: &[u8], now_ms: u64) -> bool {
    match db.lookup(key, now_ms) {
        Some(e) if e.is_volatile() => db.set_expiry(key, 0, now_ms),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    fn db_with(key: &[u8], exp: u64) -> Db {
        let mut db = Db::new();
        db.set(key, Entry::with_expiry(Value::Int(1), exp), 0);
        db
    }

    #[test]
    fn expire_conditions_follow_redis_7() {
        // https://redis.io/commands/expire/ — "A non-volatile key is treated as an infinite
        // TTL for the purpose of GT and LT"; given options must all hold.
        let c = |nx, xx, gt, lt| ExpireCondition {
            if_none: nx,
            if_some: xx,
            if_later: gt,
            if_earlier: lt,
        };
        for (initial, at, cond, want) in [
            (0, 5000, c(true, false, false, false), true),
            (4000, 5000, c(true, false, false, false), false),
            (0, 5000, c(false, true, false, false), false),
            (4000, 5000, c(false, true, false, false), true),
            (0, 5000, c(false, false, true, false), false),
            (4000, 5000, c(false, false, true, false), true),
            (6000, 5000, c(false, false, true, false), false),
            (0, 5000, c(false, false, false, true), true),
            (6000, 5000, c(false, false, false, true), true),
            (4000, 5000, c(false, false, false, true), false),
            // XX LT: the key must have a TTL, and the new one be earlier.
            (0, 5000, c(false, true, false, true), false),
            (6000, 5000, c(false, true, false, true), true),
        ] {
            let mut db = db_with(b"k", initial);
            assert_eq!(
                expire_at(&mut db, b"k", at, cond, 1000),
                want,
                "{initial} {at} {cond:?}"
            );
        }
    }

    #[test]
    fn expire_in_the_past_deletes() {
        let mut db = db_with(b"k", 0);
        assert!(expire_at(
            &mut db,
            b"k",
            10,
            ExpireCondition::default(),
            1000
        ));
        assert_eq!(ttl(&mut db, b"k", 1000), TtlState::Missing);
    }

    #[test]
    fn rename_rules() {
        let mut db = db_with(b"a", 9000);
        assert_eq!(
            rename(&mut db, b"x", b"y", false, 0),
            Err(OpError::NoSuchKey)
        );
        assert_eq!(rename(&mut db, b"a", b"a", false, 0), Ok(true));
        assert_eq!(rename(&mut db, b"a", b"a", true, 0), Ok(false));
        assert_eq!(rename(&mut db, b"a", b"b", false, 0), Ok(true));
        assert_eq!(ttl(&mut db, b"b", 0), TtlState::ExpiresAt(9000));
        db.set(b"c", Entry::new(Value::Int(2)), 0);
        assert_eq!(rename(&mut db, b"b", b"c", true, 0), Ok(false));
    }
}
