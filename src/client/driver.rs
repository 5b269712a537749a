//! The driver API: lease a worker (resources, strategy, bundle), following spillback to
//! the raylet the scheduler names; push built-in tasks to the leased worker and read their
//! results; return the worker to the raylet that granted it.
//!
//! Spillback (Ray's owner behaviour): a request first goes to the driver's raylet; a reply
//! with `retry_at_raylet_address` is re-sent there with `grant_or_reject`, so the target
//! either grants or rejects (never spills again); a rejection starts over at the driver's
//! raylet. Every hop reuses the lease id, so each raylet sees a repeat as the same lease.
//!
//! Connections to raylets and workers are opened on first use and kept; a connection
//! that failed is dropped and reopened by the next call.

use super::rpc_conn::RpcConn;
use crate::ids::{JobId, LeaseId, NodeId, ObjectId, PlacementGroupId, WorkerId};
use crate::rpc::RpcError;
use crate::wire::rpc::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Most raylets one lease request visits before giving up.
const MAX_HOPS: usize = 16;

/// Where a lease may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Ray's hybrid policy.
    #[default]
    Default,
    /// Round-robin over nodes.
    Spread,
    /// On `node`; `soft` allows others when it cannot.
    NodeAffinity {
        /// The node.
        node: NodeId,
        /// Fall back to other nodes.
        soft: bool,
    },
}

/// What a lease asks for.
#[derive(Debug, Clone, Default)]
pub struct LeaseOptions {
    /// Resources the worker holds while leased, e.g. `[("CPU", 1.0)]`.
    pub resources: Vec<(String, f64)>,
    /// Where it may run.
    pub strategy: Strategy,
    /// A placement-group bundle to run in: (group, index), index −1 for any bundle.
    pub bundle: Option<(PlacementGroupId, i64)>,
    /// How many more leases of this shape the caller has queued (prestart hint).
    pub backlog: i64,
    /// The task's object arguments: the raylet that grants the lease first pulls them to
    /// its node and keeps them pinned until the lease ends.
    pub deps: Vec<ObjectId>,
}

impl LeaseOptions {
    /// A lease of `cpus` CPUs with the default strategy.
    pub fn cpus(cpus: f64) -> Self {
        Self { resources: vec![("CPU".into(), cpus)], ..Default::default() }
    }
}

/// A granted lease.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    /// Its id.
    pub id: LeaseId,
    /// The worker.
    pub worker_id: WorkerId,
    /// The worker's WorkerService address.
    pub worker_address: SocketAddr,
    /// The worker's pid.
    pub worker_pid: u32,
    /// The node it runs on.
    pub node_id: NodeId,
    /// The raylet that granted it (the worker is returned there).
    pub raylet: SocketAddr,
    /// Resource instances it holds.
    pub resource_mapping: Vec<ResourceMapEntry>,
}

/// Why a lease was not granted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LeaseError {
    /// The raylet cancelled it.
    #[error("lease cancelled ({failure_type:?}): {message}")]
    Cancelled {
        /// Ray's failure type.
        failure_type: LeaseFailureType,
        /// Details.
        message: String,
    },
    /// Spillback kept bouncing.
    #[error("no raylet granted the lease after {0} hops")]
    TooManyHops(usize),
    /// A call failed.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// A reply made no sense.
    #[error("bad lease reply: {0}")]
    BadReply(String),
}

/// One raylet's answer to one lease request.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaseReply {
    /// Granted.
    Granted(Lease),
    /// Retry at that raylet.
    Spillback(SocketAddr),
    /// `grant_or_reject` and the raylet would have spilled.
    Rejected,
    /// Cancelled with Ray's failure type.
    Cancelled(LeaseFailureType, String),
}

/// A built-in task of the default worker.
#[derive(Debug, Clone, PartialEq)]
pub enum Task {
    /// Nothing.
    Noop,
    /// Sleep this long.
    Sleep(Duration),
    /// Create an object of `bytes` bytes from `seed` (`client::tasks::fill`).
    Produce {
        /// Size.
        bytes: u64,
        /// Content seed.
        seed: u64,
    },
    /// Get an object (pulling it if needed) and hash it.
    Consume {
        /// The object.
        object: ObjectId,
        /// How long to wait for it.
        timeout: Duration,
    },
    /// The worker's counters.
    Stats,
}

impl Task {
    fn to_wire(&self, lease: LeaseId) -> PushTaskRequest {
        use push_task_request::Task as T;
        let task = match self {
            Self::Noop => T::Noop(NoopTask {}),
            Self::Sleep(d) => T::Sleep(SleepTask { ms: d.as_millis() as u64 }),
            Self::Produce { bytes, seed } => T::Produce(ProduceTask { bytes: *bytes, seed: *seed }),
            Self::Consume { object, timeout } => {
                T::Consume(ConsumeTask { object_id: object.to_vec(), timeout_ms: timeout.as_millis() as u64 })
            }
            Self::Stats => T::Stats(StatsTask {}),
        };
        PushTaskRequest { lease_id: lease.to_vec(), task: Some(task) }
    }
}

