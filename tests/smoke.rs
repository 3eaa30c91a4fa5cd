//! The node starts, serves a real client on one and on two cores, and shuts down cleanly.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn serves_get_set_with_the_redis_crate_on_two_cores() {
    let server = Server::with_cores(2);
    let mut con = server.client();
    let _: () = redis::cmd("SET")
        .arg("greeting")
        .arg("hello")
        .query(&mut con)
        .unwrap();
    let v: String = redis::cmd("GET").arg("greeting").query(&mut con).unwrap();
    assert_eq!(v, "hello");
    let a = key_on_core(0, 2, "a");
    let b = key_on_core(1, 2, "b");
    let _: () = redis::cmd("MSET")
        .arg(&a)
        .arg("1")
        .arg(&b)
        .arg("2")
        .query(&mut con)
        .unwrap();
    let got: Vec<String> = redis::cmd("MGET").arg(&a).arg(&b).query(&mut con).unwrap();
    assert_eq!(got, vec!["1", "2"]);
}

#[test]
fn shutdown_command_exits_zero() {
    let mut server = Server::with_cores(2);
    let mut raw = server.raw();
    raw.send_cmd(&[b"SHUTDOWN", b"NOSAVE"]);
    assert!(raw.is_closed());
    let status = server.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "{status}");
}

#[test]
fn sigterm_exits_zero() {
    let mut server = Server::with_cores(2);
    unsafe { libc::kill(server.pid() as i32, libc::SIGTERM) };
    let status = server.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "{status}");
}
