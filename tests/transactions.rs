//! MULTI/EXEC/DISCARD/WATCH/UNWATCH as Redis 7 has them, on one core and across two, and
//! the atomicity a transaction or a multi-key command promises while others run.

mod common;
use common::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn ok() -> Resp {
    Resp::ok()
}

fn queued() -> Resp {
    Resp::Simple("QUEUED".into())
}

fn int(n: i64) -> Resp {
    Resp::Int(n)
}

fn bulk(s: &str) -> Resp {
    Resp::bulk(s)
}

fn arr(items: Vec<Resp>) -> Resp {
    Resp::Array(items)
}

const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";

/// Two keys for a test: on different cores of a 2-core node (on a 1-core node both are on
/// core 0 anyway).
fn two_keys(prefix: &str) -> (String, String) {
    (
        key_on_core(0, 2, &format!("{prefix}a")),
        key_on_core(1, 2, &format!("{prefix}b")),
    )
}

/// Runs `scenario` against a fresh 1-core and a fresh 2-core node.
fn on_one_and_two_cores(scenario: impl Fn(&Server)) {
    for cores in [1, 2] {
        let server = Server::with_cores(cores);
        scenario(&server);
    }
}

#[test]
fn multi_exec_queues_and_runs_in_order() {
    on_one_and_two_cores(|server| {
        let (a, b) = two_keys("q");
        let mut r = server.raw();
        assert_eq!(r.cmd(&["MULTI"]), ok());
        assert_eq!(r.cmd(&["SET", &a, "1"]), queued());
        assert_eq!(r.cmd(&["INCR", &a]), queued());
        assert_eq!(r.cmd(&["SET", &b, "x"]), queued());
        assert_eq!(r.cmd(&["APPEND", &b, "y"]), queued());
        assert_eq!(r.cmd(&["MGET", &a, &b]), queued());
        assert_eq!(r.cmd(&["MSET", &a, "10", &b, "20"]), queued());
        assert_eq!(r.cmd(&["GET", &a]), queued());
        assert_eq!(r.cmd(&["PING"]), queued());
        // Nothing ran yet.
        let mut other = server.raw();
        assert_eq!(other.cmd(&["EXISTS", &a, &b]), int(0));
        assert_eq!(
            r.cmd(&["EXEC"]),
            arr(vec![
                ok(),
                int(2),
                ok(),
                int(2),
                arr(vec![bulk("2"), bulk("xy")]),
                ok(),
                bulk("10"),
                Resp::Simple("PONG".into()),
            ])
        );
        assert_eq!(
            other.cmd(&["MGET", &a, &b]),
            arr(vec![bulk("10"), bulk("20")])
        );
        // An empty transaction is an empty array.
        assert_eq!(r.cmd(&["MULTI"]), ok());
        assert_eq!(r.cmd(&["EXEC"]), arr(vec![]));
        // After EXEC the connection is out of MULTI.
        assert_eq!(r.cmd(&["GET", &a]), bulk("10"));
    });
}

#[test]
fn queuing_errors_abort_exec() {
    on_one_and_two_cores(|server| {
        let (a, b) = two_keys("qe");
        let mut r = server.raw();
        assert_eq!(r.cmd(&["SET", &a, "orig"]), ok());
        // Wrong arity.
        assert_eq!(r.cmd(&["MULTI"]), ok());
        assert_eq!(r.cmd(&["SET", &a, "new"]), queued());
        assert_eq!(
            r.cmd(&["GET"]),
            Resp::err("ERR wrong number of arguments for 'get' command")
        );
        assert_eq!(r.cmd(&["SET", &b, "new"]), queued());
        assert_eq!(r.cmd(&["EXEC"]), Resp::err(EXECABORT));
        assert_eq!(r.cmd(&["MGET", &a, &b]), arr(vec![bulk("orig"), Resp::Nil]));
        // Unknown command.
        assert_eq!(r.cmd(&["MULTI"]), ok());
        assert_eq!(r.cmd(&["SET", &a, "new"]), queued());
        assert_eq!(
            r.cmd(&["FOO", "x"]),
            Resp::err("ERR unknown command 'FOO', with args beginning with: 'x' ")
        );
        assert_eq!(r.cmd(&["EXEC"]), Resp::err(EXECABORT));
        assert_eq!(r.cmd(&["GET", &a]), bulk("orig"));
        // WATCH with no key is an arity error too, and aborts.
        assert_eq!(r.cmd(&["MULTI"]), ok());
        assert_eq!(
            r.cmd(&["WATCH"]),
            Resp::err("ERR wrong number of arguments for 'watch' command")
        );
        assert_eq!(r.cmd(&["EXEC"]), Resp::err(EXECABORT));
        // The connection is out of MULTI after the abort.
        assert_eq!(r.cmd(&["EXEC"]), Resp::err("ERR EXEC without MULTI"));
    });
}

