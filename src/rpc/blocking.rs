//! The blocking RPC client, for programs that are not glommio executors: the CLI, the
//! `raylet::client` library a driver links, the default worker and the bench.
//!
//! One call at a time on one connection; reconnects on demand; idempotent calls retry with
//! backoff until their deadline. Reads wait at most for the call's deadline; a write the
//! peer takes no byte of for the idle deadline fails, and keepalive finds a vanished peer
//! ([`super::sockopt::tune_std`], set once per connection).

use super::frame::{encode_frame, FrameDecoder, FrameHeader, FrameKind, FrameLimits, PROTOCOL_VERSION};
use super::status::{CallOpts, RpcError, Status};
use crate::wire::rpc::{Hello, HelloAck, RpcStatus};
use prost::Message;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A blocking client for one peer.
#[derive(Debug)]
pub struct BlockingClient {
    addr: SocketAddr,
    token: String,
    stream: Option<TcpStream>,
    decoder: FrameDecoder,
    next_call: u64,
    buf: Vec<u8>,
    /// The peer shard serving the current connection (from its hello ack).
    shard: Option<u32>,
}

impl BlockingClient {
    /// A client for `addr` presenting `token`; connects on first use.
    pub fn new(addr: SocketAddr, token: impl Into<String>) -> Self {
        Self {
            addr,
            token: token.into(),
            stream: None,
            decoder: FrameDecoder::new(FrameLimits::default()),
            next_call: 1,
            buf: vec![0u8; 64 << 10],
            shard: None,
        }
    }

    /// Connects now (and says hello); an error if the peer is unreachable or refuses.
    pub fn connect(&mut self, timeout: Duration) -> Result<(), RpcError> {
        self.ensure(Instant::now() + timeout)
    }

    /// The peer address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The peer shard serving the open connection, if one is open.
    pub fn shard(&self) -> Option<u32> {
        self.stream.as_ref().and(self.shard)
    }

    fn ensure(&mut self, deadline: Instant) -> Result<(), RpcError> {
        if self.stream.is_some() {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        let s = TcpStream::connect_timeout(&self.addr, left)
            .map_err(|e| RpcError::Io(format!("connect {}: {e}", self.addr)))?;
        s.set_nodelay(true)?;
        super::sockopt::tune_std(&s, super::idle::DEFAULT_IDLE_TIMEOUT)?;
        self.stream = Some(s);
        self.decoder = FrameDecoder::new(FrameLimits::default());
        let hello = Hello { protocol_version: PROTOCOL_VERSION, auth_token: self.token.clone() };
        let res = self
            .write(&encode_frame(FrameHeader::control(FrameKind::Hello), &hello.encode_to_vec(), 0))
            .and_then(|_| self.read_frame(deadline));
        let (h, p) = match res {
            Ok(x) => x,
            Err(e) => {
                // A transport failure during the hello (e.g. the peer is restarting) is a
                // closed connection, which idempotent calls retry; only a refusal below is
                // a `Handshake` error.
                self.stream = None;
                return Err(RpcError::Closed(format!("{} during the hello: {e}", self.addr)));
            }
        };
        let ack = (h.kind == FrameKind::HelloAck).then(|| HelloAck::decode(p.as_slice()).ok()).flatten();
        match ack {
            Some(a) if a.ok => {
                self.shard = Some(a.shard);
                Ok(())
            }
            other => {
                self.stream = None;
                let msg = other.map(|a| a.message).unwrap_or_default();
                Err(RpcError::Handshake(format!("{}: {msg}", self.addr)))
            }
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), RpcError> {
        let s = self.stream.as_mut().ok_or_else(|| RpcError::Closed("not connected".into()))?;
        s.write_all(bytes).map_err(|e| RpcError::Io(e.to_string()))
    }

    fn read_frame(&mut self, deadline: Instant) -> Result<(FrameHeader, Vec<u8>), RpcError> {
        loop {
            if let Some(f) = self.decoder.next_frame()? {
                return Ok((f.header, f.payload));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RpcError::Timeout(left));
            }
            let s = self.stream.as_mut().ok_or_else(|| RpcError::Closed("not connected".into()))?;
            s.set_read_timeout(Some(left))?;
            let n = match s.read(&mut self.buf) {
                Ok(0) => return Err(RpcError::Closed(format!("{} closed the connection", self.addr))),
                Ok(n) => n,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return Err(RpcError::Timeout(left))
                }
                Err(e) => return Err(RpcError::Io(e.to_string())),
            };
            self.decoder.feed(&self.buf[..n]);
        }
    }

