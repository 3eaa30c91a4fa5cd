//! Stored values and their entries.

/// Redis keeps strings of up to this many bytes in one allocation with the object header
/// and reports them as `embstr`; we keep the name so OBJECT ENCODING answers as Redis does.
pub const EMBSTR_MAX_BYTES: usize = 44;

/// A string value. Integers that print back exactly as they were given are stored as
/// integers (Redis's `int` encoding): no heap allocation and INCR without parsing.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(i64),
    /// `raw` is set once the string has been changed in place (APPEND, SETRANGE), which is
    /// when Redis moves a string to the `raw` encoding.
    Str {
        bytes: Vec<u8>,
        raw: bool,
    },
}

impl Value {
    /// The value for bytes a client sent: an integer when the bytes are one in canonical
    /// form, otherwise a string.
    pub fn from_bytes(bytes: &[u8]) -> Value {
        match parse_canonical_i64(bytes) {
            Some(n) => Value::Int(n),
            None => Value::Str {
                bytes: bytes.to_vec(),
                raw: false,
            },
        }
    }

    pub fn type_name(&self) -> &'static str {
        "string"
    }

    pub fn encoding(&self) -> &'static str {
        match self {
            Value::Int(_) => "int",
            Value::Str { bytes, raw } if !raw && bytes.len() <= EMBSTR_MAX_BYTES => "embstr",
            Value::Str { .. } => "raw",
        }
    }

    /// Length in bytes of the string form.
    pub fn len(&self) -> usize {
        match self {
            Value::Int(n) => itoa_len(*n),
            Value::Str { bytes, .. } => bytes.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the string form to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            Value::Int(n) => {
                let mut b = itoa::Buffer::new();
                out.extend_from_slice(b.format(*n).as_bytes());
            }
            Value::Str { bytes, .. } => out.extend_from_slice(bytes),
        }
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        self.write_to(&mut v);
        v
    }

    /// Turns the value into a mutable byte string (for APPEND and SETRANGE).
    pub fn make_raw(&mut self) -> &mut Vec<u8> {
        if let Value::Int(_) = self {
            *self = Value::Str {
                bytes: self.to_vec(),
                raw: true,
            };
        }
        match self {
            Value::Str { bytes, raw } => {
                *raw = true;
                bytes
            }
            Value::Int(_) => unreachable!("converted above"),
        }
    }
}

fn itoa_len(n: i64) -> usize {
    itoa::Buffer::new().format(n).len()
}

/// Parses a decimal integer only if printing it back gives the same bytes (no sign `+`,
/// no leading zeros, no spaces), as Redis's `string2ll` does for the `int` encoding.
pub fn parse_canonical_i64(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    let (neg, digits) = match b[0] {
        b'-' => (true, &b[1..]),
        _ => (false, b),
    };
    if digits.is_empty() || (digits[0] == b'0' && (digits.len() > 1 || neg)) {
        return None;
    }
    let mut v: i64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        let d = (c - b'0') as i64;
        v = v.checked_mul(10)?;
        v = if neg {
            v.checked_sub(d)?
        } else {
            v.checked_add(d)?
        };
    }
    Some(v)
}

/// A key's entry: its value, its absolute expiry time and its eviction metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub value: Value,
    /// Unix time in milliseconds at which the key expires; 0 when it never does.
    pub expire_at_ms: u64,
    /// What eviction ranks the key by, read according to the shard's policy (see
    /// [`crate::evict::Tracking`]): last access time (LRU), a logarithmic access counter
    /// with its last decay time (LFU), or write order (FIFO). As in Redis, one field serves
    /// all three, so after a policy change it takes a while to mean the new thing.
    pub access: u32,
}

impl Entry {
    pub fn new(value: Value) -> Entry {
        Entry {
            value,
            expire_at_ms: 0,
            access: 0,
        }
    }

    pub fn with_expiry(value: Value, expire_at_ms: u64) -> Entry {
        Entry {
            value,
            expire_at_ms,
            access: 0,
        }
    }

    /// Expired once the clock has passed the expiry time (Redis's `now > when`).
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expire_at_ms != 0 && now_ms > self.expire_at_ms
    }

    pub fn is_volatile(&self) -> bool {
        self.expire_at_ms != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_integers_only() {
        // Redis: string2ll accepts exactly what ll2string prints back.
        for (s, v) in [
            ("0", Some(0)),
            ("-1", Some(-1)),
            ("123", Some(123)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("007", None),
            ("-0", None),
            ("+1", None),
            (" 1", None),
            ("1.0", None),
            ("", None),
            ("-", None),
        ] {
            assert_eq!(parse_canonical_i64(s.as_bytes()), v, "{s}");
        }
    }

    #[test]
    fn encodings_follow_redis() {
        assert_eq!(Value::from_bytes(b"12").encoding(), "int");
        assert_eq!(Value::from_bytes(b"hello").encoding(), "embstr");
        assert_eq!(Value::from_bytes(&[b'x'; 45]).encoding(), "raw");
        let mut v = Value::from_bytes(b"12");
        v.make_raw().extend_from_slice(b"3");
        assert_eq!(v.encoding(), "raw");
        assert_eq!(v.to_vec(), b"123");
    }
}