#[test]
fn runtime_errors_inside_exec_do_not_abort_the_rest() {
    on_one_and_two_cores(|server| {
        let (a, b) = two_keys("rt");
        let mut r = server.raw();
        assert_eq!(r.cmd(&["SET", &a, "abc"]), ok());
        assert_eq!(r.cmd(&["MULTI"]), ok());
        assert_eq!(r.cmd(&["SET", &b, "1"]), queued());
        assert_eq!(r.cmd(&["INCR", &a]), queued());
        assert_eq!(r.cmd(&["INCR", &b]), queued());
        assert_eq!(r.cmd(&["SET", &a, "x", "BADOPTION"]), queued());
        assert_eq!(r.cmd(&["GET", &b]), queued());
        assert_eq!(
            r.cmd(&["EXEC"]),
            arr(vec![
                ok(),
                Resp::err("ERR value is not an integer or out of range"),
                int(2),
                Resp::err("ERR syntax error"),
                bulk("2"),
            ])
        );
        assert_eq!(r.cmd(&["GET", &a]), bulk("abc"));
    });
}

#[test]
fn nested_multi_and_exec_discard_without_multi() {
    on_one_and_two_cores(|server| {
        let mut r = server.raw();
        assert_eq!(r.cmd(&["EXEC"]), Resp::err("ERR EXEC without MULTI"));
        assert_eq!(r.cmd(&["DISCARD"]), Resp::err("ERR DISCARD without MULTI"));
        assert_eq!(r.cmd(&["MULTI"]), ok());
        assert_eq!(r.cmd(&["SET", "nested", "1"]), queued());
        // A nested MULTI is refused but does not abort the transaction.
        assert_eq!(
            r.cmd(&["MULTI"]),
            Resp::err("ERR MULTI calls can not be nested")
        );
        assert_eq!(r.cmd(&["EXEC"]), arr(vec![ok()]));
        // DISCARD throws the queue away and leaves MULTI.
        assert_eq!(r.cmd(&["MULTI"]), ok());
        assert_eq!(r.cmd(&["SET", "nested", "2"]), queued());
        assert_eq!(r.cmd(&["DISCARD"]), ok());
        assert_eq!(r.cmd(&["EXEC"]), Resp::err("ERR EXEC without MULTI"));
        assert_eq!(r.cmd(&["GET", "nested"]), bulk("1"));
    });
}

#[test]
fn watch_inside_multi_is_an_error_that_does_not_abort() {
    on_one_and_two_cores(|server| {
        let mut r = server.raw();
        assert_eq!(r.cmd(&["MULTI"]), ok());
        assert_eq!(
            r.cmd(&["WATCH", "w"]),
            Resp::err("ERR WATCH inside MULTI is not allowed")
        );
        assert_eq!(r.cmd(&["SET", "w", "1"]), queued());
        assert_eq!(r.cmd(&["EXEC"]), arr(vec![ok()]));
        // UNWATCH inside MULTI is queued like any command.
        assert_eq!(r.cmd(&["MULTI"]), ok());
        assert_eq!(r.cmd(&["UNWATCH"]), queued());
        assert_eq!(r.cmd(&["EXEC"]), arr(vec![ok()]));
    });
}

