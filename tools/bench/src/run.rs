//! A run: worker threads open their connections (and populate), the main thread starts
//! them all at one instant, prints progress each second, then merges their results.
//!
//! Phases per thread: populate (closed loop, every key once, not recorded), warm-up (the
//! real load, counted only in the progress line), measure. In open loop the schedule runs
//! on unbroken from warm-up into measure; a reply counts if its request was *meant* to be
//! sent inside the measured window.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::config::{Config, Stop, POPULATE_PIPELINE, PROGRESS_INTERVAL};
use crate::conn::event_loop::{Conn, Driver, Phase, PhaseEnd};
use crate::conn::handshake;
use crate::conn::state::{ConnState, Pace};
use crate::conn::Clock;
use crate::cpu;
use crate::error::BenchError;
use crate::schedule::Schedule;
use crate::stats::{self, new_hist, CmdStats, Interval, Recorder};
use crate::workload::{start_of, KeyDist, KeySampler, Prepared, RequestGen};

/// Time between "go" and the first request, so every thread is waiting when it comes.
const START_DELAY: Duration = Duration::from_millis(20);

/// One line of progress.
#[derive(Debug, Clone)]
pub struct Progress {
    pub elapsed_s: f64,
    pub warmup: bool,
    pub ops_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// One row per command name, in mix order.
    pub commands: Vec<CmdStats>,
    pub total: CmdStats,
    /// Length of the measured window, seconds.
    pub window_s: f64,
    /// Open loop: how late the client sent requests it had room to send (its own
    /// overhead); should stay in microseconds.
    pub send_lag: Histogram<u64>,
    /// Open loop: requests scheduled in the window but never sent (server overloaded).
    pub unsent: u64,
    /// Requests unanswered at the drain deadline.
    pub timed_out: u64,
    /// CPU seconds the worker threads used in the measured window.
    pub client_cpu_s: f64,
    pub threads: usize,
    pub populated_keys: u64,
    pub populate_s: f64,
    /// The start of the first error reply, if any.
    pub first_error: Option<String>,
}

impl Outcome {
    pub fn ops_per_sec(&self) -> f64 {
        if self.window_s > 0.0 {
            self.total.ops() as f64 / self.window_s
        } else {
            0.0
        }
    }
}

/// What every thread reads.
struct Ctx<'a> {
    cfg: &'a Config,
    addrs: Vec<SocketAddr>,
    main: Arc<Prepared>,
    populate: Option<Arc<Prepared>>,
    clock: Clock,
    abort: AtomicBool,
    /// Each thread's counts for the progress line.
    shared: Vec<Mutex<Interval>>,
}

struct ThreadResult {
    rec: Recorder,
    end: PhaseEnd,
    cpu_s: f64,
}

