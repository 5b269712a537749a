//! The holder's side of object transfer: which objects this node is pushing to whom, which
//! chunk goes out next, and how many bytes are on the wire.
//!
//! Owns: one push per (destination node, object), the round-robin order of pushes with
//! chunks left, the global bytes-in-flight count, and requests for objects that are not
//! local yet. Called by the transfer service that answers `Pull` requests. It must not do
//! IO, read object bytes, compute checksums or read the clock: it hands out
//! [`SendChunk`] descriptors and the IO layer streams those bytes from the mapped buffer.
//!
//! # Call protocol
//!
//! * Inputs: [`PushQueue::handle_push_request`] (object local, size known),
//!   [`PushQueue::handle_object_missing`] (object not local yet),
//!   [`PushQueue::handle_object_local`], [`PushQueue::handle_chunk_sent`],
//!   [`PushQueue::handle_node_dead`], [`PushQueue::handle_timeout`].
//! * After every input: drain [`PushQueue::poll_send`] until `None` (it stops at the
//!   bytes-in-flight cap; each `handle_chunk_sent` may free room), drain
//!   [`PushQueue::poll_action`], re-arm the timer from [`PushQueue::poll_timeout`].
//! * Every [`SendChunk`] must be answered by exactly one `handle_chunk_sent` (`ok = false`
//!   when the send or the local read failed). After `handle_node_dead(to)` the answers for
//!   `to` are optional: its pushes are forgotten at once and late answers get
//!   [`PushError::UnknownChunk`], which the driver may ignore.
//!
//! # Rules
//!
//! * Dedup: a request for a (node, object) whose push is in flight is suppressed
//!   ([`PushStart::Duplicate`]). After a push finished or was dropped, a new request starts a
//!   new push (that is how the puller's retry gets missing chunks).
//! * Cap: a chunk is handed out only if it fits under `max_bytes_in_flight`, except when
//!   nothing is in flight (so a chunk larger than the cap still moves). Chunks are taken
//!   round-robin across pushes, one chunk per push per turn; the head of the rotation is not
//!   overtaken by a smaller chunk behind it.
//! * A failed chunk ends its push (`PushDropped{ChunkFailed}`); chunks of it still in flight
//!   drain first. The puller's retry timer re-requests the object. A request that arrives
//!   while the dropped push drains is started when the drain ends ([`PushStart::AfterDrain`]).
//! * Not local yet: the request waits up to `push_timeout` (`None` = forever, zero = drop at
//!   once); a repeated request refreshes the deadline. `handle_object_local` starts them.
//!
//! # State diagram (one (node, object) push)
//!
//! ```text
//!   handle_object_missing ──▶ Waiting ──object local──▶ Sending
//!                             Waiting ──push_timeout──▶ gone [PushDropped NotLocal]
//!   handle_push_request ────────────────────────────▶ Sending
//!   Sending ──every chunk sent and acked ok──▶ gone [PushDone]
//!   Sending ──a chunk failed──▶ Draining [PushDropped ChunkFailed]
//!   Draining ──last in-flight chunk answered──▶ gone, or Sending if re-requested meanwhile
//!   Waiting/Sending ──node dead──▶ gone [PushDropped NodeDead];  Draining ──node dead──▶ gone
//! ```

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::chunks::{ChunkError, ChunkLayout, DEFAULT_CHUNK_SIZE};
use crate::ids::{NodeId, ObjectId};

/// Tunables of a [`PushQueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushConfig {
    /// Chunk size; must equal the pullers' chunk size.
    pub chunk_size: u64,
    /// Cap on the bytes of chunks handed out and not yet answered (Ray: 2 GiB).
    pub max_bytes_in_flight: u64,
    /// How long a request for a not-yet-local object waits (`None` = forever).
    pub push_timeout: Option<Duration>,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            max_bytes_in_flight: 256 * 1024 * 1024,
            push_timeout: Some(Duration::from_secs(10)),
        }
    }
}

