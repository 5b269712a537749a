//! The writer of one local connection. A frame that names segments the client needs the
//! descriptors of carries them (`SCM_RIGHTS` on one-off `sendmsg`s, since io_uring cannot
//! pass descriptors on Unix sockets): up to [`MAX_FDS_PER_MSG`] with each of the frame's
//! first bytes, in the order the frame lists them.

use super::fdpass::MAX_FDS_PER_MSG;
use futures_lite::{AsyncWrite, AsyncWriteExt};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::io::RawFd;
use std::time::Duration;

/// One frame to write.
#[derive(Debug)]
pub struct LocalOut {
    /// The whole frame.
    pub bytes: Vec<u8>,
    /// Descriptors to pass with it, in order.
    pub pass_fds: Vec<PassFd>,
}

/// A descriptor to pass: one the raylet keeps open (the store's), or a duplicate closed
/// once sent (a fallback segment's, which may go while the frame waits).
#[derive(Debug)]
pub enum PassFd {
    /// Open for the raylet's lifetime.
    Kept(RawFd),
    /// Ours to close.
    Owned(OwnedFd),
}

impl PassFd {
    fn raw(&self) -> RawFd {
        match self {
            Self::Kept(fd) => *fd,
            Self::Owned(fd) => fd.as_raw_fd(),
        }
    }
}

impl LocalOut {
    /// A plain frame.
    pub fn frame(bytes: Vec<u8>) -> Self {
        Self { bytes, pass_fds: Vec::new() }
    }
}

/// Writes a connection's frames in order. The connection's task handles one request at
/// a time, so it writes each reply itself: no queue, no extra task switch per reply.
pub struct LocalWriter<W> {
    w: W,
    sock: RawFd,
    on_frame: Box<dyn Fn()>,
    broken: bool,
}

impl<W> std::fmt::Debug for LocalWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalWriter").field("sock", &self.sock).field("broken", &self.broken).finish()
    }
}

impl<W: AsyncWrite + Unpin> LocalWriter<W> {
    /// A writer for the socket `sock`, whose write half is `w`.
    pub fn new(w: W, sock: RawFd, on_frame: impl Fn() + 'static) -> Self {
        Self { w, sock, on_frame: Box::new(on_frame), broken: false }
    }

    /// Writes one frame; false once the connection is broken.
    pub async fn send(&mut self, f: LocalOut) -> bool {
        if self.broken {
            return false;
        }
        let ok = write_one(&mut self.w, self.sock, &f).await.is_ok();
        (self.on_frame)();
        self.broken = !ok;
        ok
    }
}

async fn write_one<W: AsyncWrite + Unpin>(w: &mut W, sock: RawFd, f: &LocalOut) -> std::io::Result<()> {
    let mut sent = 0;
    let fds: Vec<RawFd> = f.pass_fds.iter().map(PassFd::raw).collect();
    let groups: Vec<&[RawFd]> = fds.chunks(MAX_FDS_PER_MSG).collect();
    if groups.len() > f.bytes.len() {
        return Err(std::io::Error::other(format!("{} descriptors cannot ride one frame", fds.len())));
    }
    let last = groups.len().saturating_sub(1);
    for (i, group) in groups.into_iter().enumerate() {
        // Everything queued before this frame is already written (one writer), so the
        // descriptors land on this frame's first bytes: group i on byte i, and the last
        // group with the rest of the frame.
        let upto = if i == last { f.bytes.len() } else { i + 1 };
        let mut backoff = Duration::from_micros(20);
        loop {
            match super::fdpass::send_with_fds(sock, &f.bytes[sent..upto], group) {
                Ok(n) => {
                    sent += n;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    glommio::timer::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(5));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    w.write_all(&f.bytes[sent..]).await
}
