//! The wire protocol as raw bytes: inline commands, RESP2 and RESP3, long pipelines, many
//! connections at once, and every kind of malformed input the request decoder rejects.
//!
//! Expected replies are Redis 7's, byte for byte.

mod common;
use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Whether the server closed `raw` (EOF or reset) within `within`. Bytes that arrive first
/// are returned so a test can show them.
fn closed_within(raw: &mut Raw, within: Duration) -> (bool, Vec<u8>) {
    let deadline = Instant::now() + within;
    let mut extra = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (false, extra);
        }
        raw.stream.set_read_timeout(Some(left)).unwrap();
        match raw.stream.read(&mut chunk) {
            Ok(0) => return (true, extra),
            Ok(n) => extra.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (true, extra),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return (false, extra),
        }
    }
}

fn assert_closed(raw: &mut Raw, what: &str) {
    let (closed, extra) = closed_within(raw, Duration::from_secs(5));
    assert!(
        closed,
        "{what}: the connection should be closed; it stayed open after sending {:?}",
        String::from_utf8_lossy(&extra)
    );
}

fn bulk(b: &[u8]) -> Resp {
    Resp::Bulk(b.to_vec())
}

fn int(n: i64) -> Resp {
    Resp::Int(n)
}

fn proto_err(text: &str) -> Resp {
    Resp::Error(format!("ERR Protocol error: {text}"))
}

/// A map reply's value for `key`, whether it came as a RESP3 map or a RESP2 flat array.
fn field<'a>(reply: &'a Resp, key: &str) -> Option<&'a Resp> {
    match reply {
        Resp::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| *k == Resp::bulk(key))
            .map(|(_, v)| v),
        Resp::Array(items) => items
            .chunks(2)
            .find(|kv| kv[0] == Resp::bulk(key))
            .map(|kv| &kv[1]),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Inline commands

#[test]
fn inline_commands_with_quotes_and_escapes() {
    let server = Server::with_cores(2);
    let mut r = server.raw();
    r.send(b"SET k \"a b\\x41\\n\"\r\nGET k\r\n");
    assert_eq!(r.read(), Resp::ok());
    assert_eq!(r.read(), bulk(b"a bA\n"));

    // Double quotes take \n \r \t \b \a \\ \" \xHH; an unknown escape is the character.
    r.send(b"ECHO \"t\\tx\\r\\n\\b\\a\\\\\\\"\"\r\n");
    assert_eq!(r.read(), bulk(b"t\tx\r\n\x08\x07\\\""));
    r.send(b"ECHO \"a\\qb\"\r\n");
    assert_eq!(r.read(), bulk(b"aqb"));
    r.send(b"ECHO \"\\x00\\xff\\x4a\"\r\n");
    assert_eq!(r.read(), bulk(b"\x00\xffJ"));
    r.send(b"ECHO \"\\xZZ\"\r\n");
    assert_eq!(r.read(), bulk(b"xZZ"));
    // Single quotes take only \'.
    r.send(b"ECHO 'it\\'s'\r\n");
    assert_eq!(r.read(), bulk(b"it's"));
    r.send(b"ECHO 'a\\nb'\r\n");
    assert_eq!(r.read(), bulk(b"a\\nb"));
    r.send(b"ECHO \"a\\\"b\"\r\n");
    assert_eq!(r.read(), bulk(b"a\"b"));
    // Empty quoted arguments are arguments.
    r.send(b"ECHO \"\"\r\nECHO ''\r\n");
    assert_eq!(r.read(), bulk(b""));
    assert_eq!(r.read(), bulk(b""));
    // Two quoted words are two arguments.
    r.send(b"echo \"a b\" 'c d'\r\n");
    assert_eq!(
        r.read(),
        Resp::err("ERR wrong number of arguments for 'echo' command")
    );
    // Runs of spaces and tabs separate; a bare LF ends a line too.
    r.send(b"SET   k2 \t  v2\r\n  PING   \nGET k2\n");
    assert_eq!(r.read(), Resp::ok());
    assert_eq!(r.read(), Resp::Simple("PONG".into()));
    assert_eq!(r.read(), bulk(b"v2"));
    // Inline and multibulk mix in one pipeline.
    r.send(b"*1\r\n$4\r\nPING\r\nECHO x\r\n*2\r\n$4\r\nECHO\r\n$1\r\ny\r\n");
    assert_eq!(r.read(), Resp::Simple("PONG".into()));
    assert_eq!(r.read(), bulk(b"x"));
    assert_eq!(r.read(), bulk(b"y"));
    // Inline keys land on whichever core owns them.
    let a = key_on_core(0, 2, "inl");
    let b = key_on_core(1, 2, "inl");
    r.send(format!("MSET {a} 1 {b} 2\r\nMGET {a} {b}\r\n").as_bytes());
    assert_eq!(r.read(), Resp::ok());
    assert_eq!(r.read(), Resp::Array(vec![bulk(b"1"), bulk(b"2")]));
}

