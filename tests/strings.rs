//! String commands against the real server, with Redis 7.0's replies and error texts as
//! the reference (each expectation was checked against `redis-server` 7.0).
//!
//! Tables are `command line → expected reply`; a line is split on whitespace, so values
//! with spaces or empty values are sent with `Check::expect_args`. A test runs all its
//! checks and then reports every reply that differs from Redis at once.

mod common;
use common::*;

const SYNTAX: &str = "ERR syntax error";
const NOT_INT: &str = "ERR value is not an integer or out of range";
const NOT_FLOAT: &str = "ERR value is not a valid float";
const OVERFLOW: &str = "ERR increment or decrement would overflow";
const NAN_OR_INF: &str = "ERR increment would produce NaN or Infinity";
const TOO_BIG: &str = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";
const OFFSET_RANGE: &str = "ERR offset is out of range";

// ---------------------------------------------------------------------------------------
// GET / SET
// ---------------------------------------------------------------------------------------

#[test]
fn get_and_set_store_binary_safe_values() {
    let server = Server::with_cores(2);
    let mut c = Check::new(&server);
    c.table(&[
        ("GET missing", nil()),
        ("SET k v", ok()),
        ("GET k", b("v")),
        ("SET k w", ok()),
        ("GET k", b("w")),
        ("set lower case", ok()),
        ("GeT lower", b("case")),
    ]);
    // Empty value, empty key, values with spaces, CRLF, NUL and non-UTF-8 bytes.
    c.expect_args(&[b"SET", b"empty", b""], ok());
    c.expect_args(&[b"GET", b"empty"], b(""));
    c.expect_args(&[b"STRLEN", b"empty"], int(0));
    c.expect_args(&[b"SET", b"", b"empty key"], ok());
    c.expect_args(&[b"GET", b""], b("empty key"));
    let odd: &[u8] = b"a b\r\nc\0d\xff\xfe";
    c.expect_args(&[b"SET", b"bin\0key", odd], ok());
    c.expect_args(&[b"GET", b"bin\0key"], Resp::Bulk(odd.to_vec()));
    // A large value (1 MiB) round-trips intact.
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    c.expect_args(&[b"SET", b"big", &big], ok());
    c.expect_args(&[b"GET", b"big"], Resp::Bulk(big.clone()));
    c.expect("STRLEN big", int(big.len() as i64));
    c.finish();
}

#[test]
fn string_commands_check_their_arity() {
    // Redis: "ERR wrong number of arguments for '<cmd>' command", the name in lower case.
    let server = Server::with_cores(2);
    let mut c = Check::new(&server);
    c.table(&[
        ("GET", arity("get")),
        ("GET a b", arity("get")),
        ("SET", arity("set")),
        ("SET k", arity("set")),
        ("SETNX k", arity("setnx")),
        ("SETNX k v x", arity("setnx")),
        ("SETEX k 10", arity("setex")),
        ("SETEX k 10 v extra", arity("setex")),
        ("PSETEX k 10", arity("psetex")),
        ("GETSET k", arity("getset")),
        ("GETDEL", arity("getdel")),
        ("GETDEL a b", arity("getdel")),
        ("GETEX", arity("getex")),
        ("MGET", arity("mget")),
        ("MSET", arity("mset")),
        ("MSET k", arity("mset")),
        ("MSET a 1 b", arity("mset")),
        ("MSETNX k", arity("msetnx")),
        ("MSETNX a 1 b", arity("msetnx")),
        ("INCR", arity("incr")),
        ("INCR a b", arity("incr")),
        ("DECR", arity("decr")),
        ("INCRBY k", arity("incrby")),
        ("DECRBY k", arity("decrby")),
        ("INCRBYFLOAT k", arity("incrbyfloat")),
        ("APPEND k", arity("append")),
        ("STRLEN", arity("strlen")),
        ("STRLEN a b", arity("strlen")),
        ("GETRANGE k 0", arity("getrange")),
        ("SUBSTR k 0", arity("substr")),
        ("SETRANGE k 0", arity("setrange")),
    ]);
    // Nothing above wrote anything.
    c.expect("DBSIZE", int(0));
    c.finish();
}

#[test]
fn set_nx_xx_and_get_options() {
    // https://redis.io/commands/set/ — NX: only set if the key does not exist; XX: only if
    // it exists; GET: return the old string (nil if none), even when NX/XX stops the write.
    let server = Server::with_cores(2);
    let mut c = Check::new(&server);
    c.table(&[
        ("SET n 1 NX", ok()),
        ("GET n", b("1")),
        ("SET n 2 NX", nil()),
        ("GET n", b("1")),
        ("SET n 2 XX", ok()),
        ("GET n", b("2")),
        ("SET missing 1 XX", nil()),
        ("EXISTS missing", int(0)),
        ("SET n 3 GET", b("2")),
        ("GET n", b("3")),
        ("SET fresh 1 GET", nil()),
        ("GET fresh", b("1")),
        ("SET n 4 NX GET", b("3")),
        ("GET n", b("3")),
        ("SET n 5 XX GET", b("3")),
        ("GET n", b("5")),
        ("SET nope 1 XX GET", nil()),
        ("EXISTS nope", int(0)),
        ("SET new 1 NX GET", nil()),
        ("GET new", b("1")),
        ("SET n 6 get", b("5")),
        ("set n 7 xx", ok()),
        ("GET n", b("7")),
        ("SET n 8 GET XX", b("7")),
        ("GET n", b("8")),
    ]);
    c.finish();
}

