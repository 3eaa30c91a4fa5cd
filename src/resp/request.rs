//! The request decoder: turns the bytes a client sent into commands, incrementally.
//!
//! Pure: no sockets, no runtime. A command arrives either as a RESP multibulk
//! (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) or as an inline line (`GET k\r\n`). The decoder
//! keeps its progress through a partly received command, so a large command arriving in many
//! reads is scanned once, not once per read. It never allocates from a length the client
//! declared: arguments are ranges into the caller's buffer, and the argument list grows only
//! as arguments actually arrive.

use std::ops::Range;

/// Most bytes buffered of a header line (`*<n>`, `$<n>`) or an inline command while its
/// newline has not arrived, as Redis's PROTO_INLINE_MAX_SIZE. Like Redis, the limit applies
/// only while no newline is buffered: a longer line that arrives whole is accepted (and a
/// header too long to be a number is an invalid length).
pub const INLINE_MAX_BYTES: usize = 64 * 1024;

/// Limits the decoder enforces; the connection fills them from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `proto-max-bulk-len`: the longest argument, in bytes.
    pub max_bulk_bytes: usize,
    /// The most arguments in one multibulk command.
    pub max_multibulk_len: usize,
    /// Before authentication Redis allows only small requests; so do we.
    pub unauthenticated: bool,
}

/// Before AUTH, Redis caps a multibulk at 10 arguments and a bulk at 16 KiB.
pub const UNAUTHENTICATED_MAX_MULTIBULK_LEN: usize = 10;
pub const UNAUTHENTICATED_MAX_BULK_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A whole command was decoded from the first `consumed` bytes; its arguments are in
    /// [`RequestDecoder::args`], ranges of the buffer (or, for an inline command, of
    /// [`RequestDecoder::inline_bytes`]).
    Command { consumed: usize, inline: bool },
    /// The first `consumed` bytes held nothing to run (an empty line, `*0`); drop them.
    Skip { consumed: usize },
    /// More bytes are needed.
    Incomplete,
    /// The client broke the protocol. Reply with the text and close the connection.
    Invalid(ProtocolError),
}

/// A protocol violation. The text is what Redis replies after `-ERR Protocol error: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("invalid multibulk length")]
    InvalidMultibulkLength,
    #[error("invalid bulk length")]
    InvalidBulkLength,
    #[error("expected '$', got '{}'", char::from(*.0))]
    ExpectedBulk(u8),
    #[error("too big mbulk count string")]
    MultibulkCountTooBig,
    #[error("too big bulk count string")]
    BulkCountTooBig,
    #[error("too big inline request")]
    InlineTooBig,
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    #[error("unauthenticated multibulk length")]
    UnauthenticatedMultibulkLength,
    #[error("unauthenticated bulk length")]
    UnauthenticatedBulkLength,
}

#[derive(Default, Debug)]
pub struct RequestDecoder {
    args: Vec<Range<usize>>,
    /// Arguments still expected in the current multibulk; 0 when between commands.
    remaining: usize,
    /// Where scanning resumes in the current command.
    pos: usize,
    inline: Vec<u8>,
}

/// Encodes a command as a client sends it (a RESP multibulk of bulk strings): for the load
/// generator, the tests and node-to-node calls.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    encode_into(args.iter().copied(), &mut out);
    out
}