/// What a task returned.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaskOutput {
    /// `produce`: the new object.
    pub object_id: Option<ObjectId>,
    /// `consume`: CRC32C of the object's bytes.
    pub crc32c: u32,
    /// `consume`: the object's size.
    pub size: u64,
    /// `stats`: the worker's counters.
    pub counters: Option<WorkerCounters>,
}

impl TaskOutput {
    fn from_wire(r: PushTaskReply) -> Result<Self, RpcError> {
        let object_id = match r.object_id.as_slice() {
            [] => None,
            b => Some(ObjectId::from_bytes(b).map_err(|e| RpcError::Decode(e.to_string()))?),
        };
        Ok(Self { object_id, crc32c: r.crc32c, size: r.size, counters: r.counters })
    }
}

/// A driver: leases workers from a cluster and runs tasks on them.
#[derive(Debug)]
pub struct Driver {
    token: String,
    home: SocketAddr,
    job: JobId,
    owner: WorkerId,
    timeout: Duration,
    spin: Duration,
    conns: HashMap<SocketAddr, RpcConn>,
}

fn addr_of(a: &Address) -> Result<SocketAddr, LeaseError> {
    format!("{}:{}", a.ip_address, a.port).parse().map_err(|e| LeaseError::BadReply(format!("address {a:?}: {e}")))
}