/// One chunk to stream from the local copy of `id` to node `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendChunk {
    /// Destination node.
    pub to: NodeId,
    /// The object.
    pub id: ObjectId,
    /// Chunk index (goes in the header).
    pub index: u32,
    /// Byte offset in the object (data then metadata).
    pub offset: u64,
    /// Bytes to send.
    pub len: u64,
    /// Object size (goes in the header).
    pub total_size: u64,
    /// The chunk size the object is laid out with (goes in the header).
    pub chunk_size: u64,
}

/// Why a push or a waiting request ended without completing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A chunk could not be sent or read.
    ChunkFailed,
    /// The destination node died.
    NodeDead,
    /// The object did not become local within `push_timeout`.
    NotLocal,
    /// The object's size cannot be laid out in chunks.
    InvalidSize,
}

/// A push-level event for the driver (metrics, logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushAction {
    /// Every chunk of `id` reached `to`'s connection successfully.
    PushDone {
        /// Destination node.
        to: NodeId,
        /// The object.
        id: ObjectId,
    },
    /// The push (or waiting request) of `id` to `to` was given up.
    PushDropped {
        /// Destination node.
        to: NodeId,
        /// The object.
        id: ObjectId,
        /// Why.
        reason: DropReason,
    },
}

/// What [`PushQueue::handle_push_request`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushStart {
    /// A new push started.
    Started,
    /// A push of this object to this node is in flight; the request is suppressed.
    Duplicate,
    /// A dropped push is still draining; a new one starts when it has drained.
    AfterDrain,
}

/// An input the push queue refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The configuration cannot work.
    #[error("invalid push config: {0}")]
    InvalidConfig(&'static str),
    /// The object size cannot be laid out in chunks.
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    /// The destination is known dead.
    #[error("node {0} is dead")]
    NodeDead(NodeId),
    /// No such chunk is in flight (late answer after a node death, or a driver bug).
    #[error("chunk {index} of {id} to {to} is not in flight")]
    UnknownChunk {
        /// Destination node.
        to: NodeId,
        /// The object.
        id: ObjectId,
        /// The chunk index.
        index: u32,
    },
}

#[derive(Debug)]
enum PushState {
    Sending,
    /// Dropped; waiting for in-flight chunks. `restart` holds the size of a request that
    /// arrived meanwhile.
    Draining {
        restart: Option<u64>,
    },
}

#[derive(Debug)]
struct Push {
    layout: ChunkLayout,
    next: u32,
    in_flight: Vec<u32>,
    state: PushState,
}

type Key = (NodeId, ObjectId);

/// The holder's push queue. See the module docs for the protocol.
#[derive(Debug)]
pub struct PushQueue {
    config: PushConfig,
    pushes: BTreeMap<Key, Push>,
    /// Pushes in `Sending` with chunks not yet handed out, in round-robin order.
    ready: VecDeque<Key>,
    bytes_in_flight: u64,
    waiting: BTreeMap<(ObjectId, NodeId), Option<Instant>>,
    timers: BTreeSet<(Instant, ObjectId, NodeId)>,
    dead_nodes: HashSet<NodeId>,
    actions: VecDeque<PushAction>,
}

impl PushQueue {
    /// An empty queue.
    pub fn new(config: PushConfig) -> Result<Self, PushError> {
        if config.chunk_size == 0 {
            return Err(PushError::InvalidConfig("chunk_size must be positive"));
        }
        Ok(Self {
            config,
            pushes: BTreeMap::new(),
            ready: VecDeque::new(),
            bytes_in_flight: 0,
            waiting: BTreeMap::new(),
            timers: BTreeSet::new(),
            dead_nodes: HashSet::new(),
            actions: VecDeque::new(),
        })
    }

    /// Lays out objects pushed from now on in chunks of `chunk_size` bytes (the cluster's
    /// configured size, learnt when the node registers); pushes already started keep theirs.
    pub fn set_chunk_size(&mut self, chunk_size: u64) -> Result<(), PushError> {
        if chunk_size == 0 {
            return Err(PushError::InvalidConfig("chunk_size must be positive"));
        }
        self.config.chunk_size = chunk_size;
        Ok(())
    }

