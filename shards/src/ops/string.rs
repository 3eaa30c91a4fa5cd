//! String operations: GET/SET and friends, counters, APPEND and ranges.

use super::{OpError, OpResult};
use crate::db::Db;
use crate::item::{Item, ValueRef};
use crate::value::{parse_canonical_i64, Entry, Value};

/// When a write sets the key's TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ttl {
    /// Drop any TTL (plain SET).
    #[default]
    Clear,
    /// Keep the key's current TTL (KEEPTTL).
    Keep,
    /// Expire at this unix time in ms.
    At(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SetCondition {
    #[default]
    Always,
    /// NX: only if the key does not exist.
    IfMissing,
    /// XX: only if the key exists.
    IfExists,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SetOptions {
    pub ttl: Ttl,
    pub condition: SetCondition,
    /// Return the old value (SET … GET).
    pub get_old: bool,
}

#[derive(Debug, PartialEq)]
pub struct SetOutcome {
    pub written: bool,
    /// With `get_old`: the previous string value, if there was one.
    pub old: Option<Vec<u8>>,
}

pub fn get<'a>(db: &'a mut Db, key: &[u8], now_ms: u64) -> OpResult<Option<ValueRef<'a>>> {
    Ok(db.lookup_counted(key, now_ms).map(Item::value))
}

pub fn set(
    db: &mut Db,
    key: &[u8],
    value: &[u8],
    opts: SetOptions,
    now_ms: u64,
) -> OpResult<SetOutcome> {
    let existing = db.lookup(key, now_ms);
    let old = match (opts.get_old, existing) {
        (true, Some(e)) => Some(e.value().to_vec()),
        _ => None,
    };
    let keep_at = existing.map_or(0, Item::expire_at_ms);
    let allowed = match opts.condition {
        SetCondition::Always => true,
        SetCondition::IfMissing => existing.is_none(),
        SetCondition::IfExists => existing.is_some(),
    };
    if !allowed {
        return Ok(SetOutcome {
            written: false,
            old,
        });
    }
    let expire_at_ms = match opts.ttl {
        Ttl::Clear => 0,
        Ttl::Keep => keep_at,
        Ttl::At(t) => t,
    };
    if expire_at_ms != 0 && expire_at_ms <= now_ms {
        // A TTL in the past deletes the key at once, as Redis does for SET with EXAT/PXAT.
        db.remove(key, now_ms);
    } else {
        db.set(
            key,
            Entry::with_expiry(Value::from_bytes(value), expire_at_ms),
            now_ms,
        );
    }
    Ok(SetOutcome { written: true, old })
}

pub fn getdel(db: &mut Db, key: &[u8], now_ms: u64) -> OpResult<Option<Vec<u8>>> {
    if db.lookup_counted(key, now_ms).is_none() {
        return Ok(None);
    }
    Ok(db.remove(key, now_ms).map(|e| e.value().to_vec()))
}

/// GETEX: returns the value and applies the TTL change (`None` leaves it as it is).
pub fn getex(db: &mut Db, key: &[u8], ttl: Option<Ttl>, now_ms: u64) -> OpResult<Option<Vec<u8>>> {
    let Some(e) = db.lookup_counted(key, now_ms) else {
        return Ok(None);
    };
    let value = e.value().to_vec();
    let volatile = e.is_volatile();
    match ttl {
        None | Some(Ttl::Keep) => {}
        // PERSIST of a key without a TTL changes nothing (and breaks no WATCH).
        Some(Ttl::Clear) if !volatile => {}
        Some(Ttl::Clear) => {
            db.set_expiry(key, 0, now_ms);
        }
        Some(Ttl::At(t)) if t <= now_ms => {
            db.remove(key, now_ms);
        }
        Some(Ttl::At(t)) => {
            db.set_expiry(key, t, now_ms);
        }
    }
    Ok(Some(value))
}

fn as_integer(v: ValueRef) -> OpResult<i64> {
    match v {
        ValueRef::Int(n) => Ok(n),
        // Only the canonical form counts, as Redis's string2ll decides ("01" is not 1).
        ValueRef::Str { bytes, .. } => parse_canonical_i64(bytes).ok_or(OpError::NotInteger),
    }
}