#[test]
fn watch_then_another_client_modifies_aborts_exec() {
    on_one_and_two_cores(|server| {
        let (a, b) = two_keys("w");
        let mut r = server.raw();
        let mut other = server.raw();
        for (modified, cmd) in [
            (&a, vec!["SET", a.as_str(), "x"]),
            (&b, vec!["SET", b.as_str(), "x"]),
            (&b, vec!["DEL", b.as_str()]),
            (&a, vec!["INCR", a.as_str()]),
            (&b, vec!["EXPIRE", b.as_str(), "100"]),
            (&a, vec!["APPEND", a.as_str(), "z"]),
        ] {
            assert_eq!(r.cmd(&["SET", &a, "1"]), ok());
            assert_eq!(r.cmd(&["SET", &b, "1"]), ok());
            assert_eq!(r.cmd(&["WATCH", &a, &b]), ok());
            other.cmd(&cmd.iter().map(|s| &**s).collect::<Vec<_>>());
            assert_eq!(r.cmd(&["MULTI"]), ok());
            assert_eq!(r.cmd(&["SET", "w-result", modified]), queued());
            assert_eq!(r.cmd(&["EXEC"]), Resp::NilArray, "after {cmd:?}");
            assert_eq!(r.cmd(&["EXISTS", "w-result"]), int(0), "after {cmd:?}");
        }
        // A change between MULTI and EXEC counts too.
        assert_eq!(r.cmd(&["WATCH", &b]), ok());
        assert_eq!(r.cmd(&["MULTI"]), ok());
        assert_eq!(r.cmd(&["GET", &b]), queued());
        assert_eq!(other.cmd(&["SET", &b, "late"]), ok());
        assert_eq!(r.cmd(&["EXEC"]), Resp::NilArray);
        // The client's own change counts too.
        assert_eq!(r.cmd(&["WATCH", &a]), ok());
        assert_eq!(r.cmd(&["SET", &a, "mine"]), ok());
        assert_eq!(r.cmd(&["MULTI"]), ok());
        assert_eq!(r.cmd(&["PING"]), queued());
        assert_eq!(r.cmd(&["EXEC"]), Resp::NilArray);
        // Untouched watched keys (even missing ones) let EXEC run.
        assert_eq!(r.cmd(&["WATCH", &a, &b, "w-missing"]), ok());
        assert_eq!(other.cmd(&["SET", "w-unrelated", "1"]), ok());
        assert_eq!(other.cmd(&["DEL", "w-missing"]), int(0));
        assert_eq!(r.cmd(&["MULTI"]), ok());
        assert_eq!(r.cmd(&["GET", &a]), queued());
        assert_eq!(r.cmd(&["EXEC"]), arr(vec![bulk("mine")]));
    });
}

#[test]
fn watch_is_per_database() {
    on_one_and_two_cores(|server| {
        let mut r = server.raw();
        let mut other = server.raw();
        assert_eq!(r.cmd(&["WATCH", "dbkey"]), ok());
        assert_eq!(other.cmd(&["SELECT", "1"]), ok());
        assert_eq!(other.cmd(&["SET", "dbkey", "1"]), ok());
        assert_eq!(r.cmd(&["MULTI"]), ok());
        assert_eq!(r.cmd(&["PING"]), queued());
        assert_eq!(r.cmd(&["EXEC"]), arr(vec![Resp::Simple("PONG".into())]));
        // Watching in db 1 and changing it there aborts.
        assert_eq!(r.cmd(&["SELECT", "1"]), ok());
        assert_eq!(r.cmd(&["WATCH", "dbkey"]), ok());
        assert_eq!(r.cmd(&["SELECT", "0"]), ok());
        assert_eq!(other.cmd(&["SET", "dbkey", "2"]), ok());
        assert_eq!(r.cmd(&["MULTI"]), ok());
        assert_eq!(r.cmd(&["PING"]), queued());
        assert_eq!(r.cmd(&["EXEC"]), Resp::NilArray);
    });
}

