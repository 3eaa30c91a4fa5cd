//! The reply decoder: reads any RESP2 or RESP3 value, as a client (the load generator, the
//! cluster bus, tests) receives it.
//!
//! Pure and incremental like the request decoder: [`decode`] returns a whole value, or
//! says more bytes are needed, or that the bytes are not RESP. Nesting is capped at
//! [`MAX_DEPTH`], aggregate lengths are checked against the bytes present before anything is
//! reserved, and [`skip`] measures a reply without allocating (for hot loops that only need
//! to know where a reply ends and whether it was an error or a nil).

/// Deepest nesting of aggregates accepted.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Simple(Vec<u8>),
    Error(Vec<u8>),
    Integer(i64),
    Bulk(Vec<u8>),
    /// RESP2's `$-1` and `*-1`, and RESP3's `_`.
    Null,
    Array(Vec<Frame>),
    Map(Vec<(Frame, Frame)>),
    Set(Vec<Frame>),
    Push(Vec<Frame>),
    /// The double's text as sent (`,3.14`, `,inf`).
    Double(Vec<u8>),
    Boolean(bool),
    BigNumber(Vec<u8>),
    /// `=` strings: the three-letter format, then the text.
    Verbatim(Vec<u8>, Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unknown RESP type byte {0:#04x}")]
    UnknownType(u8),
    #[error("invalid length or number in a RESP header")]
    BadNumber,
    #[error("missing CRLF after a bulk string")]
    MissingCrlf,
    #[error("RESP nesting deeper than {MAX_DEPTH}")]
    TooDeep,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decoded<T> {
    Complete(T, usize),
    Incomplete,
    Invalid(FrameError),
}

/// What [`skip`] reports of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Error,
    Null,
    Value,
}

fn line(buf: &[u8], from: usize) -> Option<(&[u8], usize)> {
    let rel = buf.get(from..)?.windows(2).position(|w| w == b"\r\n")?;
    Some((&buf[from..from + rel], from + rel + 2))
}

fn number(b: &[u8]) -> Result<i64, FrameError> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or(FrameError::BadNumber)
}

/// Finds where the value starting at `pos` ends, without building it.
fn walk(buf: &[u8], pos: usize, depth: usize) -> Decoded<Kind> {
    if depth > MAX_DEPTH {
        return Decoded::Invalid(FrameError::TooDeep);
    }
    let Some(&t) = buf.get(pos) else {
        return Decoded::Incomplete;
    };
    let Some((head, next)) = line(buf, pos + 1) else {
        return Decoded::Incomplete;
    };
    match t {
        b'+' | b':' | b',' | b'#' | b'(' => Decoded::Complete(Kind::Value, next),
        b'-' => Decoded::Complete(Kind::Error, next),
        b'_' => Decoded::Complete(Kind::Null, next),
        b'$' | b'=' | b'!' => {
            let n = match number(head) {
                Ok(n) => n,
                Err(e) => return Decoded::Invalid(e),
            };
            if n < 0 {
                return Decoded::Complete(Kind::Null, next);
            }
            let end = next + n as usize;
            if buf.len() < end + 2 {
                return Decoded::Incomplete;
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Decoded::Invalid(FrameError::MissingCrlf);
            }
            let kind = if t == b'!' { Kind::Error } else { Kind::Value };
            Decoded::Complete(kind, end + 2)
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = match number(head) {
                Ok(n) => n,
                Err(e) => return Decoded::Invalid(e),
            };
            if n < 0 {
                return Decoded::Complete(Kind::Null, next);
            }
            let items = if t == b'%' || t == b'|' { 2 * n } else { n };
            let mut at = next;
            for _ in 0..items {
                match walk(buf, at, depth + 1) {
                    Decoded::Complete(_, end) => at = end,
                    other => return other,
                }
            }
            if t == b'|' {
                // An attribute precedes the value it describes.
                return walk(buf, at, depth + 1);
            }
            Decoded::Complete(Kind::Value, at)
        }
        other => Decoded::Invalid(FrameError::UnknownType(other)),
    }
}

/// Measures the reply at the front of `buf`: its kind and length, allocating nothing.
pub fn skip(buf: &[u8]) -> Decoded<Kind> {
    walk(buf, 0, 0)
}

