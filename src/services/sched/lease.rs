//! Lease requests on shard 0: deferred replies by lease id (a repeat of a pending request
//! waits for the same outcome), cancels, returns and backlog reports.
//!
//! A `RequestWorkerLease` reply is deferred until the queue decides (grant, spillback,
//! reject, cancel). The waiting RPC task holds a oneshot receiver; the scheduler's action
//! sends to every waiter of that lease id.

use super::msg::LeaseOutcome;
use super::SchedService;
use crate::ids::{LeaseId, WorkerId};
use crate::logic::lease::queue::{CancelReason, LeaseDecision, LeaseRequest, LesseeConn};
use crate::logic::resources::ResourceSet;
use futures_channel::oneshot;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

/// Waiters for lease outcomes, by lease id.
#[derive(Debug, Default)]
pub struct Replies {
    waiters: RefCell<HashMap<LeaseId, Vec<oneshot::Sender<LeaseOutcome>>>>,
    /// Backlog reports by reporter (replaced on every report).
    backlogs: RefCell<HashMap<WorkerId, Vec<(ResourceSet, i64)>>>,
}

impl Replies {
    fn wait(&self, lease: LeaseId) -> oneshot::Receiver<LeaseOutcome> {
        let (tx, rx) = oneshot::channel();
        self.waiters.borrow_mut().entry(lease).or_default().push(tx);
        rx
    }

    fn send(&self, lease: LeaseId, outcome: LeaseOutcome) {
        let waiters = self.waiters.borrow_mut().remove(&lease).unwrap_or_default();
        for w in waiters {
            let _ = w.send(outcome.clone());
        }
    }

    /// The summed backlog per shape, for the load report.
    pub(super) fn backlog_by_shape(&self) -> Vec<(ResourceSet, i64)> {
        let mut out: Vec<(ResourceSet, i64)> = Vec::new();
        for reports in self.backlogs.borrow().values() {
            for (shape, n) in reports {
                match out.iter_mut().find(|(s, _)| s == shape) {
                    Some((_, total)) => *total = total.saturating_add(*n),
                    None => out.push((shape.clone(), *n)),
                }
            }
        }
        out
    }
}

fn cancel_message(reason: CancelReason) -> &'static str {
    match reason {
        CancelReason::Intended => "the lease was cancelled",
        CancelReason::PlacementGroupRemoved => "the placement group of the lease was removed",
        CancelReason::Unschedulable => "the lease's node affinity cannot be satisfied",
        CancelReason::QueueFull => "this node holds as many lease requests as it may (--max-queued-leases)",
    }
}

impl SchedService {
    /// `RequestWorkerLease`: waits for the queue's decision.
    pub(super) async fn request_lease(self: &Rc<Self>, req: LeaseRequest, backlog: usize) -> LeaseOutcome {
        let rx = self.replies.wait(req.id);
        self.core.borrow_mut().handle_request(Instant::now(), req, backlog);
        self.drive();
        rx.await.unwrap_or_else(|_| LeaseOutcome::Cancelled {
            reason: CancelReason::Intended,
            message: "the raylet is shutting down".into(),
        })
    }

    /// A connection that requested leases closed: those it still holds or waits for go
    /// (workers destroyed, waits cancelled), as when their owner dies.
    pub(super) fn conn_closed(self: &Rc<Self>, conn: LesseeConn) {
        self.core.borrow_mut().handle_conn_closed(Instant::now(), conn);
        self.drive();
    }

    /// `CancelWorkerLease`.
    pub(super) fn cancel_lease(self: &Rc<Self>, lease: LeaseId) -> bool {
        let found = self.core.borrow_mut().handle_cancel(Instant::now(), lease);
        self.drive();
        found
    }

    /// `ReturnWorker`.
    pub(super) fn return_worker(
        self: &Rc<Self>,
        worker: WorkerId,
        disconnect: bool,
        exiting: bool,
    ) -> Result<(), String> {
        let r = self.core.borrow_mut().handle_return(Instant::now(), worker, disconnect, exiting);
        self.drive();
        r.map(|_| ()).map_err(|e| format!("Returned worker does not exist any more ({e})"))
    }

    /// `ReportWorkerBacklog`: replaces the reporter's backlog; ignored from unknown workers.
    pub(super) fn report_backlog(&self, worker: WorkerId, reports: Vec<(ResourceSet, i64)>) -> Result<(), String> {
        if !self.core.borrow().pool().is_registered(worker) {
            return Ok(());
        }
        for (i, (shape, _)) in reports.iter().enumerate() {
            if reports[..i].iter().any(|(s, _)| s == shape) {
                return Err("a backlog report names the same scheduling class twice".into());
            }
        }
        let mut b = self.replies.backlogs.borrow_mut();
        if reports.is_empty() {
            b.remove(&worker);
        } else {
            b.insert(worker, reports);
        }
        Ok(())
    }

    /// Forgets the backlog of a reporter that went away.
    pub(super) fn forget_backlog(&self, worker: WorkerId) {
        self.replies.backlogs.borrow_mut().remove(&worker);
    }

    /// Answers every waiter of a decided lease.
    pub(super) fn reply(self: &Rc<Self>, lease: LeaseId, decision: LeaseDecision) {
        let outcome = match decision {
            LeaseDecision::Grant { worker, allocation } => self.granted(worker, &allocation),
            LeaseDecision::Spillback { node } => self.spillback(node),
            LeaseDecision::Reject => LeaseOutcome::Rejected,
            LeaseDecision::Cancelled { reason } => {
                LeaseOutcome::Cancelled { reason, message: cancel_message(reason).into() }
            }
        };
        self.replies.send(lease, outcome);
    }

    fn granted(&self, worker: WorkerId, allocation: &crate::logic::resources::Allocation) -> LeaseOutcome {
        let info = self.core.borrow().pool().worker(worker);
        match info.and_then(|w| w.port.map(|p| (w.pid, p))) {
            Some((pid, port)) => LeaseOutcome::Granted {
                worker,
                addr: SocketAddr::new(self.env.node_ip, port),
                pid,
                mapping: allocation.instance_mapping(),
            },
            None => {
                debug_assert!(false, "granted worker {worker} has no port");
                LeaseOutcome::Cancelled { reason: CancelReason::Intended, message: "granted worker vanished".into() }
            }
        }
    }

    fn spillback(&self, node: crate::ids::NodeId) -> LeaseOutcome {
        let addr = self.peer_address(node);
        match addr {
            Some(addr) => LeaseOutcome::Spillback { node, addr },
            None => LeaseOutcome::Cancelled {
                reason: CancelReason::Intended,
                message: format!("spillback target {node} has no known address"),
            },
        }
    }

    /// Logs a lease that no node can run (it keeps waiting and shows in the load report).
    pub(super) fn report_infeasible(&self, lease: LeaseId) {
        let shape = self.core.borrow().queue().lease(lease).map(|l| l.request.resources);
        tracing::warn!(%lease, ?shape, "lease request is infeasible on every known node; it waits until a node can run it");
    }
}