#[test]
fn unwatch_exec_discard_and_abort_all_forget_watches() {
    on_one_and_two_cores(|server| {
        let (a, _) = two_keys("uw");
        let mut r = server.raw();
        let mut other = server.raw();
        let exec_runs = |r: &mut Raw| {
            assert_eq!(r.cmd(&["MULTI"]), ok());
            assert_eq!(r.cmd(&["PING"]), queued());
            assert_eq!(r.cmd(&["EXEC"]), arr(vec![Resp::Simple("PONG".into())]));
        };
        // UNWATCH.
        assert_eq!(r.cmd(&["WATCH", &a]), ok());
        assert_eq!(other.cmd(&["SET", &a, "1"]), ok());
        assert_eq!(r.cmd(&["UNWATCH"]), ok());
        exec_runs(&mut r);
        // A successful EXEC.
        assert_eq!(r.cmd(&["WATCH", &a]), ok());
        exec_runs(&mut r);
        assert_eq!(other.cmd(&["SET", &a, "2"]), ok());
        exec_runs(&mut r);
        // DISCARD.
        assert_eq!(r.cmd(&["WATCH", &a]), ok());
        assert_eq!(r.cmd(&["MULTI"]), ok());
        assert_eq!(r.cmd(&["DISCARD"]), ok());
        assert_eq!(other.cmd(&["SET", &a, "3"]), ok());
        exec_runs(&mut r);
        // An EXEC aborted by a queuing error.
        assert_eq!(r.cmd(&["WATCH", &a]), ok());
        assert_eq!(r.cmd(&["MULTI"]), ok());
        assert!(matches!(r.cmd(&["GET"]), Resp::Error(_)));
        assert_eq!(r.cmd(&["EXEC"]), Resp::err(EXECABORT));
        assert_eq!(other.cmd(&["SET", &a, "4"]), ok());
        exec_runs(&mut r);
        // An EXEC aborted by the watch itself.
        assert_eq!(r.cmd(&["WATCH", &a]), ok());
        assert_eq!(other.cmd(&["SET", &a, "5"]), ok());
        assert_eq!(r.cmd(&["MULTI"]), ok());
        assert_eq!(r.cmd(&["EXEC"]), Resp::NilArray);
        exec_runs(&mut r);
        // RESET.
        assert_eq!(r.cmd(&["WATCH", &a]), ok());
        assert_eq!(other.cmd(&["SET", &a, "6"]), ok());
        assert_eq!(r.cmd(&["RESET"]), Resp::Simple("RESET".into()));
        exec_runs(&mut r);
    });
}

#[test]
fn a_watched_key_that_expires_aborts_exec() {
    let server = Server::start(2, &["--enable-debug-command", "yes"]);
    let (a, b) = two_keys("exp");
    let mut r = server.raw();
    for key in [&a, &b] {
        assert_eq!(r.cmd(&["SET", key, "1", "PX", "1000"]), ok());
        assert_eq!(r.cmd(&["WATCH", key]), ok());
        assert_eq!(r.cmd(&["DEBUG", "ADVANCE-CLOCK", "2000"]), ok());
        assert_eq!(r.cmd(&["MULTI"]), ok());
        assert_eq!(r.cmd(&["INCR", key]), queued());
        assert_eq!(r.cmd(&["EXEC"]), Resp::NilArray, "key {key}");
        assert_eq!(r.cmd(&["EXISTS", key]), int(0));
    }
    // A key that has not reached its time does not abort.
    assert_eq!(r.cmd(&["SET", &a, "1", "PX", "100000"]), ok());
    assert_eq!(r.cmd(&["WATCH", &a]), ok());
    assert_eq!(r.cmd(&["DEBUG", "ADVANCE-CLOCK", "1000"]), ok());
    assert_eq!(r.cmd(&["MULTI"]), ok());
    assert_eq!(r.cmd(&["INCR", &a]), queued());
    assert_eq!(r.cmd(&["EXEC"]), arr(vec![int(2)]));
}

