//! Mesh messages of the scheduling plane. Every NodeManagerService RPC of the plane arrives
//! on whichever shard the kernel picked (SO_REUSEPORT); that shard validates and converts
//! the wire request into these domain values and forwards them to shard 0, which owns the
//! node-wide ledger. Replies come back as domain values and are converted to the wire on
//! the origin shard, so shard 0 only runs the ledger.

use crate::ids::{LeaseId, NodeId, WorkerId};
use crate::logic::bundles::{BundleKey, BundleSpec};
use crate::logic::lease::queue::{CancelReason, LeaseRequest, LesseeConn};
use crate::logic::resources::ResourceSet;
use std::net::SocketAddr;

/// A scheduling-plane request to shard 0.
#[derive(Debug)]
pub enum SchedReq {
    /// `RequestWorkerLease`.
    Lease {
        /// The request.
        req: Box<LeaseRequest>,
        /// The owner's backlog (prestart).
        backlog: usize,
    },
    /// A connection that requested leases closed: the leases it still holds or waits
    /// for are revoked.
    ConnClosed(LesseeConn),
    /// `CancelWorkerLease`.
    Cancel(LeaseId),
    /// `ReturnWorker`.
    Return {
        /// The worker.
        worker: WorkerId,
        /// Destroy it instead of keeping it.
        disconnect: bool,
        /// It is exiting on its own.
        exiting: bool,
    },
    /// `ReportWorkerBacklog`: replaces `worker`'s backlog report.
    Backlog {
        /// The reporter.
        worker: WorkerId,
        /// Shape and backlog per scheduling class.
        reports: Vec<(ResourceSet, i64)>,
    },
    /// `RequestResourceReport`.
    Report,
    /// `UpdateResourceUsage`, decoded.
    Broadcast {
        /// Sequence number of the batch.
        seq: i64,
        /// The entries.
        updates: Vec<RemoteUpdate>,
    },
    /// `PrepareBundleResources`.
    Prepare(Vec<BundleSpec>),
    /// `CommitBundleResources`.
    Commit(Vec<BundleSpec>),
    /// `CancelResourceReserve`.
    CancelBundle(BundleKey),
    /// `ReleaseUnusedBundles`.
    ReleaseUnusedBundles(Vec<BundleKey>),
    /// `GlobalGC`.
    GlobalGc,
    /// `AgentManagerService.RegisterAgent`.
    RegisterAgent {
        /// The agent's pid.
        pid: i32,
        /// Its port.
        port: i32,
        /// The id the raylet gave it.
        id: i64,
    },
}

/// One entry of a resource broadcast.
#[derive(Debug, Clone, PartialEq)]
pub enum RemoteUpdate {
    /// A node's full report.
    Data {
        /// The node.
        node: NodeId,
        /// Its totals.
        total: ResourceSet,
        /// Its availability.
        available: ResourceSet,
        /// Its pull manager has queued pulls.
        pulls_queued: bool,
        /// It asks every node to run a local GC.
        should_global_gc: bool,
    },
    /// Capacity changes of a node.
    Change {
        /// The node.
        node: NodeId,
        /// New capacities (total and available).
        updated: ResourceSet,
        /// Resources the node no longer has.
        deleted: Vec<String>,
    },
}

/// How a lease request ended.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaseOutcome {
    /// Granted.
    Granted {
        /// The worker.
        worker: WorkerId,
        /// Its WorkerService address.
        addr: SocketAddr,
        /// Its pid.
        pid: u32,
        /// `(resource, [(instance, amount)])`.
        mapping: Vec<(String, Vec<(usize, f64)>)>,
    },
    /// Retry at another raylet.
    Spillback {
        /// That node.
        node: NodeId,
        /// Its node manager address.
        addr: SocketAddr,
    },
    /// `grant_or_reject` and another node was chosen.
    Rejected,
    /// Cancelled.
    Cancelled {
        /// Why.
        reason: CancelReason,
        /// A human-readable detail.
        message: String,
    },
}

/// A scheduling-plane reply from shard 0.
#[derive(Debug)]
pub enum SchedRep {
    /// The lease's outcome.
    Lease(LeaseOutcome),
    /// A yes/no verdict (cancel found the lease; prepare succeeded).
    Verdict(bool),
    /// Done, or why not.
    Done(Result<(), String>),
    /// This node's resource report.
    Report(Box<crate::wire::rpc::ResourcesData>),
}
