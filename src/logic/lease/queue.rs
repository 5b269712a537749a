//! The lease lifecycle on one node (Ray's `ClusterTaskManager` + `LocalTaskManager`, E5
//! lease semantics): requests in, scheduling decisions and grants out.
//!
//! Owns: every lease this node has accepted and not yet finished, the per-scheduling-class
//! queues, the infeasible queue, cancellation tombstones, this node's [`NodeResources`]
//! ledger and the cluster view the policy reads ([`ClusterView`]: the local node is exact,
//! remote nodes come from the GCS broadcast). Node-wide shard only.
//!
//! Called by: [`super::scheduler::Scheduler`], which couples it to the worker pool and the
//! bundle ledger and forwards the external actions to the service layer.
//!
//! Must not: do IO, read the clock (`now` comes in; only tombstones use it) or panic on
//! requests from peers (unknown ids are no-ops or errors).
//!
//! # Call protocol
//! 1. Feed one input (`handle_*`). Requests, cancels, returns, worker assignments, lease
//!    losses and resource or cluster-view changes each run a scheduling pass.
//! 2. Drain [`LeaseQueue::poll_action`] until `None`, performing actions in order.
//! 3. After changing resources through [`LeaseQueue::resources_mut`] (bundle two-phase
//!    commit), call [`LeaseQueue::handle_resources_changed`].
//!
//! There is no timer: tombstones expire lazily on the next input.
//!
//! # States of one lease
//! ```text
//!   request ──tombstoned──▶ Cancelled(Intended)            (a Cancel that arrived first wins)
//!      │ ──max_leases held──▶ Cancelled(QueueFull)          (refused, never queued)
//!      │
//!      ▼            pass: no node can ever fit (class moved as a whole)
//!    Queued ───────────────────────────────────────────────────▶ Infeasible
//!      │  ▲ pass: a node became feasible (head re-checked every pass) │
//!      │  └──────────────────────────────────────────────────────────┘
//!      │ pass: remote node ──▶ Spillback (or Reject if grant_or_reject) ──▶ (forgotten)
//!      │ pass: hard affinity unschedulable ──▶ Cancelled(Unschedulable)
//!      │ pass: local, arguments not here yet ──▶ FetchArgs ──▶ WaitingForArgs (holds no
//!      │        resources) ──args ready──▶ back to the front of Queued, runs here only
//!      │ pass: local, resources allocated ──▶ PopWorker
//!      ▼
//!  WaitingForWorker ──worker assigned──▶ Granted ──return / lease lost──▶ (forgotten,
//!                                          │                              resources freed)
//!                                          └─ PG removed / bundle released / owner gone:
//!                                             resources freed, DestroyWorker
//!  A lease that asked for its arguments emits ReleaseArgs however it ends.
//!  Queued, Infeasible, WaitingForArgs, WaitingForWorker ──cancel──▶ Cancelled (+ CancelPop, resources
//!                                                   freed, when waiting for a worker)
//!  worker assigned to a lease that is no longer waiting ──▶ ReleaseWorker (back to idle)
//! ```
//! Idempotence by lease id: a request for a lease that is waiting joins it (no action); a
//! request for a granted lease re-emits the same `Grant`.
//!
//! Scheduling classes: leases with the same resource shape and strategy share a class and
//! queue; a pass walks every class and stops *within* a class at the first lease that
//! cannot be placed now, so one blocked shape never delays another.
//!
//! Lease arguments (Ray's dependency manager): a lease placed here with object arguments
//! waits, holding no resources, until they are local and pinned; then it is allocated
//! here (never placed again) as soon as resources allow.
//!
//! Not modelled (documented deviation from Ray): the per-class worker cap and its
//! admission backoff, the waiting-for-args spill, the pinned-arguments memory cap.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use super::policy::{pick_node, subtract_on_spillback, ClusterView, Decision, NodeView, Strategy};
use crate::ids::{LeaseId, NodeId, PlacementGroupId, WorkerId};
use crate::logic::bundles::BundleKey;
use crate::logic::resources::{Allocation, FixedPoint, NodeResources, ResourceSet, CPU};

