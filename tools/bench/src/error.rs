//! The generator's errors. Each message says what failed and what to try.

use std::path::PathBuf;

use tessera::resp::frame::FrameError;

use crate::config::REPLY_MAX_BYTES;

/// A connection's failure while load runs.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("the server closed the connection")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the server sent bytes that are not RESP: {0}")]
    Protocol(FrameError),
    #[error("the server sent a reply with no request outstanding")]
    UnexpectedReply,
    #[error("a reply larger than {REPLY_MAX_BYTES} bytes")]
    ReplyTooLarge,
    #[error("no reply for {waited_ms} ms with {in_flight} requests in flight (--timeout)")]
    Stalled { waited_ms: u64, in_flight: usize },
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot resolve {addr}: {source}")]
    Resolve {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot connect to {addr}: {source}; is the server running there? (--host, --port)")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr} answered {step} with `{reply}`{hint}")]
    Handshake {
        addr: String,
        step: &'static str,
        reply: String,
        hint: &'static str,
    },
    #[error("connection {conn} to {addr}: {source}")]
    Conn {
        conn: usize,
        addr: String,
        source: ConnError,
    },
    #[error("populating the key space failed: {errors} SET commands got an error reply, the first `{first}`")]
    Populate { errors: u64, first: String },
    #[error("cannot pin a thread to CPU {cpu}: this process may use only CPUs {allowed} (--cpus)")]
    Pin { cpu: usize, allowed: String },
    #[error("epoll failed: {0}")]
    Poll(std::io::Error),
    #[error("worker thread {0} panicked")]
    Panicked(usize),
    #[error("cannot write {path}: {source}")]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {reason}")]
    Input { path: PathBuf, reason: String },
}
