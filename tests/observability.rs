//! Command statistics (INFO commandstats, errorstats, latencystats), as Redis 7 prints them,
//! counted on every core.

mod common;
use common::*;

/// The `name:...` line of an INFO section, or None.
fn info_line(text: &str, name: &str) -> Option<String> {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}:")))
        .map(|l| l.trim_end().to_string())
}

fn info(r: &mut Raw, section: &str) -> String {
    match r.cmd(&["INFO", section]) {
        Resp::Bulk(b) => String::from_utf8(b).unwrap(),
        Resp::Verbatim(t) => t,
        other => panic!("INFO {section}: {other:?}"),
    }
}

/// calls, rejected_calls and failed_calls of a cmdstat line.
fn counts(line: &str) -> (u64, u64, u64) {
    let field = |k: &str| -> u64 {
        line.split([':', ','])
            .find_map(|f| f.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} in {line}"))
            .parse()
            .unwrap()
    };
    (
        field("calls"),
        field("rejected_calls"),
        field("failed_calls"),
    )
}

#[test]
fn commandstats_errorstats_and_latencystats_count_every_core() {
    let s = Server::with_cores(2);
    let mut r = s.raw();
    let here = key_on_core(0, 2, "a");
    let there = key_on_core(1, 2, "b");
    // Calls on both cores, one pipelined batch for the other core among them.
    assert_eq!(r.cmd(&["SET", &here, "1"]), Resp::ok());
    assert_eq!(r.cmd(&["SET", &there, "1"]), Resp::ok());
    let mut pipelined = Vec::new();
    for _ in 0..10 {
        pipelined.extend(encode_cmd(&[b"GET", there.as_bytes()]));
    }
    r.send(&pipelined);
    r.read_each(10, |_, reply| assert_eq!(reply, Resp::bulk("1")));
    // A failed call (ran, answered an error) on each core; a rejected one (arity).
    let not_int = Resp::Error("ERR value is not an integer or out of range".into());
    assert_eq!(r.cmd(&["APPEND", &here, "x"]), Resp::Int(2));
    assert_eq!(r.cmd(&["INCR", &here]), not_int);
    assert_eq!(r.cmd(&["SET", &there, "y", "GET"]), Resp::bulk("1"));
    assert_eq!(r.cmd(&["INCR", &there]), not_int);
    assert_eq!(
        r.cmd(&["GET"]),
        Resp::Error("ERR wrong number of arguments for 'get' command".into())
    );
    let stats = info(&mut r, "commandstats");
    assert!(stats.starts_with("# Commandstats\r\n"), "{stats}");
    assert_eq!(
        counts(&info_line(&stats, "cmdstat_set").unwrap()),
        (3, 0, 0)
    );
    assert_eq!(
        counts(&info_line(&stats, "cmdstat_get").unwrap()),
        (10, 1, 0)
    );
    assert_eq!(
        counts(&info_line(&stats, "cmdstat_incr").unwrap()),
        (2, 0, 2)
    );
    let line = info_line(&stats, "cmdstat_set").unwrap();
    let usec: u64 = line
        .split(',')
        .nth(1)
        .unwrap()
        .strip_prefix("usec=")
        .unwrap()
        .parse()
        .unwrap();
    let per_call: f64 = line
        .split(',')
        .nth(2)
        .unwrap()
        .strip_prefix("usec_per_call=")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        usec > 0 && (per_call - usec as f64 / 3.0).abs() <= 1.0,
        "{line}"
    );

    let errors = info(&mut r, "errorstats");
    assert!(errors.starts_with("# Errorstats\r\n"), "{errors}");
    // Two INCRs and the arity error: 3, the same as total_error_replies.
    assert_eq!(
        info_line(&errors, "errorstat_ERR").unwrap(),
        "errorstat_ERR:count=3"
    );
    assert_eq!(r.info_int("total_error_replies"), 3);

    let latency = info(&mut r, "latencystats");
    let get = info_line(&latency, "latency_percentiles_usec_get").unwrap();
    let p: Vec<f64> = get
        .split_once(':')
        .unwrap()
        .1
        .split(',')
        .map(|kv| kv.split_once('=').unwrap().1.parse().unwrap())
        .collect();
    assert!(
        get.contains(":p50=") && get.contains(",p99=") && get.contains(",p99.9="),
        "{get}"
    );
    assert!(p[0] > 0.0 && p[0] <= p[1] && p[1] <= p[2], "{get}");

    // Not in the default INFO; in INFO all, between CPU and Cluster as Redis has them.
    assert!(!info(&mut r, "default").contains("# Commandstats"));
    let all = info(&mut r, "all");
    let order: Vec<&str> = all.lines().filter(|l| l.starts_with("# ")).collect();
    let at = |name: &str| {
        order
            .iter()
            .position(|l| *l == name)
            .unwrap_or_else(|| panic!("{name} missing: {order:?}"))
    };
    assert!(at("# CPU") < at("# Commandstats"));
    assert!(at("# Commandstats") < at("# Errorstats"));
    assert!(at("# Errorstats") < at("# Latencystats"));
    assert!(at("# Latencystats") < at("# Cluster"));

    // The tessera section: a line per data core.
    let per_core = info(&mut r, "tessera");
    assert!(per_core.starts_with("# Tessera\r\n"), "{per_core}");
    let hops: u64 = ["core0", "core1"]
        .iter()
        .map(|c| {
            let line = info_line(&per_core, c).unwrap_or_else(|| panic!("no {c}: {per_core}"));
            assert!(line.contains(",keys=1,"), "{line}");
            line.split(',')
                .find_map(|f| f.strip_prefix("hops="))
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert!(hops > 0, "the pipelined GETs crossed cores: {per_core}");
    assert!(at("# Keyspace") < order.iter().position(|l| *l == "# Tessera").unwrap());

    // Containers count per subcommand, as Redis: INFO ran as `info`, and the CONFIG GET
    // below as `config|get` (a container's wrong arity is rejected under its subcommand).
    assert!(matches!(r.cmd(&["CONFIG", "GET", "port"]), Resp::Array(_)));
    assert!(matches!(r.cmd(&["CONFIG", "GET"]), Resp::Error(_)));
    let stats = info(&mut r, "commandstats");
    assert_eq!(
        counts(&info_line(&stats, "cmdstat_config|get").unwrap()),
        (1, 1, 0)
    );
    assert_eq!(info_line(&stats, "cmdstat_config"), None, "{stats}");
    // CONFIG RESETSTAT clears them on every core.
    assert_eq!(r.cmd(&["CONFIG", "RESETSTAT"]), Resp::ok());
    let stats = info(&mut r, "commandstats");
    assert_eq!(info_line(&stats, "cmdstat_get"), None, "{stats}");
    assert_eq!(info_line(&stats, "cmdstat_set"), None, "{stats}");
    assert_eq!(
        info_line(&info(&mut r, "errorstats"), "errorstat_ERR"),
        None
    );
}

/// One SLOWLOG GET entry: (id, duration µs, arguments, client address, client name).
fn entries(r: &mut Raw, count: &str) -> Vec<(i64, i64, Vec<String>, String, String)> {
    let Resp::Array(list) = r.cmd(&["SLOWLOG", "GET", count]) else {
        panic!("SLOWLOG GET");
    };
    list.into_iter()
        .map(|e| {
            let Resp::Array(f) = e else {
                panic!("entry {e:?}")
            };
            assert_eq!(f.len(), 6, "{f:?}");
            let int = |v: &Resp| match v {
                Resp::Int(n) => *n,
                other => panic!("{other:?}"),
            };
            let text = |v: &Resp| match v {
                Resp::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
                other => panic!("{other:?}"),
            };
            let Resp::Array(args) = &f[3] else {
                panic!("args {f:?}")
            };
            assert!(int(&f[1]) > 1_700_000_000, "a Unix time: {f:?}");
            (
                int(&f[0]),
                int(&f[2]),
                args.iter().map(text).collect(),
                text(&f[4]),
                text(&f[5]),
            )
        })
        .collect()
}

#[test]
fn slowlog_keeps_slow_calls_from_every_core_newest_first() {
    let s = Server::with_cores(2);
    let mut r = s.raw();
    // Nothing is slow at the default threshold (10 ms) here.
    assert_eq!(r.cmd(&["SET", "k", "v"]), Resp::ok());
    assert_eq!(r.cmd(&["SLOWLOG", "LEN"]), Resp::Int(0));
    // A threshold of 0 µs makes every command slow.
    assert_eq!(
        r.cmd(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]),
        Resp::ok()
    );
    assert_eq!(r.cmd(&["CLIENT", "SETNAME", "checker"]), Resp::ok());
    let here = key_on_core(0, 2, "a");
    let there = key_on_core(1, 2, "b");
    assert_eq!(r.cmd(&["SET", &here, "1"]), Resp::ok());
    // Pipelined to the other core: logged there, with this client's address and name.
    let mut pipelined = encode_cmd(&[b"GET", there.as_bytes()]);
    pipelined.extend(encode_cmd(&[b"ECHO", b"hi"]));
    r.send(&pipelined);
    r.read_each(2, |_, _| {});
    // Long arguments are cut at 128 bytes, more than 32 arguments summarised.
    let long = "x".repeat(200);
    assert_eq!(r.cmd(&["SET", &here, &long]), Resp::ok());
    let many: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    let mut del = vec!["DEL"];
    del.extend(many.iter().map(String::as_str));
    assert_eq!(r.cmd(&del), Resp::Int(0));
    // Secrets are redacted.
    assert!(matches!(
        r.cmd(&["AUTH", "nobody", "secret"]),
        Resp::Error(_)
    ));

    let got = entries(&mut r, "-1");
    let names: Vec<&str> = got.iter().map(|e| e.2[0].as_str()).collect();
    assert_eq!(
        names,
        ["AUTH", "DEL", "SET", "ECHO", "GET", "SET", "CLIENT", "CONFIG"],
        "newest first: {got:?}"
    );
    let ids: Vec<i64> = got.iter().map(|e| e.0).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    for e in &got[..got.len() - 2] {
        assert_eq!(e.4, "checker", "{e:?}");
        assert!(e.3.starts_with("127.0.0.1:"), "{e:?}");
        assert!(e.1 >= 0);
    }
    assert_eq!(got[0].2, ["AUTH", "(redacted)", "(redacted)"]);
    assert_eq!(got[1].2.len(), 32);
    assert_eq!(got[1].2[31], "... (10 more arguments)");
    assert_eq!(
        got[2].2[2],
        format!("{}... (72 more bytes)", "x".repeat(128))
    );
    assert_eq!(got[4].2, ["GET", there.as_str()]);
    assert_eq!(entries(&mut r, "2").len(), 2);
    assert_eq!(entries(&mut r, "0").len(), 0);
    // Each SLOWLOG GET was logged too (they are slow at 0 µs).
    assert_eq!(r.cmd(&["SLOWLOG", "LEN"]), Resp::Int(11));
    // slowlog-max-len bounds it; RESET empties it.
    assert_eq!(
        r.cmd(&["CONFIG", "SET", "slowlog-max-len", "3"]),
        Resp::ok()
    );
    assert_eq!(entries(&mut r, "-1").len(), 3);
    assert_eq!(r.cmd(&["SLOWLOG", "LEN"]), Resp::Int(3));
    assert_eq!(
        r.cmd(&["CONFIG", "SET", "slowlog-log-slower-than", "-1"]),
        Resp::ok()
    );
    assert_eq!(r.cmd(&["SLOWLOG", "RESET"]), Resp::ok());
    assert_eq!(r.cmd(&["SET", "k", "v"]), Resp::ok());
    assert_eq!(r.cmd(&["SLOWLOG", "LEN"]), Resp::Int(0));
    // Errors as Redis's.
    let count_err = Resp::Error("ERR count should be greater than or equal to -1".into());
    assert_eq!(r.cmd(&["SLOWLOG", "GET", "-2"]), count_err);
    assert_eq!(r.cmd(&["SLOWLOG", "GET", "x"]), count_err);
    assert!(
        matches!(r.cmd(&["SLOWLOG", "NOPE"]), Resp::Error(e) if e.starts_with("ERR unknown subcommand 'NOPE'"))
    );
    assert!(
        matches!(r.cmd(&["CONFIG", "SET", "slowlog-max-len", "-1"]), Resp::Error(e) if e.contains("slowlog-max-len"))
    );
    assert_eq!(
        r.cmd(&["CONFIG", "GET", "slowlog-log-slower-than"]),
        Resp::Array(vec![
            Resp::bulk("slowlog-log-slower-than"),
            Resp::bulk("-1")
        ])
    );
}

