//! Admission of the node's TCP connections (DESIGN.md §9, "Limits and trust"): the
//! node-wide counts of open and unauthenticated connections, each shard's queue of
//! connections still before their hello, the rate-limited log of refused peers, and the
//! pacing of accept loops that fail.
//!
//! Every TCP listener of the node (node manager, object manager, GCS, metrics) admits
//! each accepted connection here before spending anything on it. The counts are atomics
//! shared by all shards (an `Arc` of counters, no domain state); the queue and the logs
//! are per shard. Over a cap, the shard closes its own oldest unauthenticated connection
//! (`shutdown(2)` on its fd wakes its task, which ends and frees the fd) and the newcomer
//! takes its place; when the shard has none to give up, or the node is at its total cap
//! with dropped connections still closing, the newcomer is closed at once. The decisions
//! are `logic::admission`'s. A connection counts as open until its task has ended, so
//! the count bounds the fds TCP peers hold.
//!
//! Owner shard only, apart from [`NodeAdmission`]; [`AcceptPacer`] also serves the local
//! socket's acceptor threads.

use crate::logic::admission::{
    admit, AcceptBackoff, AcceptFailure, AdmissionLimits, Admit, Counts, LogAction, PendingQueue, RefusalLog,
};
use crate::metrics::{ErrorKind, Listener, Metrics};
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::unix::io::RawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The largest hello payload read: a protocol version and a token. A header declaring
/// more is refused before any payload byte is read or any buffer sized by it.
pub const MAX_HELLO_PAYLOAD: u32 = 4096;
/// The longest auth token a node accepts, so its own hellos fit [`MAX_HELLO_PAYLOAD`].
pub const MAX_AUTH_TOKEN_LEN: usize = 4000;
/// At most one log line per shard per interval about refused peers (and per accept
/// loop about its failures).
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The node-wide counts and caps, shared by every shard.
#[derive(Debug)]
pub struct NodeAdmission {
    limits: AdmissionLimits,
    open: AtomicUsize,
    unauthenticated: AtomicUsize,
    closing: AtomicUsize,
}

impl NodeAdmission {
    /// Counts starting at zero under `limits`.
    pub fn new(limits: AdmissionLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            open: AtomicUsize::new(0),
            unauthenticated: AtomicUsize::new(0),
            closing: AtomicUsize::new(0),
        })
    }

    /// The caps.
    pub fn limits(&self) -> AdmissionLimits {
        self.limits
    }

    /// Open TCP connections, node-wide.
    pub fn open(&self) -> usize {
        self.open.load(Relaxed)
    }

    /// Open TCP connections before their hello, node-wide.
    pub fn unauthenticated(&self) -> usize {
        self.unauthenticated.load(Relaxed)
    }

    /// Connections dropped for newer peers that still hold their fd.
    pub fn closing(&self) -> usize {
        self.closing.load(Relaxed)
    }
}

/// One shard's admission: its unauthenticated connections (oldest first) and its log of
/// refusals. Shared by the shard's listeners.
#[derive(Debug)]
pub struct ShardAdmission {
    node: Arc<NodeAdmission>,
    pending: RefCell<PendingQueue<(RawFd, Option<SocketAddr>)>>,
    log: RefCell<RefusalLog>,
    /// The latest refusal, named in the next line.
    latest: RefCell<String>,
    metrics: Metrics,
    shard: usize,
}

impl ShardAdmission {
    /// Shard `shard`'s view of `node`.
    pub fn new(node: Arc<NodeAdmission>, metrics: Metrics, shard: usize) -> Rc<Self> {
        Rc::new(Self {
            node,
            pending: RefCell::new(PendingQueue::default()),
            log: RefCell::new(RefusalLog::new(LOG_INTERVAL)),
            latest: RefCell::new(String::new()),
            metrics,
            shard,
        })
    }

    /// The node-wide counts.
    pub fn node(&self) -> &Arc<NodeAdmission> {
        &self.node
    }

    /// A pacer for an accept loop of this shard.
    pub fn pacer(&self, listener: Listener) -> AcceptPacer {
        AcceptPacer::new(listener, self.metrics.clone(), self.shard)
    }