/// Sends on drop, so the main thread hears of a thread's end even if it panicked.
struct DoneGuard(mpsc::Sender<()>);
impl Drop for DoneGuard {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// Runs `cfg`, calling `on_progress` about once a second.
pub fn run(cfg: &Config, on_progress: &mut dyn FnMut(&Progress)) -> Result<Outcome, BenchError> {
    let ctx = Ctx {
        cfg,
        addrs: handshake::resolve(&cfg.addr)?,
        main: Prepared::new(&cfg.workload, cfg.seed),
        populate: cfg
            .populate
            .then(|| Prepared::new(&cfg.workload.populate(), cfg.seed)),
        clock: Clock::new(Instant::now()),
        abort: AtomicBool::new(false),
        shared: (0..cfg.threads).map(|_| Mutex::default()).collect(),
    };
    let began = Instant::now();
    std::thread::scope(|scope| {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<u64, BenchError>>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let mut go = Vec::new();
        let mut handles = Vec::new();
        for t in 0..cfg.threads {
            let (go_tx, go_rx) = mpsc::channel::<u64>();
            go.push(go_tx);
            let (ctx, ready_tx, done) = (&ctx, ready_tx.clone(), DoneGuard(done_tx.clone()));
            handles.push(scope.spawn(move || {
                let _done = done;
                let r = worker(ctx, t, &ready_tx, go_rx);
                if r.is_err() {
                    ctx.abort.store(true, Ordering::Relaxed);
                }
                r
            }));
        }
        drop((ready_tx, done_tx));
        let mut populated = 0;
        let mut failed = None;
        for _ in 0..cfg.threads {
            match ready_rx.recv() {
                Ok(Ok(n)) => populated += n,
                Ok(Err(e)) => {
                    failed = Some(e);
                    break;
                }
                Err(_) => break, // a thread panicked; its join says so
            }
        }
        let populate_s = began.elapsed().as_secs_f64();
        let start_ns = ctx.clock.now_ns() + START_DELAY.as_nanos() as u64;
        if failed.is_none() {
            for g in &go {
                let _ = g.send(start_ns);
            }
        }
        drop(go);
        if failed.is_none() {
            progress_until_done(&ctx, start_ns, &done_rx, on_progress);
        }
        ctx.abort.store(true, Ordering::Relaxed);
        let mut results = Vec::new();
        for (t, h) in handles.into_iter().enumerate() {
            match h.join() {
                Ok(Ok(r)) => results.push(r),
                Ok(Err(e)) => {
                    failed.get_or_insert(e);
                }
                Err(_) => {
                    failed.get_or_insert(BenchError::Panicked(t));
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(outcome(&ctx, results, start_ns, populated, populate_s))
    })
}

fn progress_until_done(
    ctx: &Ctx,
    start_ns: u64,
    done: &mpsc::Receiver<()>,
    on_progress: &mut dyn FnMut(&Progress),
) {
    let step = PROGRESS_INTERVAL.as_nanos() as u64;
    let (mut finished, mut tick, mut last_ns) = (0, 1u64, start_ns);
    let mut merged = Interval::default();
    while finished < ctx.cfg.threads {
        let due = ctx.clock.instant_at(start_ns + tick * step);
        match done.recv_timeout(due.saturating_duration_since(Instant::now())) {
            Ok(()) => finished += 1,
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                let now = ctx.clock.now_ns();
                merged.clear();
                for s in &ctx.shared {
                    let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
                    merged.add(&s);
                    s.clear();
                }
                let secs = (now - last_ns) as f64 / 1e9;
                on_progress(&Progress {
                    elapsed_s: (now - start_ns) as f64 / 1e9,
                    warmup: now < start_ns + ctx.cfg.warmup.as_nanos() as u64,
                    ops_per_s: merged.ops() as f64 / secs,
                    p50_ms: stats::ns_to_ms(merged.hist.value_at_quantile(0.5)),
                    p99_ms: stats::ns_to_ms(merged.hist.value_at_quantile(0.99)),
                    errors: merged.errors,
                });
                (last_ns, tick) = (now, tick + 1);
            }
        }
    }
}

fn outcome(
    ctx: &Ctx,
    results: Vec<ThreadResult>,
    start_ns: u64,
    populated: u64,
    populate_s: f64,
) -> Outcome {
    let cfg = ctx.cfg;
    let measure_from = start_ns + cfg.warmup.as_nanos() as u64;
    let mut commands: Vec<CmdStats> = ctx.main.names.iter().map(CmdStats::new).collect();
    let mut send_lag = new_hist();
    let (mut unsent, mut timed_out, mut cpu_s, mut last) = (0, 0, 0.0, measure_from);
    let mut first_error = None;
    for r in &results {
        stats::merge(&mut commands, &r.rec.cmds);
        send_lag.add(&r.rec.send_lag).expect("same bounds");
        unsent += r.end.unsent;
        timed_out += r.end.timed_out;
        cpu_s += r.cpu_s;
        last = last.max(r.rec.last_reply_ns);
        if first_error.is_none() {
            first_error = r
                .rec
                .first_error
                .as_ref()
                .map(|e| String::from_utf8_lossy(e).trim_end().to_string());
        }
    }
    let window_s = match cfg.stop {
        Stop::After(d) => d.as_secs_f64(),
        Stop::Requests(_) => (last - measure_from) as f64 / 1e9,
    };
    Outcome {
        total: stats::total(&commands),
        commands,
        window_s,
        send_lag,
        unsent,
        timed_out,
        client_cpu_s: cpu_s,
        threads: cfg.threads,
        populated_keys: populated,
        populate_s,
        first_error,
    }
}

/// Connection `id`'s seed for its request stream and, mixed again, its schedule.
fn seed_of(cfg: &Config, id: usize) -> u64 {
    cfg.seed ^ (id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The connections thread `t` owns: every `threads`-th.
fn conn_ids(cfg: &Config, t: usize) -> Vec<usize> {
    (t..cfg.connections).step_by(cfg.threads).collect()
}

fn main_gen(ctx: &Ctx, id: usize) -> RequestGen {
    let cfg = ctx.cfg;
    let keys = KeySampler::new(ctx.main.dist, ctx.main.keys, id, cfg.connections);
    RequestGen::new(ctx.main.clone(), keys, seed_of(cfg, id))
}

fn main_pace(ctx: &Ctx, id: usize, start_ns: u64) -> Pace {
    let cfg = ctx.cfg;
    match cfg.rate {
        None => Pace::Closed,
        Some(rate) => {
            let per_conn = rate / cfg.connections as f64;
            let phase = id as f64 / cfg.connections as f64;
            Pace::Open(Schedule::new(
                start_ns,
                per_conn,
                cfg.arrival,
                phase,
                !seed_of(cfg, id),
            ))
        }
    }
}

/// Opens thread `t`'s connections and populates its share of the key space.
fn connect_and_populate<'a>(ctx: &'a Ctx, t: usize) -> Result<(Driver<'a>, u64), BenchError> {
    let cfg = ctx.cfg;
    if let Some(cpus) = &cfg.cpus {
        cpu::pin(cpus[t % cpus.len()])?;
    }
    if cfg.is_open_loop() {
        cpu::tighten_timer_slack();
    }
    let mut conns = Vec::new();
    let mut budget = 0;
    for id in conn_ids(cfg, t) {
        let stream = handshake::open(cfg, &ctx.addrs)?;
        let state = match &ctx.populate {
            Some(p) => {
                let keys = KeySampler::new(KeyDist::Sequential, p.keys, id, cfg.connections);
                let gen = RequestGen::new(p.clone(), keys, seed_of(cfg, id));
                let mut st = ConnState::new(gen, Pace::Closed, POPULATE_PIPELINE);
                let share = start_of(id + 1, cfg.connections, p.keys)
                    - start_of(id, cfg.connections, p.keys);
                st.set_budget(share);
                budget += share;
                st
            }
            None => ConnState::new(main_gen(ctx, id), Pace::Closed, cfg.pipeline),
        };
        let conn = Conn::new(id, stream, state).map_err(|source| BenchError::Connect {
            addr: cfg.addr.clone(),
            source,
        })?;
        conns.push(conn);
    }
    let mut driver = Driver::new(
        conns,
        ctx.clock,
        &cfg.addr,
        cfg.reply_timeout,
        &ctx.shared[t],
        &ctx.abort,
    )?;
    if let Some(p) = &ctx.populate {
        let mut rec = Recorder::new(&p.names);
        rec.reset_measurement(0);
        driver.run(
            Phase {
                end_ns: None,
                drain: true,
            },
            &mut rec,
        )?;
        rec.interval.clear();
        rec.publish(&ctx.shared[t]);
        ctx.shared[t]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let errors: u64 = rec.cmds.iter().map(|c| c.errors).sum();
        if errors > 0 {
            let first = rec
                .first_error
                .map(|e| String::from_utf8_lossy(&e).trim_end().to_string());
            return Err(BenchError::Populate {
                errors,
                first: first.unwrap_or_default(),
            });
        }
    }
    Ok((driver, budget))
}

fn worker(
    ctx: &Ctx,
    t: usize,
    ready: &mpsc::Sender<Result<u64, BenchError>>,
    go: mpsc::Receiver<u64>,
) -> Result<ThreadResult, BenchError> {
    let (mut driver, populated) = match connect_and_populate(ctx, t) {
        Ok(x) => x,
        Err(e) => {
            let _ = ready.send(Err(e));
            // The main thread reports the error it was sent; this one only ends the thread.
            return Ok(ThreadResult {
                rec: Recorder::new(&[]),
                end: PhaseEnd::default(),
                cpu_s: 0.0,
            });
        }
    };
    let _ = ready.send(Ok(populated));
    let Ok(start_ns) = go.recv() else {
        // Another thread failed to start; the run is off.
        return Ok(ThreadResult {
            rec: Recorder::new(&[]),
            end: PhaseEnd::default(),
            cpu_s: 0.0,
        });
    };
    let cfg = ctx.cfg;
    for c in &mut driver.conns {
        c.state.switch(
            main_gen(ctx, c.id),
            main_pace(ctx, c.id, start_ns),
            cfg.pipeline,
        );
    }
    std::thread::sleep(
        ctx.clock
            .instant_at(start_ns)
            .saturating_duration_since(Instant::now()),
    );
    let mut rec = Recorder::new(&ctx.main.names);
    let measure_from = start_ns + cfg.warmup.as_nanos() as u64;
    if !cfg.warmup.is_zero() {
        driver.run(
            Phase {
                end_ns: Some(measure_from),
                drain: false,
            },
            &mut rec,
        )?;
    }
    rec.reset_measurement(measure_from);
    let end_ns = match cfg.stop {
        Stop::After(d) => Some(measure_from + d.as_nanos() as u64),
        Stop::Requests(n) => {
            for c in &mut driver.conns {
                let share =
                    start_of(c.id + 1, cfg.connections, n) - start_of(c.id, cfg.connections, n);
                c.state.set_budget(share);
            }
            None
        }
    };
    let cpu0 = cpu::thread_time_s();
    let end = driver.run(
        Phase {
            end_ns,
            drain: true,
        },
        &mut rec,
    )?;
    let cpu_s = cpu::thread_time_s() - cpu0;
    rec.publish(&ctx.shared[t]);
    Ok(ThreadResult { rec, end, cpu_s })
}