/// [`encode`], appending to `out`. Panics if `args` misreports its length: the count goes
/// first, and a wrong one would shift every later reply on a connection to the wrong caller.
pub fn encode_into<'a>(args: impl ExactSizeIterator<Item = &'a [u8]>, out: &mut Vec<u8>) {
    let mut n = itoa::Buffer::new();
    let declared = args.len();
    out.push(b'*');
    out.extend_from_slice(n.format(declared).as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut written = 0;
    for a in args {
        out.push(b'$');
        out.extend_from_slice(n.format(a.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
        written += 1;
    }
    assert_eq!(
        written, declared,
        "the argument iterator misreported its length"
    );
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        let cr = at + buf.get(at..)?.iter().position(|&b| b == b'\r')?;
        match buf.get(cr + 1) {
            Some(b'\n') => return Some(cr),
            Some(_) => at = cr + 1,
            None => return None,
        }
    }
}

/// A header's number, read as Redis's `string2ll` reads it: canonical decimal only
/// (`03`, `+3` and ` 3` are not numbers).
fn parse_len(line: &[u8]) -> Option<i64> {
    tessera_shards::value::parse_canonical_i64(line)
}

/// Most digits the header fast path reads; 18 decimal digits cannot overflow an i64.
const SHORT_NUMBER_MAX_DIGITS: usize = 18;

/// The fast path for the usual header line: `buf[from..]` starts with canonical digits (no
/// sign, no leading zero, at most [`SHORT_NUMBER_MAX_DIGITS`]) and then CRLF. Returns the
/// number and where its CR is. `None` sends the line down the general path (find the CRLF,
/// then `parse_len`), which gives the same answer for every line this accepts.
fn short_number(buf: &[u8], from: usize) -> Option<(i64, usize)> {
    let mut n: i64 = 0;
    let mut at = from;
    while let Some(&c) = buf.get(at) {
        if !c.is_ascii_digit() || at - from == SHORT_NUMBER_MAX_DIGITS {
            break;
        }
        n = n * 10 + i64::from(c - b'0');
        at += 1;
    }
    let digits = at - from;
    if digits == 0 || (digits > 1 && buf[from] == b'0') {
        return None;
    }
    (buf.get(at) == Some(&b'\r') && buf.get(at + 1) == Some(&b'\n')).then_some((n, at))
}

impl RequestDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The arguments of the command just decoded.
    pub fn args(&self) -> &[Range<usize>] {
        &self.args
    }

    /// The bytes inline arguments point into.
    pub fn inline_bytes(&self) -> &[u8] {
        &self.inline
    }

    /// Decodes from `buf`, which starts at the first byte of the command in progress (the
    /// caller drops consumed bytes before calling again).
    pub fn decode(&mut self, buf: &[u8], limits: &Limits) -> Decoded {
        if self.remaining == 0 {
            self.args.clear();
            self.pos = 0;
            match buf.first() {
                None => return Decoded::Incomplete,
                Some(b'*') => match self.decode_header(buf, limits) {
                    Ok(Some(skip)) => return skip,
                    Ok(None) => {}
                    Err(d) => return d,
                },
                Some(_) => return self.decode_inline(buf),
            }
        }
        self.decode_bulks(buf, limits)
    }

    /// Reads `*<n>\r\n`. `Ok(None)` means bulks follow.
    fn decode_header(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<Decoded>, Decoded> {
        let (n, end) = match short_number(buf, 1) {
            Some(found) => found,
            None => {
                let Some(end) = find_crlf(buf, 1) else {
                    if buf.len() > INLINE_MAX_BYTES {
                        return Err(Decoded::Invalid(ProtocolError::MultibulkCountTooBig));
                    }
                    return Err(Decoded::Incomplete);
                };
                let n = parse_len(&buf[1..end])
                    .ok_or(Decoded::Invalid(ProtocolError::InvalidMultibulkLength))?;
                (n, end)
            }
        };
        if limits.unauthenticated && n > UNAUTHENTICATED_MAX_MULTIBULK_LEN as i64 {
            return Err(Decoded::Invalid(
                ProtocolError::UnauthenticatedMultibulkLength,
            ));
        }
        if n > limits.max_multibulk_len as i64 {
            return Err(Decoded::Invalid(ProtocolError::InvalidMultibulkLength));
        }
        if n <= 0 {
            return Ok(Some(Decoded::Skip { consumed: end + 2 }));
        }
        self.remaining = n as usize;
        self.pos = end + 2;
        Ok(None)
    }

    fn decode_bulks(&mut self, buf: &[u8], limits: &Limits) -> Decoded {
        let max_bulk = if limits.unauthenticated {
            UNAUTHENTICATED_MAX_BULK_BYTES
        } else {
            limits.max_bulk_bytes
        };
        while self.remaining > 0 {
            let Some(&first) = buf.get(self.pos) else {
                return Decoded::Incomplete;
            };
            if first != b'$' {
                return Decoded::Invalid(ProtocolError::ExpectedBulk(first));
            }
            let (parsed, end) = match short_number(buf, self.pos + 1) {
                Some((n, end)) => (Some(n), end),
                None => {
                    let Some(end) = find_crlf(buf, self.pos + 1) else {
                        if buf.len() - self.pos > INLINE_MAX_BYTES {
                            return Decoded::Invalid(ProtocolError::BulkCountTooBig);
                        }
                        return Decoded::Incomplete;
                    };
                    (parse_len(&buf[self.pos + 1..end]), end)
                }
            };
            let len = match parsed {
                Some(n) if n >= 0 && n as u64 <= max_bulk as u64 => n as usize,
                Some(n) if limits.unauthenticated && n >= 0 => {
                    return Decoded::Invalid(ProtocolError::UnauthenticatedBulkLength)
                }
                _ => return Decoded::Invalid(ProtocolError::InvalidBulkLength),
            };
            let start = end + 2;
            // The bulk and its trailing CRLF must be whole; Redis skips the two bytes
            // after the bulk without looking at them, and so do we.
            if buf.len() < start + len + 2 {
                return Decoded::Incomplete;
            }
            self.args.push(start..start + len);
            self.pos = start + len + 2;
            self.remaining -= 1;
        }
        Decoded::Command {
            consumed: self.pos,
            inline: false,
        }
    }

    fn decode_inline(&mut self, buf: &[u8]) -> Decoded {
        let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
            if buf.len() > INLINE_MAX_BYTES {
                return Decoded::Invalid(ProtocolError::InlineTooBig);
            }
            return Decoded::Incomplete;
        };
        let line = &buf[..nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.inline.clear();
        self.args.clear();
        if let Err(e) = split_args(line, &mut self.inline, &mut self.args) {
            return Decoded::Invalid(e);
        }
        if self.args.is_empty() {
            return Decoded::Skip { consumed: nl + 1 };
        }
        Decoded::Command {
            consumed: nl + 1,
            inline: true,
        }
    }
}

fn hex_value(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Splits an inline command line as Redis's `sdssplitargs` does: spaces separate arguments;
/// "double quotes" take `\n \r \t \b \a \\ \" \xHH` escapes; 'single quotes' take `\'`; a
/// closing quote must be followed by a space or the end of the line.
pub fn split_args(
    line: &[u8],
    out: &mut Vec<u8>,
    ranges: &mut Vec<Range<usize>>,
) -> Result<(), ProtocolError> {
    // Redis splits a C string: a NUL byte ends the line.
    let line = &line[..line.iter().position(|&b| b == 0).unwrap_or(line.len())];
    let is_space = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let mut i = 0;
    let n = line.len();
    loop {
        while i < n && is_space(line[i]) {
            i += 1;
        }
        if i >= n {
            return Ok(());
        }
        let start = out.len();
        let mut in_dq = false;
        let mut in_sq = false;
        loop {
            if in_dq {
                if i >= n {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
                let c = line[i];
                if c == b'\\' && i + 3 < n && line[i + 1] == b'x' {
                    if let (Some(h), Some(l)) = (hex_value(line[i + 2]), hex_value(line[i + 3])) {
                        out.push(h * 16 + l);
                        i += 4;
                        continue;
                    }
                }
                if c == b'\\' && i + 1 < n {
                    out.push(match line[i + 1] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        other => other,
                    });
                    i += 2;
                } else if c == b'"' {
                    if i + 1 < n && !is_space(line[i + 1]) {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    i += 1;
                    break;
                } else {
                    out.push(c);
                    i += 1;
                }
            } else if in_sq {
                if i >= n {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
                let c = line[i];
                if c == b'\\' && i + 1 < n && line[i + 1] == b'\'' {
                    out.push(b'\'');
                    i += 2;
                } else if c == b'\'' {
                    if i + 1 < n && !is_space(line[i + 1]) {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    i += 1;
                    break;
                } else {
                    out.push(c);
                    i += 1;
                }
            } else {
                if i >= n {
                    break;
                }
                match line[i] {
                    c if is_space(c) => break,
                    b'"' => in_dq = true,
                    b'\'' => in_sq = true,
                    c => out.push(c),
                }
                i += 1;
            }
        }
        ranges.push(start..out.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_bulk_bytes: 512 * 1024 * 1024,
        max_multibulk_len: 1 << 20,
        unauthenticated: false,
    };

    /// The header fast path never disagrees with the general path: every line of up to
    /// six bytes over an alphabet of digits, signs, CR, LF and others, plus long numbers.
    #[test]
    fn short_number_agrees_with_general_path() {
        let alphabet = b"0159-+\r\n x";
        let mut lines: Vec<Vec<u8>> = vec![b"123456789012345678\r\n".to_vec()];
        lines.push(b"1234567890123456789\r\n".to_vec());
        lines.push(b"9223372036854775807\r\n".to_vec());
        let mut frontier: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..6 {
            let mut next = Vec::new();
            for l in &frontier {
                for &c in alphabet {
                    let mut m = l.clone();
                    m.push(c);
                    next.push(m);
                }
            }
            lines.extend(next.iter().cloned());
            frontier = next;
        }
        for line in &lines {
            let general = find_crlf(line, 0).map(|end| (parse_len(&line[..end]), end));
            match short_number(line, 0) {
                Some((n, end)) => assert_eq!(general, Some((Some(n), end)), "{line:?}"),
                None => assert!(
                    !matches!(general, Some((Some(n), _)) if n >= 0 && !line.starts_with(b"0") && line.len() < 21),
                    "fast path refused a plain number: {line:?}"
                ),
            }
        }
    }

    fn decode_all(input: &[u8]) -> (Decoded, Vec<Vec<u8>>) {
        let mut d = RequestDecoder::new();
        let r = d.decode(input, &LIMITS);
        let args = match r {
            Decoded::Command { inline: true, .. } => d
                .args()
                .iter()
                .map(|a| d.inline_bytes()[a.clone()].to_vec())
                .collect(),
            Decoded::Command { .. } => d.args().iter().map(|a| input[a.clone()].to_vec()).collect(),
            _ => vec![],
        };
        (r, args)
    }

    #[test]
    fn decodes_multibulk_and_inline() {
        let (r, a) = decode_all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nrest");
        assert_eq!(
            r,
            Decoded::Command {
                consumed: 20,
                inline: false
            }
        );
        assert_eq!(a, vec![b"GET".to_vec(), b"k".to_vec()]);
        let (r, a) = decode_all(b"SET k \"a b\\x41\"\r\n");
        assert!(matches!(
            r,
            Decoded::Command {
                consumed: 17,
                inline: true
            }
        ));
        assert_eq!(a, vec![b"SET".to_vec(), b"k".to_vec(), b"a bA".to_vec()]);
        let (_, a) = decode_all(b"ECHO 'it\\'s'\n");
        assert_eq!(a, vec![b"ECHO".to_vec(), b"it's".to_vec()]);
    }

    #[test]
    fn encode_then_decode() {
        let bytes = encode(&[b"SET", b"k", b""]);
        assert_eq!(bytes, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
        let (r, a) = decode_all(&bytes);
        assert!(matches!(r, Decoded::Command { inline: false, .. }));
        assert_eq!(a, vec![b"SET".to_vec(), b"k".to_vec(), b"".to_vec()]);
    }

    #[test]
    fn incomplete_at_every_cut_then_complete() {
        let full = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
        let mut d = RequestDecoder::new();
        for cut in 0..full.len() {
            assert_eq!(
                d.decode(&full[..cut], &LIMITS),
                Decoded::Incomplete,
                "cut {cut}"
            );
        }
        assert_eq!(
            d.decode(full, &LIMITS),
            Decoded::Command {
                consumed: full.len(),
                inline: false
            }
        );
    }

    #[test]
    fn rejections_match_redis_texts() {
        // Each row: input → the text Redis 7 replies after "ERR Protocol error: ".
        for (input, text) in [
            (&b"*x\r\n"[..], "invalid multibulk length"),
            (b"*03\r\n", "invalid multibulk length"),
            (b"*1\r\n$+3\r\n", "invalid bulk length"),
            (b"*3000000\r\n", "invalid multibulk length"),
            (b"*1\r\n+OK\r\n", "expected '$', got '+'"),
            (b"*1\r\n$-1\r\n", "invalid bulk length"),
            (b"*1\r\n$abc\r\n", "invalid bulk length"),
            (b"*1\r\n$999999999999\r\n", "invalid bulk length"),
            (b"SET k \"abc\r\n", "unbalanced quotes in request"),
            (b"SET k \"a\"b\r\n", "unbalanced quotes in request"),
        ] {
            match decode_all(input).0 {
                Decoded::Invalid(e) => assert_eq!(e.to_string(), text, "{input:?}"),
                other => panic!("{input:?}: {other:?}"),
            }
        }
        let long = vec![b'a'; INLINE_MAX_BYTES + 1];
        assert_eq!(
            decode_all(&long).0,
            Decoded::Invalid(ProtocolError::InlineTooBig)
        );
        let mut long = b"*".to_vec();
        long.extend(vec![b'1'; INLINE_MAX_BYTES + 1]);
        assert_eq!(
            decode_all(&long).0,
            Decoded::Invalid(ProtocolError::MultibulkCountTooBig)
        );
    }

    #[test]
    fn a_nul_byte_ends_an_inline_line() {
        // Found by the fuzz target: NUL used to loop forever pushing empty arguments.
        assert_eq!(decode_all(b"\0\0\0\n").0, Decoded::Skip { consumed: 4 });
        let (r, a) = decode_all(b"PING\0junk\r\n");
        assert!(matches!(
            r,
            Decoded::Command {
                consumed: 11,
                inline: true
            }
        ));
        assert_eq!(a, vec![b"PING".to_vec()]);
        let (_, a) = decode_all(b"ECHO\x0bx\r\n");
        assert_eq!(a, vec![b"ECHO".to_vec(), b"x".to_vec()]);
    }

    #[test]
    fn empty_requests_are_skipped() {
        assert_eq!(decode_all(b"*0\r\n").0, Decoded::Skip { consumed: 4 });
        assert_eq!(decode_all(b"*-1\r\n").0, Decoded::Skip { consumed: 5 });
        assert_eq!(decode_all(b"\r\n").0, Decoded::Skip { consumed: 2 });
        assert_eq!(decode_all(b"   \n").0, Decoded::Skip { consumed: 4 });
    }

    #[test]
    fn unauthenticated_limits() {
        let limits = Limits {
            unauthenticated: true,
            ..LIMITS
        };
        let mut d = RequestDecoder::new();
        assert_eq!(
            d.decode(b"*11\r\n", &limits),
            Decoded::Invalid(ProtocolError::UnauthenticatedMultibulkLength)
        );
        let mut d = RequestDecoder::new();
        assert_eq!(
            d.decode(b"*1\r\n$20000\r\n", &limits),
            Decoded::Invalid(ProtocolError::UnauthenticatedBulkLength)
        );
    }

    #[test]
    fn a_declared_huge_bulk_allocates_nothing_up_front() {
        let mut d = RequestDecoder::new();
        assert_eq!(
            d.decode(b"*1\r\n$536870912\r\nab", &LIMITS),
            Decoded::Incomplete
        );
        assert!(d.args.capacity() < 16);
    }

    /// Decodes `input` delivered in pieces of pseudo-random sizes from `seed`.
    fn decode_in_pieces(input: &[u8], seed: u64) -> (Vec<Vec<Vec<u8>>>, Option<ProtocolError>) {
        let mut dec = RequestDecoder::new();
        let (mut start, mut avail, mut rng) = (0, 0, seed | 1);
        let mut cmds = Vec::new();
        loop {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            avail = (avail + 1 + (rng % 9) as usize).min(input.len());
            loop {
                let buf = &input[start..avail];
                match dec.decode(buf, &LIMITS) {
                    Decoded::Command { consumed, inline } => {
                        let src = if inline { dec.inline_bytes() } else { buf };
                        cmds.push(dec.args().iter().map(|r| src[r.clone()].to_vec()).collect());
                        start += consumed;
                    }
                    Decoded::Skip { consumed } => start += consumed,
                    Decoded::Incomplete => break,
                    Decoded::Invalid(e) => return (cmds, Some(e)),
                }
            }
            if avail == input.len() {
                return (cmds, None);
            }
        }
    }

    #[test]
    fn decoding_does_not_depend_on_how_bytes_arrive() {
        // The property the fuzz target checks, on a fixed corpus.
        let corpus: &[&[u8]] = &[
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n*0\r\nSET a \"b c\"\r\n*1\r\n$4\r\nPING\r\n",
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10\r\n0123456789\r\n*1\r\n+x\r\n",
            b"\r\n\r\nECHO 'q'\n*1\r\n$-5\r\n",
        ];
        for input in corpus {
            let whole = decode_in_pieces(input, 0);
            for seed in 1..200 {
                assert_eq!(decode_in_pieces(input, seed), whole, "seed {seed}");
            }
        }
    }
}