#[cfg(test)]
mod tests;
mod types;

pub use types::{
    CancelReason, ClassLoad, LeaseAction, LeaseDecision, LeaseError, LeaseInfo, LeaseRequest, LesseeConn, QueueConfig,
    SchedulingClass,
};

#[derive(Debug, Clone)]
enum State {
    Queued,
    Infeasible,
    /// Placed here; its arguments are being fetched (no resources held yet).
    WaitingForArgs,
    WaitingForWorker(Allocation),
    Granted {
        worker: WorkerId,
        allocation: Allocation,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    req: LeaseRequest,
    class: SchedulingClass,
    state: State,
    /// Whether its arguments are local and pinned (or it has none).
    args_ready: bool,
}

impl Entry {
    /// Whether arguments were asked for (being fetched, or pinned): ending the lease must
    /// release them.
    fn holds_args(&self) -> bool {
        !self.req.deps.is_empty() && (self.args_ready || matches!(self.state, State::WaitingForArgs))
    }
}

/// The lease queue of one node. See the module docs for the protocol.
#[derive(Debug)]
pub struct LeaseQueue {
    config: QueueConfig,
    local: NodeResources,
    view: ClusterView,
    leases: BTreeMap<LeaseId, Entry>,
    to_schedule: BTreeMap<SchedulingClass, VecDeque<LeaseId>>,
    infeasible: BTreeMap<SchedulingClass, VecDeque<LeaseId>>,
    by_worker: BTreeMap<WorkerId, LeaseId>,
    tombstones: BTreeSet<LeaseId>,
    tombstone_order: VecDeque<(Instant, LeaseId)>,
    rng: fastrand::Rng,
    spread_cursor: usize,
    actions: VecDeque<LeaseAction>,
}

impl LeaseQueue {
    /// A queue for node `local` owning `resources`; `seed` feeds the policy's top-k choice.
    pub fn new(local: NodeId, resources: NodeResources, config: QueueConfig, seed: u64) -> Self {
        let mut view = ClusterView::new(local);
        view.nodes.insert(local, NodeView::new(resources.total()));
        let mut q = Self {
            config,
            local: resources,
            view,
            leases: BTreeMap::new(),
            to_schedule: BTreeMap::new(),
            infeasible: BTreeMap::new(),
            by_worker: BTreeMap::new(),
            tombstones: BTreeSet::new(),
            tombstone_order: VecDeque::new(),
            rng: fastrand::Rng::with_seed(seed),
            spread_cursor: 0,
            actions: VecDeque::new(),
        };
        q.refresh_local();
        q
    }

    // ----- outputs -----

    /// The next action; drain until `None` after every input.
    pub fn poll_action(&mut self) -> Option<LeaseAction> {
        self.actions.pop_front()
    }

    // ----- lease inputs -----

    /// A lease request (possibly a repeat; see the module docs).
    pub fn handle_request(&mut self, now: Instant, req: LeaseRequest) {
        self.expire_tombstones(now);
        let id = req.id;
        if self.tombstones.contains(&id) {
            self.actions.push_back(LeaseAction::cancelled(id, CancelReason::Intended));
            return;
        }
        if let Some(e) = self.leases.get(&id) {
            if let State::Granted { worker, allocation } = &e.state {
                let (worker, allocation) = (*worker, allocation.clone());
                self.actions.push_back(LeaseAction::grant(id, worker, allocation));
            }
            return;
        }
        if self.leases.len() >= self.config.max_leases {
            self.actions.push_back(LeaseAction::cancelled(id, CancelReason::QueueFull));
            return;
        }
        let class = SchedulingClass::of(&req);
        let state = if let Some(q) = self.infeasible.get_mut(&class) {
            q.push_back(id);
            self.actions.push_back(LeaseAction::Infeasible { lease: id });
            State::Infeasible
        } else {
            self.to_schedule.entry(class.clone()).or_default().push_back(id);
            State::Queued
        };
        let args_ready = req.deps.is_empty();
        self.leases.insert(id, Entry { req, class, state, args_ready });
        self.schedule();
    }