    /// Admits a connection just accepted on `fd`, or refuses it (`None`: drop the
    /// stream, which closes it). The ticket keeps the connection counted until dropped.
    pub fn admit(self: &Rc<Self>, fd: RawFd, listener: Listener, peer: Option<SocketAddr>) -> Option<Ticket> {
        let node = &self.node;
        let counts = Counts {
            open: node.open.fetch_add(1, Relaxed) + 1,
            unauthenticated: node.unauthenticated.fetch_add(1, Relaxed) + 1,
            closing: node.closing.load(Relaxed),
        };
        let can_drop = !self.pending.borrow().is_empty();
        match admit(&node.limits, counts, can_drop) {
            Admit::Accept => {}
            Admit::DropOldest => {
                let oldest = self.pending.borrow_mut().pop_oldest();
                if let Some((_, (old, old_peer))) = oldest {
                    // Its place is the newcomer's from now on; it holds its fd (counted as
                    // open and closing) until its task sees the shutdown as a closed
                    // socket and ends.
                    node.unauthenticated.fetch_sub(1, Relaxed);
                    node.closing.fetch_add(1, Relaxed);
                    self.metrics.shard(self.shard).rpc_unauthenticated.fetch_sub(1, Relaxed);
                    let _ = nix::sys::socket::shutdown(old, nix::sys::socket::Shutdown::Both);
                    self.metrics.shard(self.shard).error(ErrorKind::RpcOverCapacity);
                    self.refused(listener, old_peer, "dropped as the oldest connection before its hello");
                }
            }
            Admit::Refuse => {
                node.open.fetch_sub(1, Relaxed);
                node.unauthenticated.fetch_sub(1, Relaxed);
                let l = node.limits;
                let why = format!(
                    "refused: {} connections open ({} max, {} closing), {} before their hello ({} max)",
                    counts.open, l.max_connections, counts.closing, counts.unauthenticated, l.max_unauthenticated
                );
                self.metrics.shard(self.shard).error(ErrorKind::RpcOverCapacity);
                self.refused(listener, peer, &why);
                return None;
            }
        }
        self.metrics.shard(self.shard).rpc_unauthenticated.fetch_add(1, Relaxed);
        let key = self.pending.borrow_mut().push((fd, peer));
        Some(Ticket { adm: self.clone(), state: Cell::new(TicketState::Pending(key)) })
    }

    /// Counts and logs (at a limited rate) a peer refused before it authenticated.
    pub fn refused(self: &Rc<Self>, listener: Listener, peer: Option<SocketAddr>, reason: &str) {
        let peer = peer.map(|p| p.to_string()).unwrap_or_else(|| "?".into());
        *self.latest.borrow_mut() = format!("{} {peer}: {reason}", listener.label());
        let action = self.log.borrow_mut().handle_refusal(Instant::now());
        match action {
            LogAction::Emit { count } => self.write_line(count),
            LogAction::Suppress { flush_at: Some(at) } => {
                let me = self.clone();
                glommio::spawn_local(async move {
                    glommio::timer::sleep(at.saturating_duration_since(Instant::now())).await;
                    let count = me.log.borrow_mut().handle_flush(Instant::now());
                    if let Some(count) = count {
                        me.write_line(count);
                    }
                })
                .detach();
            }
            LogAction::Suppress { flush_at: None } => {}
        }
    }

