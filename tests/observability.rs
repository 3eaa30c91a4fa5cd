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