    /// Cancels a lease that is not granted yet. Returns whether it was found waiting; an
    /// unknown lease leaves a tombstone so its request, if it comes, is cancelled.
    pub fn handle_cancel(&mut self, now: Instant, lease: LeaseId) -> bool {
        self.expire_tombstones(now);
        let found = match self.leases.get(&lease).map(|e| &e.state) {
            Some(State::Granted { .. }) => return false,
            Some(_) => {
                self.cancel(lease, CancelReason::Intended);
                self.schedule();
                true
            }
            None => false,
        };
        self.add_tombstone(now, lease);
        found
    }

    /// The pool assigned `worker` to `lease`: grant it, or release the worker if the lease
    /// no longer waits (cancel won).
    pub fn handle_worker_assigned(&mut self, lease: LeaseId, worker: WorkerId) {
        let Some(e) = self.leases.get_mut(&lease) else {
            self.actions.push_back(LeaseAction::ReleaseWorker { worker });
            return;
        };
        let State::WaitingForWorker(allocation) = &e.state else {
            self.actions.push_back(LeaseAction::ReleaseWorker { worker });
            return;
        };
        let allocation = allocation.clone();
        e.state = State::Granted { worker, allocation: allocation.clone() };
        self.by_worker.insert(worker, lease);
        self.actions.push_back(LeaseAction::grant(lease, worker, allocation));
    }

    /// The arguments of `lease` are local and pinned: it goes back to the front of its
    /// class's queue and is allocated here as soon as resources allow (it is not placed
    /// again). A lease no longer waiting for them (cancelled meanwhile) is ignored; its
    /// release is already on its way.
    pub fn handle_args_ready(&mut self, lease: LeaseId) {
        let Some(e) = self.leases.get_mut(&lease) else { return };
        if !matches!(e.state, State::WaitingForArgs) {
            return;
        }
        e.state = State::Queued;
        e.args_ready = true;
        self.to_schedule.entry(e.class.clone()).or_default().push_front(lease);
        self.schedule();
    }

    /// The lessee returned `worker`: its lease ends and its resources are freed.
    pub fn handle_return(&mut self, worker: WorkerId) -> Result<LeaseId, LeaseError> {
        let lease = *self.by_worker.get(&worker).ok_or(LeaseError::UnknownWorker(worker))?;
        self.finish(lease);
        self.schedule();
        Ok(lease)
    }

    /// The worker holding `lease` died: the lease ends and its resources are freed. Unknown
    /// leases (already revoked or returned) are ignored.
    pub fn handle_lease_lost(&mut self, lease: LeaseId) {
        if matches!(self.leases.get(&lease).map(|e| &e.state), Some(State::Granted { .. })) {
            self.finish(lease);
            self.schedule();
        }
    }

    /// Placement group `pg` is being removed: its waiting leases are cancelled and its
    /// granted leases revoked (resources freed now, workers destroyed).
    pub fn handle_cancel_placement_group(&mut self, pg: PlacementGroupId) {
        self.revoke_where(CancelReason::PlacementGroupRemoved, |r| r.bundle.is_some_and(|b| b.pg == pg));
        self.schedule();
    }

    /// `ReleaseUnusedBundles`: leases whose bundle is not in `keep` are cancelled or revoked.
    pub fn handle_release_unused_bundles(&mut self, keep: &BTreeSet<BundleKey>) {
        self.revoke_where(CancelReason::Intended, |r| r.bundle.is_some_and(|b| !keep.contains(&b)));
        self.schedule();
    }

    /// The owner `owner` went away: its waiting leases are cancelled and the workers it
    /// leased destroyed (Ray kills leased workers of a dead owner).
    pub fn handle_owner_gone(&mut self, owner: WorkerId) {
        self.revoke_where(CancelReason::Intended, |r| r.owner == Some(owner));
        self.schedule();
    }

    /// The connection `conn` closed: the leases requested on it go as with
    /// [`Self::handle_owner_gone`] (its lessee is gone, or dropped them).
    pub fn handle_conn_closed(&mut self, conn: LesseeConn) {
        self.revoke_where(CancelReason::Intended, |r| r.conn == Some(conn));
        self.schedule();
    }

