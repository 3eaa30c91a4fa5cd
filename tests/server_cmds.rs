//! Connection and server commands — PING, ECHO, SELECT, AUTH, QUIT, RESET, CLIENT, COMMAND,
//! CONFIG, INFO, TIME, LASTSAVE, DBSIZE — `maxclients`, and the config file, with Redis 7's
//! replies and error texts.

mod common;
use common::*;
use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn ok() -> Resp {
    Resp::ok()
}

fn int(n: i64) -> Resp {
    Resp::Int(n)
}

fn bulk(s: &str) -> Resp {
    Resp::bulk(s)
}

fn simple(s: &str) -> Resp {
    Resp::Simple(s.into())
}

fn arity(cmd: &str) -> Resp {
    Resp::Error(format!("ERR wrong number of arguments for '{cmd}' command"))
}

const NOAUTH: &str = "NOAUTH Authentication required.";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// Text of a bulk or verbatim reply.
fn text(r: &Resp) -> String {
    match r {
        Resp::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
        Resp::Verbatim(s) => s.clone(),
        other => panic!("expected a string reply, got {other:?}"),
    }
}

fn id_of(r: &mut Raw) -> i64 {
    match r.cmd(&["CLIENT", "ID"]) {
        Resp::Int(id) => id,
        other => panic!("CLIENT ID: {other:?}"),
    }
}

/// `name:value` lines of an INFO text.
fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(str::to_string)
}

fn info(r: &mut Raw, section: &str) -> String {
    let reply = if section.is_empty() {
        r.cmd(&["INFO"])
    } else {
        r.cmd(&["INFO", section])
    };
    text(&reply)
}