    fn call_once(&mut self, service: u16, method: u16, payload: &[u8], deadline: Instant) -> Result<Vec<u8>, RpcError> {
        self.call_frame(service, method, payload, (&[], 0), deadline)
    }

    /// One call whose request frame carries `trailer` raw bytes after the payload (and
    /// their CRC32C footer).
    pub fn call_with_trailer(
        &mut self,
        service: u16,
        method: u16,
        payload: &[u8],
        trailer: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, RpcError> {
        let crc = crate::checksum::crc32c(trailer);
        self.call_with_trailer_crc(service, method, payload, trailer, crc, timeout)
    }

    /// [`Self::call_with_trailer`] with the footer given by the caller (one it already
    /// knows, or a wrong one to test the receiver).
    pub fn call_with_trailer_crc(
        &mut self,
        service: u16,
        method: u16,
        payload: &[u8],
        trailer: &[u8],
        crc32c: u32,
        timeout: Duration,
    ) -> Result<Vec<u8>, RpcError> {
        self.call_frame(service, method, payload, (trailer, crc32c), Instant::now() + timeout)
    }

    /// Writes raw bytes on the connection (connecting first): for tests that cut a frame.
    pub fn write_raw(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), RpcError> {
        self.ensure(Instant::now() + timeout)?;
        self.write(bytes)
    }

    fn call_frame(
        &mut self,
        service: u16,
        method: u16,
        payload: &[u8],
        (trailer, crc32c): (&[u8], u32),
        deadline: Instant,
    ) -> Result<Vec<u8>, RpcError> {
        self.ensure(deadline)?;
        let id = self.next_call;
        self.next_call += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let header = FrameHeader::request(service, method, id, left.as_millis().min(u32::MAX as u128) as u32);
        let mut frame = encode_frame(header, payload, trailer.len() as u32);
        if !trailer.is_empty() {
            frame.extend_from_slice(trailer);
            frame.extend_from_slice(&crc32c.to_le_bytes());
        }
        let result = self.write(&frame).and_then(|_| loop {
            let (h, p) = self.read_frame(deadline)?;
            if h.call_id != id {
                continue; // a late reply to an earlier call that timed out
            }
            break match h.kind {
                FrameKind::Response => Ok(p),
                FrameKind::Error => Err(match RpcStatus::decode(p.as_slice()) {
                    Ok(s) => RpcError::Status(Status::from_proto(s)),
                    Err(e) => RpcError::Decode(e.to_string()),
                }),
                other => Err(RpcError::Decode(format!("unexpected {other:?} frame"))),
            };
        });
        if matches!(result, Err(RpcError::Io(_) | RpcError::Closed(_) | RpcError::Frame(_))) {
            self.stream = None;
        }
        result
    }

    /// Sends `payload` to (service, method); retries idempotent calls on transport errors.
    pub fn call_raw(&mut self, service: u16, method: u16, payload: &[u8], opts: CallOpts) -> Result<Vec<u8>, RpcError> {
        let deadline = Instant::now() + opts.timeout;
        let mut backoff = Duration::from_millis(20);
        loop {
            match self.call_once(service, method, payload, deadline) {
                // A refused hello (wrong token or version) is a verdict, not a transient
                // failure: retrying it would only repeat the refusal until the deadline.
                Err(e) if opts.idempotent && e.is_retryable() => {
                    if deadline.saturating_duration_since(Instant::now()) <= backoff {
                        return Err(e);
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }
}
