//! The TCP RPC server of one shard: accept, hello/auth, framed reads, dispatch to the
//! registered services, replies through the connection's writer task.
//!
//! Every shard binds the same port with `SO_REUSEPORT` (glommio's `TcpListener::bind` sets
//! it) and serves the connections the kernel hands it. Bad input closes only the offending
//! connection, with a logged reason and a counted error.
//!
//! Before its hello a connection is cheap to hold and cheap to refuse: it is admitted
//! under the node-wide caps of [`super::admission`] (which may drop the oldest such
//! connection for it), its hello may declare at most
//! [`MAX_HELLO_PAYLOAD`](super::admission::MAX_HELLO_PAYLOAD) bytes, checked before any
//! payload byte is read, and its refusal is logged at a limited rate.

use super::admission::{AcceptPacer, ShardAdmission, Ticket, MAX_HELLO_PAYLOAD};
use super::conn::{split_local, FrameReader, FrameSender, OutFrame, ReadError};
use super::frame::{FrameHeader, FrameKind, FrameLimits, PROTOCOL_VERSION};
use super::idle::Activity;
use super::readahead::EagerRecv;
use super::scope::ConnScope;
use super::status::Status;
use crate::metrics::{ErrorKind, Listener, Metrics};
use crate::wire::rpc::{Hello, HelloAck};
use futures_lite::future::BoxedLocal;
use glommio::net::{TcpListener, TcpStream};
use prost::Message;
use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

/// Handles every method of one service: `(method, payload) -> reply payload`.
pub type ServiceFn = Rc<dyn Fn(u16, Vec<u8>) -> BoxedLocal<Result<Vec<u8>, Status>>>;

/// Where a request's raw trailer goes, and what happens once it has arrived.
pub trait TrailerSink {
    /// The destination of the trailer bytes; exactly `trailer_len` long.
    fn buf(&mut self) -> &mut [u8];
    /// Called once the trailer is in `buf`, with whether its CRC32C footer matched the
    /// bytes (checked as they were read); produces the reply.
    fn finish(self: Box<Self>, crc_ok: bool) -> BoxedLocal<Result<Vec<u8>, Status>>;
}

/// Accepts a request that carries a trailer: returns where to put it, or refuses.
pub type TrailerFn = Rc<dyn Fn(FrameHeader, Vec<u8>) -> BoxedLocal<Result<Box<dyn TrailerSink>, Status>>>;

/// The services one listener serves.
#[derive(Default, Clone)]
pub struct Router {
    services: HashMap<u16, ServiceFn>,
    trailers: HashMap<(u16, u16), TrailerFn>,
    names: HashMap<u16, fn(u16) -> Option<&'static str>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("services", &self.services.keys().collect::<Vec<_>>()).finish()
    }
}

impl Router {
    /// Registers a service (id, its generated `method_name`, and the dispatcher).
    pub fn add(&mut self, id: u16, names: fn(u16) -> Option<&'static str>, f: ServiceFn) -> &mut Self {
        self.services.insert(id, f);
        self.names.insert(id, names);
        self
    }

    /// Registers the handler for requests of (service, method) that carry a trailer.
    pub fn add_trailer(&mut self, service: u16, method: u16, f: TrailerFn) -> &mut Self {
        self.trailers.insert((service, method), f);
        self
    }

    fn method_name(&self, service: u16, method: u16) -> String {
        self.names
            .get(&service)
            .and_then(|n| n(method))
            .map(str::to_string)
            .unwrap_or_else(|| format!("{service}.{method}"))
    }
}

