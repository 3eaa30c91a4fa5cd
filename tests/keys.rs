//! Generic key commands against the real server, with Redis 7.0's replies and error texts
//! as the reference (each expectation was checked against `redis-server` 7.0): deletion,
//! existence, renames and copies (also between cores), KEYS and SCAN, databases, flushes,
//! and TTLs, with time moved by `DEBUG ADVANCE-CLOCK` instead of sleeping.
//!
//! Tables are `command line → expected reply`; a line is split on whitespace. A test runs
//! all its checks and then reports every reply that differs from Redis at once.

mod common;
use common::*;
use std::collections::{BTreeSet, HashSet};

const SYNTAX: &str = "ERR syntax error";
const NOT_INT: &str = "ERR value is not an integer or out of range";
const NO_SUCH_KEY: &str = "ERR no such key";
const DB_RANGE: &str = "ERR DB index is out of range";
const SAME_OBJECT: &str = "ERR source and destination objects are the same";
const NX_AND_OTHERS: &str = "ERR NX and XX, GT or LT options at the same time are not compatible";
const GT_AND_LT: &str = "ERR GT and LT options at the same time are not compatible";
const INVALID_CURSOR: &str = "ERR invalid cursor";

fn simple(s: &str) -> Resp {
    Resp::Simple(s.into())
}

/// Sends many commands in pipelined chunks; returns the replies in order.
fn pipeline(c: &mut Check, cmds: &[Vec<String>]) -> Vec<Resp> {
    let mut replies = Vec::with_capacity(cmds.len());
    for chunk in cmds.chunks(256) {
        let mut buf = Vec::new();
        for cmd in chunk {
            let a: Vec<&[u8]> = cmd.iter().map(|s| s.as_bytes()).collect();
            buf.extend(encode_cmd(&a));
        }
        c.raw.send(&buf);
        for _ in chunk {
            replies.push(c.raw.read());
        }
    }
    replies
}

/// SETs every key to "v" (pipelined) and checks every reply is OK.
fn fill(c: &mut Check, keys: &[String]) {
    let cmds: Vec<Vec<String>> = keys
        .iter()
        .map(|k| vec!["SET".into(), k.clone(), "v".into()])
        .collect();
    let replies = pipeline(c, &cmds);
    assert!(replies.iter().all(|r| *r == ok()), "SET replies");
}

fn bulk_text(r: &Resp) -> Result<Vec<u8>, String> {
    match r {
        Resp::Bulk(v) => Ok(v.clone()),
        other => Err(format!("expected a bulk string, got {}", show(other))),
    }
}

/// One SCAN step: the next cursor and the keys.
fn scan_step(
    c: &mut Check,
    cursor: &str,
    extra: &[&str],
) -> Result<(String, Vec<Vec<u8>>), String> {
    let mut args = vec!["SCAN", cursor];
    args.extend_from_slice(extra);
    match c.raw.cmd(&args) {
        Resp::Array(v) if v.len() == 2 => {
            let next = String::from_utf8(bulk_text(&v[0])?).map_err(|e| e.to_string())?;
            let Resp::Array(items) = &v[1] else {
                return Err(format!("SCAN keys are not an array: {}", show(&v[1])));
            };
            let keys = items.iter().map(bulk_text).collect::<Result<Vec<_>, _>>()?;
            Ok((next, keys))
        }
        other => Err(format!("SCAN {cursor} {extra:?} replied {}", show(&other))),
    }
}

/// A full SCAN iteration (cursor 0 back to 0): every key returned, duplicates included.
fn scan_all(c: &mut Check, extra: &[&str]) -> Result<Vec<Vec<u8>>, String> {
    let mut cursor = "0".to_string();
    let mut out = Vec::new();
    for _ in 0..200_000 {
        let (next, keys) = scan_step(c, &cursor, extra)?;
        out.extend(keys);
        if next == "0" {
            return Ok(out);
        }
        cursor = next;
    }
    Err(format!("SCAN {extra:?} did not come back to cursor 0"))
}

fn set_of(keys: &[Vec<u8>]) -> BTreeSet<String> {
    keys.iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect()
}

fn strings(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|s| s.to_string()).collect()
}

/// The keys of a KEYS reply, sorted.
fn keys_reply(c: &mut Check, pattern: &[u8]) -> Result<BTreeSet<String>, String> {
    match c.args(&[b"KEYS", pattern]) {
        Resp::Array(items) => Ok(set_of(
            &items.iter().map(bulk_text).collect::<Result<Vec<_>, _>>()?,
        )),
        other => Err(format!("KEYS replied {}", show(&other))),
    }
}

impl Check {
    fn expect_set(
        &mut self,
        what: String,
        want: &BTreeSet<String>,
        got: Result<BTreeSet<String>, String>,
    ) {
        self.checked += 1;
        match got {
            Ok(got) if &got == want => {}
            Ok(got) => {
                let missing: Vec<_> = want.difference(&got).take(10).collect();
                let extra: Vec<_> = got.difference(want).take(10).collect();
                self.bad.push(format!(
                    "  {what}\n      redis:   {} keys {:?}\n      tessera: {} keys, missing {missing:?}, extra {extra:?}",
                    want.len(),
                    want.iter().take(20).collect::<Vec<_>>(),
                    got.len()
                ));
            }
            Err(e) => self.bad.push(format!("  {what}\n      {e}")),
        }
    }
}

// ---------------------------------------------------------------------------------------
// DEL / UNLINK / EXISTS / TOUCH / TYPE
// ---------------------------------------------------------------------------------------

#[test]
fn key_commands_check_their_arity() {
    let server = Server::with_cores(2);
    let mut c = Check::new(&server);
    c.table(&[
        ("DEL", arity("del")),
        ("UNLINK", arity("unlink")),
        ("EXISTS", arity("exists")),
        ("TOUCH", arity("touch")),
        ("TYPE", arity("type")),
        ("TYPE a b", arity("type")),
        ("RENAME a", arity("rename")),
        ("RENAME a b c", arity("rename")),
        ("RENAMENX a", arity("renamenx")),
        ("COPY a", arity("copy")),
        ("KEYS", arity("keys")),
        ("KEYS a b", arity("keys")),
        ("SCAN", arity("scan")),
        ("RANDOMKEY x", arity("randomkey")),
        ("DBSIZE x", arity("dbsize")),
        ("SELECT", arity("select")),
        ("SELECT 0 1", arity("select")),
        ("EXPIRE k", arity("expire")),
        ("PEXPIRE k", arity("pexpire")),
        ("EXPIREAT k", arity("expireat")),
        ("PEXPIREAT k", arity("pexpireat")),
        ("TTL", arity("ttl")),
        ("TTL a b", arity("ttl")),
        ("PTTL", arity("pttl")),
        ("EXPIRETIME", arity("expiretime")),
        ("PEXPIRETIME a b", arity("pexpiretime")),
        ("PERSIST", arity("persist")),
        ("PERSIST a b", arity("persist")),
    ]);
    c.finish();
}

