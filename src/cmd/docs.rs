//! Command argument docs: a compact syntax in the command table, parsed into the nested
//! argument structure Redis 7 reports under `"arguments"` in `COMMAND DOCS` (redis-cli
//! builds its hints and `help <command>` text from it).
//!
//! The syntax, one string per command (`""`: no arguments):
//!
//! | written                  | means                                                     |
//! | ------------------------ | --------------------------------------------------------- |
//! | `name:type`              | an argument; type is `key`, `string`, `integer`, `double`, `pattern` or `unix-time` (the name may hold `:`: `ip:port:string`) |
//! | `TOKEN`                  | a pure token (an uppercase word: `NX`, `LIB-NAME`), named after it in lower case |
//! | `TOKEN x`                | the token introduces `x`, the argument or group right after it (`COUNT count:integer`) |
//! | `[a b]`, `(a b)`         | an optional or a required group: a `block` of `a` and `b` |
//! | `[a\|b]`, `(a\|b)`         | a `oneof`; an alternative of several items is a block      |
//! | `[x]`, `(x)`             | one item alone: `x` itself (optional with `[]`)            |
//! | `name:[…]`, `name:(…)`   | names the group, which then stays a container even around one item; unnamed groups are named after their members joined by `_` |
//! | `x...`                   | `x` may repeat (`multiple`)                               |
//! | `[TOKEN x]...`           | the token repeats with each `x` (`multiple` and `multiple_token`) |
//!
//! Key arguments get `key_spec_index` 0, 1, … in the order they are written.

use std::fmt;

/// An argument's `type` as Redis names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgType {
    Key,
    String,
    Integer,
    Double,
    Pattern,
    UnixTime,
    PureToken,
    Oneof,
    Block,
}

impl ArgType {
    pub fn as_str(self) -> &'static str {
        match self {
            ArgType::Key => "key",
            ArgType::String => "string",
            ArgType::Integer => "integer",
            ArgType::Double => "double",
            ArgType::Pattern => "pattern",
            ArgType::UnixTime => "unix-time",
            ArgType::PureToken => "pure-token",
            ArgType::Oneof => "oneof",
            ArgType::Block => "block",
        }
    }

    /// The types a `name:type` argument may have (the others come from the syntax).
    fn of_value(s: &str) -> Option<ArgType> {
        Some(match s {
            "key" => ArgType::Key,
            "string" => ArgType::String,
            "integer" => ArgType::Integer,
            "double" => ArgType::Double,
            "pattern" => ArgType::Pattern,
            "unix-time" => ArgType::UnixTime,
            _ => return None,
        })
    }
}

/// One argument of a command, as one map of `COMMAND DOCS`'s `"arguments"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg {
    pub name: String,
    pub kind: ArgType,
    /// For keys: which key this is, counting from 0 in the order written.
    pub key_spec_index: Option<usize>,
    pub token: Option<String>,
    pub optional: bool,
    pub multiple: bool,
    pub multiple_token: bool,
    /// The members of a `oneof` or a `block`.
    pub args: Vec<Arg>,
}

impl Arg {
    fn new(name: &str, kind: ArgType) -> Arg {
        Arg {
            name: name.to_string(),
            kind,
            key_spec_index: None,
            token: None,
            optional: false,
            multiple: false,
            multiple_token: false,
            args: Vec::new(),
        }
    }

    /// The `"flags"` set, in Redis's order; empty when none applies.
    pub fn flags(&self) -> Vec<&'static str> {
        [
            (self.optional, "optional"),
            (self.multiple, "multiple"),
            (self.multiple_token, "multiple_token"),
        ]
        .into_iter()
        .filter_map(|(on, f)| on.then_some(f))
        .collect()
    }
}

/// Why an argument string does not parse: the message and the byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub at: usize,
    pub msg: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.at, self.msg)
    }
}

impl std::error::Error for SyntaxError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex<'a> {
    Open(u8),
    Close(u8),
    Bar,
    Ellipsis,
    Word(&'a str),
}