    fn write_line(&self, count: u64) {
        let latest = self.latest.borrow();
        tracing::warn!(
            shard = self.shard,
            "refused {count} unauthenticated peer(s) (at most one line per {LOG_INTERVAL:?}); latest: {latest}"
        );
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TicketState {
    /// Before its hello, in the shard's queue under this key.
    Pending(u64),
    /// Past its hello (or refused and closing): counted as open only.
    Open,
    /// Dropped for a newer peer: counted as open and closing until it ends.
    Dropped,
}

/// One admitted connection's place in the counts; dropping it counts the connection out.
/// Drop it no later than the stream: while pending, its fd is in the shard's queue.
#[derive(Debug)]
pub struct Ticket {
    adm: Rc<ShardAdmission>,
    state: Cell<TicketState>,
}

impl Ticket {
    /// The hello passed: the connection leaves the unauthenticated ones. `false` when it
    /// was dropped for a newer peer meanwhile (it must close).
    pub fn authenticated(&self) -> bool {
        self.leave_pending()
    }

    /// The hello failed: the connection is closing and leaves the queue. `false` when it
    /// had been dropped for a newer peer already (that is why its hello failed, and it
    /// is counted and logged as such).
    pub fn refused(&self) -> bool {
        self.leave_pending()
    }

    fn leave_pending(&self) -> bool {
        match self.state.get() {
            TicketState::Pending(key) => {
                if self.adm.pending.borrow_mut().remove(key).is_some() {
                    self.adm.node.unauthenticated.fetch_sub(1, Relaxed);
                    self.adm.metrics.shard(self.adm.shard).rpc_unauthenticated.fetch_sub(1, Relaxed);
                    self.state.set(TicketState::Open);
                    true
                } else {
                    self.state.set(TicketState::Dropped);
                    false
                }
            }
            TicketState::Open => true,
            TicketState::Dropped => false,
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let TicketState::Pending(_) = self.state.get() {
            self.leave_pending();
        }
        let node = &self.adm.node;
        node.open.fetch_sub(1, Relaxed);
        if self.state.get() == TicketState::Dropped {
            node.closing.fetch_sub(1, Relaxed);
        }
    }
}

/// How an accept error counts for the back-off.
pub fn classify(e: &std::io::Error) -> AcceptFailure {
    use nix::errno::Errno;
    match e.raw_os_error().map(Errno::from_i32) {
        Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM) => AcceptFailure::Exhausted,
        Some(Errno::EINTR | Errno::ECONNABORTED | Errno::EPROTO | Errno::EPERM | Errno::EAGAIN) => {
            AcceptFailure::Transient
        }
        _ => AcceptFailure::Other,
    }
}

/// Paces one accept loop: after a failure it says how long to pause (doubling while the
/// failures last), counts it, shows the pause in `raylet_accept_pause_ms`, and logs at
/// most one line per [`LOG_INTERVAL`]. Usable from any thread.
#[derive(Debug)]
pub struct AcceptPacer {
    listener: Listener,
    backoff: AcceptBackoff,
    log: RefusalLog,
    metrics: Metrics,
    shard: usize,
}

impl AcceptPacer {
    /// A pacer for `listener` of `shard`.
    pub fn new(listener: Listener, metrics: Metrics, shard: usize) -> Self {
        Self { listener, backoff: AcceptBackoff::default(), log: RefusalLog::new(LOG_INTERVAL), metrics, shard }
    }

    /// An accept failed with `e`: the pause before the next.
    pub fn failed(&mut self, e: &std::io::Error) -> Duration {
        let pause = self.backoff.handle_failure(classify(e));
        let m = self.metrics.shard(self.shard);
        m.error(ErrorKind::AcceptFailed);
        m.set_accept_pause(self.listener, pause);
        if let LogAction::Emit { count } = self.log.handle_refusal(Instant::now()) {
            tracing::warn!(
                shard = self.shard,
                listener = self.listener.label(),
                "accept failed {count} time(s) since the last report: {e}; pausing {pause:?}"
            );
        }
        pause
    }

    /// A glommio accept failed with `e`: the pause before the next.
    pub fn failed_glommio(&mut self, e: glommio::GlommioError<()>) -> Duration {
        match e {
            glommio::GlommioError::IoError(e) => self.failed(&e),
            other => self.failed(&std::io::Error::other(other.to_string())),
        }
    }

    /// An accept succeeded.
    pub fn succeeded(&mut self) {
        self.backoff.handle_success();
        let held = self.log.take_held();
        if held > 0 {
            tracing::info!(
                shard = self.shard,
                listener = self.listener.label(),
                "accepting again after {held} more failed accept(s)"
            );
        }
        self.metrics.shard(self.shard).set_accept_pause(self.listener, Duration::ZERO);
    }
}
