//! The async RPC client one shard uses to call a peer (GCS, another raylet, a worker).
//!
//! One connection per (shard, peer); many calls in flight on it, matched by call id.
//! Connects lazily with a hello carrying the auth token; a lost connection fails the calls
//! in flight, and idempotent calls are retried with exponential backoff until their
//! deadline. Owned by one executor (`Rc`, not `Send`).
//!
//! A client made by a shard prefers to be served by the peer's shard of the same index
//! (modulo the peer's shard count, both from the hello ack): the kernel spreads
//! connections over the peer's shards (`SO_REUSEPORT`), so the client reconnects a few
//! times to land there. Shard 0's calls (GCS, placement groups, leases) then reach the
//! scheduler's shard with no cross-shard hop, and each shard's bulk traffic its own peer.
//!
//! A connection whose frame (a request being written, a reply being read) stops moving for
//! the idle deadline is cut ([`super::idle`]), failing its calls; waiting for a reply is
//! not idleness (the call's deadline bounds it).

use super::conn::{split_local, FrameReader, FrameSender, LocalHalf, OutFrame, ReadError, Trailer};
use super::frame::{encode_frame, FrameHeader, FrameKind, FrameLimits, PROTOCOL_VERSION};
use super::idle::{Activity, Watched, DEFAULT_IDLE_TIMEOUT};
use super::readahead::EagerRecv;
use super::status::{CallOpts, RpcError, Status};
use crate::wire::rpc::{Hello, HelloAck, RpcStatus};
use futures_channel::oneshot;
use glommio::net::TcpStream;
use prost::Message;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A reply: payload bytes on success.
type Pending = oneshot::Sender<Result<Vec<u8>, RpcError>>;

/// A connection after its hello: reader, writer, the server's ack, and what its idle
/// watchdog needs (the activity record and the socket's fd).
type Handshaken =
    (FrameReader<Watched<EagerRecv<LocalHalf<TcpStream>>>>, FrameSender, HelloAck, (Rc<Activity>, std::os::fd::RawFd));

/// A connection's idle watchdog, cancelled when its reply reader (which holds the socket
/// open) ends.
struct Idle {
    activity: Rc<Activity>,
    timeout: Duration,
    _watchdog: glommio::Task<()>,
}

/// Something that can make a raw call; the generated typed calls build on it. Used only
/// inside one executor, so its futures need not be `Send`.
#[allow(async_fn_in_trait)]
pub trait AsyncCaller {
    /// Sends `payload` to (service, method) and returns the reply payload.
    async fn call_raw(&self, service: u16, method: u16, payload: Vec<u8>, opts: CallOpts) -> Result<Vec<u8>, RpcError>;
}

struct Conn {
    tx: FrameSender,
    pending: RefCell<HashMap<u64, Pending>>,
    closed: Cell<bool>,
}

impl Conn {
    fn fail_all(&self, why: &str) {
        self.closed.set(true);
        for (_, p) in self.pending.borrow_mut().drain() {
            let _ = p.send(Err(RpcError::Closed(why.to_string())));
        }
    }
}

/// A client for one peer address.
pub struct RpcClient {
    addr: SocketAddr,
    token: Rc<str>,
    limits: FrameLimits,
    connect_timeout: Duration,
    idle_timeout: Duration,
    conn: RefCell<Option<Rc<Conn>>>,
    connecting: glommio::sync::Semaphore,
    next_call: Cell<u64>,
    /// The peer shard index this client prefers (see the module docs).
    prefer_shard: u32,
}

/// Connections [`RpcClient`] may open to land on its preferred peer shard.
const SHARD_ATTEMPTS: usize = 8;

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient").field("addr", &self.addr).finish()
    }
}

impl RpcClient {
    /// A client for `addr`; nothing is connected until the first call.
    pub fn new(addr: SocketAddr, token: Rc<str>) -> Self {
        Self {
            addr,
            token,
            limits: FrameLimits::default(),
            connect_timeout: Duration::from_secs(2),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            conn: RefCell::new(None),
            connecting: glommio::sync::Semaphore::new(1),
            next_call: Cell::new(1),
            prefer_shard: 0,
        }
    }

    /// Prefers connections served by the peer's shard `shard` (modulo its shard count).
    pub fn preferring_shard(mut self, shard: u32) -> Self {
        self.prefer_shard = shard;
        self
    }

