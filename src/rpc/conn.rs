//! Framed IO over a glommio stream: a read side that yields validated headers and reads
//! payloads (and trailers, straight into the caller's buffer), and a write side fed by a
//! bounded queue and drained by one writer task, so replies from concurrent handlers never
//! interleave.
//!
//! Runs on the executor that owns the connection; nothing here is `Send`.

use super::frame::{encode_frame, FrameError, FrameHeader, FrameLimits, HEADER_LEN, TRAILER_CRC_LEN};
use super::idle::{Activity, Watched};
use super::readahead::ReadAhead;
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// One half of a stream split on a single thread. `poll_read` and `poll_write` borrow the
/// stream only for the duration of the poll, never across a suspension, so the `RefCell`
/// cannot be borrowed twice.
#[derive(Debug)]
pub struct LocalHalf<T>(Rc<RefCell<T>>);

/// Splits `stream` into a read half and a write half usable from two tasks of one executor.
pub fn split_local<T: AsyncRead + AsyncWrite + Unpin>(stream: T) -> (LocalHalf<T>, LocalHalf<T>) {
    let rc = Rc::new(RefCell::new(stream));
    (LocalHalf(rc.clone()), LocalHalf(rc))
}

impl<T: AsyncRead + Unpin> AsyncRead for LocalHalf<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for LocalHalf<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_close(cx)
    }
}

/// Why reading a frame stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The peer closed cleanly between frames.
    #[error("peer closed the connection")]
    Eof,
    /// The peer closed or failed in the middle of a frame.
    #[error("connection failed mid-frame: {0}")]
    Io(#[from] io::Error),
    /// The header was invalid.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Trailer bytes read (and checksummed) at a time: well inside L2.
const CHECK_BLOCK: usize = 256 << 10;

/// The read side of a framed connection, through a read-ahead buffer: a small frame
/// (header and payload) costs one `recv`.
///
/// Its [`Activity`] counts a frame as open from its first byte until the read that ends
/// it, and only while it waits on the socket: time the caller spends between its header
/// and its trailer (waiting for a slot, claiming a chunk) is the node's, not the peer's.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: ReadAhead<R>,
    limits: FrameLimits,
    activity: Rc<Activity>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps `inner`, validating every header against `limits`. Give it an
    /// [`EagerRecv`](super::readahead::EagerRecv) over a glommio stream.
    pub fn new(inner: R, limits: FrameLimits) -> Self {
        Self { inner: ReadAhead::new(inner), limits, activity: Activity::new() }
    }

    /// Reads the next header. A clean EOF before its first byte is [`ReadError::Eof`].
    pub async fn read_header(&mut self) -> Result<FrameHeader, ReadError> {
        let mut h = [0u8; HEADER_LEN];
        // Waiting for a frame to begin is not idleness; once its first byte is here, it
        // is. The first read fills the read-ahead buffer as one whole read would, so the
        // split costs no extra `recv`.
        if !self.inner.read_exact_or_eof(&mut h[..1]).await? {
            return Err(ReadError::Eof);
        }
        let _open = self.activity.open();
        self.inner.read_exact(&mut h[1..]).await?;
        Ok(FrameHeader::decode(&h, &self.limits)?)
    }

    /// Reads the payload announced by `header`.
    pub async fn read_payload(&mut self, header: &FrameHeader) -> Result<Vec<u8>, ReadError> {
        let mut p = vec![0u8; header.payload_len as usize];
        let _open = self.activity.open();
        self.inner.read_exact(&mut p).await?;
        Ok(p)
    }

    /// Reads a whole trailer of `dst.len()` bytes into `dst` (e.g. a mapped object
    /// buffer), then its CRC32C footer; returns whether the footer matches. The CRC is
    /// computed block by block right after each block lands, while it is in cache.
    pub async fn read_trailer(&mut self, header: &FrameHeader, dst: &mut [u8]) -> Result<bool, ReadError> {
        if dst.len() != header.trailer_len as usize {
            // The sink cannot take the trailer: the stream would lose its framing.
            return Err(ReadError::Io(io::Error::other(format!(
                "trailer destination of {} bytes for a {}-byte trailer",
                dst.len(),
                header.trailer_len
            ))));
        }
        if dst.is_empty() {
            return Ok(true);
        }
        let _open = self.activity.open();
        let mut crc = crate::checksum::Crc32c::default();
        for block in dst.chunks_mut(CHECK_BLOCK) {
            self.inner.read_exact(block).await?;
            crc.update(block);
        }
        let mut footer = [0u8; TRAILER_CRC_LEN];
        self.inner.read_exact(&mut footer).await?;
        Ok(u32::from_le_bytes(footer) == crc.value())
    }

    /// Reads and discards a trailer of `len` bytes and its footer (a trailer nobody
    /// wants), keeping the stream in sync.
    pub async fn discard_trailer(&mut self, len: usize) -> Result<(), ReadError> {
        match len {
            0 => Ok(()),
            n => self.discard(n + TRAILER_CRC_LEN).await,
        }
    }

    /// Reads and discards `len` bytes.
    async fn discard(&mut self, mut len: usize) -> Result<(), ReadError> {
        let _open = self.activity.open();
        let mut scratch = vec![0u8; len.min(64 << 10)];
        while len > 0 {
            let n = len.min(scratch.len());
            self.inner.read_exact(&mut scratch[..n]).await?;
            len -= n;
        }
        Ok(())
    }
}