#[test]
fn set_expiry_options_ex_px_exat_pxat_keepttl() {
    let server = Server::with_cores(2);
    let mut c = Check::new(&server);
    c.expect("SET k v EX 100", ok());
    c.expect("TTL k", int(100));
    c.expect_between("PTTL k", 99_000, 100_000);
    c.expect("SET k v PX 5000", ok());
    c.expect_between("PTTL k", 4_000, 5_000);
    c.expect("TTL k", int(5));
    // A plain SET drops the TTL.
    c.expect("SET k v", ok());
    c.expect("TTL k", int(-1));
    // KEEPTTL keeps it; on a key without a TTL it sets none.
    c.expect("SET k v EX 100", ok());
    c.expect("SET k w KEEPTTL", ok());
    c.expect("GET k", b("w"));
    c.expect("TTL k", int(100));
    c.expect("SET nottl v KEEPTTL", ok());
    c.expect("TTL nottl", int(-1));
    // Absolute times.
    let now = server_now_ms(&mut c);
    c.expect(&format!("SET k v EXAT {}", now / 1000 + 100), ok());
    c.expect_between("TTL k", 99, 100);
    c.expect("EXPIRETIME k", int(now / 1000 + 100));
    c.expect(&format!("SET k v PXAT {}", now + 50_000), ok());
    c.expect("PEXPIRETIME k", int(now + 50_000));
    c.expect_between("PTTL k", 40_000, 50_000);
    c.expect(&format!("SET k v EXAT {FAR_S}"), ok());
    c.expect("EXPIRETIME k", int(FAR_S));
    // The largest absolute times Redis accepts.
    c.expect("SET k v PXAT 9223372036854775807", ok());
    c.expect("PEXPIRETIME k", int(i64::MAX));
    c.expect("SET k v EXAT 9223372036854775", ok());
    c.expect("EXPIRETIME k", int(9_223_372_036_854_775));
    // An absolute time in the past: OK, and the key is gone.
    c.expect("SET k v PXAT 1", ok());
    c.expect("EXISTS k", int(0));
    c.expect("SET k v", ok());
    c.expect("SET k w EXAT 1", ok());
    c.expect("GET k", nil());
    // Options combine with GET and NX/XX, in any order, in any case.
    c.expect("SET k v", ok());
    c.expect("SET k w EX 100 GET", b("v"));
    c.expect("TTL k", int(100));
    c.expect("SET k x get px 7000 xx", b("w"));
    c.expect_between("PTTL k", 6_000, 7_000);
    c.expect("SET k y NX EX 100", nil());
    c.expect("GET k", b("x"));
    c.expect("set k2 y nx ex 100", ok());
    c.expect("TTL k2", int(100));
    c.finish();
}

#[test]
fn set_rejects_invalid_option_combinations() {
    // Redis 7.0 `parseExtendedStringArgumentsOrReply`: NX with XX, two different expiry
    // options, KEEPTTL with an expiry, an option missing its value, or an unknown word is a
    // syntax error; a non-integer time is "not an integer"; a time <= 0 (or one that
    // overflows once turned into absolute ms) is "invalid expire time".
    let server = Server::with_cores(2);
    let mut c = Check::new(&server);
    c.table(&[
        ("SET k v EX", err(SYNTAX)),
        ("SET k v PX", err(SYNTAX)),
        ("SET k v EXAT", err(SYNTAX)),
        ("SET k v PXAT", err(SYNTAX)),
        ("SET k v NX XX", err(SYNTAX)),
        ("SET k v XX NX", err(SYNTAX)),
        ("SET k v EX 10 PX 10000", err(SYNTAX)),
        ("SET k v EX 10 EXAT 10", err(SYNTAX)),
        ("SET k v PX 10 PXAT 10", err(SYNTAX)),
        ("SET k v EXAT 10 PX 10", err(SYNTAX)),
        ("SET k v EX 10 KEEPTTL", err(SYNTAX)),
        ("SET k v KEEPTTL EX 10", err(SYNTAX)),
        ("SET k v KEEPTTL PXAT 10", err(SYNTAX)),
        ("SET k v PX 100 KEEPTTL", err(SYNTAX)),
        ("SET k v FOO", err(SYNTAX)),
        ("SET k v 10", err(SYNTAX)),
        ("SET k v GET EX", err(SYNTAX)),
        ("SET k v NX GET XX", err(SYNTAX)),
        ("SET k v EX abc", err(NOT_INT)),
        ("SET k v EX 1.5", err(NOT_INT)),
        ("SET k v PX 9223372036854775808", err(NOT_INT)),
        ("SET k v EX 0", invalid_expire("set")),
        ("SET k v EX -1", invalid_expire("set")),
        ("SET k v PX 0", invalid_expire("set")),
        ("SET k v PX -1", invalid_expire("set")),
        ("SET k v EXAT 0", invalid_expire("set")),
        ("SET k v EXAT -1", invalid_expire("set")),
        ("SET k v PXAT 0", invalid_expire("set")),
        ("SET k v EX 9223372036854775807", invalid_expire("set")),
        ("SET k v EX 9223372036854775", invalid_expire("set")),
        ("SET k v PX 9223372036854775807", invalid_expire("set")),
        ("SET k v EXAT 9223372036854776", invalid_expire("set")),
        // None of the failed commands wrote the key.
        ("EXISTS k", int(0)),
    ]);
    c.finish();
}

#[test]
fn set_and_getex_syntax_is_checked_before_the_expire_value() {
    // Redis parses every option first and only then the time: a bad time next to a bad
    // option is reported as the syntax error.
    let server = Server::with_cores(1);
    let mut c = Check::new(&server);
    c.expect("SET k v", ok());
    c.table(&[
        ("SET k v EX abc FOO", err(SYNTAX)),
        ("SET k v EX 0 FOO", err(SYNTAX)),
        ("SET k v EX 0 NX XX", err(SYNTAX)),
        ("SET k v PX abc KEEPTTL", err(SYNTAX)),
        ("GETEX k EX abc FOO", err(SYNTAX)),
        ("GETEX k EX 0 PERSIST", err(SYNTAX)),
        ("GET k", b("v")),
        ("TTL k", int(-1)),
    ]);
    c.finish();
}