/// Whether the server closed `raw` (EOF or reset) within `within`.
fn closed_within(raw: &mut Raw, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        raw.stream.set_read_timeout(Some(left)).unwrap();
        match raw.stream.read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Sends each command and compares its reply; returns every mismatch, so one test reports
/// all of them at once.
fn mismatches(r: &mut Raw, cases: &[(Vec<&str>, Resp)]) -> Vec<String> {
    cases
        .iter()
        .filter_map(|(cmd, want)| {
            let got = r.cmd(cmd);
            (got != *want).then(|| format!("{cmd:?}: Redis replies {want:?}, got {got:?}"))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// PING, ECHO, SELECT, QUIT, RESET

#[test]
fn ping_and_echo() {
    let server = Server::with_cores(2);
    let mut r = server.raw();
    assert_eq!(r.cmd(&["PING"]), simple("PONG"));
    assert_eq!(r.cmd(&["ping", "hello world"]), bulk("hello world"));
    assert_eq!(r.cmd(&["PING", "a", "b"]), arity("ping"));
    assert_eq!(r.cmd(&["ECHO", "x y"]), bulk("x y"));
    assert_eq!(r.cmd(&["ECHO", ""]), bulk(""));
    assert_eq!(r.cmd(&["ECHO"]), arity("echo"));
    assert_eq!(r.cmd(&["ECHO", "a", "b"]), arity("echo"));
    r.send_cmd(&[b"ECHO", b"\x00\xff\r\n"]);
    assert_eq!(r.read(), Resp::Bulk(b"\x00\xff\r\n".to_vec()));
    assert!(matches!(r.cmd(&["HELLO", "3"]), Resp::Map(_)));
    assert_eq!(r.cmd(&["PING"]), simple("PONG"));
    assert_eq!(r.cmd(&["PING", "x"]), bulk("x"));
}

#[test]
fn select_switches_databases_and_checks_the_range() {
    let server = Server::with_cores(2);
    let mut r = server.raw();
    let a = key_on_core(0, 2, "sel");
    let b = key_on_core(1, 2, "sel");
    assert_eq!(r.cmd(&["MSET", &a, "db0", &b, "db0"]), ok());
    assert_eq!(r.cmd(&["SELECT", "15"]), ok());
    assert_eq!(
        r.cmd(&["MGET", &a, &b]),
        Resp::Array(vec![Resp::Nil, Resp::Nil])
    );
    assert_eq!(r.cmd(&["MSET", &a, "db15", &b, "db15"]), ok());
    for bad in ["16", "-1", "1000000"] {
        assert_eq!(
            r.cmd(&["SELECT", bad]),
            Resp::err("ERR DB index is out of range"),
            "SELECT {bad}"
        );
    }
    assert_eq!(
        r.cmd(&["SELECT", "x"]),
        Resp::err("ERR value is not an integer or out of range")
    );
    assert_eq!(
        r.cmd(&["SELECT", "1.5"]),
        Resp::err("ERR value is not an integer or out of range")
    );
    assert_eq!(r.cmd(&["SELECT"]), arity("select"));
    assert_eq!(r.cmd(&["SELECT", "1", "2"]), arity("select"));
    // A failed SELECT leaves the database as it was.
    assert_eq!(r.cmd(&["GET", &a]), bulk("db15"));
    assert_eq!(r.cmd(&["SELECT", "0"]), ok());
    assert_eq!(
        r.cmd(&["MGET", &a, &b]),
        Resp::Array(vec![bulk("db0"), bulk("db0")])
    );
    // Another connection starts in db 0.
    let mut other = server.raw();
    assert_eq!(other.cmd(&["GET", &b]), bulk("db0"));

    let small = Server::start(1, &["--databases", "4"]);
    let mut r = small.raw();
    assert_eq!(r.cmd(&["SELECT", "3"]), ok());
    assert_eq!(
        r.cmd(&["SELECT", "4"]),
        Resp::err("ERR DB index is out of range")
    );
}

#[test]
fn quit_replies_ok_and_closes() {
    let server = Server::with_cores(2);
    let mut r = server.raw();
    r.send(b"SET q 1\r\nQUIT\r\nSET q 2\r\n");
    assert_eq!(r.read(), ok());
    assert_eq!(r.read(), ok());
    assert!(closed_within(&mut r, Duration::from_secs(5)));
    let mut r = server.raw();
    assert_eq!(r.cmd(&["QUIT", "extra", "args"]), ok());
    assert!(closed_within(&mut r, Duration::from_secs(5)));
    let mut other = server.raw();
    assert_eq!(other.cmd(&["GET", "q"]), bulk("1"));
}

#[test]
fn reset_restores_the_connection_defaults() {
    let server = Server::with_cores(2);
    let mut r = server.raw();
    let mut other = server.raw();
    let id = id_of(&mut r);
    assert!(matches!(r.cmd(&["HELLO", "3"]), Resp::Map(_)));
    assert_eq!(r.cmd(&["SELECT", "2"]), ok());
    assert_eq!(r.cmd(&["CLIENT", "SETNAME", "before-reset"]), ok());
    assert_eq!(r.cmd(&["WATCH", "rk"]), ok());
    assert_eq!(r.cmd(&["MULTI"]), ok());
    assert_eq!(r.cmd(&["SET", "rk", "1"]), simple("QUEUED"));
    assert_eq!(r.cmd(&["RESET"]), simple("RESET"));
    // Out of MULTI, RESP2, db 0, no name, same id, no watch.
    assert_eq!(r.cmd(&["EXEC"]), Resp::err("ERR EXEC without MULTI"));
    assert_eq!(r.cmd(&["GET", "nokey"]), Resp::Nil);
    assert_eq!(r.cmd(&["CLIENT", "GETNAME"]), Resp::Nil);
    assert_eq!(id_of(&mut r), id);
    let me = text(&r.cmd(&["CLIENT", "INFO"]));
    assert!(me.contains(" db=0 "), "{me}");
    assert!(me.contains(" resp=2"), "{me}");
    assert_eq!(other.cmd(&["SELECT", "2"]), ok());
    assert_eq!(other.cmd(&["EXISTS", "rk"]), int(0));
    assert_eq!(other.cmd(&["SELECT", "0"]), ok());
    assert_eq!(other.cmd(&["SET", "rk", "changed"]), ok());
    assert_eq!(r.cmd(&["MULTI"]), ok());
    assert_eq!(r.cmd(&["GET", "rk"]), simple("QUEUED"));
    assert_eq!(r.cmd(&["EXEC"]), Resp::Array(vec![bulk("changed")]));
}

// ---------------------------------------------------------------------------------------
// AUTH

#[test]
fn auth_with_requirepass() {
    let server = Server::start(2, &["--requirepass", "s3cret"]);
    let mut r = server.raw();
    for cmd in [
        vec!["GET", "k"],
        vec!["SET", "k", "v"],
        vec!["PING"],
        vec!["ECHO", "x"],
        vec!["SELECT", "1"],
        vec!["CLIENT", "ID"],
        vec!["INFO"],
        vec!["MULTI"],
        vec!["DBSIZE"],
    ] {
        assert_eq!(r.cmd(&cmd), Resp::err(NOAUTH), "{cmd:?}");
    }
    assert_eq!(r.cmd(&["AUTH", "wrong"]), Resp::err(WRONGPASS));
    assert_eq!(r.cmd(&["AUTH", "default", "wrong"]), Resp::err(WRONGPASS));
    assert_eq!(r.cmd(&["AUTH", "bob", "s3cret"]), Resp::err(WRONGPASS));
    assert_eq!(
        r.cmd(&["AUTH", "a", "b", "c"]),
        Resp::err("ERR syntax error")
    );
    assert_eq!(r.cmd(&["AUTH"]), arity("auth"));
    assert_eq!(r.cmd(&["GET", "k"]), Resp::err(NOAUTH));
    assert_eq!(r.cmd(&["AUTH", "s3cret"]), ok());
    assert_eq!(r.cmd(&["SET", "k", "v"]), ok());
    assert_eq!(r.cmd(&["PING"]), simple("PONG"));
    // A wrong AUTH later does not log the connection out.
    assert_eq!(r.cmd(&["AUTH", "wrong"]), Resp::err(WRONGPASS));
    assert_eq!(r.cmd(&["GET", "k"]), bulk("v"));

    let mut r2 = server.raw();
    assert_eq!(r2.cmd(&["AUTH", "default", "s3cret"]), ok());
    assert_eq!(r2.cmd(&["GET", "k"]), bulk("v"));

    // QUIT and RESET need no authentication; RESET logs out.
    let mut r3 = server.raw();
    assert_eq!(r3.cmd(&["RESET"]), simple("RESET"));
    assert_eq!(r3.cmd(&["AUTH", "s3cret"]), ok());
    assert_eq!(r3.cmd(&["RESET"]), simple("RESET"));
    assert_eq!(r3.cmd(&["GET", "k"]), Resp::err(NOAUTH));
    assert_eq!(r3.cmd(&["QUIT"]), ok());
    assert!(closed_within(&mut r3, Duration::from_secs(5)));

    // The redis crate authenticates from the URL.
    let client =
        redis::Client::open(format!("redis://:s3cret@127.0.0.1:{}/", server.port)).unwrap();
    let mut con = client
        .get_connection_with_timeout(Duration::from_secs(10))
        .unwrap();
    let v: String = redis::cmd("GET").arg("k").query(&mut con).unwrap();
    assert_eq!(v, "v");
}

#[test]
fn auth_without_requirepass() {
    let server = Server::with_cores(1);
    let mut r = server.raw();
    assert_eq!(
        r.cmd(&["AUTH", "anything"]),
        Resp::err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")
    );
    // The default user has no password: AUTH default <anything> succeeds.
    assert_eq!(r.cmd(&["AUTH", "default", "anything"]), ok());
    assert_eq!(r.cmd(&["AUTH", "bob", "anything"]), Resp::err(WRONGPASS));
    assert_eq!(r.cmd(&["PING"]), simple("PONG"));
}

#[test]
fn requirepass_set_at_runtime_applies_to_new_connections() {
    let server = Server::with_cores(2);
    let mut admin = server.raw();
    assert_eq!(admin.cmd(&["CONFIG", "SET", "requirepass", "later"]), ok());
    assert_eq!(
        admin.cmd(&["CONFIG", "GET", "requirepass"]),
        Resp::Array(vec![bulk("requirepass"), bulk("later")])
    );
    // The connection that set it stays authenticated.
    assert_eq!(admin.cmd(&["PING"]), simple("PONG"));
    let mut r = server.raw();
    assert_eq!(r.cmd(&["PING"]), Resp::err(NOAUTH));
    assert_eq!(r.cmd(&["AUTH", "later"]), ok());
    assert_eq!(r.cmd(&["PING"]), simple("PONG"));
    assert_eq!(admin.cmd(&["CONFIG", "SET", "requirepass", ""]), ok());
    let mut r = server.raw();
    assert_eq!(r.cmd(&["PING"]), simple("PONG"));
}

// ---------------------------------------------------------------------------------------
// CLIENT

#[test]
fn client_id_setname_getname() {
    let server = Server::with_cores(2);
    let mut conns: Vec<Raw> = (0..8).map(|_| server.raw()).collect();
    let mut ids: Vec<i64> = conns.iter_mut().map(id_of).collect();
    assert!(ids.iter().all(|&id| id > 0), "{ids:?}");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 8, "client ids are unique");
    let r = &mut conns[0];
    let id = id_of(r);
    assert_eq!(id_of(r), id, "stable for the connection");
    assert_eq!(r.cmd(&["CLIENT", "GETNAME"]), Resp::Nil);
    assert_eq!(r.cmd(&["CLIENT", "SETNAME", "worker-1"]), ok());
    assert_eq!(r.cmd(&["CLIENT", "GETNAME"]), bulk("worker-1"));
    for bad in ["a b", "a\nb", "tab\there"] {
        assert_eq!(
            r.cmd(&["CLIENT", "SETNAME", bad]),
            Resp::err("ERR Client names cannot contain spaces, newlines or special characters."),
            "{bad:?}"
        );
    }
    assert_eq!(r.cmd(&["CLIENT", "GETNAME"]), bulk("worker-1"));
    assert_eq!(r.cmd(&["CLIENT", "SETNAME", ""]), ok());
    assert_eq!(r.cmd(&["CLIENT", "GETNAME"]), Resp::Nil);
    assert_eq!(r.cmd(&["CLIENT", "ID", "x"]), arity("client|id"));
    assert_eq!(r.cmd(&["CLIENT", "SETNAME"]), arity("client|setname"));
    assert_eq!(
        r.cmd(&["CLIENT", "SETNAME", "a", "b"]),
        arity("client|setname")
    );
    assert_eq!(r.cmd(&["CLIENT", "GETNAME", "x"]), arity("client|getname"));
    assert_eq!(r.cmd(&["CLIENT"]), arity("client"));
    assert_eq!(
        r.cmd(&["CLIENT", "FOO"]),
        Resp::err("ERR unknown subcommand 'FOO'. Try CLIENT HELP.")
    );
}

#[test]
fn client_ids_grow_with_connection_order() {
    // Redis: "It is monotonically incremental. If the ID of a connection is greater than the
    // ID of another connection, it is guaranteed that the second connection was established
    // with the server at a later time."
    let server = Server::with_cores(2);
    let mut last = 0;
    let mut seen = Vec::new();
    for _ in 0..16 {
        let mut r = server.raw();
        let id = id_of(&mut r);
        seen.push(id);
        assert!(id > last, "ids in connection order: {seen:?}");
        last = id;
    }
}

#[test]
fn client_list_and_info() {
    let server = Server::with_cores(2);
    let mut a = server.raw();
    let mut b = server.raw();
    let (ida, idb) = (id_of(&mut a), id_of(&mut b));
    assert_eq!(a.cmd(&["CLIENT", "SETNAME", "alpha"]), ok());
    assert_eq!(b.cmd(&["CLIENT", "SETNAME", "beta"]), ok());
    assert_eq!(b.cmd(&["SELECT", "3"]), ok());
    assert_eq!(b.cmd(&["MULTI"]), ok());
    assert_eq!(b.cmd(&["SET", "x", "1"]), simple("QUEUED"));
    assert_eq!(b.cmd(&["GET", "x"]), simple("QUEUED"));

    let list = text(&a.cmd(&["CLIENT", "LIST"]));
    assert!(list.ends_with('\n'), "{list:?}");
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    let line_of = |id: i64| {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("id={id} ")))
            .unwrap_or_else(|| panic!("no line for id {id}: {list}"))
            .to_string()
    };
    let la = line_of(ida);
    let lb = line_of(idb);
    for field in [
        "id=",
        " addr=",
        " laddr=",
        " fd=",
        " name=",
        " age=",
        " idle=",
        " flags=",
        " db=",
        " sub=",
        " psub=",
        " multi=",
        " qbuf=",
        " obl=",
        " oll=",
        " omem=",
        " events=",
        " cmd=",
        " user=default",
        " resp=",
    ] {
        assert!(la.contains(field), "{field:?} missing in {la}");
    }
    let laddr = format!(" laddr=127.0.0.1:{} ", server.port);
    assert!(la.contains(&laddr), "{la}");
    let addr_a = a.stream.local_addr().unwrap();
    assert!(la.contains(&format!(" addr={addr_a} ")), "{la}");
    assert!(la.contains(" name=alpha "), "{la}");
    assert!(la.contains(" db=0 "), "{la}");
    assert!(la.contains(" flags=N "), "{la}");
    assert!(la.contains(" multi=-1 "), "{la}");
    assert!(lb.contains(" name=beta "), "{lb}");
    assert!(lb.contains(" db=3 "), "{lb}");
    assert!(lb.contains(" flags=x "), "{lb}");
    assert!(lb.contains(" multi=2 "), "{lb}");

    // Filters.
    let only_b = text(&a.cmd(&["CLIENT", "LIST", "ID", &idb.to_string()]));
    assert_eq!(only_b.lines().count(), 1, "{only_b}");
    assert!(only_b.starts_with(&format!("id={idb} ")));
    let both = text(&a.cmd(&["CLIENT", "LIST", "ID", &ida.to_string(), &idb.to_string()]));
    assert_eq!(both.lines().count(), 2, "{both}");
    let normal = text(&a.cmd(&["CLIENT", "LIST", "TYPE", "normal"]));
    assert_eq!(normal.lines().count(), 2, "{normal}");
    assert_eq!(a.cmd(&["CLIENT", "LIST", "TYPE", "pubsub"]), bulk(""));
    assert_eq!(a.cmd(&["CLIENT", "LIST", "ID", "999999"]), bulk(""));
    assert_eq!(
        a.cmd(&["CLIENT", "LIST", "TYPE", "foo"]),
        Resp::err("ERR Unknown client type 'foo'")
    );
    assert_eq!(
        a.cmd(&["CLIENT", "LIST", "ID", "x"]),
        Resp::err("ERR Invalid client ID")
    );
    assert_eq!(
        a.cmd(&["CLIENT", "LIST", "foo"]),
        Resp::err("ERR syntax error")
    );

    // CLIENT INFO: this connection's line.
    let info = text(&a.cmd(&["CLIENT", "INFO"]));
    assert!(info.ends_with('\n'), "{info:?}");
    assert_eq!(info.lines().count(), 1);
    assert!(info.starts_with(&format!("id={ida} ")), "{info}");
    assert!(info.contains(" name=alpha "), "{info}");
    assert_eq!(a.cmd(&["CLIENT", "INFO", "x"]), arity("client|info"));
    // In RESP3 CLIENT LIST and CLIENT INFO are verbatim strings.
    assert!(matches!(a.cmd(&["HELLO", "3"]), Resp::Map(_)));
    assert!(matches!(a.cmd(&["CLIENT", "INFO"]), Resp::Verbatim(_)));
    assert!(matches!(a.cmd(&["CLIENT", "LIST"]), Resp::Verbatim(_)));
}

#[test]
fn client_info_names_the_subcommand_as_cmd() {
    // Redis 7 reports container commands as `cmd=client|info`.
    let server = Server::with_cores(1);
    let mut r = server.raw();
    let info = text(&r.cmd(&["CLIENT", "INFO"]));
    assert!(info.contains(" cmd=client|info "), "{info}");
    let mut other = server.raw();
    assert_eq!(other.cmd(&["SET", "k", "v"]), ok());
    let list = text(&r.cmd(&["CLIENT", "LIST"]));
    assert!(list.contains(" cmd=set "), "{list}");
    assert!(list.contains(" cmd=client|list "), "{list}");
}

#[test]
fn client_kill_old_form_and_filters() {
    let server = Server::with_cores(2);
    let mut killer = server.raw();
    let killer_id = id_of(&mut killer);

    // Old form: CLIENT KILL ip:port. (Each victim first completes a command, so the server
    // has surely registered it.)
    let mut v = server.raw();
    assert_eq!(v.cmd(&["PING"]), simple("PONG"));
    let addr = v.stream.local_addr().unwrap().to_string();
    assert_eq!(killer.cmd(&["CLIENT", "KILL", &addr]), ok());
    assert!(closed_within(&mut v, Duration::from_secs(5)), "old form");
    assert_eq!(
        killer.cmd(&["CLIENT", "KILL", &addr]),
        Resp::err("ERR No such client")
    );
    assert_eq!(
        killer.cmd(&["CLIENT", "KILL", "1.2.3.4:5"]),
        Resp::err("ERR No such client")
    );

    // ID.
    let mut v = server.raw();
    let id = id_of(&mut v);
    assert_eq!(
        killer.cmd(&["CLIENT", "KILL", "ID", &id.to_string()]),
        int(1)
    );
    assert!(closed_within(&mut v, Duration::from_secs(5)), "ID");
    assert_eq!(
        killer.cmd(&["CLIENT", "KILL", "ID", &id.to_string()]),
        int(0)
    );

    // ADDR.
    let mut v = server.raw();
    assert_eq!(v.cmd(&["PING"]), simple("PONG"));
    let addr = v.stream.local_addr().unwrap().to_string();
    assert_eq!(killer.cmd(&["CLIENT", "KILL", "ADDR", &addr]), int(1));
    assert!(closed_within(&mut v, Duration::from_secs(5)), "ADDR");

    // LADDR and USER match everyone but the caller (SKIPME yes by default).
    let mut v1 = server.raw();
    let mut v2 = server.raw();
    assert_eq!(v1.cmd(&["PING"]), simple("PONG"));
    assert_eq!(v2.cmd(&["PING"]), simple("PONG"));
    let laddr = format!("127.0.0.1:{}", server.port);
    assert_eq!(killer.cmd(&["CLIENT", "KILL", "LADDR", &laddr]), int(2));
    assert!(closed_within(&mut v1, Duration::from_secs(5)), "LADDR");
    assert!(closed_within(&mut v2, Duration::from_secs(5)), "LADDR");
    let mut v1 = server.raw();
    assert_eq!(v1.cmd(&["PING"]), simple("PONG"));
    assert_eq!(killer.cmd(&["CLIENT", "KILL", "USER", "default"]), int(1));
    assert!(closed_within(&mut v1, Duration::from_secs(5)), "USER");

    // TYPE normal, several filters at once.
    let mut vs: Vec<Raw> = (0..3).map(|_| server.raw()).collect();
    for v in vs.iter_mut() {
        assert_eq!(v.cmd(&["PING"]), simple("PONG"));
    }
    let vid = id_of(&mut vs[0]);
    assert_eq!(
        killer.cmd(&["CLIENT", "KILL", "TYPE", "normal", "ID", &vid.to_string()]),
        int(1)
    );
    assert!(closed_within(&mut vs[0], Duration::from_secs(5)));
    assert_eq!(vs[1].cmd(&["PING"]), simple("PONG"));
    assert_eq!(killer.cmd(&["CLIENT", "KILL", "TYPE", "normal"]), int(2));
    assert!(closed_within(&mut vs[1], Duration::from_secs(5)));
    assert!(closed_within(&mut vs[2], Duration::from_secs(5)));
    assert_eq!(killer.cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]), int(0));

    // Errors.
    for (args, err) in [
        (vec!["ID", "x"], "ERR client-id should be greater than 0"),
        (vec!["ID", "0"], "ERR client-id should be greater than 0"),
        (vec!["FOO", "bar"], "ERR syntax error"),
        (vec!["ADDR", "1.2.3.4:5", "extra"], "ERR syntax error"),
        (vec!["TYPE", "foo"], "ERR Unknown client type 'foo'"),
        (vec!["SKIPME", "maybe"], "ERR syntax error"),
    ] {
        let mut cmd = vec!["CLIENT", "KILL"];
        cmd.extend(args.iter());
        assert_eq!(killer.cmd(&cmd), Resp::err(err), "{cmd:?}");
    }

    // SKIPME no kills the caller too, after its reply.
    let me = killer_id.to_string();
    assert_eq!(
        killer.cmd(&["CLIENT", "KILL", "ID", &me, "SKIPME", "no"]),
        int(1)
    );
    assert!(closed_within(&mut killer, Duration::from_secs(5)), "self");

    // The old form may name the caller itself: +OK, then closed.
    let mut me = server.raw();
    let addr = me.stream.local_addr().unwrap().to_string();
    assert_eq!(me.cmd(&["CLIENT", "KILL", &addr]), ok());
    assert!(
        closed_within(&mut me, Duration::from_secs(5)),
        "old form, self"
    );
}

