//! The GCS's placement-group table and its two-phase commit (Ray's
//! `GcsPlacementGroupManager` + `GcsPlacementGroupScheduler`).
//!
//! Owns: every group (spec, state, where each bundle is committed), the attempt in flight
//! per group, the retry schedule, and a ledger of this table's own reservations that the
//! raylets' resource reports may not show yet (so back-to-back creates and removes see
//! each other without waiting for the next report). Head node, shard 0.
//!
//! Called by: `services::sched::gcs_pg`, which performs the RPCs, feeds their results
//! back, and passes the reported cluster view into [`PgTable::handle_timeout`].
//!
//! Must not: do IO or read the clock.
//!
//! # Call protocol
//! 1. Feed one input: `handle_create`, `handle_remove`, an RPC result
//!    (`handle_prepare_reply`, `handle_commit_reply`, `handle_cancel_reply`),
//!    `handle_node_dead`, `handle_nodes_changed`, `handle_report`, or
//!    [`PgTable::handle_timeout`] with the current view when [`PgTable::poll_timeout`]
//!    passes (a create is due at once: call `handle_timeout` right after it).
//! 2. Drain [`PgTable::poll_action`] until `None`.
//!
//! # States of one group
//! ```text
//!  create ──▶ PENDING ──place ok: Prepare on each node──▶ (preparing)
//!               ▲  │ place failed: retry after backoff        │ all ok: Commit each node
//!               │  ▼                                          ▼
//!               └─ (wait) ◀── a prepare failed: Cancel ── (committing)
//!                              the prepared ones               │ all ok
//!                                                              ▼
//!      RESCHEDULING ◀───── node with bundles died ─────────  CREATED
//!        (missing bundles placed again as above; placed ones stay)
//!  any state ──remove──▶ REMOVED (Cancel every placed or in-flight bundle; late
//!                                  prepare successes are cancelled when they arrive)
//! ```
//! Backoff: 100 ms, ×1.5 per failed attempt, at most 1 s; reset when the group is created.
//! Rescheduling keeps the strategy: STRICT_SPREAD avoids nodes holding the group's other
//! bundles, STRICT_PACK goes to the node holding them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::ids::{NodeId, PlacementGroupId};
use crate::logic::lease::policy::NodeView;
use crate::logic::pg_placement::{place_bundles, PgStrategy, PlacementError};
use crate::logic::resources::ResourceSet;

mod ledger;
#[cfg(test)]
mod tests;

use ledger::Ledger;

/// What a client asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct PgSpec {
    /// The group.
    pub id: PlacementGroupId,
    /// Its name (informational).
    pub name: String,
    /// How bundles spread over nodes.
    pub strategy: PgStrategy,
    /// Each bundle's resources; bundle `i` has index `i`.
    pub bundles: Vec<ResourceSet>,
}

/// A group's state as clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgState {
    /// Not placed yet.
    Pending,
    /// Every bundle is committed.
    Created,
    /// Removed; kept for a while so `get` can say so.
    Removed,
    /// Was created, lost bundles with a node, and is being placed again.
    Rescheduling,
}

/// A group as `get` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct PgInfo {
    /// The spec.
    pub spec: PgSpec,
    /// Its state.
    pub state: PgState,
    /// Where each bundle is committed.
    pub nodes: Vec<Option<NodeId>>,
    /// Why it is not created yet (empty otherwise).
    pub message: String,
}

/// A create was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PgError {
    /// No bundles.
    #[error("a placement group needs at least one bundle")]
    NoBundles,
    /// A bundle asks for nothing.
    #[error("bundle {0} has no resources")]
    EmptyBundle(usize),
    /// The id is taken by a different group.
    #[error("placement group {0} already exists with another spec")]
    Conflict(PlacementGroupId),
    /// More bundles than a group may have.
    #[error("a placement group of {got} bundles is over the limit of {max} (gcs_max_bundles_per_placement_group)")]
    TooManyBundles {
        /// Bundles asked for.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// The table holds as many groups (not removed) as it may.
    #[error("{0} placement groups exist, the limit (gcs_max_placement_groups); remove some first")]
    TooManyGroups(usize),
}

