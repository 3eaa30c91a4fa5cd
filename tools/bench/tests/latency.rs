//! The generator against a tiny in-process server with a known delay: what each mode's
//! percentiles must show. Runs are short and every wait is bounded by the run's own
//! duration, drain deadline and reply timeout; the only sleeping is the server's injected
//! delay.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::{Opts, TestServer};
use tessera_bench::config::{Resp, Stop};
use tessera_bench::report::Report;
use tessera_bench::workload::Workload;
use tessera_bench::{run, Config, Outcome};

const DELAY: Duration = Duration::from_millis(2);
const DELAY_MS: f64 = 2.0;
/// How far above the injected delay a lightly loaded run's median may sit: sleep overshoot
/// and scheduling on a busy 2-CPU CI machine, not the generator.
const SLACK_MS: f64 = 6.0;

/// The timing tests take turns: on a 2-CPU machine, one test's load would otherwise show
/// up in another's percentiles.
static TIMING: Mutex<()> = Mutex::new(());

fn timing() -> std::sync::MutexGuard<'static, ()> {
    TIMING.lock().unwrap_or_else(|e| e.into_inner())
}

fn config(server: &TestServer, connections: usize, stop: Stop) -> Config {
    let mut cfg = Config::new(server.addr(), Workload::simple(0, 1, 1_000, 16));
    cfg.connections = connections;
    cfg.stop = stop;
    cfg.connect_timeout = Duration::from_secs(5);
    cfg.reply_timeout = Duration::from_secs(10);
    cfg
}

fn bench(cfg: &Config) -> Outcome {
    let o = run(cfg, &mut |_| {}).unwrap_or_else(|e| panic!("run failed: {e}"));
    let t = &o.total;
    eprintln!(
        "{} conns, rate {:?}: {} ops, {:.0} ops/s, p50 {:.3} p90 {:.3} p99 {:.3} max {:.3} ms, unsent {}",
        cfg.connections,
        cfg.rate,
        t.ops(),
        o.ops_per_sec(),
        t.ms_at(0.5),
        t.ms_at(0.9),
        t.ms_at(0.99),
        t.ms_at(1.0),
        o.unsent
    );
    o
}

#[test]
fn closed_loop_median_is_the_server_delay() {
    let _turn = timing();
    let server = TestServer::start(Opts {
        delay: DELAY,
        ..Opts::default()
    });
    let cfg = config(&server, 4, Stop::After(Duration::from_millis(800)));
    let o = bench(&cfg);
    let p50 = o.total.ms_at(0.5);
    assert!(
        (DELAY_MS..DELAY_MS + SLACK_MS).contains(&p50),
        "closed-loop p50 {p50} ms"
    );
    // 4 connections, one request each in flight, 2 ms each: at most 2,000 ops/s.
    assert!(
        o.ops_per_sec() <= 2_000.0 * 1.02,
        "{} ops/s",
        o.ops_per_sec()
    );
    assert!(o.total.ops() > 100);
    assert_eq!(
        o.total.misses,
        o.total.ops(),
        "an empty server answers every GET with nil"
    );
}

#[test]
fn open_loop_at_a_low_rate_sees_only_the_delay() {
    let _turn = timing();
    let server = TestServer::start(Opts {
        delay: DELAY,
        ..Opts::default()
    });
    let mut cfg = config(&server, 2, Stop::After(Duration::from_secs(1)));
    cfg.rate = Some(100.0);
    let o = bench(&cfg);
    let p50 = o.total.ms_at(0.5);
    assert!(
        (DELAY_MS..DELAY_MS + SLACK_MS).contains(&p50),
        "open-loop p50 {p50} ms"
    );
    assert!(
        (95..=101).contains(&o.total.ops()),
        "{} requests in 1 s at 100/s",
        o.total.ops()
    );
    assert_eq!((o.unsent, o.timed_out), (0, 0));
}

