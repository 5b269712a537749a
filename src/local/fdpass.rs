//! File-descriptor plumbing of the local socket: adopting accepted descriptors into
//! glommio streams. The only `unsafe` of the local protocol lives here.

use glommio::net::UnixStream;
use std::os::unix::io::{FromRawFd, RawFd};

/// Wraps an accepted, connected Unix stream socket that the caller owns.
pub fn stream_from_fd(fd: RawFd) -> UnixStream {
    // SAFETY: `fd` is an open, connected Unix stream socket handed over by the acceptor via
    // `into_raw_fd`; no other owner exists, so the stream may take ownership and close it.
    unsafe { UnixStream::from_raw_fd(fd) }
}

/// Most descriptors sent with one `sendmsg`, and received with one `recvmsg`.
pub const MAX_FDS_PER_MSG: usize = 32;

/// Sends `bytes` on the socket `sock` with `fds` (at most [`MAX_FDS_PER_MSG`]) attached as
/// `SCM_RIGHTS` ancillary data, without blocking. Returns how many bytes went out (the
/// descriptors travel with the first byte); `WouldBlock` if the socket buffer is full.
pub fn send_with_fds(sock: RawFd, bytes: &[u8], fds: &[RawFd]) -> std::io::Result<usize> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    debug_assert!(fds.len() <= MAX_FDS_PER_MSG);
    let iov = [std::io::IoSlice::new(bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    sendmsg::<()>(sock, &iov, &cmsg, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL, None)
        .map_err(std::io::Error::from)
}

/// Reads up to `buf.len()` bytes from the blocking socket `sock`, collecting any
/// descriptors passed alongside. Returns (bytes read, descriptors).
pub fn recv_with_fds(sock: RawFd, buf: &mut [u8]) -> std::io::Result<(usize, Vec<std::os::fd::OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS_PER_MSG]);
    let msg = loop {
        match recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other.map_err(std::io::Error::from)?,
        }
    };
    let mut fds = Vec::new();
    for c in msg.cmsgs() {
        if let ControlMessageOwned::ScmRights(raw) = c {
            for fd in raw {
                // SAFETY: the kernel just installed `fd` in this process for us (SCM_RIGHTS);
                // nothing else refers to it, so the OwnedFd is its only owner.
                fds.push(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Ok((msg.bytes, fds))
}