/// What the table asks its driver to do. Every RPC's result must be fed back.
#[derive(Debug, Clone, PartialEq)]
pub enum PgAction {
    /// `PrepareBundleResources` on `node`; reply with `handle_prepare_reply`.
    Prepare {
        /// The group.
        pg: PlacementGroupId,
        /// The attempt.
        attempt: u64,
        /// The raylet.
        node: NodeId,
        /// `(index, resources)` of the bundles for this node.
        bundles: Vec<(i64, ResourceSet)>,
    },
    /// `CommitBundleResources` on `node`; reply with `handle_commit_reply`.
    Commit {
        /// The group.
        pg: PlacementGroupId,
        /// The attempt.
        attempt: u64,
        /// The raylet.
        node: NodeId,
        /// `(index, resources)`.
        bundles: Vec<(i64, ResourceSet)>,
    },
    /// `CancelResourceReserve` of one bundle on `node`; reply with `handle_cancel_reply`.
    CancelReserve {
        /// Identifies this cancel in the reply.
        op: u64,
        /// The group.
        pg: PlacementGroupId,
        /// The raylet.
        node: NodeId,
        /// The bundle.
        bundle: (i64, ResourceSet),
    },
    /// The group is created: wake its waiters.
    Ready {
        /// The group.
        pg: PlacementGroupId,
    },
    /// The group was removed: fail its waiters.
    Removed {
        /// The group.
        pg: PlacementGroupId,
    },
}

/// Tunables (Ray's `gcs_create_placement_group_retry_*`).
#[derive(Debug, Clone, PartialEq)]
pub struct PgConfig {
    /// First retry delay.
    pub retry_min: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Growth per failed attempt.
    pub retry_multiplier: f64,
    /// Removed groups remembered for `get`.
    pub removed_history: usize,
    /// Groups not removed, at most.
    pub max_groups: usize,
    /// Bundles of one group, at most.
    pub max_bundles: usize,
}