#[test]
fn open_loop_above_capacity_shows_the_queue_it_builds() {
    let _turn = timing();
    // Two connections serve at most 1,000 requests/s; 2,000/s are offered for 1.5 s. The
    // requests wait for the connection (pipeline 1) and each one's latency counts from its
    // slot, so latency grows with the backlog: about 0.75 s by the end, never just 2 ms.
    let server = TestServer::start(Opts {
        delay: DELAY,
        ..Opts::default()
    });
    let mut cfg = config(&server, 2, Stop::After(Duration::from_millis(1_500)));
    cfg.rate = Some(2_000.0);
    let o = bench(&cfg);
    let (p50, p99) = (o.total.ms_at(0.5), o.total.ms_at(0.99));
    assert!(p50 > 50.0 * DELAY_MS, "p50 {p50} ms hides the queue");
    assert!(p99 > 150.0 * DELAY_MS, "p99 {p99} ms hides the queue");
    assert!(
        o.unsent > 500,
        "the backlog at the end is reported: {}",
        o.unsent
    );
}

#[test]
fn a_stall_shows_in_open_loop_percentiles_but_hides_in_closed_loop() {
    let _turn = timing();
    // One 300 ms stall (the server's 100th request) in a 2 s run on one connection.
    let stall = Some((100, Duration::from_millis(300)));
    let opts = Opts {
        delay: Duration::from_millis(1),
        stall,
        ..Opts::default()
    };

    let server = TestServer::start(opts.clone());
    let mut cfg = config(&server, 1, Stop::After(Duration::from_secs(2)));
    cfg.rate = Some(200.0);
    let open = bench(&cfg);
    // ~60 of ~400 requests were scheduled during the stall: the top tenth waited 100+ ms.
    let p90 = open.total.ms_at(0.9);
    assert!(p90 > 50.0, "open-loop p90 {p90} ms: coordinated omission");

    let server = TestServer::start(opts);
    let cfg = config(&server, 1, Stop::After(Duration::from_secs(2)));
    let closed = bench(&cfg);
    // The closed loop waited out the stall with one request: one slow sample in ~1,000.
    assert!(closed.total.ms_at(1.0) >= 300.0);
    let p90 = closed.total.ms_at(0.9);
    assert!(p90 < 1.0 + SLACK_MS, "closed-loop p90 {p90} ms");
}

#[test]
fn request_count_populate_and_hits() {
    let _turn = timing();
    let server = TestServer::start(Opts::default());
    let mut cfg = config(&server, 3, Stop::Requests(3_000));
    cfg.workload = Workload::simple(0, 1, 500, 8);
    cfg.populate = true;
    cfg.pipeline = 8;
    cfg.threads = 2;
    let o = bench(&cfg);
    assert_eq!(o.populated_keys, 500);
    assert_eq!(o.total.ops(), 3_000);
    assert_eq!(o.total.hits, 3_000, "every key was populated");
    assert!(o.window_s > 0.0);
}

#[test]
fn resp3_and_auth() {
    let server = TestServer::start(Opts {
        password: Some("sesame".into()),
        ..Opts::default()
    });
    let mut cfg = config(&server, 2, Stop::Requests(200));
    cfg.resp = Resp::V3;
    let e = run(&cfg, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("NOAUTH") && e.contains("--pass"), "{e}");

    cfg.auth = Some(tessera_bench::config::Auth {
        user: None,
        password: "nope".into(),
    });
    let e = run(&cfg, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("WRONGPASS") && e.contains("--user"), "{e}");

    cfg.auth = Some(tessera_bench::config::Auth {
        user: None,
        password: "sesame".into(),
    });
    let o = bench(&cfg);
    // RESP3's null `_` is a miss like RESP2's `$-1`.
    assert_eq!((o.total.ops(), o.total.misses), (200, 200));
}

#[test]
fn a_dropped_connection_fails_the_run_and_says_so() {
    let server = TestServer::start(Opts {
        close_after: Some(50),
        ..Opts::default()
    });
    let cfg = config(&server, 1, Stop::After(Duration::from_secs(5)));
    let e = run(&cfg, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("closed the connection"), "{e}");
}

/// A `--set-on-miss` run's GET and SET rows: (GET hits, GET misses, SETs answered).
fn cache_rows(o: &Outcome) -> (u64, u64, u64) {
    let row = |name: &str| o.commands.iter().find(|c| c.name == name).unwrap();
    let (get, set) = (row("GET"), row("SET"));
    assert_eq!((get.errors, set.errors), (0, 0), "{:?}", o.first_error);
    (get.hits, get.misses, set.ops())
}