#[test]
fn client_setinfo() {
    // CLIENT SETINFO is Redis 7.2's.
    let server = Server::with_cores(1);
    let mut r = server.raw();
    assert_eq!(r.cmd(&["CLIENT", "SETINFO", "lib-name", "mylib"]), ok());
    assert_eq!(r.cmd(&["CLIENT", "SETINFO", "LIB-VER", "1.2.3"]), ok());
    let info = text(&r.cmd(&["CLIENT", "INFO"]));
    assert!(info.contains(" lib-name=mylib"), "{info}");
    assert!(info.contains(" lib-ver=1.2.3"), "{info}");
    assert!(matches!(
        r.cmd(&["CLIENT", "SETINFO", "foo", "x"]),
        Resp::Error(e) if e.starts_with("ERR ")
    ));
    assert!(matches!(
        r.cmd(&["CLIENT", "SETINFO", "lib-name", "a b"]),
        Resp::Error(e) if e.starts_with("ERR ")
    ));
    assert_eq!(
        r.cmd(&["CLIENT", "SETINFO", "lib-name"]),
        arity("client|setinfo")
    );
}

#[test]
fn client_no_evict_and_help() {
    let server = Server::with_cores(1);
    let mut r = server.raw();

    assert_eq!(r.cmd(&["CLIENT", "NO-EVICT", "on"]), ok());
    assert_eq!(r.cmd(&["CLIENT", "NO-EVICT", "OFF"]), ok());
    assert_eq!(
        r.cmd(&["CLIENT", "NO-EVICT", "maybe"]),
        Resp::err("ERR syntax error")
    );
    assert_eq!(r.cmd(&["CLIENT", "NO-EVICT"]), arity("client|no-evict"));

    let Resp::Array(lines) = r.cmd(&["CLIENT", "HELP"]) else {
        panic!("CLIENT HELP is an array");
    };
    assert_eq!(
        lines[0],
        simple("CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:")
    );
    assert!(lines.iter().all(|l| matches!(l, Resp::Simple(_))));
    for sub in ["GETNAME", "ID", "INFO", "SETNAME", "HELP"] {
        assert!(
            lines
                .iter()
                .any(|l| matches!(l, Resp::Simple(s) if s.starts_with(sub))),
            "{sub} missing from CLIENT HELP"
        );
    }
}