impl Default for PgConfig {
    fn default() -> Self {
        Self {
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(1),
            retry_multiplier: 1.5,
            removed_history: 1000,
            max_groups: 10_000,
            max_bundles: 1_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Preparing,
    Committing,
}

#[derive(Debug, Clone)]
struct Attempt {
    id: u64,
    phase: Phase,
    /// Bundle indexes per node.
    nodes: BTreeMap<NodeId, Vec<usize>>,
    outstanding: BTreeSet<NodeId>,
    prepared: BTreeSet<NodeId>,
    failed: bool,
    /// The reservation op of each node's prepare.
    ops: BTreeMap<NodeId, u64>,
}

#[derive(Debug, Clone)]
struct Group {
    spec: PgSpec,
    state: PgState,
    placed: Vec<Option<NodeId>>,
    attempt: Option<Attempt>,
    backoff: Duration,
    next_try: Option<Instant>,
    message: String,
}

/// The placement-group table. See the module docs.
#[derive(Debug)]
pub struct PgTable {
    cfg: PgConfig,
    groups: BTreeMap<PlacementGroupId, Group>,
    removed: VecDeque<PlacementGroupId>,
    next_attempt: u64,
    /// Groups waiting for a placement attempt, by when it is due.
    due: BTreeSet<(Instant, PlacementGroupId)>,
    ledger: Ledger,
    /// Reservations of attempts abandoned by a remove while their prepare was in flight.
    orphans: BTreeMap<(PlacementGroupId, u64, NodeId), u64>,
    actions: VecDeque<PgAction>,
}

fn negate(s: &ResourceSet) -> ResourceSet {
    let mut out = ResourceSet::new();
    out.sub(s);
    out
}

impl PgTable {
    /// An empty table.
    pub fn new(cfg: PgConfig) -> Self {
        Self {
            cfg,
            groups: BTreeMap::new(),
            removed: VecDeque::new(),
            next_attempt: 1,
            due: BTreeSet::new(),
            ledger: Ledger::default(),
            orphans: BTreeMap::new(),
            actions: VecDeque::new(),
        }
    }

    /// The next action; drain until `None` after every input.
    pub fn poll_action(&mut self) -> Option<PgAction> {
        self.actions.pop_front()
    }

    /// Its tunables.
    pub fn config(&self) -> &PgConfig {
        &self.cfg
    }

    /// When [`Self::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.due.first().map(|(at, _)| *at)
    }

    /// A group to create (due at once). A repeat of the same spec is accepted again.
    pub fn handle_create(&mut self, now: Instant, spec: PgSpec) -> Result<(), PgError> {
        if spec.bundles.is_empty() {
            return Err(PgError::NoBundles);
        }
        if let Some(i) = spec.bundles.iter().position(ResourceSet::is_empty) {
            return Err(PgError::EmptyBundle(i));
        }
        if spec.bundles.len() > self.cfg.max_bundles {
            return Err(PgError::TooManyBundles { got: spec.bundles.len(), max: self.cfg.max_bundles });
        }
        if let Some(g) = self.groups.get(&spec.id) {
            return if g.spec == spec { Ok(()) } else { Err(PgError::Conflict(spec.id)) };
        }
        // Removed groups are the ones in `removed` (trimmed together with `groups`).
        if self.groups.len() - self.removed.len() >= self.cfg.max_groups {
            return Err(PgError::TooManyGroups(self.cfg.max_groups));
        }
        let n = spec.bundles.len();
        let mut group = Group {
            spec,
            state: PgState::Pending,
            placed: vec![None; n],
            attempt: None,
            backoff: self.cfg.retry_min,
            next_try: None,
            message: "waiting to be scheduled".into(),
        };
        let id = group.spec.id;
        set_next_try(&mut self.due, id, &mut group, Some(now));
        self.groups.insert(id, group);
        Ok(())
    }

    /// Removes a group: cancels every bundle placed or in flight. Returns whether it was
    /// known and not removed already.
    pub fn handle_remove(&mut self, pg: PlacementGroupId) -> bool {
        let Some(g) = self.groups.get_mut(&pg) else { return false };
        if g.state == PgState::Removed {
            return false;
        }
        g.state = PgState::Removed;
        set_next_try(&mut self.due, pg, g, None);
        g.message.clear();
        let mut cancels: Vec<(NodeId, usize)> =
            g.placed.iter().enumerate().filter_map(|(i, n)| n.map(|n| (n, i))).collect();
        if let Some(a) = g.attempt.take() {
            for (node, idx) in &a.nodes {
                cancels.extend(idx.iter().map(|i| (*node, *i)));
            }
            if a.phase == Phase::Preparing {
                for node in &a.outstanding {
                    if let Some(op) = a.ops.get(node) {
                        self.orphans.insert((pg, a.id, *node), *op);
                    }
                }
            }
        }
        g.placed.iter_mut().for_each(|p| *p = None);
        let bundles = g.spec.bundles.clone();
        for (node, i) in cancels {
            self.cancel(pg, node, i as i64, bundles[i].clone());
        }
        self.actions.push_back(PgAction::Removed { pg });
        self.removed.push_back(pg);
        while self.removed.len() > self.cfg.removed_history {
            if let Some(old) = self.removed.pop_front() {
                self.groups.remove(&old);
            }
        }
        true
    }

    /// The result of a `Prepare`.
    pub fn handle_prepare_reply(&mut self, now: Instant, pg: PlacementGroupId, attempt: u64, node: NodeId, ok: bool) {
        let current = self.attempt_mut(pg, attempt).filter(|a| a.phase == Phase::Preparing).is_some();
        if !current {
            // The group was removed meanwhile; its cancel (sent after this prepare on the
            // same connection) undoes a late success.
            if let Some(op) = self.orphans.remove(&(pg, attempt, node)) {
                if ok {
                    self.ledger.applied(op, now);
                } else {
                    self.ledger.remove(op);
                }
            }
            return;
        }
        let Some(a) = self.attempt_mut(pg, attempt) else { return };
        a.outstanding.remove(&node);
        let op = a.ops.get(&node).copied();
        if ok {
            a.prepared.insert(node);
        } else {
            a.failed = true;
        }
        let done = a.outstanding.is_empty();
        match op {
            Some(op) if ok => self.ledger.applied(op, now),
            Some(op) => self.ledger.remove(op),
            None => {}
        }
        if done {
            self.finish_prepare(now, pg);
        }
    }

    /// The result of a `Commit`.
    pub fn handle_commit_reply(&mut self, now: Instant, pg: PlacementGroupId, attempt: u64, node: NodeId, ok: bool) {
        let Some(a) = self.attempt_mut(pg, attempt).filter(|a| a.phase == Phase::Committing) else { return };
        a.outstanding.remove(&node);
        a.failed |= !ok;
        if !a.outstanding.is_empty() {
            return;
        }
        let Some(g) = self.groups.get_mut(&pg) else { return };
        let Some(a) = g.attempt.take() else { return };
        if a.failed {
            // Some node did not commit (it is likely gone): undo the attempt, try again.
            let bundles = g.spec.bundles.clone();
            self.retry_later(now, pg, "a bundle commit failed");
            for (node, idx) in a.nodes {
                for i in idx {
                    self.cancel(pg, node, i as i64, bundles[i].clone());
                }
            }
            return;
        }
        for (node, idx) in &a.nodes {
            for i in idx {
                g.placed[*i] = Some(*node);
            }
        }
        g.state = PgState::Created;
        g.backoff = self.cfg.retry_min;
        set_next_try(&mut self.due, pg, g, None);
        g.message.clear();
        self.actions.push_back(PgAction::Ready { pg });
    }

    /// The result of a `CancelReserve` (success or not, the node no longer holds it).
    pub fn handle_cancel_reply(&mut self, now: Instant, op: u64) {
        self.ledger.applied(op, now);
    }

    /// A fresh report of `node`, requested at `requested_at`, now shows every change the
    /// raylet applied before that instant.
    pub fn handle_report(&mut self, node: NodeId, requested_at: Instant) {
        self.ledger.report(node, requested_at);
    }

    /// A node died: bundles committed there are placed again.
    pub fn handle_node_dead(&mut self, now: Instant, node: NodeId) {
        self.ledger.node_dead(node);
        self.orphans.retain(|(_, _, n), _| *n != node);
        for (id, g) in self.groups.iter_mut() {
            if g.state == PgState::Removed {
                continue;
            }
            let mut lost = false;
            for p in g.placed.iter_mut().filter(|p| **p == Some(node)) {
                *p = None;
                lost = true;
            }
            if lost {
                g.state = PgState::Rescheduling;
                g.message = format!("bundles lost with node {node}");
                set_next_try(&mut self.due, *id, g, Some(now));
            }
        }
    }

    /// Nodes joined: groups waiting for resources are retried now.
    pub fn handle_nodes_changed(&mut self, now: Instant) {
        for (id, g) in self.groups.iter_mut() {
            if matches!(g.state, PgState::Pending | PgState::Rescheduling) && g.attempt.is_none() {
                set_next_try(&mut self.due, *id, g, Some(now));
            }
        }
    }

    /// Places every due group against `view` (the reported cluster; this table's own
    /// unreported reservations are applied on top).
    pub fn handle_timeout(&mut self, now: Instant, view: &BTreeMap<NodeId, NodeView>) {
        let due: Vec<PlacementGroupId> = self.due.iter().take_while(|(at, _)| *at <= now).map(|(_, id)| *id).collect();
        if due.is_empty() {
            return;
        }
        let mut view = view.clone();
        self.ledger.apply_to(&mut view);
        for pg in due {
            self.try_place(now, pg, &mut view);
        }
    }

    // ----- getters -----

    /// One group.
    pub fn get(&self, pg: PlacementGroupId) -> Option<PgInfo> {
        self.groups.get(&pg).map(info)
    }

    /// Every group (removed ones still remembered included), by id.
    pub fn all(&self) -> impl Iterator<Item = PgInfo> + '_ {
        self.groups.values().map(info)
    }

