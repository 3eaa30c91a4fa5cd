//! Key commands that run on the owning core: existence, deletion, TTLs, renames within a
//! core, OBJECT ENCODING.

use super::parse::{eq, int};
use super::string::expiry_at;
use super::{errors, reply_op_error, unknown_subcommand_error, Args, ShardCtx};
use crate::resp::Out;
use tessera_shards::evict::{self, Tracking};
use tessera_shards::ops::keys::{self as op, ExpireCondition, TtlState};

/// DEL / UNLINK of keys on this core: the count removed.
pub fn del(c: &mut ShardCtx, args: Args, out: &mut Out) {
    let db = c.shard.db(c.db);
    let n = args
        .iter()
        .skip(1)
        .filter(|k| op::del(db, k, c.now_ms))
        .count();
    out.int(n as i64);
}

/// EXISTS of keys on this core: a key named twice counts twice, as in Redis.
pub fn exists(c: &mut ShardCtx, args: Args, out: &mut Out) {
    let db = c.shard.db(c.db);
    let n = args
        .iter()
        .skip(1)
        .filter(|k| op::exists(db, k, c.now_ms))
        .count();
    out.int(n as i64);
}

/// TOUCH: counts existing keys (last-access times arrive with eviction).
pub fn touch(c: &mut ShardCtx, args: Args, out: &mut Out) {
    exists(c, args, out)
}

pub fn type_(c: &mut ShardCtx, args: Args, out: &mut Out) {
    out.simple(op::type_name(c.shard.db(c.db), args.get(1), c.now_ms));
}

fn rename_common(c: &mut ShardCtx, args: Args, out: &mut Out, nx: bool) {
    match op::rename(c.shard.db(c.db), args.get(1), args.get(2), nx, c.now_ms) {
        Ok(done) if nx => out.int(done as i64),
        Ok(_) => out.ok(),
        Err(e) => reply_op_error(out, e),
    }
}

pub fn rename(c: &mut ShardCtx, args: Args, out: &mut Out) {
    rename_common(c, args, out, false)
}

pub fn renamenx(c: &mut ShardCtx, args: Args, out: &mut Out) {
    rename_common(c, args, out, true)
}

/// The parsed options of COPY.
pub struct CopyOptions {
    pub dest_db: Option<usize>,
    pub replace: bool,
}

/// Parses `COPY src dst [DB n] [REPLACE]`; the error is the reply text.
pub fn parse_copy(args: &Args, databases: usize) -> Result<CopyOptions, &'static str> {
    let mut opts = CopyOptions {
        dest_db: None,
        replace: false,
    };
    let mut i = 3;
    while i < args.len() {
        let a = args.get(i);
        if eq(a, "REPLACE") {
            opts.replace = true;
        } else if eq(a, "DB") && i + 1 < args.len() {
            let n = int(args.get(i + 1)).ok_or(errors::NOT_INTEGER)?;
            if n < 0 || n as usize >= databases {
                return Err(errors::DB_RANGE);
            }
            opts.dest_db = Some(n as usize);
            i += 1;
        } else {
            return Err(errors::SYNTAX);
        }
        i += 1;
    }
    Ok(opts)
}

/// COPY where both keys live on this core.
pub fn copy(c: &mut ShardCtx, args: Args, out: &mut Out) {
    let opts = match parse_copy(&args, c.shard.databases()) {
        Ok(o) => o,
        Err(e) => return out.error(e),
    };
    let dest_db = opts.dest_db.unwrap_or(c.db);
    let (src, dst) = (args.get(1), args.get(2));
    if dest_db == c.db && src == dst {
        return out.error("ERR source and destination objects are the same");
    }
    let Some(entry) = op::clone_entry(c.shard.db(c.db), src, c.now_ms) else {
        return out.int(0);
    };
    let target = c.shard.db(dest_db);
    if !opts.replace && op::exists(target, dst, c.now_ms) {
        return out.int(0);
    }
    op::put(target, dst, entry, c.now_ms);
    out.int(1);
}

/// Parses the NX|XX|GT|LT flags of the EXPIRE family from `args[2..]`.
fn expire_condition(args: &Args) -> Result<ExpireCondition, String> {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for a in args.iter().skip(3) {
        if eq(a, "NX") {
            nx = true;
        } else if eq(a, "XX") {
            xx = true;
        } else if eq(a, "GT") {
            gt = true;
        } else if eq(a, "LT") {
            lt = true;
        } else {
            return Err(format!(
                "ERR Unsupported option {}",
                String::from_utf8_lossy(a)
            ));
        }
    }
    if nx && (xx || gt || lt) {
        return Err("ERR NX and XX, GT or LT options at the same time are not compatible".into());
    }
    if gt && lt {
        return Err("ERR GT and LT options at the same time are not compatible".into());
    }
    Ok(ExpireCondition {
        if_none: nx,
        if_some: xx,
        if_later: gt,
        if_earlier: lt,
    })
}