// ---------------------------------------------------------------------------------------
// COMMAND

fn command_entry_name(e: &Resp) -> String {
    match e {
        Resp::Array(fields) => text(&fields[0]),
        other => panic!("COMMAND entry: {other:?}"),
    }
}

#[test]
fn command_count_list_and_info() {
    let server = Server::with_cores(1);
    let mut r = server.raw();
    let Resp::Int(count) = r.cmd(&["COMMAND", "COUNT"]) else {
        panic!("COMMAND COUNT is an integer");
    };
    let Resp::Array(all) = r.cmd(&["COMMAND"]) else {
        panic!("COMMAND is an array");
    };
    assert_eq!(all.len() as i64, count);
    let mut names: Vec<String> = all.iter().map(command_entry_name).collect();
    for e in &all {
        let Resp::Array(f) = e else { unreachable!() };
        assert_eq!(f.len(), 10, "{e:?}");
        assert!(matches!(f[1], Resp::Int(_)));
    }
    let Resp::Array(listed) = r.cmd(&["COMMAND", "LIST"]) else {
        panic!("COMMAND LIST is an array");
    };
    // COMMAND LIST also names subcommands (`client|list`) where a server has them as
    // entries of their own; the top-level names are exactly COMMAND's.
    let mut listed: Vec<String> = listed
        .iter()
        .map(text)
        .filter(|n| !n.contains('|'))
        .collect();
    names.sort();
    listed.sort();
    assert_eq!(names, listed);
    for must in [
        "get", "set", "mget", "mset", "del", "exists", "incr", "ping", "echo", "multi", "exec",
        "watch", "client", "command", "config", "info", "select", "auth", "hello", "dbsize",
    ] {
        assert!(names.iter().any(|n| n == must), "{must} missing");
    }
    let Resp::Array(info) = r.cmd(&["COMMAND", "INFO"]) else {
        panic!("COMMAND INFO is an array");
    };
    assert_eq!(info.len() as i64, count);

    // Arity and key positions as Redis has them.
    let Resp::Array(got) = r.cmd(&[
        "COMMAND", "INFO", "get", "SET", "mset", "del", "ping", "nosuch", "mget", "rename",
    ]) else {
        panic!("COMMAND INFO is an array");
    };
    let shape = |e: &Resp| -> (String, i64, i64, i64, i64, Vec<String>) {
        let Resp::Array(f) = e else { panic!("{e:?}") };
        let flags = match &f[2] {
            Resp::Array(v) | Resp::Set(v) => v
                .iter()
                .map(|x| match x {
                    Resp::Simple(s) => s.clone(),
                    o => panic!("{o:?}"),
                })
                .collect(),
            o => panic!("{o:?}"),
        };
        let n = |x: &Resp| match x {
            Resp::Int(n) => *n,
            o => panic!("{o:?}"),
        };
        (text(&f[0]), n(&f[1]), n(&f[3]), n(&f[4]), n(&f[5]), flags)
    };
    let (name, ar, first, last, step, flags) = shape(&got[0]);
    assert_eq!((name.as_str(), ar, first, last, step), ("get", 2, 1, 1, 1));
    assert!(flags.contains(&"readonly".to_string()) && flags.contains(&"fast".to_string()));
    let (name, ar, first, last, step, flags) = shape(&got[1]);
    assert_eq!((name.as_str(), ar, first, last, step), ("set", -3, 1, 1, 1));
    assert!(flags.contains(&"write".to_string()), "{flags:?}");
    let (name, ar, first, last, step, _) = shape(&got[2]);
    assert_eq!(
        (name.as_str(), ar, first, last, step),
        ("mset", -3, 1, -1, 2)
    );
    let (name, ar, first, last, step, _) = shape(&got[3]);
    assert_eq!(
        (name.as_str(), ar, first, last, step),
        ("del", -2, 1, -1, 1)
    );
    let (name, ar, first, last, step, _) = shape(&got[4]);
    assert_eq!(
        (name.as_str(), ar, first, last, step),
        ("ping", -1, 0, 0, 0)
    );
    let (name, ar, first, last, step, _) = shape(&got[6]);
    assert_eq!(
        (name.as_str(), ar, first, last, step),
        ("mget", -2, 1, -1, 1)
    );
    let (name, ar, first, last, step, _) = shape(&got[7]);
    assert_eq!(
        (name.as_str(), ar, first, last, step),
        ("rename", 3, 1, 2, 1)
    );
    // ACL categories of GET.
    let Resp::Array(f) = &got[0] else {
        unreachable!()
    };
    let Resp::Array(cats) = &f[6] else {
        panic!("{:?}", f[6])
    };
    for c in ["@read", "@string", "@fast"] {
        assert!(cats.contains(&simple(c)), "{c} in {cats:?}");
    }

    // LIST filters.
    assert_eq!(
        r.cmd(&["COMMAND", "LIST", "FILTERBY", "PATTERN", "ech*"]),
        Resp::Array(vec![bulk("echo")])
    );
    let Resp::Array(strings) = r.cmd(&["COMMAND", "LIST", "FILTERBY", "ACLCAT", "string"]) else {
        panic!("COMMAND LIST FILTERBY ACLCAT is an array");
    };
    for must in ["get", "set", "mget", "incr"] {
        assert!(strings.contains(&bulk(must)), "{must} in @string");
    }
    assert!(!strings.contains(&bulk("ping")));
    assert_eq!(
        r.cmd(&["COMMAND", "LIST", "FILTERBY", "foo", "bar"]),
        Resp::err("ERR syntax error")
    );
    assert_eq!(
        r.cmd(&["COMMAND", "LIST", "x"]),
        Resp::err("ERR syntax error")
    );
    assert_eq!(
        r.cmd(&["COMMAND", "FOO"]),
        Resp::err("ERR unknown subcommand 'FOO'. Try COMMAND HELP.")
    );
    let Resp::Array(help) = r.cmd(&["COMMAND", "HELP"]) else {
        panic!("COMMAND HELP is an array");
    };
    assert_eq!(
        help[0],
        simple("COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:")
    );
    // An unknown name in COMMAND INFO is a null bulk in RESP2 (`$-1`).
    assert_eq!(got[5], Resp::Nil, "COMMAND INFO of an unknown command");
}