    /// `to` asked for `id`, which is local with `total_size` bytes (data + metadata).
    pub fn handle_push_request(&mut self, to: NodeId, id: ObjectId, total_size: u64) -> Result<PushStart, PushError> {
        if self.dead_nodes.contains(&to) {
            return Err(PushError::NodeDead(to));
        }
        let layout = ChunkLayout::new(total_size, self.config.chunk_size)?;
        self.unwait(id, to);
        match self.pushes.get_mut(&(to, id)) {
            Some(Push { state: PushState::Sending, .. }) => Ok(PushStart::Duplicate),
            Some(Push { state: PushState::Draining { restart }, .. }) => {
                *restart = Some(total_size);
                Ok(PushStart::AfterDrain)
            }
            None => {
                self.start(to, id, layout);
                Ok(PushStart::Started)
            }
        }
    }

    /// `to` asked for `id`, which is not local: wait for it up to `push_timeout`.
    pub fn handle_object_missing(&mut self, now: Instant, to: NodeId, id: ObjectId) {
        if self.dead_nodes.contains(&to) {
            return;
        }
        match self.pushes.get_mut(&(to, id)) {
            Some(Push { state: PushState::Sending, .. }) => return,
            // The copy went away while the dropped push drains: serve the request from
            // the waiting list instead of restarting from a copy that is gone.
            Some(Push { state: PushState::Draining { restart }, .. }) => *restart = None,
            None => {}
        }
        if self.config.push_timeout == Some(Duration::ZERO) {
            self.unwait(id, to);
            let reason = DropReason::NotLocal;
            self.actions.push_back(PushAction::PushDropped { to, id, reason });
            return;
        }
        self.unwait(id, to);
        let deadline = self.config.push_timeout.and_then(|d| now.checked_add(d));
        if let Some(t) = deadline {
            self.timers.insert((t, id, to));
        }
        self.waiting.insert((id, to), deadline);
    }

    /// `id` became local with `total_size` bytes: start the pushes waiting for it.
    pub fn handle_object_local(&mut self, id: ObjectId, total_size: u64) -> Result<(), PushError> {
        let nodes: Vec<NodeId> =
            self.waiting.range((id, NodeId::NIL)..).take_while(|((o, _), _)| *o == id).map(|((_, n), _)| *n).collect();
        let layout = ChunkLayout::new(total_size, self.config.chunk_size);
        for to in nodes {
            self.unwait(id, to);
            if layout.is_err() {
                let reason = DropReason::InvalidSize;
                self.actions.push_back(PushAction::PushDropped { to, id, reason });
            } else {
                self.handle_push_request(to, id, total_size)?;
            }
        }
        layout.map(|_| ()).map_err(PushError::from)
    }

    /// The send of chunk `index` of `id` to `to` finished; `ok` says whether it succeeded.
    pub fn handle_chunk_sent(&mut self, to: NodeId, id: ObjectId, index: u32, ok: bool) -> Result<(), PushError> {
        let key = (to, id);
        let unknown = PushError::UnknownChunk { to, id, index };
        let Some(push) = self.pushes.get_mut(&key) else {
            return Err(unknown);
        };
        let Some(pos) = push.in_flight.iter().position(|i| *i == index) else {
            return Err(unknown);
        };
        push.in_flight.swap_remove(pos);
        let (_, len) = push.layout.range(index)?;
        self.bytes_in_flight -= len;
        if !ok && matches!(push.state, PushState::Sending) {
            push.state = PushState::Draining { restart: None };
            self.ready.retain(|k| *k != key);
            let reason = DropReason::ChunkFailed;
            self.actions.push_back(PushAction::PushDropped { to, id, reason });
        }
        if !push.in_flight.is_empty() {
            return Ok(());
        }
        match push.state {
            PushState::Sending if push.next == push.layout.num_chunks() => {
                self.pushes.remove(&key);
                self.actions.push_back(PushAction::PushDone { to, id });
            }
            PushState::Sending => {}
            PushState::Draining { restart } => {
                self.pushes.remove(&key);
                if let Some(size) = restart {
                    self.handle_push_request(to, id, size)?;
                }
            }
        }
        Ok(())
    }