/// An HTTP request to the metrics port; the status line and the body.
fn http(port: u16, request: &[u8]) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics port");
    s.set_read_timeout(Some(REPLY_DEADLINE)).unwrap();
    s.write_all(request).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    (head.lines().next().unwrap().to_string(), body.to_string())
}

fn scrape(port: u16) -> prometheus_parse::Scrape {
    let (status, body) = http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert!(
        body.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("parses")
}

/// The value of METRIC with the label (if any).
fn value(s: &prometheus_parse::Scrape, metric: &str, label: Option<(&str, &str)>) -> f64 {
    use prometheus_parse::Value;
    let found = s
        .samples
        .iter()
        .find(|x| x.metric == metric && label.is_none_or(|(k, v)| x.labels.get(k) == Some(v)))
        .unwrap_or_else(|| panic!("no {metric} {label:?}"));
    match &found.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(b) => b.iter().map(|c| c.count).fold(0.0, f64::max),
        Value::Summary(_) => panic!("a summary"),
    }
}

#[test]
fn the_metrics_endpoint_parses_and_its_counters_follow_the_traffic() {
    let port = free_port();
    let p = port.to_string();
    let s = Server::start(2, &["--metrics-port", &p]);
    let mut r = s.raw();
    let before = scrape(port);
    let calls = |x: &prometheus_parse::Scrape| {
        x.samples
            .iter()
            .find(|m| {
                m.metric == "tessera_command_calls_total" && m.labels.get("cmd") == Some("get")
            })
            .map_or(0.0, |m| match m.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => panic!("calls is a counter"),
            })
    };
    assert_eq!(calls(&before), 0.0);
    // An empty database has no tessera_keys sample.
    assert!(!before.samples.iter().any(|m| m.metric == "tessera_keys"));
    for i in 0..20 {
        let k = format!("k{i}");
        assert_eq!(r.cmd(&["SET", &k, "v"]), Resp::ok());
        assert_eq!(r.cmd(&["GET", &k]), Resp::bulk("v"));
    }
    assert_eq!(r.cmd(&["GET", "missing"]), Resp::Nil);
    assert!(matches!(r.cmd(&["GET"]), Resp::Error(_)));
    let after = scrape(port);
    assert_eq!(calls(&after), 21.0);
    assert_eq!(
        value(&after, "tessera_command_calls_total", Some(("cmd", "set"))),
        20.0
    );
    assert_eq!(
        value(
            &after,
            "tessera_command_rejected_calls_total",
            Some(("cmd", "get"))
        ),
        1.0
    );
    assert_eq!(value(&after, "tessera_keys", Some(("db", "db0"))), 20.0);
    assert_eq!(value(&after, "tessera_keyspace_hits_total", None), 20.0);
    assert_eq!(value(&after, "tessera_keyspace_misses_total", None), 1.0);
    assert_eq!(
        value(&after, "tessera_errors_total", Some(("prefix", "ERR"))),
        1.0
    );
    assert_eq!(value(&after, "tessera_connected_clients", None), 1.0);
    assert!(value(&after, "tessera_memory_used_bytes", None) > 0.0);
    // The histogram's +Inf bucket holds every call; its count is the calls.
    assert_eq!(
        value(
            &after,
            "tessera_command_duration_seconds",
            Some(("cmd", "get"))
        ),
        21.0
    );
    assert_eq!(
        value(
            &after,
            "tessera_command_duration_seconds_count",
            Some(("cmd", "get"))
        ),
        21.0
    );
    // Both cores answer, each under its label.
    let per_core: f64 = ["0", "1"]
        .iter()
        .map(|c| value(&after, "tessera_core_commands_processed", Some(("core", c))))
        .sum();
    assert_eq!(
        per_core,
        value(&after, "tessera_commands_processed_total", None)
    );
    assert!(value(&after, "tessera_cross_core_hops_total", None) > 0.0);
    // Help texts and types as the conventions have them.
    assert!(after.docs.contains_key("tessera_command_calls"));
    assert!(after.docs.contains_key("tessera_command_duration_seconds"));

    // Anything else is refused, and the endpoint and the node survive it.
    assert_eq!(
        http(port, b"GET / HTTP/1.1\r\n\r\n").0,
        "HTTP/1.1 404 Not Found"
    );
    assert_eq!(
        http(port, b"POST /metrics HTTP/1.1\r\n\r\n").0,
        "HTTP/1.1 405 Method Not Allowed"
    );
    let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 20_000));
    huge.extend_from_slice(b"\r\n\r\n");
    assert_eq!(
        http(port, &huge).0,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    {
        use std::io::Write;
        let mut junk = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        junk.write_all(b"\x00\xff garbage").unwrap();
    }
    assert_eq!(calls(&scrape(port)), 21.0);
    assert_eq!(r.cmd(&["PING"]), Resp::Simple("PONG".into()));
}

