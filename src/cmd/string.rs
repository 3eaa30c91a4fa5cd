//! String commands: parse arguments into `ops::string` calls, turn results into replies.

use super::parse::{eq, int};
use super::{errors, reply_op_error, Args, ShardCtx};
use crate::resp::Out;
use tessera_shards::item::ValueRef;
use tessera_shards::ops::string::{self as op, SetCondition, SetOptions, Ttl};

fn reply_value(out: &mut Out, v: Option<ValueRef>) {
    match v {
        None => out.null(),
        Some(v) => out.bulk_with(v.len(), |b| v.write_to(b)),
    }
}

fn reply_bytes(out: &mut Out, v: Option<Vec<u8>>) {
    match v {
        None => out.null(),
        Some(v) => out.bulk(&v),
    }
}

/// Turns a relative or absolute expiry argument into an absolute unix time in ms.
/// `None` is Redis's "invalid expire time" (non-positive relative time or overflow).
pub fn expiry_at(
    arg: &[u8],
    unit_ms: u64,
    absolute: bool,
    now_ms: u64,
    allow_nonpositive: bool,
) -> Result<u64, &'static str> {
    let n = int(arg).ok_or(errors::NOT_INTEGER)?;
    if n <= 0 && !allow_nonpositive {
        return Err("invalid");
    }
    let ms = n.checked_mul(unit_ms as i64).ok_or("invalid")?;
    let at = if absolute {
        ms
    } else {
        ms.checked_add(now_ms as i64).ok_or("invalid")?
    };
    Ok(at.max(1) as u64)
}

fn invalid_expire(out: &mut Out, cmd: &str) {
    out.error(&format!("ERR invalid expire time in '{cmd}' command"));
}

fn expiry_error(out: &mut Out, cmd: &str, e: &'static str) {
    if e == "invalid" {
        invalid_expire(out, cmd)
    } else {
        out.error(e)
    }
}

/// Which expiry option a SET or GETEX gave, with its unit and whether it is absolute.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TtlKind {
    Ex,
    Px,
    ExAt,
    PxAt,
}

impl TtlKind {
    fn parse(a: &[u8]) -> Option<TtlKind> {
        [
            ("EX", TtlKind::Ex),
            ("PX", TtlKind::Px),
            ("EXAT", TtlKind::ExAt),
            ("PXAT", TtlKind::PxAt),
        ]
        .into_iter()
        .find_map(|(w, k)| eq(a, w).then_some(k))
    }

    /// The absolute time in ms for `arg`, or the error to reply.
    fn resolve(self, arg: &[u8], now_ms: u64, cmd: &str) -> Result<u64, String> {
        let (unit, absolute) = match self {
            TtlKind::Ex => (1000, false),
            TtlKind::Px => (1, false),
            TtlKind::ExAt => (1000, true),
            TtlKind::PxAt => (1, true),
        };
        expiry_at(arg, unit, absolute, now_ms, false).map_err(|e| {
            if e == "invalid" {
                format!("ERR invalid expire time in '{cmd}' command")
            } else {
                e.to_string()
            }
        })
    }
}

/// SET's and GETEX's options, checked as Redis's `parseExtendedStringArgumentsOrReply`
/// does: an option may repeat (the last value wins) but not conflict, and the time value
/// is parsed only after the whole syntax is known to be right.
struct StringOptions<'a> {
    condition: SetCondition,
    get: bool,
    keep_ttl: bool,
    persist: bool,
    ttl: Option<(TtlKind, &'a [u8])>,
}

fn parse_string_options<'a>(
    args: &Args<'a>,
    from: usize,
    for_set: bool,
) -> Option<StringOptions<'a>> {
    let mut o = StringOptions {
        condition: SetCondition::Always,
        get: false,
        keep_ttl: false,
        persist: false,
        ttl: None,
    };
    let mut i = from;
    while i < args.len() {
        let a = args.get(i);
        let ttl_kind = TtlKind::parse(a);
        let other_ttl = |k: TtlKind| o.ttl.is_some_and(|(t, _)| t != k);
        if for_set && eq(a, "NX") && o.condition != SetCondition::IfExists {
            o.condition = SetCondition::IfMissing;
        } else if for_set && eq(a, "XX") && o.condition != SetCondition::IfMissing {
            o.condition = SetCondition::IfExists;
        } else if for_set && eq(a, "GET") {
            o.get = true;
        } else if for_set && eq(a, "KEEPTTL") && o.ttl.is_none() {
            o.keep_ttl = true;
        } else if !for_set && eq(a, "PERSIST") && o.ttl.is_none() {
            o.persist = true;
        } else if let Some(k) = ttl_kind.filter(|&k| !o.keep_ttl && !o.persist && !other_ttl(k)) {
            if i + 1 >= args.len() {
                return None;
            }
            o.ttl = Some((k, args.get(i + 1)));
            i += 1;
        } else {
            return None;
        }
        i += 1;
    }
    Some(o)
}