#[test]
fn set_on_miss_sets_every_key_that_missed_then_hits_it() {
    // One connection, pipeline 1, keys in order: GET k0 (nil), SET k0, GET k1 (nil), ...
    let server = TestServer::start(Opts::default());
    let mut cfg = config(&server, 1, Stop::Requests(200));
    cfg.workload = Workload::cache_aside(100, 8);
    cfg.workload.dist = tessera_bench::workload::KeyDist::Sequential;
    let o = bench(&cfg);
    assert_eq!(cache_rows(&o), (0, 100, 100));
    assert_eq!(server.counts.get(), (0, 100, 100));
    assert_eq!(server.stored_keys(), 100);
    let r = Report::new(&cfg, &o);
    assert_eq!(r.hit_ratio, Some(0.0));
    // The same keys again: every GET hits and no SET is sent.
    cfg.stop = Stop::Requests(100);
    let o = bench(&cfg);
    assert_eq!(cache_rows(&o), (100, 0, 0));
    assert_eq!(Report::new(&cfg, &o).hit_ratio, Some(1.0));
    assert_eq!(server.counts.get(), (100, 100, 100));
}

#[test]
fn set_on_miss_hit_ratio_is_what_the_server_saw() {
    // Zipf keys over several pipelined connections and threads: the client's GET hits and
    // misses are the server's, every SET followed a miss, and at most one pipeline of
    // misses per connection was left without its SET when the budget ran out.
    let server = TestServer::start(Opts::default());
    let mut cfg = config(&server, 4, Stop::Requests(20_000));
    cfg.workload = Workload::cache_aside(2_000, 16);
    cfg.workload.dist = tessera_bench::workload::KeyDist::Zipf { exponent: 0.99 };
    (cfg.threads, cfg.pipeline) = (2, 4);
    let o = bench(&cfg);
    let (hits, misses, sets) = cache_rows(&o);
    assert_eq!(o.total.ops(), 20_000, "the SETs are requests too");
    assert_eq!(hits + misses + sets, 20_000);
    assert_eq!(server.counts.get(), (hits, misses, sets));
    assert!(
        sets <= misses && misses - sets <= 4 * 4,
        "{misses} misses, {sets} SETs"
    );
    assert!(server.stored_keys() as u64 <= sets);
    let ratio = Report::new(&cfg, &o).hit_ratio.unwrap();
    assert_eq!(ratio, hits as f64 / (hits + misses) as f64);
    eprintln!("hit ratio {ratio:.4}: {hits} hits, {misses} misses, {sets} SETs");
    // ~15,000 GETs over 2,000 zipf keys: the hot keys are set once and hit from then on.
    assert!((0.5..0.97).contains(&ratio), "hit ratio {ratio}");
}

#[test]
fn set_on_miss_in_open_loop_takes_the_next_slot() {
    let _turn = timing();
    let server = TestServer::start(Opts::default());
    let mut cfg = config(&server, 2, Stop::After(Duration::from_secs(1)));
    cfg.workload = Workload::cache_aside(50, 16);
    cfg.rate = Some(1_000.0);
    let o = bench(&cfg);
    let (hits, misses, sets) = cache_rows(&o);
    // The SETs use schedule slots: GETs and SETs together keep to the rate.
    assert!(
        (950..=1_001).contains(&o.total.ops()),
        "{} requests in 1 s at 1,000/s",
        o.total.ops()
    );
    assert_eq!(server.counts.get(), (hits, misses, sets));
    // Each of the 50 keys misses about once (twice if both connections asked for it
    // before its SET landed); a miss still queued at the end (one per connection) has
    // no SET.
    assert!((50..=100).contains(&misses), "{misses} misses");
    assert!(
        sets <= misses && misses - sets <= 2,
        "{misses} misses, {sets} SETs"
    );
    assert_eq!(server.stored_keys(), 50);
    assert!(Report::new(&cfg, &o).hit_ratio.unwrap() > 0.85);
}