    /// Node `node` died: leases whose owner ran there go as with
    /// [`Self::handle_owner_gone`], and the node leaves the view.
    pub fn handle_node_dead(&mut self, node: NodeId) {
        self.revoke_where(CancelReason::Intended, |r| r.owner_node == Some(node));
        if node != self.view.local {
            self.view.nodes.remove(&node);
        }
        self.schedule();
    }

    // ----- resource and cluster inputs -----

    /// Local resources changed through [`Self::resources_mut`]: refresh and schedule.
    pub fn handle_resources_changed(&mut self) {
        self.refresh_local();
        self.schedule();
    }

    /// A remote node's view (from the GCS broadcast or a node join). The local node's own
    /// view is never overwritten from outside.
    pub fn handle_node_update(&mut self, node: NodeId, view: NodeView) {
        if node == self.view.local {
            return;
        }
        self.view.nodes.insert(node, view);
        self.schedule();
    }

    // ----- getters -----

    /// This node's ledger.
    pub fn resources(&self) -> &NodeResources {
        &self.local
    }

    /// This node's ledger, for bundle reservations; call
    /// [`Self::handle_resources_changed`] afterwards.
    pub fn resources_mut(&mut self) -> &mut NodeResources {
        &mut self.local
    }

    /// The cluster view the policy reads.
    pub fn view(&self) -> &ClusterView {
        &self.view
    }

    /// floor(available CPUs) of this node (for prestart and the idle soft limit).
    pub fn available_cpus(&self) -> usize {
        let cpus = self.local.availables().find(|(k, _)| *k == CPU).map_or(FixedPoint::ZERO, |(_, v)| v);
        usize::try_from(cpus.trunc_units()).unwrap_or(0)
    }

    /// The lease `worker` holds.
    pub fn lease_of_worker(&self, worker: WorkerId) -> Option<LeaseId> {
        self.by_worker.get(&worker).copied()
    }

    /// One lease.
    pub fn lease(&self, lease: LeaseId) -> Option<LeaseInfo> {
        self.leases.get(&lease).map(|e| LeaseInfo {
            request: e.req.clone(),
            worker: match e.state {
                State::Granted { worker, .. } => Some(worker),
                _ => None,
            },
        })
    }

    /// What the granted lease of `worker` holds.
    pub fn allocation_of_worker(&self, worker: WorkerId) -> Option<&Allocation> {
        let lease = self.by_worker.get(&worker)?;
        match &self.leases.get(lease)?.state {
            State::Granted { allocation, .. } => Some(allocation),
            _ => None,
        }
    }

    /// Leases not granted yet (queued or waiting for a worker), infeasible ones excluded.
    pub fn num_pending(&self) -> usize {
        self.leases
            .values()
            .filter(|e| matches!(e.state, State::Queued | State::WaitingForArgs | State::WaitingForWorker(_)))
            .count()
    }

    /// Leases in the infeasible queue.
    pub fn num_infeasible(&self) -> usize {
        self.infeasible.values().map(VecDeque::len).sum()
    }

    /// Granted leases.
    pub fn num_granted(&self) -> usize {
        self.by_worker.len()
    }

    /// Per-class queue lengths (ready = queued or waiting for a worker).
    pub fn load(&self) -> Vec<ClassLoad> {
        let mut out: BTreeMap<&SchedulingClass, (usize, usize)> = BTreeMap::new();
        for e in self.leases.values() {
            let slot = out.entry(&e.class).or_default();
            match e.state {
                State::Queued | State::WaitingForArgs | State::WaitingForWorker(_) => slot.0 += 1,
                State::Infeasible => slot.1 += 1,
                State::Granted { .. } => {}
            }
        }
        out.into_iter()
            .filter(|(_, (r, i))| r + i > 0)
            .map(|(c, (ready, infeasible))| ClassLoad { shape: c.shape(), ready, infeasible })
            .collect()
    }

    // ----- internals -----