#[test]
fn del_unlink_exists_touch_and_type() {
    let server = Server::with_cores(2);
    let mut c = Check::new(&server);
    c.table(&[
        ("MSET a 1 b 2 c 3", ok()),
        // EXISTS and TOUCH count a key named twice twice; DEL deletes it once.
        ("EXISTS a", int(1)),
        ("EXISTS a a b missing", int(3)),
        ("TOUCH a a missing", int(2)),
        ("DEL a a b missing", int(2)),
        ("EXISTS a b", int(0)),
        ("UNLINK c missing c", int(1)),
        ("EXISTS c", int(0)),
        ("DEL missing", int(0)),
        ("UNLINK missing", int(0)),
        ("TOUCH missing", int(0)),
        ("SET t 1", ok()),
        ("TYPE t", simple("string")),
        ("TYPE missing", simple("none")),
        ("set lower 1", ok()),
        ("exists LOWER lower", int(1)),
    ]);
    c.finish();
}

fn multi_key_deletes(cores: usize) {
    let server = Server::with_cores(cores);
    let mut c = Check::new(&server);
    let last = cores - 1;
    let a = key_on_core(0, cores, "a");
    let b_ = key_on_core(last, cores, "b");
    let a2 = key_on_core(0, cores, "c");
    let b2 = key_on_core(last, cores, "d");
    c.table(&[
        (format!("MSET {a} 1 {b_} 2 {a2} 3 {b2} 4"), ok()),
        (format!("EXISTS {a} {b_} {a} {b_} missing"), int(4)),
        (format!("TOUCH {b_} {a} {b_}"), int(3)),
        (format!("DEL {a} {b_} {a} {b_} missing"), int(2)),
        (format!("EXISTS {a} {b_}"), int(0)),
        (format!("EXISTS {a2} {b2}"), int(2)),
        (format!("UNLINK {b2} {a2} {b2}"), int(2)),
        (format!("EXISTS {a2} {b2}"), int(0)),
        ("DBSIZE".into(), int(0)),
    ]);
    // Many keys spread over the cores in one command.
    let keys: Vec<String> = (0..300).map(|i| format!("many:{i}")).collect();
    fill(&mut c, &keys);
    let mut exists = vec!["EXISTS"];
    exists.extend(keys.iter().map(String::as_str));
    exists.push("nope");
    let got = c.raw.cmd(&exists);
    c.record("EXISTS many:0 … many:299 nope".into(), &int(300), &got);
    let mut del = vec!["DEL"];
    del.extend(keys.iter().step_by(2).map(String::as_str));
    let got = c.raw.cmd(&del);
    c.record("DEL many:0 many:2 … many:298".into(), &int(150), &got);
    c.expect("DBSIZE", int(150));
    c.finish();
}

#[test]
fn del_unlink_exists_touch_on_one_core() {
    multi_key_deletes(1);
}

#[test]
fn del_unlink_exists_touch_across_two_cores() {
    multi_key_deletes(2);
}

// ---------------------------------------------------------------------------------------
// RENAME / RENAMENX / COPY
// ---------------------------------------------------------------------------------------

fn renames(cores: usize) {
    let server = Server::with_cores(cores);
    let mut c = Check::new(&server);
    let last = cores - 1;
    // Source on core 0, destinations on the last core (the other core when there are two).
    let src = key_on_core(0, cores, "src");
    let dst = key_on_core(last, cores, "dst");
    let dst2 = key_on_core(last, cores, "dtwo");
    let back = key_on_core(0, cores, "back");
    c.table(&[
        (format!("RENAME {src} {dst}"), err(NO_SUCH_KEY)),
        (format!("RENAMENX {src} {dst}"), err(NO_SUCH_KEY)),
        (format!("RENAME {src} {src}"), err(NO_SUCH_KEY)),
        (format!("SET {src} v"), ok()),
        (format!("RENAME {src} {src}"), ok()),
        (format!("RENAMENX {src} {src}"), int(0)),
        (format!("GET {src}"), b("v")),
        (format!("RENAME {src} {dst}"), ok()),
        (format!("EXISTS {src}"), int(0)),
        (format!("GET {dst}"), b("v")),
        // The TTL moves with the key.
        (format!("EXPIRE {dst} 100"), int(1)),
        (format!("RENAME {dst} {back}"), ok()),
        (format!("TTL {back}"), int(100)),
        (format!("GET {back}"), b("v")),
        // RENAME overwrites the destination, value and TTL: a source without a TTL leaves
        // a destination without one.
        (format!("SET {dst} old EX 100"), ok()),
        (format!("SET {src} new"), ok()),
        (format!("RENAME {src} {dst}"), ok()),
        (format!("GET {dst}"), b("new")),
        (format!("TTL {dst}"), int(-1)),
        // RENAMENX: only if the destination does not exist.
        (format!("SET {src} again"), ok()),
        (format!("RENAMENX {src} {dst}"), int(0)),
        (format!("GET {src}"), b("again")),
        (format!("GET {dst}"), b("new")),
        (format!("RENAMENX {src} {dst2}"), int(1)),
        (format!("EXISTS {src}"), int(0)),
        (format!("GET {dst2}"), b("again")),
        (format!("RENAMENX {dst2} {back}"), int(0)),
        (format!("TYPE {dst2}"), simple("string")),
        // The value's representation moves too.
        (format!("SET {src} 12"), ok()),
        (format!("RENAME {src} {dst}"), ok()),
        (format!("OBJECT ENCODING {dst}"), b("int")),
        (format!("INCR {dst}"), int(13)),
    ]);
    c.finish();
}

#[test]
fn rename_and_renamenx_on_one_core() {
    renames(1);
}

#[test]
fn rename_and_renamenx_across_two_cores() {
    renames(2);
}

