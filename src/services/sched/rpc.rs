//! NodeManagerService handlers of the scheduling plane and the AgentManagerService
//! handler, served by every shard. Each validates and converts its request here (bad
//! input never reaches shard 0), forwards a typed [`SchedReq`] to shard 0 over the mesh
//! (a direct call on shard 0 itself), and converts the domain reply back.

use super::convert;
use super::msg::{LeaseOutcome, SchedRep, SchedReq};
use crate::ids::{LeaseId, WorkerId};
use crate::logic::lease::queue::{CancelReason, LesseeConn};
use crate::rpc::scope::ConnScope;
use crate::rpc::Status;
use crate::services::objects::msg::{ObjRep, ObjReq};
use crate::shard::msg::{Rep, Req};
use crate::shard::Shard;
use crate::wire::rpc::*;
use std::rc::Rc;

/// Forwards to shard 0.
async fn call(shard: &Rc<Shard>, req: SchedReq) -> Result<SchedRep, Status> {
    match shard.mesh.call(crate::ids::ShardId::NODE, Req::Sched(req)).await {
        Ok(Rep::Sched(r)) => Ok(r),
        Ok(_) => Err(Status::unavailable("the node is still starting")),
        Err(e) => Err(Status::unavailable(e.to_string())),
    }
}

async fn done(shard: &Rc<Shard>, req: SchedReq) -> Result<(), Status> {
    match call(shard, req).await? {
        SchedRep::Done(Ok(())) => Ok(()),
        SchedRep::Done(Err(e)) => Err(Status::failed_precondition(e)),
        other => Err(Status::internal(format!("unexpected reply {other:?}"))),
    }
}

async fn verdict(shard: &Rc<Shard>, req: SchedReq) -> Result<bool, Status> {
    match call(shard, req).await? {
        SchedRep::Verdict(v) => Ok(v),
        other => Err(Status::internal(format!("unexpected reply {other:?}"))),
    }
}