#[test]
fn empty_requests_are_ignored() {
    let server = Server::with_cores(1);
    let mut r = server.raw();
    r.send(b"*0\r\n\r\n\r\n   \r\n*-1\r\nPING\r\n");
    assert_eq!(r.read(), Resp::Simple("PONG".into()));
    // Nothing else was answered.
    r.send(b"ECHO end\r\n");
    assert_eq!(r.read(), bulk(b"end"));
}

#[test]
fn unknown_command_and_wrong_arity_texts() {
    let server = Server::with_cores(2);
    let mut r = server.raw();
    assert_eq!(
        r.cmd(&["foo", "a", "b"]),
        Resp::err("ERR unknown command 'foo', with args beginning with: 'a' 'b' ")
    );
    assert_eq!(
        r.cmd(&["foo"]),
        Resp::err("ERR unknown command 'foo', with args beginning with: ")
    );
    r.send(b"FOO a b\r\n");
    assert_eq!(
        r.read(),
        Resp::err("ERR unknown command 'FOO', with args beginning with: 'a' 'b' ")
    );
    assert_eq!(
        r.cmd(&["get"]),
        Resp::err("ERR wrong number of arguments for 'get' command")
    );
    assert_eq!(
        r.cmd(&["GET", "a", "b"]),
        Resp::err("ERR wrong number of arguments for 'get' command")
    );
    assert_eq!(
        r.cmd(&["SET", "k"]),
        Resp::err("ERR wrong number of arguments for 'set' command")
    );
    assert_eq!(
        r.cmd(&["MSET", "a"]),
        Resp::err("ERR wrong number of arguments for 'mset' command")
    );
    // The connection is still usable.
    assert_eq!(r.cmd(&["PING"]), Resp::Simple("PONG".into()));
}

// ---------------------------------------------------------------------------------------
// RESP3

#[test]
fn hello_3_replies_a_map_and_switches_to_resp3() {
    let server = Server::with_cores(2);
    let mut r = server.raw();
    let id = match r.cmd(&["CLIENT", "ID"]) {
        Resp::Int(id) => id,
        other => panic!("CLIENT ID: {other:?}"),
    };
    let hello = r.cmd(&["HELLO", "3"]);
    let Resp::Map(pairs) = &hello else {
        panic!("HELLO 3 should reply a RESP3 map, got {hello:?}");
    };
    let keys: Vec<&Resp> = pairs.iter().map(|(k, _)| k).collect();
    let want: Vec<Resp> = [
        "server", "version", "proto", "id", "mode", "role", "modules",
    ]
    .iter()
    .map(|k| Resp::bulk(k))
    .collect();
    assert_eq!(keys, want.iter().collect::<Vec<_>>());
    assert_eq!(field(&hello, "server"), Some(&Resp::bulk("redis")));
    assert_eq!(field(&hello, "proto"), Some(&int(3)));
    assert_eq!(field(&hello, "id"), Some(&int(id)));
    assert_eq!(field(&hello, "mode"), Some(&Resp::bulk("standalone")));
    assert_eq!(field(&hello, "role"), Some(&Resp::bulk("master")));
    assert_eq!(field(&hello, "modules"), Some(&Resp::Array(vec![])));
    assert!(matches!(field(&hello, "version"), Some(Resp::Bulk(_))));

    // Nulls are `_` now, in replies and inside arrays.
    let a = key_on_core(0, 2, "r3-");
    let b = key_on_core(1, 2, "r3-");
    r.send(b"GET r3-missing\r\n");
    assert_eq!(r.read(), Resp::Null);
    assert_eq!(r.cmd(&["SET", &a, "1"]), Resp::ok());
    assert_eq!(
        r.cmd(&["MGET", &a, &b, "r3-missing"]),
        Resp::Array(vec![bulk(b"1"), Resp::Null, Resp::Null])
    );
    // Map-shaped replies are maps.
    let cfg = r.cmd(&["CONFIG", "GET", "maxclients"]);
    assert_eq!(
        cfg,
        Resp::Map(vec![(Resp::bulk("maxclients"), Resp::bulk("10000"))])
    );
    // HELLO without a version reports the current protocol.
    let again = r.cmd(&["HELLO"]);
    assert!(matches!(again, Resp::Map(_)), "{again:?}");
    assert_eq!(field(&again, "proto"), Some(&int(3)));

    // HELLO 2 goes back: a flat array, and nulls are $-1 again.
    let two = r.cmd(&["HELLO", "2"]);
    let Resp::Array(items) = &two else {
        panic!("HELLO 2 should reply a flat array, got {two:?}");
    };
    assert_eq!(items.len(), 14);
    assert_eq!(field(&two, "proto"), Some(&int(2)));
    assert_eq!(r.cmd(&["GET", "r3-missing"]), Resp::Nil);
}