#[test]
fn watching_an_already_expired_key_does_not_abort_exec() {
    // Redis 7: "WATCH stale keys should not fail EXEC" — a key that had expired before WATCH
    // is a missing key, and its (lazy or active) deletion is no change.
    let server = Server::start(2, &["--enable-debug-command", "yes"]);
    let (a, b) = two_keys("stale");
    let mut r = server.raw();
    for key in [&a, &b] {
        assert_eq!(r.cmd(&["SET", key, "1", "PX", "1000"]), ok());
        assert_eq!(r.cmd(&["DEBUG", "ADVANCE-CLOCK", "2000"]), ok());
        assert_eq!(r.cmd(&["WATCH", key]), ok());
        assert_eq!(r.cmd(&["MULTI"]), ok());
        assert_eq!(r.cmd(&["PING"]), queued());
        assert_eq!(
            r.cmd(&["EXEC"]),
            arr(vec![Resp::Simple("PONG".into())]),
            "WATCH of an already expired key {key}"
        );
        // Same when a read deletes the stale key between WATCH and EXEC.
        assert_eq!(r.cmd(&["SET", key, "1", "PX", "1000"]), ok());
        assert_eq!(r.cmd(&["DEBUG", "ADVANCE-CLOCK", "2000"]), ok());
        assert_eq!(r.cmd(&["WATCH", key]), ok());
        assert_eq!(r.cmd(&["GET", key]), Resp::Nil);
        assert_eq!(r.cmd(&["MULTI"]), ok());
        assert_eq!(r.cmd(&["PING"]), queued());
        assert_eq!(
            r.cmd(&["EXEC"]),
            arr(vec![Resp::Simple("PONG".into())]),
            "WATCH of an expired key, then GET, key {key}"
        );
    }
}

#[test]
fn flushall_and_flushdb_abort_exec_watching_existing_keys() {
    on_one_and_two_cores(|server| {
        let (a, b) = two_keys("fl");
        let mut r = server.raw();
        let mut other = server.raw();
        for flush in ["FLUSHALL", "FLUSHDB"] {
            for key in [&a, &b] {
                assert_eq!(r.cmd(&["SET", key, "1"]), ok());
                assert_eq!(r.cmd(&["WATCH", key]), ok());
                assert_eq!(other.cmd(&[flush]), ok());
                assert_eq!(r.cmd(&["MULTI"]), ok());
                assert_eq!(r.cmd(&["PING"]), queued());
                assert_eq!(r.cmd(&["EXEC"]), Resp::NilArray, "{flush} of {key}");
            }
        }
        // FLUSHDB of another database leaves the watch alone.
        assert_eq!(r.cmd(&["SET", &a, "1"]), ok());
        assert_eq!(r.cmd(&["WATCH", &a]), ok());
        assert_eq!(other.cmd(&["SELECT", "1"]), ok());
        assert_eq!(other.cmd(&["FLUSHDB"]), ok());
        assert_eq!(r.cmd(&["MULTI"]), ok());
        assert_eq!(r.cmd(&["PING"]), queued());
        assert_eq!(r.cmd(&["EXEC"]), arr(vec![Resp::Simple("PONG".into())]));
    });
}

#[test]
fn flush_of_a_watched_missing_key_does_not_abort_exec() {
    // Redis 7 touches only the watched keys that the flush actually removed.
    on_one_and_two_cores(|server| {
        let mut r = server.raw();
        let mut other = server.raw();
        for flush in ["FLUSHALL", "FLUSHDB"] {
            assert_eq!(other.cmd(&["SET", "fm-present", "1"]), ok());
            assert_eq!(r.cmd(&["WATCH", "fm-missing"]), ok());
            assert_eq!(other.cmd(&[flush]), ok());
            assert_eq!(r.cmd(&["MULTI"]), ok());
            assert_eq!(r.cmd(&["PING"]), queued());
            assert_eq!(
                r.cmd(&["EXEC"]),
                arr(vec![Resp::Simple("PONG".into())]),
                "{flush} with a watched key that did not exist"
            );
        }
    });
}