    fn refresh_local(&mut self) {
        let local = self.view.local;
        let v = self.view.nodes.entry(local).or_insert_with(|| NodeView::new(ResourceSet::new()));
        v.total.assign(self.local.totals());
        v.available.assign(self.local.availables());
    }

    fn expire_tombstones(&mut self, now: Instant) {
        while let Some(&(at, lease)) = self.tombstone_order.front() {
            if at > now && self.tombstone_order.len() <= self.config.max_tombstones {
                break;
            }
            self.tombstone_order.pop_front();
            self.tombstones.remove(&lease);
        }
    }

    fn add_tombstone(&mut self, now: Instant, lease: LeaseId) {
        if self.config.max_tombstones == 0 || !self.tombstones.insert(lease) {
            return;
        }
        self.tombstone_order.push_back((now + self.config.tombstone_ttl, lease));
        self.expire_tombstones(now);
    }

    /// Removes a not-granted lease from its queue and answers it cancelled.
    fn cancel(&mut self, lease: LeaseId, reason: CancelReason) {
        let Some(e) = self.leases.remove(&lease) else { return };
        if e.holds_args() {
            self.actions.push_back(LeaseAction::ReleaseArgs { lease });
        }
        match e.state {
            State::Queued => remove_from(&mut self.to_schedule, &e.class, lease),
            State::Infeasible => remove_from(&mut self.infeasible, &e.class, lease),
            State::WaitingForArgs => {}
            State::WaitingForWorker(alloc) => {
                self.local.free(&alloc);
                self.refresh_local();
                self.actions.push_back(LeaseAction::CancelPop { lease });
            }
            State::Granted { .. } => {
                debug_assert!(false, "cancel of granted lease {lease}");
            }
        }
        self.actions.push_back(LeaseAction::cancelled(lease, reason));
    }

    /// Ends a granted lease and frees what it held; returns its worker.
    fn finish(&mut self, lease: LeaseId) -> Option<WorkerId> {
        let e = self.leases.remove(&lease)?;
        let State::Granted { worker, allocation } = e.state else {
            self.leases.insert(lease, e);
            return None;
        };
        self.by_worker.remove(&worker);
        self.local.free(&allocation);
        self.refresh_local();
        if !e.req.deps.is_empty() {
            self.actions.push_back(LeaseAction::ReleaseArgs { lease });
        }
        Some(worker)
    }

    /// Cancels waiting leases and revokes granted ones whose request matches.
    fn revoke_where(&mut self, reason: CancelReason, matches: impl Fn(&LeaseRequest) -> bool) {
        let hit: Vec<(LeaseId, bool)> = self
            .leases
            .iter()
            .filter(|(_, e)| matches(&e.req))
            .map(|(id, e)| (*id, matches!(e.state, State::Granted { .. })))
            .collect();
        for (lease, granted) in hit {
            if granted {
                if let Some(worker) = self.finish(lease) {
                    self.actions.push_back(LeaseAction::DestroyWorker { lease, worker });
                }
            } else {
                self.cancel(lease, reason);
            }
        }
    }

    /// One scheduling pass over every class.
    fn schedule(&mut self) {
        self.recheck_infeasible();
        let classes: Vec<SchedulingClass> = self.to_schedule.keys().cloned().collect();
        for class in classes {
            self.schedule_class(&class);
        }
    }

    /// Moves infeasible classes whose head became feasible back to scheduling.
    fn recheck_infeasible(&mut self) {
        let ready: Vec<SchedulingClass> = self
            .infeasible
            .iter()
            .filter(|(_, q)| {
                q.front().and_then(|id| self.leases.get(id)).is_some_and(|e| self.is_feasible_somewhere(&e.req))
            })
            .map(|(c, _)| c.clone())
            .collect();
        for class in ready {
            let Some(q) = self.infeasible.remove(&class) else { continue };
            for id in &q {
                if let Some(e) = self.leases.get_mut(id) {
                    e.state = State::Queued;
                }
            }
            self.to_schedule.entry(class).or_default().extend(q);
        }
    }