#[test]
fn a_metrics_port_that_cannot_be_bound_stops_the_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let text = refused_start(&["--metrics-port", &port]);
    assert!(
        text.contains(&format!("cannot serve metrics on 127.0.0.1:{port}")),
        "{text}"
    );
}

#[test]
fn json_logs_record_config_changes_and_refused_clients_without_secrets() {
    let s = Server::start(1, &["--log-format", "json"]);
    let mut r = s.raw();
    assert_eq!(
        r.cmd(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]),
        Resp::ok()
    );
    assert_eq!(r.cmd(&["CONFIG", "SET", "maxclients", "1"]), Resp::ok());
    // A second client is refused, and that is logged once.
    for _ in 0..3 {
        let mut extra = Raw::connect(s.port);
        assert_eq!(
            extra.read(),
            Resp::Error("ERR max number of clients reached".into())
        );
    }
    assert_eq!(
        r.cmd(&["CONFIG", "SET", "requirepass", "hunter2"]),
        Resp::ok()
    );
    assert_eq!(
        r.cmd(&["CONFIG", "GET", "log-format"]),
        Resp::Array(vec![Resp::bulk("log-format"), Resp::bulk("json")])
    );
    // Each line is written (to stderr, unbuffered) before the reply it belongs to is sent.
    let log = s.log_text();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 5, "{log}");
    for l in &lines {
        assert!(
            l.starts_with('{') && l.ends_with('}') && l.contains("\"level\":"),
            "not a JSON line: {l}"
        );
    }
    assert!(
        log.contains("CONFIG SET maxmemory-policy allkeys-lru"),
        "{log}"
    );
    assert!(log.contains("CONFIG SET requirepass (redacted)"), "{log}");
    assert!(!log.contains("hunter2"), "{log}");
    let refused = lines
        .iter()
        .filter(|l| l.contains("max number of clients reached"))
        .count();
    assert_eq!(refused, 1, "{log}");
    // No line per request at the default level.
    assert!(!log.contains("\"GET\"") && !log.contains("PING"), "{log}");
}