    /// `node` died: forget every push and waiting request for it.
    pub fn handle_node_dead(&mut self, node: NodeId) {
        self.dead_nodes.insert(node);
        let keys: Vec<Key> = self.pushes.keys().filter(|(to, _)| *to == node).copied().collect();
        for key in keys {
            let Some(push) = self.pushes.remove(&key) else {
                continue;
            };
            for &i in &push.in_flight {
                if let Ok((_, len)) = push.layout.range(i) {
                    self.bytes_in_flight -= len;
                }
            }
            if matches!(push.state, PushState::Sending) {
                let (to, id) = key;
                let reason = DropReason::NodeDead;
                self.actions.push_back(PushAction::PushDropped { to, id, reason });
            }
        }
        self.ready.retain(|(to, _)| *to != node);
        let waiting: Vec<ObjectId> = self.waiting.keys().filter(|(_, n)| *n == node).map(|(id, _)| *id).collect();
        for id in waiting {
            self.unwait(id, node);
            let reason = DropReason::NodeDead;
            self.actions.push_back(PushAction::PushDropped { to: node, id, reason });
        }
    }

    /// Drops waiting requests whose `push_timeout` has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(t, id, to)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            self.waiting.remove(&(id, to));
            let reason = DropReason::NotLocal;
            self.actions.push_back(PushAction::PushDropped { to, id, reason });
        }
    }

    /// The next chunk to send, or `None` if nothing is ready or the cap is reached.
    pub fn poll_send(&mut self) -> Option<SendChunk> {
        while let Some(&key) = self.ready.front() {
            let Some(push) = self.pushes.get_mut(&key) else {
                debug_assert!(false, "ready holds only live pushes");
                self.ready.pop_front();
                continue;
            };
            let index = push.next;
            let Ok((offset, len)) = push.layout.range(index) else {
                debug_assert!(false, "ready holds only pushes with chunks left");
                self.ready.pop_front();
                continue;
            };
            let cap = self.config.max_bytes_in_flight;
            if self.bytes_in_flight > 0 && self.bytes_in_flight.saturating_add(len) > cap {
                return None;
            }
            self.ready.pop_front();
            push.next += 1;
            push.in_flight.push(index);
            self.bytes_in_flight += len;
            if push.next < push.layout.num_chunks() {
                self.ready.push_back(key);
            }
            let (to, id) = key;
            let (total_size, chunk_size) = (push.layout.total_size(), push.layout.chunk_size());
            return Some(SendChunk { to, id, index, offset, len, total_size, chunk_size });
        }
        None
    }

    /// The next push-level event.
    pub fn poll_action(&mut self) -> Option<PushAction> {
        self.actions.pop_front()
    }

    /// The earliest `push_timeout` deadline of a waiting request.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _, _)| *t)
    }

    /// Bytes handed out by [`Self::poll_send`] and not yet answered.
    pub fn bytes_in_flight(&self) -> u64 {
        self.bytes_in_flight
    }

    /// Whether a push of `id` to `to` is live (sending or draining).
    pub fn is_pushing(&self, to: NodeId, id: ObjectId) -> bool {
        self.pushes.contains_key(&(to, id))
    }

    /// Number of live pushes.
    pub fn num_pushes(&self) -> usize {
        self.pushes.len()
    }

    /// Number of requests waiting for their object to become local.
    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    fn start(&mut self, to: NodeId, id: ObjectId, layout: ChunkLayout) {
        let push = Push { layout, next: 0, in_flight: Vec::new(), state: PushState::Sending };
        self.pushes.insert((to, id), push);
        self.ready.push_back((to, id));
    }

    fn unwait(&mut self, id: ObjectId, to: NodeId) {
        if let Some(Some(t)) = self.waiting.remove(&(id, to)) {
            self.timers.remove(&(t, id, to));
        }
    }
}

#[cfg(test)]
mod tests;
