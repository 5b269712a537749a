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
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn id(b: u8) -> NodeId {
        NodeId([b; 28])
    }

    /// A 5 s timeout with a 1 s heartbeat period (the largest gap that is not a pause).
    fn table(max_dead: usize) -> NodeTable<()> {
        NodeTable::new(5 * SEC, SEC, max_dead)
    }

    /// Runs the detector every half period from `from` to `to` (inclusive), as the service
    /// does; returns every node it declared dead.
    fn watch(t: &mut NodeTable<()>, from: Instant, to: Instant) -> Vec<NodeId> {
        let mut dead = Vec::new();
        let mut now = from;
        while now <= to {
            match t.handle_timeout(now) {
                Check::Expired(ids) => dead.extend(ids),
                Check::Paused(gap) => panic!("a detector run every half period is never paused ({gap:?})"),
            }
            now += SEC / 2;
        }
        dead
    }

    #[test]
    fn silent_node_dies_after_timeout_and_others_stay() {
        let t0 = Instant::now();
        let mut t = table(10);
        t.handle_register(t0, id(1), ()).unwrap();
        t.handle_register(t0, id(2), ()).unwrap();
        assert_eq!(t.poll_timeout(), Some(t0 + 5 * SEC), "before any check: the first deadline");
        assert_eq!(watch(&mut t, t0, t0 + 4 * SEC), vec![]);
        assert_eq!(t.handle_heartbeat(t0 + 4 * SEC, id(2)), Heartbeat::Alive);
        assert_eq!(watch(&mut t, t0 + 4 * SEC + SEC / 2, t0 + 5 * SEC), vec![id(1)]);
        assert_eq!(t.get(&id(1)).unwrap().state, NodeState::Dead);
        assert_eq!(t.get(&id(2)).unwrap().state, NodeState::Alive);
        assert_eq!(watch(&mut t, t0 + 5 * SEC + SEC / 2, t0 + 9 * SEC), vec![id(2)]);
    }

    #[test]
    fn the_next_check_is_due_within_half_a_period_of_the_last() {
        let t0 = Instant::now();
        let mut t = table(10);
        assert_eq!(t.poll_timeout(), None, "no node and no check yet: nothing is due");
        assert_eq!(t.handle_timeout(t0), Check::Expired(vec![]));
        assert_eq!(t.poll_timeout(), Some(t0 + SEC / 2), "with no node the detector still ticks");
        t.handle_register(t0, id(1), ()).unwrap();
        assert_eq!(t.poll_timeout(), Some(t0 + SEC / 2), "a deadline 5 s away does not delay the tick");
        watch(&mut t, t0, t0 + 4 * SEC + SEC / 2);
        t.handle_timeout(t0 + 4 * SEC + SEC * 8 / 10);
        assert_eq!(t.poll_timeout(), Some(t0 + 5 * SEC), "a node deadline sooner than the tick comes first");
    }

    #[test]
    fn a_gap_in_the_detector_restarts_every_deadline_and_kills_no_one() {
        let t0 = Instant::now();
        let mut t = table(10);
        t.handle_register(t0, id(1), ()).unwrap();
        t.handle_register(t0, id(2), ()).unwrap();
        watch(&mut t, t0, t0 + 2 * SEC);
        // The GCS stops for 12 s (SIGSTOP): both nodes kept heartbeating into its sockets.
        let resumed = t0 + 14 * SEC;
        let v = t.version();
        assert_eq!(t.handle_timeout(resumed), Check::Paused(12 * SEC));
        assert_eq!(t.version(), v, "a pause changes no membership");
        assert!(t.alive().count() == 2, "no one is declared dead for time the GCS did not watch");
        assert_eq!(t.get(&id(1)).unwrap().last_heartbeat, resumed, "the deadline restarts from now");
        // Node 2's queued heartbeats arrive; node 1 stays silent and dies a full timeout
        // after the resume, not before.
        assert_eq!(t.handle_heartbeat(resumed, id(2)), Heartbeat::Alive);
        assert_eq!(watch(&mut t, resumed + SEC / 2, resumed + 4 * SEC + SEC / 2), vec![]);
        t.handle_heartbeat(resumed + 4 * SEC, id(2));
        assert_eq!(watch(&mut t, resumed + 5 * SEC, resumed + 5 * SEC), vec![id(1)]);
    }

    #[test]
    fn a_gap_of_exactly_one_period_is_not_a_pause() {
        let t0 = Instant::now();
        let mut t = table(10);
        t.handle_register(t0, id(1), ()).unwrap();
        t.handle_timeout(t0);
        assert_eq!(t.handle_timeout(t0 + SEC), Check::Expired(vec![]));
        assert_eq!(
            t.handle_timeout(t0 + 2 * SEC + Duration::from_millis(1)),
            Check::Paused(SEC + Duration::from_millis(1))
        );
        // Checks a period apart up to the deadline: the silent node dies on time.
        let resumed = t0 + 2 * SEC + Duration::from_millis(1);
        let mut now = resumed;
        while now < resumed + 5 * SEC {
            now += SEC;
            assert_eq!(t.alive().count(), 1);
            t.handle_timeout(now);
        }
        assert_eq!(t.alive().count(), 0);
    }

    #[test]
    fn a_node_dead_before_a_pause_stays_dead_and_is_refused() {
        let t0 = Instant::now();
        let mut t = table(10);
        t.handle_register(t0, id(1), ()).unwrap();
        assert_eq!(watch(&mut t, t0, t0 + 5 * SEC), vec![id(1)]);
        assert!(matches!(t.handle_timeout(t0 + 20 * SEC), Check::Paused(_)));
        assert_eq!(t.get(&id(1)).unwrap().state, NodeState::Dead, "a pause revives no one");
        assert_eq!(t.handle_heartbeat(t0 + 20 * SEC, id(1)), Heartbeat::NotAlive);
        assert_eq!(t.handle_register(t0 + 20 * SEC, id(1), ()), Err(RegisterError::AlreadyDead(id(1))));
    }

    #[test]
    fn dead_node_heartbeat_says_not_alive_and_cannot_reregister() {
        let t0 = Instant::now();
        let mut t = table(10);
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
        let mut t = table(10);
        let v0 = t.version();
        t.handle_register(t0, id(1), ()).unwrap();
        let v1 = t.version();
        assert!(v1 > v0);
        t.handle_heartbeat(t0, id(1));
        assert_eq!(t.version(), v1, "heartbeats are not membership changes");
        watch(&mut t, t0, t0 + 5 * SEC);
        assert!(t.version() > v1);
    }

    #[test]
    fn dead_entries_are_capped_oldest_first() {
        let t0 = Instant::now();
        let mut t = table(2);
        for b in 1..=3 {
            t.handle_register(t0, id(b), ()).unwrap();
            t.handle_unregister(id(b), "x");
        }
        assert!(t.get(&id(1)).is_none());
        assert!(t.get(&id(2)).is_some() && t.get(&id(3)).is_some());
    }
}
