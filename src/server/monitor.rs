//! MONITOR: every command the node accepts, as a line to each monitoring client.
//!
//! Cost: with no monitor attached, one atomic load per command. With monitors attached,
//! every command is formatted once (Redis's quoting) and its line handed to each monitor's
//! queue under a lock shared by all cores, so every core serializes on it: throughput falls
//! as it does for Redis, which documents the same. A monitor that does not read its lines
//! fast enough is dropped once `limits::MONITOR_QUEUE_LINES` wait for it (Redis closes it
//! at its output-buffer limit).
//!
//! Not fed: admin commands and those flagged skip_monitor (as Redis), and AUTH/HELLO's
//! secrets are not shown (AUTH is not fed; HELLO's AUTH arguments read "(redacted)").

use super::core::Core;
use super::session::Session;
use crate::cmd::{Args, CommandSpec};
use crate::limits;
use crate::resp::{Decoded, Limits, RequestDecoder};
use futures_channel::mpsc;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tessera_shards::ClientId;

/// The monitors attached to the node, and how many (read on every command).
#[derive(Default)]
pub struct Monitors {
    pub count: std::sync::atomic::AtomicUsize,
    list: std::sync::Mutex<Vec<(ClientId, mpsc::Sender<Arc<str>>)>>,
}

impl Monitors {
    /// Attaches a monitor; its lines come out of the receiver.
    pub fn attach(&self, id: ClientId) -> mpsc::Receiver<Arc<str>> {
        let (tx, rx) = mpsc::channel(limits::MONITOR_QUEUE_LINES);
        let mut list = self.list.lock().expect("monitor lock");
        list.push((id, tx));
        self.count.store(list.len(), Ordering::Release);
        rx
    }

    pub fn detach(&self, id: ClientId) {
        let mut list = self.list.lock().expect("monitor lock");
        list.retain(|(c, _)| *c != id);
        self.count.store(list.len(), Ordering::Release);
    }
}

/// Appends `arg` quoted as Redis's sdscatrepr does.
fn quote(line: &mut String, arg: &[u8]) {
    line.push('"');
    for &b in arg {
        match b {
            b'\\' => line.push_str("\\\\"),
            b'"' => line.push_str("\\\""),
            b'\n' => line.push_str("\\n"),
            b'\r' => line.push_str("\\r"),
            b'\t' => line.push_str("\\t"),
            7 => line.push_str("\\a"),
            8 => line.push_str("\\b"),
            0x20..=0x7e => line.push(b as char),
            _ => {
                let _ = write!(line, "\\x{b:02x}");
            }
        }
    }
    line.push('"');
}

/// The MONITOR line of a command.
pub fn line(unix_micros: u64, db: usize, addr: &str, spec: &CommandSpec, args: &Args) -> String {
    let mut line = format!(
        "+{}.{:06} [{db} {addr}]",
        unix_micros / 1_000_000,
        unix_micros % 1_000_000
    );
    let mut redact_from = usize::MAX;
    if spec.name == "hello" {
        if let Some(i) = (1..args.len()).find(|&i| args.get(i).eq_ignore_ascii_case(b"auth")) {
            redact_from = i + 1;
        }
    }
    for (i, a) in args.iter().enumerate() {
        line.push(' ');
        if i >= redact_from && i < redact_from + 2 {
            quote(&mut line, b"(redacted)");
        } else {
            quote(&mut line, a);
        }
    }
    line.push_str("\r\n");
    line
}

/// Feeds a command to the monitors, if there are any.
pub fn feed(core: &Core, s: &Session, spec: &CommandSpec, args: &Args) {
    let monitors = &core.node.monitors;
    if monitors.count.load(Ordering::Relaxed) == 0
        || spec.has_flag("admin")
        || spec.has_flag("skip_monitor")
        || spec.name == "auth"
    {
        return;
    }
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let addr = s.record.borrow().addr.to_string();
    let text: Arc<str> = line(micros, s.db, &addr, spec, args).into();
    let mut list = monitors.list.lock().expect("monitor lock");
    let before = list.len();
    list.retain_mut(|(id, tx)| {
        // A monitor that is this client itself sees nothing of its own (it is monitoring).
        *id == s.id || tx.try_send(text.clone()).is_ok() || {
            tracing::warn!(
                client = *id,
                "a MONITOR client fell too far behind: dropped"
            );
            false
        }
    });
    if list.len() != before {
        monitors.count.store(list.len(), Ordering::Release);
    }
}

/// A monitoring connection: writes its lines as they come; reads and ignores what the
/// client sends until it closes the connection (or sends QUIT).
pub async fn serve<S: super::conn::ClientStream>(
    core: &Core,
    stream: &mut S,
    id: ClientId,
    mut lines: mpsc::Receiver<Arc<str>>,
    killed: &std::cell::Cell<bool>,
) {
    use futures_lite::{AsyncReadExt, AsyncWriteExt, StreamExt};
    let (mut r, mut w) = futures_lite::io::split(stream);
    let reading = async {
        // The client may still send commands: QUIT ends the monitor (and the connection),
        // the rest are read and ignored. Requests are decoded as on any connection, with
        // an unauthenticated client's small limits: a monitor has nothing large to say.
        let mut buf = vec![0u8; limits::MONITOR_INPUT_BYTES];
        let mut filled = 0;
        let mut dec = RequestDecoder::new();
        let small = Limits {
            max_bulk_bytes: limits::MONITOR_INPUT_BYTES,
            max_multibulk_len: 16,
            unauthenticated: true,
        };
        loop {
            if filled == buf.len() {
                return;
            }
            match r.read(&mut buf[filled..]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => filled += n,
            }
            let mut pos = 0;
            loop {
                match dec.decode(&buf[pos..filled], &small) {
                    Decoded::Command { consumed, inline } => {
                        let first = if inline {
                            Args::new(dec.inline_bytes(), dec.args()).get(0)
                        } else {
                            Args::new(&buf[pos..filled], dec.args()).get(0)
                        };
                        if first.eq_ignore_ascii_case(b"quit") {
                            return;
                        }
                        pos += consumed;
                    }
                    Decoded::Skip { consumed } => pos += consumed,
                    Decoded::Incomplete => break,
                    Decoded::Invalid(_) => return,
                }
            }
            buf.copy_within(pos..filled, 0);
            filled -= pos;
            if killed.get() || core.node.shutting_down() {
                return;
            }
        }
    };
    let writing = async {
        let mut out = Vec::with_capacity(limits::MONITOR_WRITE_BYTES);
        while let Some(line) = lines.next().await {
            // Whatever else is waiting goes in the same write.
            out.extend_from_slice(line.as_bytes());
            while out.len() < limits::MONITOR_WRITE_BYTES {
                match lines.try_recv() {
                    Ok(more) => out.extend_from_slice(more.as_bytes()),
                    Err(_) => break,
                }
            }
            if killed.get() || w.write_all(&out).await.is_err() {
                return;
            }
            core.bump(|st| st.total_net_output_bytes += out.len() as u64);
            let _ = w.flush().await;
            out.clear();
        }
    };
    futures_lite::future::or(reading, writing).await;
    core.node.monitors.detach(id);
}