/// How a listener treats its connections.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Shown in logs ("node_manager", "gcs", "object_manager").
    pub label: &'static str,
    /// The cluster auth token every hello must carry.
    pub auth_token: Rc<str>,
    /// Length caps.
    pub limits: FrameLimits,
    /// Time a new connection has to send its hello.
    pub hello_timeout: Duration,
    /// Requests handled at once per connection; further reads wait.
    pub max_in_flight: usize,
    /// A connection with a frame part-way through and no byte moving for this long is cut
    /// ([`super::idle`]); also sets its keepalive ([`super::sockopt`]).
    pub idle_timeout: Duration,
    /// This shard's index, for metrics and logs; told to clients in the hello ack.
    pub shard: usize,
    /// How many shards serve this port (told to clients in the hello ack).
    pub shards: usize,
    /// Counters.
    pub metrics: Metrics,
    /// Task queue connections run in (bulk transfer runs below latency-sensitive work).
    pub task_queue: Option<glommio::TaskQueueHandle>,
    /// Which listener this is (metrics of its accept loop).
    pub listener: Listener,
    /// This shard's admission of connections before their hello.
    pub admission: Rc<ShardAdmission>,
}

/// Accepts connections on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, router: Rc<Router>, cfg: Rc<ServerConfig>) {
    let mut pacer = AcceptPacer::new(cfg.listener, cfg.metrics.clone(), cfg.shard);
    loop {
        match listener.accept().await {
            Ok(stream) => {
                pacer.succeeded();
                let fd = std::os::unix::io::AsRawFd::as_raw_fd(&stream);
                let Some(ticket) = cfg.admission.admit(fd, cfg.listener, stream.peer_addr().ok()) else { continue };
                let conn = serve_connection(stream, ticket, router.clone(), cfg.clone());
                match cfg.task_queue {
                    Some(tq) => match glommio::spawn_local_into(conn, tq) {
                        Ok(t) => t.detach(),
                        Err(e) => {
                            tracing::error!(label = cfg.label, "cannot spawn a connection task: {e}");
                            continue;
                        }
                    },
                    None => glommio::spawn_local(conn).detach(),
                };
            }
            Err(e) => {
                let pause = pacer.failed_glommio(e);
                if !pause.is_zero() {
                    glommio::timer::sleep(pause).await;
                }
            }
        }
    }
}

async fn serve_connection(stream: TcpStream, ticket: Ticket, router: Rc<Router>, cfg: Rc<ServerConfig>) {
    let peer_addr = stream.peer_addr().ok();
    let peer = peer_addr.map(|a| a.to_string()).unwrap_or_else(|| "?".into());
    let _ = stream.set_nodelay(true);
    if let Err(e) = super::sockopt::tune(&stream, cfg.idle_timeout) {
        tracing::debug!(label = cfg.label, %peer, "keepalive not set: {e}");
    }
    let m = cfg.metrics.shard(cfg.shard);
    m.rpc_connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let fd = std::os::unix::io::AsRawFd::as_raw_fd(&stream);
    let (r, w) = split_local(stream);
    let activity = Activity::new();
    let mut reader = FrameReader::watched(EagerRecv::new(fd, r), cfg.limits, activity.clone());
    let metrics = cfg.metrics.clone();
    let shard = cfg.shard;
    let tx = FrameSender::watched(
        w,
        move |_| {
            metrics.shard(shard).rpc_frames_out.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        },
        activity.clone(),
    );
    let scope = ConnScope::new();
    // `Err(None)`: a peer refused before its hello, already counted and logged.
    let outcome = match handshake(&mut reader, &tx, &cfg).await {
        Ok(()) if ticket.authenticated() => {
            // Dropped (cancelled) when the read loop ends, while `reader` still holds the
            // socket open: the watchdog never shuts down an fd that was reused.
            let _watchdog = glommio::spawn_local(super::idle::watch(activity.clone(), cfg.idle_timeout, move || {
                super::sockopt::cut(fd)
            }));
            read_loop(&mut reader, &tx, &router, &cfg, &scope).await.map_err(Some)
        }
        // Dropped for a newer peer while its hello was being answered.
        Ok(()) => Err(None),
        Err((kind, reason)) => {
            // Logged at a limited rate, with a count; not at all when the failure is only
            // the close of a connection dropped for a newer peer (counted as such).
            if ticket.refused() {
                m.error(kind);
                cfg.admission.refused(cfg.listener, peer_addr, &reason);
            }
            Err(None)
        }
    };
    let outcome = if activity.was_cut() {
        let why = format!("no byte moved for {:?} in the middle of a frame (idle deadline)", cfg.idle_timeout);
        Err(Some((ErrorKind::RpcIdle, why)))
    } else {
        outcome
    };
    // What the peer's calls left for the connection's lifetime ends with it.
    scope.close();
    match outcome {
        Ok(()) => tracing::debug!(label = cfg.label, shard = cfg.shard, %peer, "connection closed by peer"),
        Err(None) => {}
        Err(Some((kind, reason))) => {
            m.error(kind);
            tracing::warn!(label = cfg.label, shard = cfg.shard, %peer, "closing connection: {reason}");
        }
    }
    // Close the write side; frames still queued behind a write in progress are written
    // by that write's sender first.
    let _ = glommio::timer::timeout(Duration::from_secs(1), async {
        tx.close().await;
        Ok(())
    })
    .await;
    m.rpc_connections.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    // Counted as open until its task ends.
    drop(ticket);
}

