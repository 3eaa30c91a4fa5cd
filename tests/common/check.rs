//! Reply helpers and the `Check` collector shared by the command test files: build
//! expected replies tersely, run `command line → expected reply` tables, and report every
//! difference from Redis at once.

#![allow(dead_code)]

use super::*;

pub fn b(s: &str) -> Resp {
    Resp::bulk(s)
}
pub fn int(n: i64) -> Resp {
    Resp::Int(n)
}
pub fn err(s: &str) -> Resp {
    Resp::err(s)
}
pub fn ok() -> Resp {
    Resp::ok()
}
pub fn nil() -> Resp {
    Resp::Nil
}
pub fn arr(items: Vec<Resp>) -> Resp {
    Resp::Array(items)
}
pub fn arity(cmd: &str) -> Resp {
    err(&format!(
        "ERR wrong number of arguments for '{cmd}' command"
    ))
}
pub fn invalid_expire(cmd: &str) -> Resp {
    err(&format!("ERR invalid expire time in '{cmd}' command"))
}

/// A reply as redis-cli would print it, more or less: bulk strings quoted.
pub fn show(r: &Resp) -> String {
    match r {
        Resp::Simple(s) => format!("+{s}"),
        Resp::Error(s) => format!("-{s}"),
        Resp::Int(n) => format!(":{n}"),
        Resp::Bulk(v) if v.len() > 80 => format!(
            "{:?}… ({} bytes)",
            String::from_utf8_lossy(&v[..80]),
            v.len()
        ),
        Resp::Bulk(v) => format!("{:?}", String::from_utf8_lossy(v)),
        Resp::Nil => "(nil)".into(),
        Resp::Array(items) => format!(
            "[{}]",
            items.iter().map(show).collect::<Vec<_>>().join(", ")
        ),
        other => format!("{other:?}"),
    }
}

/// A connection that records every reply differing from the expected one; `finish` fails
/// the test with the whole list.
pub struct Check {
    pub raw: Raw,
    pub bad: Vec<String>,
    pub checked: usize,
}

impl Check {
    pub fn new(server: &Server) -> Check {
        Check {
            raw: server.raw(),
            bad: Vec::new(),
            checked: 0,
        }
    }

    pub fn run(&mut self, line: &str) -> Resp {
        let args: Vec<&str> = line.split_whitespace().collect();
        self.raw.cmd(&args)
    }

    pub fn args(&mut self, args: &[&[u8]]) -> Resp {
        self.raw.send_cmd(args);
        self.raw.read()
    }

    pub fn record(&mut self, what: String, want: &Resp, got: &Resp) {
        self.checked += 1;
        if want != got {
            self.bad.push(format!(
                "  {what}\n      redis:   {}\n      tessera: {}",
                show(want),
                show(got)
            ));
        }
    }

    pub fn expect(&mut self, line: &str, want: Resp) {
        let got = self.run(line);
        self.record(line.to_string(), &want, &got);
    }

    pub fn expect_args(&mut self, args: &[&[u8]], want: Resp) {
        let got = self.args(args);
        let what = args
            .iter()
            .map(|a| format!("{:?}", String::from_utf8_lossy(a)))
            .collect::<Vec<_>>()
            .join(" ");
        self.record(what, &want, &got);
    }

    pub fn table<S: AsRef<str>>(&mut self, cases: &[(S, Resp)]) {
        for (line, want) in cases {
            self.expect(line.as_ref(), want.clone());
        }
    }

    /// An integer reply within `lo..=hi` (for TTLs, which the wall clock moves a little).
    pub fn expect_between(&mut self, line: &str, lo: i64, hi: i64) {
        let got = self.run(line);
        self.checked += 1;
        match got {
            Resp::Int(n) if (lo..=hi).contains(&n) => {}
            other => self.bad.push(format!(
                "  {line}\n      redis:   an integer in {lo}..={hi}\n      tessera: {}",
                show(&other)
            )),
        }
    }

    pub fn finish(self) {
        assert!(
            self.bad.is_empty(),
            "{} of {} replies differ from Redis 7:\n{}",
            self.bad.len(),
            self.checked,
            self.bad.join("\n")
        );
    }
}

/// The server's clock (TIME), which `DEBUG ADVANCE-CLOCK` moves, in ms.
pub fn server_now_ms(c: &mut Check) -> i64 {
    match c.run("TIME") {
        Resp::Array(v) => match (&v[0], &v[1]) {
            (Resp::Bulk(s), Resp::Bulk(us)) => {
                let s: i64 = String::from_utf8_lossy(s).parse().unwrap();
                let us: i64 = String::from_utf8_lossy(us).parse().unwrap();
                s * 1000 + us / 1000
            }
            other => panic!("TIME items {other:?}"),
        },
        other => panic!("TIME replied {other:?}"),
    }
}

pub fn debug_server() -> Server {
    Server::start(2, &["--enable-debug-command", "yes"])
}

pub fn advance(c: &mut Check, ms: u64) {
    let r = c.run(&format!("DEBUG ADVANCE-CLOCK {ms}"));
    assert_eq!(r, ok(), "DEBUG ADVANCE-CLOCK {ms}");
}

/// A far-future unix time (year 3021) used for absolute expiry times.
pub const FAR_S: i64 = 33_177_117_420;