impl<R: AsyncRead + Unpin> FrameReader<Watched<R>> {
    /// [`Self::new`], recording into `activity` for the connection's idle watchdog.
    pub fn watched(inner: R, limits: FrameLimits, activity: Rc<Activity>) -> Self {
        Self { inner: ReadAhead::new(Watched::new(inner, activity.clone())), limits, activity }
    }
}

/// Raw bytes that follow a frame's payload and live elsewhere (e.g. in the object store).
/// The owner keeps the memory valid until the value is dropped.
pub trait Trailer {
    /// The bytes to send.
    fn bytes(&self) -> &[u8];
}

/// One frame queued for writing.
pub struct OutFrame {
    /// Header and payload.
    pub head: Vec<u8>,
    /// Optional raw trailer, written right after `head`.
    pub trailer: Option<Box<dyn Trailer>>,
}

impl std::fmt::Debug for OutFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutFrame").field("head_len", &self.head.len()).finish()
    }
}

impl OutFrame {
    /// A frame with no trailer.
    pub fn new(header: FrameHeader, payload: &[u8]) -> Self {
        Self { head: encode_frame(header, payload, 0), trailer: None }
    }
}

/// Most bytes of frame heads (header and payload; trailers live in the store and are
/// bounded by the transfer windows) queued on one connection.
pub const MAX_QUEUED_BYTES: usize = 16 << 20;

/// The write side of a connection, shared by every task that replies on it. The first
/// sender to find it idle writes its frame itself, then any frames other tasks queued
/// meanwhile, in order; a sender that finds a write in progress only queues. So a reply
/// costs no extra task switch, and frames never interleave.
///
/// The queue is bounded by [`MAX_QUEUED_BYTES`]: a sender that would pass it waits until
/// frames ahead of it are written. A server's read loop sends its inline replies itself,
/// so a peer that sends requests without reading the replies stops being read, instead
/// of growing the queue without bound.
#[derive(Clone)]
pub struct FrameSender {
    inner: Rc<WriterInner>,
}

struct WriterInner {
    w: RefCell<Option<Box<dyn AsyncWrite + Unpin>>>,
    queue: RefCell<std::collections::VecDeque<(OutFrame, u64)>>,
    /// Units are queued head bytes; closed with the writer, which wakes waiting senders.
    room: glommio::sync::Semaphore,
    closed: std::cell::Cell<bool>,
    on_bytes: Box<dyn Fn(usize)>,
    /// A frame is open from the moment a sender takes the writer until it puts it back.
    activity: Rc<Activity>,
}

impl WriterInner {
    fn close(&self) {
        self.closed.set(true);
        self.room.close();
    }
}