    // ----- internals -----

    fn attempt_mut(&mut self, pg: PlacementGroupId, attempt: u64) -> Option<&mut Attempt> {
        self.groups.get_mut(&pg)?.attempt.as_mut().filter(|a| a.id == attempt)
    }

    fn cancel(&mut self, pg: PlacementGroupId, node: NodeId, index: i64, resources: ResourceSet) {
        let op = self.ledger.add(node, resources.clone(), true);
        self.actions.push_back(PgAction::CancelReserve { op, pg, node, bundle: (index, resources) });
    }

    fn retry_later(&mut self, now: Instant, pg: PlacementGroupId, why: &str) {
        let cfg = self.cfg.clone();
        if let Some(g) = self.groups.get_mut(&pg) {
            set_next_try(&mut self.due, pg, g, Some(now + g.backoff));
            g.backoff = g.backoff.mul_f64(cfg.retry_multiplier).min(cfg.retry_max);
            g.message = why.to_string();
        }
    }

    fn finish_prepare(&mut self, now: Instant, pg: PlacementGroupId) {
        let Some(g) = self.groups.get_mut(&pg) else { return };
        let Some(a) = g.attempt.as_mut() else { return };
        if !a.failed {
            a.phase = Phase::Committing;
            a.outstanding = a.nodes.keys().copied().collect();
            let (id, nodes) = (a.id, a.nodes.clone());
            let bundles = g.spec.bundles.clone();
            for (node, idx) in nodes {
                let list = idx.iter().map(|&i| (i as i64, bundles[i].clone())).collect();
                self.actions.push_back(PgAction::Commit { pg, attempt: id, node, bundles: list });
            }
            return;
        }
        let Some(a) = g.attempt.take() else { return };
        let bundles = g.spec.bundles.clone();
        self.retry_later(now, pg, "a bundle prepare failed; retrying");
        for node in &a.prepared {
            for &i in &a.nodes[node] {
                self.cancel(pg, *node, i as i64, bundles[i].clone());
            }
        }
    }

