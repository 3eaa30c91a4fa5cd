//! The bounded cache against the real server: maxmemory and every eviction policy, the
//! exact -OOM refusal, CONFIG SET taking effect at once, active expiry of keys nobody reads
//! (time moved by DEBUG ADVANCE-CLOCK), OBJECT FREQ/IDLETIME, MEMORY, INFO's fields, and RSS
//! staying near the limit under an endless stream of new keys.

mod common;
use common::*;
use std::time::{Duration, Instant};

const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";
const LFU_NOT_SELECTED: &str = "ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.";
const LFU_SELECTED: &str = "ERR An LFU maxmemory policy is selected, idle time not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.";

/// How long a test waits for the background tick to do something.
const BACKGROUND_DEADLINE: Duration = Duration::from_secs(20);

fn debug_server(cores: usize, extra: &[&str]) -> Server {
    let mut args = vec!["--enable-debug-command", "yes"];
    args.extend_from_slice(extra);
    Server::start(cores, &args)
}

fn int_of(r: Resp) -> i64 {
    match r {
        Resp::Int(n) => n,
        other => panic!("expected an integer, got {other:?}"),
    }
}

/// Sends `SET prefix<i> value [extra...]` for `range`, pipelined; returns the replies.
fn set_many(
    raw: &mut Raw,
    prefix: &str,
    range: std::ops::Range<usize>,
    value: &[u8],
    extra: &[&str],
) -> Vec<Resp> {
    let mut replies = Vec::with_capacity(range.len());
    let all: Vec<usize> = range.collect();
    for chunk in all.chunks(500) {
        let mut buf = Vec::new();
        for i in chunk {
            let key = format!("{prefix}{i}");
            let mut args: Vec<&[u8]> = vec![b"SET", key.as_bytes(), value];
            args.extend(extra.iter().map(|e| e.as_bytes()));
            buf.extend(encode_cmd(&args));
        }
        raw.send(&buf);
        for _ in chunk {
            replies.push(raw.read());
        }
    }
    replies
}

fn count_existing(raw: &mut Raw, prefix: &str, range: std::ops::Range<usize>) -> usize {
    let mut n = 0;
    let all: Vec<usize> = range.collect();
    for chunk in all.chunks(500) {
        let mut buf = Vec::new();
        for i in chunk {
            buf.extend(encode_cmd(&[b"EXISTS", format!("{prefix}{i}").as_bytes()]));
        }
        raw.send(&buf);
        for _ in chunk {
            n += int_of(raw.read()) as usize;
        }
    }
    n
}

#[test]
fn config_and_info_fields() {
    let s = Server::with_cores(2);
    let mut c = Check::new(&s);
    let policy_error = "ERR CONFIG SET failed (possibly related to argument 'maxmemory-policy') - argument(s) must be one of the following: noeviction, allkeys-lru, allkeys-lfu, allkeys-random, allkeys-fifo, volatile-lru, volatile-lfu, volatile-random, volatile-ttl, volatile-fifo";
    c.table(&[
        ("CONFIG GET maxmemory", arr(vec![b("maxmemory"), b("0")])),
        ("CONFIG GET maxmemory-policy", arr(vec![b("maxmemory-policy"), b("noeviction")])),
        ("CONFIG GET maxmemory-samples", arr(vec![b("maxmemory-samples"), b("5")])),
        ("CONFIG GET lfu-log-factor", arr(vec![b("lfu-log-factor"), b("10")])),
        ("CONFIG GET lfu-decay-time", arr(vec![b("lfu-decay-time"), b("1")])),
        ("CONFIG GET hz", arr(vec![b("hz"), b("10")])),
        ("CONFIG SET maxmemory 10mb", ok()),
        ("CONFIG GET maxmemory", arr(vec![b("maxmemory"), b("10485760")])),
        ("CONFIG SET maxmemory-policy ALLKEYS-LFU", ok()),
        ("CONFIG GET maxmemory-policy", arr(vec![b("maxmemory-policy"), b("allkeys-lfu")])),
        ("CONFIG SET maxmemory-policy allkeys-mru", err(policy_error)),
        ("CONFIG SET maxmemory-samples 0", err("ERR CONFIG SET failed (possibly related to argument 'maxmemory-samples') - argument must be between 1 and 64 inclusive")),
        ("CONFIG SET maxmemory lots", err("ERR CONFIG SET failed (possibly related to argument 'maxmemory') - argument must be a memory value")),
        ("CONFIG SET hz 1000", ok()),
        ("CONFIG GET hz", arr(vec![b("hz"), b("500")])),
    ]);
    c.finish();
    let mut raw = s.raw();
    assert_eq!(raw.info_int("maxmemory"), 10 * 1024 * 1024);
    assert_eq!(raw.info("maxmemory_human"), "10.00M");
    assert_eq!(raw.info("maxmemory_policy"), "allkeys-lfu");
    assert_eq!(raw.info_int("core0_maxmemory_share"), 5 * 1024 * 1024);
    assert_eq!(raw.info_int("core1_maxmemory_share"), 5 * 1024 * 1024);
    for field in [
        "used_memory",
        "used_memory_rss",
        "used_memory_dataset",
        "evicted_keys",
        "expired_keys",
        "expire_cycle_cpu_milliseconds",
        "keyspace_hits",
        "keyspace_misses",
    ] {
        assert!(raw.info_int(field) >= 0, "{field}");
    }
    for field in [
        "used_memory_human",
        "mem_fragmentation_ratio",
        "expired_stale_perc",
        "used_memory_dataset_perc",
    ] {
        raw.info(field);
    }
}