#[test]
fn select_inside_multi() {
    on_one_and_two_cores(|server| {
        let (a, b) = two_keys("sel");
        let mut r = server.raw();
        assert_eq!(r.cmd(&["MULTI"]), ok());
        assert_eq!(r.cmd(&["SELECT", "1"]), queued());
        assert_eq!(r.cmd(&["SET", &a, "in1"]), queued());
        assert_eq!(r.cmd(&["SET", &b, "in1"]), queued());
        assert_eq!(r.cmd(&["SELECT", "0"]), queued());
        assert_eq!(r.cmd(&["GET", &a]), queued());
        assert_eq!(r.cmd(&["SELECT", "1"]), queued());
        assert_eq!(r.cmd(&["MGET", &a, &b]), queued());
        assert_eq!(
            r.cmd(&["EXEC"]),
            arr(vec![
                ok(),
                ok(),
                ok(),
                ok(),
                Resp::Nil,
                ok(),
                arr(vec![bulk("in1"), bulk("in1")]),
            ])
        );
        // The SELECT inside the transaction stays in effect after it.
        assert_eq!(r.cmd(&["GET", &a]), bulk("in1"));
        assert_eq!(r.cmd(&["SELECT", "0"]), ok());
        assert_eq!(r.cmd(&["EXISTS", &a, &b]), int(0));
        // A SELECT that fails inside EXEC is a runtime error only.
        assert_eq!(r.cmd(&["MULTI"]), ok());
        assert_eq!(r.cmd(&["SELECT", "99"]), queued());
        assert_eq!(r.cmd(&["PING"]), queued());
        assert_eq!(
            r.cmd(&["EXEC"]),
            arr(vec![
                Resp::err("ERR DB index is out of range"),
                Resp::Simple("PONG".into())
            ])
        );
    });
}

#[test]
fn whole_keyspace_commands_inside_multi() {
    on_one_and_two_cores(|server| {
        let (a, b) = two_keys("ks");
        let mut r = server.raw();
        assert_eq!(r.cmd(&["FLUSHALL"]), ok());
        assert_eq!(r.cmd(&["MSET", &a, "1", &b, "2"]), ok());
        assert_eq!(r.cmd(&["MULTI"]), ok());
        assert_eq!(r.cmd(&["DBSIZE"]), queued());
        assert_eq!(r.cmd(&["DEL", &a, &b]), queued());
        assert_eq!(r.cmd(&["DBSIZE"]), queued());
        assert_eq!(r.cmd(&["MSET", &a, "3", &b, "4"]), queued());
        assert_eq!(r.cmd(&["FLUSHDB"]), queued());
        assert_eq!(r.cmd(&["DBSIZE"]), queued());
        assert_eq!(
            r.cmd(&["EXEC"]),
            arr(vec![int(2), int(2), int(0), ok(), ok(), int(0)])
        );
    });
}

#[test]
fn resp3_aborted_exec_is_a_null() {
    let server = Server::with_cores(2);
    let (a, _) = two_keys("r3");
    let mut r = server.raw();
    let mut other = server.raw();
    assert!(matches!(r.cmd(&["HELLO", "3"]), Resp::Map(_)));
    assert_eq!(r.cmd(&["WATCH", &a]), ok());
    assert_eq!(other.cmd(&["SET", &a, "1"]), ok());
    assert_eq!(r.cmd(&["MULTI"]), ok());
    assert_eq!(r.cmd(&["GET", &a]), queued());
    assert_eq!(r.cmd(&["EXEC"]), Resp::Null);
    assert_eq!(r.cmd(&["MULTI"]), ok());
    assert_eq!(r.cmd(&["GET", "r3-missing"]), queued());
    assert_eq!(r.cmd(&["EXEC"]), arr(vec![Resp::Null]));
}

#[test]
fn quit_and_reset_inside_multi() {
    let server = Server::with_cores(2);
    let mut r = server.raw();
    assert_eq!(r.cmd(&["MULTI"]), ok());
    assert_eq!(r.cmd(&["SET", "qr", "1"]), queued());
    assert_eq!(r.cmd(&["RESET"]), Resp::Simple("RESET".into()));
    assert_eq!(r.cmd(&["EXEC"]), Resp::err("ERR EXEC without MULTI"));
    assert_eq!(r.cmd(&["EXISTS", "qr"]), int(0));
    assert_eq!(r.cmd(&["MULTI"]), ok());
    assert_eq!(r.cmd(&["SET", "qr", "1"]), queued());
    assert_eq!(r.cmd(&["QUIT"]), ok());
    assert!(r.is_closed());
    let mut other = server.raw();
    assert_eq!(other.cmd(&["EXISTS", "qr"]), int(0));
}