pub fn get(c: &mut ShardCtx, args: Args, out: &mut Out) {
    match op::get(c.shard.db(c.db), args.get(1), c.now_ms) {
        Ok(v) => reply_value(out, v),
        Err(e) => reply_op_error(out, e),
    }
}

pub fn set(c: &mut ShardCtx, args: Args, out: &mut Out) {
    let Some(parsed) = parse_string_options(&args, 3, true) else {
        return out.error(errors::SYNTAX);
    };
    let ttl = match parsed.ttl {
        Some((kind, arg)) => match kind.resolve(arg, c.now_ms, "set") {
            Ok(at) => Ttl::At(at),
            Err(e) => return out.error(&e),
        },
        None if parsed.keep_ttl => Ttl::Keep,
        None => Ttl::Clear,
    };
    let opts = SetOptions {
        ttl,
        condition: parsed.condition,
        get_old: parsed.get,
    };
    match op::set(c.shard.db(c.db), args.get(1), args.get(2), opts, c.now_ms) {
        Err(e) => reply_op_error(out, e),
        Ok(r) if opts.get_old => reply_bytes(out, r.old),
        Ok(r) if r.written => out.ok(),
        Ok(_) => out.null(),
    }
}

pub fn setnx(c: &mut ShardCtx, args: Args, out: &mut Out) {
    let opts = SetOptions {
        condition: SetCondition::IfMissing,
        ..SetOptions::default()
    };
    match op::set(c.shard.db(c.db), args.get(1), args.get(2), opts, c.now_ms) {
        Ok(r) => out.int(r.written as i64),
        Err(e) => reply_op_error(out, e),
    }
}

fn set_with_ttl(c: &mut ShardCtx, args: Args, out: &mut Out, unit_ms: u64, name: &str) {
    let at = match expiry_at(args.get(2), unit_ms, false, c.now_ms, false) {
        Ok(at) => at,
        Err(e) => return expiry_error(out, name, e),
    };
    let opts = SetOptions {
        ttl: Ttl::At(at),
        ..SetOptions::default()
    };
    match op::set(c.shard.db(c.db), args.get(1), args.get(3), opts, c.now_ms) {
        Ok(_) => out.ok(),
        Err(e) => reply_op_error(out, e),
    }
}

pub fn setex(c: &mut ShardCtx, args: Args, out: &mut Out) {
    set_with_ttl(c, args, out, 1000, "setex")
}

pub fn psetex(c: &mut ShardCtx, args: Args, out: &mut Out) {
    set_with_ttl(c, args, out, 1, "psetex")
}

pub fn getset(c: &mut ShardCtx, args: Args, out: &mut Out) {
    let opts = SetOptions {
        get_old: true,
        ..SetOptions::default()
    };
    match op::set(c.shard.db(c.db), args.get(1), args.get(2), opts, c.now_ms) {
        Ok(r) => reply_bytes(out, r.old),
        Err(e) => reply_op_error(out, e),
    }
}

pub fn getdel(c: &mut ShardCtx, args: Args, out: &mut Out) {
    match op::getdel(c.shard.db(c.db), args.get(1), c.now_ms) {
        Ok(v) => reply_bytes(out, v),
        Err(e) => reply_op_error(out, e),
    }
}

pub fn getex(c: &mut ShardCtx, args: Args, out: &mut Out) {
    let Some(parsed) = parse_string_options(&args, 2, false) else {
        return out.error(errors::SYNTAX);
    };
    // Redis looks the key up before it checks the time: a missing key is nil either way.
    if !c.shard.db(c.db).exists(args.get(1), c.now_ms) {
        return out.null();
    }
    let ttl = match parsed.ttl {
        Some((kind, arg)) => match kind.resolve(arg, c.now_ms, "getex") {
            Ok(at) => Some(Ttl::At(at)),
            Err(e) => return out.error(&e),
        },
        None if parsed.persist => Some(Ttl::Clear),
        None => None,
    };
    match op::getex(c.shard.db(c.db), args.get(1), ttl, c.now_ms) {
        Ok(v) => reply_bytes(out, v),
        Err(e) => reply_op_error(out, e),
    }
}

