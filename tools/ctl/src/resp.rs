//! A small blocking RESP2 client: one command out, one reply back, on a `TcpStream` whose
//! every call is bounded by a deadline. [`decode`] is pure, so the protocol's corner cases
//! are tested without sockets; [`Conn`] only moves bytes.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::{REPLY_MAX_BYTES, REPLY_MAX_DEPTH};

/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// The shortest encoding of an array element (`+\r\n`): an array claiming more elements
/// than `max_bytes / 3` cannot fit in the reply limit.
const ELEMENT_MIN_BYTES: usize = 3;

/// A RESP2 reply. Text a node sends is kept as bytes in bulk strings; simple strings and
/// errors are decoded lossily, since they are only shown to the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    /// `None` is the nil bulk string `$-1`.
    Bulk(Option<Vec<u8>>),
    /// `None` is the nil array `*-1`.
    Array(Option<Vec<Reply>>),
}

impl fmt::Display for Reply {
    /// The way redis-cli shows a reply, without its type annotations.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Simple(s) => f.write_str(s),
            Reply::Error(e) => write!(f, "(error) {e}"),
            Reply::Integer(n) => write!(f, "{n}"),
            Reply::Bulk(Some(b)) => f.write_str(&String::from_utf8_lossy(b)),
            Reply::Bulk(None) | Reply::Array(None) => f.write_str("(nil)"),
            Reply::Array(Some(items)) if items.is_empty() => f.write_str("(empty array)"),
            Reply::Array(Some(items)) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str("\n")?;
                    }
                    write!(f, "{}) {item}", i + 1)?;
                }
                Ok(())
            }
        }
    }
}

/// What [`decode`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole reply and the number of bytes it took.
    Complete(Reply, usize),
    /// A valid beginning; more bytes are needed.
    Incomplete,
}

/// Bytes that cannot be the start of a RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("unknown reply type byte 0x{0:02x}")]
    UnknownType(u8),
    #[error("`{0}` is not an integer")]
    BadNumber(String),
    #[error("length {0} is negative")]
    BadLength(i64),
    #[error("a length of {len} exceeds the limit of {max} bytes")]
    TooLong { len: i64, max: usize },
    #[error("a bulk string is not followed by CRLF")]
    MissingCrlf,
    #[error("arrays nested deeper than {REPLY_MAX_DEPTH} levels")]
    TooDeep,
}

/// Why a command got no reply.
#[derive(Debug, thiserror::Error)]
pub enum RespError {
    #[error("no complete reply within {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    #[error("the node closed the connection")]
    Closed,
    #[error("{0}")]
    Io(io::Error),
    #[error("the node sent bytes that are not RESP2: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("the reply is larger than {max} bytes")]
    TooLarge { max: usize },
}

/// Encodes a command as RESP2 sends it: an array of bulk strings.
pub fn encode<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        let arg = arg.as_ref();
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Decodes the reply at the start of `buf`. Lengths are checked against `max_bytes` before
/// anything is allocated for them, and nothing is allocated in proportion to a length the
/// peer sent.
pub fn decode(buf: &[u8], max_bytes: usize) -> Result<Decoded, ProtocolError> {
    Ok(match parse(buf, 0, 0, max_bytes)? {
        Some((reply, end)) => Decoded::Complete(reply, end),
        None => Decoded::Incomplete,
    })
}

