//! Test harness: start the real `tessera` binary on a free port, talk to it with the
//! `redis` crate or with raw RESP bytes, and stop it. Every wait has a deadline.

#![allow(dead_code)]

pub mod certs;
pub mod check;
#[allow(unused_imports)]
pub use check::*;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to start answering PING.
pub const START_DEADLINE: Duration = Duration::from_secs(20);
/// How long a raw reply may take to arrive.
pub const REPLY_DEADLINE: Duration = Duration::from_secs(20);

pub struct Server {
    pub port: u16,
    child: Option<Child>,
    log: std::path::PathBuf,
    /// The directory the harness made for the server (removed with it).
    own_dir: Option<std::path::PathBuf>,
}

/// A directory of its own for one test's files, removed when dropped.
pub struct Scratch(std::path::PathBuf);

impl std::ops::Deref for Scratch {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for Scratch {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh, empty scratch directory named after the test.
pub fn scratch_dir(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("tessera-scratch-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch dir");
    Scratch(dir)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("local addr")
        .port()
}

/// Runs the binary on a free port with no save rules and `extra`, expecting it to refuse to
/// start; returns what it printed (stderr, then stdout).
pub fn refused_start(extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["--port", &free_port().to_string(), "--save", ""])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run tessera");
    assert!(!out.status.success(), "tessera started with {extra:?}");
    String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
}

impl Server {
    /// A node with `cores` data cores and extra flags (e.g. `["--requirepass", "x"]`).
    pub fn start(cores: usize, extra: &[&str]) -> Server {
        for _ in 0..5 {
            if let Some(s) = Self::try_start(cores, extra, START_DEADLINE) {
                return s;
            }
        }
        panic!("tessera did not start after 5 attempts");
    }

    pub fn with_cores(cores: usize) -> Server {
        Self::start(cores, &[])
    }

    /// Like [`Server::start`], for a node that first loads a large file: it may take up to
    /// `within` to answer.
    pub fn start_loading(cores: usize, extra: &[&str], within: Duration) -> Server {
        Self::try_start(cores, extra, within).expect("tessera exited while loading")
    }

