//! A tiny RESP server for testing the generator: PING, AUTH, HELLO, SELECT, SET, GET over
//! a shared map, with a known delay before every reply, an optional one-off stall, and an
//! optional connection drop. One thread per connection, replies in order, so a connection's
//! requests are served one after another, each `delay` long. It counts the GETs it
//! answered with a value and with nil, and the SETs, for checking what the generator says.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tessera::resp::{Decoded, Limits, Out, Protocol, RequestDecoder};

#[derive(Debug, Clone, Default)]
pub struct Opts {
    /// Slept before every reply.
    pub delay: Duration,
    /// The server-wide request with this number (from 1) is served after an extra stall.
    pub stall: Option<(u64, Duration)>,
    pub password: Option<String>,
    /// Close each connection after this many requests.
    pub close_after: Option<u64>,
}

pub struct TestServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    pub requests: Arc<AtomicU64>,
    pub counts: Arc<Counts>,
    shared: Arc<Shared>,
}

/// What the server answered, across connections.
#[derive(Debug, Default)]
pub struct Counts {
    pub get_hits: AtomicU64,
    pub get_misses: AtomicU64,
    pub sets: AtomicU64,
}

impl Counts {
    /// (GET hits, GET misses, SETs).
    pub fn get(&self) -> (u64, u64, u64) {
        (
            self.get_hits.load(Ordering::Relaxed),
            self.get_misses.load(Ordering::Relaxed),
            self.sets.load(Ordering::Relaxed),
        )
    }
}

struct Shared {
    opts: Opts,
    map: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
    requests: Arc<AtomicU64>,
    counts: Arc<Counts>,
}

impl TestServer {
    pub fn start(opts: Opts) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let counts = Arc::new(Counts::default());
        let shared = Arc::new(Shared {
            opts,
            map: Mutex::default(),
            requests: requests.clone(),
            counts: counts.clone(),
        });
        let stop2 = stop.clone();
        let shared2 = shared.clone();
        let accept = std::thread::spawn(move || {
            for s in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(s) = s else { continue };
                let shared = shared.clone();
                std::thread::spawn(move || serve(s, &shared));
            }
        });
        TestServer {
            port,
            stop,
            accept: Some(accept),
            requests,
            counts,
            shared: shared2,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Keys stored.
    pub fn stored_keys(&self) -> usize {
        self.shared.map.lock().unwrap().len()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn serve(mut s: TcpStream, shared: &Shared) {
    s.set_nodelay(true).ok();
    let limits = Limits {
        max_bulk_bytes: 1 << 20,
        max_multibulk_len: 1024,
        unauthenticated: false,
    };
    let mut dec = RequestDecoder::default();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let (mut proto, mut authed, mut served) =
        (Protocol::Resp2, shared.opts.password.is_none(), 0u64);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        loop {
            let consumed = match dec.decode(&buf[at..], &limits) {
                Decoded::Command { consumed, .. } => consumed,
                Decoded::Skip { consumed } => {
                    at += consumed;
                    continue;
                }
                Decoded::Incomplete => break,
                Decoded::Invalid(e) => panic!("the generator sent bad RESP: {e}"),
            };
            let args: Vec<Vec<u8>> = dec
                .args()
                .iter()
                .map(|r| buf[at..][r.clone()].to_vec())
                .collect();
            at += consumed;
            served += 1;
            if shared.opts.close_after.is_some_and(|n| served > n) {
                return;
            }
            let nth = shared.requests.fetch_add(1, Ordering::Relaxed) + 1;
            if let Some((k, stall)) = shared.opts.stall {
                if nth == k {
                    std::thread::sleep(stall);
                }
            }
            if !shared.opts.delay.is_zero() {
                std::thread::sleep(shared.opts.delay);
            }
            out.clear();
            reply(&args, shared, &mut proto, &mut authed, &mut out);
            if s.write_all(&out).is_err() {
                return;
            }
        }
        buf.drain(..at);
    }
}

fn reply(
    args: &[Vec<u8>],
    shared: &Shared,
    proto: &mut Protocol,
    authed: &mut bool,
    out: &mut Vec<u8>,
) {
    let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
    let mut o = Out::new(out, *proto);
    match name.as_str() {
        "AUTH" => match &shared.opts.password {
            None => o.error(
                "ERR AUTH <password> called without any password configured for the default user.",
            ),
            Some(p) if args.last().unwrap() == p.as_bytes() => {
                *authed = true;
                o.ok();
            }
            Some(_) => o.error("WRONGPASS invalid username-password pair or user is disabled."),
        },
        _ if !*authed => o.error("NOAUTH Authentication required."),
        "PING" => o.simple("PONG"),
        "HELLO" => {
            if args.get(1).map(|v| v.as_slice()) == Some(b"3") {
                *proto = Protocol::Resp3;
            }
            let mut o = Out::new(out, *proto);
            o.map(1);
            o.bulk(b"proto");
            o.int(if *proto == Protocol::Resp3 { 3 } else { 2 });
        }
        "SELECT" => o.ok(),
        "SET" => {
            shared.counts.sets.fetch_add(1, Ordering::Relaxed);
            shared
                .map
                .lock()
                .unwrap()
                .insert(args[1].clone(), args[2].clone());
            o.ok();
        }
        "GET" => match shared.map.lock().unwrap().get(&args[1]) {
            Some(v) => {
                shared.counts.get_hits.fetch_add(1, Ordering::Relaxed);
                o.bulk(v)
            }
            None => {
                shared.counts.get_misses.fetch_add(1, Ordering::Relaxed);
                o.null()
            }
        },
        _ => o.error(&format!("ERR unknown command '{name}'")),
    }
}
