//! The GCS node table: membership, heartbeats and failure detection. Pure: time comes in
//! as `now`, and the node description is an opaque `I` the service stores for listings.
//!
//! ```text
//!   register ──► Alive ──(unregister | no heartbeat for `timeout`)──► Dead (kept, capped)
//!                  ▲ heartbeat resets the deadline;
//!                  ▲ a gap in the detector's own checks restarts every deadline
//! ```
//!
//! Calling protocol: `handle_register` / `handle_unregister` / `handle_heartbeat` for
//! inputs, `handle_timeout(now)` at least every `max_gap` and whenever `poll_timeout()`
//! passes. Every change bumps `version()`, which long-polling readers wait on.
//!
//! # Only time it watched
//!
//! The detector counts silence only while it was itself running. When two calls of
//! `handle_timeout` are more than `max_gap` (one heartbeat period) apart, the GCS was not
//! running in between (the process was stopped, swapped out or its shard stalled): the
//! heartbeats of that time may be sitting unread in sockets, so nobody's silence is known.
//! That call declares no one dead and restarts every alive node's deadline from `now`.
//! Ray's E1 detector has the same property by construction: its countdown is decremented
//! once per detector tick, so ticks that never ran never count.

use crate::ids::NodeId;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Liveness of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Registered and heartbeating.
    Alive,
    /// Unregistered or timed out; never comes back under the same id.
    Dead,
}

/// One node as the table keeps it.
#[derive(Debug, Clone)]
pub struct NodeEntry<I> {
    /// Caller-defined description (addresses, resources...).
    pub info: I,
    /// Liveness.
    pub state: NodeState,
    /// Last heartbeat (or registration, or the end of a detector gap): the deadline runs
    /// from here.
    pub last_heartbeat: Instant,
    /// Why it died, when it did.
    pub death_reason: Option<String>,
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// The id belongs to a node already marked dead.
    #[error("node {0} was marked dead and cannot re-register under the same id")]
    AlreadyDead(NodeId),
}

/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// The node is alive; its deadline moved.
    Alive,
    /// The node is unknown or dead: it must stop.
    NotAlive,
}

/// What one detector check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// These nodes were silent for the whole timeout and are now dead (often none).
    Expired(Vec<NodeId>),
    /// The previous check was this long ago, more than `max_gap`: the detector was not
    /// running, so no one was declared dead and every deadline restarted from now.
    Paused(Duration),
}

/// The membership table.
#[derive(Debug)]
pub struct NodeTable<I> {
    nodes: BTreeMap<NodeId, NodeEntry<I>>,
    dead_order: VecDeque<NodeId>,
    max_dead: usize,
    timeout: Duration,
    max_gap: Duration,
    last_check: Option<Instant>,
    version: u64,
}

impl<I: Clone> NodeTable<I> {
    /// A table that declares a node dead after `timeout` without heartbeats, counting only
    /// time in which its checks were at most `max_gap` apart, and keeps at most `max_dead`
    /// dead entries.
    pub fn new(timeout: Duration, max_gap: Duration, max_dead: usize) -> Self {
        Self {
            nodes: BTreeMap::new(),
            dead_order: VecDeque::new(),
            max_dead,
            timeout,
            max_gap,
            last_check: None,
            version: 1,
        }
    }

    /// Monotonic change counter.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Adds or refreshes an alive node.
    pub fn handle_register(&mut self, now: Instant, id: NodeId, info: I) -> Result<(), RegisterError> {
        if let Some(e) = self.nodes.get(&id) {
            if e.state == NodeState::Dead {
                return Err(RegisterError::AlreadyDead(id));
            }
        }
        self.nodes.insert(id, NodeEntry { info, state: NodeState::Alive, last_heartbeat: now, death_reason: None });
        self.version += 1;
        Ok(())
    }

    /// Marks a node dead on its own request. Unknown or already dead: no change.
    pub fn handle_unregister(&mut self, id: NodeId, reason: &str) -> bool {
        self.mark_dead(id, reason)
    }

    /// Records a heartbeat.
    pub fn handle_heartbeat(&mut self, now: Instant, id: NodeId) -> Heartbeat {
        match self.nodes.get_mut(&id) {
            Some(e) if e.state == NodeState::Alive => {
                e.last_heartbeat = now;
                Heartbeat::Alive
            }
            _ => Heartbeat::NotAlive,
        }
    }

    /// The detector's check: marks every node silent for the whole timeout dead, unless
    /// the previous check was more than `max_gap` ago (see the module docs).
    pub fn handle_timeout(&mut self, now: Instant) -> Check {
        let gap = self.last_check.map(|t| now.saturating_duration_since(t));
        self.last_check = Some(now);
        if let Some(gap) = gap.filter(|g| *g > self.max_gap) {
            for e in self.nodes.values_mut().filter(|e| e.state == NodeState::Alive) {
                e.last_heartbeat = e.last_heartbeat.max(now);
            }
            return Check::Paused(gap);
        }
        let expired: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, e)| {
                e.state == NodeState::Alive && now.saturating_duration_since(e.last_heartbeat) >= self.timeout
            })
            .map(|(id, _)| *id)
            .collect();
        let reason = format!("no heartbeat for {:?}", self.timeout);
        for id in &expired {
            self.mark_dead(*id, &reason);
        }
        Check::Expired(expired)
    }

    /// When the next check is due: the next node deadline, and never later than `max_gap`
    /// after the previous check, so that a gap means the detector could not run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let deadline =
            self.nodes.values().filter(|e| e.state == NodeState::Alive).map(|e| e.last_heartbeat + self.timeout).min();
        let watch = self.last_check.map(|t| t + self.max_gap / 2);
        deadline.into_iter().chain(watch).min()
    }

    fn mark_dead(&mut self, id: NodeId, reason: &str) -> bool {
        let Some(e) = self.nodes.get_mut(&id) else { return false };
        if e.state == NodeState::Dead {
            return false;
        }
        e.state = NodeState::Dead;
        e.death_reason = Some(reason.to_string());
        self.dead_order.push_back(id);
        while self.dead_order.len() > self.max_dead {
            if let Some(old) = self.dead_order.pop_front() {
                self.nodes.remove(&old);
            }
        }
        self.version += 1;
        true
    }

    /// Updates the description of a node (e.g. new resources) without changing liveness.
    pub fn update_info(&mut self, id: NodeId, f: impl FnOnce(&mut I)) -> bool {
        match self.nodes.get_mut(&id) {
            Some(e) => {
                f(&mut e.info);
                self.version += 1;
                true
            }
            None => false,
        }
    }

    /// One node.
    pub fn get(&self, id: &NodeId) -> Option<&NodeEntry<I>> {
        self.nodes.get(id)
    }

    /// Every node, alive and dead, by id.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, &NodeEntry<I>)> {
        self.nodes.iter()
    }

    /// Ids of alive nodes.
    pub fn alive(&self) -> impl Iterator<Item = &NodeId> {
        self.nodes.iter().filter(|(_, e)| e.state == NodeState::Alive).map(|(id, _)| id)
    }
}

#[cfg(test)]
mod tests;
