//! The worker's door: one thread accepts `WorkerService` connections and holds each one
//! until its hello, then gives it a serving thread (see [`super::server`]).
//!
//! Until a peer has presented the cluster token it costs one fd and a hello buffer of at
//! most 4 KiB, no thread: the door polls every connection before its hello together with
//! the listener, each under a [`HELLO_TIMEOUT`]. The caps are the node's rules
//! (`logic::admission`) with the worker's own numbers: [`MAX_UNAUTHENTICATED`] before
//! the hello (over it the oldest is closed for the newcomer) and [`MAX_CONNECTIONS`] in
//! all, fitted to the fd limit. A hello declaring more than
//! [`MAX_HELLO_PAYLOAD`] bytes is refused from its header. An accept that fails for lack
//! of fds pauses the listener (doubling up to 1 s) while the door keeps serving hellos.
//! Refusals are logged at most once per [`LOG_INTERVAL`], with a count.

use super::server::Worker;
use crate::client::wire_io::{check_hello, hello_ack};
use crate::logic::admission::{
    admit, AcceptBackoff, AcceptFailure, AdmissionLimits, Admit, Counts, LogAction, PendingQueue, RefusalLog,
};
use crate::rpc::admission::{classify, LOG_INTERVAL, MAX_HELLO_PAYLOAD};
use crate::rpc::frame::{encode_frame, FrameError, FrameHeader, FrameKind, FrameLimits, HEADER_LEN};
use nix::poll::{poll, PollFd, PollFlags};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Time a new connection has to complete its hello.
pub(super) const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections before their hello. A worker's peers are its lessee and its raylet, each
/// connecting once in a while, so a handful at a time is already generous.
pub(super) const MAX_UNAUTHENTICATED: usize = 32;
/// Connections in all, each authenticated one holding a thread: lessees past and
/// present that keep a connection open, plus the raylet's.
pub(super) const MAX_CONNECTIONS: usize = 256;

/// A connection before its hello.
#[derive(Debug)]
struct Pending {
    stream: TcpStream,
    peer: Option<SocketAddr>,
    buf: Vec<u8>,
    /// Bytes the hello takes: the header until it is read, then header and payload.
    need: usize,
    deadline: Instant,
}

/// Where a pending connection's hello stands after a read.
enum Hello {
    /// More bytes to come.
    Waiting,
    /// Header and payload are in `buf`.
    Complete(FrameHeader),
    /// The peer is refused, for this reason; the refusing ack to send, if any.
    Refused(String, Option<Vec<u8>>),
}

impl Pending {
    /// Reads what the socket has, up to the end of the hello (never past it, so the
    /// serving thread starts at the first request).
    fn advance(&mut self) -> Hello {
        loop {
            let have = self.buf.len();
            if have == self.need {
                let mut h = [0u8; HEADER_LEN];
                h.copy_from_slice(&self.buf[..HEADER_LEN]);
                let limits = FrameLimits { max_payload: MAX_HELLO_PAYLOAD, max_trailer: 0 };
                let header = match FrameHeader::decode(&h, &limits) {
                    Ok(h) => h,
                    Err(FrameError::PayloadTooLarge { len, max }) => {
                        let why = format!("hello of {len} bytes exceeds the cap of {max}");
                        let ack = hello_ack(&Err(why.clone()));
                        return Hello::Refused(why, Some(ack));
                    }
                    Err(e) => return Hello::Refused(format!("bad hello: {e}"), None),
                };
                if header.kind != FrameKind::Hello {
                    return Hello::Refused(format!("first frame is {:?}, not a hello", header.kind), None);
                }
                let total = HEADER_LEN + header.payload_len as usize;
                if have == total {
                    return Hello::Complete(header);
                }
                self.need = total;
            }
            let mut chunk = [0u8; 1024];
            let want = (self.need - self.buf.len()).min(chunk.len());
            match self.stream.read(&mut chunk[..want]) {
                Ok(0) => return Hello::Refused("closed before its hello".into(), None),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Hello::Waiting,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Hello::Refused(format!("bad hello: {e}"), None),
            }
        }
    }
}

