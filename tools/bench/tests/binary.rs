//! The `tessera-bench` binary end to end: its output files, its exit status, and real
//! servers (redis-server when installed, tessera when built).

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Opts, TestServer};
use tessera_bench::hgrm;
use tessera_bench::report::Report;

/// Longest a generator run may take in these tests.
const RUN_DEADLINE: Duration = Duration::from_secs(60);
/// Longest a real server may take to answer PING.
const START_DEADLINE: Duration = Duration::from_secs(20);

fn bench(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera-bench"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tessera-bench");
    let deadline = Instant::now() + RUN_DEADLINE;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tessera-bench {args:?} ran past {RUN_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    eprintln!(
        "tessera-bench {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("tessera-bench-test-{}-{name}", std::process::id()))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn writes_json_hgrm_and_svg_that_parse() {
    let server = TestServer::start(Opts::default());
    let (json, hdr, svg) = (tmp("a.json"), tmp("a.hgrm"), tmp("a.svg"));
    let port = server.port.to_string();
    let out = bench(&[
        "-p",
        &port,
        "-c",
        "4",
        "-n",
        "2000",
        "--ratio",
        "1:3",
        "--keys",
        "50",
        "--label",
        "first",
        "--json",
        json.to_str().unwrap(),
        "--hdr",
        hdr.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    for row in ["\nSET ", "\nGET ", "\nALL ", "p99.99"] {
        assert!(table.contains(row), "{row} missing");
    }

    let report: Report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report.total.ops, 2_000);
    assert_eq!(report.label, "first");
    assert_eq!(
        report
            .commands
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["SET", "GET"]
    );

    let (points, total) = hgrm::parse(&std::fs::read_to_string(&hdr).unwrap()).unwrap();
    assert_eq!(total, 2_000);
    let last = points.last().unwrap();
    assert!((last.value_ms - report.total.latency_ms.max).abs() < 1e-3);

    let svg_text = std::fs::read_to_string(&svg).unwrap();
    assert_eq!(svg_text.matches("<polyline").count(), 1);

    // A second run, then both on one chart.
    let json2 = tmp("b.json");
    let out = bench(&[
        "-p",
        &port,
        "-c",
        "2",
        "-n",
        "500",
        "-q",
        "--json",
        json2.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let both = tmp("both.svg");
    let out = bench(&[
        "plot",
        both.to_str().unwrap(),
        json.to_str().unwrap(),
        json2.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let text = std::fs::read_to_string(&both).unwrap();
    assert_eq!(text.matches("<polyline").count(), 2);
    assert!(
        text.contains("first (") && text.contains("tessera-bench-test-"),
        "legend names both runs"
    );
    for p in [json, hdr, svg, json2, both] {
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn set_on_miss_reports_the_hit_ratio() {
    let server = TestServer::start(Opts::default());
    let json = tmp("miss.json");
    let port = server.port.to_string();
    let out = bench(&[
        "-p",
        &port,
        "-c",
        "3",
        "-P",
        "2",
        "-n",
        "3000",
        "--keys",
        "400",
        "--distribution",
        "zipf:0.99",
        "--set-on-miss",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let text = std::fs::read_to_string(&json).unwrap();
    let _ = std::fs::remove_file(&json);
    let report: Report = serde_json::from_str(&text).unwrap();
    let row = |name: &str| report.commands.iter().find(|c| c.name == name).unwrap();
    let (get, set) = (row("GET"), row("SET"));
    assert_eq!(get.ops + set.ops, 3_000);
    assert!(get.misses > 0 && get.hits > 0, "{get:?}");
    assert!(set.ops <= get.misses && get.misses - set.ops <= 3 * 2);
    assert_eq!(server.counts.get(), (get.hits, get.misses, set.ops));
    // `hit_ratio` is a top-level field of the JSON.
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ratio = doc["hit_ratio"].as_f64().expect("hit_ratio");
    assert_eq!(ratio, get.hits as f64 / (get.hits + get.misses) as f64);
    assert_eq!(doc["workload"]["set_on_miss"], serde_json::json!(true));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("GET with SET on miss"), "{table}");
    assert!(
        table.contains(&format!("GET hit ratio: {ratio:.4} (")),
        "{table}"
    );
    // It replaces the mix, so it cannot be combined with one.
    let out = bench(&["-p", &port, "--set-on-miss", "--ratio", "1:1"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn no_server_is_a_clear_failure() {
    let port = free_port().to_string();
    let out = bench(&["-p", &port, "-n", "10"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect to 127.0.0.1:") && err.contains("--port"),
        "{err}"
    );
}

#[test]
fn bad_flags_exit_2() {
    assert_eq!(bench(&["--pipeline", "0"]).status.code(), Some(2));
    assert_eq!(bench(&["--no-such-flag"]).status.code(), Some(2));
    let out = bench(&["plot", &tmp("x.svg").to_string_lossy(), "/nonexistent.json"]);
    assert_eq!(out.status.code(), Some(1));
}

/// A server process started for a test and stopped when dropped.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: signals the child we spawned, by its pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_ping(port: u16, proc: &mut Proc) {
    let deadline = Instant::now() + START_DEADLINE;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = proc.0.try_wait() {
            panic!("server exited during start: {st}");
        }
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            s.set_read_timeout(Some(Duration::from_secs(2))).ok();
            let mut buf = [0u8; 64];
            if s.write_all(b"PING\r\n").is_ok() && s.read(&mut buf).is_ok_and(|n| n > 0) {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("server on {port} did not answer within {START_DEADLINE:?}");
}

/// Drives a real server: populate, a SET:GET mix in RESP3 with AUTH, and checks every GET
/// hit a populated key and nothing failed.
fn drive_real_server(port: u16, password: Option<&str>) {
    let port = port.to_string();
    let json = tmp(&format!("real-{port}.json"));
    let mut args = vec![
        "-p",
        &port,
        "-c",
        "8",
        "-P",
        "4",
        "-n",
        "20000",
        "--keys",
        "1000",
        "--populate",
        "--resp3",
        "--json",
        json.to_str().unwrap(),
    ];
    if let Some(p) = password {
        args.extend(["--pass", p]);
    }
    let out = bench(&args);
    assert!(out.status.success());
    let r: Report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    assert_eq!(r.total.ops, 20_000);
    assert_eq!(r.total.errors, 0, "{:?}", r.first_error);
    let get = r.commands.iter().find(|c| c.name == "GET").unwrap();
    assert_eq!((get.hits, get.misses), (get.ops, 0));

    // Cache-aside over three times the populated keys: the unpopulated ones miss once and
    // are SET; nothing fails.
    let mut args = vec![
        "-p",
        &port,
        "-c",
        "4",
        "-P",
        "2",
        "-n",
        "9000",
        "--keys",
        "3000",
        "--set-on-miss",
        "--json",
        json.to_str().unwrap(),
    ];
    if let Some(p) = password {
        args.extend(["--pass", p]);
    }
    assert!(bench(&args).status.success());
    let r: Report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    assert_eq!(
        (r.total.ops, r.total.errors),
        (9_000, 0),
        "{:?}",
        r.first_error
    );
    let row = |name: &str| r.commands.iter().find(|c| c.name == name).unwrap();
    let (get, set) = (row("GET"), row("SET"));
    assert!(set.ops <= get.misses && get.misses - set.ops <= 4 * 2);
    // 2,000 keys were not populated; a few miss twice (asked for again before their SET).
    assert!(get.misses < 2_200, "{get:?}");
    let ratio = r.hit_ratio.unwrap();
    assert!((0.2..1.0).contains(&ratio), "hit ratio {ratio}");
}

#[test]
fn drives_redis_server() {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: redis-server is not installed");
        return;
    }
    let port = free_port();
    let mut redis = Proc(
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--requirepass", "pw", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server"),
    );
    wait_for_ping(port, &mut redis);
    drive_real_server(port, Some("pw"));
}

/// The tessera binary, if this workspace has built it (it is another package's binary, so
/// cargo does not build it for these tests).
fn tessera_binary() -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    ["debug", "release"]
        .iter()
        .map(|p| target.join(p).join("tessera"))
        .find(|p| p.is_file())
}

#[test]
fn drives_tessera() {
    let Some(bin) = tessera_binary() else {
        eprintln!("skipped: target/{{debug,release}}/tessera is not built");
        return;
    };
    let port = free_port();
    let mut node = Proc(
        Command::new(bin)
            .args([
                "--port",
                &port.to_string(),
                "--cores",
                "1",
                "--loglevel",
                "warning",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tessera"),
    );
    wait_for_ping(port, &mut node);
    drive_real_server(port, None);
}
