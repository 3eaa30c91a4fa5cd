//! Replication between two real nodes (`REPLICAOF` / `--replicaof`): full sync from a
//! forkless capture, partial resync from the rings, the replica's refusals, WAIT,
//! `min-replicas-to-write`, promotion with `REPLICAOF NO ONE`, and a primary that survives
//! a replica speaking nonsense. Every wait is bounded by a deadline.

mod common;
use common::*;
use redis::Commands;
use std::io::Read;
use std::time::{Duration, Instant};

const SYNC_DEADLINE: Duration = Duration::from_secs(30);

/// Polls `cond` until it holds or the deadline passes (then fails with `what`).
fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + SYNC_DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn replica_of(primary: &Server, cores: usize, extra: &[&str]) -> Server {
    let target = format!("127.0.0.1 {}", primary.port);
    let mut args = vec!["--replicaof", target.as_str()];
    args.extend_from_slice(extra);
    Server::start(cores, &args)
}

fn wait_link_up(replica: &Server) {
    let mut raw = replica.raw();
    until("the replica's link is up", || {
        raw.info("master_link_status") == "up"
    });
}

/// WAIT until `n` replicas have everything written so far.
fn wait_replicas(primary: &Server, n: i64) {
    let mut c = primary.client();
    let got: i64 = redis::cmd("WAIT").arg(n).arg(20_000).query(&mut c).unwrap();
    assert_eq!(got, n, "WAIT {n} 20000 answered {got}");
}

fn fill(primary: &Server, prefix: &str, n: usize) {
    let mut c = primary.client();
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.set(format!("{prefix}{i}"), format!("v{i}")).ignore();
    }
    pipe.query::<()>(&mut c).unwrap();
}

fn error_text(r: &Resp) -> String {
    match r {
        Resp::Error(e) => e.clone(),
        other => panic!("{other:?} is not an error"),
    }
}

fn dbsize(s: &Server) -> i64 {
    redis::cmd("DBSIZE").query(&mut s.client()).unwrap()
}

#[test]
fn full_sync_then_stream_across_different_core_counts() {
    for (p_cores, r_cores) in [(2, 1), (1, 2)] {
        let primary = Server::with_cores(p_cores);
        fill(&primary, "before:", 2000);
        let mut pc = primary.client();
        let _: () = pc.set_ex("ttl-key", "x", 1000).unwrap();
        let _: () = redis::cmd("SELECT").arg(3).query(&mut pc).unwrap();
        let _: () = pc.set("in-db3", "three").unwrap();
        let _: () = redis::cmd("SELECT").arg(0).query(&mut pc).unwrap();
        let replica = replica_of(&primary, r_cores, &[]);
        wait_link_up(&replica);
        fill(&primary, "after:", 500);
        let _: () = pc.incr("counter", 5).unwrap();
        let _: () = pc.del("before:7").unwrap();
        wait_replicas(&primary, 1);
        let mut rc = replica.client();
        assert_eq!(dbsize(&replica), 2000 + 1 + 500 + 1 - 1);
        let v: Option<String> = rc.get("before:1999").unwrap();
        assert_eq!(v.as_deref(), Some("v1999"));
        let v: Option<String> = rc.get("before:7").unwrap();
        assert_eq!(v, None);
        let v: i64 = rc.get("counter").unwrap();
        assert_eq!(v, 5);
        let ttl: i64 = rc.ttl("ttl-key").unwrap();
        assert!((990..=1000).contains(&ttl), "ttl {ttl}");
        let _: () = redis::cmd("SELECT").arg(3).query(&mut rc).unwrap();
        let v: Option<String> = rc.get("in-db3").unwrap();
        assert_eq!(v.as_deref(), Some("three"));
        // FLUSHDB on a primary shard empties only that shard's keys on the replica, however
        // its cores split them.
        let _: () = redis::cmd("FLUSHDB").query(&mut pc).unwrap();
        let _: () = pc.set("after-flush", 1).unwrap();
        wait_replicas(&primary, 1);
        assert_eq!(dbsize(&replica), 1, "{p_cores} -> {r_cores} cores");
        let mut raw = replica.raw();
        assert_eq!(raw.info("role"), "slave");
        assert_eq!(raw.info("master_sync_in_progress"), "0");
        assert_eq!(
            raw.info("tessera_shard_offsets").split(',').count(),
            p_cores
        );
        let mut praw = primary.raw();
        assert_eq!(praw.info("connected_slaves"), "1");
        assert!(praw.info("slave0").contains("state=online"));
        assert_eq!(praw.info_int("tessera_full_syncs"), 1);
    }
}