/// The reply starting at `pos` and the offset just past it, or `None` if the buffer ends
/// first.
fn parse(
    buf: &[u8],
    pos: usize,
    depth: usize,
    max_bytes: usize,
) -> Result<Option<(Reply, usize)>, ProtocolError> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    if !b"+-:$*".contains(&kind) {
        return Err(ProtocolError::UnknownType(kind));
    }
    let Some((line, next)) = line_at(buf, pos + 1) else {
        return Ok(None);
    };
    let reply = match kind {
        b'+' => Reply::Simple(String::from_utf8_lossy(line).into_owned()),
        b'-' => Reply::Error(String::from_utf8_lossy(line).into_owned()),
        b':' => Reply::Integer(number(line)?),
        b'$' => {
            let Some(len) = length(number(line)?, max_bytes)? else {
                return Ok(Some((Reply::Bulk(None), next)));
            };
            let end = next + len;
            let Some(crlf) = buf.get(end..end + 2) else {
                return Ok(None);
            };
            if crlf != b"\r\n" {
                return Err(ProtocolError::MissingCrlf);
            }
            return Ok(Some((Reply::Bulk(Some(buf[next..end].to_vec())), end + 2)));
        }
        _ => {
            let Some(count) = length(number(line)?, max_bytes / ELEMENT_MIN_BYTES)? else {
                return Ok(Some((Reply::Array(None), next)));
            };
            if depth >= REPLY_MAX_DEPTH {
                return Err(ProtocolError::TooDeep);
            }
            let mut items = Vec::new();
            let mut at = next;
            for _ in 0..count {
                let Some((item, end)) = parse(buf, at, depth + 1, max_bytes)? else {
                    return Ok(None);
                };
                items.push(item);
                at = end;
            }
            return Ok(Some((Reply::Array(Some(items)), at)));
        }
    };
    Ok(Some((reply, next)))
}

/// The line starting at `pos` without its CRLF, and the offset after the CRLF.
fn line_at(buf: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(pos..)?;
    let len = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..len], pos + len + 2))
}

fn number(line: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ProtocolError::BadNumber(String::from_utf8_lossy(line).into_owned()))
}

/// A bulk or array length: `None` for -1 (nil), else a count no larger than `max`.
fn length(n: i64, max: usize) -> Result<Option<usize>, ProtocolError> {
    match n {
        -1 => Ok(None),
        n if n < 0 => Err(ProtocolError::BadLength(n)),
        n => match usize::try_from(n) {
            Ok(len) if len <= max => Ok(Some(len)),
            _ => Err(ProtocolError::TooLong { len: n, max }),
        },
    }
}

/// A connection to one node. Replies larger than `reply_max_bytes` end it with an error.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    io_timeout: Duration,
    reply_max_bytes: usize,
}