fn build(buf: &[u8], pos: usize) -> (Frame, usize) {
    let t = buf[pos];
    let (head, next) = line(buf, pos + 1).expect("walked");
    let n = || number(head).expect("walked");
    match t {
        b'+' => (Frame::Simple(head.to_vec()), next),
        b'-' => (Frame::Error(head.to_vec()), next),
        b':' => (Frame::Integer(n()), next),
        b',' => (Frame::Double(head.to_vec()), next),
        b'#' => (Frame::Boolean(head == b"t"), next),
        b'(' => (Frame::BigNumber(head.to_vec()), next),
        b'_' => (Frame::Null, next),
        b'$' | b'=' | b'!' => {
            let len = n();
            if len < 0 {
                return (Frame::Null, next);
            }
            let data = &buf[next..next + len as usize];
            let f = match t {
                b'$' => Frame::Bulk(data.to_vec()),
                b'!' => Frame::Error(data.to_vec()),
                _ => {
                    let (fmt, text) = data.split_at(data.len().min(4));
                    Frame::Verbatim(
                        fmt.strip_suffix(b":").unwrap_or(fmt).to_vec(),
                        text.to_vec(),
                    )
                }
            };
            (f, next + len as usize + 2)
        }
        _ => {
            let count = n();
            if count < 0 {
                return (Frame::Null, next);
            }
            let pairs = t == b'%' || t == b'|';
            let items = if pairs { 2 * count } else { count } as usize;
            // The walk proved these items are present, so this capacity is bounded by
            // the bytes received.
            let mut values = Vec::with_capacity(items);
            let mut at = next;
            for _ in 0..items {
                let (v, end) = build(buf, at);
                values.push(v);
                at = end;
            }
            let pairs_of = |values: Vec<Frame>| {
                let mut it = values.into_iter();
                let mut out = Vec::new();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    out.push((k, v));
                }
                out
            };
            match t {
                b'*' => (Frame::Array(values), at),
                b'~' => (Frame::Set(values), at),
                b'>' => (Frame::Push(values), at),
                b'%' => (Frame::Map(pairs_of(values)), at),
                _ => build(buf, at), // attribute: return the value it annotates
            }
        }
    }
}

/// Decodes the reply at the front of `buf`.
pub fn decode(buf: &[u8]) -> Decoded<Frame> {
    match skip(buf) {
        Decoded::Complete(_, len) => Decoded::Complete(build(buf, 0).0, len),
        Decoded::Incomplete => Decoded::Incomplete,
        Decoded::Invalid(e) => Decoded::Invalid(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::{Out, Protocol};

    #[test]
    fn decodes_what_the_encoder_writes() {
        let mut buf = Vec::new();
        let mut o = Out::new(&mut buf, Protocol::Resp3);
        o.map(1);
        o.bulk(b"k");
        o.array(3);
        o.int(-7);
        o.null();
        o.verbatim("hi");
        let (f, used) = match decode(&buf) {
            Decoded::Complete(f, used) => (f, used),
            other => panic!("{other:?}"),
        };
        assert_eq!(used, buf.len());
        assert_eq!(
            f,
            Frame::Map(vec![(
                Frame::Bulk(b"k".to_vec()),
                Frame::Array(vec![
                    Frame::Integer(-7),
                    Frame::Null,
                    Frame::Verbatim(b"txt".to_vec(), b"hi".to_vec())
                ])
            )])
        );
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let whole = b"*3\r\n$3\r\nabc\r\n:1\r\n%1\r\n+a\r\n-ERR x\r\n";
        for cut in 0..whole.len() {
            assert_eq!(skip(&whole[..cut]), Decoded::Incomplete, "cut {cut}");
        }
        assert_eq!(skip(whole), Decoded::Complete(Kind::Value, whole.len()));
    }

    #[test]
    fn kinds_and_rejections() {
        assert_eq!(skip(b"-ERR no\r\n"), Decoded::Complete(Kind::Error, 9));
        assert_eq!(skip(b"$-1\r\n"), Decoded::Complete(Kind::Null, 5));
        assert_eq!(skip(b"*-1\r\n"), Decoded::Complete(Kind::Null, 5));
        assert_eq!(skip(b"_\r\n"), Decoded::Complete(Kind::Null, 3));
        assert_eq!(
            skip(b"?\r\n"),
            Decoded::Invalid(FrameError::UnknownType(b'?'))
        );
        assert_eq!(skip(b"$x\r\n"), Decoded::Invalid(FrameError::BadNumber));
        assert_eq!(
            skip(b"$1\r\nab\r\n"),
            Decoded::Invalid(FrameError::MissingCrlf)
        );
        let deep = "*1\r\n".repeat(MAX_DEPTH + 2) + ":1\r\n";
        assert_eq!(skip(deep.as_bytes()), Decoded::Invalid(FrameError::TooDeep));
        // A huge declared array with few bytes present allocates nothing: it is incomplete.
        assert_eq!(skip(b"*4000000000\r\n:1\r\n"), Decoded::Incomplete);
    }
}
