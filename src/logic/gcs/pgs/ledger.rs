//! The placement-group table's own changes to node availability that the raylets'
//! reports may not show yet, with a running sum per node so applying them to a view
//! costs one addition per node.
//!
//! Counted conservatively: a reservation counts from the moment it is sent; a release
//! only once the raylet has confirmed it. A report requested after a change was applied
//! shows it, so such changes are dropped when that report arrives.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::ids::NodeId;
use crate::logic::lease::policy::NodeView;
use crate::logic::resources::ResourceSet;

#[derive(Debug, Clone)]
struct Op {
    node: NodeId,
    /// Added to the reported availability (negative for reservations).
    delta: ResourceSet,
    /// A release (cancel) rather than a reservation.
    release: bool,
    /// When the raylet is known to have applied it; `None` while in flight.
    applied: Option<Instant>,
}

impl Op {
    fn counted(&self) -> bool {
        self.applied.is_some() || !self.release
    }
}

/// Unreported changes by id, and their counted sum per node.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    ops: BTreeMap<u64, Op>,
    sums: BTreeMap<NodeId, ResourceSet>,
    next: u64,
}

impl Ledger {
    fn count(&mut self, op: &Op, sign: bool) {
        let sum = self.sums.entry(op.node).or_default();
        if sign {
            sum.add(&op.delta);
        } else {
            sum.sub(&op.delta);
        }
        if sum.is_empty() {
            self.sums.remove(&op.node);
        }
    }

    /// Records a change sent to `node`; returns its id.
    pub(super) fn add(&mut self, node: NodeId, delta: ResourceSet, release: bool) -> u64 {
        self.next += 1;
        let op = Op { node, delta, release, applied: None };
        if op.counted() {
            self.count(&op, true);
        }
        self.ops.insert(self.next, op);
        self.next
    }

    /// The raylet confirmed change `id` before `now`.
    pub(super) fn applied(&mut self, id: u64, now: Instant) {
        let Some(op) = self.ops.get_mut(&id) else { return };
        let was = op.counted();
        op.applied = Some(now);
        if !was {
            let op = op.clone();
            self.count(&op, true);
        }
    }

    /// Change `id` did not happen.
    pub(super) fn remove(&mut self, id: u64) {
        if let Some(op) = self.ops.remove(&id) {
            if op.counted() {
                self.count(&op, false);
            }
        }
    }

    /// A report of `node` requested at `requested_at` shows what was applied before it.
    pub(super) fn report(&mut self, node: NodeId, requested_at: Instant) {
        let shown: Vec<u64> = self
            .ops
            .iter()
            .filter(|(_, op)| op.node == node && op.applied.is_some_and(|t| t < requested_at))
            .map(|(id, _)| *id)
            .collect();
        for id in shown {
            self.remove(id);
        }
    }

    /// `node` is gone: nothing about it matters any more.
    pub(super) fn node_dead(&mut self, node: NodeId) {
        self.ops.retain(|_, op| op.node != node);
        self.sums.remove(&node);
    }

    /// Adds the counted changes to `view`'s availability.
    pub(super) fn apply_to(&self, view: &mut BTreeMap<NodeId, NodeView>) {
        for (node, sum) in &self.sums {
            if let Some(n) = view.get_mut(node) {
                n.available.add(sum);
            }
        }
    }
}