impl Conn {
    /// Connects, blocking at most `io_timeout`, which then also bounds each [`Conn::call`].
    pub fn connect(addr: SocketAddr, io_timeout: Duration) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, io_timeout)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(io_timeout))?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
            io_timeout,
            reply_max_bytes: REPLY_MAX_BYTES,
        })
    }

    pub fn with_reply_max_bytes(mut self, max: usize) -> Conn {
        self.reply_max_bytes = max;
        self
    }

    /// Sends one command and blocks until its whole reply has arrived, or the I/O timeout
    /// has passed since the call began. An error reply is a `Reply::Error`, not an `Err`.
    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Reply, RespError> {
        let deadline = Instant::now() + self.io_timeout;
        self.stream
            .write_all(&encode(args))
            .map_err(|e| self.io_error(e))?;
        loop {
            if let Decoded::Complete(reply, used) = decode(&self.buf, self.reply_max_bytes)? {
                self.buf.drain(..used);
                return Ok(reply);
            }
            if self.buf.len() >= self.reply_max_bytes {
                return Err(RespError::TooLarge {
                    max: self.reply_max_bytes,
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.timeout());
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(RespError::Io)?;
            let mut chunk = [0u8; READ_CHUNK_BYTES];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(RespError::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(e)),
            }
        }
    }

    fn timeout(&self) -> RespError {
        RespError::Timeout {
            timeout_ms: u64::try_from(self.io_timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// A socket timeout shows as `WouldBlock` on Unix and `TimedOut` on Windows.
    fn io_error(&self, e: io::Error) -> RespError {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => self.timeout(),
            _ => RespError::Io(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    const MAX: usize = 1024;

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(Some(s.as_bytes().to_vec()))
    }

    /// RESP2 reply types, as the protocol spec (redis.io/docs/reference/protocol-spec)
    /// gives them, including both nils and an empty bulk string.
    #[test]
    fn decodes_every_reply_type() {
        let cases: &[(&[u8], Reply)] = &[
            (b"+OK\r\n", Reply::Simple("OK".into())),
            (b"-ERR unknown\r\n", Reply::Error("ERR unknown".into())),
            (b":-42\r\n", Reply::Integer(-42)),
            (b"$5\r\nhello\r\n", bulk("hello")),
            (b"$0\r\n\r\n", bulk("")),
            (b"$4\r\na\r\nb\r\n", bulk("a\r\nb")),
            (b"$-1\r\n", Reply::Bulk(None)),
            (b"*-1\r\n", Reply::Array(None)),
            (b"*0\r\n", Reply::Array(Some(vec![]))),
            (
                b"*3\r\n:1\r\n*2\r\n+a\r\n$-1\r\n$1\r\nx\r\n",
                Reply::Array(Some(vec![
                    Reply::Integer(1),
                    Reply::Array(Some(vec![Reply::Simple("a".into()), Reply::Bulk(None)])),
                    bulk("x"),
                ])),
            ),
        ];
        for (input, want) in cases {
            let got = decode(input, MAX);
            assert_eq!(
                got,
                Ok(Decoded::Complete(want.clone(), input.len())),
                "{input:?}"
            );
        }
    }

    /// Every strict prefix of a valid reply is a valid beginning, never an error.
    #[test]
    fn every_prefix_is_incomplete() {
        let whole: &[u8] = b"*3\r\n:1\r\n*2\r\n+a\r\n$-1\r\n$5\r\nhello\r\n";
        for end in 0..whole.len() {
            assert_eq!(
                decode(&whole[..end], MAX),
                Ok(Decoded::Incomplete),
                "prefix {end}"
            );
        }
    }

    #[test]
    fn leaves_bytes_after_the_reply() {
        assert_eq!(
            decode(b"+OK\r\n+NEXT\r\n", MAX),
            Ok(Decoded::Complete(Reply::Simple("OK".into()), 5))
        );
    }

    #[test]
    fn rejects_what_is_not_resp2() {
        let deep = "*1\r\n".repeat(REPLY_MAX_DEPTH + 1);
        let cases: &[(&[u8], ProtocolError)] = &[
            (b"?x\r\n", ProtocolError::UnknownType(b'?')),
            (b":12a\r\n", ProtocolError::BadNumber("12a".into())),
            (b"$\r\n", ProtocolError::BadNumber(String::new())),
            (b"$-2\r\n", ProtocolError::BadLength(-2)),
            (b"*-5\r\n", ProtocolError::BadLength(-5)),
            (b"$3\r\nabcXY", ProtocolError::MissingCrlf),
            (
                b"$1025\r\n",
                ProtocolError::TooLong {
                    len: 1025,
                    max: MAX,
                },
            ),
            (
                b"*9223372036854775807\r\n",
                ProtocolError::TooLong {
                    len: i64::MAX,
                    max: MAX / ELEMENT_MIN_BYTES,
                },
            ),
            (deep.as_bytes(), ProtocolError::TooDeep),
        ];
        for (input, want) in cases {
            assert_eq!(decode(input, MAX), Err(want.clone()), "{input:?}");
        }
    }

    #[test]
    fn encodes_an_array_of_bulk_strings() {
        assert_eq!(
            encode(&["CLUSTER", "MEET", "10.0.0.1", "7000"]),
            b"*4\r\n$7\r\nCLUSTER\r\n$4\r\nMEET\r\n$8\r\n10.0.0.1\r\n$4\r\n7000\r\n"
        );
        assert_eq!(encode(&[""]), b"*1\r\n$0\r\n\r\n");
    }

    #[test]
    fn reply_display_is_like_redis_cli() {
        let r = Reply::Array(Some(vec![bulk("a"), Reply::Integer(2), Reply::Bulk(None)]));
        assert_eq!(r.to_string(), "1) a\n2) 2\n3) (nil)");
        assert_eq!(Reply::Error("ERR x".into()).to_string(), "(error) ERR x");
    }

    /// A fake node that reads one request, checks it, and then plays `script`: each
    /// element is written and flushed on its own, so a reply can arrive in pieces.
    /// Returns the address and a handle that yields the request bytes it read.
    fn fake_node(
        expect_len: usize,
        script: Vec<Vec<u8>>,
    ) -> (SocketAddr, thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let handle = thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut req = vec![0u8; expect_len];
            s.read_exact(&mut req).expect("request");
            for piece in script {
                s.write_all(&piece).expect("write");
                s.flush().expect("flush");
            }
            // Keep the socket open until the client is done, so tests of a missing reply
            // see a timeout and not a close.
            let _ = s.read(&mut [0u8; 1]);
            req
        });
        (addr, handle)
    }

    fn connect(addr: SocketAddr, timeout_ms: u64) -> Conn {
        Conn::connect(addr, Duration::from_millis(timeout_ms)).expect("connect")
    }

    #[test]
    fn call_round_trip_with_a_reply_in_pieces() {
        let req = encode(&["CLUSTER", "INFO"]);
        let reply: &[u8] = b"$27\r\ncluster_state:ok\r\nfoo:bar\r\n\r\n";
        let pieces = reply.iter().map(|b| vec![*b]).collect();
        let (addr, server) = fake_node(req.len(), pieces);
        let mut conn = connect(addr, 5_000);
        let got = conn.call(&["CLUSTER", "INFO"]).expect("reply");
        assert_eq!(got, bulk("cluster_state:ok\r\nfoo:bar\r\n"));
        drop(conn);
        assert_eq!(server.join().expect("server"), req);
    }

    #[test]
    fn error_reply_is_a_reply() {
        let (addr, _server) = fake_node(encode(&["X"]).len(), vec![b"-ERR nope\r\n".to_vec()]);
        let got = connect(addr, 5_000).call(&["X"]).expect("reply");
        assert_eq!(got, Reply::Error("ERR nope".into()));
    }

    #[test]
    fn no_reply_times_out() {
        let (addr, _server) = fake_node(encode(&["PING"]).len(), vec![b"+PO".to_vec()]);
        let err = connect(addr, 200).call(&["PING"]).expect_err("no reply");
        assert!(
            matches!(err, RespError::Timeout { timeout_ms: 200 }),
            "{err:?}"
        );
    }

    #[test]
    fn close_before_the_reply_is_reported() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let server = thread::spawn(move || drop(listener.accept().expect("accept")));
        let mut conn = connect(addr, 5_000);
        server.join().expect("server");
        let err = conn.call(&["PING"]).expect_err("closed");
        // The write may already fail with a reset; either way it is not a timeout.
        assert!(
            matches!(err, RespError::Closed | RespError::Io(_)),
            "{err:?}"
        );
    }

    #[test]
    fn reply_size_is_bounded() {
        // A simple string that never ends: the buffer may not grow past the limit.
        let (addr, _server) = fake_node(encode(&["PING"]).len(), vec![vec![b'+'; 4096]]);
        let mut conn = connect(addr, 5_000).with_reply_max_bytes(1000);
        let err = conn.call(&["PING"]).expect_err("too large");
        assert!(matches!(err, RespError::TooLarge { max: 1000 }), "{err:?}");
        // A bulk header over the limit fails before its body is awaited.
        let (addr, _server) = fake_node(encode(&["PING"]).len(), vec![b"$5000\r\n".to_vec()]);
        let mut conn = connect(addr, 5_000).with_reply_max_bytes(1000);
        let err = conn.call(&["PING"]).expect_err("too long");
        assert!(
            matches!(
                err,
                RespError::Protocol(ProtocolError::TooLong { len: 5000, .. })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn two_calls_on_one_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let server = thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            for reply in [&b":1\r\n"[..], b":2\r\n"] {
                let mut req = vec![0u8; encode(&["INCR", "k"]).len()];
                s.read_exact(&mut req).expect("request");
                s.write_all(reply).expect("write");
            }
        });
        let mut conn = connect(addr, 5_000);
        assert_eq!(conn.call(&["INCR", "k"]).expect("1"), Reply::Integer(1));
        assert_eq!(conn.call(&["INCR", "k"]).expect("2"), Reply::Integer(2));
        server.join().expect("server");
    }
}
