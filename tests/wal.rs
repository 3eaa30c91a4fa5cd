//! Each core's write-ahead ring as INFO shows it: every write, expiry and eviction is a
//! record (kept once something reads the ring, or with `wal-ring-keep yes`); the ring keeps
//! within its configured bounds.

mod common;
use common::*;

#[test]
fn every_change_is_a_record_and_the_ring_keeps_its_bounds() {
    let s = Server::start(1, &["--enable-debug-command", "yes"]);
    let mut raw = s.raw();
    // Nobody reads the ring: changes are counted, not kept.
    assert_eq!(raw.cmd(&["SET", "x", "1"]), Resp::ok());
    assert_eq!(raw.cmd(&["DEL", "x"]), Resp::Int(1));
    assert_eq!(raw.info_int("core0_wal_head"), 2);
    assert_eq!(raw.info_int("core0_wal_records"), 0);
    assert_eq!(raw.info_int("core0_wal_bytes"), 0);
    assert_eq!(
        raw.cmd(&["CONFIG", "SET", "wal-ring-keep", "yes"]),
        Resp::ok()
    );
    assert_eq!(raw.info_int("core0_wal_head"), 2);
    assert_eq!(raw.info_int("core0_wal_tail"), 3);
    assert_eq!(raw.cmd(&["SET", "a", "1"]), Resp::ok());
    assert_eq!(raw.cmd(&["INCR", "a"]), Resp::Int(2));
    assert_eq!(raw.cmd(&["GET", "a"]), Resp::bulk("2")); // a read: no record
    assert_eq!(raw.cmd(&["SET", "b", "x", "PX", "100"]), Resp::ok());
    assert_eq!(raw.cmd(&["EXPIRE", "a", "100"]), Resp::Int(1));
    assert_eq!(raw.cmd(&["DEL", "a"]), Resp::Int(1));
    assert_eq!(raw.cmd(&["DEL", "a"]), Resp::Int(0)); // nothing changed: no record
    assert_eq!(raw.info_int("core0_wal_head"), 7);
    // An expiry is a record too (here a lazy one).
    assert_eq!(raw.cmd(&["DEBUG", "ADVANCE-CLOCK", "1000"]), Resp::ok());
    assert_eq!(raw.cmd(&["GET", "b"]), Resp::Nil);
    assert_eq!(raw.info_int("core0_wal_head"), 8);
    assert_eq!(raw.info_int("core0_wal_records"), 6);
    assert_eq!(raw.info_int("core0_wal_reader_lag"), 0);

    assert_eq!(
        raw.cmd(&["CONFIG", "SET", "wal-ring-entries", "10"]),
        Resp::ok()
    );
    for i in 0..100 {
        raw.cmd(&["SET", &format!("k{i}"), "v"]);
    }
    assert_eq!(raw.info_int("core0_wal_head"), 108);
    assert_eq!(raw.info_int("core0_wal_records"), 10);
    assert_eq!(raw.info_int("core0_wal_tail"), 99);
    assert_eq!(
        raw.cmd(&["CONFIG", "SET", "wal-ring-bytes", "10"]),
        Resp::err("ERR CONFIG SET failed (possibly related to argument 'wal-ring-bytes') - argument must be between 1024 and 9223372036854775807 inclusive")
    );
}