fn worker_id(b: &[u8]) -> Result<WorkerId, Status> {
    WorkerId::from_bytes(b).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// `UpdateResourceUsage`.
pub async fn update_resource_usage(
    shard: &Rc<Shard>,
    req: UpdateResourceUsageRequest,
) -> Result<UpdateResourceUsageReply, Status> {
    let (seq, updates) = convert::remote_updates(&req.serialized_resource_usage_batch)?;
    done(shard, SchedReq::Broadcast { seq, updates }).await?;
    Ok(UpdateResourceUsageReply {})
}

/// `RequestResourceReport`: shard 0's ledger, plus whether any shard's pull queue has
/// pulls waiting for admission (`object_pulls_queued`; the pull queues are per shard).
pub async fn request_resource_report(
    shard: &Rc<Shard>,
    _req: RequestResourceReportRequest,
) -> Result<RequestResourceReportReply, Status> {
    let mut report = match call(shard, SchedReq::Report).await? {
        SchedRep::Report(r) => *r,
        other => return Err(Status::internal(format!("unexpected reply {other:?}"))),
    };
    let queued = shard.mesh.call_all(|_| Req::Obj(ObjReq::PullsQueued)).await;
    report.object_pulls_queued = queued.iter().any(|r| matches!(r, Ok(Rep::Obj(ObjRep::PullsQueued(true)))));
    Ok(RequestResourceReportReply { resources: Some(report) })
}

/// `RequestWorkerLease`: the reply is deferred until the lease is decided. The lease
/// lives no longer than the connection it was requested on: when that closes (the
/// lessee died or dropped it), shard 0 revokes what it still holds.
pub async fn request_worker_lease(
    shard: &Rc<Shard>,
    req: RequestWorkerLeaseRequest,
) -> Result<RequestWorkerLeaseReply, Status> {
    let mut lease = convert::lease_request(&req)?;
    let backlog = usize::try_from(req.backlog_size).unwrap_or(0);
    lease.conn = ConnScope::current().map(|scope| {
        let tag = LesseeConn { shard: shard.id.index(), conn: scope.id() };
        let s = shard.clone();
        scope.on_close_once("leases", move || {
            glommio::spawn_local(async move {
                if let Err(e) = done(&s, SchedReq::ConnClosed(tag)).await {
                    tracing::warn!(?tag, "cannot release the leases of a closed connection: {e}");
                }
            })
            .detach();
        });
        tag
    });
    match call(shard, SchedReq::Lease { req: Box::new(lease), backlog }).await? {
        SchedRep::Lease(LeaseOutcome::Cancelled { reason: CancelReason::QueueFull, message }) => {
            Err(Status::resource_exhausted(format!("{message} = {}", shard.cfg.sched.max_queued_leases)))
        }
        SchedRep::Lease(outcome) => Ok(convert::lease_reply(outcome, shard.node_id)),
        other => Err(Status::internal(format!("unexpected reply {other:?}"))),
    }
}

/// `ReportWorkerBacklog`: replaces the reporter's backlog.
pub async fn report_worker_backlog(
    shard: &Rc<Shard>,
    req: ReportWorkerBacklogRequest,
) -> Result<ReportWorkerBacklogReply, Status> {
    let worker = worker_id(&req.worker_id)?;
    let mut reports = Vec::with_capacity(req.backlog_reports.len());
    for r in &req.backlog_reports {
        let spec =
            r.lease_spec.clone().ok_or_else(|| Status::invalid_argument("backlog report without a lease_spec"))?;
        if r.backlog_size < 0 {
            return Err(Status::invalid_argument(format!("negative backlog {}", r.backlog_size)));
        }
        reports.push((convert::shape(&spec)?, r.backlog_size));
    }
    done(shard, SchedReq::Backlog { worker, reports }).await?;
    Ok(ReportWorkerBacklogReply {})
}

/// `ReturnWorker`.
pub async fn return_worker(shard: &Rc<Shard>, req: ReturnWorkerRequest) -> Result<ReturnWorkerReply, Status> {
    let worker = worker_id(&req.worker_id)?;
    let r = SchedReq::Return { worker, disconnect: req.disconnect_worker, exiting: req.worker_exiting };
    match call(shard, r).await? {
        SchedRep::Done(Ok(())) => Ok(ReturnWorkerReply {}),
        SchedRep::Done(Err(e)) => Err(Status::not_found(e)),
        other => Err(Status::internal(format!("unexpected reply {other:?}"))),
    }
}

/// `ReleaseUnusedWorkers`: the GCS lists the actor workers it still uses; leased workers
/// of actors not listed would be destroyed. This node leases no actor workers (leases are
/// for tasks, which Ray never touches here), so after validation nothing is released.
pub async fn release_unused_workers(
    _shard: &Rc<Shard>,
    req: ReleaseUnusedWorkersRequest,
) -> Result<ReleaseUnusedWorkersReply, Status> {
    for id in &req.worker_ids_in_use {
        worker_id(id)?;
    }
    Ok(ReleaseUnusedWorkersReply {})
}

/// `CancelWorkerLease`: `success` when a not-yet-granted lease was found.
pub async fn cancel_worker_lease(
    shard: &Rc<Shard>,
    req: CancelWorkerLeaseRequest,
) -> Result<CancelWorkerLeaseReply, Status> {
    let lease = LeaseId::from_bytes(&req.lease_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(CancelWorkerLeaseReply { success: verdict(shard, SchedReq::Cancel(lease)).await? })
}

fn bundle_specs(bundles: &[Bundle]) -> Result<Vec<crate::logic::bundles::BundleSpec>, Status> {
    bundles.iter().map(convert::bundle_spec).collect()
}

/// `PrepareBundleResources`.
pub async fn prepare_bundle_resources(
    shard: &Rc<Shard>,
    req: PrepareBundleResourcesRequest,
) -> Result<PrepareBundleResourcesReply, Status> {
    let specs = bundle_specs(&req.bundle_specs)?;
    Ok(PrepareBundleResourcesReply { success: verdict(shard, SchedReq::Prepare(specs)).await? })
}

/// `CommitBundleResources`.
pub async fn commit_bundle_resources(
    shard: &Rc<Shard>,
    req: CommitBundleResourcesRequest,
) -> Result<CommitBundleResourcesReply, Status> {
    done(shard, SchedReq::Commit(bundle_specs(&req.bundle_specs)?)).await?;
    Ok(CommitBundleResourcesReply {})
}

/// `CancelResourceReserve`.
pub async fn cancel_resource_reserve(
    shard: &Rc<Shard>,
    req: CancelResourceReserveRequest,
) -> Result<CancelResourceReserveReply, Status> {
    let spec = req.bundle_spec.as_ref().ok_or_else(|| Status::invalid_argument("bundle_spec is missing"))?;
    let key = convert::bundle_spec(spec)?.key;
    done(shard, SchedReq::CancelBundle(key)).await?;
    Ok(CancelResourceReserveReply {})
}

/// `ReleaseUnusedBundles`.
pub async fn release_unused_bundles(
    shard: &Rc<Shard>,
    req: ReleaseUnusedBundlesRequest,
) -> Result<ReleaseUnusedBundlesReply, Status> {
    let keys =
        req.bundles_in_use.iter().map(|b| convert::bundle_key(b.bundle_id.as_ref())).collect::<Result<_, _>>()?;
    done(shard, SchedReq::ReleaseUnusedBundles(keys)).await?;
    Ok(ReleaseUnusedBundlesReply {})
}

/// `GlobalGC`: replies OK; LocalGC runs on this node's workers now and on every other
/// node's workers after the next resource broadcast.
pub async fn global_gc(shard: &Rc<Shard>, _req: GlobalGcRequest) -> Result<GlobalGcReply, Status> {
    done(shard, SchedReq::GlobalGc).await?;
    Ok(GlobalGcReply {})
}

/// AgentManagerService on the node manager port.
#[derive(Debug, Clone)]
pub struct AgentRpc(pub Rc<Shard>);

impl agent_manager_service::AgentManagerServiceHandler for AgentRpc {
    async fn register_agent(&self, req: RegisterAgentRequest) -> Result<RegisterAgentReply, Status> {
        let r = SchedReq::RegisterAgent { pid: req.agent_pid, port: req.agent_port, id: req.agent_id };
        Ok(match call(&self.0, r).await? {
            SchedRep::Done(Ok(())) => RegisterAgentReply { success: true, failure_reason: String::new() },
            SchedRep::Done(Err(e)) => RegisterAgentReply { success: false, failure_reason: e },
            other => return Err(Status::internal(format!("unexpected reply {other:?}"))),
        })
    }
}