#[test]
fn a_replica_refuses_writes_and_answers_role() {
    let primary = Server::with_cores(1);
    let replica = replica_of(&primary, 1, &[]);
    wait_link_up(&replica);
    let mut raw = replica.raw();
    let readonly = err("READONLY You can't write against a read only replica.");
    assert_eq!(raw.cmd(&["SET", "k", "v"]), readonly);
    assert_eq!(raw.cmd(&["FLUSHALL"]), readonly);
    assert_eq!(raw.cmd(&["GET", "k"]), nil());
    // A write queued in MULTI is refused, and EXEC aborts.
    assert_eq!(raw.cmd(&["MULTI"]), ok());
    assert_eq!(raw.cmd(&["INCR", "k"]), readonly);
    assert_eq!(
        raw.cmd(&["EXEC"]),
        err("EXECABORT Transaction discarded because of previous errors.")
    );
    let role = raw.cmd(&["ROLE"]);
    assert_eq!(
        role,
        arr(vec![
            b("slave"),
            b("127.0.0.1"),
            int(primary.port as i64),
            b("connected"),
            int(0),
        ])
    );
    assert!(error_text(&raw.cmd(&["WAIT", "1", "0"]))
        .contains("WAIT cannot be used with replica instances"));
    let mut praw = primary.raw();
    match praw.cmd(&["ROLE"]) {
        Resp::Array(items) => {
            assert_eq!(items[0], b("master"));
            let Resp::Array(replicas) = &items[2] else {
                panic!("{items:?}")
            };
            assert_eq!(replicas.len(), 1);
        }
        other => panic!("ROLE replied {other:?}"),
    }
    assert_eq!(
        praw.cmd(&["REPLICAOF", "127.0.0.1", "0"]),
        err("ERR Invalid master port")
    );
    assert_eq!(
        praw.cmd(&["WAIT", "1", "-1"]),
        err("ERR timeout is negative")
    );
    assert_eq!(
        praw.cmd(&["WAIT", "x", "0"]),
        err("ERR value is not an integer or out of range")
    );
}

#[test]
fn a_reconnecting_replica_resumes_and_one_off_the_ring_syncs_in_full() {
    let primary = Server::with_cores(2);
    let replica = replica_of(&primary, 1, &[]);
    wait_link_up(&replica);
    fill(&primary, "a:", 300);
    wait_replicas(&primary, 1);
    let mut praw = primary.raw();
    // Cut the stream: the replica reconnects and continues from its offsets.
    assert_eq!(praw.cmd(&["CLIENT", "KILL", "TYPE", "replica"]), int(1));
    fill(&primary, "b:", 300);
    wait_replicas(&primary, 1);
    assert_eq!(dbsize(&replica), 600);
    assert_eq!(praw.info_int("tessera_partial_syncs"), 1);
    assert_eq!(praw.info_int("tessera_full_syncs"), 1);
    // With rings of 50 records, 1000 writes while it is away push it off: a full sync.
    assert_eq!(praw.cmd(&["CONFIG", "SET", "wal-ring-entries", "50"]), ok());
    assert_eq!(
        replica.raw().cmd(&["CONFIG", "SET", "repl-timeout", "60"]),
        ok()
    );
    // Stop the replica following, write, and let it follow again from its old offsets.
    let mut rraw = replica.raw();
    assert_eq!(rraw.cmd(&["REPLICAOF", "NO", "ONE"]), ok());
    fill(&primary, "c:", 1000);
    let port = primary.port.to_string();
    assert_eq!(rraw.cmd(&["REPLICAOF", "127.0.0.1", &port]), ok());
    wait_link_up(&replica);
    wait_replicas(&primary, 1);
    assert_eq!(dbsize(&replica), 1600);
    assert_eq!(praw.info_int("tessera_full_syncs"), 2);
}