    /// Cuts connections idle mid-frame for `idle` (default [`DEFAULT_IDLE_TIMEOUT`]).
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = idle;
        self
    }

    /// The peer address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops the current connection (calls in flight fail with `Closed`).
    pub fn disconnect(&self) {
        if let Some(c) = self.conn.borrow_mut().take() {
            c.fail_all("disconnected by caller");
        }
    }

    async fn connection(&self) -> Result<Rc<Conn>, RpcError> {
        if let Some(c) = self.live() {
            return Ok(c);
        }
        let _permit = self.connecting.acquire_permit(1).await.map_err(|e| RpcError::Io(e.to_string()))?;
        if let Some(c) = self.live() {
            return Ok(c);
        }
        let c = self.connect().await?;
        *self.conn.borrow_mut() = Some(c.clone());
        Ok(c)
    }

    fn live(&self) -> Option<Rc<Conn>> {
        self.conn.borrow().as_ref().filter(|c| !c.closed.get()).cloned()
    }

    async fn connect(&self) -> Result<Rc<Conn>, RpcError> {
        let mut attempt = 1;
        loop {
            let (reader, tx, ack, watch) = self.handshake().await?;
            let wanted = self.prefer_shard % ack.shards.max(1);
            if ack.shard == wanted || attempt >= SHARD_ATTEMPTS {
                let conn = Rc::new(Conn { tx, pending: RefCell::new(HashMap::new()), closed: Cell::new(false) });
                let (activity, fd) = watch;
                let (addr, idle) = (self.addr, self.idle_timeout);
                let watchdog = glommio::spawn_local(super::idle::watch(activity.clone(), idle, move || {
                    tracing::warn!(%addr, "cutting the connection: no byte moved for {idle:?} mid-frame");
                    super::sockopt::cut(fd);
                }));
                let idle = Idle { activity, timeout: idle, _watchdog: watchdog };
                glommio::spawn_local(read_replies(reader, Rc::downgrade(&conn), idle)).detach();
                return Ok(conn);
            }
            tx.close().await;
            attempt += 1;
        }
    }

    /// Connects and exchanges the hello; the ack says which shard serves us.
    async fn handshake(&self) -> Result<Handshaken, RpcError> {
        let stream = TcpStream::connect_timeout(self.addr, self.connect_timeout)
            .await
            .map_err(|e| RpcError::Io(format!("connect {}: {e}", self.addr)))?;
        let _ = stream.set_nodelay(true);
        if let Err(e) = super::sockopt::tune(&stream, self.idle_timeout) {
            tracing::debug!(addr = %self.addr, "keepalive not set: {e}");
        }
        let fd = std::os::unix::io::AsRawFd::as_raw_fd(&stream);
        let (r, w) = split_local(stream);
        let activity = Activity::new();
        let mut reader = FrameReader::watched(EagerRecv::new(fd, r), self.limits, activity.clone());
        let tx = FrameSender::watched(w, |_| {}, activity.clone());
        let hello = Hello { protocol_version: PROTOCOL_VERSION, auth_token: self.token.to_string() };
        tx.send(OutFrame::new(FrameHeader::control(FrameKind::Hello), &hello.encode_to_vec()))
            .await
            .map_err(|e| RpcError::Io(e.to_string()))?;
        let ack = glommio::timer::timeout(self.connect_timeout, async {
            let h = reader.read_header().await.map_err(|e| std::io::Error::other(e.to_string()))?;
            let p = reader.read_payload(&h).await.map_err(|e| std::io::Error::other(e.to_string()))?;
            Ok((h, p))
        })
        .await
        .map_err(|e| RpcError::Handshake(format!("{}: {e}", self.addr)))?;
        if ack.0.kind != FrameKind::HelloAck {
            return Err(RpcError::Handshake(format!("{}: expected a hello ack", self.addr)));
        }
        let ack = HelloAck::decode(ack.1.as_slice()).map_err(|e| RpcError::Handshake(e.to_string()))?;
        if !ack.ok {
            return Err(RpcError::Handshake(format!("{}: {}", self.addr, ack.message)));
        }
        Ok((reader, tx, ack, (activity, fd)))
    }

    async fn call_once(
        &self,
        service: u16,
        method: u16,
        payload: &[u8],
        trailer: Option<Box<dyn Trailer>>,
        deadline: Instant,
    ) -> Result<Vec<u8>, RpcError> {
        let conn = self.connection().await?;
        let id = self.next_call.get();
        self.next_call.set(id + 1);
        let remaining = deadline.saturating_duration_since(Instant::now());
        let header = FrameHeader::request(service, method, id, remaining.as_millis().min(u32::MAX as u128) as u32);
        let (ptx, prx) = oneshot::channel();
        conn.pending.borrow_mut().insert(id, ptx);
        let trailer_len = trailer.as_ref().map(|t| t.bytes().len() as u32).unwrap_or(0);
        let frame = OutFrame { head: encode_frame(header, payload, trailer_len), trailer };
        if conn.tx.send(frame).await.is_err() {
            conn.pending.borrow_mut().remove(&id);
            conn.fail_all("writer closed");
            return Err(RpcError::Closed(format!("{}: writer closed", self.addr)));
        }
        match glommio::timer::timeout(remaining, async { Ok(prx.await) }).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(RpcError::Closed(format!("{}: connection dropped", self.addr))),
            Err(_) => {
                conn.pending.borrow_mut().remove(&id);
                Err(RpcError::Timeout(remaining))
            }
        }
    }

    /// A call whose request carries a raw trailer (object chunks). Never retried: the
    /// trailer's memory is consumed by the attempt.
    pub async fn call_with_trailer(
        &self,
        service: u16,
        method: u16,
        payload: Vec<u8>,
        trailer: Box<dyn Trailer>,
        timeout: Duration,
    ) -> Result<Vec<u8>, RpcError> {
        self.call_once(service, method, &payload, Some(trailer), Instant::now() + timeout).await
    }
}

