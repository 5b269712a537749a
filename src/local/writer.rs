//! The writer of one local connection. A frame that names a segment the client has not
//! seen yet carries the segment's descriptor (`SCM_RIGHTS` on a one-off `sendmsg`, since
//! io_uring cannot pass descriptors on Unix sockets).

use futures_lite::{AsyncWrite, AsyncWriteExt};
use std::os::unix::io::RawFd;
use std::time::Duration;

/// One frame to write.
#[derive(Debug)]
pub struct LocalOut {
    /// The whole frame.
    pub bytes: Vec<u8>,
    /// A descriptor to pass with it.
    pub pass_fd: Option<RawFd>,
}

impl LocalOut {
    /// A plain frame.
    pub fn frame(bytes: Vec<u8>) -> Self {
        Self { bytes, pass_fd: None }
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
    if let Some(fd) = f.pass_fd {
        // Everything queued before this frame is already written (one writer), so the
        // descriptor lands on this frame's first byte.
        let mut backoff = Duration::from_micros(20);
        loop {
            match super::fdpass::send_with_fd(sock, &f.bytes, fd) {
                Ok(n) => {
                    sent = n;
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