    fn try_place(&mut self, now: Instant, pg: PlacementGroupId, view: &mut BTreeMap<NodeId, NodeView>) {
        let Some(g) = self.groups.get(&pg) else { return };
        let missing: Vec<usize> = (0..g.placed.len()).filter(|&i| g.placed[i].is_none()).collect();
        if missing.is_empty() {
            return;
        }
        let held: BTreeSet<NodeId> = g.placed.iter().flatten().copied().collect();
        let candidates: BTreeMap<NodeId, NodeView> = view
            .iter()
            .filter(|(id, _)| match g.spec.strategy {
                PgStrategy::StrictSpread => !held.contains(id),
                PgStrategy::StrictPack => held.is_empty() || held.contains(id),
                PgStrategy::Pack | PgStrategy::Spread => true,
            })
            .map(|(id, n)| (*id, n.clone()))
            .collect();
        let shapes: Vec<ResourceSet> = missing.iter().map(|&i| g.spec.bundles[i].clone()).collect();
        match place_bundles(g.spec.strategy, &shapes, &candidates) {
            Ok(nodes) => self.start_attempt(pg, &missing, &nodes, view),
            Err(e) => {
                let why = match e {
                    PlacementError::Infeasible => "infeasible: no set of nodes can hold the bundles",
                    PlacementError::Unavailable => "waiting for resources",
                };
                self.retry_later(now, pg, why);
            }
        }
    }

    fn start_attempt(
        &mut self,
        pg: PlacementGroupId,
        missing: &[usize],
        nodes: &[NodeId],
        view: &mut BTreeMap<NodeId, NodeView>,
    ) {
        let id = self.next_attempt;
        self.next_attempt += 1;
        let mut by_node: BTreeMap<NodeId, Vec<usize>> = BTreeMap::new();
        for (&i, &node) in missing.iter().zip(nodes) {
            by_node.entry(node).or_default().push(i);
        }
        let Some(bundles) = self.groups.get(&pg).map(|g| g.spec.bundles.clone()) else { return };
        let mut ops = BTreeMap::new();
        for (node, idx) in &by_node {
            let mut sum = ResourceSet::new();
            for &i in idx {
                sum.add(&bundles[i]);
            }
            if let Some(n) = view.get_mut(node) {
                n.available.sub(&sum);
            }
            ops.insert(*node, self.ledger.add(*node, negate(&sum), false));
            let list = idx.iter().map(|&i| (i as i64, bundles[i].clone())).collect();
            self.actions.push_back(PgAction::Prepare { pg, attempt: id, node: *node, bundles: list });
        }
        let attempt = Attempt {
            id,
            phase: Phase::Preparing,
            outstanding: by_node.keys().copied().collect(),
            nodes: by_node,
            prepared: BTreeSet::new(),
            failed: false,
            ops,
        };
        if let Some(g) = self.groups.get_mut(&pg) {
            g.attempt = Some(attempt);
            set_next_try(&mut self.due, pg, g, None);
        }
    }
}

/// Moves `g`'s next placement attempt, keeping the due index in step.
fn set_next_try(
    due: &mut BTreeSet<(Instant, PlacementGroupId)>,
    pg: PlacementGroupId,
    g: &mut Group,
    at: Option<Instant>,
) {
    if let Some(old) = g.next_try.take() {
        due.remove(&(old, pg));
    }
    if let Some(at) = at {
        due.insert((at, pg));
    }
    g.next_try = at;
}

fn info(g: &Group) -> PgInfo {
    PgInfo { spec: g.spec.clone(), state: g.state, nodes: g.placed.clone(), message: g.message.clone() }
}
