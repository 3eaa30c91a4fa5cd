//! Connections: [`handshake`] opens one (AUTH, HELLO, SELECT, PING) with blocking I/O and
//! deadlines; [`state`] is what a connection has in flight and what it sends next, pure and
//! driven by the caller's clock; [`event_loop`] runs one thread's connections over
//! [`epoll`] without allocating per request.

pub mod epoll;
pub mod event_loop;
pub mod handshake;
pub mod state;

use std::time::Instant;

/// The run's clock: nanoseconds since a base instant every thread shares.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
}

impl Clock {
    pub fn new(base: Instant) -> Clock {
        Clock { base }
    }

    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    pub fn instant_at(&self, ns: u64) -> Instant {
        self.base + std::time::Duration::from_nanos(ns)
    }
}