#[test]
fn hello_errors_and_noproto() {
    let server = Server::with_cores(1);
    let mut r = server.raw();
    assert_eq!(
        r.cmd(&["HELLO", "4"]),
        Resp::err("NOPROTO unsupported protocol version")
    );
    assert_eq!(
        r.cmd(&["HELLO", "1"]),
        Resp::err("NOPROTO unsupported protocol version")
    );
    assert_eq!(
        r.cmd(&["HELLO", "x"]),
        Resp::err("ERR Protocol version is not an integer or out of range")
    );
    assert_eq!(
        r.cmd(&["HELLO", "3", "FOO"]),
        Resp::err("ERR Syntax error in HELLO option 'FOO'")
    );
    assert_eq!(
        r.cmd(&["HELLO", "3", "AUTH"]),
        Resp::err("ERR Syntax error in HELLO option 'AUTH'")
    );
    assert_eq!(
        r.cmd(&["HELLO", "3", "SETNAME", "a b"]),
        Resp::err("ERR Client names cannot contain spaces, newlines or special characters.")
    );
    // A failed HELLO leaves the protocol alone.
    assert_eq!(r.cmd(&["GET", "missing"]), Resp::Nil);
}

#[test]
fn hello_with_setname() {
    let server = Server::with_cores(2);
    let mut r = server.raw();
    let hello = r.cmd(&["HELLO", "3", "SETNAME", "myname"]);
    assert!(matches!(hello, Resp::Map(_)), "{hello:?}");
    assert_eq!(r.cmd(&["CLIENT", "GETNAME"]), Resp::bulk("myname"));
    // HELLO 2 SETNAME works too, and changes the name again.
    let two = r.cmd(&["HELLO", "2", "SETNAME", "other"]);
    assert!(matches!(two, Resp::Array(_)), "{two:?}");
    assert_eq!(r.cmd(&["CLIENT", "GETNAME"]), Resp::bulk("other"));
}

#[test]
fn hello_with_auth_under_requirepass() {
    let server = Server::start(2, &["--requirepass", "secret"]);
    let mut r = server.raw();
    // Without AUTH, HELLO is refused.
    match r.cmd(&["HELLO", "3"]) {
        Resp::Error(e) => {
            // Redis 7.0 says "the HELLO AUTH <user> <pass> option", 7.2 "the HELLO <proto>
            // AUTH <user> <pass> option"; the rest is the same.
            assert!(
                e.starts_with("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO ")
                    && e.ends_with("AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"),
                "{e}"
            );
        }
        other => panic!("HELLO 3 without auth: {other:?}"),
    }
    assert_eq!(
        r.cmd(&["GET", "k"]),
        Resp::err("NOAUTH Authentication required.")
    );
    assert_eq!(
        r.cmd(&["HELLO", "3", "AUTH", "default", "wrong"]),
        Resp::err("WRONGPASS invalid username-password pair or user is disabled.")
    );
    assert_eq!(
        r.cmd(&["HELLO", "3", "AUTH", "bob", "secret"]),
        Resp::err("WRONGPASS invalid username-password pair or user is disabled.")
    );
    assert_eq!(
        r.cmd(&["GET", "k"]),
        Resp::err("NOAUTH Authentication required.")
    );
    let hello = r.cmd(&["HELLO", "3", "AUTH", "default", "secret", "SETNAME", "n1"]);
    assert!(matches!(hello, Resp::Map(_)), "{hello:?}");
    assert_eq!(field(&hello, "proto"), Some(&int(3)));
    assert_eq!(r.cmd(&["CLIENT", "GETNAME"]), Resp::bulk("n1"));
    assert_eq!(r.cmd(&["GET", "k"]), Resp::Null);
    assert_eq!(r.cmd(&["SET", "k", "v"]), Resp::ok());
    assert_eq!(r.cmd(&["GET", "k"]), Resp::bulk("v"));
}