    fn is_feasible_somewhere(&self, req: &LeaseRequest) -> bool {
        match req.strategy {
            Strategy::NodeAffinity { node, soft: false } => {
                self.view.nodes.get(&node).is_some_and(|n| n.is_schedulable() && n.is_feasible(&req.resources))
            }
            _ => self.view.any_feasible(&req.resources),
        }
    }

    /// Places leases of `class` from the head until one cannot be placed now.
    fn schedule_class(&mut self, class: &SchedulingClass) {
        while let Some(lease) = self.to_schedule.get(class).and_then(|q| q.front().copied()) {
            let Some(e) = self.leases.get(&lease) else {
                pop_front(&mut self.to_schedule, class);
                continue;
            };
            let (strategy, grant_or_reject, job) = (e.req.strategy, e.req.grant_or_reject, e.req.job);
            // A lease whose arguments were fetched here runs here: it is not placed again.
            let decision = if e.args_ready && !e.req.deps.is_empty() {
                Decision::Node(self.view.local)
            } else {
                pick_node(
                    &self.view,
                    &e.req.resources,
                    strategy,
                    &self.config.policy,
                    &mut self.rng,
                    &mut self.spread_cursor,
                )
            };
            match decision {
                Decision::Node(node) if node == self.view.local && !e.args_ready => {
                    let deps = e.req.deps.clone();
                    pop_front(&mut self.to_schedule, class);
                    if let Some(e) = self.leases.get_mut(&lease) {
                        e.state = State::WaitingForArgs;
                    }
                    self.actions.push_back(LeaseAction::FetchArgs { lease, deps });
                }
                Decision::Node(node) if node == self.view.local => {
                    let Ok(alloc) = self.local.try_allocate(&e.req.resources) else { break };
                    pop_front(&mut self.to_schedule, class);
                    self.refresh_local();
                    if let Some(e) = self.leases.get_mut(&lease) {
                        e.state = State::WaitingForWorker(alloc);
                    }
                    self.actions.push_back(LeaseAction::PopWorker { lease, job });
                }
                Decision::Node(node) => {
                    pop_front(&mut self.to_schedule, class);
                    let Some(e) = self.leases.remove(&lease) else { continue };
                    if grant_or_reject {
                        self.actions.push_back(LeaseAction::decided(lease, LeaseDecision::Reject));
                    } else {
                        subtract_on_spillback(&mut self.view, node, &e.req.resources);
                        self.actions.push_back(LeaseAction::decided(lease, LeaseDecision::Spillback { node }));
                    }
                }
                Decision::Unavailable => break,
                Decision::Infeasible if matches!(strategy, Strategy::NodeAffinity { soft: false, .. }) => {
                    pop_front(&mut self.to_schedule, class);
                    self.leases.remove(&lease);
                    self.actions.push_back(LeaseAction::cancelled(lease, CancelReason::Unschedulable));
                }
                Decision::Infeasible => {
                    self.make_infeasible(class);
                    break;
                }
            }
        }
        if self.to_schedule.get(class).is_some_and(VecDeque::is_empty) {
            self.to_schedule.remove(class);
        }
    }

    fn make_infeasible(&mut self, class: &SchedulingClass) {
        let Some(q) = self.to_schedule.remove(class) else { return };
        for id in &q {
            if let Some(e) = self.leases.get_mut(id) {
                e.state = State::Infeasible;
                self.actions.push_back(LeaseAction::Infeasible { lease: *id });
            }
        }
        self.infeasible.entry(class.clone()).or_default().extend(q);
    }
}

fn pop_front(queues: &mut BTreeMap<SchedulingClass, VecDeque<LeaseId>>, class: &SchedulingClass) {
    if let Some(q) = queues.get_mut(class) {
        q.pop_front();
    }
}

fn remove_from(queues: &mut BTreeMap<SchedulingClass, VecDeque<LeaseId>>, class: &SchedulingClass, lease: LeaseId) {
    if let Some(q) = queues.get_mut(class) {
        q.retain(|l| *l != lease);
        if q.is_empty() {
            queues.remove(class);
        }
    }
}
