//! The scheduling plane's part of GetNodeStats: every pool worker with its state and lease,
//! the node's resources, queue lengths and the agent.

use super::SchedService;
use crate::logic::workers::WorkerState;
use crate::wire::rpc::{BundleId, GetNodeStatsReply, WorkerStats};

impl SchedService {
    /// Pool workers (registered or later) as `WorkerStats`.
    pub fn worker_stats(&self) -> Vec<WorkerStats> {
        let core = self.core.borrow();
        let q = core.queue();
        core.pool()
            .workers()
            .map(|w| {
                let lease = w.lease();
                let info = lease.and_then(|l| q.lease(l));
                let held = q.allocation_of_worker(w.id).map(|a| a.to_resource_set()).unwrap_or_default();
                WorkerStats {
                    worker_id: w.id.to_vec(),
                    pid: w.pid,
                    worker_type: "WORKER".into(),
                    state: match w.state {
                        WorkerState::Registered => "STARTING",
                        WorkerState::Idle => "IDLE",
                        WorkerState::Leased(_) => "LEASED",
                        WorkerState::Exiting => "EXITING",
                        WorkerState::Dead => "DEAD",
                    }
                    .into(),
                    lease_id: lease.map(|l| l.to_vec()).unwrap_or_default(),
                    port: w.port.map(i32::from).unwrap_or(0),
                    job_id: w.job.map(|j| j.to_vec()).unwrap_or_default(),
                    leased_resources: held.iter().map(|(k, v)| (k.to_string(), v.to_f64())).collect(),
                    bundle: info
                        .and_then(|i| i.request.bundle)
                        .map(|b| BundleId { placement_group_id: b.pg.to_vec(), bundle_index: b.index }),
                    ..Default::default()
                }
            })
            .collect()
    }

    /// Fills the node-wide scheduling fields of a GetNodeStats reply.
    pub fn fill_node_stats(&self, reply: &mut GetNodeStatsReply) {
        {
            let core = self.core.borrow();
            let q = core.queue();
            let res = q.resources();
            reply.resources_total = res.total().iter().map(|(k, v)| (k.to_string(), v.to_f64())).collect();
            reply.resources_available = res.available().iter().map(|(k, v)| (k.to_string(), v.to_f64())).collect();
            reply.num_infeasible_leases = q.num_infeasible() as u32;
            reply.num_queued_leases = q.num_pending() as u32;
            reply.num_granted_leases = q.num_granted() as u32;
            reply.num_starting_workers = core.pool().num_starting() as u32;
            reply.num_idle_workers = core.pool().num_idle() as u32;
        }
        reply.agent = self.agent_stats();
        reply.core_workers_stats.extend(self.worker_stats());
    }
}