// ---------------------------------------------------------------------------------------
// Pipelines and many connections

/// Reads `n` replies from `stream` into a vector, with a deadline over all of them.
fn read_replies(stream: &mut TcpStream, n: usize, within: Duration) -> Vec<Resp> {
    let deadline = Instant::now() + within;
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut pos = 0;
    let mut out = Vec::with_capacity(n);
    let mut chunk = vec![0u8; 1 << 16];
    while out.len() < n {
        while out.len() < n {
            match parse_resp(&buf[pos..]) {
                Some((v, used)) => {
                    pos += used;
                    out.push(v);
                }
                None => break,
            }
        }
        if out.len() == n {
            break;
        }
        if pos > (1 << 20) {
            buf.drain(..pos);
            pos = 0;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "only {} of {n} replies within {within:?}",
            out.len()
        );
        stream.set_read_timeout(Some(left)).unwrap();
        let got = stream.read(&mut chunk).expect("read replies");
        assert!(got > 0, "server closed after {} of {n} replies", out.len());
        buf.extend_from_slice(&chunk[..got]);
    }
    assert_eq!(pos, buf.len(), "no bytes beyond the expected replies");
    out
}

#[test]
fn pipeline_of_100k_commands_answers_in_order_across_cores() {
    const N: usize = 100_000;
    let server = Server::with_cores(2);
    let strs = [key_on_core(0, 2, "ps"), key_on_core(1, 2, "ps")];
    let ctrs = [key_on_core(0, 2, "pc"), key_on_core(1, 2, "pc")];
    let mut last = [String::new(), String::new()];
    let mut count = [0i64; 2];
    let mut bytes = Vec::with_capacity(N * 40);
    let mut want = Vec::with_capacity(N);
    for i in 0..N {
        // Alternate cores every command and every group, so consecutive commands cross.
        let c = (i + i / 4) % 2;
        match i % 4 {
            0 => {
                let v = format!("v{i}");
                bytes.extend(encode_cmd(&[b"SET", strs[c].as_bytes(), v.as_bytes()]));
                last[c] = v;
                want.push(Resp::ok());
            }
            1 => {
                bytes.extend(encode_cmd(&[b"GET", strs[c].as_bytes()]));
                want.push(if last[c].is_empty() {
                    Resp::Nil
                } else {
                    Resp::bulk(&last[c])
                });
            }
            2 => {
                bytes.extend(encode_cmd(&[b"INCR", ctrs[c].as_bytes()]));
                count[c] += 1;
                want.push(int(count[c]));
            }
            _ => {
                bytes.extend(encode_cmd(&[b"GET", ctrs[c].as_bytes()]));
                want.push(if count[c] == 0 {
                    Resp::Nil
                } else {
                    Resp::bulk(&count[c].to_string())
                });
            }
        }
    }
    let mut raw = server.raw();
    let mut writer = raw.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || writer.write_all(&bytes));
    let got = read_replies(&mut raw.stream, N, Duration::from_secs(60));
    sender.join().unwrap().expect("send the pipeline");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "reply {i}");
    }
    let mut con = server.client();
    let totals: Vec<i64> = redis::cmd("MGET")
        .arg(&ctrs[0])
        .arg(&ctrs[1])
        .query(&mut con)
        .unwrap();
    assert_eq!(totals, count.to_vec());
}