#[test]
fn set_and_getex_accept_a_repeated_option_and_the_last_time_wins() {
    // Redis 7.0 only refuses an expiry option next to a *different* one: `EX 10 EX 20` is
    // accepted and sets 20, as are repeated KEEPTTL, NX, XX, GET and PERSIST.
    let server = Server::with_cores(1);
    let mut c = Check::new(&server);
    // Each case starts from a known state, so one refusal does not hide the next case.
    let pxat = FAR_S * 1000 + 123;
    c.table(&[
        ("SET k v EX 10 EX 20", ok()),
        ("TTL k", int(20)),
        ("SET k v PX 10000 PX 30000", ok()),
        ("TTL k", int(30)),
        ("SET k v EX 30", ok()),
        ("SET k v KEEPTTL KEEPTTL", ok()),
        ("TTL k", int(30)),
        (&*format!("SET k v PXAT 10 PXAT {pxat}"), ok()),
        ("PEXPIRETIME k", int(pxat)),
        ("SET k v", ok()),
        ("SET k w NX NX", nil()),
        ("SET k w XX XX", ok()),
        ("GET k", b("w")),
        ("SET k x GET GET", b("w")),
        ("SET k x", ok()),
        ("GETEX k EX 10 EX 40", b("x")),
        ("TTL k", int(40)),
        ("SET k x EX 40", ok()),
        ("GETEX k PERSIST PERSIST", b("x")),
        ("TTL k", int(-1)),
        // A repeated absolute time in the past deletes, like a single one.
        ("SET k v", ok()),
        ("SET k v EXAT 10 EXAT 20", ok()),
        ("EXISTS k", int(0)),
    ]);
    c.finish();
}

// ---------------------------------------------------------------------------------------
// SETNX / SETEX / PSETEX / GETSET / GETDEL / GETEX
// ---------------------------------------------------------------------------------------

#[test]
fn setnx_setex_psetex() {
    let server = Server::with_cores(2);
    let mut c = Check::new(&server);
    c.table(&[
        // SETNX: 1 if set, 0 if the key exists (and then nothing changes).
        ("SETNX k v", int(1)),
        ("SETNX k w", int(0)),
        ("GET k", b("v")),
        ("SETEX t 100 w", ok()),
        ("SETNX t x", int(0)),
        ("TTL t", int(100)),
        // SETEX / PSETEX set the value and a relative TTL, replacing an old TTL.
        ("SETEX s 100 v", ok()),
        ("GET s", b("v")),
        ("TTL s", int(100)),
        ("SET plain v", ok()),
        ("SETEX plain 50 w", ok()),
        ("GET plain", b("w")),
        ("TTL plain", int(50)),
        ("SETEX s 0 v", invalid_expire("setex")),
        ("SETEX s -1 v", invalid_expire("setex")),
        ("SETEX s abc v", err(NOT_INT)),
        ("SETEX s 1.5 v", err(NOT_INT)),
        ("SETEX s 9223372036854775 v", invalid_expire("setex")),
        ("SETEX s 9223372036854775808 v", err(NOT_INT)),
        ("PSETEX p 0 v", invalid_expire("psetex")),
        ("PSETEX p -5 v", invalid_expire("psetex")),
        ("PSETEX p abc v", err(NOT_INT)),
        ("PSETEX p 9223372036854775807 v", invalid_expire("psetex")),
        ("EXISTS p", int(0)),
        // The failed SETEX left the old value and TTL alone.
        ("GET s", b("v")),
        ("TTL s", int(100)),
    ]);
    c.expect("PSETEX p 5000 v", ok());
    c.expect("GET p", b("v"));
    c.expect_between("PTTL p", 4_000, 5_000);
    c.finish();
}

#[test]
fn getset_and_getdel() {
    let server = Server::with_cores(2);
    let mut c = Check::new(&server);
    c.table(&[
        ("GETSET g 1", nil()),
        ("GET g", b("1")),
        ("GETSET g 2", b("1")),
        ("GET g", b("2")),
        // GETSET is a SET: it drops the TTL.
        ("SET t v EX 100", ok()),
        ("GETSET t w", b("v")),
        ("TTL t", int(-1)),
        ("GETDEL t", b("w")),
        ("GETDEL t", nil()),
        ("EXISTS t", int(0)),
        ("GETDEL missing", nil()),
        ("SET n 42", ok()),
        ("GETDEL n", b("42")),
        ("EXISTS n", int(0)),
    ]);
    c.finish();
}

#[test]
fn getex_options() {
    // https://redis.io/commands/getex/ — like GET, with EX/PX/EXAT/PXAT/PERSIST to change
    // the TTL; without an option the TTL is left alone.
    let server = Server::with_cores(2);
    let mut c = Check::new(&server);
    c.table(&[
        ("SET k v", ok()),
        ("GETEX k", b("v")),
        ("TTL k", int(-1)),
        ("GETEX k EX 100", b("v")),
        ("TTL k", int(100)),
        ("GETEX k", b("v")),
        ("TTL k", int(100)),
        (&*format!("GETEX k EXAT {FAR_S}"), b("v")),
        ("EXPIRETIME k", int(FAR_S)),
        (&*format!("GETEX k PXAT {}", FAR_S * 1000 + 123), b("v")),
        ("PEXPIRETIME k", int(FAR_S * 1000 + 123)),
        ("GETEX k persist", b("v")),
        ("TTL k", int(-1)),
        ("GETEX missing EX 10", nil()),
        ("GETEX missing PERSIST", nil()),
        ("GETEX missing", nil()),
        ("EXISTS missing", int(0)),
        // Errors: a missing value, two expiry options, PERSIST with a time, SET-only words.
        ("GETEX k EX", err(SYNTAX)),
        ("GETEX k FOO", err(SYNTAX)),
        ("GETEX missing FOO", err(SYNTAX)),
        ("GETEX k EX 10 PX 100", err(SYNTAX)),
        ("GETEX k EX 10 EXAT 10", err(SYNTAX)),
        ("GETEX k PERSIST EX 10", err(SYNTAX)),
        ("GETEX k EX 10 PERSIST", err(SYNTAX)),
        ("GETEX k KEEPTTL", err(SYNTAX)),
        ("GETEX k NX", err(SYNTAX)),
        ("GETEX k GET", err(SYNTAX)),
        ("GETEX k EX 0", invalid_expire("getex")),
        ("GETEX k EX -1", invalid_expire("getex")),
        ("GETEX k PX 0", invalid_expire("getex")),
        ("GETEX k EXAT 0", invalid_expire("getex")),
        ("GETEX k PXAT 0", invalid_expire("getex")),
        ("GETEX k EX 9223372036854775", invalid_expire("getex")),
        ("GETEX k EXAT 9223372036854775807", invalid_expire("getex")),
        ("GETEX k EX abc", err(NOT_INT)),
        ("TTL k", int(-1)),
        // A time in the past: the value is returned and the key deleted.
        ("GETEX k PXAT 1", b("v")),
        ("EXISTS k", int(0)),
    ]);
    c.expect("SET k v", ok());
    c.expect("GETEX k PX 5000", b("v"));
    c.expect_between("PTTL k", 4_000, 5_000);
    c.finish();
}

