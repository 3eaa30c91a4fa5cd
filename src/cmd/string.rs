//! String commands: parse arguments into `ops::string` calls, turn results into replies.

use super::parse::{eq, float, int};
use super::{errors, reply_op_error, Args, ShardCtx};
use crate::resp::Out;
use tessera_shards::ops::string::{self as op, SetCondition, SetOptions, Ttl};
use tessera_shards::Value;

fn reply_value(out: &mut Out, v: Option<&Value>) {
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

/// Parses an `EX|PX|EXAT|PXAT <n>` pair at `args[i]`; `Ok(None)` if `args[i]` is none of them.
fn ttl_option(args: &Args, i: usize, now_ms: u64) -> Result<Option<u64>, &'static str> {
    let a = args.get(i);
    let (unit, absolute) = if eq(a, "EX") {
        (1000, false)
    } else if eq(a, "PX") {
        (1, false)
    } else if eq(a, "EXAT") {
        (1000, true)
    } else if eq(a, "PXAT") {
        (1, true)
    } else {
        return Ok(None);
    };
    if i + 1 >= args.len() {
        return Err(errors::SYNTAX);
    }
    expiry_at(args.get(i + 1), unit, absolute, now_ms, false).map(Some)
}

pub fn get(c: &mut ShardCtx, args: Args, out: &mut Out) {
    match op::get(c.shard.db(c.db), args.get(1), c.now_ms) {
        Ok(v) => reply_value(out, v),
        Err(e) => reply_op_error(out, e),
    }
}

pub fn set(c: &mut ShardCtx, args: Args, out: &mut Out) {
    let mut opts = SetOptions::default();
    let mut ttl_given = false;
    let mut i = 3;
    while i < args.len() {
        let a = args.get(i);
        if eq(a, "NX") && opts.condition != SetCondition::IfExists {
            opts.condition = SetCondition::IfMissing;
        } else if eq(a, "XX") && opts.condition != SetCondition::IfMissing {
            opts.condition = SetCondition::IfExists;
        } else if eq(a, "GET") {
            opts.get_old = true;
        } else if eq(a, "KEEPTTL") && !ttl_given {
            opts.ttl = Ttl::Keep;
            ttl_given = true;
        } else {
            match ttl_option(&args, i, c.now_ms) {
                Ok(Some(at)) if !ttl_given => {
                    opts.ttl = Ttl::At(at);
                    ttl_given = true;
                    i += 1;
                }
                Ok(_) => return out.error(errors::SYNTAX),
                Err(e) => return expiry_error(out, "set", e),
            }
        }
        i += 1;
    }
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
    let mut ttl = None;
    let mut i = 2;
    while i < args.len() {
        if eq(args.get(i), "PERSIST") && ttl.is_none() {
            ttl = Some(Ttl::Clear);
        } else {
            match ttl_option(&args, i, c.now_ms) {
                Ok(Some(at)) if ttl.is_none() => {
                    ttl = Some(Ttl::At(at));
                    i += 1;
                }
                Ok(_) => return out.error(errors::SYNTAX),
                Err(e) => return expiry_error(out, "getex", e),
            }
        }
        i += 1;
    }
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
        None if int(args.get(2)).is_some() => out.error(errors::OVERFLOW),
        None => out.error(errors::NOT_INTEGER),
    }
}

pub fn incrbyfloat(c: &mut ShardCtx, args: Args, out: &mut Out) {
    let Some(d) = float(args.get(2)) else {
        return out.error(errors::NOT_FLOAT);
    };
    match op::incr_by_float(c.shard.db(c.db), args.get(1), d, c.now_ms) {
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