#[test]
fn noeviction_refuses_writes_and_still_serves_reads_and_deletes() {
    let s = Server::start(2, &["--maxmemory", "2mb"]);
    let mut raw = s.raw();
    let value = vec![b'x'; 1000];
    let replies = set_many(&mut raw, "k", 0..4000, &value, &[]);
    let first_oom = replies
        .iter()
        .position(|r| *r != Resp::ok())
        .expect("2mb cannot hold 4000 keys of 1000 bytes");
    assert!(first_oom > 500, "refused too early, at {first_oom}");
    assert!(
        replies.contains(&Resp::err(OOM)),
        "{:?}",
        &replies[first_oom]
    );
    assert!(replies
        .iter()
        .all(|r| *r == Resp::ok() || *r == Resp::err(OOM)));
    // Both cores are full now: every write that needs memory is refused on either core.
    for core in 0..2 {
        let key = key_on_core(core, 2, "fresh");
        assert_eq!(raw.cmd(&["SET", &key, "v"]), Resp::err(OOM));
        assert_eq!(raw.cmd(&["INCR", &key]), Resp::err(OOM));
        assert_eq!(raw.cmd(&["MSET", &key, "1", "other", "2"]), Resp::err(OOM));
    }
    // Reads and deletes still work, and make room for writes again.
    assert_eq!(raw.cmd(&["GET", "k0"]), Resp::Bulk(value.clone()));
    assert_eq!(raw.cmd(&["EXISTS", "k0"]), Resp::Int(1));
    let stored = int_of(raw.cmd(&["DBSIZE"])) as usize;
    assert!(stored < 4000);
    let mut buf = Vec::new();
    for i in 0..4000 {
        buf.extend(encode_cmd(&[b"DEL", format!("k{i}").as_bytes()]));
    }
    raw.send(&buf);
    let deleted: i64 = (0..4000).map(|_| int_of(raw.read())).sum();
    assert_eq!(deleted as usize, stored);
    assert_eq!(raw.cmd(&["SET", "after", "v"]), Resp::ok());
    assert_eq!(raw.info_int("evicted_keys"), 0);
}

#[test]
fn allkeys_policies_keep_the_dataset_within_the_limit() {
    for policy in [
        "allkeys-lru",
        "allkeys-lfu",
        "allkeys-random",
        "allkeys-fifo",
    ] {
        let s = Server::start(2, &["--maxmemory", "4mb", "--maxmemory-policy", policy]);
        let mut raw = s.raw();
        let replies = set_many(&mut raw, "k", 0..20_000, &[b'v'; 500], &[]);
        assert!(
            replies.iter().all(|r| *r == Resp::ok()),
            "{policy}: a write was refused"
        );
        // The background tick may still evict a key or two between the two reads.
        let keys = int_of(raw.cmd(&["DBSIZE"]));
        let evicted = raw.info_int("evicted_keys");
        assert!(evicted > 5000, "{policy}: evicted {evicted}");
        assert!(
            (20_000..20_010).contains(&(evicted + keys)),
            "{policy}: {evicted} + {keys}"
        );
        for core in 0..2 {
            let dataset = raw.info_int(&format!("core{core}_dataset_bytes"));
            let share = raw.info_int(&format!("core{core}_maxmemory_share"));
            // One write may go over by its own size before the next one evicts.
            assert!(
                dataset <= share + 4096,
                "{policy}: core {core} holds {dataset} of {share}"
            );
        }
    }
}

