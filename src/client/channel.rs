//! One blocking connection to a raylet socket: send a frame, read a frame, and pick up any
//! segment descriptor the raylet passes alongside a reply.

use super::ClientError;
use crate::local::codec::{self, LocalMessage, HEADER_LEN};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// A connection to one raylet socket.
#[derive(Debug)]
pub(crate) struct Channel {
    stream: UnixStream,
    max_frame: u64,
}

impl Channel {
    pub(crate) fn connect(path: &Path) -> Result<Self, ClientError> {
        Ok(Self { stream: UnixStream::connect(path)?, max_frame: 1 << 30 })
    }

    pub(crate) fn send(&mut self, m: &LocalMessage) -> Result<(), ClientError> {
        self.stream.write_all(&codec::encode(m))?;
        Ok(())
    }

    /// Reads one message and any descriptors that came with it.
    pub(crate) fn recv(&mut self) -> Result<(LocalMessage, Vec<OwnedFd>), ClientError> {
        let mut h = [0u8; HEADER_LEN];
        let (n, fds) = crate::local::fdpass::recv_with_fds(self.stream.as_raw_fd(), &mut h)?;
        if n == 0 {
            return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        self.stream.read_exact(&mut h[n..])?;
        let header = codec::decode_header(&h, self.max_frame)?;
        let mut p = vec![0u8; header.len as usize];
        self.stream.read_exact(&mut p)?;
        Ok((codec::decode_message(header.msg_type, &p)?, fds))
    }

    /// Sends `m` and reads the reply.
    pub(crate) fn call(&mut self, m: &LocalMessage) -> Result<(LocalMessage, Vec<OwnedFd>), ClientError> {
        self.send(m)?;
        self.recv()
    }

    /// Raw access for tests and benches that send hand-made bytes.
    pub(crate) fn stream(&mut self) -> &mut UnixStream {
        &mut self.stream
    }
}