#[test]
fn replicaof_no_one_promotes_with_the_data() {
    let primary = Server::with_cores(1);
    fill(&primary, "k", 100);
    let replica = replica_of(&primary, 2, &[]);
    wait_link_up(&replica);
    wait_replicas(&primary, 1);
    let mut raw = replica.raw();
    assert_eq!(raw.cmd(&["REPLICAOF", "NO", "ONE"]), ok());
    assert_eq!(raw.info("role"), "master");
    assert_eq!(raw.cmd(&["SET", "k1", "mine"]), ok());
    assert_eq!(raw.cmd(&["DBSIZE"]), int(100));
    // The old primary's later writes no longer arrive.
    let _: () = primary.client().set("k2", "theirs").unwrap();
    assert_eq!(raw.cmd(&["GET", "k1"]), b("mine"));
    assert_eq!(raw.cmd(&["GET", "k2"]), b("v2"));
    // The old primary sees no replica left.
    let mut praw = primary.raw();
    until("the primary drops the replica", || {
        praw.info("connected_slaves") == "0"
    });
    assert_eq!(raw.cmd(&["REPLICAOF", "NO", "ONE"]), ok());
}

#[test]
fn wait_and_min_replicas_to_write() {
    let primary = Server::with_cores(2);
    let mut raw = primary.raw();
    // No replica: WAIT 1 with a timeout answers 0 when it passes; WAIT 0 at once.
    assert_eq!(raw.cmd(&["SET", "a", "1"]), ok());
    assert_eq!(raw.cmd(&["WAIT", "1", "50"]), int(0));
    assert_eq!(raw.cmd(&["WAIT", "0", "0"]), int(0));
    assert_eq!(
        raw.cmd(&["CONFIG", "SET", "min-replicas-to-write", "1"]),
        ok()
    );
    let noreplicas = err("NOREPLICAS Not enough good replicas to write.");
    assert_eq!(raw.cmd(&["SET", "a", "2"]), noreplicas);
    assert_eq!(raw.cmd(&["GET", "a"]), b("1"));
    let replica = replica_of(&primary, 1, &[]);
    wait_link_up(&replica);
    until("the primary counts a good replica", || {
        raw.cmd(&["SET", "a", "3"]) == ok()
    });
    assert_eq!(raw.cmd(&["WAIT", "1", "0"]), int(1));
    assert_eq!(replica.raw().cmd(&["GET", "a"]), b("3"));
    // WAIT inside MULTI does not block.
    assert_eq!(raw.cmd(&["MULTI"]), ok());
    assert_eq!(raw.cmd(&["WAIT", "5", "0"]), Resp::Simple("QUEUED".into()));
    assert_eq!(raw.cmd(&["EXEC"]), arr(vec![int(1)]));
    drop(replica);
    until("the primary refuses writes again", || {
        raw.cmd(&["SET", "a", "4"]) == noreplicas
    });
}

#[test]
fn masterauth_lets_a_replica_into_a_protected_primary() {
    let primary = Server::start(1, &["--requirepass", "sesame"]);
    let replica = Server::start(1, &[]);
    let mut rraw = replica.raw();
    assert_eq!(rraw.cmd(&["CONFIG", "SET", "masterauth", "sesame"]), ok());
    let port = primary.port.to_string();
    assert_eq!(rraw.cmd(&["REPLICAOF", "127.0.0.1", &port]), ok());
    assert_eq!(
        rraw.cmd(&["REPLICAOF", "127.0.0.1", &port]),
        Resp::Simple("OK Already connected to specified master".into())
    );
    wait_link_up(&replica);
    let mut praw = primary.raw();
    assert_eq!(praw.cmd(&["AUTH", "sesame"]), ok());
    assert_eq!(praw.cmd(&["SET", "x", "1"]), ok());
    assert_eq!(praw.cmd(&["WAIT", "1", "20000"]), int(1));
    assert_eq!(rraw.cmd(&["GET", "x"]), b("1"));
}

