//! Lease scheduling. [`policy`] chooses the node for a lease request from a snapshot of the
//! cluster's resources (a pure function); the queue that feeds it lives elsewhere.

pub mod policy;