/// The rate-limited log of refused peers.
#[derive(Debug)]
struct Refusals {
    log: RefusalLog,
    flush_at: Option<Instant>,
    latest: String,
}

impl Refusals {
    fn note(&mut self, peer: Option<SocketAddr>, why: &str, now: Instant) {
        let peer = peer.map(|p| p.to_string()).unwrap_or_else(|| "?".into());
        self.latest = format!("{peer}: {why}");
        match self.log.handle_refusal(now) {
            LogAction::Emit { count } => self.line(count),
            LogAction::Suppress { flush_at } => self.flush_at = self.flush_at.or(flush_at),
        }
    }

    fn flush(&mut self, now: Instant) {
        if self.flush_at.is_some_and(|t| t <= now) {
            self.flush_at = None;
            if let Some(count) = self.log.handle_flush(now) {
                self.line(count);
            }
        }
    }

    fn line(&self, count: u64) {
        tracing::warn!(
            "WorkerService refused {count} unauthenticated peer(s) (at most one line per {LOG_INTERVAL:?}); latest: {}",
            self.latest
        );
    }
}

/// The door's state.
struct Gate {
    listener: TcpListener,
    worker: Arc<Worker>,
    token: String,
    limits: AdmissionLimits,
    pending: PendingQueue<Pending>,
    /// Authenticated connections being served (each decrements it when its thread ends).
    serving: Arc<AtomicUsize>,
    backoff: AcceptBackoff,
    accept_paused_until: Option<Instant>,
    accept_log: RefusalLog,
    refusals: Refusals,
}

/// Runs the door on the calling thread until the process exits.
pub(super) fn run(listener: TcpListener, worker: Arc<Worker>, token: String) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(1024, |l| l.0);
    let configured = AdmissionLimits { max_unauthenticated: MAX_UNAUTHENTICATED, max_connections: MAX_CONNECTIONS };
    let mut gate = Gate {
        listener,
        worker,
        token,
        limits: configured.fitted(nofile).0,
        pending: PendingQueue::default(),
        serving: Arc::new(AtomicUsize::new(0)),
        backoff: AcceptBackoff::default(),
        accept_paused_until: None,
        accept_log: RefusalLog::new(LOG_INTERVAL),
        refusals: Refusals { log: RefusalLog::new(LOG_INTERVAL), flush_at: None, latest: String::new() },
    };
    loop {
        gate.turn();
    }
}

impl Gate {
    /// One wait for readiness and the work it brings.
    fn turn(&mut self) {
        let now = Instant::now();
        self.expire(now);
        self.refusals.flush(now);
        let listening = self.accept_paused_until.is_none_or(|t| t <= now);
        if listening {
            self.accept_paused_until = None;
        }
        let wake = self
            .pending
            .iter_mut()
            .map(|(_, p)| p.deadline)
            .chain(self.refusals.flush_at)
            .chain(self.accept_paused_until)
            .min();
        let timeout = match wake {
            Some(t) => t.saturating_duration_since(now).as_millis().clamp(1, i32::MAX as u128) as i32,
            None => -1,
        };
        let (listener_ready, ready) = {
            let mut keys = Vec::with_capacity(self.pending.len());
            let mut fds = Vec::with_capacity(self.pending.len() + 1);
            if listening {
                fds.push(PollFd::new(&self.listener, PollFlags::POLLIN));
            }
            for (k, p) in self.pending.iter_mut() {
                keys.push(k);
                fds.push(PollFd::new(&p.stream, PollFlags::POLLIN));
            }
            if poll(&mut fds, timeout).is_err() {
                return; // EINTR: look again
            }
            let is_ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            let listener_ready = listening && is_ready(&fds[0]);
            let skip = usize::from(listening);
            let ready: Vec<u64> = keys.iter().zip(&fds[skip..]).filter(|(_, f)| is_ready(f)).map(|(k, _)| *k).collect();
            (listener_ready, ready)
        };
        for key in ready {
            self.advance(key);
        }
        if listener_ready {
            self.accept_all();
        }
    }