fn lex(s: &str) -> Vec<(usize, Lex<'_>)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            c if c.is_ascii_whitespace() => i += 1,
            c @ (b'[' | b'(') => {
                out.push((i, Lex::Open(c)));
                i += 1;
            }
            c @ (b']' | b')') => {
                out.push((i, Lex::Close(c)));
                i += 1;
            }
            b'|' => {
                out.push((i, Lex::Bar));
                i += 1;
            }
            _ if s[i..].starts_with("...") => {
                out.push((i, Lex::Ellipsis));
                i += 3;
            }
            _ => {
                let start = i;
                while i < b.len()
                    && !b[i].is_ascii_whitespace()
                    && !matches!(b[i], b'[' | b'(' | b']' | b')' | b'|')
                    && !s[i..].starts_with("...")
                {
                    i += 1;
                }
                out.push((start, Lex::Word(&s[start..i])));
            }
        }
    }
    out
}

fn is_token(w: &str) -> bool {
    w.bytes().any(|c| c.is_ascii_uppercase())
        && w.bytes()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
}

/// An item of a sequence while parsing: `bare` marks a token written alone, which
/// introduces the item after it.
struct Item {
    arg: Arg,
    bare: bool,
}

struct Parser<'a> {
    lexed: Vec<(usize, Lex<'a>)>,
    pos: usize,
    len: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<Lex<'a>> {
        self.lexed.get(self.pos).map(|(_, l)| *l)
    }

    fn err<T>(&self, msg: impl Into<String>) -> Result<T, SyntaxError> {
        let at = self.lexed.get(self.pos).map_or(self.len, |(at, _)| *at);
        Err(SyntaxError {
            at,
            msg: msg.into(),
        })
    }

    /// Alternatives separated by `|`, up to `close` (consumed) or the end when `None`.
    fn alternatives(&mut self, close: Option<u8>) -> Result<Vec<Vec<Arg>>, SyntaxError> {
        let mut alts = vec![self.sequence()?];
        loop {
            match self.peek() {
                Some(Lex::Bar) => {
                    self.pos += 1;
                    alts.push(self.sequence()?);
                }
                Some(Lex::Close(c)) if Some(c) == close => {
                    self.pos += 1;
                    return Ok(alts);
                }
                None if close.is_none() => return Ok(alts),
                None => return self.err(format!("missing '{}'", close.unwrap_or(b'?') as char)),
                Some(_) => return self.err("unexpected closing bracket"),
            }
        }
    }

    fn sequence(&mut self) -> Result<Vec<Arg>, SyntaxError> {
        let mut items: Vec<Item> = Vec::new();
        while let Some(l) = self.peek() {
            if matches!(l, Lex::Bar | Lex::Close(_)) {
                break;
            }
            items.push(self.item()?);
        }
        // A token written alone introduces the next item, unless that is a token too.
        let mut args: Vec<Arg> = Vec::with_capacity(items.len());
        let mut pending: Option<String> = None;
        for item in items {
            if let Some(token) = pending.take() {
                if !item.bare && item.arg.token.is_none() {
                    let mut arg = item.arg;
                    arg.token = Some(token);
                    args.push(arg);
                    continue;
                }
                args.push(pure_token(&token));
            }
            if item.bare {
                pending = item.arg.token;
            } else {
                args.push(item.arg);
            }
        }
        if let Some(token) = pending {
            args.push(pure_token(&token));
        }
        Ok(args)
    }

    fn item(&mut self) -> Result<Item, SyntaxError> {
        let mut item = match self.peek() {
            Some(Lex::Open(_)) => self.group(None)?,
            Some(Lex::Word(w)) if w.ends_with(':') => {
                let name = &w[..w.len() - 1];
                if name.is_empty() {
                    return self.err("empty group name");
                }
                self.pos += 1;
                if !matches!(self.peek(), Some(Lex::Open(_))) {
                    return self.err(format!("'{w}' must be followed by a group"));
                }
                self.group(Some(name))?
            }
            Some(Lex::Word(w)) => {
                self.pos += 1;
                self.word(w)?
            }
            Some(Lex::Ellipsis) => return self.err("'...' must follow an argument"),
            _ => return self.err("expected an argument"),
        };
        if self.peek() == Some(Lex::Ellipsis) {
            self.pos += 1;
            item.arg.multiple = true;
            item.bare = false;
        }
        Ok(item)
    }

    fn word(&self, w: &str) -> Result<Item, SyntaxError> {
        let at = self.pos - 1;
        let fail = |msg: String| {
            Err(SyntaxError {
                at: self.lexed[at].0,
                msg,
            })
        };
        if let Some((name, ty)) = w.rsplit_once(':') {
            let Some(kind) = ArgType::of_value(ty) else {
                return fail(format!("'{w}': unknown type '{ty}'"));
            };
            if name.is_empty() {
                return fail(format!("'{w}': no name"));
            }
            return Ok(Item {
                arg: Arg::new(name, kind),
                bare: false,
            });
        }
        if is_token(w) {
            return Ok(Item {
                arg: pure_token(w),
                bare: true,
            });
        }
        fail(format!("'{w}': expected a TOKEN or name:type"))
    }

    fn group(&mut self, name: Option<&str>) -> Result<Item, SyntaxError> {
        let Some(Lex::Open(open)) = self.peek() else {
            return self.err("expected '[' or '('");
        };
        self.pos += 1;
        let close = if open == b'[' { b']' } else { b')' };
        let alts = self.alternatives(Some(close))?;
        let mut members = Vec::with_capacity(alts.len());
        for seq in alts {
            members.push(match seq.len() {
                0 => return self.err("empty group or alternative"),
                1 => seq.into_iter().next().expect("one"),
                _ => block(None, seq),
            });
        }
        let mut arg = if name.is_none() && members.len() == 1 {
            members.pop().expect("one")
        } else if members.len() == 1 {
            let only = members.pop().expect("one");
            if only.kind == ArgType::Block && only.token.is_none() && !only.optional {
                // `name:(a b)`: name the block itself rather than wrap it.
                Arg {
                    name: name.unwrap_or_default().to_string(),
                    ..only
                }
            } else {
                block(name, vec![only])
            }
        } else {
            let mut oneof = Arg::new(&joined_name(name, &members), ArgType::Oneof);
            oneof.args = members;
            oneof
        };
        arg.optional |= open == b'[';
        // `[TOKEN x]...`: what repeats is the token with its argument.
        if self.peek() == Some(Lex::Ellipsis) && arg.token.is_some() {
            arg.multiple_token = true;
        }
        Ok(Item { arg, bare: false })
    }
}