#[test]
fn latency_monitor_samples_events_over_the_threshold() {
    let s = Server::with_cores(2);
    let mut r = s.raw();
    // Enough keys that KEYS * takes milliseconds.
    let mut pipelined = Vec::new();
    for i in 0..60_000 {
        pipelined.extend(encode_cmd(&[b"SET", format!("key:{i}").as_bytes(), b"v"]));
    }
    r.send(&pipelined);
    r.read_each(60_000, |_, reply| assert_eq!(reply, Resp::ok()));
    let keys_star = |r: &mut Raw| match r.cmd(&["KEYS", "*"]) {
        Resp::Array(v) => assert_eq!(v.len(), 60_000),
        other => panic!("{other:?}"),
    };
    // Off by default: nothing is sampled.
    keys_star(&mut r);
    assert_eq!(r.cmd(&["LATENCY", "LATEST"]), Resp::Array(vec![]));
    assert_eq!(
        r.cmd(&["CONFIG", "SET", "latency-monitor-threshold", "1"]),
        Resp::ok()
    );
    keys_star(&mut r);
    let Resp::Array(latest) = r.cmd(&["LATENCY", "LATEST"]) else {
        panic!()
    };
    let command = latest
        .iter()
        .find_map(|e| match e {
            Resp::Array(f) if f[0] == Resp::bulk("command") => Some(f.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no command event: {latest:?}"));
    let (Resp::Int(at), Resp::Int(ms), Resp::Int(max)) = (&command[1], &command[2], &command[3])
    else {
        panic!("{command:?}")
    };
    assert!(*at > 1_700_000_000 && *ms >= 1 && max >= ms, "{command:?}");
    let Resp::Array(history) = r.cmd(&["LATENCY", "HISTORY", "command"]) else {
        panic!()
    };
    assert!(!history.is_empty());
    assert_eq!(
        r.cmd(&["LATENCY", "HISTORY", "nothing-like-it"]),
        Resp::Array(vec![])
    );
    // RESET counts the events it forgot. (The monitor off first: any command over 1 ms on
    // a busy machine would be a new sample.)
    assert_eq!(
        r.cmd(&["CONFIG", "SET", "latency-monitor-threshold", "0"]),
        Resp::ok()
    );
    assert_eq!(
        r.cmd(&["LATENCY", "RESET", "command", "nothing-like-it"]),
        Resp::Int(1)
    );
    let Resp::Array(latest) = r.cmd(&["LATENCY", "LATEST"]) else {
        panic!()
    };
    assert!(!latest
        .iter()
        .any(|e| matches!(e, Resp::Array(f) if f[0] == Resp::bulk("command"))));
    assert!(matches!(r.cmd(&["LATENCY", "RESET"]), Resp::Int(_)));
    assert_eq!(r.cmd(&["LATENCY", "LATEST"]), Resp::Array(vec![]));
    assert!(
        matches!(r.cmd(&["LATENCY", "DOCTORX"]), Resp::Error(e) if e.starts_with("ERR unknown subcommand 'DOCTORX'"))
    );
    assert!(
        matches!(r.cmd(&["LATENCY", "HISTORY"]), Resp::Error(e) if e.contains("wrong number of arguments"))
    );
}

#[test]
fn client_list_shows_each_clients_memory_and_last_command() {
    let s = Server::with_cores(1);
    let mut r = s.raw();
    let field = |line: &str, k: &str| -> i64 {
        line.split(' ')
            .find_map(|f| f.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} in {line}"))
            .parse()
            .unwrap()
    };
    let info = |r: &mut Raw| match r.cmd(&["CLIENT", "INFO"]) {
        Resp::Bulk(b) => String::from_utf8(b).unwrap(),
        Resp::Verbatim(t) => t,
        other => panic!("{other:?}"),
    };
    assert_eq!(r.cmd(&["SET", "k", "v"]), Resp::ok());
    // The command it ran last: SET, seen from another connection; CLIENT INFO itself when
    // it asks (as Redis).
    let Resp::Bulk(list) = s.raw().cmd(&["CLIENT", "LIST"]) else {
        panic!()
    };
    assert!(String::from_utf8(list).unwrap().contains(" cmd=set "));
    let line = info(&mut r);
    assert!(line.contains(" cmd=client|info "), "{line}");
    let rbs = field(&line, "rbs");
    assert!(rbs > 0, "{line}");
    assert!(
        field(&line, "tot-mem") >= rbs + field(&line, "omem"),
        "{line}"
    );
    assert_eq!(field(&line, "multi-mem"), 0);
    assert_eq!(r.cmd(&["MULTI"]), Resp::ok());
    let big = "x".repeat(10_000);
    assert_eq!(r.cmd(&["SET", "k", &big]), Resp::Simple("QUEUED".into()));
    // CLIENT INFO inside MULTI is queued too: read the record from another connection.
    let mut other = s.raw();
    let Resp::Bulk(list) = other.cmd(&["CLIENT", "LIST"]) else {
        panic!()
    };
    let list = String::from_utf8(list).unwrap();
    let mine = list
        .lines()
        .find(|l| l.contains(" multi=1 "))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(field(mine, "multi-mem") >= 10_000, "{mine}");
    assert_eq!(r.cmd(&["EXEC"]), Resp::Array(vec![Resp::ok()]));
    assert_eq!(field(&info(&mut r), "multi-mem"), 0);
}

#[test]
fn monitor_streams_commands_from_every_core_with_secrets_hidden() {
    let s = Server::with_cores(2);
    let mut m = s.raw();
    assert_eq!(m.cmd(&["MONITOR"]), Resp::ok());
    let mut r = s.raw();
    let here = key_on_core(0, 2, "a");
    let there = key_on_core(1, 2, "b");
    assert_eq!(r.cmd(&["SET", &here, "x y\"z"]), Resp::ok());
    assert_eq!(r.cmd(&["GET", &there]), Resp::Nil);
    assert!(matches!(
        r.cmd(&["HELLO", "2", "AUTH", "default", "pw"]),
        Resp::Array(_) | Resp::Map(_)
    ));
    assert_eq!(r.cmd(&["CONFIG", "SET", "hz", "10"]), Resp::ok());
    assert_eq!(r.cmd(&["ECHO", "\x01"]), Resp::bulk("\x01"));
    let mut lines = Vec::new();
    while lines.len() < 4 {
        match m.read() {
            Resp::Simple(l) => lines.push(l),
            other => panic!("{other:?}"),
        }
    }
    let strip = |l: &str| l.split_once("] ").unwrap().1.to_string();
    assert!(
        lines[0].starts_with(|c: char| c.is_ascii_digit()) && lines[0].contains(" [0 127.0.0.1:"),
        "{lines:?}"
    );
    assert_eq!(strip(&lines[0]), format!("\"SET\" \"{here}\" \"x y\\\"z\""));
    assert_eq!(strip(&lines[1]), format!("\"GET\" \"{there}\""));
    assert_eq!(
        strip(&lines[2]),
        "\"HELLO\" \"2\" \"AUTH\" \"(redacted)\" \"(redacted)\""
    );
    // CONFIG (admin) is not fed; ECHO's byte is escaped.
    assert_eq!(strip(&lines[3]), "\"ECHO\" \"\\x01\"");
    // What the monitor sends is ignored, but QUIT, which ends it.
    m.send(&encode_cmd(&[b"GET", b"quitting"]));
    assert_eq!(r.cmd(&["PING"]), Resp::Simple("PONG".into()));
    let Resp::Simple(line) = m.read() else {
        panic!()
    };
    assert!(line.ends_with("\"PING\""), "{line}");
    m.send(b"QUIT\r\n");
    assert!(m.is_closed());
    // Inside MULTI it is refused.
    assert_eq!(r.cmd(&["MULTI"]), Resp::ok());
    assert_eq!(
        r.cmd(&["MONITOR"]),
        Resp::Error("ERR Command not allowed inside a transaction".into())
    );
}

#[test]
fn latency_histogram_gives_each_commands_cumulative_buckets() {
    let s = Server::with_cores(2);
    let mut r = s.raw();
    for i in 0..50 {
        assert_eq!(r.cmd(&["SET", &format!("k{i}"), "v"]), Resp::ok());
    }
    for i in 0..30 {
        assert_eq!(r.cmd(&["GET", &format!("k{i}")]), Resp::bulk("v"));
    }
    // RESP2: the map comes as a flat array of name, details.
    let Resp::Array(all) = r.cmd(&["LATENCY", "HISTOGRAM", "get", "nosuch", "SET"]) else {
        panic!()
    };
    assert_eq!(all.len(), 4, "{all:?}");
    for pair in all.chunks(2) {
        let Resp::Bulk(name) = &pair[0] else { panic!() };
        let want = if name == b"get" { 30 } else { 50 };
        let Resp::Array(d) = &pair[1] else { panic!() };
        assert_eq!(d[0], Resp::bulk("calls"));
        assert_eq!(d[1], Resp::Int(want));
        assert_eq!(d[2], Resp::bulk("histogram_usec"));
        let Resp::Array(b) = &d[3] else { panic!() };
        let pts: Vec<(i64, i64)> = b
            .chunks(2)
            .map(|p| match (&p[0], &p[1]) {
                (Resp::Int(a), Resp::Int(n)) => (*a, *n),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(pts[0].0, 1);
        assert!(
            pts.windows(2)
                .all(|w| w[1].0 == 2 * w[0].0 && w[1].1 >= w[0].1),
            "{pts:?}"
        );
        assert_eq!(pts.last().unwrap().1, want);
    }
    // No names: every command that ran.
    let Resp::Array(every) = r.cmd(&["LATENCY", "HISTOGRAM"]) else {
        panic!()
    };
    assert!(every.contains(&Resp::bulk("get")) && every.contains(&Resp::bulk("set")));
}

#[test]
fn config_set_loglevel_changes_what_is_logged_at_once() {
    let s = Server::start(1, &["--loglevel", "warning"]);
    let mut r = s.raw();
    // A config change is a notice: not logged at warning, logged once at notice again.
    assert_eq!(
        r.cmd(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lfu"]),
        Resp::ok()
    );
    assert_eq!(r.cmd(&["CONFIG", "SET", "loglevel", "notice"]), Resp::ok());
    assert_eq!(
        r.cmd(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]),
        Resp::ok()
    );
    assert_eq!(
        r.cmd(&["CONFIG", "GET", "loglevel"]),
        Resp::Array(vec![Resp::bulk("loglevel"), Resp::bulk("notice")])
    );
    assert!(matches!(
        r.cmd(&["CONFIG", "SET", "loglevel", "chatty"]),
        Resp::Error(e) if e.contains("one of debug, verbose, notice, warning")
    ));
    // Each line is written (to stderr, unbuffered) before the reply it belongs to is sent.
    let log = s.log_text();
    assert!(
        log.contains("CONFIG SET maxmemory-policy allkeys-lru"),
        "{log}"
    );
    assert!(
        !log.contains("CONFIG SET maxmemory-policy allkeys-lfu"),
        "{log}"
    );
}
