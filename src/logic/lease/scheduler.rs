//! One node's scheduling plane as a single machine: the [`LeaseQueue`], the
//! [`WorkerPool`] and the [`BundleLedger`] wired together, so the service layer only sees
//! the actions that leave the node (replies, processes).
//!
//! Owns the three machines; routes their internal actions to each other synchronously
//! (`PopWorker` → pool, `Assign` → queue, `LeaseLost` → queue, `ReleaseWorker` /
//! `DestroyWorker` → pool), so both sides always agree on which worker holds which lease.
//! Node-wide shard only.
//!
//! Called by: `services::sched` (RPC handlers, the process layer, the local-socket hooks
//! and the one pool timer).
//!
//! Must not: do IO or read the clock.
//!
//! # Call protocol
//! 1. Feed one input (`handle_*`).
//! 2. Drain [`Scheduler::poll_action`] until `None`; perform actions in order.
//! 3. Re-arm the single timer at [`Scheduler::poll_timeout`]; call
//!    [`Scheduler::handle_timeout`] when it fires.
//!
//! Routing invariants: a lease is `Granted` in the queue exactly when its worker is
//! `Leased` in the pool; resources of a revoked lease are freed before its bundle is
//! returned (CancelResourceReserve kills the group's workers first, as Ray).

use std::collections::VecDeque;
use std::time::Instant;

use super::policy::NodeView;
use super::queue::{LeaseAction, LeaseDecision, LeaseError, LeaseQueue, LeaseRequest, LesseeConn};
use crate::ids::{JobId, LeaseId, NodeId, ObjectId, WorkerId};
use crate::logic::bundles::{in_use_set, BundleKey, BundleLedger, BundleSpec};
use crate::logic::workers::{Action as PoolAction, ExitedProcess, RegisterError, TransitionError, WorkerPool};

#[cfg(test)]
mod tests;

/// What leaves the node: replies to lease requests and process work.
#[derive(Debug, Clone, PartialEq)]
pub enum SchedAction {
    /// Reply to the lease's request(s).
    Reply {
        /// The lease.
        lease: LeaseId,
        /// What the reply says.
        decision: LeaseDecision,
    },
    /// Report: the lease waits in the infeasible queue.
    Infeasible {
        /// The lease.
        lease: LeaseId,
    },
    /// Spawn a worker process with this startup token.
    StartProcess {
        /// Its token.
        token: i64,
    },
    /// Kill a process (SIGTERM then SIGKILL); its exit is reported later.
    Kill {
        /// The process.
        pid: u32,
        /// The worker it registered as.
        worker: Option<WorkerId>,
        /// SIGKILL at once (a revoked lease: the worker must not run on).
        force: bool,
    },
    /// Ask an idle worker to exit (reaping); report the reply.
    RequestExit {
        /// The worker.
        worker: WorkerId,
    },
    /// Fetch the lease's arguments to this node and pin them; then call
    /// [`Scheduler::handle_args_ready`].
    FetchArgs {
        /// The lease.
        lease: LeaseId,
        /// Its arguments.
        deps: Vec<ObjectId>,
    },
    /// Stop fetching the lease's arguments and unpin them.
    ReleaseArgs {
        /// The lease.
        lease: LeaseId,
    },
}

/// A `ReturnWorker` could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReturnError {
    /// The queue has no lease for the worker.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// The pool disagrees about the worker's state.
    #[error(transparent)]
    Pool(#[from] TransitionError),
}

/// The scheduling plane of one node. See the module docs.
#[derive(Debug)]
pub struct Scheduler {
    queue: LeaseQueue,
    pool: WorkerPool,
    bundles: BundleLedger,
    /// Workers whose kill must be forced (revoked leases).
    force_kill: Vec<WorkerId>,
    actions: VecDeque<SchedAction>,
}

impl Scheduler {
    /// Couples `queue` and `pool` with an empty bundle ledger.
    pub fn new(queue: LeaseQueue, pool: WorkerPool) -> Self {
        Self { queue, pool, bundles: BundleLedger::new(), force_kill: Vec::new(), actions: VecDeque::new() }
    }

    // ----- outputs -----

    /// The next action; drain until `None` after every input.
    pub fn poll_action(&mut self) -> Option<SchedAction> {
        self.actions.pop_front()
    }