fn expire_common(
    c: &mut ShardCtx,
    args: Args,
    out: &mut Out,
    unit_ms: u64,
    absolute: bool,
    name: &str,
) {
    let cond = match expire_condition(&args) {
        Ok(cond) => cond,
        Err(e) => return out.error(&e),
    };
    let at = match expiry_at(args.get(2), unit_ms, absolute, c.now_ms, true) {
        Ok(at) => at,
        Err(e) if e == errors::NOT_INTEGER => return out.error(e),
        Err(_) => return out.error(&format!("ERR invalid expire time in '{name}' command")),
    };
    out.int(op::expire_at(c.shard.db(c.db), args.get(1), at, cond, c.now_ms) as i64);
}

pub fn expire(c: &mut ShardCtx, args: Args, out: &mut Out) {
    expire_common(c, args, out, 1000, false, "expire")
}

pub fn pexpire(c: &mut ShardCtx, args: Args, out: &mut Out) {
    expire_common(c, args, out, 1, false, "pexpire")
}

pub fn expireat(c: &mut ShardCtx, args: Args, out: &mut Out) {
    expire_common(c, args, out, 1000, true, "expireat")
}

pub fn pexpireat(c: &mut ShardCtx, args: Args, out: &mut Out) {
    expire_common(c, args, out, 1, true, "pexpireat")
}

/// TTL and friends: `relative` reports time left, else the absolute time; `ms` picks the
/// unit. Seconds are rounded to the nearest, as Redis does.
fn ttl_common(c: &mut ShardCtx, args: Args, out: &mut Out, ms: bool, relative: bool) {
    match op::ttl(c.shard.db(c.db), args.get(1), c.now_ms) {
        TtlState::Missing => out.int(-2),
        TtlState::Persistent => out.int(-1),
        TtlState::ExpiresAt(at) => {
            let v = if relative {
                at.saturating_sub(c.now_ms)
            } else {
                at
            } as i64;
            // Rounded in 128 bits: an expiry near i64::MAX must not overflow.
            out.int(if ms {
                v
            } else {
                ((v as i128 + 500) / 1000) as i64
            });
        }
    }
}

pub fn ttl(c: &mut ShardCtx, args: Args, out: &mut Out) {
    ttl_common(c, args, out, false, true)
}

pub fn pttl(c: &mut ShardCtx, args: Args, out: &mut Out) {
    ttl_common(c, args, out, true, true)
}

pub fn expiretime(c: &mut ShardCtx, args: Args, out: &mut Out) {
    ttl_common(c, args, out, false, false)
}

pub fn pexpiretime(c: &mut ShardCtx, args: Args, out: &mut Out) {
    ttl_common(c, args, out, true, false)
}

pub fn persist(c: &mut ShardCtx, args: Args, out: &mut Out) {
    out.int(op::persist(c.shard.db(c.db), args.get(1), c.now_ms) as i64);
}

const OBJECT_HELP: &[&str] = &[
    "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ENCODING <key>",
    "    Return the kind of internal representation used in order to store the value",
    "    associated with a <key>.",
    "FREQ <key>",
    "    Return the access frequency index of the <key>. The returned integer is",
    "    proportional to the logarithm of the recent access frequency of the key.",
    "IDLETIME <key>",
    "    Return the idle time of the <key>, that is the approximated number of",
    "    seconds elapsed since the last access to the key.",
    "HELP",
    "    Print this help.",
];

const LFU_NOT_SELECTED: &str = "ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.";
const LFU_SELECTED: &str = "ERR An LFU maxmemory policy is selected, idle time not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.";
const FIFO_SELECTED: &str = "ERR A FIFO maxmemory policy is selected, idle time not tracked.";

/// OBJECT ENCODING|FREQ|IDLETIME key (the key is args[2]); OBJECT HELP is answered by the
/// node. None of them counts as an access to the key.
pub fn object(c: &mut ShardCtx, args: Args, out: &mut Out) {
    let sub = args.get(1);
    let tracking = c.shard.memory_policy().policy.tracking();
    if eq(sub, "ENCODING") {
        match op::encoding(c.shard.db(c.db), args.get(2), c.now_ms) {
            Some(e) => out.bulk(e.as_bytes()),
            None => out.null(),
        }
    } else if eq(sub, "FREQ") {
        let decay = c.shard.memory_policy().lfu_decay_minutes;
        let Some(e) = c.shard.db(c.db).peek(args.get(2), c.now_ms) else {
            return out.null();
        };
        if tracking != Tracking::Lfu {
            return out.error(LFU_NOT_SELECTED);
        }
        out.int(evict::lfu_decayed(e.access(), c.now_ms, decay) as i64)
    } else if eq(sub, "IDLETIME") {
        let Some(e) = c.shard.db(c.db).peek(args.get(2), c.now_ms) else {
            return out.null();
        };
        match tracking {
            Tracking::Lru => out.int((evict::lru_idle_ms(e.access(), c.now_ms) / 1000) as i64),
            Tracking::Lfu => out.error(LFU_SELECTED),
            Tracking::Fifo => out.error(FIFO_SELECTED),
        }
    } else if eq(sub, "HELP") {
        object_help(out)
    } else {
        out.error_bytes(&unknown_subcommand_error("OBJECT", sub))
    }
}

pub fn object_help(out: &mut Out) {
    out.array(OBJECT_HELP.len());
    for l in OBJECT_HELP {
        out.simple(l);
    }
}