#[test]
fn a_thousand_concurrent_connections() {
    const CONNS: usize = 1000;
    const THREADS: usize = 10;
    let server = Server::with_cores(2);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut conns: Vec<(usize, TcpStream)> = Vec::with_capacity(CONNS);
    for i in 0..CONNS {
        assert!(Instant::now() < deadline, "connecting took too long");
        let s = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
        s.set_nodelay(true).unwrap();
        conns.push((i, s));
    }
    // All are open at once; each thread drives its share, interleaved.
    let counter_a = key_on_core(0, 2, "many-total");
    let counter_b = key_on_core(1, 2, "many-total");
    let mut groups: Vec<Vec<(usize, TcpStream)>> = (0..THREADS).map(|_| Vec::new()).collect();
    for (n, c) in conns.into_iter().enumerate() {
        groups[n % THREADS].push(c);
    }
    let handles: Vec<_> = groups
        .into_iter()
        .map(|mut group| {
            let (ca, cb) = (counter_a.clone(), counter_b.clone());
            std::thread::spawn(move || {
                for (i, s) in group.iter_mut() {
                    let key = format!("conn:{i}");
                    let val = i.to_string();
                    let mut b = encode_cmd(&[b"SET", key.as_bytes(), val.as_bytes()]);
                    b.extend(encode_cmd(&[b"INCR", ca.as_bytes()]));
                    b.extend(encode_cmd(&[b"INCR", cb.as_bytes()]));
                    b.extend(encode_cmd(&[b"GET", key.as_bytes()]));
                    b.extend(encode_cmd(&[b"PING"]));
                    s.write_all(&b).expect("send");
                }
                for (i, s) in group.iter_mut() {
                    let r = read_replies(s, 5, Duration::from_secs(30));
                    assert_eq!(r[0], Resp::ok(), "conn {i}");
                    assert!(matches!(r[1], Resp::Int(n) if n >= 1), "conn {i}: {r:?}");
                    assert!(matches!(r[2], Resp::Int(n) if n >= 1), "conn {i}: {r:?}");
                    assert_eq!(r[3], Resp::bulk(&i.to_string()), "conn {i}");
                    assert_eq!(r[4], Resp::Simple("PONG".into()), "conn {i}");
                }
                group
            })
        })
        .collect();
    let mut kept = Vec::new();
    for h in handles {
        kept.push(h.join().expect("a connection thread failed"));
    }
    let mut con = server.client();
    let totals: Vec<i64> = redis::cmd("MGET")
        .arg(&counter_a)
        .arg(&counter_b)
        .query(&mut con)
        .unwrap();
    assert_eq!(totals, vec![CONNS as i64, CONNS as i64]);
    let info: String = redis::cmd("INFO").arg("clients").query(&mut con).unwrap();
    let connected: usize = info
        .lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("connected_clients");
    assert!(connected > CONNS, "connected_clients:{connected}");
    let dbsize: i64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(dbsize, CONNS as i64 + 2);
    drop(kept);
    // Closed connections are forgotten.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info: String = redis::cmd("INFO").arg("clients").query(&mut con).unwrap();
        if info.contains("connected_clients:1\r\n") {
            break;
        }
        assert!(Instant::now() < deadline, "clients not released: {info}");
        std::thread::yield_now();
    }
}

#[test]
fn a_command_split_across_many_tiny_writes() {
    let server = Server::with_cores(2);
    let mut r = server.raw();
    let value = "split-value-with-some-length";
    let mut bytes = encode_cmd(&[b"SET", b"split", value.as_bytes()]);
    bytes.extend(encode_cmd(&[b"GET", b"split"]));
    bytes.extend_from_slice(b"ECHO \"inline split\"\r\n");
    for b in &bytes {
        r.send(std::slice::from_ref(b));
        r.stream.flush().unwrap();
    }
    assert_eq!(r.read(), Resp::ok());
    assert_eq!(r.read(), Resp::bulk(value));
    assert_eq!(r.read(), Resp::bulk("inline split"));
    // Split at every point of a header and of the bulk, in pairs.
    let cmd = encode_cmd(&[b"APPEND", b"split", b"++"]);
    for cut in 1..cmd.len() {
        r.send(&cmd[..cut]);
        r.stream.flush().unwrap();
        r.send(&cmd[cut..]);
        assert_eq!(
            r.read(),
            int((value.len() + 2 * cut) as i64),
            "cut at {cut}"
        );
    }
}