fn pure_token(token: &str) -> Arg {
    let mut arg = Arg::new(&token.to_ascii_lowercase(), ArgType::PureToken);
    arg.token = Some(token.to_string());
    arg
}

fn joined_name(name: Option<&str>, members: &[Arg]) -> String {
    match name {
        Some(n) => n.to_string(),
        None => members
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join("_"),
    }
}

fn block(name: Option<&str>, members: Vec<Arg>) -> Arg {
    let mut arg = Arg::new(&joined_name(name, &members), ArgType::Block);
    arg.args = members;
    arg
}

fn number_keys(args: &mut [Arg], next: &mut usize) {
    for a in args {
        if a.kind == ArgType::Key {
            a.key_spec_index = Some(*next);
            *next += 1;
        }
        number_keys(&mut a.args, next);
    }
}

/// Parses a command's argument string (see the module docs) into its arguments.
pub fn parse(s: &str) -> Result<Vec<Arg>, SyntaxError> {
    let mut p = Parser {
        lexed: lex(s),
        pos: 0,
        len: s.len(),
    };
    if p.lexed.is_empty() {
        return Ok(Vec::new());
    }
    let mut alts = p.alternatives(None)?;
    if alts.len() != 1 {
        return Err(SyntaxError {
            at: 0,
            msg: "'|' outside a group".into(),
        });
    }
    let mut args = alts.pop().expect("one");
    number_keys(&mut args, &mut 0);
    Ok(args)
}

