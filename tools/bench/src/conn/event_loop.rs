//! One worker thread's event loop: level-triggered epoll over the thread's connections.
//!
//! Per request it costs one share of a `write` and of a `read` (a pipeline batches both)
//! and a share of an `epoll_pwait2`; buffers are allocated when a connection is opened and
//! reused, so the loop itself does not allocate. Writes go out as soon as requests are
//! filled; write interest is registered only while a socket's send buffer is full.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::epoll::{self, Epoll, Event, BROKEN, READABLE, WRITABLE};
use super::state::ConnState;
use super::Clock;
use crate::config::{
    DRAIN_DEADLINE, EPOLL_EVENTS, PUBLISH_INTERVAL, READ_BUFFER_BYTES, REPLY_MAX_BYTES, SPIN_BELOW,
};
use crate::error::{BenchError, ConnError};
use crate::stats::{Interval, Recorder};

/// A connection with its socket and buffers.
pub struct Conn {
    /// Index among the run's connections, for messages.
    pub id: usize,
    /// Its epoll token: its index in the driver's list.
    token: u64,
    stream: TcpStream,
    pub state: ConnState,
    rbuf: Vec<u8>,
    /// Unread replies are `rbuf[rstart..rend]`.
    rstart: usize,
    rend: usize,
    wbuf: Vec<u8>,
    wpos: usize,
    /// Whether epoll is watching for writability.
    write_interest: bool,
    /// Last time a reply arrived or the connection went from idle to busy.
    progress_ns: u64,
}

impl Conn {
    pub fn new(id: usize, stream: TcpStream, state: ConnState) -> io::Result<Conn> {
        stream.set_nonblocking(true)?;
        Ok(Conn {
            id,
            token: 0,
            stream,
            state,
            rbuf: vec![0; READ_BUFFER_BYTES],
            rstart: 0,
            rend: 0,
            wbuf: Vec::with_capacity(READ_BUFFER_BYTES),
            wpos: 0,
            write_interest: false,
            progress_ns: 0,
        })
    }

    fn send(&mut self, now_ns: u64, ep: &Epoll, rec: &mut Recorder) -> Result<(), ConnError> {
        if self.state.in_flight() == 0 {
            self.progress_ns = now_ns;
        }
        if self.state.fill(now_ns, &mut self.wbuf, rec) > 0 {
            self.flush(ep)?;
        }
        Ok(())
    }

    fn flush(&mut self, ep: &Epoll) -> Result<(), ConnError> {
        while self.wpos < self.wbuf.len() {
            match (&self.stream).write(&self.wbuf[self.wpos..]) {
                Ok(0) => return Err(ConnError::Closed),
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !self.write_interest {
                        ep.modify(self.stream.as_raw_fd(), self.token, READABLE | WRITABLE)?;
                        self.write_interest = true;
                    }
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.wbuf.clear();
        self.wpos = 0;
        if self.write_interest {
            ep.modify(self.stream.as_raw_fd(), self.token, READABLE)?;
            self.write_interest = false;
        }
        Ok(())
    }

    /// One read, then every whole reply in the buffer.
    fn receive(&mut self, clock: &Clock, rec: &mut Recorder) -> Result<(), ConnError> {
        if self.rend == self.rbuf.len() {
            self.make_room()?;
        }
        let n = match (&self.stream).read(&mut self.rbuf[self.rend..]) {
            Ok(0) => return Err(ConnError::Closed),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return Ok(())
            }
            Err(e) => return Err(e.into()),
        };
        let now_ns = clock.now_ns();
        self.rend += n;
        let used = self
            .state
            .on_input(&self.rbuf[self.rstart..self.rend], now_ns, rec)?;
        if used > 0 {
            self.progress_ns = now_ns;
        }
        self.rstart += used;
        if self.rstart == self.rend {
            (self.rstart, self.rend) = (0, 0);
        }
        Ok(())
    }

    /// The buffer is full of an incomplete reply: move it to the front, or grow.
    fn make_room(&mut self) -> Result<(), ConnError> {
        if self.rstart > 0 {
            self.rbuf.copy_within(self.rstart..self.rend, 0);
            (self.rstart, self.rend) = (0, self.rend - self.rstart);
        } else if self.rbuf.len() >= REPLY_MAX_BYTES {
            return Err(ConnError::ReplyTooLarge);
        } else {
            let len = (self.rbuf.len() * 2).min(REPLY_MAX_BYTES);
            self.rbuf.resize(len, 0);
        }
        Ok(())
    }
}

/// How a phase ends.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    /// Stop at this time; `None`: when every connection has spent its budget.
    pub end_ns: Option<u64>,
    /// At the end, stop sending and wait for the replies in flight (up to
    /// [`DRAIN_DEADLINE`]); otherwise hand over to the next phase at once.
    pub drain: bool,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct PhaseEnd {
    /// Open-loop requests scheduled before the end but never sent.
    pub unsent: u64,
    /// Requests still unanswered at the drain deadline.
    pub timed_out: u64,
}

/// A thread's connections and the loop that drives them.
pub struct Driver<'a> {
    ep: Epoll,
    pub conns: Vec<Conn>,
    events: Vec<Event>,
    clock: Clock,
    addr: &'a str,
    reply_timeout_ns: u64,
    /// Where the progress line reads this thread's counts.
    shared: &'a Mutex<Interval>,
    /// Set by anyone to stop every thread (another thread failed).
    abort: &'a AtomicBool,
    next_publish_ns: u64,
}