fn copies(cores: usize) {
    // https://redis.io/commands/copy/ — 1 if copied, 0 if the source is missing or the
    // destination exists (without REPLACE); DB picks the destination database.
    let server = Server::with_cores(cores);
    let mut c = Check::new(&server);
    let last = cores - 1;
    let src = key_on_core(0, cores, "src");
    let dst = key_on_core(last, cores, "dst");
    let other = key_on_core(last, cores, "other");
    c.table(&[
        (format!("COPY {src} {dst}"), int(0)),
        (format!("COPY {src} {src}"), err(SAME_OBJECT)),
        (format!("SET {src} v EX 100"), ok()),
        (format!("COPY {src} {src}"), err(SAME_OBJECT)),
        (format!("COPY {src} {src} DB 0"), err(SAME_OBJECT)),
        (format!("COPY {src} {dst}"), int(1)),
        (format!("GET {dst}"), b("v")),
        (format!("GET {src}"), b("v")),
        // The copy keeps the TTL.
        (format!("TTL {dst}"), int(100)),
        (format!("SET {src} w"), ok()),
        (format!("COPY {src} {dst}"), int(0)),
        (format!("GET {dst}"), b("v")),
        (format!("COPY {src} {dst} REPLACE"), int(1)),
        (format!("GET {dst}"), b("w")),
        (format!("TTL {dst}"), int(-1)),
        // The copy is independent of the source.
        (format!("APPEND {dst} x"), int(2)),
        (format!("GET {src}"), b("w")),
        // Another database: the same name is allowed there.
        (format!("COPY {src} {src} DB 1"), int(1)),
        (format!("COPY {src} {other} db 1"), int(1)),
        (format!("COPY {src} {src} DB 1"), int(0)),
        (format!("COPY {src} {src} DB 1 REPLACE"), int(1)),
        (format!("COPY {src} {other} REPLACE DB 2"), int(1)),
        (format!("COPY {src} {other} DB 1 DB 3"), int(1)),
        (format!("COPY missing {other} DB 1"), int(0)),
        // Errors, checked before the keys are looked at.
        (format!("COPY {src} {dst} DB 16"), err(DB_RANGE)),
        (format!("COPY {src} {dst} DB -1"), err(DB_RANGE)),
        ("COPY missing x DB 99".into(), err(DB_RANGE)),
        (format!("COPY {src} {dst} DB abc"), err(NOT_INT)),
        (format!("COPY {src} {dst} DB"), err(SYNTAX)),
        (format!("COPY {src} {dst} REPLACE DB"), err(SYNTAX)),
        (format!("COPY {src} {dst} FOO"), err(SYNTAX)),
        ("COPY missing missing".into(), err(SAME_OBJECT)),
        (format!("COPY {src} {dst} REPLACE REPLACE"), int(1)),
        ("SELECT 1".into(), ok()),
        (format!("MGET {src} {other}"), arr(vec![b("w"), b("w")])),
        ("SELECT 2".into(), ok()),
        (format!("GET {other}"), b("w")),
        ("SELECT 3".into(), ok()),
        (format!("GET {other}"), b("w")),
        ("DBSIZE".into(), int(1)),
        ("SELECT 0".into(), ok()),
        ("DBSIZE".into(), int(2)),
    ]);
    // A copy to another database keeps the TTL too.
    c.table(&[
        (format!("SET {src} t EX 100"), ok()),
        (format!("COPY {src} {dst} DB 5"), int(1)),
        ("SELECT 5".into(), ok()),
        (format!("TTL {dst}"), int(100)),
        (format!("GET {dst}"), b("t")),
    ]);
    c.finish();
}

#[test]
fn copy_on_one_core() {
    copies(1);
}

#[test]
fn copy_across_two_cores() {
    copies(2);
}

// ---------------------------------------------------------------------------------------
// KEYS
// ---------------------------------------------------------------------------------------

const GLOB_KEYS: &[&str] = &[
    "hello", "hallo", "hxllo", "hllo", "heeeello", "h*llo", "h?llo", "h[a]llo", "h\\llo", "abc",
    "ABC", "a-c", "", "x]y", "[", "a\\b", "h-llo", "h^llo",
];

fn glob_server(cores: usize) -> (Server, Check) {
    let server = Server::with_cores(cores);
    let mut c = Check::new(&server);
    for k in GLOB_KEYS {
        c.expect_args(&[b"SET", k.as_bytes(), b"1"], ok());
    }
    (server, c)
}

#[test]
fn keys_matches_glob_patterns_as_redis_does() {
    // Redis's stringmatchlen: `*`, `?`, `[abc]`, `[^abc]`, `[a-z]` (reversed ranges too),
    // `\` escapes; `!` is not a negation; an unterminated `[` matches nothing here.
    let all: Vec<&str> = GLOB_KEYS.to_vec();
    let all_but_empty: Vec<&str> = GLOB_KEYS
        .iter()
        .copied()
        .filter(|k| !k.is_empty())
        .collect();
    let h_keys: Vec<&str> = GLOB_KEYS
        .iter()
        .copied()
        .filter(|k| k.starts_with('h'))
        .collect();
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("*", all.clone()),
        (
            "h?llo",
            vec![
                "h*llo", "h-llo", "h?llo", "h\\llo", "h^llo", "hallo", "hello", "hxllo",
            ],
        ),
        (
            "h*llo",
            vec![
                "h*llo", "h-llo", "h?llo", "h[a]llo", "h\\llo", "h^llo", "hallo", "heeeello",
                "hello", "hllo", "hxllo",
            ],
        ),
        ("*llo", h_keys.clone()),
        ("h*", h_keys.clone()),
        ("h[ae]llo", vec!["hallo", "hello"]),
        (
            "h[^e]llo",
            vec![
                "h*llo", "h-llo", "h?llo", "h\\llo", "h^llo", "hallo", "hxllo",
            ],
        ),
        ("h[!e]llo", vec!["hello"]),
        ("h[a-b]llo", vec!["hallo"]),
        ("h[e-e]llo", vec!["hello"]),
        ("h[z-a]llo", vec!["hallo", "hello", "hxllo"]),
        (
            "h[^a-x]llo",
            vec!["h*llo", "h-llo", "h?llo", "h\\llo", "h^llo"],
        ),
        (
            "h[^^]llo",
            vec![
                "h*llo", "h-llo", "h?llo", "h\\llo", "hallo", "hello", "hxllo",
            ],
        ),
        (
            "h[^]llo",
            vec![
                "h*llo", "h-llo", "h?llo", "h\\llo", "h^llo", "hallo", "hello", "hxllo",
            ],
        ),
        ("h[]]llo", vec![]),
        ("h[\\-]llo", vec!["h-llo"]),
        ("h[-a]llo", vec!["h-llo", "hallo"]),
        ("h\\*llo", vec!["h*llo"]),
        ("h\\?llo", vec!["h?llo"]),
        ("h\\[a\\]llo", vec!["h[a]llo"]),
        ("h\\\\llo", vec!["h\\llo"]),
        ("[a-c]bc", vec!["abc"]),
        ("[b-a]bc", vec!["abc"]),
        ("[A-C]BC", vec!["ABC"]),
        ("abc", vec!["abc"]),
        ("ABC", vec!["ABC"]),
        ("a?c", vec!["a-c", "abc"]),
        ("???", vec!["ABC", "a-c", "a\\b", "abc", "x]y"]),
        ("*?", all_but_empty.clone()),
        ("", vec![""]),
        ("?", vec!["["]),
        ("[\\[]", vec!["["]),
        ("[[]", vec!["["]),
        ("x]y", vec!["x]y"]),
        ("*]*", vec!["h[a]llo", "x]y"]),
        ("h[e", vec![]),
        ("[", vec![]),
        ("a\\", vec![]),
        ("\\", vec![]),
        ("a\\\\b", vec!["a\\b"]),
        ("a\\b", vec![]),
        ("nomatch*", vec![]),
    ];
    for cores in [1, 2] {
        let (_server, mut c) = glob_server(cores);
        for (pattern, want) in &cases {
            let got = keys_reply(&mut c, pattern.as_bytes());
            c.expect_set(
                format!("KEYS {pattern:?} ({cores} cores)"),
                &strings(want),
                got,
            );
            // SCAN MATCH agrees with KEYS (patterns other than "*" alone go through the
            // same matcher in Redis).
            if !pattern.is_empty() {
                let got = scan_all(&mut c, &["MATCH", pattern, "COUNT", "5"]).map(|k| set_of(&k));
                c.expect_set(
                    format!("SCAN … MATCH {pattern:?} ({cores} cores)"),
                    &strings(want),
                    got,
                );
            }
        }
        c.finish();
    }
}