// ---------------------------------------------------------------------------------------
// MGET / MSET / MSETNX, on one core and across cores
// ---------------------------------------------------------------------------------------

fn multi_key_strings(cores: usize) {
    let server = Server::with_cores(cores);
    let mut c = Check::new(&server);
    let last = cores - 1;
    let a = key_on_core(0, cores, "a");
    let b_ = key_on_core(last, cores, "b");
    let c_ = key_on_core(0, cores, "c");
    let d = key_on_core(last, cores, "d");
    let e = key_on_core(0, cores, "e");
    let f = key_on_core(last, cores, "f");
    let g = key_on_core(0, cores, "g");
    c.table(&[
        (format!("MSET {a} 1 {b_} 2"), ok()),
        (
            format!("MGET {a} {b_} missing {a}"),
            arr(vec![b("1"), b("2"), nil(), b("1")]),
        ),
        (format!("MGET {b_}"), arr(vec![b("2")])),
        // A key named twice: the last value wins.
        (format!("MSET {a} 10 {b_} 20 {a} 11"), ok()),
        (format!("MGET {a} {b_}"), arr(vec![b("11"), b("20")])),
        // MSETNX: all or nothing.
        (format!("MSETNX {c_} 3 {d} 4"), int(1)),
        (format!("MGET {c_} {d}"), arr(vec![b("3"), b("4")])),
        (format!("MSETNX {e} 5 {d} 6"), int(0)),
        (format!("EXISTS {e}"), int(0)),
        (format!("GET {d}"), b("4")),
        (format!("MSETNX {d} 6 {e} 5"), int(0)),
        (format!("EXISTS {e}"), int(0)),
        (format!("MSETNX {f} 1 {f} 2"), int(1)),
        (format!("GET {f}"), b("2")),
        // An odd number of arguments is an arity error, and nothing is written.
        (format!("MSET {g} 1 {b_}"), arity("mset")),
        (format!("MSETNX {g} 1 {b_}"), arity("msetnx")),
        (format!("EXISTS {g}"), int(0)),
        (format!("GET {b_}"), b("20")),
        // MSET drops TTLs, on every core.
        (format!("SET {a} 1 EX 100"), ok()),
        (format!("SET {b_} 2 EX 100"), ok()),
        (format!("MSET {a} x {b_} y"), ok()),
        (format!("TTL {a}"), int(-1)),
        (format!("TTL {b_}"), int(-1)),
        (format!("MGET {a} {b_}"), arr(vec![b("x"), b("y")])),
    ]);
    // Many keys spread over the cores, in one MSET and one MGET.
    let keys: Vec<String> = (0..200).map(|i| format!("many:{i}")).collect();
    let mut mset = vec!["MSET".to_string()];
    for (i, k) in keys.iter().enumerate() {
        mset.push(k.clone());
        mset.push(format!("v{i}"));
    }
    let mset_refs: Vec<&str> = mset.iter().map(String::as_str).collect();
    let got = c.raw.cmd(&mset_refs);
    c.record("MSET many:0 v0 … many:199 v199".into(), &ok(), &got);
    let mut mget = vec!["MGET"];
    mget.extend(keys.iter().map(String::as_str));
    let got = c.raw.cmd(&mget);
    let want = arr((0..200).map(|i| b(&format!("v{i}"))).collect());
    c.record("MGET many:0 … many:199".into(), &want, &got);
    let mut msetnx = vec!["MSETNX".to_string(), "brand-new".into(), "1".into()];
    msetnx.extend(["many:150".to_string(), "x".into()]);
    let refs: Vec<&str> = msetnx.iter().map(String::as_str).collect();
    let got = c.raw.cmd(&refs);
    c.record("MSETNX brand-new 1 many:150 x".into(), &int(0), &got);
    c.expect("EXISTS brand-new", int(0));
    c.finish();
}

#[test]
fn mget_mset_msetnx_on_one_core() {
    multi_key_strings(1);
}

#[test]
fn mget_mset_msetnx_across_two_cores() {
    multi_key_strings(2);
}

// ---------------------------------------------------------------------------------------
// Counters
// ---------------------------------------------------------------------------------------

