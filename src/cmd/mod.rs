//! The command table and the command families.
//!
//! One table ([`TABLE`]) holds every command we serve: name, arity, flags, key positions,
//! how it runs and its documentation. A command that is not finished is not in the table.
//!
//! Two kinds of command:
//! - [`Exec::Shard`]: runs on the core that owns its keys, against that core's shard
//!   (`string.rs`, `keys.rs`). These cross cores in batches.
//! - [`Exec::Node`]: runs on the connection's core and may reach every core
//!   (`server/node_cmds.rs`): connection state, transactions, server-wide commands, and
//!   multi-key commands whose keys live on several cores.

pub mod docs;
pub mod keys;
pub mod parse;
pub mod string;
pub mod table;

use crate::resp::Out;
use std::ops::Range;
use tessera_shards::ops::OpError;
use tessera_shards::Shard;

pub use table::{lookup, CommandSpec, TABLE};

/// For unit tests: the buffer and ranges an [`Args`] over `words` borrows.
#[cfg(test)]
pub fn test_words(words: &[&str]) -> (Vec<u8>, Vec<Range<usize>>) {
    let mut buf = Vec::new();
    let mut ranges = Vec::new();
    for w in words {
        let start = buf.len();
        buf.extend_from_slice(w.as_bytes());
        ranges.push(start..buf.len());
    }
    (buf, ranges)
}

/// A command's arguments, `args.get(0)` being the command name. Borrowed from the
/// connection's read buffer (or a transaction's queue): no copy on the local path.
#[derive(Clone, Copy)]
pub struct Args<'a> {
    pub buf: &'a [u8],
    pub ranges: &'a [Range<usize>],
}

impl<'a> Args<'a> {
    pub fn new(buf: &'a [u8], ranges: &'a [Range<usize>]) -> Self {
        Args { buf, ranges }
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn get(&self, i: usize) -> &'a [u8] {
        &self.buf[self.ranges[i].clone()]
    }

    /// The arguments from `i` on (a command inside another, as ACL DRYRUN's).
    pub fn slice_from(&self, i: usize) -> Args<'a> {
        Args {
            buf: self.buf,
            ranges: &self.ranges[i.min(self.ranges.len())..],
        }
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + 'a {
        let buf = self.buf;
        self.ranges.iter().map(move |r| &buf[r.clone()])
    }
}

/// Limits a shard command needs from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct ShardLimits {
    /// `proto-max-bulk-len`: strings may not grow past this (APPEND, SETRANGE).
    pub max_string_bytes: usize,
}

/// What a shard command runs against: the owning core's shard, the client's database and
/// the time, read once per batch.
pub struct ShardCtx<'a> {
    pub shard: &'a mut Shard,
    pub db: usize,
    pub now_ms: u64,
    pub limits: ShardLimits,
}

/// The texts clients match on (Redis 7's).
pub mod errors {
    pub const SYNTAX: &str = "ERR syntax error";
    pub const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
    pub const NOT_FLOAT: &str = "ERR value is not a valid float";
    pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
    pub const OVERFLOW: &str = "ERR increment or decrement would overflow";
    pub const NAN: &str = "ERR increment would produce NaN or Infinity";
    pub const TOO_LONG: &str = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";
    pub const NO_SUCH_KEY: &str = "ERR no such key";
    pub const DB_RANGE: &str = "ERR DB index is out of range";
    pub const NOAUTH: &str = "NOAUTH Authentication required.";
    pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
    pub const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";
    pub const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";
}

/// Runs a shard command on its shard. A command that may grow the data (Redis's `denyoom`)
/// first makes room under the shard's share of `maxmemory`, and is refused with -OOM when
/// nothing can be evicted; reads and deletes always run.
pub fn run_on_shard(
    spec: &CommandSpec,
    f: table::ShardFn,
    ctx: &mut ShardCtx,
    args: Args,
    o: &mut Out,
) {
    if ctx.shard.memory_policy().limit_bytes != 0 && spec.has_flag("denyoom") {
        let start = std::time::Instant::now();
        let room = ctx.shard.make_room(ctx.now_ms);
        crate::server::metrics::latency("eviction-cycle", start.elapsed());
        if room == tessera_shards::shard::Room::Full {
            return o.error(errors::OOM);
        }
    }
    f(ctx, args, o)
}

pub fn op_error_text(e: OpError) -> &'static str {
    match e {
        OpError::WrongType => errors::WRONGTYPE,
        OpError::NotInteger => errors::NOT_INTEGER,
        OpError::NotFloat => errors::NOT_FLOAT,
        OpError::Overflow => errors::OVERFLOW,
        OpError::NanOrInfinity => errors::NAN,
        OpError::StringTooLong => errors::TOO_LONG,
        OpError::NoSuchKey => errors::NO_SUCH_KEY,
    }
}

pub fn reply_op_error(out: &mut Out, e: OpError) {
    out.error(op_error_text(e));
}

/// `ERR wrong number of arguments for 'get' command`
pub fn arity_error(name: &str) -> String {
    format!(
        "ERR wrong number of arguments for '{}' command",
        name.to_ascii_lowercase()
    )
}

/// The bytes C's `%.Ns` prints of an argument: up to its first NUL, at most `max`.
fn c_str(arg: &[u8], max: usize) -> &[u8] {
    let end = arg.iter().position(|&b| b == 0).unwrap_or(arg.len());
    &arg[..end.min(max)]
}

/// Redis's unknown-command text, byte for byte: the name and then the first arguments,
/// quoted, until 128 bytes of them are shown.
pub fn unknown_command_error(args: &Args) -> Vec<u8> {
    let mut msg = b"ERR unknown command '".to_vec();
    msg.extend_from_slice(c_str(args.get(0), 128));
    msg.extend_from_slice(b"', with args beginning with: ");
    let mut shown: Vec<u8> = Vec::new();
    for a in args.iter().skip(1) {
        if shown.len() >= 128 {
            break;
        }
        shown.push(b'\'');
        shown.extend_from_slice(c_str(a, 128 - (shown.len() - 1)));
        shown.extend_from_slice(b"' ");
    }
    msg.extend_from_slice(&shown);
    msg
}

/// `ERR unknown subcommand 'x'. Try CLIENT HELP.`, with the subcommand as sent.
pub fn unknown_subcommand_error(cmd: &str, sub: &[u8]) -> Vec<u8> {
    let mut msg = b"ERR unknown subcommand '".to_vec();
    msg.extend_from_slice(c_str(sub, 128));
    msg.extend_from_slice(format!("'. Try {} HELP.", cmd.to_ascii_uppercase()).as_bytes());
    msg
}
