//! The reply encoder: writes RESP2 or RESP3 replies straight into a connection's output
//! buffer, with no intermediate reply values on the hot path.

/// Which protocol a connection speaks (`HELLO 2|3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Resp2,
    Resp3,
}

/// A reply writer over a byte buffer.
pub struct Out<'a> {
    pub buf: &'a mut Vec<u8>,
    pub proto: Protocol,
}

impl<'a> Out<'a> {
    pub fn new(buf: &'a mut Vec<u8>, proto: Protocol) -> Self {
        Out { buf, proto }
    }

    pub fn is_resp3(&self) -> bool {
        self.proto == Protocol::Resp3
    }

    fn line(&mut self, prefix: u8, n: i64) {
        let mut b = itoa::Buffer::new();
        self.buf.push(prefix);
        self.buf.extend_from_slice(b.format(n).as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }

    pub fn ok(&mut self) {
        self.buf.extend_from_slice(b"+OK\r\n");
    }

    /// A simple string; must not contain CR or LF.
    pub fn simple(&mut self, s: &str) {
        debug_assert!(!s.contains(['\r', '\n']));
        self.buf.push(b'+');
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }

    /// An error reply. `msg` carries its own code (`ERR …`, `WRONGTYPE …`); newlines in it
    /// are replaced by spaces so the reply stays one line.
    pub fn error(&mut self, msg: &str) {
        self.error_bytes(msg.as_bytes())
    }

    /// An error reply whose text holds bytes a client sent (not necessarily UTF-8).
    pub fn error_bytes(&mut self, msg: &[u8]) {
        self.buf.push(b'-');
        for &b in msg {
            self.buf
                .push(if b == b'\r' || b == b'\n' { b' ' } else { b });
        }
        self.buf.extend_from_slice(b"\r\n");
    }

    pub fn int(&mut self, n: i64) {
        self.line(b':', n);
    }

    pub fn bulk(&mut self, data: &[u8]) {
        self.line(b'$', data.len() as i64);
        self.buf.extend_from_slice(data);
        self.buf.extend_from_slice(b"\r\n");
    }

    /// A bulk string of a known length whose bytes `write` appends.
    pub fn bulk_with(&mut self, len: usize, write: impl FnOnce(&mut Vec<u8>)) {
        self.line(b'$', len as i64);
        let before = self.buf.len();
        write(self.buf);
        debug_assert_eq!(self.buf.len() - before, len);
        self.buf.extend_from_slice(b"\r\n");
    }

    /// A bulk string holding an integer's decimal text.
    pub fn bulk_int(&mut self, n: i64) {
        let mut b = itoa::Buffer::new();
        let s = b.format(n);
        self.bulk(s.as_bytes());
    }

    /// Text for humans (INFO, CLIENT LIST): a verbatim string in RESP3, bulk in RESP2.
    pub fn verbatim(&mut self, text: &str) {
        if self.is_resp3() {
            self.line(b'=', text.len() as i64 + 4);
            self.buf.extend_from_slice(b"txt:");
            self.buf.extend_from_slice(text.as_bytes());
            self.buf.extend_from_slice(b"\r\n");
        } else {
            self.bulk(text.as_bytes());
        }
    }

    /// The null bulk string (a missing value).
    pub fn null(&mut self) {
        match self.proto {
            Protocol::Resp2 => self.buf.extend_from_slice(b"$-1\r\n"),
            Protocol::Resp3 => self.buf.extend_from_slice(b"_\r\n"),
        }
    }

    /// The null array (an aborted EXEC, a timed-out blocking call).
    pub fn null_array(&mut self) {
        match self.proto {
            Protocol::Resp2 => self.buf.extend_from_slice(b"*-1\r\n"),
            Protocol::Resp3 => self.buf.extend_from_slice(b"_\r\n"),
        }
    }

    pub fn array(&mut self, n: usize) {
        self.line(b'*', n as i64);
    }

    /// A map of `n` pairs: `%n` in RESP3, a flat array of `2n` in RESP2.
    pub fn map(&mut self, n: usize) {
        match self.proto {
            Protocol::Resp2 => self.line(b'*', 2 * n as i64),
            Protocol::Resp3 => self.line(b'%', n as i64),
        }
    }

    /// A double: `,` in RESP3, a bulk string in RESP2, printed in the shortest form that
    /// reads back exactly (as Redis's fpconv).
    pub fn double(&mut self, v: f64) {
        let text = if v.is_infinite() {
            if v > 0.0 { "inf" } else { "-inf" }.to_string()
        } else {
            format!("{v}")
        };
        match self.proto {
            Protocol::Resp2 => self.bulk(text.as_bytes()),
            Protocol::Resp3 => {
                self.buf.push(b',');
                self.buf.extend_from_slice(text.as_bytes());
                self.buf.extend_from_slice(b"\r\n");
            }
        }
    }

    /// A set of `n` members: `~n` in RESP3, an array in RESP2.
    pub fn set(&mut self, n: usize) {
        match self.proto {
            Protocol::Resp2 => self.line(b'*', n as i64),
            Protocol::Resp3 => self.line(b'~', n as i64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(proto: Protocol, f: impl FnOnce(&mut Out)) -> String {
        let mut buf = Vec::new();
        f(&mut Out::new(&mut buf, proto));
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn resp2_and_resp3_shapes() {
        use Protocol::*;
        assert_eq!(with(Resp2, |o| o.null()), "$-1\r\n");
        assert_eq!(with(Resp3, |o| o.null()), "_\r\n");
        assert_eq!(with(Resp2, |o| o.map(2)), "*4\r\n");
        assert_eq!(with(Resp3, |o| o.map(2)), "%2\r\n");
        assert_eq!(with(Resp3, |o| o.verbatim("hi")), "=6\r\ntxt:hi\r\n");
        assert_eq!(with(Resp2, |o| o.bulk(b"hi")), "$2\r\nhi\r\n");
        assert_eq!(with(Resp2, |o| o.int(-5)), ":-5\r\n");
        assert_eq!(with(Resp2, |o| o.error("ERR a\nb")), "-ERR a b\r\n");
    }
}