/// MGET of keys that all live on this core; the cross-core form gathers these.
pub fn mget(c: &mut ShardCtx, args: Args, out: &mut Out) {
    out.array(args.len() - 1);
    let db = c.shard.db(c.db);
    for key in args.iter().skip(1) {
        match op::get(db, key, c.now_ms) {
            Ok(v) => reply_value(out, v),
            // Redis's MGET answers nil for a key of another type.
            Err(_) => out.null(),
        }
    }
}

/// MSET of keys that all live on this core.
pub fn mset(c: &mut ShardCtx, args: Args, out: &mut Out) {
    if args.len() % 2 == 0 {
        return out.error(&super::arity_error("mset"));
    }
    let db = c.shard.db(c.db);
    for pair in 0..(args.len() - 1) / 2 {
        let (k, v) = (args.get(1 + 2 * pair), args.get(2 + 2 * pair));
        let _ = op::set(db, k, v, SetOptions::default(), c.now_ms);
    }
    out.ok();
}

/// MSETNX of keys that all live on this core: all or nothing.
pub fn msetnx(c: &mut ShardCtx, args: Args, out: &mut Out) {
    if args.len() % 2 == 0 {
        return out.error(&super::arity_error("msetnx"));
    }
    let db = c.shard.db(c.db);
    let pairs = (args.len() - 1) / 2;
    if (0..pairs).any(|p| db.exists(args.get(1 + 2 * p), c.now_ms)) {
        return out.int(0);
    }
    for p in 0..pairs {
        let _ = op::set(
            db,
            args.get(1 + 2 * p),
            args.get(2 + 2 * p),
            SetOptions::default(),
            c.now_ms,
        );
    }
    out.int(1);
}

fn incr_common(c: &mut ShardCtx, key: &[u8], delta: i64, out: &mut Out) {
    match op::incr_by(c.shard.db(c.db), key, delta, c.now_ms) {
        Ok(n) => out.int(n),
        Err(e) => reply_op_error(out, e),
    }
}

pub fn incr(c: &mut ShardCtx, args: Args, out: &mut Out) {
    incr_common(c, args.get(1), 1, out)
}

pub fn decr(c: &mut ShardCtx, args: Args, out: &mut Out) {
    incr_common(c, args.get(1), -1, out)
}

pub fn incrby(c: &mut ShardCtx, args: Args, out: &mut Out) {
    match int(args.get(2)) {
        Some(d) => incr_common(c, args.get(1), d, out),
        None => out.error(errors::NOT_INTEGER),
    }
}

pub fn decrby(c: &mut ShardCtx, args: Args, out: &mut Out) {
    match int(args.get(2)).and_then(i64::checked_neg) {
        Some(d) => incr_common(c, args.get(1), d, out),
        None if int(args.get(2)).is_some() => out.error("ERR decrement would overflow"),
        None => out.error(errors::NOT_INTEGER),
    }
}

pub fn incrbyfloat(c: &mut ShardCtx, args: Args, out: &mut Out) {
    match op::incr_by_float(c.shard.db(c.db), args.get(1), args.get(2), c.now_ms) {
        Ok(v) => out.bulk(&v),
        Err(e) => reply_op_error(out, e),
    }
}

pub fn append(c: &mut ShardCtx, args: Args, out: &mut Out) {
    let max = c.limits.max_string_bytes;
    match op::append(c.shard.db(c.db), args.get(1), args.get(2), max, c.now_ms) {
        Ok(n) => out.int(n as i64),
        Err(e) => reply_op_error(out, e),
    }
}

pub fn strlen(c: &mut ShardCtx, args: Args, out: &mut Out) {
    match op::strlen(c.shard.db(c.db), args.get(1), c.now_ms) {
        Ok(n) => out.int(n as i64),
        Err(e) => reply_op_error(out, e),
    }
}

pub fn getrange(c: &mut ShardCtx, args: Args, out: &mut Out) {
    let (Some(s), Some(e)) = (int(args.get(2)), int(args.get(3))) else {
        return out.error(errors::NOT_INTEGER);
    };
    match op::getrange(c.shard.db(c.db), args.get(1), s, e, c.now_ms) {
        Ok(v) => out.bulk(&v),
        Err(e) => reply_op_error(out, e),
    }
}

pub fn setrange(c: &mut ShardCtx, args: Args, out: &mut Out) {
    let Some(offset) = int(args.get(2)) else {
        return out.error(errors::NOT_INTEGER);
    };
    if offset < 0 {
        return out.error("ERR offset is out of range");
    }
    let max = c.limits.max_string_bytes;
    match op::setrange(
        c.shard.db(c.db),
        args.get(1),
        offset as usize,
        args.get(3),
        max,
        c.now_ms,
    ) {
        Ok(n) => out.int(n as i64),
        Err(e) => reply_op_error(out, e),
    }
}
