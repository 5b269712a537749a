//! NodeManagerService as served by every shard. Node-wide questions are forwarded to
//! shard 0 over the mesh; per-shard ones are answered in place.

use crate::ids::ShardId;
use crate::rpc::Status;
use crate::shard::msg::{Rep, Req};
use crate::shard::Shard;
use crate::wire::rpc::*;
use std::rc::Rc;
use std::time::Duration;

/// The handler bound to one shard.
#[derive(Debug, Clone)]
pub struct NodeRpc(pub Rc<Shard>);

impl node_manager_service::NodeManagerServiceHandler for NodeRpc {
    async fn update_resource_usage(&self, req: UpdateResourceUsageRequest) -> Result<UpdateResourceUsageReply, Status> {
        crate::services::sched::rpc::update_resource_usage(&self.0, req).await
    }

    async fn request_resource_report(
        &self,
        req: RequestResourceReportRequest,
    ) -> Result<RequestResourceReportReply, Status> {
        crate::services::sched::rpc::request_resource_report(&self.0, req).await
    }

    async fn request_worker_lease(&self, req: RequestWorkerLeaseRequest) -> Result<RequestWorkerLeaseReply, Status> {
        crate::services::sched::rpc::request_worker_lease(&self.0, req).await
    }

    async fn report_worker_backlog(&self, req: ReportWorkerBacklogRequest) -> Result<ReportWorkerBacklogReply, Status> {
        crate::services::sched::rpc::report_worker_backlog(&self.0, req).await
    }

    async fn return_worker(&self, req: ReturnWorkerRequest) -> Result<ReturnWorkerReply, Status> {
        crate::services::sched::rpc::return_worker(&self.0, req).await
    }

    async fn release_unused_workers(
        &self,
        req: ReleaseUnusedWorkersRequest,
    ) -> Result<ReleaseUnusedWorkersReply, Status> {
        crate::services::sched::rpc::release_unused_workers(&self.0, req).await
    }

    async fn cancel_worker_lease(&self, req: CancelWorkerLeaseRequest) -> Result<CancelWorkerLeaseReply, Status> {
        crate::services::sched::rpc::cancel_worker_lease(&self.0, req).await
    }

    async fn prepare_bundle_resources(
        &self,
        req: PrepareBundleResourcesRequest,
    ) -> Result<PrepareBundleResourcesReply, Status> {
        crate::services::sched::rpc::prepare_bundle_resources(&self.0, req).await
    }

    async fn commit_bundle_resources(
        &self,
        req: CommitBundleResourcesRequest,
    ) -> Result<CommitBundleResourcesReply, Status> {
        crate::services::sched::rpc::commit_bundle_resources(&self.0, req).await
    }

    async fn cancel_resource_reserve(
        &self,
        req: CancelResourceReserveRequest,
    ) -> Result<CancelResourceReserveReply, Status> {
        crate::services::sched::rpc::cancel_resource_reserve(&self.0, req).await
    }

    async fn release_unused_bundles(
        &self,
        req: ReleaseUnusedBundlesRequest,
    ) -> Result<ReleaseUnusedBundlesReply, Status> {
        crate::services::sched::rpc::release_unused_bundles(&self.0, req).await
    }

    async fn pin_object_i_ds(&self, req: PinObjectIDsRequest) -> Result<PinObjectIDsReply, Status> {
        crate::services::objects::rpc::pin_object_i_ds(&self.0, req).await
    }

    async fn global_gc(&self, req: GlobalGcRequest) -> Result<GlobalGcReply, Status> {
        crate::services::sched::rpc::global_gc(&self.0, req).await
    }

    async fn format_global_memory_info(
        &self,
        req: FormatGlobalMemoryInfoRequest,
    ) -> Result<FormatGlobalMemoryInfoReply, Status> {
        crate::services::objects::rpc::format_global_memory_info(&self.0, req).await
    }

    async fn request_object_spillage(
        &self,
        req: RequestObjectSpillageRequest,
    ) -> Result<RequestObjectSpillageReply, Status> {
        crate::services::objects::rpc::request_object_spillage(&self.0, req).await
    }

    async fn get_node_stats(&self, _req: GetNodeStatsRequest) -> Result<GetNodeStatsReply, Status> {
        match self.0.mesh.call(ShardId::NODE, Req::NodeStats).await {
            Ok(Rep::NodeStats(r)) => Ok(*r),
            Ok(other) => Err(Status::internal(format!("unexpected reply {other:?}"))),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }

    async fn get_system_config(&self, _req: GetSystemConfigRequest) -> Result<GetSystemConfigReply, Status> {
        Ok(GetSystemConfigReply { system_config: self.0.system_config.borrow().clone() })
    }

    async fn get_gcs_server_address(
        &self,
        _req: GetGcsServerAddressRequest,
    ) -> Result<GetGcsServerAddressReply, Status> {
        let addr = self.0.gcs_address.get().ok_or_else(|| Status::unavailable("not connected to a GCS yet"))?;
        Ok(GetGcsServerAddressReply { ip: addr.ip().to_string(), port: i32::from(addr.port()) })
    }

    async fn shutdown_raylet(&self, req: ShutdownRayletRequest) -> Result<ShutdownRayletReply, Status> {
        if !req.graceful {
            tracing::warn!("ShutdownRaylet(graceful=false): exiting now");
            std::process::exit(0);
        }
        let shard = self.0.clone();
        glommio::spawn_local(async move {
            // Let the reply leave before the node starts tearing down its listeners.
            glommio::timer::sleep(Duration::from_millis(20)).await;
            shard.request_shutdown("ShutdownRaylet RPC".into(), 0).await;
        })
        .detach();
        Ok(ShutdownRayletReply {})
    }
}