impl AsyncCaller for RpcClient {
    async fn call_raw(&self, service: u16, method: u16, payload: Vec<u8>, opts: CallOpts) -> Result<Vec<u8>, RpcError> {
        let deadline = Instant::now() + opts.timeout;
        let mut backoff = Duration::from_millis(20);
        loop {
            match self.call_once(service, method, &payload, None, deadline).await {
                Err(e) if opts.idempotent && e.is_retryable() => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left <= backoff {
                        return Err(e);
                    }
                    tracing::debug!(addr = %self.addr, "retrying idempotent call after: {e}");
                    glommio::timer::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }
}

async fn read_replies<R: futures_lite::AsyncRead + Unpin>(
    mut reader: FrameReader<R>,
    conn: std::rc::Weak<Conn>,
    idle: Idle,
) {
    let why = loop {
        let h = match reader.read_header().await {
            Ok(h) => h,
            Err(ReadError::Eof) => break "peer closed".to_string(),
            Err(e) => break e.to_string(),
        };
        let payload = match reader.read_payload(&h).await {
            Ok(p) => p,
            Err(e) => break e.to_string(),
        };
        if h.trailer_len > 0 {
            if let Err(e) = reader.discard_trailer(h.trailer_len as usize).await {
                break e.to_string();
            }
        }
        let Some(conn) = conn.upgrade() else { return };
        let result = match h.kind {
            FrameKind::Response => Ok(payload),
            FrameKind::Error => Err(match RpcStatus::decode(payload.as_slice()) {
                Ok(s) => RpcError::Status(Status::from_proto(s)),
                Err(e) => RpcError::Decode(e.to_string()),
            }),
            other => break format!("unexpected {other:?} frame from server"),
        };
        let waiter = conn.pending.borrow_mut().remove(&h.call_id);
        if let Some(p) = waiter {
            let _ = p.send(result);
        }
    };
    let why = if idle.activity.was_cut() {
        format!("no byte moved for {:?} in the middle of a frame (idle deadline)", idle.timeout)
    } else {
        why
    };
    if let Some(conn) = conn.upgrade() {
        conn.fail_all(&why);
    }
}

/// Clients to many peers, one per address, owned by one shard.
#[derive(Debug, Default)]
pub struct ClientPool {
    token: Option<Rc<str>>,
    /// The owning shard's index: its clients prefer the peer shard of that index.
    shard: u32,
    /// Idle deadline of its clients' connections (default [`DEFAULT_IDLE_TIMEOUT`]).
    idle_timeout: Option<Duration>,
    clients: RefCell<HashMap<SocketAddr, Rc<RpcClient>>>,
}

impl ClientPool {
    /// An empty pool for shard `shard` whose clients present `token`.
    pub fn new(token: Rc<str>, shard: u32) -> Self {
        Self { token: Some(token), shard, idle_timeout: None, clients: RefCell::new(HashMap::new()) }
    }

    /// Its clients cut connections idle mid-frame for `idle`.
    pub fn with_idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = Some(idle);
        self
    }

    /// The client for `addr`, created on first use.
    pub fn get(&self, addr: SocketAddr) -> Rc<RpcClient> {
        self.clients
            .borrow_mut()
            .entry(addr)
            .or_insert_with(|| {
                let token = self.token.clone().unwrap_or_else(|| "".into());
                let idle = self.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT);
                Rc::new(RpcClient::new(addr, token).preferring_shard(self.shard).idle_timeout(idle))
            })
            .clone()
    }

    /// Forgets the client for `addr` (its node died), failing its calls in flight.
    pub fn remove(&self, addr: SocketAddr) {
        if let Some(c) = self.clients.borrow_mut().remove(&addr) {
            c.disconnect();
        }
    }
}