#[test]
fn a_10mb_value_round_trips() {
    let server = Server::with_cores(2);
    let value: Vec<u8> = (0..10 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    for core in 0..2 {
        let key = key_on_core(core, 2, "big");
        let mut r = server.raw();
        r.send_cmd(&[b"SET", key.as_bytes(), &value]);
        assert_eq!(r.read(), Resp::ok());
        r.send_cmd(&[b"STRLEN", key.as_bytes()]);
        assert_eq!(r.read(), int(value.len() as i64));
        r.send_cmd(&[b"GET", key.as_bytes()]);
        assert!(r.read() == Resp::Bulk(value.clone()), "GET of core {core}");
        // Through the redis crate as well.
        let mut con = server.client();
        let got: Vec<u8> = redis::cmd("GET").arg(&key).query(&mut con).unwrap();
        assert!(got == value);
    }
}

// ---------------------------------------------------------------------------------------
// Limits

#[test]
fn proto_max_bulk_len_limits_arguments_and_values() {
    let server = Server::start(2, &["--proto-max-bulk-len", "1mb"]);
    let mut con = server.client();
    let mut other = server.raw();
    assert_eq!(other.cmd(&["SET", "before", "intact"]), Resp::ok());
    let mut r = server.raw();
    // Exactly the limit is accepted.
    let value = vec![b'z'; 1024 * 1024];
    r.send_cmd(&[b"SET", b"pk", &value]);
    assert_eq!(r.read(), Resp::ok());
    // Growing past it is refused.
    let too_long = Resp::err("ERR string exceeds maximum allowed size (proto-max-bulk-len)");
    assert_eq!(r.cmd(&["APPEND", "pk", "x"]), too_long);
    assert_eq!(r.cmd(&["SETRANGE", "pk", "1048576", "x"]), too_long);
    assert_eq!(r.cmd(&["STRLEN", "pk"]), int(1024 * 1024));
    // A longer argument is a protocol error.
    r.send(b"*3\r\n$3\r\nSET\r\n$2\r\npk\r\n$1048577\r\n");
    assert_eq!(r.read(), proto_err("invalid bulk length"));
    assert_closed(&mut r, "bulk over proto-max-bulk-len");
    let got: String = redis::cmd("GET").arg("before").query(&mut con).unwrap();
    assert_eq!(got, "intact");
    assert_eq!(other.cmd(&["GET", "before"]), Resp::bulk("intact"));
    let cfg: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("proto-max-bulk-len")
        .query(&mut con)
        .unwrap();
    assert_eq!(cfg, vec!["proto-max-bulk-len", "1048576"]);
}

#[test]
fn client_query_buffer_limit_closes_a_client_that_exceeds_it() {
    let server = Server::start(2, &["--client-query-buffer-limit", "1mb"]);
    let mut other = server.raw();
    assert_eq!(other.cmd(&["SET", "before", "intact"]), Resp::ok());

    // An incomplete command that has buffered more than the limit: closed, no reply.
    let mut r = server.raw();
    let mut bytes = b"*3\r\n$3\r\nSET\r\n$2\r\nqb\r\n$4194304\r\n".to_vec();
    bytes.extend(vec![b'q'; 2 * 1024 * 1024]);
    let mut w = r.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let _ = w.write_all(&bytes);
    });
    let (closed, extra) = closed_within(&mut r, Duration::from_secs(10));
    sender.join().unwrap();
    assert!(closed, "still open; sent back {extra:?}");
    assert!(extra.is_empty(), "no reply expected, got {extra:?}");

    // A whole command larger than the limit too (Redis checks the buffer before running).
    let mut r = server.raw();
    let mut bytes = b"*3\r\n$3\r\nSET\r\n$2\r\nqb\r\n$2097152\r\n".to_vec();
    bytes.extend(vec![b'q'; 2 * 1024 * 1024]);
    bytes.extend_from_slice(b"\r\n");
    let mut w = r.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let _ = w.write_all(&bytes);
    });
    let (closed, extra) = closed_within(&mut r, Duration::from_secs(10));
    sender.join().unwrap();
    assert!(closed, "still open; sent back {extra:?}");
    assert_eq!(other.cmd(&["EXISTS", "qb"]), int(0));

    // Many small commands adding up to more than the limit are fine: each is consumed.
    let mut r = server.raw();
    let n = 150_000;
    let bytes = b"SET small x\r\n".repeat(n);
    let mut w = r.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || w.write_all(&bytes));
    let replies = read_replies(&mut r.stream, n, Duration::from_secs(60));
    sender.join().unwrap().unwrap();
    assert!(replies.iter().all(|x| *x == Resp::ok()));

    assert_eq!(other.cmd(&["GET", "before"]), Resp::bulk("intact"));
}