#[test]
fn command_docs() {
    let server = Server::with_cores(1);
    let mut r = server.raw();
    let docs = r.cmd(&["COMMAND", "DOCS", "get", "set"]);
    let Resp::Array(items) = &docs else {
        panic!("COMMAND DOCS in RESP2 is a flat array: {docs:?}");
    };
    assert_eq!(items.len(), 4);
    assert_eq!(items[0], bulk("get"));
    assert_eq!(items[2], bulk("set"));
    let doc_field = |doc: &Resp, k: &str| -> Resp {
        let Resp::Array(kv) = doc else {
            panic!("{doc:?}")
        };
        kv.chunks(2)
            .find(|p| p[0] == bulk(k))
            .unwrap_or_else(|| panic!("{k} missing in {doc:?}"))[1]
            .clone()
    };
    assert_eq!(doc_field(&items[1], "since"), bulk("1.0.0"));
    assert_eq!(doc_field(&items[1], "group"), bulk("string"));
    assert!(matches!(doc_field(&items[1], "summary"), Resp::Bulk(s) if !s.is_empty()));
    assert_eq!(doc_field(&items[3], "group"), bulk("string"));
    assert_eq!(r.cmd(&["COMMAND", "DOCS", "nosuch"]), Resp::Array(vec![]));
    let Resp::Array(all) = r.cmd(&["COMMAND", "DOCS"]) else {
        panic!("COMMAND DOCS is an array");
    };
    let Resp::Int(count) = r.cmd(&["COMMAND", "COUNT"]) else {
        panic!()
    };
    assert_eq!(all.len() as i64, 2 * count);
    // In RESP3 a map.
    assert!(matches!(r.cmd(&["HELLO", "3"]), Resp::Map(_)));
    let Resp::Map(m) = r.cmd(&["COMMAND", "DOCS", "get"]) else {
        panic!("COMMAND DOCS in RESP3 is a map");
    };
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].0, bulk("get"));
    assert!(matches!(m[0].1, Resp::Map(_)));
}