    fn try_start(cores: usize, extra: &[&str], within: Duration) -> Option<Server> {
        let port = free_port();
        let log =
            std::env::temp_dir().join(format!("tessera-test-{port}-{}.log", std::process::id()));
        let logfile = std::fs::File::create(&log).expect("create log file");
        // A directory of its own, so a snapshot left in the working directory (a developer's
        // SAVE) is never loaded by a test's server.
        let mut own_dir_args = Vec::new();
        let mut own_dir = None;
        if !extra.contains(&"--dir") {
            let dir = std::env::temp_dir()
                .join(format!("tessera-test-dir-{port}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("create the server's dir");
            own_dir_args = vec!["--dir".to_string(), dir.display().to_string()];
            own_dir = Some(dir);
        }
        // No save rules unless the test sets them: a server stopped by SIGTERM would save.
        let no_save: &[&str] = if extra.contains(&"--save") {
            &[]
        } else {
            &["--save", ""]
        };
        let child = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["--port", &port.to_string(), "--cores", &cores.to_string()])
            .args(&own_dir_args)
            .args(no_save)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(logfile)
            .spawn()
            .expect("spawn tessera");
        let mut server = Server {
            port,
            child: Some(child),
            log,
            own_dir,
        };
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                eprintln!(
                    "tessera exited during start ({status}): {}",
                    server.log_text()
                );
                server.child = None;
                return None;
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                s.set_read_timeout(Some(Duration::from_secs(2))).ok();
                if s.write_all(b"PING\r\n").is_ok() {
                    let mut buf = [0u8; 64];
                    if let Ok(n) = s.read(&mut buf) {
                        // With requirepass, PING answers NOAUTH: the server is up either way.
                        if n > 0 {
                            return Some(server);
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "tessera did not answer within {within:?}: {}",
            server.log_text()
        );
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn client(&self) -> redis::Connection {
        let c = redis::Client::open(self.url()).expect("client");
        let con = c
            .get_connection_with_timeout(Duration::from_secs(10))
            .expect("connect");
        con.set_read_timeout(Some(REPLY_DEADLINE)).expect("timeout");
        con
    }

    pub fn raw(&self) -> Raw {
        Raw::connect(self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process has exited (waiting up to `within`); its exit status if so.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut()?;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Kills the server with SIGKILL (no shutdown work at all) and waits for it to go.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = &self.own_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Server {
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    let _ = std::fs::remove_file(&self.log);
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A RESP value as a raw-socket test reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Resp>),
    NilArray,
    /// RESP3 types, kept apart so tests can check the protocol chosen.
    Map(Vec<(Resp, Resp)>),
    Set(Vec<Resp>),
    Null,
    Double(String),
    Bool(bool),
    Verbatim(String),
}

impl Resp {
    pub fn bulk(s: &str) -> Resp {
        Resp::Bulk(s.as_bytes().to_vec())
    }
    pub fn ok() -> Resp {
        Resp::Simple("OK".into())
    }
    pub fn err(s: &str) -> Resp {
        Resp::Error(s.into())
    }
}

/// Parses one RESP value from the front of `buf`: `Some((value, consumed))` or `None` if
/// incomplete.
pub fn parse_resp(buf: &[u8]) -> Option<(Resp, usize)> {
    let line_end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&buf[1..line_end]).expect("utf8 header");
    let rest = line_end + 2;
    let n = || line.parse::<i64>().expect("length");
    let agg = |count: i64, buf: &[u8]| -> Option<(Vec<Resp>, usize)> {
        let mut items = Vec::new();
        let mut pos = rest;
        for _ in 0..count {
            let (v, used) = parse_resp(&buf[pos..])?;
            items.push(v);
            pos += used;
        }
        Some((items, pos))
    };
    match buf[0] {
        b'+' => Some((Resp::Simple(line.into()), rest)),
        b'-' => Some((Resp::Error(line.into()), rest)),
        b':' => Some((Resp::Int(n()), rest)),
        b',' => Some((Resp::Double(line.into()), rest)),
        b'#' => Some((Resp::Bool(line == "t"), rest)),
        b'_' => Some((Resp::Null, rest)),
        b'$' | b'=' => {
            let len = n();
            if len < 0 {
                return Some((Resp::Nil, rest));
            }
            let len = len as usize;
            if buf.len() < rest + len + 2 {
                return None;
            }
            let data = buf[rest..rest + len].to_vec();
            let v = if buf[0] == b'=' {
                Resp::Verbatim(String::from_utf8_lossy(&data[4..]).into_owned())
            } else {
                Resp::Bulk(data)
            };
            Some((v, rest + len + 2))
        }
        b'*' | b'~' => {
            let count = n();
            if count < 0 {
                return Some((Resp::NilArray, rest));
            }
            let (items, used) = agg(count, buf)?;
            Some((
                if buf[0] == b'*' {
                    Resp::Array(items)
                } else {
                    Resp::Set(items)
                },
                used,
            ))
        }
        b'%' => {
            let (items, used) = agg(2 * n(), buf)?;
            let mut it = items.into_iter();
            let mut pairs = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            Some((Resp::Map(pairs), used))
        }
        other => panic!("unexpected RESP type byte {:?}", other as char),
    }
}

/// A raw TCP connection speaking bytes.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub fn connect(port: u16) -> Raw {
        Raw::connect_addr(("127.0.0.1", port))
    }

    /// A connection to a node on another address (cluster tests use 127.0.x.y).
    pub fn connect_addr(addr: impl std::net::ToSocketAddrs) -> Raw {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(REPLY_DEADLINE)).unwrap();
        stream.set_nodelay(true).unwrap();
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Sends a command as a RESP multibulk.
    pub fn send_cmd(&mut self, args: &[&[u8]]) {
        self.send(&encode_cmd(args));
    }

    /// Reads one reply (panics after the deadline).
    pub fn read(&mut self) -> Resp {
        let deadline = Instant::now() + REPLY_DEADLINE;
        loop {
            if let Some((v, used)) = parse_resp(&self.buf) {
                self.buf.drain(..used);
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no reply within {REPLY_DEADLINE:?}"
            );
            let mut chunk = [0u8; 65536];
            let n = self.stream.read(&mut chunk).expect("read");
            assert!(
                n > 0,
                "server closed the connection; had {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads `n` replies and hands each to `each` with its index; unlike [`Raw::read`] it
    /// keeps up with pipelines of many thousands of replies.
    pub fn read_each(&mut self, n: usize, mut each: impl FnMut(usize, Resp)) {
        let mut deadline = Instant::now() + REPLY_DEADLINE;
        let mut at = 0;
        let mut i = 0;
        while i < n {
            if let Some((v, used)) = parse_resp(&self.buf[at..]) {
                at += used;
                each(i, v);
                i += 1;
                deadline = Instant::now() + REPLY_DEADLINE;
                continue;
            }
            self.buf.drain(..at);
            at = 0;
            assert!(
                Instant::now() < deadline,
                "no reply within {REPLY_DEADLINE:?}"
            );
            let mut chunk = [0u8; 65536];
            let n = self.stream.read(&mut chunk).expect("read");
            assert!(n > 0, "server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
        self.buf.drain(..at);
    }

    /// Sends the commands `command(i)` for every `i` in `range`, a batch at a time, and hands
    /// each reply to `check(i, reply)`.
    pub fn pipeline(
        &mut self,
        range: impl Iterator<Item = usize>,
        mut command: impl FnMut(usize) -> Vec<u8>,
        mut check: impl FnMut(usize, Resp),
    ) {
        const BATCH: usize = 5_000;
        let all: Vec<usize> = range.collect();
        for batch in all.chunks(BATCH) {
            let mut out = Vec::new();
            for &i in batch {
                out.extend(command(i));
            }
            self.send(&out);
            self.read_each(batch.len(), |j, r| check(batch[j], r));
        }
    }

    /// One field of `INFO everything`, as text (panics if INFO lacks it).
    pub fn info(&mut self, field: &str) -> String {
        let text = match self.cmd(&["INFO", "everything"]) {
            Resp::Bulk(b) => String::from_utf8(b).unwrap(),
            other => panic!("INFO replied {other:?}"),
        };
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .unwrap_or_else(|| panic!("INFO has no {field}"))
            .trim()
            .to_string()
    }

    /// An integer field of INFO.
    pub fn info_int(&mut self, field: &str) -> i64 {
        let v = self.info(field);
        v.parse()
            .unwrap_or_else(|_| panic!("INFO {field} is not an integer: {v}"))
    }

    pub fn cmd(&mut self, args: &[&str]) -> Resp {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        self.send_cmd(&a);
        self.read()
    }

    /// Whether the server closed the connection (reads until EOF or the deadline).
    pub fn is_closed(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return false,
            }
        }
    }
}

pub fn encode_cmd(args: &[&[u8]]) -> Vec<u8> {
    tessera::resp::request::encode(args)
}

/// Keys that live on core 0 and on core 1 of a 2-core node (slot < 8192 is core 0).
pub fn key_on_core(core: usize, cores: usize, prefix: &str) -> String {
    (0..100_000)
        .map(|i| format!("{prefix}{i}"))
        .find(|k| tessera::slot::key_core(k.as_bytes(), cores) == core)
        .expect("some key lands on every core")
}