#[test]
fn keys_glob_edge_cases_follow_redis_quirks() {
    // Two quirks of Redis 7.0's stringmatchlen: in `[a-]` the `-` starts a range that
    // swallows the `]` (so the class never closes and nothing matches), and a pattern made
    // only of stars other than "*" itself does not match the empty key (KEYS treats a lone
    // "*" specially; stringmatchlen never matches an empty string against "**").
    let (_server, mut c) = glob_server(2);
    let all_but_empty: Vec<&str> = GLOB_KEYS
        .iter()
        .copied()
        .filter(|k| !k.is_empty())
        .collect();
    for (pattern, want) in [("h[a-]llo", vec![]), ("**", all_but_empty)] {
        let got = keys_reply(&mut c, pattern.as_bytes());
        c.expect_set(format!("KEYS {pattern:?}"), &strings(&want), got);
    }
    c.finish();
}

// ---------------------------------------------------------------------------------------
// SCAN
// ---------------------------------------------------------------------------------------

fn scan_returns_every_key(cores: usize) {
    let server = Server::with_cores(cores);
    let mut c = Check::new(&server);
    let keys: Vec<String> = (0..5000).map(|i| format!("key:{i}")).collect();
    fill(&mut c, &keys);
    let want: BTreeSet<String> = keys.iter().cloned().collect();
    c.expect("DBSIZE", int(keys.len() as i64));
    let got = keys_reply(&mut c, b"*");
    c.expect_set(format!("KEYS * ({cores} cores)"), &want, got);
    for count in [None, Some("100"), Some("100000")] {
        let extra: Vec<&str> = count.map(|n| vec!["COUNT", n]).unwrap_or_default();
        let got = scan_all(&mut c, &extra);
        c.checked += 1;
        match &got {
            Ok(k) if k.len() < keys.len() => c.bad.push(format!(
                "  full SCAN {extra:?} ({cores} cores): {} keys returned for {} stored",
                k.len(),
                keys.len()
            )),
            _ => {}
        }
        c.expect_set(
            format!("full SCAN {extra:?} ({cores} cores)"),
            &want,
            got.map(|k| set_of(&k)),
        );
    }
    // Tiny steps, over a smaller database (one round trip per key).
    c.expect("SELECT 1", ok());
    let small: Vec<String> = (0..400).map(|i| format!("small:{i}")).collect();
    fill(&mut c, &small);
    let want: BTreeSet<String> = small.iter().cloned().collect();
    for count in ["1", "7"] {
        let got = scan_all(&mut c, &["COUNT", count]).map(|k| set_of(&k));
        c.expect_set(
            format!("full SCAN COUNT {count} of db 1 ({cores} cores)"),
            &want,
            got,
        );
    }
    c.finish();
}

#[test]
fn scan_returns_every_key_on_one_core() {
    scan_returns_every_key(1);
}

#[test]
fn scan_returns_every_key_on_two_cores() {
    scan_returns_every_key(2);
}

