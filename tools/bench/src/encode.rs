//! Requests as RESP templates: everything but the key number and a variable-length value
//! is encoded once, so writing a request is a few `memcpy`s into a reused buffer.

use crate::config::KEY_DIGITS;

/// Placeholders a command template may hold, as memtier_benchmark spells them.
pub const KEY_PLACEHOLDER: &str = "__key__";
pub const VALUE_PLACEHOLDER: &str = "__data__";
/// Also accepted for the value.
pub const VALUE_PLACEHOLDER_ALIAS: &str = "__value__";

/// One argument of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    Lit(Vec<u8>),
    /// The key prefix and the key number, zero-padded to [`KEY_DIGITS`] digits.
    Key,
    /// A value of the workload's size.
    Value,
}

/// A command with placeholders, e.g. `SET __key__ __data__ EX 60`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub args: Vec<Arg>,
}

impl Template {
    /// Splits on whitespace; arguments cannot contain spaces.
    pub fn parse(text: &str) -> Result<Template, String> {
        let args: Vec<Arg> = text
            .split_whitespace()
            .map(|w| match w {
                KEY_PLACEHOLDER => Arg::Key,
                VALUE_PLACEHOLDER | VALUE_PLACEHOLDER_ALIAS => Arg::Value,
                lit => Arg::Lit(lit.as_bytes().to_vec()),
            })
            .collect();
        match args.first() {
            None => Err("an empty command".into()),
            Some(Arg::Lit(_)) => Ok(Template { args }),
            Some(_) => Err(format!("`{text}` must start with a command name")),
        }
    }

    /// The command name, upper-cased: the row its latencies are reported under.
    pub fn name(&self) -> String {
        match &self.args[0] {
            Arg::Lit(b) => String::from_utf8_lossy(b).to_ascii_uppercase(),
            _ => unreachable!("parse checks a template starts with a literal"),
        }
    }

    pub fn uses_value(&self) -> bool {
        self.args.contains(&Arg::Value)
    }
}

impl std::fmt::Display for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, a) in self.args.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            match a {
                Arg::Lit(b) => f.write_str(&String::from_utf8_lossy(b))?,
                Arg::Key => f.write_str(KEY_PLACEHOLDER)?,
                Arg::Value => f.write_str(VALUE_PLACEHOLDER)?,
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum Seg {
    Lit(Box<[u8]>),
    KeyDigits,
    /// `$<len>\r\n<bytes>` (the CRLF after it is in the next literal).
    Value,
}

/// A template encoded for one key prefix; values of a fixed size are encoded in too.
#[derive(Debug, Clone)]
pub struct Encoded {
    segs: Vec<Seg>,
}

impl Encoded {
    /// `fixed_value`: the value when every value has the same bytes, else `None` and each
    /// write passes its own.
    pub fn new(t: &Template, key_prefix: &[u8], fixed_value: Option<&[u8]>) -> Encoded {
        let mut segs = Vec::new();
        let mut lit = format!("*{}\r\n", t.args.len()).into_bytes();
        let header = |lit: &mut Vec<u8>, len: usize| {
            lit.extend_from_slice(format!("${len}\r\n").as_bytes());
        };
        for a in &t.args {
            let known: Option<&[u8]> = match (a, fixed_value) {
                (Arg::Lit(b), _) => Some(b),
                (Arg::Value, fixed) => fixed,
                (Arg::Key, _) => None,
            };
            match (a, known) {
                (_, Some(b)) => {
                    header(&mut lit, b.len());
                    lit.extend_from_slice(b);
                }
                (Arg::Key, None) => {
                    header(&mut lit, key_prefix.len() + KEY_DIGITS);
                    lit.extend_from_slice(key_prefix);
                    segs.push(Seg::Lit(std::mem::take(&mut lit).into()));
                    segs.push(Seg::KeyDigits);
                }
                (_, None) => {
                    segs.push(Seg::Lit(std::mem::take(&mut lit).into()));
                    segs.push(Seg::Value);
                }
            }
            lit.extend_from_slice(b"\r\n");
        }
        segs.push(Seg::Lit(lit.into()));
        segs.retain(|s| !matches!(s, Seg::Lit(b) if b.is_empty()));
        Encoded { segs }
    }

    /// Appends the request for key number `key` (and `value`, unless fixed) to `out`.
    pub fn write(&self, key: u64, value: &[u8], out: &mut Vec<u8>) {
        for s in &self.segs {
            match s {
                Seg::Lit(b) => out.extend_from_slice(b),
                Seg::KeyDigits => write_key_digits(key, out),
                Seg::Value => {
                    out.push(b'$');
                    out.extend_from_slice(itoa::Buffer::new().format(value.len()).as_bytes());
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(value);
                }
            }
        }
    }
}

/// `key` zero-padded to [`KEY_DIGITS`] digits (the config keeps keys below 10^12).
fn write_key_digits(mut key: u64, out: &mut Vec<u8>) {
    let mut digits = [b'0'; KEY_DIGITS];
    for d in digits.iter_mut().rev() {
        *d = b'0' + (key % 10) as u8;
        key /= 10;
    }
    debug_assert_eq!(key, 0, "key number wider than KEY_DIGITS");
    out.extend_from_slice(&digits);
}

/// A command as a RESP multibulk (for the connection handshake).
pub fn command(args: &[&[u8]]) -> Vec<u8> {
    tessera::resp::request::encode(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera::resp::{Decoded, Limits, RequestDecoder};

    /// Decodes `bytes` with the server's own request decoder.
    fn args_of(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut d = RequestDecoder::default();
        let limits = Limits {
            max_bulk_bytes: 1 << 20,
            max_multibulk_len: 1024,
            unauthenticated: false,
        };
        match d.decode(bytes, &limits) {
            Decoded::Command { consumed, .. } => {
                assert_eq!(consumed, bytes.len());
                d.args().iter().map(|r| bytes[r.clone()].to_vec()).collect()
            }
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(bytes)),
        }
    }

    #[test]
    fn templates_encode_what_the_server_decodes() {
        let t = Template::parse("SET __key__ __data__ EX 60").unwrap();
        assert_eq!(t.name(), "SET");
        let fixed = Encoded::new(&t, b"key:", Some(b"abc"));
        let var = Encoded::new(&t, b"key:", None);
        for enc in [&fixed, &var] {
            let mut out = Vec::new();
            enc.write(42, b"abc", &mut out);
            let want: Vec<&[u8]> = vec![b"SET", b"key:000000000042", b"abc", b"EX", b"60"];
            assert_eq!(args_of(&out), want);
        }
        let mut out = Vec::new();
        var.write(999_999_999_999, b"", &mut out);
        assert_eq!(args_of(&out)[1], b"key:999999999999");
        assert_eq!(args_of(&out)[2], b"");
    }

    #[test]
    fn template_parsing() {
        let t = Template::parse("  lpush __key__ __value__ ").unwrap();
        assert_eq!(t.name(), "LPUSH");
        assert_eq!(t.to_string(), "lpush __key__ __data__");
        assert!(t.uses_value());
        assert!(!Template::parse("GET __key__").unwrap().uses_value());
        assert!(Template::parse("").is_err());
        assert!(Template::parse("__key__ GET").is_err());
        let ping = Encoded::new(&Template::parse("PING").unwrap(), b"k", None);
        let mut out = Vec::new();
        ping.write(0, b"", &mut out);
        assert_eq!(out, b"*1\r\n$4\r\nPING\r\n");
    }

    #[test]
    fn handshake_commands() {
        assert_eq!(
            command(&[b"HELLO", b"3"]),
            b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n"
        );
    }
}
