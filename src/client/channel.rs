//! One blocking connection to a raylet socket: send a frame, read a frame, and pick up the
//! segment descriptors the raylet passes alongside a reply, each paired with its segment
//! index by the rule of `local::store_ops` (the segments the reply names, ascending; the
//! store's and the staging segment's only the first time on this connection).

use super::ClientError;
use crate::local::codec::{self, LocalMessage, StoreError, HEADER_LEN};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// A connection to one raylet socket. Replies are read with as few `recvmsg` calls as
/// possible: whatever has arrived goes into a buffer, whole frames are parsed from it.
#[derive(Debug)]
pub(crate) struct Channel {
    stream: UnixStream,
    max_frame: u64,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Frames queued to go out with the next one sent (one write, one wake-up).
    pending: Vec<u8>,
    /// Whether the store's and the staging segment's descriptors came on this connection.
    got: [bool; 2],
}

/// Descriptors that came with a reply, by segment index.
pub(crate) type SegmentFds = Vec<(u32, OwnedFd)>;

impl Channel {
    pub(crate) fn connect(path: &Path) -> Result<Self, ClientError> {
        Ok(Self {
            stream: UnixStream::connect(path)?,
            max_frame: 1 << 30,
            buf: vec![0; 64 << 10],
            start: 0,
            end: 0,
            pending: Vec::new(),
            got: [false; 2],
        })
    }

    /// Reads more bytes into the buffer (at least one), keeping descriptors that come along.
    fn fill(&mut self, fds: &mut Vec<OwnedFd>) -> Result<(), ClientError> {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let n = self.buf.len() * 2;
                self.buf.resize(n, 0);
            }
        }
        let (n, got) = crate::local::fdpass::recv_with_fds(self.stream.as_raw_fd(), &mut self.buf[self.end..])?;
        if n == 0 {
            return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        self.end += n;
        fds.extend(got);
        Ok(())
    }

    /// Sends `m`, after whatever [`Self::queue`] holds, in one write.
    pub(crate) fn send(&mut self, m: &LocalMessage) -> Result<(), ClientError> {
        if self.pending.is_empty() {
            self.stream.write_all(&codec::encode(m))?;
        } else {
            self.pending.extend_from_slice(&codec::encode(m));
            let out = std::mem::take(&mut self.pending);
            self.stream.write_all(&out)?;
        }
        Ok(())
    }

    /// Queues `m` (a message with no reply) to go out in the same write as the next
    /// [`Self::send`] on this channel.
    pub(crate) fn queue(&mut self, m: &LocalMessage) {
        self.pending.extend_from_slice(&codec::encode(m));
    }

    /// The segments whose descriptors come with `m`, in the order they come.
    fn fd_segments(&mut self, m: &LocalMessage) -> Vec<u32> {
        // Filtered before collecting: a reply naming only segments already here (the
        // usual case) allocates nothing.
        let got = self.got;
        let needed = |s: &u32| *s > 1 || !got[*s as usize];
        let mut segs: Vec<u32> = match m {
            LocalMessage::CreateReply { error: StoreError::Ok, spec, .. } => {
                std::iter::once(spec.segment).filter(needed).collect()
            }
            LocalMessage::GetReply { objects, .. } => {
                objects.iter().filter(|o| o.found).map(|o| o.segment).filter(needed).collect()
            }
            _ => Vec::new(),
        };
        segs.sort_unstable();
        segs.dedup();
        segs.retain(|&s| match s {
            0 | 1 => !std::mem::replace(&mut self.got[s as usize], true),
            _ => true,
        });
        segs
    }

    /// Reads one message and the segment descriptors that came with it.
    pub(crate) fn recv(&mut self) -> Result<(LocalMessage, SegmentFds), ClientError> {
        let mut fds = Vec::new();
        while self.end - self.start < HEADER_LEN {
            self.fill(&mut fds)?;
        }
        let h: &[u8; HEADER_LEN] = self.buf[self.start..self.start + HEADER_LEN].try_into().expect("header length");
        let header = codec::decode_header(h, self.max_frame)?;
        let total = HEADER_LEN + header.len as usize;
        if self.buf.len() - self.start < total {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() < total {
                self.buf.resize(total, 0);
            }
        }
        while self.end - self.start < total {
            self.fill(&mut fds)?;
        }
        let payload = &self.buf[self.start + HEADER_LEN..self.start + total];
        let msg = codec::decode_message(header.msg_type, payload)?;
        self.start += total;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let segs = self.fd_segments(&msg);
        if segs.len() != fds.len() {
            return Err(ClientError::Unexpected(format!(
                "{} descriptors came with a reply naming new segments {segs:?}",
                fds.len()
            )));
        }
        Ok((msg, segs.into_iter().zip(fds).collect()))
    }

    /// Sends `m` and reads the reply.
    pub(crate) fn call(&mut self, m: &LocalMessage) -> Result<(LocalMessage, SegmentFds), ClientError> {
        self.send(m)?;
        self.recv()
    }

    /// Raw access for tests and benches that send hand-made bytes.
    pub(crate) fn stream(&mut self) -> &mut UnixStream {
        &mut self.stream
    }
}