/// The parameter line redis-cli builds from these arguments for its hints and for
/// `help <command>` (e.g. `key value [NX|XX] [GET] …`).
pub fn hint(args: &[Arg]) -> String {
    join(args, " ")
}

fn join(args: &[Arg], sep: &str) -> String {
    args.iter().map(hint_one).collect::<Vec<_>>().join(sep)
}

fn hint_one(a: &Arg) -> String {
    let token = match (&a.token, a.kind) {
        (Some(t), ArgType::PureToken) => t.clone(),
        (Some(t), _) => format!("{t} "),
        (None, _) => String::new(),
    };
    let repeat = match a.kind {
        ArgType::PureToken => String::new(),
        ArgType::Oneof => join(&a.args, "|"),
        ArgType::Block => join(&a.args, " "),
        _ => a.name.clone(),
    };
    let mut s = format!("{token}{repeat}");
    if a.multiple {
        let again = if a.multiple_token {
            format!("{token}{repeat}")
        } else {
            repeat
        };
        s = format!("{s} [{again} ...]");
    }
    if a.optional {
        s = format!("[{s}]");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> Arg {
        let mut v = parse(s).unwrap();
        assert_eq!(v.len(), 1, "{s}: {v:?}");
        v.pop().unwrap()
    }

    #[test]
    fn empty_means_no_arguments() {
        assert_eq!(parse("").unwrap(), vec![]);
        assert_eq!(parse("   ").unwrap(), vec![]);
    }

    #[test]
    fn typed_arguments_and_key_indexes() {
        let args =
            parse("key:key newkey:key seconds:integer x:double p:pattern t:unix-time s:string")
                .unwrap();
        let kinds: Vec<_> = args.iter().map(|a| a.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "key",
                "key",
                "integer",
                "double",
                "pattern",
                "unix-time",
                "string"
            ]
        );
        assert_eq!(args[0].name, "key");
        assert_eq!(args[0].key_spec_index, Some(0));
        assert_eq!(args[1].key_spec_index, Some(1));
        assert_eq!(args[2].key_spec_index, None);
        assert!(args
            .iter()
            .all(|a| a.flags().is_empty() && a.token.is_none()));
        // The name may hold ':'; the type is after the last one.
        assert_eq!(one("ip:port:string").name, "ip:port");
    }

    #[test]
    fn tokens_introduce_the_next_argument() {
        let count = one("[COUNT count:integer]");
        assert_eq!(count.name, "count");
        assert_eq!(count.kind, ArgType::Integer);
        assert_eq!(count.token.as_deref(), Some("COUNT"));
        assert_eq!(count.flags(), ["optional"]);

        let get = one("[GET]");
        assert_eq!(get.name, "get");
        assert_eq!(get.kind, ArgType::PureToken);
        assert_eq!(get.token.as_deref(), Some("GET"));

        // Two tokens in a row stay two pure tokens; a trailing one too.
        let args = parse("NOW FORCE x:string ABORT").unwrap();
        let shape: Vec<_> = args
            .iter()
            .map(|a| (a.name.as_str(), a.kind, a.token.as_deref()))
            .collect();
        assert_eq!(
            shape,
            [
                ("now", ArgType::PureToken, Some("NOW")),
                ("x", ArgType::String, Some("FORCE")),
                ("abort", ArgType::PureToken, Some("ABORT")),
            ]
        );
    }

    #[test]
    fn groups_become_oneof_and_block() {
        let cond = one("condition:[NX|XX|GT|LT]");
        assert_eq!(cond.name, "condition");
        assert_eq!(cond.kind, ArgType::Oneof);
        assert_eq!(cond.flags(), ["optional"]);
        let members: Vec<_> = cond
            .args
            .iter()
            .map(|a| a.token.as_deref().unwrap())
            .collect();
        assert_eq!(members, ["NX", "XX", "GT", "LT"]);

        // Unnamed groups are named after their members.
        assert_eq!(one("[ASYNC|SYNC]").name, "async_sync");
        let kv = one("(key:key value:string)...");
        assert_eq!(kv.name, "key_value");
        assert_eq!(kv.kind, ArgType::Block);
        assert_eq!(kv.flags(), ["multiple"]);
        assert_eq!(kv.args[0].key_spec_index, Some(0));

        // A named group stays a container around one member.
        let p = one("parameter:(parameter:string)...");
        assert_eq!((p.kind, p.args.len()), (ArgType::Block, 1));
        assert_eq!(p.args[0].name, "parameter");

        // A token before a group names the group's token.
        let auth = one("[AUTH (username:string password:string)]");
        assert_eq!(auth.name, "username_password");
        assert_eq!(auth.kind, ArgType::Block);
        assert_eq!(auth.token.as_deref(), Some("AUTH"));
        assert_eq!(auth.flags(), ["optional"]);

        // An alternative of several items is a block inside the oneof.
        let o = one("(a:string b:string|c:string)");
        assert_eq!(o.kind, ArgType::Oneof);
        assert_eq!(o.args[0].kind, ArgType::Block);
        assert_eq!(o.args[0].name, "a_b");
        assert_eq!(o.args[1].name, "c");
    }

    #[test]
    fn multiple_and_multiple_token() {
        let ids = one("[ID client-id:integer...]");
        assert_eq!(ids.flags(), ["optional", "multiple"]);
        let prefix = one("[PREFIX prefix:string]...");
        assert_eq!(prefix.flags(), ["optional", "multiple", "multiple_token"]);
        assert_eq!(hint(&[ids]), "[ID client-id [client-id ...]]");
        assert_eq!(hint(&[prefix]), "[PREFIX prefix [PREFIX prefix ...]]");
        assert_eq!(hint(&parse("key:key...").unwrap()), "key [key ...]");
    }

    #[test]
    fn hints_read_like_redis_cli_s() {
        let set = "key:key value:string condition:[NX|XX] [GET] expiration:[EX seconds:integer|PX milliseconds:integer|EXAT unix-time-seconds:unix-time|PXAT unix-time-milliseconds:unix-time|KEEPTTL]";
        assert_eq!(
            hint(&parse(set).unwrap()),
            "key value [NX|XX] [GET] [EX seconds|PX milliseconds|EXAT unix-time-seconds|PXAT unix-time-milliseconds|KEEPTTL]"
        );
        let hello = "arguments:[protover:integer [AUTH (username:string password:string)] [SETNAME clientname:string]]";
        assert_eq!(
            hint(&parse(hello).unwrap()),
            "[protover [AUTH username password] [SETNAME clientname]]"
        );
        assert_eq!(
            hint(&parse("cursor:integer [MATCH pattern:pattern] [COUNT count:integer] [TYPE type:string]").unwrap()),
            "cursor [MATCH pattern] [COUNT count] [TYPE type]"
        );
        assert_eq!(
            hint(&parse("[ID id:(client-id:integer...)]").unwrap()),
            "[ID client-id [client-id ...]]"
        );
    }

    #[test]
    fn mistakes_are_errors() {
        for bad in [
            "key:kee",
            "value",
            "[NX|XX",
            "NX|XX",
            "(a:string))",
            "[]",
            "[a:string|]",
            "...",
            "name: x:string",
            ":[NX]",
            ":string",
            "a:string ... ...",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed: {:?}", parse(bad));
        }
        let e = parse("key:key value").unwrap_err();
        assert_eq!(e.at, 8);
        assert!(e.to_string().contains("'value'"), "{e}");
    }
}