#[test]
fn scan_never_misses_a_key_present_throughout_while_the_keyspace_changes() {
    // https://redis.io/commands/scan/ — "A full iteration always retrieves all the elements
    // that were present in the collection from the start to the end of a full iteration."
    // Keys are added (forcing the tables to grow) and removed during the iteration.
    let server = Server::with_cores(2);
    let mut c = Check::new(&server);
    let old: Vec<String> = (0..3000).map(|i| format!("old:{i}")).collect();
    fill(&mut c, &old);
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    let mut cursor = "0".to_string();
    let mut step = 0usize;
    let mut added: Vec<String> = Vec::new();
    loop {
        let (next, keys) = match scan_step(&mut c, &cursor, &["COUNT", "20"]) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        for k in keys {
            assert!(
                k.starts_with(b"old:") || k.starts_with(b"new:"),
                "SCAN returned a key never stored: {:?}",
                String::from_utf8_lossy(&k)
            );
            seen.insert(k);
        }
        if step < 40 {
            let batch: Vec<String> = (0..250).map(|j| format!("new:{step}:{j}")).collect();
            fill(&mut c, &batch);
            added.extend(batch);
        } else if step < 80 && !added.is_empty() {
            let n = added.len().min(250);
            let batch: Vec<String> = added.drain(..n).collect();
            let mut del = vec!["DEL"];
            del.extend(batch.iter().map(String::as_str));
            assert_eq!(c.raw.cmd(&del), int(n as i64), "DEL of added keys");
        }
        step += 1;
        if next == "0" {
            break;
        }
        assert!(step < 200_000, "SCAN did not finish");
        cursor = next;
    }
    let missing: Vec<&String> = old
        .iter()
        .filter(|k| !seen.contains(k.as_bytes()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} keys present for the whole scan were never returned, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}

#[test]
fn scan_match_count_type_and_errors() {
    let server = Server::with_cores(2);
    let mut c = Check::new(&server);
    let mut keys: Vec<String> = (0..200).map(|i| format!("user:{i}")).collect();
    keys.extend((0..50).map(|i| format!("item:{i}")));
    fill(&mut c, &keys);
    let users: BTreeSet<String> = keys
        .iter()
        .filter(|k| k.starts_with("user:"))
        .cloned()
        .collect();
    let all: BTreeSet<String> = keys.iter().cloned().collect();
    let user1x: BTreeSet<String> = (10..20).map(|i| format!("user:{i}")).collect();
    let none = BTreeSet::new();
    let items: BTreeSet<String> = keys
        .iter()
        .filter(|k| k.starts_with("item:"))
        .cloned()
        .collect();
    let cases: Vec<(Vec<&str>, &BTreeSet<String>)> = vec![
        (vec!["MATCH", "user:*"], &users),
        (vec!["match", "user:1?"], &user1x),
        (vec!["MATCH", "user:1?", "COUNT", "1000"], &user1x),
        (vec!["COUNT", "3", "MATCH", "user:*"], &users),
        (vec!["MATCH", "nomatch*"], &none),
        (vec!["TYPE", "string"], &all),
        (vec!["TYPE", "STRING"], &all),
        (
            vec!["TYPE", "string", "MATCH", "user:*", "COUNT", "5"],
            &users,
        ),
        (vec!["TYPE", "hash"], &none),
        (vec!["TYPE", "list"], &none),
        (vec!["TYPE", "set"], &none),
        (vec!["TYPE", "zset"], &none),
        (vec!["TYPE", "stream"], &none),
        (vec!["TYPE", "nosuchtype"], &none),
        (vec!["MATCH", "user:*", "MATCH", "item:*"], &items),
    ];
    for (extra, want) in &cases {
        let got = scan_all(&mut c, extra).map(|k| set_of(&k));
        c.expect_set(format!("full SCAN {extra:?}"), want, got);
    }
    // On an empty database a full iteration returns nothing. (Redis ends it in one step
    // with cursor 0; SCAN's contract also allows empty pages with a non-zero cursor, which
    // is what a node with several cores returns, so only the contract is checked.)
    c.expect("SELECT 9", ok());
    for extra in [
        &[][..],
        &["MATCH", "*", "COUNT", "100", "TYPE", "string"][..],
    ] {
        let got = scan_all(&mut c, extra).map(|k| set_of(&k));
        c.expect_set(
            format!("full SCAN {extra:?} of an empty database"),
            &none,
            got,
        );
    }
    c.expect("SELECT 0", ok());
    c.table(&[
        ("SCAN abc", err(INVALID_CURSOR)),
        ("SCAN 1.5", err(INVALID_CURSOR)),
        ("SCAN 18446744073709551616", err(INVALID_CURSOR)),
        ("SCAN 0 COUNT", err(SYNTAX)),
        ("SCAN 0 COUNT 0", err(SYNTAX)),
        ("SCAN 0 COUNT -1", err(SYNTAX)),
        ("SCAN 0 COUNT abc", err(NOT_INT)),
        ("SCAN 0 COUNT 1.5", err(NOT_INT)),
        ("SCAN 0 MATCH", err(SYNTAX)),
        ("SCAN 0 TYPE", err(SYNTAX)),
        ("SCAN 0 COUNT 10 MATCH", err(SYNTAX)),
        ("SCAN 0 FOO bar", err(SYNTAX)),
    ]);
    c.finish();
}

// ---------------------------------------------------------------------------------------
// RANDOMKEY / DBSIZE / FLUSHDB / FLUSHALL / SELECT
// ---------------------------------------------------------------------------------------

#[test]
fn randomkey_and_dbsize() {
    let server = Server::with_cores(2);
    let mut c = Check::new(&server);
    c.expect("RANDOMKEY", nil());
    c.expect("DBSIZE", int(0));
    let a = key_on_core(0, 2, "a");
    let b_ = key_on_core(1, 2, "b");
    c.expect(&format!("MSET {a} 1 {b_} 2"), ok());
    c.expect("DBSIZE", int(2));
    let mut seen = BTreeSet::new();
    for _ in 0..100 {
        match c.run("RANDOMKEY") {
            Resp::Bulk(k) => {
                seen.insert(String::from_utf8_lossy(&k).into_owned());
            }
            other => {
                c.record("RANDOMKEY".into(), &b(&a), &other);
                break;
            }
        }
    }
    // Each of two keys is missed by 100 draws with probability 2^-100.
    c.expect_set(
        "RANDOMKEY ×100 over two keys on two cores".into(),
        &strings(&[&a, &b_]),
        Ok(seen),
    );
    c.expect(&format!("DEL {a}"), int(1));
    c.expect("RANDOMKEY", b(&b_));
    c.expect("DBSIZE", int(1));
    c.finish();
}

#[test]
fn flushdb_and_flushall() {
    let server = Server::with_cores(2);
    let mut c = Check::new(&server);
    let fill_dbs = |c: &mut Check| {
        for db in 0..3 {
            c.expect(&format!("SELECT {db}"), ok());
            c.expect("MSET a 1 b 2 c 3 d 4", ok());
        }
        c.expect("SELECT 1", ok());
    };
    fill_dbs(&mut c);
    c.table(&[
        ("FLUSHDB", ok()),
        ("DBSIZE", int(0)),
        ("SELECT 0", ok()),
        ("DBSIZE", int(4)),
        ("FLUSHDB SYNC", ok()),
        ("DBSIZE", int(0)),
        ("SELECT 2", ok()),
        ("flushdb async", ok()),
        ("DBSIZE", int(0)),
        ("FLUSHDB FOO", err(SYNTAX)),
        ("FLUSHALL FOO", err(SYNTAX)),
    ]);
    for flush in [
        "FLUSHALL",
        "FLUSHALL SYNC",
        "FLUSHALL ASYNC",
        "flushall sync",
    ] {
        fill_dbs(&mut c);
        c.expect(flush, ok());
        for db in 0..3 {
            c.expect(&format!("SELECT {db}"), ok());
            let got = c.run("DBSIZE");
            c.record(format!("DBSIZE of db {db} after {flush}"), &int(0), &got);
        }
    }
    c.finish();
}

#[test]
fn flush_with_two_arguments_is_a_syntax_error() {
    // Redis 7.0 flushdb/flushall: anything but one SYNC or ASYNC is "ERR syntax error",
    // also two of them (their arity is -1, so it is not an arity error).
    let server = Server::with_cores(1);
    let mut c = Check::new(&server);
    c.expect("SET k v", ok());
    c.table(&[
        ("FLUSHDB SYNC ASYNC", err(SYNTAX)),
        ("FLUSHDB a b", err(SYNTAX)),
        ("FLUSHALL SYNC ASYNC", err(SYNTAX)),
        ("FLUSHALL a b", err(SYNTAX)),
        ("DBSIZE", int(1)),
    ]);
    c.finish();
}

#[test]
fn select_keeps_databases_apart() {
    let server = Server::with_cores(2);
    let mut c = Check::new(&server);
    let a = key_on_core(0, 2, "a");
    let b_ = key_on_core(1, 2, "b");
    c.table(&[
        (format!("MSET {a} db0 {b_} db0"), ok()),
        ("SELECT 1".into(), ok()),
        (format!("MGET {a} {b_}"), arr(vec![nil(), nil()])),
        (format!("EXISTS {a} {b_}"), int(0)),
        ("DBSIZE".into(), int(0)),
        ("KEYS *".into(), arr(vec![])),
        ("RANDOMKEY".into(), nil()),
        (format!("MSET {a} db1 {b_} db1 only1 x"), ok()),
        ("DBSIZE".into(), int(3)),
        (format!("EXPIRE {a} 100"), int(1)),
        (format!("RENAME {b_} moved"), ok()),
        ("SELECT 0".into(), ok()),
        (
            format!("MGET {a} {b_} only1 moved"),
            arr(vec![b("db0"), b("db0"), nil(), nil()]),
        ),
        (format!("TTL {a}"), int(-1)),
        ("DBSIZE".into(), int(2)),
        ("SELECT 15".into(), ok()),
        ("DBSIZE".into(), int(0)),
        ("SELECT 16".into(), err(DB_RANGE)),
        ("SELECT -1".into(), err(DB_RANGE)),
        ("SELECT abc".into(), err(NOT_INT)),
        ("SELECT 1.5".into(), err(NOT_INT)),
        // A failed SELECT leaves the connection where it was.
        ("DBSIZE".into(), int(0)),
        ("SELECT 1".into(), ok()),
        (format!("TTL {a}"), int(100)),
        (format!("MGET {a} moved"), arr(vec![b("db1"), b("db1")])),
        (format!("DEL {a} moved only1"), int(3)),
        ("DBSIZE".into(), int(0)),
        ("SELECT 0".into(), ok()),
        ("DBSIZE".into(), int(2)),
    ]);
    // SCAN and KEYS see only the selected database.
    let got = keys_reply(&mut c, b"*");
    c.expect_set("KEYS * in db 0".into(), &strings(&[&a, &b_]), got);
    c.expect("SELECT 3", ok());
    c.expect("MSET x 1 y 2 z 3", ok());
    let got = scan_all(&mut c, &[]).map(|k| set_of(&k));
    c.expect_set("full SCAN in db 3".into(), &strings(&["x", "y", "z"]), got);
    // The database belongs to the connection.
    let mut other = Check::new(&server);
    other.expect("DBSIZE", int(2));
    other.expect("GET x", nil());
    other.finish();
    c.finish();
}

// ---------------------------------------------------------------------------------------
// EXPIRE family, TTL family, PERSIST
// ---------------------------------------------------------------------------------------

#[test]
fn expire_nx_xx_gt_lt() {
    // https://redis.io/commands/expire/ — NX: only without a TTL; XX: only with one; GT:
    // only if the new TTL is greater; LT: only if smaller. "A non-volatile key is treated
    // as an infinite TTL for the purpose of GT and LT."
    let server = Server::with_cores(2);
    let mut c = Check::new(&server);
    c.table(&[
        ("SET k v", ok()),
        ("EXPIRE k 100 XX", int(0)),
        ("EXPIRE k 100 GT", int(0)),
        ("TTL k", int(-1)),
        ("EXPIRE k 100 NX", int(1)),
        ("TTL k", int(100)),
        ("EXPIRE k 200 NX", int(0)),
        ("TTL k", int(100)),
        ("EXPIRE k 200 XX", int(1)),
        ("TTL k", int(200)),
        ("EXPIRE k 100 GT", int(0)),
        ("TTL k", int(200)),
        ("EXPIRE k 300 GT", int(1)),
        ("TTL k", int(300)),
        ("EXPIRE k 400 LT", int(0)),
        ("TTL k", int(300)),
        ("EXPIRE k 50 LT", int(1)),
        ("TTL k", int(50)),
        ("EXPIRE k 60 xx gt", int(1)),
        ("TTL k", int(60)),
        ("EXPIRE k 40 XX LT", int(1)),
        ("TTL k", int(40)),
        ("PERSIST k", int(1)),
        ("EXPIRE k 100 lt", int(1)),
        ("TTL k", int(100)),
        ("PERSIST k", int(1)),
        // A repeated flag is accepted.
        ("EXPIRE k 100 NX NX", int(1)),
        ("EXPIRE k 200 XX XX", int(1)),
        ("TTL k", int(200)),
        ("PERSIST k", int(1)),
        // A time in the past deletes the key, if the condition lets the change happen.
        ("EXPIRE k -5 GT", int(0)),
        ("EXPIRE k -5 XX", int(0)),
        ("EXISTS k", int(1)),
        ("EXPIRE k -5 LT", int(1)),
        ("EXISTS k", int(0)),
        ("SET k v EX 100", ok()),
        ("EXPIRE k -5 NX", int(0)),
        ("EXISTS k", int(1)),
        ("EXPIRE k 0", int(1)),
        ("EXISTS k", int(0)),
        ("EXPIRE k 100", int(0)),
        ("EXPIRE k 100 XX", int(0)),
        // PEXPIRE / EXPIREAT / PEXPIREAT take the same flags.
        ("SET k v", ok()),
        ("PEXPIRE k 100000 NX", int(1)),
        ("PEXPIRE k 200000 GT", int(1)),
        ("PEXPIRE k 1000 GT", int(0)),
        ("TTL k", int(200)),
        (&*format!("EXPIREAT k {FAR_S}"), int(1)),
        ("EXPIRETIME k", int(FAR_S)),
        (&*format!("EXPIREAT k {} GT", FAR_S - 20), int(0)),
        (&*format!("EXPIREAT k {} LT", FAR_S - 20), int(1)),
        ("EXPIRETIME k", int(FAR_S - 20)),
        (
            &*format!("PEXPIREAT k {} GT", (FAR_S - 20) * 1000 + 500),
            int(1),
        ),
        ("PEXPIRETIME k", int((FAR_S - 20) * 1000 + 500)),
        (&*format!("PEXPIREAT k {} NX", FAR_S * 1000), int(0)),
        ("EXPIREAT k 1", int(1)),
        ("EXISTS k", int(0)),
        ("SET k v", ok()),
        ("PEXPIREAT k 0", int(1)),
        ("EXISTS k", int(0)),
        ("SET k v", ok()),
        ("PEXPIRE k -1", int(1)),
        ("EXISTS k", int(0)),
    ]);
    c.expect("SET k v", ok());
    c.expect("PEXPIRE k 5000", int(1));
    c.expect_between("PTTL k", 4_000, 5_000);
    c.finish();
}

#[test]
fn expire_errors_and_limits() {
    // Redis 7.0 expireGenericCommand: flags are parsed before the time; a time that
    // overflows (in ms, or once the current time is added) is "invalid expire time".
    let server = Server::with_cores(2);
    let mut c = Check::new(&server);
    c.expect("SET k v", ok());
    c.table(&[
        ("EXPIRE k 100 NX XX", err(NX_AND_OTHERS)),
        ("EXPIRE k 100 NX GT", err(NX_AND_OTHERS)),
        ("EXPIRE k 100 NX LT", err(NX_AND_OTHERS)),
        ("EXPIRE k 100 XX NX", err(NX_AND_OTHERS)),
        ("EXPIRE k 100 GT LT", err(GT_AND_LT)),
        ("PEXPIREAT k 100 XX LT GT", err(GT_AND_LT)),
        ("EXPIRE k 100 FOO", err("ERR Unsupported option FOO")),
        ("PEXPIRE k 100 bar", err("ERR Unsupported option bar")),
        ("EXPIREAT k 100 bar", err("ERR Unsupported option bar")),
        ("EXPIRE k abc", err(NOT_INT)),
        ("EXPIRE k 1.5", err(NOT_INT)),
        ("EXPIRE k 9223372036854775808", err(NOT_INT)),
        ("EXPIRE missing abc", err(NOT_INT)),
        ("EXPIRE k abc FOO", err("ERR Unsupported option FOO")),
        ("EXPIRE k abc NX XX", err(NX_AND_OTHERS)),
        ("EXPIRE missing 100 FOO", err("ERR Unsupported option FOO")),
        ("EXPIRE k 9223372036854775807", invalid_expire("expire")),
        ("EXPIRE k 9223372036854775", invalid_expire("expire")),
        ("EXPIRE k -9223372036854776", invalid_expire("expire")),
        ("EXPIRE k -9223372036854775808", invalid_expire("expire")),
        ("PEXPIRE k 9223372036854775807", invalid_expire("pexpire")),
        ("EXPIREAT k 9223372036854775807", invalid_expire("expireat")),
        ("EXPIREAT k -9223372036854776", invalid_expire("expireat")),
        // None of these touched the key.
        ("TTL k", int(-1)),
        // The largest absolute time in ms is accepted.
        ("PEXPIREAT k 9223372036854775807", int(1)),
        ("PEXPIRETIME k", int(i64::MAX)),
        // Large negative times that do not overflow delete the key.
        ("EXPIRE k -9223372036854775", int(1)),
        ("EXISTS k", int(0)),
        ("SET k v", ok()),
        ("PEXPIRE k -9223372036854775808", int(1)),
        ("EXISTS k", int(0)),
    ]);
    c.finish();
}

#[test]
fn ttl_pttl_expiretime_pexpiretime_and_persist() {
    let server = Server::with_cores(2);
    let mut c = Check::new(&server);
    c.table(&[
        // -2: no such key; -1: no TTL.
        ("TTL missing", int(-2)),
        ("PTTL missing", int(-2)),
        ("EXPIRETIME missing", int(-2)),
        ("PEXPIRETIME missing", int(-2)),
        ("SET p v", ok()),
        ("TTL p", int(-1)),
        ("PTTL p", int(-1)),
        ("EXPIRETIME p", int(-1)),
        ("PEXPIRETIME p", int(-1)),
        (&*format!("PEXPIREAT p {}", FAR_S * 1000), int(1)),
        ("EXPIRETIME p", int(FAR_S)),
        ("PEXPIRETIME p", int(FAR_S * 1000)),
        // EXPIRETIME rounds to the nearest second, halves up (Redis: (ms + 500) / 1000).
        (&*format!("PEXPIREAT p {}", FAR_S * 1000 + 499), int(1)),
        ("EXPIRETIME p", int(FAR_S)),
        (&*format!("PEXPIREAT p {}", FAR_S * 1000 + 500), int(1)),
        ("EXPIRETIME p", int(FAR_S + 1)),
        (&*format!("EXPIREAT p {FAR_S}"), int(1)),
        ("PEXPIRETIME p", int(FAR_S * 1000)),
        // PERSIST: 1 if a TTL was removed, else 0.
        ("PERSIST p", int(1)),
        ("TTL p", int(-1)),
        ("PERSIST p", int(0)),
        ("PERSIST missing", int(0)),
        ("EXPIRE p 100", int(1)),
        ("TTL p", int(100)),
    ]);
    let now = server_now_ms(&mut c);
    c.expect_between(
        "EXPIRETIME p",
        (now + 100_000 - 500) / 1000 - 1,
        (now + 100_000 + 500) / 1000 + 1,
    );
    c.expect_between("PEXPIRETIME p", now + 99_000, now + 100_500);
    // TTL rounds the time left to the nearest second.
    c.expect("PEXPIRE p 1300", int(1));
    c.expect("TTL p", int(1));
    c.expect("PEXPIRE p 1950", int(1));
    c.expect("TTL p", int(2));
    c.expect_between("PTTL p", 1_000, 1_950);
    c.finish();
}

// ---------------------------------------------------------------------------------------
// Expiry with the server clock moved by DEBUG ADVANCE-CLOCK (no sleeping)
// ---------------------------------------------------------------------------------------

#[test]
fn expired_keys_are_invisible_everywhere() {
    let server = debug_server();
    let mut c = Check::new(&server);
    let volatile: Vec<String> = (0..40).map(|i| format!("vol:{i}")).collect();
    let lasting: Vec<String> = (0..10).map(|i| format!("keep:{i}")).collect();
    assert!(volatile
        .iter()
        .any(|k| tessera::slot::key_core(k.as_bytes(), 2) == 0));
    assert!(volatile
        .iter()
        .any(|k| tessera::slot::key_core(k.as_bytes(), 2) == 1));
    fill(&mut c, &lasting);
    let cmds: Vec<Vec<String>> = volatile
        .iter()
        .map(|k| {
            vec![
                "SET".into(),
                k.clone(),
                "v".into(),
                "EX".into(),
                "10".into(),
            ]
        })
        .collect();
    assert!(pipeline(&mut c, &cmds).iter().all(|r| *r == ok()));
    c.expect("DBSIZE", int(50));
    c.expect("TTL vol:0", int(10));
    advance(&mut c, 9_000);
    c.expect("EXISTS vol:0 vol:1", int(2));
    c.expect("TTL vol:1", int(1));
    advance(&mut c, 1_500);
    let want: BTreeSet<String> = lasting.iter().cloned().collect();
    // Before any access: KEYS and SCAN skip them, RANDOMKEY never picks one.
    let got = keys_reply(&mut c, b"*");
    c.expect_set("KEYS * after expiry".into(), &want, got);
    let got = keys_reply(&mut c, b"vol:*");
    c.expect_set("KEYS vol:* after expiry".into(), &BTreeSet::new(), got);
    let got = scan_all(&mut c, &[]).map(|k| set_of(&k));
    c.expect_set("full SCAN after expiry".into(), &want, got);
    let got = scan_all(&mut c, &["MATCH", "vol:*", "COUNT", "3"]).map(|k| set_of(&k));
    c.expect_set(
        "full SCAN MATCH vol:* after expiry".into(),
        &BTreeSet::new(),
        got,
    );
    let got = scan_all(&mut c, &["TYPE", "string"]).map(|k| set_of(&k));
    c.expect_set("full SCAN TYPE string after expiry".into(), &want, got);
    for _ in 0..30 {
        let got = c.run("RANDOMKEY");
        c.checked += 1;
        if !matches!(&got, Resp::Bulk(k) if k.starts_with(b"keep:")) {
            c.bad.push(format!(
                "  RANDOMKEY after expiry\n      redis:   one of keep:*\n      tessera: {}",
                show(&got)
            ));
            break;
        }
    }
    // Every read sees them missing.
    let mut exists = vec!["EXISTS".to_string()];
    exists.extend(volatile.iter().cloned());
    exists.extend(lasting.iter().cloned());
    let refs: Vec<&str> = exists.iter().map(String::as_str).collect();
    let got = c.raw.cmd(&refs);
    c.record(
        "EXISTS vol:0 … vol:39 keep:0 … keep:9".into(),
        &int(10),
        &got,
    );
    c.table(&[
        ("GET vol:0", nil()),
        ("TTL vol:1", int(-2)),
        ("PTTL vol:2", int(-2)),
        ("EXPIRETIME vol:3", int(-2)),
        ("PEXPIRETIME vol:4", int(-2)),
        ("TYPE vol:5", simple("none")),
        ("STRLEN vol:6", int(0)),
        ("OBJECT ENCODING vol:7", nil()),
        ("TOUCH vol:8 vol:9", int(0)),
        ("PERSIST vol:10", int(0)),
        ("EXPIRE vol:11 100", int(0)),
        ("RENAME vol:12 x", err(NO_SUCH_KEY)),
        ("RENAMENX vol:13 x", err(NO_SUCH_KEY)),
        ("COPY vol:14 x", int(0)),
        ("DEL vol:15 vol:16", int(0)),
        ("UNLINK vol:17", int(0)),
        ("MGET vol:18 keep:0", arr(vec![nil(), b("v")])),
        // An expired destination counts as missing.
        ("RENAMENX keep:1 vol:19", int(1)),
        ("GET vol:19", b("v")),
        ("COPY keep:2 vol:20", int(1)),
        ("GET vol:20", b("v")),
        ("EXISTS keep:1", int(0)),
    ]);
    // After every expired key has been looked at, DBSIZE counts only live keys.
    for k in &volatile[21..] {
        c.expect(&format!("GET {k}"), nil());
    }
    c.expect("DBSIZE", int(11));
    c.finish();
}

#[test]
fn ttls_count_down_on_the_debug_clock_and_follow_renames_and_copies() {
    let server = debug_server();
    let mut c = Check::new(&server);
    let a = key_on_core(0, 2, "a");
    let b_ = key_on_core(1, 2, "b");
    let a2 = key_on_core(0, 2, "c");
    let b2 = key_on_core(1, 2, "d");
    let now = server_now_ms(&mut c);
    c.table(&[
        (format!("SET {a} v EX 100"), ok()),
        (format!("SET {a2} v"), ok()),
        (format!("PEXPIRE {a2} 100000"), int(1)),
        ("SET at v".into(), ok()),
        (format!("EXPIREAT at {}", now / 1000 + 100), int(1)),
        ("SET pat v".into(), ok()),
        (format!("PEXPIREAT pat {}", now + 100_000), int(1)),
        ("SET gone v".into(), ok()),
        ("EXPIRE gone 100".into(), int(1)),
        ("SET kept v EX 100".into(), ok()),
        ("PERSIST kept".into(), int(1)),
    ]);
    advance(&mut c, 40_000);
    c.table(&[
        (format!("TTL {a}"), int(60)),
        (format!("TTL {a2}"), int(60)),
        // The TTL crosses cores with RENAME and COPY.
        (format!("RENAME {a} {b_}"), ok()),
        (format!("TTL {b_}"), int(60)),
        (format!("COPY {a2} {b2}"), int(1)),
        (format!("TTL {b2}"), int(60)),
        // GT/LT compare with the time left now.
        ("EXPIRE gone 50 GT".into(), int(0)),
        ("EXPIRE gone 70 GT".into(), int(1)),
        ("EXPIRE gone 80 LT".into(), int(0)),
        ("TTL gone".into(), int(70)),
        ("PERSIST gone".into(), int(1)),
        ("EXPIRE gone 20".into(), int(1)),
    ]);
    c.expect_between("TTL at", 59, 60);
    c.expect("PEXPIRETIME pat", int(now + 100_000));
    advance(&mut c, 20_500);
    c.table(&[
        ("EXISTS gone".into(), int(0)),
        (format!("EXISTS {b_} {b2} {a2} at pat"), int(5)),
    ]);
    advance(&mut c, 40_000);
    c.table(&[
        (format!("EXISTS {a} {b_} {a2} {b2} at pat gone"), int(0)),
        ("GET kept".into(), b("v")),
        ("TTL kept".into(), int(-1)),
        ("DBSIZE".into(), int(1)),
    ]);
    c.finish();
}

#[test]
fn expire_at_a_time_already_past_on_the_debug_clock_deletes() {
    let server = debug_server();
    let mut c = Check::new(&server);
    advance(&mut c, 3_600_000);
    let now = server_now_ms(&mut c);
    // One hour ahead of the wall clock: a time between the two is in the past for the
    // server, and setting it deletes the key at once.
    let past = now - 1_800_000;
    c.table(&[
        ("SET k v".into(), ok()),
        (format!("PEXPIREAT k {past}"), int(1)),
        ("EXISTS k".into(), int(0)),
        ("SET k v".into(), ok()),
        (format!("EXPIREAT k {}", past / 1000), int(1)),
        ("EXISTS k".into(), int(0)),
        (format!("SET k v PXAT {past}"), ok()),
        ("EXISTS k".into(), int(0)),
        ("SET k v".into(), ok()),
        (format!("GETEX k PXAT {past}"), b("v")),
        ("EXISTS k".into(), int(0)),
        // And a time after it is in the future.
        ("SET k v".into(), ok()),
        (format!("PEXPIREAT k {}", now + 10_000), int(1)),
        ("EXISTS k".into(), int(1)),
    ]);
    c.expect_between("PTTL k", 9_000, 10_000);
    c.finish();
}
