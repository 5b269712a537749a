//! Socket options of TCP connections between processes (socket2), derived from the
//! connection's idle deadline, and the cut the idle watchdog makes.
//!
//! Keepalive finds a peer that vanished (its host died, its link went dark) while nothing
//! is in flight, where the idle watchdog ([`super::idle`]) does not look: the first probe
//! goes out half the deadline after the last byte received, then one every sixth of it.
//! `TCP_USER_TIMEOUT` at the deadline makes the kernel drop the connection once probes, or
//! data it sent, have gone unanswered that long, so a dead peer is found within about
//! the deadline whether or not a call was in flight.
//!
//! glommio's streams expose only their raw fd, and socket2 0.5 takes a borrowed one: the
//! one `unsafe` borrow here is sound because the stream is borrowed for the whole call.

use socket2::{SockRef, TcpKeepalive};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

/// Keepalive and user timeout on a socket owned by `stream` (a glommio stream).
pub fn tune<S: AsRawFd>(stream: &S, idle: Duration) -> io::Result<()> {
    // SAFETY: `stream` owns the fd and is borrowed for this whole call, so the fd stays
    // open and is not reused while the borrowed handle lives (it does not escape).
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    apply(SockRef::from(&fd), idle)
}

/// [`tune`] for a blocking stream, whose writes also fail once the peer has taken none of
/// their bytes for `idle` (`SO_SNDTIMEO`, set once here, not per call).
pub fn tune_std(stream: &std::net::TcpStream, idle: Duration) -> io::Result<()> {
    apply(SockRef::from(stream), idle)?;
    stream.set_write_timeout(Some(idle))
}

fn apply(s: SockRef<'_>, idle: Duration) -> io::Result<()> {
    let secs = |d: Duration| d.max(Duration::from_secs(1));
    let ka = TcpKeepalive::new().with_time(secs(idle / 2)).with_interval(secs(idle / 6)).with_retries(3);
    s.set_tcp_keepalive(&ka)?;
    s.set_tcp_user_timeout(Some(idle))
}

/// Shuts the socket `fd` down both ways: reads pending on it end, writes fail. The caller
/// guarantees `fd` is still the connection's socket (its stream is alive).
pub fn cut(fd: RawFd) {
    // An error means the socket is already shut down or gone: nothing left to cut.
    let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn keepalive_and_user_timeout_follow_the_idle_deadline() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        tune_std(&s, Duration::from_secs(30)).unwrap();
        let r = SockRef::from(&s);
        assert!(r.keepalive().unwrap());
        assert_eq!(r.keepalive_time().unwrap(), Duration::from_secs(15));
        assert_eq!(r.keepalive_interval().unwrap(), Duration::from_secs(5));
        assert_eq!(r.keepalive_retries().unwrap(), 3);
        assert_eq!(r.tcp_user_timeout().unwrap(), Some(Duration::from_secs(30)));
        assert_eq!(s.write_timeout().unwrap(), Some(Duration::from_secs(30)));
        // Short deadlines keep whole-second probes.
        tune(&s, Duration::from_millis(1500)).unwrap();
        assert_eq!(r.keepalive_time().unwrap(), Duration::from_secs(1));
        assert_eq!(r.tcp_user_timeout().unwrap(), Some(Duration::from_millis(1500)));
    }
}