type Failure = (ErrorKind, String);

async fn handshake<R: futures_lite::AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    tx: &FrameSender,
    cfg: &ServerConfig,
) -> Result<(), Failure> {
    let refuse = |msg: String| {
        OutFrame::new(
            FrameHeader::control(FrameKind::HelloAck),
            &HelloAck {
                protocol_version: PROTOCOL_VERSION,
                ok: false,
                message: msg,
                shard: cfg.shard as u32,
                shards: cfg.shards as u32,
            }
            .encode_to_vec(),
        )
    };
    let hello = glommio::timer::timeout(cfg.hello_timeout, async {
        let h = reader.read_header().await.map_err(|e| std::io::Error::other(e.to_string()))?;
        if h.kind != FrameKind::Hello || h.payload_len > MAX_HELLO_PAYLOAD {
            return Ok(Err(h));
        }
        let p = reader.read_payload(&h).await.map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Ok(p))
    })
    .await;
    let p = match hello {
        Ok(Ok(p)) => p,
        Ok(Err(h)) if h.kind != FrameKind::Hello => {
            return Err((ErrorKind::RpcBadHello, format!("first frame is {:?}, not a hello", h.kind)))
        }
        Ok(Err(h)) => {
            let msg = format!("hello of {} bytes exceeds the cap of {MAX_HELLO_PAYLOAD}", h.payload_len);
            let _ = tx.send(refuse(msg.clone())).await;
            return Err((ErrorKind::RpcBadHello, msg));
        }
        Err(glommio::GlommioError::TimedOut(_)) => {
            return Err((ErrorKind::RpcBadHello, format!("no hello within {:?}", cfg.hello_timeout)))
        }
        Err(e) => return Err((ErrorKind::RpcBadHello, format!("bad hello: {e}"))),
    };
    let hello = Hello::decode(p.as_slice()).map_err(|e| (ErrorKind::RpcBadHello, format!("undecodable hello: {e}")))?;
    if hello.protocol_version != PROTOCOL_VERSION {
        let msg = format!("protocol version {} not supported (want {PROTOCOL_VERSION})", hello.protocol_version);
        let _ = tx.send(refuse(msg.clone())).await;
        return Err((ErrorKind::RpcBadHello, msg));
    }
    if !constant_time_eq(hello.auth_token.as_bytes(), cfg.auth_token.as_bytes()) {
        let _ = tx.send(refuse("wrong auth token".into())).await;
        return Err((ErrorKind::RpcBadToken, "wrong auth token".into()));
    }
    let ack = HelloAck {
        protocol_version: PROTOCOL_VERSION,
        ok: true,
        message: String::new(),
        shard: cfg.shard as u32,
        shards: cfg.shards as u32,
    };
    tx.send(OutFrame::new(FrameHeader::control(FrameKind::HelloAck), &ack.encode_to_vec()))
        .await
        .map_err(|e| (ErrorKind::RpcIo, e.to_string()))
}