#[test]
fn commands_flagged_no_multi_are_refused_while_queuing() {
    // SHUTDOWN carries the no_multi flag: Redis refuses it inside MULTI and aborts EXEC.
    let server = Server::with_cores(2);
    let mut r = server.raw();
    assert_eq!(r.cmd(&["MULTI"]), ok());
    assert_eq!(
        r.cmd(&["SHUTDOWN", "NOSAVE"]),
        Resp::err("ERR Command not allowed inside a transaction")
    );
    assert_eq!(r.cmd(&["EXEC"]), Resp::err(EXECABORT));
    assert_eq!(r.cmd(&["PING"]), Resp::Simple("PONG".into()));
    // The node is still serving new connections.
    let mut other = server.raw();
    assert_eq!(other.cmd(&["PING"]), Resp::Simple("PONG".into()));
}

// ---------------------------------------------------------------------------------------
// With the redis crate: pipelines in MULTI/EXEC, and optimistic locking.

#[test]
fn redis_crate_atomic_pipelines() {
    on_one_and_two_cores(|server| {
        let (a, b) = two_keys("pipe");
        let mut con = server.client();
        let (x, y, both): (i64, i64, Vec<i64>) = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(&a)
            .arg(5)
            .ignore()
            .cmd("INCR")
            .arg(&a)
            .cmd("INCRBY")
            .arg(&b)
            .arg(7)
            .cmd("MGET")
            .arg(&a)
            .arg(&b)
            .query(&mut con)
            .unwrap();
        assert_eq!((x, y, both), (6, 7, vec![6, 7]));
        // A watched key changed by someone else: the pipeline's EXEC is nil.
        let mut other = server.client();
        let _: () = redis::cmd("WATCH").arg(&a).query(&mut con).unwrap();
        let _: () = redis::cmd("SET").arg(&a).arg(0).query(&mut other).unwrap();
        let res: Option<(i64,)> = redis::pipe()
            .atomic()
            .cmd("INCR")
            .arg(&a)
            .query(&mut con)
            .unwrap();
        assert_eq!(res, None);
        // A runtime error comes back as the error of that command.
        let _: () = redis::cmd("SET")
            .arg(&a)
            .arg("text")
            .query(&mut con)
            .unwrap();
        let err = redis::pipe()
            .atomic()
            .cmd("INCR")
            .arg(&a)
            .cmd("INCR")
            .arg(&b)
            .query::<(i64, i64)>(&mut con)
            .unwrap_err();
        assert!(
            err.to_string().contains("not an integer or out of range"),
            "{err}"
        );
        // ...and the other command ran anyway.
        let vb: i64 = redis::cmd("GET").arg(&b).query(&mut con).unwrap();
        assert_eq!(vb, 8);
    });
}