#[test]
fn subcommand_arity_errors() {
    // Redis checks each subcommand's arity.
    let server = Server::with_cores(1);
    let mut r = server.raw();
    let bad = mismatches(
        &mut r,
        &[
            (vec!["COMMAND", "COUNT", "x"], arity("command|count")),
            (vec!["COMMAND", "HELP", "x"], arity("command|help")),
            (vec!["CONFIG", "RESETSTAT", "x"], arity("config|resetstat")),
            (vec!["CONFIG", "HELP", "x"], arity("config|help")),
            (vec!["CONFIG"], arity("config")),
            (vec!["CONFIG", "GET"], arity("config|get")),
            (vec!["CONFIG", "SET", "maxclients"], arity("config|set")),
            (vec!["CLIENT", "HELP", "x"], arity("client|help")),
            (vec!["CLIENT", "ID", "x"], arity("client|id")),
        ],
    );
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

// ---------------------------------------------------------------------------------------
// CONFIG

fn config_get(r: &mut Raw, pattern: &str) -> Vec<(String, String)> {
    match r.cmd(&["CONFIG", "GET", pattern]) {
        Resp::Array(items) => items
            .chunks(2)
            .map(|kv| (text(&kv[0]), text(&kv[1])))
            .collect(),
        other => panic!("CONFIG GET {pattern}: {other:?}"),
    }
}

#[test]
fn config_get_with_glob_patterns() {
    let server = Server::with_cores(2);
    let mut r = server.raw();
    assert_eq!(
        config_get(&mut r, "maxclients"),
        vec![("maxclients".to_string(), "10000".to_string())]
    );
    assert_eq!(
        config_get(&mut r, "port"),
        vec![("port".to_string(), server.port.to_string())]
    );
    assert_eq!(
        config_get(&mut r, "databases"),
        vec![("databases".to_string(), "16".to_string())]
    );
    let bulk_params = config_get(&mut r, "*bulk*");
    assert!(bulk_params.contains(&("proto-max-bulk-len".into(), "536870912".into())));
    let max = config_get(&mut r, "max*clients");
    assert!(max.iter().any(|(k, _)| k == "maxclients"), "{max:?}");
    assert!(max
        .iter()
        .all(|(k, _)| k.starts_with("max") && k.ends_with("clients")));
    let q = config_get(&mut r, "client-query-buffer-limi?");
    assert_eq!(
        q,
        vec![("client-query-buffer-limit".into(), "1073741824".into())]
    );
    assert_eq!(config_get(&mut r, "nosuch*"), vec![]);
    let all = config_get(&mut r, "*");
    for p in [
        "maxclients",
        "port",
        "bind",
        "databases",
        "requirepass",
        "proto-max-bulk-len",
        "client-query-buffer-limit",
        "dir",
    ] {
        assert!(
            all.iter().any(|(k, _)| k == p),
            "{p} missing from CONFIG GET *"
        );
    }
    // Several patterns at once; a parameter matched twice is listed once.
    match r.cmd(&["CONFIG", "GET", "port", "databases", "maxclients", "max*"]) {
        Resp::Array(items) => {
            let keys: Vec<String> = items.chunks(2).map(|kv| text(&kv[0])).collect();
            assert!(keys.contains(&"port".into()) && keys.contains(&"databases".into()));
            assert_eq!(keys.iter().filter(|k| *k == "maxclients").count(), 1);
        }
        other => panic!("{other:?}"),
    }
    // RESP3: a map.
    assert!(matches!(r.cmd(&["HELLO", "3"]), Resp::Map(_)));
    assert_eq!(
        r.cmd(&["CONFIG", "GET", "maxclients"]),
        Resp::Map(vec![(bulk("maxclients"), bulk("10000"))])
    );
}

#[test]
fn config_set_mutable_and_immutable_parameters() {
    let server = Server::with_cores(2);
    let mut r = server.raw();
    assert_eq!(r.cmd(&["CONFIG", "SET", "maxclients", "100"]), ok());
    assert_eq!(
        config_get(&mut r, "maxclients"),
        vec![("maxclients".into(), "100".into())]
    );
    // Other connections, on either core, see it.
    for _ in 0..4 {
        let mut o = server.raw();
        assert_eq!(
            config_get(&mut o, "maxclients"),
            vec![("maxclients".into(), "100".into())]
        );
        assert_eq!(
            info_field(&info(&mut o, "clients"), "maxclients").as_deref(),
            Some("100")
        );
    }
    // Names are case-insensitive; several pairs in one call.
    assert_eq!(
        r.cmd(&[
            "CONFIG",
            "SET",
            "MAXCLIENTS",
            "50",
            "proto-max-bulk-len",
            "2mb"
        ]),
        ok()
    );
    assert_eq!(
        config_get(&mut r, "maxclients"),
        vec![("maxclients".into(), "50".into())]
    );
    assert_eq!(
        config_get(&mut r, "proto-max-bulk-len"),
        vec![("proto-max-bulk-len".into(), "2097152".into())]
    );
    assert_eq!(
        r.cmd(&["CONFIG", "SET", "client-query-buffer-limit", "2gb"]),
        ok()
    );
    assert_eq!(
        config_get(&mut r, "client-query-buffer-limit"),
        vec![("client-query-buffer-limit".into(), "2147483648".into())]
    );
    // Immutable parameters.
    for (p, v) in [("databases", "4"), ("enable-debug-command", "yes")] {
        assert_eq!(
            r.cmd(&["CONFIG", "SET", p, v]),
            Resp::Error(format!(
                "ERR CONFIG SET failed (possibly related to argument '{p}') - can't set immutable config"
            ))
        );
    }
    // Unknown parameter.
    assert_eq!(
        r.cmd(&["CONFIG", "SET", "nosuch", "1"]),
        Resp::err("ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'")
    );
    // A failing pair leaves every pair unapplied.
    assert_eq!(
        r.cmd(&["CONFIG", "SET", "maxclients", "70", "nosuch", "1"]),
        Resp::err("ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'")
    );
    assert_eq!(
        r.cmd(&["CONFIG", "SET", "maxclients", "70", "databases", "3"]),
        Resp::err(
            "ERR CONFIG SET failed (possibly related to argument 'databases') - can't set immutable config"
        )
    );
    assert_eq!(
        config_get(&mut r, "maxclients"),
        vec![("maxclients".into(), "50".into())]
    );
    // A bad memory value.
    assert_eq!(
        r.cmd(&["CONFIG", "SET", "proto-max-bulk-len", "abc"]),
        Resp::err(
            "ERR CONFIG SET failed (possibly related to argument 'proto-max-bulk-len') - argument must be a memory value"
        )
    );
    assert_eq!(r.cmd(&["CONFIG", "SET", "maxclients"]), arity("config|set"));
    assert_eq!(
        r.cmd(&["CONFIG", "FOO"]),
        Resp::err("ERR unknown subcommand 'FOO'. Try CONFIG HELP.")
    );
    let Resp::Array(help) = r.cmd(&["CONFIG", "HELP"]) else {
        panic!("CONFIG HELP is an array");
    };
    assert_eq!(
        help[0],
        simple("CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:")
    );
}

#[test]
fn config_set_bad_values_have_redis_texts() {
    let server = Server::with_cores(1);
    let mut r = server.raw();
    let failed = |p: &str, why: &str| {
        Resp::Error(format!(
            "ERR CONFIG SET failed (possibly related to argument '{p}') - {why}"
        ))
    };
    let int_range = "argument must be between 1 and 4294967295 inclusive";
    let mem_range = "argument must be between 1048576 and 9223372036854775807 inclusive";
    let bad = mismatches(
        &mut r,
        &[
            (
                vec!["CONFIG", "SET", "maxclients", "abc"],
                failed("maxclients", "argument couldn't be parsed into an integer"),
            ),
            (
                vec!["CONFIG", "SET", "maxclients", "0"],
                failed("maxclients", int_range),
            ),
            (
                vec!["CONFIG", "SET", "maxclients", "-5"],
                failed("maxclients", int_range),
            ),
            (
                vec!["CONFIG", "SET", "proto-max-bulk-len", "1k"],
                failed("proto-max-bulk-len", mem_range),
            ),
            (
                vec!["CONFIG", "SET", "client-query-buffer-limit", "1000"],
                failed("client-query-buffer-limit", mem_range),
            ),
            (
                vec!["CONFIG", "SET", "proto-max-bulk-len", "abc"],
                failed("proto-max-bulk-len", "argument must be a memory value"),
            ),
            // An odd number of arguments after SET.
            (
                vec!["CONFIG", "SET", "maxclients", "10", "port"],
                Resp::err("ERR syntax error"),
            ),
        ],
    );
    // Nothing changed.
    assert_eq!(
        config_get(&mut r, "maxclients"),
        vec![("maxclients".into(), "10000".into())]
    );
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn config_resetstat_clears_the_counters() {
    let server = Server::with_cores(2);
    let mut r = server.raw();
    let a = key_on_core(0, 2, "st");
    let b = key_on_core(1, 2, "st");
    assert_eq!(r.cmd(&["SET", &a, "1"]), ok());
    for _ in 0..5 {
        r.cmd(&["GET", &a]);
        r.cmd(&["GET", &b]);
    }
    let before = info(&mut r, "stats");
    let n = |s: &str, f: &str| -> i64 {
        info_field(s, f)
            .unwrap_or_else(|| panic!("{f} missing: {s}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert!(n(&before, "total_commands_processed") >= 11, "{before}");
    assert_eq!(n(&before, "keyspace_hits"), 5);
    assert_eq!(n(&before, "keyspace_misses"), 5);
    assert!(n(&before, "total_connections_received") >= 1);
    assert_eq!(r.cmd(&["CONFIG", "RESETSTAT"]), ok());
    let after = info(&mut r, "stats");
    assert!(n(&after, "total_commands_processed") <= 2, "{after}");
    assert_eq!(n(&after, "keyspace_hits"), 0);
    assert_eq!(n(&after, "keyspace_misses"), 0);
    assert_eq!(n(&after, "total_connections_received"), 0);
    r.cmd(&["GET", &b]);
    r.cmd(&["GET", &a]);
    let later = info(&mut r, "stats");
    assert_eq!(n(&later, "keyspace_hits"), 1);
    assert_eq!(n(&later, "keyspace_misses"), 1);
}

// ---------------------------------------------------------------------------------------
// INFO, TIME, LASTSAVE, DBSIZE

#[test]
fn info_sections_and_field_names() {
    let server = Server::with_cores(2);
    let mut r = server.raw();
    let mut others: Vec<Raw> = (0..3).map(|_| server.raw()).collect();
    for o in others.iter_mut() {
        assert_eq!(o.cmd(&["PING"]), simple("PONG"));
    }
    let a = key_on_core(0, 2, "inf");
    let b = key_on_core(1, 2, "inf");
    assert_eq!(r.cmd(&["SET", &a, "1"]), ok());
    assert_eq!(r.cmd(&["SET", &b, "1", "EX", "1000"]), ok());
    assert_eq!(r.cmd(&["SELECT", "3"]), ok());
    assert_eq!(r.cmd(&["SET", &a, "1"]), ok());
    assert_eq!(r.cmd(&["SELECT", "0"]), ok());

    let all = info(&mut r, "");
    // The default sections, in Redis's order (Redis adds Modules, Errorstats and Cluster).
    let headers: Vec<&str> = all
        .lines()
        .filter(|l| l.starts_with("# "))
        .filter(|l| !["# Modules", "# Errorstats", "# Cluster"].contains(l))
        .collect();
    assert_eq!(
        headers,
        vec![
            "# Server",
            "# Clients",
            "# Memory",
            "# Persistence",
            "# Stats",
            "# Replication",
            "# CPU",
            "# Keyspace"
        ]
    );
    assert!(all.contains("\r\n"), "INFO lines end in CRLF");
    // Checked last, so the other checks run first.
    let missing: Vec<&str> = [
        "redis_version",
        "redis_mode",
        "os",
        "arch_bits",
        "process_id",
        "run_id",
        "tcp_port",
        "uptime_in_seconds",
        "uptime_in_days",
        "executable",
        "config_file",
        "connected_clients",
        "maxclients",
        "blocked_clients",
        "used_memory",
        "used_memory_human",
        "used_memory_rss",
        "used_memory_rss_human",
        "maxmemory",
        "maxmemory_human",
        "maxmemory_policy",
        "mem_fragmentation_ratio",
        "mem_allocator",
        "loading",
        "rdb_changes_since_last_save",
        "rdb_last_save_time",
        "aof_enabled",
        "total_connections_received",
        "total_commands_processed",
        "total_net_input_bytes",
        "total_net_output_bytes",
        "rejected_connections",
        "expired_keys",
        "evicted_keys",
        "keyspace_hits",
        "keyspace_misses",
        "total_error_replies",
        "role",
        "connected_slaves",
        "master_replid",
        "master_repl_offset",
        "used_cpu_sys",
        "used_cpu_user",
        "used_cpu_sys_children",
        "used_cpu_user_children",
    ]
    .into_iter()
    .filter(|f| info_field(&all, f).is_none())
    .collect();
    assert_eq!(info_field(&all, "tcp_port"), Some(server.port.to_string()));
    assert_eq!(
        info_field(&all, "process_id"),
        Some(server.pid().to_string())
    );
    assert_eq!(
        info_field(&all, "redis_mode").as_deref(),
        Some("standalone")
    );
    assert_eq!(info_field(&all, "role").as_deref(), Some("master"));
    assert_eq!(info_field(&all, "run_id").map(|s| s.len()), Some(40));
    assert_eq!(info_field(&all, "connected_clients").as_deref(), Some("4"));
    assert_eq!(info_field(&all, "maxclients").as_deref(), Some("10000"));
    let used: u64 = info_field(&all, "used_memory").unwrap().parse().unwrap();
    assert!(used > 0);

    // One section, or several; names are case-insensitive.
    let server_only = info(&mut r, "server");
    assert!(server_only.starts_with("# Server\r\n"), "{server_only}");
    assert_eq!(
        server_only.lines().filter(|l| l.starts_with("# ")).count(),
        1
    );
    let upper = info(&mut r, "SERVER");
    assert!(upper.starts_with("# Server\r\n"), "{upper}");
    assert_eq!(upper.lines().count(), server_only.lines().count());
    let two = info(&mut r, "clients");
    assert!(two.starts_with("# Clients\r\n"), "{two}");
    let t = text(&r.cmd(&["INFO", "server", "clients"]));
    let h: Vec<&str> = t.lines().filter(|l| l.starts_with("# ")).collect();
    assert_eq!(h, vec!["# Server", "# Clients"]);
    for section in ["memory", "stats", "cpu", "persistence", "replication"] {
        let t = info(&mut r, section);
        assert_eq!(
            t.lines().filter(|l| l.starts_with("# ")).count(),
            1,
            "{section}: {t}"
        );
    }
    assert_eq!(info(&mut r, "nosuch"), "");
    let ks = info(&mut r, "keyspace");
    assert_eq!(
        ks,
        "# Keyspace\r\ndb0:keys=2,expires=1,avg_ttl=0\r\ndb3:keys=1,expires=0,avg_ttl=0\r\n"
    );
    // `all` and `everything` include the default sections.
    for word in ["all", "everything", "default"] {
        let t = info(&mut r, word);
        for h in [
            "# Server",
            "# Clients",
            "# Memory",
            "# Stats",
            "# CPU",
            "# Keyspace",
        ] {
            assert!(t.contains(h), "INFO {word} lacks {h}");
        }
    }
    // RESP3: a verbatim string.
    assert!(matches!(r.cmd(&["HELLO", "3"]), Resp::Map(_)));
    assert!(matches!(r.cmd(&["INFO", "keyspace"]), Resp::Verbatim(_)));
    assert!(missing.is_empty(), "fields missing from INFO: {missing:?}");
}

#[test]
fn time_and_lastsave() {
    let server = Server::with_cores(2);
    let mut r = server.raw();
    let before = unix_now();
    let Resp::Array(t) = r.cmd(&["TIME"]) else {
        panic!("TIME is an array");
    };
    let after = unix_now();
    assert_eq!(t.len(), 2);
    let secs: i64 = text(&t[0]).parse().unwrap();
    let micros: i64 = text(&t[1]).parse().unwrap();
    assert!(
        secs >= before - 1 && secs <= after + 1,
        "{secs} vs {before}"
    );
    assert!((0..1_000_000).contains(&micros), "{micros}");
    assert_eq!(r.cmd(&["TIME", "x"]), arity("time"));
    let Resp::Int(last) = r.cmd(&["LASTSAVE"]) else {
        panic!("LASTSAVE is an integer");
    };
    assert!(last <= after + 1 && last >= before - 600, "{last}");
    assert_eq!(r.cmd(&["LASTSAVE", "x"]), arity("lastsave"));
}

#[test]
fn dbsize_counts_keys_on_every_core() {
    let server = Server::with_cores(2);
    let mut r = server.raw();
    assert_eq!(r.cmd(&["DBSIZE"]), int(0));
    let keys: Vec<String> = (0..100).map(|i| format!("dbs:{i}")).collect();
    let on_core1 = keys
        .iter()
        .filter(|k| tessera::slot::key_core(k.as_bytes(), 2) == 1)
        .count();
    assert!(on_core1 > 0 && on_core1 < 100, "keys on both cores");
    let mut mset: Vec<&str> = vec!["MSET"];
    for k in &keys {
        mset.push(k);
        mset.push("v");
    }
    assert_eq!(r.cmd(&mset), ok());
    assert_eq!(r.cmd(&["DBSIZE"]), int(100));
    // Every connection, whichever core it is on, sees the same count.
    for _ in 0..4 {
        let mut o = server.raw();
        assert_eq!(o.cmd(&["DBSIZE"]), int(100));
    }
    let mut del: Vec<&str> = vec!["DEL"];
    del.extend(keys[..30].iter().map(String::as_str));
    assert_eq!(r.cmd(&del), int(30));
    assert_eq!(r.cmd(&["DBSIZE"]), int(70));
    assert_eq!(r.cmd(&["SELECT", "5"]), ok());
    assert_eq!(r.cmd(&["DBSIZE"]), int(0));
    assert_eq!(r.cmd(&["SET", "other-db", "1"]), ok());
    assert_eq!(r.cmd(&["DBSIZE"]), int(1));
    assert_eq!(r.cmd(&["FLUSHDB"]), ok());
    assert_eq!(r.cmd(&["DBSIZE"]), int(0));
    assert_eq!(r.cmd(&["SELECT", "0"]), ok());
    assert_eq!(r.cmd(&["DBSIZE"]), int(70));
    assert_eq!(r.cmd(&["DBSIZE", "x"]), arity("dbsize"));
    assert_eq!(r.cmd(&["FLUSHALL"]), ok());
    assert_eq!(r.cmd(&["DBSIZE"]), int(0));
}

// ---------------------------------------------------------------------------------------
// maxclients

/// Connects and waits for the greeting-free PING reply; `None` if the server refused with
/// the max-clients error (the slot of a connection that just closed may not be free yet).
fn try_client(port: u16) -> Option<Raw> {
    let mut r = Raw::connect(port);
    r.send(b"PING\r\n");
    match r.read() {
        Resp::Simple(s) if s == "PONG" => Some(r),
        Resp::Error(e) if e == "ERR max number of clients reached" => None,
        other => panic!("unexpected greeting {other:?}"),
    }
}

fn client_within(port: u16, within: Duration) -> Raw {
    let deadline = Instant::now() + within;
    loop {
        if let Some(r) = try_client(port) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "no free client slot in {within:?}"
        );
    }
}

#[test]
fn maxclients_rejects_the_connection_over_the_limit() {
    let server = Server::start(2, &["--maxclients", "5"]);
    let mut kept: Vec<Raw> = (0..5)
        .map(|_| client_within(server.port, Duration::from_secs(10)))
        .collect();
    // The sixth is told and closed, without sending anything.
    let mut sixth = Raw::connect(server.port);
    assert_eq!(sixth.read(), Resp::err("ERR max number of clients reached"));
    assert!(closed_within(&mut sixth, Duration::from_secs(5)));
    // The five are fine.
    for r in kept.iter_mut() {
        assert_eq!(r.cmd(&["PING"]), simple("PONG"));
    }
    let stats = info(&mut kept[0], "stats");
    let rejected: i64 = info_field(&stats, "rejected_connections")
        .unwrap()
        .parse()
        .unwrap();
    assert!(rejected >= 1, "{stats}");
    // Closing one frees its slot.
    kept.pop();
    kept.push(client_within(server.port, Duration::from_secs(10)));
    let mut again = Raw::connect(server.port);
    assert_eq!(again.read(), Resp::err("ERR max number of clients reached"));
    // CONFIG SET maxclients raises the limit at once.
    assert_eq!(kept[0].cmd(&["CONFIG", "SET", "maxclients", "6"]), ok());
    kept.push(client_within(server.port, Duration::from_secs(10)));
    let mut over = Raw::connect(server.port);
    assert_eq!(over.read(), Resp::err("ERR max number of clients reached"));
}

// ---------------------------------------------------------------------------------------
// The config file

/// A tessera process started by this file (the harness always passes --port first).
struct Proc {
    child: Option<Child>,
}

impl Proc {
    /// Waits for the process to exit; its status and stderr, or `None` after `within`.
    fn wait_output(mut self, within: Duration) -> Option<(std::process::ExitStatus, String)> {
        let child = self.child.take()?;
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(within) {
            Ok(Ok(out)) => Some((
                out.status,
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )),
            _ => {
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                None
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn_tessera(args: &[&str]) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tessera");
    Proc { child: Some(child) }
}

fn temp_conf(name: &str, text: &str) -> std::path::PathBuf {
    let path =
        std::env::temp_dir().join(format!("tessera-test-{}-{name}.conf", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

/// Waits until something answers on `port`.
fn wait_listening(port: u16, proc: &mut Proc, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(st) = proc
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            panic!("tessera exited during start: {st}");
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "tessera did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_config_file_as_first_argument() {
    let port = free_port();
    let path = temp_conf(
        "good",
        &format!(
            "# a comment\n\nport {port}\nmaxclients 77\n  databases 4\nrequirepass \"sec ret\"\nproto-max-bulk-len 2mb\n"
        ),
    );
    let path_s = path.to_str().unwrap().to_string();
    // Flags after the file override it.
    let mut proc = spawn_tessera(&[&path_s, "--cores", "2", "--maxclients", "88"]);
    wait_listening(port, &mut proc, START_DEADLINE);
    let mut r = Raw::connect(port);
    assert_eq!(r.cmd(&["PING"]), Resp::err(NOAUTH));
    assert_eq!(r.cmd(&["AUTH", "sec ret"]), ok());
    assert_eq!(
        config_get(&mut r, "maxclients"),
        vec![("maxclients".into(), "88".into())]
    );
    assert_eq!(
        config_get(&mut r, "databases"),
        vec![("databases".into(), "4".into())]
    );
    assert_eq!(
        config_get(&mut r, "proto-max-bulk-len"),
        vec![("proto-max-bulk-len".into(), "2097152".into())]
    );
    assert_eq!(r.cmd(&["SELECT", "3"]), ok());
    assert_eq!(
        r.cmd(&["SELECT", "4"]),
        Resp::err("ERR DB index is out of range")
    );
    let server_info = info(&mut r, "server");
    let cf = info_field(&server_info, "config_file").unwrap();
    assert!(
        cf.ends_with(path.file_name().unwrap().to_str().unwrap()),
        "config_file:{cf}"
    );
    drop(r);
    drop(proc);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn an_unknown_directive_in_the_config_file_is_fatal_and_names_the_line() {
    let port = free_port();
    let path = temp_conf("bad", &format!("port {port}\n# fine\nfrobnicate yes\n"));
    let proc = spawn_tessera(&[path.to_str().unwrap(), "--cores", "1"]);
    let (status, stderr) = proc
        .wait_output(Duration::from_secs(10))
        .expect("tessera should exit on a bad config file");
    assert!(!status.success(), "{status}: {stderr}");
    assert!(stderr.contains("frobnicate"), "{stderr}");
    assert!(
        stderr.contains("line 3") || stderr.contains(":3:"),
        "the error should name line 3: {stderr}"
    );
    // A bad value is fatal too.
    let path2 = temp_conf("badval", &format!("port {port}\nmaxclients lots\n"));
    let proc = spawn_tessera(&[path2.to_str().unwrap(), "--cores", "1"]);
    let (status, stderr) = proc
        .wait_output(Duration::from_secs(10))
        .expect("tessera should exit on a bad value");
    assert!(!status.success(), "{status}: {stderr}");
    assert!(
        stderr.contains("line 2") || stderr.contains(":2:"),
        "the error should name line 2: {stderr}"
    );
    assert!(stderr.contains("maxclients"), "{stderr}");
    // A missing file too.
    let proc = spawn_tessera(&["/nonexistent/tessera.conf", "--cores", "1"]);
    let (status, stderr) = proc
        .wait_output(Duration::from_secs(10))
        .expect("tessera should exit on a missing file");
    assert!(!status.success(), "{status}: {stderr}");
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&path2);
}
