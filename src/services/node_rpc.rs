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