impl<'a> Driver<'a> {
    pub fn new(
        conns: Vec<Conn>,
        clock: Clock,
        addr: &'a str,
        reply_timeout: Duration,
        shared: &'a Mutex<Interval>,
        abort: &'a AtomicBool,
    ) -> Result<Driver<'a>, BenchError> {
        let ep = Epoll::new().map_err(BenchError::Poll)?;
        let mut conns = conns;
        // A connection's epoll token is its place in `conns`, so an event finds it directly.
        for (i, c) in conns.iter_mut().enumerate() {
            c.token = i as u64;
            ep.add(c.stream.as_raw_fd(), c.token, READABLE)
                .map_err(BenchError::Poll)?;
        }
        Ok(Driver {
            ep,
            conns,
            events: epoll::empty_events(EPOLL_EVENTS),
            clock,
            addr,
            reply_timeout_ns: reply_timeout.as_nanos() as u64,
            shared,
            abort,
            next_publish_ns: 0,
        })
    }

    fn fail(&self, i: usize, source: ConnError) -> BenchError {
        BenchError::Conn {
            conn: self.conns[i].id,
            addr: self.addr.to_string(),
            source,
        }
    }

    /// Runs the connections until the phase ends.
    pub fn run(&mut self, phase: Phase, rec: &mut Recorder) -> Result<PhaseEnd, BenchError> {
        let mut end = PhaseEnd::default();
        let mut drain_until: Option<u64> = None;
        loop {
            let now = self.clock.now_ns();
            if now >= self.next_publish_ns {
                rec.publish(self.shared);
                self.next_publish_ns = now + PUBLISH_INTERVAL.as_nanos() as u64;
                self.check_stalls(now)?;
                if self.abort.load(Ordering::Relaxed) {
                    return Ok(end);
                }
            }
            if let Some(t) = phase.end_ns.filter(|&t| now >= t && drain_until.is_none()) {
                if !phase.drain {
                    return Ok(end);
                }
                for c in &mut self.conns {
                    end.unsent += c.state.stop(t);
                }
                drain_until = Some(now + DRAIN_DEADLINE.as_nanos() as u64);
            }
            if drain_until.is_some_and(|d| now >= d) {
                end.timed_out = self.conns.iter().map(|c| c.state.in_flight() as u64).sum();
                return Ok(end);
            }
            let mut wake = self.next_publish_ns;
            let mut all_done = true;
            for i in 0..self.conns.len() {
                let c = &mut self.conns[i];
                if c.state.wants_to_send(now) {
                    if let Err(e) = c.send(now, &self.ep, rec) {
                        return Err(self.fail(i, e));
                    }
                }
                let c = &self.conns[i];
                all_done &= c.state.is_done();
                if let Some(t) = c.state.next_due_ns() {
                    wake = wake.min(t);
                }
            }
            if all_done && (phase.end_ns.is_none() || drain_until.is_some()) {
                return Ok(end);
            }
            if let Some(t) = drain_until.or(phase.end_ns) {
                wake = wake.min(t);
            }
            self.wait_and_handle(now, wake, rec)?;
        }
    }

    fn wait_and_handle(
        &mut self,
        now: u64,
        wake_ns: u64,
        rec: &mut Recorder,
    ) -> Result<(), BenchError> {
        let mut timeout = Duration::from_nanos(wake_ns.saturating_sub(now));
        if timeout < SPIN_BELOW {
            timeout = Duration::ZERO;
        }
        let n = self
            .ep
            .wait(&mut self.events, Some(timeout))
            .map_err(BenchError::Poll)?;
        for k in 0..n {
            let Event {
                events: flags,
                u64: token,
            } = self.events[k];
            let i = token as usize;
            let c = &mut self.conns[i];
            let mut r = Ok(());
            if flags & (READABLE | BROKEN) != 0 {
                r = c.receive(&self.clock, rec);
                if r.is_ok() && c.state.wants_to_send(self.clock.now_ns()) {
                    r = c.send(self.clock.now_ns(), &self.ep, rec);
                }
            }
            if r.is_ok() && flags & WRITABLE != 0 {
                r = c.flush(&self.ep);
            }
            if let Err(e) = r {
                return Err(self.fail(i, e));
            }
        }
        Ok(())
    }

    fn check_stalls(&self, now: u64) -> Result<(), BenchError> {
        for (i, c) in self.conns.iter().enumerate() {
            let waited = now.saturating_sub(c.progress_ns);
            if c.state.in_flight() > 0 && waited > self.reply_timeout_ns {
                let e = ConnError::Stalled {
                    waited_ms: waited / 1_000_000,
                    in_flight: c.state.in_flight(),
                };
                return Err(self.fail(i, e));
            }
        }
        Ok(())
    }
}
