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
