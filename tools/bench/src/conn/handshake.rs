//! Opening a connection: TCP connect with a deadline, then AUTH, HELLO 3, SELECT and PING
//! as asked, pipelined, each reply checked so a misconfiguration stops the run at once with
//! a message that names the flag to fix (rather than a run of nothing but error replies).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use tessera::resp::frame::{self, Decoded, Frame};

use crate::config::{Config, Resp};
use crate::encode::command;
use crate::error::BenchError;

/// Resolves `addr` (`host:port`) once per run.
pub fn resolve(addr: &str) -> Result<Vec<SocketAddr>, BenchError> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|source| BenchError::Resolve {
            addr: addr.into(),
            source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(BenchError::Resolve {
            addr: addr.into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"),
        });
    }
    Ok(addrs)
}

/// Connects and runs the handshake; the stream is returned blocking, with no timeouts.
pub fn open(cfg: &Config, addrs: &[SocketAddr]) -> Result<TcpStream, BenchError> {
    let mut last = None;
    let mut stream = None;
    for a in addrs {
        match TcpStream::connect_timeout(a, cfg.connect_timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let connect_err = |source| BenchError::Connect {
        addr: cfg.addr.clone(),
        source,
    };
    let mut s = match stream {
        Some(s) => s,
        None => return Err(connect_err(last.expect("at least one address was tried"))),
    };
    s.set_nodelay(true).map_err(connect_err)?;
    let steps = steps(cfg);
    let mut req = Vec::new();
    for (_, args) in &steps {
        let a: Vec<&[u8]> = args.iter().map(|x| x.as_bytes()).collect();
        req.extend_from_slice(&command(&a));
    }
    let deadline = Instant::now() + cfg.connect_timeout;
    s.set_write_timeout(Some(cfg.connect_timeout))
        .map_err(connect_err)?;
    s.write_all(&req).map_err(connect_err)?;
    let mut buf = Vec::new();
    for (step, _) in &steps {
        let reply =
            read_reply(&mut s, &mut buf, deadline).map_err(|reply| BenchError::Handshake {
                addr: cfg.addr.clone(),
                step,
                reply,
                hint: "",
            })?;
        if let Frame::Error(text) = reply {
            let text = String::from_utf8_lossy(&text).into_owned();
            let hint = hint(step, &text);
            return Err(BenchError::Handshake {
                addr: cfg.addr.clone(),
                step,
                reply: text,
                hint,
            });
        }
    }
    s.set_read_timeout(None).map_err(connect_err)?;
    s.set_write_timeout(None).map_err(connect_err)?;
    Ok(s)
}

/// The commands to send, each with the name used in messages.
fn steps(cfg: &Config) -> Vec<(&'static str, Vec<String>)> {
    let mut steps = Vec::new();
    if let Some(a) = &cfg.auth {
        let mut args = vec!["AUTH".to_string()];
        args.extend(a.user.clone());
        args.push(a.password.clone());
        steps.push(("AUTH", args));
    }
    if cfg.resp == Resp::V3 {
        steps.push(("HELLO 3", vec!["HELLO".into(), "3".into()]));
    }
    if let Some(db) = cfg.db {
        steps.push(("SELECT", vec!["SELECT".into(), db.to_string()]));
    }
    steps.push(("PING", vec!["PING".into()]));
    steps
}

/// What to tell the operator about an error reply to a handshake step.
fn hint(step: &str, reply: &str) -> &'static str {
    let upper = reply.to_ascii_uppercase();
    if upper.starts_with("NOAUTH") {
        "; the server needs a password: pass --pass (and --user for an ACL user)"
    } else if upper.starts_with("WRONGPASS") || upper.contains("INVALID PASSWORD") {
        "; check --user and --pass"
    } else if step == "AUTH" && upper.contains("WITHOUT ANY PASSWORD") {
        "; the server has no password: leave out --pass"
    } else if step == "HELLO 3" {
        "; the server may not speak RESP3: leave out --resp3"
    } else if step == "SELECT" {
        "; --db is out of range for this server"
    } else {
        ""
    }
}

/// Reads one whole reply; `Err` carries what went wrong, for the message.
fn read_reply(s: &mut TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> Result<Frame, String> {
    loop {
        match frame::decode(buf) {
            Decoded::Complete(f, used) => {
                buf.drain(..used);
                return Ok(f);
            }
            Decoded::Invalid(e) => return Err(format!("bytes that are not RESP ({e})")),
            Decoded::Incomplete => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("no reply in time (--connect-timeout)".into());
        }
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .map_err(|e| e.to_string())?;
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) => return Err("a closed connection".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err("no reply in time (--connect-timeout)".into())
            }
            Err(e) => return Err(format!("a read error: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Auth;
    use crate::workload::Workload;

    #[test]
    fn steps_follow_the_flags() {
        let mut cfg = Config::new("x:1", Workload::simple(1, 1, 10, 1));
        let names = |c: &Config| {
            steps(c)
                .into_iter()
                .map(|s| s.1.join(" "))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&cfg), ["PING"]);
        cfg.auth = Some(Auth {
            user: Some("u".into()),
            password: "p".into(),
        });
        cfg.resp = Resp::V3;
        cfg.db = Some(2);
        assert_eq!(names(&cfg), ["AUTH u p", "HELLO 3", "SELECT 2", "PING"]);
    }

    #[test]
    fn hints_name_the_flag() {
        assert!(hint("PING", "NOAUTH Authentication required.").contains("--pass"));
        assert!(hint("AUTH", "WRONGPASS invalid username-password pair").contains("--user"));
        assert!(hint("HELLO 3", "ERR unknown command 'HELLO'").contains("--resp3"));
        assert!(hint("SELECT", "ERR DB index is out of range").contains("--db"));
    }
}
