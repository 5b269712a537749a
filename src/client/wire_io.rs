//! Blocking framed IO over a std `TcpStream` for the client library and the default
//! worker ([`FrameStream`]): reads go through a buffer, so a small reply usually costs one
//! `read` (header and payload together) and a request one `write`. Lower latency than the
//! decoder of `rpc::blocking` for the one-request-one-reply pattern of leases and tasks.

use crate::rpc::frame::{encode_frame, FrameError, FrameHeader, FrameKind, FrameLimits, HEADER_LEN, PROTOCOL_VERSION};
use crate::wire::rpc::{Hello, HelloAck};
use prost::Message;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Read buffer size; larger frames are read straight into their payload.
const BUF: usize = 64 << 10;

/// A frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameIoError {
    /// The socket failed or closed.
    #[error("io: {0}")]
    Io(#[from] io::Error),
    /// The header was invalid.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// A TCP stream carrying frames, with a read buffer.
#[derive(Debug)]
pub struct FrameStream {
    stream: TcpStream,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    spin: Duration,
}

impl FrameStream {
    /// Wraps a connected stream.
    pub fn new(stream: TcpStream) -> Self {
        Self { stream, buf: vec![0u8; BUF].into_boxed_slice(), start: 0, end: 0, spin: Duration::ZERO }
    }

    /// Before blocking in `read`, poll the socket without blocking for up to `spin`. A
    /// reply that comes back within that time then costs no sleep and wake-up (which on
    /// virtual machines with idle vCPUs is tens of microseconds per side), at the price of
    /// a busy CPU for at most `spin` per read.
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }

    /// One `read` into the free part of the buffer, spinning first if configured.
    fn read_some(&mut self) -> io::Result<usize> {
        if !self.spin.is_zero() {
            use nix::sys::socket::{recv, MsgFlags};
            use std::os::fd::AsRawFd;
            let fd = self.stream.as_raw_fd();
            let until = Instant::now() + self.spin;
            loop {
                match recv(fd, &mut self.buf[self.end..], MsgFlags::MSG_DONTWAIT) {
                    Ok(n) => return Ok(n),
                    Err(nix::errno::Errno::EAGAIN) if Instant::now() < until => std::thread::yield_now(),
                    Err(nix::errno::Errno::EAGAIN) => break,
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(io::Error::from(e)),
                }
            }
        }
        self.stream.read(&mut self.buf[self.end..])
    }

    /// The underlying stream (socket options).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Makes at least `need` (≤ the buffer size) bytes available from `start`.
    fn fill(&mut self, need: usize) -> io::Result<()> {
        if self.buf.len() - self.start < need {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.end - self.start < need {
            let n = self.read_some()?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.end += n;
        }
        Ok(())
    }

    /// Moves `dst.len()` bytes into `dst`: buffered ones first, then straight from the
    /// socket.
    fn take(&mut self, dst: &mut [u8]) -> io::Result<()> {
        let have = (self.end - self.start).min(dst.len());
        dst[..have].copy_from_slice(&self.buf[self.start..self.start + have]);
        self.start += have;
        if have < dst.len() {
            self.stream.read_exact(&mut dst[have..])?;
        }
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        Ok(())
    }

    /// Reads one frame; its trailer and footer (if any) are read and dropped.
    pub fn read_frame(&mut self, limits: &FrameLimits) -> Result<(FrameHeader, Vec<u8>), FrameIoError> {
        self.fill(HEADER_LEN)?;
        let mut h = [0u8; HEADER_LEN];
        self.take(&mut h)?;
        let header = FrameHeader::decode(&h, limits)?;
        let mut payload = vec![0u8; header.payload_len as usize];
        if payload.len() <= self.buf.len() {
            self.fill(payload.len())?;
        }
        self.take(&mut payload)?;
        let mut trailer = match header.trailer_len as usize {
            0 => 0,
            n => n + crate::rpc::frame::TRAILER_CRC_LEN,
        };
        let mut scratch = [0u8; 4096];
        while trailer > 0 {
            let n = trailer.min(scratch.len());
            self.take(&mut scratch[..n])?;
            trailer -= n;
        }
        Ok((header, payload))
    }

    /// Writes one frame without a trailer.
    pub fn write_frame(&mut self, header: FrameHeader, payload: &[u8]) -> io::Result<()> {
        self.stream.write_all(&encode_frame(header, payload, 0))
    }

    /// Server side of the hello: true when the peer presented `token` (an ack is sent
    /// either way; a refusal carries the reason).
    pub fn accept_hello(&mut self, token: &str, limits: &FrameLimits) -> Result<bool, FrameIoError> {
        let (h, p) = self.read_frame(limits)?;
        let verdict = check_hello(&h, &p, token);
        self.write_frame(FrameHeader::control(FrameKind::HelloAck), &hello_ack(&verdict))?;
        Ok(verdict.is_ok())
    }

    /// Client side of the hello: the serving shard, or `Ok(Err(reason))` when the peer
    /// refused.
    pub fn send_hello(&mut self, token: &str, limits: &FrameLimits) -> Result<Result<u32, String>, FrameIoError> {
        let hello = Hello { protocol_version: PROTOCOL_VERSION, auth_token: token.to_string() };
        self.write_frame(FrameHeader::control(FrameKind::Hello), &hello.encode_to_vec())?;
        let (h, p) = self.read_frame(limits)?;
        if h.kind != FrameKind::HelloAck {
            return Ok(Err(format!("expected a hello ack, got {:?}", h.kind)));
        }
        match HelloAck::decode(p.as_slice()) {
            Ok(a) if a.ok => Ok(Ok(a.shard)),
            Ok(a) => Ok(Err(a.message)),
            Err(e) => Ok(Err(format!("undecodable hello ack: {e}"))),
        }
    }
}

/// Whether a hello frame presents `token` in our protocol version; the refusal's reason.
pub fn check_hello(h: &FrameHeader, payload: &[u8], token: &str) -> Result<(), String> {
    let hello = (h.kind == FrameKind::Hello).then(|| Hello::decode(payload).ok()).flatten();
    match hello {
        None => Err("expected a hello".to_string()),
        Some(h) if h.protocol_version != PROTOCOL_VERSION => {
            Err(format!("protocol version {} not supported", h.protocol_version))
        }
        Some(h) if !constant_time_eq(h.auth_token.as_bytes(), token.as_bytes()) => Err("wrong auth token".to_string()),
        Some(_) => Ok(()),
    }
}

/// The payload of the hello ack answering `verdict` (from a single-shard server).
pub fn hello_ack(verdict: &Result<(), String>) -> Vec<u8> {
    let (ok, message) = match verdict {
        Ok(()) => (true, String::new()),
        Err(m) => (false, m.clone()),
    };
    HelloAck { protocol_version: PROTOCOL_VERSION, ok, message, shard: 0, shards: 1 }.encode_to_vec()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair() -> (FrameStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (FrameStream::new(a), b)
    }

    #[test]
    fn frames_split_and_coalesced_arbitrarily_are_read_whole() {
        read_split_frames(Duration::ZERO);
    }

    #[test]
    fn polling_reads_see_the_same_frames() {
        read_split_frames(Duration::from_micros(200));
    }

    fn read_split_frames(spin: Duration) {
        let (mut r, mut w) = pair();
        r.set_spin(spin);
        let big = vec![7u8; BUF * 2 + 5];
        let mut bytes = encode_frame(FrameHeader::request(1, 2, 3, 0), b"hello", 0);
        bytes.extend(encode_frame(FrameHeader::request(1, 2, 4, 0), &big, 0));
        bytes.extend(encode_frame(FrameHeader::request(1, 2, 5, 0), b"", 0));
        let writer = std::thread::spawn(move || {
            for chunk in bytes.chunks(777) {
                w.write_all(chunk).unwrap();
            }
        });
        let limits = FrameLimits::default();
        let (h1, p1) = r.read_frame(&limits).unwrap();
        assert_eq!((h1.call_id, p1.as_slice()), (3, &b"hello"[..]));
        let (h2, p2) = r.read_frame(&limits).unwrap();
        assert_eq!((h2.call_id, p2.len(), p2[BUF]), (4, big.len(), 7));
        let (h3, p3) = r.read_frame(&limits).unwrap();
        assert_eq!((h3.call_id, p3.len()), (5, 0));
        writer.join().unwrap();
    }

    #[test]
    fn a_wrong_token_is_refused_with_a_reason() {
        let (mut server, client) = pair();
        let mut client = FrameStream::new(client);
        let t = std::thread::spawn(move || client.send_hello("wrong", &FrameLimits::default()).unwrap());
        assert!(!server.accept_hello("right", &FrameLimits::default()).unwrap());
        assert_eq!(t.join().unwrap(), Err("wrong auth token".to_string()));
    }

    #[test]
    fn garbage_is_a_frame_error_not_a_panic() {
        let (mut r, mut w) = pair();
        w.write_all(&[0xAB; 64]).unwrap();
        assert!(matches!(r.read_frame(&FrameLimits::default()), Err(FrameIoError::Frame(_))));
    }
}
