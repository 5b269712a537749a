//! Lease scheduling on one node.
//!
//! - [`policy`]: chooses the node for a lease request from a snapshot of the cluster's
//!   resources (a pure function).
//! - [`queue`]: the lease lifecycle: per-class queues, infeasible queue, spillback,
//!   dispatch, cancellation with tombstones, returns.
//! - [`scheduler`]: the queue, the worker pool and the bundle ledger wired into one
//!   machine whose actions are only what leaves the node.

pub mod policy;
pub mod queue;
pub mod scheduler;
#[cfg(test)]
mod testkit;