#[test]
fn optimistic_increments_with_watch_under_contention() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 50;
    let server = Server::with_cores(2);
    let (a, b) = two_keys("opt");
    let deadline = Instant::now() + Duration::from_secs(8);
    let retries = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let mut con = server.client();
            let (a, b, retries) = (a.clone(), b.clone(), retries.clone());
            std::thread::spawn(move || {
                for _ in 0..PER_THREAD {
                    let mut attempt = 0;
                    redis::transaction(&mut con, &[&a, &b], |con, pipe| {
                        assert!(Instant::now() < deadline, "out of time");
                        attempt += 1;
                        if attempt > 1 {
                            retries.fetch_add(1, Ordering::Relaxed);
                        }
                        let (va, vb): (Option<i64>, Option<i64>) =
                            redis::cmd("MGET").arg(&a).arg(&b).query(con)?;
                        let (va, vb) = (va.unwrap_or(0), vb.unwrap_or(0));
                        assert_eq!(va, vb, "a WATCHed read saw the keys differ");
                        pipe.cmd("SET")
                            .arg(&a)
                            .arg(va + 1)
                            .ignore()
                            .cmd("SET")
                            .arg(&b)
                            .arg(vb + 1)
                            .ignore()
                            .query::<Option<()>>(con)
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a worker failed");
    }
    let mut con = server.client();
    let got: Vec<i64> = redis::cmd("MGET").arg(&a).arg(&b).query(&mut con).unwrap();
    let n = (THREADS * PER_THREAD) as i64;
    assert_eq!(got, vec![n, n], "every increment applied exactly once");
    eprintln!("{} retries", retries.load(Ordering::Relaxed));
}

// ---------------------------------------------------------------------------------------
// Atomicity under concurrency: nobody sees half of a transaction or of a multi-key write.

#[test]
fn concurrent_transactions_and_msets_are_atomic_across_cores() {
    const WRITER_ITERS: usize = 1500;
    let server = Server::with_cores(2);
    let a = key_on_core(0, 2, "atom-a");
    let b = key_on_core(1, 2, "atom-b");
    {
        let mut con = server.client();
        let _: () = redis::cmd("MSET")
            .arg(&a)
            .arg(0)
            .arg(&b)
            .arg(0)
            .query(&mut con)
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(6);
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));

    // Writers: MULTI; INCR a; INCR b; EXEC — and MSET a v b v.
    let mut writers = Vec::new();
    for w in 0..2 {
        let mut r = server.raw();
        let (a, b) = (a.clone(), b.clone());
        writers.push(std::thread::spawn(move || {
            for i in 0..WRITER_ITERS {
                if Instant::now() >= deadline {
                    break;
                }
                if w == 0 || i % 2 == 0 {
                    r.send(&encode_cmd(&[b"MULTI"]));
                    r.send(&encode_cmd(&[b"INCR", a.as_bytes()]));
                    r.send(&encode_cmd(&[b"INCR", b.as_bytes()]));
                    r.send(&encode_cmd(&[b"EXEC"]));
                    assert_eq!(r.read(), Resp::ok());
                    assert_eq!(r.read(), Resp::Simple("QUEUED".into()));
                    assert_eq!(r.read(), Resp::Simple("QUEUED".into()));
                    match r.read() {
                        Resp::Array(v) => {
                            assert_eq!(v.len(), 2);
                            assert_eq!(v[0], v[1], "EXEC's own INCRs disagree");
                        }
                        other => panic!("EXEC: {other:?}"),
                    }
                } else {
                    let v = (1_000_000 + i * 10).to_string();
                    assert_eq!(r.cmd(&["MSET", &a, &v, &b, &v]), Resp::ok());
                }
            }
        }));
    }
    // Readers: MGET a b, and MULTI; GET a; GET b; EXEC.
    let mut readers = Vec::new();
    for k in 0..2 {
        let mut r = server.raw();
        let (a, b, stop, reads) = (a.clone(), b.clone(), stop.clone(), reads.clone());
        readers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let pair = if k == 0 {
                    r.cmd(&["MGET", &a, &b])
                } else {
                    r.send(&encode_cmd(&[b"MULTI"]));
                    r.send(&encode_cmd(&[b"GET", a.as_bytes()]));
                    r.send(&encode_cmd(&[b"GET", b.as_bytes()]));
                    r.send(&encode_cmd(&[b"EXEC"]));
                    assert_eq!(r.read(), Resp::ok());
                    assert_eq!(r.read(), Resp::Simple("QUEUED".into()));
                    assert_eq!(r.read(), Resp::Simple("QUEUED".into()));
                    r.read()
                };
                match pair {
                    Resp::Array(v) if v.len() == 2 => {
                        assert_eq!(v[0], v[1], "a reader saw the two keys differ")
                    }
                    other => panic!("reader {k}: {other:?}"),
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut failure = None;
    for h in writers {
        if let Err(e) = h.join() {
            failure.get_or_insert(e);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for h in readers {
        if let Err(e) = h.join() {
            failure.get_or_insert(e);
        }
    }
    if let Some(e) = failure {
        std::panic::resume_unwind(e);
    }
    let reads = reads.load(Ordering::Relaxed);
    assert!(reads > 0, "the readers never ran");
    eprintln!("{reads} consistent reads");
    let mut con = server.client();
    let got: Vec<i64> = redis::cmd("MGET").arg(&a).arg(&b).query(&mut con).unwrap();
    assert_eq!(got[0], got[1]);
    assert!(got[0] > 0);
}