#[test]
fn bad_replication_input_is_refused_and_the_primary_survives() {
    let primary = Server::with_cores(2);
    let mut raw = primary.raw();
    assert_eq!(raw.cmd(&["SET", "keep", "1"]), ok());
    for (args, want) in [
        (
            vec!["REPLSYNC", "nothex", "-", "1"],
            "ERR invalid replication id",
        ),
        (
            vec!["REPLSYNC", "?", "1,x", "1"],
            "ERR invalid replication offsets",
        ),
        (
            vec!["REPLSYNC", "?", "-", "99999"],
            "ERR invalid listening port",
        ),
    ] {
        assert_eq!(raw.cmd(&args), err(want));
    }
    // A "replica" that acknowledges garbage is cut off; the node serves on.
    let mut fake = primary.raw();
    fake.send(&encode_cmd(&[b"REPLSYNC", b"?", b"-", b"1"]));
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + REPLY_DEADLINE;
    while !got.windows(2).any(|w| w == b"\r\n") {
        assert!(Instant::now() < deadline, "no answer to REPLSYNC");
        let n = fake.stream.read(&mut chunk).expect("read");
        assert!(n > 0, "the primary closed the connection");
        got.extend_from_slice(&chunk[..n]);
    }
    assert!(
        got.starts_with(b"+FULLSYNC "),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    fake.send(&[0xff; 64]);
    assert!(
        fake.is_closed(),
        "the primary kept a replica that sent garbage"
    );
    assert_eq!(raw.cmd(&["GET", "keep"]), b("1"));
    assert_eq!(raw.info("connected_slaves"), "0");
    // PSYNC from a Redis replica is not a command here.
    assert!(error_text(&raw.cmd(&["PSYNC", "?", "-1"])).starts_with("ERR unknown command"));
}

#[test]
fn repl_ack_replicas_holds_replies_until_a_replica_has_the_write() {
    let primary = Server::with_cores(2);
    let mut raw = primary.raw();
    assert_eq!(raw.cmd(&["CONFIG", "SET", "repl-ack-replicas", "1"]), ok());
    assert_eq!(raw.cmd(&["CONFIG", "SET", "repl-ack-timeout", "100"]), ok());
    // No replica: the write is applied but never acknowledged; the connection closes.
    raw.send_cmd(&[b"SET", b"lonely", b"1"]);
    assert!(raw.is_closed(), "a write was acknowledged with no replica");
    let mut raw = primary.raw();
    assert_eq!(raw.info_int("tessera_repl_ack_timeouts"), 1);
    // Reads are answered at once.
    assert_eq!(raw.cmd(&["GET", "lonely"]), b("1"));
    assert_eq!(
        raw.cmd(&["CONFIG", "SET", "repl-ack-timeout", "20000"]),
        ok()
    );
    let replica = replica_of(&primary, 1, &[]);
    wait_link_up(&replica);
    // Each acknowledged write is on the replica when the reply arrives, also in a
    // pipeline and in a transaction.
    let mut rraw = replica.raw();
    for i in 0..50 {
        let v = i.to_string();
        assert_eq!(raw.cmd(&["SET", &format!("k{i}"), &v]), ok());
        assert_eq!(rraw.cmd(&["GET", &format!("k{i}")]), b(&v));
    }
    assert_eq!(raw.cmd(&["MULTI"]), ok());
    assert_eq!(raw.cmd(&["INCR", "n"]), Resp::Simple("QUEUED".into()));
    assert_eq!(raw.cmd(&["EXEC"]), arr(vec![int(1)]));
    assert_eq!(rraw.cmd(&["GET", "n"]), b("1"));
}

#[test]
fn replpause_holds_writes_until_let_go_and_answers_the_heads() {
    let primary = Server::with_cores(2);
    let mut raw = primary.raw();
    assert_eq!(raw.cmd(&["SET", "before", "1"]), ok());
    // Bad input is refused; the connection lives on.
    for bad in [&["REPLPAUSE", "-1"][..], &["REPLPAUSE", "soon"][..]] {
        assert_eq!(
            raw.cmd(bad),
            err("ERR REPLPAUSE wants a pause in milliseconds, 0 or more")
        );
    }
    assert!(error_text(&raw.cmd(&["REPLPAUSE"])).contains("wrong number of arguments"));
    // The answer carries each shard's ring head; they sum to the writes made.
    let heads = match raw.cmd(&["REPLPAUSE", "20000"]) {
        Resp::Simple(line) => line,
        other => panic!("REPLPAUSE answered {other:?}"),
    };
    let sum: u64 = heads
        .strip_prefix("PAUSED ")
        .expect("PAUSED <heads>")
        .split(',')
        .map(|h| h.parse::<u64>().expect("a head"))
        .sum();
    assert_eq!(sum, 1);
    // A write waits; reads go on.
    let mut writer = primary.raw();
    writer.send_cmd(&[b"SET", b"held", b"1"]);
    let mut reader = primary.raw();
    assert_eq!(reader.cmd(&["GET", "before"]), b("1"));
    assert_eq!(reader.cmd(&["GET", "held"]), nil());
    assert_eq!(raw.cmd(&["REPLPAUSE", "0"]), ok());
    assert_eq!(writer.read(), ok());
    assert_eq!(reader.cmd(&["GET", "held"]), b("1"));
    // A replica is not paused.
    let replica = replica_of(&primary, 1, &[]);
    wait_link_up(&replica);
    assert_eq!(
        replica.raw().cmd(&["REPLPAUSE", "100"]),
        err("ERR REPLPAUSE is sent to a primary")
    );
    // Plain CLUSTER FAILOVER needs cluster mode.
    assert_eq!(
        replica.raw().cmd(&["CLUSTER", "FAILOVER"]),
        err("ERR This instance has cluster support disabled")
    );
}

#[test]
fn after_a_promotion_a_sibling_and_the_old_primary_continue_without_a_full_sync() {
    let primary = Server::with_cores(2);
    fill(&primary, "k", 500);
    let a = replica_of(&primary, 1, &[]);
    let sibling = replica_of(&primary, 2, &[]);
    wait_link_up(&a);
    wait_link_up(&sibling);
    wait_replicas(&primary, 2);
    let mut ra = a.raw();
    assert_eq!(ra.cmd(&["REPLICAOF", "NO", "ONE"]), ok());
    // The sibling had all of the old stream, and so had the old primary (nothing written
    // since): both go on from `a`'s rings.
    let here = a.port.to_string();
    for s in [&sibling, &primary] {
        assert_eq!(s.raw().cmd(&["REPLICAOF", "127.0.0.1", &here]), ok());
        wait_link_up(s);
    }
    assert_eq!(ra.info("tessera_partial_syncs"), "2");
    assert_eq!(ra.info("tessera_full_syncs"), "0");
    // And they follow it from there.
    assert_eq!(ra.cmd(&["SET", "k7", "after"]), ok());
    assert_eq!(ra.cmd(&["DEL", "k8"]), int(1));
    assert_eq!(ra.cmd(&["WAIT", "2", "20000"]), int(2));
    for s in [&sibling, &primary] {
        let mut r = s.raw();
        assert_eq!(r.cmd(&["GET", "k7"]), b("after"));
        assert_eq!(r.cmd(&["GET", "k8"]), nil());
        assert_eq!(r.cmd(&["GET", "k9"]), b("v9"));
        assert_eq!(r.cmd(&["DBSIZE"]), int(499));
    }
    // An old primary with a write the promoted replica never had: it is discarded (and
    // counted) by a full sync.
    assert_eq!(primary.raw().cmd(&["REPLICAOF", "NO", "ONE"]), ok());
    let mut rs = sibling.raw();
    assert_eq!(rs.cmd(&["REPLICAOF", "NO", "ONE"]), ok());
    assert_eq!(ra.cmd(&["SET", "lost", "1"]), ok());
    let there = sibling.port.to_string();
    assert_eq!(ra.cmd(&["REPLICAOF", "127.0.0.1", &there]), ok());
    wait_link_up(&a);
    assert_eq!(rs.info("tessera_full_syncs"), "1");
    assert_eq!(rs.info("tessera_replica_records_discarded"), "1");
    assert_eq!(ra.cmd(&["GET", "lost"]), nil());
    assert_eq!(ra.cmd(&["DBSIZE"]), int(499));
    // A replica that is behind, or follows another stream, syncs in full.
    let stranger = Server::with_cores(1);
    fill(&stranger, "s", 3);
    assert_eq!(
        stranger.raw().cmd(&["REPLICAOF", "127.0.0.1", &there]),
        ok()
    );
    wait_link_up(&stranger);
    assert_eq!(rs.info("tessera_full_syncs"), "2");
    assert_eq!(stranger.raw().cmd(&["DBSIZE"]), int(499));
}

#[test]
fn with_tls_replication_a_replica_follows_the_primarys_tls_port() {
    use common::certs::{write, Ca};
    let dir = scratch_dir("repl-tls");
    let ca = Ca::new("replication CA");
    // A name that is not the address dialled: peers are checked by chain only, as Redis.
    let (cert, key) = ca.sign_node(&["tessera-node.invalid"]);
    let cert = write(&dir, "node.crt", &cert);
    let key = write(&dir, "node.key", &key);
    let ca_file = write(&dir, "ca.crt", &ca.cert_pem);
    let tls = free_port().to_string();
    let tls_args = [
        "--tls-cert-file",
        cert.as_str(),
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca_file,
    ];
    let mut primary_args = vec!["--tls-port", tls.as_str()];
    primary_args.extend_from_slice(&tls_args);
    let primary = Server::start(1, &primary_args);
    fill(&primary, "before:", 300);
    let target = format!("127.0.0.1 {tls}");
    let mut replica_args = vec!["--replicaof", target.as_str(), "--tls-replication", "yes"];
    replica_args.extend_from_slice(&tls_args);
    let replica = Server::start(2, &replica_args);
    wait_link_up(&replica);
    fill(&primary, "after:", 300);
    wait_replicas(&primary, 1);
    assert_eq!(dbsize(&replica), 600);
    // The primary serves it on its TLS port.
    let list = primary.raw().cmd(&["CLIENT", "LIST"]);
    let Resp::Bulk(list) = list else {
        panic!("CLIENT LIST answered {list:?}")
    };
    let list = String::from_utf8(list).unwrap();
    assert!(
        list.lines()
            .any(|l| l.contains(&format!("laddr=127.0.0.1:{tls} ")) && l.contains("flags=S")),
        "no replica on the TLS port:\n{list}"
    );
    // A replica that trusts another CA refuses the primary's certificate.
    let rogue = Ca::new("someone else");
    let rogue_file = write(&dir, "rogue.crt", &rogue.cert_pem);
    let distrustful = Server::start(
        1,
        &[
            "--replicaof",
            target.as_str(),
            "--tls-replication",
            "yes",
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &rogue_file,
        ],
    );
    until("the distrustful replica has tried", || {
        distrustful.log_text().contains("TLS handshake")
    });
    assert_eq!(distrustful.raw().info("master_link_status"), "down");
    // A replica that dials the TLS port in plaintext gets nowhere.
    let plain = Server::start(1, &["--replicaof", target.as_str()]);
    let mut raw = plain.raw();
    until("the plaintext replica has tried", || {
        raw.info("master_link_status") == "down" && plain.log_text().contains("replication link")
    });
    assert_eq!(raw.info("master_link_status"), "down");
}