pub fn incr_by(db: &mut Db, key: &[u8], delta: i64, now_ms: u64) -> OpResult<i64> {
    // Check before writing: a refused increment must not count as a change (WATCH).
    let n = match db.lookup(key, now_ms) {
        Some(e) => as_integer(e.value())?
            .checked_add(delta)
            .ok_or(OpError::Overflow)?,
        None => delta,
    };
    if db
        .update(key, now_ms, |e| e.value = Value::Int(n))
        .is_none()
    {
        db.set(key, Entry::new(Value::Int(n)), now_ms);
    }
    Ok(n)
}

mod ffi {
    extern "C" {
        pub fn tessera_incrbyfloat(
            current: *const u8,
            current_len: usize,
            incr: *const u8,
            incr_len: usize,
            out: *mut u8,
            out_cap: usize,
            out_len: *mut usize,
        ) -> i32;
        pub fn tessera_is_float(s: *const u8, len: usize) -> i32;
    }
}

/// Redis's MAX_LONG_DOUBLE_CHARS: longest float text, parsed or printed.
pub const LONG_DOUBLE_MAX_CHARS: usize = 5 * 1024;

/// Whether `b` is a float as Redis's `string2ld` accepts it (C's strtold: decimal, hex,
/// exponents; no spaces, no NaN, no overflow).
pub fn is_float(b: &[u8]) -> bool {
    // SAFETY: the C side reads exactly `len` bytes from `s`.
    unsafe { ffi::tessera_is_float(b.as_ptr(), b.len()) == 1 }
}

/// INCRBYFLOAT's arithmetic in C's long double, as Redis does it; returns the new text.
pub fn add_long_double(current: Option<&[u8]>, incr: &[u8]) -> OpResult<Vec<u8>> {
    let mut out = vec![0u8; LONG_DOUBLE_MAX_CHARS + 1];
    let mut len = 0usize;
    let (cur_ptr, cur_len) = current.map_or((std::ptr::null(), 0), |c| (c.as_ptr(), c.len()));
    // SAFETY: pointers and lengths describe live buffers; the C side writes at most
    // `out.len()` bytes into `out` and the text length into `len`.
    let rc = unsafe {
        ffi::tessera_incrbyfloat(
            cur_ptr,
            cur_len,
            incr.as_ptr(),
            incr.len(),
            out.as_mut_ptr(),
            out.len(),
            &mut len,
        )
    };
    match rc {
        0 => {
            out.truncate(len);
            Ok(out)
        }
        1 | 2 => Err(OpError::NotFloat),
        3 => Err(OpError::NanOrInfinity),
        _ => Err(OpError::StringTooLong),
    }
}

pub fn incr_by_float(db: &mut Db, key: &[u8], delta: &[u8], now_ms: u64) -> OpResult<Vec<u8>> {
    let current = db.lookup(key, now_ms).map(|e| e.value().to_vec());
    let text = add_long_double(current.as_deref(), delta)?;
    // Stored as the printed string, as Redis does (so GET returns exactly the reply).
    let value = Value::Str {
        bytes: text.clone(),
        raw: false,
    };
    let mut value = Some(value);
    if db
        .update(key, now_ms, |e| e.value = value.take().expect("once"))
        .is_none()
    {
        db.set(key, Entry::new(value.take().expect("not used")), now_ms);
    }
    Ok(text)
}

pub fn append(
    db: &mut Db,
    key: &[u8],
    tail: &[u8],
    max_len: usize,
    now_ms: u64,
) -> OpResult<usize> {
    let current = db.lookup(key, now_ms).map_or(0, |e| e.value().len());
    if current + tail.len() > max_len {
        return Err(OpError::StringTooLong);
    }
    let appended = db.update(key, now_ms, |e| {
        let bytes = e.value.make_raw();
        bytes.extend_from_slice(tail);
        bytes.len()
    });
    match appended {
        Some(len) => Ok(len),
        None => {
            db.set(key, Entry::new(Value::from_bytes(tail)), now_ms);
            Ok(tail.len())
        }
    }
}

pub fn strlen(db: &mut Db, key: &[u8], now_ms: u64) -> OpResult<usize> {
    Ok(db.lookup(key, now_ms).map_or(0, |e| e.value().len()))
}

/// GETRANGE with Redis's index rules: negative indexes count from the end, both ends
/// inclusive, clamped to the string.
pub fn getrange(db: &mut Db, key: &[u8], start: i64, end: i64, now_ms: u64) -> OpResult<Vec<u8>> {
    let Some(e) = db.lookup(key, now_ms) else {
        return Ok(Vec::new());
    };
    let s = e.value().to_vec();
    let len = s.len() as i64;
    if len == 0 || (start < 0 && end < 0 && start > end) {
        return Ok(Vec::new());
    }
    let mut start = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let mut end = if end < 0 { (len + end).max(0) } else { end };
    if end >= len {
        end = len - 1;
    }
    if start > end {
        return Ok(Vec::new());
    }
    start = start.max(0);
    Ok(s[start as usize..=end as usize].to_vec())
}