#[test]
fn incr_decr_incrby_decrby() {
    let server = Server::with_cores(2);
    let mut c = Check::new(&server);
    c.table(&[
        ("INCR c", int(1)),
        ("INCR c", int(2)),
        ("DECR c", int(1)),
        ("INCRBY c 10", int(11)),
        ("INCRBY c -20", int(-9)),
        ("DECRBY c 3", int(-12)),
        ("DECRBY c -2", int(-10)),
        ("GET c", b("-10")),
        ("DECR new1", int(-1)),
        ("INCRBY new2 5", int(5)),
        ("DECRBY new3 5", int(-5)),
        ("SET s 41", ok()),
        ("INCR s", int(42)),
        ("GET s", b("42")),
        // Limits of a signed 64-bit integer.
        ("SET m 9223372036854775806", ok()),
        ("INCR m", int(i64::MAX)),
        ("INCR m", err(OVERFLOW)),
        ("INCRBY m 9223372036854775807", err(OVERFLOW)),
        ("GET m", b("9223372036854775807")),
        ("SET n -9223372036854775807", ok()),
        ("DECR n", int(i64::MIN)),
        ("DECR n", err(OVERFLOW)),
        ("DECRBY n 1", err(OVERFLOW)),
        ("INCRBY n -1", err(OVERFLOW)),
        ("GET n", b("-9223372036854775808")),
        ("INCRBY x -9223372036854775808", int(i64::MIN)),
        // Increments must be canonical integers.
        ("INCRBY y abc", err(NOT_INT)),
        ("INCRBY y 1.5", err(NOT_INT)),
        ("INCRBY y 9223372036854775808", err(NOT_INT)),
        ("INCRBY y 01", err(NOT_INT)),
        ("INCRBY y -0", err(NOT_INT)),
        ("INCRBY y +1", err(NOT_INT)),
        ("DECRBY y abc", err(NOT_INT)),
        ("EXISTS y", int(0)),
        // Counters keep the TTL.
        ("SET t 1 EX 100", ok()),
        ("INCR t", int(2)),
        ("DECRBY t 5", int(-3)),
        ("TTL t", int(100)),
        // A numeric string changed in place (raw encoding) still counts.
        ("SET r 12", ok()),
        ("APPEND r 3", int(3)),
        ("INCR r", int(124)),
    ]);
    c.finish();
}

#[test]
fn decrby_of_the_smallest_integer_is_its_own_error() {
    // Redis 7.0 decrbyCommand: negating LLONG_MIN would overflow, and it says so with its
    // own text (not the generic "increment or decrement would overflow").
    let server = Server::with_cores(1);
    let mut c = Check::new(&server);
    c.expect(
        "DECRBY y -9223372036854775808",
        err("ERR decrement would overflow"),
    );
    c.expect("EXISTS y", int(0));
    c.finish();
}

#[test]
fn counters_reject_values_that_are_not_canonical_integers() {
    // Redis's string2ll accepts exactly what ll2string prints: no spaces, no '+', no
    // leading zeros, no "-0", no decimals, at most 64 bits.
    let server = Server::with_cores(1);
    let mut c = Check::new(&server);
    for v in [
        "abc",
        "",
        " 1",
        "1 ",
        "+1",
        "01",
        "007",
        "-0",
        "1.0",
        "1e3",
        "0x10",
        "12345678901234567890",
        "9223372036854775808",
    ] {
        c.expect_args(&[b"SET", b"s", v.as_bytes()], ok());
        for cmd in ["INCR", "DECR"] {
            c.expect_args(&[cmd.as_bytes(), b"s"], err(NOT_INT));
        }
        c.expect_args(&[b"INCRBY", b"s", b"1"], err(NOT_INT));
        c.expect_args(&[b"DECRBY", b"s", b"1"], err(NOT_INT));
        c.expect_args(&[b"GET", b"s"], b(v));
    }
    c.finish();
}

#[test]
fn incrbyfloat_basics_and_errors() {
    // https://redis.io/commands/incrbyfloat/ examples, and the errors of Redis 7.0.
    let server = Server::with_cores(2);
    let mut c = Check::new(&server);
    c.table(&[
        ("SET f 10.50", ok()),
        ("INCRBYFLOAT f 0.1", b("10.6")),
        ("GET f", b("10.6")),
        ("SET g 5.0e3", ok()),
        ("INCRBYFLOAT g 2.0e2", b("5200")),
        ("INCRBYFLOAT h 3", b("3")),
        ("INCRBYFLOAT h 0.0", b("3")),
        ("INCRBYFLOAT h -3", b("0")),
        ("INCRBYFLOAT h -0.0", b("0")),
        ("INCRBYFLOAT i 1.5e-5", b("0.000015")),
        ("INCRBYFLOAT j 1e20", b("100000000000000000000")),
        ("INCRBYFLOAT j2 1.", b("1")),
        ("INCRBYFLOAT j3 .5", b("0.5")),
        ("SET n 5", ok()),
        ("INCRBYFLOAT n 0.5", b("5.5")),
        ("INCRBYFLOAT n -0.5", b("5")),
        ("SET e 1e5", ok()),
        ("INCRBYFLOAT e 1", b("100001")),
        // Errors.
        ("INCRBYFLOAT x abc", err(NOT_FLOAT)),
        ("INCRBYFLOAT x 5e", err(NOT_FLOAT)),
        ("INCRBYFLOAT x 1,5", err(NOT_FLOAT)),
        ("INCRBYFLOAT x nan", err(NOT_FLOAT)),
        ("INCRBYFLOAT x -nan", err(NOT_FLOAT)),
        ("INCRBYFLOAT x inf", err(NAN_OR_INF)),
        ("INCRBYFLOAT x -inf", err(NAN_OR_INF)),
        ("INCRBYFLOAT x infinity", err(NAN_OR_INF)),
        ("EXISTS x", int(0)),
        ("SET s abc", ok()),
        ("INCRBYFLOAT s 1", err(NOT_FLOAT)),
        ("GET s", b("abc")),
        // Keeps the TTL; the result is stored as a string (embstr), even when integral.
        ("SET t 1 EX 100", ok()),
        ("INCRBYFLOAT t 1.5", b("2.5")),
        ("TTL t", int(100)),
        ("INCRBYFLOAT w 1.0", b("1")),
        ("OBJECT ENCODING w", b("embstr")),
    ]);
    c.expect_args(&[b"INCRBYFLOAT", b"x", b""], err(NOT_FLOAT));
    c.expect_args(&[b"INCRBYFLOAT", b"x", b" 1"], err(NOT_FLOAT));
    c.expect_args(&[b"SET", b"sp", b"1.5 "], ok());
    c.expect_args(&[b"INCRBYFLOAT", b"sp", b"1"], err(NOT_FLOAT));
    c.finish();
}