// ---------------------------------------------------------------------------------------
// Malformed input: an exact protocol error, the connection closed, everyone else fine.

/// Sends `bytes` on a fresh connection; expects the replies in `before` (for commands ahead
/// of the bad bytes), then `-ERR Protocol error: <text>` and the connection closed.
fn expect_protocol_error(server: &Server, bytes: &[u8], before: &[Resp], text: &str) {
    let mut bad = server.raw();
    bad.send(bytes);
    for (i, want) in before.iter().enumerate() {
        assert_eq!(&bad.read(), want, "reply {i} before the error for {text:?}");
    }
    assert_eq!(bad.read(), proto_err(text), "sent {:?}", short(bytes));
    assert_closed(&mut bad, text);
}

fn short(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(60)]).into_owned();
    if bytes.len() > 60 {
        format!("{s}… ({} bytes)", bytes.len())
    } else {
        s
    }
}

/// The clients and data that must outlive every protocol error.
struct Bystander {
    raw: Raw,
    con: redis::Connection,
    a: String,
    b: String,
}

impl Bystander {
    fn new(server: &Server, auth: Option<&str>) -> Bystander {
        let mut raw = server.raw();
        let mut con = match auth {
            Some(p) => {
                let c = redis::Client::open(format!("redis://:{p}@127.0.0.1:{}/", server.port))
                    .unwrap();
                let con = c
                    .get_connection_with_timeout(Duration::from_secs(10))
                    .unwrap();
                con.set_read_timeout(Some(REPLY_DEADLINE)).unwrap();
                con
            }
            None => server.client(),
        };
        if let Some(p) = auth {
            assert_eq!(raw.cmd(&["AUTH", p]), Resp::ok());
        }
        let a = key_on_core(0, 2, "intact");
        let b = key_on_core(1, 2, "intact");
        assert_eq!(raw.cmd(&["MSET", &a, "A", &b, "B"]), Resp::ok());
        let _: () = redis::cmd("SET")
            .arg("intact-crate")
            .arg("C")
            .query(&mut con)
            .unwrap();
        Bystander { raw, con, a, b }
    }

    fn check(&mut self) {
        assert_eq!(
            self.raw.cmd(&["MGET", &self.a, &self.b, "intact-crate"]),
            Resp::Array(vec![bulk(b"A"), bulk(b"B"), bulk(b"C")])
        );
        let got: Vec<String> = redis::cmd("MGET")
            .arg(&self.a)
            .arg(&self.b)
            .query(&mut self.con)
            .unwrap();
        assert_eq!(got, vec!["A", "B"]);
        assert_eq!(self.raw.cmd(&["PING"]), Resp::Simple("PONG".into()));
    }
}

#[test]
fn malformed_multibulk_headers() {
    let server = Server::with_cores(2);
    let mut by = Bystander::new(&server, None);
    for bytes in [
        &b"*x\r\n"[..],
        b"*\r\n",
        b"*+1\r\n$4\r\nPING\r\n",
        b"*1x\r\n",
        b"*3000000000\r\n",
        b"*99999999999999999999\r\n",
    ] {
        expect_protocol_error(&server, bytes, &[], "invalid multibulk length");
        by.check();
    }
    // Commands ahead of the bad bytes are answered first.
    expect_protocol_error(
        &server,
        b"PING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nok\r\n*x\r\n",
        &[Resp::Simple("PONG".into()), Resp::bulk("ok")],
        "invalid multibulk length",
    );
    by.check();
}

#[test]
fn malformed_bulk_lengths() {
    let server = Server::with_cores(2);
    let mut by = Bystander::new(&server, None);
    for bytes in [
        &b"*1\r\n$x\r\n"[..],
        b"*1\r\n$-1\r\n",
        b"*1\r\n$-5\r\n",
        b"*1\r\n$\r\n",
        b"*2\r\n$4\r\nECHO\r\n$+3\r\nabc\r\n",
        b"*1\r\n$999999999999\r\n",
        b"*1\r\n$536870913\r\n",
    ] {
        expect_protocol_error(&server, bytes, &[], "invalid bulk length");
        by.check();
    }
}

#[test]
fn malformed_expected_dollar() {
    let server = Server::with_cores(2);
    let mut by = Bystander::new(&server, None);
    for (bytes, got) in [
        (&b"*1\r\n+OK\r\n"[..], '+'),
        (b"*1\r\n*1\r\n", '*'),
        (b"*2\r\n$4\r\nECHO\r\n:5\r\n", ':'),
        (b"*1\r\nPING\r\n", 'P'),
    ] {
        expect_protocol_error(&server, bytes, &[], &format!("expected '$', got '{got}'"));
        by.check();
    }
}

