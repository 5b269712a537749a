//! The GCS node table: membership, heartbeats and failure detection. Pure: time comes in
//! as `now`, and the node description is an opaque `I` the service stores for listings.
//!
//! ```text
//!   register ──► Alive ──(unregister | no heartbeat for `timeout`)──► Dead (kept, capped)
//!                  ▲ heartbeat resets the deadline
//! ```
//!
//! Calling protocol: `handle_register` / `handle_unregister` / `handle_heartbeat` for
//! inputs, `handle_timeout(now)` when `poll_timeout()` passes (returns the nodes it marked
//! dead). Every change bumps `version()`, which long-polling readers wait on.

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
    /// Last heartbeat (or registration).
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

/// The membership table.
#[derive(Debug)]
pub struct NodeTable<I> {
    nodes: BTreeMap<NodeId, NodeEntry<I>>,
    dead_order: VecDeque<NodeId>,
    max_dead: usize,
    timeout: Duration,
    version: u64,
}

impl<I: Clone> NodeTable<I> {
    /// A table that declares a node dead after `timeout` without heartbeats and keeps at
    /// most `max_dead` dead entries.
    pub fn new(timeout: Duration, max_dead: usize) -> Self {
        Self { nodes: BTreeMap::new(), dead_order: VecDeque::new(), max_dead, timeout, version: 1 }
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

    /// Marks every node silent for longer than the timeout dead; returns them.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<NodeId> {
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
        expired
    }

    /// When the next node would time out.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.nodes.values().filter(|e| e.state == NodeState::Alive).map(|e| e.last_heartbeat + self.timeout).min()
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
mod tests {
    use super::*;

    fn id(b: u8) -> NodeId {
        NodeId([b; 28])
    }

    #[test]
    fn silent_node_dies_after_timeout_and_others_stay() {
        let t0 = Instant::now();
        let mut t = NodeTable::new(Duration::from_secs(5), 10);
        t.handle_register(t0, id(1), ()).unwrap();
        t.handle_register(t0, id(2), ()).unwrap();
        assert_eq!(t.poll_timeout(), Some(t0 + Duration::from_secs(5)));
        assert_eq!(t.handle_heartbeat(t0 + Duration::from_secs(4), id(2)), Heartbeat::Alive);
        assert_eq!(t.handle_timeout(t0 + Duration::from_secs(5)), vec![id(1)]);
        assert_eq!(t.get(&id(1)).unwrap().state, NodeState::Dead);
        assert_eq!(t.get(&id(2)).unwrap().state, NodeState::Alive);
        assert_eq!(t.poll_timeout(), Some(t0 + Duration::from_secs(9)));
    }

    #[test]
    fn dead_node_heartbeat_says_not_alive_and_cannot_reregister() {
        let t0 = Instant::now();
        let mut t = NodeTable::new(Duration::from_secs(1), 10);
        t.handle_register(t0, id(1), ()).unwrap();
        assert!(t.handle_unregister(id(1), "bye"));
        assert!(!t.handle_unregister(id(1), "again"));
        assert_eq!(t.handle_heartbeat(t0, id(1)), Heartbeat::NotAlive);
        assert_eq!(t.handle_heartbeat(t0, id(9)), Heartbeat::NotAlive);
        assert_eq!(t.handle_register(t0, id(1), ()), Err(RegisterError::AlreadyDead(id(1))));
    }

    #[test]
    fn every_change_bumps_the_version() {
        let t0 = Instant::now();
        let mut t = NodeTable::new(Duration::from_secs(1), 10);
        let v0 = t.version();
        t.handle_register(t0, id(1), ()).unwrap();
        let v1 = t.version();
        assert!(v1 > v0);
        t.handle_heartbeat(t0, id(1));
        assert_eq!(t.version(), v1, "heartbeats are not membership changes");
        t.handle_timeout(t0 + Duration::from_secs(2));
        assert!(t.version() > v1);
    }

    #[test]
    fn dead_entries_are_capped_oldest_first() {
        let t0 = Instant::now();
        let mut t = NodeTable::new(Duration::from_secs(1), 2);
        for b in 1..=3 {
            t.handle_register(t0, id(b), ()).unwrap();
            t.handle_unregister(id(b), "x");
        }
        assert!(t.get(&id(1)).is_none());
        assert!(t.get(&id(2)).is_some() && t.get(&id(3)).is_some());
    }
}