#[test]
fn lru_evicts_the_keys_not_read_lately() {
    let s = Server::start(1, &["--maxmemory-policy", "allkeys-lru"]);
    let mut raw = s.raw();
    // Keep the write-ahead ring (which counts against maxmemory) out of the arithmetic.
    assert_eq!(
        raw.cmd(&["CONFIG", "SET", "wal-ring-bytes", "1024"]),
        Resp::ok()
    );
    let value = vec![b'v'; 200];
    set_many(&mut raw, "old", 0..4000, &value, &[]);
    // A limit a little above what the first keys take.
    let limit = raw.info_int("used_memory_dataset") * 11 / 10;
    assert_eq!(
        raw.cmd(&["CONFIG", "SET", "maxmemory", &limit.to_string()]),
        Resp::ok()
    );
    assert_eq!(raw.info_int("evicted_keys"), 0, "the first keys fit");
    // Read the first half again, then write new keys until a good part has gone.
    let mut buf = Vec::new();
    for i in 0..2000 {
        buf.extend(encode_cmd(&[b"GET", format!("old{i}").as_bytes()]));
    }
    raw.send(&buf);
    for _ in 0..2000 {
        raw.read();
    }
    set_many(&mut raw, "new", 0..3000, &value, &[]);
    let read = count_existing(&mut raw, "old", 0..2000);
    let unread = count_existing(&mut raw, "old", 2000..4000);
    // About 1400 of the old keys fit beside the new ones. Exact LRU would keep 1400 read
    // ones and no unread one; sampling comes close.
    assert!(raw.info_int("evicted_keys") >= 2000);
    assert!(
        read >= 1000,
        "read lately: {read} of 2000 kept, unread {unread}"
    );
    assert!(
        unread <= 400,
        "read lately: {read} of 2000 kept, unread {unread}"
    );
    assert!(
        read >= 3 * unread,
        "read lately: {read} of 2000 kept, unread {unread}"
    );
}

#[test]
fn volatile_policies_never_evict_keys_without_a_ttl() {
    for policy in [
        "volatile-lru",
        "volatile-lfu",
        "volatile-random",
        "volatile-ttl",
        "volatile-fifo",
    ] {
        let s = Server::start(2, &["--maxmemory", "2mb", "--maxmemory-policy", policy]);
        let mut raw = s.raw();
        let value = vec![b'v'; 500];
        set_many(&mut raw, "keep", 0..1000, &value, &[]);
        let replies = set_many(&mut raw, "ttl", 0..6000, &value, &["EX", "1000"]);
        assert!(
            replies.iter().all(|r| *r == Resp::ok()),
            "{policy}: TTL keys make room for each other"
        );
        assert!(raw.info_int("evicted_keys") > 1000, "{policy}");
        assert_eq!(count_existing(&mut raw, "keep", 0..1000), 1000, "{policy}");
        // Keys without a TTL cannot push the TTL keys out for ever: once none are left,
        // writes are refused.
        let replies = set_many(&mut raw, "more", 0..6000, &value, &[]);
        assert!(replies.contains(&Resp::err(OOM)), "{policy}: never refused");
        assert_eq!(count_existing(&mut raw, "keep", 0..1000), 1000, "{policy}");
    }
}