#[test]
fn malformed_too_big_count_strings_and_inline() {
    let server = Server::with_cores(2);
    let mut by = Bystander::new(&server, None);
    // 64 KiB + 1 bytes without a newline: just over Redis's PROTO_INLINE_MAX_SIZE.
    let over = 64 * 1024 + 1;
    let mut mbulk = b"*".to_vec();
    mbulk.resize(over, b'1');
    expect_protocol_error(&server, &mbulk, &[], "too big mbulk count string");
    by.check();
    let mut bulk_hdr = b"*1\r\n$".to_vec();
    bulk_hdr.resize(4 + over, b'1');
    expect_protocol_error(&server, &bulk_hdr, &[], "too big bulk count string");
    by.check();
    let inline = vec![b'a'; over];
    expect_protocol_error(&server, &inline, &[], "too big inline request");
    by.check();
    // Exactly 64 KiB of inline request (without its CRLF) is still a request: Redis checks
    // the limit only while no newline has arrived, and reads 16 KiB at a time.
    let mut r = server.raw();
    let mut line = b"ECHO ".to_vec();
    line.resize(64 * 1024, b'e');
    line.extend_from_slice(b"\r\n");
    r.send(&line);
    match r.read() {
        Resp::Bulk(b) => assert!(b.len() == 64 * 1024 - 5 && b.iter().all(|&c| c == b'e')),
        other => panic!("a 65536-byte inline ECHO: {other:?}"),
    }
}

#[test]
fn malformed_unbalanced_quotes() {
    let server = Server::with_cores(2);
    let mut by = Bystander::new(&server, None);
    for bytes in [
        &b"SET k \"abc\r\n"[..],
        b"SET k 'abc\r\n",
        b"ECHO \"a\"b\r\n",
        b"ECHO 'a'b\r\n",
        b"ECHO \"a\"\"b\"\r\n",
        b"ECHO a\"b\"c\r\n",
    ] {
        expect_protocol_error(&server, bytes, &[], "unbalanced quotes in request");
        by.check();
    }
    expect_protocol_error(
        &server,
        b"SET q 1\r\nECHO \"x\r\nGET q\r\n",
        &[Resp::ok()],
        "unbalanced quotes in request",
    );
    by.check();
    // The command after the bad line never ran... and the one before did.
    assert_eq!(by.raw.cmd(&["GET", "q"]), Resp::bulk("1"));
}

#[test]
fn malformed_unauthenticated_lengths_under_requirepass() {
    let server = Server::start(2, &["--requirepass", "pw"]);
    let mut by = Bystander::new(&server, Some("pw"));
    expect_protocol_error(&server, b"*11\r\n", &[], "unauthenticated multibulk length");
    by.check();
    expect_protocol_error(
        &server,
        b"*1\r\n$16385\r\n",
        &[],
        "unauthenticated bulk length",
    );
    by.check();
    expect_protocol_error(
        &server,
        b"GET k\r\n*2\r\n$4\r\nAUTH\r\n$20000\r\n",
        &[Resp::err("NOAUTH Authentication required.")],
        "unauthenticated bulk length",
    );
    by.check();
    // The limits themselves are still fine before AUTH, and gone after it.
    let mut r = server.raw();
    let mut cmd: Vec<&[u8]> = vec![b"ECHO"];
    let filler = vec![b'x'; 16384];
    cmd.push(&filler);
    r.send_cmd(&cmd);
    assert_eq!(r.read(), Resp::err("NOAUTH Authentication required."));
    let ten: Vec<&str> = std::iter::once("MGET").chain(["k"; 9]).collect();
    assert_eq!(r.cmd(&ten), Resp::err("NOAUTH Authentication required."));
    assert_eq!(r.cmd(&["AUTH", "pw"]), Resp::ok());
    let mut many: Vec<&str> = vec!["DEL"];
    many.extend(["k"; 50]);
    assert_eq!(r.cmd(&many), int(0));
    let big = vec![b'y'; 100_000];
    r.send_cmd(&[b"SET", b"big", &big]);
    assert_eq!(r.read(), Resp::ok());
    by.check();
}
