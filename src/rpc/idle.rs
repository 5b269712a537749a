//! The idle deadline of one TCP connection, and the watchdog that enforces it.
//!
//! A connection is idle when a frame is part-way through being read or written and no
//! byte has moved either way for the deadline: the peer stopped reading or writing in the
//! middle of something (a chunk stream whose link went dark, a process that hung). Waiting
//! for a frame to begin is not idleness: a server waiting for the next request, a handler
//! at work on one (a long-poll), a client waiting for its reply all wait on the peer's
//! own work, which the call's deadline bounds; a peer that vanished meanwhile is found by
//! TCP keepalive ([`super::sockopt`]).
//!
//! The IO paths only touch cells of an [`Activity`]: a read or write that moved bytes
//! sets a flag, a frame in progress holds a count. One timer task per connection
//! ([`watch`]) samples them every fifth of the deadline and cuts the connection once four
//! samples in a row found a frame open and nothing moved, that is between 4/5 and 5/5 of
//! the deadline after the last byte. No frame pays a syscall, a clock read or a timer.
//!
//! Runs on the executor that owns the connection; nothing here is `Send`.

use futures_lite::{AsyncRead, AsyncWrite};
use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

/// The idle deadline when none is configured (`--rpc-idle-timeout-ms`).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Samples of the watchdog per deadline; it cuts after `SAMPLES - 1` idle ones in a row.
const SAMPLES: u32 = 5;

/// What a connection's IO paths record for its watchdog.
#[derive(Debug, Default)]
pub struct Activity {
    /// Bytes moved (either way) since the watchdog last looked.
    moved: Cell<bool>,
    /// Frames part-way through being read or written.
    open: Cell<u32>,
    /// The watchdog cut the connection.
    cut: Cell<bool>,
}

impl Activity {
    /// A fresh record, shared by a connection's reader, writer and watchdog.
    pub fn new() -> Rc<Self> {
        Rc::new(Self::default())
    }

    /// Bytes moved.
    #[inline]
    pub fn moved(&self) {
        self.moved.set(true);
    }

    /// A frame is in progress until the guard drops (cancel-safe).
    #[inline]
    pub fn open(&self) -> OpenFrame<'_> {
        self.open.set(self.open.get() + 1);
        OpenFrame(self)
    }

    /// Whether the watchdog cut the connection.
    pub fn was_cut(&self) -> bool {
        self.cut.get()
    }
}

/// A frame in progress; see [`Activity::open`].
#[derive(Debug)]
pub struct OpenFrame<'a>(&'a Activity);

impl Drop for OpenFrame<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get() - 1);
    }
}

/// Samples `activity` every fifth of `deadline` until the connection has been idle for
/// (at least 4/5 of) it, then marks it cut, calls `cut` (which must make the connection's
/// pending reads and writes fail, e.g. by shutting the socket down) and returns. Run it
/// as a task that is dropped when the connection ends: `cut` must never run after its
/// socket is closed.
pub async fn watch(activity: Rc<Activity>, deadline: Duration, cut: impl FnOnce()) {
    let tick = (deadline / SAMPLES).max(Duration::from_millis(1));
    let mut idle = 0;
    loop {
        glommio::timer::sleep(tick).await;
        let moved = activity.moved.replace(false);
        if activity.open.get() > 0 && !moved {
            idle += 1;
            if idle >= SAMPLES - 1 {
                activity.cut.set(true);
                cut();
                return;
            }
        } else {
            idle = 0;
        }
    }
}

/// A stream half that records in an [`Activity`] every read or write that moved bytes.
#[derive(Debug)]
pub struct Watched<T> {
    inner: T,
    activity: Rc<Activity>,
}

impl<T> Watched<T> {
    /// Wraps `inner`, recording into `activity`.
    pub fn new(inner: T, activity: Rc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    #[inline]
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                self.activity.moved();
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    #[inline]
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                self.activity.moved();
            }
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn run<T>(f: impl std::future::Future<Output = T> + 'static) -> T {
        glommio::LocalExecutor::default().run(f)
    }

    #[test]
    fn an_open_frame_with_nothing_moving_is_cut_within_the_deadline() {
        let took = run(async {
            let a = Activity::new();
            let cut = Rc::new(Cell::new(false));
            let _frame = a.open();
            let started = Instant::now();
            let c = cut.clone();
            watch(a.clone(), Duration::from_millis(100), move || c.set(true)).await;
            assert!(cut.get() && a.was_cut());
            started.elapsed()
        });
        assert!(took >= Duration::from_millis(80), "cut after {took:?}");
    }

    #[test]
    fn a_connection_between_frames_or_still_moving_bytes_is_never_cut() {
        run(async {
            let a = Activity::new();
            let w = glommio::spawn_local(watch(a.clone(), Duration::from_millis(50), || panic!("cut")));
            // Nothing open: waiting for a frame to begin (a long-poll) is not idleness.
            glommio::timer::sleep(Duration::from_millis(200)).await;
            // A frame open but bytes moving at every sample.
            let _frame = a.open();
            for _ in 0..40 {
                a.moved();
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
            assert!(!a.was_cut());
            drop(w);
        });
    }

    #[test]
    fn a_frame_that_stops_moving_is_cut_after_a_period_of_progress() {
        run(async {
            let a = Activity::new();
            let _frame = a.open();
            let a2 = a.clone();
            let feeder = glommio::spawn_local(async move {
                for _ in 0..10 {
                    a2.moved();
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                }
            });
            watch(a.clone(), Duration::from_millis(50), || {}).await;
            assert!(a.was_cut());
            feeder.await;
        });
    }
}