#[test]
fn config_set_of_limit_and_policy_takes_effect_at_once() {
    let s = Server::with_cores(2);
    let mut raw = s.raw();
    // Keep the write-ahead ring (which counts against maxmemory) out of the arithmetic.
    assert_eq!(
        raw.cmd(&["CONFIG", "SET", "wal-ring-bytes", "1024"]),
        Resp::ok()
    );
    set_many(&mut raw, "k", 0..10_000, &[b'v'; 300], &[]);
    let dataset = raw.info_int("used_memory_dataset");
    assert_eq!(
        raw.cmd(&["CONFIG", "SET", "maxmemory-policy", "allkeys-random"]),
        Resp::ok()
    );
    let half = (dataset / 2).to_string();
    assert_eq!(raw.cmd(&["CONFIG", "SET", "maxmemory", &half]), Resp::ok());
    // The very next write on each core evicts down to its share.
    for core in 0..2 {
        let key = key_on_core(core, 2, "next");
        assert_eq!(raw.cmd(&["SET", &key, "v"]), Resp::ok());
    }
    assert!(raw.info_int("evicted_keys") >= 4000);
    assert!(raw.info_int("used_memory_dataset") <= dataset / 2 + 8192);
    // And noeviction from now on refuses instead.
    assert_eq!(
        raw.cmd(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]),
        Resp::ok()
    );
    assert_eq!(raw.cmd(&["CONFIG", "SET", "maxmemory", "1"]), Resp::ok());
    assert_eq!(raw.cmd(&["SET", "refused", "v"]), Resp::err(OOM));
    assert_eq!(raw.cmd(&["CONFIG", "SET", "maxmemory", "0"]), Resp::ok());
    assert_eq!(raw.cmd(&["SET", "accepted", "v"]), Resp::ok());
}

#[test]
fn expired_keys_vanish_without_being_read() {
    let s = debug_server(2, &[]);
    let mut raw = s.raw();
    assert_eq!(raw.cmd(&["CONFIG", "SET", "hz", "100"]), Resp::ok());
    set_many(&mut raw, "gone", 0..3000, b"v", &["PX", "100"]);
    set_many(&mut raw, "stay", 0..500, b"v", &[]);
    set_many(&mut raw, "later", 0..500, b"v", &["EX", "3600"]);
    let before = raw.info_int("used_memory_dataset");
    assert_eq!(raw.cmd(&["DEBUG", "ADVANCE-CLOCK", "1000"]), Resp::ok());
    // Nobody reads the keys; the background tick deletes them.
    let deadline = Instant::now() + BACKGROUND_DEADLINE;
    while int_of(raw.cmd(&["DBSIZE"])) > 1000 {
        assert!(Instant::now() < deadline, "expired keys still there");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(int_of(raw.cmd(&["DBSIZE"])), 1000);
    assert_eq!(raw.info_int("expired_keys"), 3000);
    assert!(raw.info_int("used_memory_dataset") < before);
    assert_eq!(count_existing(&mut raw, "stay", 0..500), 500);
    assert_eq!(count_existing(&mut raw, "later", 0..500), 500);
    let info = match raw.cmd(&["INFO", "keyspace"]) {
        Resp::Bulk(b) => String::from_utf8(b).unwrap(),
        other => panic!("{other:?}"),
    };
    assert!(info.contains("db0:keys=1000,expires=500"), "{info}");
    assert_eq!(raw.cmd(&["DEBUG", "SET-ACTIVE-EXPIRE", "0"]), Resp::ok());
    assert_eq!(
        raw.cmd(&["DEBUG", "SET-ACTIVE-EXPIRE", "2"]),
        Resp::err("ERR syntax error")
    );
}

#[test]
fn object_freq_and_idletime() {
    let s = debug_server(1, &[]);
    let mut c = Check::new(&s);
    c.table(&[
        ("SET k v", ok()),
        ("OBJECT IDLETIME k", int(0)),
        ("DEBUG ADVANCE-CLOCK 5000", ok()),
        ("OBJECT IDLETIME k", int(5)),
        ("OBJECT IDLETIME k", int(5)), // OBJECT itself is not an access
        ("GET k", b("v")),
        ("OBJECT IDLETIME k", int(0)),
        ("OBJECT IDLETIME missing", nil()),
        ("OBJECT FREQ k", err(LFU_NOT_SELECTED)),
        ("OBJECT FREQ missing", nil()),
        (
            "OBJECT FREQ",
            err("ERR wrong number of arguments for 'object|freq' command"),
        ),
        (
            "OBJECT IDLETIME k extra",
            err("ERR wrong number of arguments for 'object|idletime' command"),
        ),
        ("CONFIG SET maxmemory-policy allkeys-lfu", ok()),
        ("SET f v", ok()),
        ("OBJECT FREQ f", int(5)),
        ("OBJECT IDLETIME f", err(LFU_SELECTED)),
    ]);
    for _ in 0..20 {
        c.run("GET f");
    }
    c.expect_between("OBJECT FREQ f", 6, 25);
    // One point lost per lfu-decay-time minutes without reads.
    let before = match c.run("OBJECT FREQ f") {
        Resp::Int(n) => n,
        other => panic!("{other:?}"),
    };
    c.expect("DEBUG ADVANCE-CLOCK 180000", ok());
    c.expect("OBJECT FREQ f", int((before - 3).max(0)));
    c.finish();
}

#[test]
fn memory_usage_stats_and_help() {
    let s = Server::with_cores(2);
    let mut c = Check::new(&s);
    c.expect("SET k 0123456789abcdef0123456789abcdef", ok());
    c.expect_between("MEMORY USAGE k", 40, 300);
    c.expect_between("MEMORY USAGE k SAMPLES 0", 40, 300);
    c.table(&[
        ("MEMORY USAGE missing", nil()),
        (
            "MEMORY USAGE k SAMPLES x",
            err("ERR value is not an integer or out of range"),
        ),
        ("MEMORY USAGE k FOO", err("ERR syntax error")),
        (
            "MEMORY USAGE",
            err("ERR wrong number of arguments for 'memory|usage' command"),
        ),
        ("MEMORY PURGE", ok()),
        (
            "MEMORY FOO",
            err("ERR unknown subcommand 'FOO'. Try MEMORY HELP."),
        ),
    ]);
    c.finish();
    let mut raw = s.raw();
    // An integer takes no value allocation; a long string more than a short one.
    raw.cmd(&["SET", "int", "12345"]);
    raw.cmd(&["SET", "long", &"x".repeat(1000)]);
    let int_usage = int_of(raw.cmd(&["MEMORY", "USAGE", "int"]));
    let long_usage = int_of(raw.cmd(&["MEMORY", "USAGE", "long"]));
    assert!(long_usage > int_usage + 900, "{int_usage} {long_usage}");
    match raw.cmd(&["MEMORY", "STATS"]) {
        Resp::Array(items) => {
            let field = |name: &str| {
                items
                    .chunks(2)
                    .find(|p| p[0] == Resp::bulk(name))
                    .map(|p| p[1].clone())
                    .unwrap_or_else(|| panic!("MEMORY STATS lacks {name}"))
            };
            assert_eq!(field("keys.count"), Resp::Int(3));
            assert!(matches!(field("dataset.bytes"), Resp::Int(n) if n > 1000));
            assert!(matches!(field("total.allocated"), Resp::Int(n) if n > 0));
            assert!(matches!(field("db.0"), Resp::Array(v) if v.len() == 4));
            assert!(matches!(field("core.1"), Resp::Array(v) if v.len() == 6));
        }
        other => panic!("MEMORY STATS replied {other:?}"),
    }
    match raw.cmd(&["MEMORY", "HELP"]) {
        Resp::Array(lines) => assert!(lines.len() > 4),
        other => panic!("{other:?}"),
    }
}

/// VmRSS of a process, in bytes.
fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb * 1024
}

