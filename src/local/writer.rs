//! The ordered writer of one local connection. Replies from concurrent handlers go
//! through one bounded queue so frames never interleave; a frame that names a segment the
//! client has not seen yet carries the segment's descriptor (`SCM_RIGHTS` on a one-off
//! `sendmsg`, since io_uring cannot pass descriptors on Unix sockets).

use futures_lite::{AsyncWrite, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use std::os::unix::io::RawFd;
use std::rc::Rc;
use std::time::Duration;

/// One frame to write.
#[derive(Debug)]
pub struct LocalOut {
    /// The whole frame.
    pub bytes: Vec<u8>,
    /// A descriptor to pass with it.
    pub pass_fd: Option<RawFd>,
    /// Told when the frame has been written (or failed).
    pub done: Option<futures_channel::oneshot::Sender<bool>>,
}

impl LocalOut {
    /// A plain frame.
    pub fn frame(bytes: Vec<u8>) -> Self {
        Self { bytes, pass_fd: None, done: None }
    }
}

/// Queue side of the writer.
#[derive(Debug, Clone)]
pub struct LocalSenderQ(Rc<LocalSender<LocalOut>>);

impl LocalSenderQ {
    /// Queues a frame; false if the connection is gone.
    pub async fn send(&self, f: LocalOut) -> bool {
        self.0.send(f).await.is_ok()
    }
}

/// Starts the writer task for the socket `sock` (whose write half is `w`).
pub fn spawn<W: AsyncWrite + Unpin + 'static>(mut w: W, sock: RawFd, on_frame: impl Fn() + 'static) -> LocalSenderQ {
    let (tx, rx): (LocalSender<LocalOut>, LocalReceiver<LocalOut>) = local_channel::new_bounded(256);
    glommio::spawn_local(async move {
        while let Some(f) = rx.recv().await {
            let ok = write_one(&mut w, sock, &f).await.is_ok();
            on_frame();
            if let Some(d) = f.done {
                let _ = d.send(ok);
            }
            if !ok {
                break;
            }
        }
    })
    .detach();
    LocalSenderQ(Rc::new(tx))
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
