//! The lease queue's vocabulary: requests in, decisions and actions out, scheduling
//! classes, tunables, and what the queue reports (pure data, no logic beyond building it).

use crate::ids::{JobId, LeaseId, NodeId, ObjectId, WorkerId};
use crate::logic::bundles::BundleKey;
use crate::logic::lease::policy::{PolicyOptions, Strategy};
use crate::logic::resources::{Allocation, FixedPoint, ResourceSet};
use std::time::Duration;

/// A lease request as the queue sees it (converted from the wire at the edge).
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseRequest {
    /// Idempotence key.
    pub id: LeaseId,
    /// The job the worker will serve.
    pub job: JobId,
    /// The worker or driver that asked (its death cancels its leases), if known.
    pub owner: Option<WorkerId>,
    /// The node the owner runs on (its death cancels the leases too), if known.
    pub owner_node: Option<NodeId>,
    /// What the lease holds while granted; bundle leases use the formatted names.
    pub resources: ResourceSet,
    /// Where it may run.
    pub strategy: Strategy,
    /// The placement-group bundle it runs in, if any.
    pub bundle: Option<BundleKey>,
    /// Never spill: answer `Reject` instead.
    pub grant_or_reject: bool,
    /// The RPC connection it was requested on (its close revokes the lease), if any.
    pub conn: Option<LesseeConn>,
    /// The task's object arguments: once the lease is to run here, they are fetched to
    /// this node and pinned before resources are allocated, and stay pinned until the
    /// lease ends (Ray's lease dependency manager).
    pub deps: Vec<ObjectId>,
}

/// An RPC connection that requested leases: the shard serving it and its id there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LesseeConn {
    /// The shard's index.
    pub shard: usize,
    /// The connection's id on that shard.
    pub conn: u64,
}

/// Why a lease was cancelled (Ray's `failure_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// The owner cancelled it (or died).
    Intended,
    /// Its placement group was removed.
    PlacementGroupRemoved,
    /// Hard node affinity to a node that cannot run it.
    Unschedulable,
    /// Refused at once: the node already holds `QueueConfig::max_leases` leases.
    QueueFull,
}

/// How a lease request was decided: what its `RequestWorkerLease` reply says.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaseDecision {
    /// Granted: the worker it holds and the resource instances.
    Grant {
        /// The worker.
        worker: WorkerId,
        /// The resource instances it holds.
        allocation: Allocation,
    },
    /// Retry at `node`.
    Spillback {
        /// Where to retry.
        node: NodeId,
    },
    /// `rejected` (grant_or_reject and another node was chosen).
    Reject,
    /// Cancelled.
    Cancelled {
        /// Why.
        reason: CancelReason,
    },
}

/// What the queue asks its driver to do.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaseAction {
    /// Reply to the lease's request(s).
    Decided {
        /// The lease.
        lease: LeaseId,
        /// The reply.
        decision: LeaseDecision,
    },
    /// The lease entered the infeasible queue (report it; it keeps waiting).
    Infeasible {
        /// The lease.
        lease: LeaseId,
    },
    /// Resources are allocated: get a worker of `job` for `lease`.
    PopWorker {
        /// The lease.
        lease: LeaseId,
        /// Its job.
        job: JobId,
    },
    /// The lease no longer wants the worker it asked for.
    CancelPop {
        /// The lease.
        lease: LeaseId,
    },
    /// A worker arrived for a lease that no longer wants it: make it available again.
    ReleaseWorker {
        /// The worker.
        worker: WorkerId,
    },
    /// The lease runs here once its arguments are local: fetch and pin `deps`, then call
    /// [`LeaseQueue::handle_args_ready`].
    FetchArgs {
        /// The lease.
        lease: LeaseId,
        /// Its arguments.
        deps: Vec<ObjectId>,
    },
    /// The lease ended or was cancelled: stop fetching its arguments and unpin them.
    ReleaseArgs {
        /// The lease.
        lease: LeaseId,
    },
    /// A granted lease was revoked: its resources are already freed; kill the worker.
    DestroyWorker {
        /// The revoked lease.
        lease: LeaseId,
        /// Its worker.
        worker: WorkerId,
    },
}

impl LeaseAction {
    pub(super) fn decided(lease: LeaseId, decision: LeaseDecision) -> Self {
        Self::Decided { lease, decision }
    }

    pub(super) fn cancelled(lease: LeaseId, reason: CancelReason) -> Self {
        Self::decided(lease, LeaseDecision::Cancelled { reason })
    }

    pub(super) fn grant(lease: LeaseId, worker: WorkerId, allocation: Allocation) -> Self {
        Self::decided(lease, LeaseDecision::Grant { worker, allocation })
    }
}

/// An input named a lease or worker this queue cannot act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// No granted lease holds this worker.
    #[error("worker {0} holds no lease on this node")]
    UnknownWorker(WorkerId),
}

/// Tunables.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// Policy knobs (Ray defaults).
    pub policy: PolicyOptions,
    /// How long a cancel is remembered for a request that has not arrived.
    pub tombstone_ttl: Duration,
    /// At most this many tombstones; the oldest go first.
    pub max_tombstones: usize,
    /// At most this many leases held at once (queued, waiting or granted); a request
    /// beyond is cancelled at once with [`CancelReason::QueueFull`].
    pub max_leases: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            policy: PolicyOptions::default(),
            tombstone_ttl: Duration::from_secs(600),
            max_tombstones: 100_000,
            max_leases: 100_000,
        }
    }
}

/// Leases of one shape and strategy share a class and a queue.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SchedulingClass {
    shape: Vec<(String, FixedPoint)>,
    strategy: StrategyKey,
}

impl SchedulingClass {
    pub(super) fn of(req: &LeaseRequest) -> Self {
        let shape = req.resources.iter().map(|(k, v)| (k.to_string(), v)).collect();
        let strategy = match req.strategy {
            Strategy::Default => StrategyKey::Default,
            Strategy::Spread => StrategyKey::Spread,
            Strategy::NodeAffinity { node, soft } => StrategyKey::Affinity(node, soft),
        };
        Self { shape, strategy }
    }

    /// The resource shape.
    pub fn shape(&self) -> ResourceSet {
        self.shape.iter().cloned().collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum StrategyKey {
    Default,
    Spread,
    Affinity(NodeId, bool),
}

/// Queue lengths of one class, for the load report.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassLoad {
    /// The resource shape.
    pub shape: ResourceSet,
    /// Leases waiting to be placed or for a worker.
    pub ready: usize,
    /// Leases no node can run.
    pub infeasible: usize,
}

/// A granted or pending lease as stats see it.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseInfo {
    /// The request.
    pub request: LeaseRequest,
    /// The worker, once granted.
    pub worker: Option<WorkerId>,
}
