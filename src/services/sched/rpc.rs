//! NodeManagerService handlers of the scheduling plane.

use crate::rpc::Status;
use crate::shard::Shard;
use crate::wire::rpc::*;
use std::rc::Rc;

/// `UpdateResourceUsage`.
pub async fn update_resource_usage(
    _shard: &Rc<Shard>,
    _req: UpdateResourceUsageRequest,
) -> Result<UpdateResourceUsageReply, Status> {
    Err(Status::unimplemented("UpdateResourceUsage: not yet (scheduling plane)"))
}

/// `RequestResourceReport`.
pub async fn request_resource_report(
    _shard: &Rc<Shard>,
    _req: RequestResourceReportRequest,
) -> Result<RequestResourceReportReply, Status> {
    Err(Status::unimplemented("RequestResourceReport: not yet (scheduling plane)"))
}

/// `RequestWorkerLease`.
pub async fn request_worker_lease(
    _shard: &Rc<Shard>,
    _req: RequestWorkerLeaseRequest,
) -> Result<RequestWorkerLeaseReply, Status> {
    Err(Status::unimplemented("RequestWorkerLease: not yet (scheduling plane)"))
}

/// `ReportWorkerBacklog`.
pub async fn report_worker_backlog(
    _shard: &Rc<Shard>,
    _req: ReportWorkerBacklogRequest,
) -> Result<ReportWorkerBacklogReply, Status> {
    Err(Status::unimplemented("ReportWorkerBacklog: not yet (scheduling plane)"))
}

/// `ReturnWorker`.
pub async fn return_worker(_shard: &Rc<Shard>, _req: ReturnWorkerRequest) -> Result<ReturnWorkerReply, Status> {
    Err(Status::unimplemented("ReturnWorker: not yet (scheduling plane)"))
}

/// `ReleaseUnusedWorkers`.
pub async fn release_unused_workers(
    _shard: &Rc<Shard>,
    _req: ReleaseUnusedWorkersRequest,
) -> Result<ReleaseUnusedWorkersReply, Status> {
    Err(Status::unimplemented("ReleaseUnusedWorkers: not yet (scheduling plane)"))
}

/// `CancelWorkerLease`.
pub async fn cancel_worker_lease(
    _shard: &Rc<Shard>,
    _req: CancelWorkerLeaseRequest,
) -> Result<CancelWorkerLeaseReply, Status> {
    Err(Status::unimplemented("CancelWorkerLease: not yet (scheduling plane)"))
}

/// `PrepareBundleResources`.
pub async fn prepare_bundle_resources(
    _shard: &Rc<Shard>,
    _req: PrepareBundleResourcesRequest,
) -> Result<PrepareBundleResourcesReply, Status> {
    Err(Status::unimplemented("PrepareBundleResources: not yet (scheduling plane)"))
}

/// `CommitBundleResources`.
pub async fn commit_bundle_resources(
    _shard: &Rc<Shard>,
    _req: CommitBundleResourcesRequest,
) -> Result<CommitBundleResourcesReply, Status> {
    Err(Status::unimplemented("CommitBundleResources: not yet (scheduling plane)"))
}

/// `CancelResourceReserve`.
pub async fn cancel_resource_reserve(
    _shard: &Rc<Shard>,
    _req: CancelResourceReserveRequest,
) -> Result<CancelResourceReserveReply, Status> {
    Err(Status::unimplemented("CancelResourceReserve: not yet (scheduling plane)"))
}

/// `ReleaseUnusedBundles`.
pub async fn release_unused_bundles(
    _shard: &Rc<Shard>,
    _req: ReleaseUnusedBundlesRequest,
) -> Result<ReleaseUnusedBundlesReply, Status> {
    Err(Status::unimplemented("ReleaseUnusedBundles: not yet (scheduling plane)"))
}