pub fn setrange(
    db: &mut Db,
    key: &[u8],
    offset: usize,
    patch: &[u8],
    max_len: usize,
    now_ms: u64,
) -> OpResult<usize> {
    let current_len = db.lookup(key, now_ms).map(|e| e.value().len());
    if patch.is_empty() {
        return Ok(current_len.unwrap_or(0));
    }
    if offset + patch.len() > max_len {
        return Err(OpError::StringTooLong);
    }
    if current_len.is_none() {
        db.set(
            key,
            Entry::new(Value::Str {
                bytes: Vec::new(),
                raw: true,
            }),
            now_ms,
        );
    }
    let len = db
        .update(key, now_ms, |e| {
            let bytes = e.value.make_raw();
            if bytes.len() < offset + patch.len() {
                bytes.resize(offset + patch.len(), 0);
            }
            bytes[offset..offset + patch.len()].copy_from_slice(patch);
            bytes.len()
        })
        .expect("present: checked or just set");
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incrbyfloat_matches_redis_long_double_text() {
        // Replies of Redis 7.0 for these increments.
        for (cur, by, want) in [
            (None, "10.5", "10.5"),
            (Some("10.5"), "0.1", "10.6"),
            (Some("0.1"), "0.2", "0.3"),
            (Some("0.3"), "-0.3", "0"),
            (Some("1.1"), "2.2", "3.3"),
            (Some("5.0e3"), "2.0e2", "5200"),
            (Some("10.6"), "-5.0e3", "-4989.39999999999999991"),
            (None, "0x10", "16"),
            (Some("3"), "-3", "0"),
        ] {
            let got = add_long_double(cur.map(str::as_bytes), by.as_bytes()).unwrap();
            assert_eq!(String::from_utf8(got).unwrap(), want, "{cur:?} + {by}");
        }
        assert_eq!(add_long_double(Some(b"abc"), b"1"), Err(OpError::NotFloat));
        assert_eq!(add_long_double(None, b" 1"), Err(OpError::NotFloat));
        assert_eq!(add_long_double(None, b"nan"), Err(OpError::NotFloat));
        assert_eq!(
            add_long_double(Some(b"\x001"), b"1"),
            Err(OpError::NotFloat)
        );
        assert_eq!(add_long_double(None, b"inf"), Err(OpError::NanOrInfinity));
        assert!(is_float(b"1e308") && !is_float(b"1e99999") && !is_float(b""));
    }

    #[test]
    fn getrange_index_rules() {
        let mut db = Db::new();
        set(&mut db, b"k", b"This is a string", SetOptions::default(), 0).unwrap();
        for (s, e, want) in [
            (0, 3, "This"),
            (-3, -1, "ing"),
            (0, -1, "This is a string"),
            (10, 100, "string"),
            (5, 2, ""),
            (-1, -5, ""),
        ] {
            assert_eq!(getrange(&mut db, b"k", s, e, 0).unwrap(), want.as_bytes());
        }
    }

    #[test]
    fn counters() {
        let mut db = Db::new();
        assert_eq!(incr_by(&mut db, b"c", 5, 0), Ok(5));
        assert_eq!(incr_by(&mut db, b"c", -7, 0), Ok(-2));
        set(&mut db, b"s", b"abc", SetOptions::default(), 0).unwrap();
        assert_eq!(incr_by(&mut db, b"s", 1, 0), Err(OpError::NotInteger));
        incr_by(&mut db, b"m", i64::MAX, 0).unwrap();
        assert_eq!(incr_by(&mut db, b"m", 1, 0), Err(OpError::Overflow));
    }

    #[test]
    fn setrange_pads_with_zeros() {
        let mut db = Db::new();
        assert_eq!(setrange(&mut db, b"k", 3, b"ab", 100, 0), Ok(5));
        assert_eq!(getrange(&mut db, b"k", 0, -1, 0).unwrap(), b"\0\0\0ab");
        assert_eq!(
            setrange(&mut db, b"k", 99, b"ab", 100, 0),
            Err(OpError::StringTooLong)
        );
    }
}