#[test]
fn incrbyfloat_prints_sums_as_redis_does() {
    // Redis adds in long double and prints with "%.17Lf" minus trailing zeros, so the
    // everyday sums come out short: 0.1 + 0.2 is "0.3", not "0.30000000000000004".
    let server = Server::with_cores(1);
    let mut c = Check::new(&server);
    c.table(&[
        ("INCRBYFLOAT h 0.1", b("0.1")),
        ("INCRBYFLOAT h 0.2", b("0.3")),
        ("GET h", b("0.3")),
        ("INCRBYFLOAT h -0.3", b("0")),
        ("INCRBYFLOAT g 1.1", b("1.1")),
        ("INCRBYFLOAT g 2.2", b("3.3")),
    ]);
    c.finish();
}

#[test]
fn incrbyfloat_long_double_precision_and_range() {
    // Artifacts of Redis's long double arithmetic (80-bit on x86-64): more digits than a
    // double holds, a range past 1e308, and strtold's hexadecimal input.
    let server = Server::with_cores(1);
    let mut c = Check::new(&server);
    c.table(&[
        ("SET f 10.6", ok()),
        ("INCRBYFLOAT f -5.0e3", b("-4989.39999999999999991")),
        (
            "INCRBYFLOAT z3 123456789.123",
            b("123456789.12299999999959255"),
        ),
        (
            "INCRBYFLOAT z4 1.23456789012345678",
            b("1.23456789012345678"),
        ),
        ("INCRBYFLOAT hex 0x10", b("16")),
    ]);
    c.expect("SET big 1e308", ok());
    let got = c.run("INCRBYFLOAT big 1e308");
    c.checked += 1;
    if !matches!(&got, Resp::Bulk(v) if v.starts_with(b"19999999999999999999") && v.len() == 309) {
        c.bad.push(format!(
            "  INCRBYFLOAT big 1e308 (big = 1e308)\n      redis:   a 309-digit number \
             \"199999999999999999993371759311…\"\n      tessera: {}",
            show(&got)
        ));
    }
    c.finish();
}

// ---------------------------------------------------------------------------------------
// APPEND / STRLEN / GETRANGE / SUBSTR / SETRANGE
// ---------------------------------------------------------------------------------------

#[test]
fn append_and_strlen() {
    let server = Server::with_cores(2);
    let mut c = Check::new(&server);
    c.expect("APPEND a Hello", int(5));
    c.expect_args(&[b"APPEND", b"a", b" World"], int(11));
    c.expect("GET a", b("Hello World"));
    c.expect("STRLEN a", int(11));
    c.expect_args(&[b"APPEND", b"a", b""], int(11));
    c.expect_args(&[b"APPEND", b"e", b""], int(0));
    c.expect("EXISTS e", int(1));
    c.expect("GET e", b(""));
    c.table(&[
        ("STRLEN missing", int(0)),
        ("SET i -123", ok()),
        ("STRLEN i", int(4)),
        ("APPEND i 4", int(5)),
        ("GET i", b("-1234")),
        ("SET i 9223372036854775807", ok()),
        ("STRLEN i", int(19)),
        // APPEND keeps the TTL.
        ("SET t v EX 100", ok()),
        ("APPEND t x", int(2)),
        ("GET t", b("vx")),
        ("TTL t", int(100)),
    ]);
    c.finish();
}

#[test]
fn getrange_and_substr() {
    // https://redis.io/commands/getrange/ — inclusive offsets, negative ones from the end,
    // clamped to the string.
    let server = Server::with_cores(2);
    let mut c = Check::new(&server);
    c.expect_args(&[b"SET", b"s", b"This is a string"], ok());
    for (range, want) in [
        ("0 3", "This"),
        ("-3 -1", "ing"),
        ("0 -1", "This is a string"),
        ("10 100", "string"),
        ("5 2", ""),
        ("-1 -5", ""),
        ("-100 -1", "This is a string"),
        ("-100 2", "Thi"),
        ("0 0", "T"),
        ("-1 -1", "g"),
        ("15 15", "g"),
        ("16 20", ""),
        ("100 200", ""),
        ("3 -100", ""),
        ("-5 -10", ""),
        ("0 -17", "T"),
        ("-17 0", "T"),
        ("9223372036854775807 9223372036854775807", ""),
        ("-9223372036854775808 -9223372036854775808", "T"),
        (
            "-9223372036854775808 9223372036854775807",
            "This is a string",
        ),
    ] {
        c.expect(&format!("GETRANGE s {range}"), b(want));
        c.expect(&format!("SUBSTR s {range}"), b(want));
    }
    c.table(&[
        ("GETRANGE missing 0 -1", b("")),
        ("GETRANGE missing 0 10", b("")),
        ("SET i 12345", ok()),
        ("GETRANGE i 1 2", b("23")),
        ("GETRANGE i -2 -1", b("45")),
        ("GETRANGE s a 1", err(NOT_INT)),
        ("GETRANGE s 0 b", err(NOT_INT)),
        ("GETRANGE s 1.5 2", err(NOT_INT)),
        ("GETRANGE s 0 9223372036854775808", err(NOT_INT)),
        ("SUBSTR s a 0", err(NOT_INT)),
    ]);
    c.expect_args(&[b"SET", b"e", b""], ok());
    c.expect("GETRANGE e 0 -1", b(""));
    c.expect("GETRANGE e 0 0", b(""));
    c.finish();
}