    fn expire(&mut self, now: Instant) {
        let late: Vec<u64> = self.pending.iter_mut().filter(|(_, p)| p.deadline <= now).map(|(k, _)| k).collect();
        for key in late {
            if let Some(p) = self.pending.remove(key) {
                self.refusals.note(p.peer, &format!("no hello within {HELLO_TIMEOUT:?}"), now);
            }
        }
    }

    fn advance(&mut self, key: u64) {
        let Some(outcome) = self.pending.get_mut(key).map(Pending::advance) else { return };
        let header = match outcome {
            Hello::Waiting => return,
            Hello::Complete(h) => h,
            Hello::Refused(why, ack) => {
                if let Some(mut p) = self.pending.remove(key) {
                    if let Some(ack) = ack {
                        let _ = p.stream.write_all(&encode_frame(FrameHeader::control(FrameKind::HelloAck), &ack, 0));
                    }
                    self.refusals.note(p.peer, &why, Instant::now());
                }
                return;
            }
        };
        let Some(mut p) = self.pending.remove(key) else { return };
        let verdict = check_hello(&header, &p.buf[HEADER_LEN..], &self.token);
        let ack = encode_frame(FrameHeader::control(FrameKind::HelloAck), &hello_ack(&verdict), 0);
        if let Err(why) = verdict {
            let _ = p.stream.write_all(&ack);
            self.refusals.note(p.peer, &why, Instant::now());
            return;
        }
        if p.stream.write_all(&ack).is_err() || p.stream.set_nonblocking(false).is_err() {
            return;
        }
        self.serve(p.stream);
    }

    /// Gives an authenticated connection its thread.
    fn serve(&self, stream: TcpStream) {
        struct Served(Arc<AtomicUsize>);
        impl Drop for Served {
            fn drop(&mut self) {
                self.0.fetch_sub(1, SeqCst);
            }
        }
        self.serving.fetch_add(1, SeqCst);
        let served = Served(self.serving.clone());
        let w = self.worker.clone();
        let spawned = std::thread::Builder::new().name("worker-conn".into()).spawn(move || {
            let _served = served;
            w.serve(stream);
        });
        if let Err(e) = spawned {
            tracing::error!("cannot start a connection thread: {e}");
        }
    }

    /// Accepts until the backlog is empty or an accept fails.
    fn accept_all(&mut self) {
        loop {
            let (stream, peer) = match self.listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    let failure = classify(&e);
                    let pause = self.backoff.handle_failure(failure);
                    if let LogAction::Emit { count } = self.accept_log.handle_refusal(Instant::now()) {
                        tracing::warn!(
                            "WorkerService accept failed {count} time(s) since the last report: {e}; pausing {pause:?}"
                        );
                    }
                    if failure == AcceptFailure::Transient {
                        continue;
                    }
                    self.accept_paused_until = Some(Instant::now() + pause);
                    return;
                }
            };
            self.backoff.handle_success();
            self.admit(stream, Some(peer));
        }
    }

    fn admit(&mut self, stream: TcpStream, peer: Option<SocketAddr>) {
        let now = Instant::now();
        let counts = Counts {
            open: self.serving.load(SeqCst) + self.pending.len() + 1,
            unauthenticated: self.pending.len() + 1,
            closing: 0,
        };
        match admit(&self.limits, counts, !self.pending.is_empty()) {
            Admit::Accept => {}
            Admit::DropOldest => {
                // Closed here and now: the door owns its socket.
                if let Some((_, old)) = self.pending.pop_oldest() {
                    self.refusals.note(old.peer, "dropped as the oldest connection before its hello", now);
                }
            }
            Admit::Refuse => {
                self.refusals.note(peer, "refused: the connection caps are reached", now);
                return;
            }
        }
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let _ = stream.set_nodelay(true);
        let p = Pending {
            stream,
            peer,
            buf: Vec::with_capacity(HEADER_LEN),
            need: HEADER_LEN,
            deadline: now + HELLO_TIMEOUT,
        };
        self.pending.push(p);
    }
}