impl Driver {
    /// A driver whose leases start at the raylet `home` (node manager address), presenting
    /// the cluster auth `token`. Nothing is connected until the first call.
    pub fn new(home: SocketAddr, token: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            home,
            job: JobId([0, 0, 0, 1]),
            owner: WorkerId::random(),
            timeout: Duration::from_secs(30),
            spin: Duration::from_micros(50),
            conns: HashMap::new(),
        }
    }

    /// How long a task call polls the worker's connection for the reply before blocking
    /// in `read` (default 50 µs; zero blocks at once). On virtual machines a sleep and
    /// wake-up costs tens of microseconds, several times a task's round trip; polling
    /// saves it at the price of a CPU busy (yielding) for at most this long per task.
    /// Raylet connections never poll: the raylet's shards are pinned to the same CPUs
    /// and a polling driver would only delay them.
    pub fn with_spin(mut self, spin: Duration) -> Self {
        self.spin = spin;
        self
    }

    /// Sets the job id leases are requested for.
    pub fn with_job(mut self, job: JobId) -> Self {
        self.job = job;
        self
    }

    /// Sets the deadline of each call (a lease waits for its grant up to this long).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The raylet leases start at.
    pub fn home(&self) -> SocketAddr {
        self.home
    }

    /// The peer shard serving the open connection to `addr`, if one is open.
    pub fn connected_shard(&self, addr: SocketAddr) -> Option<u32> {
        self.conns.get(&addr).filter(|c| !c.is_dead()).map(RpcConn::shard)
    }

    /// The connection to `addr`, opened if needed.
    fn conn(&mut self, addr: SocketAddr) -> Result<&mut RpcConn, RpcError> {
        if self.conns.get(&addr).is_some_and(RpcConn::is_dead) {
            self.conns.remove(&addr);
        }
        if !self.conns.contains_key(&addr) {
            // Lease calls are answered by the raylet's shard 0 (workers have one thread).
            let c = RpcConn::connect_to_shard0(addr, &self.token, self.timeout)?;
            self.conns.insert(addr, c);
        }
        Ok(self.conns.get_mut(&addr).expect("inserted above"))
    }

    /// The connection to a leased worker (polling for replies, see [`Self::with_spin`]).
    fn worker_conn(&mut self, addr: SocketAddr) -> Result<&mut RpcConn, RpcError> {
        let spin = self.spin;
        let c = self.conn(addr)?;
        c.set_spin(spin);
        Ok(c)
    }

    /// A call on the connection to `addr`.
    pub fn call<Q: prost::Message, R: prost::Message + Default>(
        &mut self,
        addr: SocketAddr,
        service: u16,
        method: u16,
        req: &Q,
    ) -> Result<R, RpcError> {
        let timeout = self.timeout;
        self.conn(addr)?.call(service, method, req, timeout)
    }

    fn nm<Q: prost::Message, R: prost::Message + Default>(
        &mut self,
        raylet: SocketAddr,
        method: u16,
        req: &Q,
    ) -> Result<R, RpcError> {
        self.call(raylet, node_manager_service::SERVICE_ID, method, req)
    }

    fn spec(&self, id: LeaseId, opts: &LeaseOptions) -> LeaseSpec {
        let (strategy, node, soft) = match opts.strategy {
            Strategy::Default => (SchedulingStrategyKind::Default, Vec::new(), false),
            Strategy::Spread => (SchedulingStrategyKind::Spread, Vec::new(), false),
            Strategy::NodeAffinity { node, soft } => (SchedulingStrategyKind::NodeAffinity, node.to_vec(), soft),
        };
        LeaseSpec {
            lease_id: id.to_vec(),
            job_id: self.job.to_vec(),
            caller_address: Some(Address { worker_id: self.owner.to_vec(), ..Default::default() }),
            required_resources: opts.resources.iter().cloned().collect(),
            strategy: strategy as i32,
            node_affinity_node_id: node,
            node_affinity_soft: soft,
            bundle: opts.bundle.map(|(pg, i)| BundleId { placement_group_id: pg.to_vec(), bundle_index: i }),
            dependencies: opts.deps.iter().map(ObjectId::to_vec).collect(),
            ..Default::default()
        }
    }

    /// One `RequestWorkerLease` at `raylet`, without following spillback.
    pub fn request_lease_at(
        &mut self,
        raylet: SocketAddr,
        id: LeaseId,
        opts: &LeaseOptions,
        grant_or_reject: bool,
    ) -> Result<LeaseReply, LeaseError> {
        let req = RequestWorkerLeaseRequest {
            lease_spec: Some(self.spec(id, opts)),
            backlog_size: opts.backlog,
            grant_or_reject,
            is_selected_based_on_locality: false,
        };
        let r: RequestWorkerLeaseReply = self.nm(raylet, node_manager_service::method::REQUEST_WORKER_LEASE, &req)?;
        if r.canceled {
            let ft = LeaseFailureType::try_from(r.failure_type).unwrap_or(LeaseFailureType::SchedulingFailed);
            return Ok(LeaseReply::Cancelled(ft, r.scheduling_failure_message));
        }
        if r.rejected {
            return Ok(LeaseReply::Rejected);
        }
        if let Some(w) = r.worker_address.as_ref().filter(|w| !w.worker_id.is_empty()) {
            let bad = |e: crate::ids::IdError| LeaseError::BadReply(e.to_string());
            return Ok(LeaseReply::Granted(Lease {
                id,
                worker_id: WorkerId::from_bytes(&w.worker_id).map_err(bad)?,
                worker_address: addr_of(w)?,
                worker_pid: r.worker_pid,
                node_id: NodeId::from_bytes(&w.node_id).map_err(bad)?,
                raylet,
                resource_mapping: r.resource_mapping,
            }));
        }
        match &r.retry_at_raylet_address {
            Some(a) => Ok(LeaseReply::Spillback(addr_of(a)?)),
            None => Err(LeaseError::BadReply("neither granted, spilled, rejected nor cancelled".into())),
        }
    }

    /// Leases a worker with a fresh lease id, following spillback.
    pub fn request_lease(&mut self, opts: &LeaseOptions) -> Result<Lease, LeaseError> {
        self.request_lease_with_id(LeaseId::random(), opts)
    }

    /// Leases a worker under `id` (a repeat of a granted id returns the same worker).
    ///
    /// A request that times out is abandoned cleanly: it is cancelled at the raylet (a
    /// tombstone if it has not arrived), and should it have been granted meanwhile, the
    /// worker is fetched by repeating the request and returned, so nothing stays leased.
    pub fn request_lease_with_id(&mut self, id: LeaseId, opts: &LeaseOptions) -> Result<Lease, LeaseError> {
        let home = self.home;
        let (mut at, mut grant_or_reject) = (home, false);
        for _ in 0..MAX_HOPS {
            let reply = match self.request_lease_at(at, id, opts, grant_or_reject) {
                Err(e @ LeaseError::Rpc(RpcError::Timeout(_))) => {
                    self.abandon(at, id, opts, grant_or_reject);
                    return Err(e);
                }
                other => other?,
            };
            match reply {
                LeaseReply::Granted(l) => return Ok(l),
                LeaseReply::Spillback(next) => (at, grant_or_reject) = (next, true),
                LeaseReply::Rejected => (at, grant_or_reject) = (home, false),
                LeaseReply::Cancelled(failure_type, message) => {
                    return Err(LeaseError::Cancelled { failure_type, message })
                }
            }
        }
        Err(LeaseError::TooManyHops(MAX_HOPS))
    }

    /// Undoes a lease request whose reply never came (best effort).
    fn abandon(&mut self, raylet: SocketAddr, id: LeaseId, opts: &LeaseOptions, grant_or_reject: bool) {
        if let Ok(false) = self.cancel_lease(raylet, id) {
            // Not waiting there: granted (a repeat returns the grant) or never seen (the
            // cancel left a tombstone, so a repeat is answered cancelled at once).
            if let Ok(LeaseReply::Granted(l)) = self.request_lease_at(raylet, id, opts, grant_or_reject) {
                let _ = self.return_worker(&l);
            }
        }
    }

    /// `CancelWorkerLease` at `raylet`: whether a not-yet-granted lease was found.
    pub fn cancel_lease(&mut self, raylet: SocketAddr, id: LeaseId) -> Result<bool, RpcError> {
        let req = CancelWorkerLeaseRequest { lease_id: id.to_vec() };
        let r: CancelWorkerLeaseReply = self.nm(raylet, node_manager_service::method::CANCEL_WORKER_LEASE, &req)?;
        Ok(r.success)
    }

    /// Runs `task` on the leased worker.
    pub fn push_task(&mut self, lease: &Lease, task: &Task) -> Result<TaskOutput, RpcError> {
        let timeout = self.timeout;
        let r: PushTaskReply = self.worker_conn(lease.worker_address)?.call(
            worker_service::SERVICE_ID,
            worker_service::method::PUSH_TASK,
            &task.to_wire(lease.id),
            timeout,
        )?;
        TaskOutput::from_wire(r)
    }

    /// Runs `tasks` on the leased worker with up to `window` in flight; results in order.
    pub fn push_tasks(&mut self, lease: &Lease, tasks: &[Task], window: usize) -> Result<Vec<TaskOutput>, RpcError> {
        let timeout = self.timeout;
        let conn = self.worker_conn(lease.worker_address)?;
        let (svc, m) = (worker_service::SERVICE_ID, worker_service::method::PUSH_TASK);
        let mut ids = std::collections::VecDeque::new();
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            if ids.len() >= window.max(1) {
                let id = ids.pop_front().expect("window is not empty");
                out.push(TaskOutput::from_wire(conn.recv::<PushTaskReply>(id, timeout)?)?);
            }
            ids.push_back(conn.send(svc, m, &t.to_wire(lease.id))?);
        }
        for id in ids {
            out.push(TaskOutput::from_wire(conn.recv::<PushTaskReply>(id, timeout)?)?);
        }
        Ok(out)
    }

    fn return_request(lease: &Lease, disconnect: bool, detail: &str) -> ReturnWorkerRequest {
        ReturnWorkerRequest {
            worker_port: i32::from(lease.worker_address.port()),
            worker_id: lease.worker_id.to_vec(),
            disconnect_worker: disconnect,
            worker_exiting: false,
            disconnect_worker_error_detail: detail.to_string(),
            lease_id: lease.id.to_vec(),
        }
    }

    /// Gives the worker back to the raylet that granted it (it stays for reuse) and waits
    /// for the raylet's acknowledgement.
    pub fn return_worker(&mut self, lease: &Lease) -> Result<(), RpcError> {
        let req = Self::return_request(lease, false, "");
        let _: ReturnWorkerReply = self.nm(lease.raylet, node_manager_service::method::RETURN_WORKER, &req)?;
        Ok(())
    }

    /// Gives the worker back without waiting for the acknowledgement (as Ray's owners
    /// do): the request is written now and the raylet applies it before anything this
    /// driver sends it later; an error reply shows up in [`Self::take_errors`].
    pub fn return_worker_nowait(&mut self, lease: &Lease) -> Result<(), RpcError> {
        let req = Self::return_request(lease, false, "");
        self.conn(lease.raylet)?.send_nowait(
            node_manager_service::SERVICE_ID,
            node_manager_service::method::RETURN_WORKER,
            &req,
        )
    }

    /// Gives the worker back and asks the raylet to destroy it.
    pub fn return_worker_and_kill(&mut self, lease: &Lease, detail: &str) -> Result<(), RpcError> {
        self.conns.remove(&lease.worker_address);
        let req = Self::return_request(lease, true, detail);
        let _: ReturnWorkerReply = self.nm(lease.raylet, node_manager_service::method::RETURN_WORKER, &req)?;
        Ok(())
    }

    /// Error replies to calls made without waiting ([`Self::return_worker_nowait`]).
    pub fn take_errors(&mut self) -> Vec<RpcError> {
        self.conns.values_mut().flat_map(RpcConn::take_errors).collect()
    }

    /// `GetNodeStats` of a raylet.
    pub fn node_stats(&mut self, raylet: SocketAddr) -> Result<GetNodeStatsReply, RpcError> {
        self.nm(
            raylet,
            node_manager_service::method::GET_NODE_STATS,
            &GetNodeStatsRequest { include_memory_info: false },
        )
    }
}
