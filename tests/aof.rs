//! The append-only file against the real binary: `kill -9` under a write load loses no
//! acknowledged write with `appendfsync always` or `everysec`; a torn last record is dropped
//! and reported, damage earlier stops start-up unless `aof-load-truncated yes`; rewrites
//! (BGREWRITEAOF, automatic, turning appendonly on at run time) compact the files and load
//! back to the same data.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn start(dir: &Path, cores: usize, extra: &[&str]) -> Server {
    let mut args = vec!["--dir", dir.to_str().unwrap(), "--appendonly", "yes"];
    args.extend_from_slice(extra);
    Server::start(cores, &args)
}

/// Waits (bounded) until no append-only rewrite runs and the first ones are done.
fn wait_rewrites(raw: &mut Raw, at_least: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while raw.info("aof_rewrite_in_progress") == "1" || raw.info_int("aof_rewrites") < at_least {
        assert!(Instant::now() < deadline, "the rewrite did not end");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The newest log of core `core`, from its manifest.
fn newest_log(dir: &Path, core: usize) -> PathBuf {
    let aof = dir.join("appendonlydir");
    let m = std::fs::read_to_string(aof.join(format!("core-{core}.manifest"))).unwrap();
    let name = m
        .lines()
        .filter_map(|l| l.strip_prefix("log "))
        .next_back()
        .unwrap()
        .to_string();
    aof.join(name)
}

/// Client threads write keys of their own, one at a time, and keep a log of what was
/// acknowledged; once `acks` writes have been acknowledged in all, the server is killed with
/// SIGKILL in the middle of the load. Returns each thread's acked log.
fn write_until_killed(
    server: &mut Server,
    threads: usize,
    acks: usize,
) -> Vec<Vec<(usize, Instant)>> {
    let acked_so_far = Arc::new(AtomicUsize::new(0));
    let port = server.port;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let acked_so_far = acked_so_far.clone();
            std::thread::spawn(move || {
                let mut raw = Raw::connect(port);
                raw.stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let mut acked = Vec::new();
                for i in 0.. {
                    let key = format!("t{t}:{i}");
                    raw.send_cmd(&[b"SET", key.as_bytes(), i.to_string().as_bytes()]);
                    // After the kill the read fails: what was acked before is the log.
                    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| raw.read()));
                    match got {
                        Ok(Resp::Simple(s)) if s == "OK" => {
                            acked.push((i, Instant::now()));
                            acked_so_far.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => break,
                    }
                }
                acked
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked_so_far.load(Ordering::Relaxed) < acks {
        assert!(
            Instant::now() < deadline,
            "{acks} writes were not acknowledged in 60 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    server.kill9();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn kill_9_with_appendfsync_always_loses_no_acknowledged_write() {
    let dir = scratch_dir("always");
    let mut s = start(&dir, 2, &["--appendfsync", "always"]);
    let mut raw = s.raw();
    wait_rewrites(&mut raw, 2);
    drop(raw);
    let acked = write_until_killed(&mut s, 4, 2_000);
    let total: usize = acked.iter().map(Vec::len).sum();
    assert!(total > 500, "only {total} writes were acknowledged");
    let s = start(&dir, 2, &[]);
    let mut raw = s.raw();
    for (t, log) in acked.iter().enumerate() {
        raw.pipeline(
            log.iter().map(|(i, _)| *i),
            |i| encode_cmd(&[b"GET", format!("t{t}:{i}").as_bytes()]),
            |i, r| assert_eq!(r, Resp::bulk(&i.to_string()), "acked t{t}:{i} is lost"),
        );
    }
}

#[test]
fn kill_9_with_appendfsync_everysec_loses_no_acknowledged_write() {
    // As Redis: a reply leaves only once its record is written to the file, so a killed
    // process loses nothing acknowledged; what an OS crash may lose is bounded by the
    // once-a-second fsync, which a test here cannot show.
    let dir = scratch_dir("everysec");
    let mut s = start(&dir, 2, &["--appendfsync", "everysec"]);
    let mut raw = s.raw();
    wait_rewrites(&mut raw, 2);
    drop(raw);
    let acked = write_until_killed(&mut s, 4, 20_000);
    let killed = Instant::now();
    let s = start(&dir, 2, &[]);
    let mut raw = s.raw();
    for (t, log) in acked.iter().enumerate() {
        let times: std::collections::HashMap<usize, Instant> = log.iter().copied().collect();
        raw.pipeline(
            log.iter().map(|(i, _)| *i),
            |i| encode_cmd(&[b"EXISTS", format!("t{t}:{i}").as_bytes()]),
            |i, r| {
                let age = killed.duration_since(times[&i]);
                assert_eq!(
                    r,
                    Resp::Int(1),
                    "t{t}:{i}, acked {age:?} before the kill, is lost"
                );
            },
        );
    }
}

/// Writes `n` keys, then stops the server cleanly (its log is synced).
fn fill_and_stop(dir: &Path, n: usize) {
    let s = start(dir, 1, &[]);
    let mut raw = s.raw();
    wait_rewrites(&mut raw, 1);
    raw.pipeline(
        0..n,
        |i| {
            encode_cmd(&[
                b"SET",
                format!("k{i}").as_bytes(),
                format!("v{i}").as_bytes(),
            ])
        },
        |_, r| assert_eq!(r, Resp::ok()),
    );
    drop(raw);
    drop(s);
}

/// The refusal of a one-core node on `dir` with the append-only file on.
fn refused_aof_start(dir: &Path, extra: &[&str]) -> String {
    let d = dir.to_str().unwrap();
    let mut args = vec!["--cores", "1", "--dir", d, "--appendonly", "yes"];
    args.extend_from_slice(extra);
    refused_start(&args)
}

#[test]
fn a_torn_last_record_is_dropped_and_reported() {
    let dir = scratch_dir("torn");
    fill_and_stop(&dir, 100);
    let log = newest_log(&dir, 0);
    let len = std::fs::metadata(&log).unwrap().len();
    // Cut the last record in half, as a crash in the middle of its write would.
    let f = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
    f.set_len(len - 10).unwrap();
    drop(f);
    let s = start(&dir, 1, &[]);
    let mut raw = s.raw();
    assert_eq!(raw.cmd(&["DBSIZE"]), Resp::Int(99));
    assert_eq!(raw.cmd(&["GET", "k98"]), Resp::bulk("v98"));
    assert_eq!(raw.cmd(&["EXISTS", "k99"]), Resp::Int(0));
    assert!(
        s.log_text().contains("torn last record"),
        "{}",
        s.log_text()
    );
    // The file was cut back to its good length: it loads cleanly from now on, and the
    // node keeps logging.
    assert_eq!(raw.cmd(&["SET", "after", "1"]), Resp::ok());
    drop(raw);
    drop(s);
    let s = start(&dir, 1, &[]);
    let mut raw = s.raw();
    assert_eq!(raw.cmd(&["DBSIZE"]), Resp::Int(100));
    assert!(!s.log_text().contains("torn"));
}

#[test]
fn damage_before_the_end_stops_start_up_unless_truncation_is_allowed() {
    let dir = scratch_dir("damaged");
    fill_and_stop(&dir, 100);
    let log = newest_log(&dir, 0);
    let mut bytes = std::fs::read(&log).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&log, &bytes).unwrap();
    let err = refused_aof_start(&dir, &[]);
    assert!(err.contains("damaged at byte"), "{err}");
    assert!(err.contains("aof-load-truncated"), "{err}");
    let s = start(&dir, 1, &["--aof-load-truncated", "yes"]);
    let mut raw = s.raw();
    let n = match raw.cmd(&["DBSIZE"]) {
        Resp::Int(n) => n,
        other => panic!("{other:?}"),
    };
    assert!(n > 30 && n < 70, "{n} keys loaded");
    assert_eq!(raw.cmd(&["GET", "k0"]), Resp::bulk("v0"));
    assert!(
        s.log_text().contains("dropped the rest"),
        "{}",
        s.log_text()
    );
}

/// 20,000 SETs over 500 keys (k0..k499 = <prefix><i>): the log grows, the data does not.
fn overwrite(raw: &mut Raw, prefix: &str) {
    raw.pipeline(
        0..20_000,
        |i| {
            encode_cmd(&[
                b"SET",
                format!("k{}", i % 500).as_bytes(),
                format!("{prefix}{i}").as_bytes(),
            ])
        },
        |_, r| assert_eq!(r, Resp::ok()),
    );
}

#[test]
fn rewrites_compact_the_files_and_load_back_the_same_data() {
    let dir = scratch_dir("rewrite");
    {
        let s = start(&dir, 2, &[]);
        let mut raw = s.raw();
        wait_rewrites(&mut raw, 2);
        assert_eq!(raw.info("aof_enabled"), "1");
        overwrite(&mut raw, "v");
        assert_eq!(raw.cmd(&["EXPIRE", "k1", "1000"]), Resp::Int(1));
        let before = raw.info_int("aof_current_size");
        assert_eq!(
            raw.cmd(&["BGREWRITEAOF"]),
            Resp::Simple("Background append only file rewriting started".into())
        );
        wait_rewrites(&mut raw, 4);
        let after = raw.info_int("aof_current_size");
        assert!(after * 4 < before, "{before} bytes before, {after} after");
        assert_eq!(raw.info("aof_last_bgrewrite_status"), "ok");
        // Automatic: past 100% growth over the base and the minimum size.
        assert_eq!(
            raw.cmd(&["CONFIG", "SET", "auto-aof-rewrite-min-size", "100kb"]),
            Resp::ok()
        );
        overwrite(&mut raw, "w");
        assert_eq!(raw.cmd(&["DEL", "k2"]), Resp::Int(1));
        assert_eq!(raw.cmd(&["EXPIRE", "k1", "1000"]), Resp::Int(1));
        wait_rewrites(&mut raw, 5);
        assert!(
            s.log_text().contains("automatic rewriting"),
            "{}",
            s.log_text()
        );
        // One base and one log per core are left.
        let mut names: Vec<String> = std::fs::read_dir(dir.join("appendonlydir"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert!(names.len() <= 6, "{names:?}");
    }
    let s = start(&dir, 2, &[]);
    let mut raw = s.raw();
    assert_eq!(raw.cmd(&["DBSIZE"]), Resp::Int(499));
    assert_eq!(raw.cmd(&["GET", "k3"]), Resp::bulk("w19503"));
    assert!(matches!(raw.cmd(&["TTL", "k1"]), Resp::Int(t) if t > 900));
    assert_eq!(raw.cmd(&["EXISTS", "k2"]), Resp::Int(0));
    // Another number of cores is refused with what to do.
    drop(raw);
    drop(s);
    let err = refused_aof_start(&dir, &[]);
    assert!(err.contains("start this one with --cores 2"), "{err}");
}

#[test]
fn appendonly_turned_on_at_run_time_logs_the_data_already_there() {
    let dir = scratch_dir("turn-on");
    {
        let s = Server::start(2, &["--dir", dir.to_str().unwrap()]);
        let mut raw = s.raw();
        raw.pipeline(
            0..1000,
            |i| encode_cmd(&[b"SET", format!("k{i}").as_bytes(), b"x"]),
            |_, r| assert_eq!(r, Resp::ok()),
        );
        assert_eq!(raw.info("aof_enabled"), "0");
        assert_eq!(
            raw.cmd(&["BGREWRITEAOF"]),
            Resp::err(
                "ERR Append only file is off: turn it on with CONFIG SET appendonly yes (which rewrites it)"
            )
        );
        assert_eq!(raw.cmd(&["CONFIG", "SET", "appendonly", "yes"]), Resp::ok());
        wait_rewrites(&mut raw, 2);
        assert_eq!(raw.cmd(&["SET", "later", "y"]), Resp::ok());
    }
    let s = start(&dir, 2, &[]);
    let mut raw = s.raw();
    assert_eq!(raw.cmd(&["DBSIZE"]), Resp::Int(1001));
    // Turned off: the manifests go, so a restart does not load a log that stopped.
    assert_eq!(raw.cmd(&["CONFIG", "SET", "appendonly", "no"]), Resp::ok());
    assert_eq!(raw.info("aof_enabled"), "0");
    assert!(!dir.join("appendonlydir/core-0.manifest").exists());
}