/// Compares tokens without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn read_loop<R: futures_lite::AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    tx: &FrameSender,
    router: &Rc<Router>,
    cfg: &Rc<ServerConfig>,
    scope: &Rc<ConnScope>,
) -> Result<(), Failure> {
    let in_flight = Rc::new(Cell::new(0usize));
    let slots = Rc::new(glommio::sync::Semaphore::new(cfg.max_in_flight as u64));
    loop {
        let header = match reader.read_header().await {
            Ok(h) => h,
            Err(ReadError::Eof) => return Ok(()),
            Err(ReadError::Frame(e)) => return Err((ErrorKind::RpcBadFrame, e.to_string())),
            Err(ReadError::Io(e)) => return Err((ErrorKind::RpcIo, e.to_string())),
        };
        cfg.metrics.shard(cfg.shard).rpc_frames_in.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if header.kind != FrameKind::Request {
            return Err((ErrorKind::RpcBadFrame, format!("unexpected {:?} frame from a client", header.kind)));
        }
        let payload = reader.read_payload(&header).await.map_err(|e| (ErrorKind::RpcIo, e.to_string()))?;
        let started = Instant::now();
        let permit = slots.acquire_static_permit(1).await.map_err(|e| (ErrorKind::RpcIo, e.to_string()))?;
        let fut: BoxedLocal<Result<Vec<u8>, Status>> = if header.trailer_len > 0 {
            match router.trailers.get(&(header.service, header.method)) {
                Some(accept) => match accept(header, payload).await {
                    Ok(mut sink) => {
                        let ok = reader
                            .read_trailer(&header, sink.buf())
                            .await
                            .map_err(|e| (ErrorKind::RpcIo, e.to_string()))?;
                        sink.finish(ok)
                    }
                    Err(status) => {
                        reader
                            .discard_trailer(header.trailer_len as usize)
                            .await
                            .map_err(|e| (ErrorKind::RpcIo, e.to_string()))?;
                        Box::pin(async move { Err(status) })
                    }
                },
                None => {
                    reader
                        .discard_trailer(header.trailer_len as usize)
                        .await
                        .map_err(|e| (ErrorKind::RpcIo, e.to_string()))?;
                    let name = router.method_name(header.service, header.method);
                    Box::pin(async move { Err(Status::invalid_argument(format!("{name} takes no trailer"))) })
                }
            }
        } else {
            match router.services.get(&header.service) {
                Some(svc) => svc(header.method, payload),
                None => {
                    let s = header.service;
                    Box::pin(async move { Err(Status::unimplemented(format!("unknown service {s}"))) })
                }
            }
        };
        // Most handlers finish without waiting: answer those inline, with no task spawn.
        // The first poll runs the handler's start with the connection's scope current.
        let mut fut = fut;
        let first = std::future::poll_fn(|cx| Poll::Ready(scope.enter(|| fut.as_mut().poll(cx)))).await;
        if let Poll::Ready(result) = first {
            let frame = reply_frame(&header, result, started, cfg, router);
            let _ = tx.send(frame).await;
            drop(permit);
            continue;
        }
        let (tx, cfg, in_flight, router) = (tx.clone(), cfg.clone(), in_flight.clone(), router.clone());
        in_flight.set(in_flight.get() + 1);
        glommio::spawn_local(async move {
            let result = fut.await;
            let frame = reply_frame(&header, result, started, &cfg, &router);
            let _ = tx.send(frame).await;
            in_flight.set(in_flight.get() - 1);
            drop(permit);
        })
        .detach();
    }
}

/// The reply frame of a finished call, counted in the metrics.
fn reply_frame(
    header: &FrameHeader,
    result: Result<Vec<u8>, Status>,
    started: Instant,
    cfg: &ServerConfig,
    router: &Router,
) -> OutFrame {
    let m = cfg.metrics.shard(cfg.shard);
    m.record_call(header.service, header.method, started.elapsed());
    match result {
        Ok(bytes) => OutFrame::new(FrameHeader::reply_to(header, FrameKind::Response), &bytes),
        Err(status) => {
            let kind = match status.code {
                super::Code::InvalidArgument | super::Code::Unimplemented => ErrorKind::RpcBadRequest,
                _ => ErrorKind::RpcHandlerError,
            };
            m.error(kind);
            tracing::debug!(label = cfg.label, method = %router.method_name(header.service, header.method), "call failed: {status}");
            OutFrame::new(FrameHeader::reply_to(header, FrameKind::Error), &status.to_proto().encode_to_vec())
        }
    }
}