impl std::fmt::Debug for FrameSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameSender").field("queued", &self.inner.queue.borrow().len()).finish()
    }
}

struct CloseOnDrop<'a>(&'a WriterInner);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The connection's write side failed or was closed.
#[derive(Debug, thiserror::Error)]
#[error("connection writer is closed")]
pub struct WriterClosed;

impl FrameSender {
    /// A writer over `w`; `on_bytes` is told the size of each frame written.
    pub fn new<W: AsyncWrite + Unpin + 'static>(w: W, on_bytes: impl Fn(usize) + 'static) -> Self {
        Self::with_activity(Box::new(w), Box::new(on_bytes), Activity::new())
    }

    /// [`Self::new`], recording into `activity` for the connection's idle watchdog.
    pub fn watched<W: AsyncWrite + Unpin + 'static>(
        w: W,
        on_bytes: impl Fn(usize) + 'static,
        activity: Rc<Activity>,
    ) -> Self {
        Self::with_activity(Box::new(Watched::new(w, activity.clone())), Box::new(on_bytes), activity)
    }

    fn with_activity(w: Box<dyn AsyncWrite + Unpin>, on_bytes: Box<dyn Fn(usize)>, activity: Rc<Activity>) -> Self {
        Self {
            inner: Rc::new(WriterInner {
                w: RefCell::new(Some(w)),
                queue: RefCell::new(std::collections::VecDeque::new()),
                room: glommio::sync::Semaphore::new(MAX_QUEUED_BYTES as u64),
                closed: std::cell::Cell::new(false),
                on_bytes,
                activity,
            }),
        }
    }

    /// Sends a frame: written now if the connection is idle, else queued behind the write
    /// in progress (whose sender writes it), after waiting for room in the queue.
    pub async fn send(&self, f: OutFrame) -> Result<(), WriterClosed> {
        if self.inner.closed.get() {
            return Err(WriterClosed);
        }
        let units = f.head.len().min(MAX_QUEUED_BYTES) as u64;
        self.inner.room.acquire(units).await.map_err(|_| WriterClosed)?;
        self.inner.queue.borrow_mut().push_back((f, units));
        // Taking the writer out of the cell means no borrow is held across the awaits.
        let Some(mut w) = self.inner.w.borrow_mut().take() else { return Ok(()) };
        // If this task is cancelled mid-write, the writer is gone with it: mark the
        // connection closed so later senders fail instead of queueing forever.
        let guard = CloseOnDrop(&self.inner);
        let _open = self.inner.activity.open();
        loop {
            let next = self.inner.queue.borrow_mut().pop_front();
            let Some((f, units)) = next else { break };
            let mut res = w.write_all(&f.head).await;
            let mut n = f.head.len();
            if let (Ok(()), Some(t)) = (&res, &f.trailer) {
                res = write_trailer(&mut w, t.bytes()).await;
                n += t.bytes().len() + TRAILER_CRC_LEN;
            }
            (self.inner.on_bytes)(n);
            self.inner.room.signal(units);
            if res.is_err() {
                self.inner.close();
                self.inner.queue.borrow_mut().clear();
                let _ = w.close().await;
                return Err(WriterClosed);
            }
        }
        *self.inner.w.borrow_mut() = Some(w);
        std::mem::forget(guard);
        Ok(())
    }

    /// Closes the write side (after whatever is queued when no write is in progress).
    pub async fn close(&self) {
        self.inner.close();
        let w = self.inner.w.borrow_mut().take();
        if let Some(mut w) = w {
            let _ = w.close().await;
        }
    }
}

/// Writes a non-empty trailer block by block, each block's CRC32C update right before its
/// write (the write then copies it from cache), then the CRC32C footer.
async fn write_trailer<W: AsyncWrite + Unpin + ?Sized>(w: &mut W, bytes: &[u8]) -> io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    let mut crc = crate::checksum::Crc32c::default();
    for block in bytes.chunks(CHECK_BLOCK) {
        crc.update(block);
        w.write_all(block).await?;
    }
    w.write_all(&crc.value().to_le_bytes()).await
}
