//! A blocking RPC connection for the driver API: one TCP stream, calls matched by id, and
//! pipelining (send several requests, then collect the replies in any order).
//!
//! Unlike `rpc::BlockingClient` it reads through [`FrameStream`]'s buffer and sets the
//! socket timeout only when it changes, so a call usually costs one `write` and one
//! `read`. It never retries: lease and task calls are not idempotent from
//! the caller's side, and the driver decides what a failure means. After any transport
//! error the connection is dead; the owner drops it and connects anew.

use super::wire_io::{FrameIoError, FrameStream};
use crate::rpc::frame::{FrameHeader, FrameKind, FrameLimits};
use crate::rpc::{RpcError, Status};
use crate::wire::rpc::RpcStatus;
use prost::Message;
use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Replies that arrived for calls other than the one being waited for, kept at most.
const MAX_STASH: usize = 4096;

/// One blocking connection to a raylet, a worker or the GCS.
#[derive(Debug)]
pub struct RpcConn {
    addr: SocketAddr,
    stream: FrameStream,
    next_call: u64,
    stash: HashMap<u64, Result<Vec<u8>, RpcError>>,
    /// Calls sent with [`Self::send_nowait`]: their replies are dropped on arrival, their
    /// errors kept in `errors`.
    unawaited: HashSet<u64>,
    errors: Vec<RpcError>,
    limits: FrameLimits,
    read_timeout: Option<Duration>,
    dead: bool,
    shard: u32,
}

fn io_err(e: FrameIoError) -> RpcError {
    match e {
        FrameIoError::Io(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            RpcError::Timeout(Duration::ZERO)
        }
        FrameIoError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => RpcError::Closed(e.to_string()),
        FrameIoError::Io(e) => RpcError::Io(e.to_string()),
        FrameIoError::Frame(e) => RpcError::Frame(e),
    }
}

/// Reconnects [`RpcConn::connect_to_shard0`] may make.
const SHARD0_ATTEMPTS: usize = 8;

impl RpcConn {
    /// Connects and says hello with the cluster auth token.
    pub fn connect(addr: SocketAddr, token: &str, timeout: Duration) -> Result<Self, RpcError> {
        let stream =
            TcpStream::connect_timeout(&addr, timeout).map_err(|e| RpcError::Io(format!("connect {addr}: {e}")))?;
        stream.set_nodelay(true)?;
        // Keepalive, and writes that fail once the peer takes nothing for the idle deadline.
        crate::rpc::sockopt::tune_std(&stream, crate::rpc::idle::DEFAULT_IDLE_TIMEOUT)?;
        stream.set_read_timeout(Some(timeout))?;
        let mut c = Self {
            addr,
            stream: FrameStream::new(stream),
            next_call: 1,
            stash: HashMap::new(),
            unawaited: HashSet::new(),
            errors: Vec::new(),
            limits: FrameLimits::default(),
            read_timeout: Some(timeout),
            dead: false,
            shard: 0,
        };
        let limits = c.limits;
        match c.stream.send_hello(token, &limits).map_err(io_err)? {
            Ok(shard) => {
                c.shard = shard;
                Ok(c)
            }
            Err(why) => Err(RpcError::Handshake(format!("{addr}: {why}"))),
        }
    }

    /// Connects like [`Self::connect`], preferring a connection served by the peer's shard
    /// 0, where a raylet's scheduler and the head's GCS run: the kernel spreads connections
    /// over the shards (`SO_REUSEPORT`), and one served elsewhere pays a cross-shard hop on
    /// every such call. A few reconnects; then whatever shard the last one landed on.
    pub fn connect_to_shard0(addr: SocketAddr, token: &str, timeout: Duration) -> Result<Self, RpcError> {
        let mut c = Self::connect(addr, token, timeout)?;
        for _ in 0..SHARD0_ATTEMPTS {
            if c.shard == 0 {
                break;
            }
            c = Self::connect(addr, token, timeout)?;
        }
        Ok(c)
    }