#[test]
fn setrange_offsets_padding_and_errors() {
    // https://redis.io/commands/setrange/ — overwrite from an offset, padding with zero
    // bytes; an empty value changes nothing (and creates nothing).
    let server = Server::with_cores(2);
    let mut c = Check::new(&server);
    c.expect_args(&[b"SET", b"s", b"Hello World"], ok());
    c.expect("SETRANGE s 6 Redis", int(11));
    c.expect("GET s", b("Hello Redis"));
    c.expect("SETRANGE p 6 Redis", int(11));
    c.expect("GET p", Resp::Bulk(b"\0\0\0\0\0\0Redis".to_vec()));
    c.expect("SETRANGE s 0 J", int(11));
    c.expect("GET s", b("Jello Redis"));
    c.expect("SETRANGE s 13 X", int(14));
    c.expect("GET s", Resp::Bulk(b"Jello Redis\0\0X".to_vec()));
    c.expect_args(&[b"SETRANGE", b"s", b"5", b""], int(14));
    c.expect_args(&[b"SETRANGE", b"none", b"5", b""], int(0));
    c.expect("EXISTS none", int(0));
    c.table(&[
        ("SETRANGE s -1 x", err(OFFSET_RANGE)),
        ("SETRANGE s abc x", err(NOT_INT)),
        ("SETRANGE s 1.5 x", err(NOT_INT)),
        ("SETRANGE s 9223372036854775808 x", err(NOT_INT)),
        // 512 MiB is the default proto-max-bulk-len: offset + length may not pass it.
        ("SETRANGE s 536870912 x", err(TOO_BIG)),
        ("SETRANGE none 536870912 x", err(TOO_BIG)),
        ("SETRANGE s 9223372036854775807 x", err(TOO_BIG)),
        ("EXISTS none", int(0)),
        ("STRLEN s", int(14)),
        // On an integer value.
        ("SET n 12345", ok()),
        ("SETRANGE n 1 x", int(5)),
        ("GET n", b("1x345")),
        // SETRANGE keeps the TTL.
        ("SET t v EX 100", ok()),
        ("SETRANGE t 0 w", int(1)),
        ("TTL t", int(100)),
    ]);
    // Nothing to write: no size check, the current length (or 0) comes back.
    c.expect_args(&[b"SETRANGE", b"s", b"536870912", b""], int(14));
    c.expect_args(&[b"SETRANGE", b"none", b"536870912", b""], int(0));
    c.expect_args(&[b"SETRANGE", b"none", b"-1", b""], err(OFFSET_RANGE));
    c.finish();
}

#[test]
fn strings_may_not_grow_past_proto_max_bulk_len() {
    // With proto-max-bulk-len 1mb, a string may be exactly 1048576 bytes and no longer.
    let server = Server::start(1, &["--proto-max-bulk-len", "1mb"]);
    let mut c = Check::new(&server);
    c.table(&[
        ("SETRANGE k 1048575 x", int(1_048_576)),
        ("SETRANGE k 1048576 x", err(TOO_BIG)),
        ("SETRANGE k2 1048576 x", err(TOO_BIG)),
        ("EXISTS k2", int(0)),
        ("APPEND k y", err(TOO_BIG)),
        ("STRLEN k", int(1_048_576)),
        ("SETRANGE k 1048575 z", int(1_048_576)),
        ("GETRANGE k -1 -1", b("z")),
    ]);
    c.finish();
}

// ---------------------------------------------------------------------------------------
// OBJECT ENCODING
// ---------------------------------------------------------------------------------------

#[test]
fn object_encoding_int_embstr_raw() {
    // Redis 7.0: integers in canonical form are "int"; other strings up to 44 bytes are
    // "embstr", longer ones "raw"; a string changed in place (APPEND, SETRANGE) is "raw";
    // INCR stores an int; INCRBYFLOAT stores a string.
    let server = Server::with_cores(2);
    let mut c = Check::new(&server);
    let s44 = "0123456789012345678901234567890123456789abcd";
    let s45 = "0123456789012345678901234567890123456789abcde";
    c.table(&[
        ("SET a 12", ok()),
        ("OBJECT ENCODING a", b("int")),
        ("SET a -9223372036854775808", ok()),
        ("OBJECT ENCODING a", b("int")),
        ("SET a 9223372036854775808", ok()),
        ("OBJECT ENCODING a", b("embstr")),
        ("SET a 01", ok()),
        ("OBJECT ENCODING a", b("embstr")),
        ("SET a -0", ok()),
        ("OBJECT ENCODING a", b("embstr")),
        ("SET a hello", ok()),
        ("object encoding a", b("embstr")),
        (&*format!("SET a {s44}"), ok()),
        ("OBJECT ENCODING a", b("embstr")),
        (&*format!("SET a {s45}"), ok()),
        ("OBJECT ENCODING a", b("raw")),
        ("APPEND na 12", int(2)),
        ("OBJECT ENCODING na", b("int")),
        ("APPEND nb abc", int(3)),
        ("OBJECT ENCODING nb", b("embstr")),
        ("SET r 12", ok()),
        ("APPEND r 3", int(3)),
        ("OBJECT ENCODING r", b("raw")),
        ("INCR r", int(124)),
        ("OBJECT ENCODING r", b("int")),
        ("SETRANGE nk 0 12", int(2)),
        ("OBJECT ENCODING nk", b("raw")),
        ("SET s abc", ok()),
        ("SETRANGE s 1 x", int(3)),
        ("OBJECT ENCODING s", b("raw")),
        ("GETSET s 5", b("axc")),
        ("OBJECT ENCODING s", b("int")),
        ("SETEX x 100 7", ok()),
        ("OBJECT ENCODING x", b("int")),
        ("MSET m1 1 m2 hello", ok()),
        ("OBJECT ENCODING m1", b("int")),
        ("OBJECT ENCODING m2", b("embstr")),
        ("INCR c", int(1)),
        ("OBJECT ENCODING c", b("int")),
        ("INCRBYFLOAT f 1.5", b("1.5")),
        ("OBJECT ENCODING f", b("embstr")),
        ("OBJECT ENCODING missing", nil()),
        // Errors.
        ("OBJECT", arity("object")),
        (
            "OBJECT FOO",
            err("ERR unknown subcommand 'FOO'. Try OBJECT HELP."),
        ),
        (
            "OBJECT foo bar",
            err("ERR unknown subcommand 'foo'. Try OBJECT HELP."),
        ),
    ]);
    c.expect_args(&[b"SET", b"e", b""], ok());
    c.expect("OBJECT ENCODING e", b("embstr"));
    c.finish();
}

