//! Snapshots against the real binary: SAVE and SHUTDOWN SAVE write `dir/dbfilename`, a
//! restarted node (with the same or another number of cores) has every key back with its
//! value, type of encoding and expiry; a damaged or cut file stops start-up with a clear
//! error instead of loading part of it.

mod common;
use common::*;
use std::path::Path;
use std::time::Duration;

fn start_in(dir: &Path, cores: usize) -> Server {
    Server::start(cores, &["--dir", dir.to_str().unwrap()])
}

/// Writes a mix of keys in databases 0 and 3: integers, strings, appended (raw) strings,
/// keys with a TTL. Returns what each database should hold: key → (GET reply, PEXPIRETIME).
fn fill(raw: &mut Raw, n: usize) -> Vec<Vec<(String, Resp, i64)>> {
    let mut want = vec![Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for db in [0usize, 3] {
        assert_eq!(raw.cmd(&["SELECT", &db.to_string()]), Resp::ok());
        let mut buf = Vec::new();
        for i in 0..n {
            let key = format!("key:{db}:{i}");
            match i % 4 {
                0 => buf.extend(encode_cmd(&[
                    b"SET",
                    key.as_bytes(),
                    i.to_string().as_bytes(),
                ])),
                1 => buf.extend(encode_cmd(&[
                    b"SET",
                    key.as_bytes(),
                    format!("value-{i}").as_bytes(),
                ])),
                2 => {
                    buf.extend(encode_cmd(&[b"SET", key.as_bytes(), b"head"]));
                    buf.extend(encode_cmd(&[b"APPEND", key.as_bytes(), b"-tail"]));
                }
                _ => buf.extend(encode_cmd(&[
                    b"SET",
                    key.as_bytes(),
                    b"ttl",
                    b"EXAT",
                    b"4102444800",
                ])),
            }
        }
        raw.send(&buf);
        let replies = n + n.div_ceil(4);
        for _ in 0..replies {
            let r = raw.read();
            assert!(matches!(r, Resp::Simple(_) | Resp::Int(_)), "{r:?}");
        }
        for i in 0..n {
            let key = format!("key:{db}:{i}");
            let (value, at) = match i % 4 {
                0 => (Resp::bulk(&i.to_string()), -1),
                1 => (Resp::bulk(&format!("value-{i}")), -1),
                2 => (Resp::bulk("head-tail"), -1),
                _ => (Resp::bulk("ttl"), 4_102_444_800_000),
            };
            want[db].push((key, value, at));
        }
    }
    assert_eq!(raw.cmd(&["SELECT", "0"]), Resp::ok());
    want
}

fn check(raw: &mut Raw, want: &[Vec<(String, Resp, i64)>]) {
    for (db, keys) in want.iter().enumerate() {
        assert_eq!(raw.cmd(&["SELECT", &db.to_string()]), Resp::ok());
        assert_eq!(
            raw.cmd(&["DBSIZE"]),
            Resp::Int(keys.len() as i64),
            "db {db}"
        );
        for (key, value, at) in keys {
            assert_eq!(&raw.cmd(&["GET", key]), value, "{key}");
            assert_eq!(raw.cmd(&["PEXPIRETIME", key]), Resp::Int(*at), "{key}");
        }
    }
    assert_eq!(raw.cmd(&["SELECT", "0"]), Resp::ok());
}

#[test]
fn a_snapshot_loads_into_any_number_of_cores() {
    let dir = scratch_dir("snap-cores");
    let want = {
        let s = start_in(&dir, 2);
        let mut raw = s.raw();
        let want = fill(&mut raw, 3000);
        assert_ne!(raw.info("rdb_changes_since_last_save"), "0");
        let before = match raw.cmd(&["LASTSAVE"]) {
            Resp::Int(t) => t,
            other => panic!("{other:?}"),
        };
        assert_eq!(raw.cmd(&["SAVE"]), Resp::ok());
        assert!(matches!(raw.cmd(&["LASTSAVE"]), Resp::Int(t) if t >= before));
        assert_eq!(raw.info("rdb_changes_since_last_save"), "0");
        assert_eq!(raw.info("rdb_last_bgsave_status"), "ok");
        // Changes after the SAVE are not in the file.
        assert_eq!(raw.cmd(&["SET", "after-save", "x"]), Resp::ok());
        assert_eq!(raw.info("rdb_changes_since_last_save"), "1");
        want
    };
    assert!(dir.join("dump.tsnap").exists());
    for cores in [1, 2] {
        let s = start_in(&dir, cores);
        let mut raw = s.raw();
        check(&mut raw, &want);
        assert_eq!(raw.cmd(&["EXISTS", "after-save"]), Resp::Int(0));
        assert_eq!(
            raw.cmd(&["OBJECT", "ENCODING", "key:0:0"]),
            Resp::bulk("int")
        );
        assert_eq!(
            raw.cmd(&["OBJECT", "ENCODING", "key:0:2"]),
            Resp::bulk("raw")
        );
        assert_eq!(raw.info("rdb_changes_since_last_save"), "0");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shutdown_save_writes_and_nosave_does_not() {
    let dir = scratch_dir("snap-shutdown");
    {
        let mut s = start_in(&dir, 2);
        let mut raw = s.raw();
        assert_eq!(raw.cmd(&["SET", "kept", "1"]), Resp::ok());
        raw.send_cmd(&[b"SHUTDOWN", b"SAVE"]);
        assert!(s
            .wait_exit(Duration::from_secs(10))
            .is_some_and(|st| st.success()));
    }
    {
        let mut s = start_in(&dir, 1);
        let mut raw = s.raw();
        assert_eq!(raw.cmd(&["GET", "kept"]), Resp::bulk("1"));
        assert_eq!(raw.cmd(&["SET", "lost", "1"]), Resp::ok());
        raw.send_cmd(&[b"SHUTDOWN", b"NOSAVE"]);
        assert!(s.wait_exit(Duration::from_secs(10)).is_some());
    }
    let s = start_in(&dir, 1);
    let mut raw = s.raw();
    assert_eq!(raw.cmd(&["EXISTS", "kept", "lost"]), Resp::Int(1));
    let mut c = Check::new(&s);
    c.table(&[
        ("CONFIG SET dbfilename sub/dump", err("ERR CONFIG SET failed (possibly related to argument 'dbfilename') - dbfilename can't be a path, just a filename")),
        ("CONFIG SET dbfilename other.tsnap", ok()),
        ("CONFIG GET dbfilename", arr(vec![b("dbfilename"), b("other.tsnap")])),
        ("SAVE", ok()),
        ("MULTI", ok()),
        ("SAVE", err("ERR Command not allowed inside a transaction")),
        ("DISCARD", ok()),
    ]);
    c.finish();
    assert!(dir.join("other.tsnap").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_damaged_or_cut_snapshot_stops_start_up() {
    let dir = scratch_dir("snap-damaged");
    {
        let s = start_in(&dir, 1);
        let mut raw = s.raw();
        fill(&mut raw, 200);
        assert_eq!(raw.cmd(&["SAVE"]), Resp::ok());
    }
    let path = dir.join("dump.tsnap");
    let good = std::fs::read(&path).unwrap();

    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    std::fs::write(&path, &flipped).unwrap();
    let msg = refused_start(&["--cores", "1", "--dir", dir.to_str().unwrap()]);
    assert!(msg.contains("damaged at byte"), "{msg}");
    assert!(msg.contains("dump.tsnap"), "{msg}");

    std::fs::write(&path, &good[..good.len() - 10]).unwrap();
    let msg = refused_start(&["--cores", "1", "--dir", dir.to_str().unwrap()]);
    assert!(msg.contains("cut short"), "{msg}");

    std::fs::write(&path, b"REDIS0011 not ours").unwrap();
    let msg = refused_start(&["--cores", "1", "--dir", dir.to_str().unwrap()]);
    assert!(msg.contains("not a tessera snapshot"), "{msg}");

    // The intact file loads again.
    std::fs::write(&path, &good).unwrap();
    let s = start_in(&dir, 1);
    assert_eq!(s.raw().cmd(&["DBSIZE"]), Resp::Int(200));
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failed_save_is_an_error_and_shutdown_save_refuses_to_stop() {
    let dir = scratch_dir("snap-failing");
    let mut s = start_in(&dir, 2);
    let mut raw = s.raw();
    assert_eq!(raw.cmd(&["SET", "k", "v"]), Resp::ok());
    std::fs::remove_dir_all(&dir).unwrap();
    match raw.cmd(&["SAVE"]) {
        Resp::Error(e) => assert!(e.starts_with("ERR cannot write"), "{e}"),
        other => panic!("SAVE into a missing directory replied {other:?}"),
    }
    assert_eq!(
        raw.cmd(&["SHUTDOWN", "SAVE"]),
        Resp::err("ERR Errors trying to SHUTDOWN. Check logs.")
    );
    assert_eq!(raw.cmd(&["GET", "k"]), Resp::bulk("v"), "still serving");
    raw.send_cmd(&[b"SHUTDOWN", b"SAVE", b"FORCE"]);
    assert!(s
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|st| st.success()));
}

/// Waits for the running background save to end (bounded); returns its status.
fn wait_bgsave(raw: &mut Raw) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while raw.info("rdb_bgsave_in_progress") == "1" {
        assert!(
            std::time::Instant::now() < deadline,
            "BGSAVE did not end within 120 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    raw.info("rdb_last_bgsave_status")
}

/// The check: a million keys saved by BGSAVE while a client goes on overwriting,
/// deleting and adding keys; the file, loaded into a node with another number of cores,
/// holds every key as it was when BGSAVE answered, with its TTL, and none of the later
/// changes.
#[test]
fn bgsave_of_a_million_keys_under_writes_is_the_data_at_its_start() {
    const N: usize = 1_000_000;
    let dir = scratch_dir("bgsave-1m");
    let ttl_base: u64 = 4_102_444_800_000;
    let value = |i: usize| format!("v{i}");
    let expiry = |i: usize| (i % 3 == 0).then(|| ttl_base + i as u64);
    {
        let s = Server::start(2, &["--dir", dir.to_str().unwrap(), "--save", ""]);
        let mut raw = s.raw();
        raw.pipeline(
            0..N,
            |i| {
                let (k, v) = (format!("k{i}"), value(i));
                match expiry(i) {
                    Some(at) => encode_cmd(&[
                        b"SET",
                        k.as_bytes(),
                        v.as_bytes(),
                        b"PXAT",
                        at.to_string().as_bytes(),
                    ]),
                    None => encode_cmd(&[b"SET", k.as_bytes(), v.as_bytes()]),
                }
            },
            |i, r| assert_eq!(r, Resp::ok(), "SET k{i}"),
        );
        // Slow the save down (Redis's test hook) so the writes below surely overlap it.
        assert_eq!(
            raw.cmd(&["CONFIG", "SET", "rdb-key-save-delay", "50"]),
            Resp::ok()
        );
        assert_eq!(
            raw.cmd(&["BGSAVE"]),
            Resp::Simple("Background saving started".into())
        );
        assert_eq!(
            raw.cmd(&["BGSAVE"]),
            Resp::err("ERR Background save already in progress")
        );
        assert_eq!(
            raw.cmd(&["SAVE"]),
            Resp::err("ERR Background save already in progress")
        );
        // From the top down, so most changes reach keys the walk has not written yet.
        raw.pipeline(
            (0..N).rev().filter(|i| i % 5 < 2),
            |i| {
                let k = format!("k{i}");
                if i % 5 == 0 {
                    encode_cmd(&[b"SET", k.as_bytes(), b"changed"])
                } else {
                    encode_cmd(&[b"DEL", k.as_bytes()])
                }
            },
            |_, r| assert!(matches!(r, Resp::Simple(_) | Resp::Int(1)), "{r:?}"),
        );
        raw.pipeline(
            0..50_000,
            |i| encode_cmd(&[b"SET", format!("new{i}").as_bytes(), b"x"]),
            |_, r| assert_eq!(r, Resp::ok()),
        );
        assert_eq!(
            raw.info("rdb_bgsave_in_progress"),
            "1",
            "the writes did not overlap the save"
        );
        assert!(raw.info_int("current_save_keys_total") >= N as i64);
        // The rest of the save at full speed.
        assert_eq!(
            raw.cmd(&["CONFIG", "SET", "rdb-key-save-delay", "0"]),
            Resp::ok()
        );
        assert_eq!(wait_bgsave(&mut raw), "ok");
        assert_eq!(raw.info("rdb_saves"), "1");
        assert!(raw.info_int("rdb_last_bgsave_time_sec") >= 0);
        // rdb_changes_since_last_save counts what changed after the image was taken.
        assert_eq!(
            raw.info_int("rdb_changes_since_last_save"),
            (N / 5 * 2 + 50_000) as i64
        );
    }
    // A debug build loads a million keys in about 10 s, longer on a busy machine.
    let s = Server::start_loading(
        1,
        &["--dir", dir.to_str().unwrap()],
        Duration::from_secs(180),
    );
    let mut raw = s.raw();
    assert_eq!(raw.cmd(&["DBSIZE"]), Resp::Int(N as i64));
    raw.pipeline(
        0..N,
        |i| encode_cmd(&[b"GET", format!("k{i}").as_bytes()]),
        |i, r| assert_eq!(r, Resp::bulk(&value(i)), "k{i}"),
    );
    raw.pipeline(
        0..N,
        |i| encode_cmd(&[b"PEXPIRETIME", format!("k{i}").as_bytes()]),
        |i, r| {
            let want = expiry(i).map_or(-1, |at| at as i64);
            assert_eq!(r, Resp::Int(want), "PEXPIRETIME k{i}");
        },
    );
    assert_eq!(raw.cmd(&["EXISTS", "new0", "new49999"]), Resp::Int(0));
}

/// `save <seconds> <changes>`: once enough changes have been made and enough time has
/// passed (the server's clock moved on with DEBUG ADVANCE-CLOCK), a background save starts
/// by itself; bad rules are refused with Redis's text.
#[test]
fn save_rules_start_a_background_save() {
    let dir = scratch_dir("save-rules");
    let s = Server::start(
        2,
        &[
            "--dir",
            dir.to_str().unwrap(),
            "--enable-debug-command",
            "yes",
        ],
    );
    let mut raw = s.raw();
    assert_eq!(
        raw.cmd(&["CONFIG", "SET", "save", "1 2 3"]),
        Resp::err(
            "ERR CONFIG SET failed (possibly related to argument 'save') - Invalid save parameters"
        )
    );
    assert_eq!(raw.cmd(&["CONFIG", "SET", "save", "10 3"]), Resp::ok());
    assert_eq!(raw.cmd(&["CONFIG", "SET", "hz", "100"]), Resp::ok());
    for k in ["a", "b"] {
        assert_eq!(raw.cmd(&["SET", k, "1"]), Resp::ok());
    }
    assert_eq!(raw.cmd(&["DEBUG", "ADVANCE-CLOCK", "11000"]), Resp::ok());
    // Two changes are not enough, however long ago the last save was: the ticks (100 a
    // second) that pass during these INFO round trips start nothing.
    for _ in 0..20 {
        assert_eq!(raw.info("rdb_saves"), "0");
    }
    assert_eq!(raw.cmd(&["SET", "c", "1"]), Resp::ok());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while raw.info("rdb_saves") == "0" {
        assert!(
            std::time::Instant::now() < deadline,
            "the save rule did not fire"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(wait_bgsave(&mut raw), "ok");
    assert_eq!(raw.info("rdb_changes_since_last_save"), "0");
    assert!(dir.join("dump.tsnap").exists());
    assert!(s.log_text().contains("3 changes in"), "{}", s.log_text());
}

/// BGSAVE's errors: a bad argument, and a directory that is gone (the status turns `err`,
/// the partial file is removed, the node goes on serving, and a later BGSAVE works again).
#[test]
fn a_failed_bgsave_is_reported_and_the_node_serves_on() {
    let dir = scratch_dir("bgsave-fail");
    let s = Server::start(2, &["--dir", dir.to_str().unwrap(), "--save", ""]);
    let mut raw = s.raw();
    assert_eq!(raw.cmd(&["BGSAVE", "NOW"]), Resp::err("ERR syntax error"));
    for i in 0..1000 {
        assert_eq!(raw.cmd(&["SET", &format!("k{i}"), "v"]), Resp::ok());
    }
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        raw.cmd(&["BGSAVE"]),
        Resp::Simple("Background saving started".into())
    );
    assert_eq!(wait_bgsave(&mut raw), "err");
    assert_eq!(raw.info("rdb_saves"), "0");
    assert_eq!(raw.cmd(&["GET", "k1"]), Resp::bulk("v"));
    assert!(s.log_text().contains("Background saving error"));
    std::fs::create_dir_all(&dir).unwrap();
    assert_eq!(
        raw.cmd(&["BGSAVE", "SCHEDULE"]),
        Resp::Simple("Background saving started".into())
    );
    assert_eq!(wait_bgsave(&mut raw), "ok");
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["dump.tsnap".to_string()]);
}