#[test]
fn rss_stays_under_the_limit_with_an_endless_stream_of_new_keys() {
    let limit: u64 = 100 * 1024 * 1024;
    let s = Server::start(
        2,
        &["--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru"],
    );
    let mut raw = s.raw();
    // What the process holds before any key: its code, stacks, io_uring buffers and rings.
    // maxmemory bounds what comes on top of that (18 MiB here on 2026-12-03).
    let base = rss_of(s.pid());
    // Four times the limit in new keys, of mixed sizes.
    let values: Vec<Vec<u8>> = [100usize, 700, 1500, 3000]
        .iter()
        .map(|&n| vec![b'v'; n])
        .collect();
    let mut written: u64 = 0;
    let mut i = 0usize;
    let mut peak = 0;
    while written < 4 * limit {
        let mut buf = Vec::new();
        for _ in 0..1000 {
            let v = &values[i % values.len()];
            buf.extend(encode_cmd(&[b"SET", format!("key:{i:012}").as_bytes(), v]));
            written += v.len() as u64 + 16;
            i += 1;
        }
        raw.send(&buf);
        for _ in 0..1000 {
            assert_eq!(raw.read(), Resp::ok());
        }
        if i % 50_000 == 0 {
            peak = peak.max(rss_of(s.pid()));
        }
    }
    peak = peak.max(rss_of(s.pid()));
    assert!(raw.info_int("evicted_keys") > 0);
    assert!(
        (peak - base) as f64 <= 1.15 * limit as f64,
        "RSS peaked at {} MiB ({} MiB before any key) for a 100 MiB limit",
        peak >> 20,
        base >> 20
    );
}