    /// The peer's shard serving this connection (0 for single-threaded peers).
    pub fn shard(&self) -> u32 {
        self.shard
    }

    /// Polls for replies up to `spin` before blocking (see [`FrameStream::set_spin`]).
    pub fn set_spin(&mut self, spin: Duration) {
        self.stream.set_spin(spin);
    }

    /// The peer.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether a transport error ended this connection.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    fn fail<T>(&mut self, e: RpcError) -> Result<T, RpcError> {
        self.dead = true;
        Err(e)
    }

    /// Sends a request; returns its call id for [`Self::recv`].
    pub fn send<Q: Message>(&mut self, service: u16, method: u16, req: &Q) -> Result<u64, RpcError> {
        if self.dead {
            return Err(RpcError::Closed(format!("{}: connection is dead", self.addr)));
        }
        let id = self.next_call;
        self.next_call += 1;
        let payload = req.encode_to_vec();
        if let Err(e) = self.stream.write_frame(FrameHeader::request(service, method, id, 0), &payload) {
            return self.fail(RpcError::Io(e.to_string()));
        }
        Ok(id)
    }

    /// Waits for the reply to call `id`; replies to other calls are kept for later.
    pub fn recv<R: Message + Default>(&mut self, id: u64, timeout: Duration) -> Result<R, RpcError> {
        let bytes = self.recv_raw(id, timeout)?;
        R::decode(bytes.as_slice()).map_err(|e| RpcError::Decode(e.to_string()))
    }

    fn recv_raw(&mut self, id: u64, timeout: Duration) -> Result<Vec<u8>, RpcError> {
        if let Some(r) = self.stash.remove(&id) {
            return r;
        }
        if self.dead {
            return Err(RpcError::Closed(format!("{}: connection is dead", self.addr)));
        }
        if self.read_timeout != Some(timeout) {
            self.stream.stream().set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
            self.read_timeout = Some(timeout);
        }
        loop {
            let limits = self.limits;
            let (h, payload) = match self.stream.read_frame(&limits) {
                Ok(f) => f,
                Err(e) => {
                    let e = match io_err(e) {
                        RpcError::Timeout(_) => RpcError::Timeout(timeout),
                        other => other,
                    };
                    return self.fail(e);
                }
            };
            let result = match h.kind {
                FrameKind::Response => Ok(payload),
                FrameKind::Error => Err(match RpcStatus::decode(payload.as_slice()) {
                    Ok(s) => RpcError::Status(Status::from_proto(s)),
                    Err(e) => RpcError::Decode(e.to_string()),
                }),
                other => return self.fail(RpcError::Decode(format!("unexpected {other:?} frame"))),
            };
            if h.call_id == id {
                return result;
            }
            if self.unawaited.remove(&h.call_id) {
                if let Err(e) = result {
                    self.errors.push(e);
                }
            } else if h.call_id < self.next_call && self.stash.len() < MAX_STASH {
                self.stash.insert(h.call_id, result);
            }
        }
    }

    /// Sends a request whose reply nobody waits for: it is read (and dropped) while a
    /// later call on this connection waits; an error reply is kept for
    /// [`Self::take_errors`]. Saves a round trip where the caller needs no answer.
    pub fn send_nowait<Q: Message>(&mut self, service: u16, method: u16, req: &Q) -> Result<(), RpcError> {
        let id = self.send(service, method, req)?;
        if self.unawaited.len() >= MAX_STASH {
            // Nobody reads this connection: stop tracking the oldest replies.
            self.unawaited.clear();
        }
        self.unawaited.insert(id);
        Ok(())
    }

    /// Error replies of [`Self::send_nowait`] calls seen so far.
    pub fn take_errors(&mut self) -> Vec<RpcError> {
        std::mem::take(&mut self.errors)
    }

    /// One call: send, then wait for its reply.
    pub fn call<Q: Message, R: Message + Default>(
        &mut self,
        service: u16,
        method: u16,
        req: &Q,
        timeout: Duration,
    ) -> Result<R, RpcError> {
        let id = self.send(service, method, req)?;
        self.recv(id, timeout)
    }
}