    /// When [`Self::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pool.poll_timeout()
    }

    // ----- leases -----

    /// A lease request with the owner's `backlog`; also applies Ray's prestart rule.
    pub fn handle_request(&mut self, now: Instant, req: LeaseRequest, backlog: usize) {
        self.queue.handle_request(now, req);
        self.pump(now);
        if backlog > 0 {
            self.pool.handle_prestart(now, backlog, self.queue.available_cpus());
            self.pump(now);
        }
    }

    /// The arguments of `lease` are local and pinned.
    pub fn handle_args_ready(&mut self, now: Instant, lease: LeaseId) {
        self.queue.handle_args_ready(lease);
        self.pump(now);
    }

    /// `CancelWorkerLease`: whether a not-yet-granted lease was found.
    pub fn handle_cancel(&mut self, now: Instant, lease: LeaseId) -> bool {
        let found = self.queue.handle_cancel(now, lease);
        self.pump(now);
        found
    }

    /// `ReturnWorker`: the lease of `worker` ends; the worker goes back to the pool, or is
    /// killed when `kill` or `exiting`.
    pub fn handle_return(
        &mut self,
        now: Instant,
        worker: WorkerId,
        kill: bool,
        exiting: bool,
    ) -> Result<LeaseId, ReturnError> {
        let lease = self.queue.handle_return(worker)?;
        let res = self.pool.handle_return(now, worker, kill, exiting);
        self.pump(now);
        res?;
        Ok(lease)
    }

    /// The owner `owner` disconnected: cancel its waiting leases, destroy its workers.
    pub fn handle_owner_gone(&mut self, now: Instant, owner: WorkerId) {
        self.queue.handle_owner_gone(owner);
        self.pump(now);
    }

    /// The connection `conn` closed: see [`LeaseQueue::handle_conn_closed`].
    pub fn handle_conn_closed(&mut self, now: Instant, conn: LesseeConn) {
        self.queue.handle_conn_closed(conn);
        self.pump(now);
    }

    // ----- worker processes -----

    /// The process for `token` was spawned as `pid`.
    pub fn handle_process_started(&mut self, now: Instant, token: i64, pid: u32) {
        self.pool.handle_process_started(token, pid);
        self.pump(now);
    }

    /// Spawning the process for `token` failed.
    pub fn handle_start_failed(&mut self, now: Instant, token: i64) {
        self.pool.handle_start_failed(now, token);
        self.pump(now);
    }

    /// A process registered as a worker with its startup token.
    pub fn handle_register(
        &mut self,
        now: Instant,
        token: i64,
        worker: WorkerId,
        pid: u32,
    ) -> Result<(), RegisterError> {
        let r = self.pool.handle_register(token, worker, pid);
        self.pump(now);
        r
    }

    /// A registered worker announced its port.
    pub fn handle_port_announced(&mut self, now: Instant, worker: WorkerId, port: u16) -> Result<(), TransitionError> {
        let r = self.pool.handle_port_announced(now, worker, port);
        self.pump(now);
        r
    }

    /// A process exited or a worker's connection closed (either may come first).
    pub fn handle_exit(&mut self, now: Instant, who: ExitedProcess) {
        self.pool.handle_exit(now, who);
        self.pump(now);
    }

    /// The reply to a reaping `RequestExit`.
    pub fn handle_exit_reply(&mut self, now: Instant, worker: WorkerId, accepted: bool) -> Result<(), TransitionError> {
        let r = self.pool.handle_exit_reply(now, worker, accepted);
        self.pump(now);
        r
    }

    /// A driver registered (the first one triggers the configured prestart).
    pub fn handle_driver_register(
        &mut self,
        now: Instant,
        job: JobId,
        worker: WorkerId,
        pid: u32,
    ) -> Result<(), RegisterError> {
        let r = self.pool.handle_driver_register(now, job, worker, pid);
        self.pump(now);
        r
    }

    /// A driver went away; its leases go with it.
    pub fn handle_driver_exit(&mut self, now: Instant, worker: WorkerId) {
        self.pool.handle_driver_exit(worker);
        self.handle_owner_gone(now, worker);
    }

    /// Starts up to `n` idle workers now (node start), within startup concurrency.
    pub fn handle_prestart(&mut self, now: Instant, n: usize) {
        let cpus = self.queue.available_cpus();
        self.pool.handle_prestart(now, n, n);
        self.pool.set_available_cpus(cpus);
        self.pump(now);
    }

    /// The pool's deadline passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.pool.handle_timeout(now);
        self.pump(now);
    }

    // ----- bundles -----

    /// `PrepareBundleResources`: all or nothing.
    pub fn handle_prepare_bundles(&mut self, now: Instant, bundles: &[BundleSpec]) -> bool {
        let ok = self.bundles.prepare(self.queue.resources_mut(), bundles);
        self.queue.handle_resources_changed();
        self.pump(now);
        ok
    }

    /// `CommitBundleResources`.
    pub fn handle_commit_bundles(&mut self, now: Instant, bundles: &[BundleSpec]) {
        self.bundles.commit(self.queue.resources_mut(), bundles);
        self.queue.handle_resources_changed();
        self.pump(now);
    }

    /// `CancelResourceReserve`: cancel the group's waiting leases, destroy its leased
    /// workers (their resources are freed first), then return the bundle.
    pub fn handle_cancel_bundle(&mut self, now: Instant, key: BundleKey) -> bool {
        self.queue.handle_cancel_placement_group(key.pg);
        self.pump(now);
        let returned = self.bundles.return_bundle(self.queue.resources_mut(), key);
        self.queue.handle_resources_changed();
        self.pump(now);
        returned
    }

    /// `ReleaseUnusedBundles`: revoke leases of unused bundles, then return the bundles.
    pub fn handle_release_unused_bundles(&mut self, now: Instant, in_use: &[BundleKey]) -> Vec<BundleKey> {
        self.queue.handle_release_unused_bundles(&in_use_set(in_use));
        self.pump(now);
        let released = self.bundles.release_unused(self.queue.resources_mut(), in_use);
        self.queue.handle_resources_changed();
        self.pump(now);
        released
    }

    // ----- cluster view -----

    /// A remote node's resources (broadcast) or its arrival.
    pub fn handle_node_update(&mut self, now: Instant, node: NodeId, view: NodeView) {
        self.queue.handle_node_update(node, view);
        self.pump(now);
    }

    /// A remote node left: it is never chosen again, and leases owned from it go.
    pub fn handle_node_removed(&mut self, now: Instant, node: NodeId) {
        self.queue.handle_node_dead(node);
        self.pump(now);
    }

    // ----- getters -----

    /// The lease queue (resources, view, load).
    pub fn queue(&self) -> &LeaseQueue {
        &self.queue
    }

    /// The worker pool.
    pub fn pool(&self) -> &WorkerPool {
        &self.pool
    }

    /// The bundle ledger.
    pub fn bundles(&self) -> &BundleLedger {
        &self.bundles
    }

    // ----- routing -----

    /// Routes internal actions until both machines are quiet.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut moved = false;
            while let Some(a) = self.queue.poll_action() {
                moved = true;
                self.route_queue(now, a);
            }
            while let Some(a) = self.pool.poll_action() {
                moved = true;
                self.route_pool(a);
            }
            if !moved {
                break;
            }
        }
        self.pool.set_available_cpus(self.queue.available_cpus());
    }

    fn route_queue(&mut self, now: Instant, a: LeaseAction) {
        match a {
            LeaseAction::PopWorker { lease, job } => {
                let r = self.pool.handle_pop_worker(now, lease, job);
                debug_assert!(r.is_ok(), "queue pops each lease once: {r:?}");
            }
            LeaseAction::CancelPop { lease } => {
                self.pool.handle_cancel_pop(lease);
            }
            LeaseAction::ReleaseWorker { worker } => {
                let r = self.pool.handle_return(now, worker, false, false);
                debug_assert!(r.is_ok(), "a released worker was assigned: {r:?}");
            }
            LeaseAction::DestroyWorker { worker, .. } => {
                self.force_kill.push(worker);
                let r = self.pool.handle_return(now, worker, true, false);
                debug_assert!(r.is_ok(), "a revoked lease's worker was leased: {r:?}");
            }
            LeaseAction::Decided { lease, decision } => self.actions.push_back(SchedAction::Reply { lease, decision }),
            LeaseAction::Infeasible { lease } => self.actions.push_back(SchedAction::Infeasible { lease }),
            LeaseAction::FetchArgs { lease, deps } => self.actions.push_back(SchedAction::FetchArgs { lease, deps }),
            LeaseAction::ReleaseArgs { lease } => self.actions.push_back(SchedAction::ReleaseArgs { lease }),
        }
    }

    fn route_pool(&mut self, a: PoolAction) {
        match a {
            PoolAction::Assign { lease, worker } => self.queue.handle_worker_assigned(lease, worker),
            PoolAction::LeaseLost { lease, .. } => self.queue.handle_lease_lost(lease),
            PoolAction::StartProcess { token } => self.actions.push_back(SchedAction::StartProcess { token }),
            PoolAction::Kill { pid, worker } => {
                let force = match worker.and_then(|w| self.force_kill.iter().position(|x| *x == w)) {
                    Some(i) => {
                        self.force_kill.swap_remove(i);
                        true
                    }
                    None => false,
                };
                self.actions.push_back(SchedAction::Kill { pid, worker, force });
            }
            PoolAction::RequestExit { worker } => self.actions.push_back(SchedAction::RequestExit { worker }),
        }
    }
}