#[test]
fn object_encoding_arity_is_checked_per_subcommand() {
    // Redis 7 checks a subcommand's own arity and names it "object|encoding".
    let server = Server::with_cores(1);
    let mut c = Check::new(&server);
    c.expect("SET a 1", ok());
    c.table(&[
        ("OBJECT ENCODING", arity("object|encoding")),
        ("OBJECT ENCODING a b", arity("object|encoding")),
    ]);
    c.finish();
}

// ---------------------------------------------------------------------------------------
// TTLs of strings, with the server clock moved by DEBUG ADVANCE-CLOCK (no sleeping)
// ---------------------------------------------------------------------------------------

#[test]
fn string_ttls_run_out_on_the_debug_clock() {
    let server = debug_server();
    let mut c = Check::new(&server);
    let k0 = key_on_core(0, 2, "ex");
    let k1 = key_on_core(1, 2, "ex");
    let now = server_now_ms(&mut c);
    c.table(&[
        (format!("SET {k0} v EX 100"), ok()),
        (format!("SET {k1} v PX 100000"), ok()),
        ("SETEX setex 100 v".into(), ok()),
        ("PSETEX psetex 100000 v".into(), ok()),
        (format!("SET exat v EXAT {}", now / 1000 + 100), ok()),
        (format!("SET pxat v PXAT {}", now + 100_000), ok()),
        ("SET getex v".into(), ok()),
        ("GETEX getex EX 100".into(), b("v")),
        ("SET keep v EX 100".into(), ok()),
        ("SET persisted v EX 100".into(), ok()),
        ("GETEX persisted PERSIST".into(), b("v")),
        ("SET cleared v EX 100".into(), ok()),
        ("SET cleared w".into(), ok()),
        ("SET counter 1 EX 100".into(), ok()),
    ]);
    advance(&mut c, 50_000);
    c.table(&[
        (format!("TTL {k0}"), int(50)),
        (format!("TTL {k1}"), int(50)),
        ("TTL setex".into(), int(50)),
        ("SET keep w KEEPTTL".into(), ok()),
        ("TTL keep".into(), int(50)),
        ("INCR counter".into(), int(2)),
        ("TTL counter".into(), int(50)),
    ]);
    c.expect_between("PTTL psetex", 49_000, 50_000);
    advance(&mut c, 49_000);
    c.table(&[
        (format!("GET {k0}"), b("v")),
        (format!("TTL {k1}"), int(1)),
        ("GET keep".into(), b("w")),
    ]);
    advance(&mut c, 1_500);
    for k in [
        k0.as_str(),
        k1.as_str(),
        "setex",
        "psetex",
        "exat",
        "pxat",
        "getex",
        "keep",
        "counter",
    ] {
        c.table(&[
            (format!("GET {k}"), nil()),
            (format!("STRLEN {k}"), int(0)),
            (format!("GETRANGE {k} 0 -1"), b("")),
            (format!("TTL {k}"), int(-2)),
        ]);
    }
    c.table(&[
        (
            format!("MGET {k0} {k1} persisted cleared"),
            arr(vec![nil(), nil(), b("v"), b("w")]),
        ),
        ("GET persisted".into(), b("v")),
        ("TTL persisted".into(), int(-1)),
        ("GET cleared".into(), b("w")),
        ("DBSIZE".into(), int(2)),
    ]);
    c.finish();
}

#[test]
fn expired_strings_behave_as_missing_keys() {
    let server = debug_server();
    let mut c = Check::new(&server);
    let keys: Vec<String> = (0..16).map(|i| format!("x{i}")).collect();
    for k in &keys {
        c.expect(&format!("SET {k} old EX 10"), ok());
    }
    let y0 = key_on_core(0, 2, "y");
    let y1 = key_on_core(1, 2, "y");
    c.expect(&format!("MSET {y0} old {y1} old"), ok());
    c.expect(&format!("PEXPIRE {y0} 10000"), int(1));
    c.expect(&format!("PEXPIRE {y1} 10000"), int(1));
    advance(&mut c, 10_500);
    c.table(&[
        ("SET x0 new XX", nil()),
        ("EXISTS x0", int(0)),
        ("SETNX x1 new", int(1)),
        ("TTL x1", int(-1)),
        ("INCR x2", int(1)),
        ("TTL x2", int(-1)),
        ("APPEND x3 ab", int(2)),
        ("GET x3", b("ab")),
        ("GETSET x4 new", nil()),
        ("GET x4", b("new")),
        ("GETDEL x5", nil()),
        ("STRLEN x6", int(0)),
        ("GETEX x7 PERSIST", nil()),
        ("EXISTS x7", int(0)),
        ("INCRBYFLOAT x8 1.5", b("1.5")),
        ("SETRANGE x9 1 a", int(2)),
        ("GET x9", Resp::Bulk(b"\0a".to_vec())),
        ("SET x10 new NX", ok()),
        ("SET x11 new GET", nil()),
        ("SET x12 new KEEPTTL", ok()),
        ("TTL x12", int(-1)),
        ("GETRANGE x13 0 -1", b("")),
        ("DECRBY x14 3", int(-3)),
        ("OBJECT ENCODING x15", nil()),
        (&*format!("MSETNX {y0} 1 {y1} 2"), int(1)),
        (&*format!("MGET {y0} {y1}"), arr(vec![b("1"), b("2")])),
    ]);
    c.finish();
}
