//! A thin epoll wrapper. Waits use `epoll_pwait2`, whose timeout is in nanoseconds (plain
//! `epoll_wait` rounds up to whole milliseconds, which would send open-loop requests up to
//! a millisecond late); kernels before 5.11 fall back to `epoll_wait`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

pub use libc::epoll_event as Event;

pub const READABLE: u32 = libc::EPOLLIN as u32;
pub const WRITABLE: u32 = libc::EPOLLOUT as u32;
/// Error or hang-up: reported whether asked for or not; a read then says which.
pub const BROKEN: u32 = (libc::EPOLLERR | libc::EPOLLHUP) as u32;

pub struct Epoll {
    fd: OwnedFd,
    /// Whether the kernel has `epoll_pwait2`; cleared on the first ENOSYS.
    pwait2: bool,
}

pub fn empty_events(n: usize) -> Vec<Event> {
    vec![Event { events: 0, u64: 0 }; n]
}

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 has no memory arguments; a non-negative result is a new fd
        // that nothing else owns.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: see above.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd, pwait2: true })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        let mut ev = Event { events, u64: token };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        let r = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Watches `fd` for `events` (level-triggered), reporting it as `token`.
    pub fn add(&self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, events)
    }

    pub fn modify(&self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, events)
    }

    /// Waits up to `timeout` (`None`: forever) and returns how many of `events` were
    /// filled. An interrupted wait returns 0.
    pub fn wait(&mut self, events: &mut [Event], timeout: Option<Duration>) -> io::Result<usize> {
        let max = events.len().min(i32::MAX as usize) as libc::c_int;
        let r = if self.pwait2 {
            let ts = timeout.map(|t| libc::timespec {
                tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
                tv_nsec: t.subsec_nanos() as libc::c_long,
            });
            let ts_ptr = ts
                .as_ref()
                .map_or(std::ptr::null(), |t| t as *const libc::timespec);
            // SAFETY: `events` is writable for `max` entries; `ts_ptr` is null or points to
            // a timespec that outlives the call; a null sigmask leaves the mask alone.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_epoll_pwait2,
                    self.fd.as_raw_fd(),
                    events.as_mut_ptr(),
                    max,
                    ts_ptr,
                    std::ptr::null::<libc::sigset_t>(),
                    0usize,
                )
            };
            if r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
                self.pwait2 = false;
                return self.wait(events, timeout);
            }
            r as libc::c_int
        } else {
            // Round up so a short wait is not a busy loop of zero timeouts.
            let ms = timeout.map_or(-1, |t| {
                t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32
            });
            // SAFETY: `events` is writable for `max` entries.
            unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), max, ms) }
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(e);
        }
        Ok(r as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::time::Instant;

    #[test]
    fn reports_readiness_and_honours_short_timeouts() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut b, _) = l.accept().unwrap();
        let mut ep = Epoll::new().unwrap();
        ep.add(a.as_raw_fd(), 7, READABLE).unwrap();
        let mut evs = empty_events(4);
        let t = Instant::now();
        assert_eq!(
            ep.wait(&mut evs, Some(Duration::from_micros(200))).unwrap(),
            0
        );
        // The wait lasts at least its timeout (how much longer depends on the machine).
        assert!(t.elapsed() >= Duration::from_micros(200));
        b.write_all(b"+OK\r\n").unwrap();
        let n = ep.wait(&mut evs, Some(Duration::from_secs(10))).unwrap();
        assert_eq!(n, 1);
        let (token, flags) = (evs[0].u64, evs[0].events);
        assert_eq!((token, flags & READABLE), (7, READABLE));
        ep.modify(a.as_raw_fd(), 7, READABLE | WRITABLE).unwrap();
        let n = ep.wait(&mut evs, Some(Duration::from_secs(10))).unwrap();
        assert_eq!((n, evs[0].events & WRITABLE), (1, WRITABLE));
    }
}
